"""Everything the kernel would show about one device, gathered for people.

``device_report(zram)`` collects the settings, every counter under its kernel
name (and ``idle_pages``, which the kernel shows only through debugfs
``block_state``), every readable sysfs attribute's text (but ``block_state``
itself, a line per stored page: ``zramctl attr DEV block_state`` prints it),
the allocator's per-class table
(the kernel's ``/sys/kernel/debug/zsmalloc/<pool>/classes``) and a histogram of
stored object sizes.  The CLI renders it; nothing here prints.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from ..kernel import sysfs
from ..kernel.profiles import PAGE_SHIFT, PAGE_SIZE
from ..kernel.zram_drv import ZRAM_HUGE, ZRAM_SAME, ZRAM_SIZE_MASK, ZRAM_WB, Zram, ZramStats

# Object sizes are binned by 256 bytes: 16 bins from 0 to a page, the last one
# holding the raw (huge / bad_compress) pages.
HISTOGRAM_STEP = 256

PER_PAGE = frozenset({"block_state"})
"""Attributes with a line per stored page: too long for a report (``attr`` prints them)."""


@dataclass(frozen=True)
class ClassRow:
    """One line of the debugfs ``classes`` table."""

    index: int
    size: int
    objs_per_zspage: int
    pages_per_zspage: int
    zspages: dict[str, int]
    """Zspages per fullness group, by the kernel's group name (10%, ..., almost_full, ...)."""
    objs_allocated: int
    objs_inuse: int
    pages_used: int
    freeable: int
    """Pages compaction could free in this class (zs_can_compact)."""


@dataclass(frozen=True)
class SizeBin:
    low: int
    high: int
    """Object sizes low <= size <= high, in bytes."""
    count: int


@dataclass
class DeviceReport:
    settings: dict[str, str | int | None]
    counters: dict[str, int]
    attributes: dict[str, str]
    classes: list[ClassRow] = field(default_factory=list)
    histogram: list[SizeBin] = field(default_factory=list)
    same_pages: int = 0
    huge_pages: int = 0
    compression_ratio: float | None = None
    """DATA/TOTAL (the device's ``compression_ratio``); None while TOTAL is 0."""


def _class_rows(z: Zram) -> list[ClassRow]:
    pool = z.pool
    if pool is None:
        return []
    names = pool.fullness.names
    rows = []
    for cls in pool.classes:
        if not cls.objs_allocated:
            continue
        zspages = {names[g]: cls.zspages[g] for g in range(len(names)) if g != pool.fullness.empty}
        rows.append(
            ClassRow(
                index=cls.index,
                size=cls.size,
                objs_per_zspage=cls.objs_per_zspage,
                pages_per_zspage=cls.pages_per_zspage,
                zspages=zspages,
                objs_allocated=cls.objs_allocated,
                objs_inuse=cls.objs_inuse,
                pages_used=cls.objs_allocated // cls.objs_per_zspage * cls.pages_per_zspage,
                freeable=pool.zs_can_compact(cls),
            )
        )
    return rows


def _histogram(z: Zram) -> tuple[list[SizeBin], int, int]:
    """Stored object sizes in HISTOGRAM_STEP bins; same-filled and raw pages counted apart, and
    written-back pages not at all (they hold no object: the backing device has them).

    It walks the whole page table: a report is O(stored pages) by nature.
    """
    bins = [0] * (PAGE_SIZE // HISTOGRAM_STEP)
    same = huge = 0
    for flags, _, _, _ in z.table.values():
        if flags & ZRAM_SAME:
            same += 1
            continue
        if flags & ZRAM_WB:
            continue
        size = flags & ZRAM_SIZE_MASK
        if flags & ZRAM_HUGE or size == PAGE_SIZE:
            huge += 1
            continue
        bins[min((size - 1) // HISTOGRAM_STEP, len(bins) - 1)] += 1
    out = [SizeBin(i * HISTOGRAM_STEP + 1, (i + 1) * HISTOGRAM_STEP, n) for i, n in enumerate(bins)]
    return out, same, huge


def device_report(z: Zram) -> DeviceReport:
    """Gather a device's settings, counters, attribute texts, classes and object sizes."""
    cfg = z.config
    settings: dict[str, str | int | None] = {
        "compat": cfg.compat,
        "initstate": int(z.initialized),
        "disksize": cfg.disksize,
        "comp_algorithm": cfg.comp_algorithm,
        "algorithm_level": cfg.params[0].level,
        "mem_limit": cfg.limit_pages << PAGE_SHIFT,
        "max_comp_streams": z.comp_streams,
        "huge_class_size": z.pool.huge_class_size if z.pool else None,
    }
    counters = {f.name: getattr(z.stats, f.name) for f in fields(ZramStats)}
    counters["orig_data_size"] = z.orig_data_size
    counters["mem_used_total"] = z.mem_used_total
    counters["mem_used_max"] = z.stats.max_used_pages << PAGE_SHIFT
    counters["pages_compacted"] = z.pool.pages_compacted if z.pool else 0
    present = sysfs.attributes(z)
    if "idle" in present:  # post-processing (6.18): what it is set up with, and the idle pages
        settings["backing_dev"] = cfg.backing_dev
        settings["writeback_limit"] = cfg.writeback_limit
        settings["writeback_limit_enable"] = int(cfg.writeback_limit_enable)
        secondaries = [f"#{p}: {a}" for p, a in enumerate(cfg.recomp_algorithms, 1) if a is not None]
        settings["recomp_algorithm"] = ", ".join(secondaries) or None
        counters["idle_pages"] = z.idle_pages()
    attributes = {}
    for name, attr in present.items():
        if attr.show is not None and name not in PER_PAGE:
            attributes[name] = attr.show(z)
    histogram, same, huge = _histogram(z)
    return DeviceReport(
        settings, counters, attributes, _class_rows(z), histogram, same, huge, z.compression_ratio
    )


def report_to_dict(report: DeviceReport) -> dict[str, object]:
    """A JSON-ready dict: numbers stay numbers."""
    return asdict(report)
