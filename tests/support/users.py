"""A second local user for tests: run a function as ``nobody`` in a forked child."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import tempfile
import traceback
from pathlib import Path
from typing import Callable, Iterator

OTHER_USER = "nobody"


def other_user() -> pwd.struct_passwd:
    return pwd.getpwnam(OTHER_USER)


def run_as_other_user(function: Callable[[], None]) -> None:
    """Call ``function`` in a child process with nobody's uid and gid; raise if it fails."""
    user = other_user()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            function()
            status = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(status)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0, f"{function} failed as {OTHER_USER}"


@contextlib.contextmanager
def users_directory() -> Iterator[Path]:
    """A directory that belongs to the other user, as a home or a shared directory would
    (under /tmp: pytest's own temporary directories are closed to other users)."""
    path = Path(tempfile.mkdtemp(prefix="walt-node-test-"))
    user = other_user()
    os.chown(path, user.pw_uid, user.pw_gid)
    try:
        yield path
    finally:
        shutil.rmtree(path)
