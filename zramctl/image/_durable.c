/*
 * _durable: a commit's I/O, run as one list of operations without the GIL.
 *
 * Why: a commit of 64 MiB makes some 2,500 pwritev(2) and as many posix_fallocate(2) calls, one
 * per run of frames (each zspage's extent leaves a hole behind its last frame).  From Python each
 * call costs microseconds of its own; worse, a commit that runs beside the thread storing the next
 * pages (Image.commit(background=True)) would need the GIL back after every call, and that thread
 * gives it up only once per switch interval (5 ms): thousands of calls would take seconds.  Here
 * the whole list runs between one release of the GIL and one re-acquisition.
 *
 * io.py says what the operations are (io.Op, built by its functions) and holds their readable
 * reference, io.run_reference; tests/test_durable.py holds the two equal: file bytes, durable
 * points and errors.  The kinds are this module's constants, which io.py imports: one definition.
 *
 *   run(ops, crash_in) -> (ops done, durable points passed, errno or 0)
 *     ops       a sequence of (kind, fd, arg, length, buffers): see the OP_* comments below
 *     crash_in  durable points to pass before the one at which the process kills itself with
 *               SIGKILL, after writing the first half of the bytes if that point is a write (a
 *               torn write: io.CrashPoints); -1: never
 *   It stops at the first operation that fails: its errno is returned, the operations before it
 *   are done, nothing after it is tried.
 *
 * Every argument is checked before anything is done: a kind it does not know, a negative fd,
 * offset or length, a write of no buffers or of more than IOV_MAX, a total past SSIZE_MAX or an
 * end past OFF_MAX is a ValueError, and nothing is written.
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

enum {
    OP_WRITE = 1,    /* a durable point; pwritev(fd, buffers, arg): every byte, or EIO ("short write") */
    OP_ALLOCATE = 2, /* a durable point; posix_fallocate(fd, arg, length), where the file system can */
    OP_PUNCH = 3,    /* a durable point; punch [arg, arg + length) (KEEP_SIZE), where the file system can */
    OP_SHRINK = 4,   /* if the file is longer than arg bytes: a durable point, then ftruncate(fd, arg) */
    OP_TRUNCATE = 5, /* ftruncate(fd, arg): no durable point of its own (a log, before its fsync) */
    OP_SYNC = 6,     /* a durable point; fsync(fd) */
    OP_CLEAR = 7,    /* a durable point; ftruncate(fd, arg) (a log emptied once it is applied) */
};

#define OFF_MAX ((long long)(~0ULL >> 1))

typedef struct {
    int kind, fd;
    long long arg, length;
    Py_ssize_t first, count; /* its buffers: iov[first .. first + count) */
    Py_ssize_t total;        /* their bytes */
} Op;

/* Allocation and punching are only reservations: a file system that cannot do them is not an error. */
static int
unsupported(int err)
{
    return err == EOPNOTSUPP || err == ENOSYS || err == EINVAL;
}

/* The first half of a write's bytes, then SIGKILL: the torn write of a crash at this point. */
static void
crash(const Op *op, const struct iovec *iov)
{
    if (op && op->kind == OP_WRITE) {
        Py_ssize_t left = op->total / 2;
        long long at = op->arg;
        for (Py_ssize_t i = 0; i < op->count && left > 0; i++) {
            size_t n = iov[op->first + i].iov_len < (size_t)left ? iov[op->first + i].iov_len : (size_t)left;
            ssize_t w = pwrite(op->fd, iov[op->first + i].iov_base, n, (off_t)at);
            if (w <= 0)
                break;
            at += w;
            left -= w;
            if ((size_t)w < n)
                break;
        }
    }
    kill(getpid(), SIGKILL);
}

/* One durable point: counted, and the one crash_in names kills the process. */
static void
point(const Op *op, const struct iovec *iov, long long *crash_in, long long *points)
{
    (*points)++;
    if (*crash_in == 0)
        crash(op, iov);
    if (*crash_in > 0)
        (*crash_in)--;
}

