"""Damaged allocator bytes that no checksum covers, then ``compact``, ``read`` and ``write`` through the CLI.

The 8-byte words inside the zspages' frames (an allocated slot's handle header,
a free slot's link) and the handles themselves are not covered by any checksum,
so the allocator must check them before it acts on them.  Each case damages one
word of a real image (a zspage that heads a fullness list, which is where
``zs_malloc`` allocates and compaction starts), then runs one command in a
subprocess under a timeout, and asserts:

- it ends (a hang holding the lock is the failure the timeout guards against);
- it exits 0, or 1 with one ``zramctl: zram0: ...`` line (never a traceback or
  an internal error);
- every page that read before the command reads the same after it (the write
  rewrites pages with the bytes they already hold, so nothing may change).
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from zramctl.errors import ZramError
from zramctl.image.format import BLOCK_SIZE, RECORD_FREE, RECORDS_PER_BLOCK, encode_records
from zramctl.kernel import sysfs
from zramctl.kernel.zram_drv import ZRAM_SAME
from zramctl.kernel.zsmalloc import FREE_END, NO_ZSPAGE, OBJ_ALLOCATED_TAG, OBJ_TAG_BITS
from zramctl.store import Store

PAGE = 4096
REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 60
"""Seconds a command may take before it counts as hung (they take well under one)."""
PAGES = 480


@dataclass
class Target:
    """One damageable word: the file offset of slot ``idx`` of the zspage at frame ``first``."""

    first: int
    idx: int
    offset: int
    allocated: bool
    owner: int
    """The page whose object the slot holds (allocated slots), else -1."""
    compactable: bool
    """Compaction of the zspage's class has pages to free: it will isolate this zspage."""


@dataclass
class Sample:
    image: bytes
    targets: list[Target]
    owners: dict[int, list[int]]
    """Zspage first frame -> the pages whose objects it holds."""
    pages: dict[int, bytes]
    """Every page that reads, by index."""


def _data(rnd: random.Random, n: int) -> bytes:
    """Pages of a few compressed sizes, so that several classes hold several zspages each."""
    sizes = (300, 700, 1300)
    return b"".join((rnd.randbytes(sizes[i % 3]) + bytes(PAGE))[:PAGE] for i in range(n))


def _build(root: Path, compat: str) -> Sample:
    store = Store(root)
    dev = store.hot_add()
    rnd = random.Random(compat)
    with store.open(dev, write=True) as h:
        sysfs.store(h.zram, "compat", compat)
        sysfs.store(h.zram, "disksize", f"{PAGES * PAGE}")
        h.zram.write(0, _data(rnd, PAGES))
    with store.open(dev, write=True) as h:  # holes in the zspages: partly used ones on every list
        for i in range(PAGES):
            if i // 3 % 3:  # two thirds of each class's pages
                h.zram.discard(i * PAGE, PAGE)
    targets: list[Target] = []
    owners: dict[int, list[int]] = {}
    with store.open(dev, write=False) as h:
        z = h.zram
        pool = z.pool
        assert pool is not None
        pages = {i: z.read(i * PAGE, PAGE) for i in range(PAGES)}
        for index in range(PAGES):
            entry = z.table.get(index)
            if entry is not None and not entry[0] & ZRAM_SAME:
                owners.setdefault(entry[1] >> 11, []).append(index)
        heads = {head for cls in pool.classes for head in cls.heads if head != NO_ZSPAGE}
        for first in sorted(heads):
            zspage = pool.zspages[first]
            cls = pool.classes[zspage.cls]
            for idx in range(cls.objs_per_zspage):
                off = idx * cls.size
                frame = first + (off >> 12)
                word = int.from_bytes(bytes(pool.frames.view(frame)[off & 4095 : (off & 4095) + 8]), "little")
                allocated = bool(word & OBJ_ALLOCATED_TAG) and pool.profile.handle_size > 0
                owner = word >> OBJ_TAG_BITS if allocated else -1
                place = frame * PAGE + (off & 4095)
                targets.append(Target(first, idx, place, allocated, owner, pool.zs_can_compact(cls) > 0))
    image = store.image_path(dev).read_bytes()
    return Sample(image, targets, owners, pages)


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Sample]:
    return {compat: _build(tmp_path_factory.mktemp(compat), compat) for compat in ("6.18", "3.11")}


