"""Fixtures of the virtual WalT node suite (run it with scripts/vnode-test.sh).

One guest boots per session (TCG is slow and the machine's cores are
shared): the scenarios run in file order against it, the kexec scenario last
because it reboots the guest.

* ``platform``: the simulator (loopback, automatic ports) with node ``node1``
  (ip 127.0.0.1: qemu's user-mode NAT makes guest connections come from the
  host's loopback) and two images whose boot directories hold a
  ``pc-x86-64/start.ipxe`` + this machine's Debian kernel and initrd; the
  second image's command line carries ``walt.test.marker=second``.
* ``vnode``: the booted guest (qemu killed at the end whatever happens).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Iterator

import pytest
import vnode_image as image
from support.upstream import build_upstream
from support.upstream_node import upstream_wheel_dir
from vnode_platform import (
    FIRST_ID,
    FIRST_IMAGE,
    MODEL,
    SECOND_ID,
    SECOND_IMAGE,
    Disk,
    Platform,
    make_boot_dir,
)
from vnode_qemu import MAC, QemuConfig, VirtualNode, walt_cmdline

from walt_node.sim import SimConfig, SimImage, SimNode, Simulator

LOG = logging.getLogger("vnode")

# The cached guest root filesystem holds Python's own test files: never collect them.
collect_ignore = ["cache"]

ENABLE_VAR = "WALT_VNODE"
BOOT_TIMEOUT = 240
GUEST_FIXTURES = {"vnode", "platform", "node_disk", "base_tree"}

def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    reasons = []
    if os.environ.get(ENABLE_VAR) != "1":
        reasons.append("the qemu suite runs only through scripts/vnode-test.sh (sets WALT_VNODE=1)")
    elif os.geteuid() != 0:
        reasons.append("building the guest disk needs root (debootstrap, chroot)")
    elif shutil.which("qemu-system-x86_64") is None:
        reasons.append("qemu-system-x86_64 is missing: apt-get install qemu-system-x86")
    for item in items:
        if not GUEST_FIXTURES & set(getattr(item, "fixturenames", ())):
            continue  # harness self-tests (test_harness.py) run anywhere
        item.add_marker(pytest.mark.vnode)
        if reasons:
            item.add_marker(pytest.mark.skip(reason="; ".join(reasons)))


@pytest.fixture(scope="session")
def work_dir() -> Path:
    """tests/vnode/cache/last-run: emptied at the start of a session and kept
    afterwards, so its console logs (qemu/console.log, qemu/shell.log) and
    simulator records can be read after a failure."""
    work = image.RUN_DIR / "last-run"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    return work


@pytest.fixture(scope="session")
def platform(work_dir: Path) -> Iterator[Platform]:
    debian_kernel = image.KernelFiles.from_host()
    kernel = dataclasses.replace(debian_kernel, initrd=image.ensure_small_initrd(debian_kernel))
    config = SimConfig(
        nodes=[SimNode(mac=MAC, name="node1", ip="127.0.0.1", model=MODEL, image=FIRST_IMAGE)],
        images=[
            SimImage(fullname=FIRST_IMAGE, id=FIRST_ID,
                     boot_dir=make_boot_dir(work_dir / "boot-first", kernel, "first")),
            SimImage(fullname=SECOND_IMAGE, id=SECOND_ID,
                     boot_dir=make_boot_dir(work_dir / "boot-second", kernel, "second")),
        ],
    )
    with Simulator(config, host="127.0.0.1", records_path=work_dir / "sim-records.jsonl") as sim:
        yield Platform(sim, kernel, work_dir)


@pytest.fixture
def base_tree(tmp_path: Path) -> Iterator[Path]:
    """A writable view of the cached Debian base tree (overlayfs: the cache is not changed)."""
    base = image.ensure_base(image.KernelFiles.from_host())
    upper, work, merged = tmp_path / "upper", tmp_path / "work", tmp_path / "merged"
    for directory in (upper, work, merged):
        directory.mkdir()
    image._run("mount overlay", ["mount", "-t", "overlay", "overlay", "-o",
                                 f"lowerdir={base},upperdir={upper},workdir={work}", str(merged)], timeout=60)
    try:
        yield merged
    finally:
        image._run("umount overlay", ["umount", str(merged)], timeout=60)


@pytest.fixture(scope="session")
def node_disk(platform: Platform) -> Disk:
    started = time.monotonic()
    base = image.ensure_base(platform.kernel)
    LOG.info("base rootfs ready in %.0fs: %s", time.monotonic() - started, base)
    work = platform.work
    root = image.copy_base(base, work)
    image.configure_guest(root)
    wheel = image.build_walt_node_wheel(work / "wheel")
    # an image that ran upstream walt-node 10.0, upgraded to walt-node (scenario 0 checks it)
    image.install_upstream_walt_node(root, upstream_wheel_dir(), build_upstream().mount_dir)
    setup_ran = image.install_walt_node(root, wheel)
    # The boot-time swap service would try the host's standard NBD port, where
    # another test's server may be listening: the swap scenario attaches by hand.
    (root / "etc/walt").mkdir(parents=True, exist_ok=True)
    (root / "etc/walt/walt-nbd-swap.disabled").touch()
    # The image has an ssh server and lldpd (check-image's tests need a complete WalT
    # image), but the harness talks over its serial shell and no switch speaks LLDP
    # here: not started, they cost nothing in TCG boot time.
    for unit in ("ssh.service", "lldpd.service"):
        (root / "etc/systemd/system" / unit).unlink(missing_ok=True)
        (root / "etc/systemd/system" / unit).symlink_to("/dev/null")
    # This image boots with iPXE, so its maintainer opts in to kexec reboots.
    (root / "etc/walt/reboot.conf").write_text("method = kexec\n")
    sim = platform.sim
    image.write_walt_env(root, "10.0.2.2", sim.rpc_port, sim.logs_port, sim.http_port, FIRST_ID)
    disk = work / "node.ext4"
    image.make_ext4(root, disk)
    shutil.rmtree(root)
    LOG.info("node disk built in %.0fs (setup ran: %s)", time.monotonic() - started, setup_ran)
    return Disk(disk, setup_ran)


@pytest.fixture(scope="session")
def vnode(platform: Platform, node_disk: Disk) -> Iterator[VirtualNode]:
    config = QemuConfig(kernel=platform.kernel.vmlinuz, initrd=platform.kernel.initrd,
                        disk=node_disk.path, cmdline=walt_cmdline(extra="walt.test.marker=first"),
                        work_dir=platform.work / "qemu")
    node = VirtualNode(config)
    try:
        started = time.monotonic()
        node.start()
        node.wait_booted(BOOT_TIMEOUT)
        LOG.info("guest booted in %.0fs", time.monotonic() - started)
        yield node
    finally:
        node.stop()
