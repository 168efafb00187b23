"""The one place that decides how a status table is printed.

Piped output (and ``--raw`` anywhere) must be byte-identical to util-linux ``zramctl``, which
prints through libsmartcols.  ``render_table`` reimplements the parts of libsmartcols 2.38.1
(``calculate.c``, ``print.c``, ``lib/mbsalign.c``, ``include/carefulputc.h``) that zramctl's
non-tty output exercises:

* Width of a column = the widest cell, at least the header's width -- also with ``-n``, where the
  header is not printed.  (libsmartcols >= 2.40 ignores the header there and applies the width
  hints instead; we follow 2.38.1 because that is what the installed zramctl prints.)
* One quirk of the width hints: a column whose hint is >= 1 and wider than its header (only
  DATA: "DATA" is 4, its hint 5) grows to the hint when its widest cell is exactly as wide as
  the header, so four-character DATA cells ("1.5M", "4096") give a 5-wide column.
* One space between columns; right-aligned columns (header included) are padded on the left;
  every column but the last is padded on the right, even when its cell is empty; the last column
  is never padded on the right.
* Cells are "safe encoded": control characters, invalid multibyte bytes and a ``\\`` that starts
  ``\\x`` become ``\\xNN``.  ``--raw`` joins cells with single spaces and escapes blanks,
  backslashes and every non-printable byte instead (``fputs_nonblank``).
* A table without rows prints nothing at all, not even its header.

On a terminal (and unless ``NO_COLOR`` or ``TERM=dumb``) ``print_table`` draws the same table
with rich instead; rich is imported only there, so piped commands start fast.  ``render_json``
is our extension, laid out like util-linux's ``lsblk --json``.
"""

from __future__ import annotations

import locale
import math
import os
import sys
import unicodedata
from collections.abc import Mapping, Sequence
from typing import TextIO

from zramctl.cli.columns import Column, Value, format_ratio

JSON_TABLE_NAME = "zramdevices"
"""The top-level key of ``--json`` output, named like lsblk's ``blockdevices``."""


def locale_is_utf8() -> bool:
    """Whether the user's locale is UTF-8, so printable non-ASCII characters pass unescaped.

    In the C/POSIX locale Python coerces itself to UTF-8 and turns on UTF-8 mode; util-linux in
    that locale escapes every non-ASCII byte, so UTF-8 mode counts as "not a UTF-8 locale".
    """
    codeset = locale.nl_langinfo(locale.CODESET).upper().replace("-", "")
    return codeset == "UTF8" and not sys.flags.utf8_mode


def _utf8_bytes(ch: str) -> bytes:
    """The bytes C sees for ``ch``; a surrogate-escaped argv byte maps back to itself."""
    return ch.encode("utf-8", "surrogateescape")


def _hex(data: bytes) -> str:
    """Each byte as ``\\xNN``, lower-case hex as C's ``"\\\\x%02x"``."""
    return "".join(f"\\x{b:02x}" for b in data)


def _printable(ch: str) -> bool:
    """glibc's iswprint() for a non-ASCII character: everything assigned but controls and separators.

    Unlike ``str.isprintable()``, glibc counts format characters (U+200B, U+00AD), private-use
    characters and non-ASCII spaces (U+00A0, U+3000) as printable; checked against zramctl 2.38.1.
    """
    return unicodedata.category(ch) not in ("Cc", "Cs", "Zl", "Zp", "Cn")


def _char_width(ch: str) -> int:
    """glibc's wcwidth() of a printable character: 0 for marks and format characters, 2 if wide."""
    if (unicodedata.category(ch) in ("Mn", "Me", "Cf") and ch != "\u00ad") or "\u1160" <= ch <= "\u11ff":
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def safe_encode(text: str, utf8: bool) -> tuple[str, int]:
    """``mbs_safe_encode()``: the text libsmartcols prints for a cell, and its width in cells."""
    out: list[str] = []
    width = 0
    for i, ch in enumerate(text):
        code = ord(ch)
        if (ch == "\\" and text[i + 1:i + 2] == "x") or code < 0x20 or code == 0x7F:
            out.append(_hex(_utf8_bytes(ch)))
            width += 4
        elif code < 0x7F:
            out.append(ch)
            width += 1
        elif utf8 and _printable(ch):
            out.append(ch)
            width += _char_width(ch)
        else:  # invalid byte, a locale without it, or a non-printable wide character
            data = _utf8_bytes(ch)
            out.append(_hex(data))
            width += 4 * len(data)
    return "".join(out), width


