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
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO

import typer

from .. import interrupts
from ..errors import Failure, ZramError, device_failure, error_words
from ..interrupts import Deferred
from ..kernel import sysfs
from ..store import CHUNK as CHUNK  # the transfer sizes are the store's (named here for the tests)
from ..store import PIECE as PIECE
from ..store import RootError, counted
from .common import PROG, STDIN_IS_DIRECTORY, open_store, progress, warn
from .estimate import HELP as _ESTIMATE_HELP
from .estimate import estimate_cmd
from .status import LOCK_WAIT, device_name, resolve

if TYPE_CHECKING:
    from ..kernel.zram_drv import Zram
    from ..store import DeviceHandle

SETTINGS: dict[str, Any] = {
    "name": PROG,
    "add_completion": False,
    "pretty_exceptions_enable": False,
    "rich_markup_mode": "rich",
    "context_settings": {"help_option_names": ["-h", "--help"]},
}
app = typer.Typer(
    **SETTINGS,
    help="The verbs of zramctl.  Without one, zramctl takes util-linux zramctl's options (zramctl --help).",
)

Device = Annotated[str, typer.Argument(metavar="DEVICE", help="zramN (or /dev/zramN)", show_default=False)]
Root = Annotated[
    str | None,
    typer.Option(
        "--root", metavar="DIR", help=(
            "Directory that holds the device images (default: $ZRAMCTL_ROOT, else $XDG_STATE_HOME/zramctl,"
            " else ~/.local/state/zramctl)."
        ),
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
    """The store of the verb's own ``--root``, else of the one given before the verb
    (``zramctl --root DIR stat zram0``), which run_verb hands to click as the context's ``obj``."""
    return open_store(root if root is not None else _global_root())


def _global_root() -> str | None:
    try:
        from typer._click.globals import get_current_context
    except ImportError:  # typer < 0.20 uses click itself
        from click import get_current_context  # type: ignore[no-redef]
    ctx = get_current_context(silent=True)
    return ctx.find_root().obj if ctx is not None else None


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


def _ratio(zram: Zram) -> Callable[[], float | None]:
    """The progress bar's ratio so far: the device's own DATA/TOTAL."""
    return lambda: zram.compression_ratio


# --- write ------------------------------------------------------------------------------


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
        f = open(path, "rb")  # closed below
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


def do_write(store, device: str, path: str, offset: int) -> None:
    """Open the device once, then the input, and let the store stream one into the other.

    A regular file's length is known: one that does not fit is refused before
    anything is written.  Anything else (a pipe, a terminal) is written as it
    arrives, as ``dd of=/dev/zramN`` does.
    """
    number, name = resolve(store, device)
    signals = Deferred(linger=True)
    with _open(store, number, name, write=True, what="write", signals=signals) as handle:
        with _source(path, name) as f:
            length = _regular_length(f)
            with progress(length, f"write {name}", _ratio(handle.zram)) as advance:
                done = handle.write_from(f, offset, length=length, progress=advance, signals=signals)
        if done.stopped_by is not None:
            # Ctrl-C: what is stored is committed (as dd leaves what it wrote); say exactly how much.
            raise Failure(
                f"{name}: write: {interrupts.words(done.stopped_by)} "
                f"({counted(done.done, done.total, 'written and committed')})",
                code=interrupts.exit_code(done.stopped_by),
            )


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


@app.command(
    "read",
    help=(
        "Copy data from DEVICE to stdout ([i]dd if=/dev/zramN[/i]).  On a 6.18 device a read marks"
        " the pages it reads accessed (their access time set, their idle mark cleared), as the kernel"
        " does, and commits that."
    ),
)
@_verb
def read_cmd(device: Device, offset: Offset = "0", length: Length = None, root: Root = None) -> None:
    store = _store(root)
    start = _size(offset, "offset")
    want = None if length is None else _size(length, "length")
    number, name = resolve(store, device)
    signals = Deferred()
    with _open_for_reading(store, number, name, signals) as handle:
        total = max(handle.disksize - start, 0) if want is None else want
        with progress(total, f"read {name}", _ratio(handle.zram)) as advance:
            try:
                done = handle.read_to(sys.stdout.buffer, start, want, progress=advance, signals=signals)
            except ZramError:
                if handle.write:  # the pages read before the failure were accessed all the same
                    with suppress(OSError, ZramError):
                        handle.commit()
                raise
        if handle.write:
            _record_accesses(handle, name)
        if done.stopped_by is not None:
            copied = counted(done.done, done.total, "copied")
            raise Failure(
                f"{name}: read: {interrupts.words(done.stopped_by)} ({copied})",
                code=interrupts.exit_code(done.stopped_by),
            )


def _record_accesses(handle: DeviceHandle, name: str) -> None:
    """Commit what a read changed (access times, idle marks, bd_reads).  The data is already out:
    a commit that fails (a full disk) loses only that record, so it is a warning, not a failure."""
    failed = handle.commit_or_drop()
    if failed is not None:
        warn(f"{name}: read: access times not recorded: {failed.strerror}")


@contextmanager
def _open_for_reading(store, number: int, name: str, signals: Deferred) -> Iterator[DeviceHandle]:
    """``read``'s hold on a device: shared where a read changes nothing (3.11), else exclusive, so
    that the access times the read sets are committed after it.

    The device is opened shared first, and read that way if its profile says reads change
    nothing (one open, as before); a 6.18 device is then opened again, as a writer.  A user who
    may read the image but not write it still reads it, and the accesses are then not recorded
    (the image cannot record them).
    """
    with _open(store, number, name, write=False, what="read", signals=signals) as handle:
        if not (handle.zram.reads_change and _may_write(store, number)):
            yield handle
            return
        if signals.received is not None:  # a signal while looking: stop before reading
            raise Failure(
                f"{name}: read: {interrupts.words(signals.received)} (nothing copied)",
                code=interrupts.exit_code(signals.received),
            )
    with _open(store, number, name, write=True, what="read", signals=signals) as handle:
        yield handle


def _may_write(store, number: int) -> bool:
    """Whether we may write the image (and create its log beside it)."""
    return os.access(store.image_path(number), os.W_OK) and os.access(store.root, os.W_OK | os.X_OK)


@app.command("discard", help="Free the whole pages of a range of DEVICE ([i]blkdiscard[/i]).")
@_verb
def discard_cmd(device: Device, offset: Offset = "0", length: Length = None, root: Root = None) -> None:
    store = _store(root)
    start = _size(offset, "offset")
    want = None if length is None else _size(length, "length")
    number, name = resolve(store, device)
    with _open(store, number, name, write=True, what="discard") as handle:
        handle.discard(start, want)


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
    if value is not None:
        store_attribute(store, device, name, value)
        return
    number, dev = resolve(store, device)
    with _open(store, number, dev, write=False, what=name) as handle:
        sys.stdout.write(sysfs.show(handle.zram, name))


KEEPS_PROGRESS = frozenset({"writeback", "recompress"})
"""Attributes whose store can fail after part of its work is done (ENOSPC or EIO midway): the
kernel keeps the pages already written back or recompressed, so the device is committed."""


def store_attribute(store, device: str, name: str, value: str) -> None:
    """``echo VALUE > /sys/block/zramN/NAME``: the one path by which ``attr`` and the
    post-processing verbs (``idle``, ``writeback``, ``recompress``) write an attribute, and fail
    in the kernel's words (``zramctl: zram0: writeback: No such device``)."""
    number, dev = resolve(store, device)
    with _open(store, number, dev, write=True, what=name) as handle:
        try:
            sysfs.store(handle.zram, name, value if value.endswith("\n") else value + "\n")
        except ZramError as exc:
            if name in KEEPS_PROGRESS and exc.errno in (errno.ENOSPC, errno.EIO):
                handle.commit()
            raise


@app.command("stat", help="All the kernel shows about DEVICE: settings, counters, classes, object sizes.")
@_verb
def stat_cmd(
    device: Device,
    json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    root: Root = None,
) -> None:
    from .report import device_report
    from .stat import print_report

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


# --- post-processing: idle, writeback, recompress ------------------------------------------
#
# Each verb only builds the text of one attribute (the *_value functions below, the one place
# that knows each syntax) and stores it as ``attr`` would: the device judges it, and its errors
# are the kernel's (``zramctl: zram0: writeback: No such device``).


def _token(option: str, value: str, verb: str) -> str:
    """A value as one ``key=value`` token: a blank or a quote would make it several (the kernel
    splits the attribute at blanks and honours quotes), so it is refused."""
    if not value or any(c.isspace() or c == '"' for c in value):
        raise Failure(f"invalid {option} value: '{value}'", usage=f"{PROG} {verb}")
    return value


def idle_value(all_pages: bool, age: str | None) -> str:
    """``idle``: ``all`` (the default), or the age in seconds (the kernel parses it)."""
    if all_pages and age is not None:
        raise Failure("options --all and --age exclude each other", usage=f"{PROG} idle")
    return "all" if age is None else _token("--age", age, "idle")


WRITEBACK_MODES = ("idle", "huge", "huge_idle", "incompressible")
"""The kernel's writeback types; each verb option is one, with ``-`` for ``_``."""


def writeback_value(modes: list[str], page_index: list[str], page_indexes: list[str]) -> str:
    """``writeback``, in the 6.16+ syntax: ``type=MODE``, or ``page_index=N`` and
    ``page_indexes=LO-HI`` tokens (any number of each).

    The two forms do not combine: the kernel stops reading at ``type=`` and ignores what
    follows, and scans ranges unfiltered, so a mix would not mean what it says.
    """
    indexes = [f"page_index={_token('--page-index', n, 'writeback')}" for n in page_index]
    indexes += [f"page_indexes={_token('--page-indexes', r, 'writeback')}" for r in page_indexes]
    if len(modes) > 1 or (modes and indexes):
        raise Failure(
            "options --idle, --huge, --huge-idle, --incompressible and --page-index(es) exclude each other",
            usage=f"{PROG} writeback",
        )
    if modes:
        return f"type={modes[0]}"
    if not indexes:
        raise Failure(
            "say what to write back: --idle, --huge, --huge-idle, --incompressible, --page-index"
            " or --page-indexes",
            usage=f"{PROG} writeback",
        )
    return " ".join(indexes)


RECOMPRESS_TYPES = ("idle", "huge", "huge_idle")


def recompress_value(
    type_: str | None, max_pages: str | None, threshold: str | None, algo: str | None, priority: str | None
) -> str:
    """``recompress``: ``type= max_pages= threshold= algo= priority=``, each only when given.

    The type is checked here: 6.18 ignores an unknown one and recompresses every page.
    Nothing given is the kernel's default, every page with every secondary algorithm.
    """
    tokens = []
    if type_ is not None:
        if type_ not in RECOMPRESS_TYPES:
            raise Failure(
                f"invalid --type value: '{type_}' (idle, huge or huge_idle)", usage=f"{PROG} recompress"
            )
        tokens.append(f"type={type_}")
    for key, option, value in (
        ("max_pages", "--max-pages", max_pages),
        ("threshold", "--threshold", threshold),
        ("algo", "--algo", algo),
        ("priority", "--priority", priority),
    ):
        if value is not None:
            tokens.append(f"{key}={_token(option, value, 'recompress')}")
    return " ".join(tokens)


@app.command(
    "idle",
    help=(
        "Mark DEVICE's stored pages idle ([i]echo all > idle[/i]): all of them (the default), or with"
        " --age those not accessed for more than SECONDS (6.18)."
    ),
)
@_verb
def idle_cmd(
    device: Device,
    all_pages: Annotated[bool, typer.Option("--all", help="Every stored page (the default).")] = False,
    age: Annotated[
        str | None,
        typer.Option("--age", metavar="SECONDS", help="Pages not accessed for more than SECONDS.",
                     show_default=False),
    ] = None,
    root: Root = None,
) -> None:
    store_attribute(_store(root), device, "idle", idle_value(all_pages, age))


@app.command(
    "writeback",
    help=(
        "Move pages of DEVICE to its backing file ([i]echo type=idle > writeback[/i]): one kind of page,"
        " or pages by index (6.18, a device set up with --writeback-device)."
    ),
)
@_verb
def writeback_cmd(
    device: Device,
    idle: Annotated[bool, typer.Option("--idle", help="Pages marked idle.")] = False,
    huge: Annotated[bool, typer.Option("--huge", help="Pages stored uncompressed.")] = False,
    huge_idle: Annotated[bool, typer.Option("--huge-idle", help="Pages both huge and idle.")] = False,
    incompressible: Annotated[
        bool, typer.Option("--incompressible", help="Pages no secondary algorithm could shrink.")
    ] = False,
    page_index: Annotated[
        list[str] | None,
        typer.Option("--page-index", metavar="N", help="The page at index N (repeatable).",
                     show_default=False),
    ] = None,
    page_indexes: Annotated[
        list[str] | None,
        typer.Option("--page-indexes", metavar="LO-HI",
                     help="The pages LO to HI, both included (repeatable).", show_default=False),
    ] = None,
    root: Root = None,
) -> None:
    chosen = [m for m, on in zip(WRITEBACK_MODES, (idle, huge, huge_idle, incompressible), strict=True) if on]
    value = writeback_value(chosen, page_index or [], page_indexes or [])
    store_attribute(_store(root), device, "writeback", value)


@app.command(
    "recompress",
    help=(
        "Recompress pages of DEVICE with its secondary algorithms ([i]echo type=huge > recompress[/i]);"
        " 6.18, a device set up with --secondary-algorithm."
    ),
)
@_verb
def recompress_cmd(
    device: Device,
    type_: Annotated[
        str | None,
        typer.Option("--type", metavar="idle|huge|huge_idle", help="Only idle, huge, or huge and idle pages.",
                     show_default=False),
    ] = None,
    max_pages: Annotated[
        str | None,
        typer.Option("--max-pages", metavar="N", help="At most N pages.", show_default=False),
    ] = None,
    threshold: Annotated[
        str | None,
        typer.Option("--threshold", metavar="BYTES", help="Only pages stored in at least BYTES.",
                     show_default=False),
    ] = None,
    algo: Annotated[
        str | None,
        typer.Option("--algo", metavar="ALG", help="Only this secondary algorithm.", show_default=False),
    ] = None,
    priority: Annotated[
        str | None,
        typer.Option("--priority", metavar="N", help="Only the secondary algorithm of priority N.",
                     show_default=False),
    ] = None,
    root: Root = None,
) -> None:
    value = recompress_value(type_, max_pages, threshold, algo, priority)
    store_attribute(_store(root), device, "recompress", value)


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
    from ..store import check_image

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


def app_for(verb: str) -> typer.Typer:
    """``app`` with ``verb``'s command alone (a group still: the callback keeps it one).

    typer makes a click command of every command an app holds, each time it runs: 9 ms of
    every command's start-up for the thirteen verbs, where a run needs only its own.
    """
    one = typer.Typer(**SETTINGS)
    one.registered_commands = [c for c in app.registered_commands if c.name == verb]
    one.callback()(_group)
    return one


def _group() -> None:
    """The verbs of zramctl."""


def run_verb(args: list[str], root: str | None) -> int:
    """Run ``args`` (verb first) through typer; usage errors util-linux style, exit 1."""
    click = _click_exceptions()
    try:
        rv = app_for(args[0])(args=args, prog_name=PROG, standalone_mode=False, obj=root)
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
