"""Clients of the WalT server protocols, all in one place (docs/protocols.md).

- :class:`LogStream`: one log stream over TCP to the logs port (§2);
- :class:`ApiSession`: NSAPI / VSAPI sessions on the rpc port (§4);
- :class:`WebApi`: the server's HTTP API and boot files (§5);
- :func:`fake_tftp_get`: boot files through the logs port's fake TFTP (§6).

Every request/answer exchange is a *step* with one deadline for the whole step
(:class:`walt_node.bounds.Deadline`): a server trickling a byte now and then
cannot stretch it. What a server can make us allocate is bounded too (reply
lines, JSON answers, boot files). Failures raise :class:`ServerError` (or its
subclass :class:`ServerUnreachable`) with a message naming the server and the
step.
"""

from __future__ import annotations

import ast
import fcntl
import re
import select
import socket
import struct
import termios
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Tuple
from urllib.parse import quote, urlencode, urljoin, urlsplit

from walt_node.bounds import MIB, Deadline, limit_reached
from walt_node.errors import WaltNodeError

REQ_NEW_INCOMING_LOGS = "REQ_NEW_INCOMING_LOGS"
REQ_API_SESSION = "REQ_API_SESSION"
REQ_FAKE_TFTP_GET = "12"
DEFAULT_TIMEOUT = 5.0
MAX_LINE = MIB  # replies longer than this are a protocol error
MAX_JSON = 16 * MIB  # web API answers (one node, one image) are a few KiB
MAX_BOOT_FILE = 512 * MIB  # kernel, initrd or script: more than a node can kexec anyway
MAX_REDIRECTS = 5
RECV_SIZE = 256 * 1024


BOOT_URL_PREFIX = "/boot/"  # HTTP boot files of the node's bound image (docs/protocols.md §5)


class ServerError(WaltNodeError):
    """The server answered something unexpected, or a step failed."""


class ServerUnreachable(ServerError):
    """Could not connect to the server, or the connection broke."""


class ApiError(ServerError):
    """An API call returned a status other than RESULT."""

    def __init__(self, method: str, reply: Any):
        self.reply = reply
        super().__init__(f"API call {method}() failed on the server: {reply!r}")


class FileNotServed(ServerError):
    """The server could not serve a boot file (missing, or node unknown)."""


class ReplyTooLarge(ServerError):
    """The server announced or sent more than the bound for this kind of reply."""


