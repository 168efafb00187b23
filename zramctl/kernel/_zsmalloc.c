/*
 * _zsmalloc: zsmalloc, and zram's per-page write and read paths, compiled, for a device in memory.
 *
 * zramctl/kernel/zsmalloc.py is the readable reference; this file does the same work in the
 * same order, so that every handle, free-chain word, list link and counter is the one the
 * reference would have: tests/test_zsmalloc_compiled.py runs both on the same operations and
 * compares everything, frames byte for byte.  Read the reference for the why of each step; the
 * comments here say only what differs in the doing.
 *
 *   Pool(geometry...)                      a zs_pool whose zspages and frames live in C memory
 *   Pool.zs_malloc / zs_free / zs_obj_write / zs_obj_read / zs_compact
 *   Pool.store_pages(table, index, pages, comps, ...)
 *                                          zram's _store_page for a run of whole pages
 *   Pool.read_pages(table, index, count, out, ...)
 *                                          zram's _read_entry for a run of pages
 *   read_entries(entries, start, out, ...) the same over the Python pool of an image, a table
 *                                          leaf at a time (its zspages are described to it,
 *                                          checked, by zsmalloc.Pool.object_zspage), decoding
 *                                          without the GIL; list_entries, the same in two steps
 *                                          (Listed.decode, on any thread); access_entries, the
 *                                          access times of the pages it read
 *   store_entries(entries, start, index, pages, comps, geometry, ...)
 *                                          zram's _store_page over the Python pool of an image,
 *                                          a table leaf's free slots at a time, changing the
 *                                          pool's records in place (the common case only: the
 *                                          rest is handed back)
 *
 * Only a trusted pool is compiled (memory, never an image): the checks zsmalloc.py makes of
 * untrusted frames are not made here, but every index into C memory is still bounds-checked,
 * so a caller's mistake is an exception, never a stray write.  read_entries reads an image's
 * objects, but only out of bytes a zspage's description hands it, each object checked to lie
 * inside them and against its CRC before it is decoded; anything else is handed back.
 * store_entries writes an image's objects only into zspages whose free chain the reference
 * has checked, after the reference's head check, into frames the image holds open for
 * writing, each write checked to lie inside its frame; anything else is handed back.
 *
 * Frames: a zspage's pages_per_zspage frames are one calloc'd block; frame numbers are handed
 * out as MemoryFrames hands them (a counter, from 0 after destroy), and a zspage is found by
 * its first frame in a two-level array whose chunks are freed when they empty.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PAGE_SIZE 4096
#define PAGE_SHIFT 12
#define OBJ_TAG_BITS 1
#define OBJ_ALLOCATED_TAG 1ULL
#define OBJ_INDEX_BITS 11
#define OBJ_INDEX_MASK ((1LL << OBJ_INDEX_BITS) - 1)
#define FREE_END ((1ULL << 63) - 1)
#define NO_ZSPAGE (-1LL)
#define MAX_GROUPS 16
#define MAX_LISTS 16
#define MAX_CHAIN 16
#define MAX_HANDLE_SIZE 8
/* Sizes zs_malloc can be asked for, handle header included. */
#define SIZE_LOOKUP (PAGE_SIZE + MAX_HANDLE_SIZE + 1)
/* First frames per chunk of the zspage map. */
#define CHUNK_SHIFT 12
#define CHUNK_FRAMES (1 << CHUNK_SHIFT)

/* zram's slot flags and the profile switches store_pages is given (zram_drv.py's values). */
#define ZRAM_FLAG_SHIFT (PAGE_SHIFT + 1)
#define ZRAM_SIZE_MASK ((1ULL << ZRAM_FLAG_SHIFT) - 1)
#define ZRAM_SAME (1ULL << ZRAM_FLAG_SHIFT)
#define ZRAM_WB (1ULL << (ZRAM_FLAG_SHIFT + 2))
#define ZRAM_PP_SLOT (1ULL << (ZRAM_FLAG_SHIFT + 3))
#define ZRAM_HUGE (1ULL << (ZRAM_FLAG_SHIFT + 4))
#define ZRAM_IDLE (1ULL << (ZRAM_FLAG_SHIFT + 5))
#define ZRAM_COMP_PRIORITY_SHIFT (ZRAM_FLAG_SHIFT + 7)
#define ZRAM_ACCESS_CLEARS (ZRAM_IDLE | ZRAM_PP_SLOT)

#define P_SAME_WORD 1
#define P_SAME_COUNTS_STORED 2
#define P_HUGE_BY_CLASS 4
#define P_FREE_OLD_FIRST 8
#define P_MEM_LIMIT 16

typedef struct zspage {
    int64_t first;
    int64_t prev, next; /* first frames on the fullness list; NO_ZSPAGE for none */
    int64_t owner;      /* a huge zspage's only object's owner; -1 none */
    uint64_t freeobj;   /* first free object; FREE_END when full */
    int32_t cls;        /* position of the class */
    int32_t inuse;
    int32_t fullness;   /* -1: isolated, or not yet inserted */
    uint8_t *mem;       /* pages_per_zspage * PAGE_SIZE bytes */
} zspage_t;

typedef struct {
    int32_t index, size, pages, objs;
    int huge;
    int64_t objs_allocated, objs_inuse;
    int64_t heads[MAX_LISTS];
    int64_t zspages[MAX_GROUPS];
    int8_t *group_of; /* inuse 0..objs -> fullness group */
} sclass_t;

typedef struct {
    int64_t live;
    zspage_t *at[CHUNK_FRAMES];
} chunk_t;

typedef struct {
    PyObject_HEAD
    sclass_t *classes;
    int nclasses;
    int16_t class_of_size[SIZE_LOOKUP];
    int ngroups, nlists, nalloc, empty, full;
    int8_t list_index[MAX_GROUPS]; /* group -> list, -1 unlisted */
    int8_t alloc_lists[MAX_LISTS];  /* find_get_zspage()'s lists, in order */
    int8_t listed[MAX_LISTS];       /* listed groups, emptiest first (compaction's order) */
    int handle_size;
    int64_t pages_allocated, pages_compacted, next_frame;
    uint64_t version; /* changes with every change of state (for snapshots) */
    chunk_t **chunks;
    size_t nchunks;
    PyObject *relocate; /* relocate(owner, handle): compaction moved an object */
    PyObject *crc32;    /* zlib.crc32 */
} PoolObject;

static PyObject *ZsError; /* a caller's mistake the reference would fail on (zsmalloc.py raises KeyError) */

/* Every method starts with this: a Pool made with __new__ and never initialised has no classes. */
#define REQUIRE_INIT(p)                                                    \
    do {                                                                   \
        if ((p)->classes == NULL) {                                        \
            PyErr_SetString(PyExc_RuntimeError, "Pool is not initialised"); \
            return NULL;                                                   \
        }                                                                  \
    } while (0)

/* _kcomp's checked decoders, by compress_pages' kind (0 lzo, 1 lzo-rle, 2 lz4): read_pages calls
 * them directly for a priority whose backend names one (Backend.decoder). */
typedef int (*decode_fn)(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_cap, size_t *out_len);
#define NDECODERS 3
static const decode_fn *decoders;

/* ---- words in frames ------------------------------------------------------------------- */

