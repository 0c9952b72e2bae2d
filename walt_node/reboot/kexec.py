"""The thin executor: sanity checks, ``kexec -l``, the jump, the OS reboot.

Everything that runs a program goes through :mod:`walt_node.runner`, so the
programs are found on ``PATH`` and every run is time-limited.
"""

from __future__ import annotations

import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from walt_node.errors import WaltNodeError
from walt_node.paths import Paths
from walt_node.reboot.ipxe import BootPlan

KEXEC_TIMEOUT = 15.0


class KexecUnavailable(WaltNodeError):
    """This node cannot kexec (no binary, kernel without kexec support)."""


class BadImage(WaltNodeError, ValueError):
    """A downloaded kernel or initrd does not look like one."""


# --- what a file looks like -------------------------------------------------

def kernel_kind(data: bytes) -> Optional[str]:
    """The kernel format ``data`` starts like, or None."""
    if data[0x202:0x206] == b"HdrS":
        return "x86 bzImage"
    if data[0x38:0x3C] == b"ARM\x64":
        return "ARM64 Image"
    if len(data) >= 0x28 and struct.unpack_from("<I", data, 0x24)[0] == 0x016F2818:
        return "ARM zImage"
    if data[:2] == b"\x1f\x8b":
        return "gzip-compressed kernel"
    if data[:4] == b"\x7fELF":
        return "ELF kernel"
    return None


_INITRD_MAGICS = (
    (b"070701", "cpio (newc)"),
    (b"070702", "cpio (newc, crc)"),
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\x02\x21\x4c\x18", "lz4 (legacy)"),
    (b"\x04\x22\x4d\x18", "lz4"),
)


def initrd_kind(data: bytes) -> Optional[str]:
    for magic, kind in _INITRD_MAGICS:
        if data.startswith(magic):
            return kind
    return None


# --- staging ---------------------------------------------------------------

@dataclass
class StagedBoot:
    kernel: Path
    kernel_kind: str
    initrd: Optional[Path]
    initrd_kinds: list
    cmdline: str

    def describe(self) -> str:
        initrd = f"{self.initrd} ({', '.join(self.initrd_kinds)})" if self.initrd else "(none)"
        return (f"kernel file: {self.kernel} ({self.kernel_kind})\n"
                f"initrd file: {initrd}")


def stage(plan: BootPlan, workdir: Path) -> StagedBoot:
    """Write the plan's kernel and initrds into ``workdir`` after checking what they are.

    Several initrds are concatenated into one file (4-byte aligned, as iPXE
    places them), since ``kexec`` takes a single ``--initrd``.
    """
    kernel = plan.kernel
    if not kernel.data:
        raise BadImage(f"kernel {kernel.location} is empty")
    kind = kernel_kind(kernel.data)
    if kind is None:
        raise BadImage(f"kernel {kernel.location} does not look like a kernel "
                       "(no bzImage, ARM64, zImage, gzip or ELF signature)")
    kernel_path = workdir / "kernel"
    kernel_path.write_bytes(kernel.data)
    kinds = []
    initrd_path: Optional[Path] = None
    if plan.initrds:
        initrd_path = workdir / "initrd"
        with open(initrd_path, "wb") as out:
            for initrd in plan.initrds:
                kinds.append(_check_initrd(initrd.data, str(initrd.location)))
                out.write(initrd.data)
                out.write(b"\0" * (-len(initrd.data) % 4))
    return StagedBoot(kernel_path, kind, initrd_path, kinds, plan.cmdline)


def _check_initrd(data: bytes, where: str) -> str:
    if not data:
        raise BadImage(f"initrd {where} is empty")
    kind = initrd_kind(data)
    if kind is None:
        raise BadImage(f"initrd {where} does not look like an initrd "
                       "(no cpio, gzip, xz, zstd or lz4 signature)")
    return kind


# --- the programs ----------------------------------------------------------

def check_support(paths: Paths) -> str:
    """Path of the ``kexec`` program; KexecUnavailable says what is missing."""
    from walt_node.runner import which

    program = which("kexec")
    if program is None:
        raise KexecUnavailable("no 'kexec' program on PATH (install kexec-tools in the image)")
    if not paths.kexec_loaded.exists():
        raise KexecUnavailable(f"the running kernel has no kexec support "
                               f"({paths.kexec_loaded} is missing: CONFIG_KEXEC is off)")
    return program


def load(staged: StagedBoot, timeout: float = KEXEC_TIMEOUT) -> None:
    from walt_node.runner import run

    argv = ["kexec", "-l", str(staged.kernel)]
    if staged.initrd is not None:
        argv += ["--initrd", str(staged.initrd)]
    argv += ["--command-line", staged.cmdline]
    run(argv, timeout=timeout)


def unload(timeout: float = 5.0) -> None:
    """Forget a loaded kernel, so a fallback reboot is a plain one."""
    from walt_node.runner import CommandFailed, CommandMissing, run

    try:
        run(["kexec", "-u"], timeout=timeout)
    except (CommandFailed, CommandMissing):
        pass


def jump(boot_mode: str, timeout: float = KEXEC_TIMEOUT) -> None:
    """Start the loaded kernel: at once in network mode, after a clean shutdown otherwise.

    ``kexec -e`` does not return when it works.  ``systemctl kexec`` returns
    once the shutdown is queued; the caller then waits to be stopped.
    """
    from walt_node.runner import run

    if boot_mode == "network":
        run(["kexec", "-e"], timeout=timeout)
    else:
        run(["systemctl", "kexec"], timeout=timeout)


def os_reboot(timeout: float = KEXEC_TIMEOUT, immediate: bool = False) -> None:
    """A plain reboot: the init system's clean ``reboot``, or with ``immediate`` (the
    network boot mode's hook) ``busybox reboot -f``, what the server's own soft reboot
    does there: the root is read-only plus a RAM overlay, nothing needs a clean
    shutdown (docs/protocols.md §11)."""
    from walt_node.runner import run, which

    if immediate:
        run(["busybox", "reboot", "-f"] if which("busybox") else ["reboot", "-f"], timeout=timeout)
    else:
        run(["reboot"], timeout=timeout)


def sync_filesystems(paths: Paths, timeout: float) -> bool:
    """sync(2) then syncfs(2) on /persist, in a thread: a hung NFS server must not hang us.

    True when both finished within ``timeout``; never raises (a reboot goes on).
    """
    done = threading.Event()

    def flush() -> None:
        os.sync()
        _syncfs(paths.persist)
        done.set()

    try:
        threading.Thread(target=flush, name="sync", daemon=True).start()
    except RuntimeError:  # no thread left (memory, process limit): reboot without waiting
        return False
    return done.wait(timeout)


def _syncfs(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return  # no /persist on this node
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if hasattr(libc, "syncfs"):
            libc.syncfs(fd)
        else:
            os.fsync(fd)
    finally:
        os.close(fd)
