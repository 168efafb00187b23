/*
 * _codec: page-table leaves and zspage-record leaves of zram-image(5), in C.
 *
 * Why: a read decodes, and a commit encodes, 255 entries per leaf; in Python each entry costs a
 * 128-bit int and a dozen method calls, a fifth of an image read.  This file holds no layout of
 * its own: format.py's ENTRY_LAYOUT and RECORD_LAYOUT (the one declaration) and the kernel's
 * values are handed to EntryCodec(...) and RecordCodec(...) once, at import, and every field is
 * read and written through them.
 * format.py's encode_entry / decode_entry stay the readable reference: whenever an entry is one
 * this code does not handle as plainly valid, it answers "not me" (the entry's index) and the
 * caller runs the reference on the leaf, which raises or words the corruption.  tests/test_codec.py
 * holds the two equal on generated entries and raw leaves.
 *
 *   EntryCodec(fields, used, flags, geometry)
 *       fields   = ((low, high) for kind, huge, idle, incompressible, priority, size, obj_idx,
 *                   key, block, fill, crc, ac_time): bit positions, inclusive
 *       used     = (mask of the bits kind 1, 2 and 3 may set): ints below 2**(8 * entry_size)
 *       flags    = (ZRAM_HUGE, ZRAM_IDLE, ZRAM_INCOMPRESSIBLE, ZRAM_SAME, ZRAM_WB, known flags,
 *                   ZRAM_SIZE_MASK, ZRAM_COMP_PRIORITY_SHIFT, ZRAM_COMP_PRIORITY_MASK)
 *       geometry = (entry_size, entries per leaf, page size, extent blocks, OBJ_INDEX_BITS)
 *   .decode(payload, extents) -> list[Entry | None], or the index of the first entry it leaves
 *       to the reference (an int)
 *   .encode(entries) -> bytes (entry_size * per, zero-padded), or the index of the first entry
 *       it leaves to the reference (an int)
 *
 *   RecordCodec(fields, consts, geometry, zspage_type)
 *       fields   = ((low, high) for kind, cls, fullness, inuse, freeobj, prev, next, owner)
 *       consts   = (RECORD_ZSPAGE, NO_FREEOBJ, ISOLATED, NO_KEY, FREE_END, NO_ZSPAGE)
 *       geometry = (record_size, records per leaf, extent blocks)
 *   .encode(slots, huge) -> bytes (record_size * len(slots)), or the index of the first slot it
 *       leaves to the reference (format.encode_record): a commit re-encodes every cached record
 *       leaf to find the changed ones, since the pool changes ZsPage objects in place.
 *   .decode(payload, first_key, huge, objs, ngroups) -> list of slots (kind ints and new
 *       zspage_type objects), or the index of the first record it leaves to the reference
 *       (format.decode_records_reference), which words the corruption.
 *
 * Every read is bounds-checked against the buffer; no input makes it read or write outside one.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <limits.h>
#include <stdint.h>
#include <string.h>

enum { F_KIND, F_HUGE, F_IDLE, F_INCOMP, F_PRIO, F_SIZE, F_IDX, F_KEY, F_BLOCK, F_FILL, F_CRC, F_AC, NFIELDS };
enum { KIND_UNWRITTEN, KIND_SAME, KIND_OBJECT, KIND_WB };
enum { G_HUGE, G_IDLE, G_INCOMP, G_SAME, G_WB, G_KNOWN, G_SIZE_MASK, G_PRIO_SHIFT, G_PRIO_MASK, NFLAGS };

typedef struct {
    unsigned low, width;
    uint64_t mask; /* the field's largest value, unshifted */
} Field;

/* An entry: a little-endian integer of up to 128 bits, as two 64-bit halves. */
typedef struct {
    uint64_t lo, hi;
} Wide;

typedef struct {
    PyObject_HEAD
    Field f[NFIELDS];
    Wide used[4]; /* bits each kind may set (kind 0: none) */
    uint64_t flag[NFLAGS];
    unsigned entry_size, per, obj_index_bits;
    uint64_t page_size, extent_blocks;
} Codec;

static inline uint64_t
get(const Field *f, Wide v)
{
    uint64_t x;
    if (f->low >= 64)
        x = v.hi >> (f->low - 64);
    else if (f->low == 0)
        x = v.lo;
    else
        x = v.lo >> f->low | v.hi << (64 - f->low);
    return x & f->mask;
}

