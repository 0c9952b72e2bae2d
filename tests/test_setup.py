"""`walt-node setup` into temporary image roots: the real command, real files.

Every test builds a small image tree (a systemd or busybox layout with
walt-node "installed" in /opt/walt-node inside it), runs the command as a
subprocess, and compares snapshots of the whole tree.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
from support.faults import exit_code, process_state, start_interrupted, waits_for_a_lock
from support.kexec import Recorder
from support.wait import wait_until

from walt_node.install import InstallError
from walt_node.install.environment import PythonEnv, check_python_env, data_dir
from walt_node.install.installer import Installer
from walt_node.install.plan import Target, build_plan, with_interpreter
from walt_node.paths import Paths

WALT_NODE = str(Path(sys.prefix) / "bin" / "walt-node")  # the real command of this venv
IMAGE_WALT_NODE = "/opt/walt-node/bin/walt-node"
IMAGE_PYTHON = "/opt/walt-node/bin/python3"
IMAGE_COMMANDS = ("walt-node", "walt-node-setup", "walt-log-monitor")
UNITS = ("walt-logs.service", "walt-nbd-swap.service")
TIMEOUT = 60


def make_image(root: Path, init: str = "systemd") -> Path:
    """A minimal image tree with walt-node installed in /opt/walt-node."""
    (root / "bin").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "var/lib").mkdir(parents=True)  # as in every Debian image (dpkg's database)
    if init == "systemd":
        (root / "lib/systemd").mkdir(parents=True)
        (root / "lib/systemd/systemd").write_text("")
    else:
        (root / "bin/busybox").write_text("")
        (root / "sbin").mkdir()
        (root / "sbin/init").symlink_to("/bin/busybox")
    scripts = root / IMAGE_WALT_NODE.lstrip("/")
    scripts.parent.mkdir(parents=True)
    for name in IMAGE_COMMANDS:
        script = scripts.parent / name
        script.write_text(f"#!{IMAGE_PYTHON}\nprint('{name}')\n")
        script.chmod(0o755)
    return root


def setup(root: Optional[Path], *args: str, env: Optional[Dict[str, str]] = None
          ) -> subprocess.CompletedProcess:
    argv = [WALT_NODE, "setup", *args]
    if root is not None:
        argv += ["--prefix", str(root), "--walt-node", IMAGE_WALT_NODE]
    return subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT,
                          env=env or os.environ.copy())


def ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


Snapshot = Dict[str, Tuple]


def snapshot(root: Path, times: bool = False) -> Snapshot:
    """Every entry of the tree: type, mode, content or link target (and mtimes if asked)."""
    tree: Snapshot = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(directory, name)
            info = path.lstat()
            key = str(path.relative_to(root))
            if stat.S_ISLNK(info.st_mode):
                tree[key] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                tree[key] = ("dir", oct(info.st_mode)) + ((info.st_mtime_ns,) if times else ())
            elif not stat.S_ISREG(info.st_mode):  # a FIFO: reading it would block
                tree[key] = ("special", oct(info.st_mode))
            else:
                tree[key] = ("file", oct(info.st_mode), path.read_bytes()) + (
                    (info.st_mtime_ns,) if times else ())
    return tree


def backdated(root: Path) -> Path:
    """``root`` with every mtime set to 2001: any write that follows shows in the mtimes,
    however coarse the filesystem's clock."""
    for directory, dirs, files in os.walk(root, topdown=False):
        for name in dirs + files:
            os.utime(Path(directory, name), ns=(10**18, 10**18), follow_symlinks=False)
    os.utime(root, ns=(10**18, 10**18))
    return root


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return make_image(tmp_path / "image")


def test_install_writes_units_enable_links_commands_and_fifo_dir(image: Path) -> None:
    out = ok(setup(image))

    for unit in UNITS:
        text = (image / "etc/systemd/system" / unit).read_text()
        assert "@WALT_NODE@" not in text
        assert f"ExecStart={IMAGE_WALT_NODE} " in text or f"ExecStart=-{IMAGE_WALT_NODE} " in text
        link = image / "etc/systemd/system/multi-user.target.wants" / unit
        assert os.readlink(link) == f"/etc/systemd/system/{unit}"
    for name in IMAGE_COMMANDS:
        assert os.readlink(image / "usr/local/bin" / name) == f"/opt/walt-node/bin/{name}"
    # commands the image's walt-node does not have get no dangling link
    assert not os.path.lexists(image / "usr/local/bin/walt-serial-autolog")
    assert (image / "var/lib/walt").is_dir()
    assert "installed in" in out


