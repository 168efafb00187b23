"""The one table of status columns, and how each cell is read from a device's attributes.

This is util-linux ``sys-utils/zramctl.c``'s ``infos[]`` table and its ``fill_table_row()``
switch, reimplemented.  The table drives ``--output`` validation, the ``--help`` column list,
the completions and the man page.  Each entry also carries the column's one reader, which gives
both the cell's text (with and without ``-b``) and its typed value (``--json``), so the text and
the number can never disagree: adding a column is one line in ``COLUMNS`` (and its reader).

A device is seen through ``attrs(name) -> str | None``: the text of a sysfs attribute with one
trailing newline removed (``ul_path_read_string()``), or None when the attribute does not exist.
Everything below reads attributes exactly as zramctl.c does, including its quirks:

* ``mm_stat`` is split on spaces and used only when it has at least 7 fields; otherwise each value
  comes from the pre-4.1 per-value files (``orig_data_size`` ...), where a missing file gives an
  empty cell.  A non-numeric ``mm_stat`` field is fatal (``strtou64_or_err``), a non-numeric
  legacy file is not (``ul_path_read_u64`` uses fscanf).
* ZERO-PAGES is always the raw number; MIGRATED is a count but printed as a size.
* COMP-RATIO is C's ``"%.4f"`` of a double division: 0/0 prints ``-nan`` and x/0 prints ``inf``.

``EXTRA_COLUMNS`` are ours, for post-processing (huge pages, writeback, idle pages).  They are
offered only when named with ``-o``: ``--output-all`` stays util-linux's ``COLUMNS``, byte for
byte.  Each counts pages and is printed as a plain number (with or without ``-b``), as
util-linux prints ZERO-PAGES; a device whose kernel lacks the attribute (3.11) shows it empty.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from zramctl.cli.units import U64_MAX, SizeError, parse_u64, size_to_human_string

Attrs = Callable[[str], str | None]
"""``attrs(name)``: a sysfs attribute's text without its trailing newline, or None if absent."""

Value = int | float | str | None
"""A typed cell for JSON: bytes and counts as int, COMP-RATIO as float, text as str, empty as None."""


MM_STAT_FILES = (
    "orig_data_size", "compr_data_size", "mem_used_total", "mem_limit",
    "mem_used_max", "zero_pages", "num_migrated",
)
"""The pre-4.1 per-value files, in ``mm_stat`` field order (the fallback when mm_stat is short)."""

class ColumnError(ValueError):
    """A bad ``--output`` list.

    ``message`` is what zramctl prints after ``zramctl: `` (``unknown column: FOO,DATA``), or None
    for the errors util-linux reports only through its exit status (``-o ''``, ``-o ,NAME``, a
    list longer than ``MAX_COLUMNS``).
    """

    def __init__(self, message: str | None) -> None:
        super().__init__(message or "invalid column list")
        self.message = message


class StatError(ValueError):
    """An ``mm_stat`` field that is not a number: zramctl exits with ``Failed to parse mm_stat``.

    ``message`` is the errx text (``Failed to parse mm_stat: 'x'``); ``errno`` is ERANGE when
    util-linux appends ``: Numerical result out of range`` (negative or too large), else EINVAL.
    """

    def __init__(self, field: str, err: int) -> None:
        self.message = f"Failed to parse mm_stat: '{field}'"
        super().__init__(self.message)
        self.errno = err



# ---------------------------------------------------------------------------------------------
# Reading a device's attributes the way zramctl.c does
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cell:
    """One cell of one device, read once: every form any output prints."""

    text: str
    """What the table shows without ``-b`` (a human size for sizes)."""
    raw: str
    """What the table shows with ``-b/--bytes`` (the attribute's own text for sizes)."""
    value: Value
    """The typed value for ``--json``: what the text shows, before formatting."""


Reader = Callable[[Attrs, str], Cell]
"""A column's reader: ``reader(attrs, name) -> Cell`` (``name`` as zramctl shows it, ``/dev/zramN``).

It raises ``StatError`` where zramctl would exit because ``mm_stat`` is not numeric."""


