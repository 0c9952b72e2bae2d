"""The logs daemon against a hostile local user (the FIFO is writable by all)
and heavy load: one writer cannot capture or swallow another's lines.

The attacker runs as ``nobody`` (setpriv); the victim writes as root, the way
the server's ``walt-log-echo`` does (one ``echo`` per line) or with
``walt-node log``.  "The daemon has read the attacker's bytes" is observed
as the FIFO's pipe being empty (FIONREAD), never guessed with a sleep."""

from __future__ import annotations

import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Iterator, List

import pytest
from support.logs import (
    DaemonProcess,
    LogServer,
    fifo_unread_bytes,
    fill_disk,
    small_disk,
    wait_until_read,
    walt_env,
)
from support.wait import wait_until

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


# ------------------------------------------------------------ the spool under attack

def dead_port() -> int:
    """A loopback port where no server listens (yet)."""
    server = LogServer().start()
    server.crash()
    return server.port


def wait_for_log(daemon: DaemonProcess, text: str, timeout: float = 15.0) -> None:
    def logged() -> bool:
        assert daemon.alive(), daemon.log()
        return text in daemon.log()

    assert wait_until(logged, timeout), f"{text!r} not in the daemon's log: {daemon.log()}"


def write_lines(fifo: Path, stream: str, first: int, count: int) -> None:
    """TSLOG lines stamped 1700000000 + n, in writes under PIPE_BUF."""
    with open(fifo, "wb", buffering=0) as file:
        for start in range(first, first + count, 50):
            file.write(b"".join(b"TSLOG %d.5 %s line-%06d\n" % (1700000000 + n, stream.encode(), n)
                                for n in range(start, min(start + 50, first + count))))


def expect_lines(first: int, count: int) -> List[bytes]:
    return [b"line-%06d" % n for n in range(first, first + count)]


