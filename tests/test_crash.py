"""Crash injection: SIGKILL at every durable point of a commit, then open and compare.

Each scenario starts from a committed image, runs some steps (each followed by
a commit) in a forked child with ``crash_at = N``, and the child kills itself
at its N-th durable point (a torn write: half the bytes, then SIGKILL).  For
every N up to the last point of the scenario the parent then opens the
device, runs ``check`` and demands exactly the state before or after the
commit that was in progress: counters, allocator layout and bytes.  Where the
crash left a complete log, recovery itself is crashed at each of its points.

Where a commit writes frames in place ahead of its COMMIT record (io.Ahead),
a crash before that record must leave those blocks holes again (or past the
end of the file), as zram-image(5) says a free extent is: the raw file is
checked with SEEK_DATA after the reopen.  The ``ahead-*`` scenarios lower
AHEAD_MIN_BLOCKS so that small commits do it too, and demand that some crash
fell after frames were written ahead and before their COMMIT record.
(Blocks a crashed commit only reserved with posix_fallocate are not checked:
they read as zeros, and ext4 calls them data once they are in the page cache.)
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from zramctl.image import image as image_mod
from zramctl.image.check import device_state
from zramctl.image.io import hole_ranges, read_intent, read_log, wal_pending
from zramctl.kernel import sysfs, zram_drv
from zramctl.kernel.zram_drv import ZRAM_COMP_PRIORITY_SHIFT, Zram
from zramctl.store import Store, check_image

PAGE = 4096
DISK = 4 << 20
Step = Callable[[Zram, bytearray], None]
NOW = 1_800_000_000
"""The clock of every device here: a slot's ac_time must not depend on when a child ran."""


BACKING: list[Path] = []
"""The backing file of the writeback scenarios (one fixed path: the image records it); each
root directory keeps the backing file's bytes that go with it in SAVED (``save``/``restore``)."""
SAVED = "backing.saved"
BACKING_PAGES = 48


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(zram_drv, "wall_clock", lambda: NOW)
    monkeypatch.setattr(sys.modules[__name__], "BACKING", [tmp_path / "backing.img"])


def save(root: Path) -> None:
    """Keep the backing file's bytes with ``root`` (a crash leaves both as they are)."""
    if BACKING and BACKING[0].exists():
        shutil.copyfile(BACKING[0], root / SAVED)


def restore(root: Path) -> None:
    if (root / SAVED).exists():
        shutil.copyfile(root / SAVED, BACKING[0])


def page(seed: int, kind: str) -> bytes:
    """A deterministic page: compressible, incompressible (huge), or same-filled."""
    rnd = random.Random(seed)
    if kind == "same":
        return bytes([seed % 251]) * PAGE
    if kind == "huge":
        return rnd.randbytes(PAGE)
    if kind == "even":  # the same compressed size, give or take a few bytes, whatever the compressor
        return (rnd.randbytes(500) + bytes(PAGE))[:PAGE]
    cut = rnd.randrange(64, 3000)
    return (rnd.randbytes(cut) + bytes(PAGE))[:PAGE]


MIXED = ("text", "text", "huge", "same")


def write_pages(first: int, count: int, seed: int, kinds: tuple[str, ...] = MIXED) -> Step:
    def step(z: Zram, model: bytearray) -> None:
        for i in range(count):
            data = page(seed + i, kinds[(seed + i) % len(kinds)])
            z.write((first + i) * PAGE, data)
            model[(first + i) * PAGE : (first + i + 1) * PAGE] = data

    return step


def discard(first: int, count: int) -> Step:
    def step(z: Zram, model: bytearray) -> None:
        z.discard(first * PAGE, count * PAGE)
        model[first * PAGE : (first + count) * PAGE] = bytes(count * PAGE)

    return step


def compact(z: Zram, model: bytearray) -> None:
    assert z.compact() > 0, "the scenario left compaction nothing to do"


def reset(z: Zram, model: bytearray) -> None:
    sysfs.store(z, "reset", "1")
    model[:] = bytes(len(model))


def init(profile: str) -> Step:
    def step(z: Zram, model: bytearray) -> None:
        sysfs.store(z, "compat", profile)
        sysfs.store(z, "disksize", str(DISK))

    return step


def init_pp(primary: str = "lzo-rle", secondary: str | None = None, backing: bool = True) -> Step:
    """A 6.18 device with a backing file and a recompression algorithm, set up."""

    def step(z: Zram, model: bytearray) -> None:
        sysfs.store(z, "compat", "6.18")
        sysfs.store(z, "comp_algorithm", primary)
        if backing:
            path = BACKING[0]
            if not path.exists():
                path.write_bytes(bytes(BACKING_PAGES * PAGE))
            sysfs.store(z, "backing_dev", str(path))
        if secondary:
            sysfs.store(z, "recomp_algorithm", f"algo={secondary}")
        sysfs.store(z, "disksize", str(DISK))

    return step


