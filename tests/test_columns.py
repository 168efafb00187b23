"""columns.py: the column table, ``-o`` parsing and how each cell is read from sysfs attributes.

The ``-o`` edge cases were run against the installed zramctl 2.38.1 (whose ``columns[]`` holds
24 entries, 2 x 12 columns; ours holds 26 because of COMP-RATIO).
"""

from __future__ import annotations

import dataclasses
import errno
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zramctl.cli.columns import (
    ALL_COLUMNS,
    COLUMNS,
    DEFAULT_COLUMNS,
    EXTRA_COLUMNS,
    MAX_COLUMNS,
    MM_STAT_FILES,
    Cell,
    Column,
    ColumnError,
    StatError,
    cell,
    cell_value,
    find_column,
    format_ratio,
    memoized,
    parse_columns,
    row,
    row_values,
)

MM_STAT_ZERO = "       0        0        0        0        0        0        0        0        0"
"""mm_stat of an uninitialised kernel 6.18 device (9 fields)."""

UNINIT = {"disksize": "0", "comp_algorithm": "[lzo-rle] lzo lz4 ", "mm_stat": MM_STAT_ZERO}
"""An uninitialised kernel 6.18 zram0: no max_comp_streams (removed in 6.15)."""

LOADED = {
    "disksize": "67108864",
    "comp_algorithm": "lzo [lz4] lz4hc zstd deflate ",
    "max_comp_streams": "4",
    "mm_stat": " 1982464  1572864  1572864        0  1572864      100        0      384      384",
}
"""zram0 after 1.5 MiB of random data and 100 zero pages (mm_stat captured from kernel 6.18)."""


def by_name(*names: str) -> list[Column]:
    return [find_column(n) for n in names]  # type: ignore[misc]


def text(name: str, attrs: dict[str, str], inbytes: bool = False) -> str:
    return cell(find_column(name), attrs.get, inbytes=inbytes, name="/dev/zram0")  # type: ignore[arg-type]


# --- the table ------------------------------------------------------------------------------

def test_table_order_flags_and_help() -> None:
    assert [c.name for c in COLUMNS] == [
        "NAME", "DISKSIZE", "DATA", "COMPR", "ALGORITHM", "STREAMS", "ZERO-PAGES", "TOTAL",
        "MEM-LIMIT", "MEM-USED", "MIGRATED", "COMP-RATIO", "MOUNTPOINT",
    ]
    assert [c.name for c in COLUMNS if not c.right] == ["NAME", "ALGORITHM", "MOUNTPOINT"]
    assert [c.name for c in COLUMNS if c.trunc] == ["MOUNTPOINT"]
    assert [c.whint for c in COLUMNS] == [0.25, 5, 5, 5, 3, 3, 3, 5, 5, 5, 5, 5, 0.10]
    assert find_column("MEM-USED").help == "peak memory usage to store compressed data"  # type: ignore[union-attr]
    assert find_column("COMP-RATIO").help == "compression ratio: DATA/TOTAL"  # type: ignore[union-attr]
    assert all(c.help for c in COLUMNS)
    assert MAX_COLUMNS == 26


def test_extra_columns_only_with_o() -> None:
    """Ours: named with -o (any case, with + too), never among --output-all's or the defaults,
    and not counted in util-linux's -o limit."""
    assert [c.name for c in EXTRA_COLUMNS] == [
        "HUGE", "HUGE-SINCE", "BD-COUNT", "BD-READS", "BD-WRITES", "IDLE",
    ]
    assert ALL_COLUMNS == COLUMNS + EXTRA_COLUMNS
    assert not set(EXTRA_COLUMNS) & (set(COLUMNS) | set(DEFAULT_COLUMNS))
    chosen = parse_columns("name,huge,Bd-Count,idle", DEFAULT_COLUMNS)
    assert names(chosen) == ["NAME", "HUGE", "BD-COUNT", "IDLE"]
    assert names(parse_columns("+HUGE-SINCE", DEFAULT_COLUMNS))[-1] == "HUGE-SINCE"
    assert MAX_COLUMNS == 2 * len(COLUMNS)
    assert all(c.right and not c.trunc and c.help for c in EXTRA_COLUMNS)


