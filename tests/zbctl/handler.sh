#!/bin/sh
# The job handler of `zbctl create worker work --handler "sh handler.sh"` in run.js: zbctl passes
# the job's variables as JSON on stdin and completes the job with the JSON object printed here.
# Each job's input goes on one line of $ZBCTL_HANDLER_LOG, so run.js can see which instances the
# worker served (appends of one short line are atomic under the worker's concurrency).
set -eu
variables=$(cat)
printf '%s\n' "$variables" >>"$ZBCTL_HANDLER_LOG"
printf '{"done":true,"worker":"zbctl"}\n'
