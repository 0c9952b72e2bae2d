"""Apply a :class:`~walt_node.install.plan.Plan` to an image, and undo it.

Everything written is recorded in a manifest (JSON, under
/var/lib/walt-node), with a hash of each file as installed, so that:

- a second run that finds everything in place writes nothing at all;
- an upgrade replaces walt-node's own files but never a file of the image,
  nor one of ours that somebody edited since, unless ``--force`` (which first
  moves the original to a backup directory);
- ``--uninstall`` removes exactly what was created (directories included),
  restores the backups, and leaves files edited since in place;
- upstream walt-node 10.0's files (:mod:`.upstream`) are replaced or removed
  without ``--force`` and without a backup: they only work with upstream's
  package, so ``--uninstall`` does not bring them back.

The manifest is a journal: each change to the image (a file, a link, a
directory, a backup) is recorded there *before* it is made, with what the path
will hold once done, so an installation killed half-way is still undone
completely by ``--uninstall``. Installing and uninstalling hold an exclusive
lock (flock) on the image's root directory: two setups at once take turns.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Set

from walt_node import __version__
from walt_node.files import remove_leftover_temporaries, sha256_of, symlink_atomically, write_atomically
from walt_node.install import InstallError, imagespec, upstream
from walt_node.install.plan import Item, Plan
from walt_node.paths import NODE, Paths
from walt_node.service import RESIDENT_SERVICES

MANIFEST = str(NODE.install_manifest)
BACKUP_DIR = str(NODE.install_backups)
IMAGE_SPEC = str(NODE.image_spec)
LOG_FIFO = str(NODE.logs_fifo)

Say = Callable[[str], None]


@dataclass
class Manifest:
    init: str = ""
    entries: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # path -> record
    created_dirs: List[str] = field(default_factory=list)
    image_spec: Optional[Dict[str, Any]] = None

    @classmethod
    def load(cls, image: Paths) -> Optional[Manifest]:
        host = image.inside(MANIFEST)
        if not host.exists():
            return None
        try:
            data = json.loads(host.read_text())
            entries = {record["path"]: record for record in data["entries"]}
            return cls(data["init"], entries, list(data["created_dirs"]), data.get("image_spec"))
        except (ValueError, KeyError, TypeError) as error:
            raise InstallError(
                f"{host} is damaged ({error}); walt-node cannot tell what it installed. "
                "Restore it from a backup, or remove it and reinstall with --force"
            ) from None

    def serialized(self) -> bytes:
        data = {
            "walt_node_version": __version__,
            "init": self.init,
            "entries": list(self.entries.values()),
            "created_dirs": self.created_dirs,
            "image_spec": self.image_spec,
        }
        return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


@dataclass
class Outcome:
    changed: List[str] = field(default_factory=list)  # human-readable actions done
    units_changed: List[str] = field(default_factory=list)
    units_removed: List[str] = field(default_factory=list)  # to stop, not to start
    units: List[str] = field(default_factory=list)


class Installer:
    def __init__(self, image: Paths, say: Say, force: bool = False, dry_run: bool = False):
        self.image = image
        self.say = say
        self.force = force
        self.dry_run = dry_run

    # ------------------------------------------------------------------ install
    def install(self, plan: Plan, init: str, templates: List[str]) -> Outcome:
        with self._locked():
            return self._install(plan, init, templates)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the image's setup lock: another setup or uninstall of this image waits."""
        fd = os.open(self.image.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.say(f"waiting for another walt-node setup of {self.image.root} to finish")
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _install(self, plan: Plan, init: str, templates: List[str]) -> Outcome:
        manifest = Manifest.load(self.image) or Manifest()
        self.saved = manifest.serialized() if os.path.lexists(self.image.inside(MANIFEST)) else b""
        actions = self._classify(plan, manifest)
        planned = {item.path for item in plan.items}
        stale = [path for path in manifest.entries if path not in planned]
        unit_dirs = sorted({os.path.dirname(item.path) for item in plan.items if item.unit})
        retired = [path for path in upstream.installed_paths(self.image, unit_dirs) if path not in planned]
        self._refuse_conflicts(actions)
        spec_missing = imagespec.missing_templates(self.image.inside(IMAGE_SPEC), templates)
        outcome = Outcome(units=plan.units)
        if self.dry_run:
            self._describe(actions, stale + retired, spec_missing, outcome)
            return outcome
        self._carry_over_disabled(manifest, stale, outcome)
        for path in stale:
            self._remove_entry(manifest, path, outcome)
        self._drop_spec_templates(manifest, stale, outcome)
        for path in retired:
            _delete(self.image.inside(path))
            outcome.changed.append(f"removed upstream walt-node's {path}")
        remove_leftover_temporaries(self.image.inside(MANIFEST))  # of a setup killed while saving it
        for item, action in actions:
            if action == "skip":
                self.say(f"kept the image's own {item.path} (--force replaces it, keeping a backup)")
            elif action != "keep":
                self._write(item, action, manifest, outcome)
            elif "pending" in manifest.entries.get(item.path, {}):  # written, then killed
                manifest.entries[item.path].update(manifest.entries[item.path].pop("pending"))
        self._merge_spec(manifest, spec_missing, outcome)
        manifest.init = init
        self._save(manifest)
        return outcome

    def _classify(self, plan: Plan, manifest: Manifest) -> List[tuple]:
        actions = []
        for item in plan.items:
            host = self.image.inside(item.path)
            record = manifest.entries.get(item.path)
            if _matches(item, host):
                # identical to ours already (same venv upgraded by pip): ours from now on
                adopt = record is None and upstream.is_upstream(self.image, item.path)
                action = "adopt" if adopt else "keep"
            elif not os.path.lexists(host):
                action = "create"
            elif record is not None and _unmodified(record, host):
                action = "update"
            elif record is None and upstream.is_upstream(self.image, item.path):
                action = "upgrade"  # upstream walt-node's: replaced, no backup
            elif self.force:
                action = "replace"
            else:
                action = "skip" if item.yields_to_image and record is None else "conflict"
            actions.append((item, action))
        return actions

    def _refuse_conflicts(self, actions: List[tuple]) -> None:
        conflicts = [item.path for item, action in actions if action == "conflict"]
        if conflicts:
            raise InstallError(
                "these files of the image are not walt-node's (or were edited since walt-node "
                "installed them): " + ", ".join(conflicts) + ". Nothing was changed. Rerun with "
                f"--force to replace them (the originals are kept under {BACKUP_DIR} and put back "
                "by --uninstall)"
            )

    def _describe(self, actions: List[tuple], stale: List[str], spec: List[str], outcome: Outcome) -> None:
        for path in stale:
            outcome.changed.append(f"would remove {path} (no longer part of walt-node)")
        for item, action in actions:
            if action != "keep":
                outcome.changed.append(f"would {action} {item.kind} {item.path}")
        if spec:
            outcome.changed.append(f"would add {', '.join(spec)} to the templates of {IMAGE_SPEC}")

    def _write(self, item: Item, action: str, manifest: Manifest, outcome: Outcome) -> None:
        host = self.image.inside(item.path)
        self._make_parents(host.parent, manifest)
        record = manifest.entries.get(item.path, {"path": item.path, "kind": item.kind, "backup": None})
        manifest.entries[item.path] = record
        if action == "replace":
            if record.get("backup") is None:
                record["backup"] = self._back_up(item.path, manifest)
            else:  # the original is saved already: this is our edited copy
                _delete(host)
        record["pending"] = _expected_state(item)
        self._save(manifest)  # journal first: if we die while writing, --uninstall knows the path
        remove_leftover_temporaries(host)  # from a setup killed while writing it
        if action == "adopt":
            pass
        elif item.kind == "dir":
            os.mkdir(host, item.mode)
        elif item.kind == "symlink":
            symlink_atomically(host, item.target)
        else:
            write_atomically(host, item.content, item.mode)
        record.update(record.pop("pending"), kind=item.kind)
        outcome.changed.append(f"took over upstream walt-node's {item.path}" if action == "adopt"
                               else f"{action}d {item.path}")
        if item.unit:
            outcome.units_changed.append(item.unit)

    def _make_parents(self, host_dir: Path, manifest: Manifest) -> None:
        missing = []
        while not host_dir.exists() and host_dir != self.image.root:
            missing.append(host_dir)
            host_dir = host_dir.parent
        journal_dir = self.image.inside(MANIFEST).parent
        for directory in reversed(missing):
            manifest.created_dirs.append(self.image.as_node(directory))
            if directory != journal_dir and directory not in journal_dir.parents:
                self._save(manifest)  # (the journal's own directories come before any journal)
            os.mkdir(directory, 0o755)

    def _back_up(self, path: str, manifest: Manifest) -> str:
        backup = BACKUP_DIR + path
        host_backup = self.image.inside(backup)
        self._make_parents(host_backup.parent, manifest)
        if os.path.lexists(host_backup):
            raise InstallError(f"a backup of {path} already exists at {host_backup}; move it away first")
        manifest.entries[path]["backup"] = backup
        self._save(manifest)
        os.replace(self.image.inside(path), host_backup)
        self.say(f"kept the image's own {path} as {backup}")
        return backup

    def _merge_spec(self, manifest: Manifest, missing: List[str], outcome: Outcome) -> None:
        if not missing:
            return
        spec = self.image.inside(IMAGE_SPEC)
        record = manifest.image_spec or {"templates": [], "created": not spec.exists(), "original": None}
        if spec.exists() and record["original"] is None and not record["templates"]:
            record["original"] = spec.read_text()  # restored as-is by --uninstall
        self._make_parents(spec.parent, manifest)
        record["templates"] += missing
        record["sha256"] = None  # until written: --uninstall then removes our templates one by one
        manifest.image_spec = record
        self._save(manifest)
        added, _ = imagespec.add_templates(spec, missing)
        record["sha256"] = sha256_of(spec)
        outcome.changed.append(f"added {', '.join(added)} to the templates of {IMAGE_SPEC}")

    def _drop_spec_templates(self, manifest: Manifest, removed: List[str], outcome: Outcome) -> None:
        """Unregister the templates we added for files this run removed (an option turned off)."""
        record = manifest.image_spec
        gone = [path for path in (record or {}).get("templates", []) if path in removed]
        if not gone:
            return
        kept = [path for path in record["templates"] if path not in gone]
        if not kept:  # none of ours left: give the image its own spec back
            manifest.image_spec = dict(record, templates=gone)
            self._restore_spec(manifest, outcome)
            manifest.image_spec = None
        else:
            spec = self.image.inside(IMAGE_SPEC)
            imagespec.remove_templates(spec, gone, created=False)
            record.update(templates=kept, sha256=sha256_of(spec))
            outcome.changed.append(f"removed {', '.join(gone)} from {IMAGE_SPEC}")
        self._save(manifest)

    def _save(self, manifest: Manifest) -> None:
        """Write the manifest if it changed since last saved (or loaded)."""
        host = self.image.inside(MANIFEST)
        self._make_parents(host.parent, manifest)
        content = manifest.serialized()  # after _make_parents: it may have grown created_dirs
        if content == self.saved:
            return
        write_atomically(host, content, 0o644)
        self.saved = content

    # ---------------------------------------------------------------- uninstall
    def uninstall(self) -> Optional[Outcome]:
        """Undo the installation; None when the image has no manifest."""
        with self._locked():
            return self._uninstall()

    def _uninstall(self) -> Optional[Outcome]:
        manifest = Manifest.load(self.image)
        if manifest is None:
            if not self.dry_run:
                self._remove_unborn_journal()
            return None
        outcome = Outcome(units=[p.rsplit("/", 1)[1] for p, r in manifest.entries.items() if _is_unit(p, r)])
        if self.dry_run:
            outcome.changed = [f"would remove {path}" for path in manifest.entries]
            return outcome
        self._remove_log_fifo(outcome)
        for path in reversed(list(manifest.entries)):
            self._remove_entry(manifest, path, outcome)
        self._restore_spec(manifest, outcome)
        _delete(self.image.inside(MANIFEST))
        remove_leftover_temporaries(self.image.inside(MANIFEST))
        for directory in sorted(manifest.created_dirs, key=lambda d: d.count("/"), reverse=True):
            self._remove_dir_if_empty(directory)
        return outcome

    def _remove_unborn_journal(self) -> None:
        """What a setup killed before its first manifest was saved left: that manifest's
        temporary file and directory (the manifest's parents, e.g. /var/lib, are the image's)."""
        journal = self.image.inside(MANIFEST)
        remove_leftover_temporaries(journal)
        try:
            journal.parent.rmdir()
        except OSError:
            pass  # absent, or not empty: then not ours to judge

    # ---------------------------------------------------------------- hand over
    def hand_over(self, package_files: Set[str], diversions: Dict[str, str]) -> Outcome:
        """Give the image over to the Debian package (its postinst calls this).

        What an earlier `walt-node setup` installed (manifest) and what upstream
        walt-node's setup installed would shadow the package's files or point at
        another walt-node: it goes, except what dpkg owns now (``package_files``),
        which is forgotten. A /bin script that dpkg-divert moved aside
        (``diversions``: path -> diverted name) was setup's copy: it is deleted, and
        the image's own original that setup had backed up takes its place, so that
        removing the package gives it back. The templates registered in image.spec
        (the maintainer's own files) stay.
        """
        with self._locked():
            return self._hand_over(package_files, diversions)

    def _hand_over(self, package_files: Set[str], diversions: Dict[str, str]) -> Outcome:
        outcome = Outcome()
        manifest = Manifest.load(self.image)
        if manifest is not None:
            outcome.units = [p.rsplit("/", 1)[1] for p, r in manifest.entries.items() if _is_unit(p, r)]
            for path in reversed(list(manifest.entries)):
                if path in package_files:
                    self._give_to_package(manifest.entries.pop(path), diversions.get(path), outcome)
                else:
                    self._remove_entry(manifest, path, outcome)
            _delete(self.image.inside(MANIFEST))
            remove_leftover_temporaries(self.image.inside(MANIFEST))
            for directory in sorted(manifest.created_dirs, key=lambda d: d.count("/"), reverse=True):
                if directory not in package_files:
                    self._remove_dir_if_empty(directory)
            if manifest.image_spec:
                templates = ", ".join(manifest.image_spec["templates"])
                self.say(f"kept {templates} in the templates of {IMAGE_SPEC}")
        for path in upstream.installed_paths(self.image, []):
            _delete(self.image.inside(path))
            outcome.changed.append(f"removed upstream walt-node's {path}")
            if path.endswith(f"/system/{upstream.UNIT}"):
                outcome.units.append(upstream.UNIT)
        return outcome

    def _give_to_package(self, record: Dict[str, Any], diverted: Optional[str], outcome: Outcome) -> None:
        path = record["path"]
        outcome.changed.append(f"{path} belongs to the Debian package now")
        if diverted is None:
            return
        host = self.image.inside(diverted)
        if os.path.lexists(host) and _unmodified(record, host):
            _delete(host)  # setup's copy, moved aside by dpkg-divert
        backup = record.get("backup")
        if backup and not os.path.lexists(host):
            os.replace(self.image.inside(backup), host)
            outcome.changed.append(f"the image's own {path} is kept as {diverted}: removing the package "
                                   "puts it back")

    def _remove_log_fifo(self, outcome: Outcome) -> None:
        """Without its reader, the FIFO would block walt-log-echo (protocols §3): remove it.

        Other runtime files there (the spool of unsent logs) are data: they stay.
        """
        fifo = self.image.inside(LOG_FIFO)
        if fifo.is_fifo():
            fifo.unlink()
            outcome.changed.append(f"removed {LOG_FIFO} (walt-log-echo sends over TCP again)")

    def _carry_over_disabled(self, manifest: Manifest, stale: List[str], outcome: Outcome) -> None:
        """A unit of ours that now runs inside the resident walt-logs unit, disabled by
        `systemctl disable` (its enable link gone): its kill switch keeps it off."""
        for path in stale:
            name = os.path.basename(path)[: -len(".service")]
            if not _is_unit(path, manifest.entries[path]) or name not in RESIDENT_SERVICES:
                continue
            links = [other for other in manifest.entries
                     if ".wants/" in other and os.path.basename(other) == os.path.basename(path)]
            switch = str(NODE.kill_switch(name))
            if links and not any(os.path.lexists(self.image.inside(link)) for link in links) \
                    and not os.path.lexists(self.image.inside(switch)):
                host = self.image.inside(switch)
                host.parent.mkdir(parents=True, exist_ok=True)
                write_atomically(host, b"", 0o644)
                outcome.changed.append(f"created {switch}: {name} was disabled, it now runs in "
                                       "walt-logs.service, which honours this switch")

    def _remove_entry(self, manifest: Manifest, path: str, outcome: Outcome) -> None:
        record = manifest.entries.pop(path)
        host = self.image.inside(path)
        remove_leftover_temporaries(host)
        if record["kind"] == "dir":
            if not self._remove_dir_if_empty(path):
                return
        elif os.path.lexists(host) and not _unmodified(record, host):
            self.say(f"kept {path}: it was changed after walt-node installed it")
            return
        else:
            _delete(host)
        outcome.changed.append(f"removed {path}")
        if _is_unit(path, record):
            outcome.units_changed.append(path.rsplit("/", 1)[1])
            outcome.units_removed.append(path.rsplit("/", 1)[1])
        backup = record.get("backup")
        # the backup may not exist: setup was killed before it moved the original there
        if backup and not os.path.lexists(host) and os.path.lexists(self.image.inside(backup)):
            os.replace(self.image.inside(backup), host)
            outcome.changed.append(f"restored the image's own {path}")

    def _remove_dir_if_empty(self, path: str) -> bool:
        host = self.image.inside(path)
        try:
            os.rmdir(host)
        except FileNotFoundError:
            pass
        except OSError:
            self.say(f"kept {path}: it is not empty")
            return False
        return True

    def _restore_spec(self, manifest: Manifest, outcome: Outcome) -> None:
        record = manifest.image_spec
        if not record:
            return
        spec = self.image.inside(IMAGE_SPEC)
        if spec.exists() and sha256_of(spec) == record.get("sha256"):
            # untouched since we merged: give back the exact original bytes
            if record["created"]:
                spec.unlink()
            else:
                write_atomically(spec, record["original"].encode(), 0o644)
        else:
            imagespec.remove_templates(spec, record["templates"], record["created"])
        outcome.changed.append(f"removed {', '.join(record['templates'])} from {IMAGE_SPEC}")


def _matches(item: Item, host: Path) -> bool:
    if item.kind == "symlink":
        return host.is_symlink() and os.readlink(host) == item.target
    if item.kind == "dir":
        return host.is_dir()
    if host.is_symlink() or not host.is_file():
        return False
    return host.read_bytes() == item.content and (host.stat().st_mode & 0o7777) == item.mode


def _expected_state(item: Item) -> Dict[str, Any]:
    """What ``item``'s path holds once written, as recorded in the manifest."""
    if item.kind == "symlink":
        return {"target": item.target}
    if item.kind == "file":
        return {"sha256": hashlib.sha256(item.content).hexdigest()}
    return {}


def _unmodified(record: Dict[str, Any], host: Path) -> bool:
    """Is ``host`` still exactly what walt-node wrote there (or was writing when interrupted)?"""
    pending = record.get("pending")
    if pending is not None and _unmodified({"kind": record["kind"], **pending}, host):
        return True
    if record["kind"] == "symlink":
        return host.is_symlink() and os.readlink(host) == record.get("target")
    if record["kind"] == "dir":
        return host.is_dir() and not host.is_symlink()
    return host.is_file() and not host.is_symlink() and sha256_of(host) == record.get("sha256")


def _is_unit(path: str, record: Dict[str, Any]) -> bool:
    return record["kind"] == "file" and path.endswith(".service") and ".wants/" not in path


def _delete(host: Path) -> None:
    """Remove one file or link; directories are never removed recursively."""
    if os.path.lexists(host):
        host.unlink()
