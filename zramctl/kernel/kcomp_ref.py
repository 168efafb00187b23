"""The kernel's page compressors, written to be read: lzo, lzo-rle and lz4, and an LZO1X decoder.

This is the reference that the compiled module ``zramctl.kernel._kcomp`` is tested equal to, byte for
byte.  It is slow (about a millisecond a page) and is never used to store data; it exists so that
a reader can see, one idea at a time, why a page compresses to exactly the length the kernel's
zram reports, and so that the fast code has something plain to be checked against.

Where the numbers come from (facts, not code, taken from the Linux sources and measured on a live
6.18 kernel: ``lib/lzo/`` and ``lib/lz4/`` of Linux 6.18):

* ``lzo`` is ``lib/lzo/lzo1x_compress.c``'s ``lzo1x_1_compress``: the LZO1X-1 algorithm of LZO
  2.06, with a dictionary of 2^13 entries.  liblzo2's own ``lzo1x_1`` uses 2^14, which is why
  python-lzo does not give the kernel's lengths.  The output is plain LZO1X: any LZO1X decoder,
  python-lzo's included, reads it.  The 2013 driver (``--compat 3.11``) called the same function.
* ``lzo-rle`` is the same compressor writing bitstream version 1 (``lzorle1x_1_compress``,
  the kernel's default algorithm since 5.1): runs of zero bytes get an instruction of their own.
* ``lz4`` is ``lib/lz4``'s ``LZ4_compress_fast``, a port of LZ4 1.7.3.  A page is shorter than
  64 KiB, so the 16-bit position table (2^13 entries, hash of 4 bytes) is used.

All three are pure functions of the page: no state survives from one call to the next.
"""

from __future__ import annotations

import struct

_le32 = struct.Struct("<I").unpack_from
_le64 = struct.Struct("<Q").unpack_from

# --- lzo / lzo-rle: the compressor -------------------------------------------------------------

# The dictionary maps a hash of the 4 bytes at a position to the last position that had it.  The
# kernel's has 2^13 entries of 16-bit positions (D_BITS 13).  Only one candidate is kept per hash,
# and a candidate is used only if its 4 bytes really are equal: a hash collision costs a literal.
D_BITS = 13
D_MASK = (1 << D_BITS) - 1
_HASH_MULTIPLIER = 0x1824429D

# The four kinds of match instruction LZO1X has, by how far back and how long.  M1 (2-3 bytes,
# only right after literals) is never written by LZO1X-1's compressor, only read.
M2_MAX_LEN, M3_MAX_LEN, M4_MAX_LEN = 8, 33, 9
M2_MAX_OFFSET, M3_MAX_OFFSET = 0x0800, 0x4000
M3_MARKER, M4_MARKER = 32, 16

# lzo-rle's zero run: at least 4 bytes (one dictionary word of zeros), at most 2047 + 4, so that
# run - 4 fits the instruction's 11 bits.
MIN_ZERO_RUN, MAX_ZERO_RUN = 4, 2047 + 4

# The compressor works on one kernel "chunk": the kernel splits inputs longer than 48 KiB, and a
# page never is.  Inputs of at most 20 bytes are all literals.
LZO_MAX_INPUT = 49152
_TAIL = 20


def _emit_literals(out: bytearray, state: int, src: bytes, start: int, t: int) -> None:
    """Append a run of ``t`` literal bytes ``src[start:start+t]``.

    A short run (1-3 bytes) costs no instruction byte: its length goes into the low two bits of
    the previous instruction, the byte at index ``state`` (negative, from the end).  A run of up
    to 18 bytes is one byte ``t - 3``; a longer one is a zero byte, then as many zero bytes as
    there are whole 255s in ``t - 18``, then the remainder.
    """
    if t <= 3:
        out[len(out) + state] |= t
    elif t <= 18:
        out.append(t - 3)
    else:
        tt = t - 18
        out.append(0)
        while tt > 255:
            tt -= 255
            out.append(0)
        out.append(tt)
    out += src[start : start + t]


def _match_length(src: bytes, ip: int, m_pos: int, ip_end: int) -> int:
    """How many bytes at ``ip`` equal those at ``m_pos``, the way the kernel counts on x86-64.

    The first 4 are known equal.  It then compares 8 bytes at a time and counts the equal bytes
    of the first unequal word (its trailing zero bytes after XOR).  Once the count carries the
    match up to ``ip_end`` it stops at a multiple of 8 without counting into the last word: this
    is what makes the kernel's lengths near the end of a page what they are.
    """
    m_len = 4
    v = _le64(src, ip + m_len)[0] ^ _le64(src, m_pos + m_len)[0]
    if v == 0:
        while True:
            m_len += 8
            v = _le64(src, ip + m_len)[0] ^ _le64(src, m_pos + m_len)[0]
            if ip + m_len >= ip_end:
                return m_len
            if v:
                break
    return m_len + (((v & -v).bit_length() - 1) >> 3)


