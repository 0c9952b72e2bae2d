"""``walt-node ipxe-kexec-reboot`` (``walt-ipxe-kexec-reboot``): kexec into the bound image."""

from __future__ import annotations

import logging
import os
import shlex
import signal
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterator, List, Optional, TextIO, Tuple

from walt_node.bounds import Deadline, DeadlineExceeded
from walt_node.errors import WaltNodeError
from walt_node.paths import Paths
from walt_node.text import printable

if TYPE_CHECKING:
    from walt_node.reboot.kexec import StagedBoot

log = logging.getLogger(__name__)

DEFAULT_DEADLINE = 30.0
DEFAULT_GRACE = 15.0
LOG_STREAM = "walt-reboot"
LOG_TIMEOUT = 2.0


class NoKexec(WaltNodeError):
    """Why this reboot will not be a kexec one."""


# --- output: stdout and a WalT log stream --------------------------------

class Reporter:
    """Says things on stdout and keeps them for the WalT log stream."""

    def __init__(self, out: TextIO = sys.stdout):
        self.out = out
        self.lines: List[Tuple[float, str]] = []
        self.server = None  # ServerAddress once known

    def say(self, text: str) -> None:
        """Print ``text`` and keep it for the log stream, each line with control
        characters escaped (names and messages come from the server); never raises
        (a reboot must not stop because nobody reads its output any more)."""
        lines = [printable(line) for line in text.splitlines()] or [""]
        self.lines.extend((time.time(), line) for line in lines)
        self._print("".join(line + "\n" for line in lines))

    def _print(self, text: str) -> None:
        try:
            self.out.write(text)
            self.out.flush()
        except (OSError, ValueError):
            pass  # stdout closed (a dropped ssh session): the log stream still gets the lines

    def send_logs(self, stream: str = LOG_STREAM) -> None:
        """Send what was said to the server, within LOG_TIMEOUT; never raises.

        Through :mod:`walt_node.log` when installed (logs daemon FIFO, direct
        connection or spool), else one direct :class:`LogStream`.
        """
        if self.server is None or not self.lines:
            return
        lines, self.lines = self.lines, []
        try:
            self._send(stream, lines)
        except Exception as error:  # out of memory, no thread left...: the reboot goes on
            self._print(f"(could not send these lines to the WalT log stream: "
                        f"{type(error).__name__}: {error})\n")

    def _send(self, stream: str, lines: List[Tuple[float, str]]) -> None:
        try:
            from walt_node import log as walt_log
        except ImportError:
            walt_log = None
        if walt_log is not None:
            # a reboot cannot wait for an absent server at exit: what is left stays spooled
            os.environ["WALT_LOG_EXIT_TIMEOUT"] = "0"
            for ts, line in lines:
                walt_log.echo(stream, line, ts=ts)
            if not walt_log.flush(timeout=LOG_TIMEOUT):
                self._print(f"(log stream '{stream}' not delivered within {LOG_TIMEOUT:g} s)\n")
            return
        from walt_node.protocols import LogStream, ServerError

        try:
            with LogStream(self.server.ip, self.server.logs_port, stream,
                           timeout=LOG_TIMEOUT) as logs:
                logs.send(lines)
        except (ServerError, OSError) as error:
            self._print(f"(could not send these lines to the WalT log stream: {error})\n")


# --- the attempt ----------------------------------------------------------

@dataclass
class Options:
    dry_run: bool = False
    on_failure: str = "reboot"
    deadline: float = DEFAULT_DEADLINE
    grace: float = DEFAULT_GRACE
    start: str = "/start.ipxe"
    boot_mode: str = ""  # "network" or "hybrid" (a reboot hook's own mode); "": the node's fact


