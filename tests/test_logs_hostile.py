"""The logs daemon against a hostile local user (the FIFO is writable by all)
and heavy load: one writer cannot capture or swallow another's lines.

The attacker runs as ``nobody`` (setpriv); the victim writes as root, the way
the server's ``walt-log-echo`` does (one ``echo`` per line) or with
``walt-node log``.  "The daemon has read the attacker's bytes" is observed
as the FIFO's pipe being empty (FIONREAD), never guessed with a sleep."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path
from typing import Iterator, List

import pytest
from support.logs import DaemonProcess, LogServer, walt_env

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture
def public_root() -> Iterator[Path]:
    """A node root an unprivileged user can reach (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="walt-hostile-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def server() -> Iterator[LogServer]:
    srv = LogServer().start()
    yield srv
    srv.crash()


@pytest.fixture
def daemon(public_root: Path, server: LogServer) -> Iterator[DaemonProcess]:
    proc = DaemonProcess(public_root, server.port).start()
    yield proc
    proc.kill()


def texts(server: LogServer, stream: str) -> List[bytes]:
    return [line.text for line in server.records() if line.stream == stream]


def as_nobody(script: str, *args: str) -> None:
    subprocess.run([*NOBODY, "sh", "-c", script, "attacker", *args], check=True, timeout=30)


def echo_as_root(fifo: Path, request: str) -> None:
    """What walt-log-echo does: one shell echo of the whole request."""
    subprocess.run(["sh", "-c", 'echo "$1" > "$2"', "echo", request, str(fifo)], check=True,
                   timeout=30)


def fifo_unread_bytes(fifo: Path) -> int:
    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    try:
        return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]
    finally:
        os.close(fd)


def wait_until_read(fifo: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while fifo_unread_bytes(fifo):
        assert time.monotonic() < deadline, "the daemon did not read the FIFO"
        time.sleep(0.01)


def test_an_unterminated_request_cannot_capture_the_next_writers_line(
        daemon: DaemonProcess, server: LogServer) -> None:
    as_nobody('printf "LOG prank " > "$1"', str(daemon.fifo))
    wait_until_read(daemon.fifo)
    echo_as_root(daemon.fifo, "LOG experiment phase 1 done")
    assert server.wait_for(lambda r: texts(server, "experiment"), 10), server.records()
    assert texts(server, "experiment") == [b"phase 1 done"]
    assert texts(server, "prank") == [b""], "the leftover goes out alone, on its own stream"
    daemon.stop()
    assert daemon.log().count("malformed FIFO input: unterminated line") == 1


def test_a_long_unterminated_prefix_cannot_swallow_the_next_line(
        daemon: DaemonProcess, server: LogServer) -> None:
    as_nobody('head -c 70000 /dev/zero | tr "\\0" x > "$1"', str(daemon.fifo))
    wait_until_read(daemon.fifo)
    echo_as_root(daemon.fifo, "LOG experiment still here")
    assert server.wait_for(lambda r: texts(server, "experiment"), 10), daemon.log()
    assert texts(server, "experiment") == [b"still here"]


def test_walt_node_writers_are_safe_even_when_read_together_with_a_leftover(
        daemon: DaemonProcess, server: LogServer) -> None:
    """With the daemon stopped, the attacker's leftover and the victim's line sit
    in the pipe together and come in one read: no rule about reads can tell
    them apart, but walt-node's writers start each write with a newline."""
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGSTOP)
    try:
        as_nobody('printf "LOG prank " > "$1"', str(daemon.fifo))
        env = walt_env(daemon.root, server.port)
        subprocess.run([sys.executable, "-m", "walt_node", "log", "experiment", "from", "root"],
                       env=env, check=True, timeout=30)
        assert fifo_unread_bytes(daemon.fifo) > len("LOG prank ")
    finally:
        daemon.proc.send_signal(signal.SIGCONT)
    assert server.wait_for(lambda r: texts(server, "experiment"), 10), server.records()
    assert texts(server, "experiment") == [b"from root"]
    assert texts(server, "prank") == [b""]
