"""The Debian package's own pieces, without dpkg: its files, its manual pages, and
`walt-node setup` standing aside for it (--hand-over, refusal).

The same behaviour under the real dpkg and apt, in Debian chroots, is checked by
scripts/test-deb.sh (CI).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest
from test_setup import IMAGE_WALT_NODE, UNITS, WALT_NODE, make_image, ok, setup, snapshot

from walt_node import manpages
from walt_node.cli import _top_parser, command_parser
from walt_node.commands import BIN_SCRIPTS, COMMANDS, legacy_names
from walt_node.install.package import PACKAGE_UNIT_DIR, package_items, stage

TIMEOUT = 60


def test_package_files_are_units_in_lib_bin_scripts_and_the_fifo_dir() -> None:
    items = {item.path: item for item in package_items()}
    assert sorted(p for p in items if p.startswith(PACKAGE_UNIT_DIR)) == [
        f"/lib/systemd/system/{unit}" for unit in UNITS]
    for unit in UNITS:
        text = items[f"/lib/systemd/system/{unit}"].content.decode()
        assert "@WALT_NODE@" not in text and "/usr/bin/walt-node " in text
    for name in BIN_SCRIPTS:
        script = items[f"/bin/{name}"]
        assert script.mode == 0o755 and script.content.startswith(b"#!/usr/bin/python3\n")
    assert items["/var/lib/walt"].kind == "dir"
    assert not [item for item in items.values() if item.kind == "symlink"]  # enable links: debhelper


def test_stage_writes_the_files_below_the_build_tree(tmp_path: Path) -> None:
    written = stage(tmp_path)
    assert (tmp_path / "lib/systemd/system/walt-logs.service").is_file()
    assert os.access(tmp_path / "bin/blink", os.X_OK)
    assert sorted(written) == sorted(item.path for item in package_items())


def _pages(tmp_path: Path) -> Dict[str, str]:
    return {path.name: path.read_text() for path in manpages.write_all(tmp_path)}


def test_every_installed_program_and_every_command_has_a_page(tmp_path: Path) -> None:
    pages = _pages(tmp_path)
    programs = {"walt-node", *legacy_names(), *BIN_SCRIPTS}
    assert set(pages) == {f"{p}.1" for p in programs} | {f"walt-node-{c}.1" for c in COMMANDS}


def _option_strings(parser: argparse.ArgumentParser) -> List[str]:
    found = []
    for action in parser._actions:
        found += action.option_strings
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _option_strings(sub)
    return found


def test_pages_say_what_help_says(tmp_path: Path) -> None:
    """One source of truth: every option and every help text of the parser is in the page."""
    pages = _pages(tmp_path)
    checked = {"walt-node.1": _top_parser(),
               "walt-node-setup.1": command_parser("setup", "walt-node setup")[0],
               "walt-node-swap.1": command_parser("swap", "walt-node swap")[0],
               "walt-reboot.1": command_parser("reboot", "walt-reboot")[0]}
    for page, parser in checked.items():
        text = pages[page].replace("\\-", "-").replace("\\e", "\\")
        for option in _option_strings(parser):
            assert f"\\fB{option}" in text or f", {option}" in text, (page, option)
        for action in parser._actions:
            if action.help and action.help != argparse.SUPPRESS:
                first_words = " ".join(action.help.split()[:4]).replace("%%", "%")
                assert first_words in " ".join(text.split()), (page, first_words)


@pytest.mark.skipif(shutil.which("man") is None, reason="man-db is not installed")
def test_pages_render_without_groff_warnings(tmp_path: Path) -> None:
    for path in sorted(tmp_path.glob("*.1")) or manpages.write_all(tmp_path):
        done = subprocess.run(["man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", str(path)],
                              capture_output=True, text=True, timeout=TIMEOUT,
                              env={**os.environ, "LC_ALL": "C.UTF-8", "MANWIDTH": "80"})
        assert done.returncode == 0 and done.stderr == "", (path.name, done.stderr)


# ------------------------------------------------------------------ dpkg's side, in an image tree

def _install_package(root: Path) -> None:
    """What dpkg does when it installs the package into ``root``: preinst's diversions, the files."""
    diverted = []
    for name in BIN_SCRIPTS:
        path = root / "bin" / name
        if os.path.lexists(path):
            os.replace(path, f"{path}.distrib")
        diverted += [f"/bin/{name}", f"/bin/{name}.distrib", "walt-node"]
    (root / "var/lib/dpkg/info").mkdir(parents=True, exist_ok=True)
    (root / "var/lib/dpkg/diversions").write_text("\n".join(diverted) + "\n")
    files = stage(root) + ["/usr/bin/walt-node"]
    (root / "usr/bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2(root / IMAGE_WALT_NODE.lstrip("/"), root / "usr/bin/walt-node")
    (root / "var/lib/dpkg/info/walt-node.list").write_text("\n".join(files) + "\n")


def test_hand_over_removes_what_setup_installed_except_the_package_files(tmp_path: Path) -> None:
    image = make_image(tmp_path / "image")
    (image / "bin/blink").write_text("#!/bin/sh\necho the image's own blink\n")
    own_blink = (image / "bin/blink").read_bytes()
    ok(setup(image, "--force"))  # the image's blink goes to setup's backup
    _install_package(image)
    out = ok(subprocess.run([WALT_NODE, "setup", "--hand-over", "--prefix", str(image)],
                            capture_output=True, text=True, timeout=TIMEOUT))
    assert "/bin/blink belongs to the Debian package now" in out
    left = snapshot(image)
    assert not [p for p in left if p.startswith(("etc/systemd", "usr/local", "var/lib/walt-node"))], left
    assert (image / "bin/blink.distrib").read_bytes() == own_blink  # given back by postrm remove
    assert not (image / "bin/walt-reboot.distrib").exists()  # setup's copy: gone
    assert (image / "var/lib/walt").is_dir()


def test_setup_from_a_venv_refuses_when_the_package_is_installed(tmp_path: Path) -> None:
    image = make_image(tmp_path / "image")
    _install_package(image)
    before = snapshot(image)
    done = setup(image)
    assert done.returncode == 1
    assert "the Debian package walt-node is installed" in done.stderr and "apt purge walt-node" in done.stderr
    assert snapshot(image) == before


def test_setup_of_the_package_itself_has_nothing_to_do(tmp_path: Path) -> None:
    image = make_image(tmp_path / "image")
    _install_package(image)
    before = snapshot(image)
    out = ok(subprocess.run([WALT_NODE, "setup", "--prefix", str(image), "--walt-node", "/usr/bin/walt-node"],
                            capture_output=True, text=True, timeout=TIMEOUT))
    assert "nothing to do" in out and snapshot(image) == before


def test_hand_over_without_the_package_is_refused(tmp_path: Path) -> None:
    image = make_image(tmp_path / "image")
    done = subprocess.run([WALT_NODE, "setup", "--hand-over", "--prefix", str(image)],
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 1 and "not installed" in done.stderr


def test_setup_options_the_package_does_not_cover_are_refused_not_ignored(tmp_path: Path) -> None:
    image = make_image(tmp_path / "image")
    _install_package(image)
    before = snapshot(image)
    done = subprocess.run([WALT_NODE, "setup", "--prefix", str(image), "--walt-node", "/usr/bin/walt-node",
                           "--time-sync", "ntp"], capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 1 and "--time-sync: not available" in done.stderr
    assert snapshot(image) == before