def escape_raw(text: str) -> str:
    """``fputs_nonblank()``: ``--raw`` cells keep only printable ASCII other than ``\\``."""
    return "".join(
        chr(b) if 0x20 < b < 0x7F and b != 0x5C else f"\\x{b:02x}" for b in _utf8_bytes(text)
    )


def column_width(column: Column, header_width: int, cell_widths: Sequence[int]) -> int:
    """libsmartcols 2.38.1 ``count_column_width()`` for non-terminal output.

    The minimum is the header's width (at least 1) whether or not the header is printed.  If the
    cells are not narrower than that minimum, an absolute width hint (>= 1) still widens the
    column when both the cells and the header are narrower than the hint.
    """
    minimum = max(header_width, 1)
    width = max(cell_widths, default=0)
    if width < minimum:
        return minimum
    hint = int(column.whint) if column.whint >= 1 else 0
    if hint and width < hint and minimum < hint:
        return hint
    return width


def _human_line(columns: Sequence[Column], cells: Sequence[tuple[str, int]], widths: Sequence[int]) -> str:
    """One line as libsmartcols ``print_data()`` writes it in human mode (no terminal)."""
    out: list[str] = []
    last = len(columns) - 1
    for i, (column, (text, length)) in enumerate(zip(columns, cells, strict=True)):
        width = widths[i]
        if i == last and length < width and not column.right:
            width = length
        if text:
            if column.right:
                out.append(" " * (width - length))
                length = width
            out.append(text)
        if i == last:
            break
        out.append(" " * (width - length))
        out.append(" ")
    return "".join(out) + "\n"


def render_table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    *,
    raw: bool,
    noheadings: bool,
    utf8: bool | None = None,
) -> str:
    """The exact bytes (as text) util-linux zramctl prints for this table when not on a tty.

    ``rows`` hold the cell texts from ``columns.cell``; ``raw`` is ``--raw`` and ``noheadings``
    ``-n``.  ``utf8`` says whether the locale is UTF-8 (default: ``locale_is_utf8()``); it only
    matters for non-ASCII cells.
    """
    if not rows:
        return ""
    for cells in rows:
        if len(cells) != len(columns):
            raise ValueError(f"row has {len(cells)} cells for {len(columns)} columns")
    if raw:
        texts: list[Sequence[str]] = [] if noheadings else [[c.name for c in columns]]
        texts.extend(rows)
        return "".join(" ".join(escape_raw(t) for t in cells) + "\n" for cells in texts)

    if utf8 is None:
        utf8 = locale_is_utf8()
    headers = [safe_encode(c.name, utf8) for c in columns]
    encoded = [[safe_encode(t, utf8) for t in cells] for cells in rows]
    widths = [
        column_width(c, headers[i][1], [cells[i][1] for cells in encoded]) for i, c in enumerate(columns)
    ]
    lines: list[list[tuple[str, int]]] = [] if noheadings else [headers]
    lines.extend(encoded)
    return "".join(_human_line(columns, cells, widths) for cells in lines)


# ---------------------------------------------------------------------------------------------
# --json (our extension)
# ---------------------------------------------------------------------------------------------

