#!/bin/bash
# Build, once, the virtualenv holding the upstream WalT 10.0 code that the
# conformance tests (tests/conformance) use as their oracle, and print its path.
#
# The three WalT wheels are installed with --no-deps: only the packages their
# imported modules need come with them (the server's logs listener, API hub
# session, fake TFTP and event loop need numpy, cffi and setproctitle).
# The venv is cached outside the clone and rebuilt only when it is missing or
# when the requirement lists below (or the Python version) change.
#
# Usage: scripts/upstream-venv.sh            -> prints the venv path
# Environment: WALT_UPSTREAM_VENV  place of the venv (default: see below)
#              PYTHON              interpreter for the venv (default python3)
set -euo pipefail

WALT_WHEELS="walt-server==10.0 walt-common==10.0 walt-node==10.0"
IMPORTED_DEPS="numpy==1.26.4 cffi==1.16.0 pycparser==2.22 setproctitle==1.3.3"
PYTHON=${PYTHON:-python3}

if [ -n "${WALT_UPSTREAM_VENV:-}" ]; then
    venv=$WALT_UPSTREAM_VENV
elif [ "$(id -u)" -eq 0 ]; then
    venv=/var/cache/walt-node-tests/upstream-10.0
else
    venv=${XDG_CACHE_HOME:-$HOME/.cache}/walt-node/upstream-10.0
fi

python_version=$("$PYTHON" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')
wanted="walt: $WALT_WHEELS
deps: $IMPORTED_DEPS
python: $python_version"

if [ "$(cat "$venv/walt-node-requirements" 2>/dev/null)" = "$wanted" ]; then
    echo "$venv"
    exit 0
fi

mkdir -p "$(dirname "$venv")"
# two test runs building at once: the second waits for the first, then finds it done
exec 9>"$venv.lock"
flock 9
if [ "$(cat "$venv/walt-node-requirements" 2>/dev/null)" = "$wanted" ]; then
    echo "$venv"
    exit 0
fi

# built in place under the lock; the requirements stamp is written last, so a
# half-built venv (interrupted, no network) is rebuilt from scratch next time
building=$venv
rm -rf "$building"
log="$venv.log"
if ! {
    "$PYTHON" -m venv "$building" &&
    "$building/bin/pip" install --disable-pip-version-check --no-deps $WALT_WHEELS &&
    "$building/bin/pip" install --disable-pip-version-check $IMPORTED_DEPS &&
    # the modules the tests import must import: fail here, with Python's words, not in a test
    "$building/bin/python" -c 'import walt.server.processes.main.logs, walt.common.evloop
import walt.server.processes.hub.client, walt.server.processes.main.api.vs'
} >"$log" 2>&1; then
    cat "$log" >&2
    echo "upstream-venv: could not build the upstream WalT 10.0 venv in $venv" \
         "(see above; PyPI must be reachable the first time)" >&2
    exit 1
fi
echo "$wanted" > "$venv/walt-node-requirements"
echo "$venv"
