"""O(work): overwriting a full device, and discarding or resetting a huge one, counted (never timed).

The small versions of ``benchmarks/overwrite.py``.  Instead of wall time they
count what the image looks at, which does not depend on the machine's load:

- overwrite: zspage-record lookups (``ZsMap.slot``: the extent map) while 2 MiB
  of random data is written over a device holding 32 MiB, beside the same write
  on an empty device.  A scan from free_hint per allocation made this grow with
  what the device holds (20x at 32 MiB); the free-extent heap keeps it near the
  empty device's;
- discard: page-table lookups while a whole 4 GiB and a whole 16 TiB device,
  each holding a few pages, are discarded: a handful per stored page, whatever
  the size (the old walk asked for every page index of the range);
- reset of a 16 TiB device reads no leaf at all.
"""

from __future__ import annotations

import importlib.util
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from zramctl.image import maps as image_maps
from zramctl.kernel import sysfs
from zramctl.store import Store

PAGE = 4096


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Counts of record-slot and page-table lookups made through the image's maps."""
    seen: Counter[str] = Counter()
    slot, get, pop = image_maps.ZsMap.slot, image_maps.TableMap.get, image_maps.TableMap.pop

    def counted_slot(self: image_maps.ZsMap, extent: int) -> object:
        seen["record"] += 1
        return slot(self, extent)

    def counted_get(self: image_maps.TableMap, index: int, default: object = None) -> object:
        seen["table"] += 1
        return get(self, index, default)  # type: ignore[arg-type]

    def counted_pop(self: image_maps.TableMap, index: int, *default: object) -> object:
        seen["table"] += 1
        return pop(self, index, *default)  # type: ignore[arg-type]

    monkeypatch.setattr(image_maps.ZsMap, "slot", counted_slot)
    monkeypatch.setattr(image_maps.TableMap, "get", counted_get)
    monkeypatch.setattr(image_maps.TableMap, "pop", counted_pop)
    yield seen


def compressible(pages: int) -> bytes:
    rnd = random.Random(7)
    return b"".join((rnd.randbytes(rnd.randrange(16, 2500)) + bytes(PAGE))[:PAGE] for _ in range(pages))


def new_device(store: Store, size: str, data: bytes = b"", at: tuple[int, ...] = (0,)) -> int:
    dev = store.hot_add()
    with store.open(dev, write=True) as h:
        sysfs.store(h.zram, "disksize", size)
        for offset in at:
            if data:
                h.zram.write(offset if offset >= 0 else h.zram.config.disksize + offset, data)
    return dev


def test_overwriting_a_full_device_looks_at_few_more_records(tmp_path: Path, lookups: Counter[str]) -> None:
    store = Store(tmp_path)
    empty = new_device(store, "32M")
    full = new_device(store, "32M", compressible(32 * 256))
    noise = random.Random(3).randbytes(2 << 20)
    counts = {}
    for name, dev in (("empty", empty), ("full", full)):
        lookups.clear()
        with store.open(dev, write=True) as h:
            h.zram.write(0, noise)
            h.commit()
            state = h.image.state
            assert state.work.extents_scanned <= state.extent_count  # each record at most once per open
        counts[name] = lookups["record"]
    assert counts["empty"] > 0
    assert counts["full"] <= 3 * counts["empty"], counts
    with store.open(full, write=False) as h:
        assert h.zram.read(0, len(noise)) == noise


@pytest.mark.parametrize("size", ["4G", "16T"])
def test_whole_device_discard_looks_only_at_what_is_stored(
    tmp_path: Path, lookups: Counter[str], size: str
) -> None:
    store = Store(tmp_path)
    data = compressible(64)
    dev = new_device(store, size, data, at=(0, -len(data)))
    with store.open(dev, write=True) as h:
        stored = h.zram.stored_pages()
        assert stored == 128
        lookups.clear()
        whole = h.zram.config.disksize
        assert h.zram.discard(0, whole) == whole // PAGE
        assert h.zram.stored_pages() == 0 and h.zram.stats.notify_free == whole // PAGE
        assert lookups["table"] <= 4 * stored, lookups
        assert h.image.state.work.leaves_read <= 8
    with store.open(dev, write=False) as h:
        assert h.zram.read(0, len(data)) == bytes(len(data))
        assert h.zram.mem_used_pages() == 0


def test_reset_of_a_huge_device_reads_no_leaf(tmp_path: Path) -> None:
    store = Store(tmp_path)
    dev = new_device(store, "16T", compressible(64), at=(0, -64 * PAGE))
    with store.open(dev, write=True) as h:
        sysfs.store(h.zram, "reset", "1")
        assert h.image.state.work.leaves_read == 0
    with store.open(dev, write=False) as h:
        assert not h.zram.initialized


def test_the_benchmark_runs_small(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/overwrite.py is not part of the suite, but it must keep working."""
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "overwrite.py"
    spec = importlib.util.spec_from_file_location("bench_overwrite", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = ["--full", "8M", "--write", "1M", "--huge", "64G", "--runs", "1", "--keep", str(tmp_path)]
    assert bench.main(args) == 0
    out = capsys.readouterr().out
    assert "overwrite 1 MiB random" in out and "whole-device discard" in out and "ratio" in out