static inline uint64_t
get_word(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static inline void
put_word(uint8_t *p, uint64_t v)
{
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    memcpy(p, &v, 8);
}

/* ---- the zspage map: first frame -> zspage ---------------------------------------------- */

static zspage_t *
zspage_at(PoolObject *p, int64_t first)
{
    if (first < 0)
        return NULL;
    size_t c = (size_t)first >> CHUNK_SHIFT;
    if (c >= p->nchunks || p->chunks[c] == NULL)
        return NULL;
    return p->chunks[c]->at[first & (CHUNK_FRAMES - 1)];
}

static int
map_set(PoolObject *p, int64_t first, zspage_t *zs)
{
    size_t c = (size_t)first >> CHUNK_SHIFT;
    if (c >= p->nchunks) {
        size_t n = p->nchunks ? p->nchunks : 16;
        while (n <= c)
            n *= 2;
        chunk_t **grown = realloc(p->chunks, n * sizeof(*grown));
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        memset(grown + p->nchunks, 0, (n - p->nchunks) * sizeof(*grown));
        p->chunks = grown;
        p->nchunks = n;
    }
    if (p->chunks[c] == NULL) {
        p->chunks[c] = calloc(1, sizeof(chunk_t));
        if (p->chunks[c] == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    p->chunks[c]->at[first & (CHUNK_FRAMES - 1)] = zs;
    p->chunks[c]->live++;
    return 0;
}

static void
map_clear(PoolObject *p, int64_t first)
{
    size_t c = (size_t)first >> CHUNK_SHIFT;
    chunk_t *ch = p->chunks[c];
    ch->at[first & (CHUNK_FRAMES - 1)] = NULL;
    /* A chunk below the counter never gets another zspage: free it when it empties. */
    if (--ch->live == 0 && ((size_t)p->next_frame >> CHUNK_SHIFT) > c) {
        free(ch);
        p->chunks[c] = NULL;
    }
}

/* ---- fullness lists (insert_zspage, remove_zspage, fix_fullness_group) ----------------- */

static void
insert_zspage(PoolObject *p, sclass_t *cls, zspage_t *zs, int fg)
{
    zs->fullness = fg;
    cls->zspages[fg]++;
    int li = p->list_index[fg];
    if (li < 0)
        return;
    int64_t head = cls->heads[li];
    zs->prev = NO_ZSPAGE;
    zs->next = head;
    if (head != NO_ZSPAGE)
        zspage_at(p, head)->prev = zs->first;
    cls->heads[li] = zs->first;
}

static void
remove_zspage(PoolObject *p, sclass_t *cls, zspage_t *zs)
{
    int fg = zs->fullness;
    int li = p->list_index[fg];
    cls->zspages[fg]--;
    if (li < 0)
        return;
    zspage_t *prev = zs->prev != NO_ZSPAGE ? zspage_at(p, zs->prev) : NULL;
    zspage_t *next = zs->next != NO_ZSPAGE ? zspage_at(p, zs->next) : NULL;
    if (prev != NULL)
        prev->next = zs->next;
    else
        cls->heads[li] = zs->next;
    if (next != NULL)
        next->prev = zs->prev;
    zs->prev = zs->next = NO_ZSPAGE;
}

static int
fix_fullness_group(PoolObject *p, sclass_t *cls, zspage_t *zs)
{
    int fg = cls->group_of[zs->inuse];
    if (fg != zs->fullness) {
        remove_zspage(p, cls, zs);
        insert_zspage(p, cls, zs, fg);
    }
    return fg;
}

/* ---- zspages and objects ------------------------------------------------------------------ */

static zspage_t *
alloc_zspage(PoolObject *p, int pos)
{
    sclass_t *cls = &p->classes[pos];
    zspage_t *zs = calloc(1, sizeof(*zs));
    if (zs == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    zs->mem = calloc((size_t)cls->pages, PAGE_SIZE);
    if (zs->mem == NULL) {
        free(zs);
        PyErr_NoMemory();
        return NULL;
    }
    zs->first = p->next_frame;
    if (map_set(p, zs->first, zs) < 0) {
        free(zs->mem);
        free(zs);
        return NULL;
    }
    p->next_frame += cls->pages;
    zs->cls = pos;
    zs->fullness = -1;
    zs->prev = zs->next = NO_ZSPAGE;
    zs->owner = -1;
    /* init_zspage(): every slot on the free chain, 0 -> 1 -> ... -> FREE_END. */
    for (int32_t idx = 0; idx < cls->objs; idx++) {
        uint64_t nxt = idx + 1 < cls->objs ? (uint64_t)idx + 1 : FREE_END;
        put_word(zs->mem + (size_t)idx * cls->size, nxt << OBJ_TAG_BITS);
    }
    zs->freeobj = 0;
    p->pages_allocated += cls->pages;
    cls->objs_allocated += cls->objs;
    return zs;
}

static void
free_zspage(PoolObject *p, sclass_t *cls, zspage_t *zs)
{
    remove_zspage(p, cls, zs);
    cls->objs_allocated -= cls->objs;
    p->pages_allocated -= cls->pages;
    map_clear(p, zs->first);
    free(zs->mem);
    free(zs);
}

static int32_t
obj_malloc(PoolObject *p, sclass_t *cls, zspage_t *zs, int64_t owner)
{
    int32_t idx = (int32_t)zs->freeobj;
    uint8_t *slot = zs->mem + (size_t)idx * cls->size;
    zs->freeobj = get_word(slot) >> OBJ_TAG_BITS;
    zs->inuse++;
    if (cls->huge)
        zs->owner = owner;
    else if (p->handle_size)
        put_word(slot, (uint64_t)owner << OBJ_TAG_BITS | OBJ_ALLOCATED_TAG);
    return idx;
}

static void
obj_free(sclass_t *cls, zspage_t *zs, int32_t idx)
{
    put_word(zs->mem + (size_t)idx * cls->size, zs->freeobj << OBJ_TAG_BITS);
    zs->freeobj = (uint64_t)idx;
    zs->inuse--;
    if (cls->huge)
        zs->owner = -1;
}

/* zs_malloc for a size already checked (1..PAGE_SIZE): the handle, or -1 with an exception. */
static int64_t
pool_malloc(PoolObject *p, int size, int64_t owner)
{
    int pos = p->class_of_size[size + p->handle_size];
    sclass_t *cls = &p->classes[pos];
    zspage_t *zs = NULL;
    for (int k = 0; k < p->nalloc; k++) {
        int64_t head = cls->heads[p->alloc_lists[k]];
        if (head != NO_ZSPAGE) {
            zs = zspage_at(p, head);
            break;
        }
    }
    int32_t idx;
    if (zs == NULL) {
        zs = alloc_zspage(p, pos);
        if (zs == NULL)
            return -1;
        idx = obj_malloc(p, cls, zs, owner);
        insert_zspage(p, cls, zs, cls->group_of[zs->inuse]);
    } else {
        idx = obj_malloc(p, cls, zs, owner);
        fix_fullness_group(p, cls, zs);
    }
    cls->objs_inuse++;
    p->version++;
    return zs->first << OBJ_INDEX_BITS | idx;
}

/* The zspage a handle names and the slot index; NULL with ZsError when there is none. */
static zspage_t *
handle_zspage(PoolObject *p, int64_t handle, int32_t *idx)
{
    zspage_t *zs = handle >= 0 ? zspage_at(p, handle >> OBJ_INDEX_BITS) : NULL;
    if (zs == NULL || (handle & OBJ_INDEX_MASK) >= p->classes[zs->cls].objs) {
        PyErr_Format(ZsError, "handle %lld names no object", (long long)handle);
        return NULL;
    }
    *idx = (int32_t)(handle & OBJ_INDEX_MASK);
    return zs;
}

static int
pool_free(PoolObject *p, int64_t handle)
{
    int32_t idx;
    zspage_t *zs = handle_zspage(p, handle, &idx);
    if (zs == NULL)
        return -1;
    sclass_t *cls = &p->classes[zs->cls];
    obj_free(cls, zs, idx);
    cls->objs_inuse--;
    if (fix_fullness_group(p, cls, zs) == p->empty)
        free_zspage(p, cls, zs);
    p->version++;
    return 0;
}

/* Where an object's data starts (past the handle header of a non-huge class) and how much room
 * its slot has there; NULL with ZsError for a bad handle. */
static uint8_t *
payload(PoolObject *p, int64_t handle, size_t *room)
{
    int32_t idx;
    zspage_t *zs = handle_zspage(p, handle, &idx);
    if (zs == NULL)
        return NULL;
    sclass_t *cls = &p->classes[zs->cls];
    size_t off = (size_t)idx * cls->size + (cls->huge ? 0 : (size_t)p->handle_size);
    *room = (size_t)cls->size - (cls->huge ? 0 : (size_t)p->handle_size);
    return zs->mem + off;
}

/* An object of `length` bytes at `handle`: where its data starts, or NULL with ZsError when the
 * handle names no object or the length (1 .. its slot's room) does not fit. */
static uint8_t *
object_at(PoolObject *p, int64_t handle, Py_ssize_t length)
{
    size_t room;
    uint8_t *at = payload(p, handle, &room);
    if (at != NULL && (length < 1 || (size_t)length > room)) {
        PyErr_Format(ZsError, "a %zd-byte object does not fit its %zu-byte slot", length, room);
        return NULL;
    }
    return at;
}

/* ---- compaction (__zs_compact) ------------------------------------------------------------ */

static int64_t
can_compact(sclass_t *cls)
{
    int64_t wasted = cls->objs_allocated - cls->objs_inuse;
    if (wasted <= 0)
        return 0;
    return wasted / cls->objs * cls->pages;
}

/* Take the head of the first non-empty list of the groups (listed[] read forwards or backwards). */
static zspage_t *
isolate(PoolObject *p, sclass_t *cls, int backwards)
{
    for (int k = 0; k < p->nlists; k++) {
        int fg = p->listed[backwards ? p->nlists - 1 - k : k];
        int64_t head = cls->heads[p->list_index[fg]];
        if (head != NO_ZSPAGE) {
            zspage_t *zs = zspage_at(p, head);
            remove_zspage(p, cls, zs);
            zs->fullness = -1;
            return zs;
        }
    }
    return NULL;
}

static int
putback(PoolObject *p, sclass_t *cls, zspage_t *zs)
{
    int fg = cls->group_of[zs->inuse];
    insert_zspage(p, cls, zs, fg);
    return fg;
}

static int
migrate_zspage(PoolObject *p, sclass_t *cls, zspage_t *src, zspage_t *dst)
{
    for (int32_t idx = 0; idx < cls->objs; idx++) {
        const uint8_t *slot = src->mem + (size_t)idx * cls->size;
        uint64_t word = get_word(slot);
        if (!(word & OBJ_ALLOCATED_TAG))
            continue;
        int64_t owner = (int64_t)(word >> OBJ_TAG_BITS);
        int32_t new_idx = obj_malloc(p, cls, dst, owner);
        memcpy(dst->mem + (size_t)new_idx * cls->size, slot, (size_t)cls->size);
        obj_free(cls, src, idx);
        if (p->relocate != Py_None) {
            PyObject *r = PyObject_CallFunction(p->relocate, "LL", (long long)owner,
                                                (long long)(dst->first << OBJ_INDEX_BITS | new_idx));
            if (r == NULL)
                return -1;
            Py_DECREF(r);
        }
        if (dst->inuse == cls->objs || src->inuse == 0)
            break;
    }
    return 0;
}

static int64_t
compact_class(PoolObject *p, sclass_t *cls)
{
    int64_t freed = 0, rounds = 2;
    zspage_t *dst = NULL;
    for (int g = 0; g < p->ngroups; g++)
        rounds += 2 * cls->zspages[g];
    while (can_compact(cls)) {
        if (--rounds < 0) {
            PyErr_Format(ZsError, "compaction of class %d does not end: its lists or counts are wrong",
                         cls->index);
            return -1;
        }
        if (dst == NULL) {
            dst = isolate(p, cls, 1);
            if (dst == NULL)
                break;
        }
        zspage_t *src = isolate(p, cls, 0);
        if (src == NULL)
            break;
        if (migrate_zspage(p, cls, src, dst) < 0)
            return -1;
        if (putback(p, cls, src) == p->empty) {
            free_zspage(p, cls, src);
            freed += cls->pages;
        }
        if (cls->group_of[dst->inuse] == p->full) {
            putback(p, cls, dst);
            dst = NULL;
        }
    }
    if (dst != NULL)
        putback(p, cls, dst);
    return freed;
}

/* ---- Python methods: the pool ------------------------------------------------------------- */

static int
int_list(PyObject *seq, const char *what, long lo, long hi, long *out, Py_ssize_t max, Py_ssize_t *n)
{
    PyObject *fast = PySequence_Fast(seq, what);
    if (fast == NULL)
        return -1;
    *n = PySequence_Fast_GET_SIZE(fast);
    if (*n > max) {
        PyErr_Format(PyExc_ValueError, "%s: more than %zd items", what, max);
        Py_DECREF(fast);
        return -1;
    }
    for (Py_ssize_t i = 0; i < *n; i++) {
        long v = PyLong_AsLong(PySequence_Fast_GET_ITEM(fast, i));
        if (v == -1 && PyErr_Occurred()) {
            Py_DECREF(fast);
            return -1;
        }
        if (v < lo || v > hi) {
            PyErr_Format(PyExc_ValueError, "%s: %ld is out of range", what, v);
            Py_DECREF(fast);
            return -1;
        }
        out[i] = v;
    }
    Py_DECREF(fast);
    return 0;
}

static void
pool_release(PoolObject *p)
{
    for (size_t c = 0; c < p->nchunks; c++) {
        chunk_t *ch = p->chunks[c];
        if (ch == NULL)
            continue;
        for (int k = 0; k < CHUNK_FRAMES; k++) {
            if (ch->at[k] != NULL) {
                free(ch->at[k]->mem);
                free(ch->at[k]);
            }
        }
        free(ch);
    }
    free(p->chunks);
    p->chunks = NULL;
    p->nchunks = 0;
}

static void
Pool_dealloc(PoolObject *p)
{
    pool_release(p);
    if (p->classes != NULL) {
        for (int i = 0; i < p->nclasses; i++)
            free(p->classes[i].group_of);
        free(p->classes);
    }
    Py_XDECREF(p->relocate);
    Py_XDECREF(p->crc32);
    Py_TYPE(p)->tp_free((PyObject *)p);
}

/*
 * Pool(classes, class_of_size, groups, list_index, alloc_lists, listed, empty, full, handle_size,
 *      relocate, crc32)
 *   classes: (index, size, pages_per_zspage, objs_per_zspage, huge) per class position
 *   class_of_size: class position per size zs_malloc looks up (handle header included)
 *   groups: per class position, the fullness group of each inuse count 0..objs
 *   list_index: per group, its list (-1: unlisted); alloc_lists: find_get_zspage()'s lists in
 *   order; listed: the listed groups, emptiest first
 */
static int
Pool_init(PoolObject *p, PyObject *args, PyObject *kwds)
{
    PyObject *classes, *sizes, *groups, *list_index, *alloc_lists, *listed, *relocate, *crc32;
    int empty, full, handle_size;
    static char *kwlist[] = {"classes", "class_of_size", "groups", "list_index", "alloc_lists", "listed",
                             "empty", "full", "handle_size", "relocate", "crc32", NULL};
    if (p->classes != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Pool is already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOOOiiiOO", kwlist, &classes, &sizes, &groups,
                                     &list_index, &alloc_lists, &listed, &empty, &full, &handle_size,
                                     &relocate, &crc32))
        return -1;
    if (handle_size < 0 || handle_size > MAX_HANDLE_SIZE) {
        PyErr_SetString(PyExc_ValueError, "handle_size out of range");
        return -1;
    }
    p->handle_size = handle_size;
    long buf[SIZE_LOOKUP];
    Py_ssize_t n;
    if (int_list(list_index, "list_index", -1, MAX_LISTS - 1, buf, MAX_GROUPS, &n) < 0)
        return -1;
    p->ngroups = (int)n;
    for (Py_ssize_t i = 0; i < n; i++)
        p->list_index[i] = (int8_t)buf[i];
    if (empty < 0 || empty >= p->ngroups || full < 0 || full >= p->ngroups) {
        PyErr_SetString(PyExc_ValueError, "empty/full: no such group");
        return -1;
    }
    p->empty = empty;
    p->full = full;
    if (int_list(alloc_lists, "alloc_lists", 0, MAX_LISTS - 1, buf, MAX_LISTS, &n) < 0)
        return -1;
    p->nalloc = (int)n;
    for (Py_ssize_t i = 0; i < n; i++)
        p->alloc_lists[i] = (int8_t)buf[i];
    if (int_list(listed, "listed", 0, p->ngroups - 1, buf, MAX_LISTS, &n) < 0)
        return -1;
    p->nlists = (int)n;
    for (Py_ssize_t i = 0; i < n; i++) {
        p->listed[i] = (int8_t)buf[i];
        if (p->list_index[buf[i]] < 0) {
            PyErr_SetString(PyExc_ValueError, "listed: a group without a list");
            return -1;
        }
    }
    PyObject *fast = PySequence_Fast(classes, "classes");
    if (fast == NULL)
        return -1;
    Py_ssize_t nc = PySequence_Fast_GET_SIZE(fast);
    if (nc < 1 || nc > 4096 || PySequence_Size(groups) != nc) {
        Py_DECREF(fast);
        PyErr_SetString(PyExc_ValueError, "classes: a class table and its groups, 1..4096 classes");
        return -1;
    }
    p->classes = calloc((size_t)nc, sizeof(sclass_t));
    if (p->classes == NULL) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return -1;
    }
    p->nclasses = (int)nc;
    for (Py_ssize_t i = 0; i < nc; i++) {
        sclass_t *c = &p->classes[i];
        long g[5];
        if (int_list(PySequence_Fast_GET_ITEM(fast, i), "classes[i]", 0, PAGE_SIZE * MAX_CHAIN, g, 5, &n) < 0)
            goto fail;
        if (n != 5 || g[1] < 8 || g[1] > PAGE_SIZE || g[2] < 1 || g[2] > MAX_CHAIN || g[3] < 1 ||
            g[3] * g[1] > g[2] * PAGE_SIZE) {
            PyErr_SetString(PyExc_ValueError, "classes[i]: (index, size, pages, objs, huge) out of range");
            goto fail;
        }
        c->index = (int32_t)g[0];
        c->size = (int32_t)g[1];
        c->pages = (int32_t)g[2];
        c->objs = (int32_t)g[3];
        c->huge = g[4] != 0;
        for (int k = 0; k < MAX_LISTS; k++)
            c->heads[k] = NO_ZSPAGE;
        c->group_of = malloc((size_t)c->objs + 1);
        if (c->group_of == NULL) {
            PyErr_NoMemory();
            goto fail;
        }
        PyObject *gi = PySequence_GetItem(groups, i);
        if (gi == NULL)
            goto fail;
        int rc = int_list(gi, "groups[i]", 0, p->ngroups - 1, buf, SIZE_LOOKUP, &n);
        Py_DECREF(gi);
        if (rc < 0)
            goto fail;
        if (n != c->objs + 1) {
            PyErr_SetString(PyExc_ValueError, "groups[i]: one group per inuse count 0..objs");
            goto fail;
        }
        for (Py_ssize_t k = 0; k < n; k++)
            c->group_of[k] = (int8_t)buf[k];
    }
    Py_DECREF(fast);
    fast = NULL;
    if (int_list(sizes, "class_of_size", 0, nc - 1, buf, SIZE_LOOKUP, &n) < 0)
        return -1;
    if (n != PAGE_SIZE + handle_size + 1) {
        PyErr_SetString(PyExc_ValueError, "class_of_size: one class per size 0..PAGE_SIZE + handle_size");
        return -1;
    }
    for (Py_ssize_t s = 0; s < n; s++)
        p->class_of_size[s] = (int16_t)buf[s];
    for (Py_ssize_t s = handle_size + 1; s < n; s++) {
        /* a slot must hold the object it is chosen for: the bound every copy below relies on */
        sclass_t *c = &p->classes[p->class_of_size[s]];
        if (c->size - (c->huge ? 0 : handle_size) < s - handle_size) {
            PyErr_SetString(PyExc_ValueError, "class_of_size: a class smaller than its size");
            return -1;
        }
    }
    Py_INCREF(relocate);
    p->relocate = relocate;
    Py_INCREF(crc32);
    p->crc32 = crc32;
    return 0;
fail:
    Py_XDECREF(fast);
    return -1;
}

static int
check_size(long size)
{
    if (size <= 0 || size > PAGE_SIZE) {
        PyErr_Format(PyExc_ValueError, "zs_malloc: size %ld is not 1..%d", size, PAGE_SIZE);
        return -1;
    }
    return 0;
}

static PyObject *
Pool_zs_malloc(PoolObject *p, PyObject *args)
{
    REQUIRE_INIT(p);
    long size;
    long long owner;
    if (!PyArg_ParseTuple(args, "lL", &size, &owner) || check_size(size) < 0)
        return NULL;
    int64_t h = pool_malloc(p, (int)size, owner);
    return h < 0 ? NULL : PyLong_FromLongLong(h);
}

static PyObject *
Pool_zs_free(PoolObject *p, PyObject *arg)
{
    REQUIRE_INIT(p);
    long long handle = PyLong_AsLongLong(arg);
    if (handle == -1 && PyErr_Occurred())
        return NULL;
    if (pool_free(p, handle) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
Pool_zs_obj_write(PoolObject *p, PyObject *args)
{
    REQUIRE_INIT(p);
    long long handle;
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "Ly*", &handle, &data))
        return NULL;
    uint8_t *at = object_at(p, handle, data.len);
    if (at != NULL) {
        memcpy(at, data.buf, (size_t)data.len);
        p->version++;
    }
    PyBuffer_Release(&data);
    if (at == NULL)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
Pool_zs_obj_read(PoolObject *p, PyObject *args)
{
    REQUIRE_INIT(p);
    long long handle;
    Py_ssize_t length;
    if (!PyArg_ParseTuple(args, "Ln", &handle, &length))
        return NULL;
    uint8_t *at = object_at(p, handle, length);
    return at != NULL ? PyBytes_FromStringAndSize((const char *)at, length) : NULL;
}

static PyObject *
Pool_zs_compact(PoolObject *p, PyObject *Py_UNUSED(ignored))
{
    REQUIRE_INIT(p);
    int64_t freed = 0;
    for (int i = p->nclasses - 1; i >= 0; i--) {
        int64_t f = compact_class(p, &p->classes[i]);
        p->version++;
        if (f < 0)
            return NULL;
        freed += f;
    }
    p->pages_compacted += freed;
    return PyLong_FromLongLong(freed);
}

static PyObject *
Pool_destroy(PoolObject *p, PyObject *Py_UNUSED(ignored))
{
    REQUIRE_INIT(p);
    pool_release(p);
    p->pages_allocated = 0;
    p->next_frame = 0;
    for (int i = 0; i < p->nclasses; i++) {
        sclass_t *c = &p->classes[i];
        c->objs_allocated = c->objs_inuse = 0;
        for (int k = 0; k < MAX_LISTS; k++)
            c->heads[k] = NO_ZSPAGE;
        memset(c->zspages, 0, sizeof(c->zspages));
    }
    p->version++;
    Py_RETURN_NONE;
}

/* class_stats(pos) -> (objs_allocated, objs_inuse, heads, zspages) */
static PyObject *
Pool_class_stats(PoolObject *p, PyObject *arg)
{
    REQUIRE_INIT(p);
    long pos = PyLong_AsLong(arg);
    if (pos == -1 && PyErr_Occurred())
        return NULL;
    if (pos < 0 || pos >= p->nclasses) {
        PyErr_SetString(PyExc_IndexError, "no such class");
        return NULL;
    }
    sclass_t *c = &p->classes[pos];
    PyObject *heads = PyList_New(p->nlists), *zspages = PyList_New(p->ngroups);
    if (heads == NULL || zspages == NULL)
        goto fail;
    for (int k = 0; k < p->nlists; k++) {
        PyObject *v = PyLong_FromLongLong(c->heads[k]);
        if (v == NULL)
            goto fail;
        PyList_SET_ITEM(heads, k, v);
    }
    for (int g = 0; g < p->ngroups; g++) {
        PyObject *v = PyLong_FromLongLong(c->zspages[g]);
        if (v == NULL)
            goto fail;
        PyList_SET_ITEM(zspages, g, v);
    }
    return Py_BuildValue("LLNN", (long long)c->objs_allocated, (long long)c->objs_inuse, heads, zspages);
fail:
    Py_XDECREF(heads);
    Py_XDECREF(zspages);
    return NULL;
}

/* zspages() -> [(first, cls, inuse, freeobj, fullness, prev, next, owner)], by first frame */
static PyObject *
Pool_zspages(PoolObject *p, PyObject *Py_UNUSED(ignored))
{
    REQUIRE_INIT(p);
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    for (size_t c = 0; c < p->nchunks; c++) {
        chunk_t *ch = p->chunks[c];
        for (int k = 0; ch != NULL && k < CHUNK_FRAMES; k++) {
            zspage_t *z = ch->at[k];
            if (z == NULL)
                continue;
            PyObject *t = Py_BuildValue("LiiKiLLL", (long long)z->first, z->cls, z->inuse,
                                        (unsigned long long)z->freeobj, z->fullness, (long long)z->prev,
                                        (long long)z->next, (long long)z->owner);
            if (t == NULL || PyList_Append(out, t) < 0) {
                Py_XDECREF(t);
                Py_DECREF(out);
                return NULL;
            }
            Py_DECREF(t);
        }
    }
    return out;
}

/* zspage_bytes(first) -> the zspage's frames, pages_per_zspage * PAGE_SIZE bytes */
static PyObject *
Pool_zspage_bytes(PoolObject *p, PyObject *arg)
{
    REQUIRE_INIT(p);
    long long first = PyLong_AsLongLong(arg);
    if (first == -1 && PyErr_Occurred())
        return NULL;
    zspage_t *z = zspage_at(p, first);
    if (z == NULL) {
        PyErr_Format(PyExc_KeyError, "no zspage at frame %lld", first);
        return NULL;
    }
    return PyBytes_FromStringAndSize((const char *)z->mem, (Py_ssize_t)p->classes[z->cls].pages * PAGE_SIZE);
}

/* zspage_write(first, offset, data): bytes written into a zspage's frames, as a FrameStore's
 * mutable view lets a caller write them (tests damage objects this way) */
static PyObject *
Pool_zspage_write(PoolObject *p, PyObject *args)
{
    REQUIRE_INIT(p);
    long long first;
    Py_ssize_t offset;
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "Lny*", &first, &offset, &data))
        return NULL;
    zspage_t *z = zspage_at(p, first);
    size_t span = z != NULL ? (size_t)p->classes[z->cls].pages * PAGE_SIZE : 0;
    if (z == NULL || offset < 0 || (size_t)offset > span || (size_t)data.len > span - (size_t)offset) {
        PyBuffer_Release(&data);
        PyErr_Format(PyExc_IndexError, "no %zd bytes at %zd of a zspage at frame %lld", data.len, offset, first);
        return NULL;
    }
    memcpy(z->mem + offset, data.buf, (size_t)data.len);
    PyBuffer_Release(&data);
    p->version++;
    Py_RETURN_NONE;
}

/* ---- zram's slot paths over the pool ---------------------------------------------------- */

/* A table entry: its flags, and its other three items (borrowed); -1 with an exception when
 * it is not a 4-tuple with int flags.  The second item is a handle, or a same-filled page's
 * word (unsigned 64-bit: read it with as_word), or a backing block. */
static int
parse_entry(PyObject *e, uint64_t *flags, PyObject **handle, PyObject **crc, PyObject **ac_time)
{
    if (!PyTuple_CheckExact(e) || PyTuple_GET_SIZE(e) != 4) {
        PyErr_SetString(PyExc_TypeError, "a table entry is a 4-tuple");
        return -1;
    }
    *flags = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(e, 0));
    if (*flags == (uint64_t)-1 && PyErr_Occurred())
        return -1;
    *handle = PyTuple_GET_ITEM(e, 1);
    *crc = PyTuple_GET_ITEM(e, 2);
    *ac_time = PyTuple_GET_ITEM(e, 3);
    return 0;
}

