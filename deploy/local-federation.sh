#!/usr/bin/env bash
# Starts a local Tabadul federation: a network CA made on the fly, the hub
# and 22 member nodes as separate processes on loopback, SYNTHETIC data,
# a different policy per member. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prepare.sh
cargo build --workspace --bins --locked
exec "$CARGO_TARGET_DIR/debug/tabadul-local-federation" "$@"
