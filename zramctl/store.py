"""The device store: a directory of images, one per device, and who may open them.

Why a store: the kernel has /sys/block/zramN and /dev/zramN; we have a
directory holding ``zramN.img`` (the device's image, see ``image.py`` and
zram-image(5)) and ``zramN.wal`` (its commit log, empty between commands).
Everything a command does to a device goes through a ``DeviceHandle``:
open (lock, recover an interrupted commit, load the header), work on
``handle.zram``, commit, close.  The handle also does the device I/O of the
commands, as the kernel's block layer does for ``dd``: ``write_from`` a
stream, ``read_to`` a stream, ``discard`` a range.  Each checks its range
once, moves bounded chunks, commits as it goes and once at the end, and on a
failure says how many bytes were written and committed (``TransferError``).

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

A device's backing file (``backing_dev``, where ``writeback`` puts pages) is
the one file outside the root: a path the user gave.  The image opens it
(``image/backing.py``, the model's Backing.open_bdev and read_file hooks),
never through a symbolic link, only if it is a regular file, and under an
flock held while the device is open; the file's block 0 holds a claim naming
the image that owns it, from its backing_dev store until its reset, so one
backing file has one owner across commands and roots.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import select
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from .errors import ZramError, detail_words
from .image.backing import Owner, release_claim
from .image.image import CrashPoints, Image, empty_image
from .image.io import open_regular, wal_pending
from .interrupts import Deferred, Interrupted
from .kernel.profiles import PAGE_SIZE
from .kernel.zram_drv import Lookahead, Zram

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
            claim = self._backing_claim(fd, dev_id)
            try:
                os.unlink(image, dir_fd=dir_fd)
                try:
                    os.unlink(f"zram{dev_id}.wal", dir_fd=dir_fd)
                except FileNotFoundError:
                    pass
                _fsync_dir(dir_fd)
            except OSError as exc:
                raise _os_error(exc, "hot_remove") from None
            if claim is not None:  # only once the device is gone: its pages were in that file
                release_claim(claim[0], claim[1], self._crash)
        except ZramError as exc:
            if exc.what == "open":
                exc.what = "hot_remove"
            raise
        finally:
            os.close(fd)

    def _backing_claim(self, fd: int, dev_id: int) -> tuple[str, Owner] | None:
        """The backing file a device records and its claim there, which removing the device lets
        go (the kernel's hot_remove resets the device, and the reset its backing device).  None
        when there is none, or the image cannot be read: then a stale claim may stay, which the
        refusal it causes says how to clear."""
        try:
            image = Image(
                os.dup(fd), None, writable=False, crash=self._crash, name=f"zram{dev_id}",
                path=os.path.abspath(self.root / f"zram{dev_id}.img"),
            )  # fmt: skip
        except OSError:  # ZramError included: a damaged image
            return None
        try:
            path = image.zram.config.backing_dev
            if path is None or not any(image.header.image_id):
                return None
            return path, Owner(image.header.image_id, image.path)
        finally:
            image.close()

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
                path = os.path.abspath(self.root / image)
                name = f"zram{dev_id}"
                handle_image = Image(fd, wal, writable=write, crash=self._crash, name=name, path=path)
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


CHUNK = 4 << 20
"""Bytes moved per engine call: memory stays bounded whatever the transfer's size."""
READ_CHUNK = 8 << 20
"""Bytes a read copies out per engine call.  An image's leaves are listed on one thread and
decoded on the others meanwhile, and each call waits for its last leaf.  Reading 256 MiB of lz4
in process (``read_to``, medians of 4, since leaves are looked up as they are listed): 4 MiB
calls 0.22 s, 8 MiB 0.18 s, 16 MiB 0.17 s (the same within the noise), 32 MiB 0.20 s; the
command peaks at 72-82 MB of RSS in 8 MiB calls (101-118 in 32 MiB ones)."""
COMMIT_EVERY = 32 << 20
"""A long write commits at least this often, so a crash loses at most this much work.  Each
such commit runs in the background while the next pages are stored, so two transactions'
frames are in memory at once: a 1 GiB pipe peaked at 162 MB of RSS with 64 MiB, 129 MB with
32 MiB, in the same time."""
STREAM_GRACE_MS = 1
"""How long a stream's next bytes are waited for, once a piece has come, before what has come
is stored.  A fast writer (``cat file |``) refills the pipe within microseconds, but a read
drains it faster than the writer fills it: without the wait a chunk ended whenever the pipe
was empty for a moment, at about 1 MiB instead of ``CHUNK``, and the compression streams
started and drained four times as often (a 1 GiB pipe at 0.76 times a file's speed; with it,
0.80-0.89, and 0.87-0.94 with ``_NextChunk`` too).  A slow stream's pieces are stored a
millisecond later: nothing to see."""
PIECE = 256 << 10
"""A write looks for a pending signal (Ctrl-C) after at most this many bytes, at a page boundary
of the device: often enough to stop within milliseconds, seldom enough to cost nothing measurable.
It is also the least a write gathers from a pipe before storing it (or the input's end)."""

Progress = Callable[[int], None]
"""Called with each number of bytes moved, as it is moved (a progress bar's ``advance``)."""


def counted(done: int, total: int | None, words: str) -> str:
    """``N of M bytes <words>``, or ``N bytes <words>`` for a stream whose length is not known."""
    return f"{done} of {total} bytes {words}" if total is not None else f"{done} bytes {words}"


@dataclass(frozen=True)
class Transfer:
    """What a streaming operation did: ``done`` of ``total`` bytes (None: a stream, length unknown).

    ``stopped_by`` is the signal it stopped early for (``interrupts.Deferred``), if any; for a
    write, everything done is committed.
    """

    done: int
    total: int | None
    stopped_by: int | None = None


class TransferError(ZramError):
    """A write, read or discard that failed midway.

    ``done`` bytes were moved before the failure and, for a write, ``committed``
    of them are held by the last commit that succeeded (normally all of them:
    what the device stored before a failure is committed).  ``detail`` says so
    in words, so that the one-line message needs nothing more.
    """

    def __init__(
        self, code: int, what: str, detail: str, *, done: int, committed: int, total: int | None
    ) -> None:
        super().__init__(code, what, detail, done)
        self.committed = committed
        self.total = total


def _words(exc: OSError) -> tuple[int, str, str | None]:
    """An error's errno, its system words and its own detail (not repeating the words)."""
    code = exc.errno or errno.EIO
    words = exc.strerror or os.strerror(code)
    return code, words, detail_words(exc, words)


@contextmanager
def _waiting(signals: Deferred | None) -> Iterator[None]:
    """Around a wait for input that changes nothing: a signal stops it at once (``Interrupted``)."""
    if signals is None:
        yield
        return
    with signals.allowed():
        yield


class DeviceHandle:
    """An open device: ``zram`` to work on, ``commit()`` to make it durable, and the transfers
    ``write_from``, ``read_to`` and ``discard``.

    Used as a context manager: a writer commits on a clean exit, unless nothing
    can have changed since its last commit (the transfers commit at their end;
    only handing out ``zram`` can lead to a change the handle does not see);
    on an exception nothing more is committed.  Either way the lock is released.
    """

    def __init__(self, image: Image, write: bool) -> None:
        self._image: Image | None = image
        self.write = write
        self._zram = image.zram
        self._settled = True
        """Nothing changed since the last commit (or the open): closing needs no commit."""
        self._flying: int | None = None
        """The bytes of a write that a commit still running in the background holds."""

    @property
    def zram(self) -> Zram:
        """The device itself.  For a writer, whoever has it may change it: the close commits."""
        self._settled = False
        return self._zram

    @property
    def disksize(self) -> int:
        return self._zram.config.disksize

    @property
    def image(self) -> Image:
        if self._image is None:
            raise ZramError(errno.EBADF, "device", "the device handle is closed")
        return self._image

    def commit(self, *, background: bool = False) -> None:
        """Durably commit everything done so far, atomically.

        ``background``: its I/O goes on while the caller works (Image.commit); the next
        commit, or the close, waits for it, and the next commit raises its failure."""
        if not self.write:
            raise ZramError(errno.EBADF, "commit", "the device is open read-only")
        self.image.commit(background=background)
        self._settled = not background

    def commit_or_drop(self) -> ZramError | None:
        """Commit, or, if that fails, drop what it would have kept (the close does not try again)
        and return why: for changes that may be lost, such as the access times a read sets."""
        try:
            self.commit()
        except ZramError as exc:
            self._settled = True
            return exc
        return None

    # --- transfers ------------------------------------------------------------------

    def write_from(
        self,
        source: BinaryIO,
        offset: int,
        *,
        length: int | None = None,
        progress: Progress | None = None,
        signals: Deferred | None = None,
    ) -> Transfer:
        """Store ``source`` at byte ``offset``, as ``dd of=/dev/zramN`` does; commit at the end.

        ``length``: the bytes ``source`` holds (a regular file's), or None for a
        stream (a pipe, a terminal).  One range check, before anything is read:
        a known length that does not fit, or a device not set up, fails with
        ENOSPC and nothing written.  A stream is stored as it arrives, a piece
        (``PIECE``) at a time, in ``CHUNK``-sized reads (memory stays bounded);
        one that runs past the end of the device has what fits stored and
        committed, and fails with ENOSPC saying how much.  A long write commits
        every ``COMMIT_EVERY`` bytes, and once at the end; each commit but the last
        runs its I/O in the background while the next bytes are stored (the next
        commit waits for it, and its failure is the write's).

        ``signals`` (entered by the caller): a signal is acted on between pieces,
        and at once while waiting for input; what is stored by then is committed
        and the result's ``stopped_by`` names the signal.  A signal that comes
        before anything is stored stops the write with ``Interrupted``: nothing
        written, nothing to commit.

        Failures raise ``TransferError`` (an errno and a detail ending in
        ``N of M bytes written and committed``), after committing what was stored.
        The count is exact: the device holds the first N bytes of the input and,
        past them, what it held before.  An input that fails to be read has every byte
        read before the failure stored and counted.
        """
        zram = self._writer("write")
        disksize = zram.config.disksize
        try:
            zram.check_range(offset, length or 0, "write")
        except ZramError as exc:
            exc.detail = f"{exc.detail}; nothing written" if exc.detail else "nothing written"
            raise
        room = disksize - offset
        limit = length if length is not None else room + 1  # a stream: one byte more shows it is too long
        advance = progress or _no_progress
        readinto = getattr(source, "readinto1", None) or source.readinto
        ready = _stream_ready(source) if length is None else None
        size = min(CHUNK, max(limit, 1))
        view = memoryview(bytearray(size))
        # The next chunk is read while this one is stored (see _NextChunk): a stream's as it
        # comes, a regular file's at once; once whole, it goes to the streams (``early``).
        ahead_ready = ready if ready is not None else _always_ready if _is_regular(source) else None
        nxt = _NextChunk(readinto, ahead_ready, size) if ahead_ready is not None and limit > size else None
        early: Lookahead | None = None
        done = committed = since_commit = 0
        signal_seen = (lambda: signals.received is not None) if signals is not None else (lambda: False)
        ended = False
        try:
            while done < limit and not ended and not signal_seen():
                want = min(size, limit - done)
                n, failed = 0, None
                if nxt is not None:
                    view, n, ended = nxt.take(view)
                    failed = nxt.error
                if failed is None and not ended and n < want:
                    least = max(min(want, PIECE) - n, 0)
                    more, ended, failed = _gather(readinto, view[n:want], least, signals, ready)
                    n += more
                if failed is not None and not n:
                    raise failed  # the input failed right after the last byte stored
                fits = min(n, room - done)
                start, then = done, min(size, limit - done - n)  # then: what the next chunk may hold
                pos = 0
                # The streams compress the chunk's pages ahead while its pieces are stored (they
                # began while the last chunk was stored, if it was read whole by then).
                ahead = early if early is not None else zram.compress_ahead(offset + done, view[:fits])
                early = None
                try:
                    while pos < fits and not signal_seen():
                        at = offset + done
                        step = min(fits - pos, PIECE - at % PAGE_SIZE)
                        zram.write(at, view[pos : pos + step], checked=True, ahead=ahead)
                        pos += step
                        done += step
                        since_commit += step
                        advance(step)
                        if nxt is not None and not ended:
                            nxt.read(then)
                            if early is None and then > 0 and fits == n and 2 * pos >= fits:
                                # By now the streams are done with this chunk (they run up to
                                # native_slots batches ahead): give them the next one, if whole.
                                whole = nxt.whole(then, room - start - n)
                                if whole is not None:
                                    early = zram.compress_ahead(offset + start + n, whole)
                finally:
                    ahead.close()
                if fits < n and not signal_seen():  # a stream longer than the room left
                    raise ZramError(
                        errno.ENOSPC,
                        "write",
                        f"the input is longer than the {room} bytes from offset {offset} "
                        "to the end of the device",
                    )
                if failed is not None and not signal_seen():
                    raise failed  # once the bytes read before the failure are stored
                if since_commit >= COMMIT_EVERY and not signal_seen():
                    # Its I/O runs while the next chunks are stored; the next commit waits for it.
                    committed = self._commit_transfer(done, committed, length, background=True)
                    since_commit = 0
        except Interrupted:
            if not done:
                raise  # nothing stored: nothing to commit or to count
            assert signals is not None
            self._commit_transfer(done, committed, length)
            return Transfer(done, length, signals.received)
        except TransferError:
            raise
        except OSError as exc:  # a page that could not be stored, the input unreadable, or no room left
            if isinstance(exc, ZramError):
                done += exc.done  # the pages of the failing call stored before it
            self._commit_transfer(done, committed, length, first=exc)
            code, words, detail = _words(exc)
            note = counted(done, length, "written and committed")
            raise TransferError(
                code, "write", f"{detail + '; ' if detail else ''}{note}",
                done=done, committed=done, total=length,
            ) from None
        finally:
            if early is not None:  # a next chunk that will not be stored: its streams stop
                early.close()
        self._commit_transfer(done, committed, length)
        return Transfer(done, length, signals.received if signals is not None else None)

    def read_to(
        self,
        out: BinaryIO,
        offset: int,
        length: int | None = None,
        *,
        progress: Progress | None = None,
        signals: Deferred | None = None,
    ) -> Transfer:
        """Copy ``length`` bytes from ``offset`` (default: to the end) to ``out``, as ``dd if=``.

        One range check first (EINVAL).  ``READ_CHUNK`` bytes at a time; a signal is
        acted on between chunks (the result's ``stopped_by``) and at once while
        ``out`` is slow to take a chunk.  A failure raises ``TransferError``,
        whose detail counts the bytes read before it.
        """
        zram = self._zram
        want = max(zram.config.disksize - offset, 0) if length is None else length
        zram.check_range(offset, want, "read")
        advance = progress or _no_progress
        done = 0
        buf = memoryview(bytearray(min(READ_CHUNK, want)))  # each chunk is read into it, then written out
        try:
            while done < want and (signals is None or signals.received is None):
                n = min(READ_CHUNK, want - done)
                block = buf[:n]
                zram.read_into(offset + done, block, checked=True)
                # The block read is written out even if a signal came meanwhile; while it
                # is being written (a slow reader), a signal stops the command at once.
                with _output(signals):
                    _write_all(out, block)
                done += n
                advance(n)
        except ZramError as exc:
            _, _, detail = _words(exc)
            before = done + exc.done
            if before:
                detail = f"{detail + '; ' if detail else ''}{before} bytes read before"
            raise TransferError(
                exc.errno or errno.EIO, exc.what, detail or "", done=before, committed=0, total=want
            ) from None
        with _output(signals):
            out.flush()
        return Transfer(done, want, signals.received if signals is not None else None)

    def discard(self, offset: int, length: int | None = None) -> int:
        """Free the whole pages of a range (default: to the end), as ``blkdiscard``; commit.

        Returns the pages freed.  Discard cannot stop midway: it is one step.
        """
        zram = self._writer("discard")
        want = max(zram.config.disksize - offset, 0) if length is None else length
        freed = zram.discard(offset, want)
        self.commit()
        return freed

    def _writer(self, what: str) -> Zram:
        if not self.write:
            raise ZramError(errno.EBADF, what, "the device is open read-only")
        self._settled = False
        return self._zram

    def _commit_transfer(
        self,
        done: int,
        committed: int,
        total: int | None,
        first: OSError | None = None,
        *,
        background: bool = False,
    ) -> int:
        """Commit a write's first ``done`` bytes; if that fails, say what the device keeps for certain:
        the first ``committed`` bytes, held by the last commit that succeeded.  Returns what the
        last commit known to have succeeded holds.

        ``first`` is the failure that came before it (a page that could not be stored), if any.
        ``background``: the commit's I/O runs on while the write goes on (``_flying`` bytes);
        the next commit waits for it first, and a failure of either is worded for the commit
        that failed.
        """
        covered = done
        try:
            if self._flying is not None:
                covered = self._flying
                self.image.land()
                committed, self._flying = covered, None
                covered = done
            self.commit(background=background)
            if background:
                self._flying = done
            else:
                committed = done
            return committed
        except OSError as exc:
            self._flying = None
            parts = []
            if first is not None:
                code, words, detail = _words(first)
                if detail:
                    parts.append(detail)
                _, commit_words, commit_detail = _words(exc)
                why: str | None = f"{commit_words}{', ' + commit_detail if commit_detail else ''}"
            else:
                code, words, why = _words(exc)
            failed = counted(covered, total, "failed")
            parts.append(f"committing the first {failed}{': ' + why if why else ''}")
            parts.append(
                f"the last commit holds the first {committed} bytes" if committed else "no commit holds any"
            )
            raise TransferError(
                code, "write", "; ".join(parts), done=done, committed=committed, total=total
            ) from None

    # --- closing ----------------------------------------------------------------------

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
            if exc_type is None and self.write and self._image is not None and not self._settled:
                self.commit()
        finally:
            self.close()


def _output(signals: Deferred | None) -> AbstractContextManager[None]:
    """Around writing out what was read: a signal stops it at once (a slow reader), though one
    received before does not stop it from starting."""
    return signals.allowed(stop_now=False) if signals is not None else nullcontext()


def _no_progress(n: int) -> None:
    pass


Ready = Callable[[int], bool]
"""``ready(ms)``: whether a stream has more input now, or within ``ms`` milliseconds."""


class _NextChunk:
    """A stream's or a regular file's next chunk, read while the current one is stored.

    Why: the writer into a pipe can run only a pipe's size ahead (1 MiB where a user may not
    grow it), and on two CPUs the compression stream and the storing thread leave it little
    time of its own: reading a chunk only once the last was stored made this process wait for
    the writer, and the writer for this process, at every chunk (a 1 GiB pipe at 0.80-0.89
    times a file's speed; 0.87-0.94 with this).  So between the pieces of a chunk whatever the
    stream holds is read, without waiting, into a second buffer; the next chunk starts with it.
    A read that fails is kept, and raised once the bytes read before it are stored.

    A regular file's next chunk is read whole at once (its ``ready`` is always true).  Once the
    next chunk is whole (a fast pipe's, too, as a rule), ``whole`` hands it to the compression
    streams while the current one is still being stored: otherwise the storing thread waited
    for the streams to start every chunk, 0.036-0.047 s of a 256 MiB write.
    """

    def __init__(self, readinto: Callable[[memoryview], int | None], ready: Ready, size: int) -> None:
        self._readinto = readinto
        self._ready = ready
        self._view = memoryview(bytearray(size))
        self._got = 0
        self._ended = False
        self.error: OSError | None = None

    def read(self, want: int) -> None:
        """Read what is there now, up to ``want`` bytes in the buffer in all."""
        while self._got < want and not self._ended and self.error is None and self._ready(0):
            try:
                got = self._readinto(self._view[self._got : want])
            except OSError as exc:
                self.error = exc
                return
            if got:
                self._got += got
            else:
                self._ended = True

    def whole(self, want: int, room: int) -> memoryview | None:
        """The next chunk's bytes that fit in ``room``, once it is complete (``want`` bytes, or
        the input's end) and read without a failure; else None."""
        if self.error is not None or not (self._got >= want or self._ended):
            return None
        return self._view[: min(self._got, room)]

    def take(self, spent: memoryview) -> tuple[memoryview, int, bool]:
        """The buffer read ahead, its bytes and whether the input ended; ``spent`` (the buffer
        whose bytes are all stored) becomes the one read into next."""
        view, got, ended = self._view, self._got, self._ended
        self._view, self._got, self._ended = spent, 0, False
        return view, got, ended


def _always_ready(ms: int) -> bool:
    """A regular file's ``ready``: it has more until a read says it ended."""
    return True


def _is_regular(source: BinaryIO) -> bool:
    """Whether ``source`` reads a regular file: its next chunk can be read whole at once."""
    try:
        return stat.S_ISREG(os.fstat(source.fileno()).st_mode)
    except (AttributeError, OSError, ValueError):  # no descriptor (an in-memory stream), or closed
        return False


def _stream_ready(source: BinaryIO) -> Ready | None:
    """For a stream (a pipe, a terminal, a socket): ``ready``, or None when that cannot be asked.
    A pipe's buffer is grown first, to a ``CHUNK``."""
    try:
        fd = source.fileno()
        mode = os.fstat(fd).st_mode
    except (AttributeError, OSError, ValueError):  # no descriptor (an in-memory stream), or closed
        return None
    if stat.S_ISFIFO(mode):
        _grow_pipe(fd, CHUNK)
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return lambda ms: bool(poller.poll(ms))  # data, or the writer gone (POLLHUP): a read says which


def _grow_pipe(fd: int, size: int) -> None:
    """Let the process writing into a pipe run ``size`` bytes ahead of the one storing them.

    A pipe holds 64 KiB by default, so its writer stops as soon as that is full: a write that
    comes back from storing a chunk finds 64 KiB, then waits for the writer to be woken, and so
    on for every 64 KiB, and none of the writer's work overlaps with its own (a 1 GiB pipe took
    about 1.2 times as long as the same file).  Best effort: beyond /proc/sys/fs/pipe-max-size
    (1 MiB by default) only a privileged process may go, so that is tried next; a user over
    its share of pipe memory gets neither, and the pipe stays as it is.
    """
    try:
        have = fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
        with open("/proc/sys/fs/pipe-max-size", "rb") as f:
            most = int(f.read())
    except (AttributeError, OSError, ValueError):  # not Linux, or no /proc: leave the pipe be
        return
    for want in (size, min(size, most)):
        if want <= have:
            return
        try:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, want)
            return
        except OSError:
            continue