def _scanf_u64(text: str | None) -> int | None:
    """``fscanf(f, "%" SCNu64)`` as ``ul_path_read_u64`` uses it; None when it converts nothing.

    Lenient like glibc: leading whitespace, a sign (``-5`` wraps modulo 2**64), trailing
    characters ignored, overflow clamped to 2**64 - 1.
    """
    if text is None:
        return None
    s = text.lstrip(" \t\n\v\f\r")
    sign = 1
    if s[:1] in ("+", "-"):
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    n = 0
    while n < len(s) and "0" <= s[n] <= "9":
        n += 1
    if n == 0:
        return None
    value = int(s[:n])
    if value > U64_MAX:
        return U64_MAX
    return (sign * value) & U64_MAX


def _mm_stat(attrs: Attrs) -> list[str] | None:
    """The ``mm_stat`` fields, or None when the legacy files must be used instead.

    ``ul_strv_split(str, " ")`` splits on spaces only and drops empty fields; a file that is
    empty (after the newline) or has fewer than 7 fields does not count.
    """
    text = attrs("mm_stat")
    if not text:
        return None
    fields = [f for f in text.split(" ") if f]
    return fields if len(fields) >= len(MM_STAT_FILES) else None


def _mm_stat_number(field: str) -> int:
    """A field parsed by ``strtou64_or_err(field, "Failed to parse mm_stat")``."""
    try:
        return parse_u64(field)
    except SizeError as e:
        raise StatError(field, e.errno) from None


def _stat(attrs: Attrs, index: int) -> tuple[str | None, int | None]:
    """One statistic as ``(text, number)``, read like zramctl.c's ``get_mm_stat()``.

    ``text`` is what ``-b`` (or ZERO-PAGES) prints; ``number`` feeds the human size, JSON and
    COMP-RATIO.  From ``mm_stat`` the field is always validated.  From a legacy file the text is
    taken verbatim and the number is fscanf's (None when the file is missing or does not start
    with a number; with ``-b`` zramctl prints the text and never parses it).
    """
    fields = _mm_stat(attrs)
    if fields is not None:
        item = fields[index]
        return item, _mm_stat_number(item)
    text = attrs(MM_STAT_FILES[index])
    return text, _scanf_u64(text)


def _algorithm(attrs: Attrs) -> str:
    """The text between the last ``[`` and the last ``]`` of ``comp_algorithm`` (empty if none)."""
    text = attrs("comp_algorithm")
    if text is None:
        return ""
    left, right = text.rfind("["), text.rfind("]")
    if left < 0 or right < 0 or right - left <= 1:
        return ""
    return text[left + 1:right]


def format_ratio(ratio: float) -> str:
    """C's ``printf("%.4f")`` of a ratio: ``-nan``/``nan``, ``inf``, or four decimals."""
    if math.isnan(ratio):
        return "-nan" if math.copysign(1.0, ratio) < 0 else "nan"
    if math.isinf(ratio):
        return "inf" if ratio > 0 else "-inf"
    return f"{ratio:.4f}"


def _number_or_text(text: str | None) -> Value:
    """An all-digit attribute as int; other text unchanged; missing or empty as None."""
    if not text:
        return None
    if text.isascii() and text.isdigit():
        return int(text)
    return text


def _size(text: str | None, number: int | None) -> Cell:
    """A size: the human form of ``number``, the attribute's text with ``-b``, bytes in JSON."""
    return Cell("" if number is None else size_to_human_string(number), text or "", number)


def _read_name(attrs: Attrs, name: str) -> Cell:
    return Cell(name, name, name or None)


def _read_disksize(attrs: Attrs, name: str) -> Cell:
    text = attrs("disksize")
    return _size(text, _scanf_u64(text))


def _read_algorithm(attrs: Attrs, name: str) -> Cell:
    algorithm = _algorithm(attrs)
    return Cell(algorithm, algorithm, algorithm or None)


