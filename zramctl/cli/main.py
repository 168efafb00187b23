"""The ``zramctl`` command line: util-linux ``zramctl`` syntax, plus verbs.

``main(argv)`` decides between two grammars.  If the first word that is not a
global option (``--root DIR``, ``--compat VERSION``) names a verb (``write``,
``read``, ``stat``, ...), the rest goes to the typer application in
``verbs.py``.  Everything else is util-linux's grammar, parsed here the way
glibc's ``getopt_long`` parses it for util-linux's ``sys-utils/zramctl.c``
(``cli_getopt.py``): options handled in the order they are met (so ``-h
--bogus`` prints help), the same checks in the same order, the same messages,
the same exit codes.  ``status.py`` carries out the four util-linux actions
(status, find, create, reset).

Every failure reaches the user as one ``zramctl: ...`` line and exit 1: code
raises ``Failure`` (worded) or lets an OSError/ZramError through
(``device_failure`` words those), and ``main`` prints it; ``main`` also catches
everything else (Ctrl-C, a closed pipe, a full disk, a bug), so no Python
traceback is ever printed.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

from ..errors import Failure, error_words
from .common import PROG, Options, root_dir, warn
from .getopt import LONG_OPTIONS, GetoptError, getopt_long, long_option

VERBS = (
    "write", "read", "discard", "attr", "stat", "compact", "idle", "writeback", "recompress",
    "hot-add", "hot-remove", "check", "estimate",
)
GLOBAL_KEYS = ("root", "compat")
"""Options that may come before a verb (``zramctl --root DIR stat zram0``)."""

# --- the util-linux options -----------------------------------------------------------

# util-linux's excl[]: options of one group may not be combined.  Each letter is
# shown by its long name in the message.
EXCLUSIVE = (("f", "o", "r"), ("o", "r", "s"))
_LONG_NAME = {o.key: o.name for o in reversed(LONG_OPTIONS)}


def _check_exclusive(key: str, seen: list[str | None]) -> None:
    """err_exclusive_options(): the first option of a group wins; another one is an error."""
    for n, group in enumerate(EXCLUSIVE):
        if key not in group:
            continue
        if seen[n] is None:
            seen[n] = key
        elif seen[n] != key:
            names = " ".join(f"--{_LONG_NAME[k]}" for k in group)
            raise Failure(f"mutually exclusive arguments: {names}")


def _parse_size(text: str) -> int:
    from .units import SizeError, parse_size

    try:
        return parse_size(text)
    except SizeError as exc:
        raise Failure(f"failed to parse size: '{text}': {os.strerror(exc.errno)}") from None


def _parse_streams(text: str) -> int:
    from .units import SizeError, parse_u64

    try:
        return parse_u64(text)
    except SizeError as exc:
        if exc.errno == errno.ERANGE:
            raise Failure(f"failed to parse streams: '{text}': {os.strerror(exc.errno)}") from None
        raise Failure(f"failed to parse streams: '{text}'") from None


def parse_options(argv: Sequence[str]) -> Options:
    """util-linux's option loop and its checks after the loop, in the same order."""
    opts = Options()
    seen: list[str | None] = [None] * len(EXCLUSIVE)
    options = getopt_long(argv, opts.devices)
    while True:
        try:
            key, value = next(options)
        except StopIteration:
            break
        except GetoptError as exc:
            raise Failure(str(exc), usage=PROG) from None
        _check_exclusive(key, seen)
        if key == "a":
            opts.algorithm = value
        elif key == "b":
            opts.inbytes = True
        elif key == "f":
            opts.find = True
        elif key == "o":
            opts.outarg = value
        elif key == "output-all":
            opts.output_all = True
        elif key == "s":
            opts.size = _parse_size(value or "")
        elif key == "t":
            opts.streams = _parse_streams(value or "")
        elif key == "r":
            opts.reset = True
        elif key == "raw":
            opts.raw = True
        elif key == "n":
            opts.noheadings = True
        elif key == "p":
            opts.params = value
        elif key == "V":
            sys.stdout.write(version_text())
            raise SystemExit(0)
        elif key == "h":
            sys.stdout.write(help_text())
            raise SystemExit(0)
        elif key == "json":
            opts.json = True
        elif key == "root":
            opts.root = value
        elif key == "compat":
            opts.compat = _check_compat(value or "")
        elif key == "writeback-device":
            opts.backing_dev = value
        elif key == "secondary-algorithm":
            opts.recomp_algorithms.append(value or "")
    if opts.find and opts.devices:
        raise Failure("option --find is mutually exclusive with <device>")
    if opts.action != "reset" and len(opts.devices) > 1:
        raise Failure("only one <device> at a time is allowed")
    if opts.action in ("status", "find"):
        if opts.algorithm is not None or opts.params is not None or opts.streams:
            raise Failure(
                "options --algorithm, --algorithm-params, and --streams must be combined with --size"
            )
        for name, given in (
            ("compat", opts.compat is not None),
            ("writeback-device", opts.backing_dev is not None),
            ("secondary-algorithm", bool(opts.recomp_algorithms)),
        ):
            if given:
                raise Failure(f"option --{name} must be combined with --size")
    return opts


