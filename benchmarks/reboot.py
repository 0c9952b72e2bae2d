"""The reboot walt-node exists for, measured end to end: kexec against a plain reboot.

Runs the virtual node of tests/vnode (qemu TCG, Debian bookworm, real systemd)
booted the way a WalT PC node boots: firmware, the NIC's iPXE, DHCP, then
`start.ipxe` of the image the node is bound to, and the kernel and initrd it
names, over TFTP (qemu's user-mode TFTP server serves the bound image's
boot directory, as the WalT server's TFTP tree does). The guest runs
walt-node as an image maintainer installs it, plus two benchmark units:

* a stand-in for WalT's walt-net-service on port 12346 (docs/protocols.md §7):
  on `MODE single` + `REBOOT` it answers OK and runs /bin/walt-network-reboot
  in the background with a 60 s limit and its output thrown away;
* `reboot-bench-ready.service`, ordered after walt-logs.service (Type=notify,
  so after the daemon said it is ready), which writes one line into the logs
  FIFO: this boot's boot id, `uname -r` and /proc/cmdline.

One boot, then --runs reboots of each path, interleaved (kexec, plain, kexec...);
each reboot re-binds the node to the other of two images (same kernel, each
image's start.ipxe gives its own `walt.test.marker=`), so every reboot must
change the image. One reboot:

  t0     the host connects to the guest's port 12346 and sends
         `MODE single\\nREBOOT\\n`, as the WalT server does;
  kernel the new kernel's first console line ("Linux version");
  ready  the ready line of the NEW boot (new boot id) reaches the simulated
         server: walt-logs of the new boot runs and delivers. This is "the
         node's services are ready again".

The kexec path is /etc/walt/reboot.conf `method = kexec` (the hook checks the
binding with the server, fetches the bound image's kernel and initrd over fake
TFTP, `kexec -e`); the plain path is `method = reboot` (the hook's
`busybox reboot -f`: reset, firmware, iPXE, TFTP). Each run is verified: the
request answered OK; the console shows the path taken ("Starting new kernel"
for kexec, "reboot: Restarting system" and no kexec for plain); the ready line
comes from a new boot whose command line carries the bound image's marker and
whose kernel release is the one the image holds; for kexec, walt-reboot's log
stream announced the change to the bound image. A run whose path was not the
expected one (kexec fell back to a plain reboot) is reported and left out of
the medians.

Then the boot file downloads in the node: fake TFTP and HTTP fetches of a 16,
32 and 64 MiB initrd from the simulator with walt-node's own clients, timed in
the guest, medians of --download-runs.

Under TCG every absolute time is large and the host's load moves them: the
ratios are what matter; the host's load average and CPU use are printed with
each run.

Run as root (the image is built with debootstrap/chroot, as scripts/vnode-test.sh):
    sudo .venv/bin/python benchmarks/reboot.py [--runs 3] [--download-runs 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import shutil
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]

LOG = logging.getLogger("reboot-bench")

READY_STREAM = "reboot-bench.ready"
NET_SERVICE_PORT = 12346
IMAGES = (("waltplatform/bench-a:latest", "a" * 64, "bench-a"),
          ("waltplatform/bench-b:latest", "b" * 64, "bench-b"))
DOWNLOAD_SIZES_MIB = (16, 32, 64)
BOOT_TIMEOUT = 400
KERNEL_TIMEOUT = 300
READY_TIMEOUT = 400
DOWNLOAD_SCRIPT = "/usr/local/sbin/reboot-bench-download"

# ------------------------------------------------------------------ guest files

NET_SERVICE_SCRIPT = """#!/bin/bash
# Stand-in for WalT's walt-net-service (docs/protocols.md §7), one connection:
# the server sends "MODE single" then its request; REBOOT runs the network
# boot mode's hook with a 60 s limit, output thrown away. A hook that comes
# back has failed (the console shows it).
while read -r -t 15 request rest; do
    request=${request%$'\\r'}
    case "$request" in
        MODE) continue ;;
        PING) echo OK ;;
        REBOOT)
            echo OK
            ( timeout 60 /bin/walt-network-reboot >/dev/null 2>&1
              echo "walt-net-service stand-in: the reboot hook returned $?" >/dev/ttyS0 ) \\
                </dev/null >/dev/null 2>&1 &
            exit 0 ;;
        *) echo "KO unknown request"; exit 0 ;;
    esac
