"""Real data on our engine and on the machine's kernel zram0: every counter equal.

With the kernel's own compressors (zramctl.kernel._kcomp) the engine needs no hand-picked pages: any
data gives the kernel's object sizes.  For lzo-rle, lzo and lz4 (each skipped where the kernel
lacks it), 8 MiB each of program binaries, installed files and a live Python process's memory
(tools/make-corpus) are written to a fresh device, and every mm_stat and io_stat field must be
equal; then a series on one device overwrites, discards and compacts, compared after every step.
Skipped where there is no usable zram0; the oracle always leaves it reset.
"""

from __future__ import annotations

import random

import pytest
from kernel import (
    MAKE_CORPUS,
    PAGE,
    Compact,
    Discard,
    KernelUnavailable,
    Op,
    Write,
    first_difference,
    make_corpus,
    require_kernel,
    run_engine,
    run_oracle,
)

pytestmark = pytest.mark.kernel

ALGORITHMS = ("lzo-rle", "lzo", "lz4")
KINDS = ("binaries", "files", "memory")
MiB = 1 << 20
CORPUS = 8 * MiB
DISKSIZE = 64 * MiB


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[str, bytes]:
    require_kernel()
    if not MAKE_CORPUS.exists():
        pytest.skip("tools/make-corpus is missing")
    d = tmp_path_factory.mktemp("kernel-corpus")
    return {kind: make_corpus(kind, CORPUS, d / kind).read_bytes() for kind in KINDS}


def compare(ops: list[Op], algorithm: str) -> None:
    try:
        kernel = run_oracle(ops, algorithm, disksize=DISKSIZE)
    except KernelUnavailable as exc:
        pytest.skip(str(exc))
    ours = run_engine(ops, algorithm, disksize=DISKSIZE)
    problem = first_difference(ours, kernel)
    assert problem is None, f"{algorithm}: {problem}"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_real_data_every_counter_equal(corpora, algorithm, kind):
    data = corpora[kind]
    assert len(data) >= CORPUS
    compare([Write(0, data)], algorithm)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_overwrites_discards_and_compaction(corpora, algorithm):
    """One device: fill, overwrite with other kinds of data, discard in a pattern that leaves
    zspages part full, compact, and write again into the holes; every field after every step."""
    rng = random.Random(algorithm)
    files, memory, binaries = corpora["files"], corpora["memory"], corpora["binaries"]
    ops: list[Op] = [
        Write(0, files),
        Write(8 * MiB, memory),
        Write(2 * MiB, binaries[: 3 * MiB]),  # overwrites files with binaries
        Write(9 * MiB, files[4 * MiB : 6 * MiB]),  # overwrites memory with files
    ]
    # Discard every other 16 KiB in a stretch, then random page ranges elsewhere.
    for off in range(0, 4 * MiB, 32 * 1024):
        ops.append(Discard(off, 16 * 1024))
    for _ in range(40):
        start = rng.randrange(4 * MiB, 16 * MiB, PAGE)
        ops.append(Discard(start, rng.randrange(1, 33) * PAGE))
    ops.append(Compact())
    ops.append(Write(1 * MiB, memory[: 2 * MiB]))  # into partly discarded space
    for _ in range(20):
        start = rng.randrange(0, 16 * MiB, PAGE)
        ops.append(Discard(start, rng.randrange(1, 9) * PAGE))
    ops.append(Write(12 * MiB, binaries[5 * MiB : 7 * MiB]))
    ops.append(Compact())
    ops.append(Compact())  # nothing left to move: pages_compacted stays
    compare(ops, algorithm)
