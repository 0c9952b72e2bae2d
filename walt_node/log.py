"""Log lines to the WalT server from Python experiment scripts.

    from walt_node import log
    log.echo("my-experiment", "temperature 21.5")
    log.echo("my-experiment", "started", ts=t0)   # an explicit timestamp
    log.flush(timeout=5)                           # optional: wait for delivery

``echo`` only puts the line on a queue (it never waits for the network);
a background thread delivers it:

1. to the logs daemon, through its FIFO, when a daemon reads it;
2. otherwise straight to the server's logs port (one connection per stream);
3. otherwise (server unreachable) into a spool on disk, delivered by this
   process as soon as the server answers, or later by the logs daemon.

Everything queued is flushed when the interpreter exits (within
``WALT_LOG_EXIT_TIMEOUT`` seconds, default 10; what is left stays spooled).
"""

from __future__ import annotations

import atexit
import errno
import logging
import os
import queue
import threading
import time
from typing import Any, Dict, List, Optional, Set

_LOG = logging.getLogger(__name__)
PIPE_BUF = 4096  # writes up to this size never interleave with other writers

_queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
_sender: Optional[_Sender] = None
_start_lock = threading.Lock()
_checked_streams: Set[str] = set()


def echo(stream: str, line: Any, ts: Optional[float] = None) -> None:
    """Queue ``line`` (str; several lines if it holds newlines) for ``stream``."""
    if _sender is None:
        _start()
    if stream not in _checked_streams:
        _check_stream(stream)
    _queue.put((stream, line, time.time() if ts is None else float(ts)))


def flush(timeout: Optional[float] = None) -> bool:
    """Wait until every line echoed so far is delivered (or spooled, if the
    server is unreachable); False if ``timeout`` seconds passed first."""
    if _sender is None or not _sender.is_alive():
        return _sender is None
    done = threading.Event()
    _queue.put(done)
    return done.wait(timeout)


def _check_stream(stream: str) -> None:
    if not isinstance(stream, str) or not stream or stream != stream.strip() \
            or any(c.isspace() for c in stream) or not stream.isprintable():
        raise ValueError(f"invalid log stream name {stream!r}: use a non-empty name "
                         "without spaces or control characters")
    _checked_streams.add(stream)


def _start() -> None:
    global _sender
    with _start_lock:
        if _sender is None:
            sender = _Sender()
            sender.start()
            atexit.register(_at_exit)
            _sender = sender


def _at_exit() -> None:
    sender = _sender
    if sender is None:
        return
    try:
        timeout = float(os.environ.get("WALT_LOG_EXIT_TIMEOUT", "10"))
    except ValueError:
        timeout = 10.0
    flush(timeout)
    sender.stop(timeout=2.0)


def _reset_after_fork() -> None:
    """A forked child has no sender thread: start its own on first use."""
    global _sender, _queue
    _sender = None
    _queue = queue.SimpleQueue()


os.register_at_fork(after_in_child=_reset_after_fork)