static int
as_handle(PyObject *v, int64_t *handle)
{
    *handle = PyLong_AsLongLong(v);
    return *handle == -1 && PyErr_Occurred() ? -1 : 0;
}

static int
as_word(PyObject *v, uint64_t *word)
{
    *word = PyLong_AsUnsignedLongLong(v);
    return *word == (uint64_t)-1 && PyErr_Occurred() ? -1 : 0;
}

/* A same-filled page's bytes: its word (the entry's second item), over and over. */
static int
same_page(PyObject *h, uint8_t *dst)
{
    uint64_t word;
    if (as_word(h, &word) < 0)
        return -1;
    for (size_t off = 0; off < PAGE_SIZE; off += 8)
        put_word(dst + off, word);
    return 0;
}

typedef struct {
    long long pages_stored, compr_data_size, huge_pages, huge_pages_since, bad_compress, good_compress,
        same_pages, max_used_pages;
} deltas_t;

static int
page_same_filled(const uint8_t *page, uint64_t *word)
{
    uint64_t w = get_word(page);
    if (get_word(page + PAGE_SIZE - 8) != w)
        return 0;
    for (size_t off = 8; off < PAGE_SIZE - 8; off += 8)
        if (get_word(page + off) != w)
            return 0;
    *word = w;
    return 1;
}

/*
 * A new table entry (flags, handle, crc, ac_time): `flags` is stolen (also on failure), the
 * rest borrowed; NULL with an exception.  An entry of four ints can make no reference cycle,
 * so the collector is told never to look at it.  (CPython untracks such a tuple itself, but
 * only at the first collection it survives, after scanning it: a read or write of N pages
 * made N for it to scan.)
 */
static PyObject *
new_entry(PyObject *flags, PyObject *h, PyObject *crc, PyObject *ac_time)
{
    PyObject *e = PyTuple_New(4);
    if (e == NULL) {
        Py_DECREF(flags);
        return NULL;
    }
    PyObject *items[4] = {flags, h, crc, ac_time};
    int ints = 1;
    for (Py_ssize_t i = 0; i < 4; i++) {
        if (i)
            Py_INCREF(items[i]);
        PyTuple_SET_ITEM(e, i, items[i]);
        ints &= PyLong_CheckExact(items[i]);
    }
    if (ints)
        PyObject_GC_UnTrack(e);
    return e;
}

/* table[key] = (flags, handle, crc, ac_time); the last three are borrowed. */
static int
set_entry(PyObject *table, PyObject *key, uint64_t flags, PyObject *h, PyObject *crc, PyObject *ac_time)
{
    PyObject *f = PyLong_FromUnsignedLongLong(flags);
    PyObject *e = f != NULL ? new_entry(f, h, crc, ac_time) : NULL;
    if (e == NULL)
        return -1;
    int rc = PyDict_SetItem(table, key, e);
    Py_DECREF(e);
    return rc;
}

/* 1 if crc32(the size bytes at `at`) is `crc` (an int), 0 if not, -1 with an exception. */
static int
object_crc_is(PyObject *crc32, const uint8_t *at, size_t size, PyObject *crc)
{
    PyObject *view = PyMemoryView_FromMemory((char *)at, (Py_ssize_t)size, PyBUF_READ);
    if (view == NULL)
        return -1;
    PyObject *got = PyObject_CallOneArg(crc32, view);
    Py_DECREF(view);
    if (got == NULL)
        return -1;
    int same = PyObject_RichCompareBool(got, crc, Py_EQ);
    Py_DECREF(got);
    return same;
}

/*
 * _object_page() for the `size` bytes of an object at `at`: its CRC checked against `crc`, then
 * the page, into `dst`: the bytes themselves (a page stored whole) or decompressed by
 * decompress[priority of `flags`] (a _kcomp decoder's kind, or a callable: bytes -> the page).
 * 1 when the page is in `dst`; 0 to hand it back, untouched as far as the caller knows (the
 * CRC differs, no decompressor, or it fails or gives other than a page: the caller's path makes
 * that page's error); -1 with an exception.
 */
static int
object_page(PyObject *crc32, const uint8_t *at, size_t size, uint64_t flags, PyObject *crc,
            PyObject *decompress, uint8_t *dst)
{
    int same_crc = object_crc_is(crc32, at, size, crc);
    if (same_crc <= 0)
        return same_crc;
    if (size == PAGE_SIZE) {
        memcpy(dst, at, PAGE_SIZE);
        return 1;
    }
    Py_ssize_t prio = (Py_ssize_t)(flags >> ZRAM_COMP_PRIORITY_SHIFT & 3);
    PyObject *fn = prio < PyTuple_GET_SIZE(decompress) ? PyTuple_GET_ITEM(decompress, prio) : Py_None;
    if (fn == Py_None)
        return 0;
    if (PyLong_CheckExact(fn)) { /* a compiled decoder, straight into the page */
        long kind = PyLong_AsLong(fn);
        size_t len = 0;
        if (kind < 0 || kind >= NDECODERS) {
            PyErr_Clear();
            return 0;
        }
        return decoders[kind](at, size, dst, PAGE_SIZE, &len) == 0 && len == PAGE_SIZE;
    }
    PyObject *data = PyBytes_FromStringAndSize((const char *)at, (Py_ssize_t)size);
    if (data == NULL)
        return -1;
    PyObject *pg = PyObject_CallOneArg(fn, data);
    Py_DECREF(data);
    if (pg == NULL || !PyBytes_Check(pg) || PyBytes_GET_SIZE(pg) != PAGE_SIZE) {
        Py_XDECREF(pg);
        PyErr_Clear();
        return 0;
    }
    memcpy(dst, PyBytes_AS_STRING(pg), PAGE_SIZE);
    Py_DECREF(pg);
    return 1;
}

/* Stop codes of store_pages and read_pages. */
#define DONE 0
#define HANDBACK 1 /* the page at `done` is untouched: the caller stores (reads) it its own way */
#define NOMEM 2    /* the page at `done` failed on mem_limit, exactly as _store_page fails */
#define FAILED 3   /* the page at `done` failed in the Python pool's _alloc_zspage (store_entries) */

/* One slot's counters as zram_free_page() drops them (bad/good_compress: the 2013 driver). */
static void
uncount_object(int profile, int max_zpage_size, uint64_t flags, deltas_t *d)
{
    uint64_t size = flags & ZRAM_SIZE_MASK;
    if (!(profile & P_HUGE_BY_CLASS)) {
        if (size > (uint64_t)max_zpage_size)
            d->bad_compress--;
        if (size <= PAGE_SIZE / 2)
            d->good_compress--;
    }
    d->compr_data_size -= (long long)size;
    d->pages_stored--;
}

/* zram_free_page() for a slot that holds a same-filled page or an object. */
static int
drop_slot(PoolObject *p, int profile, int max_zpage_size, uint64_t flags, PyObject *h, deltas_t *d)
{
    if (flags & ZRAM_SAME) {
        d->same_pages--;
        if (profile & P_SAME_COUNTS_STORED)
            d->pages_stored--;
        return 0;
    }
    int64_t handle;
    if (as_handle(h, &handle) < 0 || pool_free(p, handle) < 0)
        return -1;
    if (flags & ZRAM_HUGE)
        d->huge_pages--;
    uncount_object(profile, max_zpage_size, flags, d);
    return 0;
}

/*
 * store_pages(table, index, pages, comps, profile, max_zpage_size, huge_class_size, limit_pages,
 *             max_used_pages, now) -> (done, stop, pages_stored, compr_data_size, huge_pages,
 *             huge_pages_since, bad_compress, good_compress, same_pages, max_used_pages)
 *
 * _store_page for pages index, index + 1, ... of `pages` (whole pages), page k's compression
 * being comps[k] (bytes).  The counters come back as changes (max_used_pages as its new value)
 * for the caller to add.  It stops (HANDBACK) before a page it leaves to the caller: one whose
 * compression is not bytes (a failure, or none made), or whose old slot is written back.
 */
