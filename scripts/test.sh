#!/bin/bash
# The test command: lint, then the test suite (the qemu suite is tests/vnode, run separately).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/python -m pytest tests --ignore=tests/vnode "$@"
