"""Live processes' anonymous memory as a stream of pages: what a swap device could be given.

zram as swap only ever sees a process's *anonymous* pages: its heap, stacks and
anonymous mappings, never the pages of files it has mapped (those are dropped or
written back to their files).  So a process's swap-candidate memory is

- every private, writable mapping in ``/proc/PID/maps`` with no file behind it
  (``[heap]``, ``[stack]``, ``[anon:...]`` or no name at all; ``[vvar]`` and the
  like are left out, as are a file's ``.data``/``.bss`` and shared mappings);
- of those, only the pages the process has touched: ``/proc/PID/pagemap`` bit 63
  (present in RAM) or bit 62 (in swap).  A page never touched is no memory at all,
  and reading it through ``/proc/PID/mem`` would only give the zero page.

The bytes are read through ``/proc/PID/mem``, in address order, in runs of touched
pages of at most ``CHUNK`` bytes, so memory stays bounded whatever the process's
size.  Reading a page that is in swap brings it back in (that is the kernel's
doing, not ours).

Who may read: the kernel asks ``ptrace_may_access()`` when each file is opened
(``PTRACE_MODE_READ`` for ``maps`` and ``pagemap``, ``PTRACE_MODE_ATTACH`` for
``mem``): root, or the same user where Yama's ``ptrace_scope`` allows it.  All
three files are opened when a ``ProcessMemory`` is made, so a refusal is known
before anything is read.

Failures come as ``ProcessError`` with one line of words (the caller prefixes
``zramctl: ``): no such process, permission denied, and a process that exits while
its memory is being read.  A process that exits is only noticed when a read comes
back short: the kernel gives an exited process's ``mem`` and ``pagemap`` as empty
files, not as an error.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from .kernel.profiles import PAGE_SIZE

CHUNK = 1 << 20
"""Largest read from /proc/PID/mem (and so the largest chunk a reader yields)."""
PM_PRESENT = 1 << 63
PM_SWAPPED = 1 << 62
_TOUCHED_BYTE = 0xC0
"""The two pagemap bits above, in the top byte of a little-endian entry."""
PROC = "/proc"


class ProcessError(Exception):
    """A process whose memory cannot be read, in words (``str()`` is one line, without ``zramctl: ``)."""

    def __init__(self, pid: int, reason: str, code: int = 0) -> None:
        super().__init__(f"process {pid}: {reason}")
        self.pid = pid
        self.reason = reason
        self.errno = code


@dataclass(frozen=True)
class Mapping:
    """One line of /proc/PID/maps that holds anonymous memory."""

    start: int
    end: int
    name: str
    """``[heap]``, ``[stack]``, ``[anon:...]`` or empty."""


def anonymous_mappings(maps: str) -> list[Mapping]:
    """The private, writable, anonymous mappings of a /proc/PID/maps text, in address order."""
    out = []
    for line in maps.splitlines():
        f = line.split(maxsplit=5)
        if len(f) < 5 or len(f[1]) < 4 or f[1][1] != "w" or f[1][3] != "p":
            continue
        name = f[5].strip() if len(f) > 5 else ""
        if f[4] != "0" or (name and name not in ("[heap]", "[stack]") and not name.startswith("[anon")):
            continue  # backed by a file (inode != 0), or [vvar], [vdso] and the like
        lo, _, hi = f[0].partition("-")
        out.append(Mapping(int(lo, 16), int(hi, 16), name))
    return out


def _refusal(pid: int, exc: OSError) -> ProcessError:
    """The words for an OSError met while opening a process's files."""
    if exc.errno in (errno.ENOENT, errno.ESRCH):
        return ProcessError(pid, "no such process", errno.ESRCH)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return ProcessError(
            pid,
            "permission denied (reading another user's memory needs root, or ptrace permission)",
            exc.errno,
        )
    return ProcessError(pid, f"cannot read its memory: {exc.strerror}", exc.errno or 0)


def is_alive(pid: int) -> bool:
    """The process exists and is not a zombie (its memory is still there to read)."""
    try:
        with open(f"{PROC}/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
    return state not in (b"Z", b"X", b"x", b"")


def anonymous_size(pid: int) -> int | None:
    """RssAnon + VmSwap of ``/proc/PID/status`` in bytes: about what a reader will yield (None if unknown)."""
    try:
        with open(f"{PROC}/{pid}/status") as f:
            text = f.read()
    except OSError:
        return None
    total, found = 0, False
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "VmSwap"):
            total += int(value.split()[0]) * 1024
            found = True
    return total if found else None