def attr(name: str, value: str) -> Step:
    """A sysfs store, as ``zramctl attr`` does it."""

    def step(z: Zram, model: bytearray) -> None:
        sysfs.store(z, name, value)

    return step


def expect(what: str, holds: Callable[[Zram], bool]) -> Step:
    """The scenario did what it is about (a reference run fails loudly otherwise)."""

    def step(z: Zram, model: bytearray) -> None:
        assert holds(z), what

    return step


def steps(*parts: Step) -> Step:
    """Several steps in one transaction."""

    def step(z: Zram, model: bytearray) -> None:
        for part in parts:
            part(z, model)

    return step


def backing_file(z: Zram, model: bytearray) -> None:
    """A fresh backing file (zeros), kept with the root from the setup on (``save``)."""
    BACKING[0].write_bytes(bytes(BACKING_PAGES * PAGE))


def dictionary(z: Zram, model: bytearray) -> None:
    """zstd with a dictionary (kept in the image), then pages compressed with it."""
    path = BACKING[0].with_name("dict")
    path.write_bytes(b"".join(page(900 + i, "text")[:300] for i in range(20)))
    sysfs.store(z, "compat", "6.18")
    sysfs.store(z, "comp_algorithm", "zstd")
    sysfs.store(z, "algorithm_params", f"dict={path} level=5")


@dataclass
class Scenario:
    name: str
    setup: list[Step]
    """Committed before the crash loop starts."""
    steps: list[Step]
    """Each followed by a commit, crashed at every durable point."""
    ahead_min: int | None = None
    """AHEAD_MIN_BLOCKS for the run (None: the default), and a crash must fall between the
    frames written ahead and the COMMIT record."""


def fragmented(z: Zram, model: bytearray) -> None:
    """Many objects of one size class, every other one freed: compaction has work to do."""
    for i in range(96):
        write_pages(i, 1, 1000 + i, ("even",))(z, model)
    for i in range(0, 96, 2):
        discard(i, 1)(z, model)


def spread(seed: int) -> Step:
    """Pages far apart: several page-table leaves under a pointer block."""

    def step(z: Zram, model: bytearray) -> None:
        for i, index in enumerate((0, 341, 700, 1023)):
            write_pages(index, 1, seed + i)(z, model)

    return step


WB_IDLE = attr("writeback", "idle")
WROTE_BACK = expect("pages were written back", lambda z: z.stats.bd_count > 0)
RECOMPRESSED = expect(
    "pages were recompressed",
    lambda z: any(f >> ZRAM_COMP_PRIORITY_SHIFT & 3 for f, _, _, _ in z.table.values()),
)

