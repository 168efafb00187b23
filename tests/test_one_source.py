"""One source for each fact (issue 9, item 5).

- DATA (orig_data_size), TOTAL (mem_used_total) and DATA/TOTAL are the device's properties;
  sysfs, the report, ``stat`` and the progress bar read them, and no other module of the
  package computes them again.
- Each status column has one reader: the text with and without ``-b`` and the JSON value all
  come from it, so they cannot disagree.
"""

from __future__ import annotations

import ast
import math
import random
import re
from pathlib import Path

import pytest

from zramctl.cli import verbs
from zramctl.cli.columns import COLUMNS, Cell, cell, cell_value, find_column, row, row_values
from zramctl.cli.report import device_report
from zramctl.cli.stat import render_plain
from zramctl.cli.units import size_to_human_string
from zramctl.image.format import (
    CLASS_FIXED,
    CLASS_LAYOUT,
    ENTRY_LAYOUT,
    ENTRY_LAYOUT_V1,
    RECORD_LAYOUT,
    layout_offsets,
)
from zramctl.kernel import sysfs
from zramctl.kernel.profiles import PAGE_SIZE
from zramctl.kernel.zram_drv import Zram, ZramConfig

PACKAGE = Path(__file__).resolve().parent.parent / "zramctl"


def device(compat: str = "6.18") -> Zram:
    z = Zram(ZramConfig(compat=compat))
    sysfs.store(z, "disksize", "1M")
    return z


def filled(compat: str = "6.18") -> Zram:
    """A device holding compressible, same-filled and incompressible pages."""
    z = device(compat)
    rng = random.Random(9)
    text = b"".join(b"page %d of some text " % i for i in range(200))[:PAGE_SIZE]
    z.write(0, text * 5 + bytes(3 * PAGE_SIZE) + rng.randbytes(2 * PAGE_SIZE))
    return z


@pytest.mark.parametrize("compat", ["6.18", "3.11"])
def test_the_properties_are_the_kernel_figures(compat: str) -> None:
    z = filled(compat)
    mm = [int(x) for x in sysfs.show(z, "mm_stat").split()] if compat == "6.18" else None
    assert z.orig_data_size == z.stats.pages_stored * PAGE_SIZE > 0
    assert z.mem_used_total == z.mem_used_pages() * PAGE_SIZE > 0
    assert z.compression_ratio == z.orig_data_size / z.mem_used_total
    if mm is not None:
        assert (mm[0], mm[2]) == (z.orig_data_size, z.mem_used_total)
    else:  # 3.11 has the per-value files instead of mm_stat
        assert sysfs.show(z, "orig_data_size") == f"{z.orig_data_size}\n"
        assert sysfs.show(z, "mem_used_total") == f"{z.mem_used_total}\n"


def test_an_empty_device_has_no_ratio() -> None:
    z = device()
    assert (z.orig_data_size, z.mem_used_total, z.compression_ratio) == (0, 0, None)
    z.write(0, bytes(PAGE_SIZE))  # same-filled: counted in DATA, holds no allocator page
    assert z.orig_data_size == PAGE_SIZE and z.mem_used_total == 0 and z.compression_ratio is None


def test_report_stat_and_progress_read_the_device() -> None:
    z = filled()
    report = device_report(z)
    assert report.counters["orig_data_size"] == z.orig_data_size
    assert report.counters["mem_used_total"] == z.mem_used_total
    assert report.compression_ratio == z.compression_ratio
    assert f"  compression ratio  {z.compression_ratio:.4f}\n" in render_plain("zram0", report)
    assert verbs._ratio(z)() == z.compression_ratio
    empty = device_report(device())
    assert empty.compression_ratio is None
    assert "  compression ratio  -\n" in render_plain("zram0", empty)


def _computes_a_device_figure(node: ast.AST) -> bool:
    """``<x>.pages_stored << / * ...`` or ``<x>.mem_used_pages() << / * ...``: DATA or TOTAL again."""
    if not isinstance(node, ast.BinOp) or not isinstance(node.op, (ast.LShift, ast.Mult, ast.Div)):
        return False
    for side in (node.left, node.right):
        if isinstance(side, ast.Attribute) and side.attr == "pages_stored":
            return True
        if isinstance(side, ast.Call) and isinstance(side.func, ast.Attribute):
            if side.func.attr == "mem_used_pages":
                return True
    return False