class _Sender(threading.Thread):
    """Delivers queued lines; owns the FIFO writer and the direct forwarder."""

    def __init__(self) -> None:
        super().__init__(name="walt-log-sender", daemon=True)
        from walt_node.paths import Paths

        self.paths = Paths.from_env()
        self.fifo_fd: Optional[int] = None
        self.forwarder: Any = None  # created when the FIFO is not usable
        self.stopping = False
        self.queue = _queue
        self.waiters: List[threading.Event] = []  # flush() calls waiting for delivery

    # ------------------------------------------------------------ main loop
    def run(self) -> None:
        while not self.stopping:
            busy = self.forwarder is not None and self.forwarder.busy()
            if not busy:
                self._release_waiters()
            try:
                item = self.queue.get(timeout=0.02 if busy else None)
            except queue.Empty:
                self.forwarder.pump()  # retries, acknowledgements, spool replay
                continue
            batch = [item]
            while len(batch) < 20000:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._handle(batch)
            except Exception:  # never let the thread die: later lines must still go
                _LOG.exception("walt_node.log: delivering log lines failed")
            if self.fifo_fd is not None and self.queue.empty():
                # idle: let go of the FIFO, so a stopping daemon sees its last writer leave
                os.close(self.fifo_fd)
                self.fifo_fd = None

    def _handle(self, batch: List[Any]) -> None:
        lines: List[Any] = []
        for item in batch:
            if isinstance(item, threading.Event):
                self.waiters.append(item)  # released once everything is delivered
            else:
                lines.append(item)
        self._deliver(lines)

    def stop(self, timeout: float) -> None:
        self.stopping = True
        self.queue.put(threading.Event())  # wake the thread
        self.join(timeout)
        if self.is_alive():  # stuck writing to a hung daemon: leave its state alone
            _LOG.warning("walt_node.log: the log sender is stuck; some lines may not be delivered")
            return
        if self.forwarder is not None:
            self.forwarder.shutdown(timeout)
            if self.forwarder.spool is not None:
                self.forwarder.spool.close(remove_if_empty=True)

    # ------------------------------------------------------------ delivery
    def _deliver(self, items: List[Any]) -> None:
        if not items:
            return
        direct_pending = self.forwarder is not None and self.forwarder.busy()
        if not direct_pending and self._fifo_usable() and self._write_fifo(items):
            return  # (while direct lines are pending, the FIFO would overtake them)
        self._direct(items)

    def _release_waiters(self) -> None:
        for waiter in self.waiters:
            waiter.set()
        self.waiters = []

    # --- through the daemon
    def _fifo_usable(self) -> bool:
        if self.fifo_fd is not None:
            return True
        try:
            fd = os.open(self.paths.logs_fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return False  # ENXIO: no daemon reads it; ENOENT: no FIFO at all
        os.set_blocking(fd, True)  # the daemon may be busy: wait, in this thread only
        self.fifo_fd = fd
        return True

    def _write_fifo(self, items: List[Any]) -> bool:
        # Each write starts with a newline: it ends whatever another writer left
        # unterminated in the FIFO, so that leftover cannot capture our first line.
        chunk: List[bytes] = [b"\n"]
        size = 1
        for stream, line, ts in items:
            for request in _tslog_requests(stream, line, ts):
                if size + len(request) > PIPE_BUF and size > 1:
                    if not self._fifo_write(b"".join(chunk)):
                        return False
                    chunk, size = [b"\n"], 1
                chunk.append(request)
                size += len(request)
        return self._fifo_write(b"".join(chunk))

    def _fifo_write(self, data: bytes) -> bool:
        assert self.fifo_fd is not None
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fifo_fd, view):]
            return True
        except OSError as error:
            if error.errno != errno.EPIPE:
                _LOG.warning("walt_node.log: writing to the logs FIFO failed: %s", error)
            os.close(self.fifo_fd)
            self.fifo_fd = None
            return False  # the daemon went away: these lines go the direct way

    # --- straight to the server
    def _direct(self, items: List[Any]) -> None:
        if self.forwarder is None:
            self.forwarder = self._new_forwarder()
        per_stream: Dict[str, List[bytes]] = {}
        for stream, line, ts in items:
            lines = per_stream.setdefault(stream, [])
            stamp = b"%.6f " % ts
            for text in _texts(line):
                lines.append(stamp + text + b"\n")
        for stream, lines in per_stream.items():
            self.forwarder.add(stream, b"".join(lines))
        self.forwarder.pump()

    def _new_forwarder(self) -> Any:
        from walt_node.logstreams.forwarder import Forwarder
        from walt_node.logstreams.settings import SPOOL_DIR_ENV, SPOOL_SIZE_ENV, parse_size, server_address
        from walt_node.logstreams.spool import Spool

        root = os.environ.get(SPOOL_DIR_ENV) or str(self.paths.logs_spool)
        size = parse_size(os.environ.get(SPOOL_SIZE_ENV, "64M"))
        spool = Spool(root, f"api-{os.getpid()}", size)
        try:
            spool.open()
            spool.adopt()  # lines an earlier script could not deliver
        except OSError as error:
            _LOG.warning("walt_node.log: %s; undelivered lines stay in memory", error)
            spool = None
        forwarder = Forwarder(server_address(None), spool, idle_close=60.0)
        forwarder.adopt_spool()
        return forwarder


def _texts(line: Any) -> List[bytes]:
    text = line if isinstance(line, str) else str(line)
    if text.endswith("\n"):
        text = text[:-1]  # print()-style lines: the final newline is not an empty line
    return [part.encode("utf-8", errors="replace") for part in text.split("\n")]


def _tslog_requests(stream: str, line: Any, ts: float) -> List[bytes]:
    head = b"TSLOG %.6f %s " % (ts, stream.encode())
    return [head + text + b"\n" for text in _texts(line)]
