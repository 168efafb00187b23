"""The device store: naming, the root directory, hot_add/hot_remove, locking, handles."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zramctl.errors import ZramError
from zramctl.kernel import sysfs
from zramctl.store import DEFAULT_LOCK_TIMEOUT, Store, default_root, parse_device_name

# A child that opens device 0 of a store, says "ready", and holds it until stdin closes.
HOLDER = """
import sys
from zramctl.store import Store
h = Store(sys.argv[1]).open(0, write=sys.argv[2] == "w")
print("ready", flush=True)
sys.stdin.read()
h.close()
"""


def hold(root: Path, write: bool) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(root), "w" if write else "r"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc


def release(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    assert proc.wait(10) == 0


@pytest.mark.parametrize(
    ("name", "number"), [("zram0", 0), ("zram3", 3), ("/dev/zram3", 3), ("zram127", 127)]
)
def test_parse_device_name(name: str, number: int) -> None:
    assert parse_device_name(name) == number


@pytest.mark.parametrize(
    "name", ["", "zram", "zram-1", "zram01", "ram3", "/dev/zram", "zram3 ", "/tmp/zram3", "3"]
)
def test_parse_device_name_rejects(name: str) -> None:
    with pytest.raises(ValueError):
        parse_device_name(name)


def test_default_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ZRAMCTL_ROOT", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert default_root() == tmp_path / "a"
    monkeypatch.delenv("ZRAMCTL_ROOT")
    assert default_root() == tmp_path / "state" / "zramctl"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_root() == tmp_path / "home" / ".local" / "state" / "zramctl"
    assert Store().root == default_root()


def test_root_created_0700_on_first_write_only(tmp_path: Path) -> None:
    root = tmp_path / "deep" / "root"
    store = Store(root)
    assert store.ids() == [] and not store.exists(0)
    with pytest.raises(ZramError) as info:
        store.open(0, write=False)
    assert info.value.errno == errno.ENODEV
    assert not root.exists()
    assert store.hot_add() == 0
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE(store.image_path(0).stat().st_mode) == 0o600


def test_hot_add_lowest_free_and_remove(tmp_path: Path) -> None:
    store = Store(tmp_path)
    assert [store.hot_add() for _ in range(4)] == [0, 1, 2, 3]
    store.hot_remove(1)
    store.hot_remove(2)
    assert store.ids() == [0, 3]
    assert store.hot_add() == 1
    assert store.ids() == [0, 1, 3]
    (tmp_path / "zram10.img.bak").write_bytes(b"")
    (tmp_path / "notes").write_bytes(b"")
    assert store.ids() == [0, 1, 3]
    with pytest.raises(ZramError) as info:
        store.hot_remove(7)
    assert info.value.errno == errno.ENODEV
    assert not list(tmp_path.glob(".*tmp"))


def test_new_device_is_uninitialised(tmp_path: Path) -> None:
    store = Store(tmp_path)
    dev = store.hot_add()
    with store.open(dev, write=False) as h:
        assert h.zram.config.disksize == 0 and not h.zram.initialized
        assert sysfs.show(h.zram, "disksize") == "0\n"
        assert sysfs.show(h.zram, "initstate") == "0\n"


def test_handle_commit_and_discard(tmp_path: Path) -> None:
    store = Store(tmp_path)
    dev = store.hot_add()
    with store.open(dev, write=True) as h:
        sysfs.store(h.zram, "disksize", "1M")
        h.zram.write(0, b"a" * 4096)
    # An exception inside the block: nothing after the last commit is kept.
    with pytest.raises(RuntimeError), store.open(dev, write=True) as h:
        h.zram.write(4096, b"b" * 4096)
        h.commit()
        h.zram.write(8192, os.urandom(4096))
        raise RuntimeError
    h = store.open(dev, write=True)
    h.zram.discard(0, 1 << 20)
    h.close()  # close without commit: discarded
    with store.open(dev, write=False) as h:
        assert h.zram.read(0, 12288) == b"a" * 4096 + b"b" * 4096 + bytes(4096)
        with pytest.raises(ZramError) as info:
            h.commit()
        assert info.value.errno == errno.EBADF
    with pytest.raises(ZramError) as info:
        h.commit()  # a closed handle says so
    assert info.value.errno == errno.EBADF


def test_lock_timeout_writer_vs_writer(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.hot_add()
    proc = hold(tmp_path, write=True)
    try:
        start = time.monotonic()
        with pytest.raises(ZramError) as info:
            store.open(0, write=True, timeout=0.3)
        assert 0.25 < time.monotonic() - start < 3
        assert info.value.errno == errno.EBUSY
        assert info.value.detail == "another zramctl has it open for writing"
        with pytest.raises(ZramError) as info:
            store.open(0, write=False, timeout=0.1)
        assert info.value.errno == errno.EBUSY
        with pytest.raises(ZramError) as info:
            store.hot_remove(0)
        assert info.value.errno == errno.EBUSY
    finally:
        release(proc)
    with store.open(0, write=True, timeout=DEFAULT_LOCK_TIMEOUT):
        pass


def test_readers_share_and_block_writers(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.hot_add()
    proc = hold(tmp_path, write=False)
    try:
        with store.open(0, write=False, timeout=0.5):
            pass
        with pytest.raises(ZramError) as info:
            store.open(0, write=True, timeout=0.2)
        assert info.value.detail == "another zramctl has it open for reading"
    finally:
        release(proc)


def test_waiting_writer_gets_the_device_when_released(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.hot_add()
    proc = hold(tmp_path, write=True)
    assert proc.stdin is not None
    proc.stdin.close()  # the holder exits while we wait
    with store.open(0, write=True, timeout=10):
        pass
    proc.wait(10)


def test_removed_while_waiting(tmp_path: Path) -> None:
    """A waiter whose device is hot-removed meanwhile gets ENODEV, not a resurrected file."""
    store = Store(tmp_path)
    store.hot_add()
    holder = store.open(0, write=True)
    waiter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\nfrom zramctl.store import Store\n"
            "try:\n    Store(sys.argv[1]).open(0, write=False, timeout=10)\n"
            "except OSError as e:\n    print(e.errno, e)\n",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)
    # Remove it the way hot_remove does, while we hold the lock ourselves.
    os.unlink(store.image_path(0))
    holder.close()
    out, _ = waiter.communicate(timeout=10)
    assert out.startswith(f"{errno.ENODEV} ")
    assert store.ids() == []


def test_recovery_streams_a_long_log_in_bounded_memory(tmp_path: Path) -> None:
    """A 16 MiB log is checked, then replayed, without ever holding more than about a MiB of it."""
    import tracemalloc

    from zramctl.image.io import WAL_BLOCK, WAL_READ, CrashPoints, LogRecord, write_log

    store = Store(tmp_path)
    store.hot_add()
    with store.open(0, write=True) as h:
        sysfs.store(h.zram, "disksize", "64M")
        h.zram.write(0, bytes(range(256)) * 64)
    image = store.image_path(0).read_bytes()
    head = image[:4096]
    records = [LogRecord(WAL_BLOCK, 0, head) for _ in range(4200)]
    size = write_log(store.wal_path(0), 7, records, CrashPoints())
    assert size > 16 << 20
    tracemalloc.start()
    try:
        with Store(tmp_path).open(0, write=False) as h:
            peak = tracemalloc.get_traced_memory()[1]
            assert h.zram.stats.pages_stored == 4
    finally:
        tracemalloc.stop()
    assert os.stat(store.wal_path(0)).st_size == 0  # replayed and cleared
    assert store.image_path(0).read_bytes() == image
    assert peak < 4 * WAL_READ, peak  # the whole log would be 16 MiB
