"""`walt-serial-autolog <tty>`: log what a sensor mote prints on a serial line.

The mote speaks the serial autolog protocol (walt-protocols.md §3):

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
import signal
import string
import sys
import termios
import time
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

log = logging.getLogger(__name__)

DESCRIPTION = """\
Read a sensor mote's serial line and send its data lines to WalT log
streams, following the serial autolog protocol: the mote prints LOGSTART,
then 'LOGDEF <stream> <prefix> <separator> <format>' and
'LOGVAR <name> <value>' directives; afterwards each line starting with a
defined prefix is cut after the prefix, split on the separator, formatted
with Python's str.format (fields {0}, {1}... from the split, {name} from
LOGVARs) and logged to the stream, stamped when it arrived.

Malformed directives and lines that do not fit their format are reported
(with counts) and skipped.  TTY may also be a plain file or a pseudo-terminal;
a plain file is read to its end.

example:
  walt-serial-autolog /dev/ttyUSB0 --speed 9600
  (mote prints: LOGSTART / LOGDEF temp T: ; {0} C at {site} / LOGVAR site lab-2 / T:21.5)
  -> stream 'temp' gets the line '21.5 C at lab-2'
"""

DEFAULT_SPEED = 115200
READ_SIZE = 4096
MAX_LINE = 65536  # a mote line longer than this is garbage (wrong speed?): dropped
DIRECTIVES = ("LOGSTART", "LOGDEF", "LOGVAR")


def add_arguments(parser) -> None:
    parser.add_argument("tty", metavar="TTY", help="serial device (e.g. /dev/ttyUSB0), pty or file")
    parser.add_argument("-s", "--speed", type=int, default=DEFAULT_SPEED, metavar="BAUD",
                        help=f"line speed in bauds (default {DEFAULT_SPEED})")


# ------------------------------------------------------------------ problem reports

class ProblemCounter:
    """Counts problems by kind; logs the first of each kind, then at 10, 100, 1000..."""

    def __init__(self, logger: logging.Logger):
        self.logger = logger
        self.counts: Dict[str, int] = {}

    def report(self, kind: str, detail: str) -> None:
        count = self.counts.get(kind, 0) + 1
        self.counts[kind] = count
        if count == 1:
            self.logger.warning("%s: %s (skipped; further ones are counted)", kind, detail)
        elif _is_power_of_ten(count):
            self.logger.warning("%s: %d so far, latest: %s", kind, count, detail)

    def summary(self) -> None:
        for kind, count in sorted(self.counts.items()):
            self.logger.warning("%s: %d in total", kind, count)


def _is_power_of_ten(number: int) -> bool:
    while number % 10 == 0 and number > 1:
        number //= 10
    return number == 1


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

def stop_on_sigterm() -> None:
    """SIGTERM (systemd stopping the unit) ends the command like Ctrl-C: cleanly."""
    def handler(_signum, _frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, handler)


def run(args) -> int:
    stop_on_sigterm()
    try:
        return _autolog(args)
    except KeyboardInterrupt:  # SIGTERM or Ctrl-C: a normal stop (what was read is flushed)
        return 0


def _open_hint(error: OSError) -> str:
    if error.errno == errno.ENOENT:
        return " (check the device name and that the mote is plugged in: ls /dev/tty*)"
    if error.errno == errno.EACCES:
        return " (run it as root, or as a member of the device's group, often 'dialout')"
    if error.errno == errno.EBUSY:
        return " (another program holds the line)"
    return ""


def _autolog(args) -> int:
    from walt_node import log as walt_log  # the sender thread starts with the first line

    prog = "walt-serial-autolog"
    try:
        fd = open_line(args.tty, args.speed)
    except ValueError as error:
        sys.stderr.write(f"{prog}: {error}\n")
        return 2
    except OSError as error:
        sys.stderr.write(f"{prog}: cannot open serial line '{args.tty}': {error.strerror or error}"
                         f"{_open_hint(error)}\n")
        return 1
    problems = ProblemCounter(log)

    def emit(stream: str, text: str, ts: float) -> None:
        try:
            walt_log.echo(stream, text, ts=ts)
        except Exception as error:  # keep reading the mote: later lines may go through
            problems.report("line not logged", f"stream '{stream}': {error}")

    protocol = MoteProtocol(emit, problems)
    log.info("reading %s at %d bauds, waiting for LOGSTART", args.tty, args.speed)
    try:
        read_line(fd, LineReader(protocol.line, problems))
    finally:
        os.close(fd)
        walt_log.flush(10.0)
        problems.summary()
        log.info("%d lines logged", protocol.lines_logged)
    return 0
