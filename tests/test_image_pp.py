"""The image's post-processing state (issue 11): format version 2, version 1 images, blobs and
the backing file.

- every entry flag and ac_time, every new setting and counter, survive a commit and a reopen;
- a version 1 image (tests/data, made by the version 1 code) reads as it is, and a writable
  open converts it to version 2 in one commit, crash-safe at every durable point;
- dictionaries and the backing_dev path are kept in the image (blobs), freed when replaced;
- the backing file: lowest free block first, never a block the last commit still names.
"""

from __future__ import annotations

import errno
import gzip
import importlib.util
import os
import random
import shutil
import signal
from pathlib import Path

import pytest

from zramctl.errors import ZramError
from zramctl.image import format as fmt
from zramctl.image.backing import FileBackingDev, open_backing_file
from zramctl.image.check import device_state
from zramctl.image.io import CrashPoints
from zramctl.kernel import sysfs, zram_drv
from zramctl.kernel.zram_drv import (
    ZRAM_COMP_PRIORITY_SHIFT,
    ZRAM_HUGE,
    ZRAM_IDLE,
    ZRAM_INCOMPRESSIBLE,
    ZRAM_PP_SLOT,
    ZRAM_SAME,
    ZRAM_WB,
)
from zramctl.store import Store, check_image

PAGE = 4096
DATA = Path(__file__).resolve().parent / "data"
NOW = 1_800_000_000


def _fixture_module():
    spec = importlib.util.spec_from_file_location("make_v1_fixture", DATA / "make_v1_fixture.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def v1_pages() -> dict[int, bytes]:
    """The pages of the version 1 fixtures (one definition: tests/data/make_v1_fixture.py)."""
    return _fixture_module().v1_pages()


def fixture_image(root: Path, dev: int) -> Path:
    """A store at ``root`` holding fixture ``dev`` (0: profile 6.18, 1: 3.11) as zram0; its image path."""
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = root / "zram0.img"
    path.write_bytes(gzip.decompress((DATA / f"v1-zram{dev}.img.gz").read_bytes()))
    path.chmod(0o600)
    return path


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zram_drv, "wall_clock", lambda: NOW)


# --- entries ---------------------------------------------------------------------------------


def random_entry(rnd: random.Random) -> zram_drv.Entry:
    kind = rnd.randrange(3)
    flags = (ZRAM_IDLE if rnd.random() < 0.5 else 0) | (ZRAM_INCOMPRESSIBLE if rnd.random() < 0.5 else 0)
    ac_time = rnd.choice([0, NOW, (1 << 36) - 1, rnd.randrange(1 << 36)])
    if kind == 0:
        return (flags | ZRAM_SAME, rnd.getrandbits(64), 0, ac_time)
    if kind == 1:
        return (flags | ZRAM_WB, rnd.randrange(1, 1 << 40), rnd.getrandbits(32), ac_time)
    huge = rnd.random() < 0.3
    size = PAGE if huge else rnd.randrange(1, PAGE + 1)
    flags |= size | (ZRAM_HUGE if huge else 0) | rnd.randrange(4) << ZRAM_COMP_PRIORITY_SHIFT
    handle = (rnd.randrange(1, 1000) * fmt.EXTENT_BLOCKS) << 11 | rnd.randrange(2048)
    return (flags, handle, rnd.getrandbits(32), ac_time)


def test_every_entry_round_trips() -> None:
    rnd = random.Random(11)
    for _ in range(20):
        entries = [random_entry(rnd) if rnd.random() < 0.8 else None for _ in range(fmt.ENTRIES_PER_BLOCK)]
        block = fmt.encode_table(8, entries)
        assert fmt.decode_table(8, block, 1000) == entries


def test_a_transient_or_unknown_flag_never_reaches_the_image() -> None:
    with pytest.raises(AssertionError, match="PP_SLOT"):
        fmt.encode_entry((100 | ZRAM_PP_SLOT, 8 << 11, 0, 0))
    with pytest.raises(AssertionError):
        fmt.encode_entry((100 | 1 << 30, 8 << 11, 0, 0))
    with pytest.raises(AssertionError):
        fmt.encode_entry((ZRAM_WB, 0, 0, 0))  # block 0 is never used
    with pytest.raises(AssertionError):
        fmt.encode_entry((100, 8 << 11, 0, 1 << 36))  # ac_time past 36 bits


