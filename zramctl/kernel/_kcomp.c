/*
 * _kcomp: the Linux kernel's own page compressors, byte for byte, and a checked LZO1X decoder.
 *
 * Written for zramctl from the format and the kernel's parameters (see zramctl/kernel/kcomp_ref.py, the
 * readable reference this file is tested equal to, page by page).  No code is taken from the
 * kernel, liblzo2 or liblz4.
 *
 *   lzo1x_1_compress(page)          the kernel's lzo: LZO1X-1 with a 2^13-entry dictionary
 *   lzorle1x_1_compress(page)       the kernel's lzo-rle: the same, bitstream version 1
 *   lzo_decompress(data, max_out)   LZO1X, version 0 or 1; every read and write bounds-checked
 *   lz4_compress(page, acceleration=1)
 *                                   LZ4 1.7.3's LZ4_compress_fast for inputs under 64 KiB
 *                                   (16-bit table of 2^13 entries, 4-byte hash)
 *   lz4_decompress(data, max_out)   an LZ4 block; every read and write bounds-checked
 *   _DECODERS                       a capsule: the two decoders for other compiled modules
 *                                   (_zsmalloc's read path), by compress_pages' kind
 *
 *   StreamJob(kind, data, page_size, threads, batch, slots, acceleration=1)
 *                                   compression streams: every page of data compressed by native
 *                                   threads that never take the GIL, taken in page order
 *
 * Each call copies nothing: it holds the caller's buffer (Py_buffer) and releases the GIL for the
 * work on it, so pages compress in parallel on several threads.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- little-endian loads, unaligned-safe ------------------------------------------------ */

static inline uint32_t
le32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap32(v);
#endif
    return v;
}

static inline uint64_t
le64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

/* ---- LZO1X-1 compressor (kernel lib/lzo parameters) ------------------------------------- */

#define LZO_D_BITS 13
#define LZO_D_SIZE (1u << LZO_D_BITS)
#define LZO_MAX_INPUT 49152u /* one kernel chunk: the kernel splits longer inputs */
#define M2_MAX_LEN 8
#define M3_MAX_LEN 33
#define M4_MAX_LEN 9
#define M2_MAX_OFFSET 0x0800
#define M3_MAX_OFFSET 0x4000
#define M3_MARKER 32
#define M4_MARKER 16
#define MIN_ZERO_RUN 4
#define MAX_ZERO_RUN (2047 + 4)

/* Worst case: every byte a literal, plus run-length bytes, header and end marker. */
static size_t
lzo_bound(size_t n)
{
    return n + n / 16 + 64 + 3 + 2;
}

/* Emit a literal run of t bytes from src.  A run of at most 3 bytes goes into the low two bits
 * of the byte `state_back` bytes before the end of the output (the previous instruction). */
static uint8_t *
lzo_literals(uint8_t *op, size_t state_back, const uint8_t *src, size_t t)
{
    if (t <= 3) {
        op[-(ptrdiff_t)state_back] |= (uint8_t)t;
    } else if (t <= 18) {
        *op++ = (uint8_t)(t - 3);
    } else {
        size_t tt = t - 18;
        *op++ = 0;
        while (tt > 255) {
            tt -= 255;
            *op++ = 0;
        }
        *op++ = (uint8_t)tt;
    }
    memcpy(op, src, t);
    return op + t;
}

/* The same, for a run inside the input, where 16 more bytes can be read: a short run is
 * copied 16 bytes at once (the output has room; the excess is overwritten next). */
static inline uint8_t *
lzo_literals_inner(uint8_t *op, size_t state_back, const uint8_t *src, size_t t)
{
    if (t <= 3) {
        op[-(ptrdiff_t)state_back] |= (uint8_t)t;
        memcpy(op, src, 4);
        return op + t;
    }
    if (t <= 16) {
        *op++ = (uint8_t)(t - 3);
        memcpy(op, src, 8);
        memcpy(op + 8, src + 8, 8);
        return op + t;
    }
    return lzo_literals(op, state_back, src, t);
}

/* Compress n <= LZO_MAX_INPUT bytes into out (lzo_bound(n) bytes); returns the length.
 * Always inlined into one function per version, so that lzo's loop has no lzo-rle test. */
