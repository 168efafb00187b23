"""Every sysfs attribute of each profile: its exact text (``zram_drv.c``'s show functions) and the
kernel's errno for each bad write."""

from __future__ import annotations

import errno
import random

import pytest

from zramctl.errors import ZramError
from zramctl.kernel import sysfs
from zramctl.kernel.profiles import PAGE_SIZE
from zramctl.kernel.zram_drv import Zram, ZramConfig

PAGE = PAGE_SIZE

MODERN_NAMES = {
    "disksize",
    "initstate",
    "reset",
    "max_comp_streams",
    "compat",
    "comp_algorithm",
    "algorithm_params",
    "mm_stat",
    "io_stat",
    "debug_stat",
    "mem_limit",
    "mem_used_max",
    "compact",
    "idle",
    "backing_dev",
    "writeback",
    "writeback_limit",
    "writeback_limit_enable",
    "bd_stat",
    "recomp_algorithm",
    "recompress",
    "block_state",
}
LEGACY_NAMES = {
    "disksize",
    "initstate",
    "reset",
    "max_comp_streams",
    "compat",
    "num_reads",
    "num_writes",
    "invalid_io",
    "notify_free",
    "zero_pages",
    "orig_data_size",
    "compr_data_size",
    "mem_used_total",
}
WRITE_ONLY = {
    "reset",
    "algorithm_params",
    "mem_limit",
    "mem_used_max",
    "compact",
    "idle",
    "writeback",
    "recompress",
}
READ_ONLY_6_18 = {"initstate", "mm_stat", "io_stat", "debug_stat", "bd_stat", "block_state"}
EMPTY_UNLESS_SET = {"recomp_algorithm"}
"""Prints nothing while no secondary algorithm is set (recomp_algorithm_show's loop)."""


def device(compat: str = "6.18", size: str = "1M") -> Zram:
    z = Zram(ZramConfig(compat=compat))
    sysfs.store(z, "disksize", size)
    return z


def errno_of(z: Zram, name: str, value: str | None = None) -> int:
    with pytest.raises(ZramError) as e:
        if value is None:
            sysfs.show(z, name)
        else:
            sysfs.store(z, name, value)
    assert e.value.what == name
    return e.value.errno


# --------------------------------------------------------------------------
# The attribute sets


def test_attribute_sets_per_profile():
    assert set(sysfs.attributes(Zram(ZramConfig(compat="6.18")))) == MODERN_NAMES
    assert set(sysfs.attributes(Zram(ZramConfig(compat="3.11")))) == LEGACY_NAMES


