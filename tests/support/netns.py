"""Network namespaces and veth pairs for tests, always cleaned up.

Usage::

    with veth_link(("10.77.0.1/24", "10.77.0.2/24")) as (left, right):
        left.run(["ip", "addr"])
        proc = right.popen(["lldpd", "-d", ...])

Every namespace and interface name carries this test run's pid and a
counter, so parallel runs never clash; leaving the ``with`` block kills the
processes started with :meth:`Netns.popen` and deletes the namespaces (which
deletes their veth ends too).
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from contextlib import contextmanager
from typing import Iterator, List, Optional, Sequence, Tuple

import pytest

_counter = itertools.count()
COMMAND_TIMEOUT = 10.0


def netns_unavailable_reason() -> Optional[str]:
    """Why network namespaces cannot be used here, or None if they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the 'ip' command (iproute2) is missing"
    return None


requires_netns = pytest.mark.skipif(netns_unavailable_reason() is not None,
                                    reason=str(netns_unavailable_reason()))


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, timeout=COMMAND_TIMEOUT,
                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


class Netns:
    def __init__(self, name: str):
        self.name = name
        self.processes: List[subprocess.Popen] = []

    def argv(self, argv: Sequence[str]) -> List[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: Sequence[str], timeout: float = COMMAND_TIMEOUT,
            check: bool = True, env: Optional[dict] = None) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(argv), check=check, timeout=timeout, text=True,
                              capture_output=True, env=env)

    def popen(self, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        """Start a process inside the namespace; it is killed on cleanup."""
        kwargs.setdefault("stdout", subprocess.DEVNULL)
        kwargs.setdefault("stderr", subprocess.DEVNULL)
        proc = subprocess.Popen(self.argv(argv), **kwargs)
        self.processes.append(proc)
        return proc

    def stop_processes(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self.processes.clear()


def unique_tag() -> str:
    """Short and unique per test run and per call (fits in a 15-char ifname)."""
    return f"{os.getpid() % 100000}x{next(_counter)}"


@contextmanager
def namespace(label: str = "ns") -> Iterator[Netns]:
    ns = Netns(f"wnt-{label}-{unique_tag()}")
    _ip("netns", "add", ns.name)
    try:
        _ip("-n", ns.name, "link", "set", "lo", "up")
        yield ns
    finally:
        ns.stop_processes()
        subprocess.run(["ip", "netns", "del", ns.name], timeout=COMMAND_TIMEOUT,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@contextmanager
def veth_link(addresses: Tuple[Optional[str], Optional[str]] = (None, None),
              macs: Tuple[Optional[str], Optional[str]] = (None, None),
              ) -> Iterator[Tuple[Netns, Netns, str, str]]:
    """Two namespaces joined by a veth pair, both ends up.

    Yields (left, right, left_ifname, right_ifname). ``addresses`` are
    optional CIDR addresses for each end, ``macs`` optional MAC addresses.
    """
    tag = unique_tag()
    names = (f"wa{tag}"[:15], f"wb{tag}"[:15])
    with namespace("a") as left, namespace("b") as right:
        _ip("link", "add", names[0], "netns", left.name, "type", "veth",
            "peer", "name", names[1], "netns", right.name)
        for ns, ifname, address, mac in zip((left, right), names, addresses, macs):
            if mac:
                _ip("-n", ns.name, "link", "set", ifname, "address", mac)
            if address:
                _ip("-n", ns.name, "addr", "add", address, "dev", ifname)
            _ip("-n", ns.name, "link", "set", ifname, "up")
        yield left, right, names[0], names[1]