static inline __attribute__((always_inline)) size_t
lzo_compress_core(const uint8_t *in, size_t n, uint8_t *out, const int rle, uint16_t *dict)
{
    uint8_t *op = out;
    size_t state_back = 2;
    size_t t;
    if (rle) {
        *op++ = 17;
        *op++ = 1;
    }
    uint8_t *const data_start = op;

    if (n > 20) {
        const size_t ip_end = n - 20;
        size_t ii = 0, ip = 4;
        size_t m_pos = 0, run = 0;
        uint32_t dv;
        memset(dict, 0, LZO_D_SIZE * sizeof *dict);
        /* As the kernel's loop: "literal" steps on past a position with no match, "next"
         * looks at the position right after a match or a run. */
        for (;;) {
        literal:
            ip += 1 + ((ip - ii) >> 5);
        next:
            if (ip >= ip_end)
                break;
            dv = le32(in + ip);
            if (dv == 0 && rle) {
                size_t limit = ip + MAX_ZERO_RUN + 1;
                if (limit > ip_end)
                    limit = ip_end;
                size_t ir = ip + 4;
                while (ir + 8 <= limit && le64(in + ir) == 0)
                    ir += 8;
                while (ir < limit && in[ir] == 0)
                    ir++;
                run = ir - ip;
                if (run > MAX_ZERO_RUN)
                    run = MAX_ZERO_RUN;
            } else {
                uint32_t h = ((uint32_t)(dv * 0x1824429du) >> (32 - LZO_D_BITS)) & (LZO_D_SIZE - 1);
                m_pos = dict[h];
                dict[h] = (uint16_t)ip;
                if (dv != le32(in + m_pos))
                    goto literal;
            }
            t = ip - ii;
            if (t)
                op = lzo_literals_inner(op, state_back, in + ii, t);
            if (run) {
                uint32_t r = (uint32_t)(run - MIN_ZERO_RUN);
                uint32_t w = (r << 21) | 0xfffc18u | (r & 7);
                op[0] = (uint8_t)w;
                op[1] = (uint8_t)(w >> 8);
                op[2] = (uint8_t)(w >> 16);
                op[3] = (uint8_t)(w >> 24);
                op += 4;
                ip += run;
                state_back = 3;
                ii = ip;
                run = 0;
                goto next;
            }
            size_t m_len = 4;
            uint64_t v = le64(in + ip + m_len) ^ le64(in + m_pos + m_len);
            int capped = 0;
            if (v == 0) {
                for (;;) {
                    m_len += 8;
                    v = le64(in + ip + m_len) ^ le64(in + m_pos + m_len);
                    if (ip + m_len >= ip_end) {
                        capped = 1;
                        break;
                    }
                    if (v)
                        break;
                }
            }
            if (!capped)
                m_len += (size_t)__builtin_ctzll(v) >> 3;
            size_t m_off = ip - m_pos;
            ip += m_len;
            if (m_len <= M2_MAX_LEN && m_off <= M2_MAX_OFFSET) {
                m_off -= 1;
                *op++ = (uint8_t)(((m_len - 1) << 5) | ((m_off & 7) << 2));
                *op++ = (uint8_t)(m_off >> 3);
            } else {
                uint8_t marker;
                size_t maxl;
                if (m_off <= M3_MAX_OFFSET) {
                    m_off -= 1;
                    marker = M3_MARKER;
                    maxl = M3_MAX_LEN;
                } else {
                    m_off -= 0x4000;
                    marker = (uint8_t)(M4_MARKER | ((m_off >> 11) & 8));
                    maxl = M4_MAX_LEN;
                }
                if (m_len <= maxl) {
                    *op++ = (uint8_t)(marker | (m_len - 2));
                } else {
                    m_len -= maxl;
                    *op++ = marker;
                    while (m_len > 255) {
                        m_len -= 255;
                        *op++ = 0;
                    }
                    *op++ = (uint8_t)m_len;
                }
                *op++ = (uint8_t)(m_off << 2);
                *op++ = (uint8_t)(m_off >> 6);
            }
            state_back = 2;
            ii = ip;
            goto next;
        }
        t = n - ii;
    } else {
        t = n;
    }
    if (t > 0) {
        const uint8_t *ii = in + n - t;
        if (op == data_start && t <= 238) {
            *op++ = (uint8_t)(17 + t);
            memcpy(op, ii, t);
            op += t;
        } else {
            op = lzo_literals(op, state_back, ii, t);
        }
    }
    *op++ = 17;
    *op++ = 0;
    *op++ = 0;
    return (size_t)(op - out);
}

static size_t
lzo_compress_v0(const uint8_t *in, size_t n, uint8_t *out, uint16_t *dict)
{
    return lzo_compress_core(in, n, out, 0, dict);
}

static size_t
lzo_compress_v1(const uint8_t *in, size_t n, uint8_t *out, uint16_t *dict)
{
    return lzo_compress_core(in, n, out, 1, dict);
}

/* ---- LZO1X decoder, versions 0 and 1, every bound checked ------------------------------- */

enum {
    DEC_OK = 0,
    DEC_INPUT_OVERRUN,
    DEC_OUTPUT_OVERRUN,
    DEC_LOOKBEHIND,
    DEC_TRAILING,
    DEC_BAD_END,
};

static const char *const dec_errors[] = {
    "ok",
    "input overrun: the stream ends inside an instruction",
    "output overrun: the stream decodes to more than the limit",
    "lookbehind overrun: a match reaches before the start of the output",
    "trailing bytes after the end marker",
    "malformed end marker",
};

/* Read a length that continues in zero bytes (255 each) and a final non-zero byte. */
static int
lzo_ext_len(const uint8_t *in, size_t in_len, size_t *ip, size_t base, size_t *len)
{
    size_t p = *ip, zeros = 0;
    while (p < in_len && in[p] == 0) {
        p++;
        zeros++;
    }
    if (p >= in_len)
        return DEC_INPUT_OVERRUN;
    *len = base + zeros * 255 + in[p];
    *ip = p + 1;
    return DEC_OK;
}

#define NEED_IN(k)                        \
    do {                                  \
        if (in_len - ip < (size_t)(k))    \
            return DEC_INPUT_OVERRUN;     \
    } while (0)
#define NEED_OUT(k)                       \
    do {                                  \
        if (out_cap - op < (size_t)(k))   \
            return DEC_OUTPUT_OVERRUN;    \
    } while (0)

