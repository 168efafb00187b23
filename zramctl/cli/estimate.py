"""``zramctl estimate``: what zram would save on some data, for every algorithm and allocator.

The verb only parses, picks the page source, runs ``estimate.estimate`` and prints;
everything it reports is computed there (see that module for what each figure
means and why it equals a device's counters).

Sources: a FILE, ``-`` (stdin; also the default when stdin is not a terminal),
``--pid PID...`` (the PIDs may follow ``--pid`` as words, be repeated or be
comma-separated) or ``--all-processes``.

Output, like the status table: a rich table with a bar per row on a terminal,
util-linux-style plain text (``render_table``, the same layout rules as the
status table) when piped or with ``--raw``, and ``--json``.  Rows are sorted by
TOTAL, smallest first (the configuration that needs the least memory on top);
``--json`` lists them in the same order.  Sizes are ``units.size_to_human_string``'s
unless ``-b``; ratios have util-linux COMP-RATIO's four decimals.

Every failure a user can cause (a bad list, a missing or unreadable process, an
empty input, an unreadable file) is one ``zramctl: ...`` line and exit 1; an input
that ends inside a page is estimated with the tail padded (a device stores a
partial page whole) and a note says so on stderr.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, BinaryIO, TextIO

import typer

from ..errors import Failure, error_words
from .columns import Column, format_ratio
from .common import PROG
from .units import size_to_human_string

if TYPE_CHECKING:
    from ..estimate import Estimate, Result
    from ..procmem import ProcessError

HELP = (
    "Estimate what zram would save on FILE, stdin, or processes' memory: every algorithm x allocator "
    "(zsmalloc 6.18 chains 4/8/16, zsmalloc 3.11, zbud, z3fold), in one pass."
)

COLUMNS: tuple[Column, ...] = (
    Column("ALGORITHM", 0, False, False, "compression algorithm (and level)"),
    Column("ALLOCATOR", 0, False, False, "allocator model (zsmalloc[:chain|:3.11], zbud, z3fold)"),
    Column("DATA", 0, True, False, "uncompressed size of the stored data (orig_data_size)"),
    Column("COMPR", 0, True, False, "compressed size of the stored data (compr_data_size)"),
    Column("TOTAL", 0, True, False, "memory the allocator uses (mem_used_total)"),
    Column("DATA/COMPR", 0, True, False, "compression ratio"),
    Column("DATA/TOTAL", 0, True, False, "compression ratio including the allocator's overhead"),
    Column("SAME", 0, True, False, "same-filled pages (no memory used)"),
    Column("HUGE", 0, True, False, "pages stored uncompressed"),
    Column("FRAG", 0, True, False, "share of TOTAL that holds no compressed data"),
    Column("SAVING", 0, True, False, "memory saved against the uncompressed input"),
)
"""The plain and rich table's columns, in order (``output.render_table`` lays them out)."""


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.1f}%"


def _ratio(ratio: float | None) -> str:
    return "-" if ratio is None else format_ratio(ratio)


def cells(r: Result, *, inbytes: bool) -> list[str]:
    """One row's texts, in COLUMNS order."""

    def size(n: int) -> str:
        return str(n) if inbytes else size_to_human_string(n)

    return [
        r.algorithm,
        r.allocator,
        size(r.data),
        size(r.compr),
        size(r.total),
        _ratio(r.data_compr_ratio),
        _ratio(r.data_total_ratio),
        str(r.same_pages),
        str(r.huge_pages),
        _percent(r.fragmentation),
        _percent(r.saving_share),
    ]


def sorted_results(est: Estimate) -> list[Result]:
    """By TOTAL, smallest first; ties keep the algorithm x allocator order of the lists."""
    return sorted(est.results, key=lambda r: r.total)


def render_json(est: Estimate) -> str:
    """``--json``: a list of ``Result.as_dict()`` rows, sorted as the table."""
    import json

    return json.dumps([r.as_dict() for r in sorted_results(est)], indent=2) + "\n"


def _print_rich(rows: Sequence[Result], table_cells: Sequence[list[str]], stream: TextIO) -> None:
    """The table drawn by rich, with a bar per row: TOTAL against the uncompressed input."""
    from rich import box
    from rich.bar import Bar
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(
        box=box.SIMPLE_HEAD, header_style="bold", show_edge=False, pad_edge=False, padding=(0, 1),
        collapse_padding=True,
    )
    for c in COLUMNS:
        table.add_column(Text(c.name), justify="right" if c.right else "left", no_wrap=True)
    table.add_column(Text("TOTAL / INPUT"), no_wrap=True, min_width=12)
    for r, texts in zip(rows, table_cells, strict=True):
        share = min(r.total / r.uncompressed, 1.0) if r.pages else 0.0
        table.add_row(*(Text(t) for t in texts), Bar(1.0, 0.0, share, width=20, color="cyan"))
    Console(file=stream, highlight=False, soft_wrap=False).print(table)


def print_estimate(
    est: Estimate, *, inbytes: bool, raw: bool, as_json: bool, stream: TextIO | None = None
) -> None:
    """The report: JSON, the plain util-linux-style table, or (on a terminal) the rich one."""
    from .output import render_table, use_rich

    out = sys.stdout if stream is None else stream
    if as_json:
        out.write(render_json(est))
        return
    rows = sorted_results(est)
    table_cells = [cells(r, inbytes=inbytes) for r in rows]
    if not raw and use_rich(out):
        _print_rich(rows, table_cells, out)
        return
    out.write(render_table(COLUMNS, table_cells, raw=raw, noheadings=False))


