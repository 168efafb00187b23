"""The zram device model per profile (``drivers/block/zram/zram_drv.c``, 6.18 and 3.14): same-filled and
incompressible pages, overwrite order, mem_limit, mem_used_max, discard, partial
I/O, reset, disksize, algorithm selection and corrupted objects."""

from __future__ import annotations

import errno
import random
import struct

import pytest

from zramctl.errors import CompressionError, ZramError
from zramctl.kernel import sysfs
from zramctl.kernel.profiles import PAGE_SIZE
from zramctl.kernel.zcomp import get_backend, safe_decompress
from zramctl.kernel.zram_drv import ZRAM_HUGE, ZRAM_SAME, ZRAM_SIZE_MASK, Zram, ZramConfig, is_same_filled
from zramctl.kernel.zsmalloc import decode_handle

PAGE = PAGE_SIZE
PROFILES = ("3.11", "6.18")


def device(compat: str = "6.18", disksize: int = 64 * PAGE, algorithm: str = "lzo") -> Zram:
    z = Zram(ZramConfig(compat=compat, comp_algorithm=algorithm))
    z.init(disksize)
    return z


def lzo_page(seed: int, run: int, gap: int) -> bytes:
    """Runs of ``run`` random bytes separated by ``gap`` zeros (seeds found for exact lzo sizes)."""
    r = random.Random(seed).randbytes(PAGE)
    out = bytearray()
    i = 0
    while len(out) < PAGE:
        out += r[i : i + run] + bytes(gap)
        i += run
    return bytes(out[:PAGE])


# Pages whose kernel lzo (LZO1X-1, 2^13 dictionary) size is exactly the key: the thresholds' edges.
LZO_SIZED = {
    2048: (9, 16, 24),
    2049: (0, 16, 24),
    3072: (78, 32, 18),
    3073: (44, 64, 29),
    3624: (32, 32, 10),
    3625: (21, 8, 4),
}


@pytest.fixture(scope="module")
def sized() -> dict[int, bytes]:
    lzo = get_backend("lzo")
    pages = {size: lzo_page(*args) for size, args in LZO_SIZED.items()}
    for size, page in pages.items():
        assert len(lzo.compress(page)) == size, "the lzo compressor changed its output: find new seeds"
    return pages


def text_page(seed: int) -> bytes:
    rng = random.Random(seed)
    words = [rng.randbytes(rng.randint(3, 8)) for _ in range(40)]
    out = bytearray()
    while len(out) < PAGE:
        out += rng.choice(words)
    return bytes(out[:PAGE])


def mm(z: Zram) -> dict[str, int]:
    names = "orig compr used limit used_max same compacted huge huge_since".split()
    return dict(zip(names, map(int, sysfs.show(z, "mm_stat").split()), strict=True))


# --------------------------------------------------------------------------
# Same-filled pages


def test_same_filled_detection():
    assert is_same_filled(bytes(PAGE))
    assert is_same_filled(b"a" * PAGE)
    assert is_same_filled(struct.pack("<Q", 0x0123456789ABCDEF) * 512)
    assert not is_same_filled(b"0123456789abcdef" * 256)  # a 16-byte pattern is not one word
    page = bytearray(PAGE)
    page[2000] = 1  # first and last word agree, the middle does not
    assert not is_same_filled(bytes(page))
    page = bytearray(PAGE)
    page[-1] = 1
    assert not is_same_filled(bytes(page))


def test_modern_stores_any_repeated_word_without_memory_and_counts_it():
    z = device("6.18")
    word = struct.pack("<Q", 0xDEADBEEF12345678) * 512
    z.write(0, bytes(PAGE))
    z.write(PAGE, b"a" * PAGE)
    z.write(2 * PAGE, word)
    st = z.stats
    assert (st.same_pages, st.pages_stored, st.compr_data_size, z.mem_used_pages()) == (3, 3, 0, 0)
    assert z.read(0, 3 * PAGE) == bytes(PAGE) + b"a" * PAGE + word
    assert mm(z)["orig"] == 3 * PAGE and mm(z)["same"] == 3
    z.discard(0, 3 * PAGE)
    assert (st.same_pages, st.pages_stored) == (0, 0)