def _check_compat(value: str) -> str:
    from ..kernel.profiles import PROFILES

    if value not in PROFILES:
        raise Failure(f"unknown --compat version: '{value}' (known: {', '.join(PROFILES)})")
    return value


# --- help and version ---------------------------------------------------------------


def version_text() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("zramctl")
    except PackageNotFoundError:  # running from a source tree
        ours = "unknown"
    return f"{PROG} from zramctl {ours} (util-linux 2.42 options and messages; 2.38.1 table layout)\n"


def help_text() -> str:
    """util-linux 2.42's usage() text, with our algorithms and columns, then our extensions."""
    from ..kernel.zcomp import AVAILABLE, KERNEL_ORDER
    from .columns import COLUMNS, EXTRA_COLUMNS

    missing = [a for a in KERNEL_ORDER if a not in AVAILABLE]
    lines = [
        "",
        "Usage:",
        f" {PROG} [options] <device>",
        f" {PROG} -r <device> [...]",
        f" {PROG} [options] -f | <device> -s <size>",
        f" {PROG} [--root <dir>] <command> [<args>]",
        "",
        "Set up and control zram devices.",
        "",
        "Options:",
        " -a, --algorithm <alg>     compression algorithm to use",
        " -b, --bytes               print sizes in bytes, not in human-readable form",
        " -f, --find                find a free device",
        " -n, --noheadings          don't print headings",
        " -o, --output <list>       columns to use for status output",
        "     --output-all          output all columns",
        " -p, --algorithm-params <parameter>...",
        "                           algorithm parameters to use",
        " -r, --reset <device>...   reset the specified zram devices",
        "     --raw                 use raw status output format",
        " -s, --size <size>         device size",
        " -t, --streams <number>    number of compression streams",
        "",
        "     --json                print the status as JSON",
        "     --root <dir>          directory that holds the device images",
        "                           (default: $ZRAMCTL_ROOT, else",
        "                           $XDG_STATE_HOME/zramctl, else ~/.local/state/zramctl)",
        "     --compat <version>    kernel to behave like, with --size: 6.18 (default)",
        "                           or 3.11 (the 2013 promotion patch, merged in 3.14)",
        "     --writeback-device <file>",
        "                           with --size: the backing file idle and huge pages",
        "                           are written back to (backing_dev)",
        "     --secondary-algorithm <alg>[:<priority>]",
        "                           with --size: an algorithm to recompress with",
        "                           (recomp_algorithm; repeatable, priorities 1-3)",
        "",
        " -h, --help                display this help",
        " -V, --version             display version",
        "",
        "Arguments:",
        " Values for <size> may be followed by a suffix: KiB, MiB,",
        ' GiB, TiB, PiB, EiB, ZiB, or YiB (where the "iB" is optional).',
        " <alg> is the name of an algorithm; supported are:",
        "   " + ", ".join(AVAILABLE),
        f"   ({' and '.join(missing)} cannot be used here: no user-space implementation.)"
        if missing
        else "   (The list is complete.)",
        "",
        "Commands:",
        " write <device> [<file>|-] [--offset <bytes>]",
        "                           store data (stdin by default) at an offset, like dd",
        " read <device> [--offset <bytes>] [--length <bytes>]",
        "                           copy data to stdout (by default to the end)",
        " discard <device> [--offset <bytes>] [--length <bytes>]",
        "                           free the whole pages in a range",
        " attr <device> <name> [<value>]",
        "                           show or set /sys/block/zramN/<name>",
        " stat <device> [--json]    settings, counters, allocator classes, object sizes",
        " compact <device>          compact the allocator's memory",
        " idle <device> [--all|--age <seconds>]",
        "                           mark stored pages idle (all, or unused that long)",
        " writeback <device> --idle|--huge|--huge-idle|--incompressible",
        "          |--page-index <n>...|--page-indexes <lo>-<hi>...",
        "                           move pages to the backing file",
        " recompress <device> [--type idle|huge|huge_idle] [--max-pages <n>]",
        "          [--threshold <bytes>] [--algo <alg>] [--priority <n>]",
        "                           recompress pages with the secondary algorithms",
        " hot-add                   add a device and print its name",
        " hot-remove <device>       remove a device",
        " check <device> [--data]   verify a device image",
        " estimate [<file>|-|--pid <pid>...|--all-processes] [--algorithm <list>]",
        "          [--allocator <list>] [--threads <n>] [--json] [--bytes] [--raw]",
        "                           what zram would save: every algorithm x allocator",
        " (<command> --help shows a command's options.)",
        "",
        "Available output columns:",
    ]
    lines += [" %11s  %s" % (col.name, col.help) for col in COLUMNS]  # noqa: UP031 - util-linux's format
    lines += ["", "Columns shown only when named with --output (not by --output-all):"]
    lines += [" %11s  %s" % (col.name, col.help) for col in EXTRA_COLUMNS]  # noqa: UP031
    lines += ["", "For more details see zramctl(8).", ""]
    return "\n".join(lines)


