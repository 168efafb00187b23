#!/usr/bin/env python3
"""Engine throughput beside its bound, and the engine's mm_stat beside the kernel's.

For each corpus (``tools/make-corpus memory`` and ``files``, 64 MiB by default, made
afresh in a temporary directory) and each algorithm (lzo, lz4):

- write MB/s: one in-memory ``Zram`` takes the whole file, in ``--chunk`` writes
  (4 MiB, as ``zramctl write`` does);
- read MB/s: the whole device read back in ``--chunk`` reads (as ``zramctl read``),
  then checked against the file;
- the bound: a loop that only compresses (or decompresses) the same 4 KiB pages
  with the same library — what the engine would reach with zero overhead;
- when the kernel's zram0 is usable (``tools/kernel-oracle``), every
  mm_stat field of the engine beside the kernel's after the same file is written
  at offset 0 (the oracle's ``w:0:FILE`` op).

MB is 10^6 bytes.  Each timing is the best of ``--repeat`` runs.  ``--profile``
prints the top of cProfile for one write and one read.  Not run by the tests.

usage: .venv/bin/python benchmarks/engine.py [--size 64M] [--algorithms lzo,lz4]
       [--corpus memory,files] [--chunk 4M] [--repeat 3] [--no-kernel] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from zramctl.kernel import sysfs  # noqa: E402
from zramctl.kernel.sysfs import MM_STAT_FIELDS  # noqa: E402
from zramctl.kernel.zcomp import get_backend  # noqa: E402
from zramctl.kernel.zram_drv import Zram, ZramConfig  # noqa: E402

PAGE = 4096
MAKE_CORPUS = ROOT / "tools" / "make-corpus"


def parse_size(text: str) -> int:
    text = text.strip().upper()
    shift = {"K": 10, "M": 20, "G": 30}.get(text[-1:], 0)
    return int(text[:-1] if shift else text) << shift


def corpus(kind: str, size: int, tmp: str) -> Path:
    """A corpus file of ``kind`` (any of make-corpus's kinds), made now in ``tmp``."""
    path = Path(tmp) / f"{kind}.bin"
    subprocess.run([sys.executable, str(MAKE_CORPUS), kind, str(size), str(path)], check=True)
    return path


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bound(data: bytes, algorithm: str, repeat: int) -> tuple[float, float]:
    """Seconds to compress every page, and to decompress every compressed page, with nothing else."""
    backend = get_backend(algorithm)
    compress, decompress = backend.compress, backend.decompress
    n = len(data)

    def comp() -> list[bytes]:
        return [compress(data[i : i + PAGE]) for i in range(0, n, PAGE)]

    packed = comp()

    def decomp() -> None:
        for c in packed:
            decompress(c)

    return best(comp, repeat), best(decomp, repeat)


def engine(data: bytes, algorithm: str, repeat: int, chunk: int) -> tuple[float, float, Zram]:
    """Seconds to write the whole file into a fresh device, and to read it all back."""
    n = len(data)
    view = memoryview(data)
    times = []
    for _ in range(repeat):
        z = Zram(ZramConfig(comp_algorithm=algorithm))
        z.init(n)
        t = time.perf_counter()
        for off in range(0, n, chunk):
            z.write(off, view[off : off + chunk])
        times.append(time.perf_counter() - t)

    def read() -> None:  # each chunk is used and dropped, as zramctl read writes it out
        for off in range(0, n, chunk):
            z.read(off, min(chunk, n - off))

    tr = best(read, repeat)
    for off in range(0, n, chunk):
        if z.read(off, min(chunk, n - off)) != view[off : off + chunk]:
            raise SystemExit(f"engine ({algorithm}): read-back differs from the file at {off}")
    return min(times), tr, z


def mm_stat(z: Zram) -> list[int]:
    return [int(x) for x in sysfs.show(z, "mm_stat").split()]


def kernel_mm_stat(path: Path, algorithm: str, size: int) -> list[int] | None:
    """The kernel's mm_stat after writing the file at 0, or None where there is no zram0."""
    try:
        from kernel import Write, kernel_available, run_oracle

        if not kernel_available():
            return None
        steps = run_oracle([Write(0, path.read_bytes())], algorithm, disksize=max(size, 64 << 20))
        return list(steps[0].mm_stat)
    except Exception as exc:  # the oracle is optional: say why and go on
        print(f"(kernel comparison skipped: {exc})", file=sys.stderr)
        return None


def kernel_replay(data: bytes, algorithm: str) -> tuple[int, int, int] | None:
    """Our allocator fed the kernel's own object sizes.

    The file is written page by page to the kernel (one oracle op per page);
    each page's object size is its compr_data_size delta (0: same-filled,
    4096: huge).  Our zsmalloc Pool then allocates those sizes in the same
    order, and mem_used_total is compared after every page.  Returns (pages
    whose mem_used_total matched, pages, the first page that did not or -1),
    or None without a kernel.
    """
    try:
        from kernel import PAGE as KPAGE
        from kernel import Write, kernel_available, run_oracle

        from zramctl.kernel.profiles import MODERN
        from zramctl.kernel.zsmalloc import Pool

        if not kernel_available():
            return None
        pages = [Write(i * KPAGE, data[i * KPAGE : (i + 1) * KPAGE]) for i in range(len(data) // KPAGE)]
        steps = run_oracle(pages, algorithm, disksize=max(len(data), 64 << 20))
    except Exception as exc:
        print(f"(kernel replay skipped: {exc})", file=sys.stderr)
        return None
    pool = Pool(MODERN)
    prev, matched, first_bad = 0, 0, -1
    for i, step in enumerate(steps):
        size = step.mm["compr_data_size"] - prev
        prev = step.mm["compr_data_size"]
        if size:
            pool.zs_malloc(size, i)
        if pool.pages_allocated * PAGE == step.mm["mem_used_total"]:
            matched += 1
        elif first_bad < 0:
            first_bad = i
    return matched, len(steps), first_bad


def profile(data: bytes, algorithm: str, chunk: int) -> None:
    z = Zram(ZramConfig(comp_algorithm=algorithm))
    n = len(data)
    z.init(n)

    def write() -> None:
        for off in range(0, n, chunk):
            z.write(off, data[off : off + chunk])

    def read() -> None:
        for off in range(0, n, chunk):
            z.read(off, min(chunk, n - off))

    for what, stmt in (("write", write), ("read", read)):
        prof = cProfile.Profile()
        prof.runcall(stmt)
        print(f"\n--- cProfile: {algorithm} {what} ---")
        pstats.Stats(prof).sort_stats("tottime").print_stats(12)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="64M")
    ap.add_argument("--algorithms", default="lzo,lz4")
    ap.add_argument("--corpus", default="memory,files")
    ap.add_argument("--chunk", default="4M", help="bytes per write/read call (zramctl uses 4 MiB)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-kernel", action="store_true")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--file", type=Path, help="benchmark this file instead of the corpora")
    a = ap.parse_args(argv)
    size = parse_size(a.size)
    chunk = parse_size(a.chunk)
    algorithms = a.algorithms.split(",")
    rows, mm_rows = [], []
    with tempfile.TemporaryDirectory(prefix="zramctl-bench-") as tmp:
        sources = [("file", a.file)] if a.file else [(k, corpus(k, size, tmp)) for k in a.corpus.split(",")]
        for kind, path in sources:
            data = path.read_bytes()
            data += bytes(-len(data) % PAGE)
            mb = len(data) / 1e6
            for alg in algorithms:
                bc, bd = bound(data, alg, a.repeat)
                ew, er, z = engine(data, alg, a.repeat, chunk)
                rows.append((kind, alg, mb / ew, mb / bc, bc / ew, mb / er, mb / bd, bd / er))
                ours = mm_stat(z)
                theirs = replay = None
                if not a.no_kernel:
                    theirs = kernel_mm_stat(path, alg, len(data))
                    replay = kernel_replay(data, alg) if theirs is not None else None
                mm_rows.append((kind, alg, ours, theirs, replay))
                if a.profile:
                    profile(data, alg, chunk)
    print(
        f"\nengine vs bound, {size >> 20} MiB per corpus, {chunk >> 10} KiB per call,"
        f" MB/s (10^6 B/s), best of {a.repeat}"
    )
    head = ("corpus", "alg", "write", "compress", "ratio", "read", "decompress", "ratio")
    print("{:<8} {:<4} {:>8} {:>9} {:>6} {:>8} {:>10} {:>6}".format(*head))
    for kind, alg, w, c, rw, r, d, rr in rows:
        print(f"{kind:<8} {alg:<4} {w:8.0f} {c:9.0f} {rw:6.0%} {r:8.0f} {d:10.0f} {rr:6.0%}")
    print("\nmm_stat after writing the whole corpus at offset 0: engine / kernel")
    for kind, alg, ours, theirs, replay in mm_rows:
        print(f"\n{kind} {alg}")
        print(f"  {'field':<18} {'engine':>12} {'kernel':>12} {'engine/kernel':>14}")
        for i, name in enumerate(MM_STAT_FIELDS):
            k = "-" if theirs is None else theirs[i]
            ratio = "" if theirs is None or not theirs[i] else f"{ours[i] / theirs[i]:.4f}"
            print(f"  {name:<18} {ours[i]:>12} {k:>12} {ratio:>14}")
        if replay is not None:
            matched, steps, first_bad = replay
            where = "" if first_bad < 0 else f" (first difference at page {first_bad})"
            print(
                f"  our allocator given the kernel's own object sizes, page by page:"
                f" mem_used_total equal after {matched} of {steps} pages{where}"
            )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
