"""The kernel model: the zram driver (zram_drv), zsmalloc, sysfs, the behaviour profiles,
the compressors (zcomp, and the compiled _kcomp) and the zbud/z3fold models.

It knows nothing of files or the command line.
"""
