"""What an installation consists of: a list of files, links and directories.

The plan is pure data built from the package's templates; the installer
compares it with the image and applies the difference.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List

from walt_node import commands
from walt_node.commands import legacy_names
from walt_node.install import InstallError
from walt_node.paths import NODE  # plan items name locations as the image sees them

WALT_NODE_PLACEHOLDER = "@WALT_NODE@"
SYSTEMD_UNIT_DIR = str(NODE.systemd_system)
BUSYBOX_INIT_SCRIPT = str(NODE.init_d / "S90walt-node")
FIFO_DIR = str(NODE.var_lib_walt)
LINK_DIR = str(NODE.usr_local_bin)
BIN_DIR = str(NODE.bin_dir)
# Directories already on every PATH: no command links needed from there.
PATH_DIRS = tuple(str(path) for path in NODE.path_dirs)
COMMANDS = ("walt-node", *legacy_names())
# Scripts of the package's data/bin installed in the image's /bin (docs/protocols.md §7).
BIN_SCRIPTS = tuple(commands.BIN_SCRIPTS)
BOOT_MODE_HOOKS = ("walt-network-reboot", "walt-hybrid-reboot")


@dataclass(frozen=True)
class Item:
    path: str  # absolute, inside the image
    kind: str  # "file", "symlink" or "dir"
    content: bytes = b""
    mode: int = 0o644
    target: str = ""  # symlinks
    unit: str = ""  # the systemd unit a unit file defines
    # an image's own file here is kept (with a note) instead of stopping the install:
    # default pc-x86 images ship their own /bin/walt-network-reboot
    yields_to_image: bool = False


@dataclass
class Plan:
    items: List[Item] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)  # things not installed, and why

    @property
    def units(self) -> List[str]:
        return [item.unit for item in self.items if item.unit]


@dataclass(frozen=True)
class Target:
    init: str  # "systemd" or "busybox"
    walt_node: str  # the executable, as a path inside the image
    interpreter: str  # shebang for the installed Python scripts
    available_commands: List[str]  # names of COMMANDS present next to walt_node
    unit_dir: str = SYSTEMD_UNIT_DIR  # where the units go, inside the image (--systemd-dir)


def build_plan(target: Target, data: Path) -> Plan:
    plan = Plan()
    plan.items.append(Item(FIFO_DIR, "dir", mode=0o755))
    if target.init == "systemd":
        _add_systemd_units(plan, target, data / "units")
    else:
        _add_busybox_script(plan, target, data / "units")
    _add_command_links(plan, target)
    _add_bin_scripts(plan, target, data / "bin")
    return plan


def _substitute(template: Path, walt_node: str) -> bytes:
    return template.read_text().replace(WALT_NODE_PLACEHOLDER, walt_node).encode()


def _add_systemd_units(plan: Plan, target: Target, units_dir: Path) -> None:
    templates = sorted(units_dir.glob("*.service"))
    if not templates:
        raise InstallError(f"no unit templates in {units_dir}: this walt-node package is incomplete")
    for template in templates:
        unit_path = f"{target.unit_dir}/{template.name}"
        text = _substitute(template, target.walt_node)
        plan.items.append(Item(unit_path, "file", text, 0o644, unit=template.name))
        for wanted_by in wanted_by_targets(text.decode(), template.name):
            link = f"{target.unit_dir}/{wanted_by}.wants/{template.name}"
            plan.items.append(Item(link, "symlink", target=unit_path))


def wanted_by_targets(unit_text: str, name: str) -> List[str]:
    """The WantedBy= targets of a unit (what `systemctl enable` would link it into)."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    try:
        parser.read_string(unit_text, source=name)
    except configparser.Error as error:
        raise InstallError(f"unit template {name} cannot be parsed: {error}") from None
    value = parser.get("Install", "WantedBy", fallback="")
    return value.split()


def _add_busybox_script(plan: Plan, target: Target, units_dir: Path) -> None:
    script = units_dir / "walt-node.init"
    if not script.exists():
        raise InstallError(f"{script} is missing: this walt-node package is incomplete")
    plan.items.append(Item(BUSYBOX_INIT_SCRIPT, "file", _substitute(script, target.walt_node), 0o755))
    plan.notes.append(
        f"busybox init: {BUSYBOX_INIT_SCRIPT} starts the services if the image's /etc/init.d/rcS "
        "runs /etc/init.d/S??* scripts (buildroot's does); journal forwarding needs systemd"
    )


def _add_command_links(plan: Plan, target: Target) -> None:
    scripts_dir = os.path.dirname(target.walt_node)
    if scripts_dir in PATH_DIRS:
        return  # the Debian package or a system pip: commands are on PATH already
    for command in target.available_commands:
        plan.items.append(Item(f"{LINK_DIR}/{command}", "symlink", target=f"{scripts_dir}/{command}"))


def _add_bin_scripts(plan: Plan, target: Target, bin_dir: Path) -> None:
    for name in BIN_SCRIPTS:
        source = bin_dir / name
        if not source.is_file():
            plan.notes.append(f"{BIN_DIR}/{name} not installed: this walt-node package does not ship it")
            continue
        content = with_interpreter(source.read_bytes(), target.interpreter)
        plan.items.append(Item(f"{BIN_DIR}/{name}", "file", content, 0o755,
                               yields_to_image=name in BOOT_MODE_HOOKS))


def with_interpreter(script: bytes, interpreter: str) -> bytes:
    """Point a Python script's shebang at ``interpreter``; other scripts are unchanged."""
    first, newline, rest = script.partition(b"\n")
    if first.startswith(b"#!") and b"python" in first:
        return b"#!" + interpreter.encode() + newline + rest
    return script

