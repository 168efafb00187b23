"""The image format and its costs: size, laziness, dirty-only commits, space reuse, host errors."""

from __future__ import annotations

import errno
import os
import random
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from zramctl.errors import ZramError
from zramctl.image import image as image_mod
from zramctl.image import io as image_io
from zramctl.image.check import image_usage
from zramctl.image.format import (
    CONFIG_FIELDS,
    ENTRIES_PER_BLOCK,
    EXTENT_BLOCKS,
    EXTENT_SIZE,
    HEADER_LAYOUT,
    MAGIC,
    PAYLOAD,
    RECORD_FREE,
    RECORD_META,
    RECORDS_PER_BLOCK,
    TABLE_ROOTS_OFFSET,
    TYPE_HEADER,
    VERSION,
    ZSMAP_ROOTS_OFFSET,
    block_crc,
    layout_offsets,
)
from zramctl.image.io import read_log
from zramctl.image.maps import ImageState
from zramctl.kernel import sysfs
from zramctl.kernel.zram_drv import ZramConfig, ZramStats
from zramctl.store import Store, check_image

PAGE = 4096
MAN = Path(__file__).resolve().parent.parent / "man" / "zram-image.5"


def new_device(root: Path, size: str = "4M", profile: str = "6.18") -> Store:
    store = Store(root)
    store.hot_add()
    with store.open(0, write=True) as h:
        sysfs.store(h.zram, "compat", profile)
        sysfs.store(h.zram, "disksize", size)
    return store


def pages(n: int, seed: int = 0) -> bytes:
    rnd = random.Random(seed)
    return b"".join((rnd.randbytes(rnd.randrange(100, 2000)) + bytes(PAGE))[:PAGE] for _ in range(n))


