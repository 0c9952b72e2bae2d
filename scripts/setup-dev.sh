#!/bin/bash
# Set up a development machine (Debian 12): the Debian packages the tests use
# (.ci/apt-packages, installed only if missing; needs root or sudo), then
# .venv with walt-node (editable) and the test tools.
# Usage: scripts/setup-dev.sh [--no-apt]
set -euo pipefail
cd "$(dirname "$0")/.."

install_debian_packages() {
    local wanted missing=()
    mapfile -t wanted < <(grep -v '^\s*\(#\|$\)' .ci/apt-packages)
    for package in "${wanted[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null; then sudo=sudo; else
            echo "setup-dev: missing Debian packages (run as root to install them): ${missing[*]}" >&2
            return 0
        fi
    fi
    echo "setup-dev: installing Debian packages: ${missing[*]}"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
}

[ "${1:-}" = "--no-apt" ] || install_debian_packages

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[test]'
echo "walt-node installed in .venv: $(.venv/bin/walt-node --version)"