def _emit_match(out: bytearray, m_len: int, m_off: int) -> None:
    """Append one match instruction: the shortest of M2, M3 or M4 that can say it.

    M2 is 2 bytes (length 3-8, distance up to 2 KiB); M3 is 3 bytes or more (distance up to
    16 KiB); M4 reaches farther, with bit 3 of its first byte as the distance's bit 14.  A length
    that does not fit the first byte continues in zero bytes (255 each) and a remainder.  The
    distance is stored minus one (M2, M3) or minus 16 KiB (M4), shifted left by 2: the low 2 bits
    are left for the next literal run's length.
    """
    if m_len <= M2_MAX_LEN and m_off <= M2_MAX_OFFSET:
        m_off -= 1
        out.append(((m_len - 1) << 5) | ((m_off & 7) << 2))
        out.append(m_off >> 3)
        return
    if m_off <= M3_MAX_OFFSET:
        m_off -= 1
        marker, max_len = M3_MARKER, M3_MAX_LEN
    else:
        m_off -= 0x4000
        marker, max_len = M4_MARKER | ((m_off >> 11) & 8), M4_MAX_LEN
    if m_len <= max_len:
        out.append(marker | (m_len - 2))
    else:
        m_len -= max_len
        out.append(marker)
        while m_len > 255:
            m_len -= 255
            out.append(0)
        out.append(m_len)
    out.append((m_off << 2) & 0xFF)
    out.append((m_off >> 6) & 0xFF)


def lzo1x_1_compress(src: bytes, rle: bool = False) -> bytes:
    """The kernel's ``lzo1x_1_compress`` (``rle=False``) or ``lzorle1x_1_compress`` (``rle=True``).

    lzo-rle announces itself with the two bytes 0x11 0x01 (bitstream version 1).  Its one other
    difference: where the 4 bytes at a position are all zero it does not hash them; it measures
    the zero run (up to 2051 bytes, and never past the end bound) and writes it as one 4-byte
    instruction, ``((run-4) << 21) | 0xfffc18 | ((run-4) & 7)`` little endian, which an M4 match
    could never be.  The next literal run's short length goes into that instruction's second byte.
    """
    n = len(src)
    if n > LZO_MAX_INPUT:
        raise ValueError(f"input of {n} bytes: at most {LZO_MAX_INPUT}")
    out = bytearray(b"\x11\x01" if rle else b"")
    data_start = len(out)
    # Which byte (from the end) takes the next short literal run: the previous match's first
    # distance byte (2 back), or the second byte of a zero-run instruction (3 back).
    state = -2
    if n > _TAIL:
        d = [0] * (1 << D_BITS)
        ip_end = n - _TAIL
        ii = 0  # start of the pending literals
        ip = 4
        advance = True
        while True:
            # The search skips ahead faster the longer it has found nothing: one more byte for
            # every 32 literals pending.  Right after a match or run it looks at the next byte.
            if advance:
                ip += 1 + ((ip - ii) >> 5)
            advance = True
            if ip >= ip_end:
                break
            dv = _le32(src, ip)[0]
            run = 0
            if dv == 0 and rle:
                limit = min(ip_end, ip + MAX_ZERO_RUN + 1)
                ir = ip + 4
                while ir < limit and src[ir] == 0:
                    ir += 1
                run = min(ir - ip, MAX_ZERO_RUN)
            else:
                h = ((dv * _HASH_MULTIPLIER) & 0xFFFFFFFF) >> (32 - D_BITS) & D_MASK
                m_pos = d[h]
                d[h] = ip
                if dv != _le32(src, m_pos)[0]:
                    continue
            if ip > ii:
                _emit_literals(out, state, src, ii, ip - ii)
            if run:
                r = run - MIN_ZERO_RUN
                out += struct.pack("<I", ((r << 21) | 0xFFFC18 | (r & 7)) & 0xFFFFFFFF)
                ip += run
                state = -3
            else:
                m_len = _match_length(src, ip, m_pos, ip_end)
                _emit_match(out, m_len, ip - m_pos)
                ip += m_len
                state = -2
            ii = ip
            advance = False
        t = n - ii
    else:
        t = n
    # The tail that no match covered.  If it is the whole output (nothing compressed), a short
    # run is announced by one first byte 17 + t, which a decoder recognises by being above 17.
    if t > 0:
        if len(out) == data_start and t <= 238:
            out.append(17 + t)
            out += src[n - t :]
        else:
            _emit_literals(out, state, src, n - t, t)
    # End of stream: an M4 "match" of length 3 at distance 16 KiB, i.e. no distance at all.
    out += b"\x11\x00\x00"
    return bytes(out)


