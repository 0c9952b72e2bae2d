"""The features of the WalT page "Creating a WalT image from scratch", checked one by one.

Each check returns a :class:`Feature`: ``passes``, ``missing`` (with what is
wrong and how to fix it) or ``cannot tell`` (the image does not say, e.g. a
kernel whose options cannot be read).  B1-B7 are mandatory, C1-C10 optional.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
import shlex
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from walt_node.imagecheck.binaries import NotElf, elf_info
from walt_node.imagecheck.boot import BootCheck, ModelBoot, check_boot
from walt_node.imagecheck.kernel import MODULE_OF_OPTION, KernelConfig, find_config, module_present
from walt_node.imagecheck.system import ImageSystem
from walt_node.imagecheck.tree import ImageTree, PathProblem
from walt_node.paths import NODE

PASSES, MISSING, CANNOT_TELL = "passes", "missing", "cannot tell"
LABEL_MODELS = "walt.node.models"
LABEL_MINVERSION = "walt.server.minversion"
LABEL_PREFERRED_NAME = "walt.image.preferred-name"
_MODEL_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_IMAGE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$")
BUSYBOX_APPLETS = ("awk", "cat", "chroot", "ls", "mktemp", "mkfifo", "nc", "realpath", "reboot",
                   "rm", "sed", "sh", "sleep", "timeout", "uname")
BOOT_COMMANDS = ("chmod", "chroot", "cp", "date", "echo", "grep", "head", "ln", "mkdir", "mount",
                 "reboot", "sed", "setsid", "sh", "timeout", "tr", "umount")
# Kernel options of B4: all built in without an initrd; with one, the first three
# may be modules and the others left out (the initrd mounts the NFS root itself).
KERNEL_OPTIONS = ("CONFIG_OVERLAY_FS", "CONFIG_NFS_FS", "CONFIG_NFS_V3", "CONFIG_ROOT_NFS",
                  "CONFIG_IP_PNP", "CONFIG_IP_PNP_DHCP")
KERNEL_OPTIONS_MODULE_OK = KERNEL_OPTIONS[:3]
SSHD_CONFIG = "/etc/ssh/sshd_config"
ROOT_KEY_LOGIN_VALUES = ("yes", "prohibit-password", "without-password")
WALT_NODE_UNITS = ("walt-logs.service", "walt-nbd-swap.service")
WALT_NODE_RESIDENT_UNIT = "walt-logs.service"  # `walt-node services`: logs, mDNS, LLDP, journal
WALT_NODE_RC_SCRIPT = "walt-node"
REBOOT_HOOKS = ("/bin/walt-network-reboot", "/bin/walt-reboot", "/bin/walt-hybrid-reboot")
IMAGE_SHELL_SCRIPTS = ("/bin/walt-image-shell-start", "/bin/walt-image-shell-shutdown")
PTP_DOMAIN = "42"
TIMESYNCD_DROPIN = str(NODE.timesyncd_dropin)  # what walt-node setup --time-sync ntp writes


@dataclass
class Feature:
    id: str
    title: str
    mandatory: bool
    status: str = PASSES
    found: str = ""  # what was found, when it passes
    problems: List[str] = field(default_factory=list)
    fix: str = ""

    def fail(self, problem: str, fix: str = "", status: str = MISSING) -> Feature:
        if self.status != MISSING:
            self.status = status  # "missing" beats "cannot tell"
        self.problems.append(problem)
        if fix and fix not in self.fix:
            self.fix = f"{self.fix}; {fix}" if self.fix else fix
        return self

    def passes(self, found: str) -> Feature:
        self.found = found
        return self

    def as_dict(self) -> dict:
        return {"id": self.id, "title": self.title, "mandatory": self.mandatory,
                "status": self.status, "found": self.found, "problems": self.problems,
                "fix": self.fix}


@dataclass
class Context:
    tree: ImageTree
    labels: Optional[Dict[str, str]]  # None: the target cannot carry labels (a directory)
    ipxe_variables: Dict[str, str]
    system: ImageSystem = None  # type: ignore[assignment]
    _boot: Optional[BootCheck] = None
    _configs: Dict[str, Optional[KernelConfig]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.system = ImageSystem(self.tree)

    def label(self, name: str) -> Optional[str]:
        return None if self.labels is None else self.labels.get(name)

    def models(self) -> List[str]:
        value = self.label(LABEL_MODELS) or ""
        return [model.strip() for model in value.split(",") if model.strip()]

    def kernel_config(self, model: ModelBoot) -> Optional[KernelConfig]:
        """The options of ``model``'s kernel (read once per kernel: it may be decompressed)."""
        if model.kernel_path not in self._configs:
            self._configs[model.kernel_path] = find_config(self.tree, model.kernel_path,
                                                           model.kernel_data)
        return self._configs[model.kernel_path]

    def boot(self) -> BootCheck:
        if self._boot is None:
            self._boot = check_boot(self.tree, self.models(), self.ipxe_variables)
        return self._boot


