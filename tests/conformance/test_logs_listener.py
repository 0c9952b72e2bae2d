"""walt-node's log writers against the real WalT 10.0 logs listener (docs/protocols.md §2, §11).

The other end of every socket here is upstream's ``LogsStreamListener`` run by
upstream's ``EventLoop`` and ``TCPServer`` (tests/conformance/upstream_driver.py),
so what is asserted is what the real server hands to its hub: text byte-exact,
the timestamps written, the order of each stream.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, List

import pytest
from support.logs import DaemonProcess, walt_env
from support.upstream import Upstream, UpstreamServer

HOSTILE = ["plain", "accents é à ü", "CJK 中文字", "emoji 😀🎉", "quotes ' \" \\ back",
           "tab\tinside", "  leading and trailing  ", "CLOSE", "1700000000.5 looks like a stamp",
           "x" * 20000 + "é"]


@pytest.fixture
def server(upstream: Upstream, tmp_path: Path) -> Iterator[UpstreamServer]:
    with UpstreamServer(upstream, tmp_path) as running:
        yield running


def mixed_texts(count: int, seed: int = 1) -> List[str]:
    """Numbered lines of ASCII and 2-, 3- and 4-byte UTF-8 characters."""
    rng = random.Random(seed)
    alphabet = ["a", "b", " ", "é", "ж", "中", "€", "😀", "𝄞"]
    return [f"{i:06d} " + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
            for i in range(count)]


def assert_delivered(server: UpstreamServer, stream: str, texts: List[str]) -> int:
    """Every text arrived byte-exact, in order; returns the number of duplicates
    (lines the daemon sent again after a connection broke)."""
    got = server.lines(stream)
    first_seen = list(dict.fromkeys(got))
    missing = set(texts) - set(got)
    assert not missing, f"{len(missing)} lines lost, e.g. {sorted(missing)[:3]}"
    assert first_seen == texts, "lines arrived out of order"
    assert not set(got) - set(texts), "the server stored lines nobody wrote"
    return len(got) - len(first_seen)


def test_walt_node_log_reaches_the_real_listener_byte_exact(server, tmp_path):
    env = walt_env(tmp_path / "root", server.logs_port)  # no daemon: a direct connection
    for number, text in enumerate(HOSTILE):
        stamp = 1700000000.25 + number
        done = subprocess.run([sys.executable, "-m", "walt_node", "log", "--ts", repr(stamp),
                               "hostile", text], env=env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
    assert server.wait_for(lambda: len(server.lines("hostile")) >= len(HOSTILE))
    records = server.records("log")
    # the argument words are joined with one space, as walt-log-echo does: the texts here
    # are single arguments, so they arrive exactly as given
    assert [r["line"] for r in records] == HOSTILE
    assert [r["ts"] for r in records] == [1700000000.25 + n for n in range(len(HOSTILE))]
    assert all(r["issuer"] == "127.0.0.1" for r in records)
    assert [c["error"] for c in server.records("closed")] == [None] * len(HOSTILE)


def test_python_api_reaches_the_real_listener(server, tmp_path):
    texts = HOSTILE + mixed_texts(300)
    script = ("import json, sys\nfrom walt_node import log\n"
              "for n, text in enumerate(json.load(sys.stdin)):\n"
              "    log.echo('api', text, ts=1700000000.0 + n)\n"
              "assert log.flush(timeout=30)\n")
    import json

    done = subprocess.run([sys.executable, "-c", script], input=json.dumps(texts),
                          env=walt_env(tmp_path / "root", server.logs_port),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert server.wait_for(lambda: len(set(server.lines("api"))) >= len(texts)), \
        f"{len(set(server.lines('api')))} lines arrived; closures: {server.records('closed')[:3]}"
    assert_delivered(server, "api", texts)
    stamps = {r["line"]: r["ts"] for r in server.records("log")}
    assert [stamps[t] for t in texts] == [1700000000.0 + n for n in range(len(texts))]


@pytest.mark.parametrize("slow, mss", [(0.0, 0), (0.002, 1448)],
                         ids=["fast-loopback", "slowed-reader-ethernet-segments"])
def test_daemon_burst_of_mixed_utf8_loses_nothing(upstream, tmp_path, slow, mss):
    """The burst of the issue: 20,000 lines of mixed text written at once into the FIFO.
    The listener decodes each 8 KiB read on its own; the daemon must get every line
    through (docs/protocols.md §11), also when the server reads late and its reads
    fall anywhere: the writes keep every read of the server between two characters, so
    it closes no stream (and if it did, the daemon would send again)."""
    with UpstreamServer(upstream, tmp_path, slow=slow, mss=mss) as server:
        burst_through_daemon(server, tmp_path)


def burst_through_daemon(server: UpstreamServer, tmp_path: Path) -> None:
    texts = mixed_texts(20000)
    root = tmp_path / "root"
    root.mkdir()
    daemon = DaemonProcess(root, server.logs_port).start()
    try:
        now = time.time()
        data = "".join(f"TSLOG {now:.6f} burst {text}\n" for text in texts).encode()
        fd = os.open(daemon.fifo, os.O_WRONLY)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view[:65536]):]
        finally:
            os.close(fd)
        assert server.wait_for(lambda: len(set(server.lines("burst"))) >= len(texts), 120), \
            daemon.log()[-3000:]
    finally:
        daemon.stop()
    duplicates = assert_delivered(server, "burst", texts)
    refused = [c for c in server.records("closed") if c["error"]]
    print(f"20,000 mixed lines: 0 lost, {duplicates} duplicates, "
          f"{len(refused)} streams closed by the server on an error")
    assert not refused, refused[:3]
    assert duplicates == 0
    assert {r["ts"] for r in server.records("log")} == {float(f"{now:.6f}")}


def test_walt_log_monitor_reaches_the_real_listener(server, tmp_path, monkeypatch):
    """walt-log-monitor's output, framed by START and END, as the real server stores it."""
    from walt_node.sim.sample import make_node_root

    root = make_node_root(tmp_path / "node", logs_port=server.logs_port)
    monkeypatch.setenv("WALT_NODE_ROOT", str(root))
    monitor = str(Path(sys.executable).parent / "walt-log-monitor")
    script = "printf 'é 中 😀\\n'; echo 'tab\there'; seq 1 2000; printf 'last, no newline'"
    process = subprocess.run([monitor, "sh", "-c", script], capture_output=True, timeout=60)
    assert process.returncode == 0, process.stderr
    expected = ["START", "é 中 😀", "tab\there", *map(str, range(1, 2001)), "last, no newline",
                "END"]
    assert server.wait_for(lambda: "END" in server.lines()), server.records()[-3:]
    streams = {r["stream"] for r in server.records("log")}
    assert len(streams) == 1 and streams.pop().startswith("sh.")
    assert list(dict.fromkeys(server.lines())) == expected
