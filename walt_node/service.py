"""What every long-running walt-node program shares: stopping on signals,
problems reported once then counted (never silent, never a flood), talking to
systemd, and running several features in one process, each one contained."""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from walt_node.errors import WaltNodeError

log = logging.getLogger(__name__)

# The services `walt-node services` runs in one process (the walt-logs unit), in start
# order; each is turned off by /etc/walt/<name>.disabled. Before that process, each
# had a unit of this name: setup carries a `systemctl disable` of one over to its switch.
RESIDENT_SERVICES = ("walt-logs", "walt-mdns", "walt-lldp-report", "walt-journal-forward")


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


class StopFlag:
    """A threading.Event-like stop request that also wakes a select() loop (fileno).

    Setting it is safe from a signal handler; once set it stays readable, so every
    loop of every thread that selects on it wakes up."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(self._write, False)

    def set(self) -> None:
        try:
            os.write(self._write, b"x")
        except BlockingIOError:
            pass  # already set: the pipe is full of stop requests

    def is_set(self) -> bool:
        return self.wait(0)

    def wait(self, timeout: Optional[float]) -> bool:
        """Sleep until the flag is set or ``timeout`` seconds (None: no limit); True if set."""
        return bool(select.select([self._read], [], [], timeout)[0])

    def fileno(self) -> int:
        return self._read

    def close(self) -> None:
        os.close(self._read)
        os.close(self._write)


# ------------------------------------------------------------------ systemd

def sd_notify(message: str) -> None:
    """The sd_notify protocol without libsystemd: one datagram to $NOTIFY_SOCKET."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract socket namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode(), address)
    except OSError as error:
        log.debug("sd_notify(%s) failed: %s", message, error)


def notifier() -> Callable[[str], None]:
    """libsystemd's sd_notify when the optional 'systemd' module is there, else ours."""
    try:
        from systemd import daemon as sd_daemon  # optional: the 'systemd' extra

        return lambda message: sd_daemon.notify(message)
    except ImportError:
        return sd_notify


def watchdog_period() -> Optional[float]:
    """Half the watchdog interval systemd asked for, or None."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


# ------------------------------------------------------------------ features in one process

@dataclass
class Feature:
    """One long-running service of a resident process.

    ``run(stop)`` does the work until ``stop`` is set, then returns 0. Returning 0
    earlier means the feature chose to end (e.g. it stands aside for another
    program): it stays ended. Another status, or an exception, is a failure."""

    name: str
    run: Callable[[StopFlag], int]
    ready: threading.Event = field(default_factory=threading.Event)  # set by run, or when it ends
    state: str = "starting"
    failures: int = 0


class Supervisor:
    """Runs features in threads of one process, each contained: a feature that raises
    or fails is logged (the first time with its traceback, then at 10, 100...
    failures), counted, and restarted after a delay that doubles from ``first_delay``
    up to ``max_delay``; the other features keep running. A run that lasted
    ``steady`` seconds starts the delays again from ``first_delay``."""

    def __init__(self, stop: StopFlag, notify: Callable[[str], None] = sd_notify,
                 first_delay: float = 1.0, max_delay: float = 300.0, steady: float = 600.0):
        self.stop = stop
        self.notify = notify
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.steady = steady
        self.features: List[Feature] = []
        self.threads: List[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self, feature: Feature) -> None:
        self.features.append(feature)
        thread = threading.Thread(target=self._supervise, args=(feature,), name=feature.name, daemon=True)
        self.threads.append(thread)
        thread.start()

    def join(self, timeout: float) -> List[str]:
        """Wait for the features to end (after ``stop``); returns those still running."""
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return [thread.name for thread in self.threads if thread.is_alive()]

    def _supervise(self, feature: Feature) -> None:
        delay = self.first_delay
        while not self.stop.is_set():
            self._set_state(feature, "running")
            started = time.monotonic()
            try:
                status = feature.run(self.stop)
                problem = None if status == 0 else f"ended with status {status}"
            except Exception as error:  # contained: the other features keep running
                status, problem = None, f"{type(error).__name__}: {error}"
                self._failed(feature, problem, error)
            else:
                if problem is not None:
                    self._failed(feature, problem, None)
            finally:
                feature.ready.set()  # nobody waits for a feature that is not running
            if problem is None:
                self._set_state(feature, "stopped" if self.stop.is_set() else "ended")
                if not self.stop.is_set():
                    log.info("%s ended by itself (status 0): not restarted", feature.name)
                return
            if time.monotonic() - started >= self.steady:
                delay = self.first_delay
            self._set_state(feature, f"restarting after {feature.failures} failure(s)")
            if feature.failures == 1 or _is_power_of_ten(feature.failures):
                log.warning("%s restarts in %g s; the other features keep running", feature.name, delay)
            if self.stop.wait(delay):
                break
            delay = min(delay * 2, self.max_delay)
            feature.ready.clear()
        self._set_state(feature, "stopped")

    def _failed(self, feature: Feature, problem: str, error: Optional[BaseException]) -> None:
        feature.failures += 1
        count = feature.failures
        if count == 1:
            # an unexpected exception gets its traceback; a walt-node error says it all itself
            trace = error if error is not None and not isinstance(error, WaltNodeError) else None
            log.error("%s failed: %s", feature.name, problem, exc_info=trace)
        elif _is_power_of_ten(count):
            log.error("%s failed %d times so far, latest: %s", feature.name, count, problem)

    def _set_state(self, feature: Feature, state: str) -> None:
        with self._lock:
            feature.state = state
            self.notify("STATUS=" + "; ".join(f"{f.name} {f.state}" for f in self.features))
