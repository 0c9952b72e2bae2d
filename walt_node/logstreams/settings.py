"""Settings shared by the logs daemon and the Python API's direct sender:
spool location and size (environment overrides), where the server is."""

from __future__ import annotations

from typing import Callable, Optional, Tuple

SPOOL_DIR_ENV = "WALT_LOGS_SPOOL_DIR"
SPOOL_SIZE_ENV = "WALT_LOGS_SPOOL_SIZE"

_UNITS = {"": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}


def parse_size(text: str) -> int:
    """'64M', '512K', '1G' or a number of bytes; ValueError names what is wrong."""
    value = text.strip().upper()
    for suffix in ("B", "I"):
        if value.endswith(suffix):
            value = value[:-1]
    unit = value[-1:] if value[-1:] in ("K", "M", "G") else ""
    number = value[:-1] if unit else value
    try:
        size = int(float(number) * _UNITS[unit])
    except ValueError:
        raise ValueError(f"invalid size '{text}': use a number of bytes or a number with K, M or G") from None
    if size <= 0:
        raise ValueError(f"invalid size '{text}': must be positive")
    return size


def server_address(server: Optional[Tuple[str, Optional[int]]]) -> Callable[[], Tuple[str, int]]:
    """Where to send logs, looked up when a connection is made (facts may appear later)."""
    def address() -> Tuple[str, int]:
        from walt_node.facts import NodeFacts

        facts = NodeFacts()
        if server is None:
            return facts.server_ip, facts.logs_port
        host, port = server
        return host, port if port is not None else facts.logs_port

    return address
