#!/usr/bin/env python3
"""Overwrite and whole-device discard: what they cost on a full (or huge) device beside an empty (small) one.

Two O(work) figures of issue 7, each printed as a ratio (wall time, median of ``--runs``):

- **overwrite**: ``--write`` (32 MiB by default) of random data written over a
  device holding ``--full`` (1 GiB) of compressible data, beside the same write
  on an empty device of the same size; open, write, commit, as ``zramctl
  write`` does.  Target: at most 2x.  Random pages are stored raw, each in a
  new one-page zspage: every one of them allocates an extent, while the pages
  it overwrites free theirs, so this is where extent allocation shows.
- **discard**: a whole-device discard of a ``--huge`` (16 TiB) device beside a
  1 GiB one, both holding the same few MiB at their start and end.  Target:
  at most 2x.

Beside the times it prints the work counted by the image (``ImageState.work``:
record slots examined to find free extents, page-table leaves visited), which
is what ``tests/test_overwrite_cost.py`` asserts on a small version.

usage: .venv/bin/python benchmarks/overwrite.py [--full 1G] [--write 32M] [--huge 16T]
       [--runs 3] [--keep DIR] [--only overwrite|discard] [--corpus FILE]

With ``--keep DIR`` the full device is built once in DIR and reused by later runs
(its image is copied for every run, so each run starts from the same state).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from zramctl.kernel import sysfs  # noqa: E402
from zramctl.store import Store  # noqa: E402

PAGE = 4096
COMMIT_EVERY = 64 << 20
CHUNK = 4 << 20


def size_arg(text: str) -> int:
    units = {"K": 10, "M": 20, "G": 30, "T": 40}
    return int(text[:-1]) << units[text[-1].upper()] if text[-1].upper() in units else int(text)


def human(n: int) -> str:
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):g} {unit}"
    return f"{n} bytes"


def compressible(n: int, seed: int = 7) -> bytes:
    """``n`` bytes of pages compressing to 16..2500 bytes (random head, zero tail); repeats every 16 MiB."""
    rnd = random.Random(seed)
    pattern = b"".join((rnd.randbytes(rnd.randrange(16, 2500)) + bytes(PAGE))[:PAGE] for _ in range(4096))
    return (pattern * (n // len(pattern) + 1))[:n]


def new_device(store: Store, size: int) -> int:
    dev = store.hot_add()
    with store.open(dev, write=True) as h:
        sysfs.store(h.zram, "disksize", str(size))
    return dev


def write_through(store: Store, dev: int, offset: int, data: bytes) -> dict[str, int]:
    """Open, write ``data`` at ``offset`` in 4 MiB calls (a commit every 64 MiB), commit: the work counted."""
    with store.open(dev, write=True) as h:
        since = 0
        for pos in range(0, len(data), CHUNK):
            h.zram.write(offset + pos, data[pos : pos + CHUNK])
            since += min(CHUNK, len(data) - pos)
            if since >= COMMIT_EVERY:
                h.commit()
                since = 0
        h.commit()
        return _work(h)


def discard_all(store: Store, dev: int) -> dict[str, int]:
    with store.open(dev, write=True) as h:
        h.zram.discard(0, h.zram.config.disksize)
        h.commit()
        return _work(h)


def _work(handle: object) -> dict[str, int]:
    work = getattr(handle.image.state, "work", None)  # type: ignore[attr-defined]
    return dict(vars(work)) if work is not None else {}


def timed(fn: Callable[[], dict[str, int]]) -> tuple[float, dict[str, int]]:
    start = time.perf_counter()
    work = fn()
    return time.perf_counter() - start, work


def copy_device(src: Store, dev: int, dst: Store) -> int:
    """A synced copy of a device, as sparse as the original (in a dense copy every punch is real work)."""
    new = dst.hot_add()
    subprocess.run(["cp", "--sparse=always", str(src.image_path(dev)), str(dst.image_path(new))], check=True)
    os.sync()
    return new


def prepare_full(root: Path, full: int, corpus: Path | None) -> tuple[Store, int]:
    """A device of ``full`` bytes, all of it written with compressible data (kept in ``root/full-*``).

    The data is ``corpus`` repeated (e.g. ``tools/make-corpus memory 64M FILE``), else ``compressible()``.
    """
    store = Store(root / f"full-{corpus.name if corpus else 'synthetic'}")
    if store.exists(0):
        with store.open(0, write=False) as h:
            if h.zram.stats.pages_stored * PAGE == full:
                return store, 0
        store.hot_remove(0)
    dev = new_device(store, full)
    start = time.perf_counter()
    data = corpus.read_bytes() if corpus else compressible(min(full, 64 << 20))
    data = (data * (CHUNK // max(len(data), 1) + 1))[: max(CHUNK, len(data) // CHUNK * CHUNK)]  # whole chunks
    with store.open(dev, write=True) as h:
        for pos in range(0, full, CHUNK):
            h.zram.write(pos, data[pos % len(data) : pos % len(data) + CHUNK])
            if (pos + CHUNK) % COMMIT_EVERY == 0:
                h.commit()
        h.commit()
    print(f"built a full {full >> 20} MiB device in {time.perf_counter() - start:.1f} s")
    return store, dev


def overwrite(root: Path, full: int, size: int, runs: int, corpus: Path | None = None) -> float:
    src, dev = prepare_full(root, full, corpus)
    data = random.Random(3).randbytes(size)
    times: dict[str, list[float]] = {"empty": [], "full": []}
    works: dict[str, dict[str, int]] = {}
    for run in range(runs):
        scratch = Store(Path(tempfile.mkdtemp(prefix="run-", dir=root)))
        try:
            empty = new_device(scratch, full)
            held = copy_device(src, dev, scratch)
            order = (("empty", empty), ("full", held)) if run % 2 else (("full", held), ("empty", empty))
            for name, d in order:
                spent, works[name] = timed(lambda d=d, s=scratch: write_through(s, d, 0, data))
                times[name].append(spent)
        finally:
            shutil.rmtree(scratch.root, ignore_errors=True)
    e, f = statistics.median(times["empty"]), statistics.median(times["full"])
    print(
        f"overwrite {size >> 20} MiB random: empty device {e:.2f} s, device holding {full >> 20} MiB "
        f"{f:.2f} s, ratio {f / e:.2f} (target <= 2)"
    )
    print(f"  work counted: empty {works['empty']}, full {works['full']}")
    return f / e


def discard(root: Path, huge: int, runs: int) -> float:
    small = 1 << 30
    times: dict[str, list[float]] = {"1 GiB": [], "huge": []}
    works: dict[str, dict[str, int]] = {}
    data = compressible(4 << 20)
    for run in range(runs):
        scratch = Store(Path(tempfile.mkdtemp(prefix="run-", dir=root)))
        try:
            devs = {"1 GiB": new_device(scratch, small), "huge": new_device(scratch, huge)}
            for name, d in devs.items():
                size = small if name == "1 GiB" else huge
                write_through(scratch, d, 0, data)
                write_through(scratch, d, size - len(data), data)
            for name, d in sorted(devs.items(), reverse=bool(run % 2)):
                spent, works[name] = timed(lambda d=d, s=scratch: discard_all(s, d))
                times[name].append(spent)
        finally:
            shutil.rmtree(scratch.root, ignore_errors=True)
    s, h = statistics.median(times["1 GiB"]), statistics.median(times["huge"])
    print(
        f"whole-device discard: 1 GiB {s * 1000:.1f} ms, {human(huge)} {h * 1000:.1f} ms, "
        f"ratio {h / s:.2f} (target <= 2)"
    )
    print(f"  work counted: 1 GiB {works['1 GiB']}, huge {works['huge']}")
    return h / s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", default="1G", help="bytes held by the full device (default 1G)")
    ap.add_argument("--write", default="32M", help="random bytes written over it (default 32M)")
    ap.add_argument("--huge", default="16T", help="size of the huge device discarded whole (default 16T)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", choices=("overwrite", "discard"))
    ap.add_argument("--corpus", type=Path, help="fill the full device with this file, repeated")
    ap.add_argument("--keep", help="build the full device in DIR and keep it for later runs")
    args = ap.parse_args(argv)
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="zram-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        if args.only != "discard":
            overwrite(root, size_arg(args.full), size_arg(args.write), args.runs, args.corpus)
        if args.only != "overwrite":
            discard(root, size_arg(args.huge), args.runs)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
