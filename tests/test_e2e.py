"""The installed ``zramctl`` command, run as a user runs it: in a shell, with pipes, on a terminal.

Every test works under its own temporary ``ZRAMCTL_ROOT`` (or ``--root``).
"""

from __future__ import annotations

import hashlib
import json
import os
import pty
import random
import select
import subprocess
import sys
from pathlib import Path

import pytest

ZRAMCTL = str(Path(sys.executable).with_name("zramctl"))
PAGE = 4096


@pytest.fixture
def env(tmp_path):
    e = dict(os.environ)
    e.pop("NO_COLOR", None)
    e.pop("POSIXLY_CORRECT", None)
    e.pop("PYTHONUNBUFFERED", None)  # buffered output to pipes, as a user's shell has it
    e["ZRAMCTL_ROOT"] = str(tmp_path / "root")
    e["LC_ALL"] = "C.UTF-8"
    return e


def zramctl(env, *args: str, input: bytes | None = None, rc: int = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run([ZRAMCTL, *args], input=input, capture_output=True, env=env, timeout=120)
    assert proc.returncode == rc, (args, proc.returncode, proc.stderr.decode(errors="replace"))
    assert b"Traceback" not in proc.stderr
    return proc


def out(env, *args: str, **kw) -> str:
    return zramctl(env, *args, **kw).stdout.decode()


def err(env, *args: str, rc: int = 1, **kw) -> str:
    proc = zramctl(env, *args, rc=rc, **kw)
    return proc.stderr.decode()


def sh(env, script: str) -> subprocess.CompletedProcess:
    """A shell pipeline, with the venv's zramctl first on PATH."""
    e = dict(env, PATH=f"{Path(ZRAMCTL).parent}:{env['PATH']}")
    return subprocess.run(["bash", "-o", "pipefail", "-c", script], capture_output=True, env=e, timeout=120)


def mixed_data(pages: int, seed: int = 1) -> bytes:
    """Text-like compressible pages, zero pages and random pages."""
    rnd = random.Random(seed)
    words = [rnd.randbytes(rnd.randrange(2, 9)).hex().encode() for _ in range(64)]
    chunks = []
    for i in range(pages):
        kind = i % 5
        if kind == 0:
            chunks.append(bytes(PAGE))
        elif kind == 1:
            chunks.append(rnd.randbytes(PAGE))
        else:
            text = b" ".join(rnd.choice(words) for _ in range(PAGE // 4))
            chunks.append(text[:PAGE])
    return b"".join(chunks)


def mm_stat(env, dev: str = "zram0") -> list[int]:
    return [int(x) for x in out(env, "attr", dev, "mm_stat").split()]


# --- a whole session ---------------------------------------------------------------------------


def test_session_create_fill_status_stat_compact_read_reset(env, tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    for n in range(20):
        (tree / f"file{n}.txt").write_bytes(mixed_data(8, seed=n))
    assert out(env, "--find", "--size", "64M", "--algorithm", "lzo") == "zram0\n"

    fill = sh(env, f"tar -C {tree} -c . | zramctl write zram0")
    assert fill.returncode == 0, fill.stderr
    archive = subprocess.run(["tar", "-C", str(tree), "-c", "."], capture_output=True, check=True).stdout
    # tar output is deterministic enough here to compare by length and content
    back = sh(env, f"zramctl read zram0 --length {len(archive)} | sha256sum")
    assert back.returncode == 0
    assert back.stdout.split()[0].decode() == hashlib.sha256(archive).hexdigest()

    table = out(env)
    lines = table.splitlines()
    assert lines[0].split() == "NAME ALGORITHM DISKSIZE DATA COMPR TOTAL STREAMS MOUNTPOINT".split()
    assert lines[1].startswith("zram0 lzo            64M ") and len(lines) == 2

    data, compr, total, limit, used_max, same, migrated, huge, _ = mm_stat(env)
    assert data == -(-len(archive) // PAGE) * PAGE and 0 < compr < data and total >= compr
    raw = out(env, "--output-all", "--bytes", "--raw", "-n").split(" ")
    assert raw[:4] == ["zram0", str(64 << 20), str(data), str(compr)]
    assert raw[6:11] == [str(same), str(total), str(limit), str(used_max), str(migrated)]

    stat_text = out(env, "stat", "zram0")
    for section in ("settings", "counters", "attributes", "allocator size classes", "stored object sizes"):
        assert f"zram0: {section}" in stat_text
    report = json.loads(out(env, "stat", "zram0", "--json"))
    assert report["name"] == "zram0"
    assert report["counters"]["orig_data_size"] == data
    assert report["counters"]["compr_data_size"] == compr
    objects = sum(b["count"] for b in report["histogram"])
    assert objects + report["same_pages"] + report["huge_pages"] == data // PAGE
    assert report["classes"] and all(c["objs_inuse"] <= c["objs_allocated"] for c in report["classes"])

    # discard the first half, compact, and the rest still reads back
    half = (len(archive) // 2) // PAGE * PAGE
    assert out(env, "discard", "zram0", "--length", str(half)) == ""
    assert out(env, "compact", "zram0") == ""
    after = mm_stat(env)
    assert after[0] < data and after[2] <= total
    tail = zramctl(env, "read", "zram0", "--offset", str(half), "--length", str(len(archive) - half)).stdout
    assert tail == archive[half:]
    assert zramctl(env, "read", "zram0", "--length", str(half)).stdout == bytes(half)

    assert out(env, "check", "zram0") == ""
    assert out(env, "--reset", "zram0") == ""
    assert out(env) == ""
    assert not list((tmp_path / "root").glob("zram*.img"))


# --- data verbs ----------------------------------------------------------------------------------


def test_write_from_stdin_at_an_unaligned_offset(env):
    out(env, "-f", "-s", "1M")
    data = random.Random(3).randbytes(10000) + b"\x00\xff\n\r" * 100
    assert out(env, "write", "zram0", "-", "--offset", "5000", input=data) == ""
    whole = zramctl(env, "read", "zram0").stdout
    assert len(whole) == 1 << 20
    assert whole[5000 : 5000 + len(data)] == data
    assert whole[:5000] == bytes(5000) and whole[5000 + len(data) :] == bytes(len(whole) - 5000 - len(data))
    part = zramctl(env, "read", "zram0", "--offset", "0x1388", "--length", "1K").stdout
    assert part == data[:1024]


def test_write_past_the_end_fails_up_front_and_writes_nothing(env, tmp_path):
    """A file too long for the room left is refused whole; a pipe, whose length nobody knows in
    advance, has what fits written and committed (as ``dd of=/dev/zram0``), then fails with the count."""
    out(env, "-f", "-s", "1M")
    too_long = bytes(range(256)) * 4097  # 1 MiB + 256 bytes
    path = tmp_path / "big"
    path.write_bytes(too_long)
    msg = err(env, "write", "zram0", str(path))
    assert msg.startswith("zramctl: zram0: write: No space left on device (")
    assert "nothing written" in msg
    assert mm_stat(env)[0] == 0
    msg = err(env, "write", "zram0", "--offset", "1M", input=b"x")
    assert msg == (
        "zramctl: zram0: write: No space left on device (the input is longer than the 0 bytes "
        "from offset 1048576 to the end of the device; 0 bytes written and committed)\n"
    )
    assert mm_stat(env)[0] == 0
    msg = err(env, "write", "zram0", "--offset", "1000", input=too_long)
    assert msg == (
        "zramctl: zram0: write: No space left on device (the input is longer than the 1047576 bytes "
        "from offset 1000 to the end of the device; 1047576 bytes written and committed)\n"
    )
    assert zramctl(env, "read", "zram0").stdout == bytes(1000) + too_long[: (1 << 20) - 1000]
    out(env, "discard", "zram0")
    assert out(env, "write", "zram0", input=too_long[: 1 << 20]) == ""
    assert mm_stat(env)[0] == 1 << 20
    out(env, "hot-add")
    msg = err(env, "write", "zram1", input=b"abc")
    assert msg == (
        "zramctl: zram1: write: No space left on device "
        "(the device is not set up (disksize 0); nothing written)\n"
    )


def test_read_range_errors(env):
    out(env, "-f", "-s", "64K")
    assert zramctl(env, "read", "zram0", "--offset", "64K").stdout == b""
    assert err(env, "read", "zram0", "--offset", "60K", "--length", "8K").startswith(
        "zramctl: zram0: read: Invalid argument ("
    )
    msg = err(env, "read", "zram0", "--length", "1x")
    assert msg == "zramctl: failed to parse length: '1x': Invalid argument\n"
    msg = err(env, "write", "zram0", "--offset", "-1")
    assert msg == "zramctl: failed to parse offset: '-1': Invalid argument\n"


def test_attr_reads_and_writes_like_sysfs(env):
    out(env, "-f", "-s", "8M", "-a", "zstd")
    assert out(env, "attr", "zram0", "disksize") == f"{8 << 20}\n"
    assert out(env, "attr", "zram0", "comp_algorithm") == "lzo-rle lzo lz4 lz4hc [zstd] deflate \n"
    assert out(env, "attr", "zram0", "initstate") == "1\n"
    busy = "zramctl: zram0: disksize: Device or resource busy\n"
    assert err(env, "attr", "zram0", "disksize", "1G") == busy
    assert err(env, "attr", "zram0", "reset") == "zramctl: zram0: reset: Permission denied\n"
    assert err(env, "attr", "zram0", "mm_stat", "1") == "zramctl: zram0: mm_stat: Permission denied\n"
    assert err(env, "attr", "zram0", "nosuch") == "zramctl: zram0: nosuch: No such file or directory\n"
    assert out(env, "attr", "zram0", "mem_limit", "1M") == ""
    assert out(env, "-o", "MEM-LIMIT", "-b", "-n", "--raw") == "1048576\n"
    assert out(env, "attr", "zram0", "reset", "1") == ""
    assert out(env, "attr", "zram0", "initstate") == "0\n"
    assert out(env, "attr", "/dev/zram0", "disksize", "4M") == ""
    assert out(env, "attr", "zram0", "disksize") == f"{4 << 20}\n"


def test_hot_add_and_hot_remove(env):
    assert out(env, "hot-add") == "zram0\n"
    assert out(env, "hot-add") == "zram1\n"
    assert out(env, "hot-remove", "zram0") == ""
    assert out(env, "hot-add") == "zram0\n"
    assert err(env, "hot-remove", "zram9") == "zramctl: zram9: No such device\n"
    assert err(env, "hot-remove", "bogus") == "zramctl: bogus: No such device\n"


def test_check_reports_problems_in_words(env, tmp_path):
    out(env, "-f", "-s", "1M")
    out(env, "write", "zram0", input=mixed_data(40))
    assert out(env, "check", "zram0") == "" and out(env, "check", "zram0", "--data") == ""
    image = tmp_path / "root" / "zram0.img"
    with open(image, "r+b") as f:
        f.write(b"garbage!")
    proc = zramctl(env, "check", "zram0", rc=1)
    assert proc.stdout.decode().startswith("zram0: ") and proc.stderr == b""


# --- global options, spellings, entry points ------------------------------------------------------


def test_root_option_environment_and_xdg_default(env, tmp_path):
    other = tmp_path / "other"
    assert out(env, "--root", str(other), "-f", "-s", "1M") == "zram0\n"
    assert out(env) == ""  # ZRAMCTL_ROOT is not --root
    assert out(env, "-n", "-o", "NAME", f"--root={other}") == "zram0\n"
    assert out(env, "--root", str(other), "attr", "zram0", "initstate") == "1\n"
    assert out(env, "attr", "zram0", "initstate", "--root", str(other)) == "1\n"
    xdg = dict(env)
    del xdg["ZRAMCTL_ROOT"]
    xdg["XDG_STATE_HOME"] = str(tmp_path / "state")
    assert out(xdg, "hot-add") == "zram0\n"
    assert (tmp_path / "state" / "zramctl" / "zram0.img").is_file()
    xdg["HOME"] = str(tmp_path / "home")
    del xdg["XDG_STATE_HOME"]
    assert out(xdg, "hot-add") == "zram0\n"
    assert (tmp_path / "home" / ".local" / "state" / "zramctl" / "zram0.img").is_file()


def test_every_byte_reaches_a_pipe_before_the_command_exits(env, tmp_path):
    """The command ends with os._exit once it has flushed its output (cli.main.entry): a read,
    a listing and an error each reach a pipe whole, block-buffered as a user's shell has them,
    and the exit status is the command's."""
    data = mixed_data(600, seed=5)
    src = tmp_path / "data.bin"
    src.write_bytes(data)
    zramctl(env, "-f", "-s", "4M")
    zramctl(env, "write", "zram0", str(src))
    got = sh(env, "zramctl read zram0 --length 2457600 | sha256sum; zramctl --output-all --bytes | cat")
    digest, listing = got.stdout.decode().split("\n", 1)
    assert got.returncode == 0 and digest.split()[0] == hashlib.sha256(data).hexdigest()
    assert listing.startswith("NAME") and listing.endswith("\n") and "zram0" in listing
    proc = zramctl(env, "read", "zram0", "--offset", "8M", rc=1)
    assert proc.stderr.decode().startswith("zramctl: zram0: read: ") and proc.stderr.endswith(b"\n")


def test_python_m_and_version(env):
    proc = subprocess.run([sys.executable, "-m", "zramctl", "-V"], capture_output=True, env=env, check=True)
    assert proc.stdout.decode().startswith("zramctl from zramctl ")


def test_verb_help_and_usage_errors(env):
    help_text = out(env, "write", "--help")
    assert "--offset" in help_text and "DEVICE" in help_text
    assert "Missing argument" in err(env, "read")
    msg = err(env, "stat", "zram0", "--bogus")
    assert msg.endswith("Try 'zramctl stat --help' for more information.\n")
    assert "Usage" in out(env, "stat", "-h")


# --- on a terminal ------------------------------------------------------------------------------


def on_tty(env, *args: str, stream: str = "stdout", data: Path | None = None) -> tuple[int, str]:
    """Run with stdout or stderr on a pseudo-terminal; return the exit status and what the terminal got."""
    master, slave = pty.openpty()
    import fcntl
    import struct
    import termios

    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    kw = {"stdout": slave} if stream == "stdout" else {"stderr": slave, "stdout": subprocess.DEVNULL}
    stdin = open(data, "rb") if data else subprocess.DEVNULL
    e = dict(env, TERM="xterm-256color", COLUMNS="120")
    proc = subprocess.Popen([ZRAMCTL, *args], stdin=stdin, env=e, **kw)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    if data:
        stdin.close()
    return proc.wait(timeout=60), b"".join(chunks).decode(errors="replace")


def test_terminal_gets_a_rich_table_and_no_color_the_util_linux_layout(env):
    out(env, "-f", "-s", "1M")
    rc, text = on_tty(env)
    assert rc == 0 and "NAME" in text and "zram0" in text and "─" in text
    rc, text = on_tty(dict(env, NO_COLOR="1"))
    assert rc == 0
    assert text.replace("\r\n", "\n") == out(env)


def test_terminal_stat_draws_tables_and_bars(env):
    out(env, "-f", "-s", "1M")
    out(env, "write", "zram0", input=mixed_data(50))
    rc, text = on_tty(env, "stat", "zram0")
    assert rc == 0
    assert "allocator size classes" in text and "stored object sizes" in text and "█" in text


def test_long_write_shows_progress_on_a_terminal_stderr(env, tmp_path):
    out(env, "-f", "-s", "64M")
    data = tmp_path / "data"
    data.write_bytes(mixed_data(40 * 256))  # 40 MiB: long enough for a progress bar
    rc, text = on_tty(env, "write", "zram0", stream="stderr", data=data)
    assert rc == 0, text
    assert "write zram0" in text and "MiB" in text
    # and no progress at all when stderr is not a terminal
    assert err(env, "read", "zram0", "--length", "1M", rc=0) == ""


def test_a_failed_commit_names_the_device_and_keeps_the_last_commit(env):
    """A commit that the host refuses (here: a file-size limit) is worded like every device error."""
    import resource

    assert out(env, "hot-add") == "zram0\n"

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    proc = subprocess.run(
        [ZRAMCTL, "attr", "zram0", "disksize", "1G"],
        capture_output=True, env=env, timeout=120, preexec_fn=small_files,
    )
    assert proc.returncode == 1
    assert proc.stderr.decode().startswith("zramctl: zram0: commit: File too large")
    assert out(env, "attr", "zram0", "disksize") == "0\n"
    zramctl(env, "check", "zram0")
