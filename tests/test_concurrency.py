"""Four processes hammer one device: the result equals a serial replay of their commits.

Each worker owns a region of the device and, for a few seconds, opens it for
writing, overwrites one of its pages with a self-describing page (worker,
iteration), reads its region back, commits, and logs the commit's txid; every
third round it opens it for reading instead and checks that every page of the
device is zero or a well-formed page, and its own region exactly its model.
Afterwards the txids must be exactly 1..N (one writer at a time, every commit
counted once), and replaying the logged writes in txid order must give the
device's final bytes.
"""

from __future__ import annotations

import os
import random
import struct
import time
from pathlib import Path

from zramctl.kernel import sysfs
from zramctl.store import Store, check_image

PAGE = 4096
WORKERS = 4
REGION = 32
SECONDS = 3.0
MARK = struct.Struct("<4sII")


def make_page(worker: int, iteration: int) -> bytes:
    """A page that says who wrote it, with compressible and incompressible parts."""
    rnd = random.Random(worker << 32 | iteration)
    body = rnd.randbytes(rnd.randrange(0, 3000))
    return (MARK.pack(b"PAGE", worker, iteration) + body + bytes(PAGE))[:PAGE]


def well_formed(page: bytes) -> bool:
    if page == bytes(PAGE):
        return True
    tag, worker, iteration = MARK.unpack_from(page)
    return tag == b"PAGE" and page == make_page(worker, iteration)


def worker(root: Path, me: int, log: Path) -> None:
    store = Store(root)
    model = bytearray(REGION * PAGE)
    base = me * REGION * PAGE
    end = time.monotonic() + SECONDS
    lines = []
    i = 0
    while time.monotonic() < end:
        if i % 3 == 2:
            with store.open(0, write=False, timeout=30) as h:
                data = h.zram.read(0, h.zram.config.disksize)
            assert data[base : base + len(model)] == model, f"worker {me}: my region changed"
            for p in range(0, len(data), PAGE):
                assert well_formed(data[p : p + PAGE]), f"worker {me}: page {p // PAGE} is torn"
        else:
            slot = i % REGION
            page = make_page(me, i)
            with store.open(0, write=True, timeout=30) as h:
                h.zram.write(base + slot * PAGE, page)
                model[slot * PAGE : (slot + 1) * PAGE] = page
                assert h.zram.read(base, len(model)) == model
                h.commit()
                lines.append(f"{h.image.header.txid} {me} {i} {slot}\n")
        i += 1
    log.write_text("".join(lines))


def test_four_processes_serialise(tmp_path: Path) -> None:
    store = Store(tmp_path / "root")
    store.hot_add()
    with store.open(0, write=True) as h:
        sysfs.store(h.zram, "disksize", str(WORKERS * REGION * PAGE))
        h.commit()
        start = h.image.header.txid
    pids = []
    for me in range(WORKERS):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                worker(store.root, me, tmp_path / f"log{me}")
                code = 0
            except BaseException as exc:  # reported through the exit code and a file
                (tmp_path / f"error{me}").write_text(repr(exc))
            finally:
                os._exit(code)
        pids.append(pid)
    for me, pid in enumerate(pids):
        _, status = os.waitpid(pid, 0)
        err = tmp_path / f"error{me}"
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, (
            err.read_text() if err.exists() else status
        )
    commits = []
    for me in range(WORKERS):
        for line in (tmp_path / f"log{me}").read_text().splitlines():
            txid, who, i, slot = map(int, line.split())
            commits.append((txid, who, i, slot))
    commits.sort()
    txids = [c[0] for c in commits]
    assert txids == list(range(start + 1, start + 1 + len(commits))), "two commits interleaved or were lost"
    assert {c[1] for c in commits} == set(range(WORKERS)), "a worker never got the lock"
    model = bytearray(WORKERS * REGION * PAGE)
    for _, who, i, slot in commits:
        at = (who * REGION + slot) * PAGE
        model[at : at + PAGE] = make_page(who, i)
    with store.open(0, write=False) as h:
        assert h.image.header.txid == txids[-1]
        assert h.zram.read(0, len(model)) == model
        assert h.zram.stats.num_writes == len(commits)
    assert check_image((store, 0), data=True) == []
    print(f"{len(commits)} commits by {WORKERS} processes")