def test_legacy_stores_only_zero_pages_and_does_not_count_them_stored():
    z = device("3.11")
    z.write(0, bytes(PAGE))
    z.write(PAGE, b"a" * PAGE)  # compressed, not a zero page
    st = z.stats
    assert st.same_pages == 1
    assert st.pages_stored == 1
    assert st.compr_data_size == 44 and z.mem_used_pages() == 3  # class 48: three pages
    assert z.table[0][0] & ZRAM_SAME and not z.table[1][0] & ZRAM_SAME
    assert sysfs.show(z, "zero_pages") == "1\n"
    assert sysfs.show(z, "orig_data_size") == f"{PAGE}\n"
    z.write(0, b"b" * PAGE)  # a zero page overwritten: pages_zero drops
    assert (st.same_pages, st.pages_stored) == (0, 2)
    assert z.read(0, 2 * PAGE) == b"b" * PAGE + b"a" * PAGE


# --------------------------------------------------------------------------
# Incompressible pages


def test_legacy_stores_raw_above_three_quarters(sized):
    z = device("3.11")
    z.write(0, sized[3072])
    z.write(PAGE, sized[3073])
    z.write(2 * PAGE, sized[2048])
    z.write(3 * PAGE, sized[2049])
    sizes = [z.table[i][0] & ZRAM_SIZE_MASK for i in range(4)]
    assert sizes == [3072, PAGE, 2048, 2049]
    st = z.stats
    assert st.bad_compress == 1 and st.good_compress == 1  # good: at most half a page
    assert st.huge_pages == 0  # no such notion in 2013
    assert st.compr_data_size == 3072 + PAGE + 2048 + 2049
    assert z.read(0, 4 * PAGE) == sized[3072] + sized[3073] + sized[2048] + sized[2049]
    z.discard(0, 4 * PAGE)
    assert st.bad_compress == st.good_compress == st.compr_data_size == 0


def test_modern_stores_raw_from_huge_class_size(sized):
    z = device("6.18")
    z.write(0, sized[3624])
    z.write(PAGE, sized[3625])
    assert z.table[0][0] & ZRAM_SIZE_MASK == 3624 and not z.table[0][0] & ZRAM_HUGE
    assert z.table[1][0] & ZRAM_SIZE_MASK == PAGE and z.table[1][0] & ZRAM_HUGE
    assert z.pool.is_huge(z.table[1][1]) and not z.pool.is_huge(z.table[0][1])
    assert z.pool.classes[z.pool.zspages[decode_handle(z.table[0][1])[0]].cls].size == 3632
    m = mm(z)
    assert (m["compr"], m["huge"], m["huge_since"]) == (3624 + PAGE, 1, 1)
    assert m["used"] == (8 + 1) * PAGE  # one 8-page zspage of class 3632, one huge page
    z.write(PAGE, sized[2048])  # no longer huge: huge_pages drops, huge_pages_since stays
    m = mm(z)
    assert (m["huge"], m["huge_since"]) == (0, 1)
    z.write(0, sized[3625])
    z.write(PAGE, sized[3625])
    m = mm(z)
    assert (m["huge"], m["huge_since"], m["compr"]) == (2, 3, 2 * PAGE)
    assert z.read(0, 2 * PAGE) == sized[3625] * 2


def test_random_pages_are_huge_in_both_profiles():
    page = random.Random(1).randbytes(PAGE)
    for compat in PROFILES:
        z = device(compat)
        z.write(0, page)
        assert z.table[0][0] & ZRAM_SIZE_MASK == PAGE
        assert z.read(0, PAGE) == page


# --------------------------------------------------------------------------
# Overwrites: where the old slot is freed


def test_legacy_frees_the_old_slot_before_allocating():
    z = device("3.11")
    page = text_page(1)
    z.write(0, page)
    z.write(PAGE, page)
    old = z.table[0][1]
    z.write(0, page)  # freed first, so the allocation takes that very slot (LIFO)
    assert z.table[0][1] == old
    assert z.read(0, 2 * PAGE) == page * 2 and z.stats.pages_stored == 2


def test_modern_frees_the_old_slot_only_after_allocating():
    z = device("6.18")
    page = text_page(1)
    z.write(0, page)
    old = z.table[0][1]
    z.write(0, page)  # the same size again: a new slot first, then the old one goes
    new = z.table[0][1]
    assert decode_handle(new) == (decode_handle(old)[0], decode_handle(old)[1] + 1)
    z.write(0, page)  # and now the freed slot 0 is the freelist head
    assert z.table[0][1] == old
    assert z.stats.pages_stored == 1


