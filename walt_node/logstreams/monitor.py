"""`walt-log-monitor <command...>`: run a command in a pseudo-terminal and log its output.

The command runs here, as the calling user, in a new pseudo-terminal sized
like the user's terminal.  Its output is shown unchanged and every output
line is also logged to the stream ``<command basename>.<pid>.monitor``
(``<pid>`` is this monitor's process id), framed by ``START`` and ``END``.

Why not the FIFO ``MONITOR`` request of docs/protocols.md §3: that request
carries a uid/gid that anybody able to write the FIFO can forge, so a daemon
obeying it would run commands with another user's privileges.  walt-node's
daemon runs nothing for it (:mod:`walt_node.logstreams.monitor_request` tells
the requester to use this command) and this command never sends it.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import select
import signal
import struct
import termios
import time
import tty
from typing import Callable, List, Optional, Tuple

from walt_node import runner

log = logging.getLogger(__name__)


EXIT_NOT_FOUND = 127
EXIT_CANNOT_EXECUTE = 126
READ_SIZE = 65536
MAX_LOGGED_LINE = 65536  # longer output without a newline is logged in pieces of this size
DRAIN_IDLE = 0.2  # after the command exits, stop once its terminal is quiet this long
DEFAULT_SIZE = (24, 80)
POLL_INTERVAL = 0.25  # how often to check whether the command exited
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


# ------------------------------------------------------------------ lines

class LineSplitter:
    """Cuts terminal output into lines for the log, without the terminal's CR."""

    def __init__(self, emit: Callable[[str], None], max_line: int = MAX_LOGGED_LINE):
        self.emit = emit
        self.max_line = max_line
        self.pending = b""

    def feed(self, data: bytes) -> None:
        self.pending += data
        *complete, self.pending = self.pending.split(b"\n")
        for raw in complete:
            self._emit(raw)
        while len(self.pending) >= self.max_line:
            piece, self.pending = self.pending[:self.max_line], self.pending[self.max_line:]
            self._emit(piece)

    def finish(self) -> None:
        if self.pending:
            self._emit(self.pending)
            self.pending = b""

    def _emit(self, raw: bytes) -> None:
        self.emit(raw.rstrip(b"\r").decode("utf-8", errors="replace"))


def stream_name(command: str, pid: int) -> str:
    """``<command basename>.<pid>.monitor``; blanks and control characters become '_'."""
    name = os.path.basename(command.rstrip("/")) or "command"
    name = "".join(c if c.isprintable() and not c.isspace() else "_" for c in name)
    return f"{name}.{pid}.monitor"


def stream_problem(name: str) -> str:
    """Why ``name`` cannot be a log stream name ("" if it can)."""
    if not name or any(c.isspace() or not c.isprintable() for c in name):
        return f"invalid log stream name {name!r}: use a non-empty name without blanks or control characters"
    return ""


def exit_status(returncode: int) -> int:
    """subprocess's negative 'killed by N' becomes the shell convention 128+N."""
    return 128 - returncode if returncode < 0 else returncode


# ------------------------------------------------------------------ terminals

def terminal_size(fds: Tuple[int, ...] = (0, 1, 2)) -> Optional[Tuple[int, int]]:
    """Rows and columns of the first terminal among ``fds``, if any."""
    for fd in fds:
        try:
            rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
        except OSError:
            continue
        if rows and cols:
            return rows, cols
    return None


def set_terminal_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def disable_output_translation(fd: int) -> None:
    """No LF -> CRLF on the pty: when nobody's terminal is raw, the output stays byte for byte."""
    attrs = termios.tcgetattr(fd)
    attrs[1] &= ~termios.ONLCR
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


# ------------------------------------------------------------------ the monitor

