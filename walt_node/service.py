"""What every long-running walt-node program shares: stopping on signals,
and problems reported once then counted (never silent, never a flood)."""

from __future__ import annotations

import logging
import signal
from typing import Callable, Dict


def on_stop_signals(callback: Callable[[], None]) -> None:
    """SIGTERM (systemd stopping the unit) and SIGINT (Ctrl-C) call ``callback``."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: callback())


def stop_on_sigterm() -> None:
    """SIGTERM ends the program like Ctrl-C does (KeyboardInterrupt): cleanly."""
    def interrupt() -> None:
        raise KeyboardInterrupt
    on_stop_signals(interrupt)


class ProblemCounter:
    """Counts problems by kind; logs the first of each kind, then at 10, 100, 1000..."""

    def __init__(self, logger: logging.Logger):
        self.logger = logger
        self.counts: Dict[str, int] = {}

    def report(self, kind: str, detail: str) -> None:
        count = self.counts.get(kind, 0) + 1
        self.counts[kind] = count
        if count == 1:
            self.logger.warning("%s: %s (skipped; further ones are counted)", kind, detail)
        elif _is_power_of_ten(count):
            self.logger.warning("%s: %d so far, latest: %s", kind, count, detail)

    def summary(self) -> None:
        for kind, count in sorted(self.counts.items()):
            self.logger.warning("%s: %d in total", kind, count)


def _is_power_of_ten(number: int) -> bool:
    while number % 10 == 0 and number > 1:
        number //= 10
    return number == 1
