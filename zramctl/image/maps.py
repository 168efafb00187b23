"""The engine's Backing, kept in an image: lazy maps over the block file.

Why lazy: opening a device must not parse its page table (O(work), not
O(device)).  Each map reads a metadata block the first time something in it
is asked for, keeps it decoded in a cache, and hands back to ``Image.commit``
only the blocks that changed:

- ``Radix``: a sparse tree from a leaf number to the block holding that leaf:
  256 roots in the header, then pointer blocks; it grows a level when a leaf
  number outgrows it.
- ``TableMap``: the page table (``MutableMapping[int, Entry]``), 255 entries
  per leaf; setting or popping marks the leaf dirty.
- ``ZsMap``: zspage records by first frame, 341 per leaf, one per extent.  The
  engine mutates ZsPage objects in place, so a leaf is re-encoded at commit
  and compared with the bytes it was loaded from.  The same records say which
  extents are free, hold a zspage, or hold metadata: they are the extent map.
- ``FileFrames``: the FrameStore.  A zspage gets the lowest free extent; its
  frames are blocks ``8 * extent ..``; the unused tail of the extent stays a
  hole.  Frames freed by a transaction are punched at its commit.
- ``ImageState`` ties them together with the extent and metadata-block
  allocators (the header's extent_count, free_hint, meta_extent, meta_used).

Finding the lowest free extent costs amortised O(log n), not a scan from
free_hint each time (which made overwriting a full device quadratic): a
*cursor* starts at the header's free_hint and only moves forward, over records
each examined once per open; every free extent below it is in a heap (an
extent freed below the cursor is pushed; an entry made stale by reuse or
shrinking is dropped when it surfaces).  Nothing is read at open, and the
order is the same lowest-free-first order as before, so images are
byte-identical.  ``Work`` counts what the walks examine, for tests and
benchmarks to bound.
"""

from __future__ import annotations

import errno
import heapq
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ZramError, ZsCorrupt
from ..kernel.zram_drv import Entry
from ..kernel.zsmalloc import SizeClass, ZsPage
from .format import (
    EXTENT_BLOCKS,
    MAX_EXTENTS,
    POINTERS_PER_BLOCK,
    RECORD_FREE,
    RECORD_META,
    RECORDS_PER_BLOCK,
    ROOTS,
    VERSION,
    Header,
    Slot,
    decode_pointers,
    decode_records,
    decode_table,
    empty_records,
    encode_pointers,
    encode_records,
    encode_table,
    entries_per_block,
)
from .io import BLOCK_SIZE, BlockFile

# Clean decoded blocks kept per cache; dirty ones stay until commit.
FRAME_CACHE = 512
ZERO_FRAME = bytes(BLOCK_SIZE)
"""A fresh zspage's frame until it is written: one shared, immutable zero block."""
LEAF_CACHE = 1024


@dataclass
class Work:
    """What an open image examined that a command's size does not bound by itself: counted, never timed."""

    extents_scanned: int = 0
    """Zspage records the free-extent cursor stepped over."""
    leaves_read: int = 0
    """Page-table and zspage-record leaves read from the file."""
    pointer_blocks_read: int = 0
    """Pointer blocks read from the file."""


@dataclass
class Node:
    """A pointer block: ``children[i]`` is a block number, 0 for none."""

    block: int
    children: list[int]
    dirty: bool = False


