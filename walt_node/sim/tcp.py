"""TCP listeners that can be stopped, restarted on the same port, or made to drop
every live connection (like a crashed server), and a buffered socket reader."""

from __future__ import annotations

import logging
import pickle
import socket
import threading
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from walt_node.bounds import limit_reached

log = logging.getLogger(__name__)

RECV_SIZE = 256 * 1024  # big reads: the logs port must keep up with ~100k lines/s


class LineTooLong(Exception):
    pass


class Connection:
    """One accepted connection; ``killed`` tells its handler the server dropped it."""

    def __init__(self, sock: socket.socket, peer_ip: str):
        self.sock = sock
        self.peer_ip = peer_ip
        self.killed = False
        self.buffer = b""

    def recv(self, size: int = RECV_SIZE) -> bytes:
        """Next chunk ('' at end of stream or if the connection broke)."""
        try:
            return self.sock.recv(size)
        except OSError:
            return b""

    def _recv_to_newline(self, limit: int) -> bytes:
        """Bytes up to the first newline at most, never beyond it (peeked first)."""
        try:
            peeked = self.sock.recv(limit + 1, socket.MSG_PEEK)
        except OSError:
            return b""
        end = peeked.find(b"\n") + 1
        return self.recv(end or len(peeked)) if peeked else b""

    def readline(self, limit: int, exact: bool = False) -> Optional[bytes]:
        """One line without its ``\\n``; None at end of stream; LineTooLong past ``limit``.
        ``exact``: read nothing past the line (what follows stays in the socket)."""
        while b"\n" not in self.buffer:
            if len(self.buffer) > limit:
                raise LineTooLong()
            chunk = self._recv_to_newline(limit) if exact else self.recv()
            if not chunk:
                return None
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        if len(line) > limit:
            raise LineTooLong()
        return line.rstrip(b"\r")

    def take_buffer(self) -> bytes:
        data, self.buffer = self.buffer, b""
        return data

    def send(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def kill(self) -> None:
        self.killed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _BoundedStream:
    """File-like view of a connection for the unpickler, refusing to read past ``limit``
    bytes so a forged length in a pickle cannot make the simulator allocate gigabytes."""

    def __init__(self, conn: Connection, limit: int):
        self.conn, self.left = conn, limit

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > self.left:
            raise pickle.UnpicklingError("pickled message larger than the allowed size")
        while len(self.conn.buffer) < size:
            chunk = self.conn.recv()
            if not chunk:
                raise EOFError("connection closed inside a pickled message")
            self.conn.buffer += chunk
        data, self.conn.buffer = self.conn.buffer[:size], self.conn.buffer[size:]
        self.left -= size
        return data

    def readline(self, size: int = -1) -> bytes:
        line = self.conn.readline(min(self.left, 1 << 16))
        if line is None:
            raise EOFError("connection closed inside a pickled message")
        self.left -= len(line) + 1
        return line + b"\n"


_BUFFER_OPCODES = {pickle.BYTEARRAY8[0], pickle.NEXT_BUFFER[0], pickle.READONLY_BUFFER[0]}
MAX_NESTING = 100  # requests are a tuple of strings, a dict or two: a few levels

# opcodes that build a container from items on the stack: how many (None: all since the MARK)
_BUILDS = {pickle.TUPLE[0]: None, pickle.LIST[0]: None, pickle.DICT[0]: None,
           pickle.FROZENSET[0]: None, pickle.TUPLE1[0]: 1, pickle.TUPLE2[0]: 2, pickle.TUPLE3[0]: 3}
# opcodes that put items into the container below them
_FILLS = {pickle.APPENDS[0]: None, pickle.SETITEMS[0]: None, pickle.ADDITEMS[0]: None,
          pickle.APPEND[0]: 1, pickle.SETITEM[0]: 2}


def _nesting_checked(load: Callable[[Any], None], count: Optional[int], fills: bool):
    def checked(self: _DataOnlyUnpickler) -> None:
        if count is None:
            items, below = self.stack, (self.metastack[-1] if self.metastack else [])
        else:
            items, below = self.stack[-count:], self.stack[:-count]
        depth = self._checked_depth(items, below[-1] if fills else None)
        load(self)
        self._depths[id(self.stack[-1])] = (self.stack[-1], depth)
    return checked


def _data_only_dispatch() -> Dict[int, Callable[[Any], None]]:
    table = {code: load for code, load in pickle._Unpickler.dispatch.items()  # type: ignore[attr-defined]
             if code not in _BUFFER_OPCODES}
    for code, count in _BUILDS.items():
        table[code] = _nesting_checked(table[code], count, fills=False)
    for code, count in _FILLS.items():
        table[code] = _nesting_checked(table[code], count, fills=True)
    return table


class _DataOnlyUnpickler(pickle._Unpickler):
    """Unpickles plain data (dict, str, tuple, numbers...) and refuses every global,
    so a pickle cannot make the simulator import or call anything.

    The pure-Python unpickler is used on purpose: it reads every counted string
    through ``_BoundedStream.read`` *before* allocating it, its opcode table
    can drop the out-of-band buffer opcodes, which allocate the announced size
    first, and its container opcodes can be checked for nesting *before* they
    run: hashing a tuple nested a million deep (a dict key) overflows the C
    stack and kills the process. Containers must be filled before they are used
    (as ``pickle.dumps`` does for data without cycles), so the nesting counted
    while building is the real one. Messages here are tiny, so speed does not
    matter."""

    dispatch = _data_only_dispatch()

    def __init__(self, stream: Any):
        super().__init__(stream)
        self._depths: Dict[int, Tuple[Any, int]] = {}  # id -> (container kept alive, depth)
        self._used: Dict[int, Any] = {}  # containers already placed in another one

    def _depth(self, item: Any) -> int:
        entry = self._depths.get(id(item))
        return entry[1] if entry is not None else 0

    def _checked_depth(self, items: List[Any], container: Any) -> int:
        """Depth of the container built or filled from ``items``; refuses too deep."""
        depth = 1 + max((self._depth(item) for item in items), default=0)
        for item in items:
            if isinstance(item, (list, dict, set)):
                self._used[id(item)] = item
        if container is not None:
            if id(container) in self._used:
                raise pickle.UnpicklingError("refused: a container filled after being used "
                                             "(a recursive structure)")
            depth = max(depth, self._depth(container))
        if depth > MAX_NESTING:
            raise pickle.UnpicklingError(limit_reached(
                "pickle nested too deep", f"more than {MAX_NESTING} levels of containers"))
        return depth

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refused global {module}.{name}: only plain data is accepted")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refused persistent id: only plain data is accepted")


