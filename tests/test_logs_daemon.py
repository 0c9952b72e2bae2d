"""The logs daemon end to end: real FIFO, real daemon process, a real TCP
log server on loopback (tests/logs_support.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List

from support.logs import DaemonProcess, Line, LogServer, wait_until_read, walt_env
from support.wait import wait_until


def write_fifo(fifo: Path, data: bytes) -> None:
    with open(fifo, "wb") as file:
        file.write(data)


def texts(lines: List[Line], stream: str) -> List[bytes]:
    return [line.text for line in lines if line.stream == stream]


def first_occurrences(values: List[bytes]) -> List[bytes]:
    """Resends may repeat a line; the first arrivals must be in order."""
    seen = set()
    firsts = []
    for value in values:
        if value not in seen:
            seen.add(value)
            firsts.append(value)
    return firsts


def test_text_arrives_byte_for_byte(daemon: DaemonProcess, server: LogServer) -> None:
    samples = [b"two  spaces   three", b"\ttab\tinside\t", b"back\\slash \\\\ and \\n literal",
               b"  leading and trailing  ", "unicode: caf\u00e9 \u2603".encode(), b"", b"CLOSE",
               b"\\x00 not a nul"]
    data = b"".join(b"LOG exact " + s + b"\n" for s in samples)
    write_fifo(daemon.fifo, data + b"TSLOG 1700000000.25 exact-ts  x  y \n")
    assert server.wait_for(lambda r: len(texts(r, "exact")) == len(samples)
                           and texts(r, "exact-ts"), 10)
    assert texts(server.records(), "exact") == samples
    [tsline] = [line for line in server.records() if line.stream == "exact-ts"]
    assert tsline.ts == 1700000000.25 and tsline.text == b" x  y "


def test_log_lines_are_stamped_on_reception(daemon: DaemonProcess, server: LogServer) -> None:
    before = time.time()
    write_fifo(daemon.fifo, b"LOG stamped hello\n")
    assert server.wait_for(lambda r: texts(r, "stamped"), 10)
    [line] = [line for line in server.records() if line.stream == "stamped"]
    assert before - 0.01 <= line.ts <= time.time() + 0.01


def test_malformed_input_is_counted_and_valid_lines_go_through(
        daemon: DaemonProcess, server: LogServer) -> None:
    garbage = [b"", b"   ", b"HELLO world", b"TSLOG notanumber s x", b"TSLOG nan s x",
               b"TSLOG 12", b"LOG  missing-stream", b"MONITOR 1 0 0 24 80",
               b"LOG bad-utf8 \xff\xfe ok", b"LOG nul a\0b", b"LOG big " + b"x" * 3_000_000]
    data = b"".join(b"LOG good before-%d\n" % i + g + b"\n" for i, g in enumerate(garbage))
    write_fifo(daemon.fifo, data + b"LOG good last\n")
    expected = [b"before-%d" % i for i in range(len(garbage))] + [b"last"]
    # each stream has its own connection: they arrive in no set order between streams
    assert server.wait_for(lambda r: texts(r, "good") == expected
                           and all(texts(r, name) for name in ("bad-utf8", "nul", "big")), 10), \
        texts(server.records(), "good")
    records = server.records()
    assert texts(records, "bad-utf8") == ["\ufffd\ufffd ok".encode()]
    assert texts(records, "nul") == ["a\ufffdb".encode()]
    [big] = texts(records, "big")
    assert big.startswith(b"x" * 60000) and b"truncated" in big and len(big) < 70000
    assert daemon.alive()
    daemon.stop()
    log = daemon.log()
    for kind in ("empty line", "unknown request verb", "bad timestamp", "missing or invalid stream",
                 "invalid UTF-8", "NUL bytes", "overlong line"):
        assert log.count(f"malformed FIFO input: {kind}") == 1, kind
    # a bare newline is a separator (walt-node writers start their writes with one): not counted
    assert "empty line: 1" in log and "bad timestamp in TSLOG: 2" in log
    # the MONITOR request was checked (no FIFO of pid 1 in this root) and refused, nothing ran
    assert "MONITOR request without its FIFO: pid 1" in log


def test_partial_writes_are_joined(daemon: DaemonProcess, server: LogServer) -> None:
    with open(daemon.fifo, "wb", buffering=0) as fifo:
        for piece in (b"LOG par", b"tial one ", b"two", b"\nLOG partial three\n"):
            fifo.write(piece)
            wait_until_read(daemon.fifo)  # the daemon reads each piece on its own
    assert server.wait_for(lambda r: len(texts(r, "partial")) == 2, 10)
    assert texts(server.records(), "partial") == [b"one two", b"three"]


SHELL_LOOP = r"""
i=0
while [ $i -lt 1000 ]; do
  printf 'LOG loop%s line-%s\n' "$1" "$i" > "$2"
  i=$((i+1))
