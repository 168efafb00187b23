"""What an allocator model offers to a zram-like caller and to ``estimate``.

For its accounting, zram hands its allocator one compressed page at a time and
asks three things of it: store an object of this many bytes (give me a handle),
free that handle, and how many pages are you holding (``mem_used_total`` is that
count times PAGE_SIZE); reading, writing and compacting objects are the device's
business, not an estimate's.  The kernel's own interfaces were exactly this small: zpool's
``zpool_malloc`` / ``zpool_free`` / ``zpool_get_total_pages`` in front of zbud,
z3fold and zsmalloc (``docs/allocators.md``).  ``Allocator`` is that interface,
plus an object count and an optional per-class breakdown for reports.

Sizes only: none of these allocators looks at an object's bytes to decide where
it goes, so a model that is told sizes reaches the same page counts as one that
is given data.  ``estimate`` never needs the bytes back, so the zbud and z3fold
models keep none.  zsmalloc's model (``zramctl/zsmalloc.py``, ``Pool``) keeps real
bytes in frames because devices read them back; it maps onto this interface as:

=========================  ============================================
``Allocator``              ``zsmalloc.Pool``
=========================  ============================================
``malloc(size)``           ``zs_malloc(size, owner)`` (owner: any int)
``free(handle)``           ``zs_free(handle)``
``pages_allocated``        ``pages_allocated`` / ``zs_get_total_pages()``
``objects``                sum of ``SizeClass.objs_inuse`` over ``classes``
``class_stats()``          ``classes``: ``size``, ``objs_inuse``,
                           ``objs_allocated``, ``pages_per_zspage``,
                           ``objs_per_zspage``
errors                     ``ZsError`` (with ``errno``)
=========================  ============================================

``ZsmallocAllocator`` below is that adapter.  It costs what ``Pool`` costs: 4 KiB
of process memory per page held, since its frames hold the link words.

The implementations: ``zbud.ZbudPool`` and ``z3fold.Z3foldPool`` (malloc and
free, about 70 bytes of records per object), ``zbud.ZbudAppendOnly`` and
``z3fold.Z3foldAppendOnly`` (a replay that never frees, in next to no memory; their
``free`` raises EOPNOTSUPP), and ``ZsmallocAllocator``.

Errors a caller can cause (a size the allocator cannot store, a handle it did
not hand out) raise ``AllocError`` carrying the kernel's errno: EINVAL for size
0, ENOSPC for a size that does not fit (zpool's convention, which zswap counted
as ``reject_compress_poor``).  The caller decides what a refused size costs.
"""

from __future__ import annotations

import errno
import itertools
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..errors import ZsError
from .profiles import MODERN, Profile
from .zsmalloc import ZS_MAX_ALLOC_SIZE, Pool


class AllocError(Exception):
    """A request the allocator refuses, with the kernel's errno (EINVAL, ENOSPC)."""

    def __init__(self, errno_code: int, message: str) -> None:
        super().__init__(message)
        self.errno = errno_code


@dataclass(frozen=True)
class ClassStat:
    """One row of an allocator's breakdown: a size class, or a kind of page."""

    name: str
    """What the row counts: ``"size 512"`` for a zsmalloc class, ``"2 buddies"`` for zbud."""
    objects: int
    """Live objects in the row."""
    pages: int
    """Pages the row holds (these sum to ``pages_allocated``)."""


@runtime_checkable
class Allocator(Protocol):
    """A compressed-object allocator as zram (or zswap, through zpool) sees it."""

    name: str
    """The allocator's name as a user spells it: ``zsmalloc``, ``zbud``, ``z3fold``."""
    max_size: int
    """The largest size ``malloc`` accepts, in bytes."""

    def malloc(self, size: int) -> int:
        """Store an object of ``size`` bytes; return its handle (distinct from every live one).

        Raises AllocError(EINVAL) for size 0 and AllocError(ENOSPC) above ``max_size``.
        """
        ...

    def free(self, handle: int) -> None:
        """Free the object; raises AllocError(EINVAL) for a handle that is not live."""
        ...

    @property
    def pages_allocated(self) -> int:
        """Pages the allocator holds now (the kernel's pool size in pages)."""
        ...

    @property
    def objects(self) -> int:
        """Live objects."""
        ...

    def class_stats(self) -> list[ClassStat]:
        """A breakdown of objects and pages (empty rows left out); may be empty."""
        ...


def check_size(size: int, max_size: int, who: str) -> None:
    """The common refusals: size 0 (EINVAL) and larger than ``max_size`` (ENOSPC)."""
    if size <= 0:
        raise AllocError(errno.EINVAL, f"{who}: invalid size {size}")
    if size > max_size:
        raise AllocError(errno.ENOSPC, f"{who}: {size} bytes is more than {max_size}")


class ZsmallocAllocator:
    """``zsmalloc.Pool`` behind the ``Allocator`` interface (no compaction, no owners).

    ``profile`` chooses the zsmalloc: MODERN (6.18, chain 8), LEGACY (3.11), or a
    ``dataclasses.replace`` of MODERN with another ``chain_size`` (4, 16).
    """

    name = "zsmalloc"

    def __init__(self, profile: Profile = MODERN) -> None:
        self.profile = profile
        self.pool = Pool(profile)
        self.max_size = ZS_MAX_ALLOC_SIZE
        self._owners = itertools.count()
        self._live: set[int] = set()
        """Handles handed out and not freed: zs_free trusts its caller, the adapter does not."""

    def malloc(self, size: int) -> int:
        check_size(size, self.max_size, self.name)
        try:
            handle = self.pool.zs_malloc(size, next(self._owners))
        except ZsError as e:  # pragma: no cover - sizes are checked above
            raise AllocError(e.errno, str(e)) from None
        self._live.add(handle)
        return handle

    def free(self, handle: int) -> None:
        if handle not in self._live:
            raise AllocError(errno.EINVAL, f"{self.name}: no object with handle {handle:#x}")
        self._live.remove(handle)
        self.pool.zs_free(handle)

    @property
    def pages_allocated(self) -> int:
        return self.pool.zs_get_total_pages()

    @property
    def objects(self) -> int:
        return len(self._live)

    def class_stats(self) -> list[ClassStat]:
        return [
            ClassStat(
                f"size {c.size}",
                c.objs_inuse,
                c.objs_allocated // c.objs_per_zspage * c.pages_per_zspage,
            )
            for c in self.pool.classes
            if c.objs_allocated
        ]
