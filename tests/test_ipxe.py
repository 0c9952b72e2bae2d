"""The iPXE interpreter: pure semantics on in-memory scripts, then the WalT-shaped
fixture tree served by the simulator over HTTP and fake TFTP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List

import pytest
from support.kexec import (
    MAC,
    QEMU_PRODUCT,
    SIM_GATEWAY,
    SIM_NETMASK,
    dead_port,
    expected_cmdline,
    fixture_simulator,
    model_file,
)

from walt_node.bounds import Deadline
from walt_node.facts import ServerAddress
from walt_node.reboot.ipxe import (
    BOOT_ROOT,
    FetchFailed,
    IpxeError,
    IpxeFatal,
    Location,
    expand,
    interpret,
    parse_url,
    resolve,
)
from walt_node.reboot.source import LocalSource, ServerSource
from walt_node.sim import Simulator

KERNEL = b"K" * 16


@pytest.fixture
def ipxe_sim() -> Iterator[Simulator]:
    with fixture_simulator() as simulator:
        yield simulator


class Files:
    """An in-memory boot tree; records what was fetched."""

    def __init__(self, files: Dict[str, object]):
        self.files = {name: (data.encode() if isinstance(data, str) else data)
                      for name, data in files.items()}
        self.fetched: List[str] = []

    def __call__(self, location: Location) -> bytes:
        self.fetched.append(str(location))
        try:
            return self.files[str(location)]
        except KeyError:
            raise FetchFailed("no such file") from None


def plan_of(files: Dict[str, object], variables=None):
    return interpret(Files(files), variables)


def script(*lines: str) -> str:
    return "#!ipxe\n" + "\n".join(lines) + "\n"


def messages_of(*lines: str, variables=None) -> List[str]:
    files = {"/start.ipxe": script(*lines, "kernel /k", "boot"), "/k": KERNEL}
    return plan_of(files, variables).messages


# ------------------------------------------------------------ operators

@pytest.mark.parametrize("line, expected", [
    ("iseq 1 2 || echo A && echo B", ["A", "B"]),
    # skipped commands keep the last status: 'iseq 1 1' succeeded, so && runs B
    ("iseq 1 1 || echo A && echo B", ["B"]),
    ("iseq 1 1 && iseq 1 2 || echo C", ["C"]),
    ("iseq 1 2 && echo X || echo Y", ["Y"]),
    ("iseq 1 2 ; echo Z", ["Z"]),
    ("echo a # echo b", ["a"]),
    ("isset ${nothing} || echo unset", ["unset"]),
])
def test_lists_follow_ipxe_left_to_right_status(line: str, expected: List[str]) -> None:
    assert messages_of(line) == expected


def test_a_failing_last_command_fails_the_line_and_the_script() -> None:
    files = {"/start.ipxe": script("echo start", "iseq 1 1 && iseq a b", "kernel /k", "boot"),
             "/k": KERNEL}
    with pytest.raises(IpxeError) as error:
        plan_of(files)
    assert str(error.value).startswith("/start.ipxe:3: iseq: 'a' != 'b'")


# ------------------------------------------------------------ variables

def test_expansion_unknown_empty_nested_typed_and_scoped() -> None:
    variables = {"mac": "52:54:00:12:34:56", "which": "name", "name": "node1"}
    assert expand("${unknown}x", variables) == "x"
    assert expand("${${which}}", variables) == "node1"
    assert expand("01-${mac:hexhyp}", variables) == "01-52-54-00-12-34-56"
    assert expand("${net0/mac:hexraw}", variables) == "525400123456"
    assert expand("${net0/mac}", variables) == "52:54:00:12:34:56"
    assert expand("${unterminated", variables) == "${unterminated"


def test_set_joins_words_and_set_without_value_clears() -> None:
    assert messages_of("set a x  y", "echo [${a}]", "set a", "echo [${a}]") == ["[x y]", "[]"]


def test_a_variable_holding_spaces_stays_one_argument() -> None:
    files = {"/start.ipxe": script("set dir Standard PC (i440FX + PIIX, 1996)",
                                   "chain /models/${dir}/params.ipxe", "kernel /k", "boot"),
             "/models/Standard PC (i440FX + PIIX, 1996)/params.ipxe": script("echo found"),
             "/k": KERNEL}
    assert plan_of(files).messages == ["found"]


def test_self_referencing_expansion_is_fatal() -> None:
    # iPXE re-expands what it substituted: a preset value (here a hostname from the
    # server) that refers to itself would never end
    files = {"/start.ipxe": script("echo start", "echo ${hostname}", "kernel /k", "boot"),
             "/k": KERNEL}
    with pytest.raises(IpxeFatal, match=r"^/start.ipxe:3: variable expansion does not end"):
        plan_of(files, {"hostname": "x${hostname}"})


@pytest.mark.parametrize("lines", [
    # each line doubles the value: 2**40 characters by the end, if nothing stopped it
    ["set a 0123456789abcdef"] + ["set a ${a}${a}"] * 40,
    # one line of many references to a 32 KiB value
    ["set a 0123456789abcdef"] + ["set a ${a}${a}"] * 11 + ["set b" + " ${a}" * 1000],
], ids=["doubling", "many-words"])
def test_expansion_past_the_size_bound_is_refused_logged_and_counted(lines) -> None:
    from walt_node.bounds import LIMITS

    kind = "iPXE expansion over the size bound"
    before = LIMITS.counts.get(kind, 0)
    files = {"/start.ipxe": script(*lines, "kernel /k", "boot"), "/k": KERNEL}
    with pytest.raises(IpxeFatal, match=r"^/start.ipxe:\d+: iPXE expansion over the size bound: "
                                        r"a command line expands to more than 65536 characters"):
        plan_of(files)
    assert LIMITS.counts[kind] == before + 1


def test_expansion_up_to_the_bound_works() -> None:
    value = "x" * 15
    lines = ["set a " + value] + ["set a ${a}${a}"] * 12  # 60 KiB
    assert messages_of(*lines, "echo ${a}") == [value * 4096]


# ------------------------------------------------------------ paths and chaining

def test_resolution_relative_absolute_and_urls() -> None:
    base = Location("tftp", "", "/generic/main.ipxe")
    assert str(resolve(base, "params.ipxe")) == "/generic/params.ipxe"
    assert str(resolve(base, "../models/x (1)/p.ipxe")) == "/models/x (1)/p.ipxe"
    assert str(resolve(base, "/kernel")) == "/kernel"
    assert str(resolve(base, "../../../etc/passwd")) == "/etc/passwd"
    http = parse_url("http://10.0.0.1/boot/a/b.ipxe")
    assert str(resolve(http, "c.ipxe")) == "http://10.0.0.1/boot/a/c.ipxe"
    assert str(resolve(http, "tftp://10.0.0.1/x")) == "tftp://10.0.0.1/x"
    assert resolve(BOOT_ROOT, "start.ipxe") == Location("tftp", "", "/start.ipxe")


def test_chained_scripts_resolve_paths_from_their_own_directory() -> None:
    files = {"/start.ipxe": script("chain sub/a.ipxe"),
             "/sub/a.ipxe": script("chain ../b.ipxe", "chain c.ipxe"),
             "/b.ipxe": script("echo b"),
             "/sub/c.ipxe": script("kernel k quiet", "boot"),
             "/sub/k": KERNEL}
    plan = plan_of(files)
    assert plan.messages == ["b"]
    assert str(plan.kernel.location) == "/sub/k"
    assert plan.cmdline == "quiet"
    assert plan.scripts == ["/start.ipxe", "/sub/a.ipxe", "/b.ipxe", "/sub/c.ipxe"]


def test_unsupported_url_scheme_fails_the_command() -> None:
    files = {"/start.ipxe": script("kernel ftp://host/k || kernel /k", "boot"), "/k": KERNEL}
    assert str(plan_of(files).kernel.location) == "/k"


# ------------------------------------------------------------ images

def test_imgfree_kernel_initrd_names_and_continuation() -> None:
    files = {"/start.ipxe": script("initrd /stale", "imgfree", "initrd /a", "initrd --name b /b2",
                                   "initrd /c", "imgfree c", "kernel /k console=ttyS0 \\",
                                   "  quiet", "boot"),
             "/stale": b"s", "/a": b"a", "/b2": b"b", "/c": b"c", "/k": KERNEL}
    plan = plan_of(files)
    assert [image.name for image in plan.initrds] == ["a", "b"]
    assert plan.cmdline == "console=ttyS0 quiet"  # tokens are joined by one space
    assert plan.kernel.data == KERNEL


def test_chaining_a_non_script_boots_it() -> None:
    files = {"/start.ipxe": script("initrd /i", "chain /vmlinuz rw"), "/vmlinuz": KERNEL,
             "/i": b"i"}
    plan = plan_of(files)
    assert (str(plan.kernel.location), plan.cmdline, len(plan.initrds)) == ("/vmlinuz", "rw", 1)


# ------------------------------------------------------------ errors name file and line

def test_unknown_command_is_fatal_even_with_a_fallback() -> None:
    files = {"/start.ipxe": script("chain /a.ipxe"),
             "/a.ipxe": script("echo ok", "frobnicate now || echo recovered")}
    with pytest.raises(IpxeFatal) as error:
        plan_of(files)
    assert str(error.value).startswith("/a.ipxe:3: unknown command 'frobnicate'")
    assert "chained from /start.ipxe:2" in str(error.value)


def test_missing_file_without_fallback_names_file_and_line() -> None:
    files = {"/start.ipxe": script("chain /a.ipxe"), "/a.ipxe": script("", "kernel /missing")}
    with pytest.raises(IpxeError) as error:
        plan_of(files)
    assert str(error.value) == ("/a.ipxe:3: cannot fetch /missing: no such file "
                                "(chained from /start.ipxe:2)")


def test_missing_file_with_fallback_goes_on() -> None:
    files = {"/start.ipxe": script("chain /missing.ipxe || echo no file", "kernel /k", "boot"),
             "/k": KERNEL}
    assert plan_of(files).messages == ["no file"]


def test_a_failing_chained_script_fails_its_chain_line_which_may_recover() -> None:
    files = {"/start.ipxe": script("chain /a.ipxe || echo a failed", "kernel /k", "boot"),
             "/a.ipxe": script("echo in a", "exit 3", "echo not reached"), "/k": KERNEL}
    assert plan_of(files).messages == ["in a", "a failed"]


@pytest.mark.parametrize("files, message", [
    ({"/start.ipxe": script("chain /a.ipxe"), "/a.ipxe": script("chain /start.ipxe")},
     "/a.ipxe:2: chain loop: /start.ipxe is already running"),
    ({"/start.ipxe": script("chain start.ipxe || echo caught")},
     "/start.ipxe:2: chain loop"),
    ({"/start.ipxe": script("echo nothing")},
     "/start.ipxe: the script ended without reaching 'boot'"),
    ({"/start.ipxe": script("kernel /missing || reboot")},
     "/start.ipxe:2: the script reached 'reboot'"),
    ({"/start.ipxe": "echo no magic\n"}, "/start.ipxe is not an iPXE script"),
    ({}, "cannot fetch /start.ipxe"),
    ({"/start.ipxe": script("boot")}, "/start.ipxe:2: boot: no kernel loaded"),
    ({"/start.ipxe": script("kernel --bogus /k")}, "/start.ipxe:2: kernel: unknown option"),
])
def test_errors(files: Dict[str, object], message: str) -> None:
    with pytest.raises(IpxeError) as error:
        plan_of(files)
    assert str(error.value).startswith(message)


# ------------------------------------------------------------ the WalT-shaped tree

QEMU_VARIABLES = {"mac": MAC, "ip": "127.0.0.1", "netmask": SIM_NETMASK, "gateway": SIM_GATEWAY,
                  "hostname": "node1", "next-server": "127.0.0.1", "manufacturer": "QEMU",
                  "product": QEMU_PRODUCT}


def test_fixture_tree_from_a_local_boot_dir() -> None:
    tree = Path(__file__).parent / "data" / "ipxe" / "default" / "boot" / "pc-x86-64"
    plan = interpret(LocalSource(tree), {**QEMU_VARIABLES, "next-server": "127.0.0.1"})
    # HTTP is not available locally: the || fallbacks fetch over TFTP paths
    assert plan.cmdline == expected_cmdline(gateway=SIM_GATEWAY, netmask=SIM_NETMASK)
    assert [str(plan.kernel.location)] + [str(i.location) for i in plan.initrds] == [
        "/vmlinuz", "tftp://127.0.0.1/initrd.img"]


def source_for(sim, http_port=None) -> ServerSource:
    server = ServerAddress(sim.host, sim.logs_port, sim.rpc_port, http_port or sim.http_port)
    return ServerSource(server, MAC, "127.0.0.1", Deadline(20))


def test_fixture_tree_served_over_http(ipxe_sim) -> None:
    plan = interpret(source_for(ipxe_sim), QEMU_VARIABLES)
    assert plan.cmdline == expected_cmdline(gateway=SIM_GATEWAY, netmask=SIM_NETMASK)
    assert str(plan.kernel.location) == "http://127.0.0.1/boot/vmlinuz"
    assert [str(i.location) for i in plan.initrds] == ["http://127.0.0.1/boot/initrd.img"]
    assert plan.kernel.data == model_file("default", "vmlinuz")
    assert plan.initrds[0].data == model_file("default", "initrd.img")
    assert plan.messages == [f"WalT: booting node1 ({MAC}), a QEMU {QEMU_PRODUCT}"]
    assert f"/models/QEMU/{QEMU_PRODUCT}/boot-params.ipxe" in plan.scripts


def test_fixture_tree_falls_back_to_fake_tftp_when_http_is_down(ipxe_sim) -> None:
    plan = interpret(source_for(ipxe_sim, http_port=dead_port()), QEMU_VARIABLES)
    assert plan.cmdline == expected_cmdline(gateway=SIM_GATEWAY, netmask=SIM_NETMASK)
    assert str(plan.kernel.location) == "/vmlinuz"
    assert [str(i.location) for i in plan.initrds] == ["tftp://127.0.0.1/initrd.img"]
    assert plan.kernel.data == model_file("default", "vmlinuz")


def test_fixture_tree_of_a_plain_pc_and_of_the_rebound_image(ipxe_sim) -> None:
    plain = {**QEMU_VARIABLES, "manufacturer": "Dell Inc.", "product": "OptiPlex 7010"}
    plan = interpret(source_for(ipxe_sim), plain)
    assert plan.cmdline == expected_cmdline(gateway=SIM_GATEWAY, netmask=SIM_NETMASK, qemu=False)
    assert plan.messages[-1] == "no boot parameters for Dell Inc./OptiPlex 7010"
    ipxe_sim.bind(MAC, "waltplatform/pc-x86-64-other:latest")
    plan = interpret(source_for(ipxe_sim), QEMU_VARIABLES)
    assert plan.cmdline == expected_cmdline("other", gateway=SIM_GATEWAY, netmask=SIM_NETMASK)
    assert plan.kernel.data == model_file("other", "vmlinuz")


def test_a_file_the_server_does_not_have_names_the_line(ipxe_sim) -> None:
    with pytest.raises(IpxeError) as error:
        interpret(source_for(ipxe_sim), QEMU_VARIABLES, start="/nothing-here.ipxe")
    assert "cannot fetch /nothing-here.ipxe" in str(error.value)


# ------------------------------------------------------------ walt-node ipxe-plan

def ipxe_plan(*args: str, root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WALT_NODE_ROOT": str(root)}
    return subprocess.run([sys.executable, "-m", "walt_node", "ipxe-plan", *args], env=env,
                          text=True, capture_output=True, timeout=30)


def test_ipxe_plan_command_on_a_boot_dir(tmp_path) -> None:
    tree = Path(__file__).parent / "data" / "ipxe" / "default" / "boot" / "pc-x86-64"
    done = ipxe_plan("--boot-dir", str(tree), "--set", f"mac={MAC}", "--set", "ip=127.0.0.1",
                     "--set", "next-server=127.0.0.1", "--set", "hostname=node1",
                     "--set", "manufacturer=QEMU", "--set", f"product={QEMU_PRODUCT}",
                     "--set", f"netmask={SIM_NETMASK}", "--set", f"gateway={SIM_GATEWAY}",
                     root=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"cmdline: {expected_cmdline(gateway=SIM_GATEWAY, netmask=SIM_NETMASK)}\n" in done.stdout
    assert "kernel:  /vmlinuz (4096 bytes)" in done.stdout


def test_ipxe_plan_command_errors(tmp_path) -> None:
    (tmp_path / "start.ipxe").write_text(script("chain /generic/missing.ipxe"))
    done = ipxe_plan("--boot-dir", str(tmp_path), root=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith("walt-node ipxe-plan: iPXE script error: /start.ipxe:2: cannot fetch "
                                  "/generic/missing.ipxe")
    done = ipxe_plan("--boot-dir", str(tmp_path), "--set", "novalue", root=tmp_path)
    assert done.returncode == 2 and "expected NAME=VALUE" in done.stderr
    done = ipxe_plan(root=tmp_path)  # no server facts in an empty root
    assert done.returncode == 1 and "cannot ask the server" in done.stderr