def lzorle1x_1_compress(src: bytes) -> bytes:
    """The kernel's ``lzo-rle``."""
    return lzo1x_1_compress(src, rle=True)


# --- lzo / lzo-rle: the decoder ----------------------------------------------------------------


class LzoError(ValueError):
    """A malformed LZO1X stream."""


def _ext_length(src: bytes, ip: int, base: int) -> tuple[int, int]:
    """A length continued in zero bytes (255 each) and a final non-zero byte: (next ip, length)."""
    zeros = 0
    while ip < len(src) and src[ip] == 0:
        zeros += 1
        ip += 1
    if ip >= len(src):
        raise LzoError("input overrun: the stream ends inside an instruction")
    return ip + 1, base + zeros * 255 + src[ip]


def _need(src: bytes, ip: int, k: int) -> None:
    if len(src) - ip < k:
        raise LzoError("input overrun: the stream ends inside an instruction")


def lzo_decompress(src: bytes, max_out: int) -> bytes:
    """Decode an LZO1X stream of version 0 (``lzo``) or 1 (``lzo-rle``), at most ``max_out`` bytes.

    The decoder keeps a ``state``: how many literals the previous instruction carried (0 = it
    was a match with none, or the stream's start; 1-3; 4 = it was a literal run).  The meaning of
    an instruction byte below 16 depends on it: after a match without literals it is a literal
    run; after 1-3 literals it is a 2-byte match close by (M1); after a literal run, a 3-byte
    match 2 KiB farther.  Every length and distance is checked against the input, the output
    written so far and ``max_out`` before a byte is copied: malformed input raises
    :class:`LzoError`, never reads outside the input, and never yields wrong bytes silently.
    The end is 0x11 0x00 0x00 (low two bits of the last byte ignored, as the kernel does) and
    must be the last bytes of the input.
    """
    out = bytearray()
    ip = 0
    version = 0
    if len(src) >= 5 and src[0] == 17:
        version, ip = src[1], 2
    _need(src, ip, 1)
    state = 0

    def copy_literals(ip: int, t: int) -> int:
        _need(src, ip, t)
        if len(out) + t > max_out:
            raise LzoError("output overrun: the stream decodes to more than the limit")
        out.extend(src[ip : ip + t])
        return ip + t

    if src[ip] > 17:
        t = src[ip] - 17
        ip = copy_literals(ip + 1, t)
        state = min(t, 4)
    while True:
        _need(src, ip, 1)
        t = src[ip]
        ip += 1
        if t < 16:
            if state == 0:
                if t == 0:
                    ip, t = _ext_length(src, ip, 15)
                ip = copy_literals(ip, t + 3)
                state = 4
                continue
            _need(src, ip, 1)
            if state != 4:
                dist, m_len = 1 + (t >> 2) + (src[ip] << 2), 2
            else:
                dist, m_len = 1 + 0x800 + (t >> 2) + (src[ip] << 2), 3
            ip += 1
            nxt = t & 3
        elif t >= 64:
            _need(src, ip, 1)
            dist = 1 + ((t >> 2) & 7) + (src[ip] << 3)
            ip += 1
            m_len = (t >> 5) + 1
            nxt = t & 3
        elif t >= 32:
            m_len = (t & 31) + 2
            if m_len == 2:
                ip, m_len = _ext_length(src, ip, 31 + 2)
            _need(src, ip, 2)
            v = src[ip] | src[ip + 1] << 8
            ip += 2
            dist, nxt = 1 + (v >> 2), v & 3
        else:
            _need(src, ip, 2)
            v = src[ip] | src[ip + 1] << 8
            if version and (t & 0xF8) == 0x18 and (v & 0xFFFC) == 0xFFFC:
                # lzo-rle's zero run: 11 bits of length over the first and fourth bytes.
                _need(src, ip, 3)
                run = ((t & 7) | src[ip + 2] << 3) + MIN_ZERO_RUN
                if len(out) + run > max_out:
                    raise LzoError("output overrun: the stream decodes to more than the limit")
                out.extend(bytes(run))
                ip += 3
                m_len, dist, nxt = 0, 0, v & 3
            else:
                high = (t & 8) << 11
                m_len = (t & 7) + 2
                if m_len == 2:
                    ip, m_len = _ext_length(src, ip, 7 + 2)
                    _need(src, ip, 2)
                    v = src[ip] | src[ip + 1] << 8
                ip += 2
                dist, nxt = high + (v >> 2), v & 3
                if dist == 0:
                    if m_len != 3:
                        raise LzoError("malformed end marker")
                    if ip != len(src):
                        raise LzoError("trailing bytes after the end marker")
                    return bytes(out)
                dist += 0x4000
        if m_len:
            if dist > len(out):
                raise LzoError("lookbehind overrun: a match reaches before the start of the output")
            if len(out) + m_len > max_out:
                raise LzoError("output overrun: the stream decodes to more than the limit")
            start = len(out) - dist
            for k in range(m_len):  # byte by byte: a match may overlap what it writes
                out.append(out[start + k])
        state = nxt
        ip = copy_literals(ip, nxt)