static int
lzo_decode(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_cap, size_t *out_len)
{
    size_t ip = 0, op = 0, t, m_len, dist;
    unsigned version = 0, state = 0, next;
    int rc;

    if (in_len >= 5 && in[0] == 17) {
        version = in[1];
        ip = 2;
    }
    NEED_IN(1);
    if (in[ip] > 17) {
        t = (size_t)in[ip++] - 17;
        NEED_IN(t);
        NEED_OUT(t);
        memcpy(out + op, in + ip, t);
        ip += t;
        op += t;
        state = t < 4 ? (unsigned)t : 4;
    }
    for (;;) {
        NEED_IN(1);
        t = in[ip++];
        if (t < 16) {
            if (state == 0) {
                if (t == 0 && (rc = lzo_ext_len(in, in_len, &ip, 15, &t)) != DEC_OK)
                    return rc;
                t += 3;
                NEED_IN(t);
                NEED_OUT(t);
                memcpy(out + op, in + ip, t);
                ip += t;
                op += t;
                state = 4;
                continue;
            }
            NEED_IN(1);
            if (state != 4) {
                dist = 1 + (t >> 2) + ((size_t)in[ip] << 2);
                m_len = 2;
            } else {
                dist = 1 + 0x800 + (t >> 2) + ((size_t)in[ip] << 2);
                m_len = 3;
            }
            ip++;
            next = t & 3;
        } else if (t >= 64) {
            NEED_IN(1);
            dist = 1 + ((t >> 2) & 7) + ((size_t)in[ip] << 3);
            ip++;
            m_len = (t >> 5) + 1;
            next = t & 3;
        } else if (t >= 32) {
            m_len = (t & 31) + 2;
            if (m_len == 2 && (rc = lzo_ext_len(in, in_len, &ip, 31 + 2, &m_len)) != DEC_OK)
                return rc;
            NEED_IN(2);
            unsigned v = in[ip] | (unsigned)in[ip + 1] << 8;
            ip += 2;
            dist = 1 + (v >> 2);
            next = v & 3;
        } else {
            NEED_IN(2);
            unsigned v = in[ip] | (unsigned)in[ip + 1] << 8;
            if (version && (t & 0xf8) == 0x18 && (v & 0xfffc) == 0xfffc) {
                /* lzo-rle: a run of 4..2051 zero bytes. */
                NEED_IN(3);
                size_t run = ((t & 7) | ((size_t)in[ip + 2] << 3)) + MIN_ZERO_RUN;
                NEED_OUT(run);
                memset(out + op, 0, run);
                op += run;
                ip += 3;
                m_len = 0;
                dist = 0;
                next = v & 3;
            } else {
                size_t high = (t & 8) << 11;
                m_len = (t & 7) + 2;
                if (m_len == 2) {
                    if ((rc = lzo_ext_len(in, in_len, &ip, 7 + 2, &m_len)) != DEC_OK)
                        return rc;
                    NEED_IN(2);
                    v = in[ip] | (unsigned)in[ip + 1] << 8;
                }
                ip += 2;
                dist = high + (v >> 2);
                next = v & 3;
                if (dist == 0) {
                    /* The end marker: 0x11 0x00 0x00 (the kernel accepts any low 2 bits). */
                    if (m_len != 3)
                        return DEC_BAD_END;
                    if (ip != in_len)
                        return DEC_TRAILING;
                    *out_len = op;
                    return DEC_OK;
                }
                dist += 0x4000;
            }
        }
        if (m_len) {
            if (dist > op)
                return DEC_LOOKBEHIND;
            NEED_OUT(m_len);
            uint8_t *d = out + op;
            const uint8_t *s = d - dist;
            if (dist >= m_len) {
                memcpy(d, s, m_len);
            } else if (dist == 1) {
                memset(d, s[0], m_len);
            } else {
                /* The match overlaps what it writes: it repeats its first `dist` bytes.  Copy
                 * them, then double: after `done` bytes (a multiple of dist) the next `done`
                 * bytes equal the first `done`, which lie wholly before them. */
                memcpy(d, s, dist);
                size_t done = dist;
                while (done < m_len) {
                    size_t piece = done < m_len - done ? done : m_len - done;
                    memcpy(d + done, d, piece);
                    done += piece;
                }
            }
            op += m_len;
        }
        state = next;
        NEED_IN(next);
        NEED_OUT(next);
        for (unsigned k = 0; k < next; k++)
            out[op + k] = in[ip + k];
        ip += next;
        op += next;
    }
}

#undef NEED_IN
#undef NEED_OUT

/* ---- LZ4 1.7.3 LZ4_compress_fast, byU16 table ------------------------------------------- */

#define LZ4_HASH_LOG 13
#define LZ4_MAX_INPUT 65535u
#define LZ4_MIN_LENGTH 13 /* MFLIMIT + 1 */

static inline uint32_t
lz4_hash(const uint8_t *p)
{
    return (uint32_t)(le32(p) * 2654435761u) >> (32 - LZ4_HASH_LOG);
}

static size_t
lz4_bound(size_t n)
{
    return n + n / 255 + 16;
}

static uint8_t *
lz4_length(uint8_t *op, size_t len)
{
    while (len >= 255) {
        *op++ = 255;
        len -= 255;
    }
    *op++ = (uint8_t)len;
    return op;
}