static PyObject *
Pool_store_pages(PoolObject *p, PyObject *args)
{
    REQUIRE_INIT(p);
    PyObject *table, *comps, *now;
    long long index, limit_pages, max_used;
    Py_buffer pages;
    int profile, max_zpage_size, huge_class_size;
    if (!PyArg_ParseTuple(args, "O!Ly*O!iiiLLO", &PyDict_Type, &table, &index, &pages, &PyList_Type, &comps,
                          &profile, &max_zpage_size, &huge_class_size, &limit_pages, &max_used, &now))
        return NULL;
    deltas_t d = {0};
    d.max_used_pages = max_used;
    Py_ssize_t count = pages.len / PAGE_SIZE, done = 0;
    int stop = DONE;
    PyObject *zero = NULL;
    if (pages.len % PAGE_SIZE || PyList_GET_SIZE(comps) < count || index < 0) {
        PyErr_SetString(PyExc_ValueError, "store_pages: whole pages, a compression for each, index >= 0");
        goto fail;
    }
    zero = PyLong_FromLong(0);
    if (zero == NULL)
        goto fail;
    for (; done < count; done++) {
        const uint8_t *page = (const uint8_t *)pages.buf + (size_t)done * PAGE_SIZE;
        PyObject *key = PyLong_FromLongLong(index + done);
        if (key == NULL)
            goto fail;
        PyObject *old = PyDict_GetItemWithError(table, key); /* borrowed */
        uint64_t oflags = 0;
        PyObject *ohandle = NULL, *ocrc, *oac;
        if (old == NULL && PyErr_Occurred())
            goto fail_key;
        if (old != NULL && parse_entry(old, &oflags, &ohandle, &ocrc, &oac) < 0)
            goto fail_key;
        if (old != NULL && (oflags & ZRAM_WB)) {
            Py_DECREF(key);
            stop = HANDBACK;
            break;
        }
        /* same-filled (6.18) or zero (2013) pages keep their word in the slot */
        uint64_t word = 0;
        int same = (profile & P_SAME_WORD) ? page_same_filled(page, &word)
                                           : (page_same_filled(page, &word) && word == 0);
        if (same) {
            if (old != NULL && drop_slot(p, profile, max_zpage_size, oflags, ohandle, &d) < 0)
                goto fail_key;
            PyObject *w = PyLong_FromUnsignedLongLong(word);
            if (w == NULL)
                goto fail_key;
            int rc = set_entry(table, key, ZRAM_SAME, w, zero, now);
            Py_DECREF(w);
            Py_DECREF(key);
            if (rc < 0)
                goto fail;
            d.same_pages++;
            if (profile & P_SAME_COUNTS_STORED)
                d.pages_stored++;
            continue;
        }
        PyObject *comp = PyList_GET_ITEM(comps, done);
        if (!PyBytes_CheckExact(comp) || PyBytes_GET_SIZE(comp) < 1) {
            Py_DECREF(key); /* a failure, none made, or nothing (which zs_malloc refuses) */
            stop = HANDBACK;
            break;
        }
        if ((profile & P_FREE_OLD_FIRST) && old != NULL) {
            if (drop_slot(p, profile, max_zpage_size, oflags, ohandle, &d) < 0)
                goto fail_key;
            old = NULL;
        }
        const uint8_t *obj = (const uint8_t *)PyBytes_AS_STRING(comp);
        Py_ssize_t clen = PyBytes_GET_SIZE(comp);
        uint64_t flags = 0;
        /* Too large for a slot, or for the profile's taste: the raw page, in a huge object. */
        if (profile & P_HUGE_BY_CLASS) {
            if (clen >= huge_class_size) {
                obj = page;
                clen = PAGE_SIZE;
                flags = ZRAM_HUGE;
            }
        } else if (clen > max_zpage_size) {
            obj = page;
            clen = PAGE_SIZE;
        }
        if (clen > PAGE_SIZE) { /* cannot be: huge_class_size and max_zpage_size are below it */
            PyErr_SetString(ZsError, "an object larger than a page");
            goto fail_key;
        }
        int64_t handle = pool_malloc(p, (int)clen, index + done);
        if (handle < 0)
            goto fail_key;
        if (profile & P_MEM_LIMIT) { /* zram_can_store_page() */
            if (p->pages_allocated > d.max_used_pages)
                d.max_used_pages = p->pages_allocated;
            if (limit_pages && p->pages_allocated > limit_pages) {
                pool_free(p, handle);
                Py_DECREF(key);
                stop = NOMEM;
                break;
            }
        }
        uint8_t *at = object_at(p, handle, clen); /* fits: class_of_size was checked */
        if (at == NULL)
            goto fail_key;
        memcpy(at, obj, (size_t)clen);
        PyObject *crc = obj == page ? PyObject_CallFunction(p->crc32, "y#", (const char *)obj, clen)
                                    : PyObject_CallOneArg(p->crc32, comp);
        if (crc == NULL)
            goto fail_key;
        if (old != NULL && drop_slot(p, profile, max_zpage_size, oflags, ohandle, &d) < 0) {
            Py_DECREF(crc);
            goto fail_key;
        }
        PyObject *h = PyLong_FromLongLong(handle);
        if (h == NULL) {
            Py_DECREF(crc);
            goto fail_key;
        }
        int rc = set_entry(table, key, flags | (uint64_t)clen, h, crc, now);
        Py_DECREF(h);
        Py_DECREF(crc);
        Py_DECREF(key);
        if (rc < 0)
            goto fail;
        d.pages_stored++;
        d.compr_data_size += clen;
        if (flags & ZRAM_HUGE) {
            d.huge_pages++;
            d.huge_pages_since++;
        }
        if (!(profile & P_HUGE_BY_CLASS)) {
            if (clen > max_zpage_size)
                d.bad_compress++;
            if (clen <= PAGE_SIZE / 2)
                d.good_compress++;
        }
        continue;
    fail_key:
        Py_DECREF(key);
        goto fail;
    }
    Py_DECREF(zero);
    PyBuffer_Release(&pages);
    p->version++;
    return Py_BuildValue("niLLLLLLLL", done, stop, d.pages_stored, d.compr_data_size, d.huge_pages,
                         d.huge_pages_since, d.bad_compress, d.good_compress, d.same_pages, d.max_used_pages);
fail:
    /* Not reached by anything a page's bytes can cause: a corrupt table, or no memory.  The
     * counters of the pages stored so far are lost with the error, as the caller discards a
     * device whose operation raised. */
    Py_XDECREF(zero);
    PyBuffer_Release(&pages);
    p->version++;
    return NULL;
}

/*
 * read_pages(table, index, out, decompress, accessed, now) -> (done, stop)
 *
 * _read_entry for pages index, index + 1, ... into `out` (a writable buffer of whole pages):
 * unwritten pages read as zeros, same-filled ones as their word, objects decompressed by
 * decompress[priority]: a callable (bytes -> the page), or the kind of a _kcomp decoder that
 * does the same, which decodes into `out` with no Python call.  With `accessed`, each slot read gets
 * zram_accessed(): ac_time `now`, IDLE and PP_SLOT clear.  It stops (HANDBACK) before a page it
 * leaves to the caller, unread: written back, no decompressor for its priority, or one that
 * fails or gives other than a page (the caller's path makes that page's error).
 */
static PyObject *
Pool_read_pages(PoolObject *p, PyObject *args)
{
    REQUIRE_INIT(p);
    PyObject *table, *decompress, *now;
    long long index;
    Py_buffer out;
    int accessed;
    long long now_v;
    if (!PyArg_ParseTuple(args, "O!Lw*O!pO", &PyDict_Type, &table, &index, &out, &PyTuple_Type, &decompress,
                          &accessed, &now))
        return NULL;
    Py_ssize_t count = out.len / PAGE_SIZE, done = 0;
    int stop = DONE;
    now_v = PyLong_AsLongLong(now);
    if (now_v == -1 && PyErr_Occurred())
        goto fail;
    if (out.len % PAGE_SIZE || index < 0) {
        PyErr_SetString(PyExc_ValueError, "read_pages: whole pages, index >= 0");
        goto fail;
    }
    for (; done < count; done++) {
        uint8_t *dst = (uint8_t *)out.buf + (size_t)done * PAGE_SIZE;
        PyObject *key = PyLong_FromLongLong(index + done);
        if (key == NULL)
            goto fail;
        PyObject *e = PyDict_GetItemWithError(table, key);
        if (e == NULL) {
            Py_DECREF(key);
            if (PyErr_Occurred())
                goto fail;
            memset(dst, 0, PAGE_SIZE);
            continue;
        }
        uint64_t flags;
        PyObject *h, *crc, *ac;
        if (parse_entry(e, &flags, &h, &crc, &ac) < 0)
            goto fail_key;
        if (flags & ZRAM_WB) {
            Py_DECREF(key);
            stop = HANDBACK;
            break;
        }
        if (flags & ZRAM_SAME) {
            if (same_page(h, dst) < 0)
                goto fail_key;
        } else {
            size_t size = (size_t)(flags & ZRAM_SIZE_MASK);
            int64_t handle;
            if (as_handle(h, &handle) < 0)
                goto fail_key;
            const uint8_t *at = object_at(p, handle, (Py_ssize_t)size);
            if (at == NULL)
                goto fail_key;
            int got = object_page(p->crc32, at, size, flags, crc, decompress, dst);
            if (got < 0)
                goto fail_key;
            if (got == 0) {
                Py_DECREF(key);
                stop = HANDBACK;
                break;
            }
        }
        if (accessed) {
            long long ac_v = PyLong_AsLongLong(ac);
            if (ac_v == -1 && PyErr_Occurred())
                goto fail_key;
            if (ac_v != now_v || (flags & ZRAM_ACCESS_CLEARS)) {
                if (set_entry(table, key, flags & ~ZRAM_ACCESS_CLEARS, h, crc, now) < 0)
                    goto fail_key;
            }
        }
        Py_DECREF(key);
        continue;
    fail_key:
        Py_DECREF(key);
        goto fail;
    }
    PyBuffer_Release(&out);
    return Py_BuildValue("ni", done, stop);
fail:
    PyBuffer_Release(&out);
    return NULL;
}

/*
 * list_entries(entries, start, out, decompress, zspage, cache, crc32) -> Listed
 * read_entries(entries, start, out, decompress, zspage, cache, crc32) -> (done, stop)
 *
 * _read_entry for entries[start], entries[start + 1], ... into `out` (whole pages), over a pool
 * that is not this module's: the reference's (zsmalloc.py), over an image whose frames and
 * records are untrusted.  `entries` is a list of table entries (a leaf of the image's table),
 * or None for pages never written.  An object's zspage is cache[first], else zspage(first),
 * which the cache then keeps: None where check_handle fails for every slot of it, else
 * (slot size, objects per zspage, the most an object may hold, where its data starts in its
 * slot, the zspage's frames as bytes).  check_handle's per-slot checks are made here (a slot
 * inside the zspage, 0 < length <= room), and the object must lie inside the frames given; a
 * page that fails one is handed back (HANDBACK), unread, as is any the compiled read path
 * hands back: the caller's path makes its error.  The access times of the pages read are the
 * caller's to set (access_entries), once it knows which pages of a read were read.
 *
 * In two steps, so that the GIL is given up once, not once a page.  list_entries looks every
 * page up, checks it (its CRC too) and, if a compiled decoder reads it, lists it; anything else
 * (a same-filled page, one stored whole, a decoder that is Python code) is read there and then.
 * Listed.decode() then decodes the listed objects, without the GIL, and gives the result: the
 * pages read are the ones before the first that failed in either step.  A Listed holds the
 * zspages its objects lie in and `out` until it has decoded, so that decode() may run on
 * another thread while the caller lists the next leaf; read_entries does both at once.
 */
typedef struct {
    const uint8_t *src;
    size_t len;
    uint8_t *dst;
    long kind;
    Py_ssize_t page; /* its page, from `start` */
} decode_job_t;

typedef struct {
    PyObject_HEAD
    decode_job_t *jobs; /* NULL once decoded */
    Py_ssize_t njobs;
    Py_ssize_t done; /* pages read, or to be read once the listed ones decode */
    int stop;
    int busy;       /* decode() is running (on another thread): a second call returns None */
    PyObject *held; /* the zspages the listed objects lie in */
    Py_buffer out;  /* where they decode to */
    int has_out;
} ListedObject;

static PyTypeObject ListedType;

/* What a Listed holds, given back: once decoded, or when it goes. */
static void
listed_release(ListedObject *l)
{
    PyMem_Free(l->jobs);
    l->jobs = NULL;
    l->njobs = 0;
    Py_CLEAR(l->held);
    if (l->has_out) {
        l->has_out = 0;
        PyBuffer_Release(&l->out);
    }
}

static void
Listed_dealloc(ListedObject *l)
{
    listed_release(l);
    Py_TYPE(l)->tp_free((PyObject *)l);
}

