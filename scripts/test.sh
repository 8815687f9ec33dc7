#!/usr/bin/env bash
# Runs every Sluice test. Installs nothing beyond what cargo fetches: the Rust toolchain is the
# only prerequisite today; later suites (the pyzeebe interop tests) add their own install steps here.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked --release
