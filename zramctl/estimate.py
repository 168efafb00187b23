"""What zram would save on some data, for every compressor and allocator, in one pass.

Why: the question of the 2013 thread that promoted zram and zsmalloc out of
staging (zbud's 2:1 against zsmalloc's 2.5-3:1, and what zsmalloc's
fragmentation costs) and the one people still ask (which
algorithm for my zram?) need the kernel's own counters for *every* configuration
on the same data.  A device gives them for one configuration per full write.
``estimate`` gives them all in one pass:

- each page is compressed **once per algorithm** (a bounded pool of threads, the
  compressors release the GIL), and its compressed length is all that any
  allocator is told: placement depends on sizes only (``allocator.py``);
- the driver's rules decide first, per profile, what the allocator is asked to
  store: a same-filled page costs nothing (6.18: one repeated 8-byte word,
  ``zram_drv.is_same_filled``; 3.11: only an all-zero page), a page that compresses
  too badly is stored raw as a PAGE_SIZE object (6.18: ``comp_len >=
  huge_class_size`` of that pool's class table, a *huge* page; 3.11: ``comp_len >
  max_zpage_size``, 3/4 page, counted in ``bad_compress``);
- every page is written once and nothing is freed, so zsmalloc's page count
  follows from how many objects each class holds: a class fills one zspage
  before it opens the next (``zs_malloc`` takes a partly used zspage first, and
  with no frees there is at most one), so ``pages = ceil(objects /
  objs_per_zspage) * pages_per_zspage`` per class (``ZsmallocCounts``).  The
  zsmalloc results are therefore computed at the end from one histogram of
  compressed lengths per algorithm; zbud and z3fold depend on the order of
  their objects and get them in page order (``ZbudAppendOnly``,
  ``Z3foldAppendOnly``).

Input: whole pages.  A block device only ever takes whole pages, and a device
written with data that ends inside a page stores that page whole, the rest of it
zeros (the read-merge-write of a partial page on a fresh device).  So a tail
shorter than a page is padded with zeros, counted as one page, and reported
(``Estimate.padded``): the counters are those of a device written with the same
bytes.  An empty input is an error (``EstimateError``): there is nothing to estimate.

Allocators (``parse_allocators``): ``zsmalloc`` (6.18, chain 8, the default),
``zsmalloc:4``, ``zsmalloc:16`` (``CONFIG_ZSMALLOC_CHAIN_SIZE``), ``zsmalloc:3.11``
(the 2013 promotion patch's), ``zbud``, ``z3fold``.  zbud and z3fold were never under zram; the
estimate gives them the 6.18 driver's rules with the default chain-8
``huge_class_size`` (3625): same-filled pages cost nothing, a page compressing to
3625 bytes or more is a PAGE_SIZE object.  z3fold stores that headless (a page of
its own); zbud refuses anything above 3968 bytes, so each such page is counted as
one whole page beside zbud's pool (it is in TOTAL and in huge_pages).  Every
non-huge object (at most 3624 bytes) fits both.  See ``docs/allocators.md``.

Algorithms (``parse_algorithms``): those of ``zcomp.AVAILABLE``, each with an
optional level (``zstd:1``; ``zstd:1..19`` for a range of levels).  They are the
devices' own backends (``zcomp.get_backend``), so each length is the kernel's
wherever a device's is (all but lz4hc, about 0.05% off; see the README).

What each ``Result`` holds is in ``mm_stat``'s terms; see ``Result``.
"""

from __future__ import annotations

import errno
import os
import re
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import BinaryIO

from .errors import CompressionError
from .kernel.allocator import AllocError, ClassStat, check_size
from .kernel.profiles import LEGACY, MODERN, PAGE_SIZE, Profile
from .kernel.z3fold import Z3foldAppendOnly
from .kernel.zbud import ZBUD_MAX_SIZE, ZbudAppendOnly
from .kernel.zcomp import AVAILABLE, Backend, check_algorithm, get_backend
from .kernel.zram_drv import is_same_filled
from .kernel.zsmalloc import ZS_MAX_ALLOC_SIZE, Pool

