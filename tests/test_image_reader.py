"""An independent reader of zram-image(5), written from the manual alone.

It uses struct, zlib and the compression libraries, and none of zramctl's image
code: if it reads the same bytes and counters as zramctl does, the manual says
enough to write a reader.  (Offsets and bit positions below are the manual's.)
"""

from __future__ import annotations

import random
import struct
import zlib
from pathlib import Path

import pytest

from zramctl.kernel import sysfs
from zramctl.store import Store

BLOCK = 4096


class Corrupt(Exception):
    pass


class Reader:
    def __init__(self, path: Path) -> None:
        self.data = path.read_bytes()
        head = self.block(0, 1)
        self.version = struct.unpack_from("<I", head, 8)[0]
        if head[:8] != b"ZRAMIMG\0" or self.version not in (1, 2):
            raise Corrupt("not a version 1 or 2 image")
        # Page-table entries: version 2's are 16 bytes (255 a leaf), version 1's 11 (372 a leaf).
        self.entry_size = 16 if self.version == 2 else 11
        self.per_leaf = 4092 // self.entry_size
        self.compat = head[32:48].rstrip(b"\0").decode()
        self.disksize = struct.unpack_from("<Q", head, 48)[0]
        self.algorithm = head[56:184].rstrip(b"\0").decode()
        self.pages_stored, self.compr_data_size = struct.unpack_from("<qq", head, 216)
        self.table_depth, self.zsmap_depth = head[384], head[385]
        self.nclasses, self.ngroups, self.nlists, self.recsize = struct.unpack_from("<HBBH", head, 386)
        self.table_roots = struct.unpack_from("<256I", head, 1024)
        self.zsmap_roots = struct.unpack_from("<256I", head, 2048)
        self.classes = []
        per = 4092 // self.recsize if self.nclasses else 1
        for i in range(self.nclasses):
            blk = self.block(1 + i // per, 2)
            index, size, pages, huge, objs = struct.unpack_from("<HHBBH", blk, (i % per) * self.recsize)
            self.classes.append((size, bool(huge)))

    def raw(self, n: int) -> bytes:
        return self.data[n * BLOCK : (n + 1) * BLOCK].ljust(BLOCK, b"\0")

    def block(self, n: int, kind: int) -> bytes:
        b = self.raw(n)
        if zlib.crc32(struct.pack("<QI", n, kind) + b[:4092]) != struct.unpack_from("<I", b, 4092)[0]:
            raise Corrupt(f"block {n} fails its checksum")
        return b

    def leaf(self, roots: tuple[int, ...], depth: int, n: int, kind: int) -> bytes | None:
        top = n // 1023**depth
        if top >= 256:
            return None
        blk = roots[top]
        for h in range(depth, 0, -1):
            if blk == 0:
                return None
            node = self.block(blk, 3)
            blk = struct.unpack_from("<I", node, 4 * (n // 1023 ** (h - 1) % 1023))[0]
        return self.block(blk, kind) if blk else None

    def entry(self, p: int) -> int:
        leaf = self.leaf(self.table_roots, self.table_depth, p // self.per_leaf, 4)
        if leaf is None:
            return 0
        at = p % self.per_leaf * self.entry_size
        return int.from_bytes(leaf[at : at + self.entry_size], "little")

    def record(self, key: int) -> int:
        leaf = self.leaf(self.zsmap_roots, self.zsmap_depth, key // 341, 5)
        if leaf is None:
            return 0
        i = key % 341
        return int.from_bytes(leaf[i * 12 : i * 12 + 12], "little")

    def page(self, p: int) -> bytes:
        e = self.entry(p)
        kind = e & 3
        if kind == 0:
            return bytes(BLOCK)
        if self.version == 1:
            if kind == 1:
                return (e >> 24).to_bytes(8, "little") * 512
            size, idx, key, crc = e >> 2 & 0x1FFF, e >> 15 & 0x7FF, e >> 26 & (2**30 - 1), e >> 56
        else:
            if kind == 1:
                return (e >> 20 & (2**64 - 1)).to_bytes(8, "little") * 512
            if kind == 3:
                raise Corrupt(f"page {p} is in the backing file")
            size, idx, key = e >> 7 & 0x1FFF, e >> 20 & 0x7FF, e >> 31 & (2**29 - 1)
            crc = e >> 60 & (2**32 - 1)
        rec = self.record(key)
        if rec & 3 != 1:
            raise Corrupt(f"page {p}: no zspage at key {key}")
        slot, huge = self.classes[rec >> 2 & 0xFF]
        off = idx * slot + (8 if self.compat == "6.18" and not huge else 0)
        zspage = b"".join(self.raw(8 * key + k) for k in range(off // BLOCK, (off + size - 1) // BLOCK + 1))
        start = off % BLOCK
        obj = zspage[start : start + size]
        if zlib.crc32(obj) != crc:
            raise Corrupt(f"page {p}: object fails its CRC")
        if size == BLOCK:
            return obj
        return decompress(self.algorithm, obj)


def decompress(algorithm: str, data: bytes) -> bytes:
    if algorithm == "lzo":
        import lzo

        return lzo.decompress(data, False, BLOCK)
    if algorithm in ("lz4", "lz4hc"):
        import lz4.block

        return lz4.block.decompress(data, uncompressed_size=BLOCK)
    if algorithm == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().decompress(data, max_output_size=BLOCK)
    if algorithm == "deflate":
        return zlib.decompress(data, -11, BLOCK)
    raise AssertionError(algorithm)


@pytest.mark.parametrize(
    ("profile", "algorithm", "size"),
    [("6.18", "lzo", "2M"), ("3.11", "lzo", "2M"), ("6.18", "zstd", "1T"), ("6.18", "deflate", "3M")],
)
def test_independent_reader_agrees(tmp_path: Path, profile: str, algorithm: str, size: str) -> None:
    store = Store(tmp_path)
    store.hot_add()
    rnd = random.Random(profile + algorithm)
    with store.open(0, write=True) as h:
        z = h.zram
        sysfs.store(z, "compat", profile)
        if profile != "3.11":
            sysfs.store(z, "comp_algorithm", algorithm)
        sysfs.store(z, "disksize", size)
        pages = z.config.disksize // BLOCK
        spots = sorted(rnd.sample(range(min(pages, 2**24)), 300)) + [pages - 1, pages // 2]
        for i, p in enumerate(spots):
            kind = i % 4
            if kind == 0:
                data = rnd.randbytes(BLOCK)
            elif kind == 1:
                data = rnd.randbytes(8) * 512
            else:
                data = (rnd.randbytes(rnd.randrange(1, 3000)) + bytes(BLOCK))[:BLOCK]
            z.write(p * BLOCK, data)
        for p in spots[::7]:
            z.discard(p * BLOCK, BLOCK)
        if profile == "6.18":
            z.compact()
    reader = Reader(store.image_path(0))
    with store.open(0, write=False) as h:
        z = h.zram
        assert (reader.pages_stored, reader.compr_data_size) == (
            z.stats.pages_stored,
            z.stats.compr_data_size,
        )
        assert reader.disksize == z.config.disksize
        for p in spots + [1, 5, pages - 2]:
            assert reader.page(p) == z.read(p * BLOCK, BLOCK), f"page {p}"



@pytest.mark.parametrize("dev", [1])
def test_independent_reader_reads_version_1(tmp_path: Path, dev: int) -> None:
    """The version 1 fixture (made by the version 1 code, tests/data) reads as the manual says.
    (Fixture 0 is lzo-rle, which no Python library decodes.)"""
    from test_image_pp import fixture_image, v1_pages

    reader = Reader(fixture_image(tmp_path, dev))
    assert reader.version == 1
    for p, want in v1_pages().items():
        assert reader.page(p) == want, f"page {p}"
