"""Every filesystem location walt-node touches, built from one root.

Tests and `walt-node demo` point ``WALT_NODE_ROOT`` (or ``Paths(root=...)``)
at a temporary directory; on a node the root is ``/``; `walt-node setup
--prefix ROOT` points it at an image tree.  Live process interfaces
(``/proc/<pid>``, ``/dev/pts``) are not part of this object: they always
refer to the running kernel.

An image tree often holds absolute symlinks (``/bin -> /usr/bin`` on older
layouts, ``/etc/alternatives/...``); followed naively from outside they lead
out of the root and onto the build machine. :meth:`Paths.inside` and
:meth:`Paths.followed` resolve a location like a chroot would: an absolute
link target restarts at the root and ``..`` never climbs above it.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import List, Mapping, Optional, Tuple, Union

from walt_node.errors import WaltNodeError

ROOT_ENV_VAR = "WALT_NODE_ROOT"
LIVE_PROC = Path("/proc")


def live_process_file(pid: int, name: str) -> Path:
    """A file of the running kernel's /proc/<pid>: never below the root, since a
    process id only means something to the kernel that runs it."""
    return LIVE_PROC / str(int(pid)) / name


WALT_ROOTFS_OVERLAY = "/run/walt/rootfs"
MAX_SYMLINK_HOPS = 40


class SymlinkLoop(WaltNodeError):
    pass


class Paths:
    """Locations below ``root``. A plain class, not a dataclass: importing
    dataclasses costs /bin/blink a noticeable part of its start-up."""

    __slots__ = ("root",)

    def __init__(self, root: Union[str, Path] = "/"):
        self.root = Path(root)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Paths) and other.root == self.root

    def __hash__(self) -> int:
        return hash(self.root)

    def __repr__(self) -> str:
        return f"Paths(root={str(self.root)!r})"

    @classmethod
    def from_env(cls, env: Optional[Mapping[str, str]] = None) -> Paths:
        env = os.environ if env is None else env
        return cls(Path(env.get(ROOT_ENV_VAR) or "/"))

    def under(self, absolute: str) -> Path:
        """Map an absolute node path (``/etc/x``) below the root."""
        return self.root / absolute.lstrip("/")

    # --- a location as the node (or the image, from inside) names it ---
    def inside(self, node_path: Union[str, Path]) -> Path:
        """Where ``node_path`` is below the root, its directories' symlinks followed the
        way a chroot would (never out of the root); its last component is not followed."""
        parts = _components(node_path)
        if not parts:
            return self._absolute_root()
        return self._resolve_dirs(parts[:-1]) / parts[-1]

    def followed(self, node_path: Union[str, Path]) -> Path:
        """Like :meth:`inside`, with the last component followed too."""
        return self._resolve_dirs(_components(node_path))

    def as_node(self, path: Path) -> str:
        """The node's name for ``path``, a location below the root (inverse of :meth:`inside`)."""
        relative = Path(os.path.abspath(path)).relative_to(self._absolute_root())
        return "/" + relative.as_posix() if str(relative) != "." else "/"

    def _absolute_root(self) -> Path:
        return Path(os.path.abspath(self.root))

    def _resolve_dirs(self, parts: List[str]) -> Path:
        root = current = self._absolute_root()
        pending = list(parts)
        hops = 0
        while pending:
            name = pending.pop(0)
            if name == "..":
                current = current.parent if current != root else root
                continue
            candidate = current / name
            if not candidate.is_symlink():
                current = candidate
                continue
            hops += 1
            if hops > MAX_SYMLINK_HOPS:
                raise SymlinkLoop(f"too many levels of symbolic links below {root} at {candidate}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                current = root
            pending = _components(target) + pending
        return current

    # --- platform facts (docs/protocols.md §1) ---
    @property
    def proc_cmdline(self) -> Path:
        return self.under("/proc/cmdline")

    @property
    def walt_env(self) -> Path:
        return self.under("/bin/walt-env")

    @property
    def dmi_dir(self) -> Path:
        return self.under("/sys/devices/virtual/dmi/id")

    @property
    def etc_hostname(self) -> Path:
        """Only meaningful in an image tree: the server deletes it when it mounts an image (§11)."""
        return self.under("/etc/hostname")

    @property
    def kernel_hostname(self) -> Path:
        """The running kernel's node name (`uname -n`), set at early boot: a node's real name."""
        return self.under("/proc/sys/kernel/hostname")

    @property
    def etc_hosts(self) -> Path:
        return self.under("/etc/hosts")

    @property
    def image_spec(self) -> Path:
        return self.under("/etc/walt/image.spec")

    @property
    def etc_walt(self) -> Path:
        """walt-node's configuration directory (kill switches, config files)."""
        return self.under("/etc/walt")

    def kill_switch(self, name: str) -> Path:
        """The file whose presence turns the walt-node service ``name`` off (walt-mdns...)."""
        return self.etc_walt / f"{name}.disabled"

    @property
    def persist(self) -> Path:
        return self.under("/persist")

    # --- logs (§2, §3) ---
    @property
    def var_lib_walt(self) -> Path:
        return self.under("/var/lib/walt")

    @property
    def logs_fifo(self) -> Path:
        return self.var_lib_walt / "logs.fifo"

    @property
    def logs_spool(self) -> Path:
        return self.var_lib_walt / "logs-spool"

    @property
    def journal_forward_conf(self) -> Path:
        """Which systemd units go to which log streams (lines ``<unit> <stream>``)."""
        return self.etc_walt / "journal-forward.conf"

    @property
    def journal_forward_cursor(self) -> Path:
        """Journal cursor of the last entry forwarded, to resume from after a restart."""
        return self.var_lib_walt / "journal-forward.cursor"

    @property
    def tmp(self) -> Path:
        return self.under("/tmp")

    def monitor_fifo(self, pid: int, direction: str) -> Path:
        """The FIFO WalT's own walt-log-monitor script makes for its request (docs/protocols.md §3);
        ``direction`` is ``stdin`` or ``stdout``."""
        return self.tmp / f"walt-monitor-{direction}-{pid}.fifo"

    def autolog_copies(self, device: str) -> Path:
        """Where serial autolog keeps copies of what it read and sent, named after the device as
        WalT's own walt-serial-autolog names it (``/var/log/walt/autolog/dev/ttyUSB0``)."""
        return self.under("/var/log/walt/autolog" + os.path.abspath(device))

    # --- devices and kernel ---
    @property
    def leds(self) -> Path:
        return self.under("/sys/class/leds")

    @property
    def sys_kernel(self) -> Path:
        return self.under("/sys/kernel")

    @property
    def proc_swaps(self) -> Path:
        return self.under("/proc/swaps")

    @property
    def proc_modules(self) -> Path:
        return self.under("/proc/modules")

    @property
    def proc_cpuinfo(self) -> Path:
        return self.under("/proc/cpuinfo")

    @property
    def etc_cpuinfo(self) -> Path:
        """An image's copy of its nodes' /proc/cpuinfo: the server bind-mounts it over
        /proc/cpuinfo in `walt image shell` (WalT page, optional feature 8)."""
        return self.under("/etc/cpuinfo")

    # --- time sync (walt-node setup --time-sync; WalT page, optional feature 2) ---
    @property
    def ptp4l_conf(self) -> Path:
        """ptp4l's configuration as a slave of the WalT server (walt-ptp service)."""
        return self.etc_walt / "ptp4l.conf"

    @property
    def ptp4l_program(self) -> Path:
        return self.under("/usr/sbin/ptp4l")

    @property
    def timesyncd_program(self) -> Path:
        return self.under("/lib/systemd/systemd-timesyncd")

    @property
    def timesyncd_dropin(self) -> Path:
        """systemd-timesyncd's settings naming the WalT server (an image.spec template)."""
        return self.under("/etc/systemd/timesyncd.conf.d/walt-node.conf")

    @property
    def proc_mounts(self) -> Path:
        return self.under("/proc/mounts")

    @property
    def sys_block(self) -> Path:
        return self.under("/sys/block")

    @property
    def sys_module(self) -> Path:
        """One directory per loaded or built-in kernel module."""
        return self.under("/sys/module")

    @property
    def run_avahi_daemon(self) -> Path:
        """avahi-daemon's runtime directory (pid file, socket)."""
        return self.under("/run/avahi-daemon")

    @property
    def lib_modules(self) -> Path:
        return self.under("/lib/modules")

    @property
    def dev(self) -> Path:
        return self.under("/dev")

    @property
    def walt_rootfs_overlay(self) -> Path:
        """The mount point of the node's RAM overlay, as /proc/mounts names it on the node."""
        return self.under(WALT_ROOTFS_OVERLAY)

    def device(self, name: str) -> Path:
        """``/dev/<name>``."""
        return self.dev / name

    # --- installation ---
    @property
    def bin_dir(self) -> Path:
        return self.under("/bin")

    @property
    def path_dirs(self) -> Tuple[Path, ...]:
        """Directories on every PATH of an image: commands there need no link."""
        return tuple(self.under(d) for d in ("/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"))

    @property
    def systemd_binaries(self) -> Tuple[Path, ...]:
        """Where systemd itself lives in an image that uses it (merged /usr or not)."""
        return (self.under("/lib/systemd/systemd"), self.under("/usr/lib/systemd/systemd"))

    @property
    def sbin_init(self) -> Path:
        return self.under("/sbin/init")

    @property
    def busybox(self) -> Path:
        return self.under("/bin/busybox")

    @property
    def apt_get(self) -> Path:
        return self.under("/usr/bin/apt-get")

    @property
    def run_systemd_system(self) -> Path:
        """Exists only while systemd manages the running system."""
        return self.under("/run/systemd/system")

    @property
    def usr_local_bin(self) -> Path:
        return self.under("/usr/local/bin")

    @property
    def systemd_system(self) -> Path:
        return self.under("/etc/systemd/system")

    @property
    def lib_systemd_system(self) -> Path:
        """Units of installed packages (the Debian package's units live here)."""
        return self.under("/lib/systemd/system")

    @property
    def usr_bin(self) -> Path:
        """Commands of Debian packages (the Debian package's walt-node and python3)."""
        return self.under("/usr/bin")

    @property
    def dpkg_info(self) -> Path:
        """dpkg's database of installed packages (<package>.list: the files it owns)."""
        return self.under("/var/lib/dpkg/info")

    @property
    def dpkg_diversions(self) -> Path:
        """dpkg's diversions: lines path, diverted-to path, package (by threes)."""
        return self.under("/var/lib/dpkg/diversions")

    @property
    def init_d(self) -> Path:
        return self.under("/etc/init.d")

    @property
    def systemd_unit_dirs(self) -> Tuple[Path, ...]:
        """Where an image's systemd loads unit files from (the administrator's first)."""
        return tuple(self.under(d) for d in ("/etc/systemd/system", "/usr/local/lib/systemd/system",
                                              "/lib/systemd/system", "/usr/lib/systemd/system"))

    @property
    def logs_daemon_environment(self) -> Tuple[Path, ...]:
        """Files setting DAEMON_ARGS for the logs daemon's unit (upstream walt-node's too)."""
        return (self.under("/etc/default/walt-logs"), self.under("/etc/sysconfig/walt-logs"))

    @property
    def run_dir(self) -> Path:
        return self.under("/run")

    @property
    def run_walt_node(self) -> Path:
        """Runtime state of walt-node services (pid files, state)."""
        return self.under("/run/walt-node")

    @property
    def reboot_hooks(self) -> Path:
        """Image-provided scripts run by /bin/walt-reboot before rebooting."""
        return self.under("/etc/walt/reboot.d")

    @property
    def reboot_conf(self) -> Path:
        """How /bin/walt-reboot reboots this image (kexec or OS reboot); see docs/reboot.md."""
        return self.under("/etc/walt/reboot.conf")

    @property
    def blink_conf(self) -> Path:
        """Which LED /bin/blink uses, overriding its automatic choice."""
        return self.under("/etc/walt/blink.conf")

    @property
    def kexec_loaded(self) -> Path:
        """Exists only when the running kernel supports kexec."""
        return self.under("/sys/kernel/kexec_loaded")

    @property
    def var_lib_walt_node(self) -> Path:
        """walt-node's own persistent state (install manifest, backups)."""
        return self.under("/var/lib/walt-node")

    @property
    def install_manifest(self) -> Path:
        """What `walt-node setup` installed in this image, to update or uninstall it exactly."""
        return self.var_lib_walt_node / "install-manifest.json"

    @property
    def install_backups(self) -> Path:
        """The image's own files that `walt-node setup --force` replaced, kept for uninstall."""
        return self.var_lib_walt_node / "backup"


def _components(path: Union[str, Path]) -> List[str]:
    return [part for part in PurePosixPath(path).parts if part not in ("/", ".", "")]


# Locations as a node names them (root "/"): what goes into links, units and the
# install manifest of an image, whatever root the image tree is seen from.
NODE = Paths("/")

