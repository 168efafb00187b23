"""Our zramctl against util-linux's, on the same data: the kernel's zram0 and one of our devices.

The data is pages whose stored size the kernel and our model agree on by
construction: random pages (incompressible: stored raw, one page each),
all-zero pages and pages of one repeated 8-byte word (same-filled: no memory).
Both devices use lzo.  The installed util-linux zramctl (2.38.1 here) prints
zram0; ours prints our device; the outputs must agree column by column, NAME
(/dev/zram0 vs zram0) and STREAMS (the kernel has no max_comp_streams since
6.15, ours records the stream count) excepted.  2.38.1 has no COMP-RATIO:
the columns both have are compared.  With NAME and STREAMS left out of ``-o``
the two outputs must be byte-identical, in every layout.

Skipped where there is no usable kernel zram0 or no util-linux zramctl; the
device is always reset afterwards (tests/kernel.py holds the oracle's lock).
"""

from __future__ import annotations

import mmap
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from kernel import DEV, PAGE, KernelUnavailable, kernel_available, kernel_zram0

pytestmark = pytest.mark.kernel

ZRAMCTL = str(Path(sys.executable).with_name("zramctl"))
UTIL_LINUX = shutil.which("zramctl", path="/usr/sbin:/sbin:/usr/bin:/bin")
DISKSIZE = 16 << 20
COMMON = "DISKSIZE,DATA,COMPR,ALGORITHM,ZERO-PAGES,TOTAL,MEM-LIMIT,MEM-USED,MIGRATED,MOUNTPOINT"
RIGHT = {
    "DISKSIZE",
    "DATA",
    "COMPR",
    "STREAMS",
    "ZERO-PAGES",
    "TOTAL",
    "MEM-LIMIT",
    "MEM-USED",
    "MIGRATED",
    "COMP-RATIO",
}