def test_no_module_but_the_driver_computes_data_or_total() -> None:
    """Would fail if, say, sysfs went back to ``pages_stored << PAGE_SHIFT`` for mm_stat."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "zram_drv.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if _computes_a_device_figure(node):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert found == []


def test_the_check_sees_a_recomputation() -> None:
    """The check above can fail: it finds each way DATA or TOTAL used to be computed."""
    for text in ("z.stats.pages_stored << PAGE_SHIFT", "z.mem_used_pages() << PAGE_SHIFT",
                 "st.pages_stored / used", "zram.mem_used_pages() * 4096"):
        assert _computes_a_device_figure(ast.parse(text, mode="eval").body), text


# --- one reader per column ---------------------------------------------------------------------

ATTRS = {
    "disksize": "1048576",
    "comp_algorithm": "lzo [lzo-rle] lz4",
    "max_comp_streams": "4",
    "mm_stat": "   45056     9816    28672        0    28672        3        0        2        2",
}


@pytest.mark.parametrize("column", COLUMNS, ids=lambda c: c.name)
def test_text_bytes_and_json_come_from_one_reading(column) -> None:
    got = column.read(ATTRS.get, "/dev/zram0")
    assert isinstance(got, Cell)
    assert cell(column, ATTRS.get, inbytes=False, name="/dev/zram0") == got.text
    assert cell(column, ATTRS.get, inbytes=True, name="/dev/zram0") == got.raw
    assert cell_value(column, ATTRS.get, "/dev/zram0") == got.value
    if column.name in ("DISKSIZE", "DATA", "COMPR", "TOTAL", "MEM-LIMIT", "MEM-USED", "MIGRATED"):
        assert isinstance(got.value, int) and got.text == size_to_human_string(got.value)
        assert got.raw == str(got.value)


def test_rows_read_each_attribute_once() -> None:
    reads: list[str] = []

    def attrs(name: str) -> str | None:
        reads.append(name)
        return ATTRS.get(name)

    row(COLUMNS, attrs, inbytes=False, name="/dev/zram0")
    assert sorted(reads) == sorted(set(reads))
    reads.clear()
    values = row_values(COLUMNS, attrs, "/dev/zram0")
    assert sorted(reads) == sorted(set(reads))
    ratio = values[COLUMNS.index(find_column("COMP-RATIO"))]  # type: ignore[arg-type]
    assert isinstance(ratio, float) and math.isclose(ratio, 45056 / 28672)


# --- the device root ---------------------------------------------------------------------------

def test_both_help_texts_say_the_default_root(capsys, monkeypatch) -> None:
    """store.choose_root decides; both helps say its whole order, $XDG_STATE_HOME included."""
    from zramctl.cli.main import main

    monkeypatch.setenv("COLUMNS", "200")  # rich wraps the verbs' help to the terminal
    order = ("$ZRAMCTL_ROOT", "$XDG_STATE_HOME/zramctl", "~/.local/state/zramctl")
    for argv in (["--help"], ["write", "--help"], ["hot-add", "--help"]):
        assert main(argv) == 0
        out = " ".join(capsys.readouterr().out.split())
        at = [out.find(word) for word in order]
        assert -1 not in at and at == sorted(at), (argv, at)


# --- the default algorithm ---------------------------------------------------------------------

@pytest.mark.parametrize("compat", ["6.18", "3.11"])
def test_the_default_algorithm_is_the_profiles(compat: str) -> None:
    """Profile.default_algorithm is read: a new device, and one switched to a kernel, use it."""
    from zramctl.kernel.profiles import DEFAULT_PROFILE, get_profile

    assert ZramConfig().comp_algorithm == get_profile(DEFAULT_PROFILE).default_algorithm == "lzo-rle"
    z = Zram(ZramConfig())
    sysfs.store(z, "compat", compat)
    expected = get_profile(compat).default_algorithm
    assert z.config.comp_algorithm == expected == {"6.18": "lzo-rle", "3.11": "lzo"}[compat]
    if compat == "6.18":  # 3.11 has no comp_algorithm file (3.15 added it)
        assert f"[{expected}]" in sysfs.show(z, "comp_algorithm")


# --- the image's bit layouts -------------------------------------------------------------------

MAN_IMAGE = Path(__file__).resolve().parent.parent / "man" / "zram-image.5"


def _man_section(title: str) -> str:
    text = MAN_IMAGE.read_text()
    start = text.index(f"\n.SH {title}\n")
    return text[start : text.index("\n.SH ", start + 1)]


def _man_rows(section: str, columns: int) -> list[tuple[str, ...]]:
    """The rows of the tbl tables in a section: ``columns - 1`` tab-separated cells, then a T{ T} block."""
    lead = r"\t".join([r"([^\t\n]+)"] * (columns - 1))
    return [
        (*m.groups()[:-1], m.group(columns).replace("\\-", "-"))
        for m in re.finditer(rf"^{lead}\tT\{{\n(.*?)\nT\}}", section, re.M | re.S)
    ]


@pytest.mark.parametrize(
    ("title", "layout"),
    [
        ("PAGE TABLE", ENTRY_LAYOUT),
        ("VERSION 1 PAGE TABLE", ENTRY_LAYOUT_V1),
        ("ZSPAGE RECORDS", RECORD_LAYOUT),
    ],
)
def test_the_manual_bits_tables_are_the_declared_layouts(title: str, layout) -> None:
    """zram-image(5)'s BITS tables row for row: the encoders and decoders use the same declaration."""
    rows = _man_rows(_man_section(title), 3)
    assert rows == [(f.bits, f.name, f.description) for f in layout]