static PyObject *
list_entries(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *entries, *decompress, *zspage_fn, *cache, *crc32;
    Py_ssize_t start;
    ListedObject *l = PyObject_New(ListedObject, &ListedType);
    if (l == NULL)
        return NULL;
    l->jobs = NULL;
    l->njobs = l->done = 0;
    l->stop = DONE;
    l->busy = 0;
    l->held = NULL;
    l->has_out = 0;
    if (!PyArg_ParseTuple(args, "Onw*O!OO!O", &entries, &start, &l->out, &PyTuple_Type, &decompress, &zspage_fn,
                          &PyDict_Type, &cache, &crc32)) {
        Py_DECREF(l);
        return NULL;
    }
    l->has_out = 1;
    Py_ssize_t count = l->out.len / PAGE_SIZE, done = 0;
    PyObject *e = NULL; /* the entry being read (held: zspage() may change the list) */
    if (l->out.len % PAGE_SIZE || start < 0 ||
        (entries != Py_None &&
         (!PyList_CheckExact(entries) || start > PyList_GET_SIZE(entries) || count > PyList_GET_SIZE(entries) - start))) {
        PyErr_SetString(PyExc_ValueError, "list_entries: whole pages, each with an entry in the list");
        goto fail;
    }
    if (entries == Py_None) {
        memset(l->out.buf, 0, (size_t)l->out.len);
        l->done = count;
        listed_release(l);
        return (PyObject *)l;
    }
    l->jobs = PyMem_Malloc(sizeof(decode_job_t) * (size_t)(count ? count : 1));
    l->held = PyList_New(0);
    if (l->jobs == NULL || l->held == NULL) {
        if (l->jobs == NULL)
            PyErr_NoMemory();
        goto fail;
    }
    for (; done < count; done++) {
        uint8_t *dst = (uint8_t *)l->out.buf + (size_t)done * PAGE_SIZE;
        if (start + done >= PyList_GET_SIZE(entries)) { /* shortened by a zspage() call: not ours to guess */
            l->stop = HANDBACK;
            break;
        }
        e = PyList_GET_ITEM(entries, start + done);
        if (e == Py_None) {
            e = NULL;
            memset(dst, 0, PAGE_SIZE);
            continue;
        }
        Py_INCREF(e);
        uint64_t flags;
        PyObject *h, *crc, *ac;
        if (parse_entry(e, &flags, &h, &crc, &ac) < 0)
            goto fail;
        if (flags & ZRAM_WB) {
            Py_CLEAR(e);
            l->stop = HANDBACK;
            break;
        }
        if (flags & ZRAM_SAME) {
            if (same_page(h, dst) < 0)
                goto fail;
            Py_CLEAR(e);
            continue;
        }
        size_t size = (size_t)(flags & ZRAM_SIZE_MASK);
        int64_t handle;
        if (as_handle(h, &handle) < 0)
            goto fail;
        PyObject *key = PyLong_FromLongLong(handle >> OBJ_INDEX_BITS);
        if (key == NULL)
            goto fail;
        PyObject *z = PyDict_GetItemWithError(cache, key); /* borrowed */
        if (z != NULL) {
            Py_INCREF(z);
        } else if (!PyErr_Occurred()) {
            z = PyObject_CallOneArg(zspage_fn, key);
            if (z != NULL && PyDict_SetItem(cache, key, z) < 0)
                Py_CLEAR(z);
        }
        Py_DECREF(key);
        if (z == NULL)
            goto fail;
        long long zsize = 0, objs = 0, room = 0, header = 0;
        PyObject *data = NULL;
        if (z != Py_None && !PyArg_ParseTuple(z, "LLLLS", &zsize, &objs, &room, &header, &data)) {
            Py_DECREF(z);
            goto fail;
        }
        int64_t idx = handle & OBJ_INDEX_MASK;
        size_t off = (size_t)idx * (size_t)zsize + (size_t)header;
        int fits = z != Py_None && handle >= 0 && idx < objs && size > 0 && (long long)size <= room && zsize > 0 &&
                   header >= 0 && off <= (size_t)PyBytes_GET_SIZE(data) && size <= (size_t)PyBytes_GET_SIZE(data) - off;
        const uint8_t *at = fits ? (const uint8_t *)PyBytes_AS_STRING(data) + off : NULL;
        int got = 0;
        Py_ssize_t prio = (Py_ssize_t)(flags >> ZRAM_COMP_PRIORITY_SHIFT & 3);
        PyObject *fn = prio < PyTuple_GET_SIZE(decompress) ? PyTuple_GET_ITEM(decompress, prio) : Py_None;
        if (fits && size != PAGE_SIZE && PyLong_CheckExact(fn)) {
            /* a compiled decoder: checked now, decoded by decode() (z held until then) */
            long kind = PyLong_AsLong(fn);
            got = object_crc_is(crc32, at, size, crc);
            if (got > 0 && (kind < 0 || kind >= NDECODERS)) {
                PyErr_Clear();
                got = 0;
            }
            if (got > 0 && PyList_Append(l->held, z) < 0)
                got = -1;
            if (got > 0)
                l->jobs[l->njobs++] = (decode_job_t){at, size, dst, kind, done};
        } else if (fits) {
            got = object_page(crc32, at, size, flags, crc, decompress, dst);
        }
        Py_DECREF(z);
        if (got < 0)
            goto fail;
        Py_CLEAR(e);
        if (got == 0) {
            l->stop = HANDBACK;
            break;
        }
    }
    l->done = done;
    return (PyObject *)l;
fail:
    Py_XDECREF(e);
    Py_DECREF(l);
    return NULL;
}

/* Listed.decode(): the listed objects, in page order, until one fails, without the GIL; then
 * (pages read, DONE or HANDBACK for the page after them).  Called again, the same answer; None
 * while another thread is decoding it (so that several threads may offer to, and one does). */
static PyObject *
Listed_decode(ListedObject *l, PyObject *Py_UNUSED(ignored))
{
    if (l->busy) /* another thread is decoding it: its result is for a later call */
        Py_RETURN_NONE;
    if (l->jobs != NULL) {
        decode_job_t *jobs = l->jobs;
        Py_ssize_t njobs = l->njobs, failed = -1;
        l->busy = 1;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t j = 0; j < njobs; j++) {
            size_t len = 0;
            if (decoders[jobs[j].kind](jobs[j].src, jobs[j].len, jobs[j].dst, PAGE_SIZE, &len) != 0 ||
                len != PAGE_SIZE) {
                failed = jobs[j].page;
                break;
            }
        }
        Py_END_ALLOW_THREADS
        l->busy = 0;
        if (failed >= 0 && failed < l->done) {
            l->done = failed;
            l->stop = HANDBACK;
        }
    }
    listed_release(l);
    return Py_BuildValue("ni", l->done, l->stop);
}

static PyObject *
Listed_get_stop(ListedObject *l, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(l->stop);
}