def test_modern_overwrite_of_a_lone_object_shows_in_mem_used_max():
    # The only object of a one-page class: the new zspage exists before the old one is freed.
    z = device("6.18")
    page = random.Random(5).randbytes(PAGE)  # huge: class 4096, one page per object
    z.write(0, page)
    assert mm(z)["used"] == mm(z)["used_max"] == PAGE
    z.write(0, page)
    assert mm(z)["used"] == PAGE and mm(z)["used_max"] == 2 * PAGE


def test_legacy_overwrite_frees_first():
    z = device("3.11")
    page = random.Random(5).randbytes(PAGE)
    z.write(0, page)
    first = decode_handle(z.table[0][1])[0]
    z.write(0, page)
    assert z.mem_used_pages() == 1 and z.read(0, PAGE) == page
    assert decode_handle(z.table[0][1])[0] != first  # its zspage was released and a new one made


# --------------------------------------------------------------------------
# mem_limit and mem_used_max


def test_mem_limit_fails_with_enomem_and_loses_nothing():
    z = device("6.18", disksize=256 * PAGE)
    sysfs.store(z, "mem_limit", "16K")  # four pages
    pages = [random.Random(i).randbytes(PAGE) for i in range(8)]
    for i in range(4):
        z.write(i * PAGE, pages[i])
    with pytest.raises(ZramError) as e:
        z.write(4 * PAGE, pages[4] + pages[5])
    assert e.value.errno == errno.ENOMEM and e.value.done == 0
    st = z.stats
    assert st.failed_writes == 1 and st.pages_stored == 4
    assert mm(z)["used"] == 4 * PAGE and mm(z)["limit"] == 4 * PAGE
    assert mm(z)["used_max"] == 5 * PAGE  # the check comes after the allocation
    assert z.read(0, 6 * PAGE) == b"".join(pages[:4]) + bytes(2 * PAGE)
    # A failed overwrite keeps the old page.
    with pytest.raises(ZramError):
        z.write(0, pages[7])
    assert z.read(0, PAGE) == pages[0] and st.failed_writes == 2
    # Same-filled pages need no memory: they still go in.
    z.write(5 * PAGE, b"z" * PAGE)
    assert z.read(5 * PAGE, PAGE) == b"z" * PAGE
    # The error tells how much of a multi-page write was stored before it.
    sysfs.store(z, "mem_limit", "0")
    z.discard(0, PAGE)
    sysfs.store(z, "mem_limit", str(4 * PAGE))
    with pytest.raises(ZramError) as e:
        z.write(10 * PAGE, pages[0] + pages[1])
    assert e.value.done == PAGE and z.read(10 * PAGE, PAGE) == pages[0]
    assert io_stat(z)[1] == 3


def io_stat(z: Zram) -> list[int]:
    return [int(x) for x in sysfs.show(z, "io_stat").split()]


def test_mem_used_max_and_writing_zero():
    z = device("6.18")
    for i in range(6):
        z.write(i * PAGE, random.Random(i).randbytes(PAGE))
    z.discard(0, 4 * PAGE)
    assert mm(z)["used"] == 2 * PAGE and mm(z)["used_max"] == 6 * PAGE
    sysfs.store(z, "mem_used_max", "0\n")
    assert mm(z)["used_max"] == 2 * PAGE
    for bad in ("1", "x", "-1", ""):
        with pytest.raises(ZramError) as e:
            sysfs.store(z, "mem_used_max", bad)
        assert e.value.errno == errno.EINVAL
    # Same-filled writes do not update it (no allocation).
    z.discard(0, 64 * PAGE)
    z.write(0, bytes(PAGE))
    assert mm(z)["used_max"] == 2 * PAGE


# --------------------------------------------------------------------------
# Discard, reads, partial I/O