OBJ = fmt.E_KIND.put(fmt.KIND_OBJECT)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (fmt.E_KIND.put(fmt.KIND_WB), "block 0"),
        (fmt.E_KIND.put(fmt.KIND_WB) | fmt.E_BLOCK.put(3) | fmt.E_HUGE.put(1), "does not use"),
        (fmt.E_KIND.put(fmt.KIND_SAME) | fmt.E_SIZE.put(5), "does not use"),
        (OBJ | fmt.E_SIZE.put(100) | fmt.E_KEY.put(1) | fmt.E_HUGE.put(1), "range"),
        (OBJ | fmt.E_SIZE.put(0) | fmt.E_KEY.put(1), "range"),
        (OBJ | fmt.E_SIZE.put(10) | fmt.E_KEY.put(7), "range"),
        (fmt.E_KIND.put(fmt.KIND_SAME) | fmt.E_FILL.put(1) | 1 << 90, "does not use"),
    ],
)
def test_a_bad_entry_is_corruption(value: int, why: str) -> None:
    body = value.to_bytes(fmt.ENTRY_SIZE, "little")
    block = fmt.seal(8, fmt.TYPE_TABLE, body)
    with pytest.raises(ZramError) as e:
        fmt.decode_table(8, block, 7)
    assert e.value.errno == errno.EUCLEAN and "entry 0" in str(e.value.detail) and why in str(e.value.detail)


# --- settings and counters -------------------------------------------------------------------


def new_store(root: Path) -> Store:
    store = Store(root)
    store.hot_add()
    return store


def test_every_new_setting_and_counter_survives_a_reopen(tmp_path: Path) -> None:
    store = new_store(tmp_path / "r")
    backing = tmp_path / "backing"
    backing.write_bytes(bytes(64 * PAGE))
    big = random.Random(1).randbytes(fmt.BLOB_DATA * 300 + 17)  # > 1 MiB: a chain over many extents
    with store.open(0, write=True) as h:
        z = h.zram
        c = z.config
        c.backing_dev = str(backing)
        c.writeback_limit, c.writeback_limit_enable = 12345, True
        c.recomp_algorithms = ["zstd", None, "deflate"]
        c.params[0].level, c.params[0].dict_data = -3, b"small dictionary"
        c.params[1].dict_data = big
        c.params[3].level, c.params[3].deflate_winbits = 9, -12
        z.stats.bd_count, z.stats.bd_reads, z.stats.bd_writes = 0, 8, 9
        want = device_state(z)
    with store.open(0, write=False) as h:
        assert device_state(h.zram) == want
        assert h.image.header.version == fmt.VERSION
    assert check_image((store, 0)) == []
    # A setting replaced: its old blob's extents are freed (the file does not grow each time).
    sizes = []
    for i in range(3):
        with store.open(0, write=True) as h:
            h.zram.config.params[1].dict_data = big[i:]
            h.zram.config.backing_dev = str(tmp_path / f"other{i}")
        sizes.append(os.stat(store.image_path(0)).st_size)
        assert check_image((store, 0)) == []
    assert sizes[0] == sizes[1] == sizes[2]
    with store.open(0, write=False) as h:
        assert h.zram.config.params[1].dict_data == big[2:]
        assert h.zram.config.backing_dev == str(tmp_path / "other2")
    with store.open(0, write=True) as h:
        sysfs.store(h.zram, "reset", "1")
    with store.open(0, write=False) as h:
        assert h.zram.config.params[1].dict_data is None and h.zram.config.backing_dev is None
        assert not h.image.blobs
    assert os.stat(store.image_path(0)).st_size == PAGE