def _read_streams(attrs: Attrs, name: str) -> Cell:
    text = attrs("max_comp_streams") or ""
    return Cell(text, text, _number_or_text(text))


def _read_stat(index: int) -> Reader:
    """The reader of the ``mm_stat`` field ``index`` (or its legacy file), shown as a size."""

    def read(attrs: Attrs, name: str) -> Cell:
        return _size(*_stat(attrs, index))

    return read


def _read_count(index: int) -> Reader:
    """The reader of an ``mm_stat`` count that zramctl always prints raw (ZERO-PAGES)."""

    def read(attrs: Attrs, name: str) -> Cell:
        text, number = _stat(attrs, index)
        return Cell(text or "", text or "", number)

    return read


def _ratio(attrs: Attrs) -> float:
    """DATA/TOTAL as C's double division; a missing value counts as 0, so 0/0 is NaN."""
    orig = _stat(attrs, _DATA)[1] or 0
    total = _stat(attrs, _TOTAL)[1] or 0
    if total == 0:
        # x86's 0.0/0.0 yields the negative default NaN, which glibc prints as "-nan".
        return -math.nan if orig == 0 else math.inf
    return float(orig) / float(total)


def _read_ratio(attrs: Attrs, name: str) -> Cell:
    """COMP-RATIO: the same text with or without ``-b``; JSON has no NaN or infinity (None)."""
    ratio = _ratio(attrs)
    text = format_ratio(ratio)
    return Cell(text, text, ratio if math.isfinite(ratio) else None)


def _read_empty(attrs: Attrs, name: str) -> Cell:
    """An empty cell: MOUNTPOINT (our devices are image files: never mounted, never in /proc/swaps),
    and any column laid out from other data (``zramctl estimate``'s table), which reads no device."""
    return Cell("", "", None)


_DATA, _COMPR, _TOTAL, _LIMIT, _USED, _ZERO, _MIGRATED = range(len(MM_STAT_FILES))
"""The ``mm_stat`` field (and ``MM_STAT_FILES`` index) of each statistics column."""

_HUGE, _HUGE_SINCE = ("mm_stat", 7), ("mm_stat", 8)
"""``mm_stat``'s huge_pages (Linux 4.19) and huge_pages_since (5.15): past the seven util-linux reads."""

_BD_COUNT, _BD_READS, _BD_WRITES = (("bd_stat", i) for i in range(3))
"""The fields of ``bd_stat`` (``CONFIG_ZRAM_WRITEBACK``), each in 4 KiB units."""


def _page_count(text: str | None) -> Cell:
    """A count of pages: the number as the kernel printed it, the same with ``-b``; int in JSON.

    Empty when the kernel has no such value (a missing attribute or field).  A field that is
    not a number is shown as it is, and is a string in JSON: these columns are ours, and
    util-linux's "Failed to parse mm_stat" exit belongs to the fields it reads itself.
    """
    if text is None:
        return Cell("", "", None)
    return Cell(text, text, _number_or_text(text))


def _read_page_count(attribute: str, index: int) -> Reader:
    """The reader of page-count field ``index`` of ``attribute``: ``mm_stat`` beyond util-linux's
    seven fields (HUGE, HUGE-SINCE), ``bd_stat`` (BD-COUNT, BD-READS, BD-WRITES, in 4 KiB pages)."""

    def read(attrs: Attrs, name: str) -> Cell:
        text = attrs(attribute)
        fields = text.split() if text else []
        return _page_count(fields[index] if index < len(fields) else None)

    return read


IDLE_FLAG = 3
"""The position of ``i`` (ZRAM_IDLE) among the six flag letters of a ``block_state`` line."""


