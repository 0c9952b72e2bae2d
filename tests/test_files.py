"""walt_node.files: atomic replacement used for state files, hosts, units, cursors;
locked edits of shared files; appending to logs. Attacks come from a second
local user (nobody) who owns the directory we write to."""

from __future__ import annotations

import fcntl
import os
import stat
import threading
from pathlib import Path

import pytest
from support.faults import waits_for_a_lock
from support.users import run_as_other_user
from support.wait import wait_until

from walt_node.files import UnsafeFile, edit_locked, open_for_append, symlink_atomically, write_atomically


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


# ------------------------------------------------------------ a second local user plants links

@pytest.mark.root
def test_a_link_planted_where_the_temporary_file_would_go_redirects_nothing(
        users_directory: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("root's data\n")
    target = users_directory / "state.json"
    writer_pid = os.getpid()

    def plant() -> None:  # at the name the writer used to derive from its pid
        os.symlink(victim, users_directory / f".state.json.{writer_pid}.walt-node-new")

    run_as_other_user(plant)
    write_atomically(target, "new state\n")
    assert victim.read_text() == "root's data\n"
    assert target.read_text() == "new state\n" and not target.is_symlink()
    assert stat.S_IMODE(target.lstat().st_mode) == 0o644


@pytest.mark.root
def test_a_link_at_the_path_itself_is_replaced_not_followed(users_directory: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("root's data\n")
    victim.chmod(0o600)
    run_as_other_user(lambda: os.symlink(victim, users_directory / "state.json"))
    write_atomically(users_directory / "state.json", "new state\n")
    assert victim.read_text() == "root's data\n"
    assert not (users_directory / "state.json").is_symlink()
    assert stat.S_IMODE((users_directory / "state.json").stat().st_mode) == 0o644  # not the victim's mode


@pytest.mark.root
def test_appending_refuses_a_planted_link_fifo_or_someone_elses_file(
        users_directory: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("root's data\n")

    def plant() -> None:
        os.symlink(victim, users_directory / "link.jsonl")
        os.mkfifo(users_directory / "fifo.jsonl")
        (users_directory / "theirs.jsonl").write_text("")

    run_as_other_user(plant)
    for name, problem in (("link.jsonl", "is a symbolic link"), ("fifo.jsonl", "is not a regular file"),
                          ("theirs.jsonl", "belongs to another user")):
        with pytest.raises(UnsafeFile, match=problem):
            open_for_append(users_directory / name)
    assert victim.read_text() == "root's data\n"
    with open_for_append(users_directory / "ours.jsonl") as stream:  # a new file: created, ours
        stream.write("line\n")
    with open_for_append(users_directory / "ours.jsonl") as stream:  # an existing one of ours: appended
        stream.write("line 2\n")
    assert (users_directory / "ours.jsonl").read_text() == "line\nline 2\n"


# ------------------------------------------------------------ locked edits of shared files

def test_an_edited_file_reached_through_a_link_stays_a_link(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    real = tmp_path / "run/hosts"
    real.write_text("127.0.0.1 localhost\n")
    real.chmod(0o640)
    link = tmp_path / "hosts"
    link.symlink_to("run/hosts")
    assert edit_locked(link, lambda text: text + "10.0.0.2 n2\n")
    assert os.readlink(link) == "run/hosts"
    assert real.read_text() == "127.0.0.1 localhost\n10.0.0.2 n2\n"
    assert stat.S_IMODE(real.stat().st_mode) == 0o640
    assert not edit_locked(link, lambda text: text)  # no change: nothing written


def test_a_line_appended_while_the_edit_runs_is_kept(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    edits = []

    def edit(text: str) -> str:
        edits.append(text)
        if len(edits) == 1:  # an admin's `echo ... >> /etc/hosts` lands while we compute
            with open(hosts, "a") as admin:
                admin.write("10.9.9.9 added-by-admin\n")
        return text.replace("localhost", "localhost ours")

    assert edit_locked(hosts, edit)
    assert hosts.read_text() == "127.0.0.1 localhost ours\n10.9.9.9 added-by-admin\n"
    assert len(edits) == 2


def test_an_edit_waits_for_a_tool_that_holds_the_lock(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("a\n")
    editor = threading.Thread(target=edit_locked, args=(hosts, lambda text: text + "ours\n"))
    with open(hosts, "a") as tool:
        fcntl.flock(tool, fcntl.LOCK_EX)
        editor.start()
        assert wait_until(lambda: waits_for_a_lock(os.getpid()), 10)
        tool.write("b\n")
    editor.join(10)
    assert hosts.read_text() == "a\nb\nours\n"