BATCH_PAGES = 256
"""Pages a worker compresses per task (1 MiB): large enough that handing over is cheap."""
ZERO_WORD = bytes(8)

Progress = Callable[[int, "int | None"], None]
"""progress(bytes done, total bytes or None): called after each batch is accounted."""


class EstimateError(Exception):
    """A user-caused failure, in words (one line; the CLI prefixes ``zramctl: ``)."""


# --------------------------------------------------------------------------
# What is estimated: algorithms and allocators


@dataclass(frozen=True)
class AlgorithmSpec:
    """One compressor at one level (None: the kernel's default level)."""

    name: str
    level: int | None = None

    @property
    def label(self) -> str:
        return self.name if self.level is None else f"{self.name}:{self.level}"

    def backend(self) -> Backend:
        return get_backend(self.name, self.level)


def parse_algorithms(text: str | None) -> list[AlgorithmSpec]:
    """``-a LIST``: comma-separated names, each with ``:LEVEL`` or ``:LOW..HIGH``; None: all available."""
    if text is None:
        return [AlgorithmSpec(a) for a in AVAILABLE]
    out: list[AlgorithmSpec] = []
    for item in text.split(","):
        item = item.strip()
        name, _, level = item.partition(":")
        try:
            check_algorithm(name)
        except CompressionError as exc:
            raise EstimateError(f"{item or 'an empty name'}: {exc}") from None
        if not level:
            levels: list[int | None] = [None]
        else:
            m = re.fullmatch(r"(-?\d{1,9})(?:\.\.(-?\d{1,9}))?", level)  # no level has more digits
            if not m:
                raise EstimateError(f"{item}: a level is a number or a range LOW..HIGH")
            lo = int(m[1])
            hi = int(m[2]) if m[2] is not None else lo
            if hi < lo or hi - lo > 64:
                raise EstimateError(f"{item}: a level range goes up, by at most 64 levels")
            levels = list(range(lo, hi + 1))
        for lvl in levels:
            spec = AlgorithmSpec(name, lvl)
            try:
                spec.backend()  # a level the backend refuses fails now, not midway
            except CompressionError as exc:
                raise EstimateError(f"{spec.label}: {exc}") from None
            if spec not in out:
                out.append(spec)
    return out


@dataclass(frozen=True)
class DriverRule:
    """What the zram driver decides before the allocator is asked (per profile)."""

    same_word: bool
    """A page of one repeated 8-byte word costs nothing (6.18); False: only an all-zero page (3.11)."""
    same_counts_stored: bool
    """A same-filled page counts in pages_stored, so in orig_data_size (6.18)."""
    huge_from: int
    """A page compressing to this many bytes or more is stored raw, as PAGE_SIZE bytes."""
    handle_size: int
    """Bytes of handle in front of every non-huge zsmalloc object (6.18: 8)."""

    def stored_size(self, comp_len: int) -> int:
        return PAGE_SIZE if comp_len >= self.huge_from else comp_len


def driver_rule(profile: Profile) -> DriverRule:
    """The rules of ``profile``'s driver with its own class table's huge_class_size."""
    if profile.huge_by_class:
        huge_from = Pool(profile).huge_class_size
    else:
        huge_from = profile.max_zpage_size + 1
    return DriverRule(profile.same_word, profile.same_counts_stored, huge_from, profile.handle_size)


@dataclass(frozen=True)
class AllocatorSpec:
    """One allocator as ``--allocator`` names it, and the driver rules it is given."""

    label: str
    """``zsmalloc``, ``zsmalloc:4``, ``zsmalloc:16``, ``zsmalloc:3.11``, ``zbud``, ``z3fold``."""
    kind: str
    """``zsmalloc``, ``zbud`` or ``z3fold``."""
    profile: Profile
    """zsmalloc's profile (chain size); for zbud and z3fold, the driver's (6.18, chain 8)."""


def _zsmalloc(label: str, profile: Profile) -> AllocatorSpec:
    return AllocatorSpec(label, "zsmalloc", profile)


