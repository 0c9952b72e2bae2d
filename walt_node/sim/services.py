"""The simulated server's TCP protocols (docs/protocols.md §2, §4, §6).

- logs port: the first line names the request: ``REQ_NEW_INCOMING_LOGS`` / ``0``
  (a log stream) or ``12`` / ``REQ_FAKE_TFTP_GET`` (a boot file); anything else
  is closed without an answer. A log stream is read as a WalT 10 server reads
  it (:class:`StrictLogStream`, docs/protocols.md §11); the friendlier reader
  of earlier simulator versions (:class:`LogStreamReceiver`) is an option.
- rpc port: ``REQ_API_SESSION`` / ``10``, then an NSAPI or VSAPI session whose
  request lines are read with ``ast.literal_eval`` (never ``eval``).
"""

from __future__ import annotations

import ast
import logging
import pickle
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from walt_node.sim.inventory import Inventory, SimError
from walt_node.sim.records import ApiCall, LogRecord, Records
from walt_node.sim.tcp import Connection, LineTooLong, read_pickle

log = logging.getLogger(__name__)

SERVER_VERSION = "10.0"  # what a WalT 10 server answers
REQUEST_LINE_LIMIT = 1024
MAX_LOG_LINE = 1 << 20       # longer log lines are cut (and marked) instead of filling memory
MAX_API_LINE = 1 << 20
MAX_PICKLE = 1 << 20
TFTP_TIMEOUT = 10.0
FUTURE_TOLERANCE = 1.0
PAST_LIMIT = 10 * 365 * 86400  # ten years of 365 days, as the WalT 10 server counts
READ_SIZE = 8192               # the WalT 10 server's reads on a log stream
DISCONNECTED = "<disconnected!>"
TRUNCATED = " <line too long: truncated by walt-node sim>"

LOGS_REQUESTS = ("REQ_NEW_INCOMING_LOGS", "0")
TFTP_REQUESTS = ("REQ_FAKE_TFTP_GET", "12")
API_REQUESTS = ("REQ_API_SESSION", "10")


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").rstrip("\r")


# ------------------------------------------------------------------ logs port

class LogsPort:
    def __init__(self, inventory: Inventory, records: Records, lenient_logs: bool = False):
        self.inventory, self.records = inventory, records
        self.lenient_logs = lenient_logs

    def __call__(self, conn: Connection) -> None:
        try:
            # byte-exact, as the server reads its request lines: a log stream's
            # reads must start right after its header
            request = conn.readline(REQUEST_LINE_LIMIT, exact=True)
        except LineTooLong:
            return
        if request is None:
            return
        name = _decode(request).strip()
        if name in LOGS_REQUESTS:
            self._log_stream(conn)
        elif name in TFTP_REQUESTS:
            FakeTftp(self.inventory)(conn)
        else:
            log.info("logs port: unknown request %r from %s, closing", name[:80], conn.peer_ip)

    def _log_stream(self, conn: Connection) -> None:
        try:
            stream_line = conn.readline(REQUEST_LINE_LIMIT, exact=True)
            mode_line = conn.readline(REQUEST_LINE_LIMIT, exact=True)
        except LineTooLong:
            return
        if stream_line is None or mode_line is None:
            return
        if not self.lenient_logs:
            self._strict_log_stream(conn, stream_line, mode_line)
            return
        mode = _decode(mode_line).strip()
        if mode not in ("TIMESTAMPS_INSIDE", "NO_TIMESTAMPS"):
            log.info("logs port: unknown timestamp mode %r from %s, closing", mode[:80],
                     conn.peer_ip)
            return
        stream = LogStreamReceiver(self.inventory.issuer_of(conn.peer_ip), _decode(stream_line),
                                   mode == "TIMESTAMPS_INSIDE", self.records)
        data = conn.take_buffer()
        while True:
            if data and stream.feed(data):
                return  # CLOSE received
            data = conn.recv()
            if not data:
                if not conn.killed:  # the server itself dropping it records nothing
                    stream.disconnected()
                return


    def _strict_log_stream(self, conn: Connection, stream_line: bytes, mode_line: bytes) -> None:
        try:
            name = stream_line.strip().decode("utf-8")
        except UnicodeDecodeError:  # the real server fails here too (and drops the stream)
            log.info("logs port: stream name is not UTF-8 from %s, closing", conn.peer_ip)
            return
        stream = StrictLogStream(self.inventory.issuer_of(conn.peer_ip), name,
                                 mode_line.strip() != b"NO_TIMESTAMPS", self.records)
        while True:
            data = conn.recv(READ_SIZE)
            if not data and conn.killed:
                return  # the simulator itself dropped it: the server is the one going away
            if stream.read(data) is not None:
                return


