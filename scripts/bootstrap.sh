#!/usr/bin/env bash
# Idempotent setup: redis-server (OS package) and the project venv in .venv.
# Never touches the system Redis service: tests and the demo start their own private server.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "bootstrap: need root (or sudo) to run: $*" >&2
        exit 1
    fi
}

apt_install() {
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

if ! command -v redis-server >/dev/null 2>&1; then
    echo "bootstrap: installing redis-server"
    apt_install redis-server
fi

if [ ! -x .venv/bin/python ] || [ ! -x .venv/bin/pip ]; then
    echo "bootstrap: creating .venv"
    rm -rf .venv  # a half-made venv (e.g. from a failed ensurepip) is of no use
    if ! python3 -m venv .venv; then
        echo "bootstrap: python3 -m venv failed; installing python3-venv"
        rm -rf .venv
        apt_install python3-venv
        python3 -m venv .venv
    fi
fi

stamp=.venv/.installed-stamp
if [ ! -e "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "bootstrap: installing streamstore[dev] into .venv"
    .venv/bin/pip install -q --disable-pip-version-check -e ".[dev]"
    touch "$stamp"
fi
