"""`walt-node swap`: the WalT server's NBD export ``swap-16G`` as swap (docs/protocols.md §9).

Nodes boot with their root filesystem in RAM; swap on the server lets that
RAM overlay grow. Every step runs under one deadline so a server that does
not answer delays the boot by seconds, never minutes, and a missing piece is
named instead of failing somewhere in the middle.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from walt_node import runner
from walt_node.bounds import Deadline, DeadlineExceeded
from walt_node.errors import WaltNodeError
from walt_node.paths import NODE, WALT_ROOTFS_OVERLAY, Paths

EXPORT_NAME = "swap-16G"
OVERLAY_SIZE = "8G"
DEFAULT_ATTACH_TIMEOUT = 20.0
DEFAULT_DETACH_TIMEOUT = 120.0  # swapoff must read back what was swapped out
EXPORT_CHECK_TIMEOUT = 5.0
STEP_TIMEOUT = 10.0

EXIT_OK = 0
EXIT_MISSING = 1
EXIT_SERVER = 2
EXIT_STEP_FAILED = 4

PROGRAMS = {"nbd-client": "nbd-client", "mkswap": "util-linux", "swapon": "util-linux"}


@dataclass
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok     ' if self.ok else 'MISSING'} {self.name}: {self.detail}"


class StepFailed(WaltNodeError):
    pass


# ---------------------------------------------------------- prerequisites

def kernel_release() -> str:
    return os.uname().release


def _module_file_listed(modules_dir: Path) -> Optional[str]:
    """Where nbd.ko appears in this kernel's module lists (None: nowhere)."""
    pattern = re.compile(r"(^|/)nbd\.ko(\.[a-z]+)?$")
    for listing, kind in (("modules.builtin", "built in"), ("modules.dep", "loadable")):
        try:
            lines = (modules_dir / listing).read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            if pattern.search(line.split(":", 1)[0].strip()):
                return f"{kind} ({modules_dir / listing})"
    found = sorted((modules_dir / "kernel" / "drivers" / "block").glob("nbd.ko*"))
    return f"loadable ({found[0]})" if found else None


def module_loaded(paths: Paths) -> bool:
    try:
        if any(line.split(" ", 1)[0] == "nbd" for line in paths.proc_modules.read_text().splitlines()):
            return True
    except OSError:
        pass
    return (paths.sys_module / "nbd").is_dir()


def check_module(paths: Paths) -> Check:
    name = "nbd kernel module"
    if module_loaded(paths):
        return Check(name, True, "loaded")
    release = kernel_release()
    modules_dir = paths.lib_modules / release
    where = _module_file_listed(modules_dir)
    if where is not None:
        return Check(name, True, f"not loaded, {where}")
    return Check(name, False, f"not loaded and not found in {modules_dir} (kernel {release}); "
                              "use a kernel with CONFIG_BLK_DEV_NBD or install its modules package")


def check_program(program: str) -> Check:
    found = runner.which(program)
    if found:
        return Check(program, True, found)
    return Check(program, False, f"not found on PATH (package {PROGRAMS[program]}; "
                                 "'walt-node swap install-prerequisites' installs it)")


def check_export(server: str, port: int, timeout: float) -> Check:
    from walt_node.protocols import ServerError, nbd_export_info

    name = f"server export {EXPORT_NAME}"
    try:
        export = nbd_export_info(server, EXPORT_NAME, port=port, timeout=timeout)
    except ServerError as error:
        return Check(name, False, str(error))
    size = "size unknown" if export.size is None else f"{export.size} bytes ({human(export.size)})"
    return Check(name, True, f"offered by {server}:{port}, {size}")


def human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.4g} {unit}"
        value /= 1024
    return f"{size} B"


def local_checks(paths: Paths) -> List[Check]:
    return [check_module(paths)] + [check_program(p) for p in PROGRAMS]


# ---------------------------------------------------------- kernel state