/* Run one operation: 0, or the errno it failed with. */
static int
run_one(const Op *op, const struct iovec *iov, long long *crash_in, long long *points)
{
    int r;
    switch (op->kind) {
    case OP_WRITE: {
        point(op, iov, crash_in, points);
        ssize_t n;
        do
            n = pwritev(op->fd, iov + op->first, (int)op->count, (off_t)op->arg);
        while (n < 0 && errno == EINTR);
        if (n < 0)
            return errno;
        return n == op->total ? 0 : EIO;
    }
    case OP_ALLOCATE:
        point(op, iov, crash_in, points);
        do
            r = posix_fallocate(op->fd, (off_t)op->arg, (off_t)op->length);
        while (r == EINTR);
        return r && !unsupported(r) ? r : 0;
    case OP_PUNCH:
        point(op, iov, crash_in, points);
        do
            r = fallocate(op->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)op->arg, (off_t)op->length);
        while (r < 0 && errno == EINTR);
        return r < 0 && !unsupported(errno) ? errno : 0;
    case OP_SHRINK: {
        struct stat st;
        if (fstat(op->fd, &st) < 0)
            return errno;
        if ((long long)st.st_size <= op->arg)
            return 0;
        point(op, iov, crash_in, points);
    }
        /* fall through */
    case OP_TRUNCATE:
        do
            r = ftruncate(op->fd, (off_t)op->arg);
        while (r < 0 && errno == EINTR);
        return r < 0 ? errno : 0;
    case OP_SYNC:
        point(op, iov, crash_in, points);
        do
            r = fsync(op->fd);
        while (r < 0 && errno == EINTR);
        return r < 0 ? errno : 0;
    case OP_CLEAR:
        point(op, iov, crash_in, points);
        do
            r = ftruncate(op->fd, (off_t)op->arg);
        while (r < 0 && errno == EINTR);
        return r < 0 ? errno : 0;
    }
    return EINVAL; /* (unreachable: kinds are checked before anything runs) */
}

static int
as_long_long(PyObject *o, long long *out, const char *what)
{
    long long v = PyLong_AsLongLong(o);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v < 0) {
        PyErr_Format(PyExc_ValueError, "an operation's %s is negative", what);
        return -1;
    }
    *out = v;
    return 0;
}

/* Parse one (kind, fd, arg, length, buffers) into op, its buffers appended to views/iov. */
static int
parse_op(PyObject *item, Op *op, Py_buffer *views, struct iovec *iov, Py_ssize_t *nviews, Py_ssize_t room)
{
    PyObject *fast = PySequence_Fast(item, "an operation is a sequence");
    if (!fast)
        return -1;
    int rc = -1;
    PyObject *bufs = NULL;
    if (PySequence_Fast_GET_SIZE(fast) != 5) {
        PyErr_SetString(PyExc_ValueError, "an operation is (kind, fd, arg, length, buffers)");
        goto out;
    }
    PyObject **f = PySequence_Fast_ITEMS(fast);
    long long kind, fd;
    if (as_long_long(f[0], &kind, "kind") < 0 || as_long_long(f[1], &fd, "fd") < 0 ||
        as_long_long(f[2], &op->arg, "offset") < 0 || as_long_long(f[3], &op->length, "length") < 0)
        goto out;
    if (kind < OP_WRITE || kind > OP_CLEAR || fd > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "an operation's kind or fd is not one this module runs");
        goto out;
    }
    op->kind = (int)kind;
    op->fd = (int)fd;
    op->first = *nviews;
    op->count = 0;
    op->total = 0;
    if (op->length > OFF_MAX - op->arg) {
        PyErr_SetString(PyExc_ValueError, "an operation ends past the largest file offset");
        goto out;
    }
    if (op->kind != OP_WRITE) {
        rc = 0;
        goto out;
    }
    bufs = PySequence_Fast(f[4], "a write's buffers are a sequence");
    if (!bufs)
        goto out;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(bufs);
    if (n < 1 || n > IOV_MAX || n > room - *nviews) {
        PyErr_SetString(PyExc_ValueError, "a write has no buffers, or more than IOV_MAX");
        goto out;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_buffer *v = &views[*nviews];
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(bufs, i), v, PyBUF_SIMPLE) < 0)
            goto out;
        iov[*nviews].iov_base = v->buf;
        iov[*nviews].iov_len = (size_t)v->len;
        (*nviews)++;
        op->count++;
        if (v->len > PY_SSIZE_T_MAX - op->total) {
            PyErr_SetString(PyExc_ValueError, "a write's bytes overflow");
            goto out;
        }
        op->total += v->len;
    }
    if (op->total > OFF_MAX - op->arg) {
        PyErr_SetString(PyExc_ValueError, "a write ends past the largest file offset");
        goto out;
    }
    rc = 0;
