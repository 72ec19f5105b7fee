#!/usr/bin/env bash
# Installs what the build needs beyond the Rust toolchain, checking first:
# a C++ compiler and libclang (RocksDB's C++ and its bindgen bindings), and
# libfaketime for one fault test.
# Sourced by .ci/run and deploy/local-federation.sh; also sets one shared
# target directory so that tests, the binaries they start and the demo all
# use a single build.
set -euo pipefail

need=()
command -v c++ >/dev/null 2>&1 || need+=(g++)
# bindgen needs libclang itself and clang's own headers (stddef.h); Debian
# ships them in libclang-dev's dependencies. libclang-cpp alone is not enough.
if [ -z "${LIBCLANG_PATH:-}" ] && { ! compgen -G "/usr/lib/llvm-*/lib/libclang.so" >/dev/null \
        || ! compgen -G "/usr/lib/llvm-*/lib/clang/*/include/stddef.h" >/dev/null; }; then
    need+=(libclang-dev)
fi
# The clock-skew fault test runs a node under libfaketime.
command -v faketime >/dev/null 2>&1 || need+=(faketime)
if [ ${#need[@]} -gt 0 ]; then
    echo "prepare: installing ${need[*]} (to build RocksDB and run the fault tests)" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# Outside the clone, so a fresh clone reuses an earlier RocksDB build when
# there is one; a cold one builds from scratch (about 18 minutes on 2 cores).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tabadul/target}"
mkdir -p "$CARGO_TARGET_DIR"