/* ``x`` (which fits the field) in place. */
static inline void
put(Wide *v, const Field *f, uint64_t x)
{
    if (f->low >= 64) {
        v->hi |= x << (f->low - 64);
    } else {
        v->lo |= x << f->low;
        if (f->low && f->low + f->width > 64)
            v->hi |= x >> (64 - f->low);
    }
}

/* ---- construction --------------------------------------------------------------------- */

/* A Python int below 2**bits (bits <= 128) as two halves; -1 with an exception otherwise. */
static int
wide_from(PyObject *o, unsigned bits, Wide *out)
{
    PyObject *lo = NULL, *hi = NULL, *mask = NULL, *shift = NULL, *top = NULL, *rest = NULL;
    int rc = -1;
    if (!PyLong_Check(o)) {
        PyErr_SetString(PyExc_TypeError, "EntryCodec: a mask must be an int");
        return -1;
    }
    mask = PyLong_FromUnsignedLongLong(UINT64_MAX);
    shift = PyLong_FromLong(64);
    top = PyLong_FromUnsignedLong(bits);
    if (!mask || !shift || !top)
        goto done;
    rest = PyNumber_Rshift(o, top); /* for a negative int: -1, never 0 */
    if (!rest)
        goto done;
    if (PyObject_IsTrue(rest)) {
        PyErr_SetString(PyExc_ValueError, "EntryCodec: a mask does not fit the entry");
        goto done;
    }
    lo = PyNumber_And(o, mask);
    hi = lo ? PyNumber_Rshift(o, shift) : NULL;
    if (!hi)
        goto done;
    out->lo = PyLong_AsUnsignedLongLong(lo);
    out->hi = PyLong_AsUnsignedLongLong(hi);
    rc = PyErr_Occurred() ? -1 : 0;
done:
    Py_XDECREF(lo);
    Py_XDECREF(hi);
    Py_XDECREF(mask);
    Py_XDECREF(shift);
    Py_XDECREF(top);
    Py_XDECREF(rest);
    return rc;
}

static int
bits_of(uint64_t x)
{
    int n = 0;
    while (x) {
        n++;
        x >>= 1;
    }
    return n;
}

static PyObject *
codec_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"fields", "used", "flags", "geometry", NULL};
    PyObject *fields, *used, *flags;
    unsigned long long g[5];
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!O!(KKKKK)", kwlist, &PyTuple_Type, &fields,
                                     &PyTuple_Type, &used, &PyTuple_Type, &flags, &g[0], &g[1], &g[2],
                                     &g[3], &g[4]))
        return NULL;
    if (PyTuple_GET_SIZE(fields) != NFIELDS || PyTuple_GET_SIZE(used) != 3 || PyTuple_GET_SIZE(flags) != NFLAGS) {
        PyErr_SetString(PyExc_ValueError, "EntryCodec: 12 fields, 3 used masks and 9 flags");
        return NULL;
    }
    Codec *c = (Codec *)type->tp_alloc(type, 0);
    if (!c)
        return NULL;
    if (g[0] < 1 || g[0] > 16 || g[1] < 1 || g[1] > 4096 || g[2] < 1 || g[2] > ((uint64_t)1 << 32) || g[3] < 1
        || g[3] > 64 || g[4] > 32) {
        PyErr_SetString(PyExc_ValueError, "EntryCodec: geometry out of range");
        goto fail;
    }
    c->entry_size = (unsigned)g[0];
    c->per = (unsigned)g[1];
    c->page_size = g[2];
    c->extent_blocks = g[3];
    c->obj_index_bits = (unsigned)g[4];
    for (int i = 0; i < NFIELDS; i++) {
        unsigned long low, high;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(fields, i), "kk", &low, &high))
            goto fail;
        if (high < low || high - low >= 64 || high >= 8 * c->entry_size) {
            PyErr_SetString(PyExc_ValueError, "EntryCodec: a field is wider than 64 bits or past the entry");
            goto fail;
        }
        c->f[i].low = (unsigned)low;
        c->f[i].width = (unsigned)(high - low + 1);
        c->f[i].mask = c->f[i].width == 64 ? UINT64_MAX : ((uint64_t)1 << c->f[i].width) - 1;
    }
    memset(&c->used[0], 0, sizeof c->used[0]);
    for (int k = 0; k < 3; k++)
        if (wide_from(PyTuple_GET_ITEM(used, k), 8 * c->entry_size, &c->used[k + 1]) < 0)
            goto fail;
    for (int i = 0; i < NFLAGS; i++) {
        c->flag[i] = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(flags, i));
        if (PyErr_Occurred())
            goto fail;
    }
    /* A handle is (key * extent_blocks) << obj_index_bits | obj_idx: it must fit 63 bits. */
    if (c->flag[G_PRIO_SHIFT] > 62 || c->f[F_KEY].width + bits_of(c->extent_blocks) + c->obj_index_bits > 63) {
        PyErr_SetString(PyExc_ValueError, "EntryCodec: a handle would not fit 63 bits");
        goto fail;
    }
    return (PyObject *)c;