def test_second_run_changes_nothing(image: Path) -> None:
    ok(setup(image))
    before = snapshot(backdated(image), times=True)
    out = ok(setup(image))
    assert snapshot(image, times=True) == before
    assert "already installed" in out


def test_uninstall_leaves_the_root_exactly_as_before(image: Path) -> None:
    before = snapshot(image)
    ok(setup(image))
    assert snapshot(image) != before
    out = ok(setup(image, "--uninstall"))
    assert snapshot(image) == before
    assert "uninstalled" in out
    assert "not installed" in ok(setup(image, "--uninstall"))


def test_dry_run_lists_changes_and_changes_nothing(image: Path) -> None:
    before = snapshot(backdated(image), times=True)
    out = ok(setup(image, "--dry-run"))
    assert "would create file /etc/systemd/system/walt-logs.service" in out
    assert snapshot(image, times=True) == before


def test_image_file_in_the_way_is_kept_unless_force_then_backed_up_and_restored(image: Path) -> None:
    own = image / "usr/local/bin/walt-log-monitor"
    own.parent.mkdir(parents=True)
    own.write_text("#!/bin/sh\necho the image's own tool\n")
    own.chmod(0o755)
    original_tree = snapshot(image)
    before = snapshot(backdated(image), times=True)

    refused = setup(image)
    assert refused.returncode == 1
    assert "/usr/local/bin/walt-log-monitor" in refused.stderr and "--force" in refused.stderr
    assert "Nothing was changed" in refused.stderr
    assert snapshot(image, times=True) == before

    ok(setup(image, "--force"))
    assert os.readlink(own) == "/opt/walt-node/bin/walt-log-monitor"
    backup = image / "var/lib/walt-node/backup/usr/local/bin/walt-log-monitor"
    assert backup.read_text() == "#!/bin/sh\necho the image's own tool\n"

    ok(setup(image, "--uninstall"))
    assert snapshot(image) == original_tree


def test_unit_edited_after_install_is_neither_overwritten_nor_removed(image: Path) -> None:
    ok(setup(image))
    unit = image / "etc/systemd/system/walt-nbd-swap.service"
    unit.write_text(unit.read_text() + "# local tweak\n")

    again = setup(image)
    assert again.returncode == 1 and "/etc/systemd/system/walt-nbd-swap.service" in again.stderr

    out = ok(setup(image, "--uninstall"))
    assert "kept /etc/systemd/system/walt-nbd-swap.service" in out
    assert unit.read_text().endswith("# local tweak\n")
    assert not (image / "etc/systemd/system/walt-logs.service").exists()


def test_upgrade_replaces_our_own_files_without_force(image: Path) -> None:
    ok(setup(image))
    other = image / "srv/venv/bin"
    other.mkdir(parents=True)
    shutil.copy2(image / "opt/walt-node/bin/walt-node", other / "walt-node")
    done = subprocess.run([WALT_NODE, "setup", "--prefix", str(image), "--walt-node",
                           "/srv/venv/bin/walt-node"], capture_output=True, text=True, timeout=TIMEOUT)
    ok(done)
    assert "ExecStart=/srv/venv/bin/walt-node services" in (
        image / "etc/systemd/system/walt-logs.service").read_text()
    # links to commands the new environment lacks are gone, the others follow it
    assert os.readlink(image / "usr/local/bin/walt-node") == "/srv/venv/bin/walt-node"
    assert not os.path.lexists(image / "usr/local/bin/walt-log-monitor")


def test_busybox_image_gets_an_init_script_and_no_units(tmp_path: Path) -> None:
    image = make_image(tmp_path / "image", init="busybox")
    before = snapshot(image)
    ok(setup(image))
    script = image / "etc/init.d/S90walt-node"
    assert script.stat().st_mode & 0o111
    assert f"WALT_NODE={IMAGE_WALT_NODE}\n" in script.read_text()
    assert not (image / "etc/systemd").exists()
    subprocess.run(["busybox", "sh", "-n", str(script)], check=True, timeout=TIMEOUT)
    ok(setup(image, "--uninstall"))
    assert snapshot(image) == before


