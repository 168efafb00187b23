"""The byte layout of zram-image(5): every structure, its encoder and its checked decoder.

One table per structure (name, struct code, description): the encoders, the
decoders, and the OFFSET/SIZE/DESCRIPTION tables of ``man/zram-image.5`` all
follow these (a test compares the manual's offsets with them).  Decoders never
trust the bytes: a checksum or range failure raises ZramError(EUCLEAN) saying
which block is bad and how.  See ``image.py`` for the overview.

The per-entry work of whole leaves (page-table and zspage-record leaves, both ways) runs in
``_codec.c``, which is handed ENTRY_LAYOUT and RECORD_LAYOUT at import and holds no layout of
its own; ``encode_entry``, ``decode_entry``, ``encode_record`` and ``decode_records_reference``
here stay the definition, and any entry the compiled codec does not take as plainly valid is
left to them (tests/test_codec.py holds the two equal).
"""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass, field, fields

from ..crc import crc32
from ..errors import ZramError
from ..kernel.profiles import PAGE_SIZE, PROFILES
from ..kernel.zram_drv import (
    ZRAM_COMP_PRIORITY_MASK,
    ZRAM_COMP_PRIORITY_SHIFT,
    ZRAM_HUGE,
    ZRAM_IDLE,
    ZRAM_INCOMPRESSIBLE,
    ZRAM_MAX_COMPS,
    ZRAM_PP_SLOT,
    ZRAM_SAME,
    ZRAM_SIZE_MASK,
    ZRAM_WB,
    AlgorithmParams,
    Entry,
    ZramConfig,
    ZramStats,
)
from ..kernel.zsmalloc import FREE_END, NO_ZSPAGE, OBJ_INDEX_BITS, ZsPage, decode_handle, encode_handle
from ._codec import EntryCodec, RecordCodec

BLOCK_SIZE = 4096
EXTENT_BLOCKS = 8
"""Blocks per extent: the largest zspage (CONFIG_ZSMALLOC_CHAIN_SIZE = 8 pages) fits one extent."""
EXTENT_SIZE = BLOCK_SIZE * EXTENT_BLOCKS
MAGIC = b"ZRAMIMG\0"
VERSION = 2
"""The format written.  Version 1 (11-byte page-table entries, no post-processing state) is
still read; a writable open converts it (``image.py``, zram-image(5) VERSIONS)."""
VERSIONS = (1, 2)
PAYLOAD = BLOCK_SIZE - 4
"""Bytes of a metadata block before its CRC-32 trailer."""
CLASS_BLOCKS = EXTENT_BLOCKS - 1
"""Blocks 1..7 are the class area; blocks 0..7 (extent 0) are read by every open."""
MAX_EXTENTS = (1 << 29) - 1
"""Zspage keys are 29 bits in a record (all ones = none): the image is below 2^32 blocks (16 TiB)."""
ROOTS = 256
"""Root pointers per tree, in the header: trees of up to 256 leaves need no pointer block."""

# Block types, mixed into every metadata block's CRC so a block read in the wrong role fails.
TYPE_HEADER = 1
TYPE_CLASS = 2
TYPE_POINTER = 3
TYPE_TABLE = 4
TYPE_ZSPAGE = 5
TYPE_BLOB = 6
TYPE_NAMES = {
    TYPE_HEADER: "header",
    TYPE_CLASS: "class-table",
    TYPE_POINTER: "pointer",
    TYPE_TABLE: "page-table",
    TYPE_ZSPAGE: "zspage-record",
    TYPE_BLOB: "blob",
}

POINTERS_PER_BLOCK = PAYLOAD // 4  # 1023
ENTRY_SIZE = 16
ENTRIES_PER_BLOCK = PAYLOAD // ENTRY_SIZE  # 255
ENTRY_SIZE_V1 = 11
ENTRIES_PER_BLOCK_V1 = PAYLOAD // ENTRY_SIZE_V1  # 372
RECORD_SIZE = 12
RECORDS_PER_BLOCK = PAYLOAD // RECORD_SIZE  # 341


def corrupt(detail: str) -> ZramError:
    return ZramError(errno.EUCLEAN, "open", f"image is corrupt: {detail}")


def block_crc(block: int, kind: int, payload: bytes | bytearray | memoryview) -> int:
    """CRC-32 of (u64 block number, u32 block type, the 4092 payload bytes), little-endian."""
    return crc32(payload, crc32(struct.pack("<QI", block, kind)))


def seal(block: int, kind: int, payload: bytes | bytearray) -> bytes:
    """A metadata block: ``payload`` padded to 4092 bytes, then its CRC-32."""
    body = bytes(payload).ljust(PAYLOAD, b"\0")
    return body + block_crc(block, kind, body).to_bytes(4, "little")


def unseal(block: int, kind: int, data: bytes | memoryview) -> memoryview:
    """The payload of a metadata block, after checking its CRC (EUCLEAN in words if it fails)."""
    view = memoryview(data)
    stored = int.from_bytes(view[PAYLOAD:BLOCK_SIZE], "little")
    if block_crc(block, kind, view[:PAYLOAD]) != stored:
        what = "all zeros (a hole or truncated file)" if not any(view) else "fails its checksum"
        raise corrupt(f"{TYPE_NAMES[kind]} block {block} {what}")
    return view[:PAYLOAD]


# --- block 0: the header ------------------------------------------------------

