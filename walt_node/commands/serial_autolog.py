"""`walt-node serial-autolog` command; the work is in :mod:`walt_node.logstreams.serial`."""

from __future__ import annotations

import errno
import logging
import os
import sys

from walt_node.logstreams.serial import (
    DEFAULT_SPEED,
    LineReader,
    MoteProtocol,
    open_line,
    read_line,
)
from walt_node.service import ProblemCounter, stop_on_sigterm

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


def add_arguments(parser) -> None:
    parser.add_argument("tty", metavar="TTY", help="serial device (e.g. /dev/ttyUSB0), pty or file")
    parser.add_argument("-s", "--speed", type=int, default=DEFAULT_SPEED, metavar="BAUD",
                        help=f"line speed in bauds (default {DEFAULT_SPEED})")


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