fail:
    Py_DECREF(c);
    return NULL;
}

/* ---- decoding -------------------------------------------------------------------------- */

static inline Wide
load(const uint8_t *p, unsigned size)
{
    Wide v = {0, 0};
    for (unsigned k = 0; k < size; k++) {
        if (k < 8)
            v.lo |= (uint64_t)p[k] << (8 * k);
        else
            v.hi |= (uint64_t)p[k] << (8 * (k - 8));
    }
    return v;
}

/* The int a leaf's last entry got for its access time: the pages written, or read, in one second
 * share one (a leaf's entries mostly do), instead of an int each. */
typedef struct {
    uint64_t value;
    PyObject *obj; /* NULL until the first */
} LastInt;

static PyObject *
int_of(LastInt *last, uint64_t value)
{
    if (last->obj == NULL || last->value != value) {
        PyObject *x = PyLong_FromUnsignedLongLong(value);
        if (!x)
            return NULL;
        Py_XSETREF(last->obj, x);
        last->value = value;
    }
    Py_INCREF(last->obj);
    return last->obj;
}

static PyObject *
entry(uint64_t flags, uint64_t handle, uint64_t crc, uint64_t ac_time, LastInt *ac)
{
    PyObject *t = PyTuple_New(4);
    if (!t)
        return NULL;
    uint64_t parts[3] = {flags, handle, crc};
    for (int i = 0; i < 4; i++) {
        PyObject *x = i < 3 ? PyLong_FromUnsignedLongLong(parts[i]) : int_of(ac, ac_time);
        if (!x) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, i, x);
    }
    PyObject_GC_UnTrack(t); /* four ints: see new_entry in kernel/_zsmalloc.c */
    return t;
}

/* One entry: a new reference (None for unwritten), or NULL with *bad set (NULL, *bad 0: an error). */
static PyObject *
decode_one(const Codec *c, Wide v, uint64_t extents, int *bad, LastInt *ac)
{
    const Field *f = c->f;
    unsigned kind = (unsigned)get(&f[F_KIND], v);
    *bad = 1;
    if (kind == KIND_UNWRITTEN) {
        if (v.lo | v.hi)
            return NULL;
        *bad = 0;
        Py_RETURN_NONE;
    }
    if (kind > KIND_WB || (v.lo & ~c->used[kind].lo) || (v.hi & ~c->used[kind].hi))
        return NULL;
    uint64_t flags = 0;
    if (get(&f[F_HUGE], v))
        flags |= c->flag[G_HUGE];
    if (get(&f[F_IDLE], v))
        flags |= c->flag[G_IDLE];
    if (get(&f[F_INCOMP], v))
        flags |= c->flag[G_INCOMP];
    uint64_t ac_time = get(&f[F_AC], v);
    *bad = 0;
    if (kind == KIND_SAME)
        return entry(flags | c->flag[G_SAME], get(&f[F_FILL], v), 0, ac_time, ac);
    if (kind == KIND_WB) {
        uint64_t blk = get(&f[F_BLOCK], v);
        if (blk < 1) {
            *bad = 1;
            return NULL;
        }
        return entry(flags | c->flag[G_WB], blk, get(&f[F_CRC], v), ac_time, ac);
    }
    uint64_t size = get(&f[F_SIZE], v), key = get(&f[F_KEY], v);
    if (size < 1 || size > c->page_size || key < 1 || key >= extents
        || ((flags & c->flag[G_HUGE]) && size != c->page_size)) {
        *bad = 1;
        return NULL;
    }
    flags |= size | get(&f[F_PRIO], v) << c->flag[G_PRIO_SHIFT];
    uint64_t handle = (key * c->extent_blocks) << c->obj_index_bits | get(&f[F_IDX], v);
    return entry(flags, handle, get(&f[F_CRC], v), ac_time, ac);
}

