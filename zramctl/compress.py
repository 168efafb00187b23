"""Compression backends, named and ordered as the kernel's zcomp ``backends[]``.

Each backend is a pure function of the page (no shared state), so a write can
later compress pages on several workers while allocation stays in order.
Libraries, not hand-written code: python-lzo (LZO1X-1, the kernel's ``lzo``),
lz4 (block format, no size prefix), zstandard, and zlib for raw deflate.
The kernel also names ``lzo-rle`` and ``842``; there is no Python
implementation of either that matches the kernel's bytes, so selecting them
fails with EINVAL and says why.
"""

from __future__ import annotations

import errno
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from .profiles import PAGE_SIZE

# Every algorithm the kernel's zcomp knows, in backends[] order.
KERNEL_ORDER = ("lzo-rle", "lzo", "lz4", "lz4hc", "zstd", "deflate", "842")
UNAVAILABLE = {
    "lzo-rle": "lzo-rle has no user-space implementation; lzo is the same without run-length encoding",
    "842": "842 has no user-space implementation",
}


class CompressionError(Exception):
    """A backend failed to compress or decompress; ``errno`` says how the kernel would report it."""

    def __init__(self, errno_code: int, message: str) -> None:
        super().__init__(message)
        self.errno = errno_code


@dataclass(frozen=True)
class Backend:
    """One compressor: ``compress(page) -> bytes`` and ``decompress(data) -> page``."""

    name: str
    compress: Callable[[bytes], bytes]
    decompress: Callable[[bytes], bytes]


def _lzo(level: int | None) -> Backend:
    import lzo

    def compress(page: bytes) -> bytes:
        return lzo.compress(page, 1, False)

    def decompress(data: bytes) -> bytes:
        return lzo.decompress(data, False, PAGE_SIZE)

    return Backend("lzo", compress, decompress)


def _lz4(level: int | None, hc: bool) -> Backend:
    import lz4.block

    if hc:
        lvl = 9 if level is None else level  # LZ4HC_DEFAULT_CLEVEL

        def compress(page: bytes) -> bytes:
            return lz4.block.compress(page, mode="high_compression", compression=lvl, store_size=False)

    else:
        accel = 1 if level is None else max(1, level)  # the kernel passes level as acceleration

        def compress(page: bytes) -> bytes:
            return lz4.block.compress(page, mode="fast", acceleration=accel, store_size=False)

    def decompress(data: bytes) -> bytes:
        return lz4.block.decompress(data, PAGE_SIZE)  # uncompressed_size, positional: faster

    return Backend("lz4hc" if hc else "lz4", compress, decompress)


def _zstd(level: int | None) -> Backend:
    import zstandard

    cctx = zstandard.ZstdCompressor(level=3 if level is None else level, write_content_size=True)
    dctx = zstandard.ZstdDecompressor()

    def compress(page: bytes) -> bytes:
        return cctx.compress(page)

    def decompress(data: bytes) -> bytes:
        return dctx.decompress(data, max_output_size=PAGE_SIZE)

    return Backend("zstd", compress, decompress)


def _deflate(level: int | None) -> Backend:
    # backend_deflate: Z_DEFAULT_COMPRESSION, raw stream, 2^11 window, memLevel 9.
    lvl = -1 if level is None else level

    def compress(page: bytes) -> bytes:
        c = zlib.compressobj(lvl, zlib.DEFLATED, -11, 9)
        return c.compress(page) + c.flush()

    def decompress(data: bytes) -> bytes:
        return zlib.decompress(data, -11, PAGE_SIZE)

    return Backend("deflate", compress, decompress)


_FACTORIES: dict[str, Callable[[int | None], Backend]] = {
    "lzo": _lzo,
    "lz4": lambda level: _lz4(level, False),
    "lz4hc": lambda level: _lz4(level, True),
    "zstd": _zstd,
    "deflate": _deflate,
}

# What this build offers, in the kernel's order.
AVAILABLE = tuple(name for name in KERNEL_ORDER if name in _FACTORIES)


def check_algorithm(name: str) -> None:
    """EINVAL unless ``name`` is an algorithm we can run."""
    if name in UNAVAILABLE:
        raise CompressionError(errno.EINVAL, UNAVAILABLE[name])
    if name not in _FACTORIES:
        raise CompressionError(errno.EINVAL, f"unknown compression algorithm {name!r}")


def get_backend(name: str, level: int | None = None) -> Backend:
    """A ready backend for ``name`` (EINVAL for unknown or unavailable ones)."""
    check_algorithm(name)
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