# --- lz4 ---------------------------------------------------------------------------------------

# LZ4 1.7.3 for inputs under 64 KiB: a table of 2^13 16-bit positions, indexed by a
# multiplicative hash of the 4 bytes at a position.
LZ4_HASH_LOG = 13
LZ4_MAX_INPUT = 65535
_LZ4_PRIME = 2654435761
# No match may start within the last 12 bytes (MFLIMIT) and none may extend into the last 5
# (LASTLITERALS): the block always ends with literals.  An input under 13 bytes is all literals.
_MFLIMIT, _LASTLITERALS = 12, 5


def _lz4_length(out: bytearray, n: int) -> None:
    """The part of a length beyond the token's 15: 255s, then the remainder."""
    while n >= 255:
        out.append(255)
        n -= 255
    out.append(n)


def lz4_compress(src: bytes, acceleration: int = 1) -> bytes:
    """The kernel's ``LZ4_compress_fast`` (LZ4 1.7.3) on ``src``, acceleration as given.

    A sequence is a token (high nibble: literal count, low nibble: match length - 4, 15 meaning
    "continued in the following bytes"), the literals, a 2-byte distance and the match length's
    continuation.  The search for a match advances one byte at a time for the first 64 attempts
    (times the acceleration) and then ever faster.  A match found is first extended backwards
    over equal bytes, then forwards to ``matchlimit``.  After a match the position 2 bytes back
    is entered in the table, and the position right after it is tried at once: a hit there starts
    a new sequence with no literals.
    """
    n = len(src)
    if n > LZ4_MAX_INPUT:
        raise ValueError(f"input of {n} bytes: at most {LZ4_MAX_INPUT}")
    acceleration = max(1, min(acceleration, 65537))
    out = bytearray()

    def h(p: int) -> int:
        return ((_le32(src, p)[0] * _LZ4_PRIME) & 0xFFFFFFFF) >> (32 - LZ4_HASH_LOG)

    anchor = 0  # start of the pending literals
    if n >= _MFLIMIT + 1:
        mflimit, matchlimit = n - _MFLIMIT, n - _LASTLITERALS
        tab = [0] * (1 << LZ4_HASH_LOG)
        tab[h(0)] = 0
        ip = 1
        fh = h(ip)
        done = False
        while not done:
            fwd, step, attempts = ip, 1, acceleration << 6
            while True:
                hh = fh
                ip = fwd
                fwd += step
                step = attempts >> 6
                attempts += 1
                if fwd > mflimit:
                    done = True
                    break
                match = tab[hh]
                fh = h(fwd)
                tab[hh] = ip
                if _le32(src, match)[0] == _le32(src, ip)[0]:
                    break
            if done:
                break
            while ip > anchor and match > 0 and src[ip - 1] == src[match - 1]:
                ip -= 1
                match -= 1
            lit = ip - anchor
            tok = len(out)
            out.append(0)
            if lit >= 15:
                out[tok] = 0xF0
                _lz4_length(out, lit - 15)
            else:
                out[tok] = lit << 4
            out += src[anchor:ip]
            while True:
                out += struct.pack("<H", ip - match)
                a, b = ip + 4, match + 4
                while a < matchlimit and src[a] == src[b]:
                    a += 1
                    b += 1
                mc = a - (ip + 4)
                ip = a
                if mc >= 15:
                    out[tok] += 15
                    _lz4_length(out, mc - 15)
                else:
                    out[tok] += mc
                anchor = ip
                if ip > mflimit:
                    done = True
                    break
                tab[h(ip - 2)] = ip - 2
                hh = h(ip)
                match = tab[hh]
                tab[hh] = ip
                if match + 65535 >= ip and _le32(src, match)[0] == _le32(src, ip)[0]:
                    tok = len(out)
                    out.append(0)
                    continue
                ip += 1
                fh = h(ip)
                break
    last = n - anchor
    if last >= 15:
        out.append(0xF0)
        _lz4_length(out, last - 15)
    else:
        out.append(last << 4)
    out += src[anchor:]
    return bytes(out)


def compress(algorithm: str, page: bytes) -> bytes:
    """The kernel's compressed bytes of ``page`` for ``lzo``, ``lzo-rle`` or ``lz4``."""
    if algorithm == "lzo":
        return lzo1x_1_compress(page)
    if algorithm == "lzo-rle":
        return lzo1x_1_compress(page, rle=True)
    if algorithm == "lz4":
        return lz4_compress(page)
    raise ValueError(f"no reference for {algorithm!r} (lzo-rle, lzo, lz4)")