def test_a_damaged_blob_is_euclean_never_a_wrong_setting(tmp_path: Path) -> None:
    store = new_store(tmp_path / "r")
    with store.open(0, write=True) as h:
        h.zram.config.params[0].dict_data = bytes(range(256)) * 40
    with store.open(0, write=False) as h:
        first = h.image.header.blobs["dict0"].block
    path = store.image_path(0)
    data = bytearray(path.read_bytes())
    data[first * PAGE + 100] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ZramError) as e:
        store.open(0, write=False)
    assert e.value.errno == errno.EUCLEAN and "blob block" in str(e.value.detail)


# --- version 1 -------------------------------------------------------------------------------


def read_all(store: Store, dev: int = 0) -> dict[int, bytes]:
    with store.open(dev, write=False) as h:
        return {p: h.zram.read(p * PAGE, PAGE) for p in v1_pages()}


@pytest.mark.parametrize("dev", [0, 1])
def test_a_version_1_image_reads_as_it_is(tmp_path: Path, dev: int) -> None:
    path = fixture_image(tmp_path / "r", dev)
    before = path.read_bytes()
    store = Store(tmp_path / "r")
    assert read_all(store) == v1_pages()
    with store.open(0, write=False) as h:
        assert h.image.header.version == 1
    assert check_image((store, 0), data=True) == []
    assert path.read_bytes() == before


@pytest.mark.parametrize("dev", [0, 1])
def test_a_writable_open_converts_version_1(tmp_path: Path, dev: int) -> None:
    fixture_image(tmp_path / "r", dev)
    store = Store(tmp_path / "r")
    with store.open(0, write=False) as h:
        old = device_state(h.zram)
    with store.open(0, write=True) as h:
        assert h.image.header.version == fmt.VERSION
    with store.open(0, write=False) as h:
        assert h.image.header.version == fmt.VERSION
        assert device_state(h.zram) == old
        assert h.image.state.table.per == fmt.ENTRIES_PER_BLOCK
    assert read_all(store) == v1_pages()
    assert check_image((store, 0), data=True) == []
    with store.open(0, write=True) as h:  # and it works on as any version 2 device
        h.zram.write(2000 * PAGE, b"x" * PAGE)
        h.zram.discard(2 * PAGE, PAGE)
    with store.open(0, write=False) as h:
        assert h.zram.read(2000 * PAGE, PAGE) == b"x" * PAGE and h.zram.read(2 * PAGE, PAGE) == bytes(PAGE)
    assert check_image((store, 0), data=True) == []


