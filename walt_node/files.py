"""Replacing files so that readers, and a crash, see the old content or the new,
never half of it. Standard library only: /bin/blink uses it and must start fast."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union


def _temporary_next_to(path: Path) -> Path:
    # same directory (os.replace must not cross filesystems), unique per process
    return path.with_name(f".{path.name}.{os.getpid()}.walt-node-new")


def write_atomically(path: Union[str, Path], data: Union[str, bytes],
                     mode: Optional[int] = None) -> None:
    """Replace ``path`` by a complete file holding ``data`` (str is written as UTF-8).

    Without ``mode``, an existing file keeps its mode and, where allowed, its
    owner; a new one gets 0644.
    """
    path = Path(path)
    content = data.encode("utf-8") if isinstance(data, str) else data
    owner = None
    if mode is None:
        try:
            stat = path.stat()
            mode, owner = stat.st_mode & 0o7777, (stat.st_uid, stat.st_gid)
        except FileNotFoundError:
            mode = 0o644
    temporary = _temporary_next_to(path)
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as stream:
            stream.write(content)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, mode)
        if owner is not None and owner != (os.getuid(), os.getgid()):
            try:
                os.chown(temporary, *owner)
            except PermissionError:
                pass  # not ours to give away: the file changes owner, as with any rewrite
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise


def symlink_atomically(path: Union[str, Path], target: str) -> None:
    """Make ``path`` a symbolic link to ``target``, replacing whatever was there."""
    path = Path(path)
    temporary = _temporary_next_to(path)
    if os.path.lexists(temporary):
        os.unlink(temporary)
    os.symlink(target, temporary)
    os.replace(temporary, path)
