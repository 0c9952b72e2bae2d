#!/bin/bash
# The virtual WalT node suite: boots Debian's kernel under qemu (TCG) with a
# Debian root filesystem holding walt-node, and checks each feature end to end.
# Needs root (debootstrap, chroot). The first run builds the image cache in
# /var/cache/walt-node-tests/vnode (~5 min), reused by every checkout.
# Extra arguments go to pytest, e.g.: scripts/vnode-test.sh -k logs
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    exec sudo --preserve-env=PATH "$0" "$@"
fi
export WALT_VNODE=1
# Every step has its own time limit; this is the last resort (SIGINT lets the
# fixtures kill qemu and the nbd-server on the way out).
exec timeout --signal=INT --kill-after=60 2400 \
    .venv/bin/python -m pytest tests/vnode -v -p no:cacheprovider --log-level=INFO --durations=0 "$@"
