#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo fuzz, libFuzzer) of the parsers that take
# outside input. Not part of .ci/run: it needs a nightly toolchain and runs
# for as long as you give it.
#
#   bash scripts/fuzz.sh            # every target, 60 s each
#   SECONDS_PER_TARGET=600 bash scripts/fuzz.sh dictionary signed_note
#
# The corpora live in fuzz/corpus/<target> and are committed (minimised);
# a crash lands in fuzz/artifacts/<target>/ with the input that caused it.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo +nightly install cargo-fuzz --locked
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(dictionary signed_note log_entry query sdmx_key indicator_csv microdata_csv policy)
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t"
    seeds="fuzz/seeds/$t"
    echo "## $t (${SECONDS_PER_TARGET:-60} s)"
    cargo +nightly fuzz run "$t" "fuzz/corpus/$t" $( [ -d "$seeds" ] && echo "$seeds" ) -- \
        -max_total_time="${SECONDS_PER_TARGET:-60}" -print_final_stats=1 2>&1 \
        | grep -E "stat::number_of_executed_units|stat::new_units_added|ERROR|panicked|SUMMARY|Done" || true
    cargo +nightly fuzz cmin "$t" "fuzz/corpus/$t" >/dev/null 2>&1 || true
done
