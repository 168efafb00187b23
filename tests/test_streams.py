"""Compression streams (``-t N``): the same results for any number of streams.

The whole pages of a write are compressed ahead, a batch at a time, by ``Zram.comp_streams``
streams (``-t N``; without it one per usable CPU for 6.18, one for 3.11), and stored in page
order.  The kernel's own compressors (lzo, lzo-rle, lz4) compress on native threads
(``_kcomp.StreamJob``, no more than the CPUs beside the storing thread); the others on Python
threads, or on the writing thread for one stream.

So the counters, the class tables and the image bytes must not depend on N, and a
page whose compression fails must fail exactly where it would with one stream: the pages
before it stored, the count exact, nothing after it stored.
"""

from __future__ import annotations

import errno
import os
import random
import threading
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from zramctl.cli import main as cli
from zramctl.errors import ZramError
from zramctl.image import image as image_mod
from zramctl.kernel import _kcomp, zram_drv
from zramctl.kernel.zcomp import Backend, get_backend
from zramctl.kernel.zram_drv import Zram, ZramConfig

PAGE = 4096


@pytest.fixture(autouse=True)
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of 8 pages: these small writes then span many batches, several in flight."""
    monkeypatch.setattr(zram_drv, "STREAM_BATCH", 8)


@pytest.fixture
def many_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """Eight usable CPUs: native streams then run on as many threads as -t says (up to 7)."""
    monkeypatch.setattr(zram_drv, "usable_cpus", lambda: 8)


def python_streams(backend: Backend, **changes: object) -> Backend:
    """``backend`` compressing on Python threads (or the writing thread), as zstd does."""
    return replace(backend, stream_job=None, **changes)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """One second for every run: slots record their access time, which must not tell runs apart."""
    monkeypatch.setattr(zram_drv, "wall_clock", lambda: 1_700_000_000)


def mixed(pages: int, seed: int = 10) -> bytes:
    """Pages of every kind a device stores differently: random (huge), text, zero, same-filled, half."""
    rng = random.Random(seed)
    out = []
    for i in range(pages):
        kind = rng.randrange(5)
        if kind == 0:
            out.append(rng.randbytes(PAGE))
        elif kind == 1:
            out.append(b"zram stream %d " % i * (PAGE // 16))
        elif kind == 2:
            out.append(bytes(PAGE))
        elif kind == 3:
            out.append(rng.randbytes(8) * (PAGE // 8))
        else:
            out.append(rng.randbytes(PAGE // 2) + bytes(PAGE // 2))
    return b"".join(b[:PAGE].ljust(PAGE, b"\0") for b in out)


def state(z: Zram) -> tuple:
    assert z.pool is not None
    classes = [repr(c) for c in z.pool.classes]
    return (
        asdict(z.stats),
        dict(z.table),
        z.pool.zs_get_total_pages(),
        classes,
        z.read(0, z.config.disksize),
    )


def run_writes(streams: int, algorithm: str, data: bytes) -> Zram:
    z = Zram(ZramConfig(comp_algorithm=algorithm, max_comp_streams=streams))
    z.init(len(data) + 64 * PAGE)
    z.write(0, data)
    z.write(3 * PAGE + 100, data[: 90 * PAGE + 7])  # unaligned: partial first and last pages
    z.write(PAGE, data[::-1][: 200 * PAGE])  # overwrites
    z.write(len(data) - 5, b"tail" * 40)
    return z


@pytest.mark.parametrize("algorithm", ["lzo-rle", "lz4", "zstd", "deflate"])
@pytest.mark.usefixtures("many_cpus")
def test_the_same_state_for_any_number_of_streams(algorithm: str) -> None:
    data = mixed(400)
    one = state(run_writes(1, algorithm, data))
    for streams in (2, 4):
        assert state(run_writes(streams, algorithm, data)) == one


def test_the_streams_really_run_in_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """-t 4 compresses in worker threads (so the test above compares two different paths)."""
    seen: set[str] = set()
    backend = get_backend("lzo-rle")

    def compress_pages(view):
        seen.add(threading.current_thread().name)
        return backend.compress_pages(view)

    z = Zram(ZramConfig(max_comp_streams=4))
    z.init(1 << 20)
    z._backend = python_streams(backend, compress_pages=compress_pages)
    z.write(0, mixed(256))
    assert seen and all(name.startswith("zram-stream") for name in seen)


def started_jobs(z: Zram) -> list[int]:
    """Makes ``z``'s compressor record how many threads each native stream job starts with."""
    backend = z.backend
    assert backend.stream_job is not None
    start = backend.stream_job
    threads: list[int] = []

    def stream_job(data, count, batch, slots):
        job = start(data, count, batch, slots)
        threads.append(job.threads)
        return job

    z._backend = replace(backend, stream_job=stream_job)
    return threads


