"""Register template files in the image's ``/etc/walt/image.spec``.

The server reads image.spec as YAML (so JSON too) and replaces
``%(server_ip)s`` (and the other walt-env keys) in every file listed under
``templates`` when it mounts the image (docs/protocols.md §1).  The file is
the image maintainer's: only the ``templates`` list is edited, line by line,
so comments, other keys, quoting and layout stay as they were written; and
uninstalling removes only the entries added here.

What is understood, without a YAML library:

- a JSON document (a YAML flow mapping): loaded and written back as JSON,
  which has no comments to lose;
- a block mapping whose top-level ``templates:`` key holds a block sequence
  (``- /path`` lines, any indentation, comments between them), a one-line
  flow sequence (``templates: [/a, "/b"]``), or nothing yet.

Anything else (``templates`` as a scalar, anchors, a multi-line flow list)
is reported, never rewritten.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from walt_node.files import write_atomically
from walt_node.install import InstallError

SPEC_MODE = 0o644
_KEY = re.compile(r"^templates\s*:(?P<rest>.*)$")
_ITEM = re.compile(r"^(?P<indent>\s*)-(?:\s+(?P<value>.*))?$")
_PLAIN_PATH = re.compile(r"^[/\w][\w./@%+=~-]*$")  # written unquoted when safe in YAML


class _Unsupported(ValueError):
    pass


@dataclass
class _Block:
    """Where the templates live in a block-style document."""
    lines: List[str]
    key: Optional[int]  # index of the `templates:` line (None: no such key)
    items: List[Tuple[int, str]]  # (line index, path) of block sequence items
    flow: Optional[List[str]]  # the values of a one-line flow sequence
    indent: str = "  "


def _is_json_document(text: str) -> bool:
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and stripped != "---":
            return stripped.startswith("{") or stripped.startswith("[")
    return False


def _load_json(spec: Path, text: str) -> Dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError as error:
        raise InstallError(f"{spec} is a flow-style document but not valid JSON ({error}); walt-node "
                           "edits only JSON or block-style YAML specs: fix it, walt-node will not overwrite "
                           "it") from None
    if not isinstance(data, dict) or not isinstance(data.get("templates", []), list):
        raise InstallError(f"{spec} must be a mapping whose \"templates\" is a list; fix it first")
    return data


def _strip_comment(value: str) -> str:
    """A YAML comment starts at a '#' preceded by a space, outside quotes."""
    quote = None
    for index, char in enumerate(value):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or value[index - 1] in " \t"):
            return value[:index].strip()
    return value.strip()


def _scalar(raw: str) -> str:
    value = _strip_comment(raw)
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return json.loads(value)
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1].replace("''", "'")
    if not value or value[0] in "&*!|>[{" or value.startswith("- "):
        raise _Unsupported(f"template entry {raw.strip()!r}")
    return value


def _quoted(path: str) -> str:
    return path if _PLAIN_PATH.match(path) and ": " not in path else json.dumps(path)


def _parse_block(text: str) -> _Block:
    lines = text.splitlines(keepends=True)
    keys = [i for i, line in enumerate(lines) if _KEY.match(line)]
    if len(keys) > 1:
        raise _Unsupported("the templates key appears twice")
    if not keys:
        return _Block(lines, None, [], None)
    key = keys[0]
    rest = _strip_comment(_KEY.match(lines[key].rstrip("\r\n")).group("rest"))
    if rest.startswith("["):
        if not rest.endswith("]"):
            raise _Unsupported("a flow list of templates spread over several lines")
        inner = rest[1:-1].strip()
        return _Block(lines, key, [], [_scalar(v) for v in inner.split(",")] if inner else [])
    if rest not in ("", "~", "null"):
        raise _Unsupported(f"templates is {rest!r}, not a list")
    items: List[Tuple[int, str]] = []
    indent = None
    for index in range(key + 1, len(lines)):
        line = lines[index].rstrip("\r\n")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _ITEM.match(line)
        if not match or (indent is not None and match.group("indent") != indent):
            if line[:1] in " \t":
                raise _Unsupported(f"line {index + 1} ({line.strip()!r}) inside the templates list")
            break
        indent = match.group("indent")
        items.append((index, _scalar(match.group("value") or "")))
    return _Block(lines, key, items, None, indent if indent is not None else "  ")


def _read(spec: Path) -> Tuple[str, Optional[Dict[str, Any]], Optional[_Block]]:
    text = spec.read_text()
    if _is_json_document(text):
        return text, _load_json(spec, text), None
    try:
        return text, None, _parse_block(text)
    except _Unsupported as error:
        raise InstallError(f"{spec}: walt-node cannot edit its templates safely ({error}); list the "
                           "files under 'templates:' one '- /path' line each, or add them by hand") from None


def templates_of(spec: Path) -> List[str]:
    if not spec.exists():
        return []
    _, data, block = _read(spec)
    if data is not None:
        return list(data.get("templates", []))
    return block.flow if block.flow is not None else [path for _, path in block.items]


def missing_templates(spec: Path, templates: List[str]) -> List[str]:
    present = templates_of(spec)
    return [path for path in templates if path not in present]


def add_templates(spec: Path, templates: List[str]) -> Tuple[List[str], bool]:
    """Add the paths not yet listed; return (paths added, whether the spec file was created)."""
    created = not spec.exists()
    if created:
        added = list(dict.fromkeys(templates))
        _write(spec, json.dumps({"templates": added}, indent=4) + "\n")
        return added, True
    added = missing_templates(spec, templates)
    if added:
        _write(spec, _edited(spec, lambda listed: listed + added))
    return added, False


def remove_templates(spec: Path, templates: List[str], created: bool) -> None:
    """Undo :func:`add_templates`; delete the spec if walt-node created it and it is back to empty."""
    if not spec.exists():
        return
    text, data, _ = _read(spec)
    if data is not None and created and set(data) <= {"templates"} and \
            not [p for p in data.get("templates", []) if p not in templates]:
        spec.unlink()
        return
    _write(spec, _edited(spec, lambda listed: [p for p in listed if p not in templates]))


def _edited(spec: Path, change) -> str:
    text, data, block = _read(spec)
    if data is not None:
        data["templates"] = change(list(data.get("templates", [])))
        return json.dumps(data, indent=4) + "\n"
    before = block.flow if block.flow is not None else [path for _, path in block.items]
    after = change(before)
    lines = list(block.lines)
    if block.key is None:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        return "".join(lines) + "templates:\n" + "".join(f"  - {_quoted(p)}\n" for p in after)
    if block.flow is not None:
        line = lines[block.key].rstrip("\r\n")
        rest = _KEY.match(line).group("rest")
        comment = rest[rest.index(_strip_comment(rest)) + len(_strip_comment(rest)):]
        lines[block.key] = f"templates: [{', '.join(_quoted(p) for p in after)}]{comment}\n"
        return "".join(lines)
    kept = {path for path in after}
    removed = {index for index, path in block.items if path not in kept}
    new = [p for p in after if p not in before]
    anchor = block.items[-1][0] if block.items else block.key
    out = []
    for index, line in enumerate(lines):
        if index not in removed:
            out.append(line if line.endswith("\n") else line + "\n")
        if index == anchor:
            out += [f"{block.indent}- {_quoted(p)}\n" for p in new]
    return "".join(out)


def _write(spec: Path, text: str) -> None:
    write_atomically(spec, text.encode(), SPEC_MODE)
