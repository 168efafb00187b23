"""Builds zramctl's one compiled module, ``zramctl.kernel._kcomp`` (the kernel's lzo, lzo-rle and lz4).

Everything else about the package is in pyproject.toml.  The module is plain C against the
CPython API; it needs only a C compiler and Python's headers, which python-lzo already needs.
There is no fallback: if it cannot be built the install stops, with one line that says why.
"""

import re

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class BuildExt(build_ext):
    """build_ext whose failure is one line naming what failed and what it needs."""

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # CompileError, LinkError, a missing compiler: all end the install
            text = (str(exc).splitlines() or [type(exc).__name__])[0]
            ran = re.match(r"[Cc]ommand '\['([^']*)'.*exit status (\d+)", text)
            what = f"{ran[1]} exited with status {ran[2]}" if ran else text[:200]
            raise SystemExit(
                f"zramctl: building {ext.name} (the kernel's compressors, plain C) failed: {what}; "
                "it needs a C compiler and Python's headers (gcc and python3-dev on Debian)"
            ) from None


setup(
    ext_modules=[
        Extension(
            "zramctl.kernel._kcomp",
            sources=["zramctl/kernel/_kcomp.c"],
            extra_compile_args=["-O3", "-std=c99", "-Wall", "-Wextra"],
        )
    ],
    cmdclass={"build_ext": BuildExt},
)
