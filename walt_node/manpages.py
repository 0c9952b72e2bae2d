"""Manual pages written from the commands' argparse parsers.

One source of truth with ``--help``: a page holds the parser's usage, its
description and every option with the help text argparse shows.  The Debian
package build writes them (``python3 -m walt_node.manpages OUTDIR``): one page
per program it installs (``walt-node``, the legacy names such as
``walt-logs-daemon``, the /bin scripts) and one ``walt-node-<command>`` page
per command of the umbrella.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

from walt_node import __version__
from walt_node.commands import BIN_SCRIPTS, COMMANDS, legacy_names

SECTION = "1"


def programs() -> Dict[str, Tuple[Optional[str], str]]:
    """Page name -> (command name or None for the umbrella, summary)."""
    pages: Dict[str, Tuple[Optional[str], str]] = {
        "walt-node": (None, "node-side services for WalT testbed images")}
    for name, command in COMMANDS.items():
        pages[f"walt-node-{name}"] = (name, command.summary)
    for program, name in {**legacy_names(), **BIN_SCRIPTS}.items():
        pages[program] = (name, COMMANDS[name].summary)
    return pages


def parser_of(page: str, command: Optional[str]) -> argparse.ArgumentParser:
    from walt_node.cli import _top_parser, command_parser

    if command is None:
        return _top_parser()
    prog = f"walt-node {command}" if page == f"walt-node-{command}" else page
    return command_parser(command, prog)[0]


def render(page: str, command: Optional[str], summary: str, date: str) -> str:
    parser = parser_of(page, command)
    lines = [
        f'.TH "{page.upper()}" "{SECTION}" "{date}" "walt-node {__version__}" "walt-node manual"',
        ".ad l",  # ragged right: long paths in help texts cannot be justified
        ".SH NAME",
        f"{_escape(page)} \\- {_escape(summary)}",
        ".SH SYNOPSIS",
        *_preformatted(parser.format_usage().strip().removeprefix("usage: ").splitlines()),
    ]
    if parser.description:
        lines += [".SH DESCRIPTION", *_text(parser.description)]
    if parser.epilog:
        lines += _text(parser.epilog)
    lines += _options(parser, ".SH")
    lines += _see_also(page, command)
    return "\n".join(lines) + "\n"


def _options(parser: argparse.ArgumentParser, heading: str) -> List[str]:
    lines: List[str] = []
    formatter = parser._get_formatter()
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if a.help != argparse.SUPPRESS]
        if not actions:
            continue
        title = "OPTIONS" if group.title in ("options", "optional arguments") else (group.title or "").upper()
        lines.append(f'{heading} "{_escape(title)}"')
        for action in actions:
            lines += [".TP", f"\\fB{_escape(formatter._format_action_invocation(action))}\\fR"]
            if action.help:
                lines.append(_escape_line(formatter._expand_help(action)))
            if isinstance(action, argparse._SubParsersAction):
                lines += _subcommands(action)
    return lines


def _subcommands(action: argparse._SubParsersAction) -> List[str]:
    lines: List[str] = []
    helps = {choice.dest: choice.help for choice in action._choices_actions}
    for name, sub in action.choices.items():
        lines += [f'.SS "{_escape(sub.prog)}"']
        text = sub.description or helps.get(name) or ""
        lines += _text(text)
        usage = sub.format_usage().strip().removeprefix("usage: ")
        lines += _preformatted(usage.splitlines())
        lines += [line for line in _options(sub, ".SS") if not line.startswith('.SS "OPTIONS"')]
    return lines


def _see_also(page: str, command: Optional[str]) -> List[str]:
    if command is None:
        refs = [f"walt-node-{name}" for name in COMMANDS]
    else:
        refs = ["walt-node"] + ([f"walt-node-{command}"] if page != f"walt-node-{command}" else [])
    return [".SH SEE ALSO", ",\n".join(f"\\fB{_escape(ref)}\\fR({SECTION})" for ref in refs)]


def _text(text: str) -> Iterator[str]:
    """Paragraphs: prose is filled by man, indented blocks (tables, examples) kept as written."""
    for paragraph in text.strip("\n").split("\n\n"):
        rows = paragraph.splitlines()
        if any(row.startswith(" ") for row in rows) or rows[0].rstrip().endswith(":"):
            yield from _preformatted(rows)
        else:
            yield ".PP"
            yield from (_escape_line(row.strip()) for row in rows)


def _preformatted(rows: List[str]) -> List[str]:
    return [".PP", ".nf", *(_escape_line(row) for row in rows), ".fi"]


def _escape(text: str) -> str:
    return text.replace("\\", "\\e").replace("-", "\\-")


def _escape_line(line: str) -> str:
    line = _escape(line)
    return "\\&" + line if line.startswith((".", "'")) else line


def build_date() -> str:
    """SOURCE_DATE_EPOCH (set by dpkg-buildpackage from the changelog): reproducible pages."""
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", time.time()))
    return time.strftime("%Y-%m-%d", time.gmtime(epoch))


def write_all(outdir: Path) -> List[Path]:
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for page, (command, summary) in programs().items():
        path = outdir / f"{page}.{SECTION}"
        path.write_text(render(page, command, summary, build_date()))
        written.append(path)
    return written


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m walt_node.manpages", description=__doc__)
    parser.add_argument("outdir", type=Path, help="directory the pages are written to")
    args = parser.parse_args(argv)
    for path in write_all(args.outdir):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