SCENARIOS = [
    Scenario("init", [], [init("6.18")]),
    Scenario("write", [init("6.18")], [write_pages(0, 12, 1)]),
    Scenario("overwrite", [init("6.18"), write_pages(0, 40, 2)], [write_pages(10, 16, 50)]),
    Scenario(
        "overwrite-kinds", [init("6.18"), write_pages(0, 16, 60)], [write_pages(0, 16, 61, MIXED[::-1])]
    ),
    Scenario("discard", [init("6.18"), write_pages(0, 40, 3)], [discard(5, 24)]),
    Scenario("discard-all", [init("6.18"), write_pages(0, 30, 12)], [discard(0, 1024)]),
    Scenario("compact", [init("6.18"), fragmented], [compact]),
    Scenario("reset", [init("6.18"), write_pages(0, 30, 4)], [reset]),
    Scenario(
        "reset-reinit", [init("6.18"), write_pages(0, 20, 5)], [reset, init("3.11"), write_pages(0, 6, 6)]
    ),
    Scenario(
        "long-write", [init("6.18")], [write_pages(0, 6, 7), write_pages(6, 6, 8), write_pages(3, 6, 9)]
    ),
    Scenario("spread", [init("6.18"), write_pages(0, 8, 13)], [spread(14), discard(330, 20)]),
    Scenario("legacy", [init("3.11"), write_pages(0, 30, 10)], [write_pages(20, 10, 11), discard(0, 12)]),
    Scenario(
        "writeback",
        [init_pp(), write_pages(0, 24, 70)],
        [attr("idle", "all"), steps(WB_IDLE, WROTE_BACK), write_pages(0, 6, 71)],
    ),
    Scenario(
        # Pages written back are overwritten, then others written back in the same transaction:
        # the blocks freed must not be reused before the commit (the last commit names them).
        "writeback-reuse",
        [init_pp(), write_pages(0, 24, 72), attr("idle", "all"), WB_IDLE, WROTE_BACK],
        [
            steps(write_pages(0, 10, 73), write_pages(30, 10, 74), attr("idle", "all"), WB_IDLE, WROTE_BACK),
            steps(discard(2, 4), attr("writeback", "page_indexes=30-39")),
        ],
    ),
    Scenario(
        "recompress",
        [init_pp("lzo-rle", "zstd", backing=False), write_pages(0, 24, 75, ("even", "text", "huge"))],
        [
            attr("idle", "all"),
            steps(attr("recompress", "type=idle"), RECOMPRESSED),
            attr("recompress", "type=huge"),
        ],
    ),
    Scenario(
        "reset-writeback", [init_pp(), write_pages(0, 12, 76), attr("writeback", "huge"), WROTE_BACK], [reset]
    ),
    # The claim in the backing file's block 0: taken before the commit that records the file,
    # cleared after the one that drops it (verify checks it at every point).
    Scenario("backing-dev", [backing_file], [init_pp(), write_pages(0, 8, 78)]),
    Scenario(
        "reset-retake",
        [init_pp(), write_pages(0, 12, 79), attr("writeback", "huge"), WROTE_BACK],
        [reset, init_pp(), steps(write_pages(0, 8, 80), attr("writeback", "huge"), WROTE_BACK)],
    ),
    Scenario(
        "dictionary",
        [],
        [dictionary, init_pp("zstd", backing=False), write_pages(0, 12, 77)],
    ),
    # Frames of extents that hold nothing committed are written in place before the COMMIT
    # record (io.Ahead); every commit here that allocates a zspage does so.
    Scenario("ahead-write", [init("6.18")], [write_pages(0, 24, 21)], ahead_min=1),
    Scenario(
        "ahead-overwrite",
        [init("6.18"), write_pages(0, 40, 22)],
        [steps(discard(0, 20), write_pages(30, 30, 23)), write_pages(0, 12, 24)],
        ahead_min=1,
    ),
    Scenario(
        "ahead-reset", [init("6.18"), write_pages(0, 20, 25)], [reset, init("6.18"), write_pages(0, 12, 26)],
        ahead_min=1,
    ),
    # The default threshold: huge pages, one frame an extent, enough of them.
    Scenario("ahead-default", [init("6.18")], [write_pages(0, 20, 27, ("huge",))], ahead_min=0),
]


def snapshot(z: Zram, model: bytearray) -> tuple[dict[str, object], bytes]:
    return device_state(z), bytes(model)


def build(root: Path, setup: list[Step], model: bytearray) -> None:
    store = Store(root)
    dev = store.hot_add()
    for step in setup:
        with store.open(dev, write=True) as h:
            step(h.zram, model)
    save(root)


def reference(root: Path, sc: Scenario, model: bytearray) -> tuple[list[int], list[tuple[dict, bytes]]]:
    """Run the steps without crashing: durable-point counts at each commit, and each committed state."""
    restore(root)
    store = Store(root)
    bounds = [0]
    states = []
    with store.open(0, write=True) as h:
        states.append(snapshot(h.zram, model))
        for step in sc.steps:
            step(h.zram, model)
            h.commit()
            bounds.append(store._crash.count)
            states.append(snapshot(h.zram, model))
    return bounds, states


def run_child(root: Path, crash_at: int, body: Callable[[Store], None]) -> bool:
    """Run ``body`` in a forked child that dies at its ``crash_at``-th durable point; True if it died."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            store = Store(root)
            store._crash.crash_at = crash_at
            body(store)
        except BaseException:
            code = 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        return True
    assert os.WEXITSTATUS(status) == 0, "the child failed without being killed"
    return False


def data_blocks(path: Path, blocks: list[int]) -> list[int]:
    """Which of ``blocks`` of the file hold data: not a hole, not past the end of the file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        # hole_ranges gives the holes in a range: a block with data is not one whole hole.
        whole = {b: [(b * PAGE, (b + 1) * PAGE)] for b in blocks}
        return [b for b in blocks if b * PAGE < size and hole_ranges(fd, *whole[b][0]) != whole[b]]
    finally:
        os.close(fd)


def verify(root: Path, allowed: list[tuple[dict, bytes]], where: str) -> int:
    """Open after a crash: check is clean and the state is one of ``allowed``; returns which."""
    store = Store(root)
    problems = check_image((store, 0), data=True)
    assert problems == [], f"{where}: {problems}"
    with store.open(0, write=False) as h:
        state = device_state(h.zram)
        content = h.zram.read(0, DISK) if h.zram.initialized else bytes(DISK)
        check_claim(h.zram.config.backing_dev, h.image.header.image_id, where)
    for i, (want_state, want_content) in enumerate(allowed):
        if state == want_state and content == want_content:
            return i
    raise AssertionError(f"{where}: the state after the crash is neither the one before nor after the commit")


