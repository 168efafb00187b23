"""The project stands on its own: its kernel oracle, its corpus generator, and no path outside it.

A user's clone has nothing beside it, so no file of the project may reach for a
directory next to the repository.  ``tools/kernel-oracle`` and ``tools/make-corpus``
are the project's own; here they are checked as a user runs them: as commands,
from a copy of ``tools/`` alone, on fake sysfs directories (which need no root),
and, where this machine has a writable zram0, on the kernel itself, which must be
left reset (disksize 0) whatever happens: a finished run, a failed op or a signal.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from kernel import (
    DEFAULT_DISKSIZE,
    MAKE_CORPUS,
    ORACLE,
    PAGE,
    SYS,
    Write,
    kernel_page_sizes,
    make_corpus,
    require_kernel,
    run_oracle,
)

REPO = Path(__file__).resolve().parent.parent
SCANNED = ["zramctl", "tests", "benchmarks", "tools", "Makefile", ".ci", "README.md", "man", "completions",
           "pyproject.toml", "setup.py"]  # fmt: skip
SKIPPED_DIRS = {"__pycache__", ".venv", "build", ".git", ".pytest_cache", ".ruff_cache", ".hypothesis"}

# Written so that this file does not match itself.
WORKSPACE = "sha" + "red"
OUTSIDE = re.compile(
    r"\.\./" + WORKSPACE + r"\b"  # the workspace as a relative path
    r"|/work/" + WORKSPACE + r"\b"  # the workspace's absolute path
    r"""|(parent|\.\.)\s*/\s*["']""" + WORKSPACE + r"""["']"""  # ROOT.parent / <it>
    r"""|os\.path\.join\([^)]*["']\.\.["'],\s*["']""" + WORKSPACE + r"""["']"""
)

# tools/corpus.py, imported by path (tools/ is not a package); dataclasses want it in sys.modules.
corpus_spec = importlib.util.spec_from_file_location("tools_corpus", REPO / "tools" / "corpus.py")
assert corpus_spec is not None and corpus_spec.loader is not None
corpus = sys.modules.setdefault("tools_corpus", importlib.util.module_from_spec(corpus_spec))
corpus_spec.loader.exec_module(corpus)


def project_files() -> list[Path]:
    out = []
    for name in SCANNED:
        path = REPO / name
        if path.is_file():
            out.append(path)
        elif path.is_dir():
            for p in sorted(path.rglob("*")):
                if p.is_file() and not SKIPPED_DIRS & set(p.relative_to(REPO).parts):
                    out.append(p)
    return out


# --------------------------------------------------------------------------
# Nothing outside the repository


@pytest.mark.parametrize(
    "line",
    [
        f'ORACLE = ROOT.parent / "{WORKSPACE}" / "tools" / "kernel-oracle"',
        f"../{WORKSPACE}/tools/make-corpus memory 32M memory.bin",
        f"see /work/{WORKSPACE}/docs/design.md",
        f"os.path.join(here, '..', '{WORKSPACE}', 'tools')",
    ],
)
def test_the_check_finds_a_path_outside_the_repository(line):
    assert OUTSIDE.search(line)


@pytest.mark.parametrize("line", ["shared for readers, exclusive for writers", "a shared lock", "sharedmem"])
def test_the_check_leaves_the_word_alone(line):
    assert not OUTSIDE.search(line)


def test_no_file_refers_to_a_directory_beside_the_repository():
    files = project_files()
    assert REPO / "tests" / "test_standalone.py" in files and REPO / "Makefile" in files
    found = []
    for path in files:
        text = path.read_bytes().decode("utf-8", "replace")
        for n, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                found.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not found, "the project must not use the workspace beside it:\n" + "\n".join(found)


def test_the_python_tools_are_ruff_clean():
    """``make test`` lints zramctl, tests and benchmarks; the tools, scripts without .py, are named here."""
    pytest.importorskip("ruff")
    tools = [REPO / "tools" / name for name in ("corpus.py", "kernel-oracle", "make-corpus")]
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", *map(str, tools)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------
# make-corpus


def run_tool(tool: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(tool), *args], capture_output=True, timeout=300, **kw)


@pytest.fixture(scope="module")
def tools_alone(tmp_path_factory) -> Path:
    """A copy of tools/ with nothing beside it, as in a clone."""
    where = tmp_path_factory.mktemp("clone") / "tools"
    shutil.copytree(REPO / "tools", where, ignore=shutil.ignore_patterns("__pycache__"))
    return where