def swapped_nbd_devices(paths: Paths) -> List[str]:
    """NBD devices currently used as swap, read from /proc/swaps."""
    try:
        lines = paths.proc_swaps.read_text().splitlines()[1:]
    except OSError:
        return []
    return [line.split()[0] for line in lines if line.split() and "/nbd" in line.split()[0]]


def free_nbd_device(paths: Paths) -> Optional[str]:
    """First /dev/nbdN without a connection (the kernel creates sys/block/nbdN/pid when connected).

    Devices are named as the kernel names them (``/dev/nbd0``, as in
    /proc/swaps); :func:`device_path` maps them below the root to run commands.
    """
    def number(p: Path) -> int:
        digits = p.name[3:]
        return int(digits) if digits.isdigit() else 1 << 30

    for block in sorted(paths.sys_block.glob("nbd*"), key=number):
        if not (block / "pid").exists():
            return str(NODE.device(block.name))  # as the node names it (nbd-client argument)
    return None


def device_path(paths: Paths, device: str) -> str:
    return str(paths.under(device))


def overlay_is_mounted(paths: Paths) -> bool:
    try:
        lines = paths.proc_mounts.read_text().splitlines()
    except OSError:
        return False
    for line in lines:
        fields = line.split()
        if len(fields) > 1 and fields[1].replace("\\040", " ") == WALT_ROOTFS_OVERLAY:
            return True
    return False


def state_file(paths: Paths) -> Path:
    return paths.run_walt_node / "swap.json"


def save_state(paths: Paths, device: str, server: str, port: int) -> None:
    path = state_file(paths)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"device": device, "server": server, "port": port}) + "\n")


