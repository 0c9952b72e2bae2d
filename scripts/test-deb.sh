#!/bin/bash
# The Debian package, end to end: build it from a copy of the tree (nothing is
# written in the working tree), lintian (no error, no warning), then install
# it with the real dpkg in fresh Debian chroots (an overlay over a cached
# debootstrap root, scripts/debian-cache.sh) and check each way an image can
# meet it:
#   fresh        dpkg owns every file, units enabled by deb-systemd-helper,
#                commands and manual pages work, purge leaves the image as before;
#   own-blink    an image's own /bin/blink is diverted and given back on removal;
#   after-setup  walt-node-setup ran from a venv first: the package takes over,
#                nothing of setup's is left, setup then refuses to fight it;
#   upstream     upstream walt-node 10.0 installed by its own walt-node-setup:
#                installing the package succeeds and ends with the package's service.
# Then piuparts and autopkgtest (scripts/test-deb-chroots.sh) unless --quick.
# Needs root. Usage: scripts/test-deb.sh [--keep] [--quick] [--suite SUITE]
# (DEB_SUITES: the suites of piuparts and autopkgtest, default "bookworm bullseye")
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
keep= quick= suite=bookworm
while [ $# -gt 0 ]; do
    case "$1" in
        --keep) keep=1 ;;
        --quick) quick=1 ;;
        --suite) suite=$2; shift ;;
        *) echo "usage: $0 [--keep] [--quick] [--suite SUITE]" >&2; exit 2 ;;
    esac
    shift
done
cache=${WALT_NODE_TEST_CACHE:-/var/cache/walt-node-tests}
work=$(mktemp -d /tmp/walt-node-deb.XXXXXX)
mounts=()

# Debian's own tools and Python only (a pyenv or /usr/local python must not build the package).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin

say() { echo "test-deb: $*"; }
fail() { echo "test-deb: FAILED: $*" >&2; exit 1; }

unmount_all() {
    local i
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount "${mounts[$i]}" 2>/dev/null || umount -l "${mounts[$i]}"; done
    mounts=()
}