# --- the page source ----------------------------------------------------------------------


@dataclass
class Source:
    """Where the pages come from: chunks to estimate, their size if known, and a name for messages."""

    chunks: Iterator[bytes]
    total: int | None
    name: str


def parse_pids(words: Sequence[str]) -> list[int]:
    """``--pid`` values and the words after it: decimal PIDs, comma-separated or not."""
    pids: list[int] = []
    for word in words:
        for item in word.split(","):
            item = item.strip()
            if not item.isascii() or not item.isdigit() or len(item) > 10:
                raise Failure(f"estimate: invalid PID: '{item}'")
            pid = int(item)
            if pid not in pids:
                pids.append(pid)
    return pids


@contextmanager
def open_source(
    args: Sequence[str], pids: Sequence[str], all_processes: bool, skipped: Callable[[ProcessError], None]
) -> Iterator[Source]:
    """The pages named on the command line (one source, as the synopsis says)."""
    from .. import procmem
    from ..estimate import file_chunks, file_size

    if all_processes:
        if args or pids:
            raise Failure("estimate: --all-processes takes no FILE or PID")
        every = procmem.all_pids()
        yield Source(procmem.all_process_chunks(skipped=skipped, pids=every), procmem.total_anonymous(every),
                     "all processes")
        return
    if pids:
        numbers = parse_pids([*pids, *args])
        yield Source(procmem.process_chunks(numbers), procmem.total_anonymous(numbers),
                     "process " + ",".join(map(str, numbers)))
        return
    if len(args) > 1:
        raise Failure(f"estimate: one FILE at a time ('{args[1]}' is one too many; --pid takes several PIDs)")
    path = args[0] if args else "-"
    if path == "-":
        from .common import STDIN_IS_DIRECTORY

        if os.environ.get(STDIN_IS_DIRECTORY) == "1":
            raise Failure(f"estimate: stdin: {os.strerror(errno.EISDIR)}")
        stdin = getattr(sys.stdin, "buffer", None)
        if stdin is None:
            raise Failure(f"estimate: stdin: {os.strerror(errno.EBADF)}")
        if not args and stdin.isatty():
            raise Failure("estimate: no input: name a FILE, '-', --pid PID or --all-processes")
        yield Source(file_chunks(stdin), file_size(stdin), "stdin")
        return
    try:
        f: BinaryIO = open(path, "rb")  # closed below
    except OSError as exc:
        raise Failure(f"{path}: {error_words(exc)}") from None
    with f:
        yield Source(file_chunks(f), file_size(f), path)


# --- the verb ------------------------------------------------------------------------------


def estimate_cmd(
    args: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[FILE|-|PID...]",
            help="The data: a file, or - for stdin (the default); with --pid, more PIDs.",
            show_default=False,
        ),
    ] = None,
    pid: Annotated[
        list[str] | None,
        typer.Option(
            "--pid", metavar="PID",
            help="Estimate these processes' anonymous memory (PIDs may follow, or be comma-separated).",
            show_default=False,
        ),
    ] = None,
    all_processes: Annotated[
        bool, typer.Option("--all-processes", help="Estimate every readable process's anonymous memory.")
    ] = False,
    algorithms: Annotated[
        str | None,
        typer.Option(
            "-a", "--algorithm", metavar="LIST",
            help="Comma-separated algorithms, each with :LEVEL or :LOW..HIGH (default: all).",
            show_default=False,
        ),
    ] = None,
    allocators: Annotated[
        str | None,
        typer.Option(
            "--allocator", metavar="LIST",
            help="Comma-separated: zsmalloc (chain 8), zsmalloc:4, zsmalloc:16, zsmalloc:3.11, zbud, z3fold "
            "(default: all).",
            show_default=False,
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option("-t", "--threads", metavar="N", min=1, max=1024,
                     help="Compress on N threads (default: the CPUs available).", show_default=False),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
    inbytes: Annotated[bool, typer.Option("-b", "--bytes", help="Print sizes in bytes.")] = False,
    raw: Annotated[bool, typer.Option("--raw", help="Use the raw output format.")] = False,
) -> None:
    from ..estimate import EstimateError, estimate, parse_algorithms, parse_allocators
    from ..procmem import ProcessError
    from .common import progress

    try:
        algs = parse_algorithms(algorithms)
        allocs = parse_allocators(allocators)
    except EstimateError as exc:
        raise Failure(f"estimate: {exc}") from None
    skipped: list[ProcessError] = []
    with open_source(args or [], pid or [], all_processes, skipped.append) as source:
        with progress(source.total, "estimate", lambda: None) as advance:
            done = 0

            def bar(now: int, _total: int | None) -> None:
                nonlocal done
                advance(now - done)
                done = now

            try:
                est = estimate(source.chunks, algs, allocs, threads=threads, total=source.total, progress=bar)
            except EstimateError as exc:
                raise Failure(f"estimate: {source.name}: {exc}") from None
            except ProcessError as exc:
                raise Failure(f"estimate: {exc}") from None
            except OSError as exc:
                raise Failure(f"estimate: {source.name}: {error_words(exc)}") from None
    if est.padded:
        sys.stderr.write(
            f"{PROG}: estimate: {source.name}: the input ends inside a page; its last page was padded with "
            f"{est.padded} zero bytes (a device stores a partial page whole)\n"
        )
    if skipped:
        sys.stderr.write(
            f"{PROG}: estimate: {len(skipped)} processes could not be read and were left out "
            f"(first: {skipped[0]})\n"
        )
    print_estimate(est, inbytes=inbytes, raw=raw, as_json=as_json)