def _damage(rnd: random.Random, sample: Sample, case: int) -> tuple[bytes, Target, str]:
    """The image with one word of one slot changed; the slot and how it was changed."""
    data = bytearray(sample.image)
    kind = ("random", "bit", "other-owner", "cycle", "to-allocated", "end-early", "untag", "far")[case % 8]
    pool = [t for t in sample.targets if t.allocated == (kind in ("other-owner", "untag", "bit", "random"))]
    target = rnd.choice(pool or sample.targets)
    word = int.from_bytes(data[target.offset : target.offset + 8], "little")
    same_zspage = [t for t in sample.targets if t.first == target.first and t.idx != target.idx]
    if kind == "random":
        new = rnd.getrandbits(64)
    elif kind == "bit":
        new = word ^ 1 << rnd.randrange(64)
    elif kind == "other-owner":  # names another stored page: compaction would move the wrong entry
        others = [p for ps in sample.owners.values() for p in ps if p != target.owner]
        new = rnd.choice(others) << OBJ_TAG_BITS | OBJ_ALLOCATED_TAG
    elif kind == "cycle":  # a free link back to itself
        new = target.idx << OBJ_TAG_BITS
    elif kind == "to-allocated":  # a free link to a slot that holds an object
        used = [t.idx for t in same_zspage if t.allocated] or [0]
        new = rnd.choice(used) << OBJ_TAG_BITS
    elif kind == "end-early":
        new = FREE_END << OBJ_TAG_BITS
    elif kind == "untag":
        new = word & ~OBJ_ALLOCATED_TAG
    else:  # a link or handle far outside the zspage
        new = rnd.choice((2047, 4095, 1 << 40, (1 << 63) - 2)) << OBJ_TAG_BITS | rnd.randrange(2)
    if new == word:
        new ^= 1 << 5
    data[target.offset : target.offset + 8] = new.to_bytes(8, "little")
    return bytes(data), target, kind


def _zramctl(root: Path, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, PYTHONPATH=str(REPO), NO_COLOR="1")
    env.pop("ZRAMCTL_ROOT", None)
    return subprocess.run(
        [sys.executable, "-m", "zramctl", "--root", str(root), *args],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=TIMEOUT,
    )


