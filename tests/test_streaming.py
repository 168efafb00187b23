"""The store does the device I/O, and a pipe streams into ``write`` as it does into ``dd``.

- A pipe longer than the device: what fits is written and committed, then ENOSPC with the
  exact count; the device holds the input's first part and, past the end of the write,
  what it held before.
- No temporary space: no temporary file is made for a pipe, and a 256 MiB pipe keeps the
  process's peak RSS bounded.
- Each command opens the device once and commits once at the end (plus every
  COMMIT_EVERY bytes of a long write).
- The API itself: write_from/read_to/discard on a handle, their counts and errors.
"""

from __future__ import annotations

import errno
import io
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from zramctl import store
from zramctl.cli import main as cli
from zramctl.cli import verbs
from zramctl.errors import ZramError
from zramctl.image.image import Image
from zramctl.kernel.zram_drv import Zram
from zramctl.store import Store, TransferError

PAGE = 4096
ZRAMCTL = str(Path(sys.executable).with_name("zramctl"))


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("ZRAMCTL_ROOT", str(tmp_path / "root"))
    monkeypatch.setattr(store, "CHUNK", 16 * PAGE)
    monkeypatch.setattr(store, "READ_CHUNK", 16 * PAGE)
    monkeypatch.setattr(store, "COMMIT_EVERY", 64 * PAGE)
    return tmp_path / "root"


def run(capfdbinary, *args: str) -> tuple[int, bytes, str]:
    rc = cli.main(list(args))
    out, err = capfdbinary.readouterr()
    return rc, out, err.decode()


def _pipe(data: bytes) -> str:
    """A pipe whose writer runs in a thread; its reading end as a path (/dev/fd/N)."""
    r, w = os.pipe()

    def feed():
        with os.fdopen(w, "wb") as f:
            try:
                f.write(data)
            except BrokenPipeError:
                pass

    threading.Thread(target=feed, daemon=True).start()
    return f"/dev/fd/{r}"


def _device(root: Path, dev: int = 0) -> bytes:
    with Store(root).open(dev, write=False) as h:
        return h.zram.read(0, h.disksize)


@pytest.fixture
def counts(monkeypatch):
    """How many times the device was opened and committed (Store.open, Image.commit)."""
    seen = {"open": 0, "commit": 0}
    real_open, real_commit = Store.open, Image.commit

    def counting_open(self, *args, **kwargs):
        seen["open"] += 1
        return real_open(self, *args, **kwargs)

    def counting_commit(self, **kwargs):
        seen["commit"] += 1
        return real_commit(self, **kwargs)

    monkeypatch.setattr(Store, "open", counting_open)
    monkeypatch.setattr(Image, "commit", counting_commit)
    return seen


# --- pipes past the end ----------------------------------------------------------------------


def test_a_pipe_longer_than_the_device_writes_what_fits(root, capfdbinary):
    assert cli.main(["-f", "-s", "1M"]) == 0
    before = random.Random(1).randbytes(1 << 20)
    assert cli.main(["write", "zram0", _pipe(before)]) == 0
    data = random.Random(2).randbytes((1 << 20) + 5 * PAGE)
    offset = 100 * PAGE + 17
    room = (1 << 20) - offset
    capfdbinary.readouterr()
    rc, _, err = run(capfdbinary, "write", "zram0", "--offset", str(offset), _pipe(data))
    assert rc == 1
    assert err == (
        f"zramctl: zram0: write: No space left on device (the input is longer than the {room} bytes "
        f"from offset {offset} to the end of the device; {room} bytes written and committed)\n"
    )
    assert _device(root) == before[:offset] + data[:room]
    rc, out, _ = run(capfdbinary, "check", "zram0", "--data")
    assert (rc, out) == (0, b"")


def test_a_pipe_that_ends_at_the_end_of_the_device_is_no_error(root, capfdbinary):
    assert cli.main(["-f", "-s", "1M"]) == 0
    data = random.Random(3).randbytes((1 << 20) - 100)
    assert cli.main(["write", "zram0", "--offset", "100", _pipe(data)]) == 0
    assert _device(root) == bytes(100) + data