def _gather(
    readinto: Callable[[memoryview], int | None],
    view: memoryview,
    least: int,
    signals: Deferred | None,
    ready: Ready | None = None,
) -> tuple[int, bool, OSError | None]:
    """Read into ``view`` until it holds at least ``least`` bytes or the input ends, and then on
    while ``ready`` says more is there (or comes within STREAM_GRACE_MS), until ``view`` is full:
    (bytes, ended, a failure that came after those bytes, to raise once they are stored).

    One read(2) at a time (``readinto1``), so that a short read from a terminal
    is not retried and one ^D (a read of nothing) ends the input, as for cat;
    after the end nothing more is read.  So a slow stream is stored as it comes, a
    ``least`` at a time, and a fast one (``cat file |``) a whole view at a time, as a file is.
    """
    n, size = 0, len(view)
    while n < size and (n < least or (ready is not None and ready(STREAM_GRACE_MS))):
        try:
            with _waiting(signals):
                got = readinto(view[n:])
        except OSError as exc:
            if not n:
                raise
            return n, False, exc
        if not got:
            return n, True, None
        n += got
    return n, False, None


def _write_all(out: BinaryIO, data: bytes | memoryview) -> None:
    """All of ``data``: a raw (unbuffered, ``python -u``) stdout may take only part of it."""
    view = memoryview(data)
    while view:
        n = out.write(view)
        view = view[len(view) if n is None else n :]