def connect(host: str, port: int, timeout: float = DEFAULT_TIMEOUT,
            what: str = "server") -> socket.socket:
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as error:
        raise ServerUnreachable(f"cannot connect to the WalT {what} at {host}:{port}: "
                                f"{error.strerror or error}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class _StepSocket(socket.socket):
    """A socket whose every wait ends at the deadline of the current step.

    Each receive or send gets the time *left*, so a peer sending a byte now
    and then cannot stretch a step; past the deadline it raises socket.timeout.
    ``deadline`` may be replaced between steps (API sessions).
    """

    deadline: Deadline

    def _left(self) -> None:
        left = self.deadline.remaining()
        if left <= 0:
            raise socket.timeout("the step's deadline has passed")
        self.settimeout(left)

    def recv(self, size: int, flags: int = 0) -> bytes:
        self._left()
        return super().recv(size, flags)

    def recv_into(self, buffer: Any, size: int = 0, flags: int = 0) -> int:
        self._left()
        return super().recv_into(buffer, size, flags)

    def sendall(self, data: Any, flags: int = 0) -> None:
        self._left()
        super().sendall(data, flags)


def connect_step(host: str, port: int, deadline: Deadline, what: str = "server") -> _StepSocket:
    """A connection whose every wait, from the connect on, ends at ``deadline``."""
    timeout = max(deadline.remaining(), 0.001)
    plain = connect(host, port, timeout, what)
    sock = _StepSocket(plain.family, plain.type, plain.proto, fileno=plain.detach())
    sock.deadline = deadline
    return sock


class _LineReader:
    """Reads \\n-terminated lines and exact byte counts from a step socket."""

    def __init__(self, sock: _StepSocket, where: str):
        self.sock = sock
        self.where = where
        self.buffer = b""

    def _failed(self, error: OSError) -> ServerUnreachable:
        if isinstance(error, socket.timeout):
            return ServerUnreachable(f"{self.where}: no answer in time (the whole step may "
                                     f"last {self.sock.deadline.seconds:g} s)")
        return ServerUnreachable(f"{self.where}: connection failed: {error}")

    def _fill(self) -> None:
        try:
            chunk = self.sock.recv(65536)
        except OSError as error:
            raise self._failed(error) from None
        if not chunk:
            raise ServerUnreachable(f"{self.where}: the server closed the connection")
        self.buffer += chunk

    def line(self) -> str:
        while b"\n" not in self.buffer:
            if len(self.buffer) > MAX_LINE:
                raise ServerError(f"{self.where}: reply line longer than {MAX_LINE} bytes")
            self._fill()
        raw, _, self.buffer = self.buffer.partition(b"\n")
        return raw.decode("utf-8", errors="replace").rstrip("\r")

    def exactly(self, size: int) -> bytearray:
        """``size`` bytes, received straight into one buffer allocated once (linear time)."""
        data = bytearray(size)
        view = memoryview(data)
        filled = min(size, len(self.buffer))
        view[:filled] = self.buffer[:filled]
        self.buffer = self.buffer[filled:]
        while filled < size:
            try:
                received = self.sock.recv_into(view[filled:], min(size - filled, RECV_SIZE))
            except OSError as error:
                raise self._failed(error) from None
            if not received:
                raise ServerUnreachable(f"{self.where}: the server closed the connection after "
                                        f"{filled} of {size} bytes")
            filled += received
        return data


# ---------------------------------------------------------------- logs (§2)

def format_log_line(ts: float, text: str) -> bytes:
    """One TIMESTAMPS_INSIDE line. ``text`` must not contain a newline."""
    return b"%.6f %s\n" % (ts, text.encode("utf-8", errors="surrogateescape"))


def log_stream_header(stream: str, timestamps: bool = True) -> bytes:
    mode = "TIMESTAMPS_INSIDE" if timestamps else "NO_TIMESTAMPS"
    return f"{REQ_NEW_INCOMING_LOGS}\n{stream}\n{mode}\n".encode()


def unsent_bytes(sock: socket.socket) -> int:
    """Bytes in the socket's send queue not yet acknowledged by the peer (SIOCOUTQ)."""
    buf = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    return struct.unpack("i", buf)[0]


SIOCOUTQNSD = 0x894B
TCP_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", 25)


def start_log_connection(host: str, port: int) -> Tuple[socket.socket, int]:
    """A non-blocking connection to the logs port being made, for the log forwarder:
    the socket and ``connect_ex``'s errno (OSError if the address does not resolve)."""
    family, _, _, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    return sock, sock.connect_ex(addr)


def connection_error(sock: socket.socket) -> int:
    """The errno a non-blocking connect ended with (0: connected)."""
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)


def tune_log_connection(sock: socket.socket, send_buffer: int) -> int:
    """Settings for writes a WalT 10 server decodes whole (§11); returns the segment size.

    No Nagle delay; a send buffer a whole write always fits in; writable (POLLOUT)
    only once everything written is on the wire, so that the next segment leaves
    alone instead of being merged into the previous one."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    sock.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, 1)
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG) or 1448


def tcp_state(sock: socket.socket) -> int:
    """The connection's TCP state (1: established)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
    return struct.unpack("B", info[:1])[0]


def end_log_stream(sock: socket.socket) -> None:
    """``CLOSE``, then no more writes: the server ends the stream without a
    disconnection record (§2). Errors are ignored (the stream is over either way)."""
    try:
        sock.send(b"CLOSE\n")
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def untransmitted_bytes(sock: socket.socket) -> int:
    """Bytes in the socket's send queue not yet put on the wire (SIOCOUTQNSD)."""
    buf = fcntl.ioctl(sock.fileno(), SIOCOUTQNSD, b"\0\0\0\0")
    return struct.unpack("i", buf)[0]


