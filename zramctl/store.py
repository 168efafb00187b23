"""The device store: a directory of images, one per device, and who may open them.

Why a store: the kernel has /sys/block/zramN and /dev/zramN; we have a
directory holding ``zramN.img`` (the device's image, see ``image.py`` and
zram-image(5)) and ``zramN.wal`` (its commit log, empty between commands).
Everything a command does to a device goes through a ``DeviceHandle``:
open (lock, recover an interrupted commit, load the header), work on
``handle.zram``, commit, close.

Naming follows the kernel: devices are ``zramN``; ``/dev/zramN`` is accepted
as a spelling of the same *image* device.  ``hot_add`` creates the lowest free
number (as /sys/class/zram-control/hot_add does) and ``hot_remove`` deletes a
device nobody has open.

Locking: flock(2) on the image file itself -- shared for readers, exclusive
for a writer -- so any number of readers or one writer, never both.  A waiter
polls for at most ``timeout`` seconds, then fails with EBUSY in words.
``hot_remove`` unlinks under the exclusive lock; a process that was waiting
for the lock notices the unlinked inode (st_nlink == 0) and reports ENODEV.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import time
from pathlib import Path
from types import TracebackType

from .device import ZramError
from .image import CrashPoints, Image, empty_image, wal_pending

DEFAULT_LOCK_TIMEOUT = 10.0
# Lock polling: start short (a commit takes milliseconds) and back off to this.
_POLL_MAX = 0.05
_NAME = re.compile(r"(?:/dev/)?zram(0|[1-9][0-9]*)")
_IMAGE = re.compile(r"zram(0|[1-9][0-9]*)\.img")


def parse_device_name(name: str) -> int:
    """``zram3`` or ``/dev/zram3`` -> 3; ValueError for anything else."""
    m = _NAME.fullmatch(name)
    if m is None:
        raise ValueError(f"{name!r} is not a zram device name (zramN or /dev/zramN)")
    return int(m.group(1))


def default_root() -> Path:
    """$ZRAMCTL_ROOT, else $XDG_STATE_HOME/zramctl, else ~/.local/state/zramctl."""
    env = os.environ.get("ZRAMCTL_ROOT")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_STATE_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "zramctl"
    return Path.home() / ".local" / "state" / "zramctl"


def _fsync_dir(path: Path) -> None:
    """Make a directory entry change (create, link, unlink) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _os_error(exc: OSError, what: str, detail: str | None = None) -> ZramError:
    code = exc.errno if exc.errno is not None else errno.EIO
    return ZramError(code, what, detail or exc.strerror)