static PyMethodDef Listed_methods[] = {
    {"decode", (PyCFunction)Listed_decode, METH_NOARGS,
     "decode() -> (done, stop), the listed objects decoded; None while another thread decodes them"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Listed_getset[] = {
    {"stop", (getter)Listed_get_stop, NULL, "HANDBACK if the listing stopped at a page (decode() may stop sooner)",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ListedType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "zramctl.kernel._zsmalloc.Listed",
    .tp_basicsize = sizeof(ListedObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A table leaf's pages, listed by list_entries, to decode (see the source)",
    .tp_dealloc = (destructor)Listed_dealloc,
    .tp_methods = Listed_methods,
    .tp_getset = Listed_getset,
};

static PyObject *
read_entries(PyObject *module, PyObject *args)
{
    PyObject *l = list_entries(module, args);
    if (l == NULL)
        return NULL;
    PyObject *res = Listed_decode((ListedObject *)l, NULL);
    Py_DECREF(l);
    return res;
}

/*
 * access_entries(entries, start, count, now) -> changed
 *
 * zram_accessed() for the entries entries[start .. start + count - 1] that are not None: ac_time
 * `now`, IDLE and PP_SLOT clear (an entry already so is left as it is).  What a read does, in
 * page order, to the pages read_entries read; `changed` counts the entries replaced.
 */
static PyObject *
access_entries(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *entries, *now;
    Py_ssize_t start, count, changed = 0;
    if (!PyArg_ParseTuple(args, "O!nnO", &PyList_Type, &entries, &start, &count, &now))
        return NULL;
    long long now_v = PyLong_AsLongLong(now);
    if (now_v == -1 && PyErr_Occurred())
        return NULL;
    if (start < 0 || count < 0 || start > PyList_GET_SIZE(entries) || count > PyList_GET_SIZE(entries) - start) {
        PyErr_SetString(PyExc_ValueError, "access_entries: a range of the list");
        return NULL;
    }
    for (Py_ssize_t k = start; k < start + count; k++) {
        PyObject *e = PyList_GET_ITEM(entries, k);
        if (e == Py_None)
            continue;
        uint64_t flags;
        PyObject *h, *crc, *ac;
        if (parse_entry(e, &flags, &h, &crc, &ac) < 0)
            return NULL;
        long long ac_v = PyLong_AsLongLong(ac);
        if (ac_v == -1 && PyErr_Occurred())
            return NULL;
        if (ac_v == now_v && !(flags & ZRAM_ACCESS_CLEARS))
            continue; /* already so: left as it is */
        PyObject *f = PyTuple_GET_ITEM(e, 0);
        if (flags & ZRAM_ACCESS_CLEARS || !PyLong_CheckExact(f)) { /* else the flags stay, and their int */
            if ((f = PyLong_FromUnsignedLongLong(flags & ~ZRAM_ACCESS_CLEARS)) == NULL)
                return NULL;
        } else {
            Py_INCREF(f);
        }
        PyObject *ne = new_entry(f, h, crc, now);
        if (ne == NULL)
            return NULL;
        PyList_SetItem(entries, k, ne); /* steals ne; the old entry goes (ne holds its items) */
        changed++;
    }
    return PyLong_FromSsize_t(changed);
}

/*
 * store_entries(entries, start, index, pages, comps, geometry, looked, frames, profile,
 *               max_zpage_size, huge_class_size, limit_pages, max_used_pages, now, crc32,
 *               free_page, counts) -> stop
 *
 * _store_page for whole pages index, index + 1, ... into entries[start], entries[start + 1], ...
 * (a leaf of an image's table), page k's compression being comps[k], over a pool that is not
 * this module's: the reference's (zsmalloc.py), whose ZsPage records and SizeClass statistics
 * are Python objects, changed here in place as its zs_malloc changes them.  `geometry` is
 * Pool.store_geometry(): the class position of every size, each class's (SizeClass, slot size,
 * pages per zspage, objects per zspage, huge), each class's inuse -> fullness group, group ->
 * list (-1 unlisted), find_get_zspage()'s lists in order, the number of groups, the handle size,
 * the zspage map, the zspages whose free chain is checked, and the pool.  `looked` keeps the
 * records looked up in the zspage map (first frame -> ZsPage), from call to call: the caller
 * empties it whenever anything else may have changed the map (a page stored the Python way, a
 * commit).  `frames` is the pool's FrameStore, one that lends its frames in place
 * (zsmalloc.InPlaceFrames): frames.in_place maps a frame open for writing to its bytearray,
 * and a frame not open yet is opened by frames.mutable.
 *
 * Only the common case is done here: a page stored as a same-filled page, or as an object in
 * the zspage heading its class's fullest list (whose chain is checked, whose head check passes,
 * whose frames, and the records a list move changes, are in memory), or in a new zspage, which
 * the pool's own _alloc_zspage makes (frames, record, free chain).  A slot's old object is
 * freed when the profile frees it (3.11 first, 6.18 once the new one is stored): here where
 * the records and frames allow (free_object), else by `free_page` (Zram._free_page, the
 * reference's zram_free_page).  Anything else is handed back (HANDBACK) before it changes
 * anything: a slot written back, a compression that is not bytes, a huge object, a record that
 * fails a check or cannot be looked up, a frame that cannot be opened, a page mem_limit
 * refuses.  The caller's path then stores it, or makes its error.  Everything a page needs is
 * looked up before its first change, so a page is stored whole or not at all (a 3.11 slot
 * freed first stays free, which is what the caller's path does first too); _alloc_zspage or
 * free_page failing with an Exception stops the call (FAILED) where the Python way would
 * stop, its exception being counts[7].
 *
 * counts[0 .. 6] get (pages done, entries added, pages_stored, compr_data_size, good_compress,
 * same_pages, max_used_pages): changes (entries added is net: a slot emptied here counts -1),
 * but max_used_pages as its new value; also when an exception ends the call (then the state
 * may be half-changed: the caller poisons it).
 */
#define STORE_COUNTS 8

typedef struct {
    PyObject *obj; /* borrowed */
    long long first, cls, inuse, freeobj, fullness, prev, next;
} zsrec_t;

#define MAX_FIRST (1LL << 40) /* above any frame an image can have (16 TiB): a handle stays in range */

enum { ZA_FIRST, ZA_CLS, ZA_INUSE, ZA_FREEOBJ, ZA_FULLNESS, ZA_PREV, ZA_NEXT, ZA_N };
static const char *const za_names[ZA_N] = {"first", "cls", "inuse", "freeobj", "fullness", "prev", "next"};
static PyObject *za[ZA_N]; /* interned ZsPage attribute names (constants, made at import) */
static PyObject *ca_objs_inuse, *ca_heads, *ca_zspages, *pa_alloc_zspage, *pa_pages_allocated, *fa_in_place,
    *fa_mutable; /* and the other names it reads */

/* Keep `z` as the record at `first` in `looked` (replacing any other): 0, or -1 with an exception. */
static int
looked_keep(PyObject *looked, int64_t first, PyObject *z)
{
    PyObject *key = PyLong_FromLongLong(first);
    int rc = key != NULL ? PyDict_SetItem(looked, key, z) : -1;
    Py_XDECREF(key);
    return rc;
}

/* The ZsPage at `first`, borrowed from `looked` (where it is kept once looked up in the zspage
 * map): 0 and NULL when the map has none or fails with an Exception (the caller hands the page
 * back: its path makes the error); -1 for any other exception (KeyboardInterrupt, ...), which
 * must not be lost, or when `looked` cannot keep it. */
static int
zs_lookup(PyObject *looked, PyObject *zspages, int64_t first, PyObject **out)
{
    *out = NULL;
    PyObject *key = PyLong_FromLongLong(first);
    if (key == NULL)
        return -1;
    PyObject *z = PyDict_GetItemWithError(looked, key); /* borrowed */
    if (z != NULL || PyErr_Occurred()) {
        Py_DECREF(key);
        *out = z;
        return z != NULL ? 0 : -1;
    }
    z = PyObject_GetItem(zspages, key);
    if (z == NULL) {
        Py_DECREF(key);
        if (!PyErr_ExceptionMatches(PyExc_Exception))
            return -1;
        PyErr_Clear();
        return 0;
    }
    int rc = PyDict_SetItem(looked, key, z);
    Py_DECREF(key);
    Py_DECREF(z); /* `looked` holds it */
    if (rc < 0)
        return -1;
    *out = z;
    return 0;
}

/* A record's fields: 1 when read, 0 when one is not an int that fits (hand the page back). */
static int
zs_read(PyObject *z, zsrec_t *r)
{
    long long *f[ZA_N] = {&r->first, &r->cls, &r->inuse, &r->freeobj, &r->fullness, &r->prev, &r->next};
    r->obj = z;
    for (int i = 0; i < ZA_N; i++) {
        PyObject *v = PyObject_GetAttr(z, za[i]);
        if (v == NULL || !PyLong_CheckExact(v)) {
            Py_XDECREF(v);
            PyErr_Clear();
            return 0;
        }
        *f[i] = PyLong_AsLongLong(v);
        Py_DECREF(v);
        if (*f[i] == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
    }
    return 1;
}

/* Item `i` of a list of ints, or `bad` when it is not one (or `i` is out of range). */
static long long
int_item(PyObject *list, long long i, long long bad)
{
    if (list == NULL || !PyList_Check(list) || i < 0 || i >= PyList_GET_SIZE(list))
        return bad;
    PyObject *v = PyList_GET_ITEM(list, i);
    if (!PyLong_CheckExact(v))
        return bad;
    long long n = PyLong_AsLongLong(v);
    if (n == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return bad;
    }
    return n;
}

/* What one store_entries call works with: the geometry (borrowed from Pool.store_geometry()'s
 * tuple), the call's other arguments, and what it has counted. */
typedef struct {
    PyObject *pos_of_size, *classes, *groups, *list_index, *alloc_lists, *zspages, *sound, *pool;
    long long ngroups, handle_size;
    PyObject *looked;
    PyObject *in_place, *mutable_frame, *crc32, *now, *zero, *no_zspage;
    int profile, max_zpage_size;
    long long limit, alloced, max_used;
} store_ctx_t;

/* Class `pos`'s fullness group for `inuse` objects, or -1 when the table has none. */
static long long
group_of(store_ctx_t *x, long long pos, long long inuse)
{
    if (!PyList_Check(x->groups) || pos < 0 || pos >= PyList_GET_SIZE(x->groups))
        return -1;
    long long fg = int_item(PyList_GET_ITEM(x->groups, pos), inuse, -1);
    return fg < x->ngroups ? fg : -1;
}

/* One class's geometry: 1 when it is as it must be, 0 when not (hand back). */
static int
class_geo(store_ctx_t *x, long long pos, PyObject **cls, long long *size, long long *ppz, long long *objs,
          int *huge)
{
    if (!PyList_Check(x->classes) || pos < 0 || pos >= PyList_GET_SIZE(x->classes))
        return 0;
    PyObject *t = PyList_GET_ITEM(x->classes, pos);
    if (!PyTuple_CheckExact(t) || PyTuple_GET_SIZE(t) != 5)
        return 0;
    *cls = PyTuple_GET_ITEM(t, 0);
    long long v[3];
    for (int i = 0; i < 3; i++) {
        PyObject *o = PyTuple_GET_ITEM(t, i + 1);
        v[i] = PyLong_CheckExact(o) ? PyLong_AsLongLong(o) : -1;
        if (v[i] <= 0) {
            PyErr_Clear();
            return 0;
        }
    }
    if (v[0] > PAGE_SIZE || v[1] > MAX_CHAIN || v[2] > (1LL << OBJ_INDEX_BITS))
        return 0;
    *size = v[0], *ppz = v[1], *objs = v[2];
    *huge = PyObject_IsTrue(PyTuple_GET_ITEM(t, 4));
    if (*huge < 0) {
        PyErr_Clear();
        return 0;
    }
    return *size * *objs <= *ppz * PAGE_SIZE;
}

/* Frames lo..hi open for writing: those not yet are opened by the image's own FrameStore.mutable
 * (which checks they lie in a zspage and reads them; nothing of their bytes changes).  1; 0 when
 * one cannot be (the Exception cleared: the caller's other way meets it again); -1 with any
 * other exception.  Python code runs here: take the frames' bytes (in_place_frame) after. */
static int
open_frames(store_ctx_t *x, long long lo, long long hi)
{
    for (long long n = lo; n <= hi; n++) {
        PyObject *key = PyLong_FromLongLong(n);
        if (key == NULL)
            return -1;
        int open = PyDict_Contains(x->in_place, key);
        PyObject *view = open == 0 ? PyObject_CallOneArg(x->mutable_frame, key) : NULL;
        Py_DECREF(key);
        if (open < 0 || (open == 0 && view == NULL)) {
            if (!PyErr_ExceptionMatches(PyExc_Exception))
                return -1;
            PyErr_Clear();
            return 0;
        }
        Py_XDECREF(view);
    }
    return 1;
}

/* The bytearray of frame `n` open for writing, or NULL (not open, or not a frame). */
static uint8_t *
in_place_frame(PyObject *in_place, long long n)
{
    PyObject *key = PyLong_FromLongLong(n);
    if (key == NULL) {
        PyErr_Clear();
        return NULL;
    }
    PyObject *b = PyDict_GetItemWithError(in_place, key); /* borrowed */
    Py_DECREF(key);
    if (b == NULL || !PyByteArray_CheckExact(b) || PyByteArray_GET_SIZE(b) != PAGE_SIZE) {
        PyErr_Clear();
        return NULL;
    }
    return (uint8_t *)PyByteArray_AS_STRING(b);
}

/* An int list's item plus `delta`, as a new int to put there (NULL with an exception). */
static PyObject *
bumped(PyObject *list, long long i, long long delta)
{
    long long v = int_item(list, i, LLONG_MIN);
    if (v == LLONG_MIN) {
        PyErr_SetString(PyExc_ValueError, "store_entries: a class's counts are not ints");
        return NULL;
    }
    return PyLong_FromLongLong(v + delta);
}

/*
 * _fix_fullness_group() of zspage `z` (class `pos`) whose inuse becomes `inuse`, in two steps:
 * move_prepare looks up the records it changes and makes the ints it puts anywhere (1; 0 when
 * one cannot be looked up or a group is out of range: nothing changed, the caller goes another
 * way; -1 with an exception), move_apply changes them, as _remove_zspage and _insert_zspage
 * do, and cannot fail.  `listed`: the zspage is in a group now (not one _alloc_zspage has just
 * made, which is only inserted).
 */
typedef struct {
    int moves, listed;
    long long fullness, fg, li_old, li_new;
    PyObject *prev, *nxt, *new_head; /* borrowed (from `looked`) */
    PyObject *fg_obj, *first_obj, *prev_obj, *next_obj, *old_count, *new_count;
} move_t;

static void
move_release(move_t *m)
{
    PyObject **owned[] = {&m->fg_obj, &m->first_obj, &m->prev_obj, &m->next_obj, &m->old_count, &m->new_count};
    for (size_t i = 0; i < sizeof owned / sizeof *owned; i++)
        Py_CLEAR(*owned[i]);
}

static int
move_prepare(store_ctx_t *x, PyObject *heads, PyObject *counted, long long pos, zsrec_t *z, long long inuse,
             int listed, move_t *m)
{
    *m = (move_t){0};
    m->listed = listed;
    m->fullness = z->fullness;
    m->fg = group_of(x, pos, inuse);
    m->li_new = m->fg >= 0 ? int_item(x->list_index, m->fg, -2) : -2;
    if (m->fg < 0 || m->li_new < -1)
        return 0;
    m->moves = m->fg != z->fullness;
    if (!m->moves)
        return 1;
    m->li_old = -1;
    if (listed) { /* _remove_zspage(): its group and, if listed, its neighbours */
        if (z->fullness < 0 || z->fullness >= x->ngroups)
            return 0;
        m->li_old = int_item(x->list_index, z->fullness, -2);
        if (m->li_old < -1)
            return 0;
        if (m->li_old >= 0 &&
            ((z->prev != NO_ZSPAGE && zs_lookup(x->looked, x->zspages, z->prev, &m->prev) < 0) ||
             (z->next != NO_ZSPAGE && zs_lookup(x->looked, x->zspages, z->next, &m->nxt) < 0)))
            return -1;
        if (m->li_old >= 0 && ((z->prev != NO_ZSPAGE && m->prev == NULL) || (z->next != NO_ZSPAGE && m->nxt == NULL)))
            return 0;
        if ((m->old_count = bumped(counted, z->fullness, -1)) == NULL)
            return -1;
    }
    if (m->li_new >= 0) { /* _insert_zspage(): the head it goes before (its list is not the old one) */
        long long h = int_item(heads, m->li_new, LLONG_MIN);
        if (h == LLONG_MIN)
            return 0;
        if (h != NO_ZSPAGE) {
            if (zs_lookup(x->looked, x->zspages, h, &m->new_head) < 0)
                return -1;
            if (m->new_head == NULL)
                return 0;
        }
    }
    if ((m->new_count = bumped(counted, m->fg, +1)) == NULL || (m->fg_obj = PyLong_FromLongLong(m->fg)) == NULL ||
        (m->prev_obj = PyLong_FromLongLong(z->prev)) == NULL || (m->next_obj = PyLong_FromLongLong(z->next)) == NULL)
        return -1;
    return 1;
}

/* `first_obj`: the zspage's first frame as an int (what a list head and a prev link hold). */
static void
move_apply(store_ctx_t *x, PyObject *heads, PyObject *counted, PyObject *zobj, PyObject *first_obj, move_t *m)
{
    if (!m->moves)
        return;
    if (m->listed) { /* _remove_zspage() */
        PyList_SetItem(counted, m->fullness, m->old_count);
        m->old_count = NULL;
        if (m->li_old >= 0) {
            if (m->prev != NULL)
                PyObject_SetAttr(m->prev, za[ZA_NEXT], m->next_obj);
            else {
                Py_INCREF(m->next_obj);
                PyList_SetItem(heads, m->li_old, m->next_obj);
            }
            if (m->nxt != NULL)
                PyObject_SetAttr(m->nxt, za[ZA_PREV], m->prev_obj);
            PyObject_SetAttr(zobj, za[ZA_PREV], x->no_zspage);
            PyObject_SetAttr(zobj, za[ZA_NEXT], x->no_zspage);
        }
    }
    /* _insert_zspage() */
    PyObject_SetAttr(zobj, za[ZA_FULLNESS], m->fg_obj);
    PyList_SetItem(counted, m->fg, m->new_count);
    m->new_count = NULL;
    if (m->li_new >= 0) {
        PyObject *old_head = PyList_GetItem(heads, m->li_new); /* (borrowed; removal left it as it was) */
        PyObject_SetAttr(zobj, za[ZA_PREV], x->no_zspage);
        if (old_head != NULL)
            PyObject_SetAttr(zobj, za[ZA_NEXT], old_head);
        if (m->new_head != NULL)
            PyObject_SetAttr(m->new_head, za[ZA_PREV], first_obj);
        Py_INCREF(first_obj);
        PyList_SetItem(heads, m->li_new, first_obj);
    }
}

/* What store_object did with its page. */
enum { OBJ_STORED, OBJ_HANDBACK, OBJ_FAILED, OBJ_ERROR };

/* A class's statistics store_object and free_object change (new references), or 0. */
static int
class_stats(PyObject *cls, PyObject **heads, PyObject **counted, PyObject **inuse)
{
    *heads = PyObject_GetAttr(cls, ca_heads);
    *counted = PyObject_GetAttr(cls, ca_zspages); /* zspages per group */
    *inuse = PyObject_GetAttr(cls, ca_objs_inuse);
    if (*heads != NULL && *counted != NULL && *inuse != NULL && PyList_Check(*heads) && PyList_Check(*counted) &&
        PyLong_CheckExact(*inuse))
        return 1;
    Py_CLEAR(*heads);
    Py_CLEAR(*counted);
    Py_CLEAR(*inuse);
    PyErr_Clear();
    return 0;
}

/* The exception raised (an Exception, normalized, its traceback kept), taken into *failure. */
static void
take_failure(PyObject **failure)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    *failure = value;
}

/*
 * zs_malloc + zs_obj_write, for page `owner`'s object `comp` (clen bytes, not huge), and its
 * table entry made (*entry, for the caller to set).  OBJ_HANDBACK before any change; OBJ_FAILED
 * when _alloc_zspage raised an Exception (*failure); OBJ_ERROR with an exception set.
 *
 * In three steps: every look-up and check (and the CRC, and a new zspage, the only Python code
 * called once anything changed); every new object the changes put somewhere, and the frames'
 * bytes written; then the records and lists, in the reference's order.
 */
static int
store_object(store_ctx_t *x, long long owner, PyObject *comp, long long clen, PyObject **entry, PyObject **failure)
{
    long long pos = int_item(x->pos_of_size, clen + x->handle_size, -1);
    PyObject *cls, *heads = NULL, *counted = NULL, *inuse_now = NULL;
    long long csize, ppz, objs;
    int huge;
    if (clen > PAGE_SIZE || !class_geo(x, pos, &cls, &csize, &ppz, &objs, &huge) || huge ||
        csize < clen + x->handle_size || !class_stats(cls, &heads, &counted, &inuse_now))
        return OBJ_HANDBACK;
    int rc = OBJ_HANDBACK;
    move_t m = {0};
    PyObject *freeobj = NULL, *inuse = NULL, *objs_inuse = NULL, *first_obj = NULL, *crc = NULL, *e = NULL;
    /* find_get_zspage(): the head of the fullest non-empty list, or none (a new zspage) */
    long long li = -1, first = NO_ZSPAGE;
    for (Py_ssize_t a = 0; a < PyTuple_GET_SIZE(x->alloc_lists) && first == NO_ZSPAGE; a++) {
        long long l = PyLong_AsLongLong(PyTuple_GET_ITEM(x->alloc_lists, a));
        long long h = int_item(heads, l, LLONG_MIN);
        if (h == LLONG_MIN || (h != NO_ZSPAGE && (h < 0 || h > MAX_FIRST)))
            goto out;
        if (h != NO_ZSPAGE)
            li = l, first = h;
    }
    int made = first == NO_ZSPAGE;
    /* zram_can_store_page(): a page it would refuse is the Python way's to refuse */
    long long alloced = x->alloced + (made ? ppz : 0);
    if ((x->profile & P_MEM_LIMIT) && x->limit && alloced > x->limit)
        goto out;
    zsrec_t z = {NULL, NO_ZSPAGE, pos, 0, 0, -1, NO_ZSPAGE, NO_ZSPAGE}; /* a new zspage, as _alloc_zspage makes it */
    if (!made) {
        PyObject *zobj;
        if (zs_lookup(x->looked, x->zspages, first, &zobj) < 0)
            goto error;
        /* Pool._head()'s check, and the free chain checked once (Pool._sound) */
        if (zobj == NULL || !zs_read(zobj, &z) || z.first != first || z.cls != pos || z.fullness < 0 ||
            z.fullness >= x->ngroups || int_item(x->list_index, z.fullness, -2) != li || z.inuse < 0 ||
            group_of(x, pos, z.inuse) != z.fullness)
            goto out;
        PyObject *key = PyLong_FromLongLong(first);
        int sound = key != NULL ? PySet_Contains(x->sound, key) : -1;
        Py_XDECREF(key);
        if (sound < 0)
            goto error;
        if (!sound)
            goto out;
    }
    if (z.inuse >= objs || z.freeobj < 0 || z.freeobj >= objs)
        goto out;
    int ready = move_prepare(x, heads, counted, pos, &z, z.inuse + 1, !made, &m);
    if (ready < 0)
        goto error;
    if (!ready)
        goto out;
    if ((crc = PyObject_CallOneArg(x->crc32, comp)) == NULL)
        goto error;
    if (made) {
        /* the pool's own alloc_zspage(): the page's first change */
        PyObject *zobj = PyObject_CallMethodOneArg(x->pool, pa_alloc_zspage, cls);
        if (zobj == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_Exception))
                goto error;
            take_failure(failure);
            rc = OBJ_FAILED;
            goto out;
        }
        PyObject *pa = PyObject_GetAttr(x->pool, pa_pages_allocated);
        long long now_alloced = pa != NULL && PyLong_CheckExact(pa) ? PyLong_AsLongLong(pa) : -1;
        Py_XDECREF(pa);
        int kept = zs_read(zobj, &z) && z.first >= 0 && z.first <= MAX_FIRST && z.cls == pos && z.inuse == 0 &&
                   z.fullness == -1 && z.freeobj >= 0 && z.freeobj < objs && now_alloced >= 0 &&
                   looked_keep(x->looked, z.first, zobj) == 0;
        Py_DECREF(zobj); /* `looked` holds it (the map too) */
        if (!kept) {
            PyErr_Clear();
            PyErr_SetString(PyExc_RuntimeError, "store_entries: a new zspage is not as _alloc_zspage makes it");
            goto error;
        }
        first = z.first;
        x->alloced = alloced = now_alloced;
    }
    /* _obj_malloc(): the slot the chain's head names (8-aligned: its word in one frame), and
     * zs_obj_write(): its data, past the header, in one frame or across two */
    long long idx = z.freeobj, off = idx * csize, doff = off + x->handle_size;
    long long in_frame = doff & (PAGE_SIZE - 1);
    long long head = clen < PAGE_SIZE - in_frame ? clen : PAGE_SIZE - in_frame;
    uint8_t *hdr = NULL, *d0 = NULL, *d1 = NULL;
    int fits = (off & (PAGE_SIZE - 1)) <= PAGE_SIZE - 8 && off + csize <= ppz * PAGE_SIZE;
    int open = fits ? open_frames(x, first + (off >> PAGE_SHIFT), first + ((doff + clen - 1) >> PAGE_SHIFT)) : 0;
    if (open < 0)
        goto error;
    if (open) {
        hdr = in_place_frame(x->in_place, first + (off >> PAGE_SHIFT));
        d0 = (doff >> PAGE_SHIFT) == (off >> PAGE_SHIFT) ? hdr : in_place_frame(x->in_place, first + (doff >> PAGE_SHIFT));
        d1 = head < clen ? in_place_frame(x->in_place, first + (doff >> PAGE_SHIFT) + 1) : d0;
    }
    if (hdr == NULL || d0 == NULL || d1 == NULL) {
        if (!made)
            goto out;
        PyErr_SetString(PyExc_RuntimeError, "store_entries: a new zspage's frames are not open for writing");
        goto error;
    }
    uint64_t link = get_word(hdr + (off & (PAGE_SIZE - 1)));
    long long inuse_v = PyLong_AsLongLong(inuse_now);
    if (inuse_v == -1 && PyErr_Occurred())
        goto error;
    if ((freeobj = PyLong_FromUnsignedLongLong(link >> OBJ_TAG_BITS)) == NULL ||
        (inuse = PyLong_FromLongLong(z.inuse + 1)) == NULL || (objs_inuse = PyLong_FromLongLong(inuse_v + 1)) == NULL ||
        (first_obj = PyLong_FromLongLong(first)) == NULL)
        goto error;
    {
        PyObject *h = PyLong_FromLongLong(first << OBJ_INDEX_BITS | idx), *f = PyLong_FromLongLong(clen);
        e = h != NULL && f != NULL ? new_entry(f, h, crc, x->now) : NULL;
        if (e == NULL && f != NULL && h == NULL)
            Py_DECREF(f);
        Py_XDECREF(h);
        if (e == NULL)
            goto error;
    }
    /* The changes (none can fail: bytes into frames, ints into slots and lists).  The frames
     * first, while nothing has run since they were looked up. */
    if (x->handle_size)
        put_word(hdr + (off & (PAGE_SIZE - 1)), (uint64_t)owner << OBJ_TAG_BITS | OBJ_ALLOCATED_TAG);
    memcpy(d0 + in_frame, PyBytes_AS_STRING(comp), (size_t)head);
    if (head < clen)
        memcpy(d1, PyBytes_AS_STRING(comp) + head, (size_t)(clen - head));
    PyObject_SetAttr(z.obj, za[ZA_FREEOBJ], freeobj);
    PyObject_SetAttr(z.obj, za[ZA_INUSE], inuse);
    move_apply(x, heads, counted, z.obj, first_obj, &m);
    PyObject_SetAttr(cls, ca_objs_inuse, objs_inuse);
    *entry = e;
    e = NULL;
    PyErr_Clear(); /* (none of the above fails on the pool's own objects) */
    if ((x->profile & P_MEM_LIMIT) && alloced > x->max_used)
        x->max_used = alloced;
    rc = OBJ_STORED;
    goto out;
error:
    rc = OBJ_ERROR;
out:
    if (rc == OBJ_HANDBACK)
        PyErr_Clear();
    move_release(&m);
    PyObject *owned[] = {freeobj, inuse, objs_inuse, first_obj, e, crc, heads, counted, inuse_now};
    for (size_t i = 0; i < sizeof owned / sizeof *owned; i++)
        Py_XDECREF(owned[i]);
    return rc;
}

/*
 * zram_free_page() of an object or same-filled slot, in C where nothing needs more than the
 * records and frames in memory: Pool.zs_free's check_handle, _obj_free into a frame open for
 * writing, objs_inuse, _fix_fullness_group, and the slot's counters (as changes, into c[]);
 * the slot is emptied (None).  1 when done; 0 when it cannot be (a zspage that would empty, a
 * huge or written-back slot, anything to look up that is not there): nothing changed, and the
 * reference's _free_page does it; -1 with an exception.
 */
static int
free_object(store_ctx_t *x, PyObject *entries, Py_ssize_t slot, uint64_t flags, PyObject *h, long long *c)
{
    if (flags & (ZRAM_WB | ZRAM_HUGE))
        return 0;
    if (flags & ZRAM_SAME) {
        Py_INCREF(Py_None);
        if (PyList_SetItem(entries, slot, Py_None) < 0)
            return -1;
        c[1]--;
        c[5]--;
        if (x->profile & P_SAME_COUNTS_STORED)
            c[2]--;
        return 1;
    }
    long long size = (long long)(flags & ZRAM_SIZE_MASK);
    int64_t handle;
    if (as_handle(h, &handle) < 0 || handle < 0 || size < 1 || size > PAGE_SIZE ||
        (!(x->profile & P_HUGE_BY_CLASS) && size > x->max_zpage_size)) {
        PyErr_Clear();
        return 0;
    }
    long long first = handle >> OBJ_INDEX_BITS, idx = handle & OBJ_INDEX_MASK;
    PyObject *zobj, *cls, *heads = NULL, *counted = NULL, *inuse_now = NULL;
    zsrec_t z;
    long long csize, ppz, objs;
    int huge;
    if (zs_lookup(x->looked, x->zspages, first, &zobj) < 0)
        return -1;
    /* check_handle(handle, 1), and a zspage that stays (not emptied: _free_zspage is Python's) */
    if (zobj == NULL || !zs_read(zobj, &z) || z.first != first ||
        !class_geo(x, z.cls, &cls, &csize, &ppz, &objs, &huge) || huge || idx >= objs ||
        csize - x->handle_size < 1 || z.inuse < 2 || z.freeobj < 0 || !class_stats(cls, &heads, &counted, &inuse_now))
        return 0;
    int rc = 0;
    move_t m = {0};
    PyObject *freeobj = NULL, *inuse = NULL, *objs_inuse = NULL, *first_obj = NULL;
    long long off = idx * csize;
    int fits = (off & (PAGE_SIZE - 1)) <= PAGE_SIZE - 8 && off + csize <= ppz * PAGE_SIZE;
    int open = fits ? open_frames(x, first + (off >> PAGE_SHIFT), first + (off >> PAGE_SHIFT)) : 0;
    if (open <= 0) {
        rc = open;
        goto out;
    }
    uint8_t *at = in_place_frame(x->in_place, first + (off >> PAGE_SHIFT));
    if (at == NULL)
        goto out;
    int ready = move_prepare(x, heads, counted, z.cls, &z, z.inuse - 1, 1, &m);
    if (ready <= 0) {
        rc = ready;
        goto out;
    }
    if ((at = in_place_frame(x->in_place, first + (off >> PAGE_SHIFT))) == NULL) /* (after any Python code) */
        goto out;
    long long inuse_v = PyLong_AsLongLong(inuse_now);
    if ((inuse_v == -1 && PyErr_Occurred()) || (freeobj = PyLong_FromLongLong(idx)) == NULL ||
        (inuse = PyLong_FromLongLong(z.inuse - 1)) == NULL || (objs_inuse = PyLong_FromLongLong(inuse_v - 1)) == NULL ||
        (first_obj = PyLong_FromLongLong(first)) == NULL) {
        rc = -1;
        goto out;
    }
    /* The changes (none can fail), in the reference's order: _obj_free, objs_inuse, the move. */
    put_word(at + (off & (PAGE_SIZE - 1)), (uint64_t)z.freeobj << OBJ_TAG_BITS);
    PyObject_SetAttr(zobj, za[ZA_FREEOBJ], freeobj);
    PyObject_SetAttr(zobj, za[ZA_INUSE], inuse);
    PyObject_SetAttr(cls, ca_objs_inuse, objs_inuse);
    move_apply(x, heads, counted, zobj, first_obj, &m);
    Py_INCREF(Py_None);
    PyList_SetItem(entries, slot, Py_None);
    PyErr_Clear(); /* (none of the above fails on the pool's own objects) */
    c[1]--;
    c[2]--;
    c[3] -= size;
    if (!(x->profile & P_HUGE_BY_CLASS) && size <= PAGE_SIZE / 2)
        c[4]--;
    rc = 1;
out:
    if (rc == 0)
        PyErr_Clear();
    move_release(&m);
    PyObject *owned[] = {freeobj, inuse, objs_inuse, first_obj, heads, counted, inuse_now};
    for (size_t i = 0; i < sizeof owned / sizeof *owned; i++)
        Py_XDECREF(owned[i]);
    return rc;
}

/* Pool.check_handle() of an old object, before a page replaces it (6.18 frees it only after
 * storing the new one): 1 when it holds, 0 when it does not or cannot be looked up (the page is
 * handed back: the Python way makes the error), -1 with an exception that must not be lost. */
static int
old_handle_ok(store_ctx_t *x, PyObject *h, uint64_t flags)
{
    int64_t handle;
    if (as_handle(h, &handle) < 0 || handle < 0) {
        PyErr_Clear();
        return 0;
    }
    PyObject *zobj;
    zsrec_t z;
    if (zs_lookup(x->looked, x->zspages, handle >> OBJ_INDEX_BITS, &zobj) < 0)
        return -1;
    PyObject *cls;
    long long csize, ppz, objs, length = (long long)(flags & ZRAM_SIZE_MASK);
    int huge;
    if (zobj == NULL || !zs_read(zobj, &z) || !class_geo(x, z.cls, &cls, &csize, &ppz, &objs, &huge))
        return 0;
    long long room = huge ? csize : csize - x->handle_size;
    return (handle & OBJ_INDEX_MASK) < objs && 0 < length && length <= room && z.inuse != 0;
}

/* zram_free_page() of page `index`'s old slot, the reference's own (Zram._free_page, through
 * `free_page`): 1 when done, 0 when it raised an Exception (*failure: the page stops there,
 * as the Python way stops), -1 with any other exception.  It may free a zspage (and so forget
 * the records `looked` keeps) and frames: nothing looked up before is used after it. */
static int
free_old(store_ctx_t *x, PyObject *free_page, long long index, PyObject **failure)
{
    PyObject *key = PyLong_FromLongLong(index);
    PyObject *r = key != NULL ? PyObject_CallOneArg(free_page, key) : NULL;
    Py_XDECREF(key);
    if (r == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception))
            return -1;
        take_failure(failure);
        return 0;
    }
    Py_DECREF(r);
    PyObject *pa = PyObject_GetAttr(x->pool, pa_pages_allocated);
    x->alloced = pa != NULL && PyLong_CheckExact(pa) ? PyLong_AsLongLong(pa) : -1;
    Py_XDECREF(pa);
    if (x->alloced < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "store_entries: the pool's pages_allocated is not a count");
        return -1;
    }
    return 1;
}