cleanup() {
    unmount_all
    # never through a mount point (the chroots bind /dev): --one-file-system
    if [ -n "$keep" ]; then say "work directory kept: $work"; else rm -rf --one-file-system "$work"; fi
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || fail "run as root (chroots, mounts)"

# ------------------------------------------------------------------ build
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
version=$(dpkg-deb -f "$deb" Version)
say "built $(basename "$deb")"

say "lintian"
timeout 600 lintian --fail-on error,warning "$deb" >"$work/lintian.log" 2>&1 \
    || { cat "$work/lintian.log"; fail "lintian reports errors or warnings"; }

say "contents and relations"
dpkg-deb -c "$deb" | awk '{print substr($6, 2)}' >"$work/contents"
for file in /usr/bin/walt-node /bin/blink /bin/walt-reboot /lib/systemd/system/walt-logs.service \
            /usr/share/man/man1/walt-node.1.gz /usr/share/man/man1/walt-node-setup.1.gz; do
    grep -qx "$file" "$work/contents" || fail "$file is not in the package"
done
grep -q '^/etc/systemd' "$work/contents" && fail "the package ships files in /etc/systemd (units belong in /lib)"
[[ $(dpkg-deb -f "$deb" Depends) == *python3-zeroconf* ]] || fail "Depends lacks what the code imports"
[[ $(dpkg-deb -f "$deb" Depends) != *python3-systemd* ]] || fail "python3-systemd must not be a dependency"

# ------------------------------------------------------------------ chroots
testbed=$("$repo/scripts/debian-cache.sh" "$suite" testbed)

fresh_root() {  # sets $root: a writable copy-on-write root over the cached testbed, the .deb in /tmp
    local dir
    unmount_all  # the previous scenario's root
    dir=$(mktemp -d "$work/root.XXXXXX")
    mkdir "$dir/upper" "$dir/work" "$dir/root"
    root=$dir/root
    mount -t overlay overlay -o "lowerdir=$testbed,upperdir=$dir/upper,workdir=$dir/work" "$root"
    mounts+=("$root")
    mount -t proc proc "$root/proc"; mounts+=("$root/proc")
    mount --bind /dev "$root/dev"; mounts+=("$root/dev")
    cp "$deb" "$root/tmp/"
    # what a chroot must do: no service starts (deb-systemd-invoke honours it)
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod 755 "$root/usr/sbin/policy-rc.d"
}

in_root() {  # in_root ROOT COMMAND...: run in the chroot with a clean environment
    local root=$1
    shift
    chroot "$root" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
}

walt_state() {  # every walt-related entry of the image, with its type and link target
    (cd "$1" && find etc/systemd lib/systemd/system usr/bin usr/local/bin bin var/lib/walt var/lib/walt-node \
        usr/share/man/man1 var/lib/systemd/deb-systemd-helper-enabled -path '*walt*' \
        -printf '%p %y %l\n' 2>/dev/null | sort) || true
}

install_deb() {  # install_deb ROOT: dpkg -i the package, which must succeed
    in_root "$1" dpkg -i "/tmp/$(basename "$deb")" >"$work/dpkg.log" 2>&1 \
        || { cat "$work/dpkg.log"; fail "$scenario: dpkg -i failed"; }
}

check_package_installed() {  # the state every scenario must end with
    local root=$1 file
    for file in /lib/systemd/system/walt-logs.service /bin/blink /bin/walt-reboot /usr/bin/walt-node /var/lib/walt; do
        in_root "$root" dpkg -S "$file" | grep -q '^walt-node: ' || fail "$scenario: dpkg does not own $file"
    done
    [ "$(readlink "$root/etc/systemd/system/multi-user.target.wants/walt-logs.service")" = \
      /lib/systemd/system/walt-logs.service ] || fail "$scenario: walt-logs.service is not enabled"
    for unit in "$root"/etc/systemd/system/walt-*.service; do
        [ -e "$unit" ] && fail "$scenario: $unit overrides the package's unit"
    done
    for link in "$root"/usr/local/bin/walt*; do
        [ -e "$link" ] || [ -L "$link" ] || continue
        fail "$scenario: $link shadows the package's commands"
    done
    [ -e "$root/var/lib/walt-node" ] && fail "$scenario: walt-node-setup's state was left behind"
    # Debian's epoch "1:" is PEP 440's "1!"
    [ "$(in_root "$root" walt-node --version)" = "walt-node ${version/:/!}" ] || fail "$scenario: walt-node --version"
    in_root "$root" /bin/blink --help >/dev/null || fail "$scenario: /bin/blink --help"
    in_root "$root" /bin/walt-reboot --help >/dev/null || fail "$scenario: /bin/walt-reboot --help"
    in_root "$root" walt-node-setup | grep -q "nothing to do" || fail "$scenario: walt-node-setup did not stand aside"
    return 0
}

scenario=fresh
say "scenario $scenario"
fresh_root
before=$(walt_state "$root")
install_deb "$root"
check_package_installed "$root"
for page in walt-node walt-node-setup walt-logs-daemon blink walt-reboot; do
    [ -f "$root/usr/share/man/man1/$page.1.gz" ] || fail "$scenario: no manual page $page(1)"
done
in_root "$root" dpkg --purge walt-node >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "$scenario: purge"; }
after=$(walt_state "$root")
[ "$before" = "$after" ] || { diff <(echo "$before") <(echo "$after") >&2; fail "$scenario: purge left files"; }

scenario=own-blink
say "scenario $scenario"
fresh_root
printf '#!/bin/sh\necho the image blinks its own way\n' >"$root/bin/blink"
chmod 755 "$root/bin/blink"
install_deb "$root"
check_package_installed "$root"
grep -q 'its own way' "$root/bin/blink.distrib" || fail "$scenario: the image's /bin/blink was not kept aside"
in_root "$root" dpkg --remove walt-node >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "$scenario: remove"; }
grep -q 'its own way' "$root/bin/blink" || fail "$scenario: the image's /bin/blink was not given back"
[ -e "$root/bin/blink.distrib" ] && fail "$scenario: /bin/blink.distrib left behind"
in_root "$root" dpkg-divert --list | grep -q walt-node && fail "$scenario: diversions left behind"

