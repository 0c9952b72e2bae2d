"""journal-forward: configuration, entry parsing, the forwarding/cursor logic, and real
journal files (written by systemd-journal-remote) read by journalctl and by the systemd
Python module, delivered to the simulator."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import pytest
from support.wait import wait_until

from walt_node.config import ConfigError
from walt_node.logstreams import journal as journal_module
from walt_node.logstreams.journal import (
    MAX_QUIET_WAIT,
    CursorFile,
    Entry,
    Forwarder,
    MalformedEntry,
    _journalctl_entries,
    entry_from_json,
    journalctl_argv,
    load_config,
    parse_config,
)
from walt_node.service import ProblemCounter, StopFlag
from walt_node.sim import Simulator

REPO = Path(__file__).resolve().parent.parent
WALT_NODE = str(Path(sys.executable).parent / "walt-node")
JOURNAL_REMOTE = next((p for p in ("/lib/systemd/systemd-journal-remote",
                                   "/usr/lib/systemd/systemd-journal-remote") if os.path.exists(p)), None)
needs_journal_tools = pytest.mark.skipif(
    JOURNAL_REMOTE is None or shutil.which("journalctl") is None,
    reason="journalctl and systemd-journal-remote (Debian: systemd, systemd-journal-remote) are needed "
           "to write and read real journal files")
BOOT_ID = "0123456789abcdef0123456789abcdef"


# ------------------------------------------------------------------ configuration

def test_config_lines_comments_and_unit_suffix() -> None:
    text = "# unit  stream\n\nssh sshd-log   # the ssh daemon\n  exp.service   experiment\nx.timer t\n"
    assert parse_config(text, "f.conf") == {
        "ssh.service": "sshd-log", "exp.service": "experiment", "x.timer": "t"}


@pytest.mark.parametrize("text, message", [
    ("ssh\n", r"f.conf:1: expected '<unit> <stream>', got 'ssh'"),
    ("# c\nssh a b\n", r"f.conf:2: expected '<unit> <stream>', got 'ssh a b'"),
    ("ssh a\nssh.service b\n", r"f.conf:2: unit 'ssh.service' is already forwarded to stream 'a'"),
    ("# nothing\n", r"f.conf: no unit to forward"),
])
def test_config_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        parse_config(text, "f.conf")


def test_missing_config_says_how_to_write_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist: create it with lines '<unit> <stream>'"):
        load_config(tmp_path / "journal-forward.conf")


# ------------------------------------------------------------------ entries

def test_entry_from_journalctl_json() -> None:
    line = json.dumps({"__CURSOR": "c1", "__REALTIME_TIMESTAMP": "1700000000123456",
                       "_SYSTEMD_UNIT": "a.service", "MESSAGE": "x  y\\n\tz"})
    assert entry_from_json(line) == Entry("c1", "a.service", 1700000000.123456, "x  y\\n\tz")
    binary = json.dumps({"__CURSOR": "c2", "__REALTIME_TIMESTAMP": "1", "MESSAGE": [104, 105, 255]})
    assert entry_from_json(binary).message == "hi\ufffd"
    empty = json.dumps({"__CURSOR": "c3", "__REALTIME_TIMESTAMP": "1", "MESSAGE": None})
    assert entry_from_json(empty) == Entry("c3", "", 1e-6, "")


@pytest.mark.parametrize("line, message", [
    ("{not json", "not JSON"),
    ("[1, 2]", "not a JSON object"),
    ('{"__REALTIME_TIMESTAMP": "1"}', "field '__CURSOR' missing"),
    ('{"__CURSOR": "c", "__REALTIME_TIMESTAMP": "soon"}', "bad __REALTIME_TIMESTAMP 'soon'"),
    ('{"__CURSOR": "c", "__REALTIME_TIMESTAMP": "1", "MESSAGE": {"a": 1}}', "unexpected type dict"),
])
def test_malformed_entries_are_refused_with_the_reason(line: str, message: str) -> None:
    with pytest.raises(MalformedEntry, match=message):
        entry_from_json(line)


# ------------------------------------------------------------------ forwarding logic

class FakeDelivery:
    def __init__(self) -> None:
        self.queued: List[Tuple[str, str, float]] = []
        self.delivered: List[Tuple[str, str, float]] = []
        self.server_up = True

    def emit(self, stream: str, text: str, ts: float) -> None:
        self.queued.append((stream, text, ts))

    def flush(self) -> bool:
        if self.server_up:
            self.delivered += self.queued
            self.queued = []
        return self.server_up


def make_forwarder(tmp_path: Path, delivery: FakeDelivery) -> Forwarder:
    return Forwarder({"a.service": "sa", "b.service": "sb"}, delivery.emit, delivery.flush,
                     CursorFile(tmp_path / "state" / "cursor"),
                     ProblemCounter(logging.getLogger("test-journal")))


def test_forwarder_routes_units_splits_lines_and_keeps_journal_time(tmp_path: Path) -> None:
    delivery = FakeDelivery()
    forwarder = make_forwarder(tmp_path, delivery)
    forwarder.handle(Entry("c1", "a.service", 10.5, "one\ntwo"))
    forwarder.handle(Entry("c2", "other.service", 11.0, "not routed"))
    forwarder.handle(Entry("c3", "b.service", 12.25, "  three  "))
    forwarder.checkpoint()
    assert delivery.delivered == [("sa", "one", 10.5), ("sa", "two", 10.5), ("sb", "  three  ", 12.25)]
    assert (tmp_path / "state" / "cursor").read_text() == "c3\n"


def test_cursor_is_saved_only_once_delivery_is_confirmed(tmp_path: Path) -> None:
    delivery = FakeDelivery()
    forwarder = make_forwarder(tmp_path, delivery)
    cursor = CursorFile(tmp_path / "state" / "cursor")
    forwarder.handle(Entry("c1", "a.service", 1.0, "x"))
    forwarder.checkpoint()
    delivery.server_up = False
    forwarder.handle(Entry("c2", "a.service", 2.0, "y"))
    forwarder.checkpoint()
    assert cursor.load() == "c1"  # a restart now sends y again rather than losing it
    assert forwarder.problems.counts == {"delivery not confirmed": 1}
    delivery.server_up = True
    forwarder.checkpoint()
    assert cursor.load() == "c2"
    assert [t for _, t, _ in delivery.delivered] == ["x", "y"]


def test_journalctl_arguments() -> None:
    argv = journalctl_argv(["a.service", "b.service"], None, "boot", [Path("/j/x.journal")], True)
    assert argv[0] == "journalctl"
    assert {"--output=json", "--all", "--lines=all", "--boot", "--follow",
            "--file=/j/x.journal"} <= set(argv)
    assert argv[-2:] == ["_SYSTEMD_UNIT=a.service", "_SYSTEMD_UNIT=b.service"]
    resumed = journalctl_argv(["a.service"], "s=1;i=2", "boot", [], False)
    assert "--after-cursor=s=1;i=2" in resumed and "--boot" not in resumed
    assert "--lines=0" in journalctl_argv(["a.service"], None, "now", [], True)


# ------------------------------------------------------------------ real journal files

Field = Union[str, bytes]


def write_journal(path: Path, entries: Sequence[Dict[str, Field]]) -> None:
    """Append ``entries`` to the journal file ``path`` (journal export format)."""
    export = bytearray()
    for entry in entries:
        for name, value in entry.items():
            data = value.encode() if isinstance(value, str) else value
            if b"\n" in data or isinstance(value, bytes):
                export += name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
            else:
                export += name.encode() + b"=" + data + b"\n"
        export += b"\n"
    assert JOURNAL_REMOTE is not None
    subprocess.run([JOURNAL_REMOTE, f"--output={path}", "-"], input=bytes(export), check=True,
                   capture_output=True, timeout=20)


def journal_entry(unit: str, message: Field, usec: int, boot_id: str = BOOT_ID) -> Dict[str, Field]:
    return {"__REALTIME_TIMESTAMP": str(usec), "__MONOTONIC_TIMESTAMP": str(usec % 10**9),
            "_BOOT_ID": boot_id, "_SYSTEMD_UNIT": unit, "_HOSTNAME": "node1", "MESSAGE": message}


@pytest.fixture
def forward_setup(sim_node_root: Path, tmp_path: Path) -> Tuple[Path, Path, List[str]]:
    """A config, a journal file path, and the command line to forward it."""
    config = sim_node_root / "etc/walt/journal-forward.conf"
    config.write_text("exp experiment\nsshd.service ssh-log\n")
    journal = tmp_path / "test.journal"
    argv = [WALT_NODE, "journal-forward", "--source", "journalctl", "--start", "all",
            f"--file={journal}"]
    return config, journal, argv


def realtime_usec(records) -> List[int]:
    return [round(r.ts * 1e6) for r in records]


@needs_journal_tools
def test_forward_real_journal_with_its_timestamps_then_resume(
        sim: Simulator, sim_node_root: Path, forward_setup) -> None:
    _, journal, argv = forward_setup
    base = int(time.time() * 1e6) - 60_000_000
    write_journal(journal, [
        journal_entry("exp.service", "started  run\\n 1", base + 1),
        journal_entry("cron.service", "not forwarded", base + 2),
        journal_entry("sshd.service", "Accepted key\nfor root", base + 3),
        journal_entry("exp.service", b"raw \xff byte", base + 4),
    ])
    done = subprocess.run([*argv, "--no-follow"], capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    records = sim.wait_for_logs(lambda recs: len(recs) >= 4)
    assert sorted((r.stream, r.line) for r in records) == [
        ("experiment", "raw \ufffd byte"), ("experiment", "started  run\\n 1"),
        ("ssh-log", "Accepted key"), ("ssh-log", "for root")]
    by_line = {r.line: round(r.ts * 1e6) for r in records}
    assert by_line["started  run\\n 1"] == base + 1
    assert by_line["for root"] == by_line["Accepted key"] == base + 3
    cursor = (sim_node_root / "var/lib/walt/journal-forward.cursor").read_text().strip()
    assert ";i=4;" in cursor  # the last entry read, even if not routed

    # new entries, then a second run: it resumes after the saved cursor
    write_journal(journal, [journal_entry("exp.service", "after restart", base + 5)])
    done = subprocess.run([*argv, "--no-follow"], capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    records = sim.wait_for_logs(lambda recs: len(recs) >= 5)
    # the forwarder exited: with no connection left open, the simulator has read all it sent
    assert wait_until(lambda: sim.live_connections() == 0, 10)
    assert [r.line for r in sim.log_records()][4:] == ["after restart"]
    assert realtime_usec(sim.log_records()[4:]) == [base + 5]


@needs_journal_tools
@pytest.mark.parametrize("source", ["journalctl", "python"])
def test_follow_new_entries_and_save_the_cursor_on_sigterm(
        sim: Simulator, sim_node_root: Path, forward_setup, source: str) -> None:
    _, journal, argv = forward_setup
    env = None
    if source == "python":
        python = python_with_systemd_module()
        if python is None:
            pytest.skip("no interpreter here has the systemd Python module (Debian: python3-systemd)")
        argv = [python, "-m", "walt_node", "journal-forward", "--source", "python", *argv[4:]]
        env = dict(os.environ, PYTHONPATH=str(REPO))
    base = int(time.time() * 1e6) - 10_000_000
    write_journal(journal, [journal_entry("exp.service", "first", base)])
    forwarder = subprocess.Popen(argv, stderr=subprocess.PIPE, env=env)
    try:
        sim.wait_for_logs(lambda recs: [r.line for r in recs] == ["first"])
        write_journal(journal, [journal_entry("exp.service", f"live {i}", base + 1 + i) for i in range(3)])
        sim.wait_for_logs(lambda recs: len(recs) == 4, timeout=15)
        forwarder.send_signal(signal.SIGTERM)
        _, err = forwarder.communicate(timeout=20)
    finally:
        if forwarder.poll() is None:
            forwarder.kill()
            forwarder.wait()
    assert forwarder.returncode == 0, err
    assert [r.line for r in sim.log_records()] == ["first", "live 0", "live 1", "live 2"]
    cursor = (sim_node_root / "var/lib/walt/journal-forward.cursor").read_text()
    assert ";i=4;" in cursor


@needs_journal_tools
def test_a_cursor_the_journal_does_not_know_restarts_from_the_start_point(
        sim: Simulator, sim_node_root: Path, forward_setup) -> None:
    _, journal, argv = forward_setup
    write_journal(journal, [journal_entry("exp.service", "only", int(time.time() * 1e6))])
    (sim_node_root / "var/lib/walt/journal-forward.cursor").write_text("garbage-cursor\n")
    done = subprocess.run([*argv, "--no-follow"], capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert b"the saved cursor was refused" in done.stderr
    sim.wait_for_logs(lambda recs: [r.line for r in recs] == ["only"])


def test_missing_python_module_is_a_clear_error(sim_node_root: Path) -> None:
    try:
        import systemd.journal  # noqa: F401
        pytest.skip("the systemd Python module is installed in this interpreter")
    except ImportError:
        pass
    (sim_node_root / "etc/walt/journal-forward.conf").write_text("exp experiment\n")
    done = subprocess.run([WALT_NODE, "journal-forward", "--source", "python", "--no-follow"],
                          capture_output=True, timeout=30)
    assert done.returncode == 1
    assert b"pip install systemd-python" in done.stderr


def test_missing_config_is_a_clear_error(node_root: Path) -> None:
    done = subprocess.run([WALT_NODE, "journal-forward", "--no-follow"], capture_output=True, timeout=30)
    assert done.returncode == 1
    assert b"journal-forward.conf does not exist" in done.stderr


# ------------------------------------------------------------------ the systemd Python module

def python_with_systemd_module() -> Optional[str]:
    """An interpreter that has the systemd module (Debian's python3 with python3-systemd)."""
    for candidate in (sys.executable, "/usr/bin/python3"):
        if os.path.exists(candidate) and subprocess.run(
                [candidate, "-c", "import systemd.journal"], capture_output=True).returncode == 0:
            return candidate
    return None


READ_WITH_MODULE = """
import json, logging, sys
from pathlib import Path
from walt_node.logstreams.journal import read_with_python_module
from walt_node.service import ProblemCounter
units, cursor, start, files = json.loads(sys.argv[1])
entries = read_with_python_module(units, cursor, start, [Path(f) for f in files], False,
                                  ProblemCounter(logging.getLogger("x")))
print(json.dumps([[e.cursor, e.unit, e.ts, e.message] for e in entries if e is not None]))
"""

READ_WITH_JOURNALCTL = READ_WITH_MODULE.replace("read_with_python_module", "read_with_journalctl")


def read_entries(python: str, script: str, units: List[str], cursor: Optional[str], start: str,
                 journal: Path) -> List[list]:
    done = subprocess.run([python, "-c", script, json.dumps([units, cursor, start, [str(journal)]])],
                          capture_output=True, timeout=30, env=dict(os.environ, PYTHONPATH=str(REPO)),
                          check=True)
    return json.loads(done.stdout)


@needs_journal_tools
def test_python_module_reader_agrees_with_journalctl(tmp_path: Path) -> None:
    python = python_with_systemd_module()
    if python is None:
        pytest.skip("no interpreter here has the systemd Python module (Debian: python3-systemd)")
    journal = tmp_path / "module.journal"
    this_boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")
    base = int(time.time() * 1e6) - 60_000_000
    write_journal(journal, [
        journal_entry("a.service", "old boot", base, boot_id=BOOT_ID),
        journal_entry("a.service", "line 1\nline 2", base + 1, boot_id=this_boot),
        journal_entry("b.service", "other unit", base + 2, boot_id=this_boot),
        journal_entry("a.service", b"bytes \xfe", base + 3, boot_id=this_boot),
    ])
    for start in ("all", "boot"):
        by_module = read_entries(python, READ_WITH_MODULE, ["a.service"], None, start, journal)
        by_journalctl = read_entries(python, READ_WITH_JOURNALCTL, ["a.service"], None, start, journal)
        assert by_module == by_journalctl
    assert [e[3] for e in by_module] == ["line 1\nline 2", "bytes \ufffd"]  # this boot only
    assert [round(e[2] * 1e6) for e in by_module] == [base + 1, base + 3]
    resumed = read_entries(python, READ_WITH_MODULE, ["a.service"], by_module[0][0], "all", journal)
    assert [e[3] for e in resumed] == ["bytes \ufffd"]


@needs_journal_tools
def test_a_logging_failure_exits_75_without_moving_the_cursor(
        sim_node_root: Path, forward_setup, monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from walt_node import log as walt_log
    from walt_node.commands import journal_forward as journal_cmd

    _, journal, argv = forward_setup
    write_journal(journal, [journal_entry("exp.service", "x", int(time.time() * 1e6))])

    def broken_echo(*_args, **_kwargs) -> None:
        raise OSError("logs API broken")
    monkeypatch.setattr(walt_log, "echo", broken_echo)
    parser = argparse.ArgumentParser()
    journal_cmd.add_arguments(parser)
    args = parser.parse_args([*argv[2:], "--no-follow"])
    status = journal_cmd.forward_journal(StopFlag(), args.config, args.cursor_file, args.source,
                                         args.start, args.files, args.follow)  # pytest keeps its signals
    assert status == journal_cmd.EXIT_TEMPORARY_FAILURE
    assert not (sim_node_root / "var/lib/walt/journal-forward.cursor").exists()


def test_a_quiet_journal_is_waited_for_longer_and_longer_then_briskly_again(monkeypatch) -> None:
    """An idle forwarder must not wake twice a second: while the journal stays quiet each
    wait doubles (0.5 s up to MAX_QUIET_WAIT); the first entry brings back the short wait."""
    read_end, write_end = os.pipe()
    waits: List[float] = []
    real_select = journal_module.select.select

    def recording_select(readers, writers, errors, timeout):
        waits.append(timeout)
        return real_select(readers, writers, errors, 0)  # what is ready now, never a real wait

    monkeypatch.setattr(journal_module, "select", types.SimpleNamespace(select=recording_select))
    problems = ProblemCounter(logging.getLogger())
    with os.fdopen(read_end, "rb") as stdout:
        entries = _journalctl_entries(types.SimpleNamespace(stdout=stdout), problems, None)
        assert [next(entries) for _ in range(9)] == [None] * 9
        assert waits == [0.5, 1, 2, 4, 8, 16, 32, 64, 64]
        assert MAX_QUIET_WAIT == 64
        os.write(write_end, json.dumps({"__CURSOR": "c1", "__REALTIME_TIMESTAMP": "1",
                                        "_SYSTEMD_UNIT": "a.service", "MESSAGE": "hello"}).encode() + b"\n")
        assert next(entries).message == "hello"
        os.close(write_end)
        waits.clear()
        assert list(entries) == []  # end of output: the reader stops
        assert waits == [0.5]
