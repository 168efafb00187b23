"""``zramctl estimate`` end to end: the installed command on a real corpus, live processes, bad input.

The figures themselves are the library's (``tests/test_estimate.py`` checks them
against devices and the kernel); here the command must print exactly those,
in the promised layouts, sorted by TOTAL, and fail on bad input with one line.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from kernel import make_corpus

from zramctl.cli.estimate import COLUMNS
from zramctl.cli.units import size_to_human_string
from zramctl.estimate import estimate, file_chunks, parse_algorithms, parse_allocators
from zramctl.kernel.profiles import PAGE_SIZE

ZRAMCTL = str(Path(sys.executable).with_name("zramctl"))
ROOT = Path(__file__).resolve().parent.parent
HEADER = "ALGORITHM ALLOCATOR DATA COMPR TOTAL DATA/COMPR DATA/TOTAL SAME HUGE FRAG SAVING".split()


def run(*args: str, input: bytes | None = None, rc: int = 0, env: dict[str, str] | None = None):
    proc = subprocess.run(
        [ZRAMCTL, "estimate", *args], input=input, capture_output=True, timeout=300,
        env=dict(os.environ, **(env or {})), stdin=None if input is not None else subprocess.DEVNULL,
    )
    err = proc.stderr.decode(errors="replace")
    assert "Traceback" not in err, err
    assert proc.returncode == rc, (args, proc.returncode, err)
    return proc


def failure(*args: str, input: bytes | None = None) -> str:
    """The one line a bad input gives (exit 1, nothing on stdout)."""
    proc = run(*args, input=input, rc=1)
    assert proc.stdout == b""
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zramctl: "), lines
    return lines[0]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """2 MiB of a real process's memory (tools/make-corpus)."""
    return make_corpus("memory", 2 << 20, tmp_path_factory.mktemp("estimate") / "memory.bin")


def library(path: Path, algorithms: str | None = None, allocators: str | None = None):
    with open(path, "rb") as f:
        return estimate(file_chunks(f), parse_algorithms(algorithms), parse_allocators(allocators))


def test_plain_output_is_the_library_sorted_by_total(corpus):
    est = library(corpus)
    out = run(str(corpus)).stdout.decode()
    lines = out.splitlines()
    assert lines[0].split() == HEADER == [c.name for c in COLUMNS]
    rows = [line.split() for line in lines[1:]]
    assert len(rows) == len(est.results) == len(parse_algorithms(None)) * len(parse_allocators(None))
    by_label = {(r.algorithm, r.allocator): r for r in est.results}
    totals = []
    for row in rows:
        assert len(row) == len(HEADER), row
        r = by_label.pop((row[0], row[1]))
        assert row[2:5] == [size_to_human_string(n) for n in (r.data, r.compr, r.total)]
        assert row[5] == f"{r.data / r.compr:.4f}" and row[6] == f"{r.data / r.total:.4f}"
        assert row[7:9] == [str(r.same_pages), str(r.huge_pages)]
        assert row[9] == f"{(r.total - r.compr) / r.total * 100:.1f}%"
        assert row[10] == f"{(r.pages * PAGE_SIZE - r.total) / (r.pages * PAGE_SIZE) * 100:.1f}%"
        totals.append(r.total)
    assert not by_label
    assert totals == sorted(totals)
    # util-linux layout: names left-aligned under their headers, figures right-aligned
    heads = [(m.start(), m.end()) for m in re.finditer(r"\S+", lines[0])]
    for line in lines[1:]:
        spans = [(m.start(), m.end()) for m in re.finditer(r"\S+", line)]
        assert [s for s, _ in spans[:2]] == [s for s, _ in heads[:2]], line
        assert [e for _, e in spans[2:]] == [e for _, e in heads[2:]], line


def test_bytes_and_raw(corpus):
    est = library(corpus, "lz4", "zsmalloc,zbud")
    out = run(str(corpus), "-a", "lz4", "--allocator", "zsmalloc,zbud", "-b", "--raw").stdout.decode()
    lines = out.splitlines()
    assert lines[0] == " ".join(HEADER)
    rows = [line.split(" ") for line in lines[1:]]
    assert [int(row[4]) for row in rows] == sorted(r.total for r in est.results)
    for row in rows:
        r = est.result(row[0], row[1])
        assert [int(x) for x in row[2:5]] == [r.data, r.compr, r.total]