def test_conversion_frees_the_extents_of_the_old_table(tmp_path: Path) -> None:
    """A big version 1 table: its leaves' metadata extents are given back, not kept as dead weight."""
    fixture_image(tmp_path / "r", 0)
    store = Store(tmp_path / "r")
    with store.open(0, write=False) as h:
        old_table = {b for _, b in h.image.state.table.radix.leaves()}
    with store.open(0, write=True) as h:
        st = h.image.state
        new_table = {b for _, b in st.table.radix.leaves()}
        live_meta = {e for e in range(st.extent_count) if st.zspages.slot(e) == fmt.RECORD_META}
    assert old_table and new_table
    dead = {b // fmt.EXTENT_BLOCKS for b in old_table} - {b // fmt.EXTENT_BLOCKS for b in new_table}
    assert not (dead & live_meta) or dead & live_meta <= {st.meta_extent}


def run_child(root: Path, crash_at: int) -> bool:
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            store = Store(root)
            store._crash.crash_at = crash_at
            store.open(0, write=True).close()
        except BaseException:
            code = 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        return True
    assert os.WEXITSTATUS(status) == 0
    return False


def test_a_crash_during_conversion_keeps_version_1_or_gives_version_2(tmp_path: Path) -> None:
    base = tmp_path / "base"
    fixture_image(base, 0)
    with Store(base).open(0, write=False) as h:
        want = device_state(h.zram)
    seen = set()
    n = 1
    while True:
        work = tmp_path / "work"
        if work.exists():
            shutil.rmtree(work)
        shutil.copytree(base, work)
        died = run_child(work, n)
        store = Store(work)
        assert check_image((store, 0), data=True) == [], f"point {n}"
        with store.open(0, write=False) as h:
            seen.add(h.image.header.version)
            assert device_state(h.zram) == want, f"point {n}"
        assert read_all(store) == v1_pages(), f"point {n}"
        if not died:
            break
        n += 1
    assert seen == {1, 2} and n > 3


# --- the backing file ------------------------------------------------------------------------


def backing_file(tmp_path: Path, blocks: int = 16) -> Path:
    path = tmp_path / "backing.img"
    path.write_bytes(bytes(blocks * PAGE))
    return path


def test_blocks_are_lowest_free_first_and_never_one_the_last_commit_names(tmp_path: Path) -> None:
    path = str(backing_file(tmp_path, 8))
    dev = open_backing_file(path, writable=True, crash=CrashPoints(), in_use=lambda: [3, 5])
    try:
        assert dev.nr_pages == 8
        got = [dev.alloc_block() for _ in range(4)]
        assert got == [1, 2, 4, 6]
        dev.free_block(2)
        dev.free_block(3)
        assert dev.alloc_block() == 7 and dev.alloc_block() is None  # 2, 3: the last commit names them
        dev.committed()
        assert dev.alloc_block() == 2 and dev.alloc_block() == 3 and dev.alloc_block() is None
    finally:
        dev.shut()


def test_a_block_freed_before_the_first_allocation_stays_taken(tmp_path: Path) -> None:
    """The set is derived at the first allocation: a block freed before it is still the last commit's."""
    path = str(backing_file(tmp_path, 4))
    dev = open_backing_file(path, writable=True, crash=CrashPoints(), in_use=lambda: [2])
    try:
        dev.free_block(1)
        assert dev.alloc_block() == 3 and dev.alloc_block() is None
    finally:
        dev.shut()


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda p: p.write_bytes(b""), errno.EINVAL),
        (lambda p: p.write_bytes(b"x" * 100), errno.EINVAL),
        (lambda p: p.mkdir(), errno.EISDIR),
        (lambda p: os.mkfifo(p), errno.ENOTBLK),
        (lambda p: p.write_bytes(fmt.MAGIC + bytes(PAGE)), errno.EINVAL),
        (lambda p: None, errno.ENOENT),
    ],
    ids=["empty", "short", "directory", "fifo", "an-image", "missing"],
)
def test_what_cannot_be_a_backing_file(tmp_path: Path, make, code: int) -> None:
    path = tmp_path / "b"
    make(path)
    with pytest.raises(ZramError) as e:
        open_backing_file(str(path), writable=True, crash=CrashPoints(), in_use=list)
    assert e.value.errno == code and str(path) in str(e.value.detail)


def test_a_relative_path_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backing_file(tmp_path)
    monkeypatch.chdir(tmp_path)
    dev = open_backing_file("backing.img", writable=True, crash=CrashPoints(), in_use=list)
    try:
        assert isinstance(dev, FileBackingDev) and dev.path == str(tmp_path / "backing.img")
    finally:
        dev.shut()


def wb_device(tmp_path: Path, pages: int = 6) -> tuple[Store, Path]:
    """A device with ``pages`` pages written back to tmp_path/backing.img."""
    backing = backing_file(tmp_path, 32)
    store = new_store(tmp_path / "r")
    with store.open(0, write=True) as h:
        sysfs.store(h.zram, "backing_dev", str(backing))
        sysfs.store(h.zram, "disksize", "1M")
        for i in range(pages + 2):
            h.zram.write(i * PAGE, random.Random(i).randbytes(PAGE))
        sysfs.store(h.zram, "writeback", f"page_indexes=0-{pages - 1}")
        assert h.zram.stats.bd_count == pages
    return store, backing