def _no_labels(feature: Feature, name: str, example: str) -> Feature:
    return feature.fail(f"a directory carries no labels, so label {name} cannot be read",
                        f"give it as it will be in the Dockerfile: --label {name}={example}",
                        CANNOT_TELL)


# ------------------------------------------------------------------ B1-B7

def check_models_label(context: Context) -> Feature:
    feature = Feature("B1", f"label {LABEL_MODELS}", True)
    fix = f'LABEL {LABEL_MODELS}="model1,model2" (comma-separated, no spaces)'
    if context.labels is None:
        return _no_labels(feature, LABEL_MODELS, "rpi-b,rpi-b-plus")
    value = context.label(LABEL_MODELS)
    if value is None:
        return feature.fail(f"no label {LABEL_MODELS}: WalT ignores the image", fix)
    items = value.split(",")
    bad = [item for item in items if not _MODEL_RE.match(item)]
    if bad:
        return feature.fail(f"{LABEL_MODELS}={value!r}: not a comma-separated list of model names "
                            f"(bad: {', '.join(repr(item) for item in bad)})", fix)
    if len(set(items)) != len(items):
        return feature.fail(f"{LABEL_MODELS}={value!r} names a model twice", fix)
    return feature.passes(value)


def check_minversion_label(context: Context) -> Feature:
    feature = Feature("B2", f"label {LABEL_MINVERSION}", True)
    fix = f'LABEL {LABEL_MINVERSION}="10" (the lowest WalT server version the image works with)'
    if context.labels is None:
        return _no_labels(feature, LABEL_MINVERSION, "10")
    value = context.label(LABEL_MINVERSION)
    if value is None:
        return feature.fail(f"no label {LABEL_MINVERSION}: servers assume 4", fix)
    if not value.strip().isdigit():
        return feature.fail(f"{LABEL_MINVERSION}={value!r} is not a whole number", fix)
    return feature.passes(value.strip())


def check_boot_files(context: Context) -> Feature:
    feature = Feature("B3", "boot files /boot/<model>/start.ipxe or start.uboot", True)
    boot = context.boot()
    if not boot.models:
        return feature.fail("no model to check: no walt.node.models label and no "
                            "/boot/<model>/start.ipxe or start.uboot in the image",
                            "provide /boot/<model>/start.ipxe (iPXE) or start.uboot (u-boot) "
                            "for each model of walt.node.models")
    found = []
    for model in boot.models:
        if model.problem:
            feature.fail(f"{model.name}: {model.problem}", model.fix, model.status)
        else:
            found.append(f"{model.name}: {model.summary}")
    if boot.guessed_models:
        found.append("(models taken from /boot: no walt.node.models label)")
    return feature.passes("; ".join(found)) if feature.status == PASSES else feature