static size_t
lz4_compress_core(const uint8_t *src, size_t n, uint8_t *out, unsigned accel, uint16_t *tab)
{
    uint8_t *op = out;
    size_t anchor = 0;

    if (n >= LZ4_MIN_LENGTH) {
        const size_t mflimit = n - 12, matchlimit = n - 5;
        size_t ip, match = 0;
        uint32_t fh;
        int done = 0;
        memset(tab, 0, ((size_t)1 << LZ4_HASH_LOG) * sizeof *tab);
        tab[lz4_hash(src)] = 0;
        ip = 1;
        fh = lz4_hash(src + ip);
        while (!done) {
            /* Search for a 4-byte match, skipping faster the longer nothing is found. */
            size_t fwd = ip, step = 1;
            unsigned nb = accel << 6;
            for (;;) {
                uint32_t hh = fh;
                ip = fwd;
                fwd += step;
                step = nb >> 6;
                nb++;
                if (fwd > mflimit) {
                    done = 1;
                    break;
                }
                match = tab[hh];
                fh = lz4_hash(src + fwd);
                tab[hh] = (uint16_t)ip;
                if (le32(src + match) == le32(src + ip))
                    break;
            }
            if (done)
                break;
            while (ip > anchor && match > 0 && src[ip - 1] == src[match - 1]) {
                ip--;
                match--;
            }
            size_t lit = ip - anchor;
            uint8_t *token = op++;
            if (lit >= 15) {
                *token = 0xf0;
                op = lz4_length(op, lit - 15);
            } else {
                *token = (uint8_t)(lit << 4);
            }
            memcpy(op, src + anchor, lit);
            op += lit;
            for (;;) {
                size_t off = ip - match;
                *op++ = (uint8_t)off;
                *op++ = (uint8_t)(off >> 8);
                size_t a = ip + 4, b = match + 4;
                while (a + 8 <= matchlimit) {
                    uint64_t x = le64(src + a) ^ le64(src + b);
                    if (x) {
                        a += (size_t)__builtin_ctzll(x) >> 3;
                        goto counted;
                    }
                    a += 8;
                    b += 8;
                }
                while (a < matchlimit && src[a] == src[b]) {
                    a++;
                    b++;
                }
            counted:;
                size_t mc = a - (ip + 4);
                ip = a;
                if (mc >= 15) {
                    *token += 15;
                    op = lz4_length(op, mc - 15);
                } else {
                    *token += (uint8_t)mc;
                }
                anchor = ip;
                if (ip > mflimit) {
                    done = 1;
                    break;
                }
                tab[lz4_hash(src + ip - 2)] = (uint16_t)(ip - 2);
                uint32_t hh = lz4_hash(src + ip);
                match = tab[hh];
                tab[hh] = (uint16_t)ip;
                if (match + 65535 >= ip && le32(src + match) == le32(src + ip)) {
                    token = op++;
                    *token = 0;
                    continue;
                }
                ip++;
                fh = lz4_hash(src + ip);
                break;
            }
        }
    }
    size_t last = n - anchor;
    if (last >= 15) {
        *op++ = 0xf0;
        op = lz4_length(op, last - 15);
    } else {
        *op++ = (uint8_t)(last << 4);
    }
    memcpy(op, src + anchor, last);
    op += last;
    return (size_t)(op - out);
}

/* ---- Python bindings -------------------------------------------------------------------- */

static PyObject *
compress_lzo(PyObject *arg, int rle)
{
    Py_buffer view;
    uint16_t dict[LZO_D_SIZE];
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if ((size_t)view.len > LZO_MAX_INPUT) {
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_ValueError, "input of %zd bytes: at most %u", view.len, LZO_MAX_INPUT);
        return NULL;
    }
    /* The result is written straight into a new bytes object, which no other thread can see
     * yet, and then cut to its length. */
    PyObject *res = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)lzo_bound((size_t)view.len));
    if (res == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(res);
    size_t len;
    Py_BEGIN_ALLOW_THREADS
    len = rle ? lzo_compress_v1(view.buf, (size_t)view.len, out, dict)
              : lzo_compress_v0(view.buf, (size_t)view.len, out, dict);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (_PyBytes_Resize(&res, (Py_ssize_t)len) < 0)
        return NULL;
    return res;
}

static PyObject *
py_lzo1x_1_compress(PyObject *self, PyObject *arg)
{
    (void)self;
    return compress_lzo(arg, 0);
}

static PyObject *
py_lzorle1x_1_compress(PyObject *self, PyObject *arg)
{
    (void)self;
    return compress_lzo(arg, 1);
}


/* ---- LZ4 block decoder ------------------------------------------------------------------
 * A sequence is a token (literal length in the high nibble, match length - 4 in the low one,
 * 15 meaning "continued in bytes of 255 and a last one below"), the literals, and, unless the
 * block ends there, a 2-byte little-endian offset back into the output.  Every length is
 * checked against what is left of the input and of the output before anything is copied, and
 * an offset against what has been written: a malformed block is an error, never a stray read. */

/* LZ4's end-of-block rules, which LZ4_decompress_safe enforces: a match starts at least 12
 * bytes before the end of the output, and the last 5 bytes are literals. */
#define LZ4_MFLIMIT 12
#define LZ4_LASTLITERALS 5

/* A length continued in bytes of 255 and a last one below, read as liblz4 1.9 reads it (its
 * read_variable_length): no more than leaves `keep` input bytes after each byte read.  Reaching
 * that bound ends a literal length where it is (the checks that follow refuse what does not
 * fit) and is an error in a match length. */
static int
lz4_ext_len(const uint8_t *in, size_t in_len, size_t *ip, size_t keep, int is_match, size_t *len)
{
    unsigned b;
    if (in_len - *ip < keep)
        return DEC_INPUT_OVERRUN;
    do {
        if (*ip >= in_len)
            return DEC_INPUT_OVERRUN;
        b = in[(*ip)++];
        *len += b;
        if (in_len - *ip < keep)
            return is_match ? DEC_INPUT_OVERRUN : DEC_OK;
    } while (b == 255);
    return DEC_OK;
}

/* Copy n bytes 16 at a time: up to 15 bytes past the end are written (and read) too, so the
 * caller makes sure both buffers have that much room. */
static inline void
wild_copy16(uint8_t *to, const uint8_t *from, size_t n)
{
    uint8_t *end = to + n;
    do {
        memcpy(to, from, 16);
        to += 16;
        from += 16;
    } while (to < end);
}

/* A match's offset: two little-endian bytes at in[*ip] (the caller knows they are there). */
static inline size_t
lz4_offset(const uint8_t *in, size_t *ip)
{
    size_t dist = (size_t)in[*ip] | (size_t)in[*ip + 1] << 8;
    *ip += 2;
    return dist;
}

