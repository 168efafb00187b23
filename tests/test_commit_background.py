"""A long write's commits run in the background (``Image.commit(background=True)``).

- The image comes out byte for byte as with every commit done at once.
- While a commit's I/O runs, the device reads through its blocks (``BlockFile.pending``).
- The next commit and the close wait for it; a failure in it is the write's failure, worded
  for the commit that failed, and the device keeps the commit before it.
- A crash at any durable point of a write that commits as it goes leaves a device that checks
  clean and holds the input up to one of those commits.
"""

from __future__ import annotations

import errno
import os
import random
import threading
from pathlib import Path

import pytest

from zramctl import store
from zramctl.image import io as image_io
from zramctl.image.format import decode_header
from zramctl.kernel import sysfs, zram_drv
from zramctl.store import DeviceHandle, Store, TransferError, check_image

PAGE = 4096
NOW = 1_800_000_000


@pytest.fixture(autouse=True)
def small_commits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "CHUNK", 16 * PAGE)
    monkeypatch.setattr(store, "COMMIT_EVERY", 32 * PAGE)
    monkeypatch.setattr(zram_drv, "wall_clock", lambda: NOW)


def new_device(root: Path, size: str = "4M") -> Store:
    st = Store(root)
    st.hot_add()
    with st.open(0, write=True) as h:
        sysfs.store(h.zram, "disksize", size)
    return st


def data(n: int, seed: int = 1) -> bytes:
    rnd = random.Random(seed)
    return b"".join((rnd.randbytes(rnd.randrange(100, 3000)) + bytes(PAGE))[:PAGE] for _ in range(n))


def write(st: Store, payload: bytes, path: Path) -> None:
    path.write_bytes(payload)
    with st.open(0, write=True) as h, open(path, "rb") as f:
        h.write_from(f, 0, length=len(payload))


def test_the_image_is_the_same_as_with_every_commit_at_once(tmp_path: Path, monkeypatch) -> None:
    payload = data(150)
    a = new_device(tmp_path / "a")
    write(a, payload, tmp_path / "input")
    real = DeviceHandle.commit
    kinds = []

    def at_once(self, **kwargs):
        kinds.append(kwargs.get("background", False))
        return real(self)

    b = new_device(tmp_path / "b")
    monkeypatch.setattr(DeviceHandle, "commit", at_once)
    write(b, payload, tmp_path / "input")
    monkeypatch.undo()
    assert kinds.count(True) == 150 // 32  # the ones on the way would have run in the background
    ha, hb = (decode_header(x.image_path(0).read_bytes()[:PAGE]) for x in (a, b))
    hb.image_id = ha.image_id  # (each device's own)
    assert ha == hb
    assert a.image_path(0).read_bytes()[PAGE:] == b.image_path(0).read_bytes()[PAGE:]
    assert check_image((a, 0), data=True) == []
    with a.open(0, write=False) as h:
        assert h.zram.read(0, len(payload)) == payload