class Store:
    """The directory of device images; see the module docstring."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        # The crash-injection hook (tests only) is read once, here: ZRAMCTL_CRASH_AT=N.
        self._crash = CrashPoints.from_env()

    # --- naming -------------------------------------------------------------

    def image_path(self, dev_id: int) -> Path:
        return self.root / f"zram{dev_id}.img"

    def wal_path(self, dev_id: int) -> Path:
        return self.root / f"zram{dev_id}.wal"

    def ids(self) -> list[int]:
        """Devices present (image files zramN.img), sorted by number."""
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise _os_error(exc, "store", f"cannot list {self.root}") from None
        found = [int(m.group(1)) for n in names if (m := _IMAGE.fullmatch(n))]
        return sorted(found)

    def exists(self, dev_id: int) -> bool:
        return self.image_path(dev_id).is_file()

    def _ensure_root(self) -> None:
        """Create the root (mode 0700) on first write use."""
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise _os_error(exc, "store", f"cannot create {self.root}") from None

    # --- hot_add / hot_remove ---------------------------------------------------

    def hot_add(self) -> int:
        """Create the lowest free id as an uninitialised device (disksize 0); return it.

        The image is written to a temporary name, synced, then link(2)ed into
        place: link fails if another process took the same id meanwhile, and
        a crash never leaves a half-written zramN.img behind.
        """
        self._ensure_root()
        data = empty_image()
        while True:
            taken = set(self.ids())
            dev_id = next(i for i in range(len(taken) + 1) if i not in taken)
            tmp = self.root / f".zram{dev_id}.img.{os.getpid()}.tmp"
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    os.write(fd, data)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                wal = os.open(self.wal_path(dev_id), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.close(wal)
                try:
                    os.link(tmp, self.image_path(dev_id))
                except FileExistsError:
                    continue
                finally:
                    os.unlink(tmp)
                _fsync_dir(self.root)
                return dev_id
            except OSError as exc:
                raise _os_error(exc, "hot_add") from None

    def hot_remove(self, dev_id: int) -> None:
        """Delete a device: ENODEV if absent, EBUSY if another process has it open."""
        path = self.image_path(dev_id)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise ZramError(errno.ENODEV, "hot_remove", "no such device") from None
        except OSError as exc:
            raise _os_error(exc, "hot_remove") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ZramError(errno.EBUSY, "hot_remove", "another zramctl has it open") from None
            if os.fstat(fd).st_nlink == 0:
                raise ZramError(errno.ENODEV, "hot_remove", "no such device")
            try:
                os.unlink(path)
                try:
                    os.unlink(self.wal_path(dev_id))
                except FileNotFoundError:
                    pass
                _fsync_dir(self.root)
            except OSError as exc:
                raise _os_error(exc, "hot_remove") from None
        finally:
            os.close(fd)

    # --- open -------------------------------------------------------------------

    def open(self, dev_id: int, *, write: bool, timeout: float = DEFAULT_LOCK_TIMEOUT) -> DeviceHandle:
        """Lock and load a device: shared for ``write=False``, exclusive otherwise.

        ENODEV if the device does not exist (or is removed while we wait);
        EBUSY if the lock is not ours within ``timeout`` seconds.  An
        interrupted commit found in the log is completed (under the exclusive
        lock, even for a reader) before the image is read.
        """
        deadline = time.monotonic() + timeout
        path = self.image_path(dev_id)
        wal = self.wal_path(dev_id)
        while True:
            fd = self._open_fd(path, write)
            try:
                if write:
                    self._lock(fd, fcntl.LOCK_EX, deadline)
                    if not self._same_file(fd, path):
                        os.close(fd)
                        continue
                    Image.recover(fd, wal, self._crash)
                elif wal_pending(wal):
                    # A crashed commit: complete it under the exclusive lock, then start over as a reader.
                    self._lock(fd, fcntl.LOCK_EX, deadline)
                    if self._same_file(fd, path):
                        Image.recover(fd, wal, self._crash)
                    os.close(fd)
                    continue
                else:
                    self._lock(fd, fcntl.LOCK_SH, deadline)
                    if not self._same_file(fd, path) or wal_pending(wal):
                        os.close(fd)
                        continue
                image = Image(fd, wal, writable=write, crash=self._crash, name=f"zram{dev_id}")
            except BaseException:
                os.close(fd)
                raise
            return DeviceHandle(image, write)

    def _open_fd(self, path: Path, write: bool) -> int:
        try:
            return os.open(path, os.O_RDWR)
        except FileNotFoundError:
            raise ZramError(errno.ENODEV, "open", "no such device") from None
        except PermissionError:
            if write:
                raise ZramError(errno.EACCES, "open", f"cannot write {path}") from None
            try:
                return os.open(path, os.O_RDONLY)
            except OSError as exc:
                raise _os_error(exc, "open") from None
        except OSError as exc:
            raise _os_error(exc, "open") from None

    @staticmethod
    def _lock(fd: int, kind: int, deadline: float) -> None:
        """flock ``kind`` on ``fd``, polling until ``deadline``; EBUSY in words after it."""
        delay = 0.001
        while True:
            try:
                fcntl.flock(fd, kind | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            now = time.monotonic()
            if now >= deadline:
                raise ZramError(errno.EBUSY, "open", f"another zramctl has it open {_holder(fd, kind)}")
            time.sleep(min(delay, deadline - now))
            delay = min(delay * 2, _POLL_MAX)

    @staticmethod
    def _same_file(fd: int, path: Path) -> bool:
        """After the lock: is ``fd`` still the device at ``path``?  ENODEV if it was removed."""
        st = os.fstat(fd)
        if st.st_nlink == 0:
            raise ZramError(errno.ENODEV, "open", "no such device (removed)")
        try:
            cur = os.stat(path)
        except FileNotFoundError:
            raise ZramError(errno.ENODEV, "open", "no such device (removed)") from None
        return (cur.st_dev, cur.st_ino) == (st.st_dev, st.st_ino)


def _holder(fd: int, wanted: int) -> str:
    """How the device is held by others: a shared lock we could take means readers."""
    if wanted == fcntl.LOCK_EX:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return "for writing"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return "for reading"
    return "for writing"


class DeviceHandle:
    """An open device: ``zram`` to work on, ``commit()`` to make it durable.

    Used as a context manager: a writer commits on a clean exit; on an
    exception nothing more is committed.  Either way the lock is released.
    """

    def __init__(self, image: Image, write: bool) -> None:
        self._image: Image | None = image
        self.write = write
        self.zram = image.zram

    @property
    def image(self) -> Image:
        if self._image is None:
            raise ZramError(errno.EBADF, "device", "the device handle is closed")
        return self._image

    def commit(self) -> None:
        """Durably commit everything done so far, atomically."""
        if not self.write:
            raise ZramError(errno.EBADF, "commit", "the device is open read-only")
        self.image.commit()

    def close(self) -> None:
        """Release the lock; changes since the last commit are discarded."""
        if self._image is not None:
            image, self._image = self._image, None
            image.close()

    def __enter__(self) -> DeviceHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None and self.write and self._image is not None:
                self.commit()
        finally:
            self.close()
