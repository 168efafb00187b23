#!/usr/bin/env python3
"""Image costs: O(work) commands on a full device, sizes, metadata per page and per zspage.

What it measures (MB = 10^6 bytes, KiB/MiB/GiB = powers of 1024):

- empty device: apparent size and disk usage (st_blocks) of an initialised,
  empty 1 TiB device;
- the corpus (``tools/make-corpus memory 64M``, or ``--corpus FILE``) written to a device:
  metadata bytes per stored page (page-table blocks, pointer blocks included)
  and per zspage (zspage-record blocks), disk usage beside mem_used_total,
  write throughput through the image (DeviceHandle.write_from, as the CLI: commits every 64 MiB);
- the O(work) requirement: one whole command (a fresh process: open, 4 KiB
  write or read, commit, exit) on a device holding ``--full`` (1 GiB) beside the
  same on an empty device, median of ``--runs`` runs each, and the ratio.
  ``--via cli`` times ``zramctl write/read`` (default when installed),
  ``--via store`` a small Python script using Store directly.

usage: .venv/bin/python benchmarks/image_ops.py [--corpus FILE] [--full 1G] [--runs 15]
       [--via cli|store] [--keep DIR]
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from zramctl.image.check import image_usage  # noqa: E402
from zramctl.kernel import sysfs  # noqa: E402
from zramctl.store import Store  # noqa: E402

PAGE = 4096
STORE_SCRIPT = """
import sys
from zramctl.store import Store
root, op, dev, off = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
s = Store(root)
with s.open(dev, write=op == "write") as h:
    if op == "write":
        h.write_from(sys.stdin.buffer, off)
    else:
        h.read_to(sys.stdout.buffer, off, 4096)
"""


def size_arg(text: str) -> int:
    units = {"K": 10, "M": 20, "G": 30, "T": 40}
    return int(text[:-1]) << units[text[-1].upper()] if text[-1].upper() in units else int(text)


def corpus(path: str | None) -> bytes:
    """``path``'s bytes, or 64 MiB of a Python process's memory made now by tools/make-corpus."""
    if path:
        return Path(path).read_bytes()
    with tempfile.TemporaryDirectory(prefix="zram-bench-corpus-") as tmp:
        out = Path(tmp) / "memory.bin"
        tool = ROOT / "tools" / "make-corpus"
        subprocess.run([sys.executable, str(tool), "memory", "64M", str(out)], check=True)
        return out.read_bytes()


def new_device(store: Store, size: int) -> int:
    dev = store.hot_add()
    with store.open(dev, write=True) as h:
        sysfs.store(h.zram, "disksize", str(size))
    return dev


class Repeated(io.RawIOBase):
    """``data`` over and over, ``total`` bytes in all: a stream for DeviceHandle.write_from."""

    def __init__(self, data: bytes, total: int) -> None:
        self.data = memoryview(data)
        self.total = total
        self.pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:  # type: ignore[override]
        at = self.pos % len(self.data)
        n = min(len(buf), len(self.data) - at, self.total - self.pos)
        buf[:n] = self.data[at : at + n]
        self.pos += n
        return n


def fill(store: Store, dev: int, data: bytes, total: int) -> float:
    """Write ``data`` repeatedly up to ``total`` bytes through the store's write_from; seconds taken."""
    start = time.perf_counter()
    with store.open(dev, write=True) as h:
        h.write_from(Repeated(data, total), 0, length=total)
    return time.perf_counter() - start


def figures_empty(root: Path) -> None:
    store = Store(root / "tib")
    dev = new_device(store, 1 << 40)
    st = os.stat(store.image_path(dev))
    print(f"empty 1 TiB device: apparent {st.st_size} bytes, on disk {st.st_blocks * 512} bytes")


