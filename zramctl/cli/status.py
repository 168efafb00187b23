"""util-linux zramctl's four actions on our device images: status, find, create, reset.

The order of operations and the messages are util-linux's (``sys-utils/zramctl.c``,
2.42): set-up is reset -> streams -> algorithm -> params -> disksize,
each step's failure named the way util-linux names it; ``-r`` resets and then
removes every named device, going on past failures.  Our additions to the
set-up: ``--compat``, written right after the reset, because the profile
decides which attributes the device has; ``--secondary-algorithm``
(``recomp_algorithm``) after the algorithm and before the params, so that
``-p "algo=zstd level=9"`` can name a secondary one; ``--writeback-device``
(``backing_dev``) last before disksize: the kernel takes both only before
disksize.
"""

from __future__ import annotations

import errno
import sys

from ..errors import Failure, ZramError, device_failure, error_words
from ..kernel import sysfs
from ..kernel.zram_drv import Zram
from .common import Options, warn

# A writer holds a device for at most one command; set-up waits this long for it
# (util-linux takes a blocking flock), reset does not wait (LOCK_NB).
LOCK_WAIT = 10.0


def device_name(number: int) -> str:
    return f"zram{number}"


def resolve(store, text: str) -> tuple[int, str]:
    """A device argument as (number, zramN); ``<text>: No such device`` if it names none."""
    from ..store import parse_device_name

    try:
        number = parse_device_name(text)
    except (ValueError, OSError):
        raise Failure(f"{text}: {error_words(ZramError(errno.ENODEV, text))}") from None
    name = device_name(number)
    if not store.exists(number):
        raise Failure(f"{name}: {error_words(ZramError(errno.ENODEV, name))}")
    return number, name


# --- status -----------------------------------------------------------------------


def _row(columns, zram: Zram, name: str, inbytes: bool, typed: bool) -> list:
    from . import columns as cols

    def attrs(attr: str) -> str | None:
        """The attribute's text; None when it is missing or cannot be read (block_state of a
        device not set up: EINVAL), as util-linux leaves a cell empty when a read fails."""
        try:
            return sysfs.read_or_none(zram, attr)
        except ZramError:
            return None

    try:
        if typed:
            return cols.row_values(columns, attrs, name)
        return cols.row(columns, attrs, inbytes=inbytes, name=name)
    except cols.StatError as exc:  # util-linux exits: strtou64_or_err("Failed to parse mm_stat")
        if exc.errno == errno.ERANGE:
            raise Failure(f"{exc.message}: {error_words(ZramError(exc.errno, 'mm_stat'))}") from None
        raise Failure(exc.message) from None


def status(store, opts: Options) -> int:
    """The table: one row for a named device, else one per initialised device, by number."""
    from . import columns as cols
    from . import output

    current = list(cols.COLUMNS) if opts.output_all else list(cols.DEFAULT_COLUMNS)
    if opts.outarg is not None:
        try:
            current = cols.parse_columns(opts.outarg, current)
        except cols.ColumnError as exc:
            raise Failure(exc.message) from None
    rc = 0
    rows = []
    if opts.devices:
        number, name = resolve(store, opts.devices[0])
        with _open(store, number, name, write=False) as handle:
            rows.append(_row(current, handle.zram, name, opts.inbytes, opts.json))
    else:
        for number in sorted(store.ids()):
            name = device_name(number)
            try:
                with store.open(number, write=False, timeout=LOCK_WAIT) as handle:
                    if handle.zram.initialized:
                        rows.append(_row(current, handle.zram, name, opts.inbytes, opts.json))
            except OSError as exc:  # one unreadable image does not hide the others
                warn(device_failure(name, exc).message or name)
                rc = 1
    if opts.json:
        sys.stdout.write(output.render_json(current, rows))
    else:
        output.print_table(current, rows, raw=opts.raw, noheadings=opts.noheadings)
    return rc


def _open(store, number: int, name: str, *, write: bool, doing: str | None = None):
    """store.open(), its errors worded as ``<name>: <doing>: <strerror>``."""
    try:
        return store.open(number, write=write, timeout=LOCK_WAIT)
    except OSError as exc:
        raise device_failure(name, exc, doing) from None


# --- find, create, reset ------------------------------------------------------------


def _hot_add(store) -> int:
    """hot_add for -f: a bad root in its own words; any other failure as util-linux words it."""
    from ..store import RootError

    try:
        return store.hot_add()
    except RootError as exc:
        raise Failure(str(exc)) from None
    except OSError as exc:
        raise Failure(f"no free zram device found ({error_words(exc)})") from None


def find_free(store) -> int:
    """find_free_zram(): the first device with disksize 0, hot-adding one where a number is missing.

    Only a guess when another -f runs at the same time: ``claim_free`` is what set-up uses.
    """
    number = 0
    while True:
        if not store.exists(number):
            number = _hot_add(store)
        with _open(store, number, device_name(number), write=False) as handle:
            if not handle.zram.initialized:
                return number
        number += 1