done
"""

NET_SERVICE_SOCKET = f"""[Unit]
Description=reboot benchmark: stand-in for WalT's walt-net-service (port {NET_SERVICE_PORT})

[Socket]
ListenStream={NET_SERVICE_PORT}
Accept=yes

[Install]
WantedBy=sockets.target
"""

NET_SERVICE_UNIT = """[Unit]
Description=reboot benchmark: one walt-net-service request

[Service]
ExecStart=/usr/local/sbin/walt-net-service-standin
StandardInput=socket
StandardOutput=socket
StandardError=journal
# the hook runs on in the background once the request is answered
KillMode=process
"""

READY_SCRIPT = f"""#!/bin/sh
# This boot's services are ready: say so through walt-logs, with what identifies the boot.
fifo=/var/lib/walt/logs.fifo
test -p "$fifo" || {{ echo "reboot-bench-ready: no FIFO at $fifo" >&2; exit 1; }}
echo "LOG {READY_STREAM} $(cat /proc/sys/kernel/random/boot_id) $(uname -r) $(cat /proc/cmdline)" > "$fifo"
"""

READY_UNIT = """[Unit]
Description=reboot benchmark: a line through walt-logs once it is ready
Requires=walt-logs.service
After=walt-logs.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/reboot-bench-ready

[Install]
WantedBy=multi-user.target
"""

DOWNLOAD_PY = """#!/opt/walt-node/bin/python
# Times walt-node's boot file clients in the node:
#   reboot-bench-download HOST LOGS_PORT HTTP_PORT MAC RUNS SIZE_MIB...
import json, statistics, sys, time
from walt_node.protocols import WebApi, fake_tftp_get

host, mac = sys.argv[1], sys.argv[4]
logs_port, http_port, runs = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[5])
web = WebApi(host, http_port, timeout=300)
fetch = {"fake TFTP": lambda path: fake_tftp_get(host, logs_port, mac, path, timeout=300),
         # node_ip: the address the simulator knows node1 by (qemu NAT makes it loopback)
         "HTTP": lambda path: web.boot_file(path, "127.0.0.1")}
seconds = {p: {s: [] for s in sys.argv[6:]} for p in fetch}
for _ in range(runs):
    for size in sys.argv[6:]:
        for protocol, get in fetch.items():
            started = time.perf_counter()
            data = get(f"/initrd-{size}")
            seconds[protocol][size].append(time.perf_counter() - started)
            assert len(data) == int(size) << 20, (protocol, size, len(data))
            del data
