#!/usr/bin/env bash
# Create .venv and install confide with pinned dependencies (constraints.txt).
# Installs the Debian packages a fresh machine lacks (python3-venv) when run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
EXTRAS=${1:-dev}
PIP_VERSION=26.3

apt_install() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "bootstrap: missing Debian packages: $*; run: sudo apt-get install -y $*" >&2
        exit 1
    fi
    echo "bootstrap: installing Debian packages: $*" >&2
    apt-get update -qq >/dev/null || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# `bootstrap.sh postgresql`: the PostgreSQL server binaries only (Debian's package), for
# scripts/with-postgres.sh's throwaway cluster.
if [ "$EXTRAS" = postgresql ]; then
    if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
        apt_install postgresql
    fi
    exit 0
fi

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "bootstrap: confide needs Python 3.11 or newer as $PYTHON" >&2
    exit 1
fi
if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
    apt_install python3-venv
fi
# The sandbox (docs/sandbox.md): bubblewrap, else util-linux unshare; node for node apps.
# Only installed when run as root; otherwise a note (the unshare sandbox may still work).
sandbox_packages=()
command -v bwrap >/dev/null 2>&1 || sandbox_packages+=(bubblewrap)
[ -x /usr/bin/node ] || sandbox_packages+=(nodejs)
if [ ${#sandbox_packages[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt_install "${sandbox_packages[@]}"
    else
        echo "bootstrap: for the sandbox and node apps install: ${sandbox_packages[*]}" >&2
    fi
fi
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=".venv/.installed-$EXTRAS"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --disable-pip-version-check "pip==$PIP_VERSION"
    .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[$EXTRAS]"
    touch "$stamp"
fi
# Bytecode for confide's own modules (pip compiles the dependencies it installs, not an
# editable source tree): the enclave runtime starts once per task in a sandbox where src/
# is read-only, and without these files it compiled some 70 modules each time (65 ms of
# CPU per task). Quick when they are current.
.venv/bin/python -m compileall -q -j 0 src/confide >/dev/null