def check_kernel(context: Context) -> Feature:
    feature = Feature("B4", "kernel features (overlay, NFS v3 root, IP autoconfig with DHCP)", True)
    found = []
    kernels = [model for model in context.boot().models if model.kernel_path]
    if not kernels:
        return feature.fail("no kernel found for any model (see B3)",
                            "fix the boot files first (B3)", CANNOT_TELL)
    checked: Dict[str, str] = {}
    for model in kernels:
        if model.kernel_path in checked:
            continue
        summary = _check_one_kernel(context, model, feature)
        checked[model.kernel_path] = summary
        if summary:
            found.append(summary)
    return feature.passes("; ".join(found)) if feature.status == PASSES else feature


def _check_one_kernel(context: Context, model: ModelBoot, feature: Feature) -> str:
    tree = context.tree
    where = f"{model.name}: kernel {model.kernel_path}"
    config = context.kernel_config(model)
    if config is None:
        feature.fail(f"{where}: its options cannot be read (no config-<version>, no embedded "
                     "IKCONFIG, no /lib/modules/<version>/modules.builtin)",
                     "ship /boot/config-<version> with the kernel", CANNOT_TELL)
        return ""
    wanted = KERNEL_OPTIONS_MODULE_OK if model.has_initrd else KERNEL_OPTIONS
    for option in wanted:
        value = config.value(option)
        allowed = ("y", "m") if model.has_initrd else ("y",)
        if value is None:
            feature.fail(f"{where}: {option} cannot be read from {config.source}",
                         "ship /boot/config-<version> with the kernel", CANNOT_TELL)
        elif value not in allowed:
            shown = "not set" if value == "n" else f"={value}"
            need = "=y or =m (there is an initrd)" if model.has_initrd else "=y (no initrd)"
            feature.fail(f"{where}: {option} {shown}, needs {need} ({config.source})",
                         f"rebuild the kernel with {option}=y")
        elif value == "m" and option in MODULE_OF_OPTION and "modules.builtin" not in config.source:
            release, module = model.kernel_release, MODULE_OF_OPTION[option]
            if release and not module_present(tree, release, module):
                feature.fail(f"{where}: {option}=m but /lib/modules/{release} has no {module} module",
                             "install the kernel's modules in the image (or build it in: =y)")
    initrd = "with initrd" if model.has_initrd else "no initrd"
    return f"{model.kernel_path} ({initrd}; options from {config.source})"


def check_init(context: Context) -> Feature:
    feature = Feature("B5", "init system /sbin/init", True)
    problem = context.system.executable_problem("/sbin/init")
    if problem:
        return feature.fail(problem, "install an init system (systemd-sysv, or a busybox init link)")
    return feature.passes(f"/sbin/init -> {context.tree.resolve('/sbin/init')}")


def check_busybox(context: Context) -> Feature:
    feature = Feature("B6", "busybox and classical unix commands", True)
    tree, system = context.tree, context.system
    install = "install a static busybox at /bin/busybox (Debian: apt-get install busybox-static)"
    try:
        data = tree.read("/bin/busybox")
    except PathProblem:
        return feature.fail("no /bin/busybox", install)
    try:
        info = elf_info(data)
    except NotElf:
        return feature.fail("/bin/busybox is not an ELF executable", install)
    found = ["static" if info.static else f"dynamic ({info.interpreter})"]
    if not info.static and not system.has_command("ldd"):
        feature.fail(f"/bin/busybox is dynamically linked ({info.interpreter}) and there is no ldd",
                     "use a static busybox (busybox-static) or provide ldd (libc-bin)")
    applets = system.applets()
    if not applets:
        feature.fail("the applet list of /bin/busybox cannot be found in the binary",
                     "check it is a real busybox multi-call binary", CANNOT_TELL)
    else:
        missing = [name for name in BUSYBOX_APPLETS if name not in applets]
        if missing:
            feature.fail(f"/bin/busybox lacks applets {', '.join(missing)}",
                         "use a busybox built with these applets (Debian's busybox-static has them)")
        found.append(f"{len(applets)} applets")
    absent = [name for name in BOOT_COMMANDS if not system.has_command(name)]
    if absent:
        feature.fail(f"commands missing (neither on PATH nor busybox applets): {', '.join(absent)}",
                     "install them (coreutils, util-linux, grep, sed) or busybox applets")
    return feature.passes(", ".join(found)) if feature.status == PASSES else feature


