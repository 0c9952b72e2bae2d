"""Node facts: every source, their precedence (environment > /bin/walt-env >
/proc/cmdline > route to the server > WalT default), walt-env parsed as data,
clear errors, and the `walt-node facts` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional

import pytest
from support.netns import _ip, namespace, requires_netns

from walt_node.facts import FactInvalid, FactMissing, NodeFacts, ServerAddress, parse_walt_env
from walt_node.paths import Paths
from walt_node.sim.sample import DEFAULT_IMAGE_ID, NODE_MAC, NODE_MODEL, NODE_NAME, walt_env_text


def facts(root: Path, env: Optional[Dict[str, str]] = None) -> NodeFacts:
    return NodeFacts(Paths(root), env=env or {})


def write_walt_env(root: Path, values: Dict[str, str]) -> None:
    (root / "bin" / "walt-env").write_text(walt_env_text(values))


def write_cmdline(root: Path, text: str) -> None:
    (root / "proc" / "cmdline").write_text(text + "\n")


# ------------------------------------------------------------ each source

def test_facts_of_a_booted_node(node_root: Path) -> None:
    node = facts(node_root)
    assert node.server() == ServerAddress("127.0.0.1", 12347, 12345, 80)
    assert (node.model, node.mac, node.image_id, node.boot_mode, node.hostname) == (
        NODE_MODEL, NODE_MAC, DEFAULT_IMAGE_ID, "network", NODE_NAME)
    assert node.fact("server_ip").source.endswith("bin/walt-env")
    assert node.fact("model").source == f"walt.node.model= in {node_root}/proc/cmdline"
    assert node.fact("mac").source.startswith("walt.node.mac=")
    assert node.fact("http_port").source == "WalT default"
    assert node.fact("boot_mode").source.startswith("WalT default")
    assert node.fact("hostname").source == str(node_root / "etc" / "hostname")


ENV_OVERRIDES = {
    "walt_server_ip": ("server_ip", "10.1.2.3", "10.1.2.3"),
    "walt_server_logs_port": ("logs_port", "2000", 2000),
    "walt_server_rpc_port": ("rpc_port", "2001", 2001),
    "walt_server_http_port": ("http_port", "8080", 8080),
    "walt_image_id": ("image_id", "0123abcd", "0123abcd"),
    "walt_boot_mode": ("boot_mode", "hybrid-persistent", "hybrid-persistent"),
    "walt_node_mac": ("mac", "AA-BB-CC-DD-EE-01", "aa:bb:cc:dd:ee:01"),
    "walt_node_model": ("model", "rpi-4-b", "rpi-4-b"),
    "walt_node_hostname": ("hostname", "other", "other"),
}


@pytest.mark.parametrize("var", sorted(ENV_OVERRIDES))
def test_environment_wins_over_files(node_root: Path, var: str) -> None:
    name, text, value = ENV_OVERRIDES[var]
    node = facts(node_root, {var: text})
    assert getattr(node, name) == value
    assert node.fact(name).source == f"environment variable {var}"


def test_walt_env_wins_over_cmdline_then_cmdline_is_used(node_root: Path) -> None:
    write_walt_env(node_root, {"walt_server_ip": "192.168.1.1", "walt_node_model": "rpi-3-b+"})
    write_cmdline(node_root, "walt.server.ip=192.168.9.9 walt.node.model=pc-x86-64 "
                             "walt.node.mac=52:54:00:00:00:07")
    node = facts(node_root)
    assert (node.server_ip, node.model) == ("192.168.1.1", "rpi-3-b+")
    write_walt_env(node_root, {"walt_image_id": "x"})
    node = facts(node_root)
    assert (node.server_ip, node.model) == ("192.168.9.9", "pc-x86-64")
    assert node.fact("server_ip").source.startswith("walt.server.ip=")


def test_ports_come_from_walt_env_else_defaults(node_root: Path) -> None:
    write_walt_env(node_root, {"walt_server_ip": "10.0.0.1", "walt_server_logs_port": "3000"})
    node = facts(node_root)
    assert (node.logs_port, node.rpc_port, node.http_port) == (3000, 12345, 80)
    assert node.fact("logs_port").source.endswith("walt-env")
    assert node.fact("rpc_port").source == "WalT default"


def test_bootif_gives_the_mac_of_pc_nodes(node_root: Path) -> None:
    write_cmdline(node_root, "walt.server.ip=10.0.0.1 BOOTIF=01-52-54-00-AB-CD-EF")
    node = facts(node_root)
    assert node.mac == "52:54:00:ab:cd:ef"
    assert node.fact("mac").source.startswith("BOOTIF=")


def test_walt_node_mac_wins_over_bootif(node_root: Path) -> None:
    write_cmdline(node_root, "BOOTIF=01-52-54-00-ab-cd-ef walt.node.mac=52:54:00:00:00:01")
    assert facts(node_root).mac == "52:54:00:00:00:01"


def test_invalid_bootif_is_reported(node_root: Path) -> None:
    write_cmdline(node_root, "BOOTIF=01-zz-54-00-ab-cd")
    with pytest.raises(FactInvalid, match="not a MAC address"):
        facts(node_root).fact("mac")


def test_cmdline_quoting_and_last_duplicate_wins(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    write_cmdline(tmp_path, 'console=ttyS0 walt.node.model=a walt.node.model="b" '
                            'walt.server.ip=10.0.0.2 quiet')
    node = facts(tmp_path)
    assert node.model == "b" and node.server_ip == "10.0.0.2"


@requires_netns
def test_mac_falls_back_to_the_interface_routing_to_the_server(tmp_path: Path) -> None:
    root = tmp_path
    (root / "proc").mkdir()
    write_cmdline(root, "walt.server.ip=10.88.0.254 walt.node.model=pc-x86-64")
    code = ("from walt_node.facts import NodeFacts;"
            "f = NodeFacts(); print(f.mac); print(f.fact('mac').source)")
    with namespace("facts") as ns:
        _ip("-n", ns.name, "link", "add", "eth7", "type", "veth", "peer", "name", "eth8")
        _ip("-n", ns.name, "link", "set", "eth8", "up")
        _ip("-n", ns.name, "link", "set", "eth7", "address", "02:11:22:33:44:55")
        _ip("-n", ns.name, "addr", "add", "10.88.0.1/24", "dev", "eth7")
        _ip("-n", ns.name, "link", "set", "eth7", "up")
        done = ns.run([sys.executable, "-c", code], env={"WALT_NODE_ROOT": str(root)})
    assert done.stdout.splitlines() == ["02:11:22:33:44:55",
                                        "the interface routing to the server (netlink)"]


# ---------------------------------------------------- walt-env is only data

def test_walt_env_quoting_forms(tmp_path: Path) -> None:
    text = """#!/bin/sh
