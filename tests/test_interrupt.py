"""Ctrl-C at random points during 100 writes: the image is always a clean commit, and the count
the message reports is exact.

Each trial runs the installed command on one device, sends SIGINT after a random delay (from the
moment the command has the device open, so that the signal lands anywhere in the write: the
wait for a pipe's data, taking the lock, the pages, the commits, the end) and then checks, in
process, that

- ``check --data`` finds nothing wrong;
- the device holds, from the offset, exactly the first N bytes of the input, where N is what the
  message says (all of it when the command finished first, none when it stopped before writing),
  and everywhere else exactly what it held before.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from zramctl.store import Store, check_image

ZRAMCTL = str(Path(sys.executable).with_name("zramctl"))
TRIALS = 100
DISKSIZE = 4 << 20
MESSAGE = re.compile(
    rb"zramctl: zram0: write: interrupted \((\d+)(?: of (\d+))? bytes written and committed\)\n"
)  # a pipe's length is not known: "N bytes", a file's is: "N of M bytes"


def _data(rng: random.Random, length: int) -> bytes:
    """A mix of what a device sees: text-like runs, random bytes, zero and same-filled pages."""
    parts = []
    size = 0
    while size < length:
        kind = rng.randrange(4)
        n = rng.randrange(1, 64) * 1024
        if kind == 0:
            words = [rng.choice((b"page", b"zram", b"alloc", b"swap", b"lz", b"\n")) for _ in range(n // 4)]
            part = b" ".join(words)[:n]
        elif kind == 1:
            part = rng.randbytes(n)
        elif kind == 2:
            part = bytes(n)
        else:
            part = rng.randbytes(8) * (n // 8)
        parts.append(part)
        size += len(part)
    return b"".join(parts)[:length]


def _wait_until_open(proc: subprocess.Popen, image: Path, deadline: float) -> None:
    """Until the command has opened the image (it is past Python's start-up, in our code)."""
    fds = Path(f"/proc/{proc.pid}/fd")
    target = str(image)
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if any(os.readlink(fd) == target for fd in fds.iterdir()):
                return
        except OSError:
            pass
        time.sleep(0.001)


def _feed(pipe, data: bytes) -> None:
    """Write the input as a pipeline would; the command may stop reading it (Ctrl-C)."""
    try:
        pipe.write(data)
        pipe.close()
    except (BrokenPipeError, ValueError):
        pass


def _device(store: Store) -> bytes:
    with store.open(0, write=False) as handle:
        return handle.zram.read(0, DISKSIZE)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_ctrl_c_at_random_points_during_100_writes(tmp_path):
    root = tmp_path / "root"
    env = dict(os.environ, ZRAMCTL_ROOT=str(root))
    subprocess.run([ZRAMCTL, "-f", "-s", str(DISKSIZE)], env=env, check=True, capture_output=True)
    store = Store(root)
    image = store.image_path(0)
    rng = random.Random(7)
    expected = bytearray(DISKSIZE)
    outcomes = {"finished": 0, "before writing": 0, "midway": 0}
    window = 0.1
    """Longest delay after the open; it adapts to this machine: a write that finished first
    shortens it, one stopped before writing lengthens it."""
    for trial in range(TRIALS):
        length = rng.randrange(1, DISKSIZE // 2)
        offset = rng.choice((0, rng.randrange(DISKSIZE - length), rng.randrange(DISKSIZE // 4096) * 4096))
        offset = min(offset, DISKSIZE - length)
        data = _data(rng, length)
        piped = trial % 5 == 0  # a pipe is streamed: its length is not known, nor said
        src = tmp_path / "data"
        src.write_bytes(data)
        args = [ZRAMCTL, "write", "zram0", "--offset", str(offset)] + ([] if piped else [str(src)])
        proc = subprocess.Popen(
            args, env=env, stdin=subprocess.PIPE if piped else subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        feeder = threading.Thread(target=_feed, args=(proc.stdin, data)) if piped else None
        if feeder is not None:
            feeder.start()
        _wait_until_open(proc, image, time.monotonic() + 30)
        time.sleep(rng.uniform(0, window))
        proc.send_signal(signal.SIGINT)
        err = proc.stderr.read()
        proc.wait(timeout=120)
        if feeder is not None:
            feeder.join(timeout=120)
        where = f"trial {trial}: offset {offset} length {length} piped {piped}: rc {proc.returncode} {err!r}"
        if proc.returncode == 0:
            assert err == b"", where
            kept = length
            outcomes["finished"] += 1
            window *= 0.8
        else:
            assert proc.returncode == 130, where
            m = MESSAGE.fullmatch(err)
            if err == b"":
                kept = 0
                outcomes["before writing"] += 1
                window *= 1.25
            else:
                assert m is not None and (m.group(2) is None if piped else int(m.group(2)) == length), where
                kept = int(m.group(1))
                outcomes["midway"] += 1
        expected[offset : offset + kept] = data[:kept]
        assert check_image(store, 0, data=True) == [], where
        assert _device(store) == expected, where
    # The delays must have reached into the writes, not only before and after them.
    assert outcomes["midway"] >= TRIALS // 3, outcomes


# --- interrupts.Deferred itself ---------------------------------------------------------------


def test_deferred_records_and_puts_the_handlers_back():
    from zramctl.interrupts import Deferred

    before = signal.getsignal(signal.SIGINT)
    with Deferred() as signals:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        assert signals.received == signal.SIGINT  # the first one
    assert signal.getsignal(signal.SIGINT) is before
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_deferred_allowed_stops_at_once():
    from zramctl.interrupts import Deferred, Interrupted

    with Deferred() as signals:
        with pytest.raises(Interrupted) as info:
            with signals.allowed():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # not reached: the signal interrupts the sleep
        assert info.value.signum == signal.SIGTERM
        with pytest.raises(Interrupted):
            with signals.allowed():  # one already received stops it before it starts
                pass
        with signals.allowed(stop_now=False):
            pass


def test_deferred_redelivers_to_the_outer_handler():
    from zramctl.interrupts import Deferred

    with Deferred() as outer:
        with Deferred(redeliver=True) as inner:
            os.kill(os.getpid(), signal.SIGHUP)
            assert outer.received is None  # held by the inner section until it ends
        assert inner.received == signal.SIGHUP and outer.received == signal.SIGHUP
    with pytest.raises(KeyboardInterrupt):  # Python's own handler, once the section is complete
        with Deferred(redeliver=True):
            os.kill(os.getpid(), signal.SIGINT)


def test_deferred_leaves_an_ignored_signal_ignored():
    from zramctl.interrupts import Deferred

    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with Deferred() as signals:
            os.kill(os.getpid(), signal.SIGHUP)
            assert signals.received is None and signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_the_signal_points_benchmark_runs(monkeypatch, tmp_path):
    """benchmarks/signal_points.py (the cost of looking for a signal every piece) keeps working."""
    monkeypatch.setenv("ZRAMCTL_ROOT", str(tmp_path))  # it sets the variable: put back afterwards
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    try:
        import signal_points
    finally:
        sys.path.pop(0)
    from zramctl.cli import verbs

    piece = verbs.PIECE
    best = signal_points.run(1 << 20, 1)
    assert set(best) == {verbs.CHUNK, piece} and all(t > 0 for t in best.values())
    assert verbs.PIECE == piece
