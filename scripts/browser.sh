#!/usr/bin/env bash
# Makes sure a headless Chromium is installed for the dashboard's browser test
# (broker/tests/dashboard_browser.rs) and prints its path. Installs the `chromium` package with
# apt-get when none is found; that needs root. SLUICE_CHROMIUM names a binary to use instead.
set -euo pipefail

find_chromium() {
    if [[ -n "${SLUICE_CHROMIUM:-}" ]]; then
        if [[ -x "$SLUICE_CHROMIUM" ]]; then
            echo "$SLUICE_CHROMIUM"
            return 0
        fi
        command -v "$SLUICE_CHROMIUM" && return 0
        echo "browser.sh: SLUICE_CHROMIUM=$SLUICE_CHROMIUM is not an executable" >&2
        return 1
    fi
    command -v chromium || command -v chromium-browser
}

if path=$(find_chromium 2>/dev/null); then
    echo "$path"
    exit 0
fi
if [[ -n "${SLUICE_CHROMIUM:-}" ]]; then
    find_chromium >/dev/null
    exit 1
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "browser.sh: Chromium is missing and installing it needs root; run" >&2
    echo "  sudo apt-get update && sudo apt-get install -y chromium" >&2
    echo "or set SLUICE_CHROMIUM to a Chromium binary." >&2
    exit 1
fi
log=$(mktemp -t sluice-browser-install.XXXXXX)
echo "browser.sh: installing chromium with apt-get (log: $log)" >&2
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update && apt-get install -y chromium; } >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "browser.sh: installing chromium failed; the whole log is $log" >&2
    exit 1
fi
if ! path=$(find_chromium); then
    echo "browser.sh: apt-get installed chromium but no chromium binary is on PATH" >&2
    exit 1
fi
echo "$path"