class Monitor:
    """Runs one command in a pty, copies its output to ``output_fd`` and to ``on_line``."""

    def __init__(self, argv: List[str], on_line: Callable[[str], None],
                 input_fd: int = 0, output_fd: int = 1):
        self.argv = argv
        self.splitter = LineSplitter(on_line)
        self.input_fd = input_fd
        self.output_fd: Optional[int] = output_fd
        self.interactive = os.isatty(input_fd)
        # the pty turns LF into CRLF only for a user's terminal we set raw; else bytes pass unchanged
        self.translate_newlines = self.interactive and os.isatty(output_fd)
        self.master = -1
        self.process: Optional[runner.Process] = None

    def start(self) -> None:
        """Spawn the command; raises OSError (FileNotFoundError, PermissionError) if it cannot run."""
        self.master, slave = os.openpty()
        try:
            rows, cols = terminal_size() or DEFAULT_SIZE
            set_terminal_size(slave, rows, cols)
            if not self.translate_newlines:
                disable_output_translation(slave)
            self.process = runner.start(
                self.argv,
                stdin=slave if self.interactive else self.input_fd,
                stdout=slave, stderr=slave,
                controlling_terminal=True,
                look_up=False,  # the OS's own errors give the shell's exit statuses 126/127
            )
        except BaseException:
            os.close(self.master)
            raise
        finally:
            os.close(slave)

    def run(self) -> int:
        """Copy I/O until the command ends; returns its exit status (128+N if killed)."""
        assert self.process is not None
        saved_tty = self._enter_raw_mode()
        previous = self._install_signal_handlers()
        try:
            self._copy_loop()
            returncode = self.process.wait()
        finally:
            self._restore_signal_handlers(previous)
            if saved_tty is not None:
                termios.tcsetattr(self.input_fd, termios.TCSADRAIN, saved_tty)  # keep type-ahead
            os.close(self.master)
        self.splitter.finish()
        return exit_status(returncode)

    # --- terminal mode and signals

    def _enter_raw_mode(self):
        if not self.interactive:
            return None
        saved = termios.tcgetattr(self.input_fd)
        tty.setraw(self.input_fd, termios.TCSANOW)
        return saved

    def _install_signal_handlers(self):
        previous = {signal.SIGWINCH: signal.signal(signal.SIGWINCH, self._on_resize)}
        for signum in FORWARDED_SIGNALS:
            previous[signum] = signal.signal(signum, self._forward_signal)
        return previous

    @staticmethod
    def _restore_signal_handlers(previous) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    def _on_resize(self, _signum, _frame) -> None:
        size = terminal_size()
        if size is not None:
            set_terminal_size(self.master, *size)  # the kernel signals the command's foreground group

    def _forward_signal(self, signum, _frame) -> None:
        # the command has its own session: signals sent to us would not reach it otherwise
        assert self.process is not None
        try:
            os.killpg(self.process.pid, signum)
        except ProcessLookupError:
            pass

    # --- copying

    def _copy_loop(self) -> None:
        assert self.process is not None
        quiet_since: Optional[float] = None  # set once the command has exited
        while True:
            readers = [self.master] + ([self.input_fd] if self.interactive else [])
            ready, _, _ = select.select(readers, [], [], POLL_INTERVAL)
            if self.master in ready and not self._copy_output():
                return  # normal end: nobody holds the pty any more
            if self.interactive and self.input_fd in ready:
                self._copy_input()
            if self.process.poll() is None:
                continue
            if quiet_since is None or self.master in ready:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > DRAIN_IDLE:
                return  # a background child still holds the pty: the command itself is done

    def _copy_output(self) -> bool:
        try:
            data = os.read(self.master, READ_SIZE)
        except OSError as error:
            if error.errno == errno.EIO:  # every holder of the pty slave closed it
                return False
            raise
        if not data:
            return False
        self._show(data)
        self.splitter.feed(data)
        return True

    def _show(self, data: bytes) -> None:
        if self.output_fd is None:
            return
        try:
            while data:
                data = data[os.write(self.output_fd, data):]
        except OSError as error:
            # the reader of our output went away: keep running and logging
            log.debug("output no longer shown: %s", error)
            self.output_fd = None

    def _copy_input(self) -> None:
        try:
            data = os.read(self.input_fd, READ_SIZE)
        except OSError:
            data = b""
        if not data:
            self.interactive = False  # terminal gone: stop watching it
            return
        while data:
            data = data[os.write(self.master, data):]


# ------------------------------------------------------------------ command


class StreamLogger:
    """Sends lines to the stream; a logging failure is reported once and never stops the command."""

    def __init__(self, walt_log, stream: str):
        self.walt_log = walt_log
        self.stream = stream
        self.failed = False

    def __call__(self, line: str) -> None:
        try:
            self.walt_log.echo(self.stream, line)
        except Exception as error:
            if not self.failed:
                log.warning("cannot log to stream '%s' (output still shown): %s", self.stream, error)
            self.failed = True


def flush_logs(walt_log) -> None:
    try:
        walt_log.flush(10.0)
    except Exception as error:  # the output was shown; losing the log must not change the status
        log.warning("could not deliver the monitor log: %s", error)