@pytest.mark.parametrize("compat", ["6.18", "3.11"])
def test_every_readable_attribute_reads_before_and_after_init(compat):
    z = Zram(ZramConfig(compat=compat))
    for name, attr in sysfs.attributes(z).items():
        if name == "block_state":  # the kernel's debugfs file refuses a device not set up
            assert errno_of(z, name) == errno.EINVAL
        elif name in EMPTY_UNLESS_SET:
            assert sysfs.show(z, name) == ""
        elif attr.show is not None:
            assert sysfs.show(z, name).endswith("\n")
    sysfs.store(z, "disksize", "64K")
    z.write(0, b"".join(random.Random(i).randbytes(PAGE // 2) * 2 for i in range(4)))
    for name, attr in sysfs.attributes(z).items():
        if attr.show is not None and name not in EMPTY_UNLESS_SET:
            assert sysfs.show(z, name).endswith("\n")


# --------------------------------------------------------------------------
# Exact texts


def test_mm_stat_format():
    z = Zram()
    assert sysfs.show(z, "mm_stat") == " ".join(["       0"] * 9) + "\n"
    sysfs.store(z, "disksize", "64M")
    sysfs.store(z, "mem_limit", "1G")
    z.write(0, random.Random(0).randbytes(PAGE) + b"q" * PAGE)
    fmt = "%8d %8d %8d %8d %8d %8d %8d %8d %8d\n"  # the kernel's mm_stat_show() format
    expected = fmt % (2 * PAGE, PAGE, PAGE, 1 << 30, PAGE, 1, 0, 1, 1)
    assert sysfs.show(z, "mm_stat") == expected
    assert (
        sysfs.show(z, "mm_stat")
        == "    8192     4096     4096 1073741824     4096        1        0        1        1\n"
    )


def test_io_stat_format_has_a_literal_zero():
    z = device()
    assert sysfs.show(z, "io_stat") == "       0        0 0        0\n"
    z.discard(0, 3 * PAGE)
    z.stats.failed_reads, z.stats.failed_writes = 12, 123456789
    assert sysfs.show(z, "io_stat") == "      12 123456789 0        3\n"


def test_debug_stat_format():
    z = device()
    assert sysfs.show(z, "debug_stat") == "version: 1\n0        0\n"
    z.stats.miss_free = 7
    assert sysfs.show(z, "debug_stat") == "version: 1\n0        7\n"


def test_comp_algorithm_brackets_and_trailing_space():
    z = Zram()
    # A fresh device starts with the kernel's default, lzo-rle, listed in the kernel's order.
    assert sysfs.show(z, "comp_algorithm") == "[lzo-rle] lzo lz4 lz4hc zstd deflate \n"
    sysfs.store(z, "comp_algorithm", "lz4\n")
    assert sysfs.show(z, "comp_algorithm") == "lzo-rle lzo [lz4] lz4hc zstd deflate \n"
    sysfs.store(z, "comp_algorithm", "deflate")
    assert sysfs.show(z, "comp_algorithm") == "lzo-rle lzo lz4 lz4hc zstd [deflate] \n"
    sysfs.store(z, "comp_algorithm", "lzo")
    assert sysfs.show(z, "comp_algorithm") == "lzo-rle [lzo] lz4 lz4hc zstd deflate \n"


def test_disksize_initstate_texts():
    z = Zram()
    assert (sysfs.show(z, "disksize"), sysfs.show(z, "initstate")) == ("0\n", "0\n")
    sysfs.store(z, "disksize", "4097")
    assert (sysfs.show(z, "disksize"), sysfs.show(z, "initstate")) == ("8192\n", "1\n")


@pytest.mark.parametrize(
    ("text", "pages"),
    [("0", 0), ("1", 1), ("4096", 1), ("4097", 2), ("1M", 256), ("2m\n", 512), ("0x2000", 2)],
)
def test_mem_limit_is_memparsed_and_page_aligned(text, pages):
    z = device()
    sysfs.store(z, "mem_limit", text)
    assert z.config.limit_pages == pages
    assert int(sysfs.show(z, "mm_stat").split()[3]) == pages * PAGE


def test_legacy_per_value_files():
    z = device("3.11")
    for name in ("num_reads", "num_writes", "invalid_io", "notify_free", "zero_pages"):
        assert sysfs.show(z, name) == "0\n"
    z.write(0, bytes(PAGE) + b"ab" * (PAGE // 2) + random.Random(2).randbytes(PAGE))
    z.read(0, 10)
    z.discard(2 * PAGE, PAGE)
    texts = {n: sysfs.show(z, n) for n in LEGACY_NAMES - {"reset"}}
    assert texts["num_writes"] == "3\n" and texts["num_reads"] == "1\n"
    assert texts["zero_pages"] == "1\n" and texts["notify_free"] == "1\n"
    assert texts["orig_data_size"] == f"{PAGE}\n"  # the zero page is not stored
    assert texts["compr_data_size"] == f"{z.stats.compr_data_size}\n"
    assert texts["mem_used_total"] == f"{z.mem_used_pages() * PAGE}\n"
    assert texts["disksize"] == f"{1 << 20}\n" and texts["initstate"] == "1\n"
    assert texts["compat"] == "3.11\n" and texts["max_comp_streams"] == "1\n"


def test_reset_through_sysfs():
    z = device()
    z.write(0, b"x" * 10)
    sysfs.store(z, "reset", "1\n")
    assert sysfs.show(z, "disksize") == "0\n"
    assert sysfs.show(z, "mm_stat") == " ".join(["       0"] * 9) + "\n"


def test_compact_through_sysfs():
    z = device()
    for i in range(40):
        z.write(i * PAGE, random.Random(i).randbytes(900) + bytes(PAGE - 900))
    for i in range(0, 40, 2):  # every other page: each zspage is left part full
        z.discard(i * PAGE, PAGE)
    sysfs.store(z, "compact", "1")
    assert int(sysfs.show(z, "mm_stat").split()[6]) == z.pool.pages_compacted > 0


def test_max_comp_streams_and_compat():
    z = Zram()
    sysfs.store(z, "max_comp_streams", "4")
    assert sysfs.show(z, "max_comp_streams") == "4\n"
    sysfs.store(z, "compat", "3.11")
    assert sysfs.show(z, "compat") == "3.11\n"
    sysfs.store(z, "disksize", "1M")
    assert errno_of(z, "compat", "6.18") == errno.EBUSY
    sysfs.store(z, "reset", "1")
    assert sysfs.show(z, "max_comp_streams") == "4\n"  # kept across reset, like the stream count


def test_algorithm_params_level():
    z = Zram()
    sysfs.store(z, "comp_algorithm", "zstd")
    sysfs.store(z, "algorithm_params", "algo=zstd level=9")
    assert z.config.params[0].level == 9
    sysfs.store(z, "disksize", "1M")
    # 6.18 takes params on a set-up device (no EBUSY) and leaves the running compressors alone.
    sysfs.store(z, "algorithm_params", "level=3")
    assert z.config.params[0].level == 9
    assert errno_of(z, "algorithm_params", "priority=4 level=3") == errno.EINVAL


# --------------------------------------------------------------------------
# Errors


def test_einval():
    z = Zram()
    assert errno_of(z, "disksize", "0") == errno.EINVAL
    assert errno_of(z, "disksize", "abc") == errno.EINVAL
    assert errno_of(z, "comp_algorithm", "nope") == errno.EINVAL
    assert errno_of(z, "comp_algorithm", "842") == errno.EINVAL
    assert errno_of(z, "reset", "0") == errno.EINVAL
    assert errno_of(z, "reset", "yes") == errno.EINVAL
    assert errno_of(z, "mem_limit", "lots") == errno.EINVAL
    assert errno_of(z, "mem_used_max", "5") == errno.EINVAL
    assert errno_of(z, "compact", "1") == errno.EINVAL  # not initialised
    assert errno_of(z, "max_comp_streams", "0") == errno.EINVAL
    assert errno_of(z, "algorithm_params", "level") == errno.EINVAL
    assert errno_of(z, "algorithm_params", "level=x") == errno.EINVAL
    assert errno_of(z, "compat", "2.6") == errno.EINVAL


def test_ebusy_when_initialised():
    z = device()
    assert errno_of(z, "disksize", "2M") == errno.EBUSY
    assert errno_of(z, "comp_algorithm", "lz4") == errno.EBUSY
    # An unknown name is EINVAL before the busy check, as in __comp_algorithm_store.
    assert errno_of(z, "comp_algorithm", "nope") == errno.EINVAL
    assert z.config.comp_algorithm == "lzo-rle" and z.config.disksize == 1 << 20


def test_e2big_for_a_long_algorithm_name():
    z = Zram()
    assert errno_of(z, "comp_algorithm", "x" * 128) == errno.E2BIG
    assert errno_of(z, "comp_algorithm", "x" * 127) == errno.EINVAL


@pytest.mark.parametrize("compat", ["6.18", "3.11"])
def test_wrong_direction_is_eacces_and_unknown_is_enoent(compat):
    z = device(compat)
    for name, attr in sysfs.attributes(z).items():
        if attr.show is None:
            assert errno_of(z, name) == errno.EACCES
        if attr.store is None:
            assert errno_of(z, name, "1") == errno.EACCES
    assert {n for n, a in sysfs.attributes(z).items() if a.show is None} <= WRITE_ONLY
    if compat == "6.18":
        assert {n for n, a in sysfs.attributes(z).items() if a.store is None} == READ_ONLY_6_18
    assert errno_of(z, "no_such_file") == errno.ENOENT
    assert errno_of(z, "no_such_file", "1") == errno.ENOENT
    other = "num_reads" if compat == "6.18" else "mm_stat"
    assert errno_of(z, other) == errno.ENOENT
    assert sysfs.read_or_none(z, other) is None and sysfs.read_or_none(z, "reset") is None


def test_legacy_has_no_compaction_or_limits():
    z = device("3.11")
    assert errno_of(z, "compact", "1") == errno.ENOENT
    assert errno_of(z, "mem_limit", "1M") == errno.ENOENT
    with pytest.raises(ZramError) as e:
        z.compact()
    assert e.value.errno == errno.ENOENT


def test_memparse():
    assert sysfs.memparse("1K") == (1024, 2)
    assert sysfs.memparse("0x10") == (16, 4)
    assert sysfs.memparse("010") == (8, 3)
    assert sysfs.memparse("12junk") == (12, 2)
    assert sysfs.memparse("junk")[1] == 0


# --------------------------------------------------------------------------
# Garbage: any text written to any attribute is refused with an errno, or accepted


HUGE = "9" * 5000
GARBAGE = [
    "",
    "\n",
    " ",
    "   \n",
    "\t1",
    "1 ",
    "-1",
    "-0",
    "+",
    "+5",
    "0x",
    "0xg",
    "08",
    HUGE,
    "-" + HUGE,
    HUGE + "K",
    "0x" + "f" * 5000,
    "0" * 5000 + "1",
    "1" * 20,
    "18446744073709551616",
    "2147483648",
    "65536",
    "é",
    "١٢٣",  # Arabic-Indic digits: Python's int() takes them, the kernel does not
    "1_000",
    "level=" + HUGE,
    "priority=" + HUGE,
    "level=",
    "=",
    "x" * 100_000,
    "lzo\n\n",
]


@pytest.mark.parametrize("compat", ["6.18", "3.11"])
@pytest.mark.parametrize("initialised", [False, True])
def test_every_attribute_takes_every_garbage_as_an_errno(compat, initialised):
    for name in sorted(sysfs.attributes(Zram(ZramConfig(compat=compat)))):
        for value in GARBAGE:
            z = device(compat) if initialised else Zram(ZramConfig(compat=compat))
            try:
                sysfs.store(z, name, value)
            except ZramError as exc:
                assert exc.what == name and exc.errno in errno.errorcode, (name, value[:20], exc)


def test_numbers_of_any_length():
    z = Zram()
    # kstrtoul: past the type's range is ERANGE, however many digits.
    assert errno_of(z, "max_comp_streams", HUGE) == errno.ERANGE
    assert errno_of(z, "max_comp_streams", "2147483648") == errno.ERANGE
    assert errno_of(z, "reset", HUGE) == errno.ERANGE
    assert errno_of(z, "reset", "65536") == errno.ERANGE
    assert errno_of(z, "mem_used_max", HUGE) == errno.EINVAL
    assert errno_of(z, "max_comp_streams", "١٢") == errno.EINVAL
    sysfs.store(z, "max_comp_streams", "0" * 5000 + "7")
    assert z.config.max_comp_streams == 7
    # memparse wraps modulo 2**64, as simple_strtoull does.
    value, used = sysfs.memparse(HUGE)
    assert used == 5000 and value == (10**5000 - 1) % 2**64
    assert sysfs.memparse("0x" + "f" * 40 + "K") == (((16**40 - 1) << 10) % 2**64, 43)
    sysfs.store(z, "mem_limit", HUGE)
    assert z.config.limit_pages == -(-((10**5000 - 1) % 2**64) // PAGE)


def test_a_disksize_that_rounds_past_64_bits_is_enomem():
    for text in ("18446744073709551615", "0xfffffffffffff001", HUGE):
        assert errno_of(Zram(), "disksize", text) == errno.ENOMEM
    z = Zram()
    sysfs.store(z, "disksize", "0xfffffffffffff000")
    assert z.config.disksize == 2**64 - PAGE


def test_an_initialised_device_says_busy_before_it_looks_at_the_size():
    assert errno_of(device(), "disksize", "18446744073709551615") == errno.EBUSY
