"""Upstream WalT's walt-node 10.0 installation, recognised by content.

An image may run upstream's package (PyPI ``walt-node`` 10.0): its
``walt-node-setup``, run from a venv, wrote (docs/protocols.md §11)

- ``<systemd dir>/walt-logs.service`` (default ``/etc/systemd/system``), whose
  ``ExecStart`` is ``/usr/local/bin/walt-logs-daemon $DAEMON_ARGS`` with
  ``EnvironmentFile=-/etc/default/walt-logs``, and its
  ``multi-user.target.wants`` link;
- links in ``/usr/local/bin`` to every ``walt*`` program of its venv:
  ``walt-node-setup``, ``walt-logs-daemon``, ``walt-log-monitor``,
  ``walt-monitor``, ``walt-serial-autolog``, ``walt-ipxe-kexec-reboot`` and
  ``walt-python3`` (a two-line shell script it writes into the venv).

walt-node replaces these files without ``--force``: a file is upstream's when
its content says so (the unit's ``ExecStart``, a link's target being one of
upstream's programs, our own program after ``pip`` upgraded that venv, or
nothing at all once upstream's venv is gone).  Anything else of the same name
stays the image's own.
"""

from __future__ import annotations

import os
import re
from pathlib import PurePosixPath
from typing import List, Optional

from walt_node.paths import NODE, Paths

UNIT = "walt-logs.service"
LINK_DIR = str(NODE.usr_local_bin)
UNIT_DIRS = tuple(str(d) for d in NODE.systemd_unit_dirs)  # upstream's --systemd-dir: any of them
UNIT_EXEC_START = f"{LINK_DIR}/walt-logs-daemon $DAEMON_ARGS"
UNIT_ENVIRONMENT_FILE = f"-{NODE.logs_daemon_environment[0]}"
LINK_NAMES = ("walt-node-setup", "walt-logs-daemon", "walt-log-monitor", "walt-monitor",
              "walt-serial-autolog", "walt-ipxe-kexec-reboot", "walt-python3")
_READ_LIMIT = 8192
# What the programs a link may lead to say about themselves.
_UPSTREAM_CONSOLE_SCRIPT = re.compile(r"^from walt\.node\.[\w.]+ import \w+$", re.M)
_OUR_CONSOLE_SCRIPT = re.compile(r"^from walt_node\.cli import \w+$", re.M)
_UPSTREAM_MONITOR = re.compile(r"^echo MONITOR \$\$ .*/var/lib/walt/logs\.fifo$", re.M)
_UPSTREAM_OLD_MONITOR = re.compile(r"^\. walt-log-monitor \"\$@\"$", re.M)
_WALT_PYTHON3 = re.compile(r"#!/bin/sh\nexec (\S+)/python3 \"\$@\"\n")


def is_upstream_unit(image: Paths, path: str) -> bool:
    """Is the unit file at ``path`` upstream's walt-logs.service (edited or not)?"""
    text = _read(image, path)
    if text is None or PurePosixPath(path).name != UNIT:
        return False
    service = _section(text, "Service")
    return (service.get("ExecStart") == [UNIT_EXEC_START]
            and UNIT_ENVIRONMENT_FILE in service.get("EnvironmentFile", []))


def is_upstream_link(image: Paths, path: str) -> bool:
    """Is ``path`` a command link upstream's setup wrote (and walt-node may take over)?"""
    directory, name = os.path.split(path)
    host = image.inside(path)
    if directory != LINK_DIR or name not in LINK_NAMES or not host.is_symlink():
        return False
    target = os.readlink(host)
    if not (target.startswith("/") and PurePosixPath(target).parent.name == "bin"
            and PurePosixPath(target).name == name):
        return False
    content = _read(image, target)
    if content is None:
        return not image.followed(target).exists()  # upstream's venv is gone: a dead link
    if name == "walt-python3":
        match = _WALT_PYTHON3.fullmatch(content)
        return bool(match) and match.group(1) == os.path.dirname(target)
    return any(pattern.search(content) for pattern in
               (_UPSTREAM_CONSOLE_SCRIPT, _OUR_CONSOLE_SCRIPT, _UPSTREAM_MONITOR, _UPSTREAM_OLD_MONITOR))


def is_upstream_enable_link(image: Paths, path: str) -> bool:
    """``<dir>/<target>.wants/walt-logs.service`` -> ``<dir>/walt-logs.service``, upstream's unit."""
    link = PurePosixPath(path)
    host = image.inside(path)
    if link.name != UNIT or not link.parent.name.endswith(".wants") or not host.is_symlink():
        return False
    unit = str(link.parent.parent / UNIT)
    return os.readlink(host) == unit and (is_upstream_unit(image, unit)
                                          or not os.path.lexists(image.inside(unit)))


def is_upstream(image: Paths, path: str) -> bool:
    return (is_upstream_link(image, path) or is_upstream_unit(image, path)
            or is_upstream_enable_link(image, path))


def installed_paths(image: Paths, unit_dirs: List[str]) -> List[str]:
    """Every file of upstream's installation present in the image, units before their links."""
    found = []
    for unit_dir in dict.fromkeys([*unit_dirs, *UNIT_DIRS]):
        unit = f"{unit_dir}/{UNIT}"
        if is_upstream_unit(image, unit):
            found.append(unit)
        wants = f"{unit_dir}/multi-user.target.wants/{UNIT}"
        if is_upstream_enable_link(image, wants):
            found.append(wants)
    found += [f"{LINK_DIR}/{name}" for name in LINK_NAMES if is_upstream_link(image, f"{LINK_DIR}/{name}")]
    return found


def _read(image: Paths, path: str) -> Optional[str]:
    try:
        with open(image.followed(path), "rb") as stream:
            return stream.read(_READ_LIMIT).decode(errors="replace")
    except OSError:
        return None


def _section(text: str, name: str) -> dict:
    """``key -> [values]`` of one section of a unit file (keys may repeat)."""
    values: dict = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
        elif current == name and "=" in line:
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values