CONFIG_FIELDS = (
    "compat",
    "disksize",
    "comp_algorithm",
    "limit_pages",
    "max_comp_streams",
    "backing_dev",
    "writeback_limit",
    "writeback_limit_enable",
    "recomp_algorithms",
    "params",
)
"""Every ZramConfig field, each kept in the header (the last ones through the fields below)."""
STATS_FIELDS_V1 = (
    "pages_stored",
    "compr_data_size",
    "same_pages",
    "huge_pages",
    "huge_pages_since",
    "failed_reads",
    "failed_writes",
    "invalid_io",
    "notify_free",
    "miss_free",
    "num_reads",
    "num_writes",
    "max_used_pages",
    "good_compress",
    "bad_compress",
)
STATS_FIELDS_V2 = ("bd_count", "bd_reads", "bd_writes")
"""Counters added by version 2: appended after the version 1 header, so a version 1 header
(zeros there) decodes with them 0."""
STATS_FIELDS = STATS_FIELDS_V1 + STATS_FIELDS_V2
PATH_MAX = 4096
"""The longest backing_dev path kept (the kernel copies the path into a PATH_MAX buffer)."""
MAX_DICT = 16 << 20
"""The largest algorithm_params dictionary kept (zstd's trained dictionaries are ~100 KiB;
the kernel's own limit, INT_MAX, is no size to read into memory)."""
NAME_SIZE = 128
"""Bytes of an algorithm name field (the kernel refuses names of 128 bytes or more: E2BIG)."""
SECONDARY = tuple(range(1, ZRAM_MAX_COMPS))
"""The recompression priorities, 1..3."""


IMAGE_ID_SIZE = 16
IMAGE_ID_DOC = (
    "The image's identity: 16 random bytes, the owner a backing file's claim names (see BACKING FILE); "
    "zero in an image written before it existed, which is given one when next written."
)


def _v2_fields() -> tuple[tuple[str, str, str], ...]:
    """The post-processing settings and counters, appended by version 2 (zero = the default)."""
    out: list[tuple[str, str, str]] = [
        ("writeback_limit", "Q", "writeback_limit, in 4 KiB units."),
        ("writeback_limit_enable", "B", "writeback_limit_enable: 0 or 1."),
        ("reserved2", "7s", "Zero."),
        ("backing_dev_blob", "I", "First block of the BLOB holding the backing_dev path; 0: none."),
        ("backing_dev_len", "I", "Bytes of the backing_dev path (absolute, UTF-8), 1..4096; 0: none."),
    ]
    for p in SECONDARY:
        what = f"recomp_algorithm of priority {p}"
        out.append((f"recomp_algorithm{p}", f"{NAME_SIZE}s", f"The {what}, ASCII, NUL-padded; empty: unset."))
    for p in range(ZRAM_MAX_COMPS):
        if p:  # priority 0's level is the version 1 field algorithm_level
            out.append((f"level{p}", "q", f"algorithm_params level of priority {p} (if level{p}_set)."))
            out.append((f"level{p}_set", "B", "1 if that level was set, else 0."))
        what = f"algorithm_params deflate.winbits of priority {p} (if winbits{p}_set)."
        out.append((f"winbits{p}", "q", what))
        out.append((f"winbits{p}_set", "B", "1 if those window bits were set, else 0."))
        what = f"First block of the BLOB holding priority {p}'s dictionary; 0: none."
        out.append((f"dict{p}_blob", "I", what))
        out.append((f"dict{p}_len", "I", f"Bytes of that dictionary, 1..{MAX_DICT}; 0: none."))
    out += [(name, "q", f"Counter {name}.") for name in STATS_FIELDS_V2]
    out.append(("image_id", "16s", IMAGE_ID_DOC))
    return tuple(out)


HEADER_LAYOUT: tuple[tuple[str, str, str], ...] = (
    (
        ("magic", "8s", 'The 8 bytes "ZRAMIMG\\0".'),
        ("version", "I", "Format version: 2 (1: the first format, still read)."),
        ("block_size", "I", "Bytes per block: 4096."),
        ("txid", "Q", "Commits made to this image so far."),
        ("extent_blocks", "I", "Blocks per extent: 8."),
        ("reserved0", "I", "Zero."),
        ("compat", "16s", "Behaviour profile, ASCII, NUL-padded: 3.11 or 6.18."),
        ("disksize", "Q", "Device size in bytes, page aligned; 0 = not initialised."),
        ("comp_algorithm", "128s", "Compression algorithm name, ASCII, NUL-padded."),
        ("algorithm_level", "q", "Level from algorithm_params (meaningful if algorithm_level_set)."),
        ("algorithm_level_set", "B", "1 if a level was set, else 0."),
        ("reserved1", "7s", "Zero."),
        ("limit_pages", "Q", "mem_limit, in pages; 0 = none."),
        (
            "max_comp_streams",
            "Q",
            "Compression streams (-t); 0 = not given: one per CPU the reader may use (6.18), one (3.11).",
        ),
    )
    + tuple((name, "q", f"Counter {name}.") for name in STATS_FIELDS_V1)
    + (
        ("pages_allocated", "Q", "zsmalloc pool: pages (frames) held by zspages."),
        ("pages_compacted", "Q", "zsmalloc pool: pages freed by compaction, ever."),
        ("table_entries", "Q", "Page-table slots in use (written pages)."),
        ("zspage_count", "Q", "Zspages in the pool."),
        ("extent_count", "I", "Extents 0 .. extent_count-1 may be in use; all later ones are free."),
        ("meta_extent", "I", "Metadata extent being filled (0: none)."),
        ("meta_used", "I", "Blocks of meta_extent already used (8: full)."),
        ("free_hint", "I", "Every extent in 1 .. free_hint-1 is in use."),
        ("table_depth", "B", "Levels of pointer blocks between table_roots and the page-table leaves."),
        ("zsmap_depth", "B", "Levels of pointer blocks between zsmap_roots and the zspage-record leaves."),
        ("nclasses", "H", "Class records in the class area (0 when not initialised)."),
        ("ngroups", "B", "Fullness groups per class record (profile 6.18: 12, 3.11: 4)."),
        ("nlists", "B", "Fullness lists (list heads) per class record (6.18: 10, 3.11: 2)."),
        ("class_record_size", "H", "Bytes per class record: 24 + 4 * nlists + 4 * ngroups."),
    )
    + _v2_fields()
)
HEADER = struct.Struct("<" + "".join(code for _, code, _ in HEADER_LAYOUT))
HEADER_NAMES = tuple(name for name, _, _ in HEADER_LAYOUT)
TABLE_ROOTS_OFFSET = 1024
"""table_roots: ROOTS u32 block numbers (0 = none) at this offset of block 0."""
ZSMAP_ROOTS_OFFSET = 2048
"""zsmap_roots: ROOTS u32 block numbers (0 = none) at this offset of block 0."""
ROOT_ARRAY = struct.Struct(f"<{ROOTS}I")
assert HEADER.size <= TABLE_ROOTS_OFFSET and ZSMAP_ROOTS_OFFSET + ROOT_ARRAY.size <= PAYLOAD
MAX_DEPTH = 5
"""256 * 1023**5 leaves: more than any disksize (2^52 pages) needs."""