def test_a_file_longer_than_the_room_left_is_refused_before_anything_is_written(root, capfdbinary, tmp_path):
    assert cli.main(["-f", "-s", "1M"]) == 0
    src = tmp_path / "big"
    src.write_bytes(random.Random(4).randbytes(1 << 20))
    with Store(root).open(0, write=False) as h:
        txid = h.image.header.txid
    capfdbinary.readouterr()
    rc, _, err = run(capfdbinary, "write", "zram0", "--offset", "1", str(src))
    assert rc == 1
    assert err == (
        "zramctl: zram0: write: No space left on device "
        "(1048577 bytes is past the end of the device (1048576 bytes); nothing written)\n"
    )
    with Store(root).open(0, write=False) as h:
        assert h.image.header.txid == txid and h.zram.stats.pages_stored == 0


def test_a_page_failure_on_a_pipe_counts_without_a_total(root, capfdbinary):
    assert cli.main(["-f", "-s", "4M"]) == 0
    assert cli.main(["attr", "zram0", "mem_limit", "64K"]) == 0
    capfdbinary.readouterr()
    data = random.Random(5).randbytes(1 << 20)
    rc, _, err = run(capfdbinary, "write", "zram0", _pipe(data))
    assert rc == 1
    prefix = "zramctl: zram0: write: Cannot allocate memory (mem_limit reached; "
    assert err.startswith(prefix) and err.endswith(" bytes written and committed)\n"), err
    kept = int(err[len(prefix) :].split()[0])
    assert err == f"{prefix}{kept} bytes written and committed)\n"
    assert 0 < kept < len(data) and kept % PAGE == 0
    assert _device(root)[: len(data)] == data[:kept] + bytes(len(data) - kept)


def test_a_signal_during_a_piped_write_commits_and_counts(root, capfdbinary, monkeypatch):
    monkeypatch.setattr(store, "PIECE", 4 * PAGE)
    assert cli.main(["-f", "-s", "4M"]) == 0
    data = random.Random(6).randbytes(100 * PAGE + 5)
    capfdbinary.readouterr()
    real = Zram._write_page
    pages = [0]

    def signalled(self, index, page):
        pages[0] += 1
        if pages[0] == 10:
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, index, page)

    monkeypatch.setattr(Zram, "_write_page", signalled)
    rc, _, err = run(capfdbinary, "write", "zram0", "--offset", "1", _pipe(data))
    monkeypatch.setattr(Zram, "_write_page", real)
    assert rc == 130
    prefix, suffix = "zramctl: zram0: write: interrupted (", " bytes written and committed)\n"
    assert err.startswith(prefix) and err.endswith(suffix), err
    kept = int(err[len(prefix) : -len(suffix)])
    assert 9 * PAGE <= kept < 20 * PAGE  # stopped at the end of the piece that held page 10
    assert _device(root)[: len(data) + 1] == b"\0" + data[:kept] + bytes(len(data) - kept)


# --- no temporary space, bounded memory ----------------------------------------------------------


def test_a_pipe_makes_no_temporary_file(root, capfdbinary, monkeypatch):
    def refused(*args, **kwargs):
        raise AssertionError("a temporary file was made")

    for name in ("SpooledTemporaryFile", "TemporaryFile", "NamedTemporaryFile", "mkstemp", "mkdtemp"):
        monkeypatch.setattr(tempfile, name, refused)
    assert cli.main(["-f", "-s", "4M"]) == 0
    data = random.Random(7).randbytes(300 * PAGE)
    assert cli.main(["write", "zram0", _pipe(data)]) == 0
    assert _device(root)[: len(data)] == data


def _feed_chunks(pipe, total: int) -> None:
    """``total`` bytes of mixed pages (text, random, zero) into ``pipe``, a MiB at a time."""
    rng = random.Random(8)
    block = b"".join(
        (rng.randbytes(1500) + bytes(PAGE - 1500)) if i % 3 == 0 else (b"zram page %06d " % i) * 240
        for i in range(256)
    )
    block = (block + bytes(1 << 20))[: 1 << 20]
    try:
        for _ in range(total >> 20):
            pipe.write(block)
        pipe.close()
    except BrokenPipeError:
        pass


PEAK_RSS = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss * 1024))
sys.exit(os.waitstatus_to_exitcode(status))
"""
"""Runs a command and writes its peak RSS in bytes (ru_maxrss, Linux: KiB) to the file named
first, as /usr/bin/time does.  A command spawned straight from this process would not do: its
ru_maxrss starts from the high-water mark of the memory it starts in, which with vfork (or
posix_spawn) is this pytest process's, over 1 GB late in the suite, and with fork a copy of
it.  This small process's fork starts the command in a few MB."""