class StrictLogStream:
    """A log stream as a WalT 10 server reads it (docs/protocols.md §2, §11).

    Each read (up to 8 KiB) is decoded on its own as strict UTF-8, after the
    unterminated line the previous reads left. Then:

    - a character cut between two reads, or (timestamps inside) a line whose
      first word is not a number, closes the stream: nothing of that read, nor
      the unterminated line before it, is stored;
    - ``CLOSE`` ends the stream only as the last line of a read; elsewhere it
      is a line like any other (so, timestamps inside, an error);
    - the end of the connection adds ``<disconnected!>`` to the unterminated
      line (timestamps inside, that is not a number: an error, nothing stored);
    - trailing NUL characters of a line and of its stamp are dropped;
    - a stamp more than 1 s ahead or more than ten years (of 365 days) behind
      the time of the read is replaced by it; NaN is kept.

    A line longer than ``MAX_LOG_LINE`` is cut and marked (the real server
    would hold it in memory whole): the simulator's memory stays bounded.
    """

    def __init__(self, issuer: str, stream: str, timestamps: bool, records: Records):
        self.issuer, self.stream, self.timestamps = issuer, stream, timestamps
        self.records = records
        self.partial = ""
        self.discarding = False  # inside the rest of a cut line

    def read(self, data: bytes, now: Optional[float] = None) -> Optional[str]:
        """One read (b"" when the peer closed); None to go on, else why the stream ended:
        "close" (CLOSE, or disconnection recorded) or "error"."""
        now = time.time() if now is None else now
        if not data:
            data = b"<disconnected!>\nCLOSE\n"
        try:
            text = self.partial + data.decode("utf-8")
        except UnicodeDecodeError:
            return "error"
        lines = [line.rstrip("\0") for line in text.split("\n")]
        if self.discarding:
            self.discarding = len(lines) == 1
            lines[:1] = [""] if self.discarding else []
        closed = lines[-2:] == ["CLOSE", ""]
        if closed:
            del lines[-2:]
        else:
            self.partial = lines.pop()
            if len(self.partial) > MAX_LOG_LINE:
                lines.append(self.partial[:MAX_LOG_LINE] + TRUNCATED)
                self.partial, self.discarding = "", True
        if not lines:
            return "close" if closed else None
        try:
            batch = self._records(lines, now)
        except ValueError:
            return "error"
        self.records.add_logs(batch)
        return "close" if closed else None

    def _records(self, lines: List[str], now: float) -> List[LogRecord]:
        issuer, stream, make = self.issuer, self.stream, LogRecord
        if not self.timestamps:
            return [make(issuer, stream, now, line, now) for line in lines]
        low, high = now - PAST_LIMIT, now + FUTURE_TOLERANCE
        batch = []
        for line in lines:
            stamp, _, text = line.partition(" ")
            ts = float(stamp.rstrip("\0"))  # ValueError: the whole read is refused
            if ts < low or ts > high:
                ts = now
            batch.append(make(issuer, stream, ts, text.rstrip("\0"), now))
        return batch