class LogStream:
    """One log stream on its own connection: header, lines, then CLOSE."""

    def __init__(self, host: str, port: int, stream: str, timestamps: bool = True,
                 timeout: float = DEFAULT_TIMEOUT):
        if "\n" in stream or not stream.strip():
            raise ValueError(f"invalid log stream name {stream!r}")
        self.host, self.port, self.stream = host, port, stream
        self.timestamps = timestamps
        self.timeout = timeout
        self.sock: Optional[socket.socket] = None

    def open(self) -> LogStream:
        self.sock = connect(self.host, self.port, self.timeout, "logs port")
        self.send_raw(log_stream_header(self.stream, self.timestamps))
        return self

    def send_raw(self, data: bytes) -> None:
        if self.sock is None:
            self.open()
        assert self.sock is not None
        try:
            self.sock.sendall(data)
        except OSError as error:
            self.abort()
            raise ServerUnreachable(
                f"log stream '{self.stream}' to {self.host}:{self.port} broke: {error}"
            ) from None

    def send(self, lines: Iterable[Tuple[float, str]]) -> None:
        if self.timestamps:
            self.send_raw(b"".join(format_log_line(ts, text) for ts, text in lines))
        else:
            self.send_raw(b"".join(text.encode() + b"\n" for _, text in lines))

    def unacknowledged(self) -> int:
        return unsent_bytes(self.sock) if self.sock is not None else 0

    def close(self) -> None:
        """End the stream properly (CLOSE), so the server records no disconnection."""
        if self.sock is None:
            return
        try:
            self.sock.sendall(b"CLOSE\n")
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self.abort()

    def abort(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def __enter__(self) -> LogStream:
        return self.open()

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ---------------------------------------------------------- API sessions (§4)

_FAILED_CALL = re.compile(r"\('RESULT', ([A-Za-z_][A-Za-z0-9_.]*\(.*\))\)\Z")


class ApiSession:
    """An NSAPI or VSAPI session. Requests are repr() of real Python values;
    replies are parsed with ast.literal_eval, never eval.

    Opening the session and each call are steps bounded by ``timeout`` as a
    whole; :meth:`open` and :meth:`call_within` take a caller's deadline
    instead, to bound several steps together.
    """

    def __init__(self, host: str, port: int, api: str = "NSAPI",
                 timeout: float = DEFAULT_TIMEOUT):
        self.host, self.port, self.api, self.timeout = host, port, api, timeout
        self.sock: Optional[_StepSocket] = None
        self.reader: Optional[_LineReader] = None
        self.server_version: Optional[str] = None

    def open(self, deadline: Optional[Deadline] = None) -> ApiSession:
        self.sock = connect_step(self.host, self.port, deadline or Deadline(self.timeout),
                                 "API port")
        self.reader = _LineReader(self.sock, f"API session with {self.host}:{self.port}")
        self._send(f"{REQ_API_SESSION}\n{self.api}\n")
        self.server_version = self.reader.line()
        return self

    def _send(self, text: str) -> None:
        assert self.sock is not None
        try:
            self.sock.sendall(text.encode())
        except OSError as error:
            raise ServerUnreachable(f"API session with {self.host}:{self.port} broke: "
                                    f"{error}") from None

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self.call_within(Deadline(self.timeout), method, *args, **kwargs)

    def call_within(self, deadline: Deadline, method: str, *args: Any, **kwargs: Any) -> Any:
        """``method(*args, **kwargs)`` on the server, opening the session if needed,
        all before ``deadline``."""
        if self.sock is None:
            self.open(deadline)
        assert self.sock is not None and self.reader is not None
        self.sock.deadline = deadline
        request = ("API_CALL", method, tuple(args), dict(kwargs))
        self._send(repr(request) + "\n")
        line = self.reader.line()
        failure = _FAILED_CALL.match(line)
        if failure:  # ('RESULT', SomeError('...')): the call failed on the server (§4)
            raise ApiError(method, ("RESULT", failure.group(1)))
        try:
            reply = ast.literal_eval(line)
        except (ValueError, SyntaxError, RecursionError, MemoryError):
            raise ServerError(f"API call {method}(): unreadable reply {line[:200]!r}") from None
        if not isinstance(reply, tuple) or not reply:
            raise ServerError(f"API call {method}(): unexpected reply {line[:200]!r}")
        if reply[0] != "RESULT":
            raise ApiError(method, reply)
        return reply[1] if len(reply) > 1 else None

    def closed_by_server(self) -> bool:
        """True when the server ended the session (it never speaks first, so anything
        readable between calls is the end of the connection or junk); never blocks."""
        if self.sock is None:
            return False
        readable, _, _ = select.select([self.sock], [], [], 0)
        if not readable:
            return False
        self.sock.deadline = Deadline(1.0)
        try:
            return self.sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def close(self) -> None:
        if self.sock is None:
            return
        self.sock.deadline = Deadline(min(self.timeout, 1.0))  # a goodbye, not worth waiting for
        try:
            self._send(repr(("CLOSE",)) + "\n")
        except ServerError:
            pass
        self.sock.close()
        self.sock = None

    def __enter__(self) -> ApiSession:
        return self.open()

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _one_call(host: str, port: int, api: str, timeout: float, method: str, *args: Any) -> Any:
    """Open a session, make one call, close: one step, bounded by ``timeout`` as a whole."""
    deadline = Deadline(timeout)
    session = ApiSession(host, port, api, timeout)
    try:
        return session.open(deadline).call_within(deadline, method, *args)
    finally:
        session.close()


def sync_clock(host: str, port: int, timeout: float = DEFAULT_TIMEOUT) -> float:
    return float(_one_call(host, port, "NSAPI", timeout, "sync_clock"))


def report_lldp_neighbor(host: str, port: int, sw_mac: str, sw_port_label: str,
                         timeout: float = DEFAULT_TIMEOUT) -> None:
    _one_call(host, port, "NSAPI", timeout, "report_lldp_neighbor", sw_mac, sw_port_label)


def get_device_info(host: str, port: int, mac: str,
                    timeout: float = DEFAULT_TIMEOUT) -> Optional[Dict[str, Any]]:
    return _one_call(host, port, "VSAPI", timeout, "get_device_info", mac)


# ---------------------------------------------------------------- web API (§5)

class HttpReply(NamedTuple):
    status: int
    body: bytes


def http_get(url: str, timeout: float, max_size: int) -> HttpReply:
    """GET an http:// URL, following redirects, as one step bounded by ``timeout``.

    The body is read up to ``max_size`` bytes; a larger one is refused
    (:class:`ReplyTooLarge`) before it fills memory.
    """
    deadline = Deadline(timeout)
    for _ in range(MAX_REDIRECTS + 1):
        status, location, body = _http_get_once(url, deadline, max_size)
        if status not in (301, 302, 303, 307, 308) or not location:
            return HttpReply(status, body)
        url = urljoin(url, location)
    raise ServerError(f"HTTP request {url}: more than {MAX_REDIRECTS} redirects")


def _http_get_once(url: str, deadline: Deadline,
                   max_size: int) -> Tuple[int, Optional[str], bytes]:
    import http.client

    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ServerError(f"HTTP request {url}: only http:// URLs with a host are supported")
    try:
        port = parts.port or 80
    except ValueError:
        raise ServerError(f"HTTP request {url}: bad port") from None
    connection = http.client.HTTPConnection(parts.hostname, port)
    connection.sock = connect_step(parts.hostname, port, deadline, "web server")
    try:
        connection.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
                           headers={"Connection": "close"})
        response = connection.getresponse()
        if response.status in (301, 302, 303, 307, 308):
            return response.status, response.getheader("Location"), b""
        return response.status, None, _bounded_body(response, url, max_size)
    except socket.timeout:
        raise ServerUnreachable(f"HTTP request {url}: no answer in time (the whole request "
                                f"may last {deadline.seconds:g} s)") from None
    except (OSError, http.client.HTTPException) as error:
        raise ServerUnreachable(f"HTTP request {url} failed: {error!r}") from None
    finally:
        connection.close()


