"""Is a process asleep until an event? Its main thread's system call, read from /proc.

A service that polls sleeps with a timeout (or in nanosleep); one that waits
for events sleeps in select() with no timeout.  Reading /proc/PID/syscall
shows which, without timing anything (root, or the same user with ptrace
rights, is needed to read it)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List

# x86_64 select and pselect6 (glibc's select): the timeout is the fifth argument of both
SELECT_SYSCALLS = (23, 270)
ON_X86_64 = os.uname().machine == "x86_64"


def current_syscall(pid: int) -> List[str]:
    """[number, arguments...] of the syscall the main thread is blocked in; [] when running."""
    words = Path(f"/proc/{pid}/syscall").read_text().split()
    return words if words and words[0] not in ("running", "-1") else []


def in_select(pid: int, seen: List[str]) -> bool:
    """True when the main thread sleeps in select(); `seen` gets the syscall line read."""
    seen[:] = current_syscall(pid)
    return bool(seen) and int(seen[0]) in SELECT_SYSCALLS


def has_timeout(seen: List[str]) -> bool:
    """Whether the select() of a `seen` line was given a timeout (else: until an event)."""
    return int(seen[5], 16) != 0
