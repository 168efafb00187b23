"""The sysfs attributes of a zram device: their names, modes and exact text.

``show(zram, name)`` returns what ``cat /sys/block/zramN/NAME`` prints;
``store(zram, name, value)`` does what ``echo VALUE > /sys/block/zramN/NAME``
does, raising ZramError with the kernel's errno.  Each profile has the
attribute set of its kernel (the 2013 driver's per-value files, or the
modern ``mm_stat``/``io_stat``/...), plus two of ours that both have:
``max_comp_streams`` (the compression streams a write uses: ``-t``'s number, else
one per usable CPU for 6.18, as kernels 4.7 to 6.14 showed the online CPUs before 6.15
dropped the file, and one for 3.11) and ``compat`` (the profile itself).
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ZramError
from .kstrtox import U64_MAX, digits_mod_u64, digits_value, kstrtoll, kstrtoull
from .profiles import PAGE_SHIFT, PAGE_SIZE, PROFILES
from .zcomp import AVAILABLE, UNAVAILABLE, check_algorithm
from .zram_drv import (
    RECOMPRESS_MODES,
    WRITEBACK_MODES,
    ZRAM_MAX_COMPS,
    AlgorithmParams,
    Zram,
)

# CRYPTO_MAX_ALG_NAME: a longer algorithm name is refused with E2BIG.
CRYPTO_MAX_ALG_NAME = 128
PATH_MAX = 4096
"""backing_dev_store copies the path with strscpy into PATH_MAX bytes: longer is cut, silently."""
NSEC_PER_SEC = 10**9
_SPACES = " \t\n\v\f\r"
"""isspace() in the kernel's ctype (ASCII)."""


def memparse(text: str) -> tuple[int, int]:
    """The kernel's memparse(): a base-0 number and an optional K/M/G/T/P/E suffix.

    Returns (value, characters consumed); the rest of the text is ignored, as
    the kernel ignores it.  Consumed 0 means no number was found.
    """
    s = text
    i = 0
    base = 10
    if s[i : i + 2].lower() == "0x" and len(s) > 2 and s[2] in "0123456789abcdefABCDEF":
        base, i = 16, 2
    elif s[:1] == "0":
        base = 8
    digits = "0123456789abcdef"[:base]
    start = i
    while i < len(s) and s[i].lower() in digits:
        i += 1
    if i == start and base != 8:
        return 0, 0
    value = digits_mod_u64(s[start:i], base)  # simple_strtoull wraps, however long the number
    shift = {"k": 10, "m": 20, "g": 30, "t": 40, "p": 50, "e": 60}.get(s[i : i + 1].lower())
    if shift is not None:
        value <<= shift
        i += 1
    return value & U64_MAX, i


def kstrtoul(text: str, base: int = 10, bits: int = 64) -> int:
    """kstrto*(): the whole string (one trailing newline allowed) is one number, else EINVAL."""
    s = text[:-1] if text.endswith("\n") else text
    if s.startswith("+"):
        s = s[1:]
    if not s or not s.isdigit() or not s.isascii():
        raise ValueError(errno.EINVAL)
    value = digits_value(s, base, (1 << bits) - 1)
    if value is None:
        raise ValueError(errno.ERANGE)
    return value


def sysfs_streq(a: str, b: str) -> bool:
    """sysfs_streq(): equal, ignoring one trailing newline on either."""
    return (a[:-1] if a.endswith("\n") else a) == (b[:-1] if b.endswith("\n") else b)


def next_args(text: str) -> list[tuple[str, str | None]]:
    """The (param, value) pairs lib/cmdline.c's next_arg() takes from ``text`` in turn, after
    skip_spaces(): tokens split at whitespace outside double quotes; value None for a token
    without ``=`` (an ``=`` first in the token does not count); the quotes around a token or
    a value are dropped."""
    out: list[tuple[str, str | None]] = []
    args = text.lstrip(_SPACES)
    while args:
        quoted = in_quote = args[0] == '"'
        if quoted:
            args = args[1:]
        equals = 0
        i = 0
        while i < len(args):
            c = args[i]
            if c in _SPACES and not in_quote:
                break
            if equals == 0 and c == "=":
                equals = i
            if c == '"':
                in_quote = not in_quote
            i += 1
        token, args = args[:i], args[i + 1 :].lstrip(_SPACES)
        if quoted and token.endswith('"'):
            token = token[:-1]
        if not equals:
            out.append((token, None))
            continue
        param, val = token[:equals], token[equals + 1 :]
        if val.startswith('"'):
            val = val[1:]
            if val.endswith('"') and not quoted:
                val = val[:-1]
        out.append((param, val))
    return out