out:
    Py_XDECREF(bufs);
    Py_DECREF(fast);
    return rc;
}

/* How many buffers the writes of ``ops`` hold at most (a bound for the arrays). */
static Py_ssize_t
count_buffers(PyObject **items, Py_ssize_t n)
{
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyTuple_Check(items[i]) && !PyList_Check(items[i]))
            continue; /* parse_op says what is wrong with it */
        PyObject *bufs = PySequence_Size(items[i]) == 5 ? PySequence_GetItem(items[i], 4) : NULL;
        if (!bufs) {
            PyErr_Clear();
            continue;
        }
        Py_ssize_t k = (PyTuple_Check(bufs) || PyList_Check(bufs)) ? PySequence_Size(bufs) : 0;
        Py_DECREF(bufs);
        if (k > 0 && k <= IOV_MAX)
            total += k;
    }
    return total;
}

static PyObject *
durable_run(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *seq;
    long long crash_in;
    if (!PyArg_ParseTuple(args, "OL:run", &seq, &crash_in))
        return NULL;
    if (crash_in < -1) {
        PyErr_SetString(PyExc_ValueError, "crash_in is -1 or a count of points");
        return NULL;
    }
    PyObject *fast = PySequence_Fast(seq, "ops is a sequence");
    if (!fast)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    Py_ssize_t room = count_buffers(PySequence_Fast_ITEMS(fast), n);
    Op *ops = PyMem_Calloc((size_t)n + 1, sizeof(Op));
    Py_buffer *views = PyMem_Calloc((size_t)room + 1, sizeof(Py_buffer));
    struct iovec *iov = PyMem_Calloc((size_t)room + 1, sizeof(struct iovec));
    Py_ssize_t nviews = 0;
    PyObject *result = NULL;
    if (!ops || !views || !iov) {
        PyErr_NoMemory();
        goto out;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        if (parse_op(PySequence_Fast_GET_ITEM(fast, i), &ops[i], views, iov, &nviews, room) < 0)
            goto out;
    long long points = 0;
    Py_ssize_t done = 0;
    int err = 0;
    Py_BEGIN_ALLOW_THREADS
    for (; done < n; done++) {
        err = run_one(&ops[done], iov, &crash_in, &points);
        if (err)
            break;
    }
    Py_END_ALLOW_THREADS
    result = Py_BuildValue("(nLi)", done, points, err);
out:
    for (Py_ssize_t i = 0; i < nviews; i++)
        PyBuffer_Release(&views[i]);
    PyMem_Free(ops);
    PyMem_Free(views);
    PyMem_Free(iov);
    Py_DECREF(fast);
    return result;
}

static PyMethodDef durable_methods[] = {
    {"run", durable_run, METH_VARARGS,
     "run(ops, crash_in) -> (ops done, durable points passed, errno or 0): a commit's operations, "
     "in order, without the GIL; it stops at the first that fails."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_durable", "A commit's I/O (io.Op lists), run without the GIL.", -1, durable_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__durable(void)
{
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    if (PyModule_AddIntConstant(m, "OP_WRITE", OP_WRITE) < 0 || PyModule_AddIntConstant(m, "OP_ALLOCATE", OP_ALLOCATE) < 0 ||
        PyModule_AddIntConstant(m, "OP_PUNCH", OP_PUNCH) < 0 || PyModule_AddIntConstant(m, "OP_SHRINK", OP_SHRINK) < 0 ||
        PyModule_AddIntConstant(m, "OP_TRUNCATE", OP_TRUNCATE) < 0 || PyModule_AddIntConstant(m, "OP_SYNC", OP_SYNC) < 0 ||
        PyModule_AddIntConstant(m, "OP_CLEAR", OP_CLEAR) < 0 || PyModule_AddIntConstant(m, "IOV_MAX", IOV_MAX) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
