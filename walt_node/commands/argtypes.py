"""Argument types shared by the commands: each turns a bad value into an
argparse error that names the value and what is expected."""

from __future__ import annotations

import argparse
from typing import Optional, Tuple


def non_negative_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of seconds") from None
    if not value >= 0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"'{text}' is negative: give a number of seconds >= 0")
    return value


def positive_seconds(text: str) -> float:
    value = non_negative_seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def size(text: str) -> int:
    """'64M', '512K', '1G' or a number of bytes."""
    from walt_node.logstreams.settings import parse_size

    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def host_port(text: str) -> Tuple[str, Optional[int]]:
    """HOST or HOST:PORT (no port: the caller's default)."""
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"invalid server '{text}': expected HOST or HOST:PORT")
    return host, int(port)


def name_value(text: str) -> Tuple[str, str]:
    """NAME=VALUE (an iPXE variable, an image label); repeated options give dict(pairs)."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"'{text}': expected NAME=VALUE, e.g. product=X")
    return name, value