static PyObject *
codec_decode(Codec *c, PyObject *args)
{
    Py_buffer buf;
    PyObject *ext;
    if (!PyArg_ParseTuple(args, "y*O!", &buf, &PyLong_Type, &ext))
        return NULL;
    /* extents: 1 <= key < extents; a negative count admits no key, a huge one every key. */
    int overflow;
    long long signed_extents = PyLong_AsLongLongAndOverflow(ext, &overflow);
    if (signed_extents == -1 && PyErr_Occurred()) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    uint64_t extents = overflow > 0 ? UINT64_MAX : overflow < 0 || signed_extents < 0 ? 0 : (uint64_t)signed_extents;
    PyObject *out = NULL;
    LastInt ac = {0, NULL};
    if ((size_t)buf.len < (size_t)c->per * c->entry_size) {
        PyErr_SetString(PyExc_ValueError, "decode: the payload is shorter than a leaf");
        goto done;
    }
    out = PyList_New(c->per);
    if (!out)
        goto done;
    const uint8_t *p = buf.buf;
    for (unsigned i = 0; i < c->per; i++) {
        int bad;
        PyObject *e = decode_one(c, load(p + (size_t)i * c->entry_size, c->entry_size), extents, &bad, &ac);
        if (!e) {
            Py_CLEAR(out);
            if (bad)
                out = PyLong_FromUnsignedLong(i);
            goto done;
        }
        PyList_SET_ITEM(out, i, e);
    }
done:
    Py_XDECREF(ac.obj);
    PyBuffer_Release(&buf);
    return out;
}

/* ---- encoding -------------------------------------------------------------------------- */

/* A Python int that is a plain u64: 0 and *x set, or 1 (leave it to the reference). */
static inline int
u64_of(PyObject *o, uint64_t *x)
{
    if (!PyLong_Check(o))
        return 1;
    *x = PyLong_AsUnsignedLongLong(o); /* negative or too large: OverflowError, cleared */
    if (*x == (uint64_t)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 1;
    }
    return 0;
}

/* One slot into *v: 0, or 1 when it is anything but a plainly valid entry. */
static int
encode_one(const Codec *c, PyObject *e, Wide *v)
{
    const Field *f = c->f;
    const uint64_t *g = c->flag;
    uint64_t flags, handle, crc, ac_time;
    v->lo = v->hi = 0;
    if (e == Py_None)
        return 0;
    if (!PyTuple_CheckExact(e) || PyTuple_GET_SIZE(e) != 4 || u64_of(PyTuple_GET_ITEM(e, 0), &flags)
        || u64_of(PyTuple_GET_ITEM(e, 1), &handle) || u64_of(PyTuple_GET_ITEM(e, 2), &crc)
        || u64_of(PyTuple_GET_ITEM(e, 3), &ac_time))
        return 1;
    if (flags & ~g[G_KNOWN] || ac_time > f[F_AC].mask)
        return 1;
    put(v, &f[F_AC], ac_time);
    if (flags & g[G_HUGE])
        put(v, &f[F_HUGE], 1);
    if (flags & g[G_IDLE])
        put(v, &f[F_IDLE], 1);
    if (flags & g[G_INCOMP])
        put(v, &f[F_INCOMP], 1);
    uint64_t prio = flags >> g[G_PRIO_SHIFT] & g[G_PRIO_MASK];
    uint64_t size = flags & g[G_SIZE_MASK];
    if (flags & g[G_SAME]) {
        if (flags & (g[G_WB] | g[G_HUGE]) || prio || size || crc || handle > f[F_FILL].mask)
            return 1;
        put(v, &f[F_FILL], handle);
        put(v, &f[F_KIND], KIND_SAME);
        return 0;
    }
    if (flags & g[G_WB]) {
        if (flags & g[G_HUGE] || prio || size || handle < 1 || handle > f[F_BLOCK].mask || crc > f[F_CRC].mask)
            return 1;
        put(v, &f[F_CRC], crc);
        put(v, &f[F_BLOCK], handle);
        put(v, &f[F_KIND], KIND_WB);
        return 0;
    }
    if (size < 1 || size > c->page_size || (size != c->page_size && flags & g[G_HUGE]))
        return 1;
    uint64_t first = handle >> c->obj_index_bits, idx = handle & (((uint64_t)1 << c->obj_index_bits) - 1);
    uint64_t key = first / c->extent_blocks;
    if (first % c->extent_blocks || key > f[F_KEY].mask || idx > f[F_IDX].mask || size > f[F_SIZE].mask
        || prio > f[F_PRIO].mask || crc > f[F_CRC].mask)
        return 1;
    put(v, &f[F_CRC], crc);
    put(v, &f[F_KEY], key);
    put(v, &f[F_IDX], idx);
    put(v, &f[F_SIZE], size);
    put(v, &f[F_PRIO], prio);
    put(v, &f[F_KIND], KIND_OBJECT);
    return 0;
}

