"""The shim the build needs: metadata is in pyproject.toml; only the console
scripts come from here, generated from the one command registry."""

import runpy
from pathlib import Path

from setuptools import setup

registry = runpy.run_path(str(Path(__file__).parent / "walt_node" / "commands" / "__init__.py"))
setup(entry_points={"console_scripts": list(registry["console_scripts"]())})
