#!/usr/bin/env bash
# Installs what the build needs beyond the Rust toolchain, checking first:
# a C++ compiler and libclang (RocksDB's C++ and its bindgen bindings),
# libfaketime for one fault test, headless Chromium and an Arabic font for
# the dashboard tests, and a Python virtualenv with the stock SDMX clients
# (sdmx1, pysdmx) for the SDMX acceptance test.
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
# The dashboard is tested in Debian's headless Chromium, in Arabic too.
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# (Captured first: `grep -q` would close the pipe and pipefail fail it.)
fonts=$(fc-list 2>/dev/null || true)
[[ $fonts == *"Noto Sans Arabic"* ]] || need+=(fonts-noto-core)
python3 -m venv --help >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
    echo "prepare: installing ${need[*]} (to build RocksDB and run the fault, browser and SDMX tests)" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The stock SDMX clients, pinned, in their own virtualenv (tests find it
# here, or at $TABADUL_PYTHON).
export TABADUL_PYENV="${TABADUL_PYENV:-$HOME/.cache/tabadul/pyenv-sdmx}"
if ! "$TABADUL_PYENV/bin/python" -c "import sdmx, pysdmx.io.xml, pandas" >/dev/null 2>&1; then
    echo "prepare: installing the Python SDMX clients into $TABADUL_PYENV" >&2
    python3 -m venv "$TABADUL_PYENV"
    "$TABADUL_PYENV/bin/pip" install -q "sdmx1==2.28.0" "pysdmx[all]==1.21.0" "pandas>=2" >&2
fi
export TABADUL_PYTHON="$TABADUL_PYENV/bin/python"

# Outside the clone, so a fresh clone reuses an earlier RocksDB build when
# there is one; a cold one builds from scratch (about 18 minutes on 2 cores).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tabadul/target}"
mkdir -p "$CARGO_TARGET_DIR"
