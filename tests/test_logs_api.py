"""The Python API (walt_node.log, WaltLogHandler), each case in a fresh
interpreter: through a FIFO reader, straight to the server, spooled while the
server is down, from many threads, flushed at exit."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import List

import pytest
from support.logs import DaemonProcess, LogServer, walt_env
from support.wait import wait_until


def run_script(code: str, env: dict, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=timeout)


def texts(server: LogServer, stream: str) -> List[bytes]:
    return [line.text for line in server.records() if line.stream == stream]


def test_no_daemon_goes_direct_and_flushes_at_exit(tmp_path: Path) -> None:
    server = LogServer().start()
    try:
        done = run_script("""
            from walt_node import log
            for i in range(3000):
                log.echo("direct", "line %d" % i)
            log.echo("direct", "two  spaces\\tand tab", ts=1700000000.5)
        """, walt_env(tmp_path, server.port))  # no flush: the atexit hook must do it
        assert done.returncode == 0, done.stderr
        # the script has exited: the stream's CLOSE reaching the server ends what it sent
        assert server.wait_for(lambda records: 1 in server.closed_properly, 20), server.closed_properly
        got = texts(server, "direct")
        assert got == [b"line %d" % i for i in range(3000)] + [b"two  spaces\tand tab"]
        assert server.records()[-1].ts == 1700000000.5
        assert server.closed_properly.get(1) is True, "the stream ends with CLOSE"
        assert not list((tmp_path / "var/lib/walt/logs-spool").glob("api-*")), "empty spool left"
    finally:
        server.crash()


def test_uses_the_fifo_when_a_daemon_reads_it(tmp_path: Path) -> None:
    fifo = tmp_path / "var/lib/walt/logs.fifo"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    received = bytearray()
    reading = threading.Event()

    def fake_daemon() -> None:
        fd = os.open(fifo, os.O_RDWR)
        reading.set()
        deadline = time.monotonic() + 20
        while received.count(b"\n") < 101 and time.monotonic() < deadline:
            received.extend(os.read(fd, 65536))
        os.close(fd)

    reader = threading.Thread(target=fake_daemon)
    reader.start()
    assert reading.wait(10)
    done = run_script("""
        from walt_node import log
        for i in range(100):
            log.echo("via-fifo", "n %d" % i, ts=1700000000 + i)
        log.echo("via-fifo", "multi\\nline", ts=1.5)
        assert log.flush(10)
    """, walt_env(tmp_path, 1))  # port 1: nothing may go direct
    reader.join(25)
    assert done.returncode == 0, done.stderr
    assert received.startswith(b"\n"), "each write starts with a separator (docs/logs.md)"
    lines = [line for line in bytes(received).splitlines() if line]
    assert lines[:100] == [b"TSLOG %d.000000 via-fifo n %d" % (1700000000 + i, i) for i in range(100)]
    assert lines[100:] == [b"TSLOG 1.500000 via-fifo multi", b"TSLOG 1.500000 via-fifo line"]


def test_through_the_real_daemon(tmp_path: Path) -> None:
    server = LogServer().start()
    daemon = DaemonProcess(tmp_path, server.port).start()
    try:
        done = run_script("""
            import logging
            from walt_node.logstreams import WaltLogHandler
            logger = logging.getLogger("exp")
            logger.addHandler(WaltLogHandler(stream="handler"))
            logger.setLevel(logging.INFO)
            for i in range(500):
                logger.info("record %d", i)
        """, walt_env(tmp_path, server.port))
        assert done.returncode == 0, done.stderr
        assert server.wait_for(lambda r: len(r) >= 500, 10)
        assert texts(server, "handler") == [b"record %d" % i for i in range(500)]
        assert len({line.conn for line in server.records()}) == 1
    finally:
        daemon.kill()
        server.crash()


def test_no_server_spools_then_delivers(tmp_path: Path) -> None:
    server = LogServer().start()
    port = server.port
    server.crash()
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent("""
        import sys, time
        from walt_node import log
        for i in range(1000):
            log.echo("later", "line %d" % i, ts=1700000000 + i)
        assert not log.flush(0.3)     # not delivered: the server is down
        print("spooled", flush=True)
        sys.stdin.readline()          # the test starts the server meanwhile
        deadline = time.time() + 20
        while not log.flush(0.5) and time.time() < deadline:
            pass
        log.echo("later", "after restart")
    """))
    proc = subprocess.Popen([sys.executable, str(script)], env=walt_env(tmp_path, port),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline() == "spooled\n"
        # the sender spills to disk once its connection attempt failed (later on a loaded machine)
        assert wait_until(lambda: list((tmp_path / "var/lib/walt/logs-spool").rglob("*.seg")), 10), \
            "nothing spooled"
        server = LogServer(port=port).start()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.wait(30) == 0
        # delivered means acknowledged by the server's kernel: its reader may still be behind
        assert server.wait_for(lambda records: len(texts(server, "later")) >= 1001, 20)
        got = texts(server, "later")
        assert got == [b"line %d" % i for i in range(1000)] + [b"after restart"]
        assert [line.ts for line in server.records()][:1000] == [1700000000 + i for i in range(1000)]
        assert not list((tmp_path / "var/lib/walt/logs-spool").rglob("*.seg"))
    finally:
        proc.kill()
        server.crash()


def test_spool_left_by_a_script_is_delivered_by_the_daemon(tmp_path: Path) -> None:
    server = LogServer().start()
    port = server.port
    server.crash()
    done = run_script("""
        from walt_node import log
        for i in range(200):
            log.echo("orphan", "line %d" % i)
    """, walt_env(tmp_path, port, WALT_LOG_EXIT_TIMEOUT="0.5"))
    assert done.returncode == 0, done.stderr
    assert list((tmp_path / "var/lib/walt/logs-spool").rglob("*.seg"))
    server = LogServer(port=port).start()
    daemon = DaemonProcess(tmp_path, port).start()
    try:
        assert server.wait_for(lambda r: len(r) >= 200, 15)
        assert texts(server, "orphan") == [b"line %d" % i for i in range(200)]
    finally:
        daemon.kill()
        server.crash()


def test_many_threads(tmp_path: Path) -> None:
    server = LogServer().start()
    try:
        done = run_script("""
            import threading
            from walt_node import log
            def work(n):
                for i in range(2000):
                    log.echo("t%d" % (n % 3), "thread %d line %d" % (n, i))
            threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
            [t.start() for t in threads]
            [t.join() for t in threads]
            assert log.flush(20)
        """, walt_env(tmp_path, server.port))
        assert done.returncode == 0, done.stderr
        # flushed means written to the kernel: the server's reader may still be behind
        assert server.wait_for(lambda records: len(records) >= 16000, timeout=20)
        records = server.records()
        assert len(records) == 16000
        for n in range(8):
            mine = [line.text for line in records
                    if line.stream == f"t{n % 3}" and line.text.startswith(b"thread %d " % n)]
            assert mine == [b"thread %d line %d" % (n, i) for i in range(2000)]
    finally:
        server.crash()


def test_bad_stream_names_are_refused_clearly(tmp_path: Path) -> None:
    done = run_script("""
        from walt_node import log
        for name in ("", "two words", "new\\nline", 3):
            try:
                log.echo(name, "x")
            except ValueError as error:
                print(error)
        try:
            log.echo("fine", "x", ts="yesterday")
        except ValueError as error:
            print("bad ts:", error)
    """, walt_env(tmp_path, 1, WALT_LOG_EXIT_TIMEOUT="0.2"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("invalid log stream name") == 4
    assert "bad ts:" in done.stdout


@pytest.mark.parametrize("option", ["--ts", "--timestamp"])  # --timestamp: walt-log-echo's spelling
def test_log_command(tmp_path: Path, option: str) -> None:
    server = LogServer().start()
    try:
        done = subprocess.run([sys.executable, "-m", "walt_node", "log", option, "1700000000.5",
                               "cmd", "hello", "world"], env=walt_env(tmp_path, server.port),
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert [(line.ts, line.text) for line in server.records()] == [(1700000000.5, b"hello world")]
    finally:
        server.crash()


def test_an_idle_script_does_not_hold_the_daemon_at_stop(tmp_path: Path) -> None:
    server = LogServer().start()
    daemon = DaemonProcess(tmp_path, server.port).start()
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys
        from walt_node import log
        log.echo("idle", "one line through the daemon")
        assert log.flush(10)
        print("sent", flush=True)
        sys.stdin.readline()
    """)], env=walt_env(tmp_path, server.port), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "sent\n"
        assert server.wait_for(lambda r: len(r) == 1, 10)
        started = time.monotonic()
        assert daemon.stop() == 0
        assert time.monotonic() - started < 1.5
        assert "kept the logs FIFO open" not in daemon.log()
    finally:
        proc.kill()
        proc.wait(5)
        daemon.kill()
        server.crash()
