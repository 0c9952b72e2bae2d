#!/bin/bash
# piuparts and autopkgtest for a built walt-node .deb, on each Debian suite
# (default: bookworm and bullseye, whose Python 3.9 many WalT images run).
#
# piuparts: in a clean chroot (cached minbase tarball, scripts/debian-cache.sh):
#   install + purge, and install the previous build (from a local apt
#   repository) then upgrade to this one, remove, purge; purge must leave
#   nothing. The previous build is the package of PREVIOUS_COMMIT (its
#   maintainer scripts still ran walt-node-setup), cached by commit.
# autopkgtest (debian/tests): the testbed is a systemd-nspawn container booted
#   with systemd from the cached testbed root, so that the logs daemon really
#   runs under systemd; autopkgtest runs inside it with the null virt server
#   (the container is the isolation, hence --ignore-restrictions
#   isolation-container). autopkgtest's own qemu/lxc servers would need an
#   image builder and a bridge this CI machine does not have.
# Needs root. Usage: scripts/test-deb-chroots.sh DEB [SUITE...]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
deb=$(realpath "$1")
shift
suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(bookworm bullseye)
cache=${WALT_NODE_TEST_CACHE:-/var/cache/walt-node-tests}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# main before the package owned its files (postinst ran `walt-node setup`)
PREVIOUS_COMMIT=${PREVIOUS_COMMIT:-2691bd3}
work=$(mktemp -d /tmp/walt-node-deb-chroots.XXXXXX)
mounts=()
container=

export PATH=/usr/sbin:/usr/bin:/sbin:/bin
say() { echo "test-deb-chroots: $*"; }
fail() { echo "test-deb-chroots: FAILED: $*" >&2; exit 1; }

release() {  # what one suite's run holds: its container, its mounts
    local i
    [ -n "$container" ] && kill "$container" 2>/dev/null && wait "$container" 2>/dev/null
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount "${mounts[$i]}" 2>/dev/null || umount -l "${mounts[$i]}"; done
    mounts=()
    container=
}

cleanup() {
    local pid
    for pid in "${suite_pids[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
    release
    rm -rf --one-file-system "$work"
}
suite_pids=()
trap cleanup EXIT
[ "$(id -u)" = 0 ] || fail "run as root"

previous_deb() {  # the package built from PREVIOUS_COMMIT, versioned just below this one
    local commit dir
    commit=$(git -C "$repo" rev-parse --short=12 "$PREVIOUS_COMMIT")
    dir=$cache/debian/previous-$commit
    if [ ! -f "$dir/.complete" ]; then
        rm -rf "$dir" && mkdir -p "$dir/src"
        git -C "$repo" archive "$commit" | tar -C "$dir/src" -xf -
        # same upstream version as today's package: mark it older for apt
        sed -i '1s/(\([^)]*\))/(\1~previous)/' "$dir/src/debian/changelog"
        (cd "$dir/src" && dpkg-buildpackage -us -uc -b) >"$dir/build.log" 2>&1 \
            || { tail -30 "$dir/build.log" >&2; fail "building the previous package ($commit)"; }
        rm -rf "$dir/src"
        touch "$dir/.complete"
    fi
    ls "$dir"/walt-node_*_all.deb
}