static int
lz4_decode(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_cap, size_t *out_len)
{
    size_t ip = 0, op = 0;
    int rc;
    if (in_len == 0)
        return DEC_INPUT_OVERRUN;
    if (out_cap == 0) { /* liblz4's rule for no room at all: only the block of one empty token */
        *out_len = 0;
        return in_len == 1 && in[0] == 0 ? DEC_OK : DEC_OUTPUT_OVERRUN;
    }
    for (;;) {
        if (ip >= in_len)
            return DEC_INPUT_OVERRUN;
        unsigned token = in[ip++];
        size_t lit = token >> 4, mlen = token & 15;
        if (lit < 15 && mlen < 15 && in_len - ip >= 32 && out_cap - op >= 64) {
            /* The common sequence (no length bytes) far from both ends, where none of the
             * end-of-block rules below can apply: fixed-size copies, each within both buffers.
             * The literals (at most 14) and the match (at most 18) are copied 16 and 24-32
             * bytes at a time; what lies past them is overwritten by what follows. */
            memcpy(out + op, in + ip, 16);
            ip += lit;
            op += lit;
            size_t dist = lz4_offset(in, &ip);
            if (dist == 0 || dist > op)
                return DEC_LOOKBEHIND;
            uint8_t *to = out + op;
            const uint8_t *from = to - dist;
            mlen += 4;
            if (dist >= 8) { /* 8 + 8 + 2: each word read lies wholly before where it goes */
                memcpy(to, from, 8);
                memcpy(to + 8, from + 8, 8);
                memcpy(to + 16, from + 16, 2);
            } else {
                for (size_t k = 0; k < mlen; k++) /* a short period: byte by byte */
                    to[k] = from[k];
            }
            op += mlen;
            continue;
        }
        if (lit == 15 && (rc = lz4_ext_len(in, in_len, &ip, 15, 0, &lit)) != DEC_OK)
            return rc;
        if (in_len - ip < lit)
            return DEC_INPUT_OVERRUN;
        if (out_cap - op < lit)
            return DEC_OUTPUT_OVERRUN;
        if (op + lit + LZ4_MFLIMIT > out_cap || ip + lit + 2 + 1 + LZ4_LASTLITERALS > in_len) {
            /* Too near the end of the output or the input for a match to follow: this must be
             * the last sequence, literals only, ending the input exactly (LZ4_decompress_safe). */
            if (ip + lit != in_len)
                return DEC_BAD_END;
            memcpy(out + op, in + ip, lit);
            op += lit;
            break;
        }
        if (lit <= 32 && in_len - ip >= lit + 16 && out_cap - op >= lit + 16)
            wild_copy16(out + op, in + ip, lit); /* a short run: up to 15 bytes more, within both */
        else
            memcpy(out + op, in + ip, lit);
        ip += lit;
        op += lit;
        size_t dist = lz4_offset(in, &ip);
        if (dist == 0 || dist > op)
            return DEC_LOOKBEHIND;
        if (mlen == 15 && (rc = lz4_ext_len(in, in_len, &ip, LZ4_LASTLITERALS - 1, 1, &mlen)) != DEC_OK)
            return rc;
        mlen += 4;
        if (out_cap - op < mlen + LZ4_LASTLITERALS) /* the last 5 bytes are always literals */
            return DEC_OUTPUT_OVERRUN;
        uint8_t *to = out + op;
        const uint8_t *from = to - dist;
        if (dist >= 16 && mlen <= 32 && out_cap - op >= mlen + 16) {
            wild_copy16(to, from, mlen); /* each 16 bytes read lie wholly before where they go */
        } else if (dist >= mlen) {
            memcpy(to, from, mlen);
        } else if (dist >= 8 && out_cap - op >= mlen + 8) {
            /* overlapping, 8 at a time: each word read lies wholly before where it goes (what
             * an earlier word of the match wrote is read as the match's repetition) */
            for (size_t k = 0; k < mlen; k += 8)
                memcpy(to + k, from + k, 8);
        } else {
            /* Overlapping: the match repeats the dist bytes before it.  Copy what lies between
             * `from` and the end written so far, which doubles the repeated run each time. */
            size_t left = mlen;
            uint8_t *end = to;
            while (left) {
                size_t n = (size_t)(end - from) < left ? (size_t)(end - from) : left;
                memcpy(end, from, n);
                end += n;
                left -= n;
            }
        }
        op += mlen;
    }
    *out_len = op;
    return DEC_OK;
}

typedef int (*decode_fn)(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_cap, size_t *out_len);

/* By compress_pages' kind: 0 lzo, 1 lzo-rle (one LZO1X decoder reads both), 2 lz4. */
static decode_fn decoders[3] = {lzo_decode, lzo_decode, lz4_decode};

/* A decoder's Python face: (data, max_out) -> bytes, ValueError naming `what` if malformed; the
 * GIL released around the decoding. */
static PyObject *
decompress_with(decode_fn decode, const char *what, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t max_out;
    if (!PyArg_ParseTuple(args, "y*n", &view, &max_out))
        return NULL;
    if (max_out < 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "max_out must not be negative");
        return NULL;
    }
    PyObject *res = PyBytes_FromStringAndSize(NULL, max_out);
    if (res == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    size_t len = 0;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = decode(view.buf, (size_t)view.len, (uint8_t *)PyBytes_AS_STRING(res), (size_t)max_out, &len);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (rc != DEC_OK) {
        Py_DECREF(res);
        PyErr_Format(PyExc_ValueError, "%s: %s", what, dec_errors[rc]);
        return NULL;
    }
    if ((Py_ssize_t)len != max_out && _PyBytes_Resize(&res, (Py_ssize_t)len) < 0)
        return NULL;
    return res;
}

static PyObject *
py_lzo_decompress(PyObject *self, PyObject *args)
{
    (void)self;
    return decompress_with(lzo_decode, "lzo", args);
}

static PyObject *
py_lz4_decompress(PyObject *self, PyObject *args)
{
    (void)self;
    return decompress_with(lz4_decode, "lz4", args);
}

/* LZ4 1.7.3: acceleration below 1 is 1; the kernel passes its level unchecked.  65537 is
 * LZ4_ACCELERATION_MAX of later versions, and keeps the skip counter from overflowing. */
static int
lz4_acceleration(int accel)
{
    return accel < 1 ? 1 : accel > 65537 ? 65537 : accel;
}

