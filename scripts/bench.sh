#!/usr/bin/env bash
# Runs every benchmark of BENCHMARKS.md on this machine and prints the rows.
# Not part of .ci/run: it takes several minutes and needs PyPI for DuckDB.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prepare.sh
cargo build --workspace --bins --locked
bench="$CARGO_TARGET_DIR/debug/tabadul-bench"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT

echo "## machine"; nproc; grep -m1 'model name' /proc/cpuinfo || true; free -g | head -2

echo "## node Query vs bare tonic over the same mTLS"
"$bench" query-rate --seconds "${SECONDS_PER_SIDE:-10}" --concurrency 32

echo "## import of 5M observations vs DuckDB read_csv"
"$bench" import --rows "${ROWS:-5000000}" --file "$work/obs.csv"
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q duckdb
"$work/venv/bin/python" - "$work/obs.csv" <<'PY'
import sys, time, duckdb
path = sys.argv[1]
con = duckdb.connect()
t = time.perf_counter()
n = con.execute(f"CREATE TABLE obs AS SELECT * FROM read_csv('{path}', header=true)").fetchall()
count = con.execute("SELECT count(*) FROM obs").fetchone()[0]
took = time.perf_counter() - t
print(f"| DuckDB {duckdb.__version__} read_csv into a table, same file | {took:.2f} s | {count/took:.0f} obs/s |")
PY

echo "## federated query, 22 nodes vs 1"
"$bench" federation --queries "${QUERIES:-300}"

echo "## signed log: durable appends vs raw RocksDB, proofs, verify vs SHA-256"
"$bench" log --entries "${LOG_ENTRIES:-100000}" --concurrency 64
