"""Sizes and numbers exactly as util-linux reads and writes them.

zramctl's users see sizes in two places: the human-readable cells of the status table
(``size_to_human_string()`` in util-linux ``lib/strutils.c``) and the ``-s/--size`` argument
(``strtosize()`` -> ``ul_parse_size()``).  Both are reimplemented here from the C source, quirks
included, because scripts compare our output byte for byte with the real tool:

* ``size_to_human_string`` rounds to one decimal half-up and never promotes to the next unit, so
  1048575 bytes print as ``1024K``, not ``1M``.
* ``parse_size`` parses the number with ``strtoumax(..., 0)`` (so ``010`` is octal and ``0x10`` hex),
  takes fractions only together with a suffix, adds each fraction digit with truncating integer
  division (``1.25G`` = 1342177279, one byte short of 1.25 GiB) and, like the C code, lets the
  final sum wrap modulo 2**64 (``18.5EB``) while refusing a multiplication that overflows.
* ``parse_u64`` is ``strtou64_or_err()`` (base 10) used for ``-t/--streams``.

The C functions take the decimal point from ``localeconv()``; here it is a parameter so that the
functions stay pure, and ``locale_point()`` reads it for callers that want the C behaviour.
"""

from __future__ import annotations

import errno
import locale

from ..kernel.kstrtox import U64_MAX as U64_MAX  # sizes share the kernel's 64-bit bound
from ..kernel.kstrtox import digits_value

_C_SPACE = " \t\n\v\f\r"
"""What C's isspace() accepts in the C locale (and for ASCII in any glibc locale)."""

_HEX_DIGITS = "0123456789abcdefABCDEF"
_SUFFIXES = "KMGTPEZY"
"""Suffix letters; the index + 1 is the power of the base (K = base**1 ... Y = base**8)."""


class SizeError(ValueError):
    """A size or number argument that util-linux would refuse.

    ``errno`` is ``errno.EINVAL`` or ``errno.ERANGE``: the CLI needs it to print the same
    ``: Invalid argument`` / ``: Numerical result out of range`` tail that ``err()`` prints.
    """

    def __init__(self, err: int, text: str) -> None:
        super().__init__(f"{text!r}: {errno.errorcode.get(err, err)}")
        self.errno = err
        self.text = text


def locale_point() -> str:
    """The current locale's decimal point, as C's ``localeconv()->decimal_point`` gives it."""
    return locale.localeconv()["decimal_point"] or "."


# ---------------------------------------------------------------------------------------------
# size_to_human_string(SIZE_SUFFIX_1LETTER, n)
# ---------------------------------------------------------------------------------------------

def _get_exp(n: int) -> int:
    """The largest exponent in {0, 10, ..., 60} with ``n >= 2**exp`` (C's ``get_exp``)."""
    shift = 10
    while shift <= 60 and n >= (1 << shift):
        shift += 10
    return shift - 10


