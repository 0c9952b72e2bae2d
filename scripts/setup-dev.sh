#!/bin/bash
# Create .venv with walt-node (editable) and the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[test]' -r requirements-test.txt
echo "walt-node installed in .venv: $(.venv/bin/walt-node --version)"
