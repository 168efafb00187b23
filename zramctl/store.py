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

Files: the root directory is opened once and checked as ssh's StrictModes
checks ~/.ssh (owned by us or root, not writable by group or others, nor is
any directory above it unless sticky); every file in it is then opened
relative to that directory fd, with O_NOFOLLOW, and must be a regular file.
New files are created with O_EXCL.  So a link planted at ``zramN.img``,
``zramN.wal`` or a temporary name is refused (or, for a temporary name,
removed), never followed: zramctl run by root in someone else's directory
cannot be made to write a file of root's.  zramctl(8), SECURITY.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from .device import ZramError
from .image import CrashPoints, Image, empty_image
from .image_io import open_regular, wal_pending

DEFAULT_LOCK_TIMEOUT = 10.0
# Lock polling: start short (a commit takes milliseconds) and back off to this.
_POLL_MAX = 0.05
_NAME = re.compile(r"(?:/dev/)?zram(0|[1-9][0-9]*)")
_IMAGE = re.compile(r"zram(0|[1-9][0-9]*)\.img")
# hot_add: how many times a stale temporary file or a lost race for a number is retried.
_HOT_ADD_TRIES = 1000


def parse_device_name(name: str) -> int:
    """``zram3`` or ``/dev/zram3`` -> 3; ValueError for anything else."""
    m = _NAME.fullmatch(name)
    if m is None:
        raise ValueError(f"{name!r} is not a zram device name (zramN or /dev/zramN)")
    return int(m.group(1))


class RootError(ZramError):
    """The store's directory cannot be used; ``str()`` is the whole one-line message."""

    def __init__(self, code: int, path: str | os.PathLike[str], words: str) -> None:
        super().__init__(code, os.fspath(path) or "root", words)  # generic wordings name the path
        self.path = os.fspath(path)

    def __str__(self) -> str:
        return f"{self.path}: {self.detail}" if self.path else str(self.detail)


