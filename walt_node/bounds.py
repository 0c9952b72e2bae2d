"""Bounds on what a remote party can make walt-node spend: time and memory.

- :class:`Deadline`: the point in time a whole step (or a whole command) must
  end before.  Every network step runs under one, so a server trickling a
  byte now and then cannot stretch the step: each wait gets what is *left*,
  not a fresh timeout.
- :func:`limit_reached`: a size bound (download, expansion, nesting) was
  reached.  It is logged once per kind and counted, never silent; the caller
  then refuses the input with an error of its own naming the bound.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from walt_node.errors import WaltNodeError
from walt_node.service import ProblemCounter

MIB = 1 << 20


class DeadlineExceeded(WaltNodeError):
    """A deadline passed before the step (or command) it bounds could end."""


class Deadline:
    """A point in time every step it is given to must end before."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.seconds = seconds
        self.end = clock() + seconds

    def remaining(self) -> float:
        return self.end - self.clock()

    def timeout(self, at_most: float = float("inf")) -> float:
        """Timeout for the next wait: what is left, or ``at_most`` if shorter.

        Raises DeadlineExceeded once (almost) nothing is left.
        """
        left = self.remaining()
        if left <= 0.01:
            raise DeadlineExceeded(f"the {self.seconds:g} s deadline has passed")
        return min(at_most, left)

    def step(self, at_most: float) -> Deadline:
        """The deadline of a step that may last ``at_most`` but not outlive this one."""
        return Deadline(min(at_most, max(self.remaining(), 0.0)), self.clock)


LIMITS = ProblemCounter(logging.getLogger("walt_node.limits"))


def limit_reached(kind: str, detail: str) -> str:
    """Log (once per kind, then counted) that a bound was reached; returns the
    message for the error the caller raises."""
    LIMITS.report(kind, detail)
    return f"{kind}: {detail}"