static PyObject *
py_lz4_compress(PyObject *self, PyObject *args, PyObject *kwargs)
{
    (void)self;
    static char *kwlist[] = {"page", "acceleration", NULL};
    Py_buffer view;
    int accel = 1;
    uint16_t tab[1u << LZ4_HASH_LOG];
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*|i:lz4_compress", kwlist, &view, &accel))
        return NULL;
    if ((size_t)view.len > LZ4_MAX_INPUT) {
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_ValueError, "input of %zd bytes: at most %u", view.len, LZ4_MAX_INPUT);
        return NULL;
    }
    accel = lz4_acceleration(accel);
    PyObject *res = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)lz4_bound((size_t)view.len));
    if (res == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(res);
    size_t len;
    Py_BEGIN_ALLOW_THREADS
    len = lz4_compress_core(view.buf, (size_t)view.len, out, (unsigned)accel, tab);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (_PyBytes_Resize(&res, (Py_ssize_t)len) < 0)
        return NULL;
    return res;
}

/* The work memory one compression needs: the larger of lz4's hash table and lzo's dictionary. */
#define WORK_ENTRIES ((1u << LZ4_HASH_LOG) > LZO_D_SIZE ? (1u << LZ4_HASH_LOG) : LZO_D_SIZE)

/* The largest page `kind` (0 lzo, 1 lzo-rle, 2 lz4) compresses in one call, and the room its
 * output may need. */
static size_t
kind_max_input(int kind)
{
    return kind == 2 ? LZ4_MAX_INPUT : LZO_MAX_INPUT;
}

static size_t
kind_bound(int kind, size_t page)
{
    return kind == 2 ? lz4_bound(page) : lzo_bound(page);
}

/* One page of `kind` into dst (kind_bound bytes); returns the length. */
static size_t
compress_one(int kind, const uint8_t *src, size_t page, uint8_t *dst, int accel, uint16_t *work)
{
    if (kind == 2)
        return lz4_compress_core(src, page, dst, (unsigned)accel, work);
    if (kind == 1)
        return lzo_compress_v1(src, page, dst, work);
    return lzo_compress_v0(src, page, dst, work);
}

/* compress_pages(kind, data, page_size, acceleration=1) -> list[bytes]: every page_size piece
 * of data compressed on its own, exactly as one call per page would, with the GIL released
 * once for them all.  This is what lets a compression stream (a worker thread) run beside the
 * thread that stores the pages: one call per page would wait for the GIL after every page. */
static PyObject *
py_compress_pages(PyObject *self, PyObject *args, PyObject *kwargs)
{
    (void)self;
    static char *kwlist[] = {"kind", "data", "page_size", "acceleration", NULL};
    Py_buffer view;
    int kind, accel = 1;
    Py_ssize_t page;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "iy*n|i:compress_pages", kwlist, &kind, &view, &page,
                                     &accel))
        return NULL;
    if (kind < 0 || kind > 2 || page <= 0 || (size_t)page > kind_max_input(kind) || view.len % page) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "compress_pages: kind 0..2 and whole pages of a valid size");
        return NULL;
    }
    accel = lz4_acceleration(accel);
    size_t n = (size_t)(view.len / page);
    size_t bound = kind_bound(kind, (size_t)page);
    uint8_t *out = malloc(n * bound + 1);
    size_t *lens = malloc((n + 1) * sizeof(size_t));
    uint16_t *work = malloc(sizeof(uint16_t) * WORK_ENTRIES);
    if (out == NULL || lens == NULL || work == NULL) {
        free(out);
        free(lens);
        free(work);
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    const uint8_t *in = view.buf;
    Py_BEGIN_ALLOW_THREADS
    for (size_t i = 0; i < n; i++)
        lens[i] = compress_one(kind, in + i * (size_t)page, (size_t)page, out + i * bound, accel, work);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    PyObject *res = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; res != NULL && i < n; i++) {
        PyObject *item = PyBytes_FromStringAndSize((const char *)(out + i * bound), (Py_ssize_t)lens[i]);
        if (item == NULL)
            Py_CLEAR(res);
        else
            PyList_SET_ITEM(res, (Py_ssize_t)i, item);
    }
    free(out);
    free(lens);
    free(work);
    return res;
}

/* ---- compression streams ------------------------------------------------------------------ */

/*
 * StreamJob: zram's compression streams for one buffer of whole pages, as native threads.
 *
 * Why not Python threads: a Python thread that compresses a batch must take the GIL back to hand
 * its results over, and the thread storing the pages holds the GIL nearly all the time, so each
 * batch waits up to the switch interval (5 ms) for it: the streams then run at half speed or
 * less, however many there are.  These threads touch no Python object.  The job holds the
 * caller's buffer (Py_buffer) from its creation to close(); `threads` workers claim batches of
 * `batch` pages in order and compress each into a slot of a ring of `slots` batches; take(), with
 * the GIL, waits (the GIL released) for the next batch in page order, turns it into bytes objects
 * and frees its slot.  So memory is the ring whatever the buffer's size, the workers run at most
 * `slots` batches ahead of the pages taken, and the results never depend on `threads`.
 *
 * close() (and the job's end) stops the workers once their current batch is done and joins them:
 * after it nothing reads the buffer.  A job whose threads cannot be started compresses each batch
 * in take() instead.
 */
#define JOB_MAX_THREADS 256
#define JOB_MAX_BATCH 4096
#define JOB_MAX_SLOTS 4096

typedef struct {
    PyObject_HEAD
    Py_buffer view;
    int have_view;
    int kind, accel;
    size_t page, bound, npages, batch, nbatches, nslots;
    uint8_t *out;    /* nslots * batch * bound bytes: slot s, page i at (s * batch + i) * bound */
    size_t *lens;    /* nslots * batch: the compressed length of each page in a slot */
    size_t *ready;   /* per slot: 1 + the batch compressed into it; 0 for none yet */
    size_t claimed;  /* batches claimed by the workers (all below it are claimed) */
    size_t taken;    /* batches taken (so their slots are free again) */
    int stop;
    pthread_mutex_t mu;
    pthread_cond_t room; /* a slot was freed, or stop was set */
    pthread_cond_t done; /* a batch was compressed */
    int have_sync;
    pthread_t *threads;
    int nthreads; /* started and not yet joined */
} StreamJob;