def check_ssh(context: Context) -> Feature:
    feature = Feature("B7", "ssh server on port 22, root login by key", True)
    system = context.system
    if system.command("sshd"):
        enabled = system.service_enabled(["ssh.service", "sshd.service", "ssh.socket"], ["ssh", "sshd"])
        if not enabled:
            feature.fail("sshd is installed but not enabled at boot",
                         "systemctl enable ssh (or add an rc script)")
        for problem in _sshd_config_problems(context.tree):
            feature.fail(problem, 'set "PermitRootLogin prohibit-password", "PubkeyAuthentication yes" '
                                  'and "Port 22" in /etc/ssh/sshd_config')
        return feature.passes(f"openssh ({enabled})") if feature.status == PASSES else feature
    if system.command("dropbear"):
        enabled = system.service_enabled(["dropbear.service"], ["dropbear"])
        if not enabled:
            feature.fail("dropbear is installed but not enabled at boot", "enable its service")
        extra = _shell_assignments(context.tree.read_text("/etc/default/dropbear") or "")
        args = extra.get("DROPBEAR_EXTRA_ARGS", "") + " " + extra.get("DROPBEAR_ARGS", "")
        if "-w" in args.split():
            feature.fail("dropbear runs with -w: root logins are refused",
                         "remove -w from /etc/default/dropbear")
        port = extra.get("DROPBEAR_PORT")
        if port and port != "22":
            feature.fail(f"dropbear listens on port {port}", "DROPBEAR_PORT=22")
        return feature.passes(f"dropbear ({enabled})") if feature.status == PASSES else feature
    return feature.fail("no ssh server (neither sshd nor dropbear on PATH)",
                        "apt-get install openssh-server (or dropbear for small devices)")


def _sshd_config_problems(tree: ImageTree) -> List[str]:
    """First value wins in sshd_config, Include files read in place; Match blocks are skipped."""
    settings: Dict[str, Tuple[str, str]] = {}
    _read_sshd_config(tree, SSHD_CONFIG, settings, depth=0)
    problems = []
    permit = settings.get("permitrootlogin", ("prohibit-password", "default"))
    if permit[0].lower() not in ROOT_KEY_LOGIN_VALUES:
        problems.append(f"PermitRootLogin {permit[0]} ({permit[1]}): root cannot log in with a key")
    pubkey = settings.get("pubkeyauthentication", ("yes", "default"))
    if pubkey[0].lower() != "yes":
        problems.append(f"PubkeyAuthentication {pubkey[0]} ({pubkey[1]})")
    port = settings.get("port", ("22", "default"))
    if port[0] != "22":
        problems.append(f"Port {port[0]} ({port[1]}): the WalT server connects to port 22")
    return problems


def _read_sshd_config(tree: ImageTree, path: str, settings: Dict[str, Tuple[str, str]],
                      depth: int) -> None:
    text = tree.read_text(path)
    if text is None or depth > 8:
        return
    for line in text.splitlines():
        words = line.split("#", 1)[0].replace("=", " ", 1).split()
        if len(words) < 2:
            continue
        key = words[0].lower()
        if key == "match":
            return  # settings after a Match line belong to that block
        if key == "include":
            for pattern in words[1:]:
                pattern = pattern if pattern.startswith("/") else f"/etc/ssh/{pattern}"
                directory, name = posixpath.split(pattern)
                for match in sorted(n for n in tree.listdir(directory) if fnmatch.fnmatch(n, name)):
                    _read_sshd_config(tree, f"{directory}/{match}", settings, depth + 1)
            continue
        settings.setdefault(key, (words[1], path))


def _shell_assignments(text: str) -> Dict[str, str]:
    values = {}
    for line in text.splitlines():
        name, sep, value = line.strip().partition("=")
        if sep and name.isidentifier():
            try:
                values[name] = " ".join(shlex.split(value))
            except ValueError:
                values[name] = value
    return values


# ------------------------------------------------------------------ C1-C10