static PyObject *
codec_encode(Codec *c, PyObject *entries)
{
    PyObject *seq = PySequence_Fast(entries, "encode: entries must be a sequence");
    if (!seq)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject *out = NULL;
    if (n > (Py_ssize_t)c->per) {
        PyErr_SetString(PyExc_ValueError, "encode: more entries than a leaf holds");
        goto done;
    }
    out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)c->per * c->entry_size);
    if (!out)
        goto done;
    uint8_t *p = (uint8_t *)PyBytes_AS_STRING(out);
    memset(p, 0, (size_t)c->per * c->entry_size);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        Wide v;
        if (encode_one(c, items[i], &v)) {
            Py_CLEAR(out);
            out = PyLong_FromSsize_t(i);
            goto done;
        }
        uint8_t *q = p + (size_t)i * c->entry_size;
        for (unsigned k = 0; k < c->entry_size; k++)
            q[k] = (uint8_t)(k < 8 ? v.lo >> (8 * k) : v.hi >> (8 * (k - 8)));
    }
done:
    Py_DECREF(seq);
    return out;
}

static PyMethodDef codec_methods[] = {
    {"decode", (PyCFunction)codec_decode, METH_VARARGS,
     "decode(payload, extents) -> list[Entry | None] | int: a leaf's entries, or the index of the first "
     "entry left to the reference decoder."},
    {"encode", (PyCFunction)codec_encode, METH_O,
     "encode(entries) -> bytes | int: a leaf's entries, zero-padded to a whole leaf, or the index of the "
     "first entry left to the reference encoder."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CodecType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "zramctl.image._codec.EntryCodec",
    .tp_basicsize = sizeof(Codec),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "EntryCodec(fields, used, flags, geometry): page-table leaves, by the layout handed in.",
    .tp_new = codec_new,
    .tp_methods = codec_methods,
};

/* ---- zspage records ------------------------------------------------------------------------ */

enum { R_KIND, R_CLS, R_FULLNESS, R_INUSE, R_FREEOBJ, R_PREV, R_NEXT, R_OWNER, RFIELDS };
enum { C_ZSPAGE, C_NO_FREEOBJ, C_ISOLATED, C_NO_KEY, C_FREE_END, C_NO_ZSPAGE, RCONSTS };
enum { A_CLS, A_FULLNESS, A_INUSE, A_FREEOBJ, A_PREV, A_NEXT, A_OWNER, RATTRS };
static const char *const attr_names[RATTRS] = {"cls", "fullness", "inuse", "freeobj", "prev", "next", "owner"};

typedef struct {
    PyObject_HEAD
    Field f[RFIELDS];
    long long c[RCONSTS];
    unsigned record_size, per;
    long long extent_blocks;
    PyObject *zspage_type;
    PyObject *attrs[RATTRS]; /* interned attribute names */
} RecordCodec;

static void
record_dealloc(RecordCodec *r)
{
    Py_XDECREF(r->zspage_type);
    for (int i = 0; i < RATTRS; i++)
        Py_XDECREF(r->attrs[i]);
    Py_TYPE(r)->tp_free((PyObject *)r);
}

static PyObject *
record_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"fields", "consts", "geometry", "zspage_type", NULL};
    PyObject *fields, *consts, *zspage_type;
    unsigned long long g[3];
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!(KKK)O!", kwlist, &PyTuple_Type, &fields, &PyTuple_Type,
                                     &consts, &g[0], &g[1], &g[2], &PyType_Type, &zspage_type))
        return NULL;
    if (PyTuple_GET_SIZE(fields) != RFIELDS || PyTuple_GET_SIZE(consts) != RCONSTS) {
        PyErr_SetString(PyExc_ValueError, "RecordCodec: 8 fields and 6 constants");
        return NULL;
    }
    RecordCodec *r = (RecordCodec *)type->tp_alloc(type, 0);
    if (!r)
        return NULL;
    if (g[0] < 1 || g[0] > 16 || g[1] < 1 || g[1] > 4096 || g[2] < 1 || g[2] > 64) {
        PyErr_SetString(PyExc_ValueError, "RecordCodec: geometry out of range");
        goto fail;
    }
    r->record_size = (unsigned)g[0];
    r->per = (unsigned)g[1];
    r->extent_blocks = (long long)g[2];
    for (int i = 0; i < RFIELDS; i++) {
        unsigned long low, high;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(fields, i), "kk", &low, &high))
            goto fail;
        if (high < low || high - low >= 63 || high >= 8 * r->record_size) {
            PyErr_SetString(PyExc_ValueError, "RecordCodec: a field is wider than 63 bits or past the record");
            goto fail;
        }
        r->f[i].low = (unsigned)low;
        r->f[i].width = (unsigned)(high - low + 1);
        r->f[i].mask = ((uint64_t)1 << r->f[i].width) - 1;
    }
    for (int i = 0; i < RCONSTS; i++) {
        r->c[i] = PyLong_AsLongLong(PyTuple_GET_ITEM(consts, i));
        if (r->c[i] == -1 && PyErr_Occurred())
            goto fail;
    }
    Py_INCREF(zspage_type);
    r->zspage_type = zspage_type;
    for (int i = 0; i < RATTRS; i++)
        if (!(r->attrs[i] = PyUnicode_InternFromString(attr_names[i])))
            goto fail;
    return (PyObject *)r;
