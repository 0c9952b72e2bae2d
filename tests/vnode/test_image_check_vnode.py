"""`walt-node check-image` on the virtual node's own image tree.

The tree is the virtual node's debootstrapped base (built once and cached by
vnode_image.ensure_base, shared with the qemu suite) plus what the node disk
gets on each run: the harness's guest files, walt-node installed by its
setup, and /boot/pc-x86-64 as the simulated platform serves it.  That image
boots under qemu in test_vnode.py, so it must pass every mandatory feature.
Then each test removes one feature from a copy (an overlay mount on the tree)
and checks that exactly that feature fails, with its message.

Runs as root (overlay mounts, chroot), without qemu; no network once the
base is cached.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

import pytest
import vnode_image as image
from support.wait import wait_until
from vnode_platform import MODEL, make_boot_dir

from walt_node.imagecheck import Report, check_image
from walt_node.imagecheck.checks import WALT_NODE_UNITS

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="overlay mounts and chroot need root")

LABELS = {"walt.node.models": MODEL, "walt.server.minversion": "10",
          "walt.image.preferred-name": "vnode-default:latest"}
MANDATORY = ("B1", "B2", "B3", "B4", "B5", "B6", "B7")
# What the virtual node's image provides of the optional features.
OPTIONAL_PROVIDED = ("C1", "C3", "C4", "C5", "C6", "C7", "C10")


@contextmanager
def overlay(lower: List[Path], upper: Path) -> Iterator[Path]:
    """``lower`` (first on top) with writes going to ``upper``: a cheap copy of a big tree."""
    work, merged = upper.with_name(upper.name + ".work"), upper.with_name(upper.name + ".merged")
    for directory in (upper, work, merged):
        directory.mkdir(parents=True, exist_ok=True)
    options = f"lowerdir={':'.join(map(str, lower))},upperdir={upper},workdir={work}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(merged)], check=True)
    try:
        yield merged
    finally:
        subprocess.run(["umount", str(merged)], check=True)


@pytest.fixture(scope="module")
def node_layers(tmp_path_factory: pytest.TempPathFactory) -> List[Path]:
    """The virtual node's image as overlay layers: [what each run adds, the cached base]."""
    kernel = image.KernelFiles.from_host()
    base = image.ensure_base(kernel)
    small = dataclasses.replace(kernel, initrd=image.ensure_small_initrd(kernel))
    work = tmp_path_factory.mktemp("check-image")
    added = work / "node"
    with overlay([base], added) as root:
        image.configure_guest(root)
        assert image.install_walt_node(root, image.build_walt_node_wheel(work / "wheel"))
        make_boot_dir(root / "boot", small, "first")
    return [added, base]


@pytest.fixture
def node_tree(node_layers: List[Path], tmp_path: Path) -> Iterator[Path]:
    """A writable copy of the node's image, thrown away after the test."""
    with overlay(node_layers, tmp_path / "changes") as root:
        yield root


@pytest.fixture(scope="module")
def baseline(node_layers: List[Path], tmp_path_factory: pytest.TempPathFactory) -> Report:
    with overlay(node_layers, tmp_path_factory.mktemp("baseline") / "changes") as root:
        return check_image(root, LABELS)


def test_the_virtual_nodes_image_passes_every_mandatory_feature(baseline: Report) -> None:
    failing = {f.id: f.problems for f in baseline.features if f.mandatory and f.status != "passes"}
    assert failing == {}
    assert baseline.ok
    for feature_id in OPTIONAL_PROVIDED:
        assert baseline.feature(feature_id).status == "passes", baseline.feature(feature_id)
    assert "/boot/pc-x86-64/vmlinuz" in baseline.feature("B3").found
    assert "with initrd" in baseline.feature("B4").found


def test_the_command_exits_0_on_the_virtual_nodes_image(node_tree: Path) -> None:
    labels = [arg for name, value in LABELS.items() for arg in ("--label", f"{name}={value}")]
    done = subprocess.run([sys.executable, "-m", "walt_node", "check-image", str(node_tree),
                           *labels], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines[1:18]] == [*MANDATORY, *(f"C{n}" for n in range(1, 11))]
    assert lines[-1] == "result: every mandatory feature passes"


def _remove(*paths: str) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        for path in paths:
            target = root / path.lstrip("/")
            assert target.is_symlink() or target.exists(), f"the node image has no {path}"
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink()
    return mutate


def _append(path: str, text: str) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        target = root / path.lstrip("/")
        target.write_text(text + target.read_text())
    return mutate


def _create(path: str) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).touch()
    return mutate


def _without(name: str) -> Dict[str, str]:
    return {key: value for key, value in LABELS.items() if key != name}


