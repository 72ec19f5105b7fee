#!/usr/bin/env bash
# The load test of issue 6: many concurrent federated queries over 22 local
# nodes for a minute; prints completed/failed, member outcomes, latency and
# peak RSS per process. Not part of .ci/run (it takes a minute or two and
# saturates the machine).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prepare.sh
cargo build --workspace --bins --locked
"$CARGO_TARGET_DIR/debug/tabadul-bench" load --nodes "${NODES:-22}" --concurrency "${CONCURRENCY:-1000}" --seconds "${SECONDS_LOAD:-60}"
