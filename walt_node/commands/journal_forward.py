"""`walt-node journal-forward` command; the work is in :mod:`walt_node.logstreams.journal`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Sequence

from walt_node.logstreams.journal import (
    EXIT_TEMPORARY_FAILURE,
    FLUSH_TIMEOUT,
    READERS,
    SOURCES,
    START_POINTS,
    CursorFile,
    CursorRejected,
    Forwarder,
    JournalUnavailable,
    choose_source,
    forward,
    load_config,
)
from walt_node.paths import Paths
from walt_node.service import ProblemCounter, StopFlag, on_stop_signals

log = logging.getLogger(__name__)

DESCRIPTION = """\
Forward the systemd journal of chosen units to WalT log streams, with the
journal's own timestamps, resuming after the last forwarded entry when
restarted.

Configuration file (default /etc/walt/journal-forward.conf), one unit per line:
  # <unit>            <stream>
  ssh                 sshd-log
  my-experiment.service  experiment
A unit name without a suffix means '<name>.service'.  Only the lines written
by the unit's processes are forwarded (field _SYSTEMD_UNIT), one log line per
line of a message.

Journal reader: the 'systemd' Python module if installed
(pip install systemd-python in walt-node's venv), otherwise 'journalctl -o json'.
Without a saved cursor it starts at --start (default: the current boot).

example:
  echo 'my-experiment experiment' > /etc/walt/journal-forward.conf
  walt-node journal-forward
"""


def add_arguments(parser) -> None:
    paths = Paths.from_env()
    parser.add_argument("--config", type=Path, default=paths.journal_forward_conf,
                        help="unit-to-stream file (default %(default)s)")
    parser.add_argument("--cursor-file", type=Path, default=paths.journal_forward_cursor,
                        help="where the position reached is saved (default %(default)s)")
    parser.add_argument("--source", choices=SOURCES, default="auto",
                        help="journal reader: the systemd Python module, journalctl, or auto "
                        "(the module if installed)")
    parser.add_argument("--start", choices=START_POINTS, default="boot",
                        help="where to begin when no cursor is saved (default: boot)")
    parser.add_argument("--file", dest="files", action="append", type=Path, metavar="JOURNAL",
                        help="read this journal file instead of the system journal (repeatable)")
    parser.add_argument("--no-follow", dest="follow", action="store_false",
                        help="stop at the end of the journal instead of waiting for new entries")


def run(args) -> int:
    stop = StopFlag()
    on_stop_signals(stop.set)
    return forward_journal(stop, args.config, args.cursor_file, args.source, args.start,
                           args.files or [], args.follow)


def forward_journal(stop: StopFlag, config: Path, cursor_path: Path, source: str = "auto",
                    start: str = "boot", files: Sequence[Path] = (), follow: bool = True) -> int:
    """Forward until ``stop`` is set, then save the position reached (also the journal
    feature of `walt-node services`)."""
    routes = load_config(config)  # a ConfigError is printed by the CLI
    from walt_node import log as walt_log

    problems = ProblemCounter(log)
    cursor_file = CursorFile(cursor_path)
    forwarder = Forwarder(
        routes,
        emit=lambda stream, text, ts: walt_log.echo(stream, text, ts=ts),
        flush=lambda: walt_log.flush(FLUSH_TIMEOUT) is not False,
        cursor_file=cursor_file, problems=problems,
    )
    source = choose_source(source)
    log.info("forwarding %s with %s", ", ".join(f"{u} -> {s}" for u, s in routes.items()), source)
    try:
        _forward_from(source, forwarder, cursor_file, start, list(files), follow, problems, stop)
    except JournalUnavailable as error:
        raise JournalUnavailable(f"cannot read the journal: {error}") from None
    except Exception as error:  # e.g. the logs API failed: exit without saving, restart resumes
        log.exception("forwarding stopped: %s; the cursor stays at the last delivered entry", error)
        return EXIT_TEMPORARY_FAILURE
    finally:
        problems.summary()
        log.info("%d lines forwarded", forwarder.lines_sent)
    return 0


def _forward_from(source: str, forwarder: Forwarder, cursor_file: CursorFile, start: str,
                  files: List[Path], follow: bool, problems: ProblemCounter, stop: StopFlag) -> None:
    read = READERS[source]
    units = sorted(forwarder.routes)
    cursor = cursor_file.load()
    try:
        forward(forwarder, read(units, cursor, start, files, follow, problems, stop))
    except CursorRejected as error:
        log.warning("the saved cursor was refused (%s): starting again from '%s'", error, start)
        cursor_file.forget()
        forward(forwarder, read(units, None, start, files, follow, problems, stop))
