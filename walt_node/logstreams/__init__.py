"""Logging on WalT nodes: the logs daemon, the Python API and its logging handler.

Kept light on purpose: ``WaltLogHandler`` is imported only when asked for.
"""

from __future__ import annotations

from typing import Any

__all__ = ["WaltLogHandler"]


def __getattr__(name: str) -> Any:
    if name == "WaltLogHandler":
        from walt_node.logstreams.handler import WaltLogHandler

        return WaltLogHandler
    raise AttributeError(f"module 'walt_node.logstreams' has no attribute {name!r}")
