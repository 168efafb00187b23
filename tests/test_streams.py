"""Compression streams (``-t N``): the same results for any number of streams.

The whole pages of a write are compressed ahead, a batch at a time, by ``max_comp_streams``
threads, and stored in page order.  So the counters, the class tables and the image bytes
must not depend on N, and a page whose compression fails must fail exactly where it would
with one stream: the pages before it stored, the count exact, nothing after it stored.
"""

from __future__ import annotations

import errno
import random
import threading
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from zramctl.cli import main as cli
from zramctl.errors import ZramError
from zramctl.image import image as image_mod
from zramctl.kernel import zram_drv
from zramctl.kernel.zcomp import get_backend
from zramctl.kernel.zram_drv import Zram, ZramConfig

PAGE = 4096


@pytest.fixture(autouse=True)
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of 8 pages: these small writes then span many batches, several in flight."""
    monkeypatch.setattr(zram_drv, "STREAM_BATCH", 8)


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
    z._backend = replace(backend, compress_pages=compress_pages)
    z.write(0, mixed(256))
    assert seen and all(name.startswith("zram-stream") for name in seen)


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
    z._backend = replace(backend, compress=compress, compress_pages=None)
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
    z._backend = replace(backend, compress_pages=compress_pages)
    with pytest.raises(ZramError) as info:
        z.write(0, data)
    assert info.value.errno == errno.ENOMEM
    assert running[0] == 0


def test_image_bytes_are_the_same_for_t1_and_t4(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The whole command, through the image: `-t 1` and `-t 4` leave byte-identical images
    (once the stream count they record is set alike, by one change each) and the same stat.
    Each image gets the same identity (random otherwise: it names a backing file's owner)."""
    monkeypatch.setattr(image_mod, "new_image_id", lambda: bytes(range(1, 17)))
    src = tmp_path / "data"
    src.write_bytes(mixed(700, seed=3))
    images = []
    for streams in ("1", "4"):
        root = tmp_path / f"root{streams}"
        monkeypatch.setenv("ZRAMCTL_ROOT", str(root))
        assert cli.main(["-f", "-s", "4M", "-t", streams]) == 0
        assert cli.main(["write", "zram0", str(src)]) == 0
        assert cli.main(["write", "--offset", "12345", "zram0", str(src)]) == 0  # unaligned, overwriting
        assert cli.main(["attr", "zram0", "max_comp_streams", "2"]) == 0  # a change for both
        capsys.readouterr()
        assert cli.main(["stat", "zram0"]) == 0
        images.append(((root / "zram0.img").read_bytes(), capsys.readouterr().out))
    assert images[0] == images[1]
