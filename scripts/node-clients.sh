#!/usr/bin/env bash
# Interop tests with the two Node-installed Zeebe clients, each against its own fresh `sluice dev`:
# - the official @camunda8/sdk 8.8.13 (gRPC, gzip request compression on, as it ships):
#   tests/camunda-sdk/run.js on port offset $SLUICE_SDK_PORT_OFFSET (default 420: gateway 30700),
# - zbctl 8.4.1 (npm package `zbctl`, the Go CLI): tests/zbctl/run.js on port offset
#   $SLUICE_ZBCTL_PORT_OFFSET (default 440: gateway 30900).
# Both offsets are clear of pyzeebe's 400 and the Rust tests' 200-330.
#
#   bash scripts/node-clients.sh [camunda-sdk|zbctl ...]     # both clients by default
#
# 1. `npm ci --ignore-scripts` into tests/<client>/node_modules from the committed
#    package-lock.json, redone only when the hash of package.json, package-lock.json and the Node
#    version changes (stamp in node_modules/.sluice-install.sha256).
# 2. `cargo build --release --locked --bin sluice` (a no-op after `cargo test --release`), unless
#    SLUICE_BIN names a prebuilt binary to use instead.
# 3. Per client: `sluice dev` in the background, the client's run.js waits for the cluster
#    (Topology: 3 brokers, a leader per partition) and runs its scenarios; `sluice dev` gets SIGINT
#    on every exit path. On failure the broker logs' tails are printed and the cluster directory is
#    kept. Both clients run even when the first fails; the exit status is non-zero if either did.
#
# Every wait has a deadline; after installs and the build a run takes well under a minute.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly SDK_PORT_OFFSET=${SLUICE_SDK_PORT_OFFSET:-420}
readonly ZBCTL_PORT_OFFSET=${SLUICE_ZBCTL_PORT_OFFSET:-440}
readonly NPM_TIMEOUT_S=300     # npm ci from the registry (the SDK is ~170 packages)
readonly READY_TIMEOUT_S=45    # the cluster electing leaders and the gateway answering
readonly RUN_TIMEOUT_S=150     # one client's scenarios; each also has its own deadline in run.js
readonly STOP_TIMEOUT_S=15     # `sluice dev` stopping its brokers after SIGINT
readonly ALL_CLIENTS=(camunda-sdk zbctl)

say() { echo "node-clients.sh: $*"; }

# --- 1. installs ---------------------------------------------------------------------------------

ensure_node() {
  command -v node >/dev/null && command -v npm >/dev/null || {
    say "node and npm are needed (Node.js 20 or newer with npm); install them first"
    exit 1
  }
  local major
  major=$(node -p 'process.versions.node.split(".")[0]')
  if ((major < 20)); then
    say "Node.js $(node --version) is too old; @camunda8/sdk 8.8 needs 20 or newer"
    exit 1
  fi
}