class LogStreamReceiver:
    """The lenient reader (``lenient_logs``): turns received bytes into log records,
    splitting lines in bulk per chunk, replacing undecodable bytes, keeping lines
    without a valid stamp whole (stamped on reception)."""

    def __init__(self, issuer: str, stream: str, timestamps: bool, records: Records):
        self.issuer, self.stream, self.timestamps = issuer, stream, timestamps
        self.records = records
        self.partial = b""
        self.discarding = False  # inside the rest of a truncated line

    def feed(self, data: bytes) -> bool:
        """Record the complete lines of ``data``; True once CLOSE is seen."""
        pieces = (self.partial + data).split(b"\n")
        self.partial = pieces.pop()
        if self.discarding:  # the rest of a truncated line, up to its newline
            if pieces:
                del pieces[0]
                self.discarding = False
            else:
                self.partial = b""
        if b"\r" in data:
            pieces = [p[:-1] if p.endswith(b"\r") else p for p in pieces]
        closed = b"CLOSE" in pieces
        if closed:
            del pieces[pieces.index(b"CLOSE"):]
        received = time.time()
        batch = self._records(pieces, received)
        if not closed and not self.discarding and len(self.partial) > MAX_LOG_LINE:
            cut = self._records([self.partial[:MAX_LOG_LINE]], received)[0]
            batch.append(cut._replace(line=cut.line + TRUNCATED))
            self.partial, self.discarding = b"", True
        self.records.add_logs(batch)
        return closed

    def _records(self, lines: List[bytes], received: float) -> List[LogRecord]:
        """One tight loop per chunk: this is the hot path of a ~100k lines/s stream."""
        issuer, stream, make = self.issuer, self.stream, LogRecord
        if not self.timestamps:
            return [make(issuer, stream, received, raw.decode("utf-8", "replace"), received)
                    for raw in lines]
        low, high = received - PAST_LIMIT, received + FUTURE_TOLERANCE  # §2 correction rule
        batch: List[LogRecord] = []
        append = batch.append
        for raw in lines:
            stamp, _, text = raw.partition(b" ")
            try:
                ts = float(stamp)
            except ValueError:  # no valid stamp: keep the whole line, stamped on reception
                ts, text = received, raw
            else:
                if not low <= ts <= high:  # also NaN and infinities
                    ts = received
            append(make(issuer, stream, ts, text.decode("utf-8", "replace"), received))
        return batch

    def disconnected(self) -> None:
        now = time.time()
        batch: List[LogRecord] = []
        if self.partial and not self.discarding:  # an unterminated last line is still data
            batch.extend(self._records([self.partial.rstrip(b"\r")], now))
        batch.append(LogRecord(self.issuer, self.stream, now, DISCONNECTED, now))
        self.records.add_logs(batch)


class FakeTftp:
    """§6: ready line, pickled {"node_mac", "path"}, then OK/size/bytes or a status line."""

    def __init__(self, inventory: Inventory):
        self.inventory = inventory

    def __call__(self, conn: Connection) -> None:
        conn.sock.settimeout(TFTP_TIMEOUT)
        if not conn.send(b"READY\n"):
            return
        try:
            request = read_pickle(conn, MAX_PICKLE)
        except Exception as error:  # any malformed pickle: answer, never crash
            conn.send(f"ERROR bad request: {error}\n".encode(errors="replace"))
            return
        try:
            data = self._serve(request)
        except SimError as error:
            conn.send(f"ERROR {error}\n".encode(errors="replace"))
            return
        conn.send(b"OK\n%d\n" % len(data) + data)

    def _serve(self, request: Any) -> bytes:
        if not isinstance(request, dict) or not isinstance(request.get("node_mac"), str) \
                or not isinstance(request.get("path"), str):
            raise SimError("expected a dict with string keys 'node_mac' and 'path'")
        node = self.inventory.node_by_mac(request["node_mac"])
        if node is None:
            raise SimError(f"unknown node mac {request['node_mac']!r}")
        return self.inventory.boot_file(node, request["path"]).read_bytes()


# ------------------------------------------------------------------- rpc port