@pytest.mark.parametrize("compat", PROFILES)
def test_discard_frees_whole_pages_only_and_counts_each(compat):
    z = device(compat)
    pages = [text_page(i) for i in range(5)]
    z.write(0, b"".join(pages))
    freed = z.discard(100, 3 * PAGE)  # page 0 partial (skipped), 1 and 2 whole, 3 partial (skipped)
    assert freed == 2 and z.stats.notify_free == 2
    assert z.read(0, 5 * PAGE) == pages[0] + bytes(2 * PAGE) + pages[3] + pages[4]
    assert z.discard(PAGE + 1, PAGE - 2) == 0 and z.stats.notify_free == 2
    assert z.discard(40 * PAGE, 3 * PAGE) == 3  # unwritten pages count too
    assert z.stats.notify_free == 5
    assert z.discard(4 * PAGE, PAGE + 7) == 1
    assert z.stored_pages() == 2


@pytest.mark.parametrize("compat", PROFILES)
def test_unwritten_pages_read_as_zeros(compat):
    z = device(compat)
    assert z.read(0, 64 * PAGE) == bytes(64 * PAGE)
    assert z.read(12345, 10) == bytes(10)
    assert z.stats.num_reads == 64 + 1


@pytest.mark.parametrize("compat", PROFILES)
def test_partial_pages_are_read_modified_written(compat):
    z = device(compat)
    model = bytearray(64 * PAGE)
    rng = random.Random(3)
    for offset, length in [
        (0, 1),
        (4090, 10),
        (PAGE - 1, PAGE + 2),
        (5 * PAGE + 7, 3 * PAGE),
        (63 * PAGE, PAGE),
    ]:
        data = text_page(offset)[:length] if length <= PAGE else rng.randbytes(length)
        z.write(offset, data)
        model[offset : offset + length] = data
        assert z.read(offset, length) == data
    assert z.read(0, len(model)) == bytes(model)
    # num_writes counts page-sized requests: 1 + 2 + 3 + 4 + 1
    assert z.stats.num_writes == 11


def test_io_outside_the_device():
    z = device("6.18")
    with pytest.raises(ZramError) as e:
        z.write(63 * PAGE, bytes(PAGE + 1))
    assert e.value.errno == errno.ENOSPC and z.stats.num_writes == 0
    with pytest.raises(ZramError) as e:
        z.read(64 * PAGE, 1)
    assert e.value.errno == errno.EINVAL
    with pytest.raises(ZramError) as e:
        z.read(-1, 1)
    assert e.value.errno == errno.EINVAL
    fresh = Zram()
    with pytest.raises(ZramError) as e:
        fresh.write(0, b"x")
    assert e.value.errno == errno.ENOSPC
    with pytest.raises(ZramError) as e:
        fresh.read(0, 1)
    assert e.value.errno == errno.EINVAL


# --------------------------------------------------------------------------
# init, reset, disksize


@pytest.mark.parametrize("compat", PROFILES)
def test_reset_zeroes_everything(compat):
    z = device(compat)
    z.write(0, b"".join(text_page(i) for i in range(8)) + bytes(PAGE))
    z.discard(0, PAGE)
    z.read(0, PAGE)
    if compat == "6.18":
        sysfs.store(z, "mem_limit", "1M")
        z.compact()
    frames = z.backing.frames
    z.reset()
    assert all(v == 0 for v in vars(z.stats).values())
    assert z.config == ZramConfig(max_comp_streams=z.config.max_comp_streams)
    assert z.pool is None and not z.table and frames.frames_in_use == 0
    assert z.initialized is False and z.mem_used_pages() == 0
    assert sysfs.show(z, "disksize") == "0\n" and sysfs.show(z, "initstate") == "0\n"
    z.config.compat = compat
    z.init(PAGE)
    assert z.read(0, PAGE) == bytes(PAGE)


def test_disksize_rules():
    z = Zram()
    z.init(5000)
    assert z.config.disksize == 2 * PAGE
    with pytest.raises(ZramError) as e:
        z.init(PAGE)
    assert e.value.errno == errno.EBUSY
    with pytest.raises(ZramError) as e:
        Zram().init(0)
    assert e.value.errno == errno.EINVAL


def test_842_is_refused_clearly():
    with pytest.raises(CompressionError) as e:
        get_backend("842")
    assert e.value.errno == errno.EINVAL and "implementation" in str(e.value)
    z = Zram()
    with pytest.raises(ZramError) as e:
        sysfs.store(z, "comp_algorithm", "842")
    assert e.value.errno == errno.EINVAL and "no user-space implementation" in str(e.value)
    assert z.config.comp_algorithm == "lzo-rle"
    z.config.comp_algorithm = "842"  # set behind sysfs' back: init refuses it too
    with pytest.raises(CompressionError):
        z.init(PAGE)


