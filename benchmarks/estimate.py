#!/usr/bin/env python3
"""``estimate``'s one pass against writing the same data once into one lzo-rle device; its peak RSS.

Issue 12's targets: one pass over process memory for 6 algorithms x every allocator
(zsmalloc 6.18 chains 4, 8 and 16, zsmalloc 3.11, zbud, z3fold) runs at no less than
1/6 of the speed of writing that data once into a single lzo-rle device (the
compress-once design works), in at most 200 MB of RSS whatever the input size.

The corpus is ``tools/make-corpus memory --size`` (256 MiB by default; the issue asks
1 GiB: ``--size 1G``), made afresh in a temporary directory, or ``--file``.  Each side
runs in a fresh Python process of its own, so that each peak RSS (``ru_maxrss``) is its
own and neither warms the other's allocator:

- device: an in-memory ``zramctl.kernel.zram_drv.Zram`` (lzo-rle, 6.18) takes the file in 4 MiB
  writes, as ``zramctl write`` does (the file read in 4 MiB chunks);
- estimate: ``zramctl.estimate.estimate`` over the file read in 1 MiB chunks, with
  ``--threads`` workers (default: the CPUs we may use).

Both wall-clock and CPU seconds (user + system, all threads) are printed, best of
``--repeat``: on a machine shared with other work the wall clock of a threaded pass
says more about the neighbours than about us, and CPU time is what the pass costs.
The speed ratio is device seconds / estimate seconds (target >= 1/6 = 0.167).
Not run by the tests (``tests/test_estimate.py`` runs it on 4 MiB to keep it working).

usage: .venv/bin/python benchmarks/estimate.py [--size 256M] [--file FILE] [--threads N]
       [--repeat 1] [--algorithms LIST] [--allocators LIST]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MAKE_CORPUS = ROOT / "tools" / "make-corpus"
RSS_TARGET_MB = 200
SPEED_TARGET = 1 / 6


def parse_size(text: str) -> int:
    text = text.strip().upper()
    shift = {"K": 10, "M": 20, "G": 30}.get(text[-1:], 0)
    return int(text[:-1] if shift else text) << shift


def cpu_seconds() -> float:
    """CPU time of this process, every thread, user and system (CLOCK_PROCESS_CPUTIME_ID)."""
    return time.process_time()


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("inf")


def run_device(path: str) -> dict[str, float]:
    from zramctl.kernel.zram_drv import Zram, ZramConfig

    size = os.path.getsize(path)
    wall, cpu = time.perf_counter(), cpu_seconds()
    z = Zram(ZramConfig(comp_algorithm="lzo-rle"))
    z.init(max(size, 4096))
    off = 0
    with open(path, "rb") as f:
        while chunk := f.read(4 << 20):
            z.write(off, chunk)
            off += len(chunk)
    elapsed = time.perf_counter() - wall
    return {"wall": elapsed, "cpu": cpu_seconds() - cpu, "total": z.mem_used_pages() * 4096}


def run_estimate(path: str, threads: int | None, algorithms: str | None, allocators: str | None) -> dict:
    from zramctl.estimate import estimate, file_chunks, parse_algorithms, parse_allocators

    algs, allocs = parse_algorithms(algorithms), parse_allocators(allocators)
    wall, cpu = time.perf_counter(), cpu_seconds()
    with open(path, "rb") as f:
        est = estimate(file_chunks(f), algs, allocs, threads=threads, total=os.path.getsize(path))
    return {
        "wall": time.perf_counter() - wall,
        "cpu": cpu_seconds() - cpu,
        "rows": len(est.results),
        "algorithms": len(algs),
        "allocators": len(allocs),
        "results": [r.as_dict() for r in est.results],
    }


def run_bound(path: str, algorithms: str | None) -> dict:
    """CPU seconds to compress every page that is not same-filled once, per algorithm, one thread:
    what the pass must cost at least, whatever it does around the compressors."""
    from zramctl.estimate import parse_algorithms
    from zramctl.kernel.zram_drv import is_same_filled

    out = {}
    for spec in parse_algorithms(algorithms):
        compress = spec.backend().compress
        cpu = cpu_seconds()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                for i in range(0, len(chunk), 4096):
                    page = chunk[i : i + 4096]
                    if not is_same_filled(page):
                        compress(page)
        out[spec.label] = cpu_seconds() - cpu
    return {"per_algorithm": out}


def child(argv: list[str]) -> int:
    """One side, in this fresh process: prints a JSON line with its times and peak RSS."""
    side, path = argv[0], argv[1]
    if side == "device":
        out = run_device(path)
    elif side == "bound":
        out = run_bound(path, argv[2] or None)
    else:
        threads = int(argv[2]) or None
        out = run_estimate(path, threads, argv[3] or None, argv[4] or None)
    out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))
    return 0


def side(args: list[str]) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False
    )
    if proc.returncode:
        raise SystemExit(f"benchmark child failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="256M")
    ap.add_argument("--file", type=Path, help="use this file instead of a fresh memory corpus")
    ap.add_argument("--threads", type=int, default=0, help="estimate's workers (0: the CPUs we may use)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--algorithms", default="", help="-a LIST (default: all)")
    ap.add_argument("--allocators", default="", help="--allocator LIST (default: all)")
    ap.add_argument("--table", action="store_true", help="also print every row of the estimate")
    ap.add_argument("--no-bound", action="store_true", help="skip the compressors-alone measurement")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-estimate-") as tmp:
        if a.file:
            path = str(a.file)
        else:
            path = str(Path(tmp) / "memory.bin")
            subprocess.run([sys.executable, str(MAKE_CORPUS), "memory", a.size, path], check=True)
        size = os.path.getsize(path)
        dev = min((side(["device", path]) for _ in range(a.repeat)), key=lambda r: r["wall"])
        est = min(
            (
                side(["estimate", path, str(a.threads), a.algorithms, a.allocators])
                for _ in range(a.repeat)
            ),
            key=lambda r: r["wall"],
        )
        bound = None if a.no_bound else side(["bound", path, a.algorithms])
    mb = size / 1e6
    print(f"input: {size} bytes ({'file ' + str(a.file) if a.file else 'tools/make-corpus memory'})")
    print(f"load average: {open('/proc/loadavg').read().split()[0]} on {os.cpu_count()} CPUs")
    print(f"{'':36} {'wall s':>8} {'MB/s':>8} {'cpu s':>8} {'peak RSS MB':>12}")
    print(
        f"{'device: one lzo-rle write':36} {dev['wall']:8.2f} {ratio(mb, dev['wall']):8.1f} "
        f"{dev['cpu']:8.2f} {dev['rss_mb']:12.1f}"
    )
    label = f"estimate: {est['algorithms']} alg x {est['allocators']} alloc"
    print(
        f"{label:36} {est['wall']:8.2f} {ratio(mb, est['wall']):8.1f} {est['cpu']:8.2f} {est['rss_mb']:12.1f}"
    )
    wall_ratio, cpu_ratio = ratio(dev["wall"], est["wall"]), ratio(dev["cpu"], est["cpu"])
    ok = "met" if wall_ratio >= SPEED_TARGET else "NOT met"
    print(f"speed ratio (device / estimate), wall: {wall_ratio:.3f} (target >= {SPEED_TARGET:.3f}: {ok})")
    ok = "met" if cpu_ratio >= SPEED_TARGET else "NOT met"
    print(f"speed ratio (device / estimate), cpu:  {cpu_ratio:.3f} (target >= {SPEED_TARGET:.3f}: {ok})")
    ok = "met" if est["rss_mb"] <= RSS_TARGET_MB else "NOT met"
    print(f"estimate peak RSS: {est['rss_mb']:.1f} MB (target <= {RSS_TARGET_MB} MB: {ok})")
    if bound is not None:
        per = bound["per_algorithm"]
        total = sum(per.values())
        print("compressors alone (each page once, one thread), cpu s, and device cpu / that:")
        for label, sec in per.items():
            print(f"  {label:10} {sec:8.2f}  {ratio(dev['cpu'], sec):6.3f}")
        print(f"  {'all':10} {total:8.2f}  {ratio(dev['cpu'], total):6.3f}")
        print(f"estimate cpu / compressors alone: {ratio(est['cpu'], total):.3f} (the pass's own overhead)")
    if a.table:
        for r in sorted(est["results"], key=lambda r: r["total"]):
            print(
                f"  {r['algorithm']:8} {r['allocator']:14} data {r['data']:>11} compr {r['compr']:>11} "
                f"total {r['total']:>11} same {r['same_pages']:>7} huge {r['huge_pages']:>7} "
                f"data/total {r['data_total_ratio'] or 0:6.3f} frag {r['fragmentation'] or 0:6.3f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