def _bounded_body(response: Any, url: str, max_size: int) -> bytes:
    announced = response.getheader("Content-Length", "")
    if announced.isdigit() and int(announced) > max_size:
        raise ReplyTooLarge(limit_reached(
            "HTTP body over the size bound",
            f"{url} announces {int(announced)} bytes, more than {max_size}"))
    body = bytearray()  # grows in place: linear in the body size
    while True:
        chunk = response.read(RECV_SIZE)
        if not chunk:
            return body
        body += chunk
        if len(body) > max_size:
            raise ReplyTooLarge(limit_reached(
                "HTTP body over the size bound", f"{url} sent more than {max_size} bytes"))


class WebApi:
    """The server's HTTP API (``/api/v1``) and boot files (``/boot``)."""

    def __init__(self, host: str, port: int = 80, timeout: float = DEFAULT_TIMEOUT):
        self.base = f"http://{host}:{port}" if port != 80 else f"http://{host}"
        self.timeout = timeout

    def _get(self, path: str, params: Dict[str, str], max_size: int) -> HttpReply:
        return http_get(f"{self.base}{path}?{urlencode(params)}", self.timeout, max_size)

    def _json(self, path: str, params: Dict[str, str]) -> Dict[str, Any]:
        import json

        reply = self._get(path, params, MAX_JSON)
        if reply.status != 200:
            raise ServerError(f"web API {path} answered HTTP {reply.status}")
        try:
            document = json.loads(reply.body)
        except (ValueError, RecursionError):
            raise ServerError(f"web API {path} did not answer JSON") from None
        if not isinstance(document, dict):
            raise ServerError(f"web API {path} answered JSON that is not an object")
        return document

    def nodes(self, mac: str) -> List[Dict[str, Any]]:
        return list(self._json("/api/v1/nodes", {"mac": mac}).get("nodes", []))

    def node(self, mac: str) -> Optional[Dict[str, Any]]:
        nodes = self.nodes(mac)
        return nodes[0] if nodes else None

    def image(self, fullname: str) -> Optional[Dict[str, Any]]:
        images = self._json("/api/v1/images", {"fullname": fullname}).get("images", [])
        return images[0] if images else None

    def boot_file(self, path: str, node_ip: str) -> bytes:
        """``/boot/<path>?node_ip=..``: a file of the node's *currently bound* image."""
        reply = self._get(BOOT_URL_PREFIX + quote(path.lstrip("/")), {"node_ip": node_ip},
                          MAX_BOOT_FILE)
        if reply.status != 200:
            raise FileNotServed(f"boot file {path} not served over HTTP (HTTP {reply.status})")
        return reply.body

    def url_get(self, url: str) -> bytes:
        """Any http:// URL (iPXE scripts may name one)."""
        reply = http_get(url, self.timeout, MAX_BOOT_FILE)
        if reply.status != 200:
            raise FileNotServed(f"{url} not served (HTTP {reply.status})")
        return reply.body