class ApiPort:
    """§4 API sessions, answered in the shapes of a WalT 10 server: ``('RESULT', value)``;
    a call that fails (unknown method, wrong arguments, unknown device) is answered
    ``('RESULT', <exception>)``, the repr of an exception object, not a literal; an
    unreadable or unexpected request ends the session (docs/protocols.md §4)."""

    def __init__(self, inventory: Inventory, records: Records):
        self.inventory, self.records = inventory, records
        self.apis: Dict[str, Dict[str, Callable[..., Any]]] = {
            "NSAPI": {"sync_clock": self.sync_clock,
                      "report_lldp_neighbor": self.report_lldp_neighbor},
            "VSAPI": {"get_device_info": self.get_device_info},
        }

    # --- the API methods ---
    @staticmethod
    def sync_clock() -> int:
        """The next whole second, answered when it comes (busybox sets whole seconds)."""
        target = int(time.time() + 1)
        time.sleep(max(0.0, target - time.time()))
        return target

    @staticmethod
    def report_lldp_neighbor(sw_mac: str, sw_port_lldp_label: str) -> None:
        return None  # the recorded call is what matters

    def get_device_info(self, mac: str) -> Optional[Dict[str, Any]]:
        info = self.inventory.device_info(mac)
        if info is None:  # a WalT 10 server fails on an unknown device too
            raise LookupError(f"no device with mac {mac!r}")
        return info

    # --- the session ---
    def __call__(self, conn: Connection) -> None:
        try:
            request = conn.readline(REQUEST_LINE_LIMIT)
            if request is None or _decode(request).strip() not in API_REQUESTS:
                return
            api_line = conn.readline(REQUEST_LINE_LIMIT)
        except LineTooLong:
            return
        if api_line is None:
            return
        api = _decode(api_line).strip()
        if api not in self.apis:
            log.info("rpc port: unknown API %r from %s, closing", api[:80], conn.peer_ip)
            return
        if not conn.send(f"{SERVER_VERSION}\n".encode()):
            return
        Session(self, conn, api).run()

    def dispatch(self, conn: Connection, api: str, message: Any) -> Tuple[str, Any]:
        _, method, args, kwargs = message
        self.records.add_call(ApiCall(self.inventory.issuer_of(conn.peer_ip), api, method,
                                      tuple(args), dict(kwargs)))
        function = self.apis[api].get(method)
        if function is None:
            return ("RESULT", AttributeError(f"'{api}' object has no attribute '{method}'"))
        try:
            return ("RESULT", function(*args, **kwargs))
        except Exception as error:  # the failure itself is the result, as on the real server
            return ("RESULT", error)


def _is_api_call(message: Any) -> bool:
    return (isinstance(message, tuple) and len(message) == 4 and message[0] == "API_CALL"
            and isinstance(message[1], str) and isinstance(message[2], (tuple, list))
            and isinstance(message[3], dict) and all(isinstance(k, str) for k in message[3]))


class Session:
    def __init__(self, port: ApiPort, conn: Connection, api: str):
        self.port, self.conn, self.api = port, conn, api
        self.pickle_mode = False

    def run(self) -> None:
        while True:
            try:
                message = self._receive()
            except EOFError:
                return
            except _Unreadable as problem:  # the real server ends the session, without a word
                log.info("rpc port: %s from %s, closing the session", problem, self.conn.peer_ip)
                return
            if message in ("CLOSE", ("CLOSE",)):
                return
            if message == ("SET_MODE", "pickle4"):
                self.pickle_mode = True  # both ends switch at once, no reply
                continue
            if not _is_api_call(message):
                log.info("rpc port: unexpected request %.200r from %s, closing the session",
                         message, self.conn.peer_ip)
                return
            if not self._reply(self.port.dispatch(self.conn, self.api, message)):
                return

    def _receive(self) -> Any:
        if self.pickle_mode:
            try:
                return read_pickle(self.conn, MAX_PICKLE)
            except EOFError:
                raise
            except Exception as error:  # framing is lost after a bad pickle: end the session
                raise _Unreadable(f"unreadable pickled request: {error}", fatal=True) from None
        try:
            line = self.conn.readline(MAX_API_LINE)
        except LineTooLong:
            raise _Unreadable(f"request line longer than {MAX_API_LINE} bytes", fatal=True) from None
        if line is None:
            raise EOFError()
        text = _decode(line)
        if not text.strip():
            raise _Unreadable("empty request line")
        try:
            return ast.literal_eval(text.strip())
        except Exception as error:  # SyntaxError, ValueError, RecursionError, MemoryError...
            raise _Unreadable(f"request line is not a Python literal "
                              f"({type(error).__name__}): {text[:200]!r}") from None

    def _reply(self, reply: Tuple[str, Any]) -> bool:
        if self.pickle_mode:
            try:
                data = pickle.dumps(reply, protocol=4)
            except Exception as error:
                data = pickle.dumps(("RESULT", RuntimeError(f"unpicklable result: {error}")),
                                    protocol=4)
            return self.conn.send(data)
        return self.conn.send((repr(reply) + "\n").encode("utf-8", errors="surrogateescape"))


class _Unreadable(Exception):
    def __init__(self, message: str, fatal: bool = False):
        super().__init__(message)
        self.fatal = fatal
