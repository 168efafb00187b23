"""Compression backends, named and ordered as the kernel's zcomp ``backends[]``.

Each backend is a pure function of the page (no shared state), so a write can
later compress pages on several workers while allocation stays in order.

Which bytes each gives, against the kernel's (the lengths decide every counter):

* ``lzo-rle``, ``lzo``, ``lz4``: the compiled module ``zramctl.kernel._kcomp``, written here
  to emit exactly the kernel's bytes (``kcomp_ref.py`` is its readable reference).
  Its bounds-checked decoders read them back (lz4 and lz4hc blocks too), the same ones the
  compiled read path calls (``Backend.decoder``).
  Images written by the earlier python-lzo / lz4.block compressors still read: any
  valid stream decodes.
* ``zstd``: zstandard >= 0.24 (zstd 1.5.7, as kernels >= 6.15) at the kernel's
  default level 3 with the content size written: the kernel's bytes.
* ``deflate``: zlib, raw, level 6, a 2^11 window and memLevel 9 (backend_deflate):
  the kernel's bytes with zlib itself (a Python linked to zlib-ng would differ).
* ``lz4hc``: the lz4 package at level 9: about 0.05% smaller than the kernel's
  LZ4 1.7.3 HC on real data, not exact.
* ``842``: refused; there is no user-space implementation.

There is no fallback: if the compiled module is missing, choosing one of its
algorithms fails and says how to build it.

Parameters (``algorithm_params``) are checked when the device is set up, as the kernel's
backends do it (a refused one is EINVAL on disksize):

* ``level``: lz4 takes any level as its acceleration (below 1 is 1); lz4hc clamps to its
  range; zstd clamps, as ``zstd_get_params`` does; deflate refuses anything outside -1..9,
  as ``zlib_deflateInit2`` does.
* ``dict`` (zstd, lz4, lz4hc): zstd loads it as the kernel's ``zstd_create_cdict_byreference``
  does (a zstd dictionary or raw content, cparams for a 4 KiB page and the dictionary's size);
  lz4 and lz4hc use the lz4 package's block API with ``dict=`` (``LZ4_loadDict`` then
  ``*_continue``, as backend_lz4/backend_lz4hc).  The kernel-exact compiled lz4 has no
  dictionary path, so sizes with a dictionary are close to the kernel's, not exact (the
  lz4 package is a newer LZ4).  Other algorithms ignore it, as the kernel's do.
* ``deflate_winbits``: passed as is to zlib as its window bits, both ways, as backend_deflate
  passes ``deflate.winbits`` to ``zlib_deflateInit2`` and ``zlib_inflateInit2``: negative is
  a raw stream, positive a zlib-wrapped one; the default is -11 (DEFLATE_DEF_WINBITS, a raw
  2 KiB window).  The kernel's zlib takes window sizes 9..15 only; others are EINVAL.  With
  a positive value the 2-byte zlib header's level bits may differ from the kernel's (its
  zlib computes them another way); the lengths are the same.

With no parameter given, every backend is exactly what it was: the parameters only add paths.
"""

from __future__ import annotations

import errno
import importlib
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Protocol

from ..errors import CompressionError
from .profiles import PAGE_SIZE

# Every algorithm the kernel's zcomp knows, in backends[] order.
KERNEL_ORDER = ("lzo-rle", "lzo", "lz4", "lz4hc", "zstd", "deflate", "842")
UNAVAILABLE = {
    "842": "842 has no user-space implementation",
}

# zstd clamps a level into [ZSTD_minCLevel(), ZSTD_maxCLevel()] (ZSTD_getCParams).
ZSTD_MIN_LEVEL, ZSTD_MAX_LEVEL, ZSTD_DEFAULT_LEVEL = -(1 << 17), 22, 3
# zlib: Z_DEFAULT_COMPRESSION (-1, meaning 6) and 0..9; deflateInit2 refuses the rest.
DEFLATE_LEVELS = range(-1, 10)
DEFLATE_DEFAULT_LEVEL, DEFLATE_WINBITS, DEFLATE_MEMLEVEL = 6, -11, 9
# The kernel's zlib_deflateInit2 takes |windowBits| 9..15 (its inflate 8..15; deflate decides).
DEFLATE_WINBITS_RANGE = range(9, 16)
# LZ4HC 1.7.3: below 1 means the default 9; the lz4 package's HC stops at 12.
LZ4HC_DEFAULT_LEVEL, LZ4HC_MAX_LEVEL = 9, 12
# LZ4 acceleration: below 1 is 1; any value from 4096 up skips a whole page at the
# second probe, so clamping keeps the bytes while the C code's counter cannot overflow.
LZ4_MAX_ACCELERATION = 65537


