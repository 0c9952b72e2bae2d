#!/bin/bash
# Build the walt-node .deb from a copy of the tree (nothing is written in the
# working tree), check it with lintian (no errors allowed), install it on this
# machine with apt-get, check `walt-node --version` and what its postinst
# installed, then purge it and check the system is back as it was.
# Needs root and the build dependencies of debian/control (.ci/apt-packages).
# Usage: scripts/test-deb.sh [--keep]   (--keep: leave the build directory)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
keep=${1:-}
work=$(mktemp -d /tmp/walt-node-deb.XXXXXX)
# Places the package's postinst (walt-node setup) writes to on this machine.
watched=(/etc/systemd/system /var/lib/walt /var/lib/walt-node /bin/blink /bin/walt-reboot /usr/local/bin)

# Debian's own tools and Python only (a pyenv or /usr/local python must not build the package).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin

say() { echo "test-deb: $*"; }
fail() { echo "test-deb: FAILED: $*" >&2; exit 1; }

state() {  # every entry below the watched places, with its type and link target
    find "${watched[@]}" -printf '%p %y %l\n' 2>/dev/null | sort || true
}

cleanup() {
    if dpkg -s walt-node >/dev/null 2>&1 && [ -n "${installed_by_us:-}" ]; then
        apt-get purge -y -q walt-node >/dev/null 2>&1 || true
    fi
    if [ "$keep" = "--keep" ]; then say "build directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || fail "run as root (apt-get install)"
if dpkg -s walt-node >/dev/null 2>&1; then
    fail "walt-node is already installed as a Debian package here; remove it first"
fi

say "copying the tree (tracked and new files, no venv, no build output)"
mkdir "$work/src"
(cd "$repo" && git ls-files -z --cached --others --exclude-standard \
    | grep -zv -e '^\.venv/' -e '^tests/vnode/cache/' \
    | tar --null -T - -cf - 2>/dev/null) | tar -C "$work/src" -xf -
[ -f "$work/src/debian/control" ] || fail "debian/ was not copied"

say "building with dpkg-buildpackage (pybuild)"
(cd "$work/src" && timeout 900 dpkg-buildpackage -us -uc -b) >"$work/build.log" 2>&1 \
    || { tail -40 "$work/build.log"; fail "dpkg-buildpackage failed (log: $work/build.log)"; }
deb=$(ls "$work"/walt-node_*_all.deb)
say "built $(basename "$deb")"

say "contents"
dpkg-deb -c "$deb" >"$work/contents"
grep -q './usr/bin/walt-node$' "$work/contents" || fail "no /usr/bin/walt-node in the package"
for shipped in data/units/walt-logs.service data/units/walt-node.init; do
    grep -q "walt_node/$shipped\$" "$work/contents" || fail "walt_node/$shipped is not in the package"
done
depends=$(dpkg-deb -f "$deb" Depends)
for dependency in python3-requests python3-zeroconf python3-pyroute2 python3-systemd; do
    [[ $depends == *"$dependency"* ]] || fail "Depends lacks $dependency: $depends"
done
[[ $(dpkg-deb -f "$deb" Recommends) == *lldpd*nbd-client*kexec-tools* ]] || fail "Recommends"

say "lintian"
timeout 600 lintian --fail-on error "$deb" | tee "$work/lintian.log" || fail "lintian reports errors"

before=$(state)
say "installing with apt-get"
installed_by_us=1
DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -q "$deb" >"$work/install.log" 2>&1 \
    || { cat "$work/install.log"; fail "apt-get install failed"; }

version=$(/usr/bin/walt-node --version)
expected="walt-node $(dpkg-deb -f "$deb" Version)"
[ "$version" = "$expected" ] || fail "walt-node --version says '$version', expected '$expected'"
say "installed: $version"
dpkg -S /usr/bin/walt-node | grep -q '^walt-node:' || fail "/usr/bin/walt-node is not the package's"
grep -q '^ExecStart=/usr/bin/walt-node logs-daemon$' /etc/systemd/system/walt-logs.service \
    || fail "postinst did not install walt-logs.service for /usr/bin/walt-node"
[ "$(readlink /etc/systemd/system/multi-user.target.wants/walt-logs.service)" = \
  /etc/systemd/system/walt-logs.service ] || fail "walt-logs.service is not enabled"
[ -d /var/lib/walt ] || fail "no /var/lib/walt"
for script in /bin/blink /bin/walt-reboot; do
    [ "$(head -1 "$script")" = "#!/usr/bin/python3" ] || fail "$script does not use Debian's python3"
    "$script" --help >/dev/null || fail "$script --help fails with the installed package"
done
/usr/bin/walt-node setup --system --init systemd --no-start | grep -q "already installed" \
    || fail "a second setup changed something"

say "purging"
DEBIAN_FRONTEND=noninteractive timeout 600 apt-get purge -y -q walt-node >"$work/remove.log" 2>&1 \
    || { cat "$work/remove.log"; fail "apt-get purge failed"; }
installed_by_us=
after=$(state)
if [ "$before" != "$after" ]; then
    diff <(echo "$before") <(echo "$after") >&2 || true
    fail "the system is not as it was before the installation"
fi
say "OK: built, lintian clean of errors, installed, walt-node --version works, removed cleanly"