scenario=after-setup
say "scenario $scenario"
fresh_root
# the project's venv (scripts/setup-dev.sh) has pip and setuptools; Debian's python3 may lack pip
(cd "$work/src" && "$repo/.venv/bin/python" -m pip wheel -q --no-deps --no-build-isolation -w "$work/wheel" . \
    >"$work/wheel.log" 2>&1) || { cat "$work/wheel.log"; fail "building the wheel"; }
cp "$work"/wheel/walt_node-*.whl "$root/tmp/"
before=$(walt_state "$root")
in_root "$root" python3 -m venv --system-site-packages /opt/walt-node
in_root "$root" sh -c '/opt/walt-node/bin/pip install -q --no-deps --no-index /tmp/walt_node-*.whl' \
    || fail "$scenario: pip install of the wheel"
in_root "$root" /opt/walt-node/bin/walt-node-setup >"$work/setup.log" 2>&1 || { cat "$work/setup.log"; fail "$scenario: setup"; }
[ -f "$root/etc/systemd/system/walt-logs.service" ] || fail "$scenario: setup did not install its unit"
install_deb "$root"
check_package_installed "$root"
out=$(in_root "$root" /opt/walt-node/bin/walt-node-setup 2>&1) && fail "$scenario: setup from the venv did not refuse"
[[ $out == *"apt purge walt-node"* ]] || fail "$scenario: setup's refusal does not say what to do: $out"
in_root "$root" dpkg --purge walt-node >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "$scenario: purge"; }
after=$(walt_state "$root")
[ "$before" = "$after" ] || { diff <(echo "$before") <(echo "$after") >&2; fail "$scenario: files left"; }

scenario=upstream
if [ "$suite" != bookworm ]; then
    say "scenario $scenario: skipped on $suite (upstream's cached wheels are for bookworm's Python)"
else
    say "scenario $scenario"
    wheels=$cache/upstream-node-10.0-wheels
    if [ ! -f "$wheels/.complete" ]; then  # the test oracle, downloaded once (also tests/support/upstream_node.py)
        "$repo/.venv/bin/python" -m pip download -q --disable-pip-version-check -d "$wheels" walt-node==10.0 >/dev/null
        echo "walt-node==10.0" >"$wheels/.complete"
    fi
    fresh_root
    mkdir -p "$root/tmp/wheels" && cp "$wheels"/*.whl "$root/tmp/wheels/"
    before=$(walt_state "$root")
    in_root "$root" python3 -m venv /opt/walt
    in_root "$root" /opt/walt/bin/pip install -q --no-index --find-links /tmp/wheels walt-node==10.0 \
        >"$work/pip.log" 2>&1 || { cat "$work/pip.log"; fail "$scenario: pip install walt-node==10.0"; }
    in_root "$root" /opt/walt/bin/walt-node-setup >"$work/setup.log" 2>&1 || { cat "$work/setup.log"; fail "$scenario: upstream setup"; }
    grep -q '^ExecStart=/usr/local/bin/walt-logs-daemon' "$root/etc/systemd/system/walt-logs.service" \
        || fail "$scenario: upstream's setup did not install its unit"
    echo 'DAEMON_ARGS=""' >"$root/etc/default/walt-logs"
    install_deb "$root"
    check_package_installed "$root"
    [ -f "$root/etc/default/walt-logs" ] || fail "$scenario: /etc/default/walt-logs (the image's) was removed"
    in_root "$root" dpkg --purge walt-node >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "$scenario: purge"; }
    after=$(walt_state "$root")
    leftover=$(comm -13 <(echo "$before") <(echo "$after"))
    [ -z "$leftover" ] || fail "$scenario: left after purge: $leftover"
fi

say "OK: built, lintian clean, dpkg owns the files, coexists with walt-node-setup and upstream ($suite)"
if [ -z "$quick" ] && [ -x "$repo/scripts/test-deb-chroots.sh" ]; then
    # shellcheck disable=SC2086  # DEB_SUITES: a list
    "$repo/scripts/test-deb-chroots.sh" "$deb" ${DEB_SUITES:-bookworm bullseye}
fi