def figures_corpus(root: Path, data: bytes) -> None:
    store = Store(root / "corpus")
    dev = new_device(store, len(data))
    secs = fill(store, dev, data, len(data))
    with store.open(dev, write=False) as h:
        use = image_usage(h.image)
        mem_used = h.zram.mem_used_pages() * PAGE
        orig = h.zram.stats.pages_stored * PAGE
    st = os.stat(store.image_path(dev))
    print(f"corpus {len(data) >> 20} MiB: written through the image at {len(data) / secs / 1e6:.1f} MB/s")
    print(
        f"  {use.pages} pages stored in {use.zspages} zspages ({use.frames} frames); "
        f"orig {orig} bytes, mem_used_total {mem_used} bytes"
    )
    print(
        f"  metadata: page table {use.table_blocks} blocks = {use.table_blocks * PAGE / use.pages:.2f} "
        f"bytes/page; zspage records {use.record_blocks} blocks = "
        f"{use.record_blocks * PAGE / use.zspages:.2f} bytes/zspage; header+classes {use.fixed_blocks} blocks"
    )
    disk = st.st_blocks * 512
    print(f"  image: apparent {st.st_size} bytes, on disk {disk} bytes (mem_used_total {mem_used})")


def command(via: str, root: Path, op: str, dev: int, offset: int, page: bytes) -> float:
    if via == "cli":
        cmd = [str(Path(sys.executable).parent / "zramctl"), op, f"zram{dev}", "--offset", str(offset)]
        if op == "read":
            cmd += ["--length", str(PAGE)]
        env = dict(os.environ, ZRAMCTL_ROOT=str(root))
    else:
        cmd = [sys.executable, "-c", STORE_SCRIPT, str(root), op, str(dev), str(offset)]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    proc = subprocess.run(cmd, input=page if op == "write" else b"", capture_output=True, env=env)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.decode()}")
    if op == "read" and len(proc.stdout) != PAGE:
        raise SystemExit(f"read returned {len(proc.stdout)} bytes")
    return took


def o_work(root: Path, data: bytes, full_size: int, runs: int, via: str) -> None:
    store = Store(root / "owork")
    empty = new_device(store, full_size)
    full = new_device(store, full_size)
    secs = fill(store, full, data, full_size)
    with store.open(full, write=False) as h:
        held = h.zram.stats.pages_stored * PAGE
    print(f"full device: {held >> 20} MiB stored in {secs:.1f} s; timing {runs} runs per case via {via}")
    rnd = random.Random(1)
    page = (rnd.randbytes(1500) + bytes(PAGE))[:PAGE]
    results: dict[tuple[str, str], float] = {}
    for op in ("write", "read"):
        # Empty and full alternate run by run, so a change in machine load hits both alike.
        times: dict[str, list[float]] = {"empty": [], "full": []}
        for run in range(runs):
            order = (("empty", empty), ("full", full)) if run % 2 else (("full", full), ("empty", empty))
            for name, dev in order:
                offset = rnd.randrange(full_size // PAGE) * PAGE
                times[name].append(command(via, store.root, op, dev, offset, page))
        for name, spent in times.items():
            results[op, name] = statistics.median(spent)
    for op in ("write", "read"):
        e, f = results[op, "empty"], results[op, "full"]
        print(f"4 KiB {op}: empty {e * 1000:.1f} ms, full {f * 1000:.1f} ms, ratio {f / e:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus")
    ap.add_argument("--full", default="1G", help="bytes held by the 'full' device (default 1G)")
    ap.add_argument("--runs", type=int, default=15)
    have_cli = (Path(sys.executable).parent / "zramctl").exists()
    ap.add_argument("--via", choices=("cli", "store"), default="cli" if have_cli else "store")
    ap.add_argument("--keep", help="build the images in DIR and keep them")
    args = ap.parse_args()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="zram-bench-", dir=ROOT.parent))
    root.mkdir(parents=True, exist_ok=True)
    try:
        data = corpus(args.corpus)
        figures_empty(root)
        figures_corpus(root, data)
        o_work(root, data, size_arg(args.full), args.runs, args.via)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
