"""Differential test: the same script run by the real iPXE (qemu's e1000 boot ROM,
booted under TCG with user networking) and by walt-node's interpreter must make
the same HTTP requests, in the same order.

Every construct whose semantics matter (||, && and ; status rules, comments,
expansion of unknown, nested, typed and scoped variables, values with
spaces, set without a value, failing chained scripts, exit, relative and
absolute paths from an HTTP script) makes an ``imgfetch`` of a distinct URL,
so the request log is an observable trace of what ran.  Networking is qemu's
user mode: the guest's 10.0.2.2 is the host's loopback.
"""

from __future__ import annotations

import http.server
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Iterator, List
from urllib.parse import unquote

import pytest
from support.wait import wait_until

from walt_node.reboot.ipxe import FetchFailed, IpxeFatal, Location, interpret

QEMU = shutil.which("qemu-system-x86_64")
ROM_DIRS = (Path("/usr/lib/ipxe/qemu"), Path("/usr/share/qemu"))
GUEST_MAC = "52:54:00:12:34:56"
BOOT_TIMEOUT = 90.0

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(QEMU is None or not any((d / "pxe-e1000.rom").exists() for d in ROM_DIRS),
                       reason="needs qemu-system-x86 and its iPXE boot ROMs (ipxe-qemu)"),
]

START = """#!ipxe
set base http://10.0.2.2:{port}
iseq 1 2 || imgfetch ${{base}}/log/A && imgfetch ${{base}}/log/B
iseq 1 1 || imgfetch ${{base}}/log/C && imgfetch ${{base}}/log/D
imgfetch ${{base}}/fail/1 || imgfetch ${{base}}/log/E
imgfetch ${{base}}/fail/2 && imgfetch ${{base}}/log/F || imgfetch ${{base}}/log/G
iseq 1 1 && iseq 1 2 || imgfetch ${{base}}/log/H ; imgfetch ${{base}}/log/I
set words two words
imgfetch ${{base}}/log/${{words}} # imgfetch ${{base}}/log/commented-out
set which words
imgfetch ${{base}}/log/nested-${{${{which}}}}-end
imgfetch ${{base}}/log/unknown-${{nothing}}-end
imgfetch ${{base}}/log/mac-${{mac:hexhyp}}-${{net0/mac}}
set words
isset ${{words}} || imgfetch ${{base}}/log/cleared
chain ${{base}}/scripts/sub/a.ipxe || imgfetch ${{base}}/log/a-failed
imgfetch ${{base}}/log/after-a-${{from_a}}
chain ${{base}}/scripts/b.ipxe
kernel ${{base}}/big/not-a-kernel || imgfetch ${{base}}/log/not-reached-kernel-accepted
:a-label
iseq ${{mac}} {mac} && imgfetch ${{base}}/log/mac-ok
imgfetch ${{base}}/log/joined-\\
line
imgfetch ${{base}}/log/done
"""

SCRIPTS = {
    "/scripts/sub/a.ipxe": """#!ipxe
set from_a yes
imgfetch ../../log/relative-from-a
imgfetch ${base}/fail/3
imgfetch ${base}/log/not-reached-in-a
""",
    "/scripts/b.ipxe": """#!ipxe
imgfetch /log/absolute-from-b
exit 0
imgfetch ${base}/log/not-reached-in-b
""",
}


class Requests:
    """What a client asked for; /fail/* is 404, /scripts/* are the scripts above,
    /big/* 100 kB of no known format, anything else "ok"."""

    def __init__(self) -> None:
        self.paths: List[str] = []
        self.lock = threading.Lock()

    def answer(self, path: str) -> bytes:
        with self.lock:
            self.paths.append(path)
        if path.startswith("/fail/"):
            raise FileNotFoundError(path)
        if path.startswith("/big/"):
            # no known format (and too big for a PXE NBP, which a BIOS iPXE takes from any
            # small file): iPXE's 'kernel' still accepts it; only booting it would fail
            return b"x" * 100_000
        return SCRIPTS.get(path, "ok").encode()


@pytest.fixture
def web() -> Iterator[tuple]:
    requests = Requests()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            try:
                body, status = requests.answer(unquote(self.path)), 200
            except FileNotFoundError:
                body, status = b"not found", 404
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], requests
    finally:
        server.shutdown()
        server.server_close()


def run_real_ipxe(tftp_dir: Path, requests: Requests) -> List[str]:
    qemu = subprocess.Popen(
        [str(QEMU), "-accel", "tcg", "-m", "128", "-display", "none", "-vga", "none",
         "-serial", "none", "-monitor", "none", "-no-reboot", "-boot", "n",
         "-netdev", f"user,id=n0,tftp={tftp_dir},bootfile=start.ipxe",
         "-device", f"e1000,netdev=n0,mac={GUEST_MAC}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:

        def done() -> bool:
            if qemu.poll() is not None:
                raise AssertionError(f"qemu stopped: {qemu.stderr.read().decode()}")
            return "/log/done" in requests.paths

        assert wait_until(done, BOOT_TIMEOUT, step=0.2), \
            f"real iPXE did not finish in {BOOT_TIMEOUT}s; requests so far: {requests.paths}"
    finally:
        qemu.kill()
        qemu.wait(10)
        qemu.stderr.close()
    return list(requests.paths)


def run_walt_node_interpreter(start: str, requests: Requests) -> List[str]:
    def fetch(location: Location) -> bytes:
        if location.scheme == "tftp":
            assert location.path == "/start.ipxe"
            return start.encode()
        try:
            return requests.answer(location.path)
        except FileNotFoundError:
            raise FetchFailed("HTTP 404") from None

    # the script never boots: it ends after /log/done, which is an error for a boot plan
    with pytest.raises(IpxeFatal, match="without reaching 'boot'"):
        interpret(fetch, {"mac": GUEST_MAC})
    return list(requests.paths)


def test_real_ipxe_and_walt_node_make_the_same_requests(web, tmp_path: Path) -> None:
    port, real_requests = web
    start = START.format(port=port, mac=GUEST_MAC)
    (tmp_path / "start.ipxe").write_text(start)
    real = run_real_ipxe(tmp_path, real_requests)
    ours = run_walt_node_interpreter(start, Requests())
    assert ours == real
    # and the trace is the one the semantics call for (so a broken qemu cannot pass it)
    assert real == [
        "/log/A", "/log/B", "/log/D", "/fail/1", "/log/E", "/fail/2", "/log/G", "/log/H",
        "/log/I", "/log/two words", "/log/nested-two words-end", "/log/unknown--end",
        "/log/mac-52-54-00-12-34-56-52:54:00:12:34:56", "/log/cleared",
        "/scripts/sub/a.ipxe", "/log/relative-from-a", "/fail/3", "/log/a-failed",
        "/log/after-a-yes", "/scripts/b.ipxe", "/log/absolute-from-b",
        "/big/not-a-kernel", "/log/mac-ok", "/log/joined-line", "/log/done"]


def test_request_log_is_observable(web) -> None:
    """The server the comparison relies on answers and records as described."""
    port, requests = web
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/log/x%20y", timeout=5) as reply:
        assert reply.read() == b"ok"
    with pytest.raises(Exception, match="404"):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/fail/z", timeout=5)
    assert requests.paths == ["/log/x y", "/fail/z"]