def disk_bytes(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def test_every_setting_and_counter_is_persisted() -> None:
    """A new ZramConfig/ZramStats field must be added to the format (and its version) on purpose."""
    assert set(CONFIG_FIELDS) == {f.name for f in fields(ZramConfig)}
    header_names = {name for name, _, _ in HEADER_LAYOUT}
    assert {f.name for f in fields(ZramStats)} <= header_names


def test_manual_matches_the_layout() -> None:
    """Every header field appears in zram-image(5) with its offset and size."""
    text = MAN.read_text()
    for off, size, name, _ in layout_offsets(HEADER_LAYOUT):
        pattern = rf"^{off}\s+{size}\s+{re.escape(name)}\b"
        assert re.search(pattern, text, re.M), (
            f"header field {name} (offset {off}, size {size}) not in the manual"
        )
    for needle in (
        f"{TABLE_ROOTS_OFFSET}",
        f"{ZSMAP_ROOTS_OFFSET}",
        f"{ENTRIES_PER_BLOCK}",
        f"{RECORDS_PER_BLOCK}",
        "ZWAL",
    ):
        assert needle in text


def test_empty_terabyte_device_is_a_few_kib(tmp_path: Path) -> None:
    store = new_device(tmp_path, "1T")
    path = store.image_path(0)
    assert os.stat(path).st_size <= 32 * 1024
    assert disk_bytes(path) <= 32 * 1024
    with store.open(0, write=False) as h:
        assert h.zram.config.disksize == 1 << 40
        assert h.zram.read((1 << 40) - PAGE, PAGE) == bytes(PAGE)
    assert check_image((store, 0), data=True) == []


def test_uninitialised_device_is_one_block(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.hot_add()
    data = store.image_path(0).read_bytes()
    assert len(data) == PAGE and data[:8] == MAGIC
    assert block_crc(0, TYPE_HEADER, data[:PAYLOAD]) == int.from_bytes(data[PAYLOAD:], "little")


def test_metadata_budget(tmp_path: Path) -> None:
    """≤ 16 bytes of metadata per stored page (CRC and ac_time included) and ≤ 16 per zspage.

    Version 2's entry is 16 bytes (version 1's 11 had no flags nor ac_time: issue 11).
    Metadata comes in whole blocks: the last leaf of each tree is partly
    filled, so the budget is checked on the full ones (the marginal cost).
    """
    store = new_device(tmp_path, "16M")
    with store.open(0, write=True) as h:
        h.zram.write(0, pages(4096))
    with store.open(0, write=False) as h:
        use = image_usage(h.image)
    assert use.pages == 4096 and use.zspages > 50
    assert (use.table_blocks - 1) * PAGE <= 16 * use.pages
    assert (use.record_blocks - 1) * PAGE <= 16 * use.zspages
    assert use.table_blocks == -(-use.pages // ENTRIES_PER_BLOCK)  # no pointer block yet
    assert disk_bytes(store.image_path(0)) <= (use.frames + use.table_blocks + use.record_blocks + 16) * PAGE


def count_preads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = os.pread

    def counting(fd: int, n: int, off: int) -> bytes:
        calls.append(off // PAGE)
        return real(fd, n, off)

    monkeypatch.setattr(image_io.os, "pread", counting)
    return calls


def test_open_reads_only_the_first_extent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = new_device(tmp_path, "64M")
    with store.open(0, write=True) as h:
        h.zram.write(0, pages(2000))
        h.zram.write(40 << 20, pages(500, 1))
    calls = count_preads(monkeypatch)
    with store.open(0, write=False) as h:
        assert calls == [0]  # blocks 0..7 in one read: header and class area
        h.zram.read(41 << 20, PAGE)
        assert len(calls) <= 5  # a leaf, a zspage record leaf, one or two frames


def test_commit_writes_only_what_changed(tmp_path: Path) -> None:
    store = new_device(tmp_path, "64M")
    with store.open(0, write=True) as h:
        h.zram.write(0, pages(3000))
    wal = store.wal_path(0)
    with store.open(0, write=True) as h:
        before = h.image.header.txid
        h.zram.write(1234 * PAGE, pages(1, 9))
        records = []
        real = image_io.log_ops

        def spy(fd: int, txid: int, recs, ahead=None):  # type: ignore[no-untyped-def]
            recs = list(recs)
            records.extend(recs)
            if ahead is not None:  # frames written in place ahead of the COMMIT record
                pairs = zip(ahead.blocks, ahead.data, strict=True)
                records.extend(image_io.LogRecord(image_io.WAL_BLOCK, b, d) for b, d in pairs)
            return real(fd, txid, recs, ahead)

        image_io_write = h.image.commit.__globals__
        image_io_write["log_ops"] = spy
        try:
            h.commit()
        finally:
            image_io_write["log_ops"] = real
        blocks = [r for r in records if r.kind == image_io.WAL_BLOCK]
        # header, a table leaf, a zspage record leaf, one or two frames, maybe a class block
        assert 3 <= len(blocks) <= 7
        assert h.image.header.txid == before + 1
    assert os.stat(wal).st_size == 0
    with store.open(0, write=True) as h:  # nothing changed: no commit at all
        txid = h.image.header.txid
    with store.open(0, write=False) as h:
        assert h.image.header.txid == txid


def logged_commit(h, monkeypatch: pytest.MonkeyPatch) -> tuple[int, list, list]:  # type: ignore[no-untyped-def]
    """Commit ``h``: (the log's length, the logged records, the blocks written ahead of COMMIT)."""
    real = image_io.log_ops
    seen: list[tuple[int, list, list]] = []

    def spy(fd, txid, recs, ahead=None):  # type: ignore[no-untyped-def]
        recs = list(recs)
        ops, length = real(fd, txid, recs, ahead)
        seen.append((length, recs, list(ahead.blocks) if ahead is not None else []))
        return ops, length

    monkeypatch.setitem(h.image.commit.__globals__, "log_ops", spy)
    h.commit()
    assert len(seen) == 1
    return seen[0]


def test_fresh_frames_skip_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A big first write's frames go in place ahead of the COMMIT record, not through the log:
    the log holds the metadata and an intent (32 bytes a frame), and the image is the same."""
    data = pages(2000, 5)
    store = new_device(tmp_path / "a", "16M")
    with store.open(0, write=True) as h:
        h.zram.clock = lambda: 1_800_000_000  # both images' access times the same, whenever they run
        h.zram.write(0, data)
        frames = {b for b in h.image.state.frames.dirty}
        length, recs, ahead = logged_commit(h, monkeypatch)
    logged = {r.arg for r in recs if r.kind == image_io.WAL_BLOCK}
    assert set(ahead) == frames
    assert not logged & frames
    assert length < len(frames) * PAGE // 4  # it was more than len(frames) * PAGE before
    intent = [r.arg for r in recs if r.kind in (image_io.WAL_FRESH, image_io.WAL_FRESH_RUNS)]
    assert intent == [] and [r for r in recs if r.kind == image_io.WAL_LENGTH] == []  # ahead's, not recs'
    assert check_image((store, 0), data=True) == []
    # The same write with every frame logged gives the same image, byte for byte.
    monkeypatch.setattr(image_mod, "AHEAD_MIN_BLOCKS", 1 << 40)
    other = new_device(tmp_path / "b", "16M")
    with other.open(0, write=True) as h2:
        h2.zram.clock = lambda: 1_800_000_000
        h2.zram.write(0, data)
        _, recs2, ahead2 = logged_commit(h2, monkeypatch)
    assert ahead2 == [] and frames <= {r.arg for r in recs2 if r.kind == image_io.WAL_BLOCK}
    a, b = store.image_path(0).read_bytes(), other.image_path(0).read_bytes()
    assert len(a) == len(b)
    # Block 0 holds each image's own identity; every other block is the same.
    assert a[4096:] == b[4096:]


def test_frames_holding_committed_data_are_logged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Frames of extents that held committed objects, or any after a reset, still go through the log."""
    store = new_device(tmp_path, "16M")
    with store.open(0, write=True) as h:
        h.zram.write(0, pages(1000, 6))
    with store.open(0, write=True) as h:
        h.zram.discard(0, 1000 * PAGE)
        h.zram.write(0, pages(1000, 7))  # reuses the extents just freed: they hold the last commit
        st = h.image.state
        reused = {b for b in st.frames.dirty if b // 8 in st.freed}
        assert reused
        _, recs, ahead = logged_commit(h, monkeypatch)
    assert not reused & set(ahead)
    assert reused <= {r.arg for r in recs if r.kind == image_io.WAL_BLOCK}
    with store.open(0, write=True) as h:
        sysfs.store(h.zram, "reset", "1")
        sysfs.store(h.zram, "disksize", "16M")
        h.zram.write(0, pages(1000, 8))
        _, recs, ahead = logged_commit(h, monkeypatch)
    assert ahead == []
    assert check_image((store, 0), data=True) == []


def committed_device(root: Path) -> tuple[Store, int]:
    """A 16 MiB device holding 500 pages, committed, and its header's txid."""
    store = new_device(root, "16M")
    with store.open(0, write=True) as h:
        h.zram.write(0, pages(500, 3))
    with store.open(0, write=False) as h:
        return store, h.image.header.txid


def log_bytes(txid: int, records: list[tuple[int, int, bytes]]) -> bytes:
    """A log holding ``records`` (kind, arg, data) of transaction ``txid``, as a writer chains them."""
    crc, out = 0, b""
    for kind, arg, data in records:
        head, crc = image_io._record(kind, txid, arg, data, crc)
        out += head + data
    return out


def test_an_intent_of_another_transaction_is_not_undone(tmp_path: Path) -> None:
    """An incomplete log's intent cuts and punches the image only if it is for the next txid:
    a stale or foreign one is discarded like any incomplete log, and the image is left alone.
    Its FRESH records are the kind a version before FRESH_RUNS wrote: still undone."""
    store, txid = committed_device(tmp_path)
    path = store.image_path(0)
    before = path.read_bytes()

    def intent(tx: int) -> None:
        recs = [(image_io.WAL_LENGTH, 0, b""), (image_io.WAL_FRESH, 8, b""), (image_io.WAL_FRESH, 9, b"")]
        store.wal_path(0).write_bytes(log_bytes(tx, recs))  # no COMMIT record

    for tx in (txid, txid + 2, 0):
        intent(tx)
        with store.open(0, write=True):
            pass
        assert read_log(store.wal_path(0)) is None and store.wal_path(0).stat().st_size == 0
        assert path.read_bytes() == before, tx
    intent(txid + 1)  # this one is believed: the image is cut to "its committed length", 0
    with pytest.raises(ZramError):
        store.open(0, write=True).close()
    assert path.stat().st_size == 0


def test_an_intent_names_runs_of_frames_and_undoing_it_punches_exactly_them(tmp_path: Path) -> None:
    """A commit's intent names the frames it writes ahead as runs (a zspage's frames are
    consecutive): a few records where there was one a frame.  An incomplete log holding it
    gives back exactly those blocks, whatever the file held there."""
    data = pages(3000, 11)
    store = new_device(tmp_path, "64M")
    with store.open(0, write=True) as h:
        h.zram.write(0, pages(16, 1))
    with store.open(0, write=False) as h:
        txid, length = h.image.header.txid, store.image_path(0).stat().st_size
    h = store.open(0, write=True)
    try:  # closed without a commit: the test writes the log of an interrupted one itself
        h.zram.write(0, data)
        st = h.image.state
        early = sorted(h.image._ahead())
        ahead = image_io.Ahead(h.image.file, length, early, [st.frames.dirty[b] for b in early])
        runs = ahead.runs()
        recs = ahead.intent(runs)
    finally:
        h.close()
    assert len(early) > 500 and len(runs) < len(early) // 2
    assert [b for start, n in runs for b in range(start, start + n)] == early
    assert recs[0] == image_io.LogRecord(image_io.WAL_LENGTH, length)
    assert {r.kind for r in recs[1:]} == {image_io.WAL_FRESH_RUNS}
    assert len(recs) == 1 + -(-len(runs) // image_io.FRESH_RUNS_MOST)
    # The log of a commit interrupted after writing them: the intent, no COMMIT record.
    store.wal_path(0).write_bytes(log_bytes(txid + 1, [(r.kind, r.arg, bytes(r.data or b"")) for r in recs]))
    intent = image_io.read_intent(store.wal_path(0))
    assert intent is not None and intent.runs == runs and intent.length == length
    with open(store.image_path(0), "r+b") as f:  # what a crash left in those blocks
        for b in early[::7]:
            f.seek(b * PAGE)
            f.write(b"\xa5" * PAGE)
    with store.open(0, write=True):
        pass
    assert store.image_path(0).stat().st_size == length and store.wal_path(0).stat().st_size == 0
    assert check_image((store, 0), data=True) == []


@pytest.mark.parametrize(
    "payload, arg",
    [
        (b"\x01" * 15, 1),  # not whole pairs
        (image_io.FRESH_RUN.pack(8, 0), 1),  # a run of no blocks
        (image_io.FRESH_RUN.pack(8, 2) + image_io.FRESH_RUN.pack(9, 1), 2),  # overlapping: not in order
        (image_io.FRESH_RUN.pack(8, 2), 2),  # arg says more pairs than the data holds
        (image_io.FRESH_RUN.pack(1 << 62, 1 << 62), 1),  # past any file
    ],
)
def test_an_intent_no_writer_makes_ends_the_intent_there(tmp_path: Path, payload: bytes, arg: int) -> None:
    """A FRESH_RUNS record that is not what a writer makes ends the intent's valid records: the
    runs before it are undone, nothing after it, and a complete log holding it is not complete."""
    store, txid = committed_device(tmp_path)
    good, after = image_io.FRESH_RUN.pack(2, 3), image_io.FRESH_RUN.pack(40, 1)
    length = store.image_path(0).stat().st_size
    recs = [(image_io.WAL_LENGTH, length, b""), (image_io.WAL_FRESH_RUNS, 1, good)]
    recs += [(image_io.WAL_FRESH_RUNS, arg, payload), (image_io.WAL_FRESH_RUNS, 1, after)]
    store.wal_path(0).write_bytes(log_bytes(txid + 1, recs))
    intent = image_io.read_intent(store.wal_path(0))
    assert intent is not None and intent.runs == [(2, 3)]
    store.wal_path(0).write_bytes(log_bytes(txid + 1, [*recs, (image_io.WAL_COMMIT, len(recs), b"")]))
    assert read_log(store.wal_path(0)) is None


def test_recovery_keeps_only_the_runs_inside_the_image(tmp_path: Path) -> None:
    """Runs past the image's end or the intent's length are not kept when recovering (nothing there
    needs punching): what an intent costs is bounded by the image, not by a forged log's length."""
    store, txid = committed_device(tmp_path)
    size = store.image_path(0).stat().st_size
    first = -(-size // PAGE) + 10
    recs = [(image_io.WAL_LENGTH, size, b"")]
    for k in range(64):  # runs in block order, every one past the image's end
        data = b"".join(image_io.FRESH_RUN.pack(first + 2 * (256 * k + i), 1) for i in range(256))
        recs.append((image_io.WAL_FRESH_RUNS, 256, data))
    store.wal_path(0).write_bytes(log_bytes(txid + 1, recs))
    everything = image_io.read_intent(store.wal_path(0))
    assert everything is not None and len(everything.runs) == 64 * 256
    kept = image_io.read_intent(store.wal_path(0), size)
    assert kept is not None and kept.runs == []
    before = store.image_path(0).read_bytes()
    with store.open(0, write=True):  # recovery: the intent undone, nothing of the image touched
        pass
    assert store.image_path(0).read_bytes() == before
    assert store.image_path(0).stat().st_size == size and store.wal_path(0).stat().st_size == 0
    assert check_image((store, 0), data=True) == []


def test_undoing_an_intent_punches_only_inside_the_committed_length(tmp_path: Path) -> None:
    """Runs are clipped to the committed length (the file is cut to it first) and merged where
    they touch: one forged run of 2^50 blocks is one punch, not a hang."""
    path = tmp_path / "img"
    path.write_bytes(b"\x5a" * (64 * PAGE))
    fd = os.open(path, os.O_RDWR)
    try:
        file = image_io.BlockFile(fd, image_io.CrashPoints())
        calls: list[image_io.Op] = []
        real = image_io.run_ops

        def spy(ops, crash):  # type: ignore[no-untyped-def]
            calls.extend(ops)
            return real(ops, crash)

        image_io.run_ops, saved = spy, image_io.run_ops
        try:
            image_io.undo_ahead(file, 48 * PAGE, [(4, 2), (6, 3), (8, 1), (20, 1 << 50)])
        finally:
            image_io.run_ops = saved
    finally:
        os.close(fd)
    punches = [(op.arg // PAGE, op.length // PAGE) for op in calls if op.kind == image_io.OP_PUNCH]
    assert punches == [(4, 5), (20, 28)]
    body = path.read_bytes()
    assert len(body) == 48 * PAGE
    zeros = {b for b in range(48) if body[b * PAGE : (b + 1) * PAGE] == bytes(PAGE)}
    assert zeros == set(range(4, 9)) | set(range(20, 48))


def test_disk_usage_follows_mem_used(tmp_path: Path) -> None:
    store = new_device(tmp_path, "16M")
    path = store.image_path(0)
    with store.open(0, write=True) as h:
        h.zram.write(0, pages(2048))
        full = h.zram.mem_used_pages() * PAGE
    assert full <= disk_bytes(path) <= full + 64 * 1024
    with store.open(0, write=True) as h:
        h.zram.discard(0, 1792 * PAGE)
        h.zram.compact()
        low = h.zram.mem_used_pages() * PAGE
    assert low < full // 2
    assert disk_bytes(path) <= low + 64 * 1024
    with store.open(0, write=True) as h:
        h.zram.discard(0, 16 << 20)
        assert h.zram.mem_used_pages() == 0
    assert disk_bytes(path) <= 64 * 1024
    with store.open(0, write=False) as h:  # metadata extents stay (holes before them)
        st = h.image.state
        last_meta = max(e for e in range(st.extent_count) if st.zspages.slot(e) == RECORD_META)
    assert os.stat(path).st_size == (last_meta + 1) * EXTENT_SIZE
    assert check_image((store, 0), data=True) == []


def _unused_below_top(state: ImageState) -> list[int]:
    """Extents below extent_count that hold nothing: none, when every allocation took the lowest free one."""
    return [
        e
        for e in range(1, state.extent_count)
        if state.zspages.slot(e) == RECORD_FREE and e not in state.pending_meta and e not in state.reserved
    ]


def test_freed_extents_are_reused_lowest_first(tmp_path: Path) -> None:
    store = new_device(tmp_path, "16M")
    with store.open(0, write=True) as h:
        h.zram.write(0, pages(1024))
        top = h.image.state.extent_count
    for round_ in range(3):
        with store.open(0, write=True) as h:
            h.zram.discard(0, 1024 * PAGE)
        with store.open(0, write=True) as h:
            h.zram.write(0, pages(1024, round_ + 1))
            # How many zspages the data needs depends on the compressor: the file holds them
            # with no free extent left below its end, and grows by no more than the data does.
            assert _unused_below_top(h.image.state) == []
            assert h.image.state.extent_count <= top * 5 // 4
    with store.open(0, write=True) as h:
        h.zram.discard(512 * PAGE, 512 * PAGE)
        h.commit()
        hint = h.image.state.free_hint
        h.zram.write(900 * PAGE, pages(1, 5))
        first = max(k for k in h.zram.pool.zspages)  # noqa: F841 - the new zspage exists
        assert h.image.state.free_hint >= hint


def test_reset_truncates(tmp_path: Path) -> None:
    store = new_device(tmp_path, "8M")
    with store.open(0, write=True) as h:
        h.zram.write(0, pages(1000))
    with store.open(0, write=True) as h:
        sysfs.store(h.zram, "reset", "1")
    assert os.stat(store.image_path(0)).st_size == PAGE
    with store.open(0, write=False) as h:
        assert not h.zram.initialized and h.zram.stats == ZramStats()


def test_sparse_writes_grow_the_tree(tmp_path: Path) -> None:
    """Pages far apart on a 1 TiB device: pointer blocks appear; cost stays per page."""
    store = new_device(tmp_path, "1T")
    spots = [0, 5 << 30, 300 << 30, (1 << 40) - PAGE]
    with store.open(0, write=True) as h:
        for i, off in enumerate(spots):
            h.zram.write(off, pages(1, i))
    with store.open(0, write=False) as h:
        assert h.image.header.table_depth >= 1
        for i, off in enumerate(spots):
            assert h.zram.read(off, PAGE) == pages(1, i)
        use = image_usage(h.image)
    assert use.table_blocks <= 4 * 3
    assert check_image((store, 0), data=True) == []
    assert disk_bytes(store.image_path(0)) <= 200 * 1024


def test_bad_magic_and_newer_version(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.hot_add()
    path = store.image_path(0)
    data = bytearray(path.read_bytes())
    data[8:12] = (VERSION + 1).to_bytes(4, "little")
    data[PAYLOAD:] = block_crc(0, TYPE_HEADER, bytes(data[:PAYLOAD])).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(ZramError) as info:
        store.open(0, write=False)
    assert info.value.errno == errno.ENOTSUP and f"version {VERSION + 1}" in str(info.value.detail)
    path.write_bytes(b"not an image at all" * 300)
    with pytest.raises(ZramError) as info:
        store.open(0, write=False)
    assert info.value.errno == errno.EUCLEAN and "not a zram image" in str(info.value.detail)
    path.write_bytes(b"")
    with pytest.raises(ZramError) as info:
        store.open(0, write=False)
    assert info.value.errno == errno.EUCLEAN


# Fills a device under a 1 MiB file-size limit (soft: it can be lifted after).
EFBIG_CHILD = """
import os, resource, sys
from zramctl.store import Store
from zramctl.errors import ZramError
s = Store(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))
committed = 0
try:
    with s.open(0, write=True) as h:
        for i in range(256):
            h.zram.write(i * 16384, os.urandom(16384))
            h.commit()
            committed = i + 1
except ZramError as e:
    print(e.errno, committed, e)
"""


def test_file_size_limit_fails_cleanly(tmp_path: Path) -> None:
    """EFBIG (like ENOSPC) fails the commit in words; the last commit is intact and clean."""
    store = new_device(tmp_path, "4M")
    out = subprocess.run(
        [sys.executable, "-c", EFBIG_CHILD, str(tmp_path)], capture_output=True, text=True, check=True
    ).stdout
    code, committed, message = out.split(" ", 2)
    assert int(code) == errno.EFBIG
    assert "the last commit is intact" in message
    assert read_log(store.wal_path(0)) is None
    assert check_image((store, 0), data=True) == []
    with store.open(0, write=False) as h:
        assert h.zram.stats.pages_stored == int(committed) * 4
        assert h.zram.read(int(committed) * 16384, PAGE) == bytes(PAGE)


@pytest.mark.parametrize("where", ["fallocate", "log-write", "log-fsync"])
def test_disk_full_before_the_commit_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """ENOSPC while reserving space or writing the log: the command fails in words, nothing changes."""
    store = new_device(tmp_path, "4M")
    with store.open(0, write=True) as h:
        h.zram.write(0, pages(64))
    before = store.image_path(0).read_bytes()

    def full(*args: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    h = store.open(0, write=True)
    h.zram.write(0, pages(200, 3))
    with monkeypatch.context() as m:
        m.setattr(image_io, "_run_compiled", image_io.run_reference)  # whose os calls can be made to fail
        if where == "fallocate":
            m.setattr(image_io.os, "posix_fallocate", full)
        elif where == "log-write":
            m.setattr(image_io.os, "pwritev", full)
        else:
            m.setattr(image_io.os, "fsync", full)
        with pytest.raises(ZramError) as info:
            h.commit()
    assert info.value.errno == errno.ENOSPC
    assert "the last commit is intact" in str(info.value.detail)
    with pytest.raises(ZramError):
        h.commit()  # the handle is spent: its state is no longer what is on disk
    h.close()
    assert os.stat(store.wal_path(0)).st_size == 0
    assert store.image_path(0).read_bytes()[: len(before)] == before
    assert check_image((store, 0), data=True) == []
    with store.open(0, write=False) as h:
        assert h.zram.read(0, 64 * PAGE) == pages(64)


def test_tiny_caches_lose_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With caches of a few blocks, eviction runs all the time: every write must still land."""
    from zramctl.image import maps as image_maps

    monkeypatch.setattr(image_maps, "LEAF_CACHE", 4)
    monkeypatch.setattr(image_maps, "FRAME_CACHE", 4)
    store = new_device(tmp_path, "64M")
    rnd = random.Random(3)
    model: dict[int, bytes] = {}
    for _ in range(3):
        with store.open(0, write=True) as h:
            for _ in range(300):
                index = rnd.randrange(16384)
                data = pages(1, rnd.randrange(1 << 30))
                h.zram.write(index * PAGE, data)
                model[index] = data
            for index in rnd.sample(sorted(model), 20):
                assert h.zram.read(index * PAGE, PAGE) == model[index]
    with store.open(0, write=False) as h:
        for index, data in model.items():
            assert h.zram.read(index * PAGE, PAGE) == data
    assert check_image((store, 0), data=True) == []


def test_new_frames_are_opened_only_for_a_new_zspage(tmp_path: Path) -> None:
    """FileFrames.open_new (a new zspage's frames, opened holding its free chain without reading
    the file) refuses frames of an extent this transaction did not just allocate, and frames
    not at an extent's start: such frames may hold committed objects."""
    from zramctl.kernel.zsmalloc import ZsCorrupt

    store = new_device(tmp_path, "16M")
    with store.open(0, write=True) as h:
        h.zram.write(0, pages(200, 4))
    with store.open(0, write=True) as h:
        frames = h.image.state.frames
        first = next(iter(h.image.state.zspages))  # a committed zspage's extent
        for where in (first, first + 1):
            with pytest.raises(ZsCorrupt, match="not a new zspage's"):
                frames.open_new(where, [bytes(PAGE)])
        assert not frames.dirty
        h.zram.write(300 * PAGE, pages(50, 5))  # new zspages: their frames opened with open_new
        fresh = h.image.state.fresh
        assert fresh and all(e * EXTENT_BLOCKS in frames.dirty for e in fresh)
    assert check_image((store, 0), data=True) == []