def check_lldp(context: Context) -> Feature:
    feature = Feature("C1", "lldp daemon", False)
    if not context.system.command("lldpd"):
        return feature.fail("no lldpd", "apt-get install lldpd")
    enabled = context.system.service_enabled(["lldpd.service"], ["lldpd"])
    if not enabled:
        return feature.fail("lldpd is not enabled at boot", "systemctl enable lldpd")
    return feature.passes(f"lldpd ({enabled})")


def check_time_sync(context: Context) -> Feature:
    feature = Feature("C2", "precise time synchronization (PTP, or NTP from the server)", False)
    fix = "walt-node setup --time-sync ptp (or --time-sync ntp)"
    problems = []
    for finder in (_ptpd_sync, _linuxptp_sync, _ntp_sync):
        found, problem = finder(context)
        if found:
            return feature.passes(found)
        if problem:
            problems.append(problem)
    for problem in problems or ["no PTP or NTP client configured"]:
        feature.fail(problem, fix)
    return feature


def _ptpd_sync(context: Context) -> Tuple[str, str]:
    if not context.system.command("ptpd"):
        return "", ""
    default = _shell_assignments(context.tree.read_text("/etc/default/ptpd") or "")
    enabled = context.system.service_enabled(["ptpd.service"], ["ptpd"])
    if default.get("START_DAEMON", "no") != "yes" or not enabled:
        return "", "ptpd is installed but not started at boot (START_DAEMON=yes in /etc/default/ptpd)"
    conf = context.tree.read_text("/etc/ptpd.conf") or ""
    settings = dict(line.split("=", 1) for line in conf.split() if "=" in line)
    if settings.get("ptpengine:domain") != PTP_DOMAIN:
        return "", f"/etc/ptpd.conf: ptpengine:domain is not {PTP_DOMAIN} (the WalT server's)"
    if settings.get("ptpengine:preset") != "slaveonly":
        return "", "/etc/ptpd.conf: ptpengine:preset is not slaveonly"
    return f"ptpd ({enabled}, domain {PTP_DOMAIN}, slave only)", ""


def _linuxptp_sync(context: Context) -> Tuple[str, str]:
    if not context.system.command("ptp4l"):
        return "", ""
    problem = "ptp4l is installed but no enabled unit runs it in domain 42 as a slave"
    for unit in sorted(context.system.enabled_units()):
        text = context.system.unit_text(unit) or context.system.unit_text(_template_of(unit)) or ""
        for line in text.splitlines():
            # ptp4l itself, or walt-node's ptp-slave that becomes ptp4l
            if not line.startswith("ExecStart=") or not ("ptp4l" in line or "ptp-slave" in line):
                continue
            words = line.split("=", 1)[1].split()
            config = words[words.index("-f") + 1] if "-f" in words[:-1] else ""
            settings = _ptp4l_settings(context.tree.read_text(config) or "") if config else {}
            slave = "-s" in words or settings.get("slaveOnly") == "1" or settings.get("clientOnly") == "1"
            if settings.get("domainNumber") == PTP_DOMAIN and slave:
                return f"linuxptp ptp4l ({unit}, {config}: domain {PTP_DOMAIN}, slave only)", ""
            problem = f"{unit} runs ptp4l, but not as a slave in domain {PTP_DOMAIN} ({config or 'no -f'})"
    return "", problem


def _template_of(unit: str) -> str:
    name, at, rest = unit.partition("@")
    return f"{name}@{rest[rest.index('.'):]}" if at and "." in rest else unit


def _ptp4l_settings(text: str) -> Dict[str, str]:
    settings = {}
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) >= 2 and not words[0].startswith("["):
            settings[words[0]] = words[1]
    return settings


NTP_CONFIGS = (("/etc/ntpsec/ntp.conf", ("ntpd",), ["ntpsec.service", "ntp.service"]),
               ("/etc/ntp.conf", ("ntpd",), ["ntp.service", "ntpd.service", "ntpsec.service"]),
               ("/etc/chrony/chrony.conf", ("chronyd",), ["chrony.service", "chronyd.service"]),
               ("/etc/systemd/timesyncd.conf", (), ["systemd-timesyncd.service"]),
               (TIMESYNCD_DROPIN, (), ["systemd-timesyncd.service"]))