def claim_free(store):
    """The first free device (disksize 0), open for writing: (number, handle).

    The choice is checked under the exclusive lock, so two concurrent ``-f``
    never get the same device: whoever locks a device second finds it set up
    and moves on to the next number.
    """
    number = 0
    while True:
        if not store.exists(number):
            number = _hot_add(store)
        name = device_name(number)
        try:
            handle = store.open(number, write=True, timeout=LOCK_WAIT)
        except ZramError as exc:
            if exc.errno == errno.ENODEV:  # removed since we looked: look again
                continue
            raise device_failure(name, exc, "failed to lock") from None
        except OSError as exc:
            raise device_failure(name, exc, "failed to lock") from None
        if not handle.zram.initialized:
            return number, handle
        handle.close()
        number += 1


def _set(zram: Zram, name: str, attr: str, value: str, doing: str, *, ignore_enoent: bool = False) -> None:
    try:
        sysfs.store(zram, attr, value)
    except ZramError as exc:
        if ignore_enoent and exc.errno == errno.ENOENT:
            return
        raise device_failure(name, exc, doing) from None


def recomp_algorithm_values(given: list[str]) -> list[str]:
    """What each ``--secondary-algorithm NAME[:PRIORITY]`` writes to ``recomp_algorithm``.

    ``algo=NAME priority=P``; without ``:PRIORITY`` the priority is the option's place among
    them (the first 1, the second 2, ...), so ``--secondary-algorithm zstd
    --secondary-algorithm deflate`` tries zstd first.  The kernel judges both halves; a
    blank or a quote, which would split the attribute into other keys, is refused here.
    """
    values = []
    for place, text in enumerate(given, 1):
        algo, _, priority = text.rpartition(":") if ":" in text else (text, "", str(place))
        if not algo or any(c.isspace() or c == '"' for c in text):
            raise Failure(f"failed to parse secondary algorithm: '{text}'")
        values.append(f"algo={algo} priority={priority}")
    return values


def create(store, opts: Options) -> int:
    """Set a device up: reset, (compat), streams, algorithm, (secondary algorithms), params,
    (writeback device), disksize; the first failure stops."""
    assert opts.size is not None
    secondaries = recomp_algorithm_values(opts.recomp_algorithms)  # refused before any change
    if opts.find:
        number, claimed = claim_free(store)
        name = device_name(number)
    elif not opts.devices:
        raise Failure("no device specified")
    else:
        number, name = resolve(store, opts.devices[0])
        claimed = _open(store, number, name, write=True, doing="failed to lock")
    with claimed as handle:
        zram = handle.zram
        try:
            _set(zram, name, "reset", "1", "failed to reset")
            if opts.compat is not None:
                _set(zram, name, "compat", opts.compat, "failed to set compat")
            if opts.streams:
                # util-linux >= 2.42 ignores ENOENT: kernels >= 6.15 have no max_comp_streams.
                _set(zram, name, "max_comp_streams", str(opts.streams), "failed to set number of streams",
                     ignore_enoent=True)
            if opts.algorithm is not None:
                _set(zram, name, "comp_algorithm", opts.algorithm, "failed to set algorithm")
            for value in secondaries:
                _set(zram, name, "recomp_algorithm", value, "failed to set secondary algorithm")
            if opts.params is not None:
                _set(zram, name, "algorithm_params", opts.params, "failed to set algorithm params")
            if opts.backing_dev is not None:
                _set(zram, name, "backing_dev", opts.backing_dev, "failed to set writeback device")
            _set(zram, name, "disksize", str(opts.size), f"failed to set disksize ({opts.size} bytes)")
        except Failure:
            # As with the kernel, the steps before the failure (the reset at least) took effect.
            handle.commit()
            raise
    if opts.find:
        sys.stdout.write(f"{name}\n")
    return 0


def reset(store, opts: Options) -> int:
    """Reset and remove each device; report each failure and go on; 1 if any failed."""
    from ..store import parse_device_name

    if not opts.devices:
        raise Failure("no device specified")
    rc = 0
    for text in opts.devices:
        try:
            number: int | None = parse_device_name(text)
        except (ValueError, OSError):
            number = None
        name = text if number is None else device_name(number)
        try:
            if number is None or not store.exists(number):
                raise ZramError(errno.ENODEV, name)
            with store.open(number, write=True, timeout=0) as handle:
                sysfs.store(handle.zram, "reset", "1")
        except OSError as exc:
            warn(f"{name}: failed to reset: {error_words(exc)}")
            rc = 1
        if number is not None:
            try:  # zram_control_remove(): its result is ignored
                store.hot_remove(number)
            except OSError:
                pass
    return rc


def run(opts: Options, root: str | None) -> int:
    from .common import open_store

    store = open_store(root)
    action = opts.action
    if action == "status":
        return status(store, opts)
    if action == "find":
        sys.stdout.write(f"{device_name(find_free(store))}\n")
        return 0
    if action == "create":
        return create(store, opts)
    return reset(store, opts)