class ProcessMemory:
    """One process's touched anonymous pages; opening checks the process exists and may be read.

    Use as a context manager (the three files stay open until ``close()``);
    ``chunks()`` yields the bytes, whole pages, at most CHUNK at a time.
    """

    def __init__(self, pid: int) -> None:
        if pid <= 0:
            raise ProcessError(pid, "no such process", errno.ESRCH)
        self.pid = pid
        self.bytes_read = 0
        self._files = []
        try:
            with open(f"{PROC}/{pid}/maps") as f:
                self.mappings = anonymous_mappings(f.read())
            if self.mappings:  # a kernel thread has none, and its pagemap and mem refuse to open (ESRCH)
                self._pagemap = open(f"{PROC}/{pid}/pagemap", "rb", buffering=0)
                self._files.append(self._pagemap)
                self._mem = open(f"{PROC}/{pid}/mem", "rb", buffering=0)
                self._files.append(self._mem)
        except OSError as exc:
            self.close()
            raise _refusal(pid, exc) from None

    def close(self) -> None:
        for f in self._files:
            f.close()
        self._files.clear()

    def __enter__(self) -> ProcessMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _exited(self) -> ProcessError:
        return ProcessError(self.pid, "the process exited while its memory was being read", errno.ESRCH)

    def _pread(self, f: BinaryIO, size: int, offset: int) -> bytes:
        """Up to ``size`` bytes at ``offset``; b"" for a range the kernel will not give (EIO, EFAULT)."""
        try:
            return os.pread(f.fileno(), size, offset)
        except OSError as exc:
            if exc.errno in (errno.EIO, errno.EFAULT, errno.ENOMEM):
                return b""
            if exc.errno == errno.ESRCH:
                raise self._exited() from None
            raise ProcessError(self.pid, f"cannot read its memory: {exc.strerror}", exc.errno or 0) from None

    def _touched_runs(self, m: Mapping) -> Iterator[tuple[int, int]]:
        """(address, length) of each run of touched pages of ``m``, each at most CHUNK long."""
        npages = (m.end - m.start) // PAGE_SIZE
        step = CHUNK // 8  # pagemap entries read at a time (8 bytes each): 1 MiB of pagemap
        first = m.start // PAGE_SIZE
        for base in range(0, npages, step):
            n = min(step, npages - base)
            entries = self._pread(self._pagemap, n * 8, (first + base) * 8)
            if len(entries) < n * 8 and not is_alive(self.pid):
                raise self._exited()
            i, count = 0, len(entries) // 8
            while i < count:
                if not entries[i * 8 + 7] & _TOUCHED_BYTE:
                    i += 1
                    continue
                j = i + 1
                while j < count and entries[j * 8 + 7] & _TOUCHED_BYTE and (j - i) * PAGE_SIZE < CHUNK:
                    j += 1
                yield m.start + (base + i) * PAGE_SIZE, (j - i) * PAGE_SIZE
                i = j

    def chunks(self) -> Iterator[bytes]:
        """The touched anonymous pages in address order (each chunk whole pages).

        A range that the kernel will not give (it was unmapped since ``maps`` was
        read) is left out; a process that exits raises ProcessError.
        """
        for m in self.mappings:
            for addr, length in self._touched_runs(m):
                data = self._pread(self._mem, length, addr)
                if len(data) < length:
                    if not is_alive(self.pid):
                        raise self._exited()
                    data = data[: len(data) // PAGE_SIZE * PAGE_SIZE]
                if data:
                    self.bytes_read += len(data)
                    yield data


def process_chunks(pids: list[int]) -> Iterator[bytes]:
    """The pages of each process in turn (``--pid``); every process is opened and checked before any is read.

    A process with no anonymous mapping at all (a kernel thread, or one that has
    exited and is not yet reaped) is an error here: it was named, and has nothing to give.
    """
    readers: list[ProcessMemory] = []
    try:
        for pid in pids:
            readers.append(ProcessMemory(pid))
            if not readers[-1].mappings:
                why = "has no anonymous memory (a kernel thread, or a process that has exited)"
                raise ProcessError(pid, why)
        for r in readers:
            yield from r.chunks()
    finally:
        for r in readers:
            r.close()


def all_pids() -> list[int]:
    """Every process in /proc, ascending, except this one (reading ourselves reads the estimate's buffers)."""
    me = os.getpid()
    return sorted(int(n) for n in os.listdir(PROC) if n.isdigit() and int(n) != me)


def all_process_chunks(
    skipped: Callable[[ProcessError], None] | None = None,
    pids: list[int] | None = None,
) -> Iterator[bytes]:
    """Every readable process's pages, one process after another (``--all-processes``).

    Processes come and go while /proc is walked: one that is gone, refuses us or
    exits while being read is left out (what was read of it stays counted) and
    reported to ``skipped``; kernel threads have no anonymous memory and give nothing.
    """
    for pid in all_pids() if pids is None else pids:
        try:
            with ProcessMemory(pid) as r:
                yield from r.chunks()
        except ProcessError as exc:
            if skipped is not None:
                skipped(exc)


def total_anonymous(pids: list[int]) -> int | None:
    """The sum of ``anonymous_size`` over ``pids``, for a progress bar (None if none is known)."""
    sizes = [s for s in (anonymous_size(p) for p in pids) if s is not None]
    return sum(sizes) if sizes else None