ALLOCATORS: dict[str, AllocatorSpec] = {
    s.label: s
    for s in (
        _zsmalloc("zsmalloc:4", replace(MODERN, chain_size=4)),
        _zsmalloc("zsmalloc", MODERN),
        _zsmalloc("zsmalloc:16", replace(MODERN, chain_size=16)),
        _zsmalloc("zsmalloc:3.11", LEGACY),
        AllocatorSpec("zbud", "zbud", MODERN),
        AllocatorSpec("z3fold", "z3fold", MODERN),
    )
}
ALIASES = {"zsmalloc:8": "zsmalloc", "zsmalloc:6.18": "zsmalloc"}


def parse_allocators(text: str | None) -> list[AllocatorSpec]:
    """``--allocator LIST``: comma-separated labels of ALLOCATORS (or ``zsmalloc:8``); None: all of them."""
    if text is None:
        return list(ALLOCATORS.values())
    out: list[AllocatorSpec] = []
    for item in text.split(","):
        label = ALIASES.get(item.strip(), item.strip())
        if label not in ALLOCATORS:
            known = ", ".join(ALLOCATORS)
            raise EstimateError(f"unknown allocator '{item.strip()}' (known: {known}, zsmalloc:8)")
        if ALLOCATORS[label] not in out:
            out.append(ALLOCATORS[label])
    return out


# --------------------------------------------------------------------------
# Sizes-only zsmalloc


