"""Packaging for walt-node (metadata lives here; pyproject.toml names the build system)."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(
    r'__version__ = "([^"]+)"', (HERE / "walt_node" / "__init__.py").read_text()
).group(1)

setup(
    name="walt-node",
    version=VERSION,
    description="Node-side services for WalT testbed images: logs, kexec reboot, blink, "
    "NBD swap, mDNS and LLDP",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="AGPL-3.0-or-later",
    python_requires=">=3.9",
    packages=find_packages(include=["walt_node", "walt_node.*"]),
    include_package_data=True,
    package_data={"walt_node": ["data/*", "data/**/*"]},
    install_requires=[
        "requests>=2.25",
        "pyroute2>=0.5.14",
        "zeroconf>=0.38",
    ],
    extras_require={
        "systemd": ["systemd-python>=234"],
        "test": ["pytest>=7", "hypothesis>=6", "pexpect>=4.8", "ruff>=0.4"],
    },
    entry_points={
        "console_scripts": [
            "walt-node = walt_node.cli:main",
            "walt-node-setup = walt_node.cli:setup_main",
            "walt-logs-daemon = walt_node.cli:logs_daemon_main",
            "walt-log-monitor = walt_node.cli:log_monitor_main",
            "walt-ipxe-kexec-reboot = walt_node.cli:ipxe_kexec_reboot_main",
            "walt-serial-autolog = walt_node.cli:serial_autolog_main",
        ]
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Operating System :: POSIX :: Linux",
        "Topic :: System :: Networking",
    ],
)