def test_busybox_script_supervises_services_and_honours_kill_switches(tmp_path: Path) -> None:
    """Run the installed init script with busybox sh and a recording walt-node."""
    calls = tmp_path / "calls"
    recorder = tmp_path / "walt-node"
    recorder.write_text(f"#!/bin/sh\necho \"$$ $*\" >> {calls}\nexec sleep 30\n")
    recorder.chmod(0o755)
    image = make_image(tmp_path / "image", init="busybox")
    target = Target("busybox", str(recorder), sys.executable, [])
    Installer(Paths(image), print).install(build_plan(target, data_dir()), "busybox", [])
    etc_walt, pids = tmp_path / "etc-walt", tmp_path / "pids"
    etc_walt.mkdir()
    (etc_walt / "walt-nbd-swap.disabled").write_text("")  # the others: `walt-node services`
    env = dict(os.environ, WALT_ETC_DIR=str(etc_walt), WALT_PID_DIR=str(pids))
    script = str(image / "etc/init.d/S90walt-node")

    started = subprocess.run(["busybox", "sh", script, "start"], env=env, capture_output=True,
                             text=True, timeout=TIMEOUT)
    try:
        assert "walt-nbd-swap disabled" in started.stdout
        assert wait_until(lambda: len(_lines(calls)) >= 1, 10), _lines(calls)
        assert [line.split(" ", 1)[1] for line in _lines(calls)] == ["services"]
        assert sorted(p.name for p in pids.iterdir()) == ["walt-node.pid"]
        supervisors = [int(p.read_text()) for p in pids.iterdir()]
        services = [int(line.split()[0]) for line in _lines(calls) if "swap" not in line]
    finally:
        subprocess.run(["busybox", "sh", script, "stop"], env=env, timeout=TIMEOUT)
        for line in _lines(calls):
            if "swap" in line:  # the one-shot attach is not supervised: end it here
                _kill(int(line.split()[0]))
    assert not list(pids.iterdir())
    for pid in supervisors + services:  # stop ends the loops and the services they run
        _wait_gone(pid)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, 15)
    except ProcessLookupError:
        pass


def _lines(path: Path) -> List[str]:
    return path.read_text().splitlines() if path.exists() else []


def _wait_gone(pid: int) -> None:
    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    assert wait_until(gone, 10), f"supervisor {pid} still runs after stop"


