"""Text from other parties (a mote, a LAN peer, a server) made safe to show on a terminal."""

from __future__ import annotations


def printable(text: str) -> str:
    """``text`` with every character a terminal would act on (escape sequences, carriage
    returns, newlines that fake another log line, bidirectional overrides) written as
    Python escapes (``\\x1b``, ``\\n``, ``\\u202e``); tabs and printable text are kept."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == "\t" else repr(c)[1:-1] for c in text)
