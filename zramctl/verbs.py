"""The verbs: what the kernel offers through ``dd`` and sysfs, as typer commands.

``zramctl write zram0 < data`` is ``dd of=/dev/zram0``, ``read`` is
``dd if=/dev/zram0``, ``discard`` is ``blkdiscard``, ``attr`` is
``cat``/``echo`` on ``/sys/block/zram0/NAME``, ``hot-add``/``hot-remove``
are the ``/sys/class/zram-control`` files.  ``stat`` and ``check`` are ours.

Each command only parses, calls the store/device API and prints.  Errors are
raised as ``Failure`` (worded like every other zramctl error) and printed by
``cli.main``; typer's usage errors are reworded util-linux style, exit 1.
"""

from __future__ import annotations

import errno
import functools
import os
import stat as statmod
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO

import typer

from . import interrupts, sysfs
from .cli import PROG, Failure, detail_words, device_failure, error_words
from .cli_estimate import HELP as _ESTIMATE_HELP
from .cli_estimate import estimate_cmd
from .cli_status import LOCK_WAIT, device_name, resolve
from .device import ZramError
from .interrupts import Deferred
from .profiles import PAGE_SIZE
from .store import RootError

if TYPE_CHECKING:
    from .store import DeviceHandle

CHUNK = 4 << 20
"""Bytes moved per engine call: memory stays bounded whatever the transfer's size."""
COMMIT_EVERY = 64 << 20
"""A long write commits at least this often, so a crash loses at most this much work."""
SPOOL_IN_MEMORY = 64 << 20
"""Piped input is spooled (to know its length before writing); beyond this, to a temporary file."""
LONG_TRANSFER = 32 << 20
"""Transfers at least this long show a progress bar (when stderr is a terminal)."""
PIECE = 256 << 10
"""A write looks for a pending signal (Ctrl-C) after at most this many bytes, at a page boundary
of the device: often enough to stop within milliseconds, seldom enough to cost nothing measurable."""

app = typer.Typer(
    name=PROG,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    help="The verbs of zramctl.  Without one, zramctl takes util-linux zramctl's options (zramctl --help).",
)

_state: dict[str, Any] = {"root": None}

Device = Annotated[str, typer.Argument(metavar="DEVICE", help="zramN (or /dev/zramN)", show_default=False)]
Root = Annotated[
    str | None,
    typer.Option(
        "--root", metavar="DIR", help="Directory that holds the device images (default: $ZRAMCTL_ROOT).",
        show_default=False,
    ),
]
Offset = Annotated[
    str,
    typer.Option(
        "--offset", metavar="BYTES", help="Where to start, in bytes (size syntax as -s: 4K, 1MiB, 0x1000)."
    ),
]
Length = Annotated[
    str | None,
    typer.Option("--length", metavar="BYTES", help="How many bytes (default: to the end of the device).",
                 show_default=False),
]