@pytest.mark.parametrize("kind", corpus.KINDS)
def test_make_corpus_writes_exactly_size_bytes_of_real_data(kind, tools_alone, tmp_path):
    out = tmp_path / f"{kind}.bin"
    size = (2 << 20) + 4097
    proc = run_tool(tools_alone / "make-corpus", kind, str(size), str(out))
    assert proc.returncode == 0, proc.stderr
    data = out.read_bytes()
    assert len(data) == size
    pages = [data[i : i + PAGE] for i in range(0, size - PAGE, PAGE)]
    same = sum(p == p[:1] * PAGE for p in pages)
    assert same < len(pages) // 2, f"{same} of {len(pages)} pages are same-filled"
    assert len(set(pages)) > len(pages) * 3 // 4, "the corpus repeats itself"
    if kind in ("files", "binaries", "mixed"):
        assert data.startswith(b"\x7fELF")
    if kind == "text":
        data[: size // 2].decode("utf-8")  # Python sources
        assert b"def " in data[: size // 2] and b"\0" not in data


def test_make_corpus_files_are_the_same_every_time(tmp_path):
    a = make_corpus("files", 1 << 20, tmp_path / "a.bin").read_bytes()
    b = make_corpus("files", 1 << 20, tmp_path / "b.bin").read_bytes()
    assert a == b


def test_make_corpus_memory_is_a_python_process(tmp_path):
    data = make_corpus("memory", 16 << 20, tmp_path / "m.bin").read_bytes()
    # What the child imported and built is in its memory; an installed file has none of it.
    for needle in (b"minidom", b"Subject", b"EmailMessage"):
        assert needle in data, needle
    assert not data.startswith(b"\x7fELF")


def test_make_corpus_mixed_interleaves_files_and_memory_by_the_mebibyte(tmp_path):
    mib = 1 << 20
    files = make_corpus("files", 2 * mib, tmp_path / "f.bin").read_bytes()
    mixed = make_corpus("mixed", 4 * mib, tmp_path / "x.bin").read_bytes()
    assert mixed[:mib] == files[:mib] and mixed[2 * mib : 3 * mib] == files[mib : 2 * mib]
    assert mixed[mib : 2 * mib] != files[mib : 2 * mib]


def test_make_corpus_to_standard_output():
    proc = run_tool(MAKE_CORPUS, "binaries", "64K", "-")
    assert proc.returncode == 0 and len(proc.stdout) == 65536 and proc.stdout.startswith(b"\x7fELF")


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["files", "12X", "out.bin"], 1, "make-corpus: bad size '12X'"),
        (["files", "0", "out.bin"], 1, "make-corpus: bad size '0'"),
        (["noise", "1M", "out.bin"], 1, "make-corpus: unknown kind 'noise' (one of: files, binaries"),
        (["files", "1M", "no/such/dir/out.bin"], 1, "make-corpus: no/such/dir/out.bin: No such file"),
        (["files", "1M"], 2, "usage: make-corpus KIND SIZE FILE"),
    ],
)
def test_make_corpus_errors_are_one_line(args, code, message, tmp_path):
    proc = run_tool(MAKE_CORPUS, *args, cwd=tmp_path)
    err = proc.stderr.decode()
    assert proc.returncode == code and err.startswith(message), err
    assert "Traceback" not in err and (code == 2 or err.count("\n") == 1)
    assert not (tmp_path / "out.bin").exists()


def test_parse_size():
    assert corpus.parse_size("4096") == 4096
    assert corpus.parse_size("64K") == 64 << 10
    assert corpus.parse_size("32m") == 32 << 20
    assert corpus.parse_size("1GiB") == 1 << 30


def test_only_private_writable_anonymous_mappings_are_memory():
    maps = "\n".join(
        [
            "55d0c000-55d0d000 rw-p 00000000 00:00 0                          [heap]",
            "7f0000000000-7f0000002000 rw-p 00000000 00:00 0 ",
            "7f0000002000-7f0000003000 rw-p 00002000 08:01 1234     /usr/lib/libc.so.6",
            "7f0000003000-7f0000004000 r--p 00000000 00:00 0 ",
            "7f0000004000-7f0000005000 rw-s 00000000 00:01 99       /dev/zero (deleted)",
            "7ffc0000000-7ffc0001000 rw-p 00000000 00:00 0                   [stack]",
            "7ffc0002000-7ffc0003000 r--p 00000000 00:00 0                   [vvar]",
        ]
    )
    assert list(corpus.anonymous_ranges(maps)) == [
        (0x55D0C000, 0x55D0D000),
        (0x7F0000000000, 0x7F0000002000),
        (0x7FFC0000000, 0x7FFC0001000),
    ]


# --------------------------------------------------------------------------
# kernel-oracle without a kernel: fake sysfs directories