class Radix:
    """Leaf number -> leaf block: ROOTS pointers in the header, then ``depth`` levels of pointer blocks.

    A pointer block at height h (h = 1: its children are leaves) on the way
    to leaf L has index L // 1023**h and is ``roots[L // 1023**depth]`` at
    the top.  Growing the tree moves the root array into a new pointer block
    (height depth + 1, index 0), so every cached block keeps its key.
    """

    def __init__(self, state: ImageState, roots: list[int], depth: int) -> None:
        self.state = state
        self.roots = list(roots)
        self.depth = depth
        self.nodes: dict[tuple[int, int], Node] = {}

    def _node(self, height: int, index: int, block: int) -> Node:
        node = self.nodes.get((height, index))
        if node is None:
            limit = self.state.extent_count * EXTENT_BLOCKS
            self.state.work.pointer_blocks_read += 1
            node = Node(block, decode_pointers(block, self.state.file.read(block), limit))
            self.nodes[(height, index)] = node
        return node

    def lookup(self, leaf: int) -> int:
        """The block of leaf ``leaf``, or 0 if it does not exist."""
        top = leaf // POINTERS_PER_BLOCK**self.depth
        if top >= ROOTS:
            return 0
        block = self.roots[top]
        for h in range(self.depth, 0, -1):
            if block == 0:
                return 0
            node = self._node(h, leaf // POINTERS_PER_BLOCK**h, block)
            block = node.children[leaf // POINTERS_PER_BLOCK ** (h - 1) % POINTERS_PER_BLOCK]
        return block

    def insert(self, leaf: int, block: int) -> None:
        """Point leaf ``leaf`` at ``block``, adding levels and pointer blocks as needed."""
        while leaf // POINTERS_PER_BLOCK**self.depth >= ROOTS:
            node = self._new_node(self.depth + 1, 0)
            node.children[:ROOTS] = self.roots
            self.roots = [node.block] + [0] * (ROOTS - 1)
            self.depth += 1
        top = leaf // POINTERS_PER_BLOCK**self.depth
        if self.depth == 0:
            self.roots[top] = block
            return
        if self.roots[top] == 0:
            self.roots[top] = self._new_node(self.depth, top).block
        parent = self._node(self.depth, top, self.roots[top])
        for h in range(self.depth, 0, -1):
            slot = leaf // POINTERS_PER_BLOCK ** (h - 1) % POINTERS_PER_BLOCK
            if h == 1:
                parent.children[slot] = block
                parent.dirty = True
                return
            index = leaf // POINTERS_PER_BLOCK ** (h - 1)
            if parent.children[slot] == 0:
                parent.children[slot] = self._new_node(h - 1, index).block
                parent.dirty = True
            parent = self._node(h - 1, index, parent.children[slot])

    def _new_node(self, height: int, index: int) -> Node:
        node = Node(self.state.alloc_meta_block(), [0] * POINTERS_PER_BLOCK, dirty=True)
        self.nodes[(height, index)] = node
        return node

    def leaves(self) -> Iterator[tuple[int, int]]:
        """Every (leaf number, block) in order: a whole-tree walk, for check and iteration."""
        for top, block in enumerate(self.roots):
            if block:
                yield from self._walk(self.depth, top, block)

    def _walk(self, height: int, index: int, block: int) -> Iterator[tuple[int, int]]:
        if height == 0:
            yield index, block
            return
        node = self._node(height, index, block)
        for slot, child in enumerate(node.children):
            if child:
                yield from self._walk(height - 1, index * POINTERS_PER_BLOCK + slot, child)

    def leaves_in(self, lo: int, hi: int) -> Iterator[tuple[int, int]]:
        """(leaf number, block) of the leaves ``lo <= n < hi`` that exist, in order.

        Only pointer blocks on the way to an existing leaf in the range are
        read: a range over absent subtrees costs nothing, whatever its length.
        """
        span = POINTERS_PER_BLOCK**self.depth
        for top in range(lo // span, min(ROOTS, -(-hi // span))):
            if self.roots[top]:
                yield from self._walk_in(self.depth, top, self.roots[top], lo, hi)

    def _walk_in(self, height: int, index: int, block: int, lo: int, hi: int) -> Iterator[tuple[int, int]]:
        if height == 0:
            yield index, block
            return
        node = self._node(height, index, block)
        span = POINTERS_PER_BLOCK ** (height - 1)
        base = index * POINTERS_PER_BLOCK
        first = max(0, lo // span - base)
        last = min(POINTERS_PER_BLOCK, -(-hi // span) - base)
        for slot in range(first, last):
            child = node.children[slot]
            if child:
                yield from self._walk_in(height - 1, base + slot, child, lo, hi)

    def dirty(self) -> Iterator[tuple[int, bytes]]:
        for node in self.nodes.values():
            if node.dirty:
                yield node.block, encode_pointers(node.block, node.children)

    def committed(self) -> None:
        for node in self.nodes.values():
            node.dirty = False


class LeafTree:
    """What the two lazy maps share: a Radix of leaf blocks and a cache of decoded leaves.

    ``_leaf(n)`` returns leaf ``n`` from the cache, else reads and decodes its
    block, else (``create``) starts a new one in a fresh metadata block.
    Subclasses say how a leaf is decoded and made, and which cached leaves may
    be dropped to make room.
    """

    leaves: dict[int, Any]

    def __init__(self, state: ImageState, header: Header) -> None:
        self.state = state
        self.load(header)

    def load(self, header: Header) -> None:
        """Start from the tree the header names (also how reset() empties the map)."""
        roots, depth, count = self._tree_in(header)
        self.radix = Radix(self.state, roots, depth)
        self.leaves = {}
        self.count = count

    def _tree_in(self, header: Header) -> tuple[list[int], int, int]:
        raise NotImplementedError

    def _read_leaf(self, n: int, block: int) -> Any:
        raise NotImplementedError

    def _new_leaf(self, block: int) -> Any:
        raise NotImplementedError

    def _make_room(self) -> None:
        raise NotImplementedError

    def _leaf(self, n: int, create: bool) -> Any:
        leaf = self.leaves.get(n)
        if leaf is not None:
            return leaf
        block = self.radix.lookup(n)
        if block:
            self.state.work.leaves_read += 1
            leaf = self._read_leaf(n, block)
        elif create:
            leaf = self._new_leaf(self.state.alloc_meta_block())
            self.radix.insert(n, leaf.block)
        else:
            return None
        self._make_room()  # before: the new leaf must stay
        self.leaves[n] = leaf
        return leaf

    def clear(self) -> None:
        self.state.clear()

    def __len__(self) -> int:
        return self.count


@dataclass
class TableLeaf:
    block: int
    entries: list[Entry | None]
    dirty: bool = False


class TableMap(LeafTree, MutableMapping[int, Entry]):
    """The page table: page index -> Entry, in leaves of 255 entries (a version 1 image's: 372)."""

    leaves: dict[int, TableLeaf]

    def load(self, header: Header) -> None:
        super().load(header)
        self.version = header.version
        self.per = entries_per_block(header.version)
        """Entries per leaf: the leaf of page p is p // per (255; a version 1 image's: 372)."""

    def _tree_in(self, header: Header) -> tuple[list[int], int, int]:
        return header.table_roots, header.table_depth, header.table_entries

    def clear(self) -> None:
        """Every entry gone: the table starts a new, empty tree (O(1)).  A reset also clears the
        frames, which empties the whole image; a table cleared alone (a test restoring it) leaves
        its old leaves unused in their metadata extents until the next reset."""
        h = self.state.header
        self.radix = Radix(self.state, [0] * ROOTS, 0)
        self.leaves = {}
        self.count = 0
        self.version = h.version

    def _read_leaf(self, n: int, block: int) -> TableLeaf:
        data = self.state.file.read(block)
        return TableLeaf(block, decode_table(block, data, self.state.extent_count, self.version))

    def _new_leaf(self, block: int) -> TableLeaf:
        assert self.version == VERSION, "a version 1 table is converted before it is written"
        return TableLeaf(block, [None] * self.per, dirty=True)

    def _make_room(self) -> None:
        self.state.trim(self.leaves, lambda x: not x.dirty)

    def __getitem__(self, index: int) -> Entry:
        entry = self.get(index)
        if entry is None:
            raise KeyError(index)
        return entry

    def get(self, index: int, default: Entry | None = None) -> Entry | None:  # type: ignore[override]
        n, i = divmod(index, self.per)
        leaf = self.leaves.get(n)  # the common case, inline: a read or write asks once per page
        if leaf is None:
            leaf = self._leaf(n, False)
            if leaf is None:
                return default
        entry = leaf.entries[i]
        return default if entry is None else entry

    def __setitem__(self, index: int, entry: Entry) -> None:
        n, i = divmod(index, self.per)
        leaf = self.leaves.get(n)
        if leaf is None:
            leaf = self._leaf(n, True)
            assert leaf is not None
        if leaf.entries[i] is None:
            self.count += 1
        leaf.entries[i] = entry
        leaf.dirty = True

    def run(self, index: int) -> tuple[list[Entry | None] | None, int, int]:
        """The leaf holding page ``index``, to read pages from it in place: (its entries, or None
        where no page of it was ever written; where ``index`` is in them; how many pages from
        ``index`` on it holds).  Whoever changes an entry in the list calls ``touched``."""
        n, i = divmod(index, self.per)
        leaf = self.leaves.get(n)
        if leaf is None:
            leaf = self._leaf(n, False)
        return (None if leaf is None else leaf.entries), i, self.per - i

    def touched(self, index: int, entries: list[Entry | None], added: int = 0) -> None:
        """Entries of page ``index``'s leaf were changed in ``entries``, the list ``run`` gave;
        ``added`` of them were None before.

        The leaf may have left the cache since (it was clean then, and nothing read it again):
        it comes back, with that list, dirty."""
        n = index // self.per
        leaf = self.leaves.get(n)
        if leaf is None or leaf.entries is not entries:
            self._make_room()
            leaf = self.leaves[n] = TableLeaf(self.radix.lookup(n), entries)
        leaf.dirty = True
        self.count += added

    def pop(self, index: int, *default: Entry | None) -> Entry | None:  # type: ignore[override]
        n, i = divmod(index, self.per)
        leaf = self._leaf(n, False)
        entry = leaf.entries[i] if leaf is not None else None
        if entry is None:
            if default:
                return default[0]
            raise KeyError(index)
        assert leaf is not None
        leaf.entries[i] = None
        leaf.dirty = True
        self.count -= 1
        return entry

    def __delitem__(self, index: int) -> None:
        self.pop(index)

    def __contains__(self, index: object) -> bool:
        return isinstance(index, int) and self.get(index) is not None

    def __iter__(self) -> Iterator[int]:
        for n, _ in self.radix.leaves():
            leaf = self._leaf(n, False)
            assert leaf is not None
            for i, e in enumerate(leaf.entries):
                if e is not None:
                    yield n * self.per + i

    def present(self, first: int, end: int) -> list[int]:
        """The page indices ``first <= i < end`` that hold an entry, ascending: O(leaves that exist there)."""
        out: list[int] = []
        if end <= first:
            return out
        for n, _ in self.radix.leaves_in(first // self.per, -(-end // self.per)):
            leaf = self._leaf(n, False)
            assert leaf is not None
            base = n * self.per
            lo, hi = max(first - base, 0), min(end - base, self.per)
            out.extend(base + i for i in range(lo, hi) if leaf.entries[i] is not None)
        return out

    def dirty(self) -> Iterator[tuple[int, bytes]]:
        self.state.refuse_poisoned()
        assert self.version == VERSION or not any(x.dirty for x in self.leaves.values())
        yield from self.radix.dirty()
        for leaf in self.leaves.values():
            if leaf.dirty:
                yield leaf.block, encode_table(leaf.block, leaf.entries)

    def committed(self) -> None:
        self.radix.committed()
        for leaf in self.leaves.values():
            leaf.dirty = False


@dataclass
class ZsLeaf:
    block: int
    slots: list[Slot]
    loaded: bytes | None
    """The bytes this leaf was read from (or last committed as); None for a new leaf."""


class ZsMap(LeafTree, MutableMapping[int, ZsPage]):
    """Zspage records by first frame; one slot per extent, which doubles as the extent map."""

    leaves: dict[int, ZsLeaf]

    def _tree_in(self, header: Header) -> tuple[list[int], int, int]:
        return header.zsmap_roots, header.zsmap_depth, header.zspage_count

    def _read_leaf(self, n: int, block: int) -> ZsLeaf:
        classes = self.state.classes()
        data = self.state.file.read(block)
        slots = decode_records(
            block,
            data,
            n * RECORDS_PER_BLOCK,
            [c.huge for c in classes],
            [c.objs_per_zspage for c in classes],
            len(classes[0].zspages) if classes else 0,
        )
        return ZsLeaf(block, slots, data)

    def _new_leaf(self, block: int) -> ZsLeaf:
        return ZsLeaf(block, empty_records(), None)

    def _make_room(self) -> None:
        if not self.state.writable:  # a writer's records change in place: kept until commit
            self.state.trim(self.leaves, lambda x: True)

    def slot(self, extent: int) -> Slot:
        n, i = divmod(extent, RECORDS_PER_BLOCK)
        leaf = self.leaves.get(n)  # inline: frames.mutable asks once for every frame it first changes
        if leaf is None:
            leaf = self._leaf(n, False)
        return leaf.slots[i] if leaf is not None else RECORD_FREE

    def set_slot(self, extent: int, value: Slot) -> None:
        n, i = divmod(extent, RECORDS_PER_BLOCK)
        leaf = self._leaf(n, True)
        assert leaf is not None
        leaf.slots[i] = value

    def __getitem__(self, first: int) -> ZsPage:
        if first % EXTENT_BLOCKS == 0 and first > 0:
            n, i = divmod(first // EXTENT_BLOCKS, RECORDS_PER_BLOCK)
            leaf = self.leaves.get(n)  # inline: the pool asks for a zspage once or twice a page
            if leaf is None:
                leaf = self._leaf(n, False)
            if leaf is not None:
                s = leaf.slots[i]
                if isinstance(s, ZsPage):
                    return s
        raise KeyError(first)  # the pool says which page or list named it

    def __setitem__(self, first: int, zspage: ZsPage) -> None:
        e = first // EXTENT_BLOCKS
        n, i = divmod(e, RECORDS_PER_BLOCK)
        leaf = self._leaf(n, True)  # one look-up for slot() and set_slot(): every new zspage asks
        assert leaf is not None
        if not isinstance(leaf.slots[i], ZsPage):
            self.count += 1
        leaf.slots[i] = zspage
        self.state.reserved.discard(e)

    def __delitem__(self, first: int) -> None:
        e = first // EXTENT_BLOCKS
        if not isinstance(self.slot(e), ZsPage):
            raise KeyError(first)
        self.set_slot(e, RECORD_FREE)
        self.state.reserved.add(e)  # the frames stay allocated until FileFrames.free
        self.count -= 1

    def __contains__(self, first: object) -> bool:
        return isinstance(first, int) and isinstance(self.slot(first // EXTENT_BLOCKS), ZsPage)

    def __iter__(self) -> Iterator[int]:
        for n, _ in self.radix.leaves():
            leaf = self._leaf(n, False)
            assert leaf is not None
            for s in leaf.slots:
                if isinstance(s, ZsPage):
                    yield s.first

    def dirty(self) -> Iterator[tuple[int, bytes]]:
        self.state.refuse_poisoned()
        yield from self.radix.dirty()
        huge = [c.huge for c in self.state.classes()]
        for leaf in self.leaves.values():
            data = encode_records(leaf.block, leaf.slots, huge)
            if data != leaf.loaded:
                yield leaf.block, data

    def committed(self, written: dict[int, bytes | bytearray]) -> None:
        self.radix.committed()
        for leaf in self.leaves.values():
            if leaf.block in written:
                leaf.loaded = bytes(written[leaf.block])
        # Every leaf is clean now: the cache can shrink without losing anything.
        self.state.trim(self.leaves, lambda x: True)


class FileFrames:
    """The FrameStore of an image: frame n is block n of the file."""

    def __init__(self, state: ImageState, in_use: int) -> None:
        self.state = state
        self.generation = 0
        """Changes whenever a frame may have (FrameStore.generation)."""
        self.load(in_use)

    def load(self, in_use: int) -> None:
        self.generation += 1
        self.dirty: dict[int, bytearray] = {}
        """Frames changed since the last commit (what it writes)."""
        self.clean: dict[int, bytes] = {}
        """Frames read and not changed, as read: immutable, so a reader's view costs no copy."""
        self._in_use = in_use

    def alloc(self, count: int) -> int:
        if not 1 <= count <= EXTENT_BLOCKS:
            raise ZramError(errno.EINVAL, "write", f"a zspage of {count} pages does not fit an extent")
        e = self.state.alloc_extent()
        self.state.fresh.add(e)
        self._in_use += count
        self.generation += 1
        return e * EXTENT_BLOCKS

    def free(self, first: int, count: int) -> None:
        e = first // EXTENT_BLOCKS
        for n in range(first, first + EXTENT_BLOCKS):
            self.dirty.pop(n, None)
            self.clean.pop(n, None)
        self.state.free_extent(e)
        self._in_use -= count
        self.generation += 1

    def _frame(self, n: int) -> bytes | bytearray:
        frame: bytes | bytearray | None = self.dirty.get(n)
        if frame is None:
            frame = self.clean.get(n)
        if frame is None:
            clean = ZERO_FRAME if n // EXTENT_BLOCKS in self.state.fresh else self.state.file.read(n)
            self.state.trim(self.clean, lambda x: True, FRAME_CACHE)
            self.clean[n] = frame = clean
        return frame

    def view(self, frame: int) -> memoryview:
        """The frame to read (read-only unless it is dirty: writers use ``mutable``)."""
        data: bytes | bytearray | None = self.dirty.get(frame)
        if data is None:
            data = self.clean.get(frame)
            if data is None:
                data = self._frame(frame)
        return memoryview(data)

    def span(self, first: int, count: int) -> bytes:
        """Frames ``first ..`` of one extent, to read: one read of the file when none of them is
        in memory (a reader's case), else frame by frame as ``view`` finds them."""
        dirty, clean, fresh = self.dirty, self.clean, self.state.fresh
        frames = range(first, first + count)
        if (dirty or clean or fresh) and (  # (a reader's maps hold none: it goes straight to the file)
            first // EXTENT_BLOCKS in fresh or any(n in dirty or n in clean for n in frames)
        ):
            return b"".join(self._frame(n) for n in frames)
        return self.state.file.read(first, count)

    def mutable(self, frame: int) -> memoryview:
        self.generation += 1
        data = self.dirty.get(frame)
        if data is None:
            e = frame // EXTENT_BLOCKS
            state = self.state
            if e not in state.reserved and not isinstance(state.zspages.slot(e), ZsPage):
                raise ZsCorrupt(f"an object lies outside its zspage (frame {frame})")
            clean = self.clean.pop(frame, None)
            if clean is None:  # a new zspage's frame is zeros, never read
                clean = ZERO_FRAME if e in state.fresh else state.file.read(frame)
            self.dirty[frame] = data = bytearray(clean)
        return memoryview(data)

    def open_new(self, first: int, contents: list[bytes]) -> None:
        """A new zspage's frames, opened holding ``contents``: its extent is fresh (``alloc``
        made it so), so nothing of the file is read and nothing is cached to drop."""
        e = first // EXTENT_BLOCKS
        state = self.state
        if e not in state.fresh or len(contents) > EXTENT_BLOCKS or first % EXTENT_BLOCKS:
            raise ZsCorrupt(f"frames {first}.. are not a new zspage's")
        if e not in state.reserved and not isinstance(state.zspages.slot(e), ZsPage):
            raise ZsCorrupt(f"an object lies outside its zspage (frame {first})")
        self.generation += 1
        frames = range(first, first + len(contents))
        if self.clean:
            for n in frames:
                self.clean.pop(n, None)
        self.dirty.update(zip(frames, map(bytearray, contents), strict=True))

    @property
    def in_place(self) -> dict[int, bytearray]:
        """The frames changed since the last commit: a compiled store path writes them in place
        (zsmalloc.InPlaceFrames); the commit writes them."""
        return self.dirty

    def wrote_in_place(self) -> None:
        self.generation += 1

    def clear(self) -> None:
        self.state.clear()

    def poison(self, reason: str) -> None:
        self.state.poisoned = reason

    @property
    def frames_in_use(self) -> int:
        return self._in_use

    def committed(self) -> None:
        self.dirty.clear()


@dataclass
class ImageState:
    """The allocators and maps of one open image (see the module docstring)."""

    file: BlockFile
    header: Header
    classes: Callable[[], list[SizeClass]]
    """The pool's class table (record decoding needs each class's geometry)."""
    writable: bool = True
    extent_count: int = 1
    free_hint: int = 1
    meta_extent: int = 0
    meta_used: int = EXTENT_BLOCKS
    reserved: set[int] = field(default_factory=set)
    """Extents allocated whose zspage record is not set (between frames.alloc and zspages[k] = z)."""
    pending_meta: set[int] = field(default_factory=set)
    """Metadata extents in use whose record is not written yet (see settle)."""
    fresh: set[int] = field(default_factory=set)
    """Extents allocated by this transaction: their frames start as zeros, unread."""
    freed: set[int] = field(default_factory=set)
    """Extents freed by this transaction (even if reused since): their unwritten blocks are punched."""
    cleared: bool = False
    """reset() happened: the commit truncates the file first."""
    work: Work = field(default_factory=Work)
    poisoned: str | None = None
    """Why the state in memory is half-changed (an operation failed midway): commit refuses it."""
    cursor: int = 1
    """Every free extent below the cursor is in ``free_heap`` (see the module docstring)."""
    free_heap: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        h = self.header
        self.extent_count, self.free_hint = h.extent_count, h.free_hint
        self.cursor = h.free_hint
        self.meta_extent, self.meta_used = h.meta_extent, h.meta_used
        self.table = TableMap(self, h)
        self.zspages = ZsMap(self, h)
        self.frames = FileFrames(self, h.pages_allocated)

    # --- allocation ------------------------------------------------------------

    def _is_free(self, e: int) -> bool:
        s = self.zspages.slot(e)
        if not isinstance(s, int) or s != RECORD_FREE:
            return False
        return e not in self.reserved and e not in self.pending_meta

    def _lowest_free(self) -> int:
        """The lowest free extent (extent_count if none): the heap's least live entry, else the cursor's."""
        heap = self.free_heap
        while heap:
            e = heap[0]
            if e < self.extent_count and e < self.cursor and self._is_free(e):
                return e
            heapq.heappop(heap)  # reused since it was pushed, or dropped by shrink()
        e = self.cursor
        while e < self.extent_count and not self._is_free(e):
            e += 1
        self.work.extents_scanned += e - self.cursor
        self.cursor = e
        return e

    def alloc_extent(self) -> int:
        """The lowest free extent (reused before the file grows)."""
        e = self._lowest_free()
        if e == self.extent_count:
            if e >= MAX_EXTENTS:
                raise ZramError(errno.EFBIG, "write", "the image would exceed 16 TiB")
            self.extent_count += 1
        if self.free_heap and self.free_heap[0] == e:
            heapq.heappop(self.free_heap)
        else:
            self.cursor = e + 1
        self.free_hint = e + 1
        self.reserved.add(e)
        return e

    def free_extent(self, e: int) -> None:
        self.reserved.discard(e)
        self.fresh.discard(e)
        self.freed.add(e)
        self.free_hint = min(self.free_hint, e)
        if e < self.cursor:
            heapq.heappush(self.free_heap, e)

    def alloc_meta_block(self) -> int:
        """A block for a pointer or leaf block: the next one of the current metadata extent.

        A new metadata extent's record is only written by ``settle()``: writing
        it here could need a new record leaf while one is being created.
        """
        if self.meta_used == EXTENT_BLOCKS:
            e = self.alloc_extent()
            self.reserved.discard(e)
            self.pending_meta.add(e)
            self.meta_extent, self.meta_used = e, 0
        block = self.meta_extent * EXTENT_BLOCKS + self.meta_used
        self.meta_used += 1
        return block

    def settle(self) -> None:
        """Record the metadata extents taken since the last settle (before a commit)."""
        while self.pending_meta:
            e = min(self.pending_meta)
            self.zspages.set_slot(e, RECORD_META)  # may take more blocks, even a new extent
            self.pending_meta.discard(e)

    def shrink(self) -> None:
        """Drop free extents from the end, so the commit can give their space back."""
        while self.extent_count > 1:
            e = self.extent_count - 1
            if self.zspages.slot(e) != RECORD_FREE or e in self.reserved or e in self.pending_meta:
                break
            self.extent_count = e
        self.free_hint = min(self.free_hint, self.extent_count)
        self.cursor = min(self.cursor, self.extent_count)

    # --- whole state ------------------------------------------------------------

    def refuse_poisoned(self) -> None:
        """A commit of a half-changed state fails here, before anything is written."""
        if self.poisoned:
            raise ZramError(
                errno.EUCLEAN,
                "commit",
                f"{self.poisoned}; nothing more was committed, the last commit is intact",
            )

    def clear(self) -> None:
        """reset(): forget every frame, record and entry; the commit starts the file afresh."""
        self.cleared = True
        self.poisoned = None  # nothing half-changed survives a reset
        self.extent_count, self.free_hint = 1, 1
        self.cursor = 1
        self.free_heap.clear()
        self.meta_extent, self.meta_used = 0, EXTENT_BLOCKS
        self.reserved.clear()
        self.pending_meta.clear()
        self.fresh.clear()
        self.freed.clear()
        self.header.table_roots = [0] * ROOTS
        self.header.zsmap_roots = [0] * ROOTS
        self.header.table_depth = self.header.zsmap_depth = 0
        self.header.table_entries = self.header.zspage_count = self.header.pages_allocated = 0
        self.table.load(self.header)
        self.zspages.load(self.header)
        self.frames.load(0)

    def trim(self, cache: dict, evictable: Callable[[object], bool], limit: int | None = None) -> None:
        """Drop the oldest evictable entries of a cache that has reached ``limit``.

        Called before an entry is added, so the entry a caller is about to use
        is never the one dropped.
        """
        if limit is None:
            limit = LEAF_CACHE
        if len(cache) < limit:
            return
        for key in [k for k, v in cache.items() if evictable(v)][: len(cache) - limit // 2]:
            del cache[key]
