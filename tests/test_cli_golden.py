"""Golden output of every status layout, for devices whose sizes are known exactly.

zram0 (6.18, lzo, 16M) holds 350 pages: 200 random pages (incompressible, so
stored raw: 4096 bytes each, one page of memory each), 100 zero pages and 50
pages of 0xab (same-filled: no memory).  So DATA = 350 pages = 1433600 (1.4M),
COMPR = TOTAL = MEM-USED = 200 pages = 819200 (800K), ZERO-PAGES = 150 and
COMP-RATIO = 1.7500.  zram1 (zstd, 1G, 4 streams) is empty; zram2 exists but
is not set up (not listed); zram3 is a 3.11 device, which has no mm_stat, so
MEM-LIMIT, MEM-USED and MIGRATED are empty and ALGORITHM too (no
comp_algorithm in 2013): it holds 10 random pages and 5 zero pages, and a
2013 zero page does not count in orig_data_size.

Set up without ``-t``, a 6.18 device (zram0, zram2) has one stream per CPU zramctl may
use and a 3.11 one (zram3) has one: the CPU count is made CPUS here, a number no real
default (1) or ``-t`` (4) gives, so the table shows whose rule gave each figure.

The texts are util-linux's layout rules (2.38.1's ``libsmartcols/src/print.c``) applied by
hand; test_parity_util_linux.py checks the same rules against the real
util-linux on the kernel's zram0.
"""

from __future__ import annotations

import json
import random

import pytest

from zramctl.cli import main as cli
from zramctl.kernel import zram_drv

PAGE = 4096
CPUS = 3
"""The CPUs zramctl may run on, as these tests have it (zram_drv.usable_cpus)."""


def _zram0_data() -> bytes:
    rnd = random.Random(7)
    pages = []
    for i in range(350):
        kind = i % 7
        if kind < 4:
            pages.append(rnd.randbytes(PAGE))
        elif kind < 6:
            pages.append(bytes(PAGE))
        else:
            pages.append(b"\xab" * PAGE)
    return b"".join(pages)


def _zram3_data() -> bytes:
    rnd = random.Random(8)
    return b"".join(rnd.randbytes(PAGE) if i % 3 else bytes(PAGE) for i in range(15))


def zramctl(*args: str) -> None:
    assert cli.main(list(args)) == 0, args


@pytest.fixture(scope="module")
def devices(tmp_path_factory):
    root = tmp_path_factory.mktemp("golden")
    mp = pytest.MonkeyPatch()
    mp.setenv("ZRAMCTL_ROOT", str(root))
    mp.setattr(zram_drv, "usable_cpus", lambda: CPUS)
    for f in ("zram0", "zram3"):
        (root.parent / f"{root.name}-{f}.bin").write_bytes(_zram0_data() if f == "zram0" else _zram3_data())
    zramctl("-f", "-s", "16M", "-a", "lzo")
    zramctl("-f", "-s", "1G", "-a", "zstd", "-t", "4")
    zramctl("hot-add")
    zramctl("hot-add")
    zramctl("zram3", "-s", "8M", "--compat", "3.11")
    zramctl("write", "zram0", str(root.parent / f"{root.name}-zram0.bin"))
    zramctl("write", "zram3", str(root.parent / f"{root.name}-zram3.bin"))
    yield root
    mp.undo()


