/*
 * _zsmalloc: zsmalloc and zram's per-page paths for a device in memory, compiled.
 * (Being written: see zramctl/kernel/zsmalloc.py, the reference.)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_zsmalloc", NULL, -1, NULL};

PyMODINIT_FUNC
PyInit__zsmalloc(void)
{
    return PyModule_Create(&module);
}