@dataclass(frozen=True)
class BitField:
    """Bits ``low..high`` (inclusive) of a little-endian integer: one row of a BITS table of the manual.

    The page-table entry and the zspage record are declared as tuples of these; the encoders,
    the decoders and the test of the manual all read that one declaration.
    """

    name: str
    low: int
    high: int
    description: str
    mask: int = field(init=False, repr=False, compare=False)
    """The largest value the field holds (all its bits set), unshifted."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "mask", (1 << self.width) - 1)  # once: get() runs per entry

    @property
    def width(self) -> int:
        return self.high - self.low + 1

    @property
    def bits(self) -> str:
        """The manual's BITS column: ``low-high`` (one bit: ``low``)."""
        return f"{self.low}" if self.low == self.high else f"{self.low}-{self.high}"

    @property
    def in_place(self) -> int:
        """The field's bits where they lie in the integer."""
        return self.mask << self.low

    def get(self, v: int) -> int:
        return v >> self.low & self.mask

    def put(self, value: int) -> int:
        """``value`` in place; the caller has checked that it fits."""
        return value << self.low


def layout_offsets(layout: tuple[tuple[str, str, str], ...]) -> list[tuple[int, int, str, str]]:
    """(offset, size, name, description) for each field of a layout: what the manual tabulates."""
    out = []
    off = 0
    for name, code, desc in layout:
        size = struct.calcsize("<" + code)
        out.append((off, size, name, desc))
        off += size
    return out


@dataclass
class BlobRef:
    """Where a blob lives: the first block of its chain and its length in bytes (0, 0: none)."""

    block: int = 0
    length: int = 0


@dataclass
class Header:
    """Block 0, decoded: the settings, counters, pool counters and the roots of everything else.

    The settings kept in blobs (backing_dev, the dictionaries) are in ``config`` only once the
    image has read their chains: the header holds where they are (``blobs``).
    """

    txid: int
    config: ZramConfig
    stats: ZramStats
    version: int = VERSION
    pages_allocated: int = 0
    pages_compacted: int = 0
    table_entries: int = 0
    zspage_count: int = 0
    extent_count: int = 1
    meta_extent: int = 0
    meta_used: int = EXTENT_BLOCKS
    free_hint: int = 1
    table_roots: list[int] = field(default_factory=lambda: [0] * ROOTS)
    zsmap_roots: list[int] = field(default_factory=lambda: [0] * ROOTS)
    table_depth: int = 0
    zsmap_depth: int = 0
    nclasses: int = 0
    ngroups: int = 0
    nlists: int = 0
    blobs: dict[str, BlobRef] = field(default_factory=dict)
    """``backing_dev`` and ``dict0``..``dict3``: where each blob-held setting is (absent: none)."""
    image_id: bytes = bytes(IMAGE_ID_SIZE)
    """Who this image is, for a backing file's claim (backing.py); all zero: none yet."""

    @property
    def class_record_size(self) -> int:
        return 24 + 4 * self.nlists + 4 * self.ngroups


BLOB_NAMES = ("backing_dev",) + tuple(f"dict{p}" for p in range(ZRAM_MAX_COMPS))
BLOB_LIMITS = {"backing_dev": PATH_MAX} | {f"dict{p}": MAX_DICT for p in range(ZRAM_MAX_COMPS)}
LEVEL0 = ("algorithm_level", "algorithm_level_set")
"""Priority 0's level: the version 1 fields."""
_HEADER_OWN = ("txid", "version", "config", "stats", "table_roots", "zsmap_roots", "blobs")
"""Header fields not copied by name between the dataclass and the layout."""


def _ascii(raw: bytes, name: str) -> str:
    text = raw.rstrip(b"\0")
    if b"\0" in text or not text.isascii():
        raise corrupt(f"header field {name} is not ASCII text")
    return text.decode()


def _optional(value: int | None) -> tuple[int, int]:
    """(value, set flag) of an optional integer setting."""
    return (value, 1) if value is not None else (0, 0)


def encode_header(h: Header) -> bytes:
    """Block 0 of the state ``h`` describes, in the current VERSION."""
    c, s = h.config, h.stats
    values: dict[str, object] = {
        "magic": MAGIC,
        "version": VERSION,
        "txid": h.txid,
        "block_size": BLOCK_SIZE,
        "extent_blocks": EXTENT_BLOCKS,
        "reserved0": 0,
        "reserved1": b"",
        "reserved2": b"",
        "compat": c.compat.encode(),
        "disksize": c.disksize,
        "comp_algorithm": c.comp_algorithm.encode(),
        "limit_pages": c.limit_pages,
        "max_comp_streams": c.max_comp_streams,
        "writeback_limit": c.writeback_limit,
        "writeback_limit_enable": int(c.writeback_limit_enable),
        "class_record_size": h.class_record_size if h.nclasses else 0,
    }
    values["algorithm_level"], values["algorithm_level_set"] = _optional(c.params[0].level)
    for p in SECONDARY:
        values[f"recomp_algorithm{p}"] = (c.recomp_algorithms[p - 1] or "").encode()
    for p, params in enumerate(c.params):
        if p:
            values[f"level{p}"], values[f"level{p}_set"] = _optional(params.level)
        values[f"winbits{p}"], values[f"winbits{p}_set"] = _optional(params.deflate_winbits)
    for name in BLOB_NAMES:
        ref = h.blobs.get(name, BlobRef())
        values[f"{name}_blob"], values[f"{name}_len"] = ref.block, ref.length
    for name in STATS_FIELDS:
        values[name] = getattr(s, name)
    for f in fields(Header):
        if f.name not in _HEADER_OWN:
            values[f.name] = getattr(h, f.name)
    body = bytearray(PAYLOAD)
    HEADER.pack_into(body, 0, *(values[n] for n in HEADER_NAMES))
    ROOT_ARRAY.pack_into(body, TABLE_ROOTS_OFFSET, *h.table_roots)
    ROOT_ARRAY.pack_into(body, ZSMAP_ROOTS_OFFSET, *h.zsmap_roots)
    return seal(0, TYPE_HEADER, body)