def _read_idle(attrs: Attrs, name: str) -> Cell:
    """IDLE: the stored pages marked idle, counted as a kernel user counts them, from the lines of
    ``block_state`` (debugfs in the kernel) whose flags show ``i``.  No block_state: empty."""
    text = attrs("block_state")
    if text is None:
        return Cell("", "", None)
    count = 0
    for line in text.splitlines():
        flags = line.rsplit(None, 1)[-1] if line.strip() else ""
        if len(flags) > IDLE_FLAG and flags[IDLE_FLAG] == "i":
            count += 1
    return _page_count(str(count))


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Column:
    """One status column, as util-linux's ``struct colinfo``, with the reader of its cells."""

    name: str
    """Header text and the ``--output`` name (matched case-insensitively)."""
    whint: float
    """libsmartcols width hint: >= 1 is a minimum width in cells, < 1 a fraction of the terminal."""
    right: bool
    """SCOLS_FL_RIGHT: right-aligned, header included."""
    trunc: bool
    """SCOLS_FL_TRUNC: may be truncated to fit a terminal (tty output only)."""
    help: str
    """The ``--help`` description (util-linux 2.42's wording; MIGRATED's says what 6.18 counts: pages)."""
    read: Reader = field(default=_read_empty, compare=False, repr=False)
    """The one source of this column's cells: text, ``-b`` text and JSON value."""


COLUMNS: tuple[Column, ...] = (
    Column("NAME", 0.25, False, False, "zram device name", _read_name),
    Column("DISKSIZE", 5, True, False, "limit on the uncompressed amount of data", _read_disksize),
    Column("DATA", 5, True, False, "uncompressed size of stored data", _read_stat(_DATA)),
    Column("COMPR", 5, True, False, "compressed size of stored data", _read_stat(_COMPR)),
    Column("ALGORITHM", 3, False, False, "the selected compression algorithm", _read_algorithm),
    Column("STREAMS", 3, True, False, "number of concurrent compress operations", _read_streams),
    Column("ZERO-PAGES", 3, True, False, "empty pages with no allocated memory", _read_count(_ZERO)),
    Column(
        "TOTAL", 5, True, False, "all memory including allocator fragmentation and metadata overhead",
        _read_stat(_TOTAL),
    ),
    Column("MEM-LIMIT", 5, True, False, "memory limit used to store compressed data", _read_stat(_LIMIT)),
    Column("MEM-USED", 5, True, False, "peak memory usage to store compressed data", _read_stat(_USED)),
    Column("MIGRATED", 5, True, False, "number of pages freed by compaction", _read_stat(_MIGRATED)),
    Column("COMP-RATIO", 5, True, False, "compression ratio: DATA/TOTAL", _read_ratio),
    Column("MOUNTPOINT", 0.10, False, True, "where the device is mounted", _read_empty),
)
"""util-linux's columns in its table order: the ``--output-all`` columns, in that order."""

EXTRA_COLUMNS: tuple[Column, ...] = (
    Column("HUGE", 3, True, False, "incompressible pages stored uncompressed", _read_page_count(*_HUGE)),
    Column(
        "HUGE-SINCE", 3, True, False, "incompressible pages stored since setup",
        _read_page_count(*_HUGE_SINCE),
    ),
    Column("BD-COUNT", 3, True, False, "pages held in the backing device", _read_page_count(*_BD_COUNT)),
    Column("BD-READS", 3, True, False, "pages read from the backing device", _read_page_count(*_BD_READS)),
    Column("BD-WRITES", 3, True, False, "pages written to the backing device", _read_page_count(*_BD_WRITES)),
    Column("IDLE", 3, True, False, "stored pages marked idle", _read_idle),
)
"""Our post-processing columns: only when named with ``-o`` (never by ``--output-all``)."""

ALL_COLUMNS: tuple[Column, ...] = COLUMNS + EXTRA_COLUMNS
"""Every column ``-o`` accepts, as ``--help``, the man page and the completions list them."""

_BY_NAME = {c.name: c for c in ALL_COLUMNS}

DEFAULT_COLUMNS: tuple[Column, ...] = tuple(
    _BY_NAME[n] for n in ("NAME", "ALGORITHM", "DISKSIZE", "DATA", "COMPR", "TOTAL", "STREAMS", "MOUNTPOINT")
)
"""The status columns when neither ``-o`` nor ``--output-all`` is given."""

