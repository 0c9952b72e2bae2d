"""benchmarks/reboot.py's own arithmetic and checks (the benchmark itself needs qemu and root:
it is run by hand, never by the suite)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "reboot.py"
BOOT_ID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("reboot_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_ready_line_gives_boot_id_release_and_command_line(bench) -> None:
    line = bench.parse_ready_line(f"{BOOT_ID} 6.1.0-57-amd64 root=/dev/vda walt.test.marker=bench-b")
    assert (line.boot_id, line.release) == (BOOT_ID, "6.1.0-57-amd64")
    assert line.cmdline == ["root=/dev/vda", "walt.test.marker=bench-b"]


@pytest.mark.parametrize("text", ["", "ready", "not-a-boot-id 6.1.0 root=/dev/vda"])
def test_a_line_that_is_not_a_ready_line_is_refused(bench, text: str) -> None:
    with pytest.raises(ValueError, match="not a ready line"):
        bench.parse_ready_line(text)


def run(bench, asked: str, taken: str, jump: float, kernel: float, ready: float, problem: str = ""):
    return bench.Run(asked, "img", taken, to_jump_s=jump, to_kernel_s=kernel, to_ready_s=ready,
                     problem=problem)


def test_medians_and_ratios_count_only_runs_that_took_the_path_asked(bench) -> None:
    runs = [run(bench, "kexec", "kexec", 8.0, 10.0, 40.0), run(bench, "plain", "plain", 1.0, 30.0, 80.0),
            run(bench, "kexec", "kexec", 18.0, 20.0, 50.0), run(bench, "plain", "plain", 3.0, 50.0, 100.0),
            # kexec fell back to a plain reboot: shown, not counted
            run(bench, "kexec", "plain", 40.0, 90.0, 900.0),
            run(bench, "kexec", "kexec", 1.0, 12.0, 44.0, problem="booted command line is not image b's")]
    assert bench.median_phases(runs, "kexec") == [13.0, 2.0, 15.0, 30.0, 45.0]
    assert bench.median_phases(runs, "plain") == [2.0, 38.0, 40.0, 50.0, 90.0]
    table = bench.reboot_table(runs)
    assert "| request to services ready | 45.0 | 90.0 | 0.50 |" in table
    assert "| new kernel to services ready (boot, systemd, walt-logs) | 30.0 | 50.0 | 0.60 |" in table
    assert "(firmware, iPXE, TFTP) | 2.0 | 38.0 | 0.05 |" in table
    assert "| request to new kernel | 15.0 | 40.0 | 0.38 |" in table
    assert "kexec 2 runs, plain 2 runs" in table
    assert "not counted: took the plain path" in table and "booted command line is not image b's" in table


def test_no_counted_run_of_a_path_gives_no_ratio(bench) -> None:
    table = bench.reboot_table([run(bench, "kexec", "plain", 40.0, 90.0, 900.0),
                                run(bench, "plain", "plain", 1.0, 30.0, 80.0)])
    assert "| request to services ready | n/a | 80.0 | n/a |" in table


def test_download_table_shows_time_against_size(bench) -> None:
    table = bench.download_table({"fake TFTP": {"16": [1.0, 3.0, 2.0], "64": [8.0, 8.0, 9.0]},
                                  "HTTP": {"16": [1.0], "64": [4.0]}})
    assert "| fake TFTP | 64 MiB | 8.00 | 8.0 | 4.00 | 4.00 |" in table
    assert "| HTTP | 16 MiB | 1.00 | 16.0 | 1.00 | 1.00 |" in table
    assert "64 MiB: fake TFTP / HTTP time ratio 2.00" in table


def test_help_runs_without_root_or_qemu() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "MODE single" in done.stdout and "--runs" in done.stdout