class ZsmallocCounts:
    """zsmalloc when nothing is ever freed: objects per class, nothing else (an ``Allocator``).

    The class table is ``zsmalloc.Pool``'s own (built from the profile, no frame
    allocated), so geometry, merging and huge_class_size are one fact in one place.
    ``malloc(size)`` is zram's ``zs_malloc(size)``: the handle header is added here.
    """

    name = "zsmalloc"
    max_size = ZS_MAX_ALLOC_SIZE

    def __init__(self, profile: Profile = MODERN) -> None:
        pool = Pool(profile)  # for its class table only
        self.profile = profile
        self.classes = pool.classes
        self.huge_class_size = pool.huge_class_size
        self._position = [
            pool.class_position(pool.class_for(size + profile.handle_size)) for size in range(PAGE_SIZE + 1)
        ]
        """zs_malloc size -> position of its class in ``classes``."""
        self.counts = [0] * len(self.classes)
        """Objects per class."""

    def clear(self) -> None:
        """Forget every object (the class table stays)."""
        self.counts = [0] * len(self.classes)

    def add(self, size: int, count: int = 1) -> None:
        """``count`` objects of ``size`` bytes."""
        check_size(size, self.max_size, self.name)
        self.counts[self._position[size]] += count

    def malloc(self, size: int) -> int:
        self.add(size)
        return self.objects - 1

    def free(self, handle: int) -> None:
        raise AllocError(errno.EOPNOTSUPP, f"{self.name}: this pool never frees (append-only)")

    @property
    def pages_allocated(self) -> int:
        return sum(
            -(-n // c.objs_per_zspage) * c.pages_per_zspage
            for n, c in zip(self.counts, self.classes, strict=True)
            if n
        )

    @property
    def objects(self) -> int:
        return sum(self.counts)

    def class_stats(self) -> list[ClassStat]:
        return [
            ClassStat(f"size {c.size}", n, -(-n // c.objs_per_zspage) * c.pages_per_zspage)
            for n, c in zip(self.counts, self.classes, strict=True)
            if n
        ]


# --------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Result:
    """One algorithm x allocator, in ``mm_stat``'s terms (bytes, as the kernel counts them).

    ``data`` is orig_data_size (pages_stored * PAGE_SIZE: 6.18 counts same-filled
    pages, 3.11 does not count its zero pages); ``compr`` is compr_data_size (each
    stored object's length, PAGE_SIZE for one stored raw; handles not included);
    ``total`` is mem_used_total (the allocator's pages * PAGE_SIZE; zbud: plus one
    page for each page it cannot hold).  ``huge_pages`` are pages stored raw: 6.18's
    huge_pages, 3.11's bad_compress.
    """

    algorithm: str
    allocator: str
    pages: int
    """Input pages (the padded tail included)."""
    data: int
    compr: int
    total: int
    same_pages: int
    huge_pages: int

    @property
    def uncompressed(self) -> int:
        """Bytes the input takes uncompressed: every page, same-filled or not."""
        return self.pages * PAGE_SIZE

    @property
    def data_compr_ratio(self) -> float | None:
        """DATA/COMPR (util-linux's COMP-RATIO); None when nothing was compressed."""
        return self.data / self.compr if self.compr else None

    @property
    def data_total_ratio(self) -> float | None:
        """DATA/TOTAL: what the memory really holds per byte used; None when TOTAL is 0."""
        return self.data / self.total if self.total else None

    @property
    def fragmentation(self) -> float | None:
        """Share of TOTAL that holds no compressed data: (TOTAL - COMPR) / TOTAL.

        It is everything the allocator spends beyond the objects: slot rounding
        (a class's size, zbud's and z3fold's 64-byte chunks), the tail of each
        zspage or page that fits no object, the last, partly filled zspage of each
        class, zsmalloc's 8-byte handles, z3fold's and zbud's page headers, and
        room left unused in a zbud or z3fold page.  None when TOTAL is 0.
        """
        return (self.total - self.compr) / self.total if self.total else None

    @property
    def saving(self) -> int:
        """Bytes of memory given back against keeping the input uncompressed (may be negative)."""
        return self.uncompressed - self.total

    @property
    def saving_share(self) -> float | None:
        """``saving`` as a share of the uncompressed size."""
        return self.saving / self.uncompressed if self.pages else None

    def as_dict(self) -> dict[str, object]:
        """The row for ``--json``: the counters in bytes and pages, and the derived figures."""
        return {
            "algorithm": self.algorithm,
            "allocator": self.allocator,
            "pages": self.pages,
            "data": self.data,
            "compr": self.compr,
            "total": self.total,
            "same_pages": self.same_pages,
            "huge_pages": self.huge_pages,
            "data_compr_ratio": self.data_compr_ratio,
            "data_total_ratio": self.data_total_ratio,
            "fragmentation": self.fragmentation,
            "saving": self.saving,
            "saving_share": self.saving_share,
        }


@dataclass(frozen=True)
class Estimate:
    """The whole answer: the input's size and one Result per algorithm x allocator."""

    input_bytes: int
    """Bytes read."""
    padded: int
    """Zero bytes added to complete the last page (0 when the input was whole pages)."""
    pages: int
    results: list[Result]

    def result(self, algorithm: str, allocator: str) -> Result:
        for r in self.results:
            if r.algorithm == algorithm and r.allocator == allocator:
                return r
        raise KeyError((algorithm, allocator))


# --------------------------------------------------------------------------
# The pass


SAME_NONE, SAME_ZERO, SAME_WORD = 0, 1, 2


@dataclass
class BatchResult:
    """What a worker found in one batch, in page order."""

    pages: int
    zero: int = 0
    """All-zero pages."""
    word: int = 0
    """Same-filled pages of a non-zero word (6.18 keeps them without allocation; 3.11 compresses them)."""
    lengths: list[list[int]] = field(default_factory=list)
    """Per algorithm: the compressed length of every page that is not same-filled, in page order."""
    word_lengths: list[list[int]] = field(default_factory=list)
    """Per algorithm: the compressed lengths of the non-zero same-filled pages (only when 3.11 is asked)."""


class _Compressors(threading.local):
    """One backend per algorithm per thread: a zstd context may not be shared between threads."""

    def __init__(self, specs: Sequence[AlgorithmSpec]) -> None:
        self.compress = [s.backend().compress for s in specs]


def _work(batch: bytes, comps: _Compressors, want_word: bool) -> BatchResult:
    """Classify and compress the pages of ``batch`` (runs on a worker thread)."""
    n = len(batch) // PAGE_SIZE
    compress = comps.compress
    res = BatchResult(n, lengths=[[] for _ in compress], word_lengths=[[] for _ in compress])
    plain: list[bytes] = []
    words: list[bytes] = []
    for i in range(n):
        page = batch[i * PAGE_SIZE : (i + 1) * PAGE_SIZE]
        if is_same_filled(page):
            if page[:8] == ZERO_WORD:
                res.zero += 1
            else:
                res.word += 1
                if want_word:
                    words.append(page)
        else:
            plain.append(page)
    for k, fn in enumerate(compress):
        res.lengths[k] = [len(fn(p)) for p in plain]
        if words:
            res.word_lengths[k] = [len(fn(p)) for p in words]
    return res


def rebatch(chunks: Iterable[bytes], batch_bytes: int) -> Iterator[bytes]:
    """Chunks of any size as batches of ``batch_bytes`` (the last one shorter, never empty).

    A large chunk is cut, never copied whole: memory stays one chunk and one batch.
    """
    buf = bytearray()
    for chunk in chunks:
        view = memoryview(chunk).cast("B")
        if buf:
            need = batch_bytes - len(buf)
            buf += view[:need]
            view = view[need:]
            if len(buf) < batch_bytes:
                continue
            yield bytes(buf)
            buf.clear()
        while len(view) >= batch_bytes:
            yield view[:batch_bytes].tobytes()
            view = view[batch_bytes:]
        buf += view
    if buf:
        yield bytes(buf)


@dataclass
class _Tally:
    """Everything one algorithm's pass keeps: histograms and the order-dependent models."""

    spec: AlgorithmSpec
    hist: Counter[int] = field(default_factory=Counter)
    """Compressed length -> pages, over pages that are not same-filled."""
    word_hist: Counter[int] = field(default_factory=Counter)
    """Compressed length -> pages, over non-zero same-filled pages (for 3.11)."""
    zbud: ZbudAppendOnly | None = None
    zbud_whole: int = 0
    """Pages zbud cannot hold (huge), counted as a whole page each."""
    z3fold: Z3foldAppendOnly | None = None

    def feed(self, lengths: list[int], word_lengths: list[int], huge_from: int) -> None:
        self.hist.update(lengths)
        if word_lengths:
            self.word_hist.update(word_lengths)
        zb, z3 = self.zbud, self.z3fold
        if zb is None and z3 is None:
            return
        for n in lengths:
            size = PAGE_SIZE if n >= huge_from else n
            if z3 is not None:
                z3.malloc(size)  # above MAX_HEADED_SIZE: a headless page
            if zb is not None:
                if size > ZBUD_MAX_SIZE:  # zbud_alloc() would say ENOSPC: a page of its own
                    self.zbud_whole += 1
                else:
                    zb.malloc(size)


def default_threads() -> int:
    """The CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def estimate(
    chunks: Iterable[bytes],
    algorithms: Sequence[AlgorithmSpec] | None = None,
    allocators: Sequence[AllocatorSpec] | None = None,
    *,
    threads: int | None = None,
    total: int | None = None,
    progress: Progress | None = None,
    batch_pages: int = BATCH_PAGES,
) -> Estimate:
    """One pass over ``chunks`` (bytes of any sizes, concatenated): a Result per algorithm x allocator.

    Pages are compressed on ``threads`` worker threads (default: the CPUs we may
    use), at most ``2 * threads + 1`` batches of ``batch_pages`` pages in memory at
    once, and accounted strictly in page order, so the results never depend on
    the thread count.  ``total`` (bytes, if known) is passed to ``progress``.
    Raises EstimateError for an empty input.
    """
    algs = list(algorithms) if algorithms is not None else parse_algorithms(None)
    allocs = list(allocators) if allocators is not None else parse_allocators(None)
    if not algs or not allocs:
        raise EstimateError("nothing to estimate: no algorithm or no allocator")
    threads = threads or default_threads()
    want_word = any(not a.profile.same_word for a in allocs)
    side = driver_rule(MODERN)  # the rules zbud and z3fold are given
    tallies = [
        _Tally(
            s,
            zbud=ZbudAppendOnly() if any(a.kind == "zbud" for a in allocs) else None,
            z3fold=Z3foldAppendOnly() if any(a.kind == "z3fold" for a in allocs) else None,
        )
        for s in algs
    ]
    comps = _Compressors(algs)
    pages = zero = word = 0
    read = padded = 0
    batch_bytes = batch_pages * PAGE_SIZE

    def account(res: BatchResult) -> None:
        nonlocal pages, zero, word
        pages += res.pages
        zero += res.zero
        word += res.word
        for k, t in enumerate(tallies):
            t.feed(res.lengths[k], res.word_lengths[k], side.huge_from)
        if progress is not None:
            progress(min(pages * PAGE_SIZE, read), total)

    inflight: deque[Future[BatchResult]] = deque()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="estimate") as pool:
        try:
            for batch in rebatch(chunks, batch_bytes):
                read += len(batch)
                if len(batch) % PAGE_SIZE:
                    padded = PAGE_SIZE - len(batch) % PAGE_SIZE
                    batch += bytes(padded)
                inflight.append(pool.submit(_work, batch, comps, want_word))
                while len(inflight) > 2 * threads:
                    account(inflight.popleft().result())
            while inflight:
                account(inflight.popleft().result())
        finally:
            for f in inflight:
                f.cancel()
    if not pages:
        raise EstimateError("empty input: no pages to estimate")
    rules = {a.label: driver_rule(a.profile) for a in allocs}
    pools = {a.label: ZsmallocCounts(a.profile) for a in allocs if a.kind == "zsmalloc"}
    results = [
        _result(t, a, rules[a.label], pools.get(a.label), pages, zero, word) for t in tallies for a in allocs
    ]
    return Estimate(read, padded, pages, results)


def _result(
    t: _Tally,
    alloc: AllocatorSpec,
    rule: DriverRule,
    zs: ZsmallocCounts | None,
    pages: int,
    zero: int,
    word: int,
) -> Result:
    """Apply the allocator's driver rules to one algorithm's tallies (``zs``: a zsmalloc to fill)."""
    hist = t.hist if rule.same_word else t.hist + t.word_hist
    same = zero + word if rule.same_word else zero
    stored = pages if rule.same_counts_stored else pages - same
    compr = huge = 0
    for n, count in hist.items():
        size = rule.stored_size(n)
        compr += size * count
        if size == PAGE_SIZE:
            huge += count
    if alloc.kind == "zsmalloc":
        assert zs is not None
        zs.clear()
        for n, count in hist.items():
            zs.add(rule.stored_size(n), count)
        used = zs.pages_allocated
    elif alloc.kind == "zbud":
        assert t.zbud is not None
        used = t.zbud.pages_allocated + t.zbud_whole
    else:
        assert t.z3fold is not None
        used = t.z3fold.pages_allocated
    return Result(
        algorithm=t.spec.label,
        allocator=alloc.label,
        pages=pages,
        data=stored * PAGE_SIZE,
        compr=compr,
        total=used * PAGE_SIZE,
        same_pages=same,
        huge_pages=huge,
    )


# --------------------------------------------------------------------------
# Page sources


def file_chunks(f: BinaryIO, chunk: int = 1 << 20) -> Iterator[bytes]:
    """A binary file or pipe, read ``chunk`` bytes at a time until end of file."""
    while True:
        data = f.read(chunk)
        if not data:
            return
        yield data


def file_size(f: BinaryIO) -> int | None:
    """The bytes left to read in a regular file (for progress); None for a pipe or terminal."""
    import stat

    try:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            return None
        return max(0, st.st_size - f.tell())
    except (OSError, ValueError, AttributeError):
        return None


__all__ = [
    "ALLOCATORS",
    "AlgorithmSpec",
    "AllocatorSpec",
    "Estimate",
    "EstimateError",
    "Result",
    "ZsmallocCounts",
    "driver_rule",
    "estimate",
    "file_chunks",
    "file_size",
    "parse_algorithms",
    "parse_allocators",
]
