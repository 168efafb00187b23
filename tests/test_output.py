"""output.py: byte-identical util-linux layouts, JSON, and the terminal/pipe decision.

Every expected table below is real output of the installed util-linux 2.38.1 ``zramctl`` on a
kernel 6.18 zram0, captured once (under /tmp/kernel-oracle.lock, device reset afterwards) and
pasted verbatim; these tests never touch a kernel device.  Facts section 6 gives the first three.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zramctl.cli.columns import COLUMNS, DEFAULT_COLUMNS, Column, find_column, parse_columns, row, row_values
from zramctl.cli.output import (
    column_width,
    escape_raw,
    print_table,
    render_json,
    render_table,
    safe_encode,
    use_rich,
)

OLD_ALL = [c for c in COLUMNS if c.name != "COMP-RATIO"]
"""``--output-all`` of util-linux 2.38.1, which predates COMP-RATIO."""


def attrs_for(state: str) -> dict[str, str]:
    return {
        "disksize": "0" if state == "uninit" else "67108864",
        "comp_algorithm": "[lzo-rle] lzo lz4 ",
        "mm_stat": MM_STAT[state],
    }


def table(columns: list[Column], attrs: dict[str, str], *, inbytes: bool = False, raw: bool = False,
          noheadings: bool = False, name: str = "/dev/zram0", utf8: bool = True) -> str:
    cells = row(columns, attrs.get, inbytes=inbytes, name=name)
    return render_table(columns, [cells], raw=raw, noheadings=noheadings, utf8=utf8)


# --- facts section 6, verbatim --------------------------------------------------------------

UNINIT_618 = {
    "disksize": "0",
    "comp_algorithm": "[lzo-rle] lzo lz4 ",
    "mm_stat": "       0        0        0        0        0        0        0        0        0",
}


def test_golden_output_all_bytes_raw() -> None:
    assert table(OLD_ALL, UNINIT_618, inbytes=True, raw=True) == (
        "NAME DISKSIZE DATA COMPR ALGORITHM STREAMS ZERO-PAGES TOTAL MEM-LIMIT MEM-USED MIGRATED MOUNTPOINT\n"
        "/dev/zram0 0 0 0 lzo-rle  0 0 0 0 0 \n"
    )


def test_golden_default_columns() -> None:
    assert table(list(DEFAULT_COLUMNS), UNINIT_618) == (
        "NAME       ALGORITHM DISKSIZE DATA COMPR TOTAL STREAMS MOUNTPOINT\n"
        "/dev/zram0 lzo-rle         0B   0B    0B    0B         \n"
    )


def test_golden_output_all() -> None:
    assert table(OLD_ALL, UNINIT_618) == (
        "NAME       DISKSIZE DATA COMPR ALGORITHM STREAMS ZERO-PAGES TOTAL MEM-LIMIT MEM-USED MIGRATED MOUNTPOINT\n"  # noqa: E501
        "/dev/zram0       0B   0B    0B lzo-rle                    0    0B        0B       0B       0B \n"
    )


def test_no_rows_prints_nothing_at_all() -> None:
    for raw in (False, True):
        for noheadings in (False, True):
            assert render_table(list(DEFAULT_COLUMNS), [], raw=raw, noheadings=noheadings) == ""


# --- everything else captured from zramctl 2.38.1 -------------------------------------------

MM_STAT = {
    "uninit": "       0        0        0        0        0        0        0        0        0",
    "one-page": "    4096     4096     4096        0     4096        0        0        1        1",
    "1.5M": " 1572864  1572864  1572864        0  1572864        0        0      384      384",
    "1.5M+zeros": " 1982464  1572864  1572864        0  1572864      100        0      384      384",
}
"""mm_stat of zram0 in each captured state (disksize 0 when uninitialised, else 64 MiB)."""

CAPTURED = [
    # (state, -o list or DEFAULT/ALL, -b, --raw, -n, stdout of zramctl 2.38.1 ... /dev/zram0)
    ("uninit", "DEFAULT", False, False, False,
     "NAME       ALGORITHM DISKSIZE DATA COMPR TOTAL STREAMS MOUNTPOINT\n"
     "/dev/zram0 lzo-rle         0B   0B    0B    0B         \n"),
    ("uninit", "ALL", False, False, False,
     "NAME       DISKSIZE DATA COMPR ALGORITHM STREAMS ZERO-PAGES TOTAL MEM-LIMIT MEM-USED MIGRATED MOUNTPOINT\n"  # noqa: E501
     "/dev/zram0       0B   0B    0B lzo-rle                    0    0B        0B       0B       0B \n"),
    ("uninit", "ALL", True, False, False,
     "NAME       DISKSIZE DATA COMPR ALGORITHM STREAMS ZERO-PAGES TOTAL MEM-LIMIT MEM-USED MIGRATED MOUNTPOINT\n"  # noqa: E501
     "/dev/zram0        0    0     0 lzo-rle                    0     0         0        0        0 \n"),
    ("uninit", "ALL", False, True, False,
     "NAME DISKSIZE DATA COMPR ALGORITHM STREAMS ZERO-PAGES TOTAL MEM-LIMIT MEM-USED MIGRATED MOUNTPOINT\n"
     "/dev/zram0 0B 0B 0B lzo-rle  0 0B 0B 0B 0B \n"),
    ("uninit", "DEFAULT", False, True, False,
     "NAME ALGORITHM DISKSIZE DATA COMPR TOTAL STREAMS MOUNTPOINT\n"
     "/dev/zram0 lzo-rle 0B 0B 0B 0B  \n"),
    ("uninit", "DEFAULT", False, False, True,
     "/dev/zram0 lzo-rle         0B   0B    0B    0B         \n"),
    ("uninit", "ALL", True, False, True,
     "/dev/zram0        0    0     0 lzo-rle                    0     0         0        0        0 \n"),
    ("uninit", "DEFAULT", False, True, True,
     "/dev/zram0 lzo-rle 0B 0B 0B 0B  \n"),
    ("uninit", "NAME,DATA", False, False, False,
     "NAME       DATA\n"
     "/dev/zram0   0B\n"),
    ("uninit", "DATA,NAME", True, False, False,
     "DATA NAME\n"
     "   0 /dev/zram0\n"),
    ("uninit", "DATA", False, False, False,
     "DATA\n"
     "  0B\n"),
    ("uninit", "DATA", True, False, False,
     "DATA\n"
     "   0\n"),
    ("uninit", "NAME,DISKSIZE", False, False, False,
     "NAME       DISKSIZE\n"
     "/dev/zram0       0B\n"),
    ("uninit", "STREAMS", False, False, False,
     "STREAMS\n"
     "\n"),
    ("uninit", "STREAMS,NAME", False, False, False,
     "STREAMS NAME\n"
     "        /dev/zram0\n"),
    ("uninit", "MOUNTPOINT,NAME", False, False, False,
     "MOUNTPOINT NAME\n"
     "           /dev/zram0\n"),
    ("uninit", "NAME,ZERO-PAGES,MIGRATED", False, False, False,
     "NAME       ZERO-PAGES MIGRATED\n"
     "/dev/zram0          0       0B\n"),
    ("uninit", "NAME,NAME", False, True, False,
     "NAME NAME\n"
     "/dev/zram0 /dev/zram0\n"),
    ("one-page", "DEFAULT", False, False, False,
     "NAME       ALGORITHM DISKSIZE DATA COMPR TOTAL STREAMS MOUNTPOINT\n"
     "/dev/zram0 lzo-rle        64M   4K    4K    4K         \n"),
    ("one-page", "ALL", False, False, False,
     "NAME       DISKSIZE DATA COMPR ALGORITHM STREAMS ZERO-PAGES TOTAL MEM-LIMIT MEM-USED MIGRATED MOUNTPOINT\n"  # noqa: E501
     "/dev/zram0      64M   4K    4K lzo-rle                    0    4K        0B       4K       0B \n"),
    ("one-page", "ALL", True, False, False,
     "NAME       DISKSIZE  DATA COMPR ALGORITHM STREAMS ZERO-PAGES TOTAL MEM-LIMIT MEM-USED MIGRATED MOUNTPOINT\n"  # noqa: E501
     "/dev/zram0 67108864  4096  4096 lzo-rle                    0  4096         0     4096        0 \n"),
    ("one-page", "ALL", False, True, False,
     "NAME DISKSIZE DATA COMPR ALGORITHM STREAMS ZERO-PAGES TOTAL MEM-LIMIT MEM-USED MIGRATED MOUNTPOINT\n"
     "/dev/zram0 64M 4K 4K lzo-rle  0 4K 0B 4K 0B \n"),
    ("one-page", "DEFAULT", False, False, True,
     "/dev/zram0 lzo-rle        64M   4K    4K    4K         \n"),
    ("one-page", "ALL", True, False, True,
     "/dev/zram0 67108864  4096  4096 lzo-rle                    0  4096         0     4096        0 \n"),
    ("one-page", "NAME,DATA", False, False, False,
     "NAME       DATA\n"
     "/dev/zram0   4K\n"),
    ("one-page", "DATA,NAME", True, False, False,
     " DATA NAME\n"
     " 4096 /dev/zram0\n"),
    ("one-page", "DATA", False, False, False,
     "DATA\n"
     "  4K\n"),
    ("one-page", "DATA", True, False, False,
     " DATA\n"
     " 4096\n"),
    ("one-page", "NAME,ZERO-PAGES,MIGRATED", False, False, False,
     "NAME       ZERO-PAGES MIGRATED\n"
     "/dev/zram0          0       0B\n"),
    ("1.5M", "DEFAULT", False, False, False,
     "NAME       ALGORITHM DISKSIZE  DATA COMPR TOTAL STREAMS MOUNTPOINT\n"
     "/dev/zram0 lzo-rle        64M  1.5M  1.5M  1.5M         \n"),
    ("1.5M", "ALL", False, False, False,
     "NAME       DISKSIZE  DATA COMPR ALGORITHM STREAMS ZERO-PAGES TOTAL MEM-LIMIT MEM-USED MIGRATED MOUNTPOINT\n"  # noqa: E501
     "/dev/zram0      64M  1.5M  1.5M lzo-rle                    0  1.5M        0B     1.5M       0B \n"),
    ("1.5M", "ALL", True, False, False,
     "NAME       DISKSIZE    DATA   COMPR ALGORITHM STREAMS ZERO-PAGES   TOTAL MEM-LIMIT MEM-USED MIGRATED MOUNTPOINT\n"  # noqa: E501
     "/dev/zram0 67108864 1572864 1572864 lzo-rle                    0 1572864         0  1572864        0 \n"),  # noqa: E501
    ("1.5M", "ALL", False, True, False,
     "NAME DISKSIZE DATA COMPR ALGORITHM STREAMS ZERO-PAGES TOTAL MEM-LIMIT MEM-USED MIGRATED MOUNTPOINT\n"
     "/dev/zram0 64M 1.5M 1.5M lzo-rle  0 1.5M 0B 1.5M 0B \n"),
    ("1.5M", "DEFAULT", False, False, True,
     "/dev/zram0 lzo-rle        64M  1.5M  1.5M  1.5M         \n"),
    ("1.5M", "ALL", True, False, True,
     "/dev/zram0 67108864 1572864 1572864 lzo-rle                    0 1572864         0  1572864        0 \n"),  # noqa: E501
    ("1.5M", "NAME,DATA", False, False, False,
     "NAME        DATA\n"
     "/dev/zram0  1.5M\n"),
    ("1.5M", "DATA,NAME", True, False, False,
     "   DATA NAME\n"
     "1572864 /dev/zram0\n"),
    ("1.5M", "DATA", False, False, False,
     " DATA\n"
     " 1.5M\n"),
    ("1.5M", "DATA", True, False, False,
     "   DATA\n"
     "1572864\n"),
    ("1.5M+zeros", "DEFAULT", False, False, False,
     "NAME       ALGORITHM DISKSIZE  DATA COMPR TOTAL STREAMS MOUNTPOINT\n"
     "/dev/zram0 lzo-rle        64M  1.9M  1.5M  1.5M         \n"),
    ("1.5M+zeros", "ALL", False, False, False,
     "NAME       DISKSIZE  DATA COMPR ALGORITHM STREAMS ZERO-PAGES TOTAL MEM-LIMIT MEM-USED MIGRATED MOUNTPOINT\n"  # noqa: E501
     "/dev/zram0      64M  1.9M  1.5M lzo-rle                  100  1.5M        0B     1.5M       0B \n"),
    ("1.5M+zeros", "ALL", True, False, False,
     "NAME       DISKSIZE    DATA   COMPR ALGORITHM STREAMS ZERO-PAGES   TOTAL MEM-LIMIT MEM-USED MIGRATED MOUNTPOINT\n"  # noqa: E501
     "/dev/zram0 67108864 1982464 1572864 lzo-rle                  100 1572864         0  1572864        0 \n"),  # noqa: E501
    ("1.5M+zeros", "ALL", False, True, False,
     "NAME DISKSIZE DATA COMPR ALGORITHM STREAMS ZERO-PAGES TOTAL MEM-LIMIT MEM-USED MIGRATED MOUNTPOINT\n"
     "/dev/zram0 64M 1.9M 1.5M lzo-rle  100 1.5M 0B 1.5M 0B \n"),
    ("1.5M+zeros", "DEFAULT", False, False, True,
     "/dev/zram0 lzo-rle        64M  1.9M  1.5M  1.5M         \n"),
    ("1.5M+zeros", "ALL", True, False, True,
     "/dev/zram0 67108864 1982464 1572864 lzo-rle                  100 1572864         0  1572864        0 \n"),  # noqa: E501
    ("1.5M+zeros", "NAME,DATA", False, False, False,
     "NAME        DATA\n"
     "/dev/zram0  1.9M\n"),
    ("1.5M+zeros", "DATA,NAME", True, False, False,
     "   DATA NAME\n"
     "1982464 /dev/zram0\n"),
    ("1.5M+zeros", "DATA", False, False, False,
     " DATA\n"
     " 1.9M\n"),
    ("1.5M+zeros", "DATA", True, False, False,
     "   DATA\n"
     "1982464\n"),
    ("1.5M+zeros", "NAME,ZERO-PAGES,MIGRATED", False, False, False,
     "NAME       ZERO-PAGES MIGRATED\n"
     "/dev/zram0        100       0B\n"),
]

CAPTURED_NAMES = [
    # (device name, UTF-8 locale, --raw, stdout of zramctl 2.38.1 -o NAME,ALGORITHM,DISKSIZE <name>);
    # --raw output was the same under LC_ALL=C, so it is listed once.
    ("/dev/../tmp/o/a b\\c", True, False,
     "NAME                ALGORITHM DISKSIZE\n"
     "/dev/../tmp/o/a b\\c lzo-rle         0B\n"),
    ("/dev/../tmp/o/a b\\c", True, True,
     "NAME ALGORITHM DISKSIZE\n"
     "/dev/../tmp/o/a\\x20b\\x5cc lzo-rle 0B\n"),
    ("/dev/../tmp/o/a b\\c", False, False,
     "NAME                ALGORITHM DISKSIZE\n"
     "/dev/../tmp/o/a b\\c lzo-rle         0B\n"),
    ("/dev/../tmp/o/back\\slash", True, False,
     "NAME                     ALGORITHM DISKSIZE\n"
     "/dev/../tmp/o/back\\slash lzo-rle         0B\n"),
    ("/dev/../tmp/o/back\\slash", True, True,
     "NAME ALGORITHM DISKSIZE\n"
     "/dev/../tmp/o/back\\x5cslash lzo-rle 0B\n"),
    ("/dev/../tmp/o/w中", True, False,
     "NAME              ALGORITHM DISKSIZE\n"
     "/dev/../tmp/o/w中 lzo-rle         0B\n"),
    ("/dev/../tmp/o/w中", True, True,
     "NAME ALGORITHM DISKSIZE\n"
     "/dev/../tmp/o/w\\xe4\\xb8\\xad lzo-rle 0B\n"),
    ("/dev/../tmp/o/w中", False, False,
     "NAME                        ALGORITHM DISKSIZE\n"
     "/dev/../tmp/o/w\\xe4\\xb8\\xad lzo-rle         0B\n"),
    ("/dev/../tmp/o/nb\xa0x", True, False,
     "NAME               ALGORITHM DISKSIZE\n"
     "/dev/../tmp/o/nb\xa0x lzo-rle         0B\n"),
    ("/dev/../tmp/o/nb\xa0x", True, True,
     "NAME ALGORITHM DISKSIZE\n"
     "/dev/../tmp/o/nb\\xc2\\xa0x lzo-rle 0B\n"),
    ("/dev/../tmp/o/nb\xa0x", False, False,
     "NAME                      ALGORITHM DISKSIZE\n"
     "/dev/../tmp/o/nb\\xc2\\xa0x lzo-rle         0B\n"),
    ("/dev/../tmp/o/zw\u200bx", True, False,
     "NAME              ALGORITHM DISKSIZE\n"
     "/dev/../tmp/o/zw\u200bx lzo-rle         0B\n"),
    ("/dev/../tmp/o/zw\u200bx", True, True,
     "NAME ALGORITHM DISKSIZE\n"
     "/dev/../tmp/o/zw\\xe2\\x80\\x8bx lzo-rle 0B\n"),
    ("/dev/../tmp/o/zw\u200bx", False, False,
     "NAME                          ALGORITHM DISKSIZE\n"
     "/dev/../tmp/o/zw\\xe2\\x80\\x8bx lzo-rle         0B\n"),
    ("/dev/../tmp/o/sh\xadx", True, False,
     "NAME               ALGORITHM DISKSIZE\n"
     "/dev/../tmp/o/sh\xadx lzo-rle         0B\n"),
    ("/dev/../tmp/o/sh\xadx", True, True,
     "NAME ALGORITHM DISKSIZE\n"
     "/dev/../tmp/o/sh\\xc2\\xadx lzo-rle 0B\n"),
    ("/dev/../tmp/o/cm é", True, False,
     "NAME               ALGORITHM DISKSIZE\n"
     "/dev/../tmp/o/cm é lzo-rle         0B\n"),
    ("/dev/../tmp/o/cm é", True, True,
     "NAME ALGORITHM DISKSIZE\n"
     "/dev/../tmp/o/cm\\x20e\\xcc\\x81 lzo-rle 0B\n"),
    ("/dev/../tmp/o/cm é", False, False,
     "NAME                       ALGORITHM DISKSIZE\n"
     "/dev/../tmp/o/cm e\\xcc\\x81 lzo-rle         0B\n"),
    ("/dev/../tmp/o/tab\tx", True, False,
     "NAME                   ALGORITHM DISKSIZE\n"
     "/dev/../tmp/o/tab\\x09x lzo-rle         0B\n"),
    ("/dev/../tmp/o/tab\tx", True, True,
     "NAME ALGORITHM DISKSIZE\n"
     "/dev/../tmp/o/tab\\x09x lzo-rle 0B\n"),
    ("/dev/../tmp/o/\\x", True, False,
     "NAME                ALGORITHM DISKSIZE\n"
     "/dev/../tmp/o/\\x5cx lzo-rle         0B\n"),
    ("/dev/../tmp/o/\\x", True, True,
     "NAME ALGORITHM DISKSIZE\n"
     "/dev/../tmp/o/\\x5cx lzo-rle 0B\n"),
    ("/dev/../tmp/o/x\\", True, False,
     "NAME             ALGORITHM DISKSIZE\n"
     "/dev/../tmp/o/x\\ lzo-rle         0B\n"),
    ("/dev/../tmp/o/x\\", True, True,
     "NAME ALGORITHM DISKSIZE\n"
     "/dev/../tmp/o/x\\x5c lzo-rle 0B\n"),
    ("/dev/../tmp/o/emo😀", True, False,
     "NAME                ALGORITHM DISKSIZE\n"
     "/dev/../tmp/o/emo😀 lzo-rle         0B\n"),
    ("/dev/../tmp/o/emo😀", True, True,
     "NAME ALGORITHM DISKSIZE\n"
     "/dev/../tmp/o/emo\\xf0\\x9f\\x98\\x80 lzo-rle 0B\n"),
    ("/dev/../tmp/o/ideo\u3000x", True, False,
     "NAME                  ALGORITHM DISKSIZE\n"
     "/dev/../tmp/o/ideo\u3000x lzo-rle         0B\n"),
    ("/dev/../tmp/o/ideo\u3000x", True, True,
     "NAME ALGORITHM DISKSIZE\n"
     "/dev/../tmp/o/ideo\\xe3\\x80\\x80x lzo-rle 0B\n"),
    ("/dev/../tmp/o/lsep\u2028", True, False,
     "NAME                           ALGORITHM DISKSIZE\n"
     "/dev/../tmp/o/lsep\\xe2\\x80\\xa8 lzo-rle         0B\n"),
    ("/dev/../tmp/o/lsep\u2028", True, True,
     "NAME ALGORITHM DISKSIZE\n"
     "/dev/../tmp/o/lsep\\xe2\\x80\\xa8 lzo-rle 0B\n"),
    ("/dev/../tmp/o/pua\ue000", True, False,
     "NAME               ALGORITHM DISKSIZE\n"
     "/dev/../tmp/o/pua\ue000 lzo-rle         0B\n"),
    ("/dev/../tmp/o/pua\ue000", True, True,
     "NAME ALGORITHM DISKSIZE\n"
     "/dev/../tmp/o/pua\\xee\\x80\\x80 lzo-rle 0B\n"),
    ("/dev/../tmp/oracle/nodes/eé", True, False,
     "NAME                        ALGORITHM DISKSIZE\n"
     "/dev/../tmp/oracle/nodes/eé lzo-rle         0B\n"),
    ("/dev/../tmp/oracle/nodes/eé", True, True,
     "NAME ALGORITHM DISKSIZE\n"
     "/dev/../tmp/oracle/nodes/e\\xc3\\xa9 lzo-rle 0B\n"),
    ("/dev/../tmp/oracle/nodes/bad\udcff", True, False,
     "NAME                             ALGORITHM DISKSIZE\n"
     "/dev/../tmp/oracle/nodes/bad\\xff lzo-rle         0B\n"),
    ("/dev/../tmp/oracle/nodes/bad\udcff", True, True,
     "NAME ALGORITHM DISKSIZE\n"
     "/dev/../tmp/oracle/nodes/bad\\xff lzo-rle 0B\n"),
    ("/dev/../tmp/oracle/nodes/del\x7f", True, False,
     "NAME                             ALGORITHM DISKSIZE\n"
     "/dev/../tmp/oracle/nodes/del\\x7f lzo-rle         0B\n"),
    ("/dev/../tmp/oracle/nodes/del\x7f", True, True,
     "NAME ALGORITHM DISKSIZE\n"
     "/dev/../tmp/oracle/nodes/del\\x7f lzo-rle 0B\n"),
    ("/dev/../tmp/oracle/nodes/c1\x85", True, False,
     "NAME                                ALGORITHM DISKSIZE\n"
     "/dev/../tmp/oracle/nodes/c1\\xc2\\x85 lzo-rle         0B\n"),
    ("/dev/../tmp/oracle/nodes/c1\x85", True, True,
     "NAME ALGORITHM DISKSIZE\n"
     "/dev/../tmp/oracle/nodes/c1\\xc2\\x85 lzo-rle 0B\n"),
]


@pytest.mark.parametrize("state,spec,inbytes,raw,noheadings,expected", CAPTURED)
def test_captured_layouts(
    state: str, spec: str, inbytes: bool, raw: bool, noheadings: bool, expected: str
) -> None:
    if spec == "DEFAULT":
        columns = list(DEFAULT_COLUMNS)
    elif spec == "ALL":
        columns = OLD_ALL
    else:
        columns = parse_columns(spec, DEFAULT_COLUMNS)
    assert table(columns, attrs_for(state), inbytes=inbytes, raw=raw, noheadings=noheadings) == expected


@pytest.mark.parametrize("name,utf8,raw,expected", CAPTURED_NAMES)
def test_captured_name_escaping(name: str, utf8: bool, raw: bool, expected: str) -> None:
    columns = parse_columns("NAME,ALGORITHM,DISKSIZE", [])
    assert table(columns, attrs_for("uninit"), raw=raw, name=name, utf8=utf8) == expected


# --- the layout rules, one at a time ---------------------------------------------------------

def test_data_width_hint_quirk() -> None:
    # "DATA" is 4 wide, its hint 5: a widest cell of exactly 4 makes the column 5 wide.
    data = find_column("DATA")
    assert column_width(data, 4, [2]) == 4
    assert column_width(data, 4, [4]) == 5
    assert column_width(data, 4, [3, 4]) == 5
    assert column_width(data, 4, [6]) == 6
    assert column_width(find_column("TOTAL"), 5, [4]) == 5
    assert column_width(find_column("NAME"), 4, [4]) == 4  # relative hints never widen off a tty


def test_widths_grow_with_the_widest_cell_of_any_row() -> None:
    columns = parse_columns("NAME,DISKSIZE,ALGORITHM", [])
    rows = [["/dev/zram0", "64M", "lzo-rle"], ["/dev/zram10", "1023.5K", "zstd"], ["/x", "", ""]]
    assert render_table(columns, rows, raw=False, noheadings=False) == (
        "NAME        DISKSIZE ALGORITHM\n"
        "/dev/zram0       64M lzo-rle\n"
        "/dev/zram10  1023.5K zstd\n"
        "/x                   \n"
    )


def test_noheadings_keeps_the_header_width() -> None:
    columns = parse_columns("ALGORITHM,STREAMS,NAME", [])
    assert render_table(columns, [["lz4", "", "/dev/zram0"]], raw=False, noheadings=True) == (
        "lz4               /dev/zram0\n"
    )


def test_empty_last_cell_keeps_the_separator_and_padding_before_it() -> None:
    columns = parse_columns("NAME,MOUNTPOINT", [])
    assert render_table(columns, [["/dev/zram0", ""]], raw=False, noheadings=False) == (
        "NAME       MOUNTPOINT\n/dev/zram0 \n"
    )
    assert render_table(columns, [["/dev/zram0", ""]], raw=True, noheadings=True) == "/dev/zram0 \n"


def test_right_aligned_last_column_is_padded_on_the_left_only() -> None:
    columns = parse_columns("NAME,DISKSIZE", [])
    assert render_table(columns, [["/dev/zram0", "1G"], ["/dev/zram1", ""]], raw=False, noheadings=False) == (
        "NAME       DISKSIZE\n/dev/zram0       1G\n/dev/zram1 \n"
    )


def test_raw_escaping() -> None:
    assert escape_raw("a b\\c\td") == "a\\x20b\\x5cc\\x09d"
    assert escape_raw("é") == "\\xc3\\xa9"
    assert escape_raw("\udcff\x7f\x1b") == "\\xff\\x7f\\x1b"
    assert escape_raw("[SWAP]") == "[SWAP]"
    columns = parse_columns("NAME,ALGORITHM", [])
    assert render_table(columns, [["/tmp/a b\\", "lz4"]], raw=True, noheadings=False) == (
        "NAME ALGORITHM\n/tmp/a\\x20b\\x5c lz4\n"
    )


def test_human_escaping_widths() -> None:
    assert safe_encode("a\\xb", True) == ("a\\x5cxb", 7)
    assert safe_encode("a\\b", True) == ("a\\b", 3)
    assert safe_encode("\x1b[1m", True) == ("\\x1b[1m", 7)
    assert safe_encode("中x", True) == ("中x", 3)
    assert safe_encode("中", False) == ("\\xe4\\xb8\\xad", 12)
    assert safe_encode("", True) == ("", 0)


@given(st.text(max_size=20), st.booleans())
def test_raw_output_is_plain_ascii_without_blanks(name: str, noheadings: bool) -> None:
    columns = parse_columns("NAME,STREAMS", [])
    out = render_table(columns, [[name, ""]], raw=True, noheadings=noheadings)
    lines = out.split("\n")
    assert lines[-1] == "" and all(line.isascii() and line.isprintable() for line in lines)
    assert all(line.count(" ") == 1 for line in lines[:-1])


@given(st.lists(st.lists(st.text(alphabet="ab 0.9KM", max_size=8), min_size=3, max_size=3),
                min_size=1, max_size=4),
       st.booleans())
def test_human_layout_matches_the_rules(rows: list[list[str]], noheadings: bool) -> None:
    """NAME left-padded-right, DATA right-aligned (with its hint quirk), ALGORITHM last and unpadded."""
    columns = parse_columns("NAME,DATA,ALGORITHM", [])
    out = render_table(columns, rows, raw=False, noheadings=noheadings)
    name_w = max([4] + [len(r[0]) for r in rows])
    data_cells = max(len(r[1]) for r in rows)
    data_w = max(4, data_cells) if data_cells != 4 else 5
    expected = [] if noheadings else [["NAME", "DATA", "ALGORITHM"]]
    expected += rows
    lines = [f"{a.ljust(name_w)} {b.rjust(data_w) if b else ' ' * data_w} {c}\n" for a, b, c in expected]
    assert out == "".join(lines)


def test_mismatched_row_is_rejected() -> None:
    with pytest.raises(ValueError):
        render_table(list(DEFAULT_COLUMNS), [["/dev/zram0"]], raw=False, noheadings=False)


# --- JSON ------------------------------------------------------------------------------------

def test_render_json_layout_and_types() -> None:
    loaded = attrs_for("1.5M+zeros") | {"max_comp_streams": "4"}
    rows = [row_values(COLUMNS, loaded.get, "/dev/zram0"), row_values(COLUMNS, UNINIT_618.get, "/dev/zram1")]
    text = render_json(COLUMNS, rows)
    assert text.startswith('{\n   "zramdevices": [\n      {\n         "name": "/dev/zram0",\n')
    assert '\n      },{\n         "name": "/dev/zram1",\n' in text
    assert text.endswith('         "mountpoint": null\n      }\n   ]\n}\n')
    data = json.loads(text)["zramdevices"]
    assert data[0] == {
        "name": "/dev/zram0", "disksize": 67108864, "data": 1982464, "compr": 1572864, "algorithm": "lzo-rle",
        "streams": 4, "zero-pages": 100, "total": 1572864, "mem-limit": 0, "mem-used": 1572864, "migrated": 0,
        "comp-ratio": 1.2604, "mountpoint": None,
    }
    assert data[1]["comp-ratio"] is None and data[1]["streams"] is None and data[1]["disksize"] == 0


def test_render_json_empty_and_duplicates() -> None:
    assert json.loads(render_json(list(DEFAULT_COLUMNS), [])) == {"zramdevices": []}
    columns = parse_columns("NAME,NAME", [])
    assert render_json(columns, [["a", "a"]]).count('"name": "a"') == 2


def test_render_json_string_escaping() -> None:
    name = Column("NAME", 0.25, False, False, "")
    out = render_json([name], [['a"b\\c\td\x01é\udcff']])
    assert '"name": "a\\"b\\\\c\\td\\u0001é\\\\xff"' in out
    assert json.loads(out)["zramdevices"][0]["name"] == 'a"b\\c\td\x01é\\xff'


# --- terminal or pipe ------------------------------------------------------------------------

class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_pipe_gets_the_exact_text() -> None:
    out = io.StringIO()
    cells = row(DEFAULT_COLUMNS, UNINIT_618.get, inbytes=False, name="/dev/zram0")
    print_table(list(DEFAULT_COLUMNS), [cells], raw=False, noheadings=False, stream=out, environ={})
    assert out.getvalue() == render_table(list(DEFAULT_COLUMNS), [cells], raw=False, noheadings=False)


@pytest.mark.parametrize("env,raw", [({"NO_COLOR": "1"}, False), ({"TERM": "dumb"}, False), ({}, True)])
def test_tty_without_colour_or_raw_gets_the_exact_text(env: dict[str, str], raw: bool) -> None:
    out = FakeTty()
    cells = row(DEFAULT_COLUMNS, UNINIT_618.get, inbytes=False, name="/dev/zram0")
    print_table(list(DEFAULT_COLUMNS), [cells], raw=raw, noheadings=False, stream=out, environ=env)
    assert out.getvalue() == render_table(list(DEFAULT_COLUMNS), [cells], raw=raw, noheadings=False)


def test_tty_gets_a_rich_table_with_the_same_cells() -> None:
    out = FakeTty()
    columns = parse_columns("NAME,DISKSIZE,MOUNTPOINT", [])
    print_table(columns, [["/dev/[zram0]", "64M", ""]], raw=False, noheadings=False, stream=out,
                environ={"TERM": "xterm-256color"})
    plain = ANSI.sub("", out.getvalue())
    assert "\x1b[1m" in out.getvalue()  # bold header
    lines = [line for line in plain.splitlines() if line.strip()]
    assert lines[0].split() == ["NAME", "DISKSIZE", "MOUNTPOINT"]
    assert "/dev/[zram0]" in lines[-1] and "64M" in lines[-1]  # brackets are not rich markup


def test_tty_with_no_rows_prints_nothing() -> None:
    out = FakeTty()
    print_table(list(DEFAULT_COLUMNS), [], raw=False, noheadings=False, stream=out, environ={})
    assert out.getvalue() == ""


def test_use_rich() -> None:
    assert use_rich(FakeTty(), {}) is True
    assert use_rich(FakeTty(), {"NO_COLOR": ""}) is True  # no-color.org: only a non-empty value counts
    assert use_rich(FakeTty(), {"NO_COLOR": "1"}) is False
    assert use_rich(io.StringIO(), {}) is False


def test_rich_is_not_imported_for_piped_output() -> None:
    code = (
        "import sys, zramctl.cli.output as o, zramctl.cli.columns as c\n"
        "o.print_table(list(c.DEFAULT_COLUMNS), [['a'] * 8], raw=False, noheadings=False)\n"
        "assert 'rich' not in sys.modules, 'rich imported'\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