print("@@DOWNLOAD-JSON@@" + json.dumps(seconds) + "@@END@@")
"""

GUEST_FILES = {
    "usr/local/sbin/walt-net-service-standin": NET_SERVICE_SCRIPT,
    "etc/systemd/system/walt-net-service-standin.socket": NET_SERVICE_SOCKET,
    "etc/systemd/system/walt-net-service-standin@.service": NET_SERVICE_UNIT,
    "usr/local/sbin/reboot-bench-ready": READY_SCRIPT,
    "etc/systemd/system/reboot-bench-ready.service": READY_UNIT,
    DOWNLOAD_SCRIPT.lstrip("/"): DOWNLOAD_PY,
}
ENABLED = (("sockets.target.wants", "walt-net-service-standin.socket"),
           ("multi-user.target.wants", "reboot-bench-ready.service"))

# ------------------------------------------------------------------ pure helpers


@dataclasses.dataclass
class ReadyLine:
    boot_id: str
    release: str
    cmdline: List[str]


def parse_ready_line(line: str) -> ReadyLine:
    """'<boot id> <uname -r> <cmdline...>' as reboot-bench-ready writes it."""
    fields = line.split()
    if len(fields) < 2 or not re.fullmatch(r"[0-9a-f-]{36}", fields[0]):
        raise ValueError(f"not a ready line (boot id, release, command line): {line!r}")
    return ReadyLine(fields[0], fields[1], fields[2:])


@dataclasses.dataclass
class Run:
    path: str                 # "kexec" or "plain": what was asked
    image: str                # the image bound for this reboot
    taken: str = ""           # the path the console shows
    to_jump_s: float = 0.0    # request -> the old kernel's "Starting new kernel" / "Restarting system"
    to_kernel_s: float = 0.0  # request -> new kernel's first console line
    to_ready_s: float = 0.0   # request -> ready line at the server
    load: Tuple[float, float, float] = (0.0, 0.0, 0.0)  # host load average before
    host_cpu_pct: float = 0.0  # host CPU busy during the run, % of all cores
    problem: str = ""         # why the run is not counted

    @property
    def counted(self) -> bool:
        return not self.problem and self.taken == self.path


def ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}" if denominator > 0 else "n/a"


PHASES = ("request to old kernel's end (hook: kexec load, or busybox reboot -f)",
          "old kernel's end to new kernel (firmware, iPXE, TFTP)",
          "request to new kernel",
          "new kernel to services ready (boot, systemd, walt-logs)",
          "request to services ready")


def phases(run: Run) -> List[float]:
    """The rows of PHASES for one run, in seconds."""
    return [run.to_jump_s, run.to_kernel_s - run.to_jump_s, run.to_kernel_s,
            run.to_ready_s - run.to_kernel_s, run.to_ready_s]


def median_phases(runs: Sequence[Run], path: str) -> Optional[List[float]]:
    counted = [phases(r) for r in runs if r.path == path and r.counted]
    return [statistics.median(column) for column in zip(*counted)] if counted else None


def reboot_table(runs: Sequence[Run]) -> str:
    lines = ["| run | path asked | path taken | image bound | to old kernel's end (s) | to new kernel (s) | "
             "to ready (s) | host load 1/5/15 min | host CPU busy | note |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for number, run in enumerate(runs, 1):
        load = "/".join(f"{x:.2f}" for x in run.load)
        note = run.problem or ("" if run.counted else f"not counted: took the {run.taken or '?'} path")
        lines.append(f"| {number} | {run.path} | {run.taken or '?'} | {run.image} | {run.to_jump_s:.1f} | "
                     f"{run.to_kernel_s:.1f} | {run.to_ready_s:.1f} | {load} | {run.host_cpu_pct:.0f}% | "
                     f"{note} |")
    counts = {p: sum(1 for r in runs if r.path == p and r.counted) for p in ("kexec", "plain")}
    kexec, plain = median_phases(runs, "kexec"), median_phases(runs, "plain")
    lines += ["", f"| median, seconds (kexec {counts['kexec']} runs, plain {counts['plain']} runs) | kexec | "
              "plain | ratio kexec / plain |", "| --- | --- | --- | --- |"]
    for row, label in enumerate(PHASES):
        k = kexec[row] if kexec else None
        p = plain[row] if plain else None
        shown = ratio(k, p) if k is not None and p is not None else "n/a"
        lines.append(f"| {label} | {_fmt(k)} | {_fmt(p)} | {shown} |")
    return "\n".join(lines)


def _fmt(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def download_table(seconds: Dict[str, Dict[str, List[float]]]) -> str:
    """seconds[protocol][size MiB as text] = samples; medians, MiB/s, time against size."""
    lines = ["| protocol | size | median s | MiB/s | time / smallest's time | size ratio |",
             "| --- | --- | --- | --- | --- | --- |"]
    for protocol, by_size in seconds.items():
        sizes = sorted(by_size, key=int)
        base_size, base = int(sizes[0]), statistics.median(by_size[sizes[0]])
        for size in sizes:
            median = statistics.median(by_size[size])
            lines.append(f"| {protocol} | {size} MiB | {median:.2f} | {int(size) / median:.1f} | "
                         f"{median / base:.2f} | {int(size) / base_size:.2f} |")
    protocols = list(seconds)
    if len(protocols) == 2:
        first, second = protocols
        largest = max(seconds[first], key=int)
        times = [statistics.median(seconds[p][largest]) for p in (first, second)]
        lines.append(f"\n{largest} MiB: {first} / {second} time ratio {ratio(*times)}")
    return "\n".join(lines)


def host_cpu_times() -> Tuple[int, int]:
    """(busy, total) jiffies of all host cores, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)

