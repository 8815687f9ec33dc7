#!/usr/bin/env bash
# Runs every Sluice test, installing what the suites need:
# - headless Chromium for the dashboard test (scripts/browser.sh: apt-get when missing),
# - the Rust tests (cargo fetches its crates; protoc comes vendored),
# - the pyzeebe 4.7.0 interop scenarios against `sluice dev` (scripts/pyzeebe.sh: a Python venv
#   under target/, python3-venv from apt-get when missing),
# - the @camunda8/sdk and zbctl interop scenarios against `sluice dev` (scripts/node-clients.sh:
#   npm ci of the pinned versions under tests/camunda-sdk and tests/zbctl).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/browser.sh
cargo test --workspace --locked --release
# The interop scripts use the binary the tests just built: building `--bin sluice` alone would
# resolve features differently and compile the broker again.
export SLUICE_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/sluice"
bash scripts/pyzeebe.sh
bash scripts/node-clients.sh