@contextmanager
def watchdog(deadline: Deadline) -> Iterator[None]:
    """Interrupt whatever is running when the deadline passes (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum: int, frame: object) -> None:
        raise DeadlineExceeded(f"the {deadline.seconds:g} s deadline has passed")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(deadline.remaining(), 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def ipxe_variables(facts, binding) -> Dict[str, str]:
    """What iPXE's DHCP and SMBIOS would have set (§8), from the server and this node."""
    cmdline_ip = facts.cmdline_values().get("ip", "").split(":")
    cmdline_ip += [""] * (5 - len(cmdline_ip))
    variables = {
        "mac": facts.mac,
        "ip": binding.node_ip or cmdline_ip[0],
        "netmask": binding.netmask or cmdline_ip[3],
        "gateway": binding.gateway or cmdline_ip[2],
        "hostname": binding.node_name or cmdline_ip[4] or optional(lambda: facts.hostname),
        "next-server": facts.server_ip,
        "manufacturer": facts.dmi("sys_vendor"),
        "product": facts.dmi("product_name"),
    }
    return {name: value for name, value in variables.items() if value}


def optional(getter) -> str:
    try:
        return getter()
    except Exception:  # a missing optional fact leaves the variable unset, as in iPXE
        return ""


@dataclass
class Prepared:
    boot_mode: str
    staged: StagedBoot


def prepare(paths: Paths, reporter: Reporter, deadline: Deadline, workdir: Path,
            options: Options) -> Prepared:
    """Steps 1-5; NoKexec says why a kexec reboot is not possible."""
    from walt_node.facts import FactInvalid, FactMissing, NodeFacts
    from walt_node.reboot import kexec
    from walt_node.reboot.binding import BindingUnknown, check_binding
    from walt_node.reboot.ipxe import IpxeError, interpret
    from walt_node.reboot.source import ServerSource

    facts = NodeFacts(paths)
    try:
        server, mac = facts.server(), facts.mac
        boot_mode = options.boot_mode or facts.boot_mode
    except (FactMissing, FactInvalid) as error:
        raise NoKexec(str(error)) from None
    reporter.server = server
    booted = optional(lambda: facts.image_id) or None
    reporter.say(f"node {mac}, booted image {booted or '(unknown)'}, boot mode {boot_mode}, "
                 f"server {server.ip}")

    blockers = []
    try:
        kexec.check_support(paths)
    except kexec.KexecUnavailable as error:
        if not options.dry_run:
            raise NoKexec(str(error)) from None
        blockers.append(str(error))  # a dry run goes on, to show the rest

    try:
        binding = check_binding(server, mac, booted, deadline)
    except BindingUnknown as error:
        raise NoKexec(f"binding unknown: {error}") from None
    reporter.say("binding check: " + binding.summary())
    for note in binding.notes:
        reporter.say(f"  note: {printable(note)}")
    if not binding.kexec_allowed:
        raise NoKexec(f"kexec is not allowed for node {binding.node_name or mac} "
                      "(node setting kexec.allow is false)")

    source = ServerSource(server, mac, binding.node_ip or None, deadline)
    try:
        plan = interpret(source, ipxe_variables(facts, binding), options.start)
    except IpxeError as error:
        raise NoKexec(f"iPXE script error: {error}") from None
    reporter.say("boot plan:\n" + _indent(plan.describe()))
    try:
        staged = kexec.stage(plan, workdir)
    except kexec.BadImage as error:
        raise NoKexec(str(error)) from None
    except OSError as error:
        raise NoKexec(f"cannot write boot files to {workdir}: {error}") from None
    if blockers:
        raise NoKexec("; ".join(blockers))
    # the files were served for the binding at fetch time: make sure it did not move meanwhile
    try:
        again = check_binding(server, mac, booted, deadline)
    except BindingUnknown as error:
        raise NoKexec(f"binding unknown on second check: {error}") from None
    if again.image != binding.image:
        raise NoKexec(f"the binding changed while preparing ({binding.image} -> {again.image})")
    return Prepared(boot_mode, staged)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def kexec_reboot(paths: Paths, options: Options, reporter: Optional[Reporter] = None) -> int:
    """The whole command; returns only when the reboot did not happen (or on --dry-run)."""
    from walt_node.reboot import kexec

    reporter = reporter or Reporter()
    deadline = Deadline(options.deadline)
    with tempfile.TemporaryDirectory(prefix="walt-kexec-") as tmp:
        try:
            with watchdog(deadline):
                prepared = prepare(paths, reporter, deadline, Path(tmp), options)
                if options.dry_run:
                    return _dry_run_done(reporter, prepared)
                kexec.load(prepared.staged, timeout=deadline.timeout(kexec.KEXEC_TIMEOUT))
        except NoKexec as error:
            return _fall_back(paths, reporter, str(error), options)
        except DeadlineExceeded as error:
            return _fall_back(paths, reporter, str(error), options)
        except Exception as error:  # any doubt means no kexec: say why, reboot normally
            log.debug("kexec preparation failed", exc_info=True)
            return _fall_back(paths, reporter, f"{type(error).__name__}: {error}", options)
        return _jump(paths, reporter, prepared, options)