fail:
    Py_DECREF(r);
    return NULL;
}

/* Whether v is below 2**(8 * size). */
static inline int
wide_fits(Wide v, unsigned size)
{
    if (size >= 16)
        return 1;
    if (size > 8)
        return !(v.hi >> (8 * (size - 8)));
    return !v.hi && (size == 8 || !(v.lo >> (8 * size)));
}

/* A value that fits a field (0 <= x <= mask): 0, else 1. */
static inline int
fits(const Field *f, long long x)
{
    return !(x >= 0 && (uint64_t)x <= f->mask);
}

/* A list link as stored: NO_KEY for none, else the extent number; 1 when it does not fit. */
static inline int
link_key(const RecordCodec *r, const Field *f, long long first, uint64_t *key)
{
    if (first == r->c[C_NO_ZSPAGE]) {
        *key = (uint64_t)r->c[C_NO_KEY];
        return fits(f, r->c[C_NO_KEY]);
    }
    if (first < 0 || (uint64_t)(first / r->extent_blocks) > f->mask)
        return 1;
    *key = (uint64_t)(first / r->extent_blocks);
    return 0;
}

/* One slot into *v: 0, or 1 when it is anything the reference should see (or -1: an error). */
static int
record_one(const RecordCodec *r, PyObject *s, PyObject *huge, Wide *v)
{
    const Field *f = r->f;
    long long a[RATTRS];
    v->lo = v->hi = 0;
    if (PyLong_Check(s)) { /* a free, metadata or blob extent: the record is the kind itself */
        uint64_t x;
        if (u64_of(s, &x))
            return 1;
        v->lo = x;
        return 0;
    }
    if ((PyObject *)Py_TYPE(s) != r->zspage_type)
        return 1;
    for (int i = 0; i < RATTRS; i++) {
        PyObject *o = PyObject_GetAttr(s, r->attrs[i]);
        if (!o) {
            PyErr_Clear();
            return 1;
        }
        int overflow = 0;
        a[i] = PyLong_Check(o) ? PyLong_AsLongLongAndOverflow(o, &overflow) : 0;
        int bad = !PyLong_Check(o) || overflow || (a[i] == -1 && PyErr_Occurred());
        Py_DECREF(o);
        if (bad) {
            PyErr_Clear();
            return 1;
        }
    }
    Py_ssize_t nhuge = PySequence_Fast_GET_SIZE(huge);
    if (a[A_CLS] < 0 || a[A_CLS] >= nhuge || fits(&f[R_CLS], a[A_CLS]) || fits(&f[R_INUSE], a[A_INUSE]))
        return 1;
    long long freeobj = a[A_FREEOBJ] == r->c[C_FREE_END] ? r->c[C_NO_FREEOBJ] : a[A_FREEOBJ];
    long long fullness = (long long)((uint64_t)a[A_FULLNESS] & (uint64_t)r->c[C_ISOLATED]);
    if (fits(&f[R_FREEOBJ], freeobj) || fits(&f[R_FULLNESS], fullness) || fits(&f[R_KIND], r->c[C_ZSPAGE]))
        return 1;
    put(v, &f[R_KIND], (uint64_t)r->c[C_ZSPAGE]);
    put(v, &f[R_CLS], (uint64_t)a[A_CLS]);
    put(v, &f[R_FULLNESS], (uint64_t)fullness);
    put(v, &f[R_INUSE], (uint64_t)a[A_INUSE]);
    put(v, &f[R_FREEOBJ], (uint64_t)freeobj);
    int is_huge = PyObject_IsTrue(PySequence_Fast_GET_ITEM(huge, a[A_CLS]));
    if (is_huge < 0)
        return -1;
    if (is_huge) {
        if (a[A_PREV] != r->c[C_NO_ZSPAGE] || a[A_NEXT] != r->c[C_NO_ZSPAGE] || a[A_OWNER] == LLONG_MAX
            || fits(&f[R_OWNER], a[A_OWNER] + 1))
            return 1;
        put(v, &f[R_OWNER], (uint64_t)(a[A_OWNER] + 1));
        return 0;
    }
    uint64_t prev, next;
    if (link_key(r, &f[R_PREV], a[A_PREV], &prev) || link_key(r, &f[R_NEXT], a[A_NEXT], &next))
        return 1;
    put(v, &f[R_PREV], prev);
    put(v, &f[R_NEXT], next);
    return 0;
}

