"""Seeded random corruption of real images: detected in words, or harmless; never wrong data.

Each case takes one of a few real images, damages it (bit flips, a truncation,
a zeroed or garbage block, garbage appended, a garbage log) and opens it:
either the open and a full read succeed with exactly the right content and
counters, or a ZramError with a detail in words comes out.  Any other
exception, or different data, fails the test.  Every tenth case also runs
``check``, which must return problems as words without raising.
"""

from __future__ import annotations

import errno
import random
from dataclasses import dataclass
from pathlib import Path

import pytest

from zramctl.errors import ZramError
from zramctl.image.check import device_state
from zramctl.kernel import sysfs
from zramctl.store import Store, check_image

PAGE = 4096
CASES = 2400
KINDS = ("flip", "flip-meta", "truncate", "zero-block", "garbage-block", "append", "log")


@dataclass
class Sample:
    name: str
    image: bytes
    state: dict[str, object]
    content: bytes


def _pages(rnd: random.Random, n: int) -> bytes:
    out = bytearray()
    for i in range(n):
        kind = i % 5
        if kind == 0:
            out += rnd.randbytes(PAGE)
        elif kind == 1:
            out += bytes([i]) * PAGE
        else:
            out += (rnd.randbytes(rnd.randrange(16, 2500)) + bytes(PAGE))[:PAGE]
    return bytes(out)


def _make(root: Path, name: str, profile: str, algorithm: str, work: list[tuple[str, int, int]]) -> Sample:
    store = Store(root / name)
    dev = store.hot_add()
    rnd = random.Random(name)
    with store.open(dev, write=True) as h:
        z = h.zram
        sysfs.store(z, "compat", profile)
        if profile != "3.11":  # the 2013 driver has lzo only, and no comp_algorithm file
            sysfs.store(z, "comp_algorithm", algorithm)
        sysfs.store(z, "disksize", "512K")
    for op, first, count in work:
        with store.open(dev, write=True) as h:
            if op == "write":
                h.zram.write(first * PAGE, _pages(rnd, count))
            elif op == "discard":
                h.zram.discard(first * PAGE, count * PAGE)
            elif op == "compact":
                h.zram.compact()
    with store.open(dev, write=False) as h:
        state = device_state(h.zram)
        content = h.zram.read(0, h.zram.config.disksize)
    return Sample(name, store.image_path(dev).read_bytes(), state, content)


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> list[Sample]:
    root = tmp_path_factory.mktemp("samples")
    return [
        _make(root, "modern", "6.18", "lzo", [("write", 0, 60), ("discard", 10, 8), ("write", 100, 12)]),
        _make(root, "legacy", "3.11", "lzo", [("write", 0, 50), ("discard", 0, 10)]),
        _make(root, "compacted", "6.18", "zstd", [("write", 0, 80), ("discard", 0, 40), ("compact", 0, 0)]),
        _make(root, "spread", "6.18", "lz4", [("write", 0, 10), ("write", 120, 6)]),
    ]


def _corrupt(rnd: random.Random, image: bytes, kind: str) -> tuple[bytes, bytes]:
    """(damaged image, log contents) for one case; damage aims at blocks that hold something."""
    data = bytearray(image)
    used = [b for b in range(len(data) // PAGE) if any(data[b * PAGE : (b + 1) * PAGE])]
    log = b""
    if kind == "flip":
        for _ in range(rnd.randint(1, 8)):
            bit = rnd.randrange(PAGE * 8)
            data[rnd.choice(used) * PAGE + bit // 8] ^= 1 << (bit % 8)
    elif kind == "flip-meta":
        # Aim at the header, the class area and the metadata blocks, where a flip matters most.
        blocks = [
            b for b in range(len(data) // PAGE) if b < 8 or any(data[b * PAGE + PAGE - 4 : b * PAGE + PAGE])
        ]
        b = rnd.choice(blocks)
        bit = rnd.randrange(PAGE * 8)
        data[b * PAGE + bit // 8] ^= 1 << (bit % 8)
    elif kind == "truncate":
        del data[rnd.randrange(len(data)) :]
    elif kind in ("zero-block", "garbage-block"):
        b = rnd.choice(used)
        fill = bytes(PAGE) if kind == "zero-block" else rnd.randbytes(PAGE)
        data[b * PAGE : (b + 1) * PAGE] = fill
    elif kind == "append":
        data += rnd.randbytes(rnd.randrange(1, 65536))
    elif kind == "log":
        log = rnd.randbytes(rnd.randrange(1, 10000))
        if rnd.random() < 0.5:
            log = b"ZWAL" + log
    return bytes(data), log


def test_random_corruptions(samples: list[Sample], tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.hot_add()
    img, wal = store.image_path(0), store.wal_path(0)
    outcomes = {"intact": 0, "detected": 0}
    for seed in range(CASES):
        rnd = random.Random(seed)
        sample = samples[seed % len(samples)]
        kind = KINDS[seed % len(KINDS)]
        data, log = _corrupt(rnd, sample.image, kind)
        img.write_bytes(data)
        wal.write_bytes(log)
        where = f"case {seed} ({sample.name}, {kind})"
        try:
            with store.open(0, write=False) as h:
                state = device_state(h.zram)
                content = h.zram.read(0, h.zram.config.disksize)
                for name in sysfs.attributes(h.zram):
                    sysfs.read_or_none(h.zram, name)
        except ZramError as exc:
            assert exc.detail and len(exc.detail.split()) >= 2, f"{where}: no words in {exc!r}"
            outcomes["detected"] += 1
        except Exception as exc:  # anything else is the failure under test
            raise AssertionError(f"{where}: {type(exc).__name__}: {exc}") from exc
        else:
            assert state == sample.state, f"{where}: opened with different counters or layout"
            assert content == sample.content, f"{where}: read different data"
            outcomes["intact"] += 1
        if seed % 10 == 0:
            img.write_bytes(data)
            wal.write_bytes(log)
            problems = check_image((store, 0), data=True)
            assert all(isinstance(p, str) and p for p in problems), where
    assert sum(outcomes.values()) == CASES
    assert outcomes["detected"] > CASES // 4
    print(f"corruption cases: {CASES}: {outcomes}")


def test_check_reports_damage_in_words(samples: list[Sample], tmp_path: Path) -> None:
    """A flipped byte in a page-table block: check names the block; open says EUCLEAN."""
    store = Store(tmp_path)
    store.hot_add()
    sample = samples[0]
    data = bytearray(sample.image)
    meta = [b for b in range(8, len(data) // PAGE) if any(data[b * PAGE + PAGE - 4 : b * PAGE + PAGE])]
    assert meta, "the sample has metadata blocks"
    for b in meta:
        data[b * PAGE + 100] ^= 0x40
    store.image_path(0).write_bytes(bytes(data))
    problems = check_image((store, 0))
    assert problems and "fails its checksum" in problems[0]
    assert all("checksum" in p or "skipped" in p for p in problems)
    with pytest.raises(ZramError) as info, store.open(0, write=False) as h:
        h.zram.read(0, h.zram.config.disksize)
    assert info.value.errno in (errno.EUCLEAN, errno.EIO)
    assert "checksum" in (info.value.detail or "")
