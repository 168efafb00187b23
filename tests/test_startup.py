"""Start-up cost: what a status listing must not import (issue 10: listing <= 1.5x ``import typer``).

The figure itself is measured in benchmarks/throughput.py; these tests keep the
lazy imports lazy: a module that comes back on the status path fails here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# Runs the CLI like bin/zramctl does (entry() is main(exiting=True), then os._exit), then
# reports which modules got imported.
_RUN = """
import json, sys
sys.argv[0] = "zramctl"
from zramctl.cli.main import main
main(exiting=True)
sys.stderr.write(json.dumps(sorted(sys.modules)))
"""


def _modules(*args: str) -> set[str]:
    argv = [sys.executable, "-c", _RUN, *args]
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, check=True
    )
    return set(json.loads(proc.stderr))


def test_status_listing_skips_check_and_ldconfig(tmp_path: Path) -> None:
    root = str(tmp_path / "images")
    _modules("--root", root, "-f", "-s", "1M")
    mods = _modules("--root", root)
    assert "zramctl.store" in mods  # the listing did open the device
    assert "zramctl.image.check" not in mods
    assert "ctypes" not in mods  # find_library("c") runs ldconfig: only a hole punched needs it
    assert "zramctl.cli.verbs" not in mods


def test_a_verb_does_not_load_pydantic(tmp_path: Path) -> None:
    """typer 0.29 and later check each parameter through pydantic: 0.1 s to import, more than
    the kernel takes to read 256 MiB.  pyproject.toml keeps typer below it; this keeps it so."""
    root = str(tmp_path / "images")
    _modules("--root", root, "-f", "-s", "4K")
    mods = _modules("--root", root, "read", "zram0", "--length", "4096")
    assert "zramctl.cli.verbs" in mods and "typer" in mods  # the verb did run, through typer
    assert not any(m == "pydantic" or m.startswith("pydantic.") for m in mods)
    assert "ctypes" not in mods  # only a hole punched needs libc's fallocate (image/io.py)
    assert "zramctl.procmem" not in mods and "zramctl.estimate" not in mods  # estimate's, when it runs


def test_an_lz4_device_does_not_load_the_lz4_package(tmp_path: Path) -> None:
    """lz4 is the project's own compiled code; only lz4hc needs the lz4 package (0.7 ms)."""
    root = str(tmp_path / "images")
    _modules("--root", root, "-f", "-s", "8K", "-a", "lz4")
    _modules("--root", root, "write", "zram0", "--offset", "0", "/dev/null")
    mods = _modules("--root", root, "read", "zram0", "--length", "4096")
    assert "zramctl.kernel._kcomp" in mods  # the device's compressor was made
    assert "lz4" not in mods and "lz4.block" not in mods


def test_punch_hole_still_frees_blocks(tmp_path: Path) -> None:
    from zramctl.image.io import punch_hole

    path = tmp_path / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        os.write(fd, b"x" * (1 << 20))
        os.fsync(fd)
        before = os.fstat(fd).st_blocks
        punch_hole(fd, 0, 1 << 19)
        after = os.fstat(fd).st_blocks
    finally:
        os.close(fd)
    assert os.path.getsize(path) == 1 << 20
    assert after < before  # tmp_path's file system (ext4, tmpfs, xfs) supports PUNCH_HOLE


def test_the_imports_are_frozen_only_where_the_process_ends_with_the_command(tmp_path: Path) -> None:
    """``entry`` (main(exiting=True)) moves what the imports made out of the collector's sight
    (gc.freeze: each full collection would scan it all again); ``main`` called by a process
    that goes on leaves its collector alone."""
    import gc

    from zramctl.cli.main import main

    root = str(tmp_path / "images")
    run = _RUN.replace("json.dumps(sorted(sys.modules))", "json.dumps([__import__('gc').get_freeze_count()])")
    for args in (("--root", root), ("--root", root, "stat", "zram0")):
        argv = [sys.executable, "-c", run, *args]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert json.loads(proc.stderr.splitlines()[-1])[0] > 10_000, proc.stderr  # typer's and ours
    before = gc.get_freeze_count()
    assert main(["--root", root]) == 0 and main(["--root", root, "stat", "zram0"]) == 1
    assert gc.get_freeze_count() == before


def test_each_verb_runs_in_an_app_of_its_own_that_says_what_the_whole_one_does() -> None:
    """run_verb builds only the verb's command (typer makes every command of an app each run):
    its help and its usage errors are the whole app's, word for word."""
    from typer.testing import CliRunner

    from zramctl.cli.main import VERBS
    from zramctl.cli.verbs import app, app_for

    runner = CliRunner()
    assert sorted(c.name for c in app.registered_commands) == sorted(VERBS)
    for verb in VERBS:
        one = app_for(verb)
        assert [c.name for c in one.registered_commands] == [verb]
        for args in ([verb, "--help"], [verb, "--no-such-option"], [verb, "a", "b", "c", "d"]):
            whole, alone = runner.invoke(app, args), runner.invoke(one, args)
            assert (alone.exit_code, alone.output) == (whole.exit_code, whole.output), args