def _quoted(text: str) -> str:
    """A user's token in an error: quoted, and cut short (a detail is one short line)."""
    return repr(text if len(text) <= 24 else text[:20] + "...")


def _number(what: str, text: str, base: int = 10, limit: int = U64_MAX) -> int:
    """kstrtoull/kstrtoul/kstrtouint: its errno (EINVAL, ERANGE) as a ZramError."""
    try:
        return kstrtoull(text, base, limit)
    except ValueError as exc:
        raise ZramError(exc.args[0], what, f"{_quoted(text)} is not a number here") from None


def _int(what: str, text: str) -> int:
    """kstrtoint(text, 10): its errno as a ZramError."""
    try:
        return kstrtoll(text, 10, 32)
    except ValueError as exc:
        raise ZramError(exc.args[0], what, f"{_quoted(text)} is not a 32-bit integer") from None


# --- the modern attributes ------------------------------------------------

MM_STAT_FIELDS = (
    "orig_data_size",
    "compr_data_size",
    "mem_used_total",
    "mem_limit",
    "mem_used_max",
    "same_pages",
    "pages_compacted",
    "huge_pages",
    "huge_pages_since",
)
"""The fields of ``mm_stat``, in order (Documentation/admin-guide/blockdev/zram.rst)."""
IO_STAT_FIELDS = ("failed_reads", "failed_writes", "invalid_io", "notify_free")
"""The fields of ``io_stat``, in order (invalid_io is a literal 0 since 6.4)."""


def _mm_stat(z: Zram) -> str:
    st = z.stats
    pool = z.pool
    return "%8d %8d %8d %8d %8d %8d %8d %8d %8d\n" % (
        z.orig_data_size,
        st.compr_data_size,
        z.mem_used_total,
        z.config.limit_pages << PAGE_SHIFT,
        st.max_used_pages << PAGE_SHIFT,
        st.same_pages,
        pool.pages_compacted if pool else 0,
        st.huge_pages,
        st.huge_pages_since,
    )


def _io_stat(z: Zram) -> str:
    st = z.stats
    return "%8d %8d 0 %8d\n" % (st.failed_reads, st.failed_writes, st.notify_free)


def _debug_stat(z: Zram) -> str:
    return "version: 1\n0 %8d\n" % z.stats.miss_free


def _algorithm_list(selected: str | None) -> str:
    """zcomp_available_show(): every algorithm, the selected one in brackets."""
    return "".join(f"[{a}] " if a == selected else f"{a} " for a in AVAILABLE) + "\n"


def _comp_algorithm(z: Zram) -> str:
    return _algorithm_list(z.config.comp_algorithm)


def _algorithm_name(what: str, value: str) -> str:
    """__comp_algorithm_store()'s checks: E2BIG for a long name, EINVAL for an unknown one."""
    if len(value) >= CRYPTO_MAX_ALG_NAME:
        raise ZramError(errno.E2BIG, what)
    name = value[:-1] if value.endswith("\n") else value
    try:
        check_algorithm(name)
    except Exception:
        raise ZramError(errno.EINVAL, what, UNAVAILABLE.get(name)) from None
    return name


def _store_comp_algorithm(z: Zram, value: str) -> None:
    name = _algorithm_name("comp_algorithm", value)
    if z.initialized:
        raise ZramError(errno.EBUSY, "comp_algorithm")
    z.config.comp_algorithm = name


def _store_disksize(z: Zram, value: str) -> None:
    size, _ = memparse(value)
    if not size:
        raise ZramError(errno.EINVAL, "disksize")
    if size > U64_MAX - PAGE_SIZE + 1 and not z.initialized:  # (initialised: EBUSY, below)
        # PAGE_ALIGN() wraps to 0 in the kernel and the table of 0 pages cannot be allocated.
        raise ZramError(errno.ENOMEM, "disksize", "rounded up to whole pages, the size exceeds 64 bits")
    z.init(size)


def _store_reset(z: Zram, value: str) -> None:
    try:
        do_reset = kstrtoul(value, bits=16)
    except ValueError as exc:
        raise ZramError(exc.args[0], "reset") from None
    if not do_reset:
        raise ZramError(errno.EINVAL, "reset")
    z.reset()