def test_the_manual_class_table_is_the_declared_layout() -> None:
    rows = _man_rows(_man_section("CLASS AREA"), 4)
    fixed = [(str(off), str(size), name, desc) for off, size, name, desc in layout_offsets(CLASS_LAYOUT)]
    assert rows[: len(fixed)] == fixed
    assert rows[len(fixed)][0] == str(CLASS_FIXED.size)  # heads follow the fixed part


def test_an_entry_and_a_record_are_built_from_their_fields() -> None:
    """Every field round-trips through encode/decode at the bits the layout declares."""
    from zramctl.image import format as fmt
    from zramctl.kernel.zram_drv import (
        ZRAM_COMP_PRIORITY_SHIFT,
        ZRAM_HUGE,
        ZRAM_IDLE,
        ZRAM_INCOMPRESSIBLE,
        ZRAM_SAME,
        ZRAM_WB,
    )
    from zramctl.kernel.zsmalloc import ZsPage

    fields = {f.name: f for f in ENTRY_LAYOUT}
    handle = (5 * fmt.EXTENT_BLOCKS) << 11 | 7
    prio2 = 2 << ZRAM_COMP_PRIORITY_SHIFT
    obj = (1234 | ZRAM_IDLE | ZRAM_INCOMPRESSIBLE | prio2, handle, 0xDEADBEEF, 0xFEDCBA987)
    v = fmt.encode_entry(obj)
    names = ("kind", "huge", "idle", "incompressible", "priority", "size", "obj_idx", "key", "crc", "ac_time")
    got = {name: fields[name].get(v) for name in names}
    assert got == {
        "kind": fmt.KIND_OBJECT, "huge": 0, "idle": 1, "incompressible": 1, "priority": 2, "size": 1234,
        "obj_idx": 7, "key": 5, "crc": 0xDEADBEEF, "ac_time": 0xFEDCBA987,
    }  # fmt: skip
    huge = (4096 | ZRAM_HUGE, handle, 1, 2)
    assert fields["huge"].get(fmt.encode_entry(huge)) == 1
    same = fmt.encode_entry((ZRAM_SAME | ZRAM_IDLE, 0x0123456789ABCDEF, 0, 77))
    assert fields["fill"].get(same) == 0x0123456789ABCDEF and fields["kind"].get(same) == fmt.KIND_SAME
    assert fields["ac_time"].get(same) == 77 and fields["idle"].get(same) == 1
    wb = fmt.encode_entry((ZRAM_WB, (1 << 40) - 1, 0xCAFEF00D, 5))
    got = {name: fields[name].get(wb) for name in ("kind", "block", "crc", "ac_time")}
    assert got == {"kind": fmt.KIND_WB, "block": (1 << 40) - 1, "crc": 0xCAFEF00D, "ac_time": 5}
    entries = [obj, None, huge, (ZRAM_SAME, 9, 0, 3), (ZRAM_WB | ZRAM_IDLE, 12, 34, 56)]
    block = fmt.encode_table(fmt.EXTENT_BLOCKS, entries)
    assert fmt.decode_table(fmt.EXTENT_BLOCKS, block, 6)[: len(entries)] == entries

    rec = {f.name: f for f in RECORD_LAYOUT}
    z = ZsPage(3 * fmt.EXTENT_BLOCKS, 2)
    z.inuse, z.freeobj, z.fullness = 9, 4, 1
    z.prev, z.next = 1 * fmt.EXTENT_BLOCKS, 2 * fmt.EXTENT_BLOCKS
    v = fmt.encode_record(z, [False, False, False])
    got = {name: rec[name].get(v) for name in ("kind", "cls", "fullness", "inuse", "freeobj", "prev", "next")}
    want = {"kind": fmt.RECORD_ZSPAGE, "cls": 2, "fullness": 1, "inuse": 9, "freeobj": 4}
    want |= {"prev": 1, "next": 2}
    assert got == want
