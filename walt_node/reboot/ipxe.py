"""An interpreter of the iPXE script subset WalT images use (docs/protocols.md §8).

Pure code: it turns ``/start.ipxe`` and every script it chains into a
:class:`BootPlan` (kernel, initrds, command line).  All I/O goes through the
``fetch`` callable it is given (see :mod:`walt_node.reboot.source`).

Semantics follow iPXE's ``src/core/exec.c`` and ``script.c``:

- a line is split on whitespace *first*, then ``${...}`` is expanded inside
  each token, so a variable holding spaces stays one argument (paths such as
  ``QEMU/Standard PC (i440FX + PIIX, 1996)`` work);
- ``||``, ``&&`` and ``;`` have equal precedence and are read left to right:
  each decides from the status of the last command that *ran* whether the
  next one runs (``a || b && c`` runs ``c`` when ``a`` succeeded);
- a token starting with ``#`` starts a comment; ``:label`` lines are skipped;
- a line whose final status is a failure ends its script with that failure,
  which makes the ``chain`` that ran the script fail in the parent;
- relative paths are relative to the directory of the script being run,
  absolute ones to the boot root of its scheme and host.

Where iPXE would do something this interpreter cannot reproduce, it stops with
:class:`IpxeFatal`, which ``||`` does not catch: an unknown command (we cannot
know what it would have done), a chain loop, a ``reboot``.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from walt_node.bounds import limit_reached
from walt_node.errors import WaltNodeError
from walt_node.text import printable

MAX_CHAIN_DEPTH = 16
MAX_EXPANSIONS = 1000
MAX_EXPANDED = 64 * 1024  # characters of one expanded command line (kernel command lines are < 4 KiB)
_URL_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://([^/?]*)(/[^?]*)?(?:\?(.*))?$")
_TERMINATORS = ("||", "&&", ";")
_COMMAND_NAME_RE = re.compile(r"^[a-z][a-z0-9-]*$")
SCRIPT_MAGIC = b"#!ipxe"


# ------------------------------------------------------------------ locations

@dataclass(frozen=True)
class Location:
    """Where a file comes from: ``tftp`` or ``http``, a host ("" = the WalT server), a path."""

    scheme: str
    host: str
    path: str
    port: Optional[int] = None
    query: str = ""

    def __str__(self) -> str:
        if self.scheme == "tftp" and not self.host:
            return self.path
        port = f":{self.port}" if self.port else ""
        query = f"?{self.query}" if self.query else ""
        return f"{self.scheme}://{self.host}{port}{self.path}{query}"

    @property
    def name(self) -> str:
        """The image name iPXE gives by default: the last path component."""
        return posixpath.basename(self.path)


BOOT_ROOT = Location("tftp", "", "/")


def _normalize(path: str) -> str:
    path = posixpath.normpath("/" + path.lstrip("/"))
    return "/" + path.lstrip("/")


class BadLocation(ValueError):
    pass


def parse_url(text: str) -> Location:
    match = _URL_RE.match(text)
    if not match:
        raise BadLocation(f"'{text}' is not a URL")
    scheme, netloc, path, query = match.groups()
    scheme = scheme.lower()
    if scheme not in ("http", "tftp"):
        raise BadLocation(f"'{text}': only http:// and tftp:// URLs are supported")
    host, _, port_text = netloc.partition(":")
    port = None
    if port_text:
        if not port_text.isdigit():
            raise BadLocation(f"'{text}': bad port '{port_text}'")
        port = int(port_text)
    return Location(scheme, host, _normalize(path or "/"), port, query or "")


def resolve(base: Location, reference: str) -> Location:
    """``reference`` as iPXE resolves it against the URI of the running script."""
    if not reference:
        raise BadLocation("empty path")
    if "://" in reference:
        return parse_url(reference)
    path, _, query = reference.partition("?") if base.scheme == "http" else (reference, "", "")
    if not path.startswith("/"):
        path = posixpath.join(posixpath.dirname(base.path), path)
    return Location(base.scheme, base.host, _normalize(path), base.port, query)


# ------------------------------------------------------------------ results

@dataclass
class LoadedImage:
    name: str
    location: Location
    data: bytes
    args: str = ""


@dataclass
class BootPlan:
    kernel: LoadedImage
    initrds: List[LoadedImage]
    scripts: List[str] = field(default_factory=list)
    messages: List[str] = field(default_factory=list)

    @property
    def cmdline(self) -> str:
        return self.kernel.args

    def describe(self) -> str:
        """For people; what came from scripts is shown with control characters escaped."""
        lines = [f"kernel:  {printable(str(self.kernel.location))} ({len(self.kernel.data)} bytes)"]
        for initrd in self.initrds:
            lines.append(f"initrd:  {printable(str(initrd.location))} ({len(initrd.data)} bytes)")
        if not self.initrds:
            lines.append("initrd:  (none)")
        lines.append(f"cmdline: {printable(self.cmdline)}")
        lines.append("scripts: " + printable(" -> ".join(self.scripts)))
        return "\n".join(lines)


@dataclass(frozen=True)
class Where:
    location: Location
    line: int

    def __str__(self) -> str:
        return f"{self.location}:{self.line}"


class IpxeError(WaltNodeError):
    """A script could not produce a boot plan; names the file and line."""

    def __init__(self, message: str, where: Optional[Where] = None):
        self.message = message
        self.where = where
        self.chained_from: List[Where] = []
        super().__init__(message)

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        for parent in self.chained_from:
            text += f" (chained from {parent})"
        return text


class IpxeFatal(IpxeError):
    """Stops interpretation at once; ``||`` does not catch it."""


class _CommandFailed(Exception):
    """A command failed the way an iPXE command fails: ``||`` may catch it."""


class _ScriptFailed(Exception):
    """A script ended on a failed line; the chain line that ran it fails with ``error``."""

    def __init__(self, error: IpxeError):
        self.error = error


class _ScriptExit(Exception):
    def __init__(self, status: int, where: Where):
        self.status = status
        self.where = where


class _Booted(Exception):
    def __init__(self, plan: BootPlan):
        self.plan = plan


class FetchFailed(Exception):
    """Raised by fetch callables when a file cannot be had (missing, server down)."""


Fetch = Callable[[Location], bytes]


# ------------------------------------------------------------------ variables

def _format_value(value: str, kind: str) -> str:
    """iPXE setting types that change how a MAC is printed; others print as stored."""
    if kind == "hexhyp":
        return value.replace(":", "-")
    if kind == "hexraw":
        return value.replace(":", "")
    return value


def _split_setting(name: str) -> Tuple[str, str]:
    """``net0/mac:hexhyp`` -> (``mac``, ``hexhyp``): scope is ignored, type kept."""
    name, _, kind = name.partition(":")
    return name.rsplit("/", 1)[-1], kind


def expand(text: str, variables: Dict[str, str], limit: int = MAX_EXPANDED) -> str:
    """Expand ``${name[:type]}`` innermost first, as iPXE does; unknown names expand to "".

    A text growing past ``limit`` characters is refused (``set a ${a}${a}`` on
    each line would double it every time).
    """
    for _ in range(MAX_EXPANSIONS):
        start = text.rfind("${")
        if start < 0:
            return text
        end = text.find("}", start)
        if end < 0:
            return text  # iPXE leaves an unterminated ${ as it is
        name, kind = _split_setting(text[start + 2:end])
        text = text[:start] + _format_value(variables.get(name, ""), kind) + text[end + 1:]
        if len(text) > limit:
            raise IpxeFatal(limit_reached(
                "iPXE expansion over the size bound",
                f"a command line expands to more than {MAX_EXPANDED} characters"))
    raise IpxeFatal(f"variable expansion does not end after {MAX_EXPANSIONS} steps "
                    "(a variable refers to itself)")


def tokenize(line: str) -> List[str]:
    tokens = line.split()
    for index, token in enumerate(tokens):
        if token.startswith("#"):
            return tokens[:index]
    return tokens


def script_lines(text: str) -> List[Tuple[int, str]]:
    """(line number, text) pairs, joining lines continued with a trailing backslash."""
    result: List[Tuple[int, str]] = []
    pending, first = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        if not pending:
            first = number
        if raw.endswith("\\"):
            pending += raw[:-1]
            continue
        result.append((first, pending + raw))
        pending = ""
    if pending:
        result.append((first, pending))
    return result


# ------------------------------------------------------------------ options

_IMAGE_OPTIONS = {"-n": "name", "--name": "name", "-t": "timeout", "--timeout": "timeout",
                  "-a": "autofree", "--autofree": "autofree", "-r": "replace",
                  "--replace": "replace"}
_OPTIONS_WITH_VALUE = ("name", "timeout")


def _parse_image_options(command: str, args: List[str]) -> Tuple[Dict[str, str], List[str]]:
    """Leading ``--name X``, ``--timeout X``, ``--autofree``, ``--replace`` of image commands."""
    options: Dict[str, str] = {}
    index = 0
    while index < len(args) and args[index].startswith("-") and args[index] != "-":
        flag, has_value, value = args[index].partition("=")
        option = _IMAGE_OPTIONS.get(flag)
        if option is None:
            raise _CommandFailed(f"{command}: unknown option '{args[index]}'")
        if option in _OPTIONS_WITH_VALUE and not has_value:
            index += 1
            if index >= len(args):
                raise _CommandFailed(f"{command}: option '{flag}' needs a value")
            value = args[index]
        options[option] = value
        index += 1
    return options, args[index:]


# ------------------------------------------------------------------ interpreter

class Interpreter:
    """Runs scripts the way iPXE would, until ``boot``; see the module docstring."""

    def __init__(self, fetch: Fetch, variables: Optional[Dict[str, str]] = None):
        self.fetch = fetch
        self.variables: Dict[str, str] = dict(variables or {})
        self.images: List[LoadedImage] = []
        self.selected: Optional[LoadedImage] = None
        self.stack: List[Location] = []
        self.scripts: List[str] = []
        self.messages: List[str] = []

    # --- entry point ---
    def run(self, start: Location) -> BootPlan:
        """Interpret ``start`` and what it chains; the plan, or IpxeError naming file and line."""
        data = self._fetch_script(start, None)
        if not data.startswith(SCRIPT_MAGIC):
            raise IpxeError(f"{start} is not an iPXE script (no #!ipxe first line)")
        try:
            self._run_script(start, data, None)
        except _Booted as booted:
            return booted.plan
        except _ScriptFailed as failed:
            raise failed.error from None
        raise IpxeFatal(f"{start}: the script ended without reaching 'boot'; nothing to boot")

    # --- scripts ---
    def _fetch_script(self, location: Location, where: Optional[Where]) -> bytes:
        try:
            return self.fetch(location)
        except FetchFailed as error:
            if where is None:
                raise IpxeError(f"cannot fetch {location}: {error}") from None
            raise _CommandFailed(f"cannot fetch {location}: {error}") from None

    def _run_script(self, location: Location, data: bytes, caller: Optional[Where]) -> None:
        if location in self.stack:
            raise IpxeFatal(f"chain loop: {location} is already running "
                            f"(chain: {' -> '.join(map(str, self.stack))})", caller)
        if len(self.stack) >= MAX_CHAIN_DEPTH:
            raise IpxeFatal(f"scripts chained more than {MAX_CHAIN_DEPTH} deep", caller)
        if not data.startswith(SCRIPT_MAGIC):
            raise _CommandFailed(f"{location} is not an iPXE script (no #!ipxe first line)")
        text = data.decode("utf-8", errors="replace")
        self.stack.append(location)
        self.scripts.append(str(location))
        try:
            for number, line in script_lines(text):
                if line.lstrip().startswith(":"):
                    continue  # a label; without goto, reaching it does nothing
                where = Where(location, number)
                status = self._run_line(tokenize(line), where)
                if status is not None:
                    raise _ScriptFailed(status)
        except _ScriptExit as done:
            if done.status != 0:
                raise _ScriptFailed(IpxeError(f"'exit {done.status}'", done.where)) from None
        except IpxeFatal as error:
            if caller is not None and error.where is not None:
                error.chained_from.append(caller)
            raise
        finally:
            self.stack.pop()

    def _run_line(self, tokens: List[str], where: Where) -> Optional[IpxeError]:
        """Run one command list; None if its final status is success, else the error."""
        status: Optional[IpxeError] = None
        process = True
        index = 0
        while True:
            end = index
            while end < len(tokens) and tokens[end] not in _TERMINATORS:
                end += 1
            if process:
                status = self._run_command(tokens[index:end], where)
            if end >= len(tokens):
                return status
            operator = tokens[end]
            process = operator == ";" or (operator == "&&") == (status is None)
            index = end + 1

    def _run_command(self, raw: List[str], where: Where) -> Optional[IpxeError]:
        if not raw:
            return None  # iPXE: an empty command succeeds
        try:
            argv = self._expand_all(raw)
        except IpxeFatal as error:
            error.where = where
            raise
        handler = None
        if _COMMAND_NAME_RE.match(argv[0]):
            handler = getattr(self, "_cmd_" + argv[0].replace("-", "_"), None)
        if handler is None:
            raise IpxeFatal(f"unknown command '{argv[0]}': walt-node cannot tell what iPXE "
                            "would do with it, so it does not guess", where)
        try:
            handler(argv[1:], where)
        except _CommandFailed as failed:
            return IpxeError(str(failed), where)
        except _ScriptFailed as failed:
            error = failed.error
            if error.where is None:
                error.where = where
            else:
                error.chained_from.append(where)
            return error
        except IpxeFatal as error:
            if error.where is None:
                error.where = where
            raise
        return None

    def _expand_all(self, tokens: List[str]) -> List[str]:
        """The arguments of one command, expanded; MAX_EXPANDED characters in all."""
        argv: List[str] = []
        left = MAX_EXPANDED
        for token in tokens:
            argv.append(expand(token, self.variables, left))
            left -= len(argv[-1])
        return argv

    # --- commands (iPXE names; "-" in a name becomes "_") ---
    def _cmd_echo(self, args: List[str], where: Where) -> None:
        if args[:1] == ["-n"]:
            args = args[1:]
        self.messages.append(" ".join(args))

    def _cmd_set(self, args: List[str], where: Where) -> None:
        if not args:
            raise _CommandFailed("set: missing variable name")
        name, _ = _split_setting(args[0])
        if len(args) == 1:
            self.variables.pop(name, None)  # iPXE: "set x" with no value clears x
        else:
            self.variables[name] = " ".join(args[1:])

    def _cmd_clear(self, args: List[str], where: Where) -> None:
        if len(args) != 1:
            raise _CommandFailed("clear: expected one variable name")
        self.variables.pop(_split_setting(args[0])[0], None)

    def _cmd_isset(self, args: List[str], where: Where) -> None:
        if len(args) != 1:
            raise _CommandFailed("isset: expected one value")
        if not args[0]:
            raise _CommandFailed("isset: value is empty")

    def _cmd_iseq(self, args: List[str], where: Where) -> None:
        if len(args) != 2:
            raise _CommandFailed("iseq: expected two values")
        if args[0] != args[1]:
            raise _CommandFailed(f"iseq: '{args[0]}' != '{args[1]}'")

    def _cmd_sleep(self, args: List[str], where: Where) -> None:
        # validated like iPXE, but not slept: a kexec reboot has no firmware to wait for
        if len(args) != 1 or not args[0].isdigit():
            raise _CommandFailed("sleep: expected a whole number of seconds")

    def _cmd_exit(self, args: List[str], where: Where) -> None:
        status = args[0] if args else "0"
        if not status.isdigit():
            raise _CommandFailed(f"exit: '{status}' is not a number")
        raise _ScriptExit(int(status), where)

    def _cmd_reboot(self, args: List[str], where: Where) -> None:
        raise IpxeFatal("the script reached 'reboot': it gives up booting this way", where)

    def _cmd_poweroff(self, args: List[str], where: Where) -> None:
        raise IpxeFatal("the script reached 'poweroff'", where)

    def _fetch_image(self, command: str, args: List[str], where: Where) -> LoadedImage:
        options, rest = _parse_image_options(command, args)
        if not rest:
            raise _CommandFailed(f"{command}: missing file name or URL")
        try:
            location = resolve(self.stack[-1], rest[0])
        except BadLocation as error:
            raise _CommandFailed(f"{command}: {error}") from None
        try:
            data = self.fetch(location)
        except FetchFailed as error:
            raise _CommandFailed(f"cannot fetch {location}: {error}") from None
        name = options.get("name") or location.name
        return LoadedImage(name, location, data, " ".join(rest[1:]))

    def _register(self, image: LoadedImage) -> None:
        # like iPXE, an image replaces any registered image of the same name
        self.images = [other for other in self.images if other.name != image.name]
        self.images.append(image)

    def _cmd_kernel(self, args: List[str], where: Where) -> None:
        image = self._fetch_image("kernel", args, where)
        self._register(image)
        self.selected = image

    _cmd_imgselect = _cmd_kernel

    def _cmd_initrd(self, args: List[str], where: Where) -> None:
        self._register(self._fetch_image("initrd", args, where))

    _cmd_imgfetch = _cmd_initrd
    _cmd_module = _cmd_initrd

    def _cmd_imgfree(self, args: List[str], where: Where) -> None:
        if not args:
            self.images, self.selected = [], None
            return
        for name in args:
            if not any(image.name == name for image in self.images):
                raise _CommandFailed(f"imgfree: no image named '{name}'")
            self.images = [image for image in self.images if image.name != name]
            if self.selected is not None and self.selected.name == name:
                self.selected = None

    def _cmd_chain(self, args: List[str], where: Where) -> None:
        options, rest = _parse_image_options("chain", args)
        if not rest:
            raise _CommandFailed("chain: missing file name or URL")
        try:
            location = resolve(self.stack[-1], rest[0])
        except BadLocation as error:
            raise _CommandFailed(f"chain: {error}") from None
        if location in self.stack:
            raise IpxeFatal(f"chain loop: {location} is already running "
                            f"(chain: {' -> '.join(map(str, self.stack))})", where)
        data = self._fetch_script(location, where)
        if data.startswith(SCRIPT_MAGIC):
            self._run_script(location, data, where)
            return
        # chaining a non-script image executes it: boot it as the kernel at once
        image = LoadedImage(options.get("name") or location.name, location, data, " ".join(rest[1:]))
        self._register(image)
        self.selected = image
        self._cmd_boot([], where)

    _cmd_imgexec = _cmd_chain

    def _cmd_boot(self, args: List[str], where: Where) -> None:
        if args:
            matches = [image for image in self.images if image.name == args[0]]
            if not matches:
                raise _CommandFailed(f"boot: no image named '{args[0]}'")
            self.selected = matches[0]
        if self.selected is None:
            raise _CommandFailed("boot: no kernel loaded (use 'kernel' first)")
        kernel = self.selected
        initrds = [image for image in self.images if image is not kernel]
        raise _Booted(BootPlan(kernel, initrds, list(self.scripts), list(self.messages)))


def interpret(fetch: Fetch, variables: Optional[Dict[str, str]] = None,
              start: str = "/start.ipxe") -> BootPlan:
    """The boot plan ``start`` (a boot-root path or URL) leads to."""
    return Interpreter(fetch, variables).run(resolve(BOOT_ROOT, start))