done
"""


def test_thousand_separate_writes_repeated_100_times(daemon: DaemonProcess, server: LogServer) -> None:
    shell = "dash" if subprocess.run(["which", "dash"], capture_output=True).returncode == 0 else "sh"
    # keep the daemon busy meanwhile: a flood on another stream
    flood = threading.Thread(target=_writer, args=(daemon.fifo, "flood", 200_000, 1700000000.0, 3.0))
    flood.start()
    statuses = []
    for batch in range(0, 100, 4):  # 4 shells at a time, each a thousand open/write/close
        procs = [subprocess.Popen([shell, "-c", SHELL_LOOP, "loop", str(rep), str(daemon.fifo)])
                 for rep in range(batch, batch + 4)]
        statuses += [proc.wait(60) for proc in procs]
    assert statuses == [0] * 100, "a writer was killed or failed"
    flood.join(30)
    expected = [b"line-%d" % i for i in range(1000)]
    assert server.wait_for(lambda r: len(r) >= 300_000, 30), len(server.records())
    records = server.records()
    assert texts(records, "flood") == [b"n%06d" % i for i in range(200_000)]
    for rep in range(100):
        assert texts(records, f"loop{rep}") == expected, rep


def test_sigterm_with_pending_lines_then_restart(tmp_path: Path) -> None:
    server = LogServer()
    server.start()
    port = server.port
    server.crash()  # the server is down: lines must wait in the daemon
    daemon = DaemonProcess(tmp_path, port).start()
    lines = b"".join(b"TSLOG %d.5 pending line-%d\n" % (1700000000 + i, i) for i in range(5000))
    write_fifo(daemon.fifo, lines)
    wait_until_read(daemon.fifo)  # the lines are in the daemon, not in the pipe, when it stops
    assert daemon.stop() == 0
    assert not daemon.fifo.exists(), "the FIFO must go with the daemon (writers then go direct)"
    spooled = list((tmp_path / "var/lib/walt/logs-spool").rglob("*.seg"))
    assert spooled, daemon.log()
    server = LogServer(port=port).start()
    try:
        daemon = DaemonProcess(tmp_path, port).start()
        assert server.wait_for(lambda r: len(r) >= 5000, 15), len(server.records())
        records = [line for line in server.records() if line.stream == "pending"]
        assert [line.text for line in records] == [b"line-%d" % i for i in range(5000)]
        assert [line.ts for line in records] == [1700000000.5 + i for i in range(5000)]
        daemon.stop()
    finally:
        daemon.kill()
        server.crash()


def test_sigterm_delivers_what_it_holds(daemon: DaemonProcess, server: LogServer) -> None:
    lines = b"".join(b"LOG held line-%d\n" % i for i in range(50_000))
    write_fifo(daemon.fifo, lines)
    assert daemon.stop() == 0
    server.wait_for(lambda r: len(r) >= 50_000, 5)
    assert first_occurrences(texts(server.records(), "held")) == [b"line-%d" % i for i in range(50_000)]
    assert not list((daemon.root / "var/lib/walt/logs-spool").rglob("*.seg"))


def _writer(fifo: Path, stream: str, count: int, ts0: float, duration: float = 2.0) -> None:
    """``count`` lines spread over ``duration`` seconds, so crashes hit a flowing stream."""
    started = time.monotonic()
    with open(fifo, "wb", buffering=0) as file:
        for start in range(0, count, 50):  # 50 lines per write, under PIPE_BUF
            file.write(b"".join(b"TSLOG %.6f %s n%06d\n" % (ts0 + i * 1e-3, stream.encode(), i)
                                for i in range(start, min(start + 50, count))))
            ahead = started + duration * start / count - time.monotonic()
            if ahead > 0:  # the load pattern itself (a steady rate), not a wait for an event
                time.sleep(ahead)


def flowing(count: Callable[[], int], writers: List[threading.Thread]) -> Callable[[], bool]:
    """A condition: lines arrived at the server since now, or the writers are done
    (so a crash that follows hits a flowing stream, whatever the machine's speed)."""
    before = count()
    return lambda: count() > before or not any(writer.is_alive() for writer in writers)


def test_simulator_killed_and_restarted_during_200k_lines(tmp_path: Path, sim) -> None:
    """The simulator (conftest's ``sim``: node1 is 127.0.0.1) stops abruptly and
    comes back four times while four writers send 200,000 lines."""
    streams = {f"w{n}": 50_000 for n in range(4)}
    ts0 = round(time.time()) - 3600.0
    daemon = DaemonProcess(tmp_path, sim.logs_port).start()
    writers = [threading.Thread(target=_writer, args=(daemon.fifo, name, count, ts0))
               for name, count in streams.items()]
    try:
        for writer in writers:
            writer.start()
        for _ in range(4):  # the server goes away abruptly, then comes back
            assert wait_until(flowing(lambda: len(sim.log_records()), writers), 30)
            sim.stop()
            # like a dead server process, the old connections' handlers must be gone
            # before it is back (else they could still record old lines after new ones)
            assert wait_until(lambda: not sim.live_connections(), 10)
            time.sleep(0.3)  # the outage itself (the scenario), not a wait for an event
            sim.start()
        for writer in writers:
            writer.join(60)
        total = sum(streams.values())
        sim.wait_for_logs(lambda recs: len({(r.stream, r.line) for r in recs}) >= total, 40)
        records = sim.log_records()
        assert daemon.alive()
    finally:
        daemon.kill()
    assert {r.issuer for r in records} == {"node1"}
    for name, count in streams.items():
        arrived: Dict[str, float] = {}
        for record in records:
            if record.stream == name and not record.line.startswith("<"):
                arrived.setdefault(record.line, record.ts)
        assert list(arrived) == [f"n{i:06d}" for i in range(count)], name  # all, in order
        assert all(abs(ts - (ts0 + i * 1e-3)) < 2e-6 for i, ts in enumerate(arrived.values()))
    # resends are bounded: per break and stream, at most the retained tail (2 MiB by default)
    duplicates = len(records) - total
    assert duplicates <= 4 * len(streams) * (2 * 1024 * 1024 // len("1700000000.000000 n000000\n"))


def test_server_crashing_with_unread_data_loses_nothing(tmp_path: Path) -> None:
    """A crashing server resets its connections and drops what its kernel had
    acknowledged but it had not read: the resend of the retained tail covers it,
    as long as the window is longer than the server's backlog (this slow Python
    server can lag a second behind on a loaded machine, hence 5 s)."""
    server = LogServer().start()
    daemon = DaemonProcess(tmp_path, server.port, "--resend-window", "5").start()
    streams = {f"c{n}": 25_000 for n in range(2)}
    ts0 = 1700000000.0
    writers = [threading.Thread(target=_writer, args=(daemon.fifo, name, count, ts0))
               for name, count in streams.items()]
    try:
        for writer in writers:
            writer.start()
        for _ in range(3):
            assert wait_until(flowing(lambda: len(server.records()), writers), 30)
            server.crash()
            time.sleep(0.2)  # the outage itself (the scenario), not a wait for an event
            server.restart()
        for writer in writers:
            writer.join(60)
        total = sum(streams.values())
        assert server.wait_for(lambda r: len({(x.stream, x.text) for x in r}) >= total, 30), \
            len({(x.stream, x.text) for x in server.records()})
        for name, count in streams.items():
            arrived = first_occurrences([x.text for x in server.records() if x.stream == name])
            assert arrived == [b"n%06d" % i for i in range(count)], name
    finally:
        daemon.kill()
        server.crash()


def test_full_spool_drops_oldest_and_says_so(tmp_path: Path) -> None:
    server = LogServer().start()
    port = server.port
    server.crash()
    daemon = DaemonProcess(tmp_path, port, "--spool-size", "64K").start()
    total = 10_000
    write_fifo(daemon.fifo, b"".join(b"TSLOG %d.0 full line-%05d\n" % (1700000000 + i, i)
                                     for i in range(total)))
    # the server comes back once the daemon holds every line and its spool has overflowed
    wait_until_read(daemon.fifo)
    assert wait_until(lambda: "log spool full" in daemon.log(), 20), daemon.log()
    server = LogServer(port=port).start()
    try:
        assert server.wait_for(lambda r: texts(r, "full")[-1:] == [b"line-%05d" % (total - 1)], 20)
        got = texts(server.records(), "full")
        notices = [t for t in got if b"were dropped" in t]
        assert notices
        dropped = sum(int(t.split(b"] ")[1].split()[0]) for t in notices)
        delivered = [t for t in got if t.startswith(b"line-")]
        assert dropped + len(delivered) == total
        assert got[0] in notices, "the notice takes the place of the oldest lines"
        assert delivered == sorted(delivered)
    finally:
        daemon.kill()
        server.crash()


def test_idle_streams_are_closed_with_close(tmp_path: Path, server: LogServer) -> None:
    daemon = DaemonProcess(tmp_path, server.port, "--idle-close", "0.3").start()
    try:
        write_fifo(daemon.fifo, b"LOG idle one\n")
        assert server.wait_for(lambda r: texts(r, "idle"), 10)
        assert wait_until(lambda: 1 in server.closed_properly, 5)
        assert server.closed_properly[1] is True
        write_fifo(daemon.fifo, b"LOG idle two\n")
        assert server.wait_for(lambda r: len(texts(r, "idle")) == 2, 10)
        assert server.connections == 2
    finally:
        daemon.kill()


def test_systemd_ready_and_watchdog_without_libsystemd(tmp_path: Path, server: LogServer) -> None:
    name = f"walt-test-notify-{os.getpid()}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind("\0" + name)
    listener.settimeout(10)
    env = walt_env(tmp_path, server.port, NOTIFY_SOCKET="@" + name, WATCHDOG_USEC="100000",
                   PYTHONNOUSERSITE="1")
    proc = subprocess.Popen([sys.executable, "-S", "-c",
                             f"import sys; sys.path.insert(0, {env['PYTHONPATH']!r}); "
                             "from walt_node.cli import main; sys.exit(main(['logs-daemon']))"],
                            env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        messages = [listener.recv(100) for _ in range(3)]
        assert messages[0] == b"READY=1"
        assert messages[1:] == [b"WATCHDOG=1", b"WATCHDOG=1"]
        assert (tmp_path / "var/lib/walt/logs.fifo").exists()
    finally:
        proc.terminate()
        proc.wait(10)
        listener.close()


def test_fifo_mode_ownership_and_refusal_of_a_non_fifo(tmp_path: Path, server: LogServer) -> None:
    fifo = tmp_path / "var/lib/walt/logs.fifo"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo, 0o666)
    planted = os.geteuid() == 0
    if planted:
        os.chown(fifo, 65534, 65534)  # planted by another user: must not be reused
    daemon = DaemonProcess(tmp_path, server.port).start()
    info = daemon.fifo.stat()
    assert oct(info.st_mode & 0o777) == oct(0o622)
    assert info.st_uid == os.geteuid()
    assert ("owned by uid 65534" in daemon.log()) == planted
    daemon.stop()
    daemon.fifo.write_text("not a fifo")
    done = subprocess.run([sys.executable, "-m", "walt_node", "logs-daemon"],
                          env=walt_env(tmp_path, server.port), capture_output=True, text=True, timeout=20)
    assert done.returncode == 1
    assert "exists and is not a FIFO" in done.stderr
