"""ENOSPC on a real, small file system (issue 7, defect 5).

A commit that fails for space must give back what it reserved, so that the
device works again as soon as there is room, and must lose nothing committed.
The file system is a tmpfs mounted by the test (root only; skipped where the
mount is refused) and always unmounted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from zramctl.store import Store, check_image

FS_SIZE = 16 << 20
MIB = 1 << 20


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FS_SIZE},mode=0700", "tmpfs", str(mnt)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def zramctl(root: Path, *args: str, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "ZRAMCTL_ROOT"}
    return subprocess.run([sys.executable, "-m", "zramctl", "--root", str(root), *args], input=data,
                          capture_output=True, timeout=300, env=env, cwd="/")


def ok(root: Path, *args: str, data: bytes | None = None) -> bytes:
    done = zramctl(root, *args, data=data)
    assert done.returncode == 0, (args, done.stderr.decode())
    return done.stdout


def free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bfree * st.f_frsize


def fill(path: Path) -> Path:
    """A filler file that takes every free byte."""
    filler = path / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (256 << 10, 4096):
            try:
                while os.write(fd, b"\xff" * size) == size:
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def test_enospc_gives_back_its_reservation_and_loses_nothing(small_fs: Path) -> None:
    root = small_fs / "r"
    assert ok(root, "-f", "-s", "64M") == b"zram0\n"
    first = os.urandom(2 * MIB)
    ok(root, "write", "zram0", data=first)
    # Fill some extents, then free them: the failing commit will reserve holes inside the file too.
    ok(root, "write", "zram0", "--offset", "4M", data=os.urandom(6 * MIB))
    ok(root, "discard", "zram0", "--offset", "4M", "--length", "6M")
    before = free(small_fs)

    big = os.urandom(24 * MIB)  # incompressible: 24 MiB of frames on a 16 MiB file system
    done = zramctl(root, "write", "zram0", "--offset", "2M", data=big)
    assert done.returncode == 1
    said = done.stderr.decode()
    assert said.startswith("zramctl: zram0: write: No space left on device (") and said.count("\n") == 1
    assert "the last commit is intact; what came after it was not kept" in said
    assert "nothing was committed" not in said  # the old words, beside a count of committed bytes
    # Everything the failed commit reserved is free again: the disk is not left full.
    assert free(small_fs) == before
    assert os.stat(root / "zram0.wal").st_size == 0
    assert ok(root, "read", "zram0", "--length", "2M") == first
    assert ok(root, "read", "zram0", "--offset", "2M", "--length", "8M") == bytes(8 * MIB)
    assert ok(root, "check", "zram0", "--data") == b""

    # The stuck sequence: each of these failed while the reservation was kept.
    ok(root, "write", "zram0", "--offset", "3M", data=b"x")
    ok(root, "discard", "zram0", "--offset", "1M", "--length", "4K")
    assert ok(root, "hot-add") == b"zram1\n"
    ok(root, "attr", "zram1", "reset", "1")
    assert ok(root, "read", "zram0", "--length", "1M") == first[:MIB]


def test_a_full_disk_keeps_what_is_committed_and_works_once_space_returns(small_fs: Path) -> None:
    root = small_fs / "r"
    assert ok(root, "-f", "-s", "32M") == b"zram0\n"
    first = os.urandom(MIB)
    ok(root, "write", "zram0", data=first)
    filler = fill(small_fs)
    image_before = (root / "zram0.img").read_bytes()

    more = os.urandom(MIB)
    done = zramctl(root, "write", "zram0", "--offset", "1M", data=more)
    assert done.returncode == 1 and b"No space left on device" in done.stderr
    assert b"the last commit is intact" in done.stderr
    for args in (("discard", "zram0"), ("attr", "zram0", "reset", "1"), ("hot-add",)):
        failed = zramctl(root, *args)  # may fail for space, in words, and never half-done
        assert b"Traceback" not in failed.stderr and (failed.returncode == 0 or b"No space" in failed.stderr)
        if failed.returncode == 0:
            break
    else:
        assert (root / "zram0.img").read_bytes()[: len(image_before)] == image_before
        assert ok(root, "read", "zram0", "--length", "1M") == first
        assert check_image((Store(root), 0), data=True) == []

    filler.unlink()  # space returns: everything works at once, no -r needed
    if (root / "zram0.img").exists():
        with Store(root).open(0, write=False) as h:
            initialized = h.zram.initialized
        if not initialized:
            ok(root, "-s", "32M", "zram0")
    else:
        assert ok(root, "-f", "-s", "32M") == b"zram0\n"
    ok(root, "write", "zram0", "--offset", "1M", data=more)
    assert ok(root, "read", "zram0", "--offset", "1M", "--length", "1M") == more
    ok(root, "discard", "zram0", "--offset", "1M", "--length", "64K")
    assert ok(root, "check", "zram0", "--data") == b""
    hot = ok(root, "hot-add")
    assert hot.startswith(b"zram")
    ok(root, "attr", "zram0", "reset", "1")


def test_a_failed_reservation_is_given_back_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without root: the file system runs out in the middle of a commit's reservation (at the
    second call that would take new space, after reserving all it asked for); the image goes back
    to the committed size and the committed allocation, holes punched inside it included."""
    from zramctl.image import io as image_io
    from zramctl.kernel import sysfs

    store = Store(tmp_path / "r")
    store.hot_add()
    with store.open(0, write=True) as h:
        sysfs.store(h.zram, "comp_algorithm", "lz4")
        sysfs.store(h.zram, "disksize", "64M")
        h.zram.write(0, os.urandom(4 * MIB))
    with store.open(0, write=True) as h:
        h.zram.discard(MIB, 2 * MIB)  # holes inside the file, for the next commit to fill
    path = store.image_path(0)
    before = os.stat(path)
    content = path.read_bytes()
    real = os.posix_fallocate
    calls = []

    def runs_out(fd: int, offset: int, length: int) -> None:
        new = offset + length > before.st_size or image_io.hole_ranges(fd, offset, offset + length)
        real(fd, offset, length)
        if new:
            calls.append(offset)
            if len(calls) == 2:
                raise OSError(28, os.strerror(28))

    h = store.open(0, write=True)
    try:
        h.zram.write(MIB, os.urandom(8 * MIB))
        monkeypatch.setattr(image_io, "_run_compiled", image_io.run_reference)  # whose os calls can fail
        monkeypatch.setattr(image_io.os, "posix_fallocate", runs_out)
        with pytest.raises(OSError) as info:
            h.commit()
        monkeypatch.undo()
    finally:
        h.close()
    assert info.value.errno == 28 and len(calls) == 2
    after = os.stat(path)
    assert after.st_size == before.st_size
    if before.st_blocks < before.st_size // 512:  # the file system keeps holes: they are back
        assert after.st_blocks == before.st_blocks
    assert path.read_bytes() == content
    assert os.stat(store.wal_path(0)).st_size == 0
    assert check_image((store, 0), data=True) == []


def test_a_read_on_a_full_disk_gives_its_data_and_warns_that_its_access_times_are_lost(
    small_fs: Path,
) -> None:
    """A 6.18 read records access times (a commit); with no space for it the data still comes out,
    and the lost record is one warning line, not a failure."""
    root = small_fs / "r"
    assert ok(root, "-f", "-s", "32M") == b"zram0\n"
    first = os.urandom(MIB)
    ok(root, "write", "zram0", data=first)
    filler = fill(small_fs)
    done = zramctl(root, "read", "zram0", "--length", "1M")
    filler.unlink()
    assert done.returncode == 0 and done.stdout == first
    said = done.stderr.decode()
    assert said == "zramctl: zram0: read: access times not recorded: No space left on device\n", said
    assert ok(root, "check", "zram0", "--data") == b""
