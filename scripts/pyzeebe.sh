#!/usr/bin/env bash
# Interop tests with a real Zeebe client: pyzeebe 4.7.0 against a fresh `sluice dev` cluster.
#
#   bash scripts/pyzeebe.sh [SCENARIO ...]      # all scenarios of tests/pyzeebe/scenarios.py by default
#
# 1. A venv in target/pyzeebe-venv with tests/pyzeebe/requirements.txt, rebuilt only when that
#    file's hash changes (installs python3-venv with apt-get when it is missing and we are root).
# 2. `cargo build --release --bin sluice` (a no-op after `cargo test --release`), unless SLUICE_BIN
#    names a prebuilt binary to use instead.
# 3. `sluice dev` in the background on port offset $SLUICE_PYZEEBE_PORT_OFFSET (default 400, clear
#    of the Rust tests' 200-300): gateway on 26500 + 10 * offset = 30500, brokers 1 and 2 on
#    30510 and 30520, management on 13600.
# 4. tests/pyzeebe/run.py waits for the cluster (Topology: 3 brokers, a leader per partition),
#    then runs the scenarios. `sluice dev` gets SIGINT on every exit path. On failure the broker
#    logs' tails are printed and the cluster directory is kept.
#
# Every wait has a deadline; after the build, a run takes well under 3 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly REQUIREMENTS=tests/pyzeebe/requirements.txt
readonly VENV=target/pyzeebe-venv
readonly PORT_OFFSET=${SLUICE_PYZEEBE_PORT_OFFSET:-400}
GATEWAY="127.0.0.1:$((26500 + 10 * PORT_OFFSET))"
readonly PIP_TIMEOUT_S=150     # creating the venv and installing from PyPI
readonly READY_TIMEOUT_S=45    # the cluster electing leaders and the gateway answering
readonly RUN_TIMEOUT_S=150     # all scenarios; each also has its own deadline in run.py
readonly STOP_TIMEOUT_S=15     # `sluice dev` stopping its brokers after SIGINT

say() { echo "pyzeebe.sh: $*"; }

# --- 1. venv -------------------------------------------------------------------------------------

ensure_python_venv() {
  command -v python3 >/dev/null || { say "python3 is missing; install it (Debian: apt-get install -y python3 python3-venv)"; exit 1; }
  if python3 -c 'import ensurepip, venv' 2>/dev/null; then
    return
  fi
  if [[ $(id -u) -ne 0 ]]; then
    say "python3 cannot make venvs (no ensurepip); run as root or: sudo apt-get install -y python3-venv"
    exit 1
  fi
  say "python3 cannot make venvs (no ensurepip): installing python3-venv with apt-get"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
}

ensure_venv() {
  local hash stamp="$VENV/.requirements.sha256"
  hash=$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)
  if [[ -x $VENV/bin/python && -f $stamp && $(cat "$stamp") == "$hash" ]]; then
    say "reusing $VENV (requirements $hash)"
    return
  fi
  ensure_python_venv
  say "creating $VENV from $REQUIREMENTS"
  rm -rf "$VENV"
  timeout "$PIP_TIMEOUT_S" python3 -m venv "$VENV"
  timeout "$PIP_TIMEOUT_S" "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    --timeout 30 -r "$REQUIREMENTS"
  echo "$hash" >"$stamp"
}

# --- 3. the cluster ------------------------------------------------------------------------------

CLUSTER_DIR=""
DEV_PID=""
FAILED=1

print_logs() {
  local log
  for log in "$CLUSTER_DIR"/dev.log "$CLUSTER_DIR"/cluster/broker-*.log; do
    [[ -f $log ]] || continue
    echo "----- tail of $log"
    tail -n 40 "$log"
  done
}