# ----------------------------------------------------------- fake TFTP (§6)

def fake_tftp_get(host: str, port: int, mac: str, path: str,
                  timeout: float = DEFAULT_TIMEOUT, max_size: int = MAX_BOOT_FILE) -> bytes:
    """Fetch ``path`` from /boot/<model>/ of the image ``mac`` is bound to now.

    One step bounded by ``timeout``; a file announced larger than ``max_size``
    is refused before anything is allocated.
    """
    import pickle  # here: only this request uses it, the resident process need not load it

    where = f"fake TFTP request for {path} to {host}:{port}"
    with connect_step(host, port, Deadline(timeout), "logs port (fake TFTP)") as sock:
        reader = _LineReader(sock, where)
        try:
            sock.sendall(f"{REQ_FAKE_TFTP_GET}\n".encode())
            reader.line()  # "ready"
            sock.sendall(pickle.dumps({"node_mac": mac, "path": path}, protocol=4))
        except OSError as error:
            raise reader._failed(error) from None
        status = reader.line()
        if status != "OK":
            raise FileNotServed(f"{where}: server answered {status!r}")
        size_line = reader.line()
        if not size_line.isdigit():
            raise ServerError(f"{where}: bad size line {size_line!r}")
        size = int(size_line)
        if size > max_size:
            raise ReplyTooLarge(limit_reached(
                "fake TFTP file over the size bound",
                f"{where}: the server announces {size} bytes, more than {max_size}"))
        return reader.exactly(size)


