#!/usr/bin/env python3
"""The compiled kernel compressors beside python-lzo and lz4, per 4 KiB page; and how exact each is.

Speed (always): for each corpus, every 4 KiB page is compressed (then decompressed) one call
at a time, as a device does it, and the MB/s (10^6 bytes of pages per CPU second, best of
``--repeat`` interleaved rounds) printed side by side:

- compress: ``_kcomp`` lzo-rle, lzo and lz4 beside python-lzo's ``lzo1x_1`` (``lzo.compress(p, 1,
  False)``) and ``lz4.block.compress``;
- decompress: ``_kcomp.lzo_decompress`` (on lzo-rle and lzo streams) beside python-lzo's
  ``lzo.decompress`` (on its own streams), and ``_kcomp.lz4_decompress`` (what both read paths
  use for lz4) beside ``lz4.block.decompress`` (liblz4), on our lz4 streams.

The target: each compiled compressor at least as fast as python-lzo's ``lzo1x_1``, and the
decoder at least as fast as python-lzo's decompress; the ratio columns say by how much.

Exactness (``--kernel``, where the machine's zram0 is usable): the kernel's object size for
every page (``tools/kernel-oracle p:0:FILE``) beside ours, before (python-lzo / lz4.block) and
now (``_kcomp``): the share of pages whose object is exactly the kernel's size, and the total
size error.  Same-filled pages are left out (no compressor sees them).

Corpora (``tools/make-corpus``): files and memory, ``--size`` each, and the python3.11
interpreter binary.  Not run by the tests.

usage: .venv/bin/python benchmarks/compressors.py [--size 16M] [--repeat 3] [--kernel]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import lz4.block  # noqa: E402
import lzo  # noqa: E402

from zramctl.kernel import _kcomp  # noqa: E402

PAGE = 4096
HUGE_CLASS_SIZE = 3625  # 6.18, chain 8: a compressed length from here up is stored raw


def pages_of(data: bytes) -> list[bytes]:
    data += bytes(-len(data) % PAGE)
    return [data[i : i + PAGE] for i in range(0, len(data), PAGE)]


def corpora(size: int, tmp: Path) -> dict[str, bytes]:
    from kernel import make_corpus

    out = {kind: make_corpus(kind, size, tmp / kind).read_bytes() for kind in ("files", "memory")}
    # The interpreter binary itself: the largest python3.11 found (a venv's may be a small launcher).
    found = [shutil.which("python3.11"), "/usr/bin/python3.11", os.path.realpath(sys.executable)]
    binary = max((f for f in found if f and os.path.isfile(f)), key=os.path.getsize)
    out["python3.11"] = Path(binary).read_bytes()
    return out


def rates(
    cases: dict[str, tuple[Callable[[bytes], object], list[bytes]]], nbytes: int, repeat: int
) -> dict[str, float]:
    """MB/s of calling each function on each of its inputs in turn: best of ``repeat`` rounds,
    the functions taking turns within a round, so that a busy machine slows them alike."""
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(repeat):
        for name, (fn, inputs) in cases.items():
            t = time.process_time()
            for x in inputs:
                fn(x)
            best[name] = min(best[name], time.process_time() - t)
    return {name: nbytes / max(t, 1e-9) / 1e6 for name, t in best.items()}


def speed(name: str, data: bytes, repeat: int) -> None:
    pages = [p for p in pages_of(data) if p != bytes(PAGE)]
    n = len(pages) * PAGE
    comp = {
        "lzo-rle (_kcomp)": (_kcomp.lzorle1x_1_compress, pages),
        "lzo (_kcomp)": (_kcomp.lzo1x_1_compress, pages),
        "lz4 (_kcomp)": (_kcomp.lz4_compress, pages),
        "python-lzo lzo1x_1": (lambda p: lzo.compress(p, 1, False), pages),
        "lz4.block": (lambda p: lz4.block.compress(p, store_size=False), pages),
    }
    crates = rates(comp, n, repeat)
    base = crates["python-lzo lzo1x_1"]
    print(f"\n{name}: {len(pages)} pages (all-zero pages left out)")
    print(f"  {'compress':<22} {'MB/s':>8} {'x python-lzo':>13}")
    for k, v in crates.items():
        print(f"  {k:<22} {v:8.0f} {v / base:13.2f}")

    dec = _kcomp.lzo_decompress
    lz4_streams = [_kcomp.lz4_compress(p) for p in pages]
    decs = {
        "lzo-rle (_kcomp)": (lambda s: dec(s, PAGE), [_kcomp.lzorle1x_1_compress(p) for p in pages]),
        "lzo (_kcomp)": (lambda s: dec(s, PAGE), [_kcomp.lzo1x_1_compress(p) for p in pages]),
        "python-lzo decompress": (
            lambda s: lzo.decompress(s, False, PAGE),
            [lzo.compress(p, 1, False) for p in pages],
        ),
        "lz4 (_kcomp)": (lambda s: _kcomp.lz4_decompress(s, PAGE), lz4_streams),
        "lz4.block (our lz4)": (lambda s: lz4.block.decompress(s, PAGE), lz4_streams),
    }
    drates = rates(decs, n, repeat)
    base = drates["python-lzo decompress"]
    print(f"  {'decompress':<22} {'MB/s':>8} {'x python-lzo':>13}")
    for k, v in drates.items():
        print(f"  {k:<22} {v:8.0f} {v / base:13.2f}")


def object_size(n: int) -> int:
    return PAGE if n >= HUGE_CLASS_SIZE else n


def exactness(name: str, data: bytes) -> None:
    from kernel import KernelUnavailable, kernel_page_sizes

    before = {
        "lzo-rle": lambda p: lzo.compress(p, 1, False),  # the old stand-in: lzo for lzo-rle
        "lzo": lambda p: lzo.compress(p, 1, False),
        "lz4": lambda p: lz4.block.compress(p, store_size=False),
    }
    after = {
        "lzo-rle": _kcomp.lzorle1x_1_compress,
        "lzo": _kcomp.lzo1x_1_compress,
        "lz4": _kcomp.lz4_compress,
    }
    pages = pages_of(data)
    print(f"\n{name}: exact pages % / total size error % against the kernel ({len(pages)} pages)")
    print(f"  {'algorithm':<9} {'before':>18} {'now':>18}   kernel huge pages: before / now / kernel")
    for alg in ("lzo-rle", "lzo", "lz4"):
        try:
            kernel = kernel_page_sizes(data, alg)
        except KernelUnavailable as exc:
            print(f"  {alg:<9} skipped: {exc}")
            continue
        cols = []
        huge = []
        for fn in (before[alg], after[alg]):
            exact = total = ktotal = count = nhuge = 0
            for page, k in zip(pages, kernel, strict=True):
                if k.kind == "same":
                    continue
                ours = object_size(len(fn(page)))
                count += 1
                exact += ours == k.size
                total += ours
                ktotal += k.size
                nhuge += ours == PAGE
            cols.append(f"{100 * exact / count:6.1f} / {100 * (total - ktotal) / ktotal:+7.3f}")
            huge.append(nhuge)
        khuge = sum(1 for k in kernel if k.kind == "huge")
        print(f"  {alg:<9} {cols[0]:>18} {cols[1]:>18}   {huge[0]} / {huge[1]} / {khuge}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="16M", help="bytes of each make-corpus kind (default 16M)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--kernel", action="store_true", help="also measure exactness against zram0")
    a = ap.parse_args()
    unit = a.size[-1:].upper()
    size = int(a.size[:-1]) << {"K": 10, "M": 20, "G": 30}[unit] if unit in "KMG" else int(a.size)
    with tempfile.TemporaryDirectory() as tmp:
        data = corpora(size, Path(tmp))
    for name, d in data.items():
        speed(name, d, a.repeat)
    if a.kernel:
        for name, d in data.items():
            exactness(name, d)
    return 0


if __name__ == "__main__":
    sys.exit(main())