def test_json_rows_are_the_librarys(corpus):
    est = library(corpus)
    rows = json.loads(run(str(corpus), "--json").stdout)
    assert rows == sorted((r.as_dict() for r in est.results), key=lambda d: d["total"])
    for row in rows:
        for key in ("algorithm", "allocator", "data", "compr", "total", "same_pages", "huge_pages"):
            assert key in row
        assert isinstance(row["total"], int) and row["total"] % PAGE_SIZE == 0
    assert [r["total"] for r in rows] == sorted(r["total"] for r in rows)


def test_stdin_and_file_agree(corpus):
    data = corpus.read_bytes()
    from_file = json.loads(run(str(corpus), "--json", "-a", "zstd").stdout)
    assert json.loads(run("--json", "-a", "zstd", input=data).stdout) == from_file
    assert json.loads(run("-", "--json", "-a", "zstd", "-t", "1", input=data).stdout) == from_file


def test_algorithm_and_allocator_lists_filter(corpus):
    proc = run(str(corpus), "--json", "-a", "lz4,zstd:1", "--allocator", "zbud,zsmalloc:16")
    rows = json.loads(proc.stdout)
    got = {(r["algorithm"], r["allocator"]) for r in rows}
    assert got == {(a, b) for a in ("lz4", "zstd:1") for b in ("zbud", "zsmalloc:16")}
    assert len(rows) == 4
    rows = json.loads(run(str(corpus), "--json", "--algorithm", "zstd:1..3", "--allocator", "z3fold").stdout)
    assert sorted(r["algorithm"] for r in rows) == ["zstd:1", "zstd:2", "zstd:3"]


def test_an_input_that_ends_inside_a_page_is_padded_and_said(corpus):
    data = corpus.read_bytes()[: 3 * PAGE_SIZE + 100]
    proc = run("--json", "-a", "lzo-rle", "--allocator", "zsmalloc", input=data)
    note = proc.stderr.decode().splitlines()
    assert len(note) == 1 and note[0].startswith("zramctl: estimate: stdin: ") and "padded" in note[0]
    assert str(PAGE_SIZE - 100) in note[0]
    (row,) = json.loads(proc.stdout)
    assert row["pages"] == 4 and row["data"] == 4 * PAGE_SIZE
    whole = json.loads(run("--json", "-a", "lzo-rle", "--allocator", "zsmalloc",
                           input=data + bytes(PAGE_SIZE - 100)).stdout)
    assert [row] == whole  # padded exactly as a device stores the partial page


# --- processes -------------------------------------------------------------------------------

CHILD = r"""
import sys
word = (0x5A17C0DE00FF1234).to_bytes(8, "little")
same = bytearray(word * (513 * 4096 // 8))   # 512 whole same-filled pages at least
noise = bytearray(open("/dev/urandom", "rb").read(128 * 4096))   # 128 incompressible pages
sys.stdout.write("ready\n")
sys.stdout.flush()
sys.stdin.read()
"""


