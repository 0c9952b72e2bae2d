#!/bin/bash
# Check that `pip install .` works and every module imports on each Python
# from 3.9 to 3.12 found on this machine (pyenv or /usr/bin); missing ones are
# reported and skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
checked=0
for version in 3.9 3.10 3.11 3.12; do
    python=$(ls ~/.pyenv/versions/"$version".*/bin/python"$version" 2>/dev/null | tail -1 || true)
    [ -n "$python" ] || python=$(command -v "python$version" || true)
    if [ -z "$python" ] || ! "$python" -c pass 2>/dev/null; then
        echo "python$version: not on this machine, skipped"
        continue
    fi
    "$python" -m venv "$work/venv$version"
    "$work/venv$version/bin/pip" install -q . >"$work/pip$version.log" 2>&1 \
        || { cat "$work/pip$version.log"; echo "python$version: pip install . FAILED"; exit 1; }
    (cd "$work" && "$work/venv$version/bin/python" - <<'PY'
import importlib, pkgutil, sys
import walt_node
failed = []
for module in pkgutil.walk_packages(walt_node.__path__, "walt_node."):
    if module.name.endswith("__main__"):  # runs the CLI when imported
        continue
    try:
        importlib.import_module(module.name)
    except ImportError as error:  # optional extras (systemd) may be absent
        if "systemd" not in str(error):
            failed.append(f"{module.name}: {error}")
    except Exception as error:
        failed.append(f"{module.name}: {error!r}")
if failed:
    sys.exit("\n".join(failed))
PY
    )
    "$work/venv$version/bin/walt-node" --version
    echo "python$version: pip install . and every module import OK"
    checked=$((checked + 1))
done
[ "$checked" -gt 0 ] || { echo "no Python 3.9-3.12 found"; exit 1; }