class _Escape(Exception):
    """Carries Ctrl-C and a broken stdout pipe past typer, which would reword them."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(str(original))
        self.original = original


def _verb(func: Callable[..., int | None]) -> Callable[..., int | None]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> int | None:
        try:
            return func(*args, **kwargs)
        except (KeyboardInterrupt, BrokenPipeError) as exc:
            raise _Escape(exc) from None

    return wrapper


def _store(root: str | None):
    from .cli import open_store

    return open_store(root if root is not None else _state["root"])


def _size(text: str, what: str) -> int:
    from .units import SizeError, parse_size

    try:
        return parse_size(text)
    except SizeError as exc:
        raise Failure(f"failed to parse {what}: '{text}': {os.strerror(exc.errno)}") from None


@contextmanager
def _open(
    store, number: int, name: str, *, write: bool, what: str = "", signals: Deferred | None = None
) -> Iterator[DeviceHandle]:
    """One verb's hold on a device.

    Any ZramError from the body, or from the commit that closing a writer makes,
    is worded here as ``zramctl: zramN: what: strerror`` (after the handle has
    closed without committing a failed body), so verbs need no handler of their own.

    From the moment the device is open until it is closed (its last commit
    made), SIGINT/SIGTERM/SIGHUP are only recorded (``signals``, see
    interrupts.py): a body that can stop early looks at ``signals.received``
    between pages; one that cannot runs to its end.  A signal that was recorded
    and not already acted on by the body ends the command after the close, with
    ``<what>: interrupted`` and exit 128 + the signal (except for ``write``, whose
    body reports a signal with its count; one arriving after that has nothing
    left to stop).
    """
    if signals is None:
        signals = Deferred(linger=True) if write else _NotDeferred()
    with signals:
        with signals.allowed():  # waiting for the lock, recovering, loading: a signal stops at once
            try:
                handle = store.open(number, write=write, timeout=LOCK_WAIT)
            except OSError as exc:
                raise device_failure(name, exc) from None
        try:
            with handle:
                yield handle
        except ZramError as exc:
            raise device_failure(name, exc) from None
    if signals.received is not None and what != "write":  # write says it itself, with its count
        said = interrupts.words(signals.received)
        kept = "committed" if write else "done"
        raise Failure(
            f"{name}: {what or 'command'}: {said} (after it had finished; {kept})",
            code=interrupts.exit_code(signals.received),
        )


class _NotDeferred(Deferred):
    """For readers that change nothing: signals keep their usual effect (exit 128 + signal, quietly)."""

    def __enter__(self) -> Deferred:
        return self


# --- progress -----------------------------------------------------------------------


@contextmanager
def progress(total: int, label: str, ratio: Callable[[], float | None]) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr for a long transfer to or from a terminal user; else nothing.

    Yields ``advance(nbytes)``.  Shows bytes done, throughput and, when the
    device has data, its compression ratio so far (DATA/TOTAL).
    """
    if total < LONG_TRANSFER or not sys.stderr.isatty():
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TextColumn("{task.fields[ratio]}"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    with bar:
        task = bar.add_task(label, total=total, ratio="")

        def advance(n: int) -> None:
            r = ratio()
            bar.update(task, advance=n, ratio=f"ratio {r:.2f}" if r else "")

        yield advance


def _ratio(zram) -> Callable[[], float | None]:
    def ratio() -> float | None:
        used = zram.mem_used_pages()
        return zram.stats.pages_stored / used if used else None

    return ratio


# --- write ------------------------------------------------------------------------------


def _past_end(end: int, disksize: int) -> ZramError:
    if not disksize:
        return ZramError(errno.ENOSPC, "write", "the device is not set up (disksize 0); nothing written")
    return ZramError(
        errno.ENOSPC,
        "write",
        f"the data would end at byte {end}, the device holds {disksize} bytes; nothing written",
    )


STDIN_IS_DIRECTORY = "ZRAMCTL_STDIN_IS_DIRECTORY"
"""Set (to 1) by the ``zramctl`` launcher when it found stdin a directory, which Python itself
refuses to start with; it then runs us with stdin on /dev/null (see zramctl/launcher.sh)."""


@contextmanager
def _source(path: str, name: str) -> Iterator[BinaryIO]:
    if path == "-":
        if os.environ.get(STDIN_IS_DIRECTORY) == "1":
            raise Failure(f"{name}: write: stdin: {os.strerror(errno.EISDIR)}")
        stdin = getattr(sys.stdin, "buffer", None)
        if stdin is None:  # fd 0 closed (zramctl write zram0 <&-): Python gives no sys.stdin
            raise Failure(f"{name}: write: stdin: {os.strerror(errno.EBADF)}")
        yield stdin
        return
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise Failure(f"{path}: {error_words(exc)}") from None
    with f:
        yield f


def _regular_length(f: BinaryIO) -> int | None:
    """Bytes left to read from a regular file; None for a pipe, a terminal, a device."""
    try:
        st = os.fstat(f.fileno())
    except (OSError, ValueError):
        return None
    if not statmod.S_ISREG(st.st_mode):
        return None
    try:
        return max(st.st_size - f.tell(), 0)
    except OSError:
        return None


def _spool(f: BinaryIO, room: int, offset: int, disksize: int) -> tuple[BinaryIO, int]:
    """Read a stream whole (it must fit in ``room`` bytes) so that nothing is written if it does not."""
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115 - returned
    total = 0
    # read1: one read(2) at a time, so that a short read from a terminal is not retried and one
    # ^D (a read of nothing) ends the input, as it does for cat.
    read = getattr(f, "read1", f.read)
    while True:
        block = read(min(CHUNK, room + 1 - total))
        if not block:
            break
        spool.write(block)
        total += len(block)
        if total > room:
            spool.close()
            if not disksize:
                raise _past_end(total, disksize)
            raise ZramError(
                errno.ENOSPC,
                "write",
                f"the input is longer than the {room} bytes from offset {offset} to the end of the device; "
                "nothing written",
            )
    spool.seek(0)
    return spool, total


def do_write(store, device: str, path: str, offset: int) -> None:
    number, name = resolve(store, device)
    with _open(store, number, name, write=False, what="write") as handle:
        disksize = handle.zram.config.disksize
    with _source(path, name) as f:
        length = _regular_length(f)
        if length is None:
            try:
                data, length = _spool(f, max(disksize - offset, 0), offset, disksize)
            except ZramError as exc:
                raise device_failure(name, exc) from None
        else:
            data = f
        with data if data is not f else _nothing():
            signals = Deferred(linger=True)
            with _open(store, number, name, write=True, what="write", signals=signals) as handle:
                _write_into(handle, name, data, offset, length, signals)


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


class _CommitFailed(Exception):
    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


def _commit(handle) -> None:
    try:
        handle.commit()
    except OSError as exc:
        raise _CommitFailed(exc) from None


def _write_into(handle, name: str, data: BinaryIO, offset: int, length: int, signals: Deferred) -> None:
    """Check the range first (ENOSPC, nothing written), then copy in chunks, committing as we go.

    A signal (Ctrl-C) is acted on only between pieces of at most PIECE bytes:
    what is stored by then is committed, and the message gives that count,
    which is exact: the device holds the first N bytes of the input and, past
    them, what it held before.
    """
    zram = handle.zram
    disksize = zram.config.disksize
    if not zram.initialized or offset + length > disksize:
        raise device_failure(name, _past_end(offset + length, disksize))
    done = committed = 0
    since_commit = 0
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    try:
        with progress(length, f"write {name}", _ratio(zram)) as advance:
            while done < length and signals.received is None:
                n = data.readinto(view[: min(CHUNK, length - done)])
                if not n:
                    break  # the file shrank under us: what was there is written
                pos = 0
                while pos < n and signals.received is None:
                    at = offset + done
                    step = min(n - pos, PIECE - at % PAGE_SIZE)
                    zram.write(at, view[pos : pos + step])
                    pos += step
                    done += step
                    since_commit += step
                    advance(step)
                if since_commit >= COMMIT_EVERY and signals.received is None:
                    _commit(handle)
                    committed, since_commit = done, 0
            _commit(handle)
            committed = done
    except _CommitFailed as exc:
        raise _commit_failure(name, exc.error, done, committed, length) from None
    except ZramError as exc:
        done += exc.done
        try:
            _commit(handle)  # what the device stored before the failure stays stored
        except _CommitFailed as failed:
            raise _commit_failure(name, failed.error, done, committed, length, first=exc) from None
        raise _partial(name, exc, done, length) from None
    except OSError as exc:  # reading the input failed
        try:
            _commit(handle)
        except _CommitFailed as failed:
            raise _commit_failure(name, failed.error, done, committed, length, first=exc) from None
        raise _partial(name, exc, done, length) from None
    if signals.received is not None:
        # Ctrl-C: keep what is stored (as dd leaves what it wrote), and say exactly how much that is.
        raise Failure(
            f"{name}: write: {interrupts.words(signals.received)} "
            f"({committed} of {length} bytes written and committed)",
            code=interrupts.exit_code(signals.received),
        )


def _partial(name: str, exc: OSError, committed: int, length: int) -> Failure:
    """A write that failed midway, after what was stored before the failure was committed."""
    words = exc.strerror or os.strerror(exc.errno or errno.EIO)
    detail = detail_words(exc, words)
    note = f"{committed} of {length} bytes written and committed"
    return Failure(f"{name}: write: {words} ({detail + '; ' if detail else ''}{note})")


def _words(exc: OSError) -> tuple[str, str | None]:
    words = exc.strerror or os.strerror(exc.errno or errno.EIO)
    return words, detail_words(exc, words)


def _commit_failure(
    name: str, exc: OSError, done: int, committed: int, length: int, first: OSError | None = None
) -> Failure:
    """A commit that failed: what it was committing, why (the image's words), and what the
    device keeps for certain: the first ``committed`` bytes, held by the last commit that succeeded.

    ``first`` is the failure that came before it (a page that could not be stored), if any.
    """
    parts = []
    if first is not None:
        words, detail = _words(first)
        if detail:
            parts.append(detail)
        commit_words, commit_detail = _words(exc)
        why: str | None = f"{commit_words}{', ' + commit_detail if commit_detail else ''}"
    else:
        words, why = _words(exc)
    parts.append(f"committing the first {done} of {length} bytes failed{': ' + why if why else ''}")
    parts.append(f"the last commit holds the first {committed} bytes" if committed else "no commit holds any")
    return Failure(f"{name}: write: {words} ({'; '.join(parts)})")


def _write_all(out: BinaryIO, data: bytes) -> None:
    """All of ``data``: a raw (unbuffered, ``python -u``) stdout may take only part of it."""
    view = memoryview(data)
    while view:
        n = out.write(view)
        view = view[len(view) if n is None else n :]


# --- the commands -------------------------------------------------------------------------


@app.command("write", help="Store data at an offset of DEVICE, from FILE or stdin ([i]dd of=/dev/zramN[/i]).")
@_verb
def write_cmd(
    device: Device,
    file: Annotated[str, typer.Argument(metavar="FILE", help="Input file; - (or none) reads stdin.")] = "-",
    offset: Offset = "0",
    root: Root = None,
) -> None:
    do_write(_store(root), device, file, _size(offset, "offset"))


@app.command("read", help="Copy data from DEVICE to stdout ([i]dd if=/dev/zramN[/i]).")
@_verb
def read_cmd(device: Device, offset: Offset = "0", length: Length = None, root: Root = None) -> None:
    store = _store(root)
    start = _size(offset, "offset")
    want = None if length is None else _size(length, "length")
    number, name = resolve(store, device)
    out = sys.stdout.buffer
    signals = Deferred()
    with _open(store, number, name, write=False, what="read", signals=signals) as handle:
        zram = handle.zram
        if want is None:
            want = max(zram.config.disksize - start, 0)
        done = 0
        try:
            zram.read(start, 0) if want == 0 else None  # the range checks, also for an empty read
            with progress(want, f"read {name}", _ratio(zram)) as advance:
                while done < want and signals.received is None:
                    n = min(CHUNK, want - done)
                    block = zram.read(start + done, n)
                    # The block read is written out even if a signal came meanwhile; while it
                    # is being written (a slow reader), a signal stops the command at once.
                    with signals.allowed(stop_now=False):
                        _write_all(out, block)
                    done += n
                    advance(n)
        except ZramError as exc:
            if done or exc.done:
                exc.detail = f"{exc.detail + '; ' if exc.detail else ''}{done + exc.done} bytes read before"
            raise
        with signals.allowed(stop_now=False):
            out.flush()
        if signals.received is not None:
            raise Failure(
                f"{name}: read: {interrupts.words(signals.received)} ({done} of {want} bytes copied)",
                code=interrupts.exit_code(signals.received),
            )


@app.command("discard", help="Free the whole pages of a range of DEVICE ([i]blkdiscard[/i]).")
@_verb
def discard_cmd(device: Device, offset: Offset = "0", length: Length = None, root: Root = None) -> None:
    store = _store(root)
    start = _size(offset, "offset")
    want = None if length is None else _size(length, "length")
    number, name = resolve(store, device)
    with _open(store, number, name, write=True, what="discard") as handle:
        zram = handle.zram
        if want is None:
            want = max(zram.config.disksize - start, 0)
        zram.discard(start, want)


@app.command("attr", help="Read or write an attribute, as [i]cat[/i] or [i]echo >[/i] /sys/block/zramN/NAME.")
@_verb
def attr_cmd(
    device: Device,
    name: Annotated[str, typer.Argument(metavar="NAME", help="disksize, mm_stat, comp_algorithm, ...")],
    value: Annotated[
        str | None,
        typer.Argument(metavar="VALUE", help="Write this (with a newline, as echo).", show_default=False),
    ] = None,
    root: Root = None,
) -> None:
    store = _store(root)
    number, dev = resolve(store, device)
    with _open(store, number, dev, write=value is not None, what=name) as handle:
        if value is None:
            sys.stdout.write(sysfs.show(handle.zram, name))
        else:
            sysfs.store(handle.zram, name, value if value.endswith("\n") else value + "\n")


@app.command("stat", help="All the kernel shows about DEVICE: settings, counters, classes, object sizes.")
@_verb
def stat_cmd(
    device: Device,
    json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    root: Root = None,
) -> None:
    from .cli_stat import print_report
    from .report import device_report

    store = _store(root)
    number, name = resolve(store, device)
    with _open(store, number, name, write=False, what="stat") as handle:
        report = device_report(handle.zram)
    print_report(name, report, as_json=json)


@app.command("compact", help="Compact the allocator's memory ([i]echo 1 > compact[/i]).")
@_verb
def compact_cmd(device: Device, root: Root = None) -> None:
    store = _store(root)
    number, name = resolve(store, device)
    with _open(store, number, name, write=True, what="compact") as handle:
        handle.zram.compact()


@app.command("hot-add", help="Add a device and print its name ([i]cat /sys/class/zram-control/hot_add[/i]).")
@_verb
def hot_add_cmd(root: Root = None) -> None:
    store = _store(root)
    with Deferred() as signals:  # a device is added whole, or not at all
        try:
            number = store.hot_add()
        except RootError as exc:  # the directory cannot be made: said about the directory
            raise Failure(str(exc)) from None
        except OSError as exc:
            raise Failure(f"hot_add: {error_words(exc)}") from None
    sys.stdout.write(f"{device_name(number)}\n")
    signals.check()


@app.command("hot-remove", help="Remove a device and its image ([i]echo N > zram-control/hot_remove[/i]).")
@_verb
def hot_remove_cmd(device: Device, root: Root = None) -> None:
    store = _store(root)
    number, name = resolve(store, device)
    with Deferred() as signals:
        try:
            store.hot_remove(number)
        except OSError as exc:
            raise device_failure(name, exc, "hot_remove") from None
    signals.check()


@app.command("check", help="Verify DEVICE's image; print each problem on a line; exit 1 if there is any.")
@_verb
def check_cmd(
    device: Device,
    data: Annotated[bool, typer.Option("--data", help="Also read and verify every stored page.")] = False,
    root: Root = None,
) -> int:
    from .check import check_image

    store = _store(root)
    number, name = resolve(store, device)
    try:
        problems = check_image(store, number, data=data)
    except OSError as exc:
        raise device_failure(name, exc) from None
    for problem in problems:
        sys.stdout.write(f"{name}: {problem}\n")
    return 1 if problems else 0


app.command("estimate", help=_ESTIMATE_HELP)(_verb(estimate_cmd))


# --- running one --------------------------------------------------------------------------


def _click_exceptions():
    """click's exception classes: vendored by newer typer, a dependency of older typer."""
    try:
        from typer._click import exceptions
    except ImportError:  # typer < 0.20 uses click itself
        from click import exceptions  # type: ignore[no-redef]
    return exceptions


def run_verb(args: list[str], root: str | None) -> int:
    """Run ``args`` (verb first) through typer; usage errors util-linux style, exit 1."""
    click = _click_exceptions()
    _state["root"] = root
    try:
        rv = app(args=args, prog_name=PROG, standalone_mode=False)
    except _Escape as exc:
        raise exc.original from None
    except click.UsageError as exc:
        ctx = exc.ctx
        verb = ctx.info_name if ctx is not None and ctx.parent is not None else None
        raise Failure(exc.format_message(), usage=f"{PROG} {verb}" if verb else PROG) from None
    except click.ClickException as exc:
        raise Failure(exc.format_message()) from None
    except typer.Abort:
        return 130
    return rv if isinstance(rv, int) else 0