@pytest.fixture
def child():
    proc = subprocess.Popen(
        [sys.executable, "-I", "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_pid_of_a_process_with_known_pages(child):
    rows = json.loads(run("--pid", str(child.pid), "--json", "-a", "lz4", "--allocator", "zsmalloc").stdout)
    (row,) = rows
    assert row["same_pages"] >= 512
    assert row["huge_pages"] >= 128
    assert row["data"] >= 640 * PAGE_SIZE
    # PIDs may follow --pid or be comma-separated; each is read once
    again = json.loads(run("--pid", f"{child.pid},{child.pid}", "--json", "-a", "lz4",
                           "--allocator", "zsmalloc").stdout)
    assert again[0]["same_pages"] >= 512 and again[0]["pages"] < 2 * row["pages"] + 64


def test_all_processes_includes_a_child(child):
    rows = json.loads(run("--all-processes", "--json", "-a", "lz4", "--allocator", "zsmalloc").stdout)
    assert rows[0]["same_pages"] >= 512 and rows[0]["huge_pages"] >= 128


def test_a_missing_pid():
    with open("/proc/sys/kernel/pid_max") as f:
        gone = int(f.read()) + 1
    said = f"zramctl: estimate: process {gone}: no such process"
    assert failure("--pid", str(gone)) == said
    assert failure("--pid", str(os.getpid()), str(gone)) == said


def test_a_kernel_thread_has_nothing_to_give():
    assert "process 2: has no anonymous memory" in failure("--pid", "2")


SETPRIV = shutil.which("setpriv")
ENTRY = "import sys; sys.argv[0] = 'zramctl'; from zramctl.cli.main import entry; entry()"
"""What bin/zramctl runs (nobody may be unable to run the Python the launcher picks: a pyenv under /root)."""


@pytest.mark.skipif(os.geteuid() != 0 or SETPRIV is None, reason="needs root and setpriv")
def test_a_pid_without_permission():
    assert SETPRIV is not None
    proc = subprocess.run(
        [SETPRIV, "--reuid=nobody", "--regid=nogroup", "--clear-groups",
         sys.executable, "-c", ENTRY, "estimate", "--pid", str(os.getpid())],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        env={"PATH": os.environ.get("PATH", ""), "HOME": "/nonexistent"},
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.startswith(f"zramctl: estimate: process {os.getpid()}: permission denied"), proc.stderr
    assert len(proc.stderr.splitlines()) == 1


# --- bad input -------------------------------------------------------------------------------


def test_an_empty_input():
    assert failure("-", input=b"") == "zramctl: estimate: stdin: empty input: no pages to estimate"


def test_an_empty_file(tmp_path):
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    assert failure(str(empty)) == f"zramctl: estimate: {empty}: empty input: no pages to estimate"


@pytest.mark.parametrize(
    "args, words",
    [
        (["-a", "foo"], "foo"),
        (["-a", "lz4,,zstd"], "empty"),
        (["-a", "zstd:x"], "level"),
        (["--allocator", "zbud,slab"], "unknown allocator 'slab'"),
        (["--allocator", ""], "unknown allocator"),
        (["--pid", "12x"], "invalid PID"),
        (["--all-processes", "--pid", "1"], "--all-processes"),
        (["/nonexistent/file"], "No such file or directory"),
        (["/"], "Is a directory"),
        (["a", "b"], "one FILE at a time"),
    ],
)
def test_bad_input_is_one_line(args, words):
    line = failure(*args)
    assert words in line, line


# --- on a terminal -------------------------------------------------------------------------------


def on_tty(*args: str, stream: str = "stdout", env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run with stdout or stderr on a pseudo-terminal (120 columns); the exit status and what it got."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    kw = {"stdout": slave} if stream == "stdout" else {"stderr": slave, "stdout": subprocess.DEVNULL}
    e = dict(os.environ, TERM="xterm-256color", COLUMNS="120")
    e.pop("NO_COLOR", None)
    e.update(env or {})
    proc = subprocess.Popen([ZRAMCTL, "estimate", *args], stdin=subprocess.DEVNULL, env=e, **kw)
    os.close(slave)
    chunks = []
    while select.select([master], [], [], 120)[0]:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return proc.wait(timeout=120), b"".join(chunks).decode(errors="replace")


def test_a_terminal_gets_a_rich_table_with_a_bar_per_row(corpus):
    rc, text = on_tty(str(corpus), "-a", "lz4,zstd", "--allocator", "zsmalloc,zbud")
    assert rc == 0
    rows = [line for line in text.splitlines() if line.startswith(("lz4 ", "zstd "))]
    assert len(rows) == 4 and all("█" in row for row in rows), text
    assert "ALGORITHM" in text and "TOTAL / INPUT" in text
    lists = ("-a", "lz4,zstd", "--allocator", "zsmalloc,zbud")
    rc, plain = on_tty(str(corpus), *lists, env={"NO_COLOR": "1"})
    assert rc == 0 and "█" not in plain
    assert plain.replace("\r\n", "\n") == run(str(corpus), *lists).stdout.decode()


def test_a_long_input_shows_progress_on_a_terminal(tmp_path, corpus):
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        for _ in range(17):  # 34 MiB: above the 32 MiB at which every long transfer shows one
            f.write(corpus.read_bytes())
    rc, text = on_tty(str(big), "-a", "lz4", "--allocator", "zsmalloc", stream="stderr")
    assert rc == 0 and "estimate" in text and "MiB" in text, text
    quiet = run(str(big), "-a", "lz4", "--allocator", "zsmalloc")
    assert quiet.stderr == b""  # not a terminal: no bar
