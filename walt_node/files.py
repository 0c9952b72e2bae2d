"""Writing files safely, in directories other users may write to.

- replacing a file so that readers, and a crash, see the old content or the
  new, never half of it (:func:`write_atomically`, :func:`symlink_atomically`);
- editing a file others edit too, under a lock, through its real path
  (:func:`edit_locked`, for /etc/hosts);
- appending to a log file (:func:`open_for_append`).

Every file created here is created exclusively (``O_EXCL``) under a name
nobody can guess, and no symbolic link is followed where one could have been
planted: another local user cannot redirect a write to a file of their choice.
Standard library only: /bin/blink uses it and must start fast.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path
from typing import IO, Callable, Optional, Tuple, Union

TEMPORARY_SUFFIX = ".walt-node-new"
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafeFile(OSError):
    """A path we were asked to write is a link, not a regular file, or someone else's."""


def _temporary_name(path: Path) -> Path:
    # tempfile.mkstemp's recipe (random name, O_EXCL), without importing tempfile
    return path.with_name(f".{path.name}.{os.urandom(8).hex()}{TEMPORARY_SUFFIX}")


def _new_temporary(path: Path) -> Tuple[int, Path]:
    """A new empty file next to ``path`` (same filesystem, for os.replace), mode 0600."""
    while True:
        temporary = _temporary_name(path)
        try:
            return os.open(temporary, _NEW_FILE_FLAGS, 0o600), temporary
        except FileExistsError:
            continue  # 2^-64: someone guessed, or planted one; draw again


def remove_leftover_temporaries(path: Union[str, Path]) -> None:
    """Remove the temporaries of ``path`` a killed writer left behind."""
    path = Path(path)
    try:
        names = os.listdir(path.parent)
    except FileNotFoundError:
        return
    prefix = f".{path.name}."
    for name in names:
        middle = name[len(prefix):-len(TEMPORARY_SUFFIX)]
        if name.startswith(prefix) and name.endswith(TEMPORARY_SUFFIX) and len(middle) == 16:
            try:
                os.unlink(path.parent / name)
            except FileNotFoundError:
                pass


def _kept_mode_and_owner(path: Path) -> Tuple[int, Optional[Tuple[int, int]]]:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return 0o644, None
    if not stat.S_ISREG(info.st_mode):  # a link is replaced, never followed for its mode
        return 0o644, None
    return stat.S_IMODE(info.st_mode), (info.st_uid, info.st_gid)


def write_atomically(path: Union[str, Path], data: Union[str, bytes],
                     mode: Optional[int] = None,
                     still_valid: Optional[Callable[[], bool]] = None) -> bool:
    """Replace ``path`` by a complete file holding ``data`` (str is written as UTF-8).

    Without ``mode``, an existing regular file keeps its mode and, where
    allowed, its owner; a new one gets 0644. A symbolic link at ``path`` is
    replaced, not followed. ``still_valid`` is asked right before the
    replacement; when it says False nothing is replaced and False is returned.
    """
    path = Path(path)
    content = data.encode("utf-8") if isinstance(data, str) else data
    owner = None
    if mode is None:
        mode, owner = _kept_mode_and_owner(path)
    fd, temporary = _new_temporary(path)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(content)
            stream.flush()
            os.fchmod(fd, mode)
            if owner is not None and owner != (os.geteuid(), os.getegid()):
                try:
                    os.fchown(fd, *owner)
                except PermissionError:
                    pass  # not ours to give away: the file changes owner, as with any rewrite
            os.fsync(fd)
        if still_valid is not None and not still_valid():
            os.unlink(temporary)
            return False
        os.replace(temporary, path)
        return True
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise


def symlink_atomically(path: Union[str, Path], target: str) -> None:
    """Make ``path`` a symbolic link to ``target``, replacing whatever was there."""
    path = Path(path)
    while True:
        temporary = _temporary_name(path)
        try:
            os.symlink(target, temporary)  # fails if the name exists: never reuses a planted one
            break
        except FileExistsError:
            continue
    try:
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def _open_locked(path: Path) -> int:
    """``path`` opened read-write and flock'ed; the file is created (0644) if missing.

    The lock is held on the file itself, so a writer that replaced the file
    while we waited leaves us holding the old one: then open it again.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_ino == os.stat(path, follow_symlinks=False).st_ino:
                return fd
        except FileNotFoundError:
            pass  # replaced then removed: open again
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _signature(fd: int) -> Tuple[int, int, int, int]:
    """Changes whenever the file is written to (size, times) or replaced (inode)."""
    info = os.fstat(fd)
    return info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns


def _read_all(fd: int) -> str:
    chunks = []
    while True:
        chunk = os.pread(fd, 1 << 16, sum(len(c) for c in chunks))
        if not chunk:
            return b"".join(chunks).decode("utf-8", "surrogateescape")
        chunks.append(chunk)


def _rewrite_in_place(fd: int, text: str) -> None:
    content = text.encode("utf-8", "surrogateescape")
    os.pwrite(fd, content, 0)
    os.ftruncate(fd, len(content))
    os.fsync(fd)


def edit_locked(path: Union[str, Path], edit: Callable[[str], str]) -> bool:
    """Apply ``edit`` (old text -> new text) to a file that others edit too.

    The file is reached through its real path, so a symbolic link stays a
    link. We hold an exclusive flock on it while editing: other walt-node
    processes, and tools that use flock, wait for us. A writer that ignores
    locks and appends while ``edit`` runs is not lost either: the file is
    read and edited again (only an append in the instant between that last
    check and the replacement could be). A file that cannot be replaced (a
    bind mount, in containers) is rewritten in place. Returns whether the
    file changed.
    """
    real = Path(os.path.realpath(path))
    if not os.path.lexists(real) and edit("") == "":
        return False  # nothing to write: a missing file stays missing
    while True:
        changed = _edit_once(real, edit)
        if changed is not None:
            return changed


def _edit_once(real: Path, edit: Callable[[str], str]) -> Optional[bool]:
    """One locked attempt of :func:`edit_locked`; None when the file moved under us."""
    fd = _open_locked(real)
    try:
        signature = _signature(fd)
        text = _read_all(fd)
        new = edit(text)
        if new == text:
            return False

        def unchanged() -> bool:
            return _signature(fd) == signature and \
                os.stat(real, follow_symlinks=False).st_ino == signature[0]

        try:
            return True if write_atomically(real, new, still_valid=unchanged) else None
        except OSError as error:
            if error.errno not in (errno.EBUSY, errno.EXDEV):
                raise
            _rewrite_in_place(fd, new)  # a mount point: os.replace cannot replace it
            return True
    finally:
        os.close(fd)


def open_for_append(path: Union[str, Path]) -> IO[str]:
    """Open a text file of ours for appending, created if missing (0644).

    Refused with :class:`UnsafeFile` when ``path`` is a symbolic link, not a
    regular file (a FIFO would block us) or owned by another user: in a
    directory others can write to, any of these could send our lines into a
    file of their choice, or let them rewrite what we wrote.
    """
    path = Path(path)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UnsafeFile(error.errno, f"{path} is a symbolic link: give the path of a "
                                          "regular file (walt-node does not write through links)") from None
        if error.errno == errno.ENXIO:  # a FIFO nobody reads
            raise UnsafeFile(error.errno, f"{path} is not a regular file: "
                                          "remove it or choose another path") from None
        raise
    info = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(info.st_mode):
        problem = "is not a regular file"
    elif info.st_uid != os.geteuid():
        problem = f"belongs to another user (uid {info.st_uid})"
    elif info.st_nlink != 1:
        problem = "has other hard links"
    if problem is not None:
        os.close(fd)
        raise UnsafeFile(errno.EPERM, f"{path} {problem}: remove it or choose another path")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "a", encoding="utf-8")


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file's content, in hex (to tell whether a file is still as written)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()