def read_pickle(conn: Connection, limit: int):
    """One pickled value from the connection, data types only."""
    try:
        return _DataOnlyUnpickler(_BoundedStream(conn, limit)).load()
    except KeyError as error:  # the pure-Python unpickler's answer to an unknown opcode
        raise pickle.UnpicklingError(f"pickle opcode {error} not accepted") from None
    except IndexError:  # an opcode found fewer items on the stack than it takes
        raise pickle.UnpicklingError("malformed pickle (stack underflow)") from None


Handler = Callable[[Connection], None]


class TcpService:
    """Accepts connections on (host, port) and runs ``handler`` in a thread per connection."""

    def __init__(self, name: str, host: str, port: int, handler: Handler):
        self.name, self.host, self.port, self.handler = name, host, port, handler
        self._listener: Optional[socket.socket] = None
        self._accept_thread: Optional[threading.Thread] = None
        self._connections: Set[Connection] = set()
        self._lock = threading.Lock()

    def start(self) -> int:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.host, self.port))
        except OSError as error:
            listener.close()
            raise OSError(error.errno, f"simulator {self.name} port: cannot listen on "
                                       f"{self.host}:{self.port}: {error.strerror}") from None
        listener.listen(128)
        self.port = listener.getsockname()[1]  # the automatic port stays ours across restarts
        self._listener = listener
        self._accept_thread = threading.Thread(target=self._accept_loop, args=(listener,),
                                               name=f"sim-{self.name}-accept", daemon=True)
        self._accept_thread.start()
        return self.port

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, peer = listener.accept()
            except OSError:
                return  # listener shut down by stop()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection(sock, peer[0])
            with self._lock:
                self._connections.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True,
                             name=f"sim-{self.name}-{peer[0]}:{peer[1]}").start()

    def _serve(self, conn: Connection) -> None:
        try:
            self.handler(conn)
        except Exception:  # a bug must not kill the simulator: log it, drop this connection
            log.exception("simulator %s port: error while serving %s", self.name, conn.peer_ip)
        finally:
            with self._lock:
                self._connections.discard(conn)
            try:
                conn.sock.close()
            except OSError:
                pass

    def live_connections(self) -> int:
        with self._lock:
            return len(self._connections)

    def kill_connections(self) -> None:
        """Drop every live connection at once, as a crashing server would."""
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            conn.kill()

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
            except OSError:
                pass
            listener.close()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5)
            self._accept_thread = None
        self.kill_connections()