@pytest.mark.parametrize(("compat", "default"), [("6.18", "lzo-rle"), ("3.11", "lzo")])
def test_default_algorithm_is_the_kernels(compat, default):
    """6.18 starts with lzo-rle (the Kconfig default); 3.11 with lzo, as the 2013 driver."""
    z = Zram()
    sysfs.store(z, "compat", compat)
    assert z.config.comp_algorithm == default
    sysfs.store(z, "disksize", "1M")
    assert z.backend.name == default
    z.reset()
    assert z.config.comp_algorithm == "lzo-rle"  # reset forgets the settings: back to 6.18's


@pytest.mark.parametrize("algorithm", ["lzo-rle", "lzo", "lz4", "lz4hc", "zstd", "deflate"])
def test_every_algorithm_round_trips(algorithm):
    z = device("6.18", algorithm=algorithm)
    data = b"".join(text_page(i) for i in range(4)) + random.Random(0).randbytes(PAGE)
    z.write(0, data)
    assert z.read(0, len(data)) == data
    assert 0 < z.stats.compr_data_size < 5 * PAGE


# --------------------------------------------------------------------------
# Corruption: an error, never wrong bytes


@pytest.mark.parametrize("compat", PROFILES)
@pytest.mark.parametrize("kind", ["compressed", "raw"])
def test_corrupted_object_is_eio_and_counts_failed_reads(compat, kind):
    z = device(compat)
    page = text_page(9) if kind == "compressed" else random.Random(9).randbytes(PAGE)
    z.write(0, page)
    z.write(PAGE, text_page(10))
    flags, handle, _, _ = z.table[0]
    first, idx = decode_handle(handle)
    cls = z.pool.classes[z.pool.zspages[first].cls]
    off = idx * cls.size + (0 if cls.huge else z.profile.handle_size) + 5
    z.pool.frames.mutable(first + off // PAGE)[off % PAGE] ^= 0xFF
    with pytest.raises(ZramError) as e:
        z.read(0, 2 * PAGE)
    assert e.value.errno == errno.EIO and e.value.done == 0
    assert z.stats.failed_reads == 1
    assert z.read(PAGE, PAGE) == text_page(10)  # its neighbour is intact
    # A partial write over the bad page cannot merge with it: it fails too.
    with pytest.raises(ZramError) as e:
        z.write(10, b"x")
    assert e.value.errno == errno.EIO
    # A whole-page write replaces it.
    z.write(0, page)
    assert z.read(0, PAGE) == page


def test_undecodable_object_with_a_matching_checksum_is_still_eio():
    import zlib

    z = device("6.18")
    z.write(0, text_page(4))
    flags, handle, _, _ = z.table[0]
    size = flags & ZRAM_SIZE_MASK
    garbage = bytes([0xFF]) * size
    z.pool.zs_obj_write(handle, garbage)
    z.table[0] = (flags, handle, zlib.crc32(garbage), 0)
    with pytest.raises(ZramError) as e:
        z.read(0, PAGE)
    assert e.value.errno == errno.EIO and z.stats.failed_reads == 1


def test_safe_decompress_never_returns_short_pages():
    lzo = get_backend("lzo")
    with pytest.raises(CompressionError) as e:
        safe_decompress(lzo, lzo.compress(b"x" * 100))  # a valid stream, but not a page
    assert e.value.errno == errno.EIO


def test_benchmark_runs_on_a_small_file(tmp_path, capsys):
    """benchmarks/engine.py is not part of the suite, but it must keep working."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "engine.py"
    spec = importlib.util.spec_from_file_location("bench_engine", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    sample = tmp_path / "sample.bin"
    sample.write_bytes(b"".join(text_page(i) for i in range(32)) + random.Random(1).randbytes(PAGE))
    assert bench.main(["--file", str(sample), "--no-kernel", "--repeat", "1", "--chunk", "64K"]) == 0
    out = capsys.readouterr().out
    assert "engine vs bound" in out and "orig_data_size" in out