def test_python_scripts_get_the_environment_interpreter(tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(data_dir() / "units", data / "units")
    (data / "bin").mkdir()
    (data / "bin/blink").write_text("#!/usr/bin/env python3\nimport sys\n")
    (data / "bin/walt-reboot").write_text("#!/bin/sh\nexec walt-node reboot\n")
    image = make_image(tmp_path / "image")
    target = Target("systemd", IMAGE_WALT_NODE, IMAGE_PYTHON, [])
    Installer(Paths(image), print).install(build_plan(target, data), "systemd", [])

    blink = image / "bin/blink"
    assert blink.read_text() == f"#!{IMAGE_PYTHON}\nimport sys\n"
    assert blink.stat().st_mode & 0o777 == 0o755
    assert (image / "bin/walt-reboot").read_text() == "#!/bin/sh\nexec walt-node reboot\n"
    assert with_interpreter(b"no shebang", "/x") == b"no shebang"


def test_shipped_bin_scripts_are_installed_with_this_environment_python(image: Path) -> None:
    shipped = [name for name in ("blink", "walt-reboot") if (data_dir() / "bin" / name).is_file()]
    if not shipped:
        pytest.skip("bin/blink and bin/walt-reboot have not landed in this tree yet")
    ok(setup(image))
    for name in shipped:
        first = (image / "bin" / name).read_text().splitlines()[0]
        assert first == f"#!{IMAGE_PYTHON}" or "python" not in first


def test_image_spec_templates_are_merged_and_the_original_restored(image: Path) -> None:
    spec = image / "etc/walt/image.spec"
    spec.parent.mkdir(parents=True)
    original = '{ "templates": ["/etc/motd"],\n  "features": {"x": 1} }\n'
    spec.write_text(original)
    (image / "etc/walt/node.conf").write_text("server=%(server_ip)s\n")

    ok(setup(image, "--spec-template", "/etc/walt/node.conf"))
    merged = json.loads(spec.read_text())
    assert merged == {"templates": ["/etc/motd", "/etc/walt/node.conf"], "features": {"x": 1}}
    before = snapshot(backdated(image), times=True)
    assert "already installed" in ok(setup(image, "--spec-template", "/etc/walt/node.conf"))
    assert snapshot(image, times=True) == before

    ok(setup(image, "--uninstall"))
    assert spec.read_text() == original


def test_image_spec_created_when_missing_and_removed_by_uninstall(image: Path) -> None:
    (image / "etc/app.conf").write_text("%(server_ip)s\n")
    before = snapshot(image)
    ok(setup(image, "--spec-template", "/etc/app.conf"))
    assert json.loads((image / "etc/walt/image.spec").read_text()) == {"templates": ["/etc/app.conf"]}
    ok(setup(image, "--uninstall"))
    assert snapshot(image) == before


@pytest.mark.parametrize("content", ["{not json", '["a list"]', '{"templates": "/etc/x"}'])
def test_broken_image_spec_is_reported_and_left_alone(image: Path, content: str) -> None:
    spec = image / "etc/walt/image.spec"
    spec.parent.mkdir(parents=True)
    spec.write_text(content)
    (image / "etc/app.conf").write_text("x\n")
    before = snapshot(backdated(image), times=True)
    done = setup(image, "--spec-template", "/etc/app.conf")
    assert done.returncode == 1 and "image.spec" in done.stderr
    assert snapshot(image, times=True) == before


def test_absolute_symlinks_of_the_image_never_lead_out_of_the_root(tmp_path: Path) -> None:
    image = make_image(tmp_path / "image")
    outside = tmp_path / "outside"  # what "/usr/local" would reach if followed on the host
    outside.mkdir()
    (image / "usr").mkdir()
    (image / "usr/local").symlink_to(str(outside))
    (image / str(outside).lstrip("/")).mkdir(parents=True)  # the same path inside the image
    ok(setup(image))
    assert not any(outside.iterdir())
    assert (image / str(outside).lstrip("/") / "bin/walt-node").is_symlink()


@pytest.mark.parametrize("args, message", [
    (["--prefix", "/nonexistent/root"], "no such directory"),
    (["--walt-node", "relative/walt-node"], "absolute path"),
    (["--spec-template", "etc/x"], "absolute path"),
    (["--spec-template", "/etc/missing.conf"], "no such file"),
])
def test_bad_input_names_the_problem(image: Path, args: List[str], message: str) -> None:
    argv = [WALT_NODE, "setup", "--prefix", str(image), "--walt-node", IMAGE_WALT_NODE, *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 1
    assert message in done.stderr


def test_walt_node_missing_inside_the_image_is_refused(tmp_path: Path) -> None:
    image = make_image(tmp_path / "image")
    done = subprocess.run([WALT_NODE, "setup", "--prefix", str(image)], capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert done.returncode == 1
    assert "--walt-node" in done.stderr and WALT_NODE in done.stderr


def test_unknown_init_system_asks_for_init_option(tmp_path: Path) -> None:
    image = make_image(tmp_path / "image")
    shutil.rmtree(image / "lib")
    done = setup(image)
    assert done.returncode == 1 and "--init systemd" in done.stderr
    ok(setup(image, "--init", "systemd"))


def test_distribution_python_outside_a_venv_needs_system() -> None:
    managed = PythonEnv(in_venv=False, externally_managed=True, prefix="/usr", executable="/usr/bin/python3")
    with pytest.raises(InstallError, match="venv") as refused:
        check_python_env(managed, system=False)
    assert "--system" in str(refused.value)
    check_python_env(managed, system=True)
    check_python_env(PythonEnv(True, True, "/opt/v", "/opt/v/bin/python3"), system=False)
    check_python_env(PythonEnv(False, False, "/usr", "/usr/bin/python3"), system=False)


def live_setup(image: Path, recorder: Recorder, *args: str) -> List[str]:
    """``walt-node setup`` on the running system (WALT_NODE_ROOT, systemd running), with
    the recording systemctl: every systemctl call so far, as its argument line."""
    env = dict(os.environ, WALT_NODE_ROOT=str(image), **recorder.env)
    ok(subprocess.run([WALT_NODE, "setup", "--walt-node", IMAGE_WALT_NODE, *args],
                      capture_output=True, text=True, timeout=TIMEOUT, env=env))
    return [" ".join(argv[1:]) for argv in recorder.argvs() if argv[0] == "systemctl"]


def test_live_systemd_system_is_reloaded_and_started_once(tmp_path: Path,
                                                           recorder: Recorder) -> None:
    """No --prefix: the running system (WALT_NODE_ROOT), with a recording systemctl."""
    image = make_image(tmp_path / "image")
    (image / "run/systemd/system").mkdir(parents=True)
    assert live_setup(image, recorder) == ["daemon-reload", "restart " + " ".join(UNITS)]
    assert len(live_setup(image, recorder)) == 2  # nothing changed, nothing restarted
    assert live_setup(image, recorder, "--uninstall")[2:] == ["stop " + " ".join(UNITS),
                                                              "daemon-reload"]


def test_install_packages_runs_apt_inside_the_image(image: Path, tmp_path: Path) -> None:
    (image / "usr/bin").mkdir(parents=True)
    (image / "usr/bin/apt-get").write_text("")
    out = ok(setup(image, "--install-packages", "--dry-run"))
    assert f"would run: chroot {image} apt-get install -y --no-install-recommends lldpd nbd-client " \
           "kexec-tools" in out
    shutil.rmtree(image / "usr/bin")
    done = setup(image, "--install-packages")
    assert done.returncode == 1 and "apt-get" in done.stderr


def test_live_no_start_only_reloads(tmp_path: Path, recorder: Recorder) -> None:
    image = make_image(tmp_path / "image")
    (image / "run/systemd/system").mkdir(parents=True)
    assert live_setup(image, recorder, "--no-start") == ["daemon-reload"]


def test_walt_node_in_usr_bin_gets_no_command_links(tmp_path: Path) -> None:
    """The Debian package's layout: commands already on PATH."""
    image = make_image(tmp_path / "image")
    (image / "usr/bin").mkdir(parents=True)
    shutil.copy2(image / "opt/walt-node/bin/walt-node", image / "usr/bin/walt-node")
    done = subprocess.run([WALT_NODE, "setup", "--prefix", str(image), "--walt-node", "/usr/bin/walt-node"],
                          capture_output=True, text=True, timeout=TIMEOUT)
    ok(done)
    assert not (image / "usr/local").exists()
    assert "ExecStart=/usr/bin/walt-node services" in (
        image / "etc/systemd/system/walt-logs.service").read_text()


def test_uninstall_removes_the_log_fifo_but_keeps_spooled_logs(image: Path) -> None:
    before = snapshot(image)
    ok(setup(image))
    os.mkfifo(image / "var/lib/walt/logs.fifo")  # what the logs daemon creates at run time
    out = ok(setup(image, "--uninstall"))
    assert "removed /var/lib/walt/logs.fifo" in out
    assert snapshot(image) == before  # and /var/lib/walt went with it

    ok(setup(image))
    spool = image / "var/lib/walt/logs-spool"
    spool.mkdir()
    (spool / "unsent").write_text("a log line\n")
    out = ok(setup(image, "--uninstall"))
    assert "kept /var/lib/walt: it is not empty" in out
    assert (spool / "unsent").read_text() == "a log line\n"


def test_install_packages_runs_the_image_apt_get_through_chroot(image: Path, tmp_path: Path) -> None:
    (image / "usr/bin").mkdir(parents=True)
    (image / "usr/bin/apt-get").write_text("")
    tools = tmp_path / "tools"
    tools.mkdir()
    calls = tmp_path / "chroot-calls"
    (tools / "chroot").write_text(f"#!/bin/sh\necho \"$DEBIAN_FRONTEND $*\" >> {calls}\n")
    (tools / "chroot").chmod(0o755)
    env = dict(os.environ, PATH=f"{tools}:{os.environ['PATH']}")
    ok(setup(image, "--install-packages", env=env))
    assert _lines(calls) == [f"noninteractive {image} apt-get install -y --no-install-recommends "
                             "lldpd nbd-client kexec-tools"]
    (tools / "chroot").write_text("#!/bin/sh\necho 'E: Unable to locate package lldpd'\nexit 100\n")
    failed = setup(image, "--install-packages", env=env)
    assert failed.returncode == 1 and "Unable to locate package lldpd" in failed.stderr


# ------------------------------------------------------------ interrupted and concurrent setups

def setup_argv(image: Path, *args: str) -> List[str]:
    return ["setup", "--prefix", str(image), "--walt-node", IMAGE_WALT_NODE, *args]


def installed(image: Path) -> Tuple[List[str], List[str]]:
    """The paths the manifest lists: (entries, created directories)."""
    data = json.loads((image / "var/lib/walt-node/install-manifest.json").read_text())
    return sorted(entry["path"] for entry in data["entries"]), sorted(data["created_dirs"])


def test_an_install_killed_at_any_write_is_undone_by_uninstall(tmp_path: Path) -> None:
    at = 0
    while True:
        at += 1
        image = make_image(tmp_path / f"image-{at}")
        before = snapshot(image)
        code = exit_code(start_interrupted(setup_argv(image), at, signal.SIGKILL))
        if code == 0:
            break  # the install makes fewer writes than `at`: every point was tried
        assert code == -signal.SIGKILL
        assert exit_code(start_interrupted(setup_argv(image, "--uninstall"), 0, 0)) == 0
        assert snapshot(image) == before, f"setup killed at its write number {at}"
        shutil.rmtree(image)
    assert at > len(UNITS) * 2 + len(IMAGE_COMMANDS)  # units, enable links, command links were tried


def test_an_install_killed_half_way_completes_when_run_again(tmp_path: Path) -> None:
    reference = make_image(tmp_path / "reference")
    ok(setup(reference))
    image = make_image(tmp_path / "image")
    before = snapshot(image)
    assert exit_code(start_interrupted(setup_argv(image), 9, signal.SIGKILL)) == -signal.SIGKILL
    ok(setup(image))
    assert snapshot(image) == snapshot(reference)
    assert not [name for name in snapshot(image) if name.endswith(".walt-node-new")]
    ok(setup(image, "--uninstall"))
    assert snapshot(image) == before


def test_two_setups_at_once_take_turns_and_the_manifest_lists_everything(tmp_path: Path) -> None:
    reference = make_image(tmp_path / "reference")
    ok(setup(reference))
    image = make_image(tmp_path / "image")
    before = snapshot(image)
    first = start_interrupted(setup_argv(image), 1, signal.SIGSTOP)  # frozen at its first write
    try:
        assert wait_until(lambda: process_state(first) == "T", TIMEOUT)
        second = subprocess.Popen([WALT_NODE, *setup_argv(image)], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        # a positive event either way: the second setup waits for the first, or it is done
        assert wait_until(lambda: second.poll() is not None or waits_for_a_lock(second.pid), TIMEOUT)
    finally:
        os.kill(first, signal.SIGCONT)
    assert exit_code(first) == 0
    output = second.communicate(timeout=TIMEOUT)[0]
    assert second.returncode == 0, output
    assert installed(image) == installed(reference)
    assert "waiting for another walt-node setup" in output
    ok(setup(image, "--uninstall"))
    assert snapshot(image) == before


OLD_LAYOUT_UNITS = {  # one unit per service, as walt-node installed them before `walt-node services`
    "walt-logs.service": "ExecStart=@WALT_NODE@ logs-daemon $DAEMON_ARGS\n",
    "walt-mdns.service": "ExecStart=@WALT_NODE@ mdns publish\n",
    "walt-lldp-report.service": "ExecStart=@WALT_NODE@ lldp report --watch\n",
}


def install_old_layout(image: Path, tmp_path: Path) -> None:
    data = tmp_path / "old-data"
    (data / "units").mkdir(parents=True)
    (data / "bin").symlink_to(data_dir() / "bin")
    for name, exec_start in OLD_LAYOUT_UNITS.items():
        (data / "units" / name).write_text(
            f"[Unit]\nDescription={name}\n[Service]\n{exec_start}[Install]\nWantedBy=multi-user.target\n")
    target = Target("systemd", IMAGE_WALT_NODE, IMAGE_PYTHON, ["walt-node"])
    Installer(Paths(image), print).install(build_plan(target, data), "systemd", [])


def test_upgrade_from_one_unit_per_service_keeps_a_disabled_service_off(image: Path, tmp_path: Path) -> None:
    install_old_layout(image, tmp_path)
    wants = image / "etc/systemd/system/multi-user.target.wants"
    (wants / "walt-mdns.service").unlink()  # what `systemctl disable walt-mdns` does

    out = ok(setup(image))
    units = image / "etc/systemd/system"
    assert not (units / "walt-mdns.service").exists() and not (units / "walt-lldp-report.service").exists()
    assert not os.path.lexists(wants / "walt-lldp-report.service")
    assert "services $DAEMON_ARGS" in (units / "walt-logs.service").read_text()
    assert (image / "etc/walt/walt-mdns.disabled").exists()  # still off, now by its kill switch
    assert not (image / "etc/walt/walt-lldp-report.disabled").exists()  # was enabled: stays on
    assert "created /etc/walt/walt-mdns.disabled" in out


def test_live_upgrade_from_one_unit_per_service_stops_the_retired_units(
        tmp_path: Path, recorder: Recorder) -> None:
    image = make_image(tmp_path / "image")
    install_old_layout(image, tmp_path)
    (image / "run/systemd/system").mkdir(parents=True)
    # the old processes end before the resident one starts the same services
    assert live_setup(image, recorder) == ["stop walt-lldp-report.service walt-mdns.service", "daemon-reload",
                             "restart walt-logs.service walt-nbd-swap.service"]
