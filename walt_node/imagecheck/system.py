"""Facts about an image's system, read from its files: commands on PATH, busybox
applets, init system, enabled services, executables and their interpreters."""

from __future__ import annotations

import fnmatch
import posixpath
from functools import lru_cache
from typing import List, Optional, Set

from walt_node.imagecheck.binaries import busybox_applets
from walt_node.imagecheck.tree import ImageTree, PathProblem

PATH_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
BUSYBOX = "/bin/busybox"
SYSTEMD_DIRS = ("/etc/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system")
SYSV_RC_DIRS = ("/etc/rcS.d", "/etc/rc2.d", "/etc/rc3.d", "/etc/rc5.d", "/etc/init.d")


class ImageSystem:
    """Cached views of one image tree."""

    def __init__(self, tree: ImageTree):
        self.tree = tree
        self.applets = lru_cache(maxsize=1)(self._applets)
        self.enabled_units = lru_cache(maxsize=1)(self._enabled_units)
        self.init_system = lru_cache(maxsize=1)(self._init_system)

    # --- commands ---
    def _applets(self) -> List[str]:
        try:
            return busybox_applets(self.tree.read(BUSYBOX))
        except PathProblem:
            return []

    def command(self, name: str) -> Optional[str]:
        """Where ``name`` is found on the image's PATH (an executable file), else None."""
        for directory in PATH_DIRS:
            path = f"{directory}/{name}"
            entry = self.tree.find(path)
            if entry is not None and entry.executable:
                return path
        return None

    def has_command(self, name: str) -> bool:
        return self.command(name) is not None or name in self.applets()

    def executable_problem(self, path: str) -> Optional[str]:
        """Why ``path`` cannot be run in the image, or None if it can."""
        try:
            resolved = self.tree.resolve(path)
        except PathProblem as error:
            return str(error) if self.tree.is_symlink(path) else f"no {path}"
        entry = self.tree.find(resolved)
        if entry is None or entry.kind != "file":
            return f"{path} is not a regular file"
        if not entry.executable:
            return f"{path} is not executable (chmod +x {path})"
        head = self.tree.read(resolved)[:256]
        if head.startswith(b"#!"):
            words = head[2:].split(b"\n", 1)[0].decode("utf-8", errors="replace").split()
            if not words:
                return f"{path}: empty #! line"
            interpreter = words[0]
            entry = self.tree.find(interpreter)
            if entry is None or not entry.executable:
                return f"{path} starts with #!{interpreter}, which the image does not have"
            if posixpath.basename(interpreter) == "env" and len(words) > 1 \
                    and not self.has_command(words[1]):
                return f"{path} runs '{words[1]}' through env, which is not on the image's PATH"
        return None

    # --- init and services ---
    def _init_system(self) -> str:
        """"systemd", "busybox", "sysvinit", or "unknown" (from what /sbin/init resolves to)."""
        try:
            target = self.tree.resolve("/sbin/init")
        except PathProblem:
            return "unknown"
        if "systemd" in target:
            return "systemd"
        if posixpath.basename(target) == "busybox":
            return "busybox"
        if self.tree.exists("/etc/inittab"):
            return "sysvinit"
        return "unknown"

    def _enabled_units(self) -> Set[str]:
        """Units linked into a .wants/.requires directory, less the masked ones."""
        enabled: Set[str] = set()
        masked: Set[str] = set()
        for directory in SYSTEMD_DIRS:
            for name in self.tree.listdir(directory):
                if name.endswith((".wants", ".requires")):
                    enabled.update(self.tree.listdir(f"{directory}/{name}"))
                elif directory == SYSTEMD_DIRS[0] and self._is_mask(f"{directory}/{name}"):
                    masked.add(name)
        return enabled - masked

    def _is_mask(self, path: str) -> bool:
        try:
            return self.tree.resolve(path) == "/dev/null"
        except PathProblem:
            return False

    def unit_text(self, unit: str) -> Optional[str]:
        for directory in SYSTEMD_DIRS:
            text = self.tree.read_text(f"{directory}/{unit}")
            if text is not None:
                return text
        return None

    def sysv_enabled(self, script: str) -> bool:
        """An rc script ``S??<script>`` (sysvinit rc.d or busybox /etc/init.d)."""
        for directory in SYSV_RC_DIRS:
            if any(fnmatch.fnmatch(name, f"S[0-9][0-9]{script}")
                   for name in self.tree.listdir(directory)):
                return True
        return False

    def service_enabled(self, units: List[str], scripts: List[str] = ()) -> Optional[str]:
        """The first of ``units`` (systemd) or ``scripts`` (rc) enabled in the image, or None."""
        enabled = self.enabled_units()
        for unit in units:
            if unit in enabled and not self.killed(unit):
                return unit
        systemd = self.init_system() == "systemd"
        for script in scripts:
            # systemd runs an rc script only when no unit of that name exists
            if systemd and self.unit_text(f"{script}.service") is not None:
                continue
            if self.sysv_enabled(script):
                return f"rc script {script}"
        return None

    def killed(self, unit: str) -> bool:
        """walt-node's kill switch: /etc/walt/<unit name>.disabled turns a walt-* unit off
        (walt-logs.disabled only the logs daemon: the unit runs the other services too)."""
        name = unit.rsplit(".", 1)[0]
        return (name.startswith("walt-") and name != "walt-logs"
                and self.tree.exists(f"/etc/walt/{name}.disabled"))