@pytest.mark.parametrize(
    ("cpus", "streams", "threads"),
    [(8, 4, 4), (8, 1, 1), (3, 4, 2), (2, 2, 1), (1, 4, 1)],
)
def test_native_streams_run_on_threads_of_their_own(
    monkeypatch: pytest.MonkeyPatch, cpus: int, streams: int, threads: int
) -> None:
    """The kernel's compressors compress on ``-t`` native threads beside the writing thread, but
    never on more than the CPUs that leave it one of its own; each write's job is closed with it."""
    monkeypatch.setattr(zram_drv, "usable_cpus", lambda: cpus)
    z = Zram(ZramConfig(max_comp_streams=streams))
    z.init(4 << 20)
    jobs = started_jobs(z)
    data = mixed(1000)
    z.write(0, data)
    assert jobs == [threads]
    assert z.read(0, len(data)) == data


@pytest.mark.parametrize("streams", [1, 4])
@pytest.mark.parametrize("batch_call", [True, False])
def test_a_failing_page_stops_the_write_exactly_there(streams: int, batch_call: bool) -> None:
    """The 150th page cannot be compressed: 149 pages stored and counted, the write says so."""
    data = mixed(300)
    bad = data[149 * PAGE : 150 * PAGE]
    backend = get_backend("lzo-rle")

    def compress(page: bytes) -> bytes:
        if page == bad:
            raise ValueError("no")
        return backend.compress(page)

    z = Zram(ZramConfig(max_comp_streams=streams))
    z.init(len(data))
    z._backend = python_streams(backend, compress=compress, compress_pages=None)
    if batch_call:  # a batch call that fails falls back to one call per page
        def pages(view):
            if bad in bytes(view):
                raise ValueError("no")
            return backend.compress_pages(view)

        z._backend = replace(z._backend, compress_pages=pages)
    with pytest.raises(ZramError) as info:
        z.write(0, data)
    assert info.value.errno == errno.EIO and info.value.done == 149 * PAGE
    assert z.stats.failed_writes == 1 and z.stats.num_writes == 150
    assert z.read(0, 149 * PAGE) == data[: 149 * PAGE]
    assert sorted(z.table) == [i for i in range(149) if i in z.table] and max(z.table) < 149


def test_a_stopped_write_leaves_no_stream_running(monkeypatch: pytest.MonkeyPatch) -> None:
    """The batches still being compressed when a page fails are waited for: none outlives write()
    (they read the caller's buffer, which the caller may refill at once)."""
    monkeypatch.setattr(zram_drv, "STREAM_BATCH", 4)  # more batches in flight when it stops
    backend = get_backend("lzo-rle")
    running = [0]
    lock = threading.Lock()

    def compress_pages(view):
        with lock:
            running[0] += 1
        try:
            return backend.compress_pages(view)
        finally:
            with lock:
                running[0] -= 1

    data = mixed(400)
    z = Zram(ZramConfig(max_comp_streams=2, limit_pages=8))
    z.init(len(data))
    z._backend = python_streams(backend, compress_pages=compress_pages)
    with pytest.raises(ZramError) as info:
        z.write(0, data)
    assert info.value.errno == errno.ENOMEM
    assert running[0] == 0


@pytest.mark.parametrize("algorithm", ["lzo-rle", "lz4"])
def test_native_streams_ask_for_no_more_threads_than_a_job_takes(algorithm: str) -> None:
    """-t 999 where 1000 CPUs are usable: StreamJob starts at most STREAM_JOB_MAX_THREADS (256)
    and refuses more, so the backend asks for no more (the write does not fail)."""
    data = memoryview(bytes(300 * PAGE))  # 300 one-page batches: room for 300 threads
    start = get_backend(algorithm).stream_job
    assert start is not None
    job = start(data, 999, 1, 2)
    assert job.threads == _kcomp.STREAM_JOB_MAX_THREADS == 256
    job.close()


def test_a_stopped_write_leaves_no_native_stream_running() -> None:
    """The same for native streams: the job is closed (its threads joined) when the write stops,
    so its buffer can be changed at once."""
    backend = get_backend("lz4")
    jobs = []

    def stream_job(data, count, batch, slots):
        jobs.append(backend.stream_job(data, count, batch, slots))
        return jobs[-1]

    buf = bytearray(mixed(400))
    z = Zram(ZramConfig(comp_algorithm="lz4", max_comp_streams=3, limit_pages=8))
    z.init(len(buf))
    z._backend = replace(backend, stream_job=stream_job)
    with pytest.raises(ZramError) as info:
        z.write(0, buf)
    assert info.value.errno == errno.ENOMEM
    assert [job.threads for job in jobs] == [0]
    with pytest.raises(ValueError, match="closed"):  # its buffer let go
        jobs[0].take()