# ------------------------------------------------------------------ the virtual node


def build_disk(sim, kernel, work: Path) -> Path:
    import vnode_image as image

    root = image.copy_base(image.ensure_base(kernel), work)
    image.configure_guest(root)
    if not image.install_walt_node(root, image.build_walt_node_wheel(work / "wheel")):
        raise RuntimeError("walt-node-setup did not run in the image")
    walt_etc = root / "etc/walt"
    walt_etc.mkdir(parents=True, exist_ok=True)
    (walt_etc / "walt-nbd-swap.disabled").touch()  # would try the host's standard NBD port
    (walt_etc / "reboot.conf").write_text("method = kexec\n")  # this image boots with iPXE
    systemd = root / "etc/systemd/system"
    for unit in ("ssh.service", "lldpd.service"):  # nothing to talk to here: TCG time saved
        (systemd / unit).unlink(missing_ok=True)
        (systemd / unit).symlink_to("/dev/null")
    for relative, text in GUEST_FILES.items():
        (root / relative).write_text(text)
        if "/sbin/" in relative:
            (root / relative).chmod(0o755)
    for wants, unit in ENABLED:
        (systemd / wants).mkdir(exist_ok=True)
        (systemd / wants / unit).symlink_to(f"/etc/systemd/system/{unit}")
    image.write_walt_env(root, "10.0.2.2", sim.rpc_port, sim.logs_port, sim.http_port, IMAGES[0][1])
    disk = work / "node.ext4"
    image.make_ext4(root, disk)
    shutil.rmtree(root)
    return disk


def make_boot_dirs(work: Path, kernel) -> Dict[str, Path]:
    """fullname -> boot dir of each image (its start.ipxe, kernel, initrd and the download files)."""
    from vnode_platform import MODEL, make_boot_dir

    initrds = work / "initrds"
    initrds.mkdir()
    for size in DOWNLOAD_SIZES_MIB:
        with open(initrds / f"initrd-{size}", "wb") as file:
            file.write(b"\x1f\x8b")  # gzip magic, then zeros: the transport does not care
            file.truncate(size << 20)
    dirs = {}
    for fullname, _, marker in IMAGES:
        root = make_boot_dir(work / f"boot-{marker}", kernel, marker)
        for size in DOWNLOAD_SIZES_MIB:
            os.link(initrds / f"initrd-{size}", root / MODEL / f"initrd-{size}")
        dirs[fullname] = root
    return dirs


