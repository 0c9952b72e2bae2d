"""walt-serial-autolog: the mote protocol (pure), and a real pty pair playing the mote."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import termios
import time
import tty
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.wait import wait_until

from walt_node.logstreams import serial
from walt_node.logstreams.serial import (
    MAX_LINE,
    LineReader,
    MoteProtocol,
    speed_constant,
)
from walt_node.service import ProblemCounter
from walt_node.sim import Simulator

AUTOLOG = str(Path(sys.executable).parent / "walt-serial-autolog")
Emitted = List[Tuple[str, str, float]]


@pytest.fixture
def mote(caplog: pytest.LogCaptureFixture) -> Tuple[MoteProtocol, Emitted]:
    caplog.set_level(logging.INFO)
    emitted: Emitted = []
    protocol = MoteProtocol(lambda *line: emitted.append(line),
                            ProblemCounter(logging.getLogger("test-serial")))
    return protocol, emitted


def feed(protocol: MoteProtocol, *lines: str, ts: float = 100.0) -> None:
    for line in lines:
        protocol.line(line, ts)


# ------------------------------------------------------------------ protocol

def test_nothing_is_logged_before_logstart(mote) -> None:
    protocol, emitted = mote
    feed(protocol, "LOGDEF s P: , {0}", "P:1", "boot chatter")
    assert emitted == []
    feed(protocol, "LOGSTART", "P:1")
    assert emitted == []  # the definition before LOGSTART did not count


def test_data_lines_are_split_as_a_whole_and_the_first_field_dropped(mote) -> None:
    protocol, emitted = mote
    feed(protocol, "LOGSTART",
         "LOGDEF temp T : {0} C at {site}, {1}%",
         "LOGVAR site lab-2",
         "  T:21.5:40  ", ts=1.0)
    feed(protocol, "debug: not a data line", "T:22:41\r", ts=2.0)
    assert emitted == [("temp", "21.5 C at lab-2, 40%", 1.0),
                       ("temp", "22 C at lab-2, 41%", 2.0)]


def test_the_prefix_may_hold_the_separator(mote) -> None:
    # WalT's own example: the prefix ';T:' ends with the separator ':'
    protocol, emitted = mote
    feed(protocol, "LOGSTART", "LOGDEF vizwalt ;T: : {nodeid}:TxStart:{}",
         "LOGDEF vizwalt ;R : {nodeid}:RxStart", "LOGVAR nodeid af4e",
         ";T:aabbccddeeff", ";R", ";T:gghh")
    assert [text for _, text, _ in emitted] == ["af4e:TxStart:aabbccddeeff", "af4e:RxStart",
                                                "af4e:TxStart:gghh"]


def test_longest_prefix_wins_and_separators_can_be_long(mote) -> None:
    protocol, emitted = mote
    feed(protocol, "LOGSTART",
         "LOGDEF short A , {0}",
         "LOGDEF long AB:: <-> b={0}|{1}",
         "AB::<->x<->y", "A,z", "AC,w")
    assert [(s, t) for s, t, _ in emitted] == [("long", "b=x|y"), ("short", "z"), ("short", "w")]


def test_logstart_again_keeps_definitions_and_variables(mote) -> None:
    protocol, emitted = mote
    feed(protocol, "LOGSTART", "LOGDEF s P , {0}{v}", "LOGVAR v 1", "LOGSTART", "P,x")
    assert [text for _, text, _ in emitted] == ["x1"]


def test_logvar_takes_one_word_and_says_so(mote) -> None:
    protocol, emitted = mote
    feed(protocol, "LOGSTART", "LOGDEF s P , {0} at {site}", "LOGVAR site lab 2 (north)", "P,x")
    assert [text for _, text, _ in emitted] == ["x at lab"]
    assert protocol.problems.counts == {serial.LOGVAR_EXTRA_WORDS: 1}


def test_the_format_is_the_remaining_words_joined_by_one_space(mote) -> None:
    protocol, emitted = mote
    feed(protocol, "LOGSTART", "LOGDEF s P , {0}   spaced\tout  ", "LOGDEF e E ,", "P,x", "E,y")
    assert [text for _, text, _ in emitted] == ["x spaced out", ""]


def test_a_prefix_defined_again_gets_the_new_definition(mote) -> None:
    protocol, emitted = mote
    feed(protocol, "LOGSTART", "LOGDEF old P , old {0}", "LOGDEF new P , new {0}", "P,x")
    assert [(s, t) for s, t, _ in emitted] == [("new", "new x")]


def test_malformed_directives_and_format_errors_are_counted_and_skipped(
        mote, caplog: pytest.LogCaptureFixture) -> None:
    protocol, emitted = mote
    feed(protocol, "LOGSTART",
         "LOGDEF only three",
         "LOGDEF s P , {0",           # unbalanced brace
         "LOGDEF s\x1b[2J P , {0}",   # a control character in the stream name
         "LOGVAR lonely",
         "LOGDEF s P , {0}-{1}-{unit}",
         "P,a",                       # {1} missing
         "P,a,b",                     # {unit} undefined
         "LOGVAR unit C",
         "P,a,b",
         "LOGDEF n N , {0:.2f}",      # a format spec strings do not take
         "N,1.234")
    for _ in range(12):
        feed(protocol, "P,only-one")
    assert [text for _, text, _ in emitted] == ["a-b-C"]
    assert protocol.problems.counts == {
        "malformed LOGDEF": 3,
        "malformed LOGVAR": 1,
        "line not matching the format of stream 's'": 14,
        "line not matching the format of stream 'n'": 1,
    }
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # each kind once, then again at 10 occurrences, never one warning per bad line
    assert len(warnings) == 4 + 1
    assert any("10 so far" in w for w in warnings)
    assert any("LOGDEF only three" in w and "expected: LOGDEF <stream>" in w for w in warnings)
    protocol.problems.summary()
    assert "line not matching the format of stream 's': 14 in total" in caplog.text


@pytest.mark.parametrize("fmt, line", [
    ("{0:>200000}", "B:x"),                     # a width in the definition
    ("{0:{1}}", "B:x:1500000000"),              # a width taken from the data line
    ("{0:.{1}}", "B:x:99999999999999999999"),   # a precision, absurdly long
    ("{0:>40000}{0:>40000}", "B:x"),            # fields that add up
    ("{0.__class__.__basicsize__:.1500000000f}", "B:x"),  # a number reached through an attribute
])
def test_a_format_cannot_make_a_huge_line(mote, caplog: pytest.LogCaptureFixture,
                                          fmt: str, line: str) -> None:
    protocol, emitted = mote
    feed(protocol, "LOGSTART", f"LOGDEF big B : {fmt}", line, line, "LOGDEF ok O : {0:>9}", "O:fine")
    assert [text for _, text, _ in emitted] == ["     fine"]
    assert protocol.problems.counts == {serial.TOO_WIDE: 2}
    assert caplog.text.count(serial.TOO_WIDE) == 1  # logged once, then counted


def test_the_widest_allowed_line_goes_through(mote) -> None:
    protocol, emitted = mote
    feed(protocol, "LOGSTART", f"LOGDEF w W : {{0:>{serial.MAX_FORMATTED}}}", "W:x")
    assert [len(text) for _, text, _ in emitted] == [serial.MAX_FORMATTED]


directive = st.sampled_from(["LOGSTART", "LOGDEF", "LOGVAR", "P:", "LOGDEF s P: , {0}", ""])
# what LineReader can deliver: any text but a newline (it splits on those)
mote_line = st.builds(lambda head, tail: head + tail, directive,
                      st.text(st.characters(blacklist_characters="\n"), max_size=30))


@settings(max_examples=300, deadline=None)
@given(st.lists(mote_line, max_size=30))
def test_any_mote_output_never_crashes_and_streams_stay_valid(lines: List[str]) -> None:
    emitted: Emitted = []
    protocol = MoteProtocol(lambda *line: emitted.append(line),
                            ProblemCounter(logging.getLogger("test-serial-fuzz")))
    for line in lines:
        protocol.line(line, 1.0)
    for stream, text, _ in emitted:
        assert stream and stream.isprintable() and not any(c.isspace() for c in stream)
        assert "\n" not in text


def test_line_reader_handles_crlf_split_reads_and_garbage() -> None:
    lines: List[Tuple[str, float]] = []
    problems = ProblemCounter(logging.getLogger("test-serial"))
    reader = LineReader(lambda text, ts: lines.append((text, ts)), problems)
    reader.feed(b"LOGST", 1.0)
    reader.feed(b"ART\r\n\xffok\r\n", 2.0)
    reader.feed(b"x" * (MAX_LINE + 10), 3.0)
    reader.feed(b"still the long line\nafter\n", 4.0)
    reader.feed(b"last, without a newline", 5.0)
    reader.finish(6.0)
    assert lines == [("LOGSTART\r\n", 2.0), ("\ufffdok\r\n", 2.0), ("after\n", 4.0),
                     ("last, without a newline", 6.0)]
    assert problems.counts == {"over-long line": 1}


def test_speed_constant() -> None:
    assert speed_constant(115200) == termios.B115200
    with pytest.raises(ValueError, match=r"unsupported line speed 12345; use one of: .*\b9600\b"):
        speed_constant(12345)


# ------------------------------------------------------------------ a real serial line

@pytest.fixture
def pty_pair() -> Iterator[Tuple[int, int]]:
    master, slave = os.openpty()
    yield master, slave
    for fd in (master, slave):
        try:
            os.close(fd)
        except OSError:
            pass


def wait_reading(tool: subprocess.Popen) -> List[bytes]:
    """The tool says it reads the line (it opened it and set it up): the mote may talk.
    Returns what it wrote to stderr so far."""
    assert tool.stderr is not None
    seen = []
    for line in tool.stderr:
        seen.append(line)
        if b"waiting for LOGSTART" in line:
            return seen
    raise AssertionError(f"walt-serial-autolog ended before reading: {b''.join(seen)!r}")


def wait_configured(slave: int, speed: int, timeout: float = 10) -> None:
    """The tool set raw mode at ``speed``: the mote may talk."""
    def configured() -> bool:
        attrs = termios.tcgetattr(slave)
        return attrs[4] == speed and not attrs[3] & termios.ECHO

    assert wait_until(configured, timeout), "walt-serial-autolog did not configure the line"


TRANSCRIPT = (b"bootloader v1\r\nLOGSTART\r\nLOGDEF temp T : {0} C at {site}\r\n"
              b"LOGVAR site lab-2\r\nT:21.5\r\nLOGDEF broken\r\nT:\r\n")


def temp_lines(records) -> List[str]:
    return [r.line for r in records if r.stream == "temp"]


def test_mote_on_a_pty_reaches_the_server(sim: Simulator, sim_node_root: Path,
                                          pty_pair: Tuple[int, int]) -> None:
    master, slave = pty_pair
    tool = subprocess.Popen([AUTOLOG, os.ttyname(slave), "--speed", "9600"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_configured(slave, termios.B9600)
        first_write = time.time()
        os.write(master, TRANSCRIPT)
        sim.wait_for_logs(lambda recs: len(temp_lines(recs)) >= 2)
        second_write = time.time()
        os.write(master, b"T:22.0\r\n")
        records = sim.wait_for_logs(lambda recs: len(temp_lines(recs)) >= 3)
        os.close(master)  # the mote is unplugged: hang-up ends the tool
        _, err = tool.communicate(timeout=20)
    finally:
        if tool.poll() is None:
            tool.kill()
            tool.wait()
    assert tool.returncode == 0, err
    temp = [r for r in records if r.stream == "temp"]
    assert [r.line for r in temp] == ["21.5 C at lab-2", " C at lab-2", "22.0 C at lab-2"]
    # each line is stamped when it came in on the line, before the server got it
    assert first_write <= temp[0].ts <= second_write
    assert second_write <= temp[2].ts <= temp[2].received
    assert b"malformed LOGDEF: 1 in total" in err


def test_without_speed_the_tty_keeps_the_images_settings(sim: Simulator, sim_node_root: Path,
                                                         pty_pair: Tuple[int, int]) -> None:
    master, slave = pty_pair
    # the image set the line up its own way (stty raw 4800): the tool must leave it so
    tty.setraw(slave)
    attrs = termios.tcgetattr(slave)
    attrs[4] = attrs[5] = termios.B4800
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    before = termios.tcgetattr(slave)
    tool = subprocess.Popen([AUTOLOG, os.ttyname(slave)], stderr=subprocess.PIPE)
    try:
        assert b"with its own tty settings" in b"".join(wait_reading(tool))
        os.write(master, TRANSCRIPT)
        sim.wait_for_logs(lambda recs: len(temp_lines(recs)) >= 2)
        assert termios.tcgetattr(slave) == before
    finally:
        tool.kill()
        tool.wait()


def test_sigterm_stops_it_cleanly(sim_node_root: Path, pty_pair: Tuple[int, int]) -> None:
    _, slave = pty_pair
    tool = subprocess.Popen([AUTOLOG, os.ttyname(slave)], stderr=subprocess.PIPE)
    try:
        wait_reading(tool)
        tool.send_signal(signal.SIGTERM)
        _, err = tool.communicate(timeout=20)
    finally:
        if tool.poll() is None:
            tool.kill()
            tool.wait()
    assert tool.returncode == 0, err


def test_a_recorded_file_can_be_replayed(sim: Simulator, sim_node_root: Path, tmp_path: Path) -> None:
    capture = tmp_path / "capture.txt"
    capture.write_bytes(b"LOGSTART\nLOGDEF hum H , {0}% ({1})\nH,40,ok\nH,41,ok\n")
    done = subprocess.run([AUTOLOG, str(capture)], capture_output=True, timeout=20)
    assert done.returncode == 0, done.stderr
    records = sim.wait_for_logs(lambda recs: len(recs) >= 2)
    assert [(r.stream, r.line) for r in records] == [("hum", "40% (ok)"), ("hum", "41% (ok)")]


def test_keep_copies_of_what_was_read_and_sent(sim: Simulator, sim_node_root: Path,
                                              tmp_path: Path) -> None:
    capture = tmp_path / "mote" / "ttyUSB0"
    capture.parent.mkdir()
    capture.write_bytes(TRANSCRIPT)
    done = subprocess.run([AUTOLOG, str(capture), "--keep-copies"], capture_output=True, timeout=20)
    assert done.returncode == 0, done.stderr
    records = sim.wait_for_logs(lambda recs: len(temp_lines(recs)) >= 2)
    copies = sim_node_root / f"var/log/walt/autolog{capture}"
    # everything read, boot chatter included, as it came; what was sent, as TSLOG requests
    assert (copies / "in.log").read_bytes() == TRANSCRIPT
    sent = (copies / "out.log").read_text().splitlines()
    temp = [r for r in records if r.stream == "temp"]
    assert sent == [f"TSLOG {r.ts:f} temp {r.line}" for r in temp]


def test_a_copy_is_bounded(tmp_path: Path) -> None:
    problems = ProblemCounter(logging.getLogger("test-serial"))
    copy = serial.CopyFile(tmp_path / "in.log", 100, problems)
    for i in range(30):
        copy.write(f"line {i:02d}\n")  # 8 bytes each
    copy.close()
    current = (tmp_path / "in.log").read_text()
    previous = (tmp_path / "in.log.1").read_text()
    assert len(current) <= 100 and len(previous) <= 100
    # 12 lines fit in a file: lines 0-11 were in the part dropped at the second rotation
    assert (previous + current).splitlines() == [f"line {i:02d}" for i in range(12, 30)]
    assert problems.counts == {}


def test_copies_never_follow_a_link(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("precious\n")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "in.log").symlink_to(target)
    with pytest.raises(OSError):
        serial.Copies(tmp_path / "dir", ProblemCounter(logging.getLogger("test-serial")))
    assert target.read_text() == "precious\n"


def test_mote_text_reaches_the_terminal_escaped(sim: Simulator, sim_node_root: Path,
                                                tmp_path: Path) -> None:
    # escape sequences (clear screen, set the terminal title) and a fake log line
    capture = tmp_path / "capture.txt"
    capture.write_bytes(b"LOGSTART\n"
                        b"LOGDEF n\x1b]0;owned\x07 N : {0}\n"
                        b"LOGDEF x X : {0:\x1b[2J}\n"
                        b"X:1\n"
                        b"LOGDEF y Y : {0}{1}\n"
                        b"Y:\x1b[31mred\n")
    done = subprocess.run([AUTOLOG, str(capture), "-v"], capture_output=True, timeout=20)
    assert done.returncode == 0, done.stderr
    assert b"\x1b" not in done.stderr and b"\x07" not in done.stderr
    assert b"\\x1b[2J" in done.stderr  # shown, escaped


@pytest.mark.parametrize("argv, status, message", [
    (["/dev/null", "--speed", "12345"], 2, b"unsupported line speed 12345"),
    (["/nonexistent/ttyUSB9"], 1, b"cannot open serial line '/nonexistent/ttyUSB9'"),
])
def test_bad_arguments_are_clear_errors(argv: List[str], status: int, message: bytes) -> None:
    done = subprocess.run([AUTOLOG, *argv], capture_output=True, timeout=20)
    assert done.returncode == status
    assert message in done.stderr