run_piuparts() {  # run_piuparts SUITE
    local suite=$1 base prevrepo
    base=$("$repo/scripts/debian-cache.sh" "$suite" minbase)
    prevrepo=$work/previous-repo-$suite
    rm -rf "$prevrepo" && mkdir -p "$prevrepo"
    cp "$previous" "$prevrepo/"
    (cd "$prevrepo" && dpkg-scanpackages . /dev/null >Packages 2>/dev/null)
    say "piuparts on $suite: install/purge, upgrade from $(basename "$(ls "$prevrepo"/*.deb)")"
    timeout 1800 piuparts --basetgz "$base" --distribution "$suite" --mirror "$mirror main" \
        --bindmount "$prevrepo" --extra-repo "deb [trusted=yes] file://$prevrepo ./" \
        --no-eatmydata --warn-on-debsums-errors \
        --log-file "$work/piuparts-$suite.log" "$deb" >/dev/null 2>&1 \
        || { grep -E 'FAIL|ERROR|left|owned' "$work/piuparts-$suite.log" | tail -30 >&2
             tail -40 "$work/piuparts-$suite.log" >&2; fail "piuparts on $suite"; }
    grep -q "PASS: Installation and purging test" "$work/piuparts-$suite.log" || fail "piuparts $suite: no install/purge pass"
    grep -q "PASS: Installation, upgrade and purging tests" "$work/piuparts-$suite.log" \
        || fail "piuparts $suite: the upgrade from the previous build was not tested"
    say "piuparts on $suite: PASS"
}

run_autopkgtest() {  # run_autopkgtest SUITE
    local suite=$1 testbed dir root leader i
    testbed=$("$repo/scripts/debian-cache.sh" "$suite" testbed)
    dir=$work/testbed-$suite
    mkdir -p "$dir/upper" "$dir/work" "$dir/root"
    root=$dir/root
    mount -t overlay overlay -o "lowerdir=$testbed,upperdir=$dir/upper,workdir=$dir/work" "$root"
    mounts+=("$root")
    mkdir -p "$root/srv/test"
    cp "$deb" "$root/srv/test/"
    # debian/tests alone: autopkgtest takes it as a built tree (nothing to build, no dpkg-dev)
    (cd "$repo" && git ls-files -z debian/tests | tar --null -T - -cf -) | tar -C "$root/srv/test" -xf -
    echo "walt-node-testbed" >"$root/etc/hostname"
    say "autopkgtest on $suite: booting the testbed (systemd-nspawn, systemd inside, private network)"
    systemd-nspawn --quiet --keep-unit --register=no --private-network -D "$root" -b -M "walt-node-$suite-$$" \
        --console=pipe >"$work/nspawn-$suite.log" 2>&1 </dev/null &
    container=$!
    leader=
    for i in $(seq 1 100); do  # the container's PID 1 is the child of systemd-nspawn named systemd
        leader=$(pgrep -P "$container" -x systemd || true)
        [ -n "$leader" ] && nsenter -t "$leader" -a systemctl is-system-running --wait >/dev/null 2>&1 && break
        sleep 0.3
    done
    [ -n "$leader" ] || { cat "$work/nspawn-$suite.log" >&2; fail "the $suite testbed did not boot"; }
    nsenter -t "$leader" -a /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 \
        timeout 900 autopkgtest --ignore-restrictions isolation-container --output-dir /srv/out \
        "/srv/test/$(basename "$deb")" /srv/test -- null >"$work/autopkgtest-$suite.log" 2>&1 \
        || { grep -v -e '^Get:' -e '^Ign:' -e '^Err:' -e '^  Temporary' "$root/srv/out/log" | tail -80 >&2
             fail "autopkgtest on $suite"; }
    grep -E '^(commands|logs-daemon) +PASS' "$work/autopkgtest-$suite.log" >&2
    [ "$(grep -cE '^(commands|logs-daemon) +PASS' "$work/autopkgtest-$suite.log")" = 2 ] \
        || { cat "$work/autopkgtest-$suite.log" >&2; fail "autopkgtest on $suite: not every test passed"; }
    kill "$container" && wait "$container" 2>/dev/null || true
    container=
    say "autopkgtest on $suite: PASS"
}

# The suites run side by side (mostly waiting on apt and dpkg): about the time of one.
previous=$(previous_deb)  # built once, before the suites start
for suite in "${suites[@]}"; do
    (
        trap release EXIT
        for step in ${DEB_CHROOT_STEPS:-piuparts autopkgtest}; do  # e.g. DEB_CHROOT_STEPS=autopkgtest
            "run_$step" "$suite"
        done
    ) >"$work/suite-$suite.log" 2>&1 &
    suite_pids+=($!)
done
failed=()
for i in "${!suites[@]}"; do
    wait "${suite_pids[$i]}" || failed+=("${suites[$i]}")
    cat "$work/suite-${suites[$i]}.log"
done
suite_pids=()
[ ${#failed[@]} = 0 ] || fail "on ${failed[*]} (messages above)"
say "OK: ${DEB_CHROOT_STEPS:-piuparts autopkgtest} on ${suites[*]}"
