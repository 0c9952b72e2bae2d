"""Shared fixtures: a running simulator and a temporary node root.

- ``sim``: a :class:`walt_node.sim.Simulator` on loopback (automatic ports)
  with the sample platform of :mod:`walt_node.sim.sample`: node ``node1``
  (mac 52:54:00:12:34:56, ip 127.0.0.1, model pc-x86-64) bound to
  ``waltplatform/pc-x86-64-default:latest``; a second image
  ``waltplatform/pc-x86-64-other:latest`` to ``sim.bind`` it to.
- ``node_root``: a temporary ``WALT_NODE_ROOT`` (already set in the
  environment) with /bin/walt-env, /proc/cmdline, /etc/hostname and the usual
  empty directories; server 127.0.0.1 on the WalT default ports.
- ``sim_node_root``: the same, pointing at the ``sim`` fixture's ports.
- ``users_directory``: a directory owned by a second local user (``nobody``),
  who can plant files there with :func:`support.users.run_as_other_user`.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Iterator

import pytest
from support.kexec import Recorder, fixture_simulator, prepare_node_root
from support.logs import DaemonProcess, LogServer

from walt_node.sim import Simulator
from walt_node.sim.sample import make_node_root, sample_config

# A suite started in the background by a shell without job control (a CI step, `cmd &` in a
# script) inherits SIGINT ignored, and so would every program the tests start: Ctrl-C tests
# would then wait forever. SIGINT gets back its default meaning (a handler here, so children
# start with the default action).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# facts the environment could set: cleared so a developer's shell cannot change a test
FACT_ENV_VARS = ("walt_server_ip", "walt_server_logs_port", "walt_server_rpc_port",
                 "walt_server_http_port", "walt_image_id", "walt_boot_mode", "walt_node_mac",
                 "walt_node_model", "walt_node_hostname")


@pytest.fixture(scope="session", autouse=True)
def isolated_default_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test runs with WALT_NODE_ROOT pointing at a scratch node root unless it
    sets its own, so no test (or program it starts) touches this machine's
    /var/lib/walt, /etc/walt or /run: a forgotten root costs a test, not the host."""
    import os

    root = tmp_path_factory.mktemp("default-node-root")
    saved = {name: os.environ.get(name) for name in ("WALT_NODE_ROOT", *FACT_ENV_VARS)}
    os.environ["WALT_NODE_ROOT"] = str(root)
    for name in FACT_ENV_VARS:
        os.environ.pop(name, None)
    yield root
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    base = tmp_path_factory.mktemp("sim")
    with Simulator(sample_config(base), host="127.0.0.1") as simulator:
        yield simulator


@pytest.fixture
def node_root(tmp_path_factory: pytest.TempPathFactory,
              monkeypatch: pytest.MonkeyPatch) -> Path:
    root = make_node_root(tmp_path_factory.mktemp("node-root"))
    monkeypatch.setenv("WALT_NODE_ROOT", str(root))
    for name in FACT_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    return root


@pytest.fixture
def sim_node_root(sim: Simulator, node_root: Path) -> Path:
    return make_node_root(node_root, server_ip=sim.host, logs_port=sim.logs_port,
                          rpc_port=sim.rpc_port, http_port=sim.http_port)


@pytest.fixture(scope="session")
def upstream():
    """The upstream WalT 10.0 venv (scripts/upstream-venv.sh, cached): path, python and
    site-packages. If it cannot be built, conformance tests fail under CI (CI=true) and
    are skipped, with the reason shown, elsewhere."""
    from support.upstream import UpstreamUnavailable, build_upstream, in_ci

    try:
        return build_upstream()
    except UpstreamUnavailable as error:
        if in_ci():
            pytest.fail(f"the upstream WalT 10.0 oracle is needed in CI: {error}")
        pytest.skip(f"upstream WalT 10.0 oracle unavailable: {error}")


@pytest.fixture
def users_directory() -> Iterator[Path]:
    import os

    from support.users import users_directory as make_users_directory

    if os.geteuid() != 0:
        pytest.skip("acting as a second local user needs root")
    with make_users_directory() as path:
        yield path


@pytest.fixture
def recorder(tmp_path: Path) -> Recorder:
    """Recorder programs (kexec, reboot, systemctl, modprobe...) first on PATH: what would have run."""
    return Recorder(tmp_path)


@pytest.fixture
def boot_sim() -> Iterator[Simulator]:
    """A simulator serving the fixture images' boot files (tests/data/ipxe)."""
    with fixture_simulator() as simulator:
        yield simulator


@pytest.fixture
def boot_root(tmp_path: Path, boot_sim: Simulator) -> Path:
    """A node root for ``boot_sim``'s node (kexec support, walt-env, cmdline)."""
    return prepare_node_root(tmp_path / "root", boot_sim)


@pytest.fixture
def server() -> Iterator[LogServer]:
    """A recording logs server on loopback (tests/support/logs.py)."""
    srv = LogServer().start()
    yield srv
    srv.crash()


@pytest.fixture
def daemon(tmp_path: Path, server: LogServer) -> Iterator[DaemonProcess]:
    """walt-node's logs daemon on a node root in ``tmp_path``, sending to ``server``
    (its /tmp is world-writable like a node's, for monitor requests' FIFOs)."""
    (tmp_path / "tmp").mkdir(mode=0o1777)
    (tmp_path / "tmp").chmod(0o1777)
    proc = DaemonProcess(tmp_path, server.port).start()
    yield proc
    proc.kill()