/* Compress batch b into its slot.  Called by a worker without any lock, or by take(). */
static void
job_compress(StreamJob *job, size_t b, uint16_t *work)
{
    const uint8_t *in = job->view.buf;
    size_t slot = b % job->nslots, first = b * job->batch;
    size_t count = job->npages - first < job->batch ? job->npages - first : job->batch;
    for (size_t i = 0; i < count; i++) {
        size_t at = slot * job->batch + i;
        job->lens[at] = compress_one(job->kind, in + (first + i) * job->page, job->page,
                                     job->out + at * job->bound, job->accel, work);
    }
}

static void *
job_worker(void *arg)
{
    StreamJob *job = arg;
    uint16_t work[WORK_ENTRIES];
    pthread_mutex_lock(&job->mu);
    while (!job->stop && job->claimed < job->nbatches) {
        if (job->claimed >= job->taken + job->nslots) { /* the ring is full: wait for take() */
            pthread_cond_wait(&job->room, &job->mu);
            continue;
        }
        size_t b = job->claimed++;
        pthread_mutex_unlock(&job->mu);
        job_compress(job, b, work);
        pthread_mutex_lock(&job->mu);
        job->ready[b % job->nslots] = b + 1;
        pthread_cond_broadcast(&job->done);
    }
    pthread_mutex_unlock(&job->mu);
    return NULL;
}

/* Stop the workers after their current batch, wait for them, and let the buffer go. */
static void
job_stop(StreamJob *job)
{
    if (job->nthreads > 0) {
        pthread_mutex_lock(&job->mu);
        job->stop = 1;
        pthread_cond_broadcast(&job->room);
        pthread_mutex_unlock(&job->mu);
        int n = job->nthreads;
        Py_BEGIN_ALLOW_THREADS
        for (int i = 0; i < n; i++)
            pthread_join(job->threads[i], NULL);
        Py_END_ALLOW_THREADS
        job->nthreads = 0;
    }
    job->stop = 1;
    if (job->have_view) {
        PyBuffer_Release(&job->view);
        job->have_view = 0;
    }
}

static void
job_dealloc(StreamJob *job)
{
    job_stop(job);
    if (job->have_sync) {
        pthread_cond_destroy(&job->done);
        pthread_cond_destroy(&job->room);
        pthread_mutex_destroy(&job->mu);
    }
    free(job->threads);
    free(job->out);
    free(job->lens);
    free(job->ready);
    Py_TYPE(job)->tp_free((PyObject *)job);
}

static PyObject *
job_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"kind", "data", "page_size", "threads", "batch", "slots", "acceleration", NULL};
    int kind, accel = 1, threads;
    Py_ssize_t page, batch, slots;
    PyObject *data;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "iOninn|i:StreamJob", kwlist, &kind, &data, &page, &threads,
                                     &batch, &slots, &accel))
        return NULL;
    if (kind < 0 || kind > 2 || page <= 0 || (size_t)page > kind_max_input(kind) || threads < 1
        || threads > JOB_MAX_THREADS
        || batch < 1 || batch > JOB_MAX_BATCH || slots < 1 || slots > JOB_MAX_SLOTS) {
        PyErr_SetString(PyExc_ValueError, "StreamJob: kind 0..2, a valid page size, 1..256 threads, "
                                          "1..4096 pages a batch and 1..4096 slots");
        return NULL;
    }
    StreamJob *job = (StreamJob *)type->tp_alloc(type, 0);
    if (job == NULL)
        return NULL;
    if (PyObject_GetBuffer(data, &job->view, PyBUF_SIMPLE) < 0) {
        Py_DECREF(job);
        return NULL;
    }
    job->have_view = 1;
    if (job->view.len % page) {
        Py_DECREF(job);
        PyErr_SetString(PyExc_ValueError, "StreamJob: the data is not whole pages");
        return NULL;
    }
    job->kind = kind;
    job->accel = lz4_acceleration(accel);
    job->page = (size_t)page;
    job->bound = kind_bound(kind, job->page);
    job->npages = (size_t)job->view.len / job->page;
    job->batch = (size_t)batch;
    job->nbatches = (job->npages + job->batch - 1) / job->batch;
    job->nslots = job->nbatches < (size_t)slots ? job->nbatches : (size_t)slots;
    if (job->nslots == 0)
        job->nslots = 1;
    /* At most 4096 * 4096 pages of at most 70 KiB: no product below overflows a 64-bit size_t. */
    job->out = malloc(job->nslots * job->batch * job->bound);
    job->lens = malloc(job->nslots * job->batch * sizeof *job->lens);
    job->ready = calloc(job->nslots, sizeof *job->ready);
    size_t want = job->nbatches < (size_t)threads ? job->nbatches : (size_t)threads;
    job->threads = malloc((want ? want : 1) * sizeof *job->threads);
    if (job->out == NULL || job->lens == NULL || job->ready == NULL || job->threads == NULL) {
        Py_DECREF(job);
        return PyErr_NoMemory();
    }
    if (pthread_mutex_init(&job->mu, NULL) != 0) {
        Py_DECREF(job);
        return PyErr_NoMemory();
    }
    if (pthread_cond_init(&job->room, NULL) != 0) {
        pthread_mutex_destroy(&job->mu);
        Py_DECREF(job);
        return PyErr_NoMemory();
    }
    if (pthread_cond_init(&job->done, NULL) != 0) {
        pthread_cond_destroy(&job->room);
        pthread_mutex_destroy(&job->mu);
        Py_DECREF(job);
        return PyErr_NoMemory();
    }
    job->have_sync = 1;
    for (size_t i = 0; i < want; i++) {
        if (pthread_create(&job->threads[job->nthreads], NULL, job_worker, job) != 0)
            break; /* fewer streams (or none: take() compresses); never a different result */
        job->nthreads++;
    }
    return (PyObject *)job;
}