ensure_modules() {
  local dir=tests/$1 hash stamp
  stamp=$dir/node_modules/.sluice-install.sha256
  hash=$({ cat "$dir/package.json" "$dir/package-lock.json"; node --version; } | sha256sum | cut -d' ' -f1)
  if [[ -f $stamp && $(cat "$stamp") == "$hash" ]]; then
    say "reusing $dir/node_modules (install $hash)"
    return
  fi
  say "installing $dir/node_modules with npm ci"
  # Install scripts are off: none of these packages needs one on Linux (protobufjs's only checks
  # its CLI's version, win-ca's is for Windows).
  (cd "$dir" && timeout "$NPM_TIMEOUT_S" npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
  echo "$hash" >"$stamp"
}

# --- 3. the cluster ------------------------------------------------------------------------------

CLUSTER_DIR=""
DEV_PID=""
GATEWAY=""

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

# Stops the cluster; keeps its directory and prints its logs when $1 says the client failed.
finish_cluster() {
  local failed=$1
  stop_cluster
  if [[ -n $CLUSTER_DIR ]]; then
    if ((failed)); then
      print_logs
      say "cluster data and logs kept in $CLUSTER_DIR"
    else
      rm -rf "$CLUSTER_DIR"
    fi
  fi
  CLUSTER_DIR=""
}

on_exit() {
  local status=$?
  if [[ -n $CLUSTER_DIR ]]; then
    finish_cluster 1
  fi
  exit "$status"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

start_cluster() {
  local client=$1 offset=$2
  GATEWAY="127.0.0.1:$((26500 + 10 * offset))"
  CLUSTER_DIR=$(mktemp -d "${TMPDIR:-/tmp}/sluice-$client.XXXXXX")
  say "$client: starting sluice dev (port offset $offset) in $CLUSTER_DIR"
  # A background job of a non-interactive shell starts with SIGINT ignored, and an ignored signal
  # never reaches sluice's sigwait; `trap - INT` in the subshell restores the default first.
  (
    trap - INT
    exec "$SLUICE" dev --dir "$CLUSTER_DIR/cluster" --port-offset "$offset"
  ) >"$CLUSTER_DIR/dev.log" 2>&1 </dev/null &
  DEV_PID=$!

  # The banner says where the gateway is.
  local ticks=0
  until grep -q -e 'gRPC gateway' -e 'gateway (gRPC' "$CLUSTER_DIR/dev.log"; do
    kill -0 "$DEV_PID" 2>/dev/null || { say "sluice dev exited at start"; return 1; }
    ((ticks < 100)) || { say "sluice dev printed no gateway line within 10 s"; return 1; }
    sleep 0.1
    ticks=$((ticks + 1))
  done
  local printed
  printed=$(grep -o 'gRPC gateway[^:]*: *[0-9.]*:[0-9]*' "$CLUSTER_DIR/dev.log" | grep -o '[0-9.]*:[0-9]*$' || true)
  if [[ -n $printed && $printed != "$GATEWAY" ]]; then
    say "sluice dev prints gateway $printed, the port formula gives $GATEWAY; using $printed"
    GATEWAY=$printed
  fi
}

# Runs one client's scenarios against its own cluster; returns non-zero when anything failed.
run_client() {
  local client=$1 offset=$2 status=0
  start_cluster "$client" "$offset" || status=1
  if ((status == 0)); then
    say "$client: gateway $GATEWAY; waiting up to ${READY_TIMEOUT_S} s for the cluster, then running the scenarios"
    SLUICE_GATEWAY=$GATEWAY timeout --foreground --signal=INT --kill-after=10 "$RUN_TIMEOUT_S" \
      node "tests/$client/run.js" --wait-ready "$READY_TIMEOUT_S" --watch-pid "$DEV_PID" ||
      status=$?
    if ((status == 124)); then
      say "$client: the scenarios did not finish within ${RUN_TIMEOUT_S} s"
    fi
  fi
  if ((status == 0)); then
    say "$client: all scenarios passed"
  else
    say "$client: FAILED (status $status)"
  fi
  finish_cluster "$((status != 0))"
  return "$status"
}

# --- main ----------------------------------------------------------------------------------------

clients=("$@")
((${#clients[@]})) || clients=("${ALL_CLIENTS[@]}")
for client in "${clients[@]}"; do
  [[ $client == camunda-sdk || $client == zbctl ]] || { say "unknown client $client; known: ${ALL_CLIENTS[*]}"; exit 2; }
done

ensure_node
for client in "${clients[@]}"; do
  ensure_modules "$client"
done
if [[ -n ${SLUICE_BIN:-} ]]; then
  SLUICE=$SLUICE_BIN
  say "using SLUICE_BIN=$SLUICE (no cargo build)"
else
  say "building sluice (release)"
  cargo build --release --locked --bin sluice
  SLUICE=target/release/sluice
fi
[[ -x $SLUICE ]] || { say "$SLUICE is not an executable"; exit 1; }

failed=()
for client in "${clients[@]}"; do
  case $client in
    camunda-sdk) offset=$SDK_PORT_OFFSET ;;
    zbctl) offset=$ZBCTL_PORT_OFFSET ;;
  esac
  run_client "$client" "$offset" || failed+=("$client")
done
if ((${#failed[@]})); then
  say "FAILED: ${failed[*]}"
  exit 1
fi
say "all clients passed: ${clients[*]}"