static PyObject *
record_encode(RecordCodec *r, PyObject *args)
{
    PyObject *slots, *huge;
    if (!PyArg_ParseTuple(args, "OO", &slots, &huge))
        return NULL;
    PyObject *seq = PySequence_Fast(slots, "encode: slots must be a sequence");
    if (!seq)
        return NULL;
    PyObject *hseq = PySequence_Fast(huge, "encode: huge must be a sequence");
    PyObject *out = NULL;
    if (!hseq)
        goto done;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > (Py_ssize_t)r->per) {
        PyErr_SetString(PyExc_ValueError, "encode: more records than a leaf holds");
        goto done;
    }
    out = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)r->record_size);
    if (!out)
        goto done;
    uint8_t *p = (uint8_t *)PyBytes_AS_STRING(out);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        Wide v;
        int rc = record_one(r, items[i], hseq, &v);
        if (rc == 0 && !wide_fits(v, r->record_size)) /* the reference's to_bytes would refuse it */
            rc = 1;
        if (rc) {
            Py_CLEAR(out);
            if (rc > 0)
                out = PyLong_FromSsize_t(i);
            goto done;
        }
        uint8_t *q = p + (size_t)i * r->record_size;
        for (unsigned k = 0; k < r->record_size; k++)
            q[k] = (uint8_t)(k < 8 ? v.lo >> (8 * k) : v.hi >> (8 * (k - 8)));
    }
done:
    Py_DECREF(seq);
    Py_XDECREF(hseq);
    return out;
}

/* Set attribute ``i`` of ``o`` to the int ``x``: 0, or -1 with an exception. */
static int
set_int(const RecordCodec *r, PyObject *o, int i, long long x)
{
    PyObject *v = PyLong_FromLongLong(x);
    if (!v)
        return -1;
    int rc = PyObject_SetAttr(o, r->attrs[i], v);
    Py_DECREF(v);
    return rc;
}

/* A Python int as a long long: 0, or 1 (not an int, or too large) with no exception left. */
static int
ll_of(PyObject *o, long long *x)
{
    int overflow = 0;
    if (!PyLong_Check(o))
        return 1;
    *x = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow || (*x == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 1;
    }
    return 0;
}

/* One record: a new reference (a kind int or a ZsPage), NULL with *bad set for the reference, or
 * NULL with *bad 0 and an exception. */
static PyObject *
record_decode_one(const RecordCodec *r, Wide v, long long first, PyObject *huge, PyObject *objs,
                  long long ngroups, int *bad)
{
    const Field *f = r->f;
    uint64_t kind = get(&f[R_KIND], v);
    *bad = 1;
    if ((long long)kind != r->c[C_ZSPAGE]) {
        /* nothing above the kind: the bits from R_CLS.low up are zero */
        Wide rest = v;
        if (f[R_CLS].low >= 64) {
            rest.lo = 0;
            rest.hi = v.hi >> (f[R_CLS].low - 64);
        } else if (f[R_CLS].low) {
            rest.lo = v.lo >> f[R_CLS].low | v.hi << (64 - f[R_CLS].low);
            rest.hi = v.hi >> f[R_CLS].low;
        }
        if (rest.lo | rest.hi)
            return NULL;
        *bad = 0;
        return PyLong_FromUnsignedLongLong(kind);
    }
    long long cls = (long long)get(&f[R_CLS], v), fg = (long long)get(&f[R_FULLNESS], v);
    long long inuse = (long long)get(&f[R_INUSE], v), free = (long long)get(&f[R_FREEOBJ], v), n;
    if (cls >= PySequence_Fast_GET_SIZE(huge) || cls >= PySequence_Fast_GET_SIZE(objs)
        || ll_of(PySequence_Fast_GET_ITEM(objs, cls), &n))
        return NULL;
    if (inuse > n || (free != r->c[C_NO_FREEOBJ] && free >= n) || (fg >= ngroups && fg != r->c[C_ISOLATED]))
        return NULL;
    int is_huge = PyObject_IsTrue(PySequence_Fast_GET_ITEM(huge, cls));
    *bad = 0;
    if (is_huge < 0)
        return NULL;
    PyObject *z = PyObject_CallFunction(r->zspage_type, "LL", first, cls);
    if (!z)
        return NULL;
    if (set_int(r, z, A_INUSE, inuse) < 0
        || set_int(r, z, A_FREEOBJ, free == r->c[C_NO_FREEOBJ] ? r->c[C_FREE_END] : free) < 0
        || set_int(r, z, A_FULLNESS, fg == r->c[C_ISOLATED] ? -1 : fg) < 0)
        goto fail;
    if (is_huge) {
        if (set_int(r, z, A_OWNER, (long long)get(&f[R_OWNER], v) - 1) < 0)
            goto fail;
    } else {
        long long links[2] = {(long long)get(&f[R_PREV], v), (long long)get(&f[R_NEXT], v)};
        for (int k = 0; k < 2; k++) {
            long long first_frame = links[k] == r->c[C_NO_KEY] ? r->c[C_NO_ZSPAGE] : links[k] * r->extent_blocks;
            if (set_int(r, z, k ? A_NEXT : A_PREV, first_frame) < 0)
                goto fail;
        }
    }
    return z;
fail:
    Py_DECREF(z);
    return NULL;
}