def _children(pid: int) -> list[int]:
    try:
        return [int(n) for n in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@pytest.mark.skipif(not hasattr(os, "fork") or not Path("/proc/self/task").exists(), reason="needs Linux")
def test_a_256_mib_pipe_uses_no_temporary_space_and_bounded_memory(tmp_path):
    """Peak RSS (the command's ru_maxrss, as PEAK_RSS reports it) stays far below the input's
    size, and the command's TMPDIR, an empty directory of its own, stays empty and is never
    written to."""
    total = 256 << 20
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    peak_file = tmp_path / "peak"
    env = dict(os.environ, ZRAMCTL_ROOT=str(tmp_path / "root"), TMPDIR=str(tmpdir))
    subprocess.run([ZRAMCTL, "-f", "-s", "300M"], env=env, check=True, capture_output=True)
    proc = subprocess.Popen([sys.executable, "-c", PEAK_RSS, str(peak_file), ZRAMCTL, "write", "zram0"],
                            env=env, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    feeder = threading.Thread(target=_feed_chunks, args=(proc.stdin, total))
    feeder.start()
    held_open: set[str] = set()
    while proc.poll() is None:  # any file under TMPDIR the command holds open, even unlinked
        for pid in _children(proc.pid):
            try:
                for fd in Path(f"/proc/{pid}/fd").iterdir():
                    target = os.readlink(fd)
                    if target.startswith(str(tmpdir)):
                        held_open.add(target)
            except OSError:
                pass
        threading.Event().wait(0.05)
    feeder.join(timeout=600)
    err = proc.stderr.read()
    assert proc.returncode == 0, err
    assert held_open == set() and list(tmpdir.iterdir()) == []
    peak = int(peak_file.read_text())
    assert 0 < peak < 150 * 10**6, peak
    with Store(tmp_path / "root").open(0, write=False) as h:
        assert h.zram.stats.pages_stored * PAGE == total  # all of it, same-filled pages included


# --- one open, one commit -------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["file", "pipe"])
def test_write_opens_once_and_commits_once(root, tmp_path, counts, source):
    assert cli.main(["-f", "-s", "1M"]) == 0
    with Store(root).open(0, write=False) as h:
        txid = h.image.header.txid
    data = random.Random(9).randbytes(10 * PAGE + 3)
    src = tmp_path / "data"
    src.write_bytes(data)
    counts.update(open=0, commit=0)
    assert cli.main(["write", "zram0", "--offset", "5", str(src) if source == "file" else _pipe(data)]) == 0
    assert counts == {"open": 1, "commit": 1}
    with Store(root).open(0, write=False) as h:
        assert h.image.header.txid == txid + 1
        assert h.zram.read(5, len(data)) == data


def test_a_long_write_commits_every_commit_every_bytes_and_once_at_the_end(root, tmp_path, counts):
    assert cli.main(["-f", "-s", "4M"]) == 0
    data = random.Random(10).randbytes(300 * PAGE)
    counts.update(open=0, commit=0)
    assert cli.main(["write", "zram0", _pipe(data)]) == 0
    assert counts["open"] == 1
    assert counts["commit"] == len(data) // store.COMMIT_EVERY + 1  # 4 on the way, 1 at the end


@pytest.mark.parametrize(
    ("compat", "verb", "expected"),
    [
        ("3.11", ["read", "zram0", "--length", "64K"], {"open": 1, "commit": 0}),
        # 6.18: a read sets access times (zram_accessed): looked at shared, then opened as a
        # writer, and committed once
        ("6.18", ["read", "zram0", "--length", "64K"], {"open": 2, "commit": 1}),
        ("6.18", ["discard", "zram0"], {"open": 1, "commit": 1}),
    ],
)
def test_read_and_discard_open_once(root, capfdbinary, counts, compat, verb, expected):
    assert cli.main(["-f", "-s", "1M", "--compat", compat]) == 0
    assert cli.main(["write", "zram0", _pipe(random.Random(11).randbytes(20 * PAGE))]) == 0
    capfdbinary.readouterr()
    counts.update(open=0, commit=0)
    rc, out, _ = run(capfdbinary, *verb)
    assert rc == 0
    assert counts == expected


def test_the_close_after_a_transfer_commits_nothing_more(root, counts):
    assert cli.main(["-f", "-s", "1M"]) == 0
    counts.update(open=0, commit=0)
    with Store(root).open(0, write=True) as h:
        h.write_from(io.BytesIO(b"x" * 5000), 0)
    assert counts["commit"] == 1
    with Store(root).open(0, write=True) as h:  # handing out zram: the close commits
        h.zram.write(0, b"y")
    assert counts["commit"] == 2
    assert _device(root)[:5001] == b"y" + b"x" * 4999 + b"\0"


# --- the API ----------------------------------------------------------------------------------


def test_write_from_read_to_discard(root):
    assert cli.main(["-f", "-s", "1M"]) == 0
    data = random.Random(12).randbytes(50 * PAGE + 7)
    moved: list[int] = []
    with Store(root).open(0, write=True) as h:
        done = h.write_from(io.BytesIO(data), 3, length=len(data), progress=moved.append)
        assert done == store.Transfer(len(data), len(data), None)
        assert sum(moved) == len(data)
        out = io.BytesIO()
        got = h.read_to(out, 3, len(data))
        assert got == store.Transfer(len(data), len(data), None) and out.getvalue() == data
        assert h.discard(0) == 256
        assert h.zram.stats.pages_stored == 0
    with Store(root).open(0, write=False) as h:
        with pytest.raises(ZramError) as info:  # the range check, before anything is read
            h.read_to(io.BytesIO(), 1 << 20, 1)
        assert info.value.errno == errno.EINVAL
        with pytest.raises(ZramError) as info:
            h.write_from(io.BytesIO(b"x"), 0)
        assert info.value.errno == errno.EBADF


def test_write_from_a_stream_past_the_end_raises_with_the_counts(root):
    assert cli.main(["-f", "-s", "64K"]) == 0
    data = random.Random(13).randbytes(70 << 10)
    with Store(root).open(0, write=True) as h:
        with pytest.raises(TransferError) as info:
            h.write_from(io.BytesIO(data), 1000)
    exc = info.value
    room = 64 * 1024 - 1000
    assert (exc.errno, exc.done, exc.committed, exc.total) == (errno.ENOSPC, room, room, None)
    assert _device(root) == bytes(1000) + data[:room]


def test_progress_on_a_pipe_shows_bytes_and_rate_without_a_total(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    monkeypatch.setenv("COLUMNS", "100")
    with verbs.progress(None, "write zram0", lambda: 2.5) as advance:
        for _ in range(8):
            advance(4 << 20)
    shown = screen.getvalue()
    assert "write zram0" in shown and "33.6 MB" in shown and "B/s" in shown and "ratio 2.50" in shown
    assert "/?" not in shown and "-:--:--" not in shown  # no total, no time left


# --- a fast pipe is stored as a file is --------------------------------------------------------


def _pieces(sizes: list[int]):
    """A readinto that hands out ``sizes`` bytes per call (then the end), as a pipe's reads do."""
    left = list(sizes)

    def readinto(view: memoryview) -> int:
        if not left:
            return 0
        n = min(left.pop(0), len(view))
        view[:n] = b"x" * n
        return n

    return readinto, left


@pytest.mark.parametrize(
    ("ready", "got"),
    [
        (None, (3 * PAGE, False, None)),  # no way to ask: at least `least`, then it is stored
        (lambda ms: False, (3 * PAGE, False, None)),  # a slow stream: stored as it comes
        (lambda ms: True, (8 * PAGE, False, None)),  # more there at once: read on until the view is full
    ],
)
def test_gather_reads_on_while_more_is_there(ready, got):
    readinto, left = _pieces([PAGE] * 20)
    view = memoryview(bytearray(8 * PAGE))
    assert store._gather(readinto, view, 3 * PAGE, None, ready) == got
    assert len(left) == 20 - got[0] // PAGE  # nothing read beyond what it returns


def test_gather_stops_at_the_end_even_when_more_seemed_there():
    readinto, _ = _pieces([PAGE] * 5)
    view = memoryview(bytearray(8 * PAGE))
    assert store._gather(readinto, view, 3 * PAGE, None, lambda ms: True) == (5 * PAGE, True, None)


def test_gather_keeps_a_failure_after_bytes_for_after_they_are_stored():
    """A read that fails once some bytes came: those bytes, and the failure to raise after them;
    one that fails first is raised at once."""
    readinto, _ = _pieces([PAGE] * 2)

    def failing(view):
        got = readinto(view)
        if not got:
            raise OSError(errno.EIO, "Input/output error")
        return got

    view = memoryview(bytearray(8 * PAGE))
    n, ended, failed = store._gather(failing, view, 3 * PAGE, None, None)
    assert (n, ended) == (2 * PAGE, False) and isinstance(failed, OSError) and failed.errno == errno.EIO
    with pytest.raises(OSError):
        store._gather(failing, view, 3 * PAGE, None, None)


def test_a_fast_pipe_is_stored_a_whole_chunk_at_a_time(tmp_path, monkeypatch):
    """cat's writes come in pieces smaller than a chunk, and a read drains the pipe faster than
    cat fills it: write_from waits a moment (STREAM_GRACE_MS) for the next piece, so that a fast
    pipe is stored a whole CHUNK at a time, as a file is, not whenever the pipe ran empty (each
    chunk starts and drains the compression streams).  The pipe is left at its 64 KiB."""
    monkeypatch.setattr(store, "_grow_pipe", lambda fd, size: None)
    chunks = 24
    src = tmp_path / "data"
    rng = random.Random(7)
    src.write_bytes(b"".join(rng.randbytes(64) * 64 for _ in range(chunks * store.CHUNK // PAGE)))
    gathered: list[int] = []  # the bytes of each chunk stored
    compress_ahead = Zram.compress_ahead

    def counted(self, offset, data):
        gathered.append(len(data))
        return compress_ahead(self, offset, data)

    monkeypatch.setattr(Zram, "compress_ahead", counted)
    st = Store(tmp_path / "root")
    st.hot_add()
    with st.open(0, write=True) as h:
        h.zram.init(chunks * store.CHUNK)
        feeder = subprocess.Popen(["cat", str(src)], stdout=subprocess.PIPE)
        with feeder.stdout as pipe:
            assert h.write_from(pipe, 0).done == chunks * store.CHUNK
        feeder.wait()
    whole = [n for n in gathered if n == store.CHUNK]
    assert len(whole) >= chunks * 3 // 4, gathered


class _FailingPipe(io.RawIOBase):
    """A pipe's reading end whose reads fail with EIO once ``good`` bytes were read: a stream
    (it has a descriptor to poll), so write_from reads its next chunk while storing one.
    ``storing`` is set while a chunk is being stored; ``ahead`` counts the reads made then."""

    def __init__(self, fd: int, good: int) -> None:
        self._fd, self._left = fd, good
        self.storing = False
        self.ahead = 0

    def fileno(self) -> int:
        return self._fd

    def readable(self) -> bool:
        return True

    def readinto(self, view) -> int:
        self.ahead += self.storing
        if self._left <= 0:
            raise OSError(errno.EIO, "Input/output error")
        n = os.readv(self._fd, [memoryview(view)[: self._left]])
        self._left -= n
        return n


def test_a_stream_is_read_ahead_while_stored_and_its_failure_comes_after_what_it_gave(
    tmp_path, monkeypatch
):
    """A stream's next chunk is read between the pieces of the one being stored (_NextChunk).
    A read that fails there is kept: every byte read before it is stored and committed, and
    the write fails with the exact count, as when the failure comes between chunks."""
    monkeypatch.setattr(store, "CHUNK", 64 * PAGE)
    monkeypatch.setattr(store, "PIECE", 8 * PAGE)
    monkeypatch.setattr(store, "_grow_pipe", lambda fd, size: None)
    data = random.Random(9).randbytes(1 << 20)
    good = 3 * 64 * PAGE + 5 * PAGE + 123  # within the fourth chunk
    r, w = os.pipe()
    threading.Thread(target=_feed_all, args=(w, data), daemon=True).start()
    source = _FailingPipe(r, good)
    compress_ahead = Zram.compress_ahead

    def chunk(self, offset, buf):  # a chunk is stored from here until its Lookahead closes
        ahead = compress_ahead(self, offset, buf)
        close = ahead.close
        source.storing = True

        def stored():
            source.storing = False
            close()

        ahead.close = stored  # type: ignore[method-assign]
        return ahead

    monkeypatch.setattr(Zram, "compress_ahead", chunk)
    st = Store(tmp_path / "root")
    st.hot_add()
    with st.open(0, write=True) as h:
        h.zram.init(2 << 20)
        with pytest.raises(TransferError) as info:
            h.write_from(io.BufferedReader(source, 4 * PAGE), 0)
    os.close(r)
    assert info.value.errno == errno.EIO
    assert info.value.done == info.value.committed == good
    assert source.ahead > 0
    with st.open(0, write=False) as h:
        assert h.zram.read(0, good + PAGE) == data[:good] + bytes(PAGE)


def _chunked_write(tmp_path, monkeypatch, data: bytes, *, mem_limit: int = 0):
    """write_from of a regular file holding ``data``, in 64-page chunks of 8-page pieces:
    (the events in order, ("ahead", offset) and ("write", offset); every Lookahead made; the
    write's TransferError or None)."""
    monkeypatch.setattr(store, "CHUNK", 64 * PAGE)
    monkeypatch.setattr(store, "PIECE", 8 * PAGE)
    events: list[tuple[str, int]] = []
    made = []
    compress_ahead, write = Zram.compress_ahead, Zram.write

    def ahead(self, offset, buf):
        events.append(("ahead", offset))
        made.append(compress_ahead(self, offset, buf))
        return made[-1]

    def written(self, offset, buf, **kwargs):
        events.append(("write", offset))
        return write(self, offset, buf, **kwargs)

    monkeypatch.setattr(Zram, "compress_ahead", ahead)
    monkeypatch.setattr(Zram, "write", written)
    src = tmp_path / "data"
    src.write_bytes(data)
    st = Store(tmp_path / "root")
    st.hot_add()
    failure = None
    with st.open(0, write=True) as h:
        h.zram.init(len(data))
        h.zram.config.limit_pages = mem_limit
        with open(src, "rb") as f:
            try:
                h.write_from(f, 0, length=len(data))
            except TransferError as exc:
                failure = exc
    return events, made, failure


def test_a_files_next_chunk_goes_to_the_streams_before_this_one_is_stored(tmp_path, monkeypatch):
    """A regular file's next chunk is read and handed to the compression streams halfway through
    the one being stored, so that they never wait for the storing thread to start a chunk."""
    data = random.Random(12).randbytes(4 * 64 * PAGE)
    events, made, failure = _chunked_write(tmp_path, monkeypatch, data)
    assert failure is None
    for k in (1, 2, 3):
        start = k * 64 * PAGE
        last_write_before = max(i for i, (what, at) in enumerate(events) if what == "write" and at < start)
        assert events.index(("ahead", start)) < last_write_before, events
    with Store(tmp_path / "root").open(0, write=False) as h:
        assert h.zram.read(0, len(data)) == data
    assert all(a._results is None and (a._job is None or a._job.threads == 0) for a in made)


def test_a_file_write_that_stops_midway_leaves_no_stream_running(tmp_path, monkeypatch):
    """mem_limit stops the write within a chunk whose successor already went to the streams:
    that successor's job is closed too (its threads joined), and the count is exact."""
    data = random.Random(13).randbytes(4 * 64 * PAGE)  # random: every page a huge object
    events, made, failure = _chunked_write(tmp_path, monkeypatch, data, mem_limit=100)
    assert failure is not None and failure.errno == errno.ENOMEM
    assert 64 * PAGE < failure.done < 2 * 64 * PAGE  # within the second chunk
    assert ("ahead", 2 * 64 * PAGE) in events  # the third chunk was already with the streams
    assert all(a._results is None and (a._job is None or a._job.threads == 0) for a in made)
    with Store(tmp_path / "root").open(0, write=False) as h:
        assert h.zram.read(0, failure.done) == data[: failure.done]


def _feed_all(fd: int, data: bytes) -> None:
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except (BrokenPipeError, OSError):
        pass


def test_a_pipe_is_grown_to_hold_a_chunk_and_only_grown():
    """write_from lets the process feeding it run a chunk ahead (as much as this system allows)."""
    fcntl = pytest.importorskip("fcntl")
    most = int(Path("/proc/sys/fs/pipe-max-size").read_text())
    r, w = os.pipe()
    try:
        before = fcntl.fcntl(r, fcntl.F_GETPIPE_SZ)
        with os.fdopen(os.dup(r), "rb") as source:
            ready = store._stream_ready(source)
            assert ready is not None and not ready(0)  # nothing written yet
            os.write(w, b"x")
            assert ready(0)
        size = fcntl.fcntl(r, fcntl.F_GETPIPE_SZ)
        assert size >= min(store.CHUNK, max(most, before)) and size > before
        store._grow_pipe(r, before)  # never shrunk
        assert fcntl.fcntl(r, fcntl.F_GETPIPE_SZ) == size
    finally:
        os.close(r)
        os.close(w)