def pages() -> bytes:
    """300 random, 100 zero and 100 same-filled pages, interleaved; the rest of the device unwritten."""
    rnd = random.Random(2024)
    out = []
    for i in range(500):
        kind = i % 5
        if kind in (0, 1, 2):
            out.append(rnd.randbytes(PAGE))
        elif kind == 3:
            out.append(bytes(PAGE))
        else:
            out.append(rnd.randbytes(8) * (PAGE // 8))
    return b"".join(out)


def write_kernel(data: bytes) -> None:
    """One O_DIRECT write from a page-aligned buffer (the kernel sees whole pages, as swap writes them)."""
    buf = mmap.mmap(-1, len(data))
    buf.write(data)
    fd = os.open(DEV, os.O_WRONLY | os.O_DIRECT)
    try:
        assert os.pwritev(fd, [buf], 0) == len(data)
    finally:
        os.close(fd)
        buf.close()


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    if UTIL_LINUX is None:
        pytest.skip("util-linux zramctl is not installed")
    if not kernel_available():
        pytest.skip("no writable kernel zram0 on this machine")
    data = pages()
    root = tmp_path_factory.mktemp("parity")
    env = dict(os.environ, ZRAMCTL_ROOT=str(root), LC_ALL="C")
    env.pop("NO_COLOR", None)
    subprocess.run(
        [ZRAMCTL, "-f", "-s", str(DISKSIZE), "-a", "lzo"], env=env, check=True, capture_output=True
    )
    subprocess.run([ZRAMCTL, "write", "zram0"], input=data, env=env, check=True)
    try:
        with kernel_zram0(algorithm=None, disksize=None, setup=False):
            # set zram0 up with util-linux itself, as a user would
            subprocess.run([UTIL_LINUX, "/dev/zram0", "-s", str(DISKSIZE), "-a", "lzo"], check=True)
            write_kernel(data)

            def theirs(*args: str) -> str:
                proc = subprocess.run(
                    [UTIL_LINUX, *args, "/dev/zram0"], capture_output=True, env=env, check=True
                )
                return proc.stdout.decode()

            def ours(*args: str) -> str:
                proc = subprocess.run([ZRAMCTL, *args, "zram0"], capture_output=True, env=env, check=True)
                return proc.stdout.decode()

            yield theirs, ours
    except KernelUnavailable as exc:
        pytest.skip(str(exc))


def cells(text: str, empty: set[str]) -> list[dict[str, str]]:
    """Rows of a human-layout table as {column: cell}; ``empty`` names the columns with empty cells.

    Cells hold no spaces here, so a row splits into its non-empty cells, which zip with the
    header names once the empty columns are left out.  (Layout itself is compared byte for
    byte in test_byte_identical_without_name_and_streams.)
    """
    lines = text.splitlines()
    names = [n for n in lines[0].split() if n not in empty]
    return [dict(zip(names, line.split(), strict=True)) for line in lines[1:]]


def raw_cells(text: str) -> list[dict[str, str]]:
    lines = text.splitlines()
    names = lines[0].split(" ")
    return [dict(zip(names, line.split(" "), strict=True)) for line in lines[1:]]


def compare(theirs: list[dict[str, str]], ours: list[dict[str, str]]) -> None:
    assert len(theirs) == len(ours) == 1
    common = [k for k in theirs[0] if k in ours[0] and k not in ("NAME", "STREAMS")]
    assert len(common) >= 5, common
    assert {k: ours[0][k] for k in common} == {k: theirs[0][k] for k in common}


@pytest.mark.parametrize("args", [(), ("--output-all",), ("--output-all", "--bytes"), ("--bytes",)])
def test_columns_agree(both, args):
    theirs, ours = both
    compare(cells(theirs(*args), {"STREAMS", "MOUNTPOINT"}), cells(ours(*args), {"MOUNTPOINT"}))


@pytest.mark.parametrize(
    "args", [("--raw",), ("--output-all", "--raw"), ("--output-all", "--raw", "--bytes")]
)
def test_raw_columns_agree(both, args):
    theirs, ours = both
    compare(raw_cells(theirs(*args)), raw_cells(ours(*args)))


def test_noheadings_rows_agree(both):
    theirs, ours = both
    names = COMMON.split(",")
    for extra in ((), ("--bytes",)):
        a = theirs("-n", "--raw", "-o", COMMON, *extra).splitlines()
        b = ours("-n", "--raw", "-o", COMMON, *extra).splitlines()
        assert len(a) == len(b) == 1
        assert dict(zip(names, b[0].split(" "), strict=True)) == dict(
            zip(names, a[0].split(" "), strict=True)
        )
    # -n keeps the widths the header would have set
    assert ours("-n", "--output-all").count("\n") == 1
    full = theirs("--output-all").splitlines()
    assert theirs("-n", "--output-all").splitlines() == full[1:]


@pytest.mark.parametrize(
    "args",
    [(), ("--bytes",), ("--raw",), ("-n",), ("--raw", "--bytes"), ("-n", "--bytes"), ("--raw", "-n")],
)
def test_byte_identical_without_name_and_streams(both, args):
    theirs, ours = both
    assert ours("-o", COMMON, *args) == theirs("-o", COMMON, *args)


def test_the_data_is_what_we_think(both):
    theirs, _ = both
    row = raw_cells(theirs("--output-all", "--raw", "--bytes"))[0]
    randoms, same = 300, 200
    assert row["DATA"] == str((randoms + same) * PAGE)
    assert row["COMPR"] == row["TOTAL"] == row["MEM-USED"] == str(randoms * PAGE)
    assert row["ZERO-PAGES"] == str(same)


def test_messages_agree(tmp_path):
    """The usage messages util-linux 2.38.1 shares with the newest version, side by side."""
    if UTIL_LINUX is None:
        pytest.skip("util-linux zramctl is not installed")
    env = dict(os.environ, ZRAMCTL_ROOT=str(tmp_path), LC_ALL="C")
    cases = [
        ["--bogus"],
        ["--bogus=1"],
        ["-x"],
        ["-o"],
        ["--output"],
        ["--by=3"],
        ["--out"],
        ["-f", "-r"],
        ["-r", "-s", "1M"],
        ["-f", "zram9"],
        ["zram8", "zram9"],
        ["-s", "1M"],
        ["-s", "1.5"],
        ["-s", "1Z"],
        ["-s", ""],
        ["-t", "abc"],
        ["-t", "-1"],
        ["-o", "NAME,FOO,DATA"],
        ["-o", ""],
        ["-o", ",NAME"],
        ["-r"],
    ]
    for args in cases:
        a = subprocess.run(["zramctl", *args], executable=UTIL_LINUX, capture_output=True, env=env)  # argv[0]
        b = subprocess.run([ZRAMCTL, *args], capture_output=True, env=env)
        assert (b.returncode, b.stdout, b.stderr) == (a.returncode, a.stdout, a.stderr), args