# written by the server
export walt_server_ip="192.168.12.1"
walt_server_rpc_port='12345'; export walt_server_rpc_port
export walt_node_model="pc x86 64"   # a comment
export walt_image_id=abc\\ def
export walt_boot_mode="hybrid-volatile"
"""
    values = parse_walt_env(text)
    assert values["walt_server_ip"] == "192.168.12.1"
    assert values["walt_server_rpc_port"] == "12345"
    assert values["walt_node_model"] == "pc x86 64"
    assert values["walt_image_id"] == "abc def"
    assert values["walt_boot_mode"] == "hybrid-volatile"


def test_command_substitution_is_kept_literal_and_never_run(node_root: Path, tmp_path: Path) -> None:
    canary = tmp_path / "executed"
    (node_root / "bin" / "walt-env").write_text(
        f'export walt_image_id="$(touch {canary})"\n'
        "export walt_server_ip=$(hostname)\n"
        "export walt_node_model=${HOME}\n"
        f"touch {canary}\n")
    node = facts(node_root)
    assert node.image_id == f"$(touch {canary})"
    assert node.server_ip == "$(hostname)"
    assert node.model == "${HOME}"
    assert not canary.exists()


def test_unbalanced_quotes_do_not_break_other_lines(node_root: Path) -> None:
    (node_root / "bin" / "walt-env").write_text('export walt_image_id="oops\n'
                                                "export walt_server_ip=10.9.9.9\n")
    node = facts(node_root)
    assert node.server_ip == "10.9.9.9"
    with pytest.raises(FactMissing):
        node.fact("image_id")


def test_arguments_of_other_commands_are_not_assignments() -> None:
    values = parse_walt_env("echo walt_server_ip=6.6.6.6\nwalt_node_model=x some-command\n"
                            "a=1 b='2 3' && export c=4 | true\n")
    assert values == {"a": "1", "b": "2 3", "c": "4"}


# ------------------------------------------------------------------ errors

def test_missing_facts_list_every_source(tmp_path: Path) -> None:
    node = facts(tmp_path)  # an empty root: nothing from the server
    with pytest.raises(FactMissing) as error:
        node.fact("server_ip")
    message = str(error.value)
    for source in ("environment variable walt_server_ip", f"{tmp_path}/bin/walt-env",
                   f"walt.server.ip= in {tmp_path}/proc/cmdline"):
        assert source in message
    with pytest.raises(FactMissing) as error:
        node.fact("mac")
    assert error.value.tried == [
        "environment variable walt_node_mac", f"walt_node_mac in {tmp_path}/bin/walt-env",
        f"walt.node.mac= in {tmp_path}/proc/cmdline", f"BOOTIF= in {tmp_path}/proc/cmdline",
        "the interface routing to the server (netlink)"]
    for name in ("model", "image_id", "hostname"):
        with pytest.raises(FactMissing, match=name):
            node.fact(name)
    assert node.logs_port == 12347 and node.boot_mode == "network"  # defaults still apply


@pytest.mark.parametrize("value", ["abc", "0", "70000", "-5", "12 34"])
def test_invalid_port_names_value_and_source(node_root: Path, value: str) -> None:
    with pytest.raises(FactInvalid) as error:
        facts(node_root, {"walt_server_rpc_port": value}).fact("rpc_port")
    assert f"'{value}'" in str(error.value) and "walt_server_rpc_port" in str(error.value)


def test_invalid_boot_mode_lists_valid_ones(node_root: Path) -> None:
    write_walt_env(node_root, {"walt_boot_mode": "hybrid"})
    with pytest.raises(FactInvalid) as error:
        facts(node_root).fact("boot_mode")
    assert "'hybrid'" in str(error.value)
    for mode in ("network", "hybrid-volatile", "hybrid-persistent"):
        assert mode in str(error.value)


def test_virtual_node_detection(node_root: Path) -> None:
    assert facts(node_root).is_virtual() is False
    (node_root / "sys/devices/virtual/dmi/id/sys_vendor").write_text("QEMU\n")
    assert facts(node_root).is_virtual() is True


# ----------------------------------------------------------- the command

def run_facts(root: Path, *args: str, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    environment = {"WALT_NODE_ROOT": str(root), "PATH": "/usr/bin:/bin", **(env or {})}
    return subprocess.run([sys.executable, "-m", "walt_node", "facts", *args], env=environment,
                          capture_output=True, text=True, timeout=20)


def test_facts_command_prints_values_and_sources(node_root: Path) -> None:
    done = run_facts(node_root, env={"walt_server_http_port": "8080"})
    assert done.returncode == 0, done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines()}
    assert set(lines) == set(NodeFacts.FACT_NAMES)
    assert "127.0.0.1" in lines["server_ip"] and "walt-env" in lines["server_ip"]
    assert "8080" in lines["http_port"] and "environment variable" in lines["http_port"]
    assert NODE_MAC in lines["mac"] and "cmdline" in lines["mac"]


def test_facts_command_json_and_missing_facts(tmp_path: Path) -> None:
    done = run_facts(tmp_path, "--json")
    assert done.returncode == 1
    data = json.loads(done.stdout)
    assert data["facts"]["logs_port"] == {"value": "12347", "source": "WalT default"}
    assert "server_ip" in data["problems"] and "tried" in data["problems"]["server_ip"]
    text = run_facts(tmp_path, env={"walt_server_rpc_port": "nope"})
    assert text.returncode == 1
    assert "rpc_port" in text.stdout and "'nope'" in text.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (UTS and mount namespaces)")
def test_running_node_hostname_is_the_kernel_name_not_a_stale_etc_hostname(tmp_path: Path) -> None:
    """The server deletes /etc/hostname from images; a leftover one must not rename the
    node (mdns would publish the wrong name). A private UTS namespace names the kernel."""
    stale = tmp_path / "hostname"
    stale.write_text("stale-build-name\n")
    script = ("import json, sys\n"
              "from walt_node.facts import NodeFacts\n"
              "from walt_node.mdns import node_identity\n"
              "facts = NodeFacts()\n"
              "print(json.dumps([facts.hostname, facts.fact('hostname').source, "
              "node_identity(facts).hostname]))\n")
    done = subprocess.run(
        ["unshare", "--uts", "--mount", "sh", "-ec",
         'mount --make-rprivate / && hostname kernel-name && mount --bind "$1" /etc/hostname && '
         'exec "$2" -c "$3"', "sh", str(stale), sys.executable, script],
        capture_output=True, text=True, timeout=60, env=dict(os.environ, WALT_NODE_ROOT="/"))
    assert done.returncode == 0, done.stderr
    hostname, source, published = json.loads(done.stdout)
    assert (hostname, published) == ("kernel-name", "kernel-name")
    assert "kernel" in source


def test_image_tree_hostname_comes_from_its_etc_hostname(node_root: Path) -> None:
    assert NodeFacts(Paths(node_root)).hostname == "node1"
    (node_root / "proc/sys/kernel").mkdir(parents=True)
    (node_root / "proc/sys/kernel/hostname").write_text("booted-name\n")
    assert NodeFacts(Paths(node_root)).hostname == "booted-name"