def check_image(
    target: str | os.PathLike[str] | Store | tuple[Store, int],
    dev_id: int | None = None,
    *,
    data: bool = False,
) -> list[str]:
    """Problems found in a device image, in words; [] when it is clean (see image/check.py).

    ``target`` is an image path (``.../zramN.img``), ``(store, dev_id)``, or a
    store with ``dev_id`` beside it.  The device is opened for reading (a
    pending log is completed first, as any open does); a device that cannot
    even be opened is one problem.
    """
    if isinstance(target, tuple):
        store, dev_id = target
    elif isinstance(target, Store):
        store = target
    else:
        path = Path(target)
        try:
            dev_id = parse_device_name(path.name.removesuffix(".img"))
        except ValueError:
            return [f"{path.name} is not named like a device image (zramN.img)"]
        store = Store(path.parent)
    if dev_id is None:
        raise TypeError("check_image: which device of the store?")
    from .image.check import check_opened  # only `check` needs it: no command else pays its import

    try:
        with store.open(dev_id, write=False, timeout=DEFAULT_LOCK_TIMEOUT) as handle:
            return check_opened(handle.image, data=data)
    except ZramError as exc:
        if exc.errno in (errno.ENODEV, errno.EBUSY, errno.EACCES):
            raise  # not a problem *of the image*: the caller reports it as any command would
        return [exc.detail or str(exc)]
