"""zramctl.estimate and zramctl.procmem: one pass gives every configuration's counters.

- Equal to a device: on real corpora (tools/make-corpus memory and files, 4 MiB each), the
  estimate's DATA, COMPR, TOTAL, same and huge pages equal those of an in-memory ``Zram``
  written with the same bytes, for every configuration a device supports (6.18 with each
  algorithm, 3.11 with lzo); chains 4 and 16, which no device offers, equal a ``zsmalloc.Pool``
  of that chain driven page by page; zbud and z3fold equal the full models (``ZbudPool``,
  ``Z3foldPool``) driven page by page under the rules the estimate documents.  Where the
  kernel's zram0 is writable, equal to the kernel's mm_stat (lzo-rle, lzo, lz4).
- The sizes-only zsmalloc equals the real pool after every malloc (hypothesis).
- Input: a partial last page is padded as a device stores it; empty input is refused; the
  thread count never changes a figure; progress is reported.
- Processes: a child whose memory holds known same-filled and random pages; a missing pid;
  a pid we may not read (as nobody, against root; skipped without root); a process that exits
  while it is read.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernel import (
    MAKE_CORPUS,
    KernelUnavailable,
    Write,
    make_corpus,
    require_kernel,
    run_oracle,
)

from zramctl.estimate import (
    ALLOCATORS,
    EstimateError,
    ZsmallocCounts,
    driver_rule,
    estimate,
    file_chunks,
    file_size,
    parse_algorithms,
    parse_allocators,
    rebatch,
)
from zramctl.kernel.allocator import Allocator, ZsmallocAllocator
from zramctl.kernel.profiles import LEGACY, MODERN, PAGE_SIZE
from zramctl.kernel.z3fold import Z3foldPool
from zramctl.kernel.zbud import ZBUD_MAX_SIZE, ZbudPool
from zramctl.kernel.zcomp import AVAILABLE, get_backend
from zramctl.kernel.zram_drv import Zram, ZramConfig, is_same_filled
from zramctl.procmem import (
    ProcessError,
    ProcessMemory,
    all_process_chunks,
    anonymous_mappings,
    process_chunks,
)

MiB = 1 << 20
CORPUS = 4 * MiB
KINDS = ("memory", "files")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[str, bytes]:
    if not MAKE_CORPUS.exists():
        pytest.skip("tools/make-corpus is missing")
    d = tmp_path_factory.mktemp("estimate-corpus")
    return {kind: make_corpus(kind, CORPUS, d / kind).read_bytes() for kind in KINDS}


@pytest.fixture(scope="module")
def estimates(corpora):
    """Every algorithm x every allocator, one pass per corpus."""
    return {kind: estimate([data], threads=2) for kind, data in corpora.items()}


def device_counters(data: bytes, algorithm: str, compat: str) -> tuple[int, int, int, int, int]:
    """(data, compr, total, same, huge) of a fresh device written once with ``data``."""
    z = Zram(ZramConfig(compat=compat, comp_algorithm=algorithm))
    z.init(len(data) + PAGE_SIZE)
    z.write(0, data)
    s = z.stats
    huge = s.huge_pages if compat == "6.18" else s.bad_compress
    return s.pages_stored * PAGE_SIZE, s.compr_data_size, z.mem_used_pages() * PAGE_SIZE, s.same_pages, huge


def counters(r) -> tuple[int, int, int, int, int]:
    return r.data, r.compr, r.total, r.same_pages, r.huge_pages


def pages_of(data: bytes) -> list[bytes]:
    return [data[i : i + PAGE_SIZE] for i in range(0, len(data), PAGE_SIZE)]


# --------------------------------------------------------------------------
# Equal to a device


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("algorithm", AVAILABLE)
def test_equal_to_a_618_device(corpora, estimates, kind, algorithm):
    data = corpora[kind]
    r = estimates[kind].result(algorithm, "zsmalloc")
    assert counters(r) == device_counters(data, algorithm, "6.18")
    assert r.total > 0 and r.compr > 0


@pytest.mark.parametrize("kind", KINDS)
def test_equal_to_a_311_device(corpora, estimates, kind):
    r = estimates[kind].result("lzo", "zsmalloc:3.11")
    assert counters(r) == device_counters(corpora[kind], "lzo", "3.11")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("chain", [4, 16])
def test_chain_sizes_equal_a_pool_of_that_chain(corpora, estimates, kind, chain):
    """No device has chain 4 or 16: a zsmalloc.Pool of that chain, fed page by page by the 6.18 rules."""
    zs = ZsmallocAllocator(replace(MODERN, chain_size=chain))
    huge_from = zs.pool.huge_class_size
    compress = get_backend("lzo-rle").compress
    compr = same = huge = 0
    pages = pages_of(corpora[kind])
    for page in pages:
        if is_same_filled(page):
            same += 1
            continue
        n = len(compress(page))
        if n >= huge_from:
            n = PAGE_SIZE
            huge += 1
        zs.malloc(n)
        compr += n
    r = estimates[kind].result("lzo-rle", f"zsmalloc:{chain}")
    assert counters(r) == (len(pages) * PAGE_SIZE, compr, zs.pages_allocated * PAGE_SIZE, same, huge)


@pytest.mark.parametrize("kind", KINDS)
def test_zbud_and_z3fold_equal_the_full_models(corpora, estimates, kind):
    """The documented rules: 6.18 same-filled; huge from chain 8's huge_class_size (3625) as a
    PAGE_SIZE object; z3fold takes it headless, zbud cannot (> 3968) and it costs a page."""
    assert ZsmallocCounts(MODERN).huge_class_size == 3625
    compress = get_backend("zstd").compress
    zbud, z3fold = ZbudPool(), Z3foldPool()
    whole = 0
    for page in pages_of(corpora[kind]):
        if is_same_filled(page):
            continue
        n = len(compress(page))
        n = PAGE_SIZE if n >= 3625 else n
        z3fold.malloc(n)
        if n > ZBUD_MAX_SIZE:
            whole += 1
        else:
            zbud.malloc(n)
    est = estimates[kind]
    zsm = est.result("zstd", "zsmalloc")
    for label, total in (("zbud", zbud.pages_allocated + whole), ("z3fold", z3fold.pages_allocated)):
        r = est.result("zstd", label)
        assert r.total == total * PAGE_SIZE
        # the driver's side is the 6.18 chain-8 device's: only TOTAL differs
        assert (r.data, r.compr, r.same_pages, r.huge_pages) == (
            zsm.data,
            zsm.compr,
            zsm.same_pages,
            zsm.huge_pages,
        )
    assert whole == zsm.huge_pages


@pytest.mark.kernel
@pytest.mark.parametrize("algorithm", ["lzo-rle", "lzo", "lz4"])
def test_equal_to_the_kernel(corpora, estimates, algorithm):
    require_kernel()
    data = corpora["memory"] + corpora["files"]
    try:
        (step,) = run_oracle([Write(0, data)], algorithm, disksize=len(data) + MiB)
    except KernelUnavailable as exc:
        pytest.skip(str(exc))
    r = estimate([data], [a for a in parse_algorithms(algorithm)], parse_allocators("zsmalloc")).results[0]
    mm = step.mm
    assert counters(r) == (
        mm["orig_data_size"],
        mm["compr_data_size"],
        mm["mem_used_total"],
        mm["same_pages"],
        mm["huge_pages"],
    )


# --------------------------------------------------------------------------
# The sizes-only zsmalloc


@pytest.mark.parametrize(
    "profile", [LEGACY, MODERN, replace(MODERN, chain_size=4), replace(MODERN, chain_size=16)],
    ids=["3.11", "6.18", "chain4", "chain16"],
)
@given(sizes=st.lists(st.integers(1, PAGE_SIZE), max_size=300))
def test_zsmalloc_counts_equal_the_pool(profile, sizes):
    counts, pool = ZsmallocCounts(profile), ZsmallocAllocator(profile)
    for size in sizes:
        counts.malloc(size)
        pool.malloc(size)
        assert counts.pages_allocated == pool.pages_allocated
    assert counts.objects == pool.objects == len(sizes)
    assert sum(c.pages for c in counts.class_stats()) == counts.pages_allocated
    assert isinstance(counts, Allocator)


# --------------------------------------------------------------------------
# Input


def test_partial_last_page_is_padded_as_a_device_stores_it(corpora):
    data = corpora["files"][: 5 * PAGE_SIZE + 100]
    est = estimate([data], parse_algorithms("lzo-rle,lzo"), parse_allocators("zsmalloc,zsmalloc:3.11"))
    assert (est.input_bytes, est.padded, est.pages) == (len(data), PAGE_SIZE - 100, 6)
    for alg in ("lzo-rle", "lzo"):
        assert counters(est.result(alg, "zsmalloc")) == device_counters(data, alg, "6.18")
        assert counters(est.result(alg, "zsmalloc:3.11")) == device_counters(data, alg, "3.11")


@pytest.mark.parametrize("chunks", [[], [b""], [b"", b""]])
def test_empty_input_is_refused(chunks):
    with pytest.raises(EstimateError, match="empty input"):
        estimate(chunks)


def test_thread_count_and_chunking_change_nothing(corpora):
    data = corpora["memory"][: 2 * MiB] + corpora["files"][: 2 * MiB]
    algs = parse_algorithms("lzo-rle,zstd,deflate")
    one = estimate([data], algs, threads=1, batch_pages=16)
    # odd-sized chunks, four threads, other batches
    cuts = [data[i : i + 12345] for i in range(0, len(data), 12345)]
    four = estimate(cuts, algs, threads=4, batch_pages=7)
    assert one == four
    assert {r.allocator for r in one.results} == set(ALLOCATORS)


def test_progress_reports_every_byte(corpora):
    data = corpora["memory"][: MiB + 10]
    seen: list[tuple[int, int | None]] = []
    estimate([data], parse_algorithms("lz4"), threads=2, total=len(data), batch_pages=32,
             progress=lambda done, total: seen.append((done, total)))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert seen[-1] == (len(data), len(data))
    assert len(seen) == -(-len(data) // (32 * PAGE_SIZE))


def test_file_chunks_and_size(tmp_path, corpora):
    path = tmp_path / "data.bin"
    path.write_bytes(corpora["files"][:MiB])
    with open(path, "rb") as f:
        assert file_size(f) == MiB
        assert b"".join(file_chunks(f, 100_000)) == corpora["files"][:MiB]
    r, w = os.pipe()
    with os.fdopen(r, "rb") as f, os.fdopen(w, "wb"):
        assert file_size(f) is None


def test_same_filled_and_incompressible_pages_by_profile():
    """A word page is same-filled for 6.18 and compressed for 3.11; a zero page for both;
    random bytes are huge (6.18) or bad_compress (3.11)."""
    word = (0x0123456789ABCDEF).to_bytes(8, "little") * (PAGE_SIZE // 8)
    noise = os.urandom(PAGE_SIZE)
    data = bytes(PAGE_SIZE) + word + noise
    est = estimate([data], parse_algorithms("lzo"))
    for label in ("zsmalloc:4", "zsmalloc", "zsmalloc:16", "zbud", "z3fold"):
        r = est.result("lzo", label)
        assert (r.same_pages, r.huge_pages, r.data, r.compr) == (2, 1, 3 * PAGE_SIZE, PAGE_SIZE)
    old = est.result("lzo", "zsmalloc:3.11")
    assert (old.same_pages, old.huge_pages, old.data) == (1, 1, 2 * PAGE_SIZE)
    assert counters(old) == device_counters(data, "lzo", "3.11")
    # zbud cannot hold the random page: a page of its own; z3fold puts it on a headless page
    assert est.result("lzo", "zbud").total == est.result("lzo", "z3fold").total == PAGE_SIZE
    assert est.result("lzo", "zsmalloc").fragmentation == 0.0


def test_result_figures():
    est = estimate([bytes(PAGE_SIZE) * 3 + os.urandom(PAGE_SIZE)], parse_algorithms("lz4"),
                   parse_allocators("zsmalloc"))
    r = est.results[0]
    assert (r.pages, r.uncompressed, r.saving) == (4, 4 * PAGE_SIZE, 3 * PAGE_SIZE)
    assert r.saving_share == 0.75 and r.data_compr_ratio == 4.0 and r.data_total_ratio == 4.0
    row = r.as_dict()
    for key in ("algorithm", "allocator", "data", "compr", "total", "same_pages", "huge_pages"):
        assert key in row
    assert json.loads(json.dumps(row)) == row
    zero = estimate([bytes(PAGE_SIZE)], parse_algorithms("lz4"), parse_allocators("zsmalloc:3.11")).results[0]
    assert (zero.data, zero.compr, zero.total) == (0, 0, 0)
    assert zero.data_compr_ratio is None and zero.fragmentation is None and zero.saving_share == 1.0


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("lzo,nope", "nope"),
        ("842", "842"),
        ("zstd:x", "a level is a number"),
        ("zstd:5..1", "level range"),
        ("deflate:12", "deflate:12"),
        ("", "an empty name"),
    ],
)
def test_bad_algorithm_lists(text, words):
    with pytest.raises(EstimateError, match=words):
        parse_algorithms(text)


def test_algorithm_and_allocator_lists():
    labels = [s.label for s in parse_algorithms("zstd:1..3,lz4,zstd:2")]
    assert labels == ["zstd:1", "zstd:2", "zstd:3", "lz4"]
    assert [a.label for a in parse_allocators("zsmalloc:8,zbud,zsmalloc")] == ["zsmalloc", "zbud"]
    assert [a.label for a in parse_allocators(None)] == list(ALLOCATORS)
    with pytest.raises(EstimateError, match="unknown allocator 'buddy'"):
        parse_allocators("zbud,buddy")


# --------------------------------------------------------------------------
# Processes

CHILD = r"""
import os, sys
word = (0x5A17C0DE00FF1234).to_bytes(8, "little")
same = bytearray(word * (513 * 4096 // 8))   # an mmap of its own: 512 whole same-filled pages
noise = bytearray(os.urandom(128 * 4096))    # 128 incompressible pages
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


def test_a_process_with_known_pages(child):
    with ProcessMemory(child.pid) as mem:
        assert any(m.name == "[heap]" for m in mem.mappings)
        est = estimate(mem.chunks(), parse_algorithms("lzo-rle"), parse_allocators("zsmalloc,zsmalloc:3.11"))
        assert mem.bytes_read == est.input_bytes
    assert est.padded == 0 and est.pages >= 640
    new, old = est.result("lzo-rle", "zsmalloc"), est.result("lzo-rle", "zsmalloc:3.11")
    assert new.same_pages >= 512
    assert new.huge_pages >= 128 and old.huge_pages >= 128
    # the word pages are no zero pages: 3.11 compresses them
    assert new.same_pages - old.same_pages >= 512


def test_missing_pid():
    with open("/proc/sys/kernel/pid_max") as f:
        pid = int(f.read()) + 1
    for bad in (pid, 0, -5):
        with pytest.raises(ProcessError, match=rf"^process {bad}: no such process$"):
            ProcessMemory(bad)
    with pytest.raises(ProcessError, match="no such process"):
        list(process_chunks([os.getppid(), pid]))


def test_all_processes_skips_what_it_cannot_read(child):
    with open("/proc/sys/kernel/pid_max") as f:
        gone = int(f.read()) + 1
    skipped: list[ProcessError] = []
    data = b"".join(all_process_chunks(skipped.append, pids=[gone, child.pid]))
    assert [e.pid for e in skipped] == [gone]
    assert len(data) >= 640 * PAGE_SIZE and len(data) % PAGE_SIZE == 0


def test_a_process_that_exits_while_it_is_read(child):
    with ProcessMemory(child.pid) as mem:
        chunks = mem.chunks()
        assert next(chunks)
        child.send_signal(signal.SIGKILL)
        child.wait()
        with pytest.raises(ProcessError, match="exited while its memory was being read"):
            for _ in chunks:
                pass


SETPRIV = shutil.which("setpriv")


@pytest.mark.skipif(os.geteuid() != 0 or SETPRIV is None, reason="needs root and setpriv")
def test_permission_denied_as_another_user():
    code = (
        "import os, sys\n"
        "from zramctl.procmem import ProcessError, ProcessMemory\n"
        "try:\n"
        "    ProcessMemory(int(sys.argv[1]))\n"
        "except ProcessError as e:\n"
        "    print(e); sys.exit(1)\n"
    )
    assert SETPRIV is not None
    proc = subprocess.run(
        [SETPRIV, "--reuid=nobody", "--regid=nogroup", "--clear-groups",
         sys.executable, "-c", code, str(os.getpid())],
        capture_output=True, text=True, timeout=60, cwd=str(ROOT), env={"PATH": os.environ.get("PATH", "")},
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.startswith(f"process {os.getpid()}: permission denied"), proc.stdout
    assert "Traceback" not in proc.stderr


def test_anonymous_mappings_of_a_maps_text():
    maps = (
        "55d0c0000000-55d0c0021000 rw-p 00000000 00:00 0                          [heap]\n"
        "7f0000000000-7f0000100000 rw-p 00000000 00:00 0 \n"
        "7f0000100000-7f0000200000 rw-p 00000000 00:00 0                          [anon:arena]\n"
        "7f0000200000-7f0000201000 rw-p 00021000 08:01 1234                       /usr/lib/libc.so.6\n"
        "7f0000300000-7f0000400000 rw-s 00000000 00:01 77                         /dev/zero (deleted)\n"
        "7f0000400000-7f0000500000 r--p 00000000 00:00 0 \n"
        "7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]\n"
        "7ffd00100000-7ffd00104000 r--p 00000000 00:00 0                          [vvar]\n"
    )
    got = [(m.start, m.end, m.name) for m in anonymous_mappings(maps)]
    assert got == [
        (0x55D0C0000000, 0x55D0C0021000, "[heap]"),
        (0x7F0000000000, 0x7F0000100000, ""),
        (0x7F0000100000, 0x7F0000200000, "[anon:arena]"),
        (0x7FFD00000000, 0x7FFD00021000, "[stack]"),
    ]


def test_driver_rules_are_the_devices():
    """The huge threshold is the device's own pool's; the boundary is comp_len >= huge_class_size
    (6.18) and comp_len > 3/4 page (3.11)."""
    for compat, profile in (("6.18", MODERN), ("3.11", LEGACY)):
        z = Zram(ZramConfig(compat=compat))
        z.init(MiB)
        assert z.pool is not None
        rule = driver_rule(profile)
        assert rule.same_word == profile.same_word
        if compat == "6.18":
            assert rule.huge_from == z.pool.huge_class_size == 3625
        else:
            assert rule.huge_from == LEGACY.max_zpage_size + 1 == 3073
        assert rule.stored_size(rule.huge_from - 1) == rule.huge_from - 1
        assert rule.stored_size(rule.huge_from) == PAGE_SIZE
    for chain, huge in ((4, 3257), (16, 3833)):
        assert driver_rule(replace(MODERN, chain_size=chain)).huge_from == huge


def test_the_benchmark_runs(tmp_path, corpora):
    """benchmarks/estimate.py on a small file, to keep it working (its figures are not asserted)."""
    path = tmp_path / "memory.bin"
    path.write_bytes(corpora["memory"][:MiB])
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "estimate.py"), "--file", str(path),
         "--algorithms", "lzo-rle,lz4", "--allocators", "zsmalloc,zbud", "--table"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "estimate: 2 alg x 2 alloc" in proc.stdout and "peak RSS" in proc.stdout
    assert proc.stdout.count(" zsmalloc ") == 2 and proc.stdout.count(" zbud ") == 2


@pytest.mark.parametrize("sizes", [[10, 4096, 1], [8192 * 3 + 5], [0, 8192, 0, 8191, 1], [1] * 9000, []])
def test_rebatch_keeps_every_byte_in_order(sizes):
    data = os.urandom(sum(sizes))
    chunks, pos = [], 0
    for n in sizes:
        chunks.append(data[pos : pos + n])
        pos += n
    batches = list(rebatch(chunks, 8192))
    assert b"".join(batches) == data
    assert all(len(b) == 8192 for b in batches[:-1]) and all(batches)


@pytest.mark.parametrize("label", ["zstd:1", "zstd:19", "deflate:1", "lz4:8"])
def test_levels_equal_a_device_set_to_that_level(corpora, label):
    name, level = label.split(":")
    data = corpora["files"][:MiB] + corpora["memory"][:MiB]
    r = estimate([data], parse_algorithms(label), parse_allocators("zsmalloc")).results[0]
    z = Zram(ZramConfig(comp_algorithm=name))
    z.config.params[0].level = int(level)
    z.init(len(data))
    z.write(0, data)
    s = z.stats
    assert r.algorithm == label
    total = z.mem_used_pages() * PAGE_SIZE
    assert counters(r) == (s.pages_stored * PAGE_SIZE, s.compr_data_size, total, s.same_pages, s.huge_pages)


def test_a_kernel_thread_has_no_memory_to_give():
    kthreadd = 2
    with open(f"/proc/{kthreadd}/stat") as f:
        if "(kthreadd)" not in f.read():
            pytest.skip("pid 2 is not kthreadd here")
    with pytest.raises(ProcessError, match=r"^process 2: has no anonymous memory"):
        list(process_chunks([kthreadd]))
    assert list(all_process_chunks(pids=[kthreadd])) == []