MAX_COLUMNS = 2 * len(COLUMNS)
"""Size of zramctl.c's ``columns[]`` array: a longer ``-o`` list fails, silently (exit 1).

Counted on util-linux's columns only, so that the same ``-o`` lists fail as with util-linux."""


def find_column(name: str) -> Column | None:
    """The column called ``name``, compared like C's ``c_strncasecmp`` (ASCII case only)."""
    folded = _ascii_upper(name)
    return _BY_NAME.get(folded)


def _ascii_upper(text: str) -> str:
    """Upper-case ASCII letters only: C's c_toupper, immune to Unicode folding (``ß``, Kelvin sign)."""
    return "".join(chr(ord(c) - 32) if "a" <= c <= "z" else c for c in text)


def parse_columns(spec: str, current: Sequence[Column]) -> list[Column]:
    """The columns an ``-o/--output`` argument selects (util-linux >= 2.41 semantics).

    ``LIST`` replaces ``current``; ``+LIST`` appends to it.  Names are comma-separated and
    case-insensitive; duplicates are allowed.  The walk below mirrors ``string_to_idarray()``:
    the last name runs to the end of the string, so ``NAME,`` asks for a column called ``NAME,``
    and an unknown name is reported together with the rest of the list after it.
    """
    if not spec:
        raise ColumnError(None)
    if spec.startswith("+"):
        selected, names = list(current), spec[1:]
    else:
        selected, names = [], spec
    room = MAX_COLUMNS - len(selected)
    if not names or room <= 0:
        raise ColumnError(None)

    added = 0
    begin: int | None = None
    for i, ch in enumerate(names):
        if added >= room:
            raise ColumnError(None)  # more than MAX_COLUMNS: util-linux says nothing
        if begin is None:
            begin = i
        end: int | None = None
        if ch == ",":
            end = i
        if i + 1 == len(names):
            end = i + 1
        if end is None:
            continue
        if end <= begin:
            raise ColumnError(None)  # empty name: ",NAME", "NAME,,DATA"
        column = find_column(names[begin:end])
        if column is None:
            raise ColumnError(f"unknown column: {names[begin:]}")
        selected.append(column)
        added += 1
        begin = None
    return selected


# ---------------------------------------------------------------------------------------------
# Rows
# ---------------------------------------------------------------------------------------------

def cell(column: Column, attrs: Attrs, *, inbytes: bool, name: str) -> str:
    """The text zramctl prints in ``column`` for one device (before any table layout).

    ``inbytes`` is ``-b/--bytes``; ``name`` is the device name as zramctl shows it (``/dev/zramN``).
    Raises ``StatError`` where zramctl would exit because ``mm_stat`` is not numeric.
    """
    read = column.read(attrs, name)
    return read.raw if inbytes else read.text


def cell_value(column: Column, attrs: Attrs, name: str) -> Value:
    """The typed value of a cell, for ``--json``: what ``cell()`` shows, before formatting.

    Sizes and counts are ints in bytes/units, COMP-RATIO a float (None for NaN or infinity,
    which JSON cannot carry), text columns str, and an empty cell None.
    """
    return column.read(attrs, name).value


def memoized(attrs: Attrs) -> Attrs:
    """``attrs`` reading each attribute at most once, for one row.

    zramctl.c reads ``mm_stat`` once per device and keeps it, so DATA, TOTAL and COMP-RATIO in
    one row always agree; without this our columns could each see a different snapshot.
    """
    cache: dict[str, str | None] = {}

    def read(attr: str) -> str | None:
        if attr not in cache:
            cache[attr] = attrs(attr)
        return cache[attr]

    return read


def row(columns: Sequence[Column], attrs: Attrs, *, inbytes: bool, name: str) -> list[str]:
    """All cells of one device, reading each attribute once."""
    read = memoized(attrs)
    return [cell(c, read, inbytes=inbytes, name=name) for c in columns]


def row_values(columns: Sequence[Column], attrs: Attrs, name: str) -> list[Value]:
    """All typed cells of one device, for ``render_json``."""
    read = memoized(attrs)
    return [cell_value(c, read, name) for c in columns]