def _json_string(text: str) -> str:
    """A JSON string as util-linux's ``fputs_quoted_json()`` writes it.

    Only ``"``, ``\\`` and control characters are escaped; other characters pass as they are.
    A byte that was not valid UTF-8 (surrogate-escaped) is shown as the text ``\\xNN``.
    """
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    short = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r", '"': '\\"', "\\": "\\\\"}
    out = []
    for ch in text:
        if ch in short:
            out.append(short[ch])
        elif ord(ch) < 0x20:
            out.append(f"\\u00{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _json_value(value: Value) -> str:
    """A typed cell as JSON: ints as they are, COMP-RATIO with the table's four decimals."""
    if value is None:
        return "null"
    if isinstance(value, bool):  # bool is an int subclass; no column produces one
        raise TypeError("boolean cell values are not supported")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_ratio(value) if math.isfinite(value) else "null"
    return _json_string(value)


def render_json(columns: Sequence[Column], rows_values: Sequence[Sequence[Value]]) -> str:
    """``{"zramdevices": [{<column>: <value>, ...}, ...]}`` in lsblk's ``--json`` layout.

    Keys are the lower-cased column names (``zero-pages``); a column listed twice appears twice,
    as libsmartcols would print it.  ``rows_values`` come from ``columns.cell_value``.
    """
    indent = "   "
    out = ["{\n", f"{indent}{_json_string(JSON_TABLE_NAME)}: [\n"]
    objects = []
    for values in rows_values:
        if len(values) != len(columns):
            raise ValueError(f"row has {len(values)} values for {len(columns)} columns")
        members = ",\n".join(
            f"{indent * 3}{_json_string(c.name.lower())}: {_json_value(v)}"
            for c, v in zip(columns, values, strict=True)
        )
        objects.append(f"{{\n{members}\n{indent * 2}}}")
    if objects:
        out.append(indent * 2 + ",".join(objects))
    out.append(f"\n{indent}]\n}}\n")
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# Terminal or pipe
# ---------------------------------------------------------------------------------------------

def use_rich(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Whether to draw a rich table: a terminal that wants colours (no-color.org, ``TERM=dumb``)."""
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR") or env.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _print_rich(
    columns: Sequence[Column], rows: Sequence[Sequence[str]], *, noheadings: bool, stream: TextIO, utf8: bool
) -> None:
    """The table drawn by rich: same columns, headers, alignment and (safe-encoded) cells.

    Like libsmartcols on a terminal, only TRUNC columns (MOUNTPOINT) give way when the terminal
    is too narrow; every other column keeps its full width and the line wraps instead.
    """
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    encoded = [[safe_encode(t, utf8) for t in cells] for cells in rows]
    widths = [
        max([len(c.name)] + [cells[i][1] for cells in encoded]) for i, c in enumerate(columns)
    ]
    table = Table(
        box=box.SIMPLE_HEAD, show_header=not noheadings, header_style="bold", show_edge=False,
        pad_edge=False, padding=(0, 1), collapse_padding=True,
    )
    for c, width in zip(columns, widths, strict=True):
        table.add_column(
            Text(c.name), justify="right" if c.right else "left", no_wrap=True,
            min_width=None if c.trunc else width, overflow="ellipsis" if c.trunc else "fold",
        )
    for cells in encoded:
        # Text, not str: rich would read "[SWAP]" or a name with brackets as markup.
        table.add_row(*(Text(text) for text, _ in cells))
    console = Console(file=stream, highlight=False, soft_wrap=False)
    needed = sum(w for c, w in zip(columns, widths, strict=True) if not c.trunc) + 3 * len(columns)
    if console.width < needed:
        console = Console(file=stream, highlight=False, soft_wrap=False, width=needed)
    console.print(table)


def print_table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    *,
    raw: bool,
    noheadings: bool,
    stream: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
    utf8: bool | None = None,
) -> None:
    """Print a status table: util-linux's exact text to a pipe, a rich table to a terminal.

    ``--raw`` is a machine format, so it is always the exact util-linux text.  A table without
    rows prints nothing in every mode, as util-linux does.
    """
    out = sys.stdout if stream is None else stream
    if utf8 is None:
        utf8 = locale_is_utf8()
    if rows and not raw and use_rich(out, environ):
        _print_rich(columns, rows, noheadings=noheadings, stream=out, utf8=utf8)
        return
    out.write(render_table(columns, rows, raw=raw, noheadings=noheadings, utf8=utf8))