def test_column_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        COLUMNS[0].name = "X"  # type: ignore[misc]


def test_default_columns() -> None:
    assert [c.name for c in DEFAULT_COLUMNS] == [
        "NAME", "ALGORITHM", "DISKSIZE", "DATA", "COMPR", "TOTAL", "STREAMS", "MOUNTPOINT",
    ]


# --- parse_columns --------------------------------------------------------------------------

def names(columns: list[Column]) -> list[str]:
    return [c.name for c in columns]


@pytest.mark.parametrize(
    "spec,expected",
    [
        ("NAME", ["NAME"]),
        ("name,Data", ["NAME", "DATA"]),  # zramctl 2.38.1: case-insensitive
        ("name,zero-pages,Migrated", ["NAME", "ZERO-PAGES", "MIGRATED"]),
        ("NAME,NAME", ["NAME", "NAME"]),  # duplicates allowed
        ("comp-ratio", ["COMP-RATIO"]),
        ("+COMP-RATIO", [c.name for c in DEFAULT_COLUMNS] + ["COMP-RATIO"]),
        ("+name", [c.name for c in DEFAULT_COLUMNS] + ["NAME"]),
    ],
)
def test_parse_columns_valid(spec: str, expected: list[str]) -> None:
    assert names(parse_columns(spec, DEFAULT_COLUMNS)) == expected


def test_parse_columns_plus_appends_to_current_selection() -> None:
    # --output-all -o +NAME appends to all columns (>= 2.41)
    assert names(parse_columns("+NAME", list(COLUMNS))) == [c.name for c in COLUMNS] + ["NAME"]
    current = by_name("DATA")
    assert names(parse_columns("+TOTAL", current)) == ["DATA", "TOTAL"]
    assert names(current) == ["DATA"]  # not modified in place


@pytest.mark.parametrize(
    "spec,message",
    [
        ("NAME,FOO,DATA", "unknown column: FOO,DATA"),  # zramctl 2.38.1
        ("NAME,", "unknown column: NAME,"),  # zramctl 2.38.1: the last name runs to the end
        ("FOO", "unknown column: FOO"),
        ("NAME,DATA,", "unknown column: DATA,"),
        ("+FOO,NAME", "unknown column: FOO,NAME"),  # the '+' is not part of the list
        ("NAME,X", "unknown column: X"),
        ("+,", "unknown column: ,"),  # 2.38.1 (no "+" notation) says "+,"
        (",", "unknown column: ,"),  # zramctl 2.38.1: a lone comma is a one-character name
        ("NAME ,", "unknown column: NAME ,"),
        ("NAME ", "unknown column: NAME "),
        (" NAME", "unknown column:  NAME"),  # zramctl 2.38.1
        ("NAM\u0130", "unknown column: NAM\u0130"),  # zramctl 2.38.1: C compares ASCII only
        ("D\u0131sksize", "unknown column: D\u0131sksize"),  # dotless i upper-cases to I in Python
        ("DIS\u212aSIZE", "unknown column: DIS\u212aSIZE"),  # zramctl 2.38.1; Kelvin sign lower-cases to k
    ],
)
def test_parse_columns_unknown(spec: str, message: str) -> None:
    with pytest.raises(ColumnError) as info:
        parse_columns(spec, DEFAULT_COLUMNS)
    assert info.value.message == message


@pytest.mark.parametrize("spec", ["", ",NAME", "NAME,,DATA", "+", ",,", "+,NAME"])
def test_parse_columns_silent_failures(spec: str) -> None:
    # zramctl 2.38.1: exit 1 and nothing on stderr
    with pytest.raises(ColumnError) as info:
        parse_columns(spec, DEFAULT_COLUMNS)
    assert info.value.message is None


