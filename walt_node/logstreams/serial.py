"""`walt-serial-autolog <tty>`: log what a sensor mote prints on a serial line.

The mote speaks the serial autolog protocol (docs/protocols.md §3), read
exactly as WalT's own walt-serial-autolog reads it:

    LOGSTART                                   (what came before is boot chatter)
    LOGDEF <stream> <prefix> <separator> <format...>
    LOGVAR <name> <value>
    <prefix>...<separator><field><separator><field>...   (a data line)

Every line is stripped of surrounding blanks and cut into words; the first
word says what it is.  Before the first ``LOGSTART`` everything is ignored;
a later ``LOGSTART`` changes nothing (definitions and variables are kept).
``LOGDEF`` takes one word each for the stream, prefix and separator; the
format is the remaining words joined by single spaces.  ``LOGVAR`` takes one
word for the name and one for the value (more words are ignored).  A data
line that starts with a defined prefix is split, as a whole, on that
definition's separator; every field but the first (the one holding the
prefix) is a positional argument of ``str.format``, the variables are its
named arguments: with ``LOGDEF temp T : {0} C``, the line ``T:21.5`` gives
``21.5 C``.  When several prefixes match, the longest wins (WalT's own
reader then tries only the alphabetically nearest one and may drop the line).

Where WalT's reader would crash (a directive with missing words, a line not
fitting its format, a prefix defined twice), this one reports the problem
once, counts it, and goes on (a prefix defined again gets the new definition).
A format can make a line at most MAX_LINE characters wide: wider ones are
refused before they are built (counted), never allocated.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import string
import termios
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

from walt_node.files import open_for_append
from walt_node.service import ProblemCounter

log = logging.getLogger(__name__)


READ_SIZE = 4096
MAX_LINE = 65536  # a mote line longer than this is garbage (wrong speed?): dropped
MAX_FORMATTED = 65536  # characters a format may make of one data line

MALFORMED_LOGDEF = "malformed LOGDEF"
MALFORMED_LOGVAR = "malformed LOGVAR"
LOGVAR_EXTRA_WORDS = "LOGVAR with more than one value word (only the first is kept)"
TOO_WIDE = f"formatted line wider than {MAX_FORMATTED} characters (refused before it was built)"


# ------------------------------------------------------------------ protocol

@dataclass(frozen=True)
class LogDef:
    stream: str
    prefix: str
    separator: str
    format: str


class TooWide(ValueError):
    pass


class BoundedFormatter(string.Formatter):
    """``str.format`` semantics, but a field whose width or precision, or a result whose
    length, exceeds ``limit`` raises :class:`TooWide` before the text is built."""

    _numbers = re.compile(r"\d+")

    def __init__(self, limit: int = MAX_FORMATTED):
        self.limit = limit
        self.used = 0

    def format_bounded(self, fmt: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
        self.used = 0  # characters of the fields; the literal text is at most the format's length
        text = self.vformat(fmt, args, kwargs)
        if len(text) > self.limit:
            raise TooWide(f"{len(text)} characters")
        return text

    def format_field(self, value: Any, format_spec: str) -> str:
        for number in self._numbers.findall(format_spec):  # width, precision (fill digits too)
            if len(number) > 9 or int(number) > self.limit:
                raise TooWide(f"format spec {format_spec[:40]!r}")
        text = format(value, format_spec)
        self.used += len(text)
        if self.used > self.limit:
            raise TooWide(f"more than {self.limit} characters")
        return text


class MoteProtocol:
    """Turns the mote's lines into (stream, text, timestamp) log lines through ``emit``."""

    def __init__(self, emit: Callable[[str, str, float], None], problems: ProblemCounter):
        self.emit = emit
        self.problems = problems
        self.started = False
        self.defs: Dict[str, LogDef] = {}  # by prefix
        self.variables: Dict[str, str] = {}
        self.lines_logged = 0
        self._formatter = BoundedFormatter()

    def line(self, raw: str, ts: float) -> None:
        text = raw.strip()
        words = text.split()
        if not words:
            return
        verb = words[0]
        if not self.started:
            if verb == "LOGSTART":
                self.started = True
            return  # boot chatter before LOGSTART
        if verb == "LOGDEF":
            self._define(text, words)
        elif verb == "LOGVAR":
            self._set_variable(text, words)
        else:
            if verb == "LOGSTART":
                log.info("LOGSTART again (the mote restarted?): definitions and variables are kept")
            self._data(text, ts)

    def _define(self, text: str, words: Sequence[str]) -> None:
        if len(words) < 4:
            self.problems.report(MALFORMED_LOGDEF,
                                 f"{text!r} (expected: LOGDEF <stream> <prefix> <separator> <format>)")
            return
        stream, prefix, separator = words[1:4]
        fmt = " ".join(words[4:])
        if not stream.isprintable():
            self.problems.report(MALFORMED_LOGDEF, f"{text!r}: control characters in the stream name")
            return
        problem = _format_problem(fmt)
        if problem:
            self.problems.report(MALFORMED_LOGDEF, f"{text!r}: bad format: {problem}")
            return
        if prefix in self.defs:
            log.info("prefix %r defined again: the new definition replaces the old one", prefix)
        self.defs[prefix] = LogDef(stream, prefix, separator, fmt)
        log.info("stream %r: lines starting with %r, separator %r, format %r",
                 stream, prefix, separator, fmt)

    def _set_variable(self, text: str, words: Sequence[str]) -> None:
        if len(words) < 3:
            self.problems.report(MALFORMED_LOGVAR, f"{text!r} (expected: LOGVAR <name> <value>)")
            return
        if len(words) > 3:
            self.problems.report(LOGVAR_EXTRA_WORDS, f"{text!r}: {words[1]} = {words[2]!r}")
        self.variables[words[1]] = words[2]

    def _data(self, text: str, ts: float) -> None:
        logdef = self._definition_for(text)
        if logdef is None:
            log.debug("no LOGDEF prefix matches %r: ignored", text)
            return
        fields = text.split(logdef.separator)[1:]
        try:
            formatted = self._formatter.format_bounded(logdef.format, fields, self.variables)
        except TooWide as error:
            self.problems.report(TOO_WIDE, f"stream {logdef.stream!r}, format {logdef.format!r}: "
                                           f"{error}")
            return
        except (IndexError, KeyError, ValueError, AttributeError, TypeError) as error:
            self.problems.report(f"line not matching the format of stream {logdef.stream!r}",
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


# ------------------------------------------------------------------ debug copies

COPIES_MAX = 16 * 1024 * 1024


class CopyFile:
    """An append-only text file bounded to ``max_bytes``: when full it becomes ``<name>.1``
    (replacing the previous one) and a new file starts.  Never written through a link."""

    def __init__(self, path: Path, max_bytes: int, problems: ProblemCounter):
        self.path = path
        self.max_bytes = max_bytes
        self.problems = problems
        self.file: Optional[IO[str]] = None
        self.size = 0
        self._open()

    def _open(self) -> None:
        self.file = open_for_append(self.path)
        self.size = os.fstat(self.file.fileno()).st_size

    def write(self, text: str) -> None:
        size = len(text.encode("utf-8", errors="replace"))
        try:
            if self.file is None:
                self._open()
            elif self.size + size > self.max_bytes and self.size:
                self.close()
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))
                self._open()
            assert self.file is not None
            self.file.write(text)
            self.file.flush()
            self.size += size
        except (OSError, ValueError) as error:  # a full disk: the copies are for debugging only
            self.problems.report("copy not written", f"{self.path}: {error}")

    def close(self) -> None:
        if self.file is not None:
            try:
                self.file.close()
            except OSError:
                pass
            self.file = None


