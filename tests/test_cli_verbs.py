"""The data verbs in process, with their limits made small: chunking, commits, pipes, failures."""

from __future__ import annotations

import errno
import os
import random
import signal
import threading

import pytest

from zramctl import store
from zramctl.cli import main as cli
from zramctl.errors import ZramError
from zramctl.kernel.zram_drv import Zram
from zramctl.store import DeviceHandle

PAGE = 4096


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("ZRAMCTL_ROOT", str(tmp_path / "root"))
    monkeypatch.setattr(store, "CHUNK", 16 * PAGE)
    monkeypatch.setattr(store, "READ_CHUNK", 16 * PAGE)
    monkeypatch.setattr(store, "COMMIT_EVERY", 64 * PAGE)
    return tmp_path / "root"


def run(capfdbinary, *args: str) -> tuple[int, bytes, str]:
    """Run in process; ``capfd`` is pytest's capfdbinary (stdout is binary for ``read``)."""
    rc = cli.main(list(args))
    out, err = capfdbinary.readouterr()
    return rc, out, err.decode()


@pytest.fixture
def commits(monkeypatch):
    count = [0]
    real = DeviceHandle.commit

    def counting(self, **kwargs):
        count[0] += 1
        return real(self, **kwargs)

    monkeypatch.setattr(DeviceHandle, "commit", counting)
    return count


def test_long_write_commits_as_it_goes(root, capsys, tmp_path, commits):
    assert cli.main(["-f", "-s", "4M"]) == 0
    data = random.Random(1).randbytes(300 * PAGE)
    src = tmp_path / "data"
    src.write_bytes(data)
    commits[0] = 0
    assert cli.main(["write", "zram0", str(src)]) == 0
    assert commits[0] >= len(data) // store.COMMIT_EVERY + 1
    capsys.readouterr()
    assert cli.main(["attr", "zram0", "mm_stat"]) == 0
    assert int(capsys.readouterr().out.split()[0]) == len(data)


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


def test_piped_input_is_streamed(root, capfdbinary):
    assert cli.main(["-f", "-s", "1M"]) == 0
    data = random.Random(2).randbytes(200 * PAGE + 123)  # many chunks, and a partial page at each end
    assert cli.main(["write", "zram0", _pipe(data), "--offset", "100"]) == 0
    capfdbinary.readouterr()
    rc, out, _ = run(capfdbinary, "read", "zram0", "--offset", "100", "--length", str(len(data)))
    assert rc == 0 and out == data


def test_piped_input_that_does_not_fit_writes_what_fits(root, capfdbinary):
    """As ``dd of=/dev/zram0``: what fits is written (and committed), then ENOSPC with the count."""
    assert cli.main(["-f", "-s", "1M"]) == 0
    capfdbinary.readouterr()
    data = bytes(range(256)) * 4096 + b"!"
    rc, _, err = run(capfdbinary, "write", "zram0", _pipe(data))
    assert rc == 1
    assert err == (
        "zramctl: zram0: write: No space left on device (the input is longer than the 1048576 bytes "
        "from offset 0 to the end of the device; 1048576 bytes written and committed)\n"
    )
    rc, out, _ = run(capfdbinary, "read", "zram0")
    assert out == data[: 1 << 20]


def test_a_failure_midway_keeps_and_reports_what_was_stored(root, capfdbinary, tmp_path):
    assert cli.main(["-f", "-s", "4M"]) == 0
    assert cli.main(["attr", "zram0", "mem_limit", "64K"]) == 0
    capfdbinary.readouterr()
    data = random.Random(3).randbytes(1 << 20)
    src = tmp_path / "data"
    src.write_bytes(data)
    rc, _, err = run(capfdbinary, "write", "zram0", str(src))
    assert rc == 1
    prefix = "zramctl: zram0: write: Cannot allocate memory (mem_limit reached; "
    assert err.startswith(prefix) and err.endswith(" of 1048576 bytes written and committed)\n")
    kept = int(err[len(prefix) :].split()[0])
    assert 0 < kept < len(data) and kept % PAGE == 0
    rc, out, _ = run(capfdbinary, "attr", "zram0", "mm_stat")
    assert int(out.split()[0]) == kept
    rc, out, _ = run(capfdbinary, "read", "zram0", "--length", str(kept))
    assert out == data[:kept]


