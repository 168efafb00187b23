"""units.py against util-linux's own vectors and the C algorithms restated independently.

Vectors marked "C" were produced by util-linux lib/strutils.c itself (HEAD, compiled into a
throw-away harness) or by the installed zramctl 2.38.1; the hypothesis tests compare with
straightforward restatements of the C arithmetic.
"""

from __future__ import annotations

import errno

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zramctl.cli.units import U64_MAX, SizeError, locale_point, parse_size, parse_u64, size_to_human_string

# --- size_to_human_string --------------------------------------------------------------------

HUMAN_VECTORS = {
    # the facts' C harness
    0: "0B", 1: "1B", 1023: "1023B", 1024: "1K", 1075: "1K", 1076: "1.1K", 1536: "1.5K", 2047: "2K",
    6815744: "6.5M", 67108864: "64M", 1000000: "976.6K", 1048064: "1023.5K", 1048575: "1024K",
    4194304000: "3.9G", U64_MAX: "16E",
    # tests/expected/misc/strtosize, 3rd column
    123: "123B", 1000: "1000B", 10**9: "953.7M", 10**12: "931.3G", 10**15: "909.5T", 10**18: "888.2P",
    0xFF00: "63.8K", 0x80000000: "2G", 1 << 60: "1E",
    # zramctl 2.38.1 with data stored
    1572864: "1.5M", 1982464: "1.9M", 4096: "4K",
}


@pytest.mark.parametrize("n,expected", sorted(HUMAN_VECTORS.items()))
def test_size_to_human_string_vectors(n: int, expected: str) -> None:
    assert size_to_human_string(n) == expected


def test_size_to_human_string_no_unit_promotion() -> None:
    # Rounding carries into the integer part but never into the next unit.
    assert size_to_human_string((1 << 20) - 1) == "1024K"
    assert size_to_human_string((1 << 30) - 1) == "1024M"


def test_size_to_human_string_decimal_point() -> None:
    assert size_to_human_string(6815744, ",") == "6,5M"
    assert size_to_human_string(67108864, ",") == "64M"


