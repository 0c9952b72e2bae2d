"""The answer to a ``MONITOR`` request of WalT's own ``walt-log-monitor`` script.

That shell script (still found on images upgraded from WalT's walt-node, or
called by users' scripts) makes ``/tmp/walt-monitor-{stdin,stdout}-<pid>.fifo``,
puts its terminal in raw mode, writes ``MONITOR <pid> <uid> <gid> <rows> <cols>``
to the logs FIFO and copies the stdout FIFO to its terminal until that FIFO
is closed (docs/protocols.md §3).  walt-node's daemon runs nothing for such a
request (anyone can write the FIFO, so its uid/gid prove nothing): it writes
a short message into the stdout FIFO saying how to run the command with
walt-node's own ``walt-log-monitor``, and closes it, so the script ends and
restores the terminal.

Only the requesting process's owner may receive that message: the process
must exist, the FIFO must be a FIFO (not a link) owned by the process's real
uid, and the uid in the request must be that same uid.  Anything else is
refused without writing (reported once, then counted).  The daemon never
waits: the script opens its FIFO only after its request, so a worker thread
waits for that (non-blocking opens, a few seconds at most, a few requests at
once).  The stdin FIFO is left alone: opening it would let the script's
background copy loop read the user's terminal after the script ended.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import stat
import threading
import time
from typing import Dict, NamedTuple, Optional

from walt_node.paths import Paths, live_process_file
from walt_node.service import ProblemCounter

log = logging.getLogger(__name__)

READER_WAIT = 5.0  # the script opens its stdout FIFO right after writing the request
RETRY_INTERVAL = 0.02
WRITE_WAIT = 1.0
MAX_ANSWERING = 4  # requests answered at once; more are refused (and counted)

# the requester's terminal is in raw mode: lines end with \r\n
MESSAGE = "\r\n".join([
    "walt-log-monitor: nothing was run.",
    "This node runs walt-node, whose logs daemon runs no command on request",
    "(any local user could forge the request).  Run your command with",
    "walt-node's own monitor instead: it runs the command as you, shows its",
    "output, and logs it to the stream <command>.<pid>.monitor:",
    "",
    "    walt-node log-monitor <command> [args...]",
    "",
    "(walt-node-setup also installs it as walt-log-monitor in /usr/local/bin.)",
    "",
]).encode()

# kinds of refusals, as shown in the daemon's log
MALFORMED = "malformed MONITOR request (expected: MONITOR <pid> <uid> <gid> <rows> <cols>)"
NO_PROCESS = "MONITOR request for a process that does not exist"
NO_FIFO = "MONITOR request without its FIFO"
NOT_FIFO = "MONITOR request whose FIFO is not a FIFO (or is a symbolic link)"
NOT_OWNER = "MONITOR request not matching the owner of its process and FIFO"
NO_READER = f"MONITOR request whose FIFO was not opened within {READER_WAIT:g} s"
WRITE_FAILED = "MONITOR request whose FIFO could not take the answer"
TOO_MANY = f"MONITOR requests beyond {MAX_ANSWERING} at once"


class Refused(Exception):
    def __init__(self, kind: str, detail: str):
        super().__init__(kind)
        self.kind = kind
        self.detail = detail


class Request(NamedTuple):
    pid: int
    uid: int


def parse_request(line: bytes) -> Request:
    """``MONITOR <pid> <uid> <gid> [<rows> <cols>]`` (the size is missing without a terminal)."""
    words = line.split()
    numbers = words[1:]
    if (words[:1] != [b"MONITOR"] or len(numbers) not in (3, 5)
            or not all(w.isdigit() and len(w) <= 10 for w in numbers) or int(numbers[0]) == 0):
        raise Refused(MALFORMED, repr(line[:120]))
    return Request(pid=int(numbers[0]), uid=int(numbers[1]))


def real_uid(pid: int) -> Optional[int]:
    """The real uid of process ``pid`` (None if there is no such process)."""
    try:
        with open(live_process_file(pid, "status"), "rb") as status:
            for line in status:
                if line.startswith(b"Uid:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


class MonitorRequests:
    """Checks and answers MONITOR requests; :meth:`handle` never blocks."""

    def __init__(self, paths: Paths, reader_wait: float = READER_WAIT):
        self.paths = paths
        self.reader_wait = reader_wait
        self.problems = ProblemCounter(log)
        self.answered = 0
        self._lock = threading.Lock()
        self._answering = 0

    @property
    def counts(self) -> Dict[str, int]:
        return dict(self.problems.counts)

    def handle(self, line: bytes) -> None:
        """Called by the daemon's loop with one request line."""
        try:
            request = parse_request(line)
        except Refused as refused:
            self.problems.report(refused.kind, refused.detail)
            return
        with self._lock:
            if self._answering >= MAX_ANSWERING:
                self.problems.report(TOO_MANY, f"pid {request.pid}")
                return
            self._answering += 1
        threading.Thread(target=self._answer, args=(request,), name=f"monitor-{request.pid}",
                         daemon=True).start()

    def _answer(self, request: Request) -> None:
        try:
            fd = self._open_fifo(request)
            try:
                _write_within(fd, MESSAGE, WRITE_WAIT)
            finally:
                os.close(fd)  # the script's copy loop ends, the script restores its terminal
        except Refused as refused:
            self.problems.report(refused.kind, refused.detail)
            return
        finally:
            with self._lock:
                self._answering -= 1
        with self._lock:
            self.answered += 1
            first = self.answered == 1
        (log.info if first else log.debug)(
            "answered the MONITOR request of pid %d (uid %d): told it to use walt-node's "
            "walt-log-monitor; nothing was run (further answers are only counted)",
            request.pid, request.uid)

    def _open_fifo(self, request: Request) -> int:
        path = self.paths.monitor_fifo(request.pid, "stdout")
        owner = self._check(request, path)
        deadline = time.monotonic() + self.reader_wait
        while True:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
                break
            except OSError as error:
                if error.errno != errno.ENXIO:  # ENXIO: its reader has not opened it yet
                    raise Refused(NOT_FIFO if error.errno == errno.ELOOP else NO_FIFO,
                                  f"{path}: {error.strerror}") from None
            if time.monotonic() > deadline:
                raise Refused(NO_READER, str(path))
            if real_uid(request.pid) is None:
                raise Refused(NO_PROCESS, f"pid {request.pid} exited before opening {path}")
            time.sleep(RETRY_INTERVAL)
        opened = os.fstat(fd)
        if (opened.st_dev, opened.st_ino) != (owner.st_dev, owner.st_ino) \
                or real_uid(request.pid) != request.uid:
            os.close(fd)
            raise Refused(NOT_OWNER, f"{path} or pid {request.pid} changed while opening it")
        return fd

    def _check(self, request: Request, path: os.PathLike) -> os.stat_result:
        uid = real_uid(request.pid)
        if uid is None:
            raise Refused(NO_PROCESS, f"pid {request.pid}")
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            raise Refused(NO_FIFO, f"pid {request.pid}: no {path}") from None
        if not stat.S_ISFIFO(info.st_mode):
            raise Refused(NOT_FIFO, f"{path} (mode {stat.filemode(info.st_mode)})")
        if not info.st_uid == uid == request.uid:
            raise Refused(NOT_OWNER, f"{path} owned by uid {info.st_uid}, pid {request.pid} "
                                     f"run by uid {uid}, request says uid {request.uid}")
        return info


def _write_within(fd: int, data: bytes, timeout: float) -> None:
    """Write ``data`` (at most PIPE_BUF bytes: all or nothing) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.write(fd, data)
            return
        except BlockingIOError:
            pass
        except OSError as error:  # EPIPE: the reader left already
            raise Refused(WRITE_FAILED, error.strerror or str(error)) from None
        left = deadline - time.monotonic()
        if left <= 0:
            raise Refused(WRITE_FAILED, f"its pipe stayed full for {timeout:g} s")
        select.select([], [fd], [], left)

