"""Round trip: every state the engine's property test reaches survives commit -> close -> open.

The engine's own hypothesis state machine (tests/test_statemachine.py) runs
here on an image-backed device: writes, overwrites, discards, fragmentation,
compaction, mem_limit changes, in both profiles.  Its invariants (model bytes,
allocator structure, counters) are checked after every step against the lazy
file-backed maps, and an extra rule commits, closes and reopens the device,
which must come back with exactly the same counters, class state, zspage
records, page table and bytes.  Another commits in the background with the
commit's I/O held back until the device next lands it: the rules go on
meanwhile, and every check reads through the blocks the file does not hold yet.
A seeded test adds reset and re-init.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import threading
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis.stateful import rule
from test_statemachine import BD_PAGES, SIZE, ZramMachine

from zramctl.image import io as image_io
from zramctl.image.check import device_state
from zramctl.image.image import Image
from zramctl.kernel import sysfs
from zramctl.kernel.zram_drv import Zram, ZramConfig
from zramctl.store import DeviceHandle, Store, check_image


class ImageMachine(ZramMachine):
    """ZramMachine whose device lives in an image, reopened from disk at random points."""

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="zram-rt-"))
        self.store = Store(self.root)
        self.store.hot_add()
        backing = self.root / "backing.img"  # the machine's backing device, as a file
        backing.write_bytes(bytes(BD_PAGES * 4096))
        with self.store.open(0, write=True) as h:
            sysfs.store(h.zram, "compat", self.compat)
            if self.compat != "3.11":
                sysfs.store(h.zram, "comp_algorithm", self.algorithm)
                sysfs.store(h.zram, "backing_dev", str(backing))
                sysfs.store(h.zram, "recomp_algorithm", f"algo={self.secondary}")
            sysfs.store(h.zram, "disksize", str(SIZE))
        self.reopens = 0
        self._hold_flights()
        self._open()

    def _hold_flights(self) -> None:
        """A background commit's I/O waits for ``gate``, which a landing (or the teardown) opens."""
        self.gate = threading.Event()
        self.gate.set()
        self._real = (image_io._run_compiled, Image.land)
        run, land = self._real
        gate = self.gate

        def held(ops, crash_in):  # type: ignore[no-untyped-def]
            if threading.current_thread() is not threading.main_thread():
                assert gate.wait(60), "a background commit was never landed"
            return run(ops, crash_in)

        def landing(image: Image) -> None:
            if image._flight is not None:
                gate.set()
            land(image)

        image_io._run_compiled = held  # type: ignore[assignment]
        Image.land = landing  # type: ignore[method-assign]

    def _open(self) -> None:
        self.handle: DeviceHandle = self.store.open(0, write=True)
        self.z = self.handle.zram
        self.z.clock = lambda: self.now
        if self.z.bdev is not None:
            self.bd = self.z.bdev  # what the rules count free blocks in

    @rule()
    def commit_and_reopen(self) -> None:
        before = device_state(self.z)
        self.handle.commit()
        self.handle.close()
        self._open()
        assert device_state(self.z) == before
        self.reopens += 1
        if self.reopens % 8 == 1:
            self.handle.close()
            assert check_image((self.store, 0), data=True) == []
            self._open()

    @rule()
    def commit_in_background(self) -> None:
        before = device_state(self.z)
        self.handle.image.land()
        self.gate.clear()
        self.handle.commit(background=True)
        assert device_state(self.z) == before

    def teardown(self) -> None:
        self.gate.set()
        try:
            self.handle.close()
        finally:
            image_io._run_compiled, Image.land = self._real  # type: ignore[method-assign]
            shutil.rmtree(self.root, ignore_errors=True)


def image_machine(compat: str, algorithm: str, examples: int):
    machine = type(
        f"Image_{compat.replace('.', '_')}_{algorithm}",
        (ImageMachine,),
        {"compat": compat, "algorithm": algorithm},
    )
    machine.TestCase.settings = settings(
        max_examples=examples,
        stateful_step_count=40,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    return machine.TestCase


TestImageModernLzo = image_machine("6.18", "lzo", 40)
TestImageModernZstd = image_machine("6.18", "zstd", 15)
TestImageLegacyLzo = image_machine("3.11", "lzo", 30)


def test_reset_and_reinit_round_trip(tmp_path: Path) -> None:
    """Reset, change profile and size, write again: each commit reopens identical to memory."""
    store = Store(tmp_path)
    store.hot_add()
    rnd = random.Random(7)
    mem = Zram(ZramConfig())
    for round_, profile in enumerate(("6.18", "3.11", "6.18", "3.11")):
        size = (round_ + 1) << 20
        with store.open(0, write=True) as h:
            for z in (h.zram, mem):
                sysfs.store(z, "reset", "1")
                sysfs.store(z, "compat", profile)
                sysfs.store(z, "disksize", str(size))
            for _ in range(40):
                off = rnd.randrange(size // 4096) * 4096
                data = (rnd.randbytes(rnd.randrange(0, 4096)) + bytes(4096))[:4096]
                h.zram.write(off, data)
                mem.write(off, data)
        with store.open(0, write=False) as h:
            assert h.zram.stats == mem.stats
            assert h.zram.read(0, size) == mem.read(0, size)
        assert check_image((store, 0), data=True) == []