# ------------------------------------------------------ NBD export info (§9)

NBD_DEFAULT_PORT = 10809
_NBD_INIT_MAGIC = b"NBDMAGIC"
_NBD_OPTS_MAGIC = 0x49484156454F5054  # "IHAVEOPT"
_NBD_REPLY_MAGIC = 0x0003E889045565A9
_NBD_FLAG_FIXED_NEWSTYLE = 1
_NBD_FLAG_NO_ZEROES = 2
_NBD_OPT_ABORT, _NBD_OPT_LIST, _NBD_OPT_INFO, _NBD_OPT_GO = 2, 3, 6, 7
_NBD_REQUEST_MAGIC = 0x25609513
_NBD_CMD_DISC = 2
_NBD_REP_ACK, _NBD_REP_SERVER, _NBD_REP_INFO = 1, 2, 3
_NBD_REP_ERROR_BIT = 1 << 31
_NBD_REP_ERR_UNSUP = _NBD_REP_ERROR_BIT | 1
_NBD_REP_ERR_UNKNOWN = _NBD_REP_ERROR_BIT | 6
_NBD_INFO_EXPORT = 0
_NBD_MAX_REPLY = 1 << 16


class ExportMissing(ServerError):
    """The NBD server answered but does not offer the export."""


class NbdExport(NamedTuple):
    name: str
    size: Optional[int]  # bytes; None when the server cannot tell it


