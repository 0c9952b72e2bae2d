"""Test helpers for the logs tests: a counting log server on loopback and a
daemon process runner.  (Not a test module: imported by tests/test_logs_*.py.)"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path
from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Set

from support.wait import wait_until

REPO = Path(__file__).resolve().parent.parent


class Line(NamedTuple):
    stream: str
    ts: float
    text: bytes
    conn: int


class LogServer:
    """A §2 logs-port server that records every line; can crash and restart
    on the same port.  Lines are parsed exactly like the WalT server does:
    one per \\n, ``<ts> <text>`` with TIMESTAMPS_INSIDE."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.host, self.port = host, port
        self.lines: List[Line] = []
        self.closed_properly: Dict[int, bool] = {}
        self._lock = threading.Lock()
        self._listener: Optional[socket.socket] = None
        self._conns: List[socket.socket] = []
        self._crashed: Set[socket.socket] = set()
        self._threads: List[threading.Thread] = []
        self._next_conn = 0
        self.connections = 0

    def start(self) -> LogServer:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                self._conns.append(conn)
                self._next_conn += 1
                self.connections += 1
                number = self._next_conn
            thread = threading.Thread(target=self._serve, args=(conn, number), daemon=True)
            with self._lock:
                self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        buffer = b""
        header: List[bytes] = []
        stream = ""
        try:
            while True:
                try:
                    chunk = conn.recv(1 << 20)
                except OSError:
                    return
                if not chunk or conn in self._crashed:
                    return  # a crashed server stores nothing more (close() then resets)
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                parsed = []
                for raw in complete:
                    if len(header) < 3:
                        header.append(raw)
                        if len(header) == 3:
                            assert header[0] in (b"REQ_NEW_INCOMING_LOGS", b"0"), header
                            assert header[2] == b"TIMESTAMPS_INSIDE", header
                            stream = header[1].decode()
                        continue
                    if raw == b"CLOSE":
                        self.closed_properly[number] = True
                        continue
                    ts, _, text = raw.partition(b" ")
                    parsed.append(Line(stream, float(ts), text, number))
                with self._lock:
                    self.lines.extend(parsed)
        finally:
            self.closed_properly.setdefault(number, False)
            conn.close()

    def crash(self) -> None:
        """Stop listening and drop every connection at once, as a dying server would:
        what its kernel acknowledged but it did not read yet is lost (RST)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
            except OSError:
                pass
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            self._crashed.add(conn)
            try:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with self._lock:
            threads, self._threads = self._threads, []
        for thread in threads:  # a dead process records nothing after its death
            thread.join(5)

    def restart(self) -> None:
        self.start()

    def records(self) -> List[Line]:
        with self._lock:
            return list(self.lines)

    def wait_for(self, predicate: Callable[[List[Line]], bool], timeout: float) -> bool:
        return wait_until(lambda: predicate(self.records()), timeout)


def walt_env(root: Path, port: int, **extra: str) -> Dict[str, str]:
    env = dict(os.environ)
    env.update({"WALT_NODE_ROOT": str(root), "walt_server_ip": "127.0.0.1",
                "walt_server_logs_port": str(port), "PYTHONPATH": str(REPO)})
    env.update(extra)
    return env


class DaemonProcess:
    """``walt-node logs-daemon`` in a subprocess, under a temporary root."""

    def __init__(self, root: Path, port: int, *extra_args: str):
        self.root = root
        self.port = port
        self.args = list(extra_args)
        self.proc: Optional[subprocess.Popen] = None
        self.log_path = root / "daemon.log"

    @property
    def fifo(self) -> Path:
        return self.root / "var/lib/walt/logs.fifo"

    def start(self, timeout: float = 10.0) -> DaemonProcess:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "walt_node", "logs-daemon", *self.args],
            env=walt_env(self.root, self.port), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        if not wait_until(self._ready, timeout):
            raise RuntimeError(f"daemon not ready in {timeout} s: {self.log()}")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"daemon exited: {self.log()}")
        return self.fifo.exists() and _has_reader(self.fifo)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(5)


def fifo_unread_bytes(fifo: Path) -> int:
    """Bytes written into ``fifo`` that its reader has not read yet."""
    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    try:
        return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]
    finally:
        os.close(fd)


def wait_until_read(fifo: Path, timeout: float = 10.0) -> None:
    """Until the reader (the daemon) has read everything written into ``fifo``."""
    assert wait_until(lambda: fifo_unread_bytes(fifo) == 0, timeout), "the daemon did not read the FIFO"


def _has_reader(fifo: Path) -> bool:
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return False
    os.close(fd)
    return True


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    """A real filesystem of ``size`` (tmpfs, e.g. "256k") mounted on ``path``
    (needs root), to fill up for real."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "walt-test", str(path)],
                   check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill_disk(path: Path, leave: int = 0) -> Path:
    """A file taking all the free space of ``path``'s filesystem but ``leave`` bytes."""
    filler = path / "filler"
    free = os.statvfs(path).f_bavail * os.statvfs(path).f_frsize
    with open(filler, "wb") as file:
        try:
            file.write(b"\0" * max(0, free - leave))
            file.flush()
        except OSError:
            pass
    return filler