def _dry_run_done(reporter: Reporter, prepared: Prepared) -> int:
    staged = prepared.staged
    reporter.say(_indent(staged.describe()))
    reporter.say(f"would run: kexec -l {staged.kernel}"
                 + (f" --initrd {staged.initrd}" if staged.initrd else "")
                 + f" --command-line {printable(shlex.quote(staged.cmdline))}")
    jump = "kexec -e" if prepared.boot_mode == "network" else "systemctl kexec"
    reporter.say(f"then: {jump} (boot mode {prepared.boot_mode}); dry run: nothing loaded")
    return 0


def _jump(paths: Paths, reporter: Reporter, prepared: Prepared, options: Options) -> int:
    from walt_node.reboot import kexec
    from walt_node.runner import CommandFailed, CommandMissing

    how = "kexec -e" if prepared.boot_mode == "network" else "systemctl kexec"
    reporter.say(f"kernel loaded; rebooting with {how}")
    reporter.send_logs()
    if not kexec.sync_filesystems(paths, timeout=5.0):
        reporter.say("warning: filesystem sync still running after 5 s; going on")
    try:
        kexec.jump(prepared.boot_mode)
    except (CommandFailed, CommandMissing) as error:
        kexec.unload()
        return _fall_back(paths, reporter, f"{how} failed: {error}", options)
    if prepared.boot_mode == "network":
        kexec.unload()
        return _fall_back(paths, reporter, "kexec -e returned instead of starting the kernel",
                          options)
    return _wait_to_be_stopped(reporter, how, options.grace)


def _fall_back(paths: Paths, reporter: Reporter, reason: str, options: Options) -> int:
    from walt_node.reboot import kexec
    from walt_node.runner import CommandFailed, CommandMissing

    reason = printable(reason)  # one line, whatever the server put in it
    if options.dry_run:
        reporter.say(f"no kexec reboot: {reason}")
        reporter.say(f"would fall back to: {options.on_failure}")
        return 1
    if options.on_failure == "exit":
        reporter.say(f"no kexec reboot: {reason}; exiting (status 2) as asked")
        reporter.send_logs()
        return 2
    reporter.say(f"no kexec reboot: {reason}; falling back to a normal reboot")
    reporter.send_logs()
    kexec.sync_filesystems(paths, timeout=5.0)
    try:
        kexec.os_reboot(immediate=options.boot_mode == "network")
    except (CommandFailed, CommandMissing) as error:
        reporter.say(f"reboot failed: {error}")
        return 1
    return _wait_to_be_stopped(reporter, "reboot", options.grace)


def _wait_to_be_stopped(reporter: Reporter, what: str, grace: float) -> int:
    """The OS stops us during a requested shutdown; still running after ``grace``: failure."""
    time.sleep(grace)
    reporter.say(f"'{what}' was requested but the node is still running after {grace:g} s")
    return 1
