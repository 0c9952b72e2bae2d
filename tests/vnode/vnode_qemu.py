"""Run the virtual node under qemu (TCG) and talk to it over its serial ports.

* ttyS0 is the kernel and systemd console: read-only for the harness, kept
  in memory and in a log file, searched with :meth:`SerialLog.wait_for`.
* ttyS1 is a root shell (``vnode-shell.service`` in the guest, raw mode, no
  echo): :meth:`GuestShell.run` sends one command and waits for its end
  marker, which carries the exit status.

Every wait has a time limit; :meth:`VirtualNode.stop` kills qemu whatever
state it is in.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Pattern, Union

from support.wait import wait_until

LOG = logging.getLogger("vnode.qemu")

MAC = "52:54:00:12:34:56"
SHELL_READY = "@@VNODE-SHELL-READY@@"


class VnodeTimeout(AssertionError):
    """A step did not happen in time; the message says which and shows the console's tail."""


class SerialLog:
    """Everything a qemu serial port sends, collected by a background thread."""

    def __init__(self, sock: socket.socket, log_file: Path):
        self._sock = sock
        self._log_file = open(log_file, "ab")
        self._data = bytearray()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._pump, daemon=True, name=f"serial {log_file.name}")
        self._thread.start()

    def _pump(self) -> None:
        while True:
            try:
                chunk = self._sock.recv(65536)
            except OSError:
                chunk = b""
            with self._cond:
                if not chunk:
                    self._closed = True
                    self._cond.notify_all()
                    return
                self._data += chunk
                self._log_file.write(chunk)
                self._log_file.flush()
                self._cond.notify_all()

    @property
    def offset(self) -> int:
        with self._cond:
            return len(self._data)

    def text(self, start: int = 0) -> str:
        with self._cond:
            return self._data[start:].decode("utf-8", "replace")

    def tail(self, chars: int = 3000) -> str:
        return self.text()[-chars:]

    def _excerpt(self, start: int, chars: int = 2500) -> str:
        """Beginning and end of the output after `start` (the cause is often at the start)."""
        text = self._data[start:].decode("utf-8", "replace")
        if len(text) <= 2 * chars:
            return text
        return f"{text[:chars]}\n[... {len(text) - 2 * chars} characters ...]\n{text[-chars:]}"

    def wait_for(self, pattern: Union[str, Pattern[str]], timeout: float, start: int = 0,
                 what: str = "") -> re.Match:
        """Wait until `pattern` appears after byte `start`; the match, or VnodeTimeout."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = regex.search(self._data[start:].decode("utf-8", "replace"))
                if found:
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    reason = "port closed (qemu exited)" if self._closed else f"{timeout:.0f}s"
                    raise VnodeTimeout(f"{what or regex.pattern!r} not seen ({reason}); "
                                       f"output since the wait began:\n{self._excerpt(start)}")
                self._cond.wait(min(left, 1.0))

    def close(self) -> None:
        try:
            self._sock.close()
        finally:
            self._thread.join(timeout=5)
            self._log_file.close()


@dataclass
class CommandResult:
    command: str
    status: int
    output: str

    def check(self) -> CommandResult:
        assert self.status == 0, f"guest command failed ({self.status}): {self.command}\n{self.output}"
        return self


class GuestShell:
    """Commands run as root in the guest through the ttyS1 shell."""

    def __init__(self, port: SerialLog):
        self._port = port
        self._counter = 0
        self._lock = threading.Lock()

    def send(self, line: str) -> None:
        self._port._sock.sendall(line.encode() + b"\n")

    def wait_ready(self, timeout: float, start: int = 0) -> None:
        self._port.wait_for(re.escape(SHELL_READY), timeout, start, "guest root shell on ttyS1")

    def run(self, command: str, timeout: float = 60) -> CommandResult:
        """Run `command` with bash in the guest, stdin from /dev/null; bounded by `timeout`
        in the guest (timeout -k) and on the host."""
        with self._lock:
            self._counter += 1
            tag = f"@@VNODE-END-{self._counter}"
            start = self._port.offset
            wrapped = (f"timeout -k 3 {int(timeout)} bash -c {shlex.quote(command)} </dev/null 2>&1; "
                       f"echo \"{tag}-\"\"$?@@\"")
            self.send(wrapped)
            found = self._port.wait_for(re.escape(tag) + r"-(\d+)@@", timeout + 10, start,
                                        f"end of guest command {command!r}")
            output = self._port.text(start)
            output = output[:output.find(tag)]
            LOG.info("guest$ %s -> %s\n%s", command, found.group(1), output.rstrip())
            return CommandResult(command, int(found.group(1)), output)

    def start_background(self, command: str) -> None:
        """Start a command that is not expected to return (a reboot), detached from the shell."""
        self.send(f"(sleep 1; {command}) </dev/null >/dev/ttyS0 2>&1 &")


@dataclass
class QemuConfig:
    kernel: Path
    initrd: Path
    disk: Path
    cmdline: str
    work_dir: Path
    memory_mib: int = 1024
    mac: str = MAC
    extra_args: List[str] = field(default_factory=list)
    # Boot like a WalT PC node instead of qemu's -kernel: firmware, the NIC's iPXE,
    # DHCP, then `start.ipxe` and the files it names over TFTP from this directory
    # (qemu's user-mode TFTP server; kernel, initrd and cmdline above are unused).
    # A reboot then resets the machine through the firmware (no -no-reboot).
    network_boot: Optional[Path] = None
    tcp_forwards: Dict[int, int] = field(default_factory=dict)  # host loopback port -> guest port


def walt_cmdline(server_ip: str = "10.0.2.2", model: str = "pc-x86-64", mac: str = MAC,
                 extra: str = "") -> str:
    """The kernel command line a WalT PC node gets (§1, §8), for a disk root."""
    bootif = "01-" + mac.replace(":", "-")
    line = (f"root=/dev/vda rw console=ttyS0,115200 panic=1 "
            f"walt.server.ip={server_ip} walt.node.model={model} BOOTIF={bootif}")
    return f"{line} {extra}".strip()


class VirtualNode:
    """One qemu process; use as a context manager so it is always killed."""

    def __init__(self, config: QemuConfig):
        self.config = config
        self.process: Optional[subprocess.Popen] = None
        self.console: Optional[SerialLog] = None
        self.shell: Optional[GuestShell] = None
        self._shell_port: Optional[SerialLog] = None

    def _argv(self, console_sock: Path, shell_sock: Path) -> List[str]:
        c = self.config
        netdev = "user,id=net0,net=10.0.2.0/24,host=10.0.2.2" + "".join(
            f",hostfwd=tcp:127.0.0.1:{host}-:{guest}" for host, guest in c.tcp_forwards.items())
        if c.network_boot is not None:
            boot = ["-boot", "n"]
            netdev += f",tftp={c.network_boot},bootfile=start.ipxe"
        else:
            boot = ["-no-reboot", "-kernel", str(c.kernel), "-initrd", str(c.initrd), "-append", c.cmdline]
        return [
            "qemu-system-x86_64", "-accel", "tcg", "-m", str(c.memory_mib), "-smp", "1",
            "-display", "none", "-vga", "none", "-monitor", "none", *boot,
            "-drive", f"file={c.disk},format=raw,if=virtio,cache=unsafe",
            "-netdev", netdev,
            "-device", f"virtio-net-pci,netdev=net0,mac={c.mac}",
            "-chardev", f"socket,id=console,path={console_sock},server=on,wait=on",
            "-serial", "chardev:console",
            "-chardev", f"socket,id=shell,path={shell_sock},server=on,wait=on",
            "-serial", "chardev:shell",
            *c.extra_args,
        ]

    def start(self) -> VirtualNode:
        c = self.config
        c.work_dir.mkdir(parents=True, exist_ok=True)
        console_sock, shell_sock = c.work_dir / "console.sock", c.work_dir / "shell.sock"
        for path in (console_sock, shell_sock):
            path.unlink(missing_ok=True)
        argv = self._argv(console_sock, shell_sock)
        LOG.info("starting %s", " ".join(shlex.quote(a) for a in argv))
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                        stdout=open(c.work_dir / "qemu.out", "ab"),
                                        stderr=subprocess.STDOUT, start_new_session=True)
        # qemu waits (wait=on) for each serial client in turn before it runs the guest,
        # so no early boot message is lost.
        self.console = SerialLog(self._connect(console_sock), c.work_dir / "console.log")
        self._shell_port = SerialLog(self._connect(shell_sock), c.work_dir / "shell.log")
        self.shell = GuestShell(self._shell_port)
        return self

    def _connect(self, path: Path, timeout: float = 20) -> socket.socket:
        connected: List[socket.socket] = []

        def attempt() -> bool:
            if self.process.poll() is not None:
                raise VnodeTimeout(f"qemu exited ({self.process.returncode}) before {path.name} opened: "
                                   f"{(self.config.work_dir / 'qemu.out').read_text()[-2000:]}")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(path))
            except OSError:
                sock.close()
                return False
            connected.append(sock)
            return True

        if not wait_until(attempt, timeout, step=0.1):
            raise VnodeTimeout(f"qemu did not open {path} in {timeout}s")
        return connected[0]

    @property
    def shell_port(self) -> SerialLog:
        assert self._shell_port is not None
        return self._shell_port

    def wait_booted(self, timeout: float, start_console: int = 0, start_shell: int = 0) -> None:
        """Boot is done for the harness when the root shell on ttyS1 says it is ready."""
        self.console.wait_for(r"Linux version", min(timeout, 60), start_console, "kernel start")
        self.shell.wait_ready(timeout, start_shell)

    def wait_exit(self, timeout: float) -> Optional[int]:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, 9)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=10)
        for port in (self.console, self._shell_port):
            if port is not None:
                port.close()

    def __enter__(self) -> VirtualNode:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