def test_discard_defaults_to_the_whole_device(root, capfdbinary):
    assert cli.main(["-f", "-s", "1M"]) == 0
    assert cli.main(["write", "zram0", _pipe(random.Random(4).randbytes(20 * PAGE))]) == 0
    assert cli.main(["discard", "zram0", "--offset", "1", "--length", str(2 * PAGE)]) == 0
    capfdbinary.readouterr()
    rc, out, _ = run(capfdbinary, "attr", "zram0", "mm_stat")
    assert int(out.split()[0]) == 19 * PAGE  # only the one whole page in [1, 8193) went
    assert cli.main(["discard", "zram0"]) == 0
    capfdbinary.readouterr()
    rc, out, _ = run(capfdbinary, "attr", "zram0", "io_stat")
    assert int(out.split()[-1]) == 1 + 256  # notify_free counts every whole page discarded


def test_stat_plain_text_layout(root, capfdbinary):
    assert cli.main(["-f", "-s", "1M"]) == 0
    page = bytes(range(256)) * 16
    assert cli.main(["write", "zram0", _pipe(page * 3 + bytes(PAGE) + random.Random(5).randbytes(PAGE))]) == 0
    capfdbinary.readouterr()
    rc, out, _ = run(capfdbinary, "stat", "zram0")
    text = out.decode()
    assert rc == 0
    assert "  disksize                1048576  (1M)\n" in text
    assert "  orig_data_size     20480  (20K)\n" in text
    assert "  same_pages         1\n" in text
    assert "  compression ratio  0.8333\n" in text  # 20K of data in a 5-page zspage + a huge page
    assert "  mm_stat" in text and "  comp_algorithm          [lzo-rle] lzo lz4 lz4hc zstd deflate" in text
    histogram = text.split("stored object sizes (bytes)\n")[1].splitlines()
    assert histogram[-2].split()[:2] == ["same-filled", "1"]
    assert histogram[-1].split()[:3] == ["raw", "(huge)", "1"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_keeps_and_reports_what_was_written(root, capfdbinary, tmp_path, monkeypatch, sig):
    """A signal arriving in the middle of a write (here: inside the third call to the device, in
    the middle of its pages) is acted on once that call has stored its pages: what is stored is
    committed, and the message says exactly how much."""
    monkeypatch.setattr(store, "PIECE", 4 * PAGE)
    assert cli.main(["-f", "-s", "4M"]) == 0
    data = random.Random(2).randbytes(100 * PAGE + 5)
    src = tmp_path / "data"
    src.write_bytes(data)
    capfdbinary.readouterr()

    real_write_page = Zram._write_page
    pages = [0]

    def signalled_write_page(self, index, page):
        pages[0] += 1
        if pages[0] == 10:  # the second page of the third piece
            os.kill(os.getpid(), sig)
        return real_write_page(self, index, page)

    monkeypatch.setattr(Zram, "_write_page", signalled_write_page)
    rc, _, err = run(capfdbinary, "write", "zram0", "--offset", "1", str(src))
    monkeypatch.setattr(Zram, "_write_page", real_write_page)
    stored = 3 * 4 * PAGE - 1  # pieces end on page boundaries of the device: the first is a byte short
    assert rc == 128 + sig
    words = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated", signal.SIGHUP: "hung up"}[sig]
    assert err == f"zramctl: zram0: write: {words} ({stored} of {len(data)} bytes written and committed)\n"
    assert signal.getsignal(sig) in (signal.default_int_handler, signal.SIG_DFL)  # handlers put back
    rc, out, _ = run(capfdbinary, "read", "zram0", "--length", str(stored + 1))
    assert rc == 0 and out == b"\0" + data[:stored]
    rc, out, _ = run(capfdbinary, "attr", "zram0", "mm_stat")
    assert int(out.split()[0]) == 3 * 4 * PAGE


def test_a_failed_commit_says_what_the_last_commit_holds(root, capfdbinary, tmp_path, monkeypatch):
    """The commit after 64 pages fails (a full disk): the message says which commit failed and
    that the device keeps the first 64 pages' bytes, which the previous commit holds."""
    assert cli.main(["-f", "-s", "4M"]) == 0
    data = random.Random(6).randbytes(200 * PAGE)
    src = tmp_path / "data"
    src.write_bytes(data)
    capfdbinary.readouterr()
    real = DeviceHandle.commit
    calls = [0]

    def full_disk(self, **kwargs):
        calls[0] += 1
        if calls[0] == 2:
            raise ZramError(errno.ENOSPC, "commit", "the last commit is intact")
        return real(self, **kwargs)

    monkeypatch.setattr(DeviceHandle, "commit", full_disk)
    rc, _, err = run(capfdbinary, "write", "zram0", str(src))
    monkeypatch.setattr(DeviceHandle, "commit", real)
    assert rc == 1
    assert err == (
        "zramctl: zram0: write: No space left on device (committing the first 524288 of 819200 bytes "
        "failed: the last commit is intact; the last commit holds the first 262144 bytes)\n"
    )
    rc, out, _ = run(capfdbinary, "read", "zram0", "--length", str(len(data)))
    assert out == data[: 64 * PAGE] + bytes(len(data) - 64 * PAGE)
    rc, out, _ = run(capfdbinary, "check", "zram0", "--data")
    assert (rc, out) == (0, b"")


def test_a_page_failure_whose_commit_fails_too(root, capfdbinary, tmp_path, monkeypatch):
    assert cli.main(["-f", "-s", "4M"]) == 0
    assert cli.main(["attr", "zram0", "mem_limit", "64K"]) == 0
    capfdbinary.readouterr()

    def full_disk(self, **kwargs):
        raise ZramError(errno.ENOSPC, "commit", "the last commit is intact")

    monkeypatch.setattr(DeviceHandle, "commit", full_disk)
    src = tmp_path / "data"
    src.write_bytes(random.Random(3).randbytes(1 << 20))
    rc, _, err = run(capfdbinary, "write", "zram0", str(src))
    assert rc == 1
    prefix = "zramctl: zram0: write: Cannot allocate memory (mem_limit reached; committing the first "
    tail = (
        " of 1048576 bytes failed: No space left on device, the last commit is intact; no commit holds any)\n"
    )
    assert err.startswith(prefix) and err.endswith(tail), err


@pytest.mark.parametrize("verb", ["discard", "compact"])
def test_a_signal_during_discard_or_compact_waits_for_its_end(root, capfdbinary, monkeypatch, verb):
    """They cannot stop midway: the signal is acted on once the work is done and committed."""
    assert cli.main(["-f", "-s", "4M"]) == 0
    data = random.Random(8).randbytes(300 * PAGE)
    assert cli.main(["write", "zram0", _pipe(data)]) == 0
    capfdbinary.readouterr()
    real = getattr(Zram, verb)

    def signalled(self, *args):
        os.kill(os.getpid(), signal.SIGINT)
        return real(self, *args)

    monkeypatch.setattr(Zram, verb, signalled)
    rc, _, err = run(capfdbinary, verb, "zram0", *(["--length", "1M"] if verb == "discard" else []))
    monkeypatch.setattr(Zram, verb, real)
    assert rc == 130
    assert err == f"zramctl: zram0: {verb}: interrupted (after it had finished; committed)\n"
    rc, out, _ = run(capfdbinary, "read", "zram0", "--length", str(len(data)))
    assert out == (bytes(1 << 20) + data[1 << 20 :] if verb == "discard" else data)
    rc, out, _ = run(capfdbinary, "check", "zram0", "--data")
    assert (rc, out) == (0, b"")


def test_a_signal_during_read_stops_between_chunks(root, capfdbinary, monkeypatch):
    assert cli.main(["-f", "-s", "4M"]) == 0
    data = random.Random(9).randbytes(100 * PAGE)
    assert cli.main(["write", "zram0", _pipe(data)]) == 0
    capfdbinary.readouterr()
    real = Zram.read_into  # what read_to reads each chunk with
    calls = [0]

    def signalled(self, offset, out, **kw):
        calls[0] += 1
        if calls[0] == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, offset, out, **kw)

    monkeypatch.setattr(Zram, "read_into", signalled)
    rc, out, err = run(capfdbinary, "read", "zram0", "--length", str(len(data)))
    monkeypatch.setattr(Zram, "read_into", real)
    copied = 2 * store.READ_CHUNK
    assert rc == 130
    assert err == f"zramctl: zram0: read: interrupted ({copied} of {len(data)} bytes copied)\n"
    assert out == data[:copied]
