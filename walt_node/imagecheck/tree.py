"""A read-only view of an image's files, with symlinks resolved inside the image.

Two kinds of image: a root directory on disk (:class:`DirTree`) and the
layers of an image archive applied in order (:class:`LayeredTree`, built by
:mod:`walt_node.imagecheck.archive`).  Both only answer ``lstat`` and
``read``; path resolution is done here, once, the way a process chrooted in
the image would see it: an absolute symlink starts again from the image root
and ``..`` never climbs above it, so nothing outside the image is ever read.
"""

from __future__ import annotations

import os
import posixpath
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Set

from walt_node.errors import WaltNodeError

MAX_SYMLINKS = 40  # as Linux's path walk


class PathProblem(WaltNodeError):
    """A path of the image cannot be followed; the message says where it stops."""


@dataclass(frozen=True)
class Entry:
    kind: str  # "file", "dir", "symlink" or "other"
    mode: int = 0o644  # permission bits
    size: int = 0
    target: str = ""  # symlinks
    ref: Any = None  # how the tree finds the content again

    @property
    def executable(self) -> bool:
        return self.kind == "file" and bool(self.mode & 0o111)


def normalize(path: str) -> str:
    """``a/./b/`` -> ``/a/b``; ``..`` stays (resolution handles it)."""
    parts = [part for part in path.split("/") if part not in ("", ".")]
    return "/" + "/".join(parts)


class ImageTree:
    """Base class: subclasses provide ``lstat``, ``read_entry`` and ``names``."""

    description = "image"

    def lstat(self, path: str) -> Optional[Entry]:
        raise NotImplementedError

    def read_entry(self, path: str, entry: Entry) -> bytes:
        raise NotImplementedError

    def names(self, path: str) -> List[str]:
        """Names in the directory ``path`` (already resolved)."""
        raise NotImplementedError

    # --- resolution ---
    def resolve(self, path: str, follow_last: bool = True) -> str:
        """The path ``path`` leads to inside the image, symlinks followed.

        Raises :class:`PathProblem` naming the first component that is missing,
        not a directory, or a symlink loop."""
        pending = [part for part in reversed(path.split("/")) if part not in ("", ".")]
        current = "/"
        followed = 0
        via = ""
        while pending:
            name = pending.pop()
            if name == "..":
                current = posixpath.dirname(current)
                continue
            candidate = posixpath.join(current, name)
            entry = self.lstat(candidate)
            if entry is None:
                where = "" if candidate == normalize(path) else f"{path}: "
                raise PathProblem(f"{where}{candidate} does not exist in the image{via}")
            if entry.kind == "symlink" and (pending or follow_last):
                followed += 1
                if followed > MAX_SYMLINKS:
                    raise PathProblem(f"{path}: too many levels of symbolic links (a loop?)")
                via = f" (followed {candidate} -> {entry.target})"
                if entry.target.startswith("/"):
                    current = "/"
                pending.extend(part for part in reversed(entry.target.split("/"))
                               if part not in ("", "."))
                continue
            if pending and entry.kind != "dir":
                raise PathProblem(f"{path}: {candidate} is not a directory{via}")
            current = candidate
        return current

    def find(self, path: str) -> Optional[Entry]:
        """The entry ``path`` leads to (symlinks followed), or None if it leads nowhere."""
        try:
            return self._entry(self.resolve(path))
        except PathProblem:
            return None

    def _entry(self, resolved: str) -> Optional[Entry]:
        if resolved == "/":
            return Entry("dir", 0o755)
        return self.lstat(resolved)

    # --- convenience ---
    def exists(self, path: str) -> bool:
        return self.find(path) is not None

    def is_file(self, path: str) -> bool:
        entry = self.find(path)
        return entry is not None and entry.kind == "file"

    def is_dir(self, path: str) -> bool:
        entry = self.find(path)
        return entry is not None and entry.kind == "dir"

    def is_symlink(self, path: str) -> bool:
        try:
            entry = self.lstat(self.resolve(path, follow_last=False))
        except PathProblem:
            return False
        return entry is not None and entry.kind == "symlink"

    def read(self, path: str) -> bytes:
        """Content of the file ``path`` leads to; PathProblem if there is none."""
        resolved = self.resolve(path)
        entry = self._entry(resolved)
        if entry is None or entry.kind != "file":
            raise PathProblem(f"{path}: not a regular file in the image")
        return self.read_entry(resolved, entry)

    def read_text(self, path: str) -> Optional[str]:
        """Text of a file, or None if the image has no such file."""
        try:
            return self.read(path).decode("utf-8", errors="replace")
        except PathProblem:
            return None

    def listdir(self, path: str) -> List[str]:
        try:
            resolved = self.resolve(path)
        except PathProblem:
            return []
        entry = self._entry(resolved)
        if entry is None or entry.kind != "dir":
            return []
        return sorted(self.names(resolved))

    def walk_files(self, path: str) -> Iterator[str]:
        """Every path below directory ``path`` (symlinks to directories are not entered)."""
        try:
            resolved = self.resolve(path)
        except PathProblem:
            return
        stack = [resolved]
        while stack:
            directory = stack.pop()
            for name in self.names(directory):
                child = posixpath.join(directory, name)
                entry = self.lstat(child)
                if entry is not None and entry.kind == "dir":
                    stack.append(child)
                else:
                    yield child


class DirTree(ImageTree):
    """An image root directory on disk."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.description = f"directory {self.root}"

    def _host(self, path: str) -> Path:
        # ``path`` comes from resolve(): no symlink in its directories, no ".."
        return self.root / path.lstrip("/")

    def lstat(self, path: str) -> Optional[Entry]:
        host = self._host(path)
        try:
            info = os.lstat(host)
        except OSError:
            return None
        mode = stat.S_IMODE(info.st_mode)
        if stat.S_ISLNK(info.st_mode):
            return Entry("symlink", mode, target=os.readlink(host))
        if stat.S_ISDIR(info.st_mode):
            return Entry("dir", mode)
        if stat.S_ISREG(info.st_mode):
            return Entry("file", mode, info.st_size)
        return Entry("other", mode)

    def read_entry(self, path: str, entry: Entry) -> bytes:
        try:
            return self._host(path).read_bytes()
        except OSError as error:
            raise PathProblem(f"{path}: cannot read it ({error.strerror})") from None

    def names(self, path: str) -> List[str]:
        try:
            return os.listdir(self._host(path))
        except OSError:
            return []


class LayeredTree(ImageTree):
    """Files of image layers applied in order; contents read through ``reader``."""

    def __init__(self, entries: Dict[str, Entry], reader, description: str):
        self.entries = entries
        self.reader = reader  # callable(entry) -> bytes
        self.description = description
        self._children: Optional[Dict[str, Set[str]]] = None

    def lstat(self, path: str) -> Optional[Entry]:
        entry = self.entries.get(path)
        if entry is None and path in self._directory_index():
            return Entry("dir", 0o755)  # a parent directory the layers never listed
        return entry

    def read_entry(self, path: str, entry: Entry) -> bytes:
        return self.reader(entry)

    def names(self, path: str) -> List[str]:
        return sorted(self._directory_index().get(path, ()))

    def _directory_index(self) -> Dict[str, Set[str]]:
        if self._children is None:
            children: Dict[str, Set[str]] = {}
            for path in self.entries:
                while path != "/":
                    parent, name = posixpath.split(path)
                    known = parent in children
                    children.setdefault(parent, set()).add(name)
                    if known:
                        break
                    path = parent
            self._children = children
        return self._children
