"""`walt-node serial-autolog` command; the work is in :mod:`walt_node.logstreams.serial`."""

from __future__ import annotations

import errno
import logging
import os
from typing import Optional

from walt_node.errors import WaltNodeError
from walt_node.logstreams.serial import (
    COPIES_MAX,
    Copies,
    LineReader,
    MoteProtocol,
    open_line,
    read_line,
)
from walt_node.paths import Paths
from walt_node.service import ProblemCounter, stop_on_sigterm

log = logging.getLogger(__name__)

DESCRIPTION = """\
Read a sensor mote's serial line and send its data lines to WalT log
streams, reading the serial autolog protocol exactly as WalT's own
walt-serial-autolog does.  Everything before a LOGSTART line is ignored
(a later LOGSTART keeps the definitions).  Then:

  LOGDEF <stream> <prefix> <separator> <format...>   defines a stream
  LOGVAR <name> <value>                              sets {name} (one word)

A data line (blanks around it removed) that starts with a defined prefix
is split, as a whole, on that definition's separator; the fields after the
first are {0}, {1}... of the format (Python's str.format), LOGVARs its
named fields.  The line is logged to the stream, stamped when it arrived.

Malformed directives, lines that do not fit their format and formats that
would make a line wider than 65536 characters are reported once, counted
and skipped.  The line keeps its tty settings (the image's own stty) unless
--speed is given.  TTY may also be a plain file (read to its end) or a
pseudo-terminal.

example:
  walt-serial-autolog /dev/ttyUSB0 --speed 9600
  (mote prints: LOGSTART / LOGDEF temp T : {0} C at {site} / LOGVAR site lab-2 / T:21.5)
  -> stream 'temp' gets the line '21.5 C at lab-2'
"""


def add_arguments(parser) -> None:
    parser.add_argument("tty", metavar="TTY", help="serial device (e.g. /dev/ttyUSB0), pty or file")
    parser.add_argument("-s", "--speed", type=int, default=None, metavar="BAUD",
                        help="set the line to raw mode, 8N1, at this speed in bauds (default: "
                             "keep the tty settings as they are, e.g. from the image's stty)")
    parser.add_argument("--keep-copies", action="store_true",
                        help="keep copies of what was read (in.log) and sent (out.log) in "
                             "/var/log/walt/autolog<TTY>/, as WalT's own walt-serial-autolog does; "
                             f"each file holds at most {COPIES_MAX // (1024 * 1024)} MiB, "
                             "the previous part is kept as <file>.1")


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


def _open_copies(args, problems: ProblemCounter) -> Optional[Copies]:
    if not args.keep_copies:
        return None
    directory = Paths.from_env().autolog_copies(args.tty)
    try:
        return Copies(directory, problems)
    except OSError as error:
        raise WaltNodeError(f"cannot keep copies in {directory}: {error.strerror or error} "
                            "(run it as root, or without --keep-copies)") from None


def _autolog(args) -> int:
    from walt_node import log as walt_log  # the sender thread starts with the first line

    try:
        fd = open_line(args.tty, args.speed)
    except ValueError as error:
        raise WaltNodeError(str(error), exit_status=2) from error
    except OSError as error:
        raise WaltNodeError(f"cannot open serial line '{args.tty}': {error.strerror or error}"
                            f"{_open_hint(error)}") from error
    problems = ProblemCounter(log)
    try:
        copies = _open_copies(args, problems)
    except BaseException:
        os.close(fd)
        raise

    def emit(stream: str, text: str, ts: float) -> None:
        try:
            walt_log.echo(stream, text, ts=ts)
        except Exception as error:  # keep reading the mote: later lines may go through
            problems.report("line not logged", f"stream {stream!r}: {error}")
            return
        if copies is not None:
            copies.sent(stream, text, ts)

    protocol = MoteProtocol(emit, problems)

    def on_line(line: str, ts: float) -> None:
        if copies is not None:
            copies.read(line)
        protocol.line(line, ts)

    how = f"at {args.speed} bauds" if args.speed else "with its own tty settings"
    log.info("reading %s %s, waiting for LOGSTART", args.tty, how)
    try:
        read_line(fd, LineReader(on_line, problems))
    finally:
        os.close(fd)
        walt_log.flush(10.0)
        if copies is not None:
            copies.close()
        problems.summary()
        log.info("%d lines logged", protocol.lines_logged)
    return 0
