"""The sysfs attributes of a zram device: their names, modes and exact text.

``show(zram, name)`` returns what ``cat /sys/block/zramN/NAME`` prints;
``store(zram, name, value)`` does what ``echo VALUE > /sys/block/zramN/NAME``
does, raising ZramError with the kernel's errno.  Each profile has the
attribute set of its kernel (the 2013 driver's per-value files, or the
modern ``mm_stat``/``io_stat``/...), plus two of ours that both have:
``max_comp_streams`` (the stream count ``-t`` sets; the modern kernel dropped
the file in 6.15) and ``compat`` (the profile itself).
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ZramError
from .kstrtox import U64_MAX, digits_mod_u64, digits_value
from .profiles import PAGE_SHIFT, PAGE_SIZE, PROFILES
from .zcomp import AVAILABLE, UNAVAILABLE, check_algorithm
from .zram_drv import Zram

# CRYPTO_MAX_ALG_NAME: a longer algorithm name is refused with E2BIG.
CRYPTO_MAX_ALG_NAME = 128


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


def _kstrtoint(text: str) -> int:
    """kstrtoint(): a signed 32-bit decimal; EINVAL if not a number, ERANGE if out of range."""
    s = text[:-1] if text.endswith("\n") else text
    negative = s.startswith("-")
    digits = s[1:] if negative else s
    try:
        if digits.startswith("+" if negative else "\n") or digits.endswith("\n"):
            raise ValueError(errno.EINVAL)  # "-+5" and a second newline: kstrtoll refuses them
        value = kstrtoul(digits, bits=32)
    except ValueError as exc:
        raise ZramError(exc.args[0], "algorithm_params", "level must be a 32-bit integer") from None
    value = -value if negative else value
    if not -(1 << 31) <= value < (1 << 31):
        raise ZramError(errno.ERANGE, "algorithm_params", "level must be a 32-bit integer")
    return value


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


def _comp_algorithm(z: Zram) -> str:
    sel = z.config.comp_algorithm
    return "".join(f"[{a}] " if a == sel else f"{a} " for a in AVAILABLE) + "\n"


def _store_comp_algorithm(z: Zram, value: str) -> None:
    if len(value) >= CRYPTO_MAX_ALG_NAME:
        raise ZramError(errno.E2BIG, "comp_algorithm")
    name = value[:-1] if value.endswith("\n") else value
    try:
        check_algorithm(name)
    except Exception:
        raise ZramError(errno.EINVAL, "comp_algorithm", UNAVAILABLE.get(name)) from None
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
    """``priority=N level=L algo=NAME``: only ``level`` changes what we do (at the next init)."""
    level: int | None = z.config.params[0].level
    for token in value.split():
        key, sep, val = token.partition("=")
        if not sep or not val:
            raise ZramError(errno.EINVAL, "algorithm_params", f"{token!r} needs a value")
        try:
            if key == "level":
                level = _kstrtoint(val)
            elif key == "priority":
                if int(val) != 0:
                    raise ZramError(
                        errno.EINVAL, "algorithm_params", "only the primary algorithm (priority 0)"
                    )
            elif key == "algo":
                if val != z.config.comp_algorithm:
                    raise ZramError(errno.EINVAL, "algorithm_params", f"{val} is not the selected algorithm")
            else:
                raise ZramError(errno.EINVAL, "algorithm_params", f"unsupported parameter {key!r}")
        except ValueError:
            raise ZramError(errno.EINVAL, "algorithm_params", f"{val!r} is not a number") from None
    if z.initialized:
        raise ZramError(errno.EBUSY, "algorithm_params")
    z.config.params[0].level = level


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
    Attribute("max_comp_streams", _u(lambda z: z.config.max_comp_streams), _store_max_comp_streams),
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