class _NbdHandshake:
    """The option haggling phase of the fixed newstyle NBD handshake."""

    def __init__(self, sock: socket.socket, where: str):
        self.sock = sock  # a step socket: the whole handshake shares its deadline
        self.reader = _LineReader(sock, where)
        self.where = where

    def _read(self, size: int) -> bytes:
        # nbd-server writes a reply in pieces without TCP_NODELAY: acknowledging at once
        # spares the 40 ms delayed-ACK stall per reply (48 ms -> 4 ms per check on loopback)
        if hasattr(socket, "TCP_QUICKACK"):
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        return self.reader.exactly(size)

    def start(self) -> None:
        magic, opts_magic, flags = struct.unpack(">8sQH", self._read(18))
        if magic != _NBD_INIT_MAGIC or opts_magic != _NBD_OPTS_MAGIC:
            raise ServerError(f"{self.where}: not an NBD newstyle server")
        if not flags & _NBD_FLAG_FIXED_NEWSTYLE:
            raise ServerError(f"{self.where}: the NBD server is too old (no fixed newstyle)")
        client_flags = _NBD_FLAG_FIXED_NEWSTYLE | (flags & _NBD_FLAG_NO_ZEROES)
        self.sock.sendall(struct.pack(">I", client_flags))

    def send_option(self, option: int, data: bytes = b"") -> None:
        self.sock.sendall(struct.pack(">QII", _NBD_OPTS_MAGIC, option, len(data)) + data)

    def reply(self, option: int) -> Tuple[int, bytes]:
        magic, echoed, kind, length = struct.unpack(">QIII", self._read(20))
        if magic != _NBD_REPLY_MAGIC or echoed != option:
            raise ServerError(f"{self.where}: malformed NBD option reply")
        if length > _NBD_MAX_REPLY:
            raise ServerError(f"{self.where}: NBD option reply of {length} bytes")
        return kind, self._read(length)

    def info(self, name: str, option: int = _NBD_OPT_INFO) -> Optional[int]:
        """Size of export ``name``; None if the server does not support ``option``.

        With NBD_OPT_GO a successful answer enters the transmission phase.
        """
        encoded = name.encode()
        self.send_option(option, struct.pack(">I", len(encoded)) + encoded + b"\0\0")
        size: Optional[int] = None
        while True:
            kind, data = self.reply(option)
            if kind == _NBD_REP_ACK:
                return size
            if kind == _NBD_REP_INFO and len(data) >= 12:
                info_type, = struct.unpack(">H", data[:2])
                if info_type == _NBD_INFO_EXPORT:
                    size, = struct.unpack(">Q", data[2:10])
            elif kind == _NBD_REP_ERR_UNSUP:
                return None
            elif kind == _NBD_REP_ERR_UNKNOWN:
                raise ExportMissing(f"{self.where}: the server has no export named '{name}'")
            elif kind & _NBD_REP_ERROR_BIT:
                raise ServerError(f"{self.where}: the server refused to describe export "
                                  f"'{name}' (NBD error {kind & ~_NBD_REP_ERROR_BIT})")

    def names(self) -> List[str]:
        self.send_option(_NBD_OPT_LIST)
        found = []
        while True:
            kind, data = self.reply(_NBD_OPT_LIST)
            if kind == _NBD_REP_ACK:
                return found
            if kind == _NBD_REP_SERVER and len(data) >= 4:
                length, = struct.unpack(">I", data[:4])
                found.append(data[4:4 + length].decode(errors="replace"))
            elif kind & _NBD_REP_ERROR_BIT:
                raise ServerError(f"{self.where}: the server does not list its exports "
                                  f"(NBD error {kind & ~_NBD_REP_ERROR_BIT})")

    def abort(self) -> None:
        try:
            self.send_option(_NBD_OPT_ABORT)
        except OSError:
            pass

    def disconnect(self) -> None:
        """Leave the transmission phase (after NBD_OPT_GO) cleanly."""
        try:
            self.sock.sendall(struct.pack(">IHHQQI", _NBD_REQUEST_MAGIC, 0, _NBD_CMD_DISC, 0, 0, 0))
        except OSError:
            pass


def nbd_export_info(host: str, name: str, port: int = NBD_DEFAULT_PORT,
                    timeout: float = DEFAULT_TIMEOUT) -> NbdExport:
    """Check that the NBD server offers export ``name`` and read its size.

    Speaks the fixed newstyle handshake and never attaches a device:
    NBD_OPT_INFO, then leaves with NBD_OPT_ABORT. Some nbd-server versions
    (3.24) answer INFO with size 0 before the export is opened; then
    NBD_OPT_GO reads the real size and NBD_CMD_DISC leaves at once. A server
    without INFO gets NBD_OPT_LIST (size unknown). The whole exchange is
    bounded by ``timeout``. Raises ServerUnreachable, ExportMissing or
    ServerError.
    """
    where = f"NBD server {host}:{port}"
    with connect_step(host, port, Deadline(timeout), "NBD server") as sock:
        handshake = _NbdHandshake(sock, where)
        try:
            handshake.start()
            size = handshake.info(name)
            if size is None and name not in handshake.names():
                raise ExportMissing(f"{where}: the server has no export named '{name}'")
            if size == 0:
                size = handshake.info(name, _NBD_OPT_GO)
                handshake.disconnect()
                return NbdExport(name, size)
        except OSError as error:  # includes socket.timeout
            raise ServerUnreachable(f"{where}: {error or 'no answer in time'}") from None
        except struct.error:
            raise ServerError(f"{where}: malformed NBD reply") from None
        handshake.abort()
        return NbdExport(name, size)