def _ntp_sync(context: Context) -> Tuple[str, str]:
    spec = context.tree.read_text("/etc/walt/image.spec") or ""
    for path, daemons, units in NTP_CONFIGS:
        text = context.tree.read_text(path)
        if text is None or "%(server_ip)s" not in text:
            continue
        if daemons and not any(context.system.command(daemon) for daemon in daemons):
            continue
        enabled = context.system.service_enabled(units, [posixpath.basename(units[0])[:-8]])
        if not enabled:
            return "", f"{path} names the server but its daemon is not enabled at boot"
        if f'"{path}"' not in spec:
            return "", (f"{path} names %(server_ip)s but /etc/walt/image.spec does not list it in "
                        "\"templates\": the server will not fill it in")
        return f"NTP ({path}, {enabled}, server filled in by image.spec)", ""
    return "", ""


def check_mdns(context: Context) -> Feature:
    feature = Feature("C3", "multicast DNS (<node>.local)", False)
    enabled = context.system.service_enabled(["avahi-daemon.service"], ["avahi-daemon"])
    if not enabled and not context.system.killed("walt-mdns.service"):
        # walt-node's publisher runs in its resident process, unless its kill switch is there
        enabled = context.system.service_enabled([WALT_NODE_RESIDENT_UNIT], [WALT_NODE_RC_SCRIPT])
    if not enabled:
        return feature.fail("neither avahi-daemon nor walt-node's mDNS publisher is enabled",
                            "apt-get install avahi-daemon libnss-mdns (or walt-node setup)")
    nsswitch = context.tree.read_text("/etc/nsswitch.conf") or ""
    hosts = next((line for line in nsswitch.splitlines() if line.startswith("hosts:")), "")
    resolves = "mdns" in hosts
    return feature.passes(f"{enabled}" + ("" if resolves else
                                          " (publishes; .local names of peers resolve only with "
                                          "libnss-mdns)"))


def check_walt_node(context: Context) -> Feature:
    feature = Feature("C4", "walt-node installed, its services enabled", False)
    from walt_node.install import INSTALL_COMMANDS

    fix = f"{INSTALL_COMMANDS}, with the wheel built from walt-node's source (see docs/install.md)"
    where = context.system.command("walt-node")
    if where is None:
        return feature.fail("no walt-node command on PATH", fix)
    if context.system.init_system() == "systemd":
        enabled = context.system.enabled_units()
        disabled = [unit for unit in WALT_NODE_UNITS
                    if unit not in enabled and not context.system.killed(unit)]
        if disabled:
            return feature.fail(f"units not enabled: {', '.join(disabled)}", fix)
        return feature.passes(f"{where}, {len(WALT_NODE_UNITS)} units enabled")
    if not context.system.sysv_enabled(WALT_NODE_RC_SCRIPT):
        return feature.fail(f"no /etc/init.d/S??{WALT_NODE_RC_SCRIPT} script", fix)
    return feature.passes(f"{where}, rc script")


def _executables(context: Context, feature: Feature, paths: Tuple[str, ...], need_all: bool,
                 fix: str) -> Feature:
    problems = {path: context.system.executable_problem(path) for path in paths}
    good = [path for path, problem in problems.items() if problem is None]
    if (need_all and len(good) == len(paths)) or (not need_all and good):
        return feature.passes(", ".join(good))
    for path, problem in problems.items():
        if problem and (need_all or context.tree.exists(path) or len(paths) == 1):
            feature.fail(problem, fix)
    if not feature.problems:
        feature.fail(f"none of {', '.join(paths)}", fix)
    return feature


def check_blink(context: Context) -> Feature:
    return _executables(context, Feature("C5", "led-blinking script /bin/blink", False),
                        ("/bin/blink",), True, "walt-node setup installs /bin/blink")