/* zram_free_page() of entries[slot], page `index`'s, before it is stored again: in C where it
 * can be (free_object), else the reference's (free_old).  1, 0 (*failure) or -1 as free_old. */
static int
free_slot(store_ctx_t *x, PyObject *entries, Py_ssize_t slot, uint64_t flags, PyObject *h, PyObject *free_page,
          long long index, long long *c, PyObject **failure)
{
    int done = free_object(x, entries, slot, flags, h, c);
    return done != 0 ? done : free_old(x, free_page, index, failure);
}

static PyObject *
store_entries(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *entries, *comps, *geometry, *counts, *free_page;
    Py_ssize_t start;
    long long index;
    Py_buffer pages;
    int huge_class_size;
    store_ctx_t x = {0};
    PyObject *frames;
    if (!PyArg_ParseTuple(args, "O!nLy*O!O!O!OiiiLLOOOO!", &PyList_Type, &entries, &start, &index, &pages,
                          &PyList_Type, &comps, &PyTuple_Type, &geometry, &PyDict_Type, &x.looked, &frames,
                          &x.profile, &x.max_zpage_size, &huge_class_size, &x.limit, &x.max_used, &x.now,
                          &x.crc32, &free_page, &PyList_Type, &counts))
        return NULL;
    long long c[7] = {0}; /* see counts */
    PyObject *failure = NULL;
    int stop = DONE, failed = 0;
    Py_ssize_t count = pages.len / PAGE_SIZE;
    if (pages.len % PAGE_SIZE || PyList_GET_SIZE(comps) < count || start < 0 || index < 0 ||
        start > PyList_GET_SIZE(entries) || count > PyList_GET_SIZE(entries) - start ||
        PyList_GET_SIZE(counts) != STORE_COUNTS || PyTuple_GET_SIZE(geometry) != 10) {
        PyErr_SetString(PyExc_ValueError, "store_entries: whole pages, a compression and a slot for each");
        PyBuffer_Release(&pages);
        return NULL;
    }
    PyObject **geo[] = {&x.pos_of_size, &x.classes, &x.groups, &x.list_index, &x.alloc_lists};
    for (int i = 0; i < 5; i++)
        *geo[i] = PyTuple_GET_ITEM(geometry, i);
    x.ngroups = PyLong_AsLongLong(PyTuple_GET_ITEM(geometry, 5));
    x.handle_size = PyLong_AsLongLong(PyTuple_GET_ITEM(geometry, 6));
    x.zspages = PyTuple_GET_ITEM(geometry, 7);
    x.sound = PyTuple_GET_ITEM(geometry, 8);
    x.pool = PyTuple_GET_ITEM(geometry, 9);
    PyObject *pa = PyObject_GetAttr(x.pool, pa_pages_allocated);
    x.alloced = pa != NULL ? PyLong_AsLongLong(pa) : -1;
    Py_XDECREF(pa);
    if (PyErr_Occurred() || !PyTuple_Check(x.alloc_lists) || !PyAnySet_Check(x.sound) || x.ngroups < 1 ||
        x.ngroups > MAX_GROUPS || x.handle_size < 0 || x.handle_size > MAX_HANDLE_SIZE || x.alloced < 0) {
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError, "store_entries: not a pool's store geometry");
        PyBuffer_Release(&pages);
        return NULL;
    }
    if ((x.zero = PyLong_FromLong(0)) == NULL || (x.no_zspage = PyLong_FromLongLong(NO_ZSPAGE)) == NULL)
        goto fail;
    x.in_place = PyObject_GetAttr(frames, fa_in_place);
    x.mutable_frame = x.in_place != NULL ? PyObject_GetAttr(frames, fa_mutable) : NULL;
    if (x.mutable_frame == NULL || !PyDict_Check(x.in_place)) {
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError, "store_entries: frames that lend no frames in place");
        goto fail;
    }
    for (; c[0] < count; c[0]++) {
        Py_ssize_t slot = start + (Py_ssize_t)c[0];
        const uint8_t *page = (const uint8_t *)pages.buf + (size_t)c[0] * PAGE_SIZE;
        PyObject *old = PyList_GetItem(entries, slot), *comp = PyList_GetItem(comps, c[0]), *e = NULL;
        if (old == NULL || comp == NULL) /* (Python code this calls made the lists shorter) */
            goto fail;
        /* a slot in use: its old object is freed the reference's way (zram_free_page), before
         * the page is stored (3.11, and a same-filled page) or after (6.18) */
        uint64_t oflags = 0;
        PyObject *ohandle = NULL, *ocrc, *oac;
        int has_old = old != Py_None, freed;
        if (has_old && parse_entry(old, &oflags, &ohandle, &ocrc, &oac) < 0)
            goto fail;
        if (has_old && (oflags & ZRAM_WB)) {
            stop = HANDBACK; /* written back: its block is the Python way's to give back */
            break;
        }
        uint64_t word = 0;
        int same = (x.profile & P_SAME_WORD) ? page_same_filled(page, &word)
                                             : (page_same_filled(page, &word) && word == 0);
        if (same) {
            if (has_old && (freed = free_slot(&x, entries, slot, oflags, ohandle, free_page, index + c[0], c,
                                              &failure)) <= 0)
                goto freeing_failed;
            PyObject *w = PyLong_FromUnsignedLongLong(word), *f = PyLong_FromUnsignedLongLong(ZRAM_SAME);
            e = w != NULL && f != NULL ? new_entry(f, w, x.zero, x.now) : NULL;
            if (e == NULL && f != NULL && w == NULL)
                Py_DECREF(f);
            Py_XDECREF(w);
            if (e == NULL || PyList_SetItem(entries, slot, e) < 0) /* steals e; the slot is None */
                goto fail;
            c[1]++;
            c[5]++;
            if (x.profile & P_SAME_COUNTS_STORED)
                c[2]++;
            continue;
        }
        if (!PyBytes_CheckExact(comp) || PyBytes_GET_SIZE(comp) < 1) {
            stop = HANDBACK; /* a failure, none made, or nothing (which zs_malloc refuses) */
            break;
        }
        long long clen = PyBytes_GET_SIZE(comp);
        if ((x.profile & P_HUGE_BY_CLASS) ? clen >= huge_class_size : clen > x.max_zpage_size) {
            stop = HANDBACK; /* the raw page, in a huge object */
            break;
        }
        int free_first = has_old && (x.profile & P_FREE_OLD_FIRST);
        if (has_old && !free_first && !(oflags & ZRAM_SAME)) { /* _store_page's check of the old handle */
            int ok = old_handle_ok(&x, ohandle, oflags);
            if (ok < 0)
                goto fail;
            if (!ok) {
                stop = HANDBACK;
                break;
            }
        }
        /* (3.11: once the old object is freed, a page handed back is stored the Python way as
         * into a free slot, which it now is: the same as if it had been stored there whole) */
        if (free_first &&
            (freed = free_slot(&x, entries, slot, oflags, ohandle, free_page, index + c[0], c, &failure)) <= 0)
            goto freeing_failed;
        int rc = store_object(&x, index + c[0], comp, clen, &e, &failure);
        if (rc == OBJ_ERROR)
            goto fail;
        if (rc != OBJ_STORED) {
            stop = rc == OBJ_FAILED ? FAILED : HANDBACK;
            break;
        }
        if (has_old && !free_first &&
            (freed = free_slot(&x, entries, slot, oflags, ohandle, free_page, index + c[0], c, &failure)) <= 0) {
            Py_DECREF(e); /* the new object stays allocated, its entry unset: as the Python way stops */
            goto freeing_failed;
        }
        if (PyList_SetItem(entries, slot, e) < 0) /* steals e; the slot is None */
            goto fail;
        c[1]++;
        c[2]++;
        c[3] += clen;
        if (!(x.profile & P_HUGE_BY_CLASS) && clen <= PAGE_SIZE / 2)
            c[4]++;
        continue;
    freeing_failed:
        if (freed < 0)
            goto fail;
        stop = FAILED;
        break;
    }
    goto out;
