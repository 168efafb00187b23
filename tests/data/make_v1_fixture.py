"""How tests/data/v1-zram{0,1}.img.gz were made: with zramctl at commit 80a368a (format version 1).

    mkdir /tmp/v1src && git archive 80a368a zramctl | tar -x -C /tmp/v1src
    cp zramctl/kernel/_kcomp*.so /tmp/v1src/zramctl/kernel/
    mkdir -m 700 /tmp/v1store
    PYTHONPATH=/tmp/v1src python tests/data/make_v1_fixture.py /tmp/v1store

tests/test_image_pp.py has the same v1_pages() and checks every page.
"""

import gzip
import os
import random
import shutil
import sys

from zramctl.kernel import sysfs
from zramctl.store import Store

HERE = os.path.dirname(os.path.abspath(__file__))
PAGE = 4096


def v1_pages() -> dict[int, bytes]:
    out = {0: bytes(PAGE), 1: b"\x5a" * PAGE}
    out |= {i: random.Random(i).randbytes(PAGE) for i in (10, 401)}
    for i in (*range(2, 10), 400, 1000):
        out[i] = (f"page {i} of the version 1 fixture; " * 200).encode()[:PAGE]
    return out


def main(root: str) -> None:
    s = Store(root)
    for dev, compat in ((0, "6.18"), (1, "3.11")):
        assert s.hot_add() == dev
        with s.open(dev, write=True) as h:
            sysfs.store(h.zram, "compat", compat)
            sysfs.store(h.zram, "disksize", "8M")
            for i, p in sorted(v1_pages().items()):
                h.zram.write(i * PAGE, p)
    for dev in (0, 1):
        out = f"{HERE}/v1-zram{dev}.img.gz"
        with open(f"{root}/zram{dev}.img", "rb") as f, gzip.GzipFile(out, "wb", mtime=0) as g:
            shutil.copyfileobj(f, g)


if __name__ == "__main__":
    main(sys.argv[1])