def fake_zram0(tmp_path: Path, disksize: str = "0") -> tuple[Path, Path]:
    """A directory that looks like /sys/block/zram0 and a file standing for /dev/zram0."""
    sysdir = tmp_path / "sys"
    sysdir.mkdir()
    for name, text in [
        ("reset", ""),
        ("disksize", disksize + "\n"),
        ("comp_algorithm", "[lzo-rle] lzo lz4\n"),
    ]:
        (sysdir / name).write_text(text)
    dev = tmp_path / "zram0"
    dev.write_bytes(b"")
    return sysdir, dev


def oracle(tmp_path: Path, sysdir: Path, dev: Path, *args: str) -> subprocess.CompletedProcess:
    where = ["--sys", str(sysdir), "--dev", str(dev), "--lock", str(tmp_path / "lock")]
    return subprocess.run(
        [sys.executable, str(ORACLE), *where, *args], capture_output=True, text=True, timeout=60
    )


def test_oracle_exits_2_where_there_is_no_zram0(tmp_path):
    page = tmp_path / "page.bin"
    page.write_bytes(ORACLE.read_bytes()[:PAGE])
    empty = tmp_path / "nothing"
    empty.mkdir()
    proc = oracle(tmp_path, empty, tmp_path / "no-zram0", f"w:0:{page}")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == "kernel-oracle: no writable kernel zram0 on this machine\n" and proc.stdout == ""


def test_oracle_leaves_a_device_in_use_untouched(tmp_path):
    sysdir, dev = fake_zram0(tmp_path, disksize="1048576")
    page = tmp_path / "page.bin"
    page.write_bytes(ORACLE.read_bytes()[:PAGE])
    proc = oracle(tmp_path, sysdir, dev, "-a", "lz4", f"w:0:{page}", "c")
    assert proc.returncode == 2 and "in use" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert (sysdir / "reset").read_text() == ""  # not reset: it is someone else's
    assert (sysdir / "comp_algorithm").read_text() == "[lzo-rle] lzo lz4\n"
    assert (sysdir / "disksize").read_text() == "1048576\n"


@pytest.mark.parametrize(
    "op, message",
    [
        ("x", "op 'x': not w:OFFSET:FILE"),
        ("w:1:PAGE", "the offset must be a multiple of 4096"),
        ("w:zero:PAGE", "OFFSET and LENGTH are numbers of bytes"),
        ("d:0:100", "the length must be a positive multiple of 4096"),
        ("p:0:/no/such/file", "cannot read /no/such/file"),
    ],
)
def test_oracle_refuses_a_bad_op_before_touching_the_device(op, message, tmp_path):
    sysdir, dev = fake_zram0(tmp_path)
    page = tmp_path / "page.bin"
    page.write_bytes(ORACLE.read_bytes()[:PAGE])
    proc = oracle(tmp_path, sysdir, dev, f"w:0:{page}", op.replace("PAGE", str(page)))
    assert proc.returncode == 1 and proc.stdout == "", proc.stderr
    assert proc.stderr.startswith("kernel-oracle: op ") and message in proc.stderr
    assert proc.stderr.count("\n") == 1
    assert (sysdir / "reset").read_text() == "" and (sysdir / "disksize").read_text() == "0\n"
    assert (sysdir / "comp_algorithm").read_text() == "[lzo-rle] lzo lz4\n"


# --------------------------------------------------------------------------
# kernel-oracle on the kernel

LINE = re.compile(r"(?P<op>[^\t]+)\t(?P<mm>\d+(?: \d+){8})\t(?P<io>\d+(?: \d+){3})")
PAGE_LINE = re.compile(r"page (?P<n>\d+)\t(?P<size>\d+)\t(?P<kind>same|huge|obj)")


def disksize() -> int:
    return int((SYS / "disksize").read_text())


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> Path:
    """64 KiB of installed files, and a page of zeros at its end."""
    path = tmp_path_factory.mktemp("corpus") / "files.bin"
    make_corpus("files", 15 * PAGE, path)
    with open(path, "ab") as f:
        f.write(bytes(PAGE))
    return path