def _readable(root: Path) -> dict[int, bytes]:
    """Every page that reads without error, by index (read in-process, page by page)."""
    out: dict[int, bytes] = {}
    with Store(root).open(0, write=False) as h:
        for i in range(h.zram.config.disksize // PAGE):
            try:
                out[i] = h.zram.read(i * PAGE, PAGE)
            except ZramError:
                pass
    return out


def _one_line_error(proc: subprocess.CompletedProcess[bytes], where: str) -> str:
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode in (0, 1), f"{where}: exit {proc.returncode}: {err}"
    assert "Traceback" not in err and "internal error" not in err, f"{where}: {err}"
    if proc.returncode:
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("zramctl: zram0: "), f"{where}: {err!r}"
    return err


@pytest.mark.parametrize(
    ("compat", "verb"),
    [("6.18", "compact"), ("6.18", "write"), ("6.18", "read"), ("3.11", "write"), ("3.11", "read")],
)
def test_damaged_slot_words(samples: dict[str, Sample], tmp_path: Path, compat: str, verb: str) -> None:
    sample = samples[compat]
    outcomes: Counter[str] = Counter()
    cases = 24 if compat == "6.18" else 12
    for case in range(cases):
        rnd = random.Random(f"{compat}-{verb}-{case}")
        data, target, kind = _damage(rnd, sample, case)
        root = tmp_path / f"case{case}"
        root.mkdir()
        Store(root).hot_add()
        (root / "zram0.img").write_bytes(data)
        where = f"{compat} {verb} case {case} ({kind}, slot {target.idx}, zspage at frame {target.first})"
        before = _readable(root)
        # 3.11 keeps no handle in an object: its allocated slot's first word is the page's data.
        assert all(sample.pages[i] == page for i, page in before.items()), f"{where}: wrong data"
        assert len(before) >= PAGES - (compat == "3.11"), f"{where}: a slot word changed what reads"
        if verb == "compact":
            proc = _zramctl(root, "compact", "zram0")
        elif verb == "read":
            proc = _zramctl(root, "read", "zram0")
            if proc.returncode == 0:
                assert proc.stdout == b"".join(sample.pages[i] for i in range(PAGES)), f"{where}: wrong data"
        else:  # rewrite, with the bytes they hold, the pages around the damaged zspage
            pages = sample.owners.get(target.first, [0])
            lo, hi = min(pages), max(pages) + 1
            proc = _zramctl(
                root,
                "write",
                "zram0",
                "--offset",
                str(lo * PAGE),
                stdin=b"".join(sample.pages[i] for i in range(lo, hi)),
            )
        err = _one_line_error(proc, where)
        outcomes["detected" if proc.returncode else "ok"] += 1
        after = _readable(root)
        lost = sorted(i for i, page in before.items() if after.get(i) != page)
        assert not lost, f"{where}: pages {lost[:10]} read differently after {verb} ({err.strip()})"
        shutil.rmtree(root)
    assert sum(outcomes.values()) == cases
    print(f"{compat} {verb}: {dict(outcomes)}")


def test_compact_names_a_handle_that_names_no_page(samples: dict[str, Sample], tmp_path: Path) -> None:
    """A slot's handle names a page stored elsewhere: compact refuses, in words, and keeps everything."""
    sample = samples["6.18"]
    target = next(t for t in sample.targets if t.allocated and t.compactable)
    other = next(p for ps in sample.owners.values() for p in ps if p != target.owner)
    data = bytearray(sample.image)
    data[target.offset : target.offset + 8] = (other << OBJ_TAG_BITS | OBJ_ALLOCATED_TAG).to_bytes(
        8, "little"
    )
    Store(tmp_path).hot_add()
    (tmp_path / "zram0.img").write_bytes(bytes(data))
    proc = _zramctl(tmp_path, "compact", "zram0")
    err = proc.stderr.decode()
    assert proc.returncode == 1
    assert err.startswith("zramctl: zram0: compact: Structure needs cleaning (zspage at frame ")
    assert f"slot {target.idx} holds handle {other << 1 | 1:#x} that names no page stored there" in err
    assert "run zramctl check" in err
    assert _readable(tmp_path) == sample.pages
    proc = _zramctl(tmp_path, "check", "zram0")
    assert proc.returncode == 1 and f"slot {target.idx}" in proc.stdout.decode() + proc.stderr.decode()


def test_a_missing_zspage_is_named(samples: dict[str, Sample], tmp_path: Path) -> None:
    """A zspage record made free (and sealed again, as a bug would): reading its pages says so."""
    sample = samples["6.18"]
    store = Store(tmp_path)
    store.hot_add()
    path = store.image_path(0)
    path.write_bytes(sample.image)
    first = max(sample.owners)
    victim = sample.owners[first][0]
    with store.open(0, write=False) as h:
        state = h.image.state
        n, i = divmod(first // 8, RECORDS_PER_BLOCK)
        leaf = state.zspages._leaf(n, False)
        slots = list(leaf.slots)
        slots[i] = RECORD_FREE
        block = encode_records(leaf.block, slots, [c.huge for c in h.zram.pool.classes])
    with open(path, "r+b") as f:
        f.seek(leaf.block * BLOCK_SIZE)
        f.write(block)
    proc = _zramctl(tmp_path, "read", "zram0", "--offset", str(victim * PAGE), "--length", str(PAGE))
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert err.startswith(f"zramctl: zram0: read: Structure needs cleaning (page {victim}: ")
    assert f"the zspage holding its object (frame {first}) is missing" in err
    assert "open:" not in err


def test_a_compaction_stopped_midway_is_never_committed(samples: dict[str, Sample], tmp_path: Path) -> None:
    """Even a caller that commits after the failure commits nothing: the image keeps its last commit."""
    sample = samples["6.18"]
    data = bytearray(sample.image)
    for t in sample.targets:  # every allocated slot of every list head names a page stored elsewhere
        if t.allocated and t.compactable:
            data[t.offset : t.offset + 8] = (10_000 << OBJ_TAG_BITS | OBJ_ALLOCATED_TAG).to_bytes(8, "little")
    store = Store(tmp_path)
    store.hot_add()
    path = store.image_path(0)
    path.write_bytes(bytes(data))
    with pytest.raises(ZramError) as closing, store.open(0, write=True) as h:
        with pytest.raises(ZramError) as info:
            h.zram.compact()
        assert info.value.errno == errno.EUCLEAN and info.value.what == "compact"
        with pytest.raises(ZramError) as info:
            h.commit()
        assert info.value.errno == errno.EUCLEAN and "nothing more was committed" in str(info.value.detail)
    assert closing.value.what == "commit"  # the commit that closing a writer makes refuses too
    assert path.read_bytes() == bytes(data)
    assert _readable(tmp_path) == sample.pages


class _Hung(Exception):
    pass


def _slot_offsets(root: Path) -> list[int]:
    """File offsets of every slot word of every non-huge zspage (not only list heads)."""
    out = []
    with Store(root).open(0, write=False) as h:
        pool = h.zram.pool
        assert pool is not None
        for first in list(pool.zspages):
            cls = pool.classes[pool.zspages[first].cls]
            if not cls.huge:
                for idx in range(cls.objs_per_zspage):
                    off = idx * cls.size
                    out.append((first + (off >> 12)) * PAGE + (off & 4095))
    return out


def _random_steps(rnd: random.Random, store: Store, compat: str, expect: dict[int, bytes]) -> Counter[str]:
    """A few random writes, discards, compactions and reads, each committed as the verbs do.

    ``expect`` is kept up to date: a write that fails keeps (and commits) the
    pages before the failing one, and the page it failed on is either; a failed
    discard or compaction commits nothing.
    """
    seen: Counter[str] = Counter()
    for _ in range(rnd.randrange(1, 6)):
        op = rnd.choice(("write", "write", "discard", "compact", "read"))
        first, n = rnd.randrange(PAGES - 10), rnd.randrange(1, 10)
        pages = [
            (rnd.randbytes(rnd.choice((100, 300, 700, 1300, 3000))) + bytes(PAGE))[:PAGE] for _ in range(n)
        ]
        with store.open(0, write=True) as h:
            try:
                if op == "write":
                    h.zram.write(first * PAGE, b"".join(pages))
                    expect.update((first + i, p) for i, p in enumerate(pages))
                elif op == "discard":
                    h.zram.discard(first * PAGE, n * PAGE)
                    expect.update((first + i, bytes(PAGE)) for i in range(n))
                elif op == "compact" and compat == "6.18":
                    h.zram.compact()
                elif op == "read":
                    h.zram.read(0, h.zram.config.disksize)
                seen[f"{op} ok"] += 1
            except ZramError as exc:
                seen[f"{op} refused"] += 1
                if op == "write":
                    done = exc.done // PAGE
                    expect.update((first + i, pages[i]) for i in range(done))
                    expect.pop(first + done, None)
                    try:
                        h.commit()  # as zramctl write does: what was stored stays stored
                    except ZramError:
                        for i in range(done):  # nothing was committed after all
                            expect.pop(first + i, None)
                h.close()  # a failed command commits nothing more
    return seen


def test_random_damage_then_random_commands(samples: dict[str, Sample], tmp_path: Path) -> None:
    """1-5 damaged words anywhere, then random commands in-process: no hang, no other error, nothing lost."""
    outcomes: Counter[str] = Counter()

    def hung(*_: object) -> None:
        raise _Hung

    old = signal.signal(signal.SIGALRM, hung)
    try:
        for seed in range(120):
            rnd = random.Random(seed)
            compat = "3.11" if seed % 3 == 0 else "6.18"
            sample = samples[compat]
            root = tmp_path / f"seed{seed}"
            root.mkdir()
            Store(root).hot_add()
            (root / "zram0.img").write_bytes(sample.image)
            data = bytearray(sample.image)
            offsets = _slot_offsets(root)
            for _ in range(rnd.choice((1, 1, 2, 5))):
                at = rnd.choice(offsets)
                word = int.from_bytes(data[at : at + 8], "little")
                new = rnd.choice(
                    (rnd.getrandbits(64), word ^ 1 << rnd.randrange(64), rnd.randrange(64) << OBJ_TAG_BITS)
                )
                data[at : at + 8] = new.to_bytes(8, "little")
            (root / "zram0.img").write_bytes(bytes(data))
            expect = _readable(root)
            signal.alarm(TIMEOUT)
            try:
                outcomes += _random_steps(rnd, Store(root), compat, expect)
            except _Hung:
                raise AssertionError(f"seed {seed}: a command ran for {TIMEOUT} s") from None
            finally:
                signal.alarm(0)
            after = _readable(root)
            lost = sorted(i for i, page in expect.items() if after.get(i) != page)
            assert not lost, f"seed {seed} ({compat}): pages {lost[:10]} lost"
            shutil.rmtree(root)
    finally:
        signal.signal(signal.SIGALRM, old)
    assert outcomes["write refused"] + outcomes["compact refused"] > 0  # the damage was met
    print(dict(outcomes))
