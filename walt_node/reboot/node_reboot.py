"""``walt-node reboot``, installed as ``/bin/walt-reboot``: flush, run hooks, reboot."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import List

from walt_node.bounds import Deadline
from walt_node.config import ConfigError, read_key_values
from walt_node.errors import WaltNodeError
from walt_node.paths import Paths

log = logging.getLogger(__name__)

SYNC_TIMEOUT = 10.0
HOOK_TIMEOUT = 10.0
HOOKS_BUDGET = 20.0
DEFAULT_GRACE = 15.0
METHODS = ("reboot", "kexec")
KEXEC_DEADLINE_END = 40.0  # seconds after start by which the kexec attempt must be over
KEXEC_MIN_DEADLINE = 5.0


def reboot_method(paths: Paths, default: str = "reboot") -> str:
    method = read_key_values(paths.reboot_conf).get("method", default)
    if method not in METHODS:
        raise ConfigError(f"{paths.reboot_conf}: method '{method}' is not one of "
                          + ", ".join(METHODS))
    return method


def list_hooks(directory: Path) -> List[Path]:
    """Executable regular files of ``directory``, in name order (others are skipped)."""
    try:
        entries = sorted(directory.iterdir())
    except OSError:
        return []
    return [entry for entry in entries
            if entry.is_file() and os.access(entry, os.X_OK) and not entry.name.startswith(".")]


def run_hooks(directory: Path, hook_timeout: float, budget: float) -> None:
    from walt_node.runner import CommandFailed, run

    deadline = Deadline(budget)
    for hook in list_hooks(directory):
        left = deadline.remaining()
        if left <= 0:
            log.warning("hooks took more than %g s; skipping %s and later ones", budget, hook)
            return
        limit = min(hook_timeout, left)
        try:
            done = run(_time_limited(hook, limit), timeout=limit + 2, check=True)
            log.info("hook %s done%s", hook.name, f": {done.stdout.strip()}" if done.stdout.strip()
                     else "")
        except CommandFailed as error:
            if error.returncode in (None, -9, 128 + 9):  # killed by the time limit
                log.warning("hook %s did not finish within %g s: stopped, rebooting anyway",
                            hook, limit)
            else:
                log.warning("hook %s failed, rebooting anyway: %s", hook, error)
        except OSError as error:
            log.warning("hook %s could not run, rebooting anyway: %s", hook, error)


def _time_limited(hook: Path, seconds: float) -> List[str]:
    """argv running ``hook`` under coreutils' timeout, which kills the hook's whole
    process group (the runner's own timeout would only kill the hook, leaving e.g.
    its 'sleep' behind)."""
    from walt_node.runner import which

    if which("timeout") is None:
        return [str(hook)]
    return ["timeout", "-s", "KILL", f"{seconds:.3f}", str(hook)]


def os_reboot(grace: float, immediate: bool = False) -> int:
    """Reboot; returns only by raising (the reboot failed, or the node still runs after ``grace``)."""
    from walt_node.reboot import kexec
    from walt_node.runner import CommandFailed, CommandMissing

    try:
        kexec.os_reboot(immediate=immediate)
    except (CommandFailed, CommandMissing) as error:
        raise WaltNodeError(f"reboot failed: {error}") from error
    time.sleep(grace)  # the time the OS gets to stop this process: reboot's own semantics
    raise WaltNodeError(f"'reboot' returned and the node still runs after {grace:g} s")