def size_to_human_string(n: int, point: str = ".") -> str:
    """Format ``n`` bytes as util-linux does in its 1-letter form (``0B``, ``1.5K``, ``16E``).

    The tenth is rounded half-up from truncated thousandths; a carry bumps the integer part but
    never the unit, which is why 1048575 gives ``1024K``.  ``point`` is the locale's decimal
    point (``6,5M`` under de_DE).
    """
    if not 0 <= n <= U64_MAX:
        raise ValueError(f"size out of the uint64 range: {n}")
    exp = _get_exp(n)
    letter = "BKMGTPE"[exp // 10]
    dec = n >> exp
    frac = n & ((1 << exp) - 1)
    if frac:
        # Thousandths.  The C code divides by 1024 first when frac * 1000 would overflow
        # 64 bits; that changes the truncation, so it is kept.
        if frac >= U64_MAX // 1000:
            frac = ((frac // 1024) * 1000) // (1 << (exp - 10))
        else:
            frac = (frac * 1000) // (1 << exp)
        frac = ((frac + 50) // 100) * 10  # half-up to tenths, kept as hundredths
        if frac == 100:
            dec += 1
            frac = 0
    if frac:
        return f"{dec}{point or '.'}{frac // 10}{letter}"
    return f"{dec}{letter}"


# ---------------------------------------------------------------------------------------------
# strtoumax() and strtosize()
# ---------------------------------------------------------------------------------------------

def _strtoumax(s: str, pos: int, base: int) -> tuple[int, int, bool]:
    """C ``strtoumax(s + pos, &end, base)`` for base 0 or 10.

    Returns ``(value, end, overflow)``; ``end == pos`` means nothing was converted.  As in glibc,
    a ``-`` negates modulo 2**64, overflow clamps to ``U64_MAX``, and ``0x`` not followed by a hex
    digit converts just the ``0``.
    """
    i = pos
    while i < len(s) and s[i] in _C_SPACE:
        i += 1
    negative = False
    if i < len(s) and s[i] in "+-":
        negative = s[i] == "-"
        i += 1
    if base == 0:
        if s.startswith(("0x", "0X"), i) and i + 2 < len(s) and s[i + 2] in _HEX_DIGITS:
            base, i = 16, i + 2
        elif s.startswith("0", i):
            base = 8
        else:
            base = 10
    digits = {8: "01234567", 10: "0123456789", 16: _HEX_DIGITS}[base]
    start = i
    while i < len(s) and s[i] in digits:
        i += 1
    if i == start:
        return 0, pos, False
    value = digits_value(s[start:i], base)
    if value is None:
        return U64_MAX, i, True
    if negative:
        value = (-value) & U64_MAX
    return value, i, False


def _scale(x: int, base: int, power: int) -> tuple[int, bool]:
    """C ``do_scale_by_power``: multiply ``power`` times, stopping (and failing) before overflow.

    The partial product is returned too, because ``ul_parse_size`` ignores the failure for the
    fraction's base and uses whatever was reached (so ``0.5Z`` is 2**59, not an error).
    """
    for _ in range(power):
        if U64_MAX // base < x:
            return x, False
        x *= base
    return x, True


def _add_fraction(x: int, frac: int, frac_zeros: int, base: int, power: int) -> int:
    """Add the fraction digits to ``x`` the way ``ul_parse_size`` does, digit by digit.

    ``frac`` holds the digits after the leading zeros (``frac_zeros`` of them).  Each digit d at
    position 10**-k adds ``base**power // (10**k // d)``: truncating integer arithmetic, hence
    ``1.25G`` = 1342177279.  The sum wraps modulo 2**64 as C's uintmax_t does.
    """
    frac_base, _ = _scale(1, base, power)
    frac_div, frac_poz = 10, 1
    while frac_div < frac:
        if frac_div <= U64_MAX // 10:
            frac_div *= 10
        else:
            frac //= 10
    for _ in range(frac_zeros):
        if frac_div <= U64_MAX // 10:
            frac_div *= 10
        else:
            frac //= 10
    while True:
        seg = frac % 10
        seg_div = frac_div // frac_poz
        frac //= 10
        frac_poz *= 10
        if seg and seg_div // seg:
            x = (x + frac_base // (seg_div // seg)) & U64_MAX
        if not frac:
            return x


def parse_size(text: str, point: str = ".") -> int:
    """Parse a ``-s/--size`` argument exactly like util-linux ``strtosize()``.

    Accepted: ``[space][+]number[.fraction]suffix`` where number is base 0 (decimal, ``0x`` hex,
    ``0`` octal), and suffix is K M G T P E Z Y (or lower case) optionally followed by ``iB``
    (powers of 1024) or by ``B`` alone (powers of 1000).  A fraction needs a suffix.  Raises
    ``SizeError`` with EINVAL for anything else and ERANGE when the result exceeds 64 bits.
    ``point`` is the locale's decimal point.
    """
    if not text:
        raise SizeError(errno.EINVAL, text)
    point = point or "."  # an empty point would make the C code loop forever; localeconv() never gives one
    i = 0
    while i < len(text) and text[i] in _C_SPACE:
        i += 1
    if text.startswith("-", i):
        raise SizeError(errno.EINVAL, text)

    x, end, overflow = _strtoumax(text, 0, 0)
    if end == 0:
        raise SizeError(errno.EINVAL, text)
    if overflow:
        raise SizeError(errno.ERANGE, text)
    if end == len(text):
        return x

    def at(k: int) -> str:
        """The character at ``k``, or '' (C's terminating NUL) past the end."""
        return text[k] if k < len(text) else ""

    p, frac, frac_zeros = end, 0, 0
    while True:  # C's "check_suffix:" label; the fraction branch jumps back here
        if at(p + 1) == "i" and at(p + 2) in ("B", "b") and not at(p + 3):
            base = 1024
        elif at(p + 1) in ("B", "b") and not at(p + 2):
            base = 1000
        elif at(p + 1):
            if frac == 0 and at(p) and text.startswith(point, p):
                p += len(point)
                while at(p) == "0":
                    frac_zeros += 1
                    p += 1
                if at(p) and at(p) in "0123456789":
                    frac, fend, overflow = _strtoumax(text, p, 0)
                    if overflow:
                        raise SizeError(errno.ERANGE, text)
                    p = fend
                if p >= len(text):  # fraction without a suffix
                    raise SizeError(errno.EINVAL, text)
                continue
            raise SizeError(errno.EINVAL, text)
        else:
            base = 1024
        break

    suffix = at(p)
    if suffix and suffix in _SUFFIXES:
        power = _SUFFIXES.index(suffix) + 1
    elif suffix and suffix in _SUFFIXES.lower():
        power = _SUFFIXES.lower().index(suffix) + 1
    else:
        raise SizeError(errno.EINVAL, text)

    x, fits = _scale(x, base, power)
    if frac:
        x = _add_fraction(x, frac, frac_zeros, base, power)
    if not fits:
        raise SizeError(errno.ERANGE, text)
    return x


def parse_u64(text: str) -> int:
    """Parse a ``-t/--streams`` argument like util-linux ``strtou64_or_err()`` (base 10).

    ``ul_strtou64`` first parses as signed and refuses a negative value with ERANGE (so ``-1``
    is "out of range" while ``-0`` is 0), then parses as unsigned: overflow is ERANGE, no digits
    or trailing characters EINVAL.
    """
    if not text:
        raise SizeError(errno.EINVAL, text)
    i = 0
    while i < len(text) and text[i] in _C_SPACE:
        i += 1
    if text.startswith("-", i):
        digits_at = i + 1
        j = digits_at
        while j < len(text) and text[j] in "0123456789":
            j += 1
        if text[digits_at:j].strip("0"):
            raise SizeError(errno.ERANGE, text)  # strtoimax() gave a negative number
    value, end, overflow = _strtoumax(text, 0, 10)
    if overflow:
        raise SizeError(errno.ERANGE, text)
    if end == 0 or end != len(text):
        raise SizeError(errno.EINVAL, text)
    return value
