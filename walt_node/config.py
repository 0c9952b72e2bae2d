"""The one reader of walt-node's small configuration files (``/etc/walt/*.conf``).

Every such file is lines of words, ``#`` starting a comment; errors name the
file and the line, and say what was expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterator, Tuple

from walt_node.errors import WaltNodeError


class ConfigError(WaltNodeError):
    """A configuration file is unreadable or malformed (the message says where and how)."""


def meaningful_lines(text: str) -> Iterator[Tuple[int, str, str]]:
    """(line number, content without comment and blanks, raw line) of each non-empty line."""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if line:
            yield number, line, raw.strip()


def read_text(path: Path) -> str:
    """The file's text; ConfigError when it cannot be read (FileNotFoundError passes through)."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read {path}: {getattr(error, 'strerror', None) or error}") from None


def read_key_values(path: Path) -> Dict[str, str]:
    """``key = value`` lines; {} when the file does not exist."""
    try:
        text = read_text(path)
    except FileNotFoundError:
        return {}
    values: Dict[str, str] = {}
    for number, line, raw in meaningful_lines(text):
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{path}:{number}: expected 'key = value', got {raw!r}")
        values[key.strip()] = value.strip()
    return values