class Bench:
    def __init__(self, sim, node, tftp_link: Path, boot_dirs: Dict[str, Path], kernel_release: str,
                 port: int):
        self.sim, self.node, self.tftp_link = sim, node, tftp_link
        self.boot_dirs, self.kernel_release, self.port = boot_dirs, kernel_release, port
        self.bound = IMAGES[0][0]
        self.seen_boots: set = set()

    def bind(self, fullname: str) -> None:
        """Re-bind like the WalT server: the API answers, and the node's TFTP tree points there."""
        from vnode_platform import MODEL

        self.sim.bind(self.node.config.mac, fullname)
        fresh = self.tftp_link.with_name(self.tftp_link.name + ".new")
        fresh.unlink(missing_ok=True)
        fresh.symlink_to(self.boot_dirs[fullname] / MODEL)
        os.replace(fresh, self.tftp_link)
        self.bound = fullname

    def ready_lines(self) -> List[Tuple[float, ReadyLine]]:
        return [(r.received, parse_ready_line(r.line)) for r in self.sim.log_records()
                if r.stream == READY_STREAM and r.issuer == "node1"]

    def wait_ready(self, timeout: float) -> Tuple[float, ReadyLine]:
        """The ready line of a boot not seen before: (wall time received, line)."""
        def fresh() -> List[Tuple[float, ReadyLine]]:
            return [(r, line) for r, line in self.ready_lines() if line.boot_id not in self.seen_boots]
        self.sim.wait_for_logs(lambda _records: bool(fresh()), timeout)
        received, line = fresh()[0]
        self.seen_boots.add(line.boot_id)
        return received, line

    def settle_after_boot(self, path_next: str) -> None:
        """Between runs (not timed): the root shell is up, /bin/walt-env names the image
        that runs (a WalT server writes it per image), reboot.conf the next method."""
        shell = self.node.shell
        shell.wait_ready(BOOT_TIMEOUT, self._shell_start)
        image_id = next(i for name, i, _ in IMAGES if name == self.bound)
        method = "kexec" if path_next == "kexec" else "reboot"
        shell.run(f"sed -i 's/^export walt_image_id=.*/export walt_image_id={image_id}/' /bin/walt-env && "
                  f"echo 'method = {method}' > /etc/walt/reboot.conf", timeout=120).check()
        units = ("walt-logs.service", "walt-net-service-standin.socket")
        states = shell.run("systemctl is-active " + " ".join(units), timeout=120).output.split()
        if states != ["active"] * len(units):  # its status is 0 if ONE is active
            raise RuntimeError(f"after the boot, {units} are {states}")
        # the boot's tail (units starting late) is over before the next timed reboot
        shell.run("systemctl is-system-running --wait >/dev/null; sleep 5", timeout=300)

    def first_boot(self, path_next: str) -> None:
        self._shell_start = 0
        self.node.start()
        self.node.wait_booted(BOOT_TIMEOUT)
        _, line = self.wait_ready(READY_TIMEOUT)
        LOG.info("first boot ready: %s", " ".join(line.cmdline))
        self.settle_after_boot(path_next)

    def reboot(self, path: str, path_next: str) -> Run:
        target = next(name for name, _, _ in IMAGES if name != self.bound)
        self.bind(target)
        marker = next(m for name, _, m in IMAGES if name == target)
        run = Run(path=path, image=target, load=os.getloadavg())
        console_start = self.node.console.offset
        self._shell_start = self.node.shell_port.offset
        logs_before = len(self.sim.log_records())
        cpu_before = host_cpu_times()
        started_wall, started = time.time(), time.monotonic()
        with socket.create_connection(("127.0.0.1", self.port), timeout=60) as sock:
            sock.sendall(b"MODE single\nREBOOT\n")
            answer = sock.makefile("r").readline().strip()
        if answer != "OK":
            raise RuntimeError(f"the node answered {answer!r} to REBOOT")
        # the old kernel's last word: a kexec jump, or a reset through the firmware
        jump = self.node.console.wait_for(r"Starting new kernel|reboot: Restarting system", KERNEL_TIMEOUT,
                                          console_start, "the end of the old kernel")
        run.to_jump_s = time.monotonic() - started
        run.taken = "kexec" if jump.group(0) == "Starting new kernel" else "plain"
        self.node.console.wait_for(r"Linux version", KERNEL_TIMEOUT, console_start, "the new kernel")
        run.to_kernel_s = time.monotonic() - started
        received, line = self.wait_ready(READY_TIMEOUT)
        run.to_ready_s = received - started_wall
        busy, total = (after - before for after, before in zip(host_cpu_times(), cpu_before))
        run.host_cpu_pct = 100.0 * busy / total if total else 0.0
        run.problem = self._verify(line, marker, target, logs_before if run.taken == "kexec" else None)
        LOG.info("%s reboot (taken: %s) into %s: kernel %.1f s, ready %.1f s %s", path, run.taken, target,
                 run.to_kernel_s, run.to_ready_s, run.problem)
        self.settle_after_boot(path_next)
        return run

    def _verify(self, line: ReadyLine, marker: str, target: str, logs_before: Optional[int]) -> str:
        problems = []
        if f"walt.test.marker={marker}" not in line.cmdline:
            problems.append(f"booted command line is not image {target}'s: {' '.join(line.cmdline)}")
        if line.release != self.kernel_release:
            problems.append(f"kernel {line.release}, the image holds {self.kernel_release}")
        if logs_before is not None:
            said = [r.line for r in self.sim.log_records()[logs_before:] if r.stream == "walt-reboot"]
            if not any("CHANGES" in s and target in s for s in said):
                problems.append(f"walt-reboot did not announce the change to {target}: {said}")
        return "; ".join(problems)

    def downloads(self, runs: int) -> Dict[str, Dict[str, List[float]]]:
        sizes = " ".join(str(s) for s in DOWNLOAD_SIZES_MIB)
        result = self.node.shell.run(
            f"{DOWNLOAD_SCRIPT} 10.0.2.2 {self.sim.logs_port} {self.sim.http_port} {self.node.config.mac} "
            f"{runs} {sizes}", timeout=300 + 120 * runs).check()
        found = re.search(r"@@DOWNLOAD-JSON@@(.*?)@@END@@", result.output, re.S)
        if not found:
            raise RuntimeError(f"no result from the download script: {result.output[-2000:]}")
        return json.loads(found.group(1))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_benchmark(args: argparse.Namespace) -> Tuple[List[Run], Dict, str]:
    sys.path[:0] = [str(REPO / "tests/vnode"), str(REPO / "tests"), str(REPO)]
    import vnode_image as image
    from vnode_platform import MODEL
    from vnode_qemu import MAC, QemuConfig, VirtualNode, walt_cmdline

    from walt_node.sim import SimConfig, SimImage, SimNode, Simulator

    work = image.RUN_DIR / "reboot-run"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    debian_kernel = image.KernelFiles.from_host()
    kernel = dataclasses.replace(debian_kernel, initrd=image.ensure_small_initrd(debian_kernel))
    boot_dirs = make_boot_dirs(work, kernel)
    config = SimConfig(
        nodes=[SimNode(mac=MAC, name="node1", ip="127.0.0.1", model=MODEL, image=IMAGES[0][0])],
        images=[SimImage(fullname=name, id=image_id, boot_dir=boot_dirs[name])
                for name, image_id, _ in IMAGES])
    paths = ["kexec", "plain"] * args.runs
    runs: List[Run] = []
    with Simulator(config, host="127.0.0.1", records_path=work / "sim-records.jsonl") as sim:
        disk = build_disk(sim, kernel, work)
        tftp_link = work / "tftp-node1"
        tftp_link.symlink_to(boot_dirs[IMAGES[0][0]] / MODEL)
        port = free_port()
        node = VirtualNode(QemuConfig(kernel=kernel.vmlinuz, initrd=kernel.initrd, disk=disk,
                                      cmdline=walt_cmdline(), work_dir=work / "qemu",
                                      network_boot=tftp_link, tcp_forwards={port: NET_SERVICE_PORT}))
        bench = Bench(sim, node, tftp_link, boot_dirs, kernel.version, port)
        try:
            bench.first_boot(paths[0])
            downloads = bench.downloads(args.download_runs) if args.download_runs else {}
            for index, path in enumerate(paths):
                following = paths[index + 1] if index + 1 < len(paths) else path
                runs.append(bench.reboot(path, following))
        finally:
            node.stop()
    return runs, downloads, kernel.version


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--runs", type=int, default=3, help="reboots of each path (3; medians)")
    parser.add_argument("--download-runs", type=int, default=3,
                        help="fetches of each size and protocol in the node (3; medians; 0 skips)")
    parser.add_argument("--json", type=Path, help="also write the raw measures here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    started_load = os.getloadavg()
    runs, downloads, release = run_benchmark(args)
    print(f"\n## reboot: server REBOOT request to services ready (kernel {release}, qemu TCG, 1 vCPU; "
          f"host load at start {'/'.join(f'{x:.2f}' for x in started_load)}, {os.cpu_count()} cores)\n")
    print(reboot_table(runs))
    if downloads:
        print("\n## boot file downloads in the node (walt-node's clients, simulator on the host)\n")
        print(download_table(downloads))
    if args.json:
        args.json.write_text(json.dumps({"runs": [dataclasses.asdict(r) for r in runs],
                                         "downloads": downloads}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