# --- dispatch -------------------------------------------------------------------------


def split_globals(argv: Sequence[str]) -> tuple[dict[str, str], int]:
    """The global options in front of the first word, and that word's index.

    Long options are matched as getopt_long would match them (unique prefixes),
    so ``zramctl --ro /x write ...`` is ``--root /x``.  Anything else stops
    the scan: the util-linux grammar deals with it.
    """
    found: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--") or arg == "--":
            break
        try:
            opt, value = long_option(arg[2:])
        except GetoptError:
            break
        if opt.key not in GLOBAL_KEYS:
            break
        if value is None:
            if i + 1 >= len(argv):
                break
            value = argv[i + 1]
            i += 1
        found[opt.key] = value
        i += 1
    return found, i


def _dispatch(argv: list[str], exiting: bool = False) -> int:
    found, first = split_globals(argv)
    if first < len(argv) and argv[first] in VERBS:
        if "compat" in found:
            raise Failure("option --compat must be combined with --size")
        from .verbs import run_verb

        _loaded(exiting)
        return run_verb(argv[first:], root_dir(found.get("root")))
    opts = parse_options(argv)
    from . import status as cli_status

    _loaded(exiting)
    return cli_status.run(opts, root_dir(opts.root))


def _loaded(exiting: bool) -> None:
    """The command's code is imported: in a process that ends with the command, the objects
    the imports made (some 30,000: functions, classes, typer's tables) are moved out of the
    garbage collector's sight (``gc.freeze``).  They live until the end anyway, and each full
    collection the command's own objects set off would scan them all again: 7 ms of a 256 MiB
    read.  A caller of ``main`` that goes on (a test, a library user) keeps its collector as is.
    """
    if exiting:
        import gc

        gc.freeze()


def _discard_stdout() -> None:
    """Point fd 1 at /dev/null, so that Python's final flush of stdout cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    except OSError:
        pass


def _quiet_broken_pipe() -> int:
    """stdout's reader went away (``| head``): stop quietly, as ``cat`` killed by SIGPIPE does."""
    _discard_stdout()
    return 128 + signal.SIGPIPE


class StdoutError(Exception):
    """Writing to stdout failed (not EPIPE): util-linux's close_stdout() says "write error"."""

    def __init__(self, original: OSError) -> None:
        super().__init__(str(original))
        self.original = original


class PipeClosed(Exception):
    """stdout's reader went away (EPIPE).  Not an OSError, so that nothing on the way (typer,
    a device's error handling) takes it for something else; main() stops quietly."""