@dataclass(frozen=True)
class Backend:
    """One compressor: ``compress(page) -> bytes`` and ``decompress(data) -> page``."""

    name: str
    compress: Callable[[bytes], bytes]
    decompress: Callable[[bytes], bytes]
    compress_pages: Callable[[memoryview], list[bytes]] | None = None
    """Every PAGE_SIZE piece of a buffer compressed on its own, the same bytes as ``compress``
    page by page, in one compiled call that releases the GIL once (lzo, lzo-rle, lz4); None:
    call ``compress`` per page."""
    decoder: int | None = None
    """The ``_kcomp`` decoder that reads what ``compress`` makes (DECODER_LZO, DECODER_LZ4), for
    compiled code to call with no Python in between; None: only ``decompress`` does."""
    stream_job: Callable[[memoryview, int, int, int], StreamJob] | None = None
    """``stream_job(data, threads, batch, slots)``: every PAGE_SIZE piece of a buffer compressed
    by ``threads`` native threads (at most STREAM_JOB_MAX_THREADS) that never take the GIL
    (``_kcomp.StreamJob``: ``take()`` the next batch's results in page order, ``close()``);
    None: compression streams are Python threads calling ``compress_pages`` or ``compress``."""


class StreamJob(Protocol):
    """``_kcomp.StreamJob``, as zram's write path uses it."""

    @property
    def threads(self) -> int: ...

    def take(self) -> list[bytes]: ...

    def close(self) -> None: ...


DECODER_LZO = 0
"""_kcomp's checked LZO1X decoder (versions 0 and 1: lzo and lzo-rle), as its _DECODERS capsule
numbers it (compress_pages' kinds)."""
DECODER_LZ4 = 2
"""_kcomp's checked LZ4 block decoder: lz4 and lz4hc without a dictionary make plain LZ4 blocks."""


def _kcomp():  # a C module: no stub to name its type
    """The compiled module, or a clear error: never a silent, inexact stand-in."""
    try:
        return importlib.import_module("._kcomp", __package__)
    except ImportError as exc:
        raise ImportError(
            "zramctl.kernel._kcomp (the kernel's lzo, lzo-rle and lz4) is not built: "
            "reinstall zramctl with a C compiler (pip install .)"
        ) from exc


def _stream_job(k: ModuleType, kind: int, accel: int = 1) -> Callable[[memoryview, int, int, int], StreamJob]:
    """``Backend.stream_job`` for _kcomp's compressor ``kind`` (compress_pages' kinds)."""

    def stream_job(data: memoryview, threads: int, per_batch: int, slots: int) -> StreamJob:
        threads = min(threads, k.STREAM_JOB_MAX_THREADS)  # the most one job takes
        return k.StreamJob(kind, data, PAGE_SIZE, threads, per_batch, slots, accel)  # type: ignore[no-any-return]

    return stream_job


def _lzo(level: int | None, rle: bool) -> Backend:
    k = _kcomp()
    compress = k.lzorle1x_1_compress if rle else k.lzo1x_1_compress
    decode = k.lzo_decompress

    def decompress(data: bytes) -> bytes:
        return decode(data, PAGE_SIZE)

    kind = 1 if rle else 0
    batch = k.compress_pages

    def compress_pages(data: memoryview) -> list[bytes]:
        return batch(kind, data, PAGE_SIZE)

    name = "lzo-rle" if rle else "lzo"
    return Backend(name, compress, decompress, compress_pages, DECODER_LZO, _stream_job(k, kind))


def _lz4(level: int | None, hc: bool) -> Backend:
    if hc:  # only lz4hc needs the lz4 package (0.7 ms of a command's start-up)
        import lz4.block

        lvl = LZ4HC_DEFAULT_LEVEL if level is None or level < 1 else min(level, LZ4HC_MAX_LEVEL)

        def compress(page: bytes) -> bytes:
            return lz4.block.compress(page, mode="high_compression", compression=lvl, store_size=False)

    k = _kcomp()
    if not hc:
        # backend_lz4 passes the level as LZ4_compress_fast's acceleration.
        accel = 1 if level is None else max(1, min(level, LZ4_MAX_ACCELERATION))
        kernel_lz4 = k.lz4_compress
        if accel == 1:
            compress = kernel_lz4
        else:

            def compress(page: bytes) -> bytes:
                return kernel_lz4(page, accel)

    # Our checked decoder, not lz4.block's: the compiled read path calls it too (DECODER_LZ4),
    # so a damaged object reads the same either way.  On every valid block they agree; ours is
    # stricter on a few malformed ones (tests/test_compressors.py).
    decode = k.lz4_decompress

    def decompress(data: bytes) -> bytes:
        return decode(data, PAGE_SIZE)

    if hc:
        return Backend("lz4hc", compress, decompress, decoder=DECODER_LZ4)
    batch = k.compress_pages

    def compress_pages(data: memoryview) -> list[bytes]:
        return batch(DECODER_LZ4, data, PAGE_SIZE, accel)

    stream_job = _stream_job(k, DECODER_LZ4, accel)
    return Backend("lz4", compress, decompress, compress_pages, DECODER_LZ4, stream_job)