def check_reboot(context: Context) -> Feature:
    return _executables(context, Feature("C6", "custom reboot script", False), REBOOT_HOOKS, False,
                        "walt-node setup installs /bin/walt-reboot")


def check_preferred_name(context: Context) -> Feature:
    feature = Feature("C7", f"label {LABEL_PREFERRED_NAME}", False)
    if context.labels is None:
        return _no_labels(feature, LABEL_PREFERRED_NAME, "rpi-default:latest")
    value = context.label(LABEL_PREFERRED_NAME)
    fix = f'LABEL {LABEL_PREFERRED_NAME}="<name>:<tag>" (if the image is a default image)'
    if value is None:
        return feature.fail(f"no label {LABEL_PREFERRED_NAME}", fix)
    if not _IMAGE_NAME_RE.match(value):
        return feature.fail(f"{LABEL_PREFERRED_NAME}={value!r} is not an image name like "
                            "'rpi-default:latest'", fix)
    return feature.passes(value)


def check_cpuinfo(context: Context) -> Feature:
    feature = Feature("C8", "/etc/cpuinfo", False)
    fix = ("on a node of the model: walt-node cpuinfo > FILE; "
           "then in the image: walt-node setup --cpuinfo FILE")
    text = context.tree.read_text("/etc/cpuinfo")
    if text is None:
        return feature.fail("no /etc/cpuinfo", fix)
    if not re.search(r"^processor\s*:", text, re.IGNORECASE | re.MULTILINE):
        return feature.fail("/etc/cpuinfo does not look like /proc/cpuinfo (no 'processor' line)", fix)
    return feature.passes(f"/etc/cpuinfo ({len(text.splitlines())} lines)")


def check_image_shell(context: Context) -> Feature:
    return _executables(context, Feature("C9", "advanced walt image shell scripts", False),
                        IMAGE_SHELL_SCRIPTS, True, "walt-node setup --image-shell (systemd images)")


def check_nbd_swap(context: Context) -> Feature:
    feature = Feature("C10", "RAM swapping using NBD", False)
    system = context.system
    client = system.command("nbd-client")
    if client is None:
        feature.fail("no nbd-client", "apt-get install nbd-client")
    elif b"swap" not in context.tree.read(client):
        feature.fail(f"{client} has no -swap option", "use the nbd-client of the nbd project")
    absent = [name for name in ("mkswap", "swapon") if not system.has_command(name)]
    if absent:
        feature.fail(f"missing {', '.join(absent)}", "apt-get install util-linux")
    modules = []
    for model in context.boot().models:
        if not model.kernel_path or model.kernel_path in modules:
            continue
        modules.append(model.kernel_path)
        config = context.kernel_config(model)
        value = config.value("CONFIG_BLK_DEV_NBD") if config else None
        if value is None:
            feature.fail(f"{model.kernel_path}: CONFIG_BLK_DEV_NBD cannot be read", "", CANNOT_TELL)
        elif value == "n":
            feature.fail(f"{model.kernel_path}: no nbd driver (CONFIG_BLK_DEV_NBD not set)",
                         "build the kernel with CONFIG_BLK_DEV_NBD=m or =y")
        elif value == "m" and model.kernel_release and not \
                module_present(context.tree, model.kernel_release, "nbd"):
            feature.fail(f"{model.kernel_path}: no nbd module in /lib/modules/{model.kernel_release}",
                         "install the kernel's modules in the image")
    if not modules:
        feature.fail("no kernel to look for the nbd driver in (see B3)", "", CANNOT_TELL)
    return feature.passes(f"{client}, mkswap, swapon, nbd driver") if feature.status == PASSES \
        else feature


CHECKS: Tuple[Callable[[Context], Feature], ...] = (
    check_models_label, check_minversion_label, check_boot_files, check_kernel, check_init,
    check_busybox, check_ssh, check_lldp, check_time_sync, check_mdns, check_walt_node,
    check_blink, check_reboot, check_preferred_name, check_cpuinfo, check_image_shell,
    check_nbd_swap,
)
