"""Builds zramctl's compiled modules: ``zramctl.kernel._kcomp`` (the kernel's lzo, lzo-rle and lz4),
``zramctl.kernel._zsmalloc`` (zsmalloc and zram's per-page paths for a device in memory), and
any other ``zramctl/*/*.c``.

Everything else about the package is in pyproject.toml.  The modules are plain C against the
CPython API; they need only a C compiler and Python's headers, which python-lzo already needs.
There is no fallback: if it cannot be built the install stops, with one line that says why.
"""

import glob
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
                f"zramctl: building {ext.name} (plain C) failed: {what}; "
                "it needs a C compiler and Python's headers (gcc and python3-dev on Debian)"
            ) from None


# One compiled module per C file of the package, each named for where it sits in it.
MODULES = sorted(glob.glob("zramctl/*/*.c"))

setup(
    ext_modules=[
        Extension(
            source[: -len(".c")].replace("/", "."),
            sources=[source],
            # -pthread: _kcomp's compression streams are POSIX threads.
            extra_compile_args=["-O3", "-std=c99", "-Wall", "-Wextra", "-pthread"],
            extra_link_args=["-pthread"],
        )
        for source in MODULES
    ],
    cmdclass={"build_ext": BuildExt},
)
