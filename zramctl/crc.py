"""CRC-32, the one checksum of the project (zlib's polynomial and values), computed fast.

Every stored object, written-back page and metadata block carries a CRC-32 that is checked
before its bytes are trusted, so a page read or written costs one CRC of a page or less.
zlib's ``crc32`` does about 3 GB/s here, a fifth of a page's whole budget at the kernel's
speed; python-isal's (Intel ISA-L, folding with PCLMULQDQ) gives the same values at 25 GB/s.
Where isal is not installed, zlib's gives the same numbers, slower.
"""

from __future__ import annotations

try:
    from isal.isal_zlib import crc32
except ImportError:  # pragma: no cover - isal is a dependency; its absence only costs speed
    from zlib import crc32

__all__ = ["crc32"]