def choose_root(option: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None) -> Path:
    """The one place that decides the store's directory.

    ``--root`` when given, else $ZRAMCTL_ROOT, else $XDG_STATE_HOME/zramctl,
    else ~/.local/state/zramctl.  An empty ``--root ''`` or an empty (but set)
    ``ZRAMCTL_ROOT=`` is refused alike: most likely an unset shell variable,
    and quietly falling back to the default devices could reset the wrong ones.
    """
    env = os.environ if environ is None else environ
    if option is not None:
        if os.fspath(option) == "":
            raise RootError(errno.EINVAL, "", "option --root needs a directory name, not ''")
        return Path(option)
    value = env.get("ZRAMCTL_ROOT")
    if value is not None:
        if value == "":
            raise RootError(errno.EINVAL, "", "ZRAMCTL_ROOT is set but empty; unset it or name a directory")
        return Path(value)
    xdg = env.get("XDG_STATE_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "zramctl"
    return Path.home() / ".local" / "state" / "zramctl"


def default_root() -> Path:
    """$ZRAMCTL_ROOT, else $XDG_STATE_HOME/zramctl, else ~/.local/state/zramctl."""
    return choose_root(None)


def _os_error(exc: OSError, what: str, detail: str | None = None) -> ZramError:
    if isinstance(exc, ZramError):
        return exc
    code = exc.errno if exc.errno is not None else errno.EIO
    return ZramError(code, what, detail or exc.strerror)


def _owner(uid: int) -> str:
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (KeyError, ImportError):
        return f"uid {uid}"


def _me() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (KeyError, ImportError):
        return str(os.geteuid())


def _writable_by(mode: int) -> str | None:
    if mode & 0o022 == 0o022:
        return "group and others"
    if mode & 0o020:
        return "its group"
    if mode & 0o002:
        return "others"
    return None


def check_root_dir(path: str, st: os.stat_result) -> None:
    """ssh's StrictModes for the root itself: ours (or root's), writable by nobody else."""
    euid = os.geteuid()
    if st.st_uid not in (euid, 0):
        raise RootError(
            errno.EPERM,
            path,
            f"bad ownership: directory is owned by {_owner(st.st_uid)}, not by you or root; "
            f"use a directory of your own, or run: chown {_me()} {path}",
        )
    who = _writable_by(st.st_mode)
    if who is not None:
        raise RootError(
            errno.EPERM, path, f"bad permissions: directory is writable by {who}; run: chmod go-w {path}"
        )


def check_ancestors(real: str, shown: str) -> None:
    """Every directory above the root: owned by us or root, and not writable by others unless sticky.

    Otherwise another user could rename the root away and put a directory of
    theirs in its place between two commands.  A sticky directory such as /tmp
    only lets an entry's owner rename it.
    """
    euid = os.geteuid()
    parent = os.path.dirname(real)
    while True:
        try:
            st = os.stat(parent)
        except OSError:
            return
        if st.st_uid not in (euid, 0):
            raise RootError(
                errno.EPERM,
                shown,
                f"bad ownership: {parent} above it is owned by {_owner(st.st_uid)}, "
                "who could replace it; use a directory of your own",
            )
        who = _writable_by(st.st_mode)
        if who is not None and not st.st_mode & stat.S_ISVTX:
            raise RootError(
                errno.EPERM,
                shown,
                f"bad permissions: {parent} above it is writable by {who}; run: chmod go-w {parent}",
            )
        up = os.path.dirname(parent)
        if up == parent:
            return
        parent = up


def _make_dirs(path: Path) -> None:
    """Create ``path`` and any missing parents, each mode 0700 whatever the umask (a chmod after
    the mkdir, on the directory just made, so that no process-wide umask is touched)."""
    missing: list[Path] = []
    p = Path(os.path.abspath(path))
    while not os.path.lexists(p):
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            continue
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fchmod(fd, 0o700)
        finally:
            os.close(fd)


def _fsync_dir(dir_fd: int) -> None:
    """Make a directory entry change (create, link, unlink) durable."""
    os.fsync(dir_fd)


class Store:
    """The directory of device images; see the module docstring."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        # The crash-injection hook (tests only) is read once, here: ZRAMCTL_CRASH_AT=N.
        self._crash = CrashPoints.from_env()
        self._dir_fd: int | None = None

    def close(self) -> None:
        """Close the root directory's fd (open handles keep their own files)."""
        if self._dir_fd is not None:
            fd, self._dir_fd = self._dir_fd, None
            os.close(fd)

    def __del__(self) -> None:
        try:
            self.close()
        except (OSError, AttributeError):
            pass

    # --- the root directory -------------------------------------------------------

    def dir_fd(self, *, create: bool = False) -> int | None:
        """The root, opened once and checked (see the module docstring); None if it does not exist.

        ``create``: make it (and its parents, 0700) first.  RootError says in
        words what is wrong with it and how to fix it.
        """
        if self._dir_fd is not None:
            return self._dir_fd
        shown = os.fspath(self.root)
        if create:
            try:
                _make_dirs(self.root)
            except OSError as exc:
                words = exc.strerror or os.strerror(exc.errno or errno.EIO)
                code = exc.errno or errno.EIO
                raise RootError(code, shown, f"cannot create the device directory: {words}") from None
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            if not create:
                return None
            raise RootError(errno.ENOENT, shown, "cannot create the device directory") from None
        except NotADirectoryError:
            if os.path.lexists(self.root):
                raise RootError(errno.ENOTDIR, shown, "not a directory") from None
            if create:
                words = "cannot create the device directory: Not a directory"
                raise RootError(errno.ENOTDIR, shown, words) from None
            return None  # a file above it: no root, so no devices (a reader's view)
        except OSError as exc:
            words = exc.strerror or os.strerror(exc.errno or errno.EIO)
            code = exc.errno or errno.EIO
            raise RootError(code, shown, f"cannot open the device directory: {words}") from None
        try:
            check_root_dir(shown, os.fstat(fd))
            try:
                real = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                real = os.path.realpath(self.root)
            check_ancestors(real, shown)
        except BaseException:
            os.close(fd)
            raise
        self._dir_fd = fd
        return fd

    # --- naming -------------------------------------------------------------

    def image_path(self, dev_id: int) -> Path:
        return self.root / f"zram{dev_id}.img"

    def wal_path(self, dev_id: int) -> Path:
        return self.root / f"zram{dev_id}.wal"

    def ids(self) -> list[int]:
        """Devices present (entries zramN.img), sorted by number."""
        dir_fd = self.dir_fd()
        if dir_fd is None:
            return []
        try:
            names = os.listdir(dir_fd)
        except OSError as exc:
            raise _os_error(exc, "store", f"cannot list {self.root}") from None
        found = [int(m.group(1)) for n in names if (m := _IMAGE.fullmatch(n))]
        return sorted(found)

    def exists(self, dev_id: int) -> bool:
        """Whether anything is at zramN.img (a link planted there is then refused by open, in words)."""
        dir_fd = self.dir_fd()
        if dir_fd is None:
            return False
        try:
            os.stat(f"zram{dev_id}.img", dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise _os_error(exc, "open") from None
        return True

    # --- hot_add / hot_remove ---------------------------------------------------

    def hot_add(self) -> int:
        """Create the lowest free id as an uninitialised device (disksize 0); return it.

        The image is written to a new temporary file (O_EXCL: a stale one, or a
        link planted at its name, is removed and the name tried again), synced,
        locked, then link(2)ed into place: link fails if another process took
        the same id meanwhile, and a crash never leaves a half-written
        zramN.img behind.  The lock is held until the device's log is fresh,
        so nobody opens the device before it is whole.
        """
        dir_fd = self.dir_fd(create=True)
        assert dir_fd is not None
        data = empty_image()
        try:
            for _ in range(_HOT_ADD_TRIES):
                taken = set(self.ids())
                dev_id = next(i for i in range(len(taken) + 1) if i not in taken)
                if self._try_add(dir_fd, dev_id, data):
                    return dev_id
        except OSError as exc:
            raise _os_error(exc, "hot_add") from None
        raise ZramError(errno.EEXIST, "hot_add", "could not claim a device number")

    def _try_add(self, dir_fd: int, dev_id: int, data: bytes) -> bool:
        tmp = f".zram{dev_id}.img.{os.getpid()}.tmp"
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(tmp, flags, 0o600, dir_fd=dir_fd)
        except FileExistsError:
            os.unlink(tmp, dir_fd=dir_fd)  # removes the entry itself, never what a link points to
            return False
        try:
            os.write(fd, data)
            os.fsync(fd)
            fcntl.flock(fd, fcntl.LOCK_EX)
            image = f"zram{dev_id}.img"
            try:
                os.link(tmp, image, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
            except FileExistsError:
                return False
            wal = f"zram{dev_id}.wal"
            try:
                os.unlink(wal, dir_fd=dir_fd)  # a removed device's leftover, or something planted
            except FileNotFoundError:
                pass
            os.close(os.open(wal, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                             0o600, dir_fd=dir_fd))
            return True
        finally:
            try:
                os.unlink(tmp, dir_fd=dir_fd)
                _fsync_dir(dir_fd)
            finally:
                os.close(fd)

    def hot_remove(self, dev_id: int) -> None:
        """Delete a device: ENODEV if absent, EBUSY if another process has it open."""
        dir_fd = self.dir_fd()
        if dir_fd is None:
            raise ZramError(errno.ENODEV, "hot_remove", "no such device")
        image = f"zram{dev_id}.img"
        try:
            fd = open_regular(image, os.O_RDONLY, dir_fd=dir_fd, what="hot_remove")
        except FileNotFoundError:
            raise ZramError(errno.ENODEV, "hot_remove", "no such device") from None
        except OSError as exc:
            raise _os_error(exc, "hot_remove") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ZramError(errno.EBUSY, "hot_remove", "another zramctl has it open") from None
            if not self._same_file(fd, dir_fd, image):
                raise ZramError(errno.ENODEV, "hot_remove", "no such device")
            try:
                os.unlink(image, dir_fd=dir_fd)
                try:
                    os.unlink(f"zram{dev_id}.wal", dir_fd=dir_fd)
                except FileNotFoundError:
                    pass
                _fsync_dir(dir_fd)
            except OSError as exc:
                raise _os_error(exc, "hot_remove") from None
        except ZramError as exc:
            if exc.what == "open":
                exc.what = "hot_remove"
            raise
        finally:
            os.close(fd)

    # --- open -------------------------------------------------------------------

    def open(self, dev_id: int, *, write: bool, timeout: float = DEFAULT_LOCK_TIMEOUT) -> DeviceHandle:
        """Lock and load a device: shared for ``write=False``, exclusive otherwise.

        ENODEV if the device does not exist (or is removed while we wait);
        EBUSY if the lock is not ours within ``timeout`` seconds.  An
        interrupted commit found in the log is completed (under the exclusive
        lock, even for a reader) before the image is read; a reader who may
        not write the image is told so instead.  The log is opened under the
        lock: every change to it happens under the exclusive lock.
        """
        deadline = time.monotonic() + timeout
        dir_fd = self.dir_fd()
        if dir_fd is None:
            raise ZramError(errno.ENODEV, "open", "no such device")
        image, log = f"zram{dev_id}.img", f"zram{dev_id}.wal"
        exclusive = write
        while True:
            fd = self._open_image(dir_fd, image, write)
            wal: int | None = None
            try:
                self._lock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH, deadline)
                if not self._same_file(fd, dir_fd, image):
                    os.close(fd)
                    continue
                wal = self._open_log(dir_fd, log, create=write)
                if wal_pending(wal):
                    if not exclusive:  # complete it under the exclusive lock, then start over
                        exclusive = True
                        os.close(wal)
                        os.close(fd)
                        continue
                    if not _writable(fd) or not _writable(wal):
                        raise ZramError(
                            errno.EACCES,
                            "open",
                            f"an interrupted commit in {log} must first be completed by a user "
                            f"who may write {image}",
                        )
                    assert wal is not None
                    Image.recover(fd, wal, self._crash)
                    if not write:
                        exclusive = False
                        os.close(wal)
                        os.close(fd)
                        continue
                handle_image = Image(fd, wal, writable=write, crash=self._crash, name=f"zram{dev_id}")
            except BaseException:
                if wal is not None:
                    os.close(wal)
                os.close(fd)
                raise
            return DeviceHandle(handle_image, write)

    @staticmethod
    def _open_image(dir_fd: int, name: str, write: bool) -> int:
        try:
            return open_regular(name, os.O_RDWR, dir_fd=dir_fd)
        except FileNotFoundError:
            raise ZramError(errno.ENODEV, "open", "no such device") from None
        except ZramError:
            raise
        except PermissionError:
            if write:
                raise ZramError(errno.EACCES, "open", f"cannot write {name}") from None
            try:
                return open_regular(name, os.O_RDONLY, dir_fd=dir_fd)
            except FileNotFoundError:
                raise ZramError(errno.ENODEV, "open", "no such device") from None
            except OSError as exc:
                raise _os_error(exc, "open") from None
        except OSError as exc:
            raise _os_error(exc, "open") from None

    @staticmethod
    def _open_log(dir_fd: int, name: str, *, create: bool) -> int | None:
        """The device's log: a writer creates it if missing; a reader opens it if there is one."""
        try:
            if create:
                return open_regular(name, os.O_RDWR | os.O_CREAT, dir_fd=dir_fd)
            try:
                return open_regular(name, os.O_RDWR, dir_fd=dir_fd)
            except PermissionError:
                return open_regular(name, os.O_RDONLY, dir_fd=dir_fd)
        except FileNotFoundError:
            if create:
                raise ZramError(errno.ENOENT, "open", f"cannot create {name}") from None
            return None
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
    def _same_file(fd: int, dir_fd: int, name: str) -> bool:
        """After the lock: is ``fd`` still the device at ``name``?  ENODEV if it was removed."""
        st = os.fstat(fd)
        if st.st_nlink == 0:
            raise ZramError(errno.ENODEV, "open", "no such device (removed)")
        try:
            cur = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            raise ZramError(errno.ENODEV, "open", "no such device (removed)") from None
        return (cur.st_dev, cur.st_ino) == (st.st_dev, st.st_ino)


def _writable(fd: int | None) -> bool:
    return fd is not None and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE != os.O_RDONLY


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