def _flag(v: dict[str, object], name: str) -> bool:
    value = v[name]
    if value not in (0, 1):
        raise corrupt(f"header field {name} is {value}, not 0 or 1")
    return bool(value)


def _set_or_none(v: dict[str, object], name: str, flag: str) -> int | None:
    value = v[name]
    assert isinstance(value, int)
    if _flag(v, flag):
        return value
    if value:
        raise corrupt(f"header field {name} is {value} but not set")
    return None


def decode_header(data: bytes | memoryview) -> Header:
    """Block 0 -> Header; EUCLEAN (or ENOTSUP for a newer version) in words when it cannot be trusted.

    A version 1 header decodes with every version 2 field zero: the defaults.  The settings
    kept in blobs are left at their defaults in ``config``; ``blobs`` says where they are.
    """
    view = memoryview(data)[:BLOCK_SIZE]
    if bytes(view[:8]) != MAGIC:
        raise ZramError(errno.EUCLEAN, "open", "not a zram image (bad magic in block 0)")
    version = int.from_bytes(view[8:12], "little")
    sound = block_crc(0, TYPE_HEADER, view[:PAYLOAD]) == int.from_bytes(view[PAYLOAD:], "little")
    if version not in VERSIONS and sound:
        detail = f"image format version {version}; this zramctl reads versions 1 to {VERSION}"
        raise ZramError(errno.ENOTSUP, "open", detail)
    payload = unseal(0, TYPE_HEADER, view)
    if version not in VERSIONS:
        raise corrupt(f"header version {version} is unknown")
    v = dict(zip(HEADER_NAMES, HEADER.unpack_from(payload), strict=True))
    if v["block_size"] != BLOCK_SIZE or v["extent_blocks"] != EXTENT_BLOCKS:
        raise corrupt("block or extent size in the header is not 4096 / 8")
    if v["reserved0"] or any(v["reserved1"]) or any(v["reserved2"]):
        raise corrupt("a reserved field of the header is not zero")
    compat = _ascii(v["compat"], "compat")
    if compat not in PROFILES:
        raise corrupt(f"unknown profile {compat!r} in the header")
    config = ZramConfig(
        compat=compat,
        disksize=v["disksize"],
        comp_algorithm=_ascii(v["comp_algorithm"], "comp_algorithm"),
        limit_pages=v["limit_pages"],
        max_comp_streams=v["max_comp_streams"],
        writeback_limit=v["writeback_limit"],
        writeback_limit_enable=_flag(v, "writeback_limit_enable"),
    )
    config.recomp_algorithms = [
        _ascii(v[f"recomp_algorithm{p}"], f"recomp_algorithm{p}") or None for p in SECONDARY
    ]
    config.params = [
        AlgorithmParams(
            level=_set_or_none(v, *((f"level{p}", f"level{p}_set") if p else LEVEL0)),
            deflate_winbits=_set_or_none(v, f"winbits{p}", f"winbits{p}_set"),
        )
        for p in range(ZRAM_MAX_COMPS)
    ]
    stats = ZramStats(**{name: v[name] for name in STATS_FIELDS})
    if min(getattr(stats, name) for name in STATS_FIELDS_V2) < 0:
        raise corrupt("a backing-device counter in the header is negative")
    h = Header(txid=v["txid"], config=config, stats=stats, version=version)
    for f in fields(Header):
        if f.name not in _HEADER_OWN:
            setattr(h, f.name, v[f.name])
    h.table_roots = list(ROOT_ARRAY.unpack_from(payload, TABLE_ROOTS_OFFSET))
    h.zsmap_roots = list(ROOT_ARRAY.unpack_from(payload, ZSMAP_ROOTS_OFFSET))
    limit = h.extent_count * EXTENT_BLOCKS
    if any(r and not EXTENT_BLOCKS <= r < limit for r in h.table_roots + h.zsmap_roots):
        raise corrupt("a tree root in the header points outside the image")
    for name in BLOB_NAMES:
        block, length = v[f"{name}_blob"], v[f"{name}_len"]
        if (block == 0) != (length == 0) or length > BLOB_LIMITS[name]:
            raise corrupt(f"the header's {name} blob is out of range ({length} bytes at block {block})")
        if block and not EXTENT_BLOCKS <= block < limit:
            raise corrupt(f"the header's {name} blob points outside the image (block {block})")
        if block:
            h.blobs[name] = BlobRef(block, length)
    if config.disksize % PAGE_SIZE or (config.disksize == 0) != (h.nclasses == 0):
        raise corrupt("disksize and class table in the header disagree")
    if h.nclasses and v["class_record_size"] != h.class_record_size:
        raise corrupt("class record size in the header is wrong")
    if not (1 <= h.free_hint <= h.extent_count <= MAX_EXTENTS + 1) or h.meta_used > EXTENT_BLOCKS:
        raise corrupt("extent counters in the header are out of range")
    if h.meta_extent >= h.extent_count or max(h.table_depth, h.zsmap_depth) > MAX_DEPTH:
        raise corrupt("tree roots in the header are out of range")
    return h


# --- blobs: settings too long for the header (backing_dev, dictionaries) ---------------

BLOB_NEXT = struct.Struct("<II")
"""A blob block's payload starts with (u32 next block, 0 = last; u32 bytes of data in this block)."""
BLOB_DATA = PAYLOAD - BLOB_NEXT.size
"""Data bytes per blob block: 4084."""


