"""The kernel's number parsing (lib/kstrtox.c, memparse in lib/cmdline.c), for digit strings of any length.

A sysfs store parses its text the way the kernel does: ``kstrtoull`` refuses a value
that does not fit in 64 bits (ERANGE), ``memparse``'s ``simple_strtoull`` wraps
modulo 2**64.  Python's ``int()`` does neither and refuses more than 4,300 digits,
so these helpers judge a number by its digit count first.
"""

from __future__ import annotations

import errno

U64_MAX = (1 << 64) - 1
"""Largest value of C's uint64_t/uintmax_t; every parsed size must fit in it."""


def digits_value(digits: str, base: int, limit: int = U64_MAX) -> int | None:
    """``int(digits, base)`` for ASCII digits of ``base``, or None when the value exceeds ``limit``.

    A number of any length is judged by its count of significant digits first, so a
    5,000-digit argument is "out of range", not Python's refusal to convert it (its
    int() stops at 4,300 decimal digits) nor a quadratic conversion.
    """
    significant = digits.lstrip("0")
    if len(significant) > _digit_count(limit, base):
        return None
    value = int(significant or "0", base)
    return value if value <= limit else None


def digits_mod_u64(digits: str, base: int) -> int:
    """``int(digits, base) % 2**64`` for a digit string of any length: what a C loop that
    multiplies and adds in 64-bit arithmetic (the kernel's simple_strtoull) computes."""
    step = 1000
    value = 0
    for i in range(0, len(digits), step):
        chunk = digits[i : i + step]
        value = (value * pow(base, len(chunk), 1 << 64) + int(chunk, base)) & U64_MAX
    return value


def _digit_count(n: int, base: int) -> int:
    count = 1
    while n >= base:
        n //= base
        count += 1
    return count


_DIGITS = "0123456789abcdef"


def kstrtoull(text: str, base: int = 10, limit: int = U64_MAX) -> int:
    """kstrtoull(): an optional ``+``, the digits of ``base`` (0: ``0x`` hex, ``0`` octal, else
    decimal, as _parse_integer_fixup_radix), one optional trailing newline, nothing else.

    ValueError(EINVAL) for anything else, ValueError(ERANGE) above ``limit`` (the type's
    largest value: kstrtouint passes 2**32 - 1)."""
    s = text[1:] if text.startswith("+") else text
    if base == 0:
        if s[:1] == "0":
            base = 16 if s[1:2].lower() == "x" and s[2:3].lower() in _DIGITS and s[2:3] else 8
        else:
            base = 10
    if base == 16 and s[:2].lower() == "0x":
        s = s[2:]
    digits = _DIGITS[:base]
    end = 0
    while end < len(s) and s[end].lower() in digits:
        end += 1
    rest = s[end:]
    if end == 0 or rest not in ("", "\n"):
        raise ValueError(errno.EINVAL)
    value = digits_value(s[:end], base, limit)
    if value is None:
        raise ValueError(errno.ERANGE)
    return value


def kstrtoll(text: str, base: int = 10, bits: int = 64) -> int:
    """kstrtoll()/kstrtoint(): kstrtoull with an optional leading ``-`` (then no ``+``), within a
    signed ``bits``-bit type; ValueError(EINVAL) or ValueError(ERANGE) as the kernel's."""
    if text.startswith("-"):
        value = -kstrtoull("\0" if text[1:2] == "+" else text[1:], base)
    else:
        value = kstrtoull(text, base)
    if not -(1 << (bits - 1)) <= value < (1 << (bits - 1)):
        raise ValueError(errno.ERANGE)
    return value
