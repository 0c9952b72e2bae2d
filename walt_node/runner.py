"""The one way walt-node starts external programs.

Programs are looked up on ``PATH`` (so tests can put recorders first), every
:func:`run` has a timeout, and a missing program is a clear
:class:`CommandMissing` error naming it instead of a bare ``FileNotFoundError``.
:func:`start` starts long-running children (background helpers, pipes, a
command in a pseudo-terminal); no other module imports :mod:`subprocess`
(tests/test_boundaries.py keeps it so).
"""

from __future__ import annotations

import logging
import os
import subprocess
from typing import Mapping, Optional, Sequence

from walt_node.errors import WaltNodeError

# for callers of start(): what to connect a child's standard streams to
DEVNULL = subprocess.DEVNULL
PIPE = subprocess.PIPE
STDOUT = subprocess.STDOUT
Process = subprocess.Popen
TimeoutExpired = subprocess.TimeoutExpired

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0


class CommandMissing(WaltNodeError):
    def __init__(self, program: str, hint: str = ""):
        self.program = program
        message = f"'{program}' was not found on PATH"
        if hint:
            message += f" ({hint})"
        super().__init__(message)


class CommandFailed(WaltNodeError):
    def __init__(self, argv: Sequence[str], returncode: Optional[int], output: str):
        self.argv = list(argv)
        self.returncode = returncode
        self.output = output
        what = "timed out" if returncode is None else f"exited with status {returncode}"
        detail = f": {output.strip()}" if output.strip() else ""
        super().__init__(f"'{' '.join(argv)}' {what}{detail}")


def which(program: str, env: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """Like shutil.which, without loading shutil (and the bz2, lzma... it imports) into
    the resident process of `walt-node services`."""
    if os.sep in program:
        return program if _executable(program) else None
    for directory in (env or os.environ).get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(directory or os.curdir, program)
        if _executable(candidate):
            return candidate
    return None


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def require(program: str, hint: str = "") -> str:
    found = which(program)
    if found is None:
        raise CommandMissing(program, hint)
    return found


def run(
    argv: Sequence[str],
    timeout: float = DEFAULT_TIMEOUT,
    check: bool = True,
    input: Optional[str] = None,
    env: Optional[Mapping[str, str]] = None,
) -> subprocess.CompletedProcess:
    """Run ``argv`` and return its completed process (text output, stderr merged).

    Raises CommandMissing if the program is not on PATH and CommandFailed if
    it times out, or exits non-zero while ``check`` is true.
    """
    program = require(argv[0])
    log.debug("running %s", " ".join(argv))
    try:
        done = subprocess.run(
            [program, *argv[1:]],
            input=input,
            stdin=subprocess.DEVNULL if input is None else None,  # never wait on our own stdin
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            env=None if env is None else dict(env),
        )
    except subprocess.TimeoutExpired as error:
        out = error.output or ""
        if isinstance(out, bytes):
            out = out.decode(errors="replace")
        raise CommandFailed(argv, None, out) from None
    if check and done.returncode != 0:
        raise CommandFailed(argv, done.returncode, done.stdout)
    return done


def start(
    argv: Sequence[str],
    *,
    stdin=None,
    stdout=None,
    stderr=None,
    env: Optional[Mapping[str, str]] = None,
    new_session: bool = False,
    controlling_terminal: bool = False,
    look_up: bool = True,
    hint: str = "",
) -> subprocess.Popen:
    """Start ``argv`` and return its process, without waiting.

    ``controlling_terminal``: the child gets a new session whose controlling
    terminal is its stdout (a pty slave), as a login shell would.
    ``look_up=False`` runs ``argv[0]`` as given, so the caller sees the OS's
    own error (not found, not executable) as an OSError.
    """
    program = require(argv[0], hint) if look_up else argv[0]
    log.debug("starting %s", " ".join(argv))
    return subprocess.Popen(
        [program, *argv[1:]],
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        env=None if env is None else dict(env),
        start_new_session=new_session or controlling_terminal,
        preexec_fn=_take_stdout_as_controlling_terminal if controlling_terminal else None,
    )


def _take_stdout_as_controlling_terminal() -> None:
    # runs in the child after setsid()
    import fcntl
    import termios

    fcntl.ioctl(1, termios.TIOCSCTTY, 0)


def replace_process(argv: Sequence[str], hint: str = "") -> None:
    """Become ``argv`` (exec): for commands that only prepare a daemon's arguments,
    so that the service manager supervises the daemon itself. Never returns."""
    program = require(argv[0], hint)
    log.debug("exec %s", " ".join(argv))
    os.execv(program, [program, *argv[1:]])