def test_parse_columns_limit() -> None:
    assert len(parse_columns(",".join(["NAME"] * MAX_COLUMNS), DEFAULT_COLUMNS)) == MAX_COLUMNS
    for spec in (",".join(["NAME"] * (MAX_COLUMNS + 1)),
                 # the limit is hit before the unknown name is looked at (zramctl 2.38.1, at 24)
                 ",".join(["NAME"] * MAX_COLUMNS) + ",FOO"):
        with pytest.raises(ColumnError) as info:
            parse_columns(spec, DEFAULT_COLUMNS)
        assert info.value.message is None
    with pytest.raises(ColumnError) as info:
        parse_columns(",".join(["NAME"] * (MAX_COLUMNS - 1)) + ",FOO", DEFAULT_COLUMNS)
    assert info.value.message == "unknown column: FOO"


def test_parse_columns_limit_counts_current_columns_with_plus() -> None:
    room = MAX_COLUMNS - len(DEFAULT_COLUMNS)
    assert len(parse_columns("+" + ",".join(["DATA"] * room), DEFAULT_COLUMNS)) == MAX_COLUMNS
    with pytest.raises(ColumnError) as info:
        parse_columns("+" + ",".join(["DATA"] * (room + 1)), DEFAULT_COLUMNS)
    assert info.value.message is None
    with pytest.raises(ColumnError):
        parse_columns("+NAME", list(COLUMNS) * 2)


@given(st.lists(st.sampled_from([c.name for c in COLUMNS]), min_size=1, max_size=MAX_COLUMNS),
       st.randoms(use_true_random=False))
def test_parse_columns_any_valid_list(chosen: list[str], rnd) -> None:  # type: ignore[no-untyped-def]
    spec = ",".join("".join(ch.lower() if rnd.random() < 0.5 else ch for ch in n) for n in chosen)
    assert names(parse_columns(spec, [])) == chosen


# --- cells: sources and formats -------------------------------------------------------------

def test_uninitialised_device_cells() -> None:
    human = {c.name: text(c.name, UNINIT) for c in COLUMNS}
    assert human == {
        "NAME": "/dev/zram0", "DISKSIZE": "0B", "DATA": "0B", "COMPR": "0B", "ALGORITHM": "lzo-rle",
        "STREAMS": "", "ZERO-PAGES": "0", "TOTAL": "0B", "MEM-LIMIT": "0B", "MEM-USED": "0B",
        "MIGRATED": "0B", "COMP-RATIO": "-nan", "MOUNTPOINT": "",
    }
    raw = {c.name: text(c.name, UNINIT, inbytes=True) for c in COLUMNS}
    assert raw["DISKSIZE"] == "0" and raw["DATA"] == "0" and raw["MIGRATED"] == "0"


def test_loaded_device_cells() -> None:
    human = [text(c.name, LOADED) for c in COLUMNS]
    assert human == ["/dev/zram0", "64M", "1.9M", "1.5M", "lz4", "4", "100", "1.5M", "0B", "1.5M", "0B",
                     "1.2604", ""]
    raw = [text(c.name, LOADED, inbytes=True) for c in COLUMNS]
    assert raw == ["/dev/zram0", "67108864", "1982464", "1572864", "lz4", "4", "100", "1572864", "0",
                   "1572864", "0", "1.2604", ""]


def test_migrated_is_printed_as_a_size_and_zero_pages_raw() -> None:
    attrs = {"mm_stat": "0 0 0 0 0 2048 1258291 0 0"}
    assert text("MIGRATED", attrs) == "1.2M"
    assert text("ZERO-PAGES", attrs) == "2048"
    assert text("ZERO-PAGES", attrs, inbytes=True) == "2048"


def test_disksize_human_uses_fscanf_and_bytes_the_raw_text() -> None:
    attrs = {"disksize": " 1024 junk"}
    assert text("DISKSIZE", attrs) == "1K"
    assert text("DISKSIZE", attrs, inbytes=True) == " 1024 junk"
    assert text("DISKSIZE", {"disksize": "junk"}) == ""
    assert text("DISKSIZE", {}) == ""
    assert text("DISKSIZE", {}, inbytes=True) == ""


@pytest.mark.parametrize(
    "value,expected",
    [("[lzo] lz4 lz4hc zstd deflate ", "lzo"), ("lzo [lz4]", "lz4"), ("lzo lz4", ""), ("[]", ""),
     ("]lzo[", ""), ("[a] [b", ""), ("[a]] x", "a]"), ("", "")],
)
def test_algorithm_between_last_brackets(value: str, expected: str) -> None:
    assert text("ALGORITHM", {"comp_algorithm": value}) == expected


