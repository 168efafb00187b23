"""Builds zramctl's one compiled module, ``zramctl._kcomp`` (the kernel's lzo, lzo-rle and lz4).

Everything else about the package is in pyproject.toml.  The module is plain C against the
CPython API; it needs only a C compiler, which python-lzo already needs.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "zramctl._kcomp",
            sources=["zramctl/_kcomp.c"],
            extra_compile_args=["-O3", "-std=c99", "-Wall", "-Wextra"],
        )
    ]
)