# Features that cannot be checked without another one: their status changes with it.
# C4 -> C3: walt-logs.service also runs walt-node's mDNS publisher (`walt-node services`)
DEPENDENT = {"B3": {"B4", "C10"}, "B5": {"C4"}, "C4": {"C3"}}
MODULES = f"lib/modules/{image.KernelFiles.from_host().version}"
WANTS = "etc/systemd/system/multi-user.target.wants"
REMOVALS = [
    ("B1", None, _without("walt.node.models"), "no label walt.node.models"),
    ("B2", None, _without("walt.server.minversion"), "no label walt.server.minversion"),
    ("B3", _remove(f"boot/{MODEL}/start.ipxe"), LABELS,
     f"neither /boot/{MODEL}/start.ipxe nor /boot/{MODEL}/start.uboot"),
    ("B3", _remove(f"boot/{MODEL}/vmlinuz"), LABELS, "start.ipxe does not boot"),
    ("B4", _remove(f"{MODULES}/kernel/fs/overlayfs"), LABELS, "CONFIG_OVERLAY_FS not set"),
    ("B5", _remove("usr/sbin/init"), LABELS, "no /sbin/init"),
    ("B6", _remove("usr/bin/busybox"), LABELS, "no /bin/busybox"),
    ("B6", _remove("usr/bin/ldd"), LABELS, "dynamically linked"),
    ("B7", _remove("usr/sbin/sshd"), LABELS, "no ssh server"),
    ("B7", _remove(f"{WANTS}/ssh.service"), LABELS, "sshd is installed but not enabled"),
    ("B7", _append("etc/ssh/sshd_config", "PermitRootLogin no\n"), LABELS, "PermitRootLogin no"),
    ("C1", _remove(f"{WANTS}/lldpd.service"), LABELS, "lldpd is not enabled"),
    ("C3", _create("etc/walt/walt-mdns.disabled"), LABELS, "neither avahi-daemon nor walt-node's mDNS"),
    ("C4", _remove(f"{WANTS}/walt-logs.service"), LABELS, "units not enabled: walt-logs.service"),
    ("C5", _remove("usr/bin/blink"), LABELS, "no /bin/blink"),
    ("C6", _remove("usr/bin/walt-reboot", "usr/bin/walt-network-reboot", "usr/bin/walt-hybrid-reboot"),
     LABELS, "none of /bin/walt-network-reboot"),
    ("C7", None, _without("walt.image.preferred-name"), "no label walt.image.preferred-name"),
    ("C10", _remove(f"{MODULES}/kernel/drivers/block/nbd.ko"), LABELS, "no nbd driver"),
    ("C10", _remove("usr/sbin/nbd-client"), LABELS, "no nbd-client"),
]


@pytest.mark.parametrize("feature_id, mutate, labels, message", REMOVALS,
                         ids=[f"{r[0]}-{r[3][:30]}" for r in REMOVALS])
def test_removing_a_feature_fails_that_feature_only(node_tree: Path, baseline: Report, feature_id: str,
                                                    mutate, labels: Dict[str, str], message: str) -> None:
    if mutate is not None:
        mutate(node_tree)
    report = check_image(node_tree, labels)
    feature = report.feature(feature_id)
    assert feature.status == "missing", feature
    assert any(message in problem for problem in feature.problems), feature.problems
    assert feature.fix
    changed = {f.id for f, before in zip(report.features, baseline.features) if f.status != before.status}
    assert changed - DEPENDENT.get(feature_id, set()) == {feature_id}
    assert report.ok == (feature_id not in MANDATORY)


# ------------------------------------------------------------------ C9: walt image shell's init

def _container_init(nspawn_pid: int) -> Optional[int]:
    """Host pid of the container's PID 1: a descendant of systemd-nspawn whose pid is 1 inside."""
    children = {nspawn_pid}
    for _ in range(4):
        for pid in list(children):
            try:
                children |= {int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
            except OSError:
                continue
    for pid in children - {nspawn_pid}:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        nspid = next((line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), [])
        if len(nspid) > 1 and nspid[-1] == "1":
            return pid
    return None


def _inside(pid: int, *argv: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(["nsenter", "-t", str(pid), "-a", *argv], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.skipif(shutil.which("systemd-nspawn") is None,
                    reason="needs systemd-nspawn (systemd-container, .ci/apt-packages)")
def test_image_shell_scripts_boot_and_stop_the_images_systemd_in_a_container(node_tree: Path) -> None:
    interfaces = node_tree / "etc/network/interfaces"
    interfaces.parent.mkdir(parents=True, exist_ok=True)
    interfaces.write_text("auto lo\niface lo inet loopback\n")
    setup = subprocess.run(["chroot", str(node_tree), f"{image.VENV}/bin/walt-node-setup", "--prefix", "/",
                            "--image-shell"], capture_output=True, text=True, timeout=120,
                           env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"})
    assert setup.returncode == 0, setup.stdout + setup.stderr
    assert check_image(node_tree, LABELS).feature("C9").status == "passes"
    log = node_tree.parent / "container.log"
    with open(log, "wb") as output:
        # as `walt image shell` does: the container's entry point is the start script
        container = subprocess.Popen(["systemd-nspawn", "--register=no", "--keep-unit", "--quiet",
                                      "-D", str(node_tree), "/bin/walt-image-shell-start"],
                                     stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: _container_init(container.pid) is not None or container.poll() is not None,
                   timeout=60)
        init = _container_init(container.pid)
        assert init is not None, log.read_text(errors="replace")
        # the start script has exec'd systemd once its control socket is up
        assert wait_until(lambda: _inside(init, "test", "-S", "/run/systemd/private").returncode == 0,
                          timeout=120), log.read_text(errors="replace")
        booted = _inside(init, "systemctl", "is-system-running", "--wait")
        assert booted.stdout.strip() in ("running", "degraded"), booted
        assert _inside(init, "readlink", "/proc/1/exe").stdout.strip().endswith("/systemd")
        assert not interfaces.exists() and interfaces.with_name("interfaces.walt-image-shell").exists()
        for unit in WALT_NODE_UNITS:  # walt-node's services skip containers
            shown = _inside(init, "systemctl", "show", "-p", "ActiveState", "-p", "ConditionResult", unit)
            assert sorted(shown.stdout.split()) == ["ActiveState=inactive", "ConditionResult=no"], shown
        # as the server does when the user's shell ends
        _inside(init, "/bin/walt-image-shell-shutdown")
        assert container.wait(timeout=180) == 0, log.read_text(errors="replace")
    finally:
        if container.poll() is None:
            container.kill()
            container.wait()
    assert interfaces.read_text() == "auto lo\niface lo inet loopback\n"
    assert not interfaces.with_name("interfaces.walt-image-shell").exists()