fail:
    failed = 1;
out:
    c[6] = x.max_used;
    Py_XDECREF(x.zero);
    Py_XDECREF(x.no_zspage);
    Py_XDECREF(x.in_place);
    Py_XDECREF(x.mutable_frame);
    PyBuffer_Release(&pages);
    PyObject *type = NULL, *value = NULL, *tb = NULL;
    if (failed)
        PyErr_Fetch(&type, &value, &tb);
    for (int i = 0; i < STORE_COUNTS; i++) {
        PyObject *v = i < 7 ? PyLong_FromLongLong(c[i]) : failure != NULL ? failure : Py_NewRef(Py_None);
        if (v == NULL || PyList_SetItem(counts, i, v) < 0) { /* (steals v, and failure with it) */
            if (i < 7)
                Py_XDECREF(failure);
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(tb);
            return NULL;
        }
    }
    if (failed) {
        PyErr_Restore(type, value, tb);
        return NULL;
    }
    return PyLong_FromLong(stop);
}

static PyObject *
Pool_get_pages_allocated(PoolObject *p, void *Py_UNUSED(closure))
{
    return PyLong_FromLongLong(p->pages_allocated);
}

static PyObject *
Pool_get_pages_compacted(PoolObject *p, void *Py_UNUSED(closure))
{
    return PyLong_FromLongLong(p->pages_compacted);
}

static int
Pool_set_pages_compacted(PoolObject *p, PyObject *v, void *Py_UNUSED(closure))
{
    long long n = v != NULL ? PyLong_AsLongLong(v) : -1;
    if (n < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "pages_compacted is a count");
        return -1;
    }
    p->pages_compacted = n;
    return 0;
}

static PyObject *
Pool_get_version(PoolObject *p, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(p->version);
}

static PyMethodDef Pool_methods[] = {
    {"zs_malloc", (PyCFunction)Pool_zs_malloc, METH_VARARGS, "zs_malloc(size, owner) -> handle"},
    {"zs_free", (PyCFunction)Pool_zs_free, METH_O, "zs_free(handle)"},
    {"zs_obj_write", (PyCFunction)Pool_zs_obj_write, METH_VARARGS, "zs_obj_write(handle, data)"},
    {"zs_obj_read", (PyCFunction)Pool_zs_obj_read, METH_VARARGS, "zs_obj_read(handle, length) -> bytes"},
    {"zs_compact", (PyCFunction)Pool_zs_compact, METH_NOARGS, "zs_compact() -> pages freed"},
    {"destroy", (PyCFunction)Pool_destroy, METH_NOARGS, "zs_destroy_pool(): every zspage and frame freed"},
    {"class_stats", (PyCFunction)Pool_class_stats, METH_O,
     "class_stats(pos) -> (objs_allocated, objs_inuse, heads, zspages)"},
    {"zspages", (PyCFunction)Pool_zspages, METH_NOARGS,
     "zspages() -> [(first, cls, inuse, freeobj, fullness, prev, next, owner)]"},
    {"zspage_bytes", (PyCFunction)Pool_zspage_bytes, METH_O, "zspage_bytes(first) -> its frames' bytes"},
    {"zspage_write", (PyCFunction)Pool_zspage_write, METH_VARARGS, "zspage_write(first, offset, data)"},
    {"store_pages", (PyCFunction)Pool_store_pages, METH_VARARGS, "zram's _store_page for a run of pages"},
    {"read_pages", (PyCFunction)Pool_read_pages, METH_VARARGS, "zram's _read_entry for a run of pages"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Pool_getset[] = {
    {"pages_allocated", (getter)Pool_get_pages_allocated, NULL, "frames held by zspages", NULL},
    {"pages_compacted", (getter)Pool_get_pages_compacted, (setter)Pool_set_pages_compacted,
     "pages freed by compaction, ever", NULL},
    {"version", (getter)Pool_get_version, NULL, "changes whenever the pool's state does", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject PoolType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "zramctl.kernel._zsmalloc.Pool",
    .tp_basicsize = sizeof(PoolObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A zs_pool in C memory (see zramctl/kernel/compiled_pool.py)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Pool_init,
    .tp_dealloc = (destructor)Pool_dealloc,
    .tp_methods = Pool_methods,
    .tp_getset = Pool_getset,
};

static PyMethodDef module_methods[] = {
    {"read_entries", (PyCFunction)read_entries, METH_VARARGS,
     "zram's _read_entry for a run of a table leaf's entries, over the reference pool (an image)"},
    {"list_entries", (PyCFunction)list_entries, METH_VARARGS,
     "read_entries' first step: a run of a table leaf's entries checked and listed -> Listed"},
    {"access_entries", (PyCFunction)access_entries, METH_VARARGS,
     "zram_accessed() for a run of a table leaf's entries"},
    {"store_entries", (PyCFunction)store_entries, METH_VARARGS,
     "zram's _store_page for a run of a table leaf's free slots, over the reference pool (an image)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_zsmalloc", "zsmalloc and zram's per-page paths, compiled (see the source's head).",
    -1, module_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__zsmalloc(void)
{
    if (PyType_Ready(&PoolType) < 0 || PyType_Ready(&ListedType) < 0)
        return NULL;
    /* (PyCapsule_Import would walk attributes from "zramctl", where a submodule is not yet one) */
    PyObject *kcomp = PyImport_ImportModule("zramctl.kernel._kcomp");
    PyObject *cap = kcomp != NULL ? PyObject_GetAttrString(kcomp, "_DECODERS") : NULL;
    Py_XDECREF(kcomp);
    decoders = cap != NULL ? PyCapsule_GetPointer(cap, "zramctl.kernel._kcomp._DECODERS") : NULL;
    Py_XDECREF(cap); /* the module keeps the capsule, and the table is static */
    if (decoders == NULL)
        return NULL;
    for (int i = 0; i < ZA_N; i++)
        if ((za[i] = PyUnicode_InternFromString(za_names[i])) == NULL)
            return NULL;
    if ((ca_objs_inuse = PyUnicode_InternFromString("objs_inuse")) == NULL ||
        (ca_heads = PyUnicode_InternFromString("heads")) == NULL ||
        (ca_zspages = PyUnicode_InternFromString("zspages")) == NULL ||
        (pa_alloc_zspage = PyUnicode_InternFromString("_alloc_zspage")) == NULL ||
        (pa_pages_allocated = PyUnicode_InternFromString("pages_allocated")) == NULL ||
        (fa_in_place = PyUnicode_InternFromString("in_place")) == NULL ||
        (fa_mutable = PyUnicode_InternFromString("mutable")) == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    ZsError = PyErr_NewException("zramctl.kernel._zsmalloc.ZsError", PyExc_ValueError, NULL);
    if (ZsError == NULL || PyModule_AddObject(m, "ZsError", ZsError) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(ZsError);
    Py_INCREF(&ListedType);
    if (PyModule_AddObject(m, "Listed", (PyObject *)&ListedType) < 0) {
        Py_DECREF(&ListedType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&PoolType);
    if (PyModule_AddObject(m, "Pool", (PyObject *)&PoolType) < 0) {
        Py_DECREF(&PoolType);
        Py_DECREF(m);
        return NULL;
    }
    PyModule_AddIntConstant(m, "PROFILE_SAME_WORD", P_SAME_WORD);
    PyModule_AddIntConstant(m, "PROFILE_SAME_COUNTS_STORED", P_SAME_COUNTS_STORED);
    PyModule_AddIntConstant(m, "PROFILE_HUGE_BY_CLASS", P_HUGE_BY_CLASS);
    PyModule_AddIntConstant(m, "PROFILE_FREE_OLD_FIRST", P_FREE_OLD_FIRST);
    PyModule_AddIntConstant(m, "PROFILE_MEM_LIMIT", P_MEM_LIMIT);
    PyModule_AddIntConstant(m, "DONE", DONE);
    PyModule_AddIntConstant(m, "HANDBACK", HANDBACK);
    PyModule_AddIntConstant(m, "NOMEM", NOMEM);
    PyModule_AddIntConstant(m, "FAILED", FAILED);
    PyModule_AddIntConstant(m, "STORE_COUNTS", STORE_COUNTS);
    return m;
}