def _lz4_dict(level: int | None, hc: bool, dict_data: bytes) -> Backend:
    """lz4/lz4hc with a dictionary: the lz4 package's block API (close to the kernel's, not exact)."""
    import lz4.block

    if hc:
        lvl = LZ4HC_DEFAULT_LEVEL if level is None or level < 1 else min(level, LZ4HC_MAX_LEVEL)

        def compress(page: bytes) -> bytes:
            return lz4.block.compress(
                page, mode="high_compression", compression=lvl, store_size=False, dict=dict_data
            )

    else:
        accel = 1 if level is None else max(1, min(level, LZ4_MAX_ACCELERATION))

        def compress(page: bytes) -> bytes:
            return lz4.block.compress(page, acceleration=accel, store_size=False, dict=dict_data)

    def decompress(data: bytes) -> bytes:
        return lz4.block.decompress(data, PAGE_SIZE, dict=dict_data)

    return Backend("lz4hc" if hc else "lz4", compress, decompress)


def _zstd(level: int | None, dict_data: bytes | None = None) -> Backend:
    import zstandard

    lvl = ZSTD_DEFAULT_LEVEL if level is None else max(ZSTD_MIN_LEVEL, min(level, ZSTD_MAX_LEVEL))
    zdict = zstandard.ZstdCompressionDict(dict_data) if dict_data else None
    # A zstd context is not thread-safe: each compression stream (thread) has its own, as
    # each of the kernel's per-CPU streams has.
    local = threading.local()

    def compress(page: bytes) -> bytes:
        cctx = getattr(local, "cctx", None)
        if cctx is None:
            cctx = local.cctx = zstandard.ZstdCompressor(level=lvl, write_content_size=True, dict_data=zdict)
        return cctx.compress(page)

    def decompress(data: bytes) -> bytes:
        dctx = getattr(local, "dctx", None)
        if dctx is None:
            dctx = local.dctx = zstandard.ZstdDecompressor(dict_data=zdict)
        return dctx.decompress(data, max_output_size=PAGE_SIZE)

    return Backend("zstd", compress, decompress)


def _deflate(level: int | None, winbits: int | None = None) -> Backend:
    # backend_deflate: Z_DEFAULT_COMPRESSION (= 6), raw stream, 2^11 window, memLevel 9.
    lvl = DEFLATE_DEFAULT_LEVEL if level is None or level == -1 else level
    if lvl not in DEFLATE_LEVELS:
        raise CompressionError(errno.EINVAL, f"deflate level {level} is not in -1..9")
    wbits = DEFLATE_WINBITS if winbits is None else winbits
    if abs(wbits) not in DEFLATE_WINBITS_RANGE:
        raise CompressionError(errno.EINVAL, f"deflate winbits {winbits} is not in 9..15 or -15..-9")

    def compress(page: bytes) -> bytes:
        c = zlib.compressobj(lvl, zlib.DEFLATED, wbits, DEFLATE_MEMLEVEL)
        return c.compress(page) + c.flush()

    def decompress(data: bytes) -> bytes:
        return zlib.decompress(data, wbits, PAGE_SIZE)

    return Backend("deflate", compress, decompress)


_FACTORIES: dict[str, Callable[[int | None], Backend]] = {
    "lzo-rle": lambda level: _lzo(level, True),
    "lzo": lambda level: _lzo(level, False),
    "lz4": lambda level: _lz4(level, False),
    "lz4hc": lambda level: _lz4(level, True),
    "zstd": _zstd,
    "deflate": _deflate,
}
"""Each algorithm's backend for a level: what every device without other parameters uses."""
_DICT_FACTORIES: dict[str, Callable[[int | None, bytes], Backend]] = {
    "lz4": lambda level, dict_data: _lz4_dict(level, False, dict_data),
    "lz4hc": lambda level, dict_data: _lz4_dict(level, True, dict_data),
    "zstd": _zstd,
}
"""The algorithms that take a dictionary (the others ignore one, as the kernel's do)."""

# What this build offers, in the kernel's order.
AVAILABLE = tuple(name for name in KERNEL_ORDER if name in _FACTORIES)


def check_algorithm(name: str) -> None:
    """EINVAL unless ``name`` is an algorithm we can run."""
    if name in UNAVAILABLE:
        raise CompressionError(errno.EINVAL, UNAVAILABLE[name])
    if name not in _FACTORIES:
        raise CompressionError(errno.EINVAL, f"unknown compression algorithm {name!r}")


def get_backend(
    name: str,
    level: int | None = None,
    *,
    dict_data: bytes | None = None,
    winbits: int | None = None,
) -> Backend:
    """A ready backend for ``name`` with the ``algorithm_params`` it takes (module docstring).

    EINVAL (CompressionError) for an unknown or unavailable algorithm, or a parameter it refuses.
    """
    check_algorithm(name)
    if dict_data and name in _DICT_FACTORIES:
        return _DICT_FACTORIES[name](level, dict_data)
    if winbits is not None and name == "deflate":
        return _deflate(level, winbits)
    return _FACTORIES[name](level)


def safe_decompress(backend: Backend, data: bytes) -> bytes:
    """Decompress one page or raise CompressionError(EIO): never wrong or short bytes."""
    try:
        page = backend.decompress(data)
    except Exception as exc:  # every library has its own exception type
        raise CompressionError(errno.EIO, f"{backend.name}: decompression failed: {exc}") from None
    if len(page) != PAGE_SIZE:
        raise CompressionError(errno.EIO, f"{backend.name}: decompressed {len(page)} bytes, not a page")
    return page
