"""Behaviour profiles: which kernel a device behaves like.

The zram driver and zsmalloc changed a great deal between the driver and allocator
of the 2013 promotion patch (``3.11``: posted for 3.11, merged in 3.14) and the
modern kernel (``6.18``).  A device records its profile when it is set up.  A
profile is data, not a second copy of the code: every place where the two kernels
differ reads a field here.
Each value comes from the staging ``zram_drv.c`` and ``zsmalloc-main.c`` that the
promotion patch moves (3.14 ships the same allocator as ``mm/zsmalloc.c``) or from
``drivers/block/zram/zram_drv.c`` and ``mm/zsmalloc.c`` of Linux 6.18;
``docs/kernel-facts.md`` lists the facts the code relies on.
"""

from __future__ import annotations

from dataclasses import dataclass

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT


@dataclass(frozen=True)
class Profile:
    """The parameters in which the 2013 and the modern kernel differ."""

    name: str
    chain_size: int
    """Most pages in one zspage: ZS_MAX_PAGES_PER_ZSPAGE (3.11: 1 << 2) or
    CONFIG_ZSMALLOC_CHAIN_SIZE (modern default 8)."""
    min_waste_chain: bool
    """True: pick the chain length with the least waste (calculate_zspage_chain_size);
    False: the 2013 rule, the highest integer percentage used (get_pages_per_zspage)."""
    merge_classes: bool
    """Classes with equal pages/zspage and objs/zspage share one size_class (can_merge)."""
    handle_size: int
    """Bytes of handle kept in front of every non-huge object (ZS_HANDLE_SIZE, 0 in 2013)."""
    same_word: bool
    """Pages of one repeated 8-byte word are stored without allocation (ZRAM_SAME);
    False: only all-zero pages are (ZRAM_ZERO)."""
    same_counts_stored: bool
    """Whether a same-filled page counts in pages_stored (and so in orig_data_size)."""
    huge_by_class: bool
    """True: comp_len >= huge_class_size is stored raw (ZRAM_HUGE);
    False: comp_len > max_zpage_size (3/4 page) is (bad_compress)."""
    free_old_first: bool
    """The 2013 zram_bvec_write frees the old slot before compressing; the modern
    driver only after the new object is allocated and the mem_limit check passed."""
    compaction: bool
    """zs_compact exists (4.1+)."""
    mem_limit: bool
    """mem_limit and mem_used_max exist (3.18+): checked after each allocation."""
    post_processing: bool
    """Idle marking, writeback, recompression, algorithm parameters per priority, per-slot
    access times and ``block_state`` (6.18); the 2013 driver had none of them."""
    per_cpu_streams: bool
    """A device set up without ``-t`` compresses with one stream per CPU it may run on: the
    modern driver's per-CPU zcomp streams (4.7+; ``max_comp_streams`` then showed
    num_online_cpus and ignored a store, until 6.15 removed it).  False: one stream, as the
    2013 driver's single compression buffer under ``zram->lock`` (and 3.15's default of 1)."""
    default_algorithm: str
    """The algorithm a fresh device starts with.  6.18: ``lzo-rle``, the Kconfig default
    (CONFIG_ZRAM_DEF_COMP_LZORLE) since 5.1.  3.11: ``lzo``; the 2013 driver calls
    ``lzo1x_1_compress``, which is byte for byte today's ``lzo`` (same LZO1X-1, 2^13 dictionary;
    only lzo-rle was added beside it), so a 3.11 device uses the very same compressor."""

    @property
    def max_zpage_size(self) -> int:
        """The 2013 driver's incompressible threshold (PAGE_SIZE / 4 * 3)."""
        return PAGE_SIZE // 4 * 3


LEGACY = Profile(
    name="3.11",
    chain_size=4,
    min_waste_chain=False,
    merge_classes=False,
    handle_size=0,
    same_word=False,
    same_counts_stored=False,
    huge_by_class=False,
    free_old_first=True,
    compaction=False,
    mem_limit=False,
    post_processing=False,
    per_cpu_streams=False,
    default_algorithm="lzo",
)

MODERN = Profile(
    name="6.18",
    chain_size=8,
    min_waste_chain=True,
    merge_classes=True,
    handle_size=8,
    same_word=True,
    same_counts_stored=True,
    huge_by_class=True,
    free_old_first=False,
    compaction=True,
    mem_limit=True,
    post_processing=True,
    per_cpu_streams=True,
    default_algorithm="lzo-rle",
)

PROFILES: dict[str, Profile] = {p.name: p for p in (LEGACY, MODERN)}
DEFAULT_PROFILE = MODERN.name


def get_profile(name: str) -> Profile:
    """The profile called ``name``; ValueError for an unknown one."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown compat profile {name!r} (known: {', '.join(PROFILES)})") from None