@pytest.mark.kernel
def test_oracle_on_the_kernel_prints_counters_and_leaves_zram0_reset(small_corpus):
    require_kernel()
    ops = [f"w:0:{small_corpus}", f"p:{1 << 20}:{small_corpus}", "d:0:8192", "c"]
    proc = subprocess.run(
        [sys.executable, str(ORACLE), "-a", "lzo", "-s", "4M", *ops],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode == 2:
        pytest.skip(proc.stderr.strip())
    assert proc.returncode == 0, proc.stderr
    assert disksize() == 0
    lines = proc.stdout.splitlines()
    assert len(lines) == 4 + 16
    steps = [LINE.fullmatch(x) for x in (lines[0], *lines[-3:])]
    assert all(steps), lines
    assert [m["op"] for m in steps] == ops
    pages = [PAGE_LINE.fullmatch(x) for x in lines[1:17]]
    assert all(pages), lines[1:17]
    assert [int(m["n"]) for m in pages] == list(range(16))
    mm = [[int(x) for x in m["mm"].split()] for m in steps]
    io = [[int(x) for x in m["io"].split()] for m in steps]
    assert mm[0][0] == 16 * PAGE and mm[0][5] == 1  # orig_data_size; the zero page is same-filled
    assert pages[-1]["kind"] == "same" and pages[-1]["size"] == "0"
    # The same pages again, one at a time: their sizes add up to the first write's compr_data_size.
    assert sum(int(m["size"]) for m in pages) == mm[0][1] and mm[1][1] == 2 * mm[0][1]
    assert mm[2][0] == 30 * PAGE and io[2][3] == 2  # two pages discarded: notify_free


@pytest.mark.kernel
@pytest.mark.parametrize("how", ["blkdiscard", "ioctl"])
def test_oracle_discards_with_blkdiscard_or_the_ioctl(how, small_corpus):
    require_kernel()
    if how == "blkdiscard" and not shutil.which("blkdiscard"):
        pytest.skip("blkdiscard is not installed")
    args = ["-s", "1M", "--discard", how, f"w:0:{small_corpus}", "d:4096:12288"]
    proc = run_tool(ORACLE, *args)
    if proc.returncode == 2:
        pytest.skip(proc.stderr.decode().strip())
    assert proc.returncode == 0, proc.stderr
    mm = [int(x) for x in proc.stdout.decode().splitlines()[-1].split("\t")[1].split()]
    io = [int(x) for x in proc.stdout.decode().splitlines()[-1].split("\t")[2].split()]
    assert mm[0] == 13 * PAGE and io[3] == 3 and disksize() == 0


@pytest.mark.kernel
def test_oracle_resets_zram0_after_a_failed_op(small_corpus):
    require_kernel()
    proc = run_tool(ORACLE, "-s", "32K", f"w:0:{small_corpus}")  # 64 KiB into a 32 KiB device
    if proc.returncode == 2:
        pytest.skip(proc.stderr.decode().strip())
    err = proc.stderr.decode()
    assert proc.returncode == 1 and err.startswith("kernel-oracle: zram0: op 'w:0:") and err.count("\n") == 1
    assert disksize() == 0


@pytest.mark.kernel
def test_oracle_skips_an_algorithm_the_kernel_lacks(small_corpus):
    require_kernel()
    proc = run_tool(ORACLE, "-a", "no-such-algorithm", f"w:0:{small_corpus}")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.decode().startswith(
        "kernel-oracle: zram0: this kernel does not offer no-such-algorithm"
    )
    assert disksize() == 0


@pytest.mark.kernel
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_oracle_resets_zram0_when_stopped_by_a_signal(signum, tmp_path):
    require_kernel()
    data = make_corpus("memory", 4 << 20, tmp_path / "m.bin")
    ops = [f"w:0:{data}"] + [f"p:0:{data}"] * 50  # far more than the time the signal takes
    proc = subprocess.Popen(
        [sys.executable, str(ORACLE), "-s", "8M", *ops],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = proc.stdout.readline()
        if not first:
            proc.wait(timeout=60)
            if proc.returncode == 2:
                pytest.skip(proc.stderr.read().strip())
        assert first.startswith(f"w:0:{data}\t"), first
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signum, err
    assert err == f"kernel-oracle: stopped by signal {int(signum)}; zram0 reset\n"
    assert disksize() == 0


@pytest.mark.kernel
def test_kernel_page_sizes_add_up_to_what_one_write_stores(tmp_path):
    """tests/kernel.py's two ways to ask the kernel agree: per-page sizes (p) and one write (w)."""
    require_kernel()
    data = make_corpus("mixed", 64 * PAGE, tmp_path / "x.bin").read_bytes()
    sizes = kernel_page_sizes(data, "lzo")
    [step] = run_oracle([Write(0, data)], "lzo", DEFAULT_DISKSIZE)
    assert len(sizes) == 64
    assert sum(s.size for s in sizes) == step.mm["compr_data_size"]
    assert sum(s.kind == "same" for s in sizes) == step.mm["same_pages"]
    assert sum(s.kind == "huge" for s in sizes) == step.mm["huge_pages"]
    assert all(s.size == PAGE for s in sizes if s.kind == "huge")
    assert disksize() == 0
