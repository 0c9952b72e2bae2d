"""`walt-node setup` (also `walt-node-setup`): install walt-node's services in an image."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import List, Optional

from walt_node import __version__
from walt_node.errors import WaltNodeError
from walt_node.install import InstallError

DESCRIPTION = """\
Install walt-node's services and commands into a WalT node image, or remove them.

Installs: the systemd units walt-logs (one process running the logs daemon,
the mDNS publisher, the LLDP reporter and the journal forwarder; turn one off
with /etc/walt/<service>.disabled, see 'walt-node services --help') and
walt-nbd-swap, enabled for multi-user.target, or for busybox init the script
/etc/init.d/S90walt-node; the log FIFO directory
/var/lib/walt; links in /usr/local/bin to the walt-node commands of this
environment; /bin/blink and /bin/walt-reboot.

Opt-in (kept by later runs until turned off, removed by --uninstall):
--time-sync ptp|ntp (clock kept on the server's), --cpuinfo FILE
(/etc/cpuinfo), --image-shell (/bin/walt-image-shell-start and -shutdown).

Run it inside the image (`walt image shell`, a Dockerfile RUN line), or from
outside with --prefix ROOT for an image tree: then enable links are written
under ROOT and nothing is started. A file of the image is never replaced
without --force (the original is kept under /var/lib/walt-node/backup and put
back by --uninstall). Running it again changes nothing. Disable one service in
an image with: touch /etc/walt/<service>.disabled

examples:
  walt-node-setup                              # in `walt image shell`
  walt-node-setup --prefix /srv/rootfs --walt-node /opt/walt-node/bin/walt-node
  walt-node-setup --time-sync ptp --image-shell --cpuinfo rpi-4-b.cpuinfo
  walt-node-setup --dry-run
  walt-node-setup --uninstall
"""

INIT_CHOICES = ("auto", "systemd", "busybox")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from walt_node.install.plan import SYSTEMD_UNIT_DIR

    parser.add_argument("--prefix", metavar="ROOT",
                        help="install into the image tree ROOT instead of this system (nothing is started)")
    parser.add_argument("--init", choices=INIT_CHOICES, default="auto",
                        help="init system of the image (default: detected)")
    # upstream walt-node-setup's spelling of --init, so existing Dockerfiles keep working
    parser.add_argument("--init-system", dest="init", type=str.lower, choices=INIT_CHOICES[1:],
                        metavar="SYSTEMD|BUSYBOX", help="same as --init (upstream walt-node's option name)")
    parser.add_argument("--systemd-dir", metavar="DIR",
                        help=f"where the units go, as a path inside the image (default {SYSTEMD_UNIT_DIR})")
    parser.add_argument("--walt-node", metavar="PATH",
                        help="walt-node executable the services run, as a path inside the image "
                        "(default: the one of the Python running this command)")
    parser.add_argument("--force", action="store_true",
                        help="replace files of the image that are in the way (keeping a backup)")
    parser.add_argument("--uninstall", action="store_true",
                        help="remove what setup installed and restore the backups")
    parser.add_argument("--dry-run", action="store_true", help="list what would change, change nothing")
    parser.add_argument("--no-start", action="store_true",
                        help="on a running systemd system, install and enable but do not (re)start")
    parser.add_argument("--system", action="store_true",
                        help="accept walt-node installed in a distribution-managed Python "
                        "(used by the Debian package)")
    parser.add_argument("--spec-template", metavar="PATH", action="append", default=[],
                        help="register a file of the image (absolute path) as an image.spec template, in "
                        "which the server replaces %%(server_ip)s and the other walt-env keys; repeatable")
    parser.add_argument("--hand-over", action="store_true",
                        help="used by the Debian package walt-node when it is installed: remove what an "
                        "earlier walt-node-setup (ours or upstream WalT's) installed, except the files the "
                        "package owns now, and stop the services it replaces")
    parser.add_argument("--time-sync", choices=("ptp", "ntp", "none"),
                        help="keep the clock on the WalT server's: ptp = linuxptp's ptp4l as a slave "
                        "in the server's PTP domain 42 (walt-ptp unit), ntp = systemd-timesyncd asking "
                        "the server (its address filled in by the server through image.spec), none = "
                        "remove what an earlier --time-sync installed (systemd images)")
    parser.add_argument("--cpuinfo", metavar="FILE",
                        help="install FILE (captured on a node with `walt-node cpuinfo`) as /etc/cpuinfo")
    parser.add_argument("--no-cpuinfo", action="store_true",
                        help="remove the /etc/cpuinfo an earlier --cpuinfo installed")
    parser.add_argument("--image-shell", action="store_true", default=None,
                        help="install /bin/walt-image-shell-start and -shutdown: `walt image shell` "
                        "then boots the image's systemd in its container (systemd images)")
    parser.add_argument("--no-image-shell", dest="image_shell", action="store_false",
                        help="remove what an earlier --image-shell installed")
    parser.add_argument("--install-packages", action="store_true",
                        help="also install the Debian packages the services use "
                        "(lldpd, nbd-client, kexec-tools) with apt-get")


def run(args: argparse.Namespace) -> int:
    try:
        if args.hand_over:
            return _hand_over(args)
        if args.uninstall:
            return _uninstall(args)
        return _install(args)
    except PermissionError as error:  # InstallError: the CLI prints it
        raise WaltNodeError(f"permission denied on {error.filename}: run it as root, "
                            "or use --prefix ROOT on a tree you own") from error


def _say(text: str) -> None:
    print(text, flush=True)


def _image(args: argparse.Namespace):
    from walt_node.paths import Paths

    # Without --prefix: this system (its root is WALT_NODE_ROOT when set, as for every command).
    root = Path(args.prefix) if args.prefix else Paths.from_env().root
    if not root.is_dir():
        raise InstallError(f"--prefix {args.prefix}: no such directory (give the root of the image tree)")
    return Paths(os.path.abspath(root))


def _install(args: argparse.Namespace) -> int:
    from walt_node.install import dpkg, environment, packages
    from walt_node.install.installer import Installer
    from walt_node.install.options import add_options
    from walt_node.install.plan import COMMANDS, Target, build_plan

    image = _image(args)
    walt_node = args.walt_node
    python = environment.PythonEnv.current()
    if dpkg.package_installed(image):  # before the checks of a pip installation: dpkg's turf
        return _leave_to_package(image, walt_node or environment.default_walt_node(python), args)
    if walt_node is None:
        environment.check_python_env(python, args.system)
        walt_node = environment.default_walt_node(python)
    environment.check_walt_node(image, walt_node)
    _check_templates(image, args.spec_template)
    init = environment.detect_init(image) if args.init == "auto" else args.init
    if init == "systemd":
        environment.check_logs_daemon_args(image)
    unit_dir = _unit_dir(args.systemd_dir)
    if args.install_packages:
        packages.install(image, args.prefix is not None, args.dry_run, _say)
    scripts_dir = os.path.dirname(walt_node)
    target = Target(
        init=init,
        walt_node=walt_node,
        interpreter=environment.interpreter_of(image, walt_node, python.executable),
        available_commands=[c for c in COMMANDS if image.followed(f"{scripts_dir}/{c}").exists()],
        unit_dir=unit_dir,
    )
    plan = build_plan(target, environment.data_dir())
    options = _options(args, image)
    add_options(plan, target, options, image, environment.data_dir())
    outcome = Installer(image, _say, force=args.force, dry_run=args.dry_run).install(
        plan, init, [*args.spec_template, *options.templates])
    for note in plan.notes:
        _say(f"note: {note}")
    _report(outcome.changed, image, args.dry_run, "installed")
    if not args.dry_run and init == "systemd" and environment.systemd_running(image, args.prefix is not None):
        _systemctl_after_install(outcome.units_changed, outcome.units_removed, args.no_start)
    return 0


def _options(args: argparse.Namespace, image):
    """The opt-in parts: those an earlier setup installed, changed by this command line."""
    from walt_node.cpuinfo import NotCpuinfo, check_cpuinfo
    from walt_node.install.installer import Manifest
    from walt_node.install.options import previous_options

    manifest = Manifest.load(image)
    options = previous_options(image, manifest.entries if manifest else {})
    if args.time_sync:
        options.time_sync = args.time_sync
    if args.image_shell is not None:
        options.image_shell = args.image_shell
    if args.no_cpuinfo:
        options.cpuinfo = None
    elif args.cpuinfo:
        try:
            text = Path(args.cpuinfo).read_text()
        except (OSError, UnicodeDecodeError) as error:
            raise InstallError(f"--cpuinfo {args.cpuinfo}: cannot read it ({error})") from None
        try:
            options.cpuinfo = check_cpuinfo(text, f"--cpuinfo {args.cpuinfo}").encode()
        except NotCpuinfo as error:
            raise InstallError(f"{error}: capture it on a node with `walt-node cpuinfo`") from None
    return options


def _unit_dir(systemd_dir: Optional[str]) -> str:
    from walt_node.install.plan import SYSTEMD_UNIT_DIR

    if systemd_dir is None:
        return SYSTEMD_UNIT_DIR
    if not systemd_dir.startswith("/"):
        raise InstallError(f"--systemd-dir {systemd_dir}: give an absolute path inside the image, "
                           f"such as {SYSTEMD_UNIT_DIR}")
    return os.path.normpath(systemd_dir)


def _leave_to_package(image, walt_node: str, args: argparse.Namespace) -> int:
    """The Debian package walt-node is installed: dpkg manages walt-node here, setup stands aside."""
    from walt_node.install.dpkg import PACKAGE_WALT_NODE

    opt_in = [option for option, given in (
        ("--time-sync", args.time_sync), ("--cpuinfo", args.cpuinfo), ("--no-cpuinfo", args.no_cpuinfo),
        ("--image-shell/--no-image-shell", args.image_shell is not None),
        ("--spec-template", args.spec_template), ("--install-packages", args.install_packages)) if given]
    if walt_node == PACKAGE_WALT_NODE and opt_in:
        raise InstallError(
            f"{', '.join(opt_in)}: not available where the Debian package walt-node is installed "
            f"(in {image.root}); nothing was changed. The package installs the services only: "
            "set these up by hand, or install walt-node from its wheel in a venv instead of the package")
    if walt_node == PACKAGE_WALT_NODE:
        _say(f"walt-node is installed in {image.root} by the Debian package walt-node: dpkg installed "
             "and enabled its units, /bin/blink and the reboot hooks (dpkg -L walt-node lists them); "
             "nothing to do")
        return 0
    raise InstallError(
        f"the Debian package walt-node is installed in {image.root}: its services run "
        f"{PACKAGE_WALT_NODE} and dpkg owns their units, /bin/blink and the reboot hooks. Installing "
        f"{walt_node} over it would make two installations fight; nothing was changed. To use this "
        "one instead, remove the package first (apt purge walt-node), then rerun walt-node-setup"
    )


def _hand_over(args: argparse.Namespace) -> int:
    from walt_node.install import dpkg, environment
    from walt_node.install.installer import Installer

    image = _image(args)
    package_files = dpkg.package_files(image)
    if dpkg.PACKAGE_WALT_NODE not in package_files:
        raise InstallError(f"--hand-over is for the Debian package walt-node, which is not installed in "
                           f"{image.root}; to remove a walt-node-setup installation, use --uninstall")
    outcome = Installer(image, _say).hand_over(package_files, dpkg.diversions(image))
    for line in outcome.changed:
        _say(line)
    if outcome.units and environment.systemd_running(image, args.prefix is not None):
        # the services still run the replaced walt-node: the package's postinst starts its own
        _systemctl(["stop", *sorted(set(outcome.units))])
    return 0


def _check_templates(image, templates: List[str]) -> None:
    for path in templates:
        if not path.startswith("/"):
            raise InstallError(f"--spec-template {path}: give the absolute path of the file inside the image")
        if not image.followed(path).is_file():
            raise InstallError(f"--spec-template {path}: no such file in the image; create it first")


def _uninstall(args: argparse.Namespace) -> int:
    from walt_node.install import environment
    from walt_node.install.installer import MANIFEST, Installer

    image = _image(args)
    live = environment.systemd_running(image, args.prefix is not None) and not args.dry_run
    installer = Installer(image, _say, dry_run=args.dry_run)
    if live:
        from walt_node.install.installer import Manifest

        manifest = Manifest.load(image)
        units = [p.rsplit("/", 1)[1] for p in manifest.entries if p.endswith(".service")] if manifest else []
        if units:
            _systemctl(["stop", *sorted(set(units))])
    outcome = installer.uninstall()
    if outcome is None:
        _say(f"walt-node is not installed in {image.root} (no {MANIFEST}): nothing to do")
        return 0
    _report(outcome.changed, image, args.dry_run, "uninstalled")
    if live:
        _systemctl(["daemon-reload"])
    return 0


def _report(changed: List[str], image, dry_run: bool, done: str) -> None:
    for line in changed:
        _say(line)
    if dry_run:
        _say("dry run: nothing was changed" if changed else f"already {done}: nothing would change")
    elif not changed:
        _say(f"walt-node is already {done} in {image.root}: nothing changed")
    else:
        _say(f"walt-node {__version__} {done} in {image.root}")


def _systemctl_after_install(units_changed: List[str], units_removed: List[str],
                             no_start: bool) -> None:
    if not units_changed:
        return
    if units_removed:  # e.g. the units of an earlier layout, now run inside walt-logs.service
        _systemctl(["stop", *sorted(set(units_removed))])
    _systemctl(["daemon-reload"])
    restart = sorted(set(units_changed) - set(units_removed))
    if restart and not no_start:
        # restart = start for new units, reload the code of updated ones
        _systemctl(["restart", *restart])


def _systemctl(argv: List[str]) -> None:
    from walt_node import runner

    try:
        runner.run(["systemctl", *argv], timeout=120)
    except (runner.CommandFailed, runner.CommandMissing) as error:
        raise InstallError(f"{error}; the files are installed, fix the cause and rerun") from None
