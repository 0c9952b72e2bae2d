"""`walt-serial-autolog <tty>`: log what a sensor mote prints on a serial line.

The mote speaks the serial autolog protocol (docs/protocols.md §3):

    LOGSTART                                   (the mote (re)started: forget definitions)
    LOGDEF <stream> <prefix> <separator> <format...>
    LOGVAR <name> <value...>
    <prefix><field><separator><field>...       (a data line)

A data line is cut after its prefix, split on the separator, and formatted
with ``str.format(*fields, **logvars)``; the result is sent as a line of the
stream, stamped when it was received.  Bad directives and lines that do not
fit their format are counted, reported, and skipped.
"""

from __future__ import annotations

import errno
import logging
import os
import string
import termios
import time
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

from walt_node.service import ProblemCounter

log = logging.getLogger(__name__)


DEFAULT_SPEED = 115200
READ_SIZE = 4096
MAX_LINE = 65536  # a mote line longer than this is garbage (wrong speed?): dropped
DIRECTIVES = ("LOGSTART", "LOGDEF", "LOGVAR")


# ------------------------------------------------------------------ protocol

@dataclass(frozen=True)
class LogDef:
    stream: str
    prefix: str
    separator: str
    format: str


class MoteProtocol:
    """Turns the mote's lines into (stream, text, timestamp) log lines through ``emit``."""

    def __init__(self, emit: Callable[[str, str, float], None], problems: ProblemCounter):
        self.emit = emit
        self.problems = problems
        self.started = False
        self.defs: Dict[str, LogDef] = {}  # by prefix
        self.variables: Dict[str, str] = {}
        self.lines_logged = 0

    def line(self, text: str, ts: float) -> None:
        verb = text.split(None, 1)[0] if text.strip() else ""
        if verb == "LOGSTART":
            self._start(text)
        elif not self.started:
            return  # boot chatter before LOGSTART
        elif verb == "LOGDEF":
            self._define(text)
        elif verb == "LOGVAR":
            self._set_variable(text)
        else:
            self._data(text, ts)

    def _start(self, text: str) -> None:
        if text.strip() != "LOGSTART":
            self.problems.report("malformed LOGSTART", repr(text))
            return
        if self.started:
            log.info("the mote restarted (LOGSTART): definitions and variables reset")
        self.started = True
        self.defs.clear()
        self.variables.clear()

    def _define(self, text: str) -> None:
        parts = text.split(None, 4)
        if len(parts) != 5:
            self.problems.report("malformed LOGDEF",
                                 f"{text!r} (expected: LOGDEF <stream> <prefix> <separator> <format>)")
            return
        _, stream, prefix, separator, fmt = parts
        if not stream.isprintable():
            self.problems.report("malformed LOGDEF", f"{text!r}: control characters in the stream name")
            return
        problem = _format_problem(fmt)
        if problem:
            self.problems.report("malformed LOGDEF", f"{text!r}: bad format: {problem}")
            return
        self.defs[prefix] = LogDef(stream, prefix, separator, fmt)
        log.info("stream '%s': lines starting with %r, separator %r, format %r",
                 stream, prefix, separator, fmt)

    def _set_variable(self, text: str) -> None:
        parts = text.split(None, 2)
        if len(parts) != 3 or not parts[1].isidentifier():
            self.problems.report("malformed LOGVAR",
                                 f"{text!r} (expected: LOGVAR <name> <value>, name made of letters, "
                                 "digits and _)")
            return
        self.variables[parts[1]] = parts[2]

    def _data(self, text: str, ts: float) -> None:
        logdef = self._definition_for(text)
        if logdef is None:
            log.debug("no LOGDEF prefix matches %r: ignored", text)
            return
        fields = text[len(logdef.prefix):].split(logdef.separator)
        try:
            formatted = logdef.format.format(*fields, **self.variables)
        except (IndexError, KeyError, ValueError, AttributeError, TypeError) as error:
            self.problems.report(f"line not matching the format of stream '{logdef.stream}'",
                                 f"{text!r} with format {logdef.format!r}: "
                                 f"{type(error).__name__}: {error}")
            return
        self.emit(logdef.stream, formatted, ts)
        self.lines_logged += 1

    def _definition_for(self, text: str) -> Optional[LogDef]:
        matching = [d for prefix, d in self.defs.items() if text.startswith(prefix)]
        return max(matching, key=lambda d: len(d.prefix), default=None)


def _format_problem(fmt: str) -> str:
    try:
        list(string.Formatter().parse(fmt))
    except ValueError as error:
        return str(error)
    return ""


# ------------------------------------------------------------------ serial line

def valid_speeds() -> Tuple[int, ...]:
    names = (name for name in dir(termios) if name.startswith("B") and name[1:].isdigit())
    return tuple(sorted(int(name[1:]) for name in names))


def speed_constant(speed: int) -> int:
    constant = getattr(termios, f"B{speed}", None)
    if constant is None or speed == 0:
        raise ValueError(f"unsupported line speed {speed}; use one of: "
                         + ", ".join(str(s) for s in valid_speeds() if s))
    return constant


def open_line(path: str, speed: int) -> int:
    """Open the serial line (or plain file) for reading; a tty gets raw mode 8N1 at ``speed``."""
    baud = speed_constant(speed)
    # O_NONBLOCK: do not wait for a carrier on open; CLOCAL below then makes reads ignore it
    fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        if os.isatty(fd):
            configure_tty(fd, baud)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def configure_tty(fd: int, baud: int) -> None:
    iflag, oflag, cflag, lflag, _, _, cc = termios.tcgetattr(fd)
    iflag &= ~(termios.IGNBRK | termios.BRKINT | termios.PARMRK | termios.ISTRIP | termios.INLCR
               | termios.IGNCR | termios.ICRNL | termios.IXON | termios.IXOFF)
    oflag &= ~termios.OPOST
    lflag &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG | termios.IEXTEN)
    cflag &= ~(termios.CSIZE | termios.PARENB | termios.CSTOPB)
    cflag |= termios.CS8 | termios.CLOCAL | termios.CREAD
    cc[termios.VMIN] = 1
    cc[termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, [iflag, oflag, cflag, lflag, baud, baud, cc])


class LineReader:
    """Cuts the byte stream into text lines stamped with their reception time."""

    def __init__(self, on_line: Callable[[str, float], None], problems: ProblemCounter):
        self.on_line = on_line
        self.problems = problems
        self.pending = b""
        self.discarding = False  # inside an over-long line, until its end

    def feed(self, data: bytes, ts: float) -> None:
        *complete, self.pending = (self.pending + data).split(b"\n")
        for raw in complete:
            if self.discarding:
                self.discarding = False
                continue
            self.on_line(raw.rstrip(b"\r").decode("utf-8", errors="replace"), ts)
        if len(self.pending) > MAX_LINE:
            self.problems.report("over-long line", f"more than {MAX_LINE} bytes without a newline "
                                 "(wrong line speed?)")
            self.pending = b""
            self.discarding = True


def read_line(fd: int, reader: LineReader) -> None:
    """Feed everything the line delivers to ``reader`` until end of file or hang-up."""
    while True:
        try:
            data = os.read(fd, READ_SIZE)
        except OSError as error:
            if error.errno == errno.EIO:  # tty hang-up (device unplugged, pty closed)
                return
            raise
        if not data:
            return
        reader.feed(data, time.time())


# ------------------------------------------------------------------ command