class _Guarded:
    """stdout (text or binary) whose write failures are StdoutError, so they are never
    mistaken for a device's errors; a closed fd 1 (``zramctl >&-``) fails with EBADF."""

    def __init__(self, stream: object | None) -> None:
        self._stream = stream

    def _call(self, method: str, *args: object) -> object:
        if self._stream is None:
            raise StdoutError(OSError(errno.EBADF, os.strerror(errno.EBADF)))
        try:
            return getattr(self._stream, method)(*args)
        except BrokenPipeError:
            raise PipeClosed() from None
        except OSError as exc:
            raise StdoutError(exc) from None

    def write(self, data: object) -> object:
        return self._call("write", data)

    def writelines(self, lines: object) -> object:
        return self._call("writelines", lines)

    def flush(self) -> None:
        if self._stream is not None:
            self._call("flush")

    def isatty(self) -> bool:
        return bool(self._stream is not None and self._stream.isatty())  # type: ignore[attr-defined]

    @property
    def buffer(self) -> _Guarded:
        return _Guarded(getattr(self._stream, "buffer", None))

    def __getattr__(self, name: str) -> object:
        if self._stream is None:
            raise AttributeError(name)
        return getattr(self._stream, name)


def _prepare_streams() -> None:
    if not isinstance(sys.stdout, _Guarded):
        sys.stdout = _Guarded(sys.stdout)  # type: ignore[assignment]
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")  # for the life of the process
    try:  # print argv bytes that are not UTF-8 back as the same bytes, as C does
        sys.stderr.reconfigure(errors="surrogateescape")  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        pass


def _run(args: list[str], exiting: bool = False) -> int:
    """Dispatch and turn a Failure into its message and exit status."""
    try:
        return _dispatch(args, exiting)
    except Failure as exc:
        sys.stdout.flush()  # what was printed before the failure comes first
        if exc.message is not None:
            warn(exc.message)
        if exc.usage:
            sys.stderr.write(f"Try '{exc.usage} --help' for more information.\n")
        return exc.code
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)


def main(argv: Sequence[str] | None = None, *, exiting: bool = False) -> int:
    """Run one zramctl command; return its exit status (never raise, never print a traceback).

    ``exiting``: the process ends when this returns (the installed command).  Then
    SIGINT/SIGTERM/SIGHUP are blocked on the way out instead of given back their handlers,
    so that one arriving after the work is done cannot turn a finished command into one
    killed by the signal (Python sets them to SIG_DFL while it shuts down).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a file size limit becomes EFBIG
    from ..interrupts import block_signals, restore_handlers, saved_handlers

    saved = sys.stdout
    handlers = saved_handlers()
    try:
        _prepare_streams()
        code = _run(args, exiting)
        sys.stdout.flush()
        return code
    except StdoutError as exc:  # util-linux's close_stdout(): "write error"
        _discard_stdout()
        warn(f"write error: {error_words(exc.original)}")
        return 1
    except KeyboardInterrupt as exc:  # Ctrl-C, or a signal interrupts.Deferred let stop the command
        _discard_stdout()
        return 128 + getattr(exc, "signum", signal.SIGINT)
    except (BrokenPipeError, PipeClosed):
        return _quiet_broken_pipe()
    except OSError as exc:
        where = getattr(exc, "filename", None)
        warn(f"{where}: {error_words(exc)}" if where else error_words(exc))
        return 1
    except ImportError as exc:  # a broken installation (e.g. the compiled module not built): its own words
        warn(str(exc))
        return 1
    except Exception as exc:  # the last line of defence: a bug, said in one line
        warn(f"internal error: {type(exc).__name__}: {exc}")
        return 1
    finally:
        sys.stdout = saved
        if exiting:
            block_signals()
        else:
            restore_handlers(handlers)


def entry() -> NoReturn:
    """The installed ``zramctl`` command and ``python -m zramctl``.

    It ends the process with ``os._exit`` once the output is flushed, not through the
    interpreter's shutdown: by then every change is committed and every output written,
    and the shutdown (a full garbage collection of all a command made, the modules torn
    down, the idle reader and stream threads joined) only cost 10-25 ms of every command.
    The kernel closes the files and with them releases the devices' locks, as it would.
    """
    try:
        code = main(exiting=True)
    except KeyboardInterrupt:  # in the instant before main() blocked the signals
        code = 128 + signal.SIGINT
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:  # (None: started with that descriptor closed)
                stream.flush()
        except (OSError, ValueError):  # (main() has said what a failing stdout did)
            pass
    os._exit(code)
