"""walt_node.files: atomic replacement used for state files, hosts, units, cursors."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from walt_node.files import symlink_atomically, write_atomically


def test_new_file_gets_0644_and_the_exact_content(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    write_atomically(target, "naïve \t text\n")
    assert target.read_bytes() == "naïve \t text\n".encode()
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_existing_file_keeps_its_mode_unless_one_is_given(tmp_path: Path) -> None:
    target = tmp_path / "hosts"
    target.write_text("old\n")
    os.chmod(target, 0o600)
    write_atomically(target, b"new\n")
    assert target.read_text() == "new\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    write_atomically(target, b"newer\n", mode=0o755)
    assert stat.S_IMODE(target.stat().st_mode) == 0o755


def test_a_failed_replacement_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()  # os.replace of a file onto a directory fails
    (target / "inside").write_text("x")
    with pytest.raises(OSError):
        write_atomically(target, "content")
    assert target.is_dir() and (target / "inside").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_symlink_replaces_a_file_or_a_link(tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.write_text("a file in the way")
    symlink_atomically(link, "/opt/walt-node/bin/walt-node")
    assert os.readlink(link) == "/opt/walt-node/bin/walt-node"
    symlink_atomically(link, "elsewhere")
    assert os.readlink(link) == "elsewhere"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link"]
