"""A bounded on-disk spool of log lines not yet delivered to the server.

Layout (all under the spool root, default ``/var/lib/walt/logs-spool``)::

    <owner>.lock                   flock held by the live process owning <owner>/
    <owner>/s-<stream>/<segment>.seg protocol-form lines ``<ts> <text>\\n``
    <owner>/h-<hash>/stream        a long stream name (its directory is named by a hash)

Each process writing a spool (the daemon: owner ``daemon``; a script using
the Python API: ``api-<pid>``) owns one tree and holds its lock while alive.
A tree whose lock is free belongs to a dead process: :meth:`Spool.adopt`
moves its segments into the caller's tree so they are delivered.

Segment names start with the wall-clock nanoseconds of their creation, so
sorting them orders the lines of a stream, also across adopted trees.  Lines
are stored with their original timestamps.  When the spool would grow past
``max_bytes`` the oldest data segment (of any stream) is dropped and replaced
by a one-line notice, delivered in its place, saying how many lines were lost.

A failed write (disk full, too many open files) leaves the spool as it was:
what ``append`` or ``prepend`` could not store entirely is not stored at all,
so the caller keeps it and tries again later, without duplicates or cut lines.
At most ``MAX_APPENDING`` segment files are held open for appending, whatever
the number of streams.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple
from urllib.parse import quote, unquote

from walt_node.errors import WaltNodeError
from walt_node.files import write_atomically

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
SEGMENT_SUFFIX = ".seg"
NOTICE_SUFFIX = ".drop.seg"
NAME_FILE = "stream"
MAX_PLAIN_DIRNAME = 100  # longer quoted names (NAME_MAX is 255 bytes) are hashed
MAX_APPENDING = 32       # segment files held open for appending at once


def stream_dirname(stream: str) -> str:
    """A short directory name for any stream name (an attacker picks the name)."""
    plain = "s-" + quote(stream, safe="")
    if len(plain) <= MAX_PLAIN_DIRNAME:
        return plain
    import hashlib  # here: it loads OpenSSL's libcrypto, and long names are rare

    return "h-" + hashlib.sha256(stream.encode("utf-8", "surrogateescape")).hexdigest()[:40]


def stream_of_dir(directory: Path) -> Optional[str]:
    name = directory.name
    if name.startswith("s-"):
        return unquote(name[2:])
    if name.startswith("h-"):
        try:
            return (directory / NAME_FILE).read_bytes().decode("utf-8", "surrogateescape")
        except OSError:
            return None  # cut short before its name was written: nothing in it was spooled
    return None


@dataclass
class Segment:
    path: Path
    size: int
    read_pos: int = 0
    notice: bool = False

    @property
    def remaining(self) -> int:
        return self.size - self.read_pos


@dataclass
class _StreamSpool:
    directory: Path
    segments: List[Segment] = field(default_factory=list)
    append_fd: Optional[int] = None  # fd of segments[-1] while we append to it


class SpoolError(WaltNodeError, OSError):
    pass


class SpoolBusy(SpoolError):
    """Another live process owns this spool tree."""


class Spool:
    def __init__(self, root: Path, owner: str, max_bytes: int = DEFAULT_MAX_BYTES,
                 segment_bytes: int = 1024 * 1024, clock_ns: Callable[[], int] = time.time_ns):
        if max_bytes < 64 * 1024:
            raise ValueError(f"log spool size {max_bytes} bytes is too small: give --spool-size "
                             "(or WALT_LOGS_SPOOL_SIZE) at least 64K")
        self.root = Path(root)
        self.owner = owner
        self.max_bytes = max_bytes
        self.segment_bytes = max(4096, min(segment_bytes, max_bytes // 8))
        self.clock_ns = clock_ns
        self.dir = self.root / owner
        self.total = 0
        self.dropped_lines = 0
        self.drops = 0
        self._streams: Dict[str, _StreamSpool] = {}
        self._appending: Dict[str, _StreamSpool] = {}  # least recently used first
        self._counter = 0
        self._lock_fd: Optional[int] = None

    # -------------------------------------------------------------- lifecycle
    def open(self) -> Spool:
        """Create the tree, take its lock and index what an earlier run left."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / f"{self.owner}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as error:
            raise SpoolError(error.errno, f"cannot use the log spool {self.dir}: {error.strerror}; "
                                          "choose another place with --spool-dir") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise SpoolBusy(0, f"the log spool {self.dir} is in use by another process "
                                "(is another walt-logs-daemon running?)") from None
        self._lock_fd = fd
        self._index_tree(self.dir)
        return self

    def close(self, remove_if_empty: bool = False) -> None:
        """Release the tree; a short-lived owner (a script) removes it when empty."""
        for spool in list(self._appending.values()):
            self._stop_appending(spool)
        if self._lock_fd is None:
            return
        if remove_if_empty and not any(s.segments for s in self._streams.values()):
            for spool in self._streams.values():
                _remove_quietly(spool.directory)
            _remove_quietly(self.dir)
            _unlink_quietly(self.root / f"{self.owner}.lock")
        os.close(self._lock_fd)
        self._lock_fd = None

    def adopt(self) -> int:
        """Move the segments of dead owners' trees into ours; returns how many."""
        moved = 0
        try:
            entries = list(os.scandir(self.root))
        except OSError:
            return 0
        for entry in entries:
            if entry.name == self.owner or not entry.is_dir(follow_symlinks=False):
                continue
            moved += self._adopt_tree(entry.name)
        return moved

    def _adopt_tree(self, owner: str) -> int:
        lock_path = self.root / f"{owner}.lock"
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            return 0
        moved = 0
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return 0  # its owner is alive
        try:
            tree = self.root / owner
            for stream_dir in sorted(tree.iterdir()):
                stream = stream_of_dir(stream_dir)
                for seg in sorted(stream_dir.glob("*" + SEGMENT_SUFFIX)):
                    if stream is not None:
                        moved += self._adopt_segment(stream, seg)
                _unlink_quietly(stream_dir / NAME_FILE)
                _remove_quietly(stream_dir)
            _remove_quietly(tree)
            lock_path.unlink()
        except OSError as error:
            log.warning("could not adopt the log spool of %s: %s", owner, error)
        finally:
            os.close(fd)
        return moved

    def _adopt_segment(self, stream: str, path: Path) -> int:
        spool = self._stream(stream)
        target = spool.directory / path.name
        os.rename(path, target)
        seg = Segment(target, target.stat().st_size, notice=target.name.endswith(NOTICE_SUFFIX))
        self._stop_appending(spool)
        spool.segments.append(seg)
        spool.segments.sort(key=lambda s: s.path.name)
        self.total += seg.size
        self._enforce_limit(0)
        return 1

    def _index_tree(self, tree: Path) -> None:
        for stream_dir in sorted(tree.iterdir()):
            stream = stream_of_dir(stream_dir) if stream_dir.is_dir() else None
            if stream is None:
                continue
            spool = self._stream(stream)
            for seg in sorted(stream_dir.glob("*" + SEGMENT_SUFFIX)):
                size = seg.stat().st_size
                if size == 0:
                    seg.unlink()
                    continue
                spool.segments.append(Segment(seg, size, notice=seg.name.endswith(NOTICE_SUFFIX)))
                self.total += size
        self._enforce_limit(0)

    # ----------------------------------------------------------------- queries
    def streams(self) -> List[str]:
        return [name for name, spool in self._streams.items() if spool.segments]

    def has(self, stream: str) -> bool:
        spool = self._streams.get(stream)
        return bool(spool and spool.segments)

    def bytes_for(self, stream: str) -> int:
        spool = self._streams.get(stream)
        return sum(seg.remaining for seg in spool.segments) if spool else 0

    # ----------------------------------------------------------------- writing
    def append(self, stream: str, data: bytes) -> None:
        """Add complete lines after everything spooled for ``stream``: all of them,
        or (``OSError``) none."""
        undo: List[Tuple[_StreamSpool, Segment, int]] = []  # (spool, segment, its old size)
        try:
            for piece in self._pieces(data):
                self._enforce_limit(len(piece))
                spool = self._stream(stream)
                seg = self._appendable(spool)
                undo.append((spool, seg, seg.size))
                self._write(spool.append_fd, piece, seg.path)
                seg.size += len(piece)
                self.total += len(piece)
        except OSError:
            for spool, seg, size in reversed(undo):
                self._undo_append(spool, seg, size)
            raise

    def _appendable(self, spool: _StreamSpool) -> Segment:
        """The segment to append to, open in ``spool.append_fd``."""
        last = spool.segments[-1] if spool.segments else None
        if spool.append_fd is not None and last is not None and last.size < self.segment_bytes:
            self._appending[spool.directory.name] = self._appending.pop(spool.directory.name)
            return last
        self._stop_appending(spool)
        while len(self._appending) >= MAX_APPENDING:
            self._stop_appending(next(iter(self._appending.values())))
        if (last is not None and not last.notice and last.read_pos == 0
                and last.size < self.segment_bytes):
            fd = self._open_for_append(last.path)  # closed earlier to bound open files
            seg = last
        else:
            seg = Segment(spool.directory / (self._new_stem(self.clock_ns()) + SEGMENT_SUFFIX), 0)
            fd = self._create(seg.path)
            spool.segments.append(seg)
        spool.append_fd = fd
        self._appending[spool.directory.name] = spool
        return seg

    def _undo_append(self, spool: _StreamSpool, seg: Segment, size: int) -> None:
        if not any(kept is seg for kept in spool.segments):
            return  # dropped meanwhile to make room
        self.total -= seg.size - size
        seg.size = size
        if size == 0:
            if seg is spool.segments[-1]:
                self._stop_appending(spool)
            spool.segments.remove(seg)
            _unlink_quietly(seg.path)
        elif spool.append_fd is not None:
            try:
                os.ftruncate(spool.append_fd, size)
            except OSError:
                self._stop_appending(spool)
                _truncate_quietly(seg.path, size)
        else:
            _truncate_quietly(seg.path, size)

    def prepend(self, stream: str, data: bytes) -> None:
        """Add complete lines before everything spooled for ``stream`` (a resend)."""
        pieces = self._pieces(data)
        if not pieces:
            return
        spool = self._stream(stream)
        first = spool.segments[0].path.name if spool.segments else None
        base = (int(first.split("-", 1)[0]) if first else self.clock_ns()) - len(pieces) - 1
        new_segments: List[Segment] = []
        try:
            for number, piece in enumerate(pieces):
                path = spool.directory / (self._new_stem(base + number) + SEGMENT_SUFFIX)
                fd = self._create(path)
                new_segments.append(Segment(path, len(piece)))
                try:
                    self._write(fd, piece, path)
                finally:
                    os.close(fd)
        except OSError:
            for seg in new_segments:
                _unlink_quietly(seg.path)
            raise
        spool.segments[:0] = new_segments
        self.total += sum(seg.size for seg in new_segments)
        self._enforce_limit(0)

    def _pieces(self, data: bytes) -> List[bytes]:
        """``data`` cut at line ends into pieces of about a segment each."""
        pieces = []
        start = 0
        while start < len(data):
            end = data.find(b"\n", start + self.segment_bytes - 1)
            end = len(data) if end < 0 else end + 1
            pieces.append(data[start:end])
            start = end
        return pieces

    # ----------------------------------------------------------------- reading
    def read(self, stream: str, max_bytes: int) -> bytes:
        """Take up to about ``max_bytes`` of whole lines from the head of ``stream``.

        What is returned leaves the spool (fully read segments are deleted):
        the caller now holds it.
        """
        spool = self._streams.get(stream)
        if not spool or not spool.segments:
            return b""
        seg = spool.segments[0]
        if seg is spool.segments[-1]:
            self._stop_appending(spool)
        with open(seg.path, "rb") as file:
            file.seek(seg.read_pos)
            data = file.read(max(max_bytes, 1))
        if seg.read_pos + len(data) < seg.size:
            cut = data.rfind(b"\n") + 1
            if cut == 0:  # a line longer than max_bytes: take it whole
                with open(seg.path, "rb") as file:
                    file.seek(seg.read_pos)
                    data = file.read(seg.remaining)
                cut = len(data)
            data = data[:cut]
        elif data and not data.endswith(b"\n"):
            data += b"\n"  # a segment cut short by a crash: keep its last line whole
        seg.read_pos += len(data)
        self.total -= min(len(data), self.total)
        if seg.read_pos >= seg.size:
            spool.segments.pop(0)
            _unlink_quietly(seg.path)
        return data

    # ----------------------------------------------------------------- limits
    def _enforce_limit(self, incoming: int) -> None:
        while self.total + incoming > self.max_bytes:
            victim = self._oldest_data_segment()
            if victim is None:
                return
            stream, seg = victim
            self._drop(stream, seg)

    def _oldest_data_segment(self) -> Optional[Tuple[str, Segment]]:
        best: Optional[Tuple[str, Segment]] = None
        for stream, spool in self._streams.items():
            for seg in spool.segments:
                if not seg.notice:
                    if best is None or seg.path.name < best[1].path.name:
                        best = (stream, seg)
                    break
        return best

    def _drop(self, stream: str, seg: Segment) -> None:
        spool = self._streams[stream]
        if seg is spool.segments[-1]:
            self._stop_appending(spool)
        try:
            with open(seg.path, "rb") as file:
                file.seek(seg.read_pos)
                data = file.read()
        except OSError:
            data = b""
        lines = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
        first_ts = data.split(b" ", 1)[0] if data else b""
        try:
            ts = float(first_ts)
        except ValueError:
            ts = self.clock_ns() / 1e9
        notice = (b"%.6f [walt-node] %d log lines of this stream were dropped here: the log spool "
                  b"was full (%d bytes; raise --spool-size or WALT_LOGS_SPOOL_SIZE)\n"
                  % (ts, lines, self.max_bytes))
        index = spool.segments.index(seg)
        notice_path = seg.path.with_name(seg.path.name[:-len(SEGMENT_SUFFIX)] + NOTICE_SUFFIX)
        _unlink_quietly(seg.path)
        self.total -= seg.remaining
        self.dropped_lines += lines
        if not self.drops:
            log.warning("log spool full (%d bytes): dropping the oldest lines, each time with a "
                        "notice in their place (first: %d lines of stream %s; further drops "
                        "are counted)", self.max_bytes, lines, stream)
        self.drops += 1
        try:
            fd = self._create(notice_path)
            try:
                self._write(fd, notice, notice_path)
            finally:
                os.close(fd)
        except OSError as error:
            _unlink_quietly(notice_path)
            del spool.segments[index]
            log.error("%s: the notice for %d dropped lines of stream %s is lost", error, lines, stream)
            return
        spool.segments[index] = Segment(notice_path, len(notice), notice=True)
        self.total += len(notice)

    # ----------------------------------------------------------------- helpers
    def _stream(self, stream: str) -> _StreamSpool:
        spool = self._streams.get(stream)
        if spool is None:
            directory = self.dir / stream_dirname(stream)
            directory.mkdir(parents=True, exist_ok=True)
            if directory.name.startswith("h-") and not (directory / NAME_FILE).exists():
                write_atomically(directory / NAME_FILE,
                                 stream.encode("utf-8", "surrogateescape"), mode=0o600)
            spool = self._streams[stream] = _StreamSpool(directory)
        return spool

    def _stop_appending(self, spool: _StreamSpool) -> None:
        if spool.append_fd is not None:
            os.close(spool.append_fd)
            spool.append_fd = None
            self._appending.pop(spool.directory.name, None)

    def _new_stem(self, ns: int) -> str:
        self._counter += 1
        return f"{ns:020d}-{os.getpid():07d}-{self._counter:08d}"

    def _create(self, path: Path) -> int:
        return self._open_for_append(path, os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW)

    def _open_for_append(self, path: Path, flags: int = os.O_NOFOLLOW) -> int:
        try:
            return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | flags, 0o600)
        except OSError as error:
            raise SpoolError(error.errno, f"cannot write the log spool file {path}: "
                                          f"{error.strerror}") from None

    def _write(self, fd: int, data: bytes, path: Path) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(fd, view)
            except OSError as error:
                raise SpoolError(error.errno, f"cannot write the log spool file {path}: "
                                              f"{error.strerror}") from None
            view = view[written:]


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def _truncate_quietly(path: Path, size: int) -> None:
    try:
        os.truncate(path, size)
    except OSError:
        pass


def _remove_quietly(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass
