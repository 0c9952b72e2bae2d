"""Delivery of protocol-form log lines to the server, one connection per stream.

The :class:`Forwarder` never blocks: sockets are non-blocking, and the owner
calls :meth:`Forwarder.pump` whenever something happened (new lines, a socket
event, a timer; :meth:`Forwarder.poll_fds` and :meth:`Forwarder.next_deadline`
say when).  Per stream, lines flow oldest first through::

    resend/out buffer  ->  on-disk spool  ->  in-memory tail (newest)

What losing a connection can lose.  §2 has no acknowledgement, so the
forwarder keeps every byte written to a connection until the kernel reports
it acknowledged by the peer (``SIOCOUTQ``), and for ``resend_window`` seconds
more (at most ``retain_bytes``).  When the connection breaks, all those bytes
are sent again, from the start of the line, on the next connection: the
server may record a few lines twice, but a line is lost only if the server's
kernel acknowledged it, the server *process* then died without reading it,
and the break was noticed more than ``resend_window`` seconds after that
acknowledgement (or more than ``retain_bytes`` were acknowledged since).
"""

from __future__ import annotations

import errno
import logging
import select
import socket
import time
from collections import deque
from typing import Callable, Deque, Dict, List, Optional, Tuple

from walt_node.logstreams.spool import Spool
from walt_node.protocols import (
    connection_error,
    end_log_stream,
    log_stream_header,
    start_log_connection,
    tcp_state,
    tune_log_connection,
    unsent_bytes,
    untransmitted_bytes,
)
from walt_node.text import printable

log = logging.getLogger(__name__)

Address = Callable[[], Tuple[str, int]]

TCP_ESTABLISHED = 1
FILL_LOW = 256 * 1024      # refill the out buffer from the spool below this
FILL_CHUNK = 1024 * 1024   # bytes taken from the spool at once
SERVER_READ = 8192         # a WalT 10 server decodes each read of 8 KiB on its own (§11)
QUIET = 0.02               # after this long without writes, the server has read them all
SEND_BUFFER = 256 * 1024   # so that a write always fits whole in the socket (no partial send)
SPOOL_RETRY = 1.0          # seconds before a stream tries the spool again after a failure
POLL_ERRORS = select.POLLERR | select.POLLHUP | select.POLLNVAL
POLL_CLOSED = select.POLLIN | getattr(select, "POLLRDHUP", 0x2000) | POLL_ERRORS


def next_write(out: bytearray, start: int, midline: bool, room: int,
               cell: int = SERVER_READ) -> Tuple[bytes, int]:
    """The next write to the server from ``out[start:]``, and how many bytes it carries.

    A WalT 10 server reads 8 KiB at a time and decodes each read alone: a
    character cut by the end of a read makes it close the stream (§11). A
    server that is behind reads 8 KiB from where its last read ended; so the
    writes are laid on a grid of 8 KiB steps (``room`` is what is left before
    the next step) and never cross a step: whole lines that fit, and when more
    lines wait, the gap to the step filled with zeros in front of the first
    stamp (``0001700000000.5`` is the same number). Returns ``b""`` when not
    even one line fits: the caller then waits until the server has read
    everything (``QUIET``) and starts a new grid. A line longer than a read is
    cut between two characters (from a new grid); its last piece ends with it.

    ``cell`` (a power of two, at most 8 KiB) makes the grid finer: with cells no
    larger than a TCP segment, each write travels as one segment, so a server that
    has caught up (its read ends where the data that has arrived ends) still ends
    its reads on the grid, and the reads of 8 KiB that follow stay on it too.
    """
    left = len(out) - start
    if left <= room:
        return bytes(out[start:]), left
    end = out.rfind(b"\n", start, start + room) + 1
    if not end:
        if room < cell:
            return b"", 0
        end = start + cell
        while end > start + 1 and out[end] & 0xC0 == 0x80:  # 10xxxxxx continues a character
            end -= 1
        return bytes(out[start:end]), end - start
    write = bytes(out[start:end])
    if midline:  # the end of a long line: its stamp went in an earlier write
        return write, end - start
    return _pad_stamp(write, start + room - end), end - start


def grid_cell(mss: int) -> int:
    """The largest power of two that fits in a segment of ``mss`` bytes, at most 8 KiB
    (1024 on Ethernet, where segments carry 1448 bytes; 8 KiB on loopback)."""
    return min(SERVER_READ, 1 << (max(mss, 64).bit_length() - 1))


def segment_end(write: bytes, mss: int) -> int:
    """Length of the next TCP segment of ``write``: at most ``mss``, between two characters.

    On a real network a write arrives in segments, and a server that reads at
    once reads a segment or two: each one must hold whole characters."""
    if len(write) <= mss:
        return len(write)
    end = mss
    while end > 1 and write[end] & 0xC0 == 0x80:
        end -= 1
    return end


def _pad_stamp(lines: bytes, pad: int) -> bytes:
    start = 0
    while pad and start < len(lines):
        if lines[start:start + 1].isdigit():
            return lines[:start] + b"0" * pad + lines[start:]
        start = lines.find(b"\n", start) + 1 or len(lines)
    return lines


class _Sent:
    __slots__ = ("end", "data", "acked_at")

    def __init__(self, end: int, data: bytes):
        self.end = end
        self.data = data
        self.acked_at: Optional[float] = None


class Link:
    """One stream: its connection, its buffers, its retry state."""

    def __init__(self, stream: str, now: float):
        self.stream = stream
        self.header = log_stream_header(stream, timestamps=True)
        self.sock: Optional[socket.socket] = None
        self.connecting = False
        self.connect_deadline = 0.0
        self.header_left = b""
        self.pending = b""        # the rest of a write the socket did not take at once
        self.midline = False      # ``out`` starts inside a line cut by the previous write
        self.mss = 65536          # the connection's segment size
        self.cell = SERVER_READ   # the step of the write grid (see :func:`next_write`)
        self.last_write = 0.0
        self.unread = 0           # bytes written since the last step of the 8 KiB grid
        self.waiting_quiet = False  # the next line does not fit before the next step
        self.out = bytearray()    # oldest lines, being written on the connection
        self.tail = bytearray()   # newest lines, behind whatever is spooled
        self.written = 0          # bytes written on this connection (header included)
        self.sent: Deque[_Sent] = deque()
        self.retained = 0         # bytes held in ``sent``
        self.fragment = b""       # start of the line the first ``sent`` entry continues
        self.failures = 0
        self.retry_at = 0.0
        self.last_activity = now
        self.dropped = 0          # lines dropped from memory (no spool available)
        self.spool_retry_at = 0.0  # after a spool failure, leave the spool alone until then

    @property
    def connected(self) -> bool:
        return self.sock is not None and not self.connecting

    def unacked(self) -> bool:
        return bool(self.sent) and self.sent[-1].acked_at is None

    def has_memory_data(self) -> bool:
        return bool(self.out or self.tail or self.header_left or self.pending or self.dropped
                    or self.unacked())


class Forwarder:
    def __init__(self, address: Address, spool: Optional[Spool] = None, *,
                 idle_close: float = 30.0, max_connections: int = 64, max_streams: int = 4096,
                 paced: bool = True,
                 memory_limit: int = 8 * 1024 * 1024,
                 memory_total: int = 32 * 1024 * 1024,
                 resend_window: float = 0.25, retain_bytes: int = 2 * 1024 * 1024,
                 retry_min: float = 0.05, retry_max: float = 5.0, connect_timeout: float = 5.0,
                 clock: Callable[[], float] = time.monotonic):
        self.address = address
        self.spool = spool
        self.idle_close = idle_close
        self.max_connections = max(1, max_connections)
        self.max_streams = max(1, max_streams)  # streams holding undelivered lines at once
        self.paced = paced
        self.memory_limit = memory_limit    # lines held in memory, per stream
        self.memory_total = memory_total    # ... and for all streams together
        self.resend_window = resend_window
        self.retain_bytes = retain_bytes
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.connect_timeout = connect_timeout
        self.clock = clock
        self.links: Dict[str, Link] = {}
        self.stopping = False
        self.delivered_connections = 0
        self.spool_failures = 0
        self.dropped_lines = 0              # lines dropped from memory, all streams
        self.refused_lines = 0              # lines of new streams beyond ``max_streams``
        self._spool_trouble: Optional[str] = None  # the last spool error, until it works again
        self._address_error: Optional[str] = None

    # ------------------------------------------------------------------ input
    def add(self, stream: str, data: bytes) -> None:
        """Queue complete protocol-form lines (``<ts> <text>\\n``...) for ``stream``."""
        link = self.links.get(stream)
        if link is None:
            if len(self.links) >= self.max_streams and not self._forget_an_idle_stream():
                self._refuse(stream, data)
                return
            link = self.links[stream] = Link(stream, self.clock())
        link.tail += data

    def _holds_nothing(self, link: Link) -> bool:
        """Nothing to send, spooled or kept for a resend."""
        return not link.has_memory_data() and not link.sent and not self._spooled(link)

    def _forget_an_idle_stream(self) -> bool:
        """Close and forget the least recently used stream that holds nothing."""
        idle = [link for link in self.links.values()
                if not link.connecting and self._holds_nothing(link)]
        if not idle:
            return False
        link = min(idle, key=lambda link: link.last_activity)
        if link.sock is not None:
            self._close_gracefully(link)
        del self.links[link.stream]
        return True

    def _refuse(self, stream: str, data: bytes) -> None:
        """Each stream costs memory and spool files, and any local user can name new
        streams: beyond ``max_streams`` holding undelivered lines, a new stream's lines
        are dropped and counted (streams already held keep everything)."""
        if not self.refused_lines:
            log.warning("%d streams already hold undelivered lines: the lines of new streams "
                        "(first: %s) are dropped and counted until some are delivered",
                        len(self.links), printable(stream[:80]))
        self.refused_lines += data.count(b"\n")

    def adopt_spool(self) -> None:
        """Make sure every stream with spooled lines has a link delivering them."""
        if self.spool is None:
            return
        now = self.clock()
        for stream in self.spool.streams():
            if len(self.links) >= self.max_streams:
                return  # the others are adopted once some streams are delivered
            if stream not in self.links:
                self.links[stream] = Link(stream, now)

    # ------------------------------------------------------------------ state
    def busy(self) -> bool:
        """True while some line is not yet acknowledged by the server's kernel, or was
        acknowledged so recently that the server could still close the stream unread."""
        return any(link.has_memory_data() or self._spooled(link) or link.sent
                   for link in self.links.values())

    def _spooled(self, link: Link) -> bool:
        return self.spool is not None and self.spool.has(link.stream)

    def poll_fds(self) -> List[Tuple[int, int]]:
        fds = []
        for link in self.links.values():
            if link.sock is not None:
                events = POLL_CLOSED  # the server never writes: readable means closed or reset
                if link.connecting or link.header_left or link.pending or \
                        (link.out and not link.waiting_quiet):
                    events |= select.POLLOUT
                fds.append((link.sock.fileno(), events))
        return fds

    def next_deadline(self) -> Optional[float]:
        deadlines = []
        for link in self.links.values():
            if link.connecting:
                deadlines.append(link.connect_deadline)
            elif link.sock is None:
                if link.tail or link.out or link.dropped or self._spooled(link):
                    deadlines.append(link.retry_at)
            elif link.waiting_quiet:
                deadlines.append(link.last_write + QUIET)
            elif link.sent:
                deadlines.append(self.clock() + (0.02 if link.unacked() else self.resend_window))
            elif self._spooled(link):
                deadlines.append(max(self.clock(), link.spool_retry_at))
            elif link.tail or link.dropped:
                deadlines.append(self.clock())
            else:
                deadlines.append(link.last_activity + self.idle_close)
        return min(deadlines) if deadlines else None

    # ------------------------------------------------------------------- work
    def pump(self) -> None:
        now = self.clock()
        events = self._events()
        in_memory = 0
        for link in list(self.links.values()):
            self._service(link, events.get(link.sock.fileno(), 0) if link.sock else 0, now)
            if link.sock is None and not link.has_memory_data() and not self._spooled(link):
                del self.links[link.stream]  # closed and empty (stream names come and go)
            else:
                in_memory += len(link.out) + len(link.tail)
        if in_memory > self.memory_total:
            self._relieve_memory(in_memory)

    def _events(self) -> Dict[int, int]:
        fds = self.poll_fds()
        if not fds:
            return {}
        poller = select.poll()
        for fd, mask in fds:
            poller.register(fd, mask)
        return dict(poller.poll(0))

    def _service(self, link: Link, events: int, now: float) -> None:
        if link.connecting:
            self._progress_connect(link, events, now)
        elif link.sock is not None and events & POLL_CLOSED:
            self._check_break(link, now)
        if link.sock is None:
            if link.tail or link.out or link.dropped or (self._spooled(link) and not self.stopping):
                if now >= link.retry_at and not self.stopping:
                    if self._make_room(now):
                        self._connect(link, now)
                    else:  # every connection is busy: wait for one to go idle
                        link.retry_at = now + self.retry_min
                        self._spill(link)
                if link.sock is None and link.failures:
                    self._spill(link)
            return
        if link.connecting:
            if len(link.tail) > self.memory_limit:
                self._spill(link)  # a slow handshake must not let memory grow
            return
        self._update_acks(link, now)
        if link.sock is None:
            return
        self._fill(link)
        self._send(link, now)
        if link.sock is not None and self._idle(link, now):
            self._close_gracefully(link)
        elif len(link.tail) > self.memory_limit:
            self._spill(link)

    # ------------------------------------------------------------ connections
    def _make_room(self, now: float) -> bool:
        """True if one more connection may be opened, after closing the least recently
        used idle one if ``max_connections`` are open (a server holds one socket per
        open stream of every node)."""
        open_links = [link for link in self.links.values() if link.sock is not None]
        if len(open_links) < self.max_connections:
            return True
        idle = [link for link in open_links if link.connected and self._holds_nothing(link)]
        if not idle:
            return False
        self._close_gracefully(min(idle, key=lambda link: link.last_activity))
        return True

    def _connect(self, link: Link, now: float) -> None:
        try:
            host, port = self.address()
        except Exception as error:  # facts missing or invalid: keep the lines, retry later
            message = str(error)
            if message != self._address_error:
                log.error("cannot deliver logs: %s", message)
                self._address_error = message
            self._failed(link, now, None)
            return
        self._address_error = None
        try:
            sock, err = start_log_connection(host, port)
        except OSError as error:
            self._failed(link, now, f"cannot resolve {host}:{port}: {error}")
            return
        link.sock = sock
        if err in (0, errno.EINPROGRESS, errno.EAGAIN):
            link.connecting = True
            link.connect_deadline = now + self.connect_timeout
            if err == 0:
                self._connected(link)
            else:  # on loopback or a LAN the handshake is often already done
                poller = select.poll()
                poller.register(sock.fileno(), select.POLLOUT)
                ready = poller.poll(0)
                self._progress_connect(link, ready[0][1] if ready else 0, now)
        else:
            self._abort(link)
            self._failed(link, now, f"cannot connect to {host}:{port}: {errno.errorcode.get(err, err)}")

    def _progress_connect(self, link: Link, events: int, now: float) -> None:
        assert link.sock is not None
        if events & (select.POLLOUT | POLL_ERRORS):
            err = connection_error(link.sock)
            if err == 0:
                self._connected(link)
                return
            reason = f"connection refused or failed ({errno.errorcode.get(err, err)})"
        elif now >= link.connect_deadline:
            reason = f"no answer within {self.connect_timeout:g} s"
        else:
            return
        self._abort(link)
        self._failed(link, now, reason)

    def _connected(self, link: Link) -> None:
        assert link.sock is not None
        link.connecting = False
        link.mss = tune_log_connection(link.sock, SEND_BUFFER)
        link.cell = grid_cell(link.mss)
        link.unread = 0
        link.header_left = link.header
        link.written = 0
        self.delivered_connections += 1
        if link.failures:
            log.info("log stream %s: connected to the server again", link.stream)

    def _failed(self, link: Link, now: float, reason: Optional[str]) -> None:
        if reason and link.failures == 0:
            log.warning("log stream %s: %s; keeping its lines (spool) and retrying",
                        link.stream, reason)
        elif reason:
            log.debug("log stream %s: %s", link.stream, reason)
        link.failures += 1
        delay = min(self.retry_min * (2 ** min(link.failures - 1, 20)), self.retry_max)
        link.retry_at = now + delay

    def _check_break(self, link: Link, now: float) -> None:
        """The server never writes on a log stream: readable means closed or reset."""
        assert link.sock is not None
        try:
            data = link.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError as error:
            self._broken(link, now, f"connection broke ({error.strerror or error})")
            return
        if not data:
            self._broken(link, now, "the server closed the connection")

    def _broken(self, link: Link, now: float, reason: str) -> None:
        resend = link.fragment + b"".join(entry.data for entry in link.sent) + link.pending
        self._abort(link)
        link.out[:0] = resend
        self._failed(link, now, reason)
        self._spill(link)

    def _abort(self, link: Link) -> None:
        if link.sock is not None:
            link.sock.close()
        link.sock = None
        link.connecting = False
        link.header_left = b""
        link.pending = b""
        link.midline = False
        link.waiting_quiet = False
        link.sent.clear()
        link.retained = 0
        link.fragment = b""

    def _close_gracefully(self, link: Link) -> None:
        assert link.sock is not None
        end_log_stream(link.sock)
        self._abort(link)

    def _idle(self, link: Link, now: float) -> bool:
        if link.has_memory_data() or self._spooled(link):
            return False
        return now - link.last_activity >= self.idle_close

    # ---------------------------------------------------------------- sending
    def _fill(self, link: Link) -> None:
        if len(link.out) >= FILL_LOW:
            return
        if self._spooled(link):
            if self.stopping or self.clock() < link.spool_retry_at:
                return
            assert self.spool is not None
            try:
                link.out += self.spool.read(link.stream, FILL_CHUNK)
            except OSError as error:
                self._spool_failed(link, error)
        elif link.tail or link.dropped:
            if link.dropped:
                link.out += self._drop_notice(link)
                link.dropped = 0
            link.out += link.tail
            link.tail = bytearray()

    def _send(self, link: Link, now: float) -> None:
        sock = link.sock
        assert sock is not None
        try:
            while link.header_left:
                sent = sock.send(link.header_left)
                link.written += sent
                link.header_left = link.header_left[sent:]
            if not self.paced:  # the old way, kept to measure what pacing prevents
                while link.out:
                    sent = sock.send(link.out[:FILL_CHUNK])
                    link.written += sent
                    link.sent.append(_Sent(link.written, bytes(link.out[:sent])))
                    del link.out[:sent]
                    link.retained += sent
                    link.last_activity = now
                    self._fill(link)
                return
            self._send_paced(link, sock, now)
        except BlockingIOError:
            return
        except OSError as error:
            self._broken(link, now, f"sending failed ({error.strerror or error})")

    def _send_paced(self, link: Link, sock: socket.socket, now: float) -> None:
        """Writes shaped for a WalT 10 server (see :func:`next_write`), each TCP segment
        cut between characters and leaving alone (see :func:`segment_end`)."""
        link.waiting_quiet = False
        if link.unread and now - link.last_write >= QUIET:
            link.unread = 0  # the server has read everything: a new grid starts here
        taken = 0  # bytes of link.out already turned into writes (deleted once, at the end)
        written: List[bytes] = []  # kept for a resend as one entry per call (fewer to scan)
        try:
            while link.pending or taken < len(link.out):
                if not link.pending:
                    batch: List[bytes] = []
                    # as many writes as one segment holds (7 on loopback, 1 on Ethernet)
                    while taken < len(link.out) and \
                            (len(batch) + 1) * link.cell <= max(link.mss, link.cell):
                        write, carried = next_write(link.out, taken, link.midline,
                                                    link.cell - link.unread, link.cell)
                        if not carried:
                            break
                        link.midline = link.out[taken + carried - 1] != 0x0A
                        link.unread = (link.unread + len(write)) % link.cell
                        batch.append(write)
                        taken += carried
                    if not batch:
                        link.waiting_quiet = True
                        return
                    link.pending = b"".join(batch)
                if untransmitted_bytes(sock):
                    return  # POLLOUT (TCP_NOTSENT_LOWAT) says when the last segment has left
                sent = sock.send(link.pending[:segment_end(link.pending, link.mss)])
                written.append(link.pending[:sent])
                link.pending = link.pending[sent:]
                link.last_activity = link.last_write = now
                if len(link.out) - taken < FILL_LOW:
                    del link.out[:taken]
                    taken = 0
                    self._fill(link)
        finally:
            del link.out[:taken]
            if written:
                data = b"".join(written)
                link.written += len(data)
                link.sent.append(_Sent(link.written, data))
                link.retained += len(data)

    def _update_acks(self, link: Link, now: float) -> None:
        if not link.sent:
            return
        sock = link.sock
        assert sock is not None
        try:
            queued = unsent_bytes(sock)
            state = tcp_state(sock)
        except OSError:
            return
        if state != TCP_ESTABLISHED:
            # a dying connection's queue is purged: its SIOCOUTQ proves nothing
            self._broken(link, now, "the server closed the connection")
            return
        acked_until = link.written - queued
        for entry in link.sent:
            if entry.end > acked_until:
                break
            if entry.acked_at is None:
                entry.acked_at = now
        if acked_until > len(link.header):
            link.failures = 0
        self._trim(link, now)

    def _trim(self, link: Link, now: float) -> None:
        while link.sent:
            entry = link.sent[0]
            if entry.acked_at is None:
                return
            if now - entry.acked_at < self.resend_window and link.retained <= self.retain_bytes:
                return
            link.sent.popleft()
            link.retained -= len(entry.data)
            cut = entry.data.rfind(b"\n")
            link.fragment = link.fragment + entry.data if cut < 0 else entry.data[cut + 1:]

    # --------------------------------------------------------------- spooling
    def _spill(self, link: Link) -> None:
        """Move what memory holds for ``link`` to the spool; when the spool fails
        (disk full, too many open files), keep it in memory, bounded, and let this
        stream try the spool again in SPOOL_RETRY seconds."""
        if self.spool is None or self.clock() < link.spool_retry_at:
            self._bound_memory(link, self.memory_limit)
            return
        try:
            # the first line of ``out`` may be half sent on the open connection: it stays
            keep = link.out.find(b"\n") + 1 if link.midline else 0
            if len(link.out) > keep:
                self.spool.prepend(link.stream, bytes(link.out[keep:]))
                del link.out[keep:]
            if link.tail or link.dropped:
                notice = self._drop_notice(link) if link.dropped else b""
                self.spool.append(link.stream, notice + link.tail)
                link.dropped = 0
                link.tail = bytearray()
        except OSError as error:
            self._spool_failed(link, error)
            self._bound_memory(link, self.memory_limit)
            return
        if self._spool_trouble is not None:
            log.info("the log spool works again")
            self._spool_trouble = None

    def _spool_failed(self, link: Link, error: OSError) -> None:
        link.spool_retry_at = self.clock() + SPOOL_RETRY
        self.spool_failures += 1
        if self._spool_trouble is None:
            log.error("%s; keeping log lines in memory (at most %d bytes per stream, %d in all) "
                      "and trying the spool again every %g s; further failures are counted",
                      error, self.memory_limit, self.memory_total, SPOOL_RETRY)
        self._spool_trouble = str(error)

    def _relieve_memory(self, in_memory: int) -> None:
        """All streams together hold more than ``memory_total``: spool (or, failing
        that, drop) the lines of the streams holding the most."""
        for link in sorted(self.links.values(), key=lambda lk: len(lk.out) + len(lk.tail),
                           reverse=True):
            if in_memory <= self.memory_total:
                return
            held = len(link.out) + len(link.tail)
            self._spill(link)
            spilled = len(link.out) + len(link.tail)
            in_memory -= held - spilled
            if in_memory > self.memory_total:
                self._bound_memory(link, spilled - (in_memory - self.memory_total))
                in_memory -= spilled - (len(link.out) + len(link.tail))

    def _bound_memory(self, link: Link, limit: int) -> None:
        """Drop the oldest lines of ``link`` beyond ``limit`` bytes, counted for a notice."""
        excess = len(link.out) + len(link.tail) - max(limit, 0)
        if excess <= 0:
            return
        if not self.dropped_lines:
            log.warning("log stream %s: the server is unreachable and the spool unusable: dropping "
                        "its oldest lines from memory (a notice says how many; further drops "
                        "are counted)", link.stream)
        # never cut into the first line of ``out``: it may be half sent on the connection
        keep = link.out.find(b"\n") + 1 if link.midline else 0
        while excess > 0:
            if len(link.out) > keep:
                buffer, start = link.out, keep
            elif link.tail:
                buffer, start = link.tail, 0
            else:
                break
            cut = buffer.find(b"\n", start + min(excess, len(buffer) - start) - 1) + 1 or len(buffer)
            lines = buffer.count(b"\n", start, cut)
            link.dropped += lines
            self.dropped_lines += lines
            excess -= cut - start
            del buffer[start:cut]

    def _drop_notice(self, link: Link) -> bytes:
        notice = (b"%.6f [walt-node] %d log lines of this stream were dropped here: the server "
                  b"was unreachable and the log spool unusable\n" % (time.time(), link.dropped))
        return notice

    # --------------------------------------------------------------- shutdown
    def shutdown(self, timeout: float) -> None:
        """Deliver what memory holds within ``timeout`` seconds, spool the rest, close."""
        self.stopping = True
        deadline = self.clock() + timeout
        while self.clock() < deadline:
            self.pump()
            pending = [link for link in self.links.values()
                       if link.sock is not None and link.has_memory_data()]
            if not pending:
                break
            poller = select.poll()
            for fd, mask in self.poll_fds():
                poller.register(fd, mask)
            poller.poll(20)
        for link in self.links.values():
            if link.connected and not link.has_memory_data():
                self._close_gracefully(link)
                continue
            link.spool_retry_at = 0.0  # last chance: try the spool whatever failed before
            acked = link.fragment + b"".join(e.data for e in link.sent if e.acked_at is not None)
            unacked = b"".join(e.data for e in link.sent if e.acked_at is None) + link.pending
            if unacked:  # resend from the start of the line the first unacked byte is in
                unacked = acked[acked.rfind(b"\n") + 1:] + unacked
            self._abort(link)
            link.out[:0] = unacked
            self._spill(link)
            if link.out or link.tail:
                log.error("log stream %s: %d bytes could not be spooled and are lost",
                          link.stream, len(link.out) + len(link.tail))