def _store_mem_limit(z: Zram, value: str) -> None:
    limit, used = memparse(value)
    if not used:
        raise ZramError(errno.EINVAL, "mem_limit")
    z.config.limit_pages = -(-limit // PAGE_SIZE)


def _store_mem_used_max(z: Zram, value: str) -> None:
    try:
        val = kstrtoul(value)
    except ValueError:
        val = 1
    if val != 0:
        raise ZramError(errno.EINVAL, "mem_used_max")
    if z.initialized:
        z.stats.max_used_pages = z.mem_used_pages()


def _store_compact(z: Zram, value: str) -> None:
    z.compact()


def _store_algorithm_params(z: Zram, value: str) -> None:
    """algorithm_params_store(): ``priority=`` ``algo=`` ``level=`` ``dict=PATH``
    ``deflate.winbits=``; each write replaces every parameter of its priority.

    6.18 takes them while the device is set up too (no EBUSY): Zram.set_params says what
    that changes (lz4's and lz4hc's level, at once; nothing else).  A dictionary that
    cannot be read is EINVAL after the reset, which stays.
    """
    what = "algorithm_params"
    prio = 0
    level: int | None = None
    winbits: int | None = None
    algo = dict_path = None
    for param, val in next_args(value):
        if not val:
            raise ZramError(errno.EINVAL, what, f"{_quoted(param)} needs a value")
        if param == "priority":
            prio = _int(what, val)
        elif param == "level":
            level = _int(what, val)
        elif param == "algo":
            algo = val
        elif param == "dict":
            dict_path = val
        elif param == "deflate.winbits":
            winbits = _int(what, val)
    if algo is not None:  # the algorithm's priority wins over priority=
        for p in range(ZRAM_MAX_COMPS):
            name = z.config.comp_algorithm if p == 0 else z.config.recomp_algorithms[p - 1]
            if name == algo:
                prio = p
                break
        else:
            raise ZramError(errno.EINVAL, what, f"{_quoted(algo)} is at no priority of this device")
    if not 0 <= prio < ZRAM_MAX_COMPS:
        raise ZramError(errno.EINVAL, what, f"priority must be 0..{ZRAM_MAX_COMPS - 1}")
    params = AlgorithmParams(level=level, deflate_winbits=winbits)
    z.set_params(prio, AlgorithmParams())  # comp_params_reset() first
    if dict_path is not None:
        read_file = z.backing.read_file
        try:
            data = read_file(dict_path) if read_file is not None else b""
        except OSError:  # ZramError too
            data = b""
        if not data:
            raise ZramError(errno.EINVAL, what, f"cannot read a dictionary from {_quoted(dict_path)}")
        params.dict_data = data
    z.set_params(prio, params)


def _store_idle(z: Zram, value: str) -> None:
    """idle_store(): ``all``, or an age in seconds (kstrtoull base 0): slots not accessed for
    longer are marked idle, the others lose the mark.  The parse comes before the init check."""
    if sysfs_streq(value, "all"):
        cutoff = None
    else:
        try:
            age = kstrtoull(value, 0)
        except ValueError:
            raise ZramError(errno.EINVAL, "idle", "give all or an age in seconds") from None
        # now - age * NSEC_PER_SEC in ns, the product wrapping as the kernel's u64 does; a slot
        # is idle when its ac_time (whole seconds) is strictly before that.
        ns = age * NSEC_PER_SEC & U64_MAX
        if ns >> 63:
            ns -= 1 << 64
        cutoff = -(-(z.clock() * NSEC_PER_SEC - ns) // NSEC_PER_SEC)
    z.mark_idle(cutoff)


def _backing_dev(z: Zram) -> str:
    return (z.config.backing_dev or "none") + "\n"


def _store_backing_dev(z: Zram, value: str) -> None:
    if z.initialized:  # before anything else, as backing_dev_store takes the lock
        raise ZramError(errno.EBUSY, "backing_dev", "the device is set up; reset it first")
    path = value[: PATH_MAX - 1]
    if path.endswith("\n"):
        path = path[:-1]
    z.set_backing_dev(path)


def _writeback_mode(what: str, name: str) -> int:
    mode = WRITEBACK_MODES.get(name)
    if mode is None:
        raise ZramError(errno.EINVAL, what, f"{_quoted(name)}: give {', '.join(WRITEBACK_MODES)}")
    return mode


def _store_writeback(z: Zram, value: str) -> None:
    """writeback_store(): a mode (``idle``, ``type=huge``, ...) scans [lo, hi), the whole device
    unless page_index/page_indexes moved the range, and ends the parse; ``page_index=N`` and
    ``page_indexes=LO-HI`` each queue their range; other keys are ignored."""
    what = "writeback"
    z.writeback_check()
    nr_pages = z.config.disksize >> PAGE_SHIFT
    lo, hi = 0, nr_pages
    scans: list[tuple[int, int, int]] = []
    for param, val in next_args(value):
        if not val:  # the legacy valueless mode
            scans.append((_writeback_mode(what, param), lo, hi))
            break
        if param == "type":
            scans.append((_writeback_mode(what, val), lo, hi))
            break
        if param == "page_index":
            lo = _number(what, val)
            if lo >= nr_pages:
                raise ZramError(errno.ERANGE, what, f"page {lo} is past the device's {nr_pages} pages")
            hi = lo + 1
            scans.append((0, lo, hi))
        elif param == "page_indexes":
            first, sep, last = val.partition("-")
            if not sep:
                raise ZramError(errno.EINVAL, what, "page_indexes takes LOW-HIGH")
            lo = _number(what, first)
            if lo >= nr_pages:
                raise ZramError(errno.ERANGE, what, f"page {lo} is past the device's {nr_pages} pages")
            hi = _number(what, last)
            if hi >= nr_pages or lo > hi:
                detail = f"{_quoted(val)} is no range of the device's {nr_pages} pages"
                raise ZramError(errno.ERANGE, what, detail)
            hi += 1
            scans.append((0, lo, hi))
    z.writeback(scans)


def _store_writeback_limit(z: Zram, value: str) -> None:
    try:
        z.config.writeback_limit = kstrtoull(value)
    except ValueError:
        raise ZramError(errno.EINVAL, "writeback_limit", "give a number of 4 KiB pages") from None


def _store_writeback_limit_enable(z: Zram, value: str) -> None:
    try:
        z.config.writeback_limit_enable = kstrtoull(value) != 0
    except ValueError:
        raise ZramError(errno.EINVAL, "writeback_limit_enable", "give 0 or 1") from None


def _bd_stat(z: Zram) -> str:
    st = z.stats  # in 4 KiB units: pages times PAGE_SIZE / 4096
    return "%8d %8d %8d\n" % (st.bd_count, st.bd_reads, st.bd_writes)


def _recomp_algorithm(z: Zram) -> str:
    return "".join(
        f"#{prio}: " + _algorithm_list(name)
        for prio, name in enumerate(z.config.recomp_algorithms, 1)
        if name is not None
    )


def _store_recomp_algorithm(z: Zram, value: str) -> None:
    """recomp_algorithm_store(): ``algo=NAME [priority=1..3]``."""
    what = "recomp_algorithm"
    prio = 1
    algo = None
    for param, val in next_args(value):
        if not val:
            raise ZramError(errno.EINVAL, what, f"{_quoted(param)} needs a value")
        if param == "algo":
            algo = val
        elif param == "priority":
            prio = _int(what, val)
    if algo is None:
        raise ZramError(errno.EINVAL, what, "algo= is required")
    if not 1 <= prio < ZRAM_MAX_COMPS:
        raise ZramError(errno.EINVAL, what, f"priority must be 1..{ZRAM_MAX_COMPS - 1}")
    name = _algorithm_name(what, algo)
    if z.initialized:
        raise ZramError(errno.EBUSY, what, "the device is set up; reset it first")
    z.config.recomp_algorithms[prio - 1] = name


def _store_recompress(z: Zram, value: str) -> None:
    """recompress_store(): ``type=`` ``max_pages=`` ``threshold=`` ``algo=`` ``priority=``; an
    unknown type= or key is ignored."""
    what = "recompress"
    mode = 0
    max_pages: int | None = None
    threshold = 0
    algo = None
    priority: int | None = None
    for param, val in next_args(value):
        if not val:
            raise ZramError(errno.EINVAL, what, f"{_quoted(param)} needs a value")
        if param == "max_pages":
            max_pages = _number(what, val)
        elif param == "threshold":
            threshold = _number(what, val, limit=(1 << 32) - 1)
        elif param == "type":
            mode = RECOMPRESS_MODES.get(val, mode)
        elif param == "algo":
            algo = val
        elif param == "priority":
            priority = _number(what, val, limit=(1 << 32) - 1)
    z.recompress(mode=mode, max_pages=max_pages, threshold=threshold, algo=algo, priority=priority)


def _store_max_comp_streams(z: Zram, value: str) -> None:
    try:
        n = kstrtoul(value, bits=31)
    except ValueError as exc:
        raise ZramError(exc.args[0], "max_comp_streams") from None
    if n < 1:
        raise ZramError(errno.EINVAL, "max_comp_streams")
    z.config.max_comp_streams = n


def _store_compat(z: Zram, value: str) -> None:
    name = value.strip()
    if name not in PROFILES:
        raise ZramError(errno.EINVAL, "compat", f"known: {', '.join(PROFILES)}")
    if z.initialized:
        raise ZramError(errno.EBUSY, "compat")
    z.config.compat = name
    z.config.comp_algorithm = PROFILES[name].default_algorithm


# --- the 2013 per-value files ---------------------------------------------


def _u(getter: Callable[[Zram], int]) -> Callable[[Zram], str]:
    return lambda z: f"{getter(z)}\n"


@dataclass(frozen=True)
class Attribute:
    name: str
    show: Callable[[Zram], str] | None = None
    store: Callable[[Zram, str], None] | None = None


_COMMON = (
    Attribute("disksize", _u(lambda z: z.config.disksize), _store_disksize),
    Attribute("initstate", _u(lambda z: int(z.initialized))),
    Attribute("reset", None, _store_reset),
    Attribute("max_comp_streams", _u(lambda z: z.comp_streams), _store_max_comp_streams),
    Attribute("compat", lambda z: z.config.compat + "\n", _store_compat),
)

MODERN_ATTRIBUTES = _COMMON + (
    Attribute("comp_algorithm", _comp_algorithm, _store_comp_algorithm),
    Attribute("algorithm_params", None, _store_algorithm_params),
    Attribute("mm_stat", _mm_stat),
    Attribute("io_stat", _io_stat),
    Attribute("debug_stat", _debug_stat),
    Attribute("mem_limit", None, _store_mem_limit),
    Attribute("mem_used_max", None, _store_mem_used_max),
    Attribute("compact", None, _store_compact),
    # post-processing (CONFIG_ZRAM_WRITEBACK, CONFIG_ZRAM_MULTI_COMP, CONFIG_ZRAM_TRACK_ENTRY_ACTIME)
    Attribute("idle", None, _store_idle),
    Attribute("backing_dev", _backing_dev, _store_backing_dev),
    Attribute("writeback", None, _store_writeback),
    Attribute("writeback_limit", _u(lambda z: z.config.writeback_limit), _store_writeback_limit),
    Attribute(
        "writeback_limit_enable",
        _u(lambda z: int(z.config.writeback_limit_enable)),
        _store_writeback_limit_enable,
    ),
    Attribute("bd_stat", _bd_stat),
    Attribute("recomp_algorithm", _recomp_algorithm, _store_recomp_algorithm),
    Attribute("recompress", None, _store_recompress),
    Attribute("block_state", lambda z: z.block_state()),
)

LEGACY_ATTRIBUTES = _COMMON + (
    Attribute("num_reads", _u(lambda z: z.stats.num_reads)),
    Attribute("num_writes", _u(lambda z: z.stats.num_writes)),
    Attribute("invalid_io", _u(lambda z: z.stats.invalid_io)),
    Attribute("notify_free", _u(lambda z: z.stats.notify_free)),
    Attribute("zero_pages", _u(lambda z: z.stats.same_pages)),
    Attribute("orig_data_size", _u(lambda z: z.orig_data_size)),
    Attribute("compr_data_size", _u(lambda z: z.stats.compr_data_size)),
    Attribute("mem_used_total", _u(lambda z: z.mem_used_total)),
)

_BY_PROFILE = {
    "6.18": {a.name: a for a in MODERN_ATTRIBUTES},
    "3.11": {a.name: a for a in LEGACY_ATTRIBUTES},
}


def attributes(z: Zram) -> dict[str, Attribute]:
    """The attribute files this device has (they depend on its profile)."""
    return _BY_PROFILE[z.config.compat]


def _lookup(z: Zram, name: str) -> Attribute:
    attr = attributes(z).get(name)
    if attr is None:
        raise ZramError(errno.ENOENT, name)
    return attr


def show(z: Zram, name: str) -> str:
    """The text of attribute ``name`` (EACCES for a write-only one, ENOENT for none)."""
    attr = _lookup(z, name)
    if attr.show is None:
        raise ZramError(errno.EACCES, name)
    return attr.show(z)


def store(z: Zram, name: str, value: str) -> None:
    """Write ``value`` to attribute ``name`` (EACCES for a read-only one)."""
    attr = _lookup(z, name)
    if attr.store is None:
        raise ZramError(errno.EACCES, name)
    try:
        attr.store(z, value)
    except ZramError as exc:
        exc.what = name
        raise


def read_or_none(z: Zram, name: str) -> str | None:
    """An attribute's text without its trailing newline, or None when the file does not exist."""
    attr = attributes(z).get(name)
    if attr is None or attr.show is None:
        return None
    return attr.show(z).rstrip("\n")