def test_algorithm_missing() -> None:
    assert text("ALGORITHM", {}) == ""


def test_streams_raw_or_empty() -> None:
    assert text("STREAMS", {"max_comp_streams": "4"}) == "4"
    assert text("STREAMS", {}) == ""  # kernel >= 6.15


def test_mountpoint_and_name() -> None:
    assert text("MOUNTPOINT", LOADED) == ""
    assert cell(find_column("NAME"), LOADED.get, inbytes=False, name="/tmp/a b") == "/tmp/a b"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "mm_stat,expected",
    [("0 0 7 0 0 0 0", "0.0000"), ("3 0 2 0 0 0 0", "1.5000"), ("0 0 0 0 0 0 0", "-nan"),
     ("5 0 0 0 0 0 0", "inf"), ("1 0 3 0 0 0 0", "0.3333"), ("2 0 3 0 0 0 0", "0.6667")],
)
def test_comp_ratio(mm_stat: str, expected: str) -> None:
    assert text("COMP-RATIO", {"mm_stat": mm_stat}) == expected


def test_format_ratio_c_semantics() -> None:
    assert format_ratio(-math.nan) == "-nan"
    assert format_ratio(math.nan) == "nan"
    assert format_ratio(math.inf) == "inf"
    assert format_ratio(0.5) == "0.5000"
    assert format_ratio(0.00005) == "0.0001"  # 0.00005 is a little above 5e-5 as a double
    assert format_ratio(1e19) == "10000000000000000000.0000"


# --- the post-processing columns -------------------------------------------------------------

PP = {
    "mm_stat": " 1982464  1572864  1572864        0  1572864      100        0      384      385",
    "bd_stat": "      12        3       40",
    "block_state": (
        "           0   1764470000.000000 ...i..\n"
        "           1   1764470000.000000 ..hi..\n"
        "           2            0.000000 .w....\n"
        "           5   1764470001.000000 ......\n"
        "           9   1764470000.000000 s.....\n"
        "          10            0.000000 ...irn\n"
    ),
}
"""A 6.18 device after post-processing: its mm_stat (huge_pages, huge_pages_since), bd_stat and
block_state lines (index, access time, the flags s w h i r n)."""


def test_post_processing_cells_are_page_counts() -> None:
    expected = {"HUGE": 384, "HUGE-SINCE": 385, "BD-COUNT": 12, "BD-READS": 3, "BD-WRITES": 40, "IDLE": 3}
    for column in EXTRA_COLUMNS:
        got = column.read(PP.get, "/dev/zram0")
        number = expected[column.name]
        assert (got.text, got.raw, got.value) == (str(number), str(number), number), column.name


def test_post_processing_cells_of_a_kernel_without_them_are_empty() -> None:
    """3.11 (no mm_stat, no bd_stat, no block_state), or a kernel whose mm_stat stops at 7 fields."""
    for attrs in ({}, dict(LEGACY), {"mm_stat": "1 2 3 4 5 6 7"}):
        for column in EXTRA_COLUMNS:
            if column.name == "IDLE" and "block_state" in attrs:
                continue
            assert column.read(attrs.get, "/dev/zram0") == Cell("", "", None), (column.name, attrs)


def test_idle_counts_the_i_flag_only() -> None:
    assert text("IDLE", {"block_state": ""}) == "0"
    assert text("IDLE", {"block_state": "  3  0.000000 .whirn\n  4  7.000000 i.....\n"}) == "1"


# --- mm_stat vs the legacy files ------------------------------------------------------------

LEGACY = dict(zip(MM_STAT_FILES, ["1048576", "524288", "600000", "0", "700000", "12", "3"], strict=True))