def check_claim(recorded: str | None, image_id: bytes, where: str, *, final: bool = False) -> None:
    """The backing file's block 0 is zero or a sound claim, never half of one; a device that
    records the file holds its claim; one that does not may leave a stale claim of its own
    after a crash (never another's), and none once its command has finished (``final``)."""
    from zramctl.image.backing import Owner, decode_claim

    if not BACKING[0].exists():
        assert recorded is None, where
        return
    found = decode_claim(BACKING[0].read_bytes()[:PAGE])
    assert found is None or isinstance(found, Owner), f"{where}: block 0: {found}"
    if recorded is not None or found is not None:
        mine = isinstance(found, Owner) and found.image_id == image_id
        assert mine, f"{where}: the claim is not the device's"
    if final and recorded is None:
        assert found is None, f"{where}: a claim outlived the device's reset"


def copy(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)


@pytest.mark.parametrize("sc", SCENARIOS, ids=lambda s: s.name)
def test_crash_at_every_point(sc: Scenario, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if sc.ahead_min:
        monkeypatch.setattr(image_mod, "AHEAD_MIN_BLOCKS", sc.ahead_min)
    base = tmp_path / "base"
    model = bytearray(DISK)
    build(base, sc.setup, model)
    ref = tmp_path / "ref"
    copy(base, ref)
    start = bytearray(model)
    bounds, states = reference(ref, sc, model)
    total = bounds[-1]
    assert total > 0
    work = tmp_path / "work"
    cases = recoveries = 0
    recovered: set[int] = set()
    undone = written_ahead = 0

    def body(store: Store) -> None:
        m = bytearray(start)
        with store.open(0, write=True) as h:
            for step in sc.steps:
                step(h.zram, m)
                h.commit()

    for n in range(1, total + 1):
        copy(base, work)
        restore(work)
        assert run_child(work, n, body), f"point {n} of {total} was never reached"
        k = next(i for i in range(1, len(bounds)) if n <= bounds[i])
        allowed = [states[k - 1], states[k]]
        pending = wal_pending(work / "zram0.wal") and read_log(work / "zram0.wal") is not None
        if pending and k not in recovered:
            # The commit record is durable: recovery must give the new state, even if it crashes too.
            recovered.add(k)
            crashed = tmp_path / "crashed"
            copy(work, crashed)
            save(crashed)
            m = 1
            while True:
                copy(crashed, work)
                restore(work)
                died = run_child(work, m, lambda s: s.open(0, write=False).close())
                assert verify(work, [states[k]], f"point {n}, recovery point {m}") == 0
                recoveries += 1
                if not died:
                    break
                m += 1
        else:
            # Between an intent and its COMMIT record: the frames written ahead are undone.
            incomplete = wal_pending(work / "zram0.wal") and not pending
            intent = read_intent(work / "zram0.wal") if incomplete else None
            ahead = intent.blocks() if intent is not None else []
            written_ahead += bool(data_blocks(work / "zram0.img", ahead))
            got = verify(work, allowed, f"point {n} of {total}")
            assert got == 0 or not ahead, f"point {n}: an incomplete log's commit took effect"
            leftover = data_blocks(work / "zram0.img", ahead)
            assert leftover == [], f"point {n}: blocks {leftover} written ahead are not holes again"
            undone += bool(ahead)
        cases += 1
    assert cases == total
    if sc.ahead_min is not None:
        assert undone and written_ahead, "no crash fell between frames written ahead and their COMMIT"
    # Past the last point the child finishes: the final state, committed.
    copy(base, work)
    restore(work)
    assert not run_child(work, total + 1, body)
    assert verify(work, [states[-1]], "no crash") == 0
    with Store(work).open(0, write=False) as h:
        check_claim(h.zram.config.backing_dev, h.image.header.image_id, "no crash", final=True)
    print(f"{sc.name}: {cases} crash points, {recoveries} recovery crash cases")


def test_crash_env_hook(tmp_path: Path) -> None:
    """ZRAMCTL_CRASH_AT is read by Store(); the process dies silently at that point."""
    import subprocess
    import sys

    model = bytearray(DISK)
    build(tmp_path, [init("6.18")], model)
    code = (
        "from zramctl.store import Store\n"
        "import sys\n"
        "s = Store(sys.argv[1])\n"
        "with s.open(0, write=True) as h:\n"
        "    h.zram.write(0, b'x' * 4096)\n"
    )
    env = dict(os.environ, ZRAMCTL_CRASH_AT="2")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert proc.stdout == b"" and proc.stderr == b""
    assert check_image((Store(tmp_path), 0), data=True) == []
