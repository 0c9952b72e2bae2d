#!/bin/bash
# Cached Debian root filesystems for the package tests (scripts/test-deb.sh,
# scripts/test-deb-chroots.sh), debootstrapped once from Debian's archive and
# kept outside the clone in $WALT_NODE_TEST_CACHE/debian (default
# /var/cache/walt-node-tests/debian), keyed by suite and package list.
#   debian-cache.sh SUITE minbase   prints a .tgz of a minimal system (piuparts' base)
#   debian-cache.sh SUITE testbed   prints an extracted root (read-only: overlay it) with
#                                   systemd, the package's dependencies, python3-venv
#                                   and autopkgtest
# Cold: about 3 min per tarball; warm: instant.
set -euo pipefail
suite=$1
kind=$2
cache=${WALT_NODE_TEST_CACHE:-/var/cache/walt-node-tests}/debian
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
case "$kind" in
    minbase) include="" ;;
    # python3-systemd left out on purpose: the package must work without it (Suggests).
    testbed) include="systemd,systemd-sysv,dbus,python3,python3-venv,python3-requests,python3-zeroconf,python3-pyroute2,autopkgtest" ;;
    *) echo "debian-cache.sh: unknown kind '$kind' (minbase or testbed)" >&2; exit 2 ;;
esac
key=$(echo "$suite $kind $include $mirror" | sha256sum | cut -c1-12)
name="$suite-$kind-$key"
mkdir -p "$cache"
exec 9>"$cache/$name.lock"
flock 9  # one builder at a time; the others wait and reuse its result
if [ ! -f "$cache/$name.tgz" ]; then
    tmp=$(mktemp -d "$cache/tmp.$name.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    echo "debian-cache: debootstrap $suite ($kind), once" >&2
    debootstrap --variant=minbase ${include:+--include=$include} "$suite" "$tmp/root" "$mirror" \
        >"$tmp/debootstrap.log" 2>&1 || { tail -20 "$tmp/debootstrap.log" >&2; exit 1; }
    rm -rf "$tmp/root/var/cache/apt/archives/"*.deb
    tar -C "$tmp/root" -czf "$tmp/root.tgz" .
    mv "$tmp/root.tgz" "$cache/$name.tgz"
fi
if [ "$kind" = minbase ]; then
    echo "$cache/$name.tgz"
    exit 0
fi
if [ ! -f "$cache/$name.root/.complete" ]; then
    rm -rf "$cache/$name.root"
    mkdir "$cache/$name.root"
    tar -C "$cache/$name.root" -xzf "$cache/$name.tgz"
    touch "$cache/$name.root/.complete"
fi
echo "$cache/$name.root"
