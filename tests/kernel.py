"""The machine's kernel zram0 as a test oracle, and our engine driven the same way.

Two ways to use the real device:

- ``run_oracle(ops, algorithm)`` runs the project's ``tools/kernel-oracle`` (which
  takes the lock, sets zram0 up and always resets it) and returns one ``Step``
  per op: the kernel's ``mm_stat`` and ``io_stat`` after it.  ``run_engine``
  returns the same steps from our ``Zram`` for the same ops, so a test compares
  two lists.
- ``kernel_zram0(algorithm, disksize)`` is a context manager for tests that
  drive /dev/zram0 themselves (a util-linux ``zramctl`` parity test): it takes
  the exclusive flock the oracle uses, checks the device is idle, sets it up
  (or not, with ``setup=False``), yields its sysfs directory, and ALWAYS resets
  it on the way out.  Do not call ``run_oracle`` inside it: the oracle waits
  for the same lock.

Both raise ``KernelUnavailable`` where there is no usable zram0 (not root, no
device, device in use); tests turn that into a skip (``require_kernel()`` or
``pytest.skip``).  Every op is page aligned: the oracle writes with O_DIRECT
and blkdiscard refuses ranges that are not whole 4 KiB blocks.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from zramctl.kernel.sysfs import IO_STAT_FIELDS, MM_STAT_FIELDS

PAGE = 4096
ROOT = Path(__file__).resolve().parent.parent
ORACLE = ROOT / "tools" / "kernel-oracle"
MAKE_CORPUS = ROOT / "tools" / "make-corpus"
LOCK = "/tmp/kernel-oracle.lock"
SYS = Path("/sys/block/zram0")
DEV = Path("/dev/zram0")
DEFAULT_DISKSIZE = 64 << 20

MM_FIELDS = MM_STAT_FIELDS
IO_FIELDS = IO_STAT_FIELDS


class KernelUnavailable(Exception):
    """There is no kernel zram0 we may use here (the oracle's exit 2)."""


# --------------------------------------------------------------------------
# Ops and steps


@dataclass(frozen=True)
class Write:
    """Write ``data`` at byte ``offset`` (both page aligned; data is padded with zeros to a page)."""

    offset: int
    data: bytes

    def __post_init__(self) -> None:
        if self.offset % PAGE:
            raise ValueError(f"write offset {self.offset} is not page aligned")

    @property
    def label(self) -> str:
        return f"w:{self.offset}:{len(self.data)}"


@dataclass(frozen=True)
class Discard:
    """Discard ``length`` bytes at ``offset`` (both page aligned)."""

    offset: int
    length: int

    def __post_init__(self) -> None:
        if self.offset % PAGE or self.length % PAGE:
            raise ValueError(f"discard {self.offset}+{self.length} is not whole pages")

    @property
    def label(self) -> str:
        return f"d:{self.offset}:{self.length}"


@dataclass(frozen=True)
class Compact:
    """Write ``1`` to ``compact``."""

    @property
    def label(self) -> str:
        return "c"


Op = Write | Discard | Compact


@dataclass(frozen=True)
class Step:
    """The counters after one op: ``mm_stat`` (9 fields) and ``io_stat`` (4 fields) as numbers."""

    op: str
    mm_stat: tuple[int, ...]
    io_stat: tuple[int, ...]

    @property
    def mm(self) -> dict[str, int]:
        return dict(zip(MM_FIELDS, self.mm_stat, strict=True))

    @property
    def io(self) -> dict[str, int]:
        return dict(zip(IO_FIELDS, self.io_stat, strict=True))

    def differences(self, other: Step) -> list[str]:
        """``field: ours != theirs`` for every field that differs (empty when equal)."""
        out = [f"mm_stat.{k}: {v} != {other.mm[k]}" for k, v in self.mm.items() if v != other.mm[k]]
        out += [f"io_stat.{k}: {v} != {other.io[k]}" for k, v in self.io.items() if v != other.io[k]]
        return out


def first_difference(ours: Sequence[Step], kernel: Sequence[Step]) -> str | None:
    """A readable account of the first step where the two runs differ, or None."""
    if len(ours) != len(kernel):
        return f"{len(ours)} engine steps but {len(kernel)} kernel steps"
    for n, (a, b) in enumerate(zip(ours, kernel, strict=True)):
        diff = a.differences(b)
        if diff:
            return f"step {n} ({a.op}): engine != kernel: " + "; ".join(diff)
    return None


def parse_counters(mm_text: str, io_text: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """mm_stat and io_stat file texts as tuples of numbers."""
    return tuple(int(x) for x in mm_text.split()), tuple(int(x) for x in io_text.split())


# --------------------------------------------------------------------------
# The kernel


def kernel_available() -> bool:
    """Whether this machine has a kernel zram0 we may drive (the device, and root to write its attributes).

    It may still be busy: ``run_oracle`` and ``kernel_zram0`` raise
    KernelUnavailable then.
    """
    return DEV.exists() and (SYS / "reset").exists() and os.access(SYS / "reset", os.W_OK)


def require_kernel() -> None:
    """pytest.skip unless kernel_available()."""
    import pytest

    if not kernel_available():
        pytest.skip("no writable kernel zram0 on this machine")


def run_oracle(
    ops: Sequence[Op],
    algorithm: str = "lzo",
    disksize: int = DEFAULT_DISKSIZE,
    timeout: float = 600,
) -> list[Step]:
    """Run ``ops`` on the kernel's zram0 in one oracle run; one Step per op.

    Page contents go to temporary files (one per distinct content).  Raises
    KernelUnavailable when the oracle exits 2 (no device, or zram0 in use),
    RuntimeError for any other failure.  The oracle resets zram0 on exit.
    """
    with tempfile.TemporaryDirectory(prefix="kernel-oracle-") as tmp:
        files: dict[bytes, str] = {}
        args = []
        for op in ops:
            if isinstance(op, Write):
                key = hashlib.blake2b(op.data, digest_size=16).digest()
                path = files.get(key)
                if path is None:
                    path = files[key] = os.path.join(tmp, f"{len(files)}.bin")
                    with open(path, "wb") as f:
                        f.write(op.data)
                args.append(f"w:{op.offset}:{path}")
            elif isinstance(op, Discard):
                args.append(f"d:{op.offset}:{op.length}")
            else:
                args.append("c")
        proc = subprocess.run(
            [sys.executable, str(ORACLE), "-a", algorithm, "-s", str(disksize), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    if proc.returncode == 2:
        raise KernelUnavailable(proc.stderr.strip() or "kernel-oracle exited 2")
    if proc.returncode != 0:
        raise RuntimeError(f"kernel-oracle failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    lines = proc.stdout.splitlines()
    if len(lines) != len(ops):
        raise RuntimeError(f"kernel-oracle printed {len(lines)} lines for {len(ops)} ops")
    steps = []
    for op, line in zip(ops, lines, strict=True):
        _, mm, io = line.split("\t")
        steps.append(Step(op.label, *parse_counters(mm, io)))
    return steps


@dataclass(frozen=True)
class PageSize:
    """What the kernel stored for one page: ``size`` bytes (4096 when huge, 0 when same-filled)."""

    size: int
    kind: str  # "obj", "huge" or "same"


def kernel_page_sizes(data: bytes, algorithm: str = "lzo", timeout: float = 600) -> list[PageSize]:
    """The kernel's object size for each page of ``data`` (padded to pages), from one oracle ``p`` op.

    Each page goes to its own offset of a fresh device, so each size is that
    page's alone.  Raises KernelUnavailable where there is no usable zram0 or
    the kernel lacks ``algorithm``, RuntimeError for any other failure.
    """
    pages = -(-len(data) // PAGE)
    with tempfile.NamedTemporaryFile(prefix="kernel-oracle-", suffix=".bin") as f:
        f.write(data)
        f.flush()
        disksize = max(DEFAULT_DISKSIZE, pages * PAGE)
        proc = subprocess.run(
            [sys.executable, str(ORACLE), "-a", algorithm, "-s", str(disksize), f"p:0:{f.name}"],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    if proc.returncode == 2:
        raise KernelUnavailable(proc.stderr.strip() or "kernel-oracle exited 2")
    if proc.returncode != 0:
        raise RuntimeError(f"kernel-oracle failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    out = []
    for line in proc.stdout.splitlines()[:-1]:  # the last line is the op's counters
        word, n, size, kind = line.split()
        if word != "page" or int(n) != len(out):
            raise RuntimeError(f"kernel-oracle: unexpected line {line!r}")
        out.append(PageSize(int(size), kind))
    if len(out) != pages:
        raise RuntimeError(f"kernel-oracle reported {len(out)} pages for {pages}")
    return out


def make_corpus(kind: str, size: int, path: Path | str) -> Path:
    """Write ``size`` bytes of real data of ``kind`` (files, binaries, text, memory, mixed) to ``path``."""
    proc = subprocess.run(
        [sys.executable, str(MAKE_CORPUS), kind, str(size), str(path)], capture_output=True, text=True
    )
    if proc.returncode:
        raise RuntimeError(f"make-corpus {kind} failed: {proc.stderr.strip()}")
    return Path(path)


@contextmanager
def kernel_lock() -> Iterator[None]:
    """Hold the exclusive lock that every user of zram0 (the oracle included) takes."""
    with open(LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _put(attr: str, value: str) -> None:
    with open(SYS / attr, "w") as f:
        f.write(value)


def kernel_reset() -> None:
    """``echo 1 > /sys/block/zram0/reset``."""
    _put("reset", "1")


@contextmanager
def kernel_zram0(
    algorithm: str | None = "lzo",
    disksize: int | None = DEFAULT_DISKSIZE,
    setup: bool = True,
) -> Iterator[Path]:
    """The kernel's zram0 for the duration of a ``with``: locked, set up, always reset.

    With ``setup=False`` the device is left at disksize 0 for the caller to set
    up (e.g. with util-linux zramctl); it is reset on exit all the same.
    Raises KernelUnavailable if the device is missing or in use.
    """
    if not kernel_available():
        raise KernelUnavailable("no writable kernel zram0 on this machine")
    with kernel_lock():
        if (SYS / "disksize").read_text().strip() != "0":
            raise KernelUnavailable("zram0 is in use (disksize != 0)")
        try:
            if setup:
                if algorithm is not None:
                    _put("comp_algorithm", algorithm)
                if disksize is not None:
                    _put("disksize", str(disksize))
            yield SYS
        finally:
            kernel_reset()


def read_kernel_counters(sysdir: Path = SYS) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """zram0's (mm_stat, io_stat) now, as numbers."""
    return parse_counters((sysdir / "mm_stat").read_text(), (sysdir / "io_stat").read_text())


# --------------------------------------------------------------------------
# Our engine, driven the same way


def engine_device(algorithm: str = "lzo", disksize: int = DEFAULT_DISKSIZE, compat: str = "6.18"):
    """A fresh in-memory Zram set up as the oracle sets zram0 up."""
    from zramctl.kernel.zram_drv import Zram, ZramConfig

    z = Zram(ZramConfig(compat=compat, comp_algorithm=algorithm))
    z.init(disksize)
    return z


def engine_counters(z) -> tuple[tuple[int, ...], tuple[int, ...]]:
    from zramctl.kernel import sysfs

    return parse_counters(sysfs.show(z, "mm_stat"), sysfs.show(z, "io_stat"))


def apply_op(z, op: Op) -> None:
    """Do one op on our engine as the oracle does it on the kernel (writes padded to pages)."""
    if isinstance(op, Write):
        z.write(op.offset, op.data + bytes(-len(op.data) % PAGE))
    elif isinstance(op, Discard):
        z.discard(op.offset, op.length)
    else:
        z.compact()


def run_engine(
    ops: Sequence[Op],
    algorithm: str = "lzo",
    disksize: int = DEFAULT_DISKSIZE,
    device=None,
) -> list[Step]:
    """``ops`` on our engine (a fresh device unless one is given); one Step per op."""
    z = device if device is not None else engine_device(algorithm, disksize)
    steps = []
    for op in ops:
        apply_op(z, op)
        steps.append(Step(op.label, *engine_counters(z)))
    return steps


# --------------------------------------------------------------------------
# Pages whose compressed size the kernel and our backends agree on

# The kernel's LZO/LZ4 and the Python libraries differ by about 1% on general
# data, but agree exactly on many page shapes.  Allocator behaviour can only be
# compared on pages whose object size is the same on both sides.


def candidate_page(rng) -> bytes:
    """One page of mixed compressibility: runs of random bytes (a share ``p``) and short repeats."""
    p = rng.random() ** 2
    seg = rng.choice([4, 8, 16, 32, 64, 128, 256, 512])
    out = bytearray()
    while len(out) < PAGE:
        n = rng.randint(max(1, seg // 2), seg * 2)
        if rng.random() < p:
            out += rng.randbytes(n)
        else:
            k = rng.choice([1, 2, 3, 4, 8, 16])
            out += (rng.randbytes(k) * (n // k + 1))[:n]
    return bytes(out[:PAGE])


def candidate_pages(count: int, seed: int) -> list[bytes]:
    """``count`` candidate pages (seeded), none of them same-filled."""
    import random

    from zramctl.kernel.zram_drv import is_same_filled

    rng = random.Random(seed)
    pages: list[bytes] = []
    while len(pages) < count:
        page = candidate_page(rng)
        if not is_same_filled(page):
            pages.append(page)
    return pages


def kernel_object_sizes(pages: Sequence[bytes], algorithm: str) -> list[int]:
    """The size the kernel stores for each page (4096 for a huge one), from one oracle run.

    Each page is written at its own offset; its size is the step's
    compr_data_size delta.
    """
    steps = run_oracle([Write(i * PAGE, p) for i, p in enumerate(pages)], algorithm)
    sizes, prev = [], 0
    for s in steps:
        cur = s.mm["compr_data_size"]
        sizes.append(cur - prev)
        prev = cur
    return sizes


def engine_object_size(page: bytes, backend, huge_class_size: int = 3625) -> int:
    """What our engine stores for a page: the compressed length, or 4096 when it is huge."""
    n = len(backend.compress(page))
    return PAGE if n >= huge_class_size else n


def agreeing_pages(pages: Sequence[bytes], algorithm: str) -> dict[int, list[bytes]]:
    """The pages whose kernel object size equals ours, by that size."""
    from zramctl.kernel.zcomp import get_backend

    backend = get_backend(algorithm)
    out: dict[int, list[bytes]] = {}
    for page, size in zip(pages, kernel_object_sizes(pages, algorithm), strict=True):
        if engine_object_size(page, backend) == size:
            out.setdefault(size, []).append(page)
    return out