def status(capsys, devices, *args: str) -> str:
    capsys.readouterr()
    assert cli.main(["--root", str(devices), *args]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    return out


def g(text: str) -> str:
    """A golden text whose lines end in ``$`` (so trailing spaces show)."""
    assert all(line.endswith("$") for line in text.splitlines())
    return text.replace("$\n", "\n")


GOLDEN = {
    (): g("""\
NAME  ALGORITHM DISKSIZE  DATA COMPR TOTAL STREAMS MOUNTPOINT$
zram0 lzo            16M  1.4M  800K  800K       3 $
zram1 zstd            1G    0B    0B    0B       4 $
zram3                 8M   40K   40K   40K       1 $
"""),
    ("-b",): g("""\
NAME  ALGORITHM   DISKSIZE    DATA  COMPR  TOTAL STREAMS MOUNTPOINT$
zram0 lzo         16777216 1433600 819200 819200       3 $
zram1 zstd      1073741824       0      0      0       4 $
zram3              8388608   40960  40960  40960       1 $
"""),
    ("--raw",): g("""\
NAME ALGORITHM DISKSIZE DATA COMPR TOTAL STREAMS MOUNTPOINT$
zram0 lzo 16M 1.4M 800K 800K 3 $
zram1 zstd 1G 0B 0B 0B 4 $
zram3  8M 40K 40K 40K 1 $
"""),
    ("-n",): g("""\
zram0 lzo            16M  1.4M  800K  800K       3 $
zram1 zstd            1G    0B    0B    0B       4 $
zram3                 8M   40K   40K   40K       1 $
"""),
    ("-o", "name,data,TOTAL"): g("""\
NAME   DATA TOTAL$
zram0  1.4M  800K$
zram1    0B    0B$
zram3   40K   40K$
"""),
    ("-o", "+COMP-RATIO,zero-pages"): g("""\
NAME  ALGORITHM DISKSIZE  DATA COMPR TOTAL STREAMS MOUNTPOINT COMP-RATIO ZERO-PAGES$
zram0 lzo            16M  1.4M  800K  800K       3                1.7500        150$
zram1 zstd            1G    0B    0B    0B       4                  -nan          0$
zram3                 8M   40K   40K   40K       1                1.0000          5$
"""),
    ("--output-all",): g("""\
NAME  DISKSIZE  DATA COMPR ALGORITHM STREAMS ZERO-PAGES TOTAL MEM-LIMIT MEM-USED MIGRATED COMP-RATIO MOUNTPOINT$
zram0      16M  1.4M  800K lzo             3        150  800K        0B     800K       0B     1.7500 $
zram1       1G    0B    0B zstd            4          0    0B        0B       0B       0B       -nan $
zram3       8M   40K   40K                 1          5   40K                                 1.0000 $
"""),  # noqa: E501
    ("--output-all", "-b"): g("""\
NAME    DISKSIZE    DATA  COMPR ALGORITHM STREAMS ZERO-PAGES  TOTAL MEM-LIMIT MEM-USED MIGRATED COMP-RATIO MOUNTPOINT$
zram0   16777216 1433600 819200 lzo             3        150 819200         0   819200        0     1.7500 $
zram1 1073741824       0      0 zstd            4          0      0         0        0        0       -nan $
zram3    8388608   40960  40960                 1          5  40960                                 1.0000 $
"""),  # noqa: E501
    ("--output-all", "--raw"): g("""\
NAME DISKSIZE DATA COMPR ALGORITHM STREAMS ZERO-PAGES TOTAL MEM-LIMIT MEM-USED MIGRATED COMP-RATIO MOUNTPOINT$
zram0 16M 1.4M 800K lzo 3 150 800K 0B 800K 0B 1.7500 $
zram1 1G 0B 0B zstd 4 0 0B 0B 0B 0B -nan $
zram3 8M 40K 40K  1 5 40K    1.0000 $
"""),
    ("--output-all", "-n", "--raw", "-b"): g("""\
zram0 16777216 1433600 819200 lzo 3 150 819200 0 819200 0 1.7500 $
zram1 1073741824 0 0 zstd 4 0 0 0 0 0 -nan $
zram3 8388608 40960 40960  1 5 40960    1.0000 $
"""),
    ("zram2",): g("""\
NAME  ALGORITHM DISKSIZE DATA COMPR TOTAL STREAMS MOUNTPOINT$
zram2 lzo-rle         0B   0B    0B    0B       3 $
"""),
    ("/dev/zram0", "-o", "NAME,NAME,MIGRATED"): g("""\
NAME  NAME  MIGRATED$
zram0 zram0       0B$
"""),
}


@pytest.mark.parametrize("args", list(GOLDEN), ids=lambda a: " ".join(a) or "default")
def test_layout(capsys, devices, args):
    assert status(capsys, devices, *args) == GOLDEN[args]


def test_output_all_then_plus_list_appends(capsys, devices):
    out = status(capsys, devices, "--output-all", "-o", "+NAME", "-n", "--raw", "zram1")
    assert out == "zram1 1G 0B 0B zstd 4 0 0B 0B 0B 0B -nan  zram1\n"
    # a plain list wins over --output-all whatever the order (util-linux >= 2.41)
    assert status(capsys, devices, "-o", "NAME", "--output-all", "zram1") == "NAME\nzram1\n"


def test_json(capsys, devices):
    columns = "NAME,DATA,ZERO-PAGES,COMP-RATIO,STREAMS,ALGORITHM,MEM-USED"
    out = status(capsys, devices, "--json", "-o", columns)
    assert json.loads(out) == {
        "zramdevices": [
            {"name": "zram0", "data": 1433600, "zero-pages": 150, "comp-ratio": 1.75, "streams": CPUS,
             "algorithm": "lzo", "mem-used": 819200},
            {"name": "zram1", "data": 0, "zero-pages": 0, "comp-ratio": None, "streams": 4,
             "algorithm": "zstd", "mem-used": 0},
            {"name": "zram3", "data": 40960, "zero-pages": 5, "comp-ratio": 1.0, "streams": 1,
             "algorithm": None, "mem-used": None},
        ]
    }
    assert '"comp-ratio": 1.7500,' in out  # the table's four decimals
    all_columns = json.loads(status(capsys, devices, "--json", "--output-all", "zram0"))["zramdevices"][0]
    assert list(all_columns) == [
        "name", "disksize", "data", "compr", "algorithm", "streams", "zero-pages", "total",
        "mem-limit", "mem-used", "migrated", "comp-ratio", "mountpoint",
    ]
    assert all_columns["mountpoint"] is None and all_columns["disksize"] == 16 << 20
