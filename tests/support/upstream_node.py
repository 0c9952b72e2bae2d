"""Upstream walt-node 10.0 (PyPI) as a test oracle, and this project's own dist files.

Upstream's code is installed at test time into its own venv, cached under
``/var/cache/walt-node-tests`` (``$WALT_NODE_TEST_CACHE``), and only run:
never copied into the repository.  Its ``walt-node-setup`` writes its command
links into the real ``/usr/local/bin`` whatever ``--prefix`` says, so it runs
in a private mount namespace where the image tree's ``usr/local/bin`` is
mounted over the host's.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Tuple

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("WALT_NODE_TEST_CACHE", "/var/cache/walt-node-tests"))
UPSTREAM = "walt-node==10.0"
# What upstream's setup links into /usr/local/bin (every walt* entry of its venv's bin).
UPSTREAM_LINKS = ("walt-node-setup", "walt-logs-daemon", "walt-log-monitor", "walt-monitor",
                  "walt-serial-autolog", "walt-ipxe-kexec-reboot", "walt-python3")


@contextmanager
def _locked(name: str) -> Iterator[Path]:
    """CACHE/name, built by one test run at a time."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield CACHE / name


def _run(argv, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout,
                          **kwargs)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed ({done.returncode}):\n"
                           f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return done


def upstream_wheel_dir() -> Path:
    """Upstream's walt-node 10.0 wheel and its dependencies (downloaded from PyPI once)."""
    with _locked("upstream-node-10.0-wheels") as wheels:
        if not (wheels / ".complete").exists():
            shutil.rmtree(wheels, ignore_errors=True)
            _run([sys.executable, "-m", "pip", "download", "--disable-pip-version-check",
                  "-d", wheels, UPSTREAM])
            (wheels / ".complete").write_text(UPSTREAM + "\n")
        return wheels


def upstream_venv() -> Path:
    """A venv where upstream walt-node 10.0 and its setup run (its own dependencies)."""
    wheels = upstream_wheel_dir()
    with _locked("upstream-node-10.0-venv") as venv:
        if not (venv / ".complete").exists():
            shutil.rmtree(venv, ignore_errors=True)
            _run([sys.executable, "-m", "venv", venv])
            _run([venv / "bin/pip", "install", "--disable-pip-version-check", "--no-index",
                  "--find-links", wheels, UPSTREAM])
            (venv / ".complete").write_text(UPSTREAM + "\n")
        return venv


def install_upstream(root: Path, *setup_args: str) -> Path:
    """Install upstream walt-node 10.0 into the image tree ``root`` as its setup does.

    Its venv's bin directory is copied to the same path inside ``root`` (so its
    command links resolve inside the image), then its ``walt-node-setup
    --prefix root`` runs.  Returns the venv path (as the image sees it).
    """
    venv = upstream_venv()
    in_image = root / str(venv).lstrip("/")
    in_image.parent.mkdir(parents=True, exist_ok=True)
    if not in_image.exists():
        shutil.copytree(venv / "bin", in_image / "bin", symlinks=True)
    local_bin = root / "usr/local/bin"
    local_bin.mkdir(parents=True, exist_ok=True)
    _run(["unshare", "-m", "sh", "-ec",
          'mount --make-rprivate / && mount --bind "$1" /usr/local/bin && shift && exec "$@"',
          "sh", local_bin, venv / "bin/walt-node-setup", "--prefix", root, *setup_args], timeout=120)
    # its walt-python3 is written into the venv it runs from: copy it in too
    shutil.copy2(venv / "bin/walt-python3", in_image / "bin/walt-python3")
    return venv


def build_dist(out: Path) -> Tuple[Path, Path]:
    """This project's wheel and sdist, built by `python -m build` as a release is."""
    out.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", out, REPO], timeout=300)
    wheels, sdists = sorted(out.glob("walt_node-*.whl")), sorted(out.glob("walt[-_]node-*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, f"python -m build gave {list(out.iterdir())}"
    return wheels[0], sdists[0]
