"""benchmarks/throughput.py (issue 10's targets side by side) is not in the suite, but must keep working.

Run in its smallest mode (4 MiB corpus, lz4, one run, an 8 MiB pipe, no kernel): every
section of the table is printed and every figure saved with ``--json`` is a real
measurement.  No figure is compared with a target here: the benchmark reports, it
never asserts.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "throughput.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_throughput", PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_throughput"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_throughput_runs_in_a_small_mode(bench, tmp_path, capsys):
    saved = tmp_path / "figures.json"
    # One algorithm keeps it short (about ten seconds); make bench runs lzo-rle and lz4.
    argv = ["--size", "4M", "--repeat", "1", "--pipe-size", "8M", "--runs", "1", "--no-kernel", "-a", "lz4"]
    assert bench.main([*argv, "--tmp", str(tmp_path), "--json", str(saved)]) == 0
    out = capsys.readouterr().out
    assert "corpus `make-corpus mixed 4M`" in out
    for label in (
        "zramctl write -t 1 / kernel 1 writer",
        "zramctl write -t 2 / kernel 1 writer",
        "zramctl read / kernel 1 reader",
        "engine write / compress-only",
        "engine read / decompress-only",
        "peak RSS of zramctl, pipe",
        "MB/s, pipe / file",
        "status listing / python -c 'import typer'",
        "4 KiB write, 8 MiB-full / empty device",
        "write, read of a 4 KiB device (start-up)",
        "at best: write -t 1 / kernel 1 writer",
        "at best: read, ",
        "CPU of write -t 2 / ",
    ):
        assert label in out, label
    res = json.loads(saved.read_text())
    assert res["size"] == 4 << 20 and res["corpus"] == "make-corpus mixed 4M"
    assert [a["algorithm"] for a in res["algorithms"]] == ["lz4"]
    for alg in res["algorithms"]:
        assert alg["kernel"] is None
        for name in ("cli_write_t1", "cli_write_t2", "cli_read", "engine_write", "compress_bound",
                     "cli_write_fixed_s", "cli_read_fixed_s", "cli_write_t2_cpu_s"):
            assert math.isfinite(alg[name]) and alg[name] > 0, name
    pipe = res["pipe"]
    assert pipe["size"] == 8 << 20 and pipe["pipe_rss"] > 1 << 20 and pipe["file_rss"] > 1 << 20
    commands = res["commands"]
    assert commands["status_s"] > 0 and commands["write4k_full_s"] > 0
    assert [p.name for p in tmp_path.iterdir()] == ["figures.json"], "the temporary directory is left behind"


def test_a_failing_zramctl_command_is_one_line_and_exit_1(bench, tmp_path, capsys):
    argv = ["--size", "4M", "--repeat", "1", "--pipe-size", "0", "--no-kernel", "-a", "no-such-alg"]
    assert bench.main([*argv, "--tmp", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("throughput: ") and "no-such-alg" in err[-1]
    assert list(tmp_path.iterdir()) == []


def test_the_cpu_row_shares_a_writes_cpu_time_among_the_cpus(bench):
    """The CPU row: the fastest write -t 2's CPU seconds over what the CPUs give in the time the
    target allows (size / (0.8 x the kernel's single writer)), then over the time it took."""
    size = 256 << 20
    kernel = bench.KernelFigures(write1=600.0, write2=1100.0, read1=2000.0)
    alg = bench.AlgorithmFigures(
        "lz4", kernel, cli_write_t1=400.0, cli_write_t2=420.0, cli_read=1000.0,
        cli_write_fixed_s=0.08, cli_read_fixed_s=0.08, cli_write_t2_cpu_s=1.0,
        engine_write=500.0, compress_bound=500.0, engine_read=2000.0, decompress_bound=2200.0,
    )
    res = bench.Results("make-corpus mixed 256M", size, "0" * 64, 2, "/var/tmp", "ext4", ["zramctl"],
                        2, "0.1 0.1 0.1", "test", [alg])
    label = "CPU of write -t 2 / 2 CPUs: target, had"
    row = next(line for line in bench.table(res).splitlines() if label in line)
    allowed = size / (0.8 * 600e6)
    took = size / 420e6
    assert f"{1.0 / (2 * allowed):.2f} / {1.0 / (2 * took):.2f} (1.00 CPU s)" in row


CHILD = """
import tempfile, time
held = bytearray(48 << 20)
held[:: 4096] = b"x" * len(held[:: 4096])  # touch every page
with tempfile.TemporaryFile() as f:  # unlinked at once, in $TMPDIR
    f.write(b"y" * (8 << 20))
    f.flush()
    time.sleep(0.4)
"""


@pytest.mark.parametrize("with_time", [True, False], ids=["usr-bin-time", "sampled"])
def test_a_watched_command_is_charged_its_own_memory_and_temporary_files(
    bench, tmp_path, monkeypatch, with_time
):
    """Not the benchmark's: this process holds 400 MB while it starts a child that touches 48 MiB."""
    if with_time and not Path(bench.TIME).exists():
        pytest.skip(f"no {bench.TIME}")
    if not with_time:
        monkeypatch.setattr(bench, "TIME", str(tmp_path / "no-such-time"))
    ballast = bytearray(400 << 20)
    ballast[::4096] = b"z" * len(ballast[::4096])
    run = bench.Runner([sys.executable], tmp_path / "root")
    ran = run.timed([sys.executable, "-c", CHILD], watch=True)
    del ballast
    assert 48 << 20 < ran.maxrss < 200 << 20, ran.maxrss
    assert ran.tmp_peak >= 8 << 20, ran.tmp_peak
    assert ran.seconds >= 0.4


@pytest.fixture
def fake_zram0(bench, tmp_path, monkeypatch):
    """A zram0 made of plain files (no root): sysfs attributes, a device node, a lock."""
    sys_dir = tmp_path / "sys"
    sys_dir.mkdir()
    for name, text in {"disksize": "0\n", "comp_algorithm": "[lzo-rle] lzo lz4\n", "reset": ""}.items():
        (sys_dir / name).write_text(text)
    (sys_dir / "mm_stat").write_text("0 0 0 0 0 0 0 0 0\n")
    dev = tmp_path / "zram0"
    dev.write_bytes(b"")
    monkeypatch.setattr(bench, "SYS", sys_dir)
    monkeypatch.setattr(bench, "DEV", dev)
    monkeypatch.setattr(bench, "LOCK", str(tmp_path / "lock"))
    return sys_dir


def test_a_zram0_in_use_is_refused_and_left_alone(bench, fake_zram0):
    (fake_zram0 / "disksize").write_text("1048576\n")
    data = bench.mmap.mmap(-1, 1 << 20)
    got = bench.kernel_figures(data, 1 << 20, "lzo-rle", 1)
    assert isinstance(got, str) and "in use" in got
    assert (fake_zram0 / "reset").read_text() == "" and (fake_zram0 / "disksize").read_text() == "1048576\n"


def test_zram0_is_reset_after_a_failure(bench, fake_zram0):
    """The first write 'stores' nothing (mm_stat: 0 bytes), or O_DIRECT is refused (tmpfs): reset anyway."""
    data = bench.mmap.mmap(-1, 1 << 20)
    with pytest.raises((bench.BenchError, OSError)):
        bench.kernel_figures(data, 1 << 20, "lz4", 1)
    assert (fake_zram0 / "reset").read_text() == "1"
    assert (fake_zram0 / "comp_algorithm").read_text() == "lz4"