static PyObject *
job_take(StreamJob *job, PyObject *Py_UNUSED(ignored))
{
    if (!job->have_view) {
        PyErr_SetString(PyExc_ValueError, "StreamJob.take: the job is closed");
        return NULL;
    }
    size_t b = job->taken;
    if (b >= job->nbatches)
        return PyList_New(0);
    size_t slot = b % job->nslots;
    if (job->nthreads == 0) { /* no worker: this batch is compressed here, the GIL released */
        uint16_t *work = malloc(sizeof(uint16_t) * WORK_ENTRIES);
        if (work == NULL)
            return PyErr_NoMemory();
        Py_BEGIN_ALLOW_THREADS
        job_compress(job, b, work);
        Py_END_ALLOW_THREADS
        free(work);
    } else {
        pthread_mutex_lock(&job->mu);
        int ready = job->ready[slot] == b + 1;
        pthread_mutex_unlock(&job->mu);
        if (!ready) {
            Py_BEGIN_ALLOW_THREADS
            pthread_mutex_lock(&job->mu);
            while (job->ready[slot] != b + 1)
                pthread_cond_wait(&job->done, &job->mu);
            pthread_mutex_unlock(&job->mu);
            Py_END_ALLOW_THREADS
        }
    }
    size_t first = b * job->batch;
    size_t count = job->npages - first < job->batch ? job->npages - first : job->batch;
    PyObject *res = PyList_New((Py_ssize_t)count);
    for (size_t i = 0; res != NULL && i < count; i++) {
        size_t at = slot * job->batch + i;
        PyObject *item = PyBytes_FromStringAndSize((const char *)job->out + at * job->bound,
                                                   (Py_ssize_t)job->lens[at]);
        if (item == NULL)
            Py_CLEAR(res);
        else
            PyList_SET_ITEM(res, (Py_ssize_t)i, item);
    }
    if (res == NULL)
        return NULL; /* the batch stays, to be taken again */
    pthread_mutex_lock(&job->mu);
    job->taken = b + 1;
    pthread_cond_broadcast(&job->room);
    pthread_mutex_unlock(&job->mu);
    return res;
}

static PyObject *
job_close(StreamJob *job, PyObject *Py_UNUSED(ignored))
{
    job_stop(job);
    Py_RETURN_NONE;
}

static PyObject *
job_threads(StreamJob *job, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(job->nthreads);
}

static PyMethodDef job_methods[] = {
    {"take", (PyCFunction)job_take, METH_NOARGS,
     "take() -> list[bytes]: the next batch's pages compressed, in page order; [] after the last."},
    {"close", (PyCFunction)job_close, METH_NOARGS,
     "close(): stop the streams after their current batch and wait for them; the buffer is let go."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef job_getset[] = {
    {"threads", (getter)job_threads, NULL, "the stream threads running (0 once closed)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject StreamJobType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "zramctl.kernel._kcomp.StreamJob",
    .tp_basicsize = sizeof(StreamJob),
    .tp_dealloc = (destructor)job_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "StreamJob(kind, data, page_size, threads, batch, slots, acceleration=1): every page of "
              "data compressed by `threads` native threads, `batch` pages at a time, at most `slots` "
              "batches ahead of take().",
    .tp_methods = job_methods,
    .tp_getset = job_getset,
    .tp_new = job_new,
};

static PyMethodDef methods[] = {
    {"lzo1x_1_compress", py_lzo1x_1_compress, METH_O,
     "lzo1x_1_compress(data) -> bytes: the kernel's lzo (LZO1X-1, 2^13 dictionary), up to 48 KiB."},
    {"lzorle1x_1_compress", py_lzorle1x_1_compress, METH_O,
     "lzorle1x_1_compress(data) -> bytes: the kernel's lzo-rle (bitstream version 1), up to 48 KiB."},
    {"lzo_decompress", py_lzo_decompress, METH_VARARGS,
     "lzo_decompress(data, max_out) -> bytes: LZO1X, version 0 or 1; ValueError if malformed."},
    {"lz4_decompress", py_lz4_decompress, METH_VARARGS,
     "lz4_decompress(data, max_out) -> bytes: an LZ4 block; ValueError if malformed."},
    {"lz4_compress", (PyCFunction)(void (*)(void))py_lz4_compress, METH_VARARGS | METH_KEYWORDS,
     "lz4_compress(data, acceleration=1) -> bytes: LZ4 1.7.3 block (byU16 table), under 64 KiB."},
    {"compress_pages", (PyCFunction)(void (*)(void))py_compress_pages, METH_VARARGS | METH_KEYWORDS,
     "compress_pages(kind, data, page_size, acceleration=1) -> list[bytes]: each page of data "
     "compressed on its own (kind 0 lzo, 1 lzo-rle, 2 lz4), with the GIL released once."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_kcomp",
    "The kernel's lzo, lzo-rle and lz4 page compressors, and a checked LZO1X decoder.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__kcomp(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyType_Ready(&StreamJobType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "STREAM_JOB_MAX_THREADS", JOB_MAX_THREADS) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&StreamJobType);
    if (PyModule_AddObject(m, "StreamJob", (PyObject *)&StreamJobType) < 0) {
        Py_DECREF(&StreamJobType);
        Py_DECREF(m);
        return NULL;
    }
    PyObject *cap = PyCapsule_New((void *)decoders, "zramctl.kernel._kcomp._DECODERS", NULL);
    if (cap == NULL || PyModule_AddObject(m, "_DECODERS", cap) < 0) {
        Py_XDECREF(cap);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
