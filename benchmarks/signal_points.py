#!/usr/bin/env python3
"""What stopping only between pieces costs a write: ``zramctl write`` with the signal check
every PIECE bytes (256 KiB, what it does) beside one check per 4 MiB chunk (one device call
per chunk, as before signals were deferred).

Both run in process through ``cli.main`` on a fresh device under a temporary root, on the
same file (a mix of random, text-like, zero and half-random 64 KiB blocks).  Prints each
time (best of ``--repeat``, the two interleaved so that a busy machine slows both alike)
and the ratio pieces/chunks; 1.00 means no cost.

usage: .venv/bin/python benchmarks/signal_points.py [--size 64M] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from zramctl import store  # noqa: E402
from zramctl.cli import main as cli  # noqa: E402


def mixed(size: int, seed: int = 1) -> bytes:
    rng = random.Random(seed)
    block = 64 << 10
    parts = []
    for i in range(-(-size // block)):
        kind = i % 4
        if kind == 0:
            parts.append(rng.randbytes(block))
        elif kind == 1:
            parts.append(b"zram page alloc " * (block // 16))
        elif kind == 2:
            parts.append(bytes(block))
        else:
            parts.append(rng.randbytes(block // 2) + bytes(block // 2))
    return b"".join(parts)[:size]


def timed_write(src: Path, size: int, piece: int, tmp: str) -> float:
    store.PIECE = piece
    root = tempfile.mkdtemp(dir=tmp)
    os.environ["ZRAMCTL_ROOT"] = root
    with open(os.devnull, "w") as null:
        saved, sys.stdout = sys.stdout, null
        try:
            assert cli.main(["-f", "-s", str(2 * size)]) == 0
        finally:
            sys.stdout = saved
    start = time.perf_counter()
    assert cli.main(["write", "zram0", str(src)]) == 0
    return time.perf_counter() - start


def run(size: int, repeat: int) -> dict[int, float]:
    """Best time for each piece size."""
    pieces = (store.CHUNK, store.PIECE)
    best = {p: float("inf") for p in pieces}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "data"
        src.write_bytes(mixed(size))
        for _ in range(repeat):
            for p in pieces:
                best[p] = min(best[p], timed_write(src, size, p, tmp))
    store.PIECE = pieces[1]
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="64M", help="bytes written (K/M suffix)")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    text = args.size.upper()
    shift = {"K": 10, "M": 20}.get(text[-1:], 0)
    size = int(text[:-1] if shift else text) << shift
    chunk, piece = store.CHUNK, store.PIECE
    best = run(size, args.repeat)
    print(f"write {size} bytes, best of {args.repeat}:")
    print(f"  one check per {chunk >> 10} KiB chunk: {best[chunk]:.3f} s")
    print(f"  one check per {piece >> 10} KiB piece: {best[piece]:.3f} s")
    print(f"  ratio pieces/chunks: {best[piece] / best[chunk]:.2f}")


if __name__ == "__main__":
    main()