@pytest.mark.parametrize("mm_stat", [None, "", "1 2 3 4 5 6", "1\t2\t3\t4\t5\t6\t7"])
def test_short_or_missing_mm_stat_falls_back_to_legacy_files(mm_stat: str | None) -> None:
    attrs = dict(LEGACY)
    if mm_stat is not None:
        attrs["mm_stat"] = mm_stat
    stats = ("DATA", "COMPR", "TOTAL", "MEM-LIMIT", "MEM-USED", "ZERO-PAGES", "MIGRATED")
    assert [text(n, attrs) for n in stats] == ["1M", "512K", "585.9K", "0B", "683.6K", "12", "3B"]
    assert text("COMP-RATIO", attrs) == "1.7476"


def test_mm_stat_splits_on_spaces_only_and_ignores_extra_fields() -> None:
    attrs = {"mm_stat": "  1024   2048 3072 0 0 0 0 99 98 97 ", **LEGACY}
    assert text("DATA", attrs) == "1K"
    assert text("TOTAL", attrs) == "3K"


def test_missing_legacy_file_gives_an_empty_cell() -> None:
    assert text("DATA", {}) == ""
    assert text("DATA", {}, inbytes=True) == ""
    assert text("ZERO-PAGES", {}) == ""
    assert text("COMP-RATIO", {}) == "-nan"  # both read as 0


def test_legacy_files_are_read_leniently() -> None:
    attrs = {"orig_data_size": "2048 bytes", "compr_data_size": "n/a", "mem_used_total": "-1"}
    assert text("DATA", attrs) == "2K"  # fscanf stops at the space
    assert text("DATA", attrs, inbytes=True) == "2048 bytes"  # -b prints the file verbatim
    assert text("COMPR", attrs) == ""  # no number at all
    assert text("COMPR", attrs, inbytes=True) == "n/a"
    assert text("TOTAL", attrs) == "16E"  # fscanf %lu wraps a negative number


@pytest.mark.parametrize("field,err", [("abc", errno.EINVAL), ("-1", errno.ERANGE), ("1x", errno.EINVAL),
                                       ("18446744073709551616", errno.ERANGE)])
def test_non_numeric_mm_stat_field_is_fatal(field: str, err: int) -> None:
    attrs = {"mm_stat": f"{field} 0 0 0 0 0 0"}
    for inbytes in (False, True):
        with pytest.raises(StatError) as info:
            text("DATA", attrs, inbytes=inbytes)
        assert info.value.message == f"Failed to parse mm_stat: '{field}'"
        assert info.value.errno == err
    with pytest.raises(StatError):
        text("COMP-RATIO", attrs)
    assert text("COMPR", attrs) == "0B"  # only the field a column uses is parsed


# --- typed values (JSON) --------------------------------------------------------------------

def test_cell_values() -> None:
    values = dict(zip([c.name for c in COLUMNS], row_values(COLUMNS, LOADED.get, "/dev/zram0"), strict=True))
    assert values == {
        "NAME": "/dev/zram0", "DISKSIZE": 67108864, "DATA": 1982464, "COMPR": 1572864, "ALGORITHM": "lz4",
        "STREAMS": 4, "ZERO-PAGES": 100, "TOTAL": 1572864, "MEM-LIMIT": 0, "MEM-USED": 1572864,
        "MIGRATED": 0, "COMP-RATIO": pytest.approx(1982464 / 1572864), "MOUNTPOINT": None,
    }
    uninit = dict(zip([c.name for c in COLUMNS], row_values(COLUMNS, UNINIT.get, "/dev/zram0"), strict=True))
    assert uninit["COMP-RATIO"] is None and uninit["STREAMS"] is None and uninit["DISKSIZE"] == 0
    assert cell_value(find_column("DATA"), {}.get, "x") is None  # type: ignore[arg-type]
    assert cell_value(find_column("STREAMS"), {"max_comp_streams": "auto"}.get, "x") == "auto"  # type: ignore[arg-type]


def test_row_reads_each_attribute_once() -> None:
    calls: list[str] = []

    def attrs(name: str) -> str | None:
        calls.append(name)
        return LOADED.get(name)

    cells = row(COLUMNS, attrs, inbytes=False, name="/dev/zram0")
    assert cells[2] == "1.9M"
    assert sorted(calls) == sorted(set(calls))
    calls.clear()
    read = memoized(attrs)
    read("mm_stat")
    read("mm_stat")
    assert calls == ["mm_stat"]
