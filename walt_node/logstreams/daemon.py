"""The logs daemon: FIFO requests (§3) in, one log stream per connection (§2) out.

One thread, one ``poll`` loop:

- the FIFO is opened read-write, so it always has a writer and a reader:
  a writer never meets "no reader" (SIGPIPE) and the daemon never sees EOF
  between two writers; it is read a megabyte at a time, as soon as data is
  there (no added delay), so lines are batched exactly when they come fast;
- the :class:`~walt_node.logstreams.parse.FifoParser` turns each chunk into
  protocol lines per stream, the :class:`~walt_node.logstreams.forwarder.Forwarder`
  delivers them (spooling what the server cannot take);
- systemd is told READY=1 once the FIFO exists and WATCHDOG=1 from the loop.

Alone (``walt-node logs-daemon``) it stops on SIGTERM or SIGINT; in the resident
process of ``walt-node services`` it runs in a thread and stops when the shared
:class:`~walt_node.service.StopFlag` is set, which its poll loop watches.
On stopping, the FIFO is removed (new writers of ``walt-log-echo``
then use their own connection), what writers already opened it wrote is read
to the end, and the forwarder delivers or spools everything it holds.
"""

from __future__ import annotations

import fcntl
import logging
import os
import select
import signal
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

from walt_node.errors import WaltNodeError
from walt_node.logstreams.forwarder import Forwarder
from walt_node.logstreams.monitor_request import MonitorRequests
from walt_node.logstreams.parse import DEFAULT_MAX_LINE, FifoParser
from walt_node.logstreams.spool import DEFAULT_MAX_BYTES, Spool, SpoolBusy, SpoolError
from walt_node.paths import Paths
from walt_node.service import StopFlag, notifier, on_stop_signals, watchdog_period

log = logging.getLogger(__name__)

READ_SIZE = 1024 * 1024
PIPE_SIZE = 1024 * 1024
FIFO_MODE = 0o622  # anyone may write a request (walt-log-echo runs as any user); only root reads
SUMMARY_PERIOD = 60.0
ADOPT_PERIOD = 10.0
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class DaemonError(WaltNodeError):
    pass


@dataclass
class DaemonConfig:
    fifo: Path
    spool_dir: Path
    spool_size: int = DEFAULT_MAX_BYTES
    max_line: int = DEFAULT_MAX_LINE
    idle_close: float = 30.0
    max_connections: int = 64
    max_streams: int = 4096
    paced: bool = True
    resend_window: float = 0.25
    retry_max: float = 5.0
    stop_timeout: float = 5.0


# ------------------------------------------------------------------ the FIFO