def test_a_missing_backing_file_fails_only_what_needs_it(tmp_path: Path) -> None:
    store, backing = wb_device(tmp_path)
    backing.unlink()
    with store.open(0, write=True) as h:
        z = h.zram
        assert sysfs.show(z, "backing_dev") == f"{backing}\n"
        assert sysfs.show(z, "bd_stat").split() == ["6", "0", "6"]
        assert z.read(7 * PAGE, PAGE) == random.Random(7).randbytes(PAGE)  # not written back
        with pytest.raises(ZramError) as e:
            z.read(0, PAGE)
        assert e.value.errno == errno.EIO and str(backing) in str(e.value) and "\n" not in str(e.value)
        z.write(0, bytes(PAGE))  # overwriting a written-back page frees its block: no file needed
    with store.open(0, write=False) as h:
        assert h.zram.stats.bd_count == 5
    problems = check_image((store, 0))
    assert len(problems) == 1 and str(backing) in problems[0] and "cannot be used" in problems[0]


def test_check_finds_a_block_held_twice_or_out_of_range(tmp_path: Path) -> None:
    store, backing = wb_device(tmp_path, 3)
    assert check_image((store, 0), data=True) == []
    with store.open(0, write=True) as h:
        flags, blk, crc, t = h.zram.table[0]
        h.zram.table[1] = (flags, blk, crc, t)  # pages 0 and 1 on one block
        h.zram.table[2] = (flags, 999, crc, t)  # past the end of the file
    problems = check_image((store, 0))
    assert any(f"same block {blk}" in p for p in problems)
    assert any("block 999, outside 1..31" in p for p in problems)


def test_check_finds_a_blob_extent_nobody_holds(tmp_path: Path) -> None:
    store = new_store(tmp_path / "r")
    with store.open(0, write=True) as h:
        h.zram.config.params[0].dict_data = b"d" * 100
    with store.open(0, write=True) as h:
        h.image.blobs.clear()  # forgets the blob: the commit lays it out anew, the old extent stays
        h.zram.config.params[0].dict_data = b"e" * 100
    problems = check_image((store, 0))
    assert any("blob extent but no setting's blob is in it" in p for p in problems)


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda p: p.write_bytes(b""), errno.EINVAL),
        (lambda p: p.mkdir(), errno.EINVAL),
        (lambda p: os.mkfifo(p), errno.EINVAL),
        (lambda p: None, errno.ENOENT),
    ],
    ids=["empty", "directory", "fifo", "missing"],
)
def test_what_cannot_be_a_dictionary(tmp_path: Path, make, code: int) -> None:
    from zramctl.image.backing import read_dictionary

    path = tmp_path / "d"
    make(path)
    with pytest.raises(ZramError) as e:
        read_dictionary(str(path))
    assert e.value.errno == code and str(path) in str(e.value.detail)


def test_a_dictionary_is_bounded(tmp_path: Path) -> None:
    from zramctl.image.backing import read_dictionary

    path = tmp_path / "d"
    with open(path, "wb") as f:
        f.truncate(fmt.MAX_DICT)
    assert len(read_dictionary(str(path))) == fmt.MAX_DICT
    with open(path, "ab") as f:
        f.write(b"x")
    with pytest.raises(ZramError) as e:
        read_dictionary(str(path))
    assert e.value.errno == errno.EFBIG


def test_a_dictionary_set_through_sysfs_is_kept_in_the_image(tmp_path: Path) -> None:
    """algorithm_params dict=PATH reads the file once: the device stands alone after."""
    path = tmp_path / "dict"
    path.write_bytes(b"".join(b"common words of the pages %d " % i for i in range(200)))
    store = new_store(tmp_path / "r")
    with store.open(0, write=True) as h:
        sysfs.store(h.zram, "comp_algorithm", "zstd")
        sysfs.store(h.zram, "algorithm_params", f"dict={path}")
        sysfs.store(h.zram, "disksize", "1M")
        h.zram.write(0, (b"common words of the pages 7 " * 200)[:PAGE])
    want = path.read_bytes()
    path.unlink()
    with store.open(0, write=False) as h:
        assert h.zram.config.params[0].dict_data == want
        assert h.zram.read(0, PAGE) == (b"common words of the pages 7 " * 200)[:PAGE]
    assert check_image((store, 0), data=True) == []