def start_with_few_descriptors(daemon: DaemonProcess) -> DaemonProcess:
    """Start ``daemon`` with systemd's default soft limit of 1024 descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))  # inherited
    try:
        return daemon.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def restart_and_collect(root: Path, port: int, expected: int, *args: str) -> LogServer:
    server = LogServer(port=port).start()
    daemon = start_with_few_descriptors(DaemonProcess(root, port, *args))
    try:
        assert server.wait_for(lambda r: len(r) >= expected, 60), (len(server.records()), daemon.log())
        daemon.stop()
    finally:
        daemon.kill()
        server.crash()
    return server


def test_a_long_non_ascii_stream_name_does_not_switch_the_spool_off(tmp_path: Path) -> None:
    port = dead_port()
    long_name = "\u00e9t\u00e9-" * 150  # 900 bytes of UTF-8, 2700 once %-quoted
    daemon = DaemonProcess(tmp_path, port).start()
    try:
        write_lines(daemon.fifo, long_name, 0, 1)
        write_lines(daemon.fifo, "burst", 0, 20_000)  # then a burst on another stream
        assert daemon.stop() == 0
        assert "lost" not in daemon.log() and "No space" not in daemon.log(), daemon.log()
    finally:
        daemon.kill()
    server = restart_and_collect(tmp_path, port, 20_001)
    assert texts(server, long_name) == expect_lines(0, 1)
    assert texts(server, "burst") == expect_lines(0, 20_000)


def test_a_full_spool_disk_duplicates_and_cuts_nothing_and_the_spool_comes_back(
        tmp_path: Path) -> None:
    port = dead_port()
    with small_disk(tmp_path / "disk", "512k") as disk:
        args = ("--spool-dir", str(disk / "spool"))
        daemon = DaemonProcess(tmp_path, port, *args).start()
        try:
            filler = fill_disk(disk, leave=8192)
            write_lines(daemon.fifo, "s", 0, 3000)  # about 100 KB: the spool meets a full disk
            wait_for_log(daemon, "No space left on device")
            filler.unlink()  # space comes back
            write_lines(daemon.fifo, "s", 3000, 3000)
            wait_for_log(daemon, "the log spool works again")
            assert daemon.stop() == 0
            assert "lost" not in daemon.log(), daemon.log()
        finally:
            daemon.kill()
        server = restart_and_collect(tmp_path, port, 6000, *args)
    records = [line for line in server.records() if line.stream == "s"]
    assert [line.text for line in records] == expect_lines(0, 6000), "each line once, whole"
    assert [line.ts for line in records] == [1700000000.5 + n for n in range(6000)]


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_memory_has_a_total_bound_when_the_spool_is_unusable(tmp_path: Path) -> None:
    """200 streams of 512 KiB each, server down, spool disk full: memory stays
    bounded in total, and what was dropped is said in each stream."""
    port = dead_port()
    streams, per_stream = 200, 5000  # lines of about 105 bytes
    with small_disk(tmp_path / "disk", "256k") as disk:
        daemon = DaemonProcess(tmp_path, port, "--spool-dir", str(disk / "spool")).start()
        try:
            fill_disk(disk)
            assert daemon.proc is not None
            baseline = rss_bytes(daemon.proc.pid)
            padding = b"p" * 80
            for first in range(0, per_stream, 1000):
                for number in range(streams):
                    write_fifo_data = b"".join(b"LOG m%03d %06d %s\n" % (number, n, padding)
                                               for n in range(first, first + 1000))
                    with open(daemon.fifo, "wb") as file:
                        file.write(write_fifo_data)
            wait_for_log(daemon, "dropping its oldest lines")
            grown = rss_bytes(daemon.proc.pid) - baseline
            assert grown < 70 * 1024 * 1024, f"{grown / 2**20:.0f} MiB for 100 MiB of lines"
            server = LogServer(port=port).start()  # the server comes back: notices say the rest
            try:
                def complete(records: List) -> bool:
                    return len({line.stream for line in records if line.stream.startswith("m")}) == streams
                assert server.wait_for(complete, 30), daemon.log()
                daemon.stop()
            finally:
                server.crash()
        finally:
            daemon.kill()
    for number in range(streams):
        got = texts(server, f"m{number:03d}")
        notices = [int(text.split(b"] ")[1].split()[0]) for text in got if b"were dropped here" in text]
        kept = [text for text in got if b"were dropped here" not in text]
        assert notices and sum(notices) + len(kept) == per_stream, number
        assert kept == [b"%06d %s" % (n, padding) for n in range(per_stream - len(kept), per_stream)]
    assert "dropped so far" in daemon.log()


def test_thousands_of_streams_do_not_exhaust_file_descriptors(tmp_path: Path) -> None:
    """systemd's soft limit of 1024 descriptors; 1500 streams while the server is
    down, then a burst on another stream; all delivered after a restart."""
    port = dead_port()
    daemon = start_with_few_descriptors(DaemonProcess(tmp_path, port))
    try:
        for number in range(1500):
            write_lines(daemon.fifo, f"many{number:04d}", number, 1)
        write_lines(daemon.fifo, "burst", 0, 1000)
        assert daemon.stop() == 0
        assert "lost" not in daemon.log(), daemon.log()[-2000:]
    finally:
        daemon.kill()
    server = restart_and_collect(tmp_path, port, 2500)
    assert texts(server, "burst") == expect_lines(0, 1000)
    assert all(texts(server, f"many{number:04d}") == expect_lines(number, 1) for number in range(1500))


def test_a_drop_notice_is_never_glued_into_a_half_sent_line(tmp_path: Path) -> None:
    """A server that stops reading while a long line is half sent, a flood
    behind it, and a spool too small for the flood: the dropped lines' notice
    must come after the end of the half-sent line, not inside it."""
    listener = socket.create_server(("127.0.0.1", 0))
    conns: List[socket.socket] = []
    accepted = threading.Event()

    def accept() -> None:
        conns.append(listener.accept()[0])
        accepted.set()

    threading.Thread(target=accept, daemon=True).start()
    daemon = DaemonProcess(tmp_path, listener.getsockname()[1], "--spool-size", "64K").start()
    try:
        line = b"x" * 60_000  # longer than the writes of one send: the rest waits in memory
        with open(daemon.fifo, "wb") as fifo:
            for number in range(500):  # 30 MB: far more than memory and the spool hold
                fifo.write(b"TSLOG 1700000000.5 glue L%04d %s\n" % (number, line))
            fifo.write(b"TSLOG 1700000000.5 glue end\n")
        assert accepted.wait(10)
        wait_for_log(daemon, "log spool full")
        received = bytearray()
        conns[0].settimeout(30)
        while not received.endswith(b" end\n"):  # the server reads again, up to the last line
            chunk = conns[0].recv(1 << 20)
            assert chunk, bytes(received[-200:])
            received += chunk
        daemon.stop()
    finally:
        daemon.kill()
        listener.close()
        for conn in conns:
            conn.close()
    lines = bytes(received).split(b"\n")[3:-1]  # after the stream's header
    # a stamp may be padded with zeros in front (the writes' 8 KiB grid, docs/protocols.md §11)
    for text in lines:
        assert re.fullmatch(rb"0*1700000000\.5\d* (L\d{4} x{60000}|\[walt-node\] \d+ log lines of this "
                            rb"stream were dropped here: .*|end)", text), text[:120] + b"..." + text[-120:]
    assert any(b"were dropped here" in text for text in lines)
