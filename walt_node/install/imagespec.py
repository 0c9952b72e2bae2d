"""Register template files in the image's ``/etc/walt/image.spec`` (JSON).

The server replaces ``%(server_ip)s`` (and the other walt-env keys) in every
file listed under ``"templates"`` when it mounts the image (protocols §1).
The image's own spec is merged, never replaced: its other keys and templates
are kept as they are, and uninstalling removes only the entries added here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Tuple

from walt_node.files import write_atomically
from walt_node.install import InstallError

SPEC_MODE = 0o644


def _load(spec: Path) -> Dict[str, Any]:
    try:
        data = json.loads(spec.read_text())
    except ValueError as error:
        raise InstallError(
            f"{spec} is not valid JSON ({error}); fix it or move it away, walt-node will not overwrite it"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("templates", []), list):
        raise InstallError(f"{spec} must be a JSON object whose \"templates\" is a list; fix it first")
    return data


def missing_templates(spec: Path, templates: List[str]) -> List[str]:
    present = _load(spec).get("templates", []) if spec.exists() else []
    return [path for path in templates if path not in present]


def add_templates(spec: Path, templates: List[str]) -> Tuple[List[str], bool]:
    """Add the paths not yet listed; return (paths added, whether the spec file was created)."""
    created = not spec.exists()
    data: Dict[str, Any] = {} if created else _load(spec)
    listed = data.setdefault("templates", [])
    added = [path for path in templates if path not in listed]
    if added:
        listed.extend(added)
        write_atomically(spec, (json.dumps(data, indent=4) + "\n").encode(), SPEC_MODE)
    return added, created


def remove_templates(spec: Path, templates: List[str], created: bool) -> None:
    """Undo :func:`add_templates`; delete the spec if walt-node created it and it is back to empty."""
    if not spec.exists():
        return
    data = _load(spec)
    listed = [path for path in data.get("templates", []) if path not in templates]
    if created and not listed and set(data) <= {"templates"}:
        spec.unlink()
        return
    data["templates"] = listed
    write_atomically(spec, (json.dumps(data, indent=4) + "\n").encode(), SPEC_MODE)