def test_locale_point(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("locale.localeconv", lambda: {"decimal_point": ","})
    assert locale_point() == ","
    monkeypatch.setattr("locale.localeconv", lambda: {"decimal_point": ""})
    assert locale_point() == "."  # as size_to_human_string does when localeconv() has none


def test_size_to_human_string_range() -> None:
    with pytest.raises(ValueError):
        size_to_human_string(-1)
    with pytest.raises(ValueError):
        size_to_human_string(1 << 64)


def reference_human(n: int) -> str:
    """The C algorithm restated with bit_length and plain integer arithmetic."""
    exp = 0 if n < 1024 else min(60, (n.bit_length() - 1) // 10 * 10)
    unit = 1 << exp
    whole, rest = divmod(n, unit)
    if rest:
        # C computes thousandths via (rest/1024)*1000/(unit/1024) when rest*1000 would overflow.
        if rest < U64_MAX // 1000:
            thousandths = rest * 1000 // unit
        else:
            thousandths = (rest // 1024) * 1000 // (unit // 1024)
        tenths = (thousandths + 50) // 100
        if tenths == 10:
            whole, tenths = whole + 1, 0
    else:
        tenths = 0
    letter = "BKMGTPE"[exp // 10]
    return f"{whole}.{tenths}{letter}" if tenths else f"{whole}{letter}"


@given(st.integers(min_value=0, max_value=U64_MAX))
def test_size_to_human_string_matches_reference(n: int) -> None:
    assert size_to_human_string(n) == reference_human(n)


@given(st.integers(min_value=0, max_value=63), st.integers(min_value=-3, max_value=3))
def test_size_to_human_string_near_powers(k: int, d: int) -> None:
    n = min(max((1 << k) + d, 0), U64_MAX)
    assert size_to_human_string(n) == reference_human(n)


# --- parse_size -----------------------------------------------------------------------------

SIZE_VECTORS = {
    # the facts (1.4) and the upstream strtosize test
    "0": 0, "1": 1, "123": 123, "18446744073709551615": U64_MAX, " 1": 1, "+5": 5, " +5K": 5120,
    "0x10": 16, "0x0a": 10, "0xff00": 65280, "0x80000000": 2147483648, "010": 8,
    "1K": 1024, "1KiB": 1024, "1Kib": 1024, "1k": 1024, "1M": 1 << 20, "1MiB": 1 << 20, "1G": 1 << 30,
    "1T": 1 << 40, "1P": 1 << 50, "1E": 1 << 60, "1EiB": 1 << 60, "1KB": 1000, "1kb": 1000, "1MB": 10**6,
    "1GB": 10**9, "1TB": 10**12, "1PB": 10**15, "1EB": 10**18, "1024M": 1 << 30,
    "1.5M": 1572864, "0.5MB": 500000, "0.5MiB": 524288, "1.25G": 1342177279, "0xffK": 261120,
    # C: each fraction digit d at 10**-k adds base**p // (10**k // d), so digits that do not divide
    # their power of ten round *up*: 0.3K is 341 (not 307), 1.7M is 2 MiB, 0.9K is 1 KiB.
    "0.3K": 341, "0.33K": 372, "0.9K": 1024, "1.7M": 2097152, "1.05K": 1075,
    # C: a "." with nothing after it before the suffix is accepted; zero fractions repeat.
    "1.K": 1024, "1.0K": 1024, "1..5K": 1536, "1.0.5K": 1075,
    "1.00000000000000000000000000001K": 1024,
    # C: Z/Y overflow, but 0 scaled by anything is 0, and the fraction's base stops at 2**60.
    "0Z": 0, "0Y": 0, "0.5Z": 1 << 59,
    # C: the final sum wraps modulo 2**64 (only the multiplication is checked).
    "18.5EB": 53255926290448384,
}


@pytest.mark.parametrize("text,expected", sorted(SIZE_VECTORS.items()))
def test_parse_size_vectors(text: str, expected: int) -> None:
    assert parse_size(text) == expected


SIZE_EINVAL = [
    "", " ", "1 ", "-1", " -1", "-0", "08", "1.5", "1.", "1.0", "0.0", "1.00", "1B", "1iB", "1MIB", "1KiBB",
    "1Ki", "1x", "abc", "K", ".5K", "0x", "0xK", "1.5.5K", "+-5", "+ 5", "1\n", "1.5iB", "1Kb ", "1 K",
    "１K", "1Ｋ", "1.\u0665K", "\u00a01",
]


@pytest.mark.parametrize("text", SIZE_EINVAL)
def test_parse_size_invalid(text: str) -> None:
    with pytest.raises(SizeError) as info:
        parse_size(text)
    assert info.value.errno == errno.EINVAL
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "text", ["1Z", "1Y", "1ZiB", "1ZB", "16E", "18446744073709551616", "99999999999999999999999K", "17EiB",
             "1.99999999999999999999999K", "20EB"],
)
def test_parse_size_out_of_range(text: str) -> None:
    with pytest.raises(SizeError) as info:
        parse_size(text)
    assert info.value.errno == errno.ERANGE


def test_parse_size_locale_point() -> None:
    assert parse_size("1,5M", point=",") == 1572864
    with pytest.raises(SizeError):
        parse_size("1.5M", point=",")


POWERS = [("K", 1), ("M", 2), ("G", 3), ("T", 4), ("P", 5), ("E", 6), ("Z", 7), ("Y", 8)]


@given(st.integers(min_value=0, max_value=U64_MAX))
def test_parse_size_plain_numbers_round_trip(n: int) -> None:
    assert parse_size(str(n)) == n
    assert parse_size(hex(n)) == n
    assert parse_size(f"0{n:o}") == n
    assert parse_size(f" \t+{n}") == n


@given(st.integers(min_value=0, max_value=U64_MAX), st.sampled_from(POWERS),
       st.sampled_from(["", "iB", "ib", "B", "b"]), st.booleans())
def test_parse_size_suffixes(n: int, power: tuple[str, int], tail: str, lower: bool) -> None:
    letter, p = power
    base = 1000 if tail in ("B", "b") else 1024
    text = f"{n}{letter.lower() if lower else letter}{tail}"
    if n * base**p > U64_MAX:
        with pytest.raises(SizeError) as info:
            parse_size(text)
        assert info.value.errno == errno.ERANGE
    else:
        assert parse_size(text) == n * base**p


def reference_fraction(whole: int, digits: str, base: int, p: int) -> int:
    """ul_parse_size's fraction arithmetic restated step by step, quirks included.

    The fraction's digits after its leading zeros are one number; frac_div grows
    ``while (frac_div < frac)``, which stops one step early for 1 followed by zeros
    (util-linux#4663: 0.10K is 1024), then once per leading zero; each digit d
    adds unit // (seg_div // d), walking from the last digit.
    """
    unit = base**p
    total = whole * unit
    stripped = digits.lstrip("0")
    if not stripped:
        return total & U64_MAX
    frac, zeros = int(stripped), len(digits) - len(stripped)
    frac_div = 10
    while frac_div < frac:
        if frac_div <= U64_MAX // 10:
            frac_div *= 10
        else:
            frac //= 10
    for _ in range(zeros):
        if frac_div <= U64_MAX // 10:
            frac_div *= 10
        else:
            frac //= 10
    poz = 1
    while True:
        seg = frac % 10
        seg_div = frac_div // poz
        frac //= 10
        poz *= 10
        if seg and seg_div // seg:
            total += unit // (seg_div // seg)
        if not frac:
            return total & U64_MAX


@given(st.integers(min_value=0, max_value=10**6), st.text("0123456789", min_size=1, max_size=18),
       st.sampled_from(POWERS[:6]), st.sampled_from(["", "iB", "B"]))
def test_parse_size_fractions(whole: int, digits: str, power: tuple[str, int], tail: str) -> None:
    letter, p = power
    base = 1000 if tail == "B" else 1024
    text = f"{whole}.{digits}{letter}{tail}"
    if whole * base**p > U64_MAX:
        with pytest.raises(SizeError):
            parse_size(text)
    else:
        assert parse_size(text) == reference_fraction(whole, digits, base, p)


@given(st.text(alphabet="0123456789.KMGiBbx+- \t", max_size=10))
def test_parse_size_total(text: str) -> None:
    """Any input either parses to a u64 or raises SizeError with EINVAL/ERANGE; nothing else."""
    try:
        value = parse_size(text)
    except SizeError as e:
        assert e.errno in (errno.EINVAL, errno.ERANGE)
    else:
        assert 0 <= value <= U64_MAX


# --- parse_u64 (-t/--streams) --------------------------------------------------------------

@pytest.mark.parametrize(
    "text,expected",
    [("0", 0), ("4", 4), ("+4", 4), (" 5", 5), ("007", 7), ("-0", 0), ("18446744073709551615", U64_MAX)],
)
def test_parse_u64_valid(text: str, expected: int) -> None:
    assert parse_u64(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "5 ", "0x10", "1K", "-", "+", "1.5", " ", "-abc", "٣"])
def test_parse_u64_invalid(text: str) -> None:
    # zramctl: "failed to parse streams: 'abc'" with no errno text
    with pytest.raises(SizeError) as info:
        parse_u64(text)
    assert info.value.errno == errno.EINVAL


@pytest.mark.parametrize("text", ["-1", " -1", "-5abc", "18446744073709551616", "99999999999999999999",
                                  "99999999999999999999abc", "-99999999999999999999"])
def test_parse_u64_out_of_range(text: str) -> None:
    # zramctl: "failed to parse streams: '-1': Numerical result out of range"
    with pytest.raises(SizeError) as info:
        parse_u64(text)
    assert info.value.errno == errno.ERANGE


@given(st.integers(min_value=0, max_value=U64_MAX))
def test_parse_u64_round_trip(n: int) -> None:
    assert parse_u64(str(n)) == n


def test_size_error_carries_text() -> None:
    with pytest.raises(SizeError) as info:
        parse_size("1.5")
    assert info.value.text == "1.5"


HUGE = "9" * 5000


@pytest.mark.parametrize(
    "text", [HUGE, HUGE + "K", "1." + HUGE + "K", "0x" + "f" * 5000, "0" + "7" * 5000, " +" + HUGE + "MiB"]
)
def test_parse_size_numbers_of_any_length_are_out_of_range(text: str) -> None:
    with pytest.raises(SizeError) as info:
        parse_size(text)
    assert info.value.errno == errno.ERANGE


def test_parse_size_leading_zeros_of_any_length() -> None:
    assert parse_size("0" * 5000 + "1K") == 1024  # octal, as strtoumax reads it
    assert parse_size("0x" + "0" * 5000 + "10") == 16


@pytest.mark.parametrize("text", [HUGE, "-" + HUGE, HUGE + "x", "-" + HUGE + "x"])
def test_parse_u64_numbers_of_any_length_are_out_of_range(text: str) -> None:
    with pytest.raises(SizeError) as info:
        parse_u64(text)
    assert info.value.errno == errno.ERANGE


def test_parse_u64_leading_zeros_of_any_length() -> None:
    assert parse_u64("0" * 5000 + "3") == 3
    assert parse_u64("-" + "0" * 5000) == 0