class Copies:
    """What was read from the mote (``in.log``, every line as it came) and what was sent
    (``out.log``, as ``TSLOG <ts> <stream> <text>`` requests), the debug copies WalT's own
    autolog keeps in the same directory."""

    def __init__(self, directory: Path, problems: ProblemCounter, max_bytes: int = COPIES_MAX):
        directory.mkdir(parents=True, exist_ok=True)
        self.read_copy = CopyFile(directory / "in.log", max_bytes, problems)
        self.sent_copy = CopyFile(directory / "out.log", max_bytes, problems)

    def read(self, line: str) -> None:
        self.read_copy.write(line)

    def sent(self, stream: str, text: str, ts: float) -> None:
        self.sent_copy.write(f"TSLOG {ts:f} {stream} {text}\n")

    def close(self) -> None:
        self.read_copy.close()
        self.sent_copy.close()


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


def open_line(path: str, speed: Optional[int] = None) -> int:
    """Open the serial line (or plain file) for reading.  The tty keeps its settings (the
    image's own ``stty``, as with WalT's autolog) unless ``speed`` is given: then it gets
    raw mode 8N1 at that speed."""
    baud = speed_constant(speed) if speed is not None else None
    # O_NONBLOCK: do not wait for a carrier on open (with --speed, CLOCAL then makes reads
    # ignore it)
    fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        if baud is not None and os.isatty(fd):
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
    """Cuts the byte stream into text lines as they came (with their ``\\n``, like
    ``readline``) stamped with their reception time."""

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
            self.on_line((raw + b"\n").decode("utf-8", errors="replace"), ts)
        if len(self.pending) > MAX_LINE:
            self.problems.report("over-long line", f"more than {MAX_LINE} bytes without a newline "
                                 "(wrong line speed?)")
            self.pending = b""
            self.discarding = True

    def finish(self, ts: float) -> None:
        """End of input: a last line without its newline is still a line (as WalT's reader has it)."""
        if self.pending and not self.discarding:
            self.on_line(self.pending.decode("utf-8", errors="replace"), ts)
        self.pending = b""


def read_line(fd: int, reader: LineReader) -> None:
    """Feed everything the line delivers to ``reader`` until end of file or hang-up."""
    while True:
        try:
            data = os.read(fd, READ_SIZE)
        except OSError as error:
            if error.errno == errno.EIO:  # tty hang-up (device unplugged, pty closed)
                break
            raise
        if not data:
            break
        reader.feed(data, time.time())
    reader.finish(time.time())


# ------------------------------------------------------------------ command