static PyObject *
record_decode(RecordCodec *r, PyObject *args)
{
    Py_buffer buf;
    PyObject *first_key, *huge, *objs, *ngroups_obj;
    if (!PyArg_ParseTuple(args, "y*OOOO", &buf, &first_key, &huge, &objs, &ngroups_obj))
        return NULL;
    PyObject *hseq = NULL, *oseq = NULL, *out = NULL;
    long long key0, ngroups;
    if ((size_t)buf.len < (size_t)r->per * r->record_size) {
        PyErr_SetString(PyExc_ValueError, "decode: the payload is shorter than a leaf");
        goto done;
    }
    hseq = PySequence_Fast(huge, "decode: huge must be a sequence");
    oseq = hseq ? PySequence_Fast(objs, "decode: objs must be a sequence") : NULL;
    if (!oseq)
        goto done;
    /* keys and frame numbers far below 2**62: anything else is the reference's to judge */
    if (ll_of(first_key, &key0) || ll_of(ngroups_obj, &ngroups) || key0 < 0 || key0 > ((long long)1 << 40)) {
        out = PyLong_FromLong(0);
        goto done;
    }
    out = PyList_New(r->per);
    if (!out)
        goto done;
    const uint8_t *p = buf.buf;
    for (unsigned i = 0; i < r->per; i++) {
        int bad;
        PyObject *e = record_decode_one(r, load(p + (size_t)i * r->record_size, r->record_size),
                                        (key0 + (long long)i) * r->extent_blocks, hseq, oseq, ngroups, &bad);
        if (!e) {
            Py_CLEAR(out);
            if (bad)
                out = PyLong_FromUnsignedLong(i);
            goto done;
        }
        PyList_SET_ITEM(out, i, e);
    }
done:
    Py_XDECREF(hseq);
    Py_XDECREF(oseq);
    PyBuffer_Release(&buf);
    return out;
}

static PyMethodDef record_methods[] = {
    {"encode", (PyCFunction)record_encode, METH_VARARGS,
     "encode(slots, huge) -> bytes | int: a leaf's records, or the index of the first slot left to the "
     "reference encoder."},
    {"decode", (PyCFunction)record_decode, METH_VARARGS,
     "decode(payload, first_key, huge, objs, ngroups) -> list[Slot] | int: a leaf's slots, or the index "
     "of the first record left to the reference decoder."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject RecordCodecType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "zramctl.image._codec.RecordCodec",
    .tp_basicsize = sizeof(RecordCodec),
    .tp_dealloc = (destructor)record_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "RecordCodec(fields, consts, geometry, zspage_type): zspage-record leaves, by the layout handed in.",
    .tp_new = record_new,
    .tp_methods = record_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_codec", "Page-table and zspage-record leaves of zram-image(5), by layouts from format.py.",
    -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__codec(void)
{
    if (PyType_Ready(&CodecType) < 0 || PyType_Ready(&RecordCodecType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    Py_INCREF(&CodecType);
    if (PyModule_AddObject(m, "EntryCodec", (PyObject *)&CodecType) < 0) {
        Py_DECREF(&CodecType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&RecordCodecType);
    if (PyModule_AddObject(m, "RecordCodec", (PyObject *)&RecordCodecType) < 0) {
        Py_DECREF(&RecordCodecType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
