"""walt-node mdns: real zeroconf in two network namespaces joined by a veth
pair (one `walt-node mdns publish --hosts` in each), plus the /etc/hosts
block logic and the avahi stand-aside on their own."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.idle import ON_X86_64, has_timeout, in_select
from support.netns import Netns, requires_netns, veth_link
from support.wait import wait_until

from walt_node import mdns as mdns_module
from walt_node.mdns import (
    HOSTS_BEGIN,
    HOSTS_END,
    HostsFileError,
    HostsKeeper,
    Identity,
    Peer,
    avahi_owner,
    hosts_entries,
    render_hosts,
    update_hosts,
)
from walt_node.paths import Paths

REPO = str(Path(__file__).resolve().parents[1])
ORIGINAL_HOSTS = "127.0.0.1\tlocalhost\n# a comment the admin wrote\n10.0.0.9 server.lan server\n"
NODES = {
    "a": dict(hostname="nodea", ip="10.77.0.1", model="rpi-3-b-plus", image="f00dcafe01",
              mac="b8:27:eb:00:00:01"),
    "b": dict(hostname="nodeb", ip="10.77.0.2", model="pc-x86-64", image="f00dcafe02",
              mac="52:54:00:00:00:02"),
}


def node_env(root: Path, node: dict) -> dict:
    return dict(os.environ, PYTHONPATH=REPO, WALT_NODE_ROOT=str(root),
                walt_node_hostname=node["hostname"], walt_node_model=node["model"],
                walt_image_id=node["image"], walt_node_mac=node["mac"])


def mdns(ns: Netns, env: dict, *args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return ns.run([sys.executable, "-m", "walt_node", "mdns", *args], env=env, timeout=timeout, check=False)


@pytest.fixture
def two_nodes(tmp_path):
    """Both namespaces running `mdns publish --hosts`; yields {key: (ns, env, root, log)}."""
    with veth_link((f"{NODES['a']['ip']}/24", f"{NODES['b']['ip']}/24")) as (left, right, _, right_if):
        started = {}
        for key, ns in (("a", left), ("b", right)):
            root = tmp_path / key
            (root / "etc").mkdir(parents=True)
            (root / "etc/hosts").write_text(ORIGINAL_HOSTS)
            env = node_env(root, NODES[key])
            log = open(tmp_path / f"{key}.log", "w")
            proc = ns.popen([sys.executable, "-m", "walt_node", "mdns", "publish", "--hosts"],
                            env=env, stdout=log, stderr=log)
            started[key] = dict(ns=ns, env=env, root=root, proc=proc, log=log, ifname=right_if)
        try:
            yield started
        finally:
            for node in started.values():
                node["log"].close()


@pytest.mark.root
@requires_netns
def test_two_nodes_resolve_each_other_list_peers_and_keep_hosts(two_nodes):
    a, b = two_nodes["a"], two_nodes["b"]

    done = mdns(a["ns"], a["env"], "resolve", "nodeb", "--timeout", "8")
    assert (done.returncode, done.stdout) == (0, "10.77.0.2\n"), done.stderr
    done = mdns(b["ns"], b["env"], "resolve", "nodea.local", "--timeout", "8")
    assert (done.returncode, done.stdout) == (0, "10.77.0.1\n"), done.stderr

    # a browse lasts --timeout seconds: on a loaded machine one may end before both answered
    peers = {}

    def both_listed() -> bool:
        done = mdns(a["ns"], a["env"], "peers", "--json", "--timeout", "2")
        assert done.returncode == 0, done.stderr
        peers.clear()
        peers.update({p["name"]: p for p in json.loads(done.stdout)})
        return {NODES["a"]["hostname"], NODES["b"]["hostname"]} <= set(peers)

    assert wait_until(both_listed, 30, step=0.5), peers
    for key in ("a", "b"):
        node = NODES[key]
        assert peers[node["hostname"]] == {
            "name": node["hostname"], "hostname": f"{node['hostname']}.local", "addresses": [node["ip"]],
            "txt": {"model": node["model"], "image": node["image"], "mac": node["mac"]}}

    # each node's managed block holds the other, and the admin's lines stay as they were
    expected_a = ORIGINAL_HOSTS + f"{HOSTS_BEGIN}\n10.77.0.2\tnodeb.local nodeb\n{HOSTS_END}\n"
    assert wait_until(lambda: (a["root"] / "etc/hosts").read_text() == expected_a, 15), \
        (a["root"] / "etc/hosts").read_text()
    assert wait_until(lambda: "10.77.0.1\tnodea.local nodea\n" in (b["root"] / "etc/hosts").read_text(), 15)

    # an address change on node b is published again and reaches node a
    b["ns"].run(["ip", "addr", "add", "10.77.0.12/24", "dev", b["ifname"]])

    def a_sees_new_address() -> bool:
        done = mdns(a["ns"], a["env"], "resolve", "nodeb", "--timeout", "3")
        return "10.77.0.12" in done.stdout

    assert wait_until(a_sees_new_address, 20, step=0.5)
    assert wait_until(lambda: "10.77.0.12\tnodeb.local nodeb\n" in (a["root"] / "etc/hosts").read_text(), 20)

    # a one-shot `peers --hosts` writes the same block (this node itself left out)
    one_shot_root = a["root"].parent / "one-shot"
    (one_shot_root / "etc").mkdir(parents=True)
    (one_shot_root / "etc/hosts").write_text(ORIGINAL_HOSTS)
    done = mdns(a["ns"], node_env(one_shot_root, NODES["a"]), "peers", "--hosts", "--timeout", "2")
    assert done.returncode == 0, done.stderr
    block = (one_shot_root / "etc/hosts").read_text()[len(ORIGINAL_HOSTS):]
    assert block.startswith(HOSTS_BEGIN) and "nodeb.local nodeb\n" in block and "nodea" not in block

    # stopping a publisher removes its block and leaves the file as the admin wrote it
    a["proc"].terminate()
    assert a["proc"].wait(timeout=15) == 0
    assert (a["root"] / "etc/hosts").read_text() == ORIGINAL_HOSTS


@pytest.mark.root
@requires_netns
@pytest.mark.skipif(not ON_X86_64, reason="syscall numbers are x86_64's")
def test_an_idle_publisher_sleeps_until_an_event_and_still_follows_address_changes(tmp_path):
    """Without --hosts nothing is polled: the main thread waits in select() with no timeout
    (5th argument NULL), wakes for an address change (published again) and for SIGTERM."""
    with veth_link((f"{NODES['a']['ip']}/24", f"{NODES['b']['ip']}/24")) as (left, right, _, right_if):
        root = tmp_path / "b"
        (root / "etc").mkdir(parents=True)
        log_path = tmp_path / "b.log"
        with open(log_path, "w") as log:
            proc = right.popen([sys.executable, "-m", "walt_node", "mdns", "publish"],
                               env=node_env(root, NODES["b"]), stdout=log, stderr=log)
        try:
            assert wait_until(lambda: "published nodeb.local" in log_path.read_text(), 30), \
                log_path.read_text()
            seen: list = []
            assert wait_until(lambda: in_select(proc.pid, seen), 20, step=0.1), seen
            assert not has_timeout(seen), f"select() with a timeout: the publisher polls ({seen})"

            right.run(["ip", "addr", "add", "10.77.0.12/24", "dev", right_if])

            def a_sees_new_address() -> bool:
                done = mdns(left, node_env(tmp_path / "a", NODES["a"]), "resolve", "nodeb", "--timeout", "3")
                return "10.77.0.12" in done.stdout
            assert wait_until(a_sees_new_address, 30, step=0.5), log_path.read_text()
        finally:
            proc.terminate()
            status = proc.wait(timeout=15)
        assert status == 0, log_path.read_text()


@pytest.mark.root
@requires_netns
def test_resolve_unknown_name_fails_within_its_timeout(tmp_path):
    with veth_link(("10.78.0.1/24", "10.78.0.2/24")) as (left, _, _, _):
        started = time.monotonic()
        done = mdns(left, node_env(tmp_path, NODES["a"]), "resolve", "nobody", "--timeout", "1.5")
        assert done.returncode == 2
        assert "no answer for nobody.local within 1.5 s" in done.stderr
        assert time.monotonic() - started < 15


# ------------------------------------------------------------ avahi stand-aside

def test_publish_stands_aside_when_avahi_listens(tmp_path):
    run_dir = tmp_path / "run/avahi-daemon"
    run_dir.mkdir(parents=True)
    with socket.socket(socket.AF_UNIX) as avahi:
        avahi.bind(str(run_dir / "socket"))
        avahi.listen(1)
        assert avahi_owner(Paths(tmp_path)) == f"avahi-daemon (listening on {run_dir / 'socket'})"
        done = subprocess.run([sys.executable, "-m", "walt_node", "mdns", "publish"],
                              env=node_env(tmp_path, NODES["a"]), timeout=20, capture_output=True, text=True)
    assert done.returncode == 0
    assert "already answers mDNS on this node; not publishing" in done.stderr


def test_avahi_pid_file_counts_only_for_a_live_avahi_process(tmp_path):
    run_dir = tmp_path / "run/avahi-daemon"
    run_dir.mkdir(parents=True)
    assert avahi_owner(Paths(tmp_path)) is None
    (run_dir / "pid").write_text(f"{os.getpid()}\n")  # alive, but not avahi: a stale, reused pid
    assert avahi_owner(Paths(tmp_path)) is None
    fake = tmp_path / "avahi-daemon"
    fake.symlink_to("/bin/sleep")  # the kernel names the process after the path it ran
    proc = subprocess.Popen([str(fake), "30"])
    try:
        (run_dir / "pid").write_text(f"{proc.pid}\n")
        # right after fork the child is still named after the python parent: wait for exec
        assert wait_until(lambda: Path(f"/proc/{proc.pid}/comm").read_text() == "avahi-daemon\n", 5)
        assert avahi_owner(Paths(tmp_path)) == f"avahi-daemon (pid {proc.pid}, {run_dir / 'pid'})"
    finally:
        proc.kill()
        proc.wait(timeout=5)
    (run_dir / "socket").write_text("")  # a leftover file, nobody listening
    assert avahi_owner(Paths(tmp_path)) is None


# ------------------------------------------------------------ /etc/hosts block

def peer(host: str, *addresses: str) -> Peer:
    return Peer(name=host, hostname=f"{host}.local", addresses=list(addresses), txt={})


def test_hosts_block_is_added_replaced_and_removed_without_touching_other_lines(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost")  # no final newline
    hosts.chmod(0o644)
    assert update_hosts(hosts, [peer("n2", "10.0.0.2")])
    assert hosts.read_text() == f"127.0.0.1 localhost\n{HOSTS_BEGIN}\n10.0.0.2\tn2.local n2\n{HOSTS_END}\n"
    with open(hosts, "a") as f:
        f.write("10.9.9.9 added-later\n")
    assert update_hosts(hosts, [peer("n3", "10.0.0.3"), peer("n2", "10.0.0.2")])
    assert hosts.read_text() == (f"127.0.0.1 localhost\n{HOSTS_BEGIN}\n10.0.0.2\tn2.local n2\n"
                                 f"10.0.0.3\tn3.local n3\n{HOSTS_END}\n10.9.9.9 added-later\n")
    assert not update_hosts(hosts, [peer("n2", "10.0.0.2"), peer("n3", "10.0.0.3")])  # unchanged: no write
    assert update_hosts(hosts, [])
    assert hosts.read_text() == "127.0.0.1 localhost\n10.9.9.9 added-later\n"
    assert oct(hosts.stat().st_mode & 0o777) == oct(0o644)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hosts"]  # no temporary file left


def test_hosts_block_refuses_damaged_markers():
    for text in (f"{HOSTS_BEGIN}\n1.2.3.4 x\n", f"{HOSTS_END}\n{HOSTS_BEGIN}\n",
                 f"{HOSTS_BEGIN}\n{HOSTS_END}\n{HOSTS_BEGIN}\n{HOSTS_END}\n"):
        with pytest.raises(HostsFileError, match="markers are damaged"):
            render_hosts(text, [])


def test_a_symlinked_hosts_file_stays_a_link(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run/hosts").write_text(ORIGINAL_HOSTS)
    hosts = tmp_path / "hosts"
    hosts.symlink_to("run/hosts")
    assert update_hosts(hosts, [peer("n2", "10.0.0.2")])
    assert os.readlink(hosts) == "run/hosts"
    assert (tmp_path / "run/hosts").read_text() == \
        f"{ORIGINAL_HOSTS}{HOSTS_BEGIN}\n10.0.0.2\tn2.local n2\n{HOSTS_END}\n"


@pytest.mark.root
def test_a_bind_mounted_hosts_file_is_rewritten_in_place(tmp_path):
    """Containers bind-mount /etc/hosts: it cannot be renamed over (EBUSY)."""
    source, hosts = tmp_path / "outside", tmp_path / "hosts"
    source.write_text(ORIGINAL_HOSTS)
    hosts.write_text("")
    script = ("import subprocess, sys\n"
              "from walt_node.mdns import Peer, update_hosts\n"
              "subprocess.run(['mount', '--bind', sys.argv[1], sys.argv[2]], check=True)\n"
              "update_hosts(sys.argv[2], [Peer('n2', 'n2.local', ['10.0.0.2'], {})])\n")
    subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, "-c", script,
                    str(source), str(hosts)], check=True, timeout=30, env=dict(os.environ, PYTHONPATH=REPO))
    assert source.read_text() == f"{ORIGINAL_HOSTS}{HOSTS_BEGIN}\n10.0.0.2\tn2.local n2\n{HOSTS_END}\n"
    assert hosts.read_text() == ""  # the mount namespace is gone: our own file was never touched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hosts", "outside"]  # no temporary left


def test_a_line_appended_to_the_hosts_file_while_the_block_is_rendered_is_kept(tmp_path, monkeypatch):
    hosts = tmp_path / "hosts"
    hosts.write_text(ORIGINAL_HOSTS)
    real_render = mdns_module.render_hosts
    renders = []

    def render_while_the_admin_appends(text, entries):
        renders.append(text)
        if len(renders) == 1:
            with open(hosts, "a") as admin:
                admin.write("10.9.9.9 added-by-admin\n")
        return real_render(text, entries)

    monkeypatch.setattr(mdns_module, "render_hosts", render_while_the_admin_appends)
    assert update_hosts(hosts, [peer("n2", "10.0.0.2")])
    assert hosts.read_text() == (f"{ORIGINAL_HOSTS}10.9.9.9 added-by-admin\n"
                                 f"{HOSTS_BEGIN}\n10.0.0.2\tn2.local n2\n{HOSTS_END}\n")


def test_a_peer_refused_again_and_again_is_logged_once(tmp_path, caplog):
    keeper = HostsKeeper(Paths(tmp_path), Identity("nodea", {}))
    for _ in range(3):
        keeper.refuse("peer 'x' announces host 'x.example': left out")
    assert [r.getMessage() for r in caplog.records] == ["peer 'x' announces host 'x.example': left out"]


def test_hostile_peer_names_and_addresses_never_reach_the_hosts_file():
    entries = hosts_entries([
        peer("evil\n0.0.0.0 bank.example", "10.0.0.66"),
        peer("spaced name", "10.0.0.67"),
        peer("ok-node", "10.0.0.5", "not-an-ip", "fe80::1"),
    ])
    assert entries == [("10.0.0.5", ["ok-node.local", "ok-node"])]


# ------------------------------------------------------------ hostile peers

HOSTILE_SERVICES = [  # (service, host it claims, addresses)
    ("goodpeer", "goodpeer.local.", ["10.79.0.2"]),
    ("github", "github.com.local.", ["10.79.0.2"]),
    ("loopname", "localhost.local.", ["10.79.0.2"]),
    ("servername", "server.local.", ["10.79.0.2"]),  # `server` is a name of the admin's lines
    ("printer", "printer.local.", ["10.79.0.2"]),  # and so is `printer.local`
    ("self", "NodeA.local.", ["10.79.0.2"]),  # this node's own name
    ("addresses", "addresses.local.", ["0.0.0.0", "127.0.0.1", "224.0.0.251", "255.255.255.255",
                                       "169.254.7.7", "240.0.0.1", "10.79.0.0", "10.79.0.255",
                                       "10.79.0.3"]),
]


@pytest.mark.root
@requires_netns
def test_a_hostile_peer_cannot_claim_names_or_addresses_in_the_hosts_file(tmp_path):
    original = ORIGINAL_HOSTS + "10.0.0.7 printer.local\n"
    spec = json.dumps([dict(name=n, server=h, addresses=a) for n, h, a in HOSTILE_SERVICES])
    with veth_link(("10.79.0.1/24", "10.79.0.2/24")) as (node, lan, _, _):
        hostile = lan.popen([sys.executable, "-m", "support.mdns_peer", spec], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=f"{REPO}/tests:{REPO}"))
        assert hostile.stdout.readline() == "ready\n"
        (tmp_path / "etc").mkdir()
        hosts = tmp_path / "etc/hosts"
        hosts.write_text(original)
        runs = []

        def every_service_seen() -> bool:  # the positive event: node A saw all of them
            runs.append(mdns(node, node_env(tmp_path, NODES["a"]), "peers", "--json", "--hosts",
                             "--timeout", "2"))
            assert runs[-1].returncode == 0, runs[-1].stderr
            seen = {p["name"]: p for p in json.loads(runs[-1].stdout)}
            return all(name in seen and seen[name]["addresses"] for name, _, _ in HOSTILE_SERVICES)

        assert wait_until(every_service_seen, 60, step=0)
        hostile.stdin.close()
    assert hosts.read_text() == original + (f"{HOSTS_BEGIN}\n10.79.0.2\tgoodpeer.local goodpeer\n"
                                            f"10.79.0.3\taddresses.local addresses\n{HOSTS_END}\n")
    refusals = runs[-1].stderr
    for claim in ("'github.com.local'", "'localhost.local'", "'server.local'", "'printer.local'",
                  "'NodeA.local'", "'0.0.0.0'", "'127.0.0.1'", "'224.0.0.251'", "'255.255.255.255'",
                  "'169.254.7.7'", "'240.0.0.1'", "'10.79.0.0'", "'10.79.0.255'"):
        assert claim in refusals and "left out of the hosts file" in refusals


def test_peers_may_claim_only_free_single_label_local_names_at_unicast_addresses():
    refusals = []
    taken = {"localhost", "server", "server.lan", "printer.local"}
    entries = hosts_entries([
        Peer("good", "good.local", ["10.0.0.5", "0.0.0.0", "127.0.0.2", "239.1.2.3", "169.254.0.9",
                                    "255.255.255.255", "10.0.0.6"], {}),
        Peer("dotted", "github.com.local", ["10.0.0.7"], {}),
        Peer("bare", "github", ["10.0.0.7"], {}),
        Peer("other-domain", "x.example", ["10.0.0.7"], {}),
        Peer("upper", "SERVER.local", ["10.0.0.7"], {}),
        Peer("printer", "printer.local", ["10.0.0.7"], {}),
        Peer("loop", "localhost.local", ["10.0.0.7"], {}),
        Peer("net", "net.local", ["10.0.0.0", "10.0.0.255", "10.0.0.7"], {}),
    ], taken, refusals.append, [ipaddress.IPv4Network("10.0.0.0/24")])
    assert entries == [("10.0.0.5", ["good.local", "good"]), ("10.0.0.6", ["good.local", "good"]),
                       ("10.0.0.7", ["net.local", "net"])]
    assert len(refusals) == 5 + 6 + 2


@pytest.mark.root
@requires_netns
def test_a_peers_txt_data_is_printed_escaped(tmp_path):
    """TXT values are the peer's own words: terminal escapes and newlines that would
    fake a line of the table are shown escaped."""
    txt = {"model": "\x1b]0;owned\x07\x1b[2J", "image": "f00d\nFAKE 10.0.0.1 trusted-node", "mac": "m"}
    spec = json.dumps([dict(name="tricky", server="tricky.local.", addresses=["10.78.0.2"], txt=txt)])
    with veth_link(("10.78.0.1/24", "10.78.0.2/24")) as (node, lan, _, _):
        peer = lan.popen([sys.executable, "-m", "support.mdns_peer", spec], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True,
                         env=dict(os.environ, PYTHONPATH=f"{REPO}/tests:{REPO}"))
        assert peer.stdout.readline() == "ready\n"
        runs = []

        def listed() -> bool:  # the positive event: the table shows the peer
            runs.append(mdns(node, node_env(tmp_path, NODES["a"]), "peers", "--timeout", "2"))
            assert runs[-1].returncode == 0, runs[-1].stderr
            return "tricky" in runs[-1].stdout

        assert wait_until(listed, 60, step=0)
        peer.stdin.close()
    table = runs[-1].stdout
    assert "\x1b" not in table and "\x07" not in table
    assert not any(line.startswith("FAKE") for line in table.splitlines())
    assert "\\x1b]0;owned\\x07\\x1b[2J" in table and "f00d\\nFAKE 10.0.0.1 trusted-node" in table


def test_zeroconf_loads_without_ldconfig_and_its_archive_modules() -> None:
    """ifaddr's import asks ctypes.util for libc (ldconfig in a child, shutil, tempfile,
    bz2, lzma kept by the resident process): walt-node imports it without that, and
    getifaddrs still works; a later ``import ctypes.util`` gets the real module."""
    script = (
        "import sys\n"
        "from walt_node.mdns import local_ipv4_addresses, new_zeroconf\n"
        "zc = new_zeroconf(['127.0.0.1'])\n"
        "zc.close()\n"
        "local_ipv4_addresses()\n"
        "print(sorted(m for m in ('shutil', 'tempfile', 'bz2', 'lzma', 'ctypes.util')\n"
        "             if m in sys.modules))\n"
        "import ifaddr\n"
        "print(sorted(a.name for a in ifaddr.get_adapters()))\n"
        "import ctypes.util\n"
        "print(ctypes.util.find_library('c') is not None)\n")
    done = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True,
                          timeout=60, cwd=Path(mdns_module.__file__).parent.parent)
    assert done.returncode == 0, done.stderr
    loaded, adapters, real_util = done.stdout.splitlines()
    assert loaded == "[]"
    assert "'lo'" in adapters
    assert real_util == "True"