def load_state_device(paths: Paths) -> Optional[str]:
    try:
        return str(json.loads(state_file(paths).read_text())["device"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


# ---------------------------------------------------------- steps

def time_left(deadline: Deadline, at_most: float = STEP_TIMEOUT) -> float:
    try:
        return deadline.timeout(at_most)
    except DeadlineExceeded:
        raise StepFailed("the time limit of the command (--timeout) is used up") from None


def step(argv: List[str], deadline: Deadline, what: str) -> None:
    try:
        runner.run(argv, timeout=time_left(deadline))
    except (runner.CommandFailed, runner.CommandMissing) as error:
        raise StepFailed(f"{what} failed: {error}") from None


def undo(argv: List[str]) -> None:
    """Best-effort rollback with its own short limit (the deadline may have passed)."""
    try:
        runner.run(argv, timeout=STEP_TIMEOUT, check=False)
    except (runner.CommandFailed, runner.CommandMissing):
        pass


def attach(paths: Paths, server: str, port: int, deadline: Deadline, out=None) -> int:
    already = swapped_nbd_devices(paths)
    if already:
        print(f"NBD swap already attached on {', '.join(already)}; nothing to do", file=out or sys.stdout)
        return EXIT_OK
    missing = [c for c in local_checks(paths) if not c.ok]
    if missing:
        for check in missing:
            print(check.line(), file=out or sys.stdout)
        print("NBD swap not attached: a prerequisite is missing (the boot carries on)",
              file=out or sys.stdout)
        return EXIT_MISSING
    try:
        export = check_export(server, port, time_left(deadline, EXPORT_CHECK_TIMEOUT))
        if not export.ok:
            print(f"NBD swap not attached: {export.detail}", file=out or sys.stdout)
            return EXIT_SERVER
        device = _attach_device(paths, server, port, deadline)
    except StepFailed as error:
        print(f"NBD swap not attached: {error}", file=out or sys.stdout)
        return EXIT_STEP_FAILED
    print(f"NBD swap attached on {device} ({export.detail})", file=out or sys.stdout)
    _grow_overlay(paths, deadline, out)
    return EXIT_OK


def _attach_device(paths: Paths, server: str, port: int, deadline: Deadline) -> str:
    if not module_loaded(paths):
        step(["modprobe", "nbd"], deadline, "loading the nbd module (modprobe nbd)")
    device = free_nbd_device(paths)
    if device is None:
        raise StepFailed(f"no free NBD device (every {paths.sys_block}/nbd* is connected)")
    node = device_path(paths, device)
    try:
        # a connect killed by its time limit may leave the device half set up: undo that too
        step(["nbd-client", "-N", EXPORT_NAME, server, str(port), node, "-swap"], deadline,
             f"connecting {device} to {server}")
        step(["mkswap", node], deadline, f"mkswap {device}")
        step(["swapon", node], deadline, f"swapon {device}")
    except StepFailed:
        undo(["nbd-client", "-d", node])
        raise
    save_state(paths, device, server, port)
    return device


def _grow_overlay(paths: Paths, deadline: Deadline, out) -> None:
    if not overlay_is_mounted(paths):
        return
    target = str(paths.walt_rootfs_overlay)
    try:
        step(["mount", "-o", f"remount,size={OVERLAY_SIZE}", target], deadline,
             f"growing the RAM overlay {target}")
    except StepFailed as error:
        print(f"warning: swap is attached but {error}", file=out or sys.stdout)
        return
    print(f"RAM overlay {target} may now grow to {OVERLAY_SIZE}", file=out or sys.stdout)


def detach(paths: Paths, deadline: Deadline, out=None, own: bool = False) -> int:
    """Detach every NBD swap, or with ``own`` only the one ``attach`` attached (its state
    file says which): walt-init may have attached one at boot, which is not ours to stop."""
    swapped = swapped_nbd_devices(paths)
    remembered = load_state_device(paths)
    if own:
        others = [d for d in swapped if d != remembered]
        if others:
            print(f"left the NBD swap on {', '.join(others)} attached: 'walt-node swap attach' did not "
                  "attach it (walt-init did, at boot?)", file=out or sys.stdout)
        swapped = [d for d in swapped if d == remembered]
        devices = [remembered] if remembered else []
    else:
        devices = swapped + [d for d in [remembered] if d and d not in swapped]
    if not devices:
        print("no NBD swap attached by walt-node; nothing to do" if own else
              "no NBD swap attached; nothing to do", file=out or sys.stdout)
        return EXIT_OK
    try:
        for device in devices:
            node = device_path(paths, device)
            if device in swapped:
                step(["swapoff", node], deadline, f"swapoff {device}")
            step(["nbd-client", "-d", node], deadline, f"disconnecting {device}")
    except StepFailed as error:
        print(f"NBD swap not fully detached: {error}", file=out or sys.stdout)
        return EXIT_STEP_FAILED
    try:
        state_file(paths).unlink()
    except FileNotFoundError:
        pass
    print(f"NBD swap detached from {', '.join(devices)}", file=out or sys.stdout)
    return EXIT_OK


# ---------------------------------------------------------- packages

def missing_packages() -> List[str]:
    """Debian packages providing the missing programs (the kernel module is not a package here)."""
    packages: List[str] = []
    for program, package in PROGRAMS.items():
        if runner.which(program) is None and package not in packages:
            packages.append(package)
    return packages


def install_prerequisites(dry_run: bool, out=None) -> int:
    packages = missing_packages()
    if not packages:
        print("nbd-client, mkswap and swapon are installed; nothing to do", file=out or sys.stdout)
        return EXIT_OK
    argv = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    if dry_run:
        print("would run: " + " ".join(argv), file=out or sys.stdout)
        return EXIT_OK
    try:
        runner.run(argv, timeout=900, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    except runner.CommandMissing:
        print(f"apt-get is not available: install {' '.join(packages)} with this image's "
              "package manager", file=out or sys.stdout)
        return EXIT_MISSING
    except runner.CommandFailed as error:
        print(f"installing {' '.join(packages)} failed: {error}", file=out or sys.stdout)
        return EXIT_STEP_FAILED
    print(f"installed {' '.join(packages)}", file=out or sys.stdout)
    return EXIT_OK


# ---------------------------------------------------------- command
