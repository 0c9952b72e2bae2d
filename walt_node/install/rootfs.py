"""Reach paths of an image tree from the host, as the image itself sees them.

An image built under ``--prefix ROOT`` often holds absolute symlinks
(``/bin -> /usr/bin`` on older layouts, ``/etc/alternatives/...``).  Followed
naively from the host they lead out of ROOT and onto the build machine, so
every path is resolved here like in a chroot: an absolute link target
restarts at ROOT and ``..`` never climbs above it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePosixPath
from typing import List

from walt_node.install import InstallError

MAX_SYMLINK_HOPS = 40


class ImageRoot:
    def __init__(self, root: Path):
        self.root = Path(os.path.abspath(root))

    def __repr__(self) -> str:
        return f"ImageRoot({str(self.root)!r})"

    def host(self, node_path: str) -> Path:
        """Host path of ``node_path``; its directories are resolved, its last component is not."""
        parts = _components(node_path)
        if not parts:
            return self.root
        return self._resolve_dirs(parts[:-1]) / parts[-1]

    def host_followed(self, node_path: str) -> Path:
        """Host path of ``node_path`` with every symlink followed (inside the root)."""
        return self._resolve_dirs(_components(node_path))

    def node(self, host_path: Path) -> str:
        """Inverse of :meth:`host` for a host path below the root."""
        relative = Path(os.path.abspath(host_path)).relative_to(self.root)
        return "/" + relative.as_posix() if str(relative) != "." else "/"

    def exists(self, node_path: str) -> bool:
        return os.path.lexists(self.host(node_path))

    def _resolve_dirs(self, parts: List[str]) -> Path:
        current = self.root
        pending = list(parts)
        hops = 0
        while pending:
            name = pending.pop(0)
            if name == "..":
                current = current.parent if current != self.root else self.root
                continue
            candidate = current / name
            if not candidate.is_symlink():
                current = candidate
                continue
            hops += 1
            if hops > MAX_SYMLINK_HOPS:
                raise InstallError(f"too many levels of symbolic links below {self.root} at {candidate}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                current = self.root
            pending = _components(target) + pending
        return current


def _components(path: str) -> List[str]:
    return [part for part in PurePosixPath(path).parts if part not in ("/", ".", "")]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()