def blob_blocks(length: int) -> int:
    """Blocks a blob of ``length`` bytes takes."""
    return -(-length // BLOB_DATA)


def encode_blob(blocks: list[int], data: bytes) -> dict[int, bytes]:
    """The sealed blocks of a blob laid out in ``blocks`` (in chain order)."""
    assert len(blocks) == blob_blocks(len(data))
    out = {}
    for i, b in enumerate(blocks):
        piece = data[i * BLOB_DATA : (i + 1) * BLOB_DATA]
        nxt = blocks[i + 1] if i + 1 < len(blocks) else 0
        out[b] = seal(b, TYPE_BLOB, BLOB_NEXT.pack(nxt, len(piece)) + piece)
    return out


def decode_blob_block(block: int, data: bytes | memoryview, limit: int) -> tuple[int, bytes]:
    """(next block, data) of one blob block, checked: EUCLEAN in words if it cannot be trusted."""
    payload = unseal(block, TYPE_BLOB, data)
    nxt, n = BLOB_NEXT.unpack_from(payload)
    if n > BLOB_DATA or (nxt and not EXTENT_BLOCKS <= nxt < limit) or any(payload[BLOB_NEXT.size + n :]):
        raise corrupt(f"blob block {block} is out of range")
    return nxt, bytes(payload[BLOB_NEXT.size : BLOB_NEXT.size + n])


# --- blocks 1..7: the class area -------------------------------------------------

CLASS_LAYOUT: tuple[tuple[str, str, str], ...] = (
    ("index", "H", "Kernel class index (0..254) of the class's representative."),
    ("size", "H", "Bytes per object slot."),
    ("pages_per_zspage", "B", "Pages (frames) per zspage."),
    ("huge", "B", "1: one page-sized object per zspage."),
    ("objs_per_zspage", "H", "Object slots per zspage."),
    ("objs_allocated", "Q", "Slots in all of this class's zspages."),
    ("objs_inuse", "Q", "Slots holding an object."),
)
CLASS_FIXED = struct.Struct("<" + "".join(code for _, code, _ in CLASS_LAYOUT))


@dataclass
class ClassRecord:
    """One class's geometry (checked against the profile) and state."""

    index: int
    size: int
    pages_per_zspage: int
    huge: bool
    objs_per_zspage: int
    objs_allocated: int
    objs_inuse: int
    heads: list[int]
    """Zspage keys (first frame / 8) of each fullness list's head; NO_KEY (2^29-1) for an empty list."""
    zspages: list[int]


def class_blocks(h: Header) -> int:
    if not h.nclasses:
        return 0
    per = PAYLOAD // h.class_record_size
    return -(-h.nclasses // per)


def encode_classes(h: Header, records: list[ClassRecord]) -> list[bytes]:
    """The class area's blocks (1, 2, ...): records never straddle a block."""
    per = PAYLOAD // h.class_record_size
    tail = struct.Struct(f"<{h.nlists}I{h.ngroups}I")
    out = []
    for b in range(class_blocks(h)):
        body = bytearray()
        for r in records[b * per : (b + 1) * per]:
            geometry = (r.index, r.size, r.pages_per_zspage, int(r.huge), r.objs_per_zspage)
            body += CLASS_FIXED.pack(*geometry, r.objs_allocated, r.objs_inuse)
            body += tail.pack(*r.heads, *r.zspages)
        out.append(seal(1 + b, TYPE_CLASS, body))
    return out


def decode_classes(h: Header, area: bytes | memoryview) -> list[ClassRecord]:
    """Records from the class area (``area`` = blocks 1..7)."""
    if class_blocks(h) > CLASS_BLOCKS:
        raise corrupt("the class table in the header is larger than the class area")
    per = PAYLOAD // h.class_record_size
    tail = struct.Struct(f"<{h.nlists}I{h.ngroups}I")
    out: list[ClassRecord] = []
    for b in range(class_blocks(h)):
        payload = unseal(1 + b, TYPE_CLASS, memoryview(area)[b * BLOCK_SIZE : (b + 1) * BLOCK_SIZE])
        for i in range(min(per, h.nclasses - b * per)):
            off = i * h.class_record_size
            idx, size, pages, huge, objs, alloc, inuse = CLASS_FIXED.unpack_from(payload, off)
            rest = tail.unpack_from(payload, off + CLASS_FIXED.size)
            heads, counts = list(rest[: h.nlists]), list(rest[h.nlists :])
            out.append(ClassRecord(idx, size, pages, bool(huge), objs, alloc, inuse, heads, counts))
    return out


# --- pointer blocks ---------------------------------------------------------------

POINTERS = struct.Struct(f"<{POINTERS_PER_BLOCK}I")


def encode_pointers(block: int, children: list[int]) -> bytes:
    return seal(block, TYPE_POINTER, POINTERS.pack(*children))


def decode_pointers(block: int, data: bytes | memoryview, limit: int) -> list[int]:
    children = list(POINTERS.unpack_from(unseal(block, TYPE_POINTER, data)))
    for c in children:
        if c and (c < EXTENT_BLOCKS or c >= limit):
            raise corrupt(f"pointer block {block} points outside the image (block {c})")
    return children


# --- page-table leaves --------------------------------------------------------------

KIND_UNWRITTEN, KIND_SAME, KIND_OBJECT, KIND_WB = 0, 1, 2, 3
ENTRY_LAYOUT: tuple[BitField, ...] = (
    BitField(
        "kind", 0, 1, "0: unwritten (the whole entry is zero); 1: same-filled; 2: object; 3: written back."
    ),
    BitField("huge", 2, 2, "Objects: ZRAM_HUGE, the page is stored raw (size 4096)."),
    BitField("idle", 3, 3, "ZRAM_IDLE: marked idle and not accessed since."),
    BitField("incompressible", 4, 4, "ZRAM_INCOMPRESSIBLE: no recompression algorithm made it smaller."),
    BitField("priority", 5, 6, "Objects: the compressor that made it (0: comp_algorithm, 1..3: secondary)."),
    BitField("size", 7, 19, "Objects: bytes of the stored object, 1..4096."),
    BitField("obj_idx", 20, 30, "Objects: slot index in the zspage."),
    BitField("key", 31, 59, "Objects: the zspage's key (extent number; first frame = 8 * key)."),
    BitField("block", 20, 59, "Written back: the block of the backing file holding the page, 1 or more."),
    BitField("fill", 20, 83, "Same-filled: the repeated 64-bit word."),
    BitField("crc", 60, 91, "Objects: CRC-32 of the object's bytes; written back: of the 4096-byte page."),
    BitField("ac_time", 92, 127, "Last access, whole seconds since the Epoch (0: never); any kind."),
)
"""A page-table entry (zram-image(5), PAGE TABLE): an ENTRY_SIZE-byte little-endian integer.
Bits a kind does not use are zero; an entry with any other bit set is corruption."""
E_KIND, E_HUGE, E_IDLE, E_INCOMPRESSIBLE, E_PRIORITY, E_SIZE = ENTRY_LAYOUT[:6]
E_OBJ_IDX, E_KEY, E_BLOCK, E_FILL, E_CRC, E_AC_TIME = ENTRY_LAYOUT[6:]
E_FLAGS = ((E_HUGE, ZRAM_HUGE), (E_IDLE, ZRAM_IDLE), (E_INCOMPRESSIBLE, ZRAM_INCOMPRESSIBLE))
"""The one-bit flags: the entry's bit and the kernel's."""
E_COMMON = E_KIND.in_place | E_IDLE.in_place | E_INCOMPRESSIBLE.in_place | E_AC_TIME.in_place
E_USED = {
    KIND_SAME: E_COMMON | E_FILL.in_place,
    KIND_OBJECT: E_COMMON | E_HUGE.in_place | E_PRIORITY.in_place | E_SIZE.in_place | E_OBJ_IDX.in_place
    | E_KEY.in_place | E_CRC.in_place,
    KIND_WB: E_COMMON | E_BLOCK.in_place | E_CRC.in_place,
}
"""The bits each kind may set."""
KNOWN_FLAGS = ZRAM_SIZE_MASK | ZRAM_SAME | ZRAM_WB | ZRAM_HUGE | ZRAM_IDLE | ZRAM_INCOMPRESSIBLE | (
    ZRAM_COMP_PRIORITY_MASK << ZRAM_COMP_PRIORITY_SHIFT
)
"""Entry.flags bits an image keeps (ZRAM_PP_SLOT is a pass's transient mark: never committed)."""
assert E_OBJ_IDX.width == OBJ_INDEX_BITS and E_SIZE.mask >= PAGE_SIZE and E_CRC.width == 32
assert E_FILL.width == 64 and E_PRIORITY.mask == ZRAM_COMP_PRIORITY_MASK and E_KEY.mask >= MAX_EXTENTS
assert max(f.high for f in ENTRY_LAYOUT) < 8 * ENTRY_SIZE and E_BLOCK.low == E_OBJ_IDX.low

_ENTRY_CODEC = EntryCodec(
    fields=tuple((f.low, f.high) for f in ENTRY_LAYOUT),
    used=(E_USED[KIND_SAME], E_USED[KIND_OBJECT], E_USED[KIND_WB]),
    flags=(
        ZRAM_HUGE,
        ZRAM_IDLE,
        ZRAM_INCOMPRESSIBLE,
        ZRAM_SAME,
        ZRAM_WB,
        KNOWN_FLAGS,
        ZRAM_SIZE_MASK,
        ZRAM_COMP_PRIORITY_SHIFT,
        ZRAM_COMP_PRIORITY_MASK,
    ),
    geometry=(ENTRY_SIZE, ENTRIES_PER_BLOCK, PAGE_SIZE, EXTENT_BLOCKS, OBJ_INDEX_BITS),
)
"""Page-table leaves in C (``_codec.c``), told the layout above: it holds none of its own.
``encode_entry`` / ``decode_entry`` below stay the definition; tests/test_codec.py holds the two equal."""

ENTRY_LAYOUT_V1: tuple[BitField, ...] = (
    BitField(
        "kind", 0, 1, "0: unwritten (the whole entry is zero); 1: same-filled; 2: object; 3: huge object."
    ),
    BitField("size", 2, 14, "Objects: bytes of the stored object, 1..4096."),
    BitField("obj_idx", 15, 25, "Objects: slot index in the zspage."),
    BitField("key", 26, 55, "Objects: the zspage's key (extent number; first frame = 8 * key)."),
    BitField("crc", 56, 87, "Objects: CRC-32 of the object's bytes."),
    BitField("fill", 24, 87, "Same-filled: the repeated 64-bit word (bits 2-23 are zero)."),
)
"""A version 1 page-table entry (zram-image(5), VERSION 1 PAGE TABLE): ENTRY_SIZE_V1 bytes.  Only
decoded: a writable open converts the table to version 2."""
V1_KIND, V1_SIZE, V1_OBJ_IDX, V1_KEY, V1_CRC, V1_FILL = ENTRY_LAYOUT_V1
V1_KIND_HUGE = 3
V1_SAME_ZERO = ((1 << V1_FILL.low) - 1) & ~V1_KIND.mask
"""The bits a version 1 same-filled entry keeps zero: between its kind and its fill (2-23)."""
assert max(f.high for f in ENTRY_LAYOUT_V1) < 8 * ENTRY_SIZE_V1


def entries_per_block(version: int) -> int:
    """Page-table entries per leaf in an image of this format version."""
    return ENTRIES_PER_BLOCK_V1 if version == 1 else ENTRIES_PER_BLOCK


def encode_entry(entry: Entry | None) -> int:
    """A slot as the 128-bit integer of zram-image(5), PAGE-TABLE ENTRY.

    A flag the format cannot hold is a bug of the caller (ZRAM_PP_SLOT must be cleared by
    the pass that set it before anything commits): asserted, never silently dropped.
    """
    if entry is None:
        return 0
    flags, handle, crc, ac_time = entry
    assert not flags & ZRAM_PP_SLOT, "ZRAM_PP_SLOT reached a commit"
    assert not flags & ~KNOWN_FLAGS, f"unknown slot flags {flags:#x}"
    assert 0 <= ac_time <= E_AC_TIME.mask, f"ac_time {ac_time} does not fit 36 bits"
    v = E_AC_TIME.put(ac_time)
    for bit, flag in E_FLAGS:
        if flags & flag:
            v |= bit.put(1)
    prio = flags >> ZRAM_COMP_PRIORITY_SHIFT & ZRAM_COMP_PRIORITY_MASK
    size = flags & ZRAM_SIZE_MASK
    if flags & ZRAM_SAME:
        assert not flags & (ZRAM_WB | ZRAM_HUGE) and not prio and not size and crc == 0, "bad same slot"
        return v | E_FILL.put(handle) | E_KIND.put(KIND_SAME)
    if flags & ZRAM_WB:
        assert not flags & ZRAM_HUGE and not prio and not size, "written-back slot with object flags"
        assert 1 <= handle <= E_BLOCK.mask, f"backing block {handle} out of range"
        return v | E_CRC.put(crc) | E_BLOCK.put(handle) | E_KIND.put(KIND_WB)
    assert 1 <= size <= PAGE_SIZE and (size == PAGE_SIZE or not flags & ZRAM_HUGE), "bad object size"
    first, idx = decode_handle(handle)
    assert first % EXTENT_BLOCKS == 0
    return (
        v
        | E_CRC.put(crc)
        | E_KEY.put(first // EXTENT_BLOCKS)
        | E_OBJ_IDX.put(idx)
        | E_SIZE.put(size)
        | E_PRIORITY.put(prio)
        | E_KIND.put(KIND_OBJECT)
    )


def encode_table(block: int, entries: list[Entry | None]) -> bytes:
    """A page-table leaf: the compiled codec's bytes, or the reference's for a leaf it leaves to it."""
    body = _ENTRY_CODEC.encode(entries)
    if isinstance(body, int):  # an entry it does not take as plainly valid: the reference asserts or encodes
        body = encode_table_reference(entries)
    return seal(block, TYPE_TABLE, body)


def encode_table_reference(entries: list[Entry | None]) -> bytes:
    """A leaf's payload entry by entry through ``encode_entry``: the readable definition of the codec."""
    return b"".join(encode_entry(e).to_bytes(ENTRY_SIZE, "little") for e in entries)


def decode_entry(v: int, extents: int) -> Entry | str | None:
    """A version 2 entry -> Entry (None: unwritten), or why it is corrupt (a str)."""
    kind = E_KIND.get(v)
    if kind == KIND_UNWRITTEN:
        return "unwritten but not zero" if v else None
    if v & ~E_USED[kind]:
        return "a bit its kind does not use is set"
    flags = 0
    for bit, flag in E_FLAGS:
        if bit.get(v):
            flags |= flag
    ac_time = E_AC_TIME.get(v)
    if kind == KIND_SAME:
        return (flags | ZRAM_SAME, E_FILL.get(v), 0, ac_time)
    if kind == KIND_WB:
        blk = E_BLOCK.get(v)
        if blk < 1:
            return "written back to block 0"
        return (flags | ZRAM_WB, blk, E_CRC.get(v), ac_time)
    size, key = E_SIZE.get(v), E_KEY.get(v)
    if not (1 <= size <= PAGE_SIZE) or not (1 <= key < extents) or (flags & ZRAM_HUGE and size != PAGE_SIZE):
        return "object out of range"
    flags |= size | E_PRIORITY.get(v) << ZRAM_COMP_PRIORITY_SHIFT
    return (flags, encode_handle(key * EXTENT_BLOCKS, E_OBJ_IDX.get(v)), E_CRC.get(v), ac_time)


def _decode_entry_v1(v: int, extents: int) -> Entry | str | None:
    kind = V1_KIND.get(v)
    if kind == KIND_UNWRITTEN:
        return "unwritten but not zero" if v else None
    if kind == KIND_SAME:
        return "bad same-filled entry" if v & V1_SAME_ZERO else (ZRAM_SAME, V1_FILL.get(v), 0, 0)
    size, key = V1_SIZE.get(v), V1_KEY.get(v)
    if not (1 <= size <= PAGE_SIZE) or not (1 <= key < extents):
        return "object out of range"
    flags = size | (ZRAM_HUGE if kind == V1_KIND_HUGE else 0)
    return (flags, encode_handle(key * EXTENT_BLOCKS, V1_OBJ_IDX.get(v)), V1_CRC.get(v), 0)


def decode_table(
    block: int, data: bytes | memoryview, extents: int, version: int = VERSION
) -> list[Entry | None]:
    """A page-table leaf of an image of format ``version``; every entry range-checked.

    The compiled codec decodes a current leaf; the first entry it does not take as plainly
    valid sends the leaf to the reference, which says what is wrong with it.
    """
    payload = unseal(block, TYPE_TABLE, data)
    if version != 1:
        out = _ENTRY_CODEC.decode(payload, extents)
        if not isinstance(out, int):
            return out
    return decode_table_reference(block, payload, extents, version)


def decode_table_reference(
    block: int, payload: bytes | memoryview, extents: int, version: int = VERSION
) -> list[Entry | None]:
    """A leaf's checked payload entry by entry through ``decode_entry``: the codec's readable definition."""
    payload = bytes(payload)
    size, decode = (ENTRY_SIZE_V1, _decode_entry_v1) if version == 1 else (ENTRY_SIZE, decode_entry)
    out: list[Entry | None] = []
    for i in range(entries_per_block(version)):
        e = decode(int.from_bytes(payload[i * size : (i + 1) * size], "little"), extents)
        if isinstance(e, str):
            raise corrupt(f"page-table block {block} entry {i}: {e}")
        out.append(e)
    return out


# --- zspage-record leaves -------------------------------------------------------------

RECORD_FREE, RECORD_ZSPAGE, RECORD_META, RECORD_BLOB = 0, 1, 2, 3
RECORD_LAYOUT: tuple[BitField, ...] = (
    BitField(
        "kind",
        0,
        1,
        "0: free extent; 1: zspage; 2: metadata extent; 3: blob extent (all but zspages: all other bits 0).",
    ),
    BitField("cls", 2, 9, "Position of the zspage's class in the class area."),
    BitField("fullness", 10, 13, "Fullness group (15: isolated, never in a committed image)."),
    BitField("inuse", 14, 25, "Objects allocated in this zspage."),
    BitField("freeobj", 26, 37, "Index of the first free object; 4095 when none."),
    BitField("prev", 38, 66, "Key of the previous zspage on its fullness list; 2^29-1 none (not huge)."),
    BitField("next", 67, 95, "Key of the next zspage on its fullness list; 2^29-1 none (not huge)."),
    BitField("owner", 38, 95, "Huge classes only: 1 + page index owning the only object; 0 none."),
)
"""A zspage record (zram-image(5), ZSPAGE RECORDS): a RECORD_SIZE-byte little-endian integer."""
R_KIND, R_CLS, R_FULLNESS, R_INUSE, R_FREEOBJ, R_PREV, R_NEXT, R_OWNER = RECORD_LAYOUT
NO_KEY = R_PREV.mask
"""A prev/next key meaning 'none': all 29 bits set."""
NO_FREEOBJ = R_FREEOBJ.mask
"""freeobj when no slot is free (4095)."""
ISOLATED = R_FULLNESS.mask
"""fullness of an isolated zspage (15), which a committed image never holds."""
assert NO_KEY == R_NEXT.mask == MAX_EXTENTS and max(f.high for f in RECORD_LAYOUT) < 8 * RECORD_SIZE
Slot = ZsPage | int
"""A record slot in memory: a ZsPage, or RECORD_FREE / RECORD_META / RECORD_BLOB."""
_RECORD_CODEC = RecordCodec(
    fields=tuple((f.low, f.high) for f in RECORD_LAYOUT),
    consts=(RECORD_ZSPAGE, NO_FREEOBJ, ISOLATED, NO_KEY, FREE_END, NO_ZSPAGE),
    geometry=(RECORD_SIZE, RECORDS_PER_BLOCK, EXTENT_BLOCKS),
    zspage_type=ZsPage,
)
"""Record leaves in C (``_codec.c``), told the layout above; ``encode_record`` stays the definition."""


def zspage_key(first: int) -> int:
    """How a zspage link is stored: its extent number (first frame / 8); NO_KEY for none."""
    return NO_KEY if first == NO_ZSPAGE else first // EXTENT_BLOCKS


def zspage_first(key: int) -> int:
    """The inverse of zspage_key: a stored key back to the zspage's first frame (or NO_ZSPAGE)."""
    return NO_ZSPAGE if key == NO_KEY else key * EXTENT_BLOCKS


def encode_record(s: Slot, huge: list[bool]) -> int:
    """A slot as the 96-bit integer of zram-image(5), ZSPAGE RECORD."""
    if isinstance(s, int):
        return s
    v = R_KIND.put(RECORD_ZSPAGE) | R_CLS.put(s.cls) | R_FULLNESS.put(s.fullness & ISOLATED)
    v |= R_INUSE.put(s.inuse) | R_FREEOBJ.put(NO_FREEOBJ if s.freeobj == FREE_END else s.freeobj)
    if huge[s.cls]:
        assert s.prev == NO_ZSPAGE and s.next == NO_ZSPAGE, "huge zspage on a list"
        return v | R_OWNER.put(s.owner + 1)
    return v | R_PREV.put(zspage_key(s.prev)) | R_NEXT.put(zspage_key(s.next))


def encode_records(block: int, slots: list[Slot], huge: list[bool]) -> bytes:
    """A zspage-record leaf; ``huge[cls]`` says which class positions are huge.

    A commit encodes every cached leaf to find the changed ones (the pool changes its ZsPage
    objects in place), so the compiled codec does it; a slot it leaves to the reference sends
    the leaf to ``encode_records_reference``.
    """
    body = _RECORD_CODEC.encode(slots, huge)
    if isinstance(body, int):
        body = encode_records_reference(slots, huge)
    return seal(block, TYPE_ZSPAGE, body)


def encode_records_reference(slots: list[Slot], huge: list[bool]) -> bytes:
    """A leaf's payload slot by slot through ``encode_record``: the readable definition of the codec."""
    return b"".join(encode_record(s, huge).to_bytes(RECORD_SIZE, "little") for s in slots)


def decode_records(
    block: int, data: bytes | memoryview, first_key: int, huge: list[bool], objs: list[int], ngroups: int
) -> list[Slot]:
    """A zspage-record leaf whose first slot is extent ``first_key``; every field range-checked.

    The compiled codec decodes it; the first record it does not take as plainly valid sends the
    leaf to the reference, which says what is wrong with it.
    """
    payload = unseal(block, TYPE_ZSPAGE, data)
    out = _RECORD_CODEC.decode(payload, first_key, huge, objs, ngroups)
    if not isinstance(out, int):
        return out
    return decode_records_reference(block, payload, first_key, huge, objs, ngroups)


def decode_records_reference(
    block: int, payload: bytes | memoryview, first_key: int, huge: list[bool], objs: list[int], ngroups: int
) -> list[Slot]:
    """A leaf's checked payload record by record: the readable definition of the codec's decoder."""
    payload = bytes(payload)
    out: list[Slot] = []
    for i in range(RECORDS_PER_BLOCK):
        v = int.from_bytes(payload[i * RECORD_SIZE : (i + 1) * RECORD_SIZE], "little")
        kind = R_KIND.get(v)
        if kind != RECORD_ZSPAGE:
            if v >> R_CLS.low:
                raise corrupt(f"zspage-record block {block} record {i}: bad kind or non-zero free record")
            out.append(kind)
            continue
        cls, fg, inuse, free = R_CLS.get(v), R_FULLNESS.get(v), R_INUSE.get(v), R_FREEOBJ.get(v)
        if cls >= len(huge):
            raise corrupt(f"zspage-record block {block} record {i}: class {cls} does not exist")
        n = objs[cls]
        if inuse > n or (free != NO_FREEOBJ and free >= n) or (fg >= ngroups and fg != ISOLATED):
            raise corrupt(f"zspage-record block {block} record {i}: counters out of range")
        z = ZsPage((first_key + i) * EXTENT_BLOCKS, cls)
        z.inuse = inuse
        z.freeobj = FREE_END if free == NO_FREEOBJ else free
        z.fullness = -1 if fg == ISOLATED else fg
        if huge[cls]:
            z.owner = R_OWNER.get(v) - 1
        else:
            prev, nxt = R_PREV.get(v), R_NEXT.get(v)
            z.prev, z.next = zspage_first(prev), zspage_first(nxt)
        out.append(z)
    return out


def empty_records() -> list[Slot]:
    return [RECORD_FREE] * RECORDS_PER_BLOCK