def test_image_bytes_are_the_same_for_t1_and_t4(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The whole command, through the image: `-t 1`, `-t 4` and no -t leave byte-identical images
    (once the stream count they record is set alike, by one change each) and the same stat.
    Each image gets the same identity (random otherwise: it names a backing file's owner)."""
    monkeypatch.setattr(image_mod, "new_image_id", lambda: bytes(range(1, 17)))
    monkeypatch.setattr(zram_drv, "usable_cpus", lambda: 3)  # no -t: 3 streams, a third count
    src = tmp_path / "data"
    src.write_bytes(mixed(700, seed=3))
    images = []
    for streams in (["-t", "1"], ["-t", "4"], []):
        root = tmp_path / f"root{len(images)}"
        monkeypatch.setenv("ZRAMCTL_ROOT", str(root))
        assert cli.main(["-f", "-s", "4M", *streams]) == 0
        assert cli.main(["write", "zram0", str(src)]) == 0
        assert cli.main(["write", "--offset", "12345", "zram0", str(src)]) == 0  # unaligned, overwriting
        assert cli.main(["attr", "zram0", "max_comp_streams", "2"]) == 0  # a change for both
        capsys.readouterr()
        assert cli.main(["stat", "zram0"]) == 0
        images.append(((root / "zram0.img").read_bytes(), capsys.readouterr().out))
    assert images[0] == images[1] == images[2]


def shown_streams(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[str, str]:
    """zram0's STREAMS cell and its max_comp_streams attribute (both shown without -b)."""
    capsys.readouterr()
    assert cli.main(["--raw", "-n", "-o", "STREAMS", *args, "zram0"]) == 0
    cell = capsys.readouterr().out
    assert cli.main(["attr", "zram0", "max_comp_streams"]) == 0
    return cell.strip(), capsys.readouterr().out.strip()


def test_without_t_a_6_18_device_has_one_stream_per_usable_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The kernel has one compression stream per online CPU (4.7+): a device set up without -t
    compresses with one per CPU this process may run on, and STREAMS says how many."""
    monkeypatch.setenv("ZRAMCTL_ROOT", str(tmp_path))
    assert cli.main(["-f", "-s", "4M"]) == 0
    cpus = str(len(os.sched_getaffinity(0)))
    assert shown_streams(capsys) == (cpus, cpus)


def test_the_default_follows_the_cpus_and_t_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The image records "not set", not a number: the same device opened where zramctl may use 5
    CPUs has 5 streams.  A -t number is the device's own, whatever the CPUs."""
    monkeypatch.setenv("ZRAMCTL_ROOT", str(tmp_path))
    monkeypatch.setattr(zram_drv, "usable_cpus", lambda: 3)
    assert cli.main(["-f", "-s", "4M"]) == 0
    assert shown_streams(capsys) == ("3", "3")
    monkeypatch.setattr(zram_drv, "usable_cpus", lambda: 5)
    assert shown_streams(capsys) == ("5", "5")
    assert cli.main(["zram0", "-s", "4M", "-t", "2"]) == 0
    assert shown_streams(capsys) == ("2", "2")
    assert cli.main(["attr", "zram0", "max_comp_streams", "7"]) == 0
    assert shown_streams(capsys, "-b") == ("7", "7")


def test_a_3_11_device_has_one_stream_unless_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The 2013 driver compressed into one buffer under zram->lock (and 3.15's default was 1):
    a 3.11 device has one stream, however many CPUs; -t sets its number as for 6.18."""
    monkeypatch.setenv("ZRAMCTL_ROOT", str(tmp_path))
    monkeypatch.setattr(zram_drv, "usable_cpus", lambda: 4)
    assert cli.main(["-f", "-s", "4M", "--compat", "3.11"]) == 0
    assert shown_streams(capsys) == ("1", "1")
    assert cli.main(["zram0", "-s", "4M", "--compat", "3.11", "-t", "3"]) == 0
    assert shown_streams(capsys) == ("3", "3")


@pytest.mark.parametrize(("compat", "threads"), [("6.18", 3), ("3.11", 0)])
def test_the_default_streams_are_the_ones_that_run(
    monkeypatch: pytest.MonkeyPatch, compat: str, threads: int
) -> None:
    """What STREAMS shows is what compresses: 3 worker threads for 6.18 with 3 usable CPUs, the
    writing thread alone for 3.11 (Python streams; for native ones, see the test above)."""
    monkeypatch.setattr(zram_drv, "usable_cpus", lambda: 3)
    seen: set[str] = set()
    backend = get_backend("lzo")

    def compress_pages(view):
        seen.add(threading.current_thread().name)
        return backend.compress_pages(view)

    z = Zram(ZramConfig(compat=compat, comp_algorithm="lzo"))
    z.init(1 << 20)
    z._backend = python_streams(backend, compress_pages=compress_pages)
    z.write(0, mixed(256))
    workers = {name for name in seen if name.startswith("zram-stream")}
    assert z.comp_streams == (threads or 1)
    assert (z._streams[0] if z._streams else 0) == threads
    assert bool(workers) == bool(threads) and (threads or seen == {threading.current_thread().name})