def open_fifo(path: Path) -> Tuple[int, int, int]:
    """Create (if needed) and open the FIFO; returns (read fd, read-write fd, inode)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            info = None
        if info is not None and not stat.S_ISFIFO(info.st_mode):
            raise DaemonError(f"{path} exists and is not a FIFO: remove it (walt-init normally "
                              "does) or choose another path with --fifo")
        if info is not None and info.st_uid != os.geteuid():
            # someone else's FIFO could let its owner read the requests: make our own
            log.warning("replacing %s, owned by uid %d", path, info.st_uid)
            os.unlink(path)
            info = None
        if info is None:
            os.mkfifo(path, FIFO_MODE)
        os.chmod(path, FIFO_MODE)  # mkfifo is subject to the umask
        info = os.lstat(path)
        reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        keeper = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        raise DaemonError(f"cannot create or open the logs FIFO {path}: {error.strerror}") from None
    try:
        fcntl.fcntl(keeper, F_SETPIPE_SZ, PIPE_SIZE)  # room for bursts while we are busy
    except OSError:
        pass
    return reader, keeper, info.st_ino


class LogsDaemon:
    def __init__(self, config: DaemonConfig, address: Callable[[], Tuple[str, int]]):
        self.config = config
        self.spool = Spool(config.spool_dir, "daemon", config.spool_size)
        self.forwarder = Forwarder(address, self.spool, idle_close=config.idle_close,
                                   max_connections=config.max_connections,
                                   max_streams=config.max_streams, paced=config.paced,
                                   resend_window=config.resend_window, retry_max=config.retry_max)
        self.monitor = MonitorRequests(Paths.from_env())
        self.parser = FifoParser(config.max_line, report=self._report_malformed,
                                 on_monitor=self.monitor.handle)
        self._names: Dict[bytes, str] = {}
        self._stop = False
        self._reader = -1
        self._keeper = -1
        self._inode = 0
        self._wake_r = -1
        self._wake_w = -1
        self._notify = notifier()
        self._stop_flag: Optional[StopFlag] = None
        self._ready: Callable[[], None] = lambda: self._notify("READY=1")
        self._reported_counts: Dict[str, int] = {}
        self._reported_losses = (0, 0, 0, 0)

    # ------------------------------------------------------------ lifecycle
    def run(self, stop: Optional[StopFlag] = None, ready: Optional[Callable[[], None]] = None) -> int:
        """Forward until stopped: by ``stop`` if given (no signal handler is installed
        then: a thread of a resident process), else by SIGTERM or SIGINT. ``ready`` is
        called once the FIFO exists (default: tell systemd READY=1)."""
        self._stop_flag = stop
        if ready is not None:
            self._ready = ready
        self._open_spool()
        try:
            self._start()
            self._loop()
            self._shutdown()
        finally:
            self.spool.close()
            for fd in (self._reader, self._keeper, self._wake_r, self._wake_w):
                if fd >= 0:
                    os.close(fd)
        return 0

    def _open_spool(self) -> None:
        """Without a usable spool the daemon still forwards (memory only), but a
        spool owned by a live daemon means one is already running: refuse."""
        try:
            self.spool.open()
        except SpoolBusy:
            raise
        except SpoolError as error:
            log.error("%s; running without a spool: undelivered lines are kept in memory only",
                      error)
            self.forwarder.spool = None

    def request_stop(self, *_args: object) -> None:
        self._stop = True

    def _start(self) -> None:
        adopted = self.spool.adopt() if self.forwarder.spool else 0
        self.forwarder.adopt_spool()
        if self.spool.total:
            log.info("replaying %d bytes of spooled log lines (%d segments adopted)",
                     self.spool.total, adopted)
        self._reader, self._keeper, self._inode = open_fifo(self.config.fifo)
        if self._stop_flag is None:  # alone: the signals are ours
            self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            signal.set_wakeup_fd(self._wake_w)
            on_stop_signals(self.request_stop)
        self._ready()
        log.info("reading %s (mode %o), spool %s (max %d bytes)", self.config.fifo, FIFO_MODE,
                 self.spool.dir, self.config.spool_size)

    def _loop(self) -> None:
        watchdog = watchdog_period()
        next_watchdog = time.monotonic()
        next_summary = time.monotonic() + SUMMARY_PERIOD
        next_adopt = time.monotonic() + ADOPT_PERIOD
        while not self._stop:
            now = time.monotonic()
            if watchdog is not None and now >= next_watchdog:
                self._notify("WATCHDOG=1")
                next_watchdog = now + watchdog
            if now >= next_summary:
                self._summarize()
                next_summary = now + SUMMARY_PERIOD
            if now >= next_adopt:
                if self.forwarder.spool:
                    self.spool.adopt()
                    self.forwarder.adopt_spool()  # also streams left out by max_streams
                next_adopt = now + ADOPT_PERIOD
            deadlines = [next_summary, next_adopt]
            if watchdog is not None:
                deadlines.append(next_watchdog)
            forwarder_deadline = self.forwarder.next_deadline()
            if forwarder_deadline is not None:
                deadlines.append(forwarder_deadline)
            timeout_ms = max(0, int((min(deadlines) - time.monotonic()) * 1000) + 1)
            if self._wait(timeout_ms):
                self._read_fifo()
            self.forwarder.pump()

    def _wait(self, timeout_ms: int) -> bool:
        """Sleep until input, a socket event or a timer; True if the FIFO has data."""
        poller = select.poll()
        poller.register(self._reader, select.POLLIN)
        if self._wake_r >= 0:
            poller.register(self._wake_r, select.POLLIN)
        if self._stop_flag is not None:
            poller.register(self._stop_flag.fileno(), select.POLLIN)
        for fd, mask in self.forwarder.poll_fds():
            poller.register(fd, mask)
        fifo_ready = False
        for fd, _ in poller.poll(timeout_ms):
            if fd == self._reader:
                fifo_ready = True
            elif self._stop_flag is not None and fd == self._stop_flag.fileno():
                self._stop = True
            elif fd == self._wake_r:
                try:
                    os.read(self._wake_r, 512)
                except BlockingIOError:
                    pass
        return fifo_ready

    def _read_fifo(self) -> bool:
        """One read of up to a megabyte; False when nothing was there."""
        try:
            data = os.read(self._reader, READ_SIZE)
        except BlockingIOError:
            return False
        if not data:
            return False
        self._dispatch(self.parser.feed(data))
        return True

    def _dispatch(self, batches: Dict[bytes, list]) -> None:
        for raw, blocks in batches.items():
            name = self._names.get(raw)
            if name is None:
                if len(self._names) >= 10_000:
                    self._names.clear()
                name = self._names[raw] = raw.decode("utf-8")
            for block in blocks:
                self.forwarder.add(name, block)

    def _shutdown(self) -> None:
        log.info("stopping: reading what writers already wrote, then delivering or spooling")
        self._close_fifo()
        self._dispatch(self.parser.finish())
        self.forwarder.shutdown(self.config.stop_timeout)
        self._summarize()
        self.monitor.problems.summary()
        if self.spool.total:
            log.info("%d bytes of log lines left in the spool %s, delivered at next start",
                     self.spool.total, self.spool.dir)

    def _close_fifo(self) -> None:
        """Unlink the FIFO, then read until every writer that opened it has closed it."""
        try:
            if os.lstat(self.config.fifo).st_ino == self._inode:
                os.unlink(self.config.fifo)
        except OSError:
            pass
        os.close(self._keeper)
        self._keeper = -1
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            try:
                data = os.read(self._reader, READ_SIZE)
            except BlockingIOError:  # a writer still has it open
                select.select([self._reader], [], [], 0.01)
                continue
            if not data:
                return  # EOF: no writer left, nothing can be lost any more
            self._dispatch(self.parser.feed(data))
        log.warning("a writer kept the logs FIFO open for 2 s after the stop request")

    # ------------------------------------------------------------ reporting
    def _report_malformed(self, kind: str, sample: bytes) -> None:
        log.warning("malformed FIFO input: %s, e.g. %r (further ones are only counted)",
                    kind, sample[:80])

    def _summarize(self) -> None:
        counts = dict(self.parser.counts)
        if counts != self._reported_counts:
            log.warning("malformed FIFO input so far: %s",
                        "; ".join(f"{kind}: {n}" for kind, n in sorted(counts.items())))
            self._reported_counts = counts
        losses = (self.spool.dropped_lines, self.forwarder.dropped_lines,
                  self.forwarder.refused_lines, self.forwarder.spool_failures)
        if losses != self._reported_losses:
            log.warning("log lines dropped so far: %d from the full spool, %d from memory (server "
                        "unreachable and spool unusable), %d of new streams beyond "
                        "--max-streams; spool failures: %d", *losses)
            self._reported_losses = losses