stop_cluster() {
  if [[ -n $DEV_PID ]] && kill -0 "$DEV_PID" 2>/dev/null; then
    kill -INT "$DEV_PID" 2>/dev/null || true
    local ticks=0
    while kill -0 "$DEV_PID" 2>/dev/null && ((ticks < STOP_TIMEOUT_S * 10)); do
      sleep 0.1
      ticks=$((ticks + 1))
    done
    if kill -0 "$DEV_PID" 2>/dev/null; then
      say "sluice dev did not stop within ${STOP_TIMEOUT_S} s of SIGINT; killing it (its brokers get SIGTERM)"
      kill -KILL "$DEV_PID" 2>/dev/null || true
    fi
    wait "$DEV_PID" 2>/dev/null || true
  fi
  DEV_PID=""
}

on_exit() {
  local status=$?
  stop_cluster
  if [[ -n $CLUSTER_DIR ]]; then
    if ((FAILED)); then
      print_logs
      say "FAILED; cluster data and logs kept in $CLUSTER_DIR"
    else
      rm -rf "$CLUSTER_DIR"
    fi
  fi
  exit "$status"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

start_cluster() {
  CLUSTER_DIR=$(mktemp -d "${TMPDIR:-/tmp}/sluice-pyzeebe.XXXXXX")
  say "starting sluice dev (port offset $PORT_OFFSET) in $CLUSTER_DIR"
  # A background job of a non-interactive shell starts with SIGINT ignored, and an ignored signal
  # never reaches sluice's sigwait; `trap - INT` in the subshell restores the default first.
  (
    trap - INT
    exec "$SLUICE" dev --dir "$CLUSTER_DIR/cluster" --port-offset "$PORT_OFFSET"
  ) >"$CLUSTER_DIR/dev.log" 2>&1 </dev/null &
  DEV_PID=$!

  # The banner says where the gateway is, or that there is none yet.
  local ticks=0
  until grep -q -e 'gRPC gateway' -e 'gateway (gRPC' "$CLUSTER_DIR/dev.log"; do
    kill -0 "$DEV_PID" 2>/dev/null || { say "sluice dev exited at start"; exit 1; }
    ((ticks < 100)) || { say "sluice dev printed no gateway line within 10 s"; exit 1; }
    sleep 0.1
    ticks=$((ticks + 1))
  done
  if grep -q 'not implemented yet' "$CLUSTER_DIR/dev.log"; then
    say "this sluice has no gRPC gateway yet: $(grep 'gateway' "$CLUSTER_DIR/dev.log")"
    exit 1
  fi
  local printed
  printed=$(grep -o 'gRPC gateway[^:]*: *[0-9.]*:[0-9]*' "$CLUSTER_DIR/dev.log" | grep -o '[0-9.]*:[0-9]*$' || true)
  if [[ -n $printed && $printed != "$GATEWAY" ]]; then
    say "sluice dev prints gateway $printed, the port formula gives $GATEWAY; using $printed"
    GATEWAY=$printed
  fi
}

# --- main ----------------------------------------------------------------------------------------

ensure_venv
if [[ -n ${SLUICE_BIN:-} ]]; then
  SLUICE=$SLUICE_BIN
  say "using SLUICE_BIN=$SLUICE (no cargo build)"
else
  say "building sluice (release)"
  cargo build --release --locked --bin sluice
  SLUICE=target/release/sluice
fi
[[ -x $SLUICE ]] || { say "$SLUICE is not an executable"; exit 1; }
start_cluster
say "gateway $GATEWAY; waiting up to ${READY_TIMEOUT_S} s for the cluster, then running the scenarios"
status=0
PYTHONDONTWRITEBYTECODE=1 SLUICE_GATEWAY=$GATEWAY timeout --foreground --signal=INT --kill-after=10 "$RUN_TIMEOUT_S" \
  "$VENV/bin/python" tests/pyzeebe/run.py --wait-ready "$READY_TIMEOUT_S" --watch-pid "$DEV_PID" "$@" ||
  status=$?
if ((status == 124)); then
  say "the scenarios did not finish within ${RUN_TIMEOUT_S} s"
fi
if ((status == 0)); then
  FAILED=0
  say "all scenarios passed"
fi
exit "$status"