class Gate:
    """Holds every compiled I/O call until opened: a commit stays in flight meanwhile."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail: int | None = None) -> None:
        self.open = threading.Event()
        self.calls = 0
        self.fail = fail
        real = image_io._run_compiled

        def gated(ops, crash_in):  # type: ignore[no-untyped-def]
            if threading.current_thread() is not threading.main_thread():
                self.open.wait(10)
                self.calls += 1
                if self.fail is not None and self.calls == 1:
                    return 0, 0, self.fail
            return real(ops, crash_in)

        monkeypatch.setattr(image_io, "_run_compiled", gated)


def test_reads_go_through_a_commit_still_in_flight(tmp_path: Path, monkeypatch) -> None:
    st = new_device(tmp_path)
    payload = data(40, 2)
    gate = Gate(monkeypatch)
    with st.open(0, write=True) as h:
        h.zram.write(0, payload)
        h.commit(background=True)
        pending = dict(h.image.file.pending)
        assert len(pending) > 40  # the frames, the leaves and the header: none of them on disk yet
        assert h.zram.read(0, len(payload)) == payload  # every frame read back from the pending blocks
        h.zram.write(len(payload), data(3, 3))  # and the device goes on changing
        gate.open.set()
    assert check_image((st, 0), data=True) == []
    with st.open(0, write=False) as h:
        assert h.zram.read(0, len(payload) + 3 * PAGE) == payload + data(3, 3)


def test_the_close_waits_for_the_commit(tmp_path: Path, monkeypatch) -> None:
    st = new_device(tmp_path)
    with st.open(0, write=False) as h:
        txid = h.image.header.txid
    gate = Gate(monkeypatch)
    h = st.open(0, write=True)
    h.zram.write(0, data(20, 4))
    h.commit(background=True)
    threading.Timer(0.2, gate.open.set).start()
    h.close()
    assert gate.calls == 2  # both halves of the commit ran before the close returned
    assert os.stat(st.wal_path(0)).st_size == 0
    with st.open(0, write=False) as h:
        assert h.image.header.txid == txid + 1
        assert h.zram.read(0, 20 * PAGE) == data(20, 4)


def test_a_failed_background_commit_is_the_writes_failure(tmp_path: Path, monkeypatch) -> None:
    """The second commit (the first to run in the background after the first landed) fails
    before its COMMIT record: the write fails saying which commit failed and what the device
    keeps; the image holds the first commit's bytes and checks clean."""
    st = new_device(tmp_path)
    payload = data(150, 5)
    real = image_io._run_compiled
    flights = [0]

    def second_flight_fails(ops, crash_in):  # type: ignore[no-untyped-def]
        if threading.current_thread() is not threading.main_thread():
            flights[0] += 1
            if flights[0] == 3:  # the second commit's "before" half (each flight makes two calls)
                return 0, 0, errno.ENOSPC
        return real(ops, crash_in)

    monkeypatch.setattr(image_io, "_run_compiled", second_flight_fails)
    path = tmp_path / "input"
    path.write_bytes(payload)
    with pytest.raises(TransferError) as info, st.open(0, write=True) as h, open(path, "rb") as f:
        h.write_from(f, 0, length=len(payload))
    exc = info.value
    assert exc.errno == errno.ENOSPC
    first = 32 * PAGE
    assert exc.committed == first
    assert f"committing the first {2 * first} of {len(payload)} bytes failed" in exc.detail
    assert f"the last commit holds the first {first} bytes" in exc.detail
    monkeypatch.undo()
    assert os.stat(st.wal_path(0)).st_size == 0
    assert check_image((st, 0), data=True) == []
    with st.open(0, write=False) as h:
        assert h.zram.read(0, len(payload)) == payload[:first] + bytes(len(payload) - first)


def test_a_crash_anywhere_in_a_long_write_leaves_one_of_its_commits(tmp_path: Path) -> None:
    """SIGKILL at every durable point of a write of 70 pages that commits every 32 (two in the
    background, one at the end): reopened, the device checks clean and holds the input up to a
    commit, and the old contents past it."""
    st = new_device(tmp_path / "dev")
    old = data(70, 7)
    path = tmp_path / "input"
    write(st, old, path)
    saved = {p.name: p.read_bytes() for p in (st.image_path(0), st.wal_path(0))}
    payload = data(70, 8)
    path.write_bytes(payload)
    at, seen = 1, set()
    while True:
        for p in (st.image_path(0), st.wal_path(0)):
            p.write_bytes(saved[p.name])
            os.truncate(p, len(saved[p.name]))
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                os.environ["ZRAMCTL_CRASH_AT"] = str(at)
                with Store(tmp_path / "dev").open(0, write=True) as h, open(path, "rb") as f:
                    h.write_from(f, 0, length=len(payload))
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        killed = os.WIFSIGNALED(status)
        assert check_image((st, 0), data=True) == [], at
        with st.open(0, write=False) as h:
            got = h.zram.read(0, len(payload))
        kept = next(n for n in range(0, 71) if got == payload[: n * PAGE] + old[n * PAGE :])
        assert kept % 32 == 0 or kept == 70, (at, kept)
        seen.add(kept)
        if not killed:
            assert kept == 70
            break
        at += 1
    assert seen == {0, 32, 64, 70}, seen
