"""The compiled kernel compressors (zramctl.kernel._kcomp) against their readable reference (kcomp_ref).

- Byte-exact on thousands of real pages (program binaries, text, a live process's memory,
  made by tools/make-corpus) and on the edge pages where a compressor's corner cases live.
- Every ``lzo`` output decodes with python-lzo (the standard LZO1X decoder) to the same page,
  and python-lzo's own streams (what earlier versions stored) decode with ours.
- The decoder on malformed input: mutations of valid streams and hypothesis' arbitrary bytes,
  over 100,000 in all; every one is an error or exactly what the independent decoders give.
- Each is a pure function of the page and releases the GIL.
- ``make sanitize`` (AddressSanitizer + UBSan) runs this file's fast part when gcc and libasan exist.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import lz4.block
import lzo
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from zramctl.kernel import _kcomp, kcomp_ref

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from kernel import MAKE_CORPUS, make_corpus  # noqa: E402

PAGE = 4096
ALGORITHMS = ("lzo-rle", "lzo", "lz4")
FAST = {"lzo": _kcomp.lzo1x_1_compress, "lzo-rle": _kcomp.lzorle1x_1_compress, "lz4": _kcomp.lz4_compress}
# Under the sanitizers only the fast checks run (the build is slow and the reference slower).
SANITIZING = bool(os.environ.get("ZRAMCTL_SANITIZE"))
CORPUS_BYTES = 4 << 20  # per kind: 1,024 pages, 3,072 real pages per algorithm in all


def pages_of(data: bytes) -> list[bytes]:
    data += bytes(-len(data) % PAGE)
    return [data[i : i + PAGE] for i in range(0, len(data), PAGE)]


@pytest.fixture(scope="module")
def real_pages(tmp_path_factory) -> dict[str, list[bytes]]:
    """4 MiB each of program binaries, text and a live Python process's memory, not all-zero pages."""
    if not MAKE_CORPUS.exists():
        pytest.skip("tools/make-corpus is missing")
    out: dict[str, list[bytes]] = {}
    d = tmp_path_factory.mktemp("corpus")
    size = (1 << 20) if SANITIZING else CORPUS_BYTES
    for kind in ("binaries", "text", "memory"):
        if SANITIZING:  # the corpus maker is a plain process: not under the sanitizers' preload
            env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "PYTHONPATH")}
            cmd = [sys.executable, str(MAKE_CORPUS), kind, str(size), str(d / kind)]
            subprocess.run(cmd, env=env, check=True, capture_output=True)
            data = (d / kind).read_bytes()
        else:
            data = make_corpus(kind, size, d / kind).read_bytes()
        out[kind] = pages_of(data)
    return out


def check_exact(algorithm: str, page: bytes) -> bytes:
    fast = FAST[algorithm](page)
    assert fast == kcomp_ref.compress(algorithm, page), f"{algorithm}: compiled and reference differ"
    return fast


def check_decodes(algorithm: str, page: bytes, stream: bytes) -> None:
    if algorithm == "lz4":
        assert lz4.block.decompress(stream, PAGE) == page
        return
    assert _kcomp.lzo_decompress(stream, PAGE) == page
    if algorithm == "lzo":
        assert lzo.decompress(stream, False, PAGE) == page  # the standard LZO1X decoder reads it


# --------------------------------------------------------------------------
# Byte-exact on real pages


@pytest.mark.skipif(SANITIZING, reason="the reference is slow; the sanitizer run checks a sample")
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_real_pages_byte_exact(real_pages, algorithm):
    count = 0
    for kind, pages in real_pages.items():
        for i, page in enumerate(pages):
            stream = FAST[algorithm](page)
            ref = kcomp_ref.compress(algorithm, page)
            assert stream == ref, f"{algorithm}: {kind} page {i}: {len(stream)} bytes, reference {len(ref)}"
            check_decodes(algorithm, page, stream)
            count += 1
    assert count >= 3000


@pytest.mark.skipif(not SANITIZING, reason="the sanitizer run's sample; the full check runs above")
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_real_pages_sample_under_sanitizers(real_pages, algorithm):
    for pages in real_pages.values():
        for page in pages:
            stream = check_exact(algorithm, page) if page[0] % 8 == 0 else FAST[algorithm](page)
            check_decodes(algorithm, page, stream)


def test_old_python_lzo_streams_still_decode(real_pages):
    """Objects stored by earlier versions (python-lzo's liblzo2 lzo1x_1) read back through ours."""
    for pages in real_pages.values():
        for page in pages[:300]:
            assert _kcomp.lzo_decompress(lzo.compress(page, 1, False), PAGE) == page


# --------------------------------------------------------------------------
# Edge pages


def _one_byte(pos: int) -> bytes:
    p = bytearray(PAGE)
    p[pos] = 0x5A
    return bytes(p)


def _zero_runs() -> list[bytes]:
    """A zero run of exactly 3, 4, 5, 2051 or 2052 bytes at every alignment mod 8, in non-zero data."""
    rng = random.Random(3)
    out = []
    for run in (3, 4, 5, 2051, 2052):
        for align in range(8):
            base = bytearray(rng.randbytes(PAGE).replace(b"\0", b"\1"))
            for start in (align, 64 + align, PAGE - run - 8 - align, (PAGE - run) // 8 * 8 - 8 + align):
                page = bytearray(base)
                page[start : start + run] = bytes(run)
                out.append(bytes(page))
            # the run between repeated text, so that matches and runs meet
            text = bytearray((b"the kernel's zram " * 300)[:PAGE])
            text[1000 + align : 1000 + align + run] = bytes(run)
            out.append(bytes(text))
    return out


def _landing_at(algorithm: str, targets: tuple[int, ...]) -> dict[int, bytes]:
    """Pages whose compressed length is exactly each target: random runs between zero gaps."""
    compress = FAST[algorithm]
    found: dict[int, bytes] = {}
    for run in (8, 16, 32, 64):
        for gap in range(2, 40):
            for seed in range(120):
                r = random.Random(seed).randbytes(PAGE)
                page = bytearray()
                i = 0
                while len(page) < PAGE:
                    page += r[i : i + run] + bytes(gap)
                    i += run
                page = bytes(page[:PAGE])
                n = len(compress(page))
                if n in targets:
                    found.setdefault(n, page)
                if len(found) == len(targets):
                    return found
    return found


def edge_pages() -> list[bytes]:
    rng = random.Random(11)
    pages = [bytes(PAGE), _one_byte(0), _one_byte(PAGE - 1), _one_byte(PAGE // 2), _one_byte(PAGE // 2 - 3)]
    pages += _zero_runs()
    pages += [rng.randbytes(PAGE) for _ in range(4)]
    pages += [(b"abc" * 1366)[:PAGE], (b"\0\1\2" * 1366)[:PAGE], (b"xy\0" * 1366)[:PAGE]]
    pages += [b"\xff" * PAGE, bytes(PAGE - 21) + rng.randbytes(21), rng.randbytes(21) + bytes(PAGE - 21)]
    return pages


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_edge_pages_byte_exact(algorithm):
    for i, page in enumerate(edge_pages()):
        stream = FAST[algorithm](page)
        assert stream == kcomp_ref.compress(algorithm, page), f"{algorithm}: edge page {i}"
        check_decodes(algorithm, page, stream)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_pages_landing_at_the_huge_threshold(algorithm):
    """3,624 / 3,625 / 3,626: either side of huge_class_size (3,625 with chain 8)."""
    targets = (3624, 3625, 3626)
    found = _landing_at(algorithm, targets)
    assert found, f"{algorithm}: no page lands near the huge threshold"
    # lzo's lengths step by more than one byte in places: at least two of the three exist
    assert len(found) >= 2, f"{algorithm}: only {sorted(found)}"
    for n, page in found.items():
        assert len(check_exact(algorithm, page)) == n
        check_decodes(algorithm, page, FAST[algorithm](page))


@pytest.mark.parametrize(
    "length", [0, 1, 3, 4, 12, 13, 14, 20, 21, 22, 25, 64, 238, 239, 300, 1000, 8192, 49152]
)
def test_short_and_long_inputs(length):
    """Inputs of any length the kernel would take (one chunk for lzo, under 64 KiB for lz4)."""
    rng = random.Random(length)
    for data in (bytes(length), rng.randbytes(length), (b"ab\0\0\0\0c" * (length // 7 + 1))[:length]):
        for algorithm in ALGORITHMS:
            stream = FAST[algorithm](data)
            assert stream == kcomp_ref.compress(algorithm, data), (algorithm, length)
            if algorithm == "lz4":
                assert lz4.block.decompress(stream, max(length, 1)) == data
            else:
                assert _kcomp.lzo_decompress(stream, length) == data
                if algorithm == "lzo":
                    assert lzo.decompress(stream, False, max(length, 1)) == data


def test_lz4_acceleration_matches_the_reference():
    page = b"".join(random.Random(i).randbytes(40) + b"zram" * 10 for i in range(60))[:PAGE]
    for accel in (1, 2, 7, 64, 4096, 65537):
        stream = _kcomp.lz4_compress(page, accel)
        assert stream == kcomp_ref.lz4_compress(page, accel)
        assert lz4.block.decompress(stream, PAGE) == page


def test_inputs_beyond_one_chunk_are_refused():
    with pytest.raises(ValueError):
        _kcomp.lzo1x_1_compress(bytes(49153))
    with pytest.raises(ValueError):
        _kcomp.lz4_compress(bytes(65536))
    with pytest.raises(ValueError):
        kcomp_ref.lzo1x_1_compress(bytes(49153))


def test_lzo_rle_writes_version_1_and_runs():
    page = b"x" * 100 + bytes(3000) + b"y" * 996
    stream = _kcomp.lzorle1x_1_compress(page)
    assert stream[:2] == b"\x11\x01" and b"\xfc\xff" in stream  # the zero-run instruction's marker bytes
    with pytest.raises(Exception):  # noqa: B017 - liblzo2 does not know version 1
        assert lzo.decompress(stream, False, PAGE) == page


# --------------------------------------------------------------------------
# The decoder on malformed input


def _streams() -> dict[str, list[bytes]]:
    rng = random.Random(8)
    pages = edge_pages()
    for _ in range(30):
        words = [rng.randbytes(rng.randint(2, 12)) for _ in range(30)]
        text = b"".join(rng.choice(words) + bytes(rng.choice((0, 0, 4, 9, 300))) for _ in range(600))
        pages.append(text[:PAGE].ljust(PAGE, b"\0"))
    return {
        "lzo": [_kcomp.lzo1x_1_compress(p) for p in pages],
        "lzo-rle": [_kcomp.lzorle1x_1_compress(p) for p in pages],
    }


def _mutate(rng: random.Random, s: bytes) -> bytes:
    b = bytearray(s)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        kind = rng.randrange(7)
        i = rng.randrange(len(b) + 1) if b else 0
        if kind == 0 and b:
            b[min(i, len(b) - 1)] = rng.randrange(256)
        elif kind == 1 and b:
            b[min(i, len(b) - 1)] ^= 1 << rng.randrange(8)
        elif kind == 2:
            del b[i:]
        elif kind == 3:
            b[i:i] = rng.randbytes(rng.randint(1, 4))
        elif kind == 4:
            del b[i : i + rng.randint(1, 8)]
        elif kind == 5:
            b[i:i] = b"\0" * rng.randint(1, 300)  # long length continuations
        else:
            j = rng.randrange(len(b) + 1)
            b[i:i] = b[j : j + rng.randint(1, 16)]  # a copy of a piece of itself
    return bytes(b)


def _ours(data: bytes, max_out: int = PAGE) -> bytes | None:
    try:
        out = _kcomp.lzo_decompress(data, max_out)
    except ValueError:
        return None
    assert len(out) <= max_out
    return out


def _reference(data: bytes, max_out: int = PAGE) -> bytes | None:
    try:
        return kcomp_ref.lzo_decompress(data, max_out)
    except kcomp_ref.LzoError:
        return None


def _liblzo2(data: bytes) -> bytes | None:
    try:
        return lzo.decompress(data, False, PAGE)
    except lzo.error:
        return None


MUTATIONS = 30_000 if SANITIZING else 170_000


def test_mutated_streams_give_an_error_or_the_right_bytes():
    """Mutations of valid streams: an error, or exactly what an independent decoder makes of them.

    Version 0 (lzo) is checked against liblzo2's safe decoder on every input: where ours
    decodes, liblzo2 gives the same bytes (ours is stricter only about the end marker, as the
    kernel is).  Version 1 (lzo-rle), which liblzo2 cannot read, is checked against the plain
    reference decoder on a sample (it is slow) and for its bounds on all.
    """
    rng = random.Random(2024)
    streams = _streams()
    decoded = errors = 0
    for n in range(MUTATIONS):
        algorithm = "lzo" if n % 2 else "lzo-rle"
        data = _mutate(rng, rng.choice(streams[algorithm]))
        ours = _ours(data)
        if algorithm == "lzo" and not (len(data) >= 5 and data[0] == 0x11):
            # (a stream that now starts 0x11 would be read as versioned, which liblzo2 does not know)
            theirs = _liblzo2(data)
            if ours is not None:
                assert theirs == ours, f"mutation {n}: liblzo2 disagrees"
        elif n % 20 == 0 or (ours is not None and n % 4 == 0) or algorithm == "lzo":
            assert _reference(data) == ours, f"mutation {n}: the reference decoder disagrees"
        if ours is None:
            errors += 1
        else:
            decoded += 1
    assert decoded > 100  # the mutations reach both outcomes
    assert errors >= (10_000 if SANITIZING else 100_000)  # malformed inputs, all refused cleanly


def test_random_bytes_and_small_output_limits():
    """Arbitrary bytes, and valid streams under a limit too small: errors, never an overrun."""
    rng = random.Random(7)
    streams = _streams()
    for _ in range(20_000 if not SANITIZING else 5_000):
        head = rng.choice((b"", b"\x11\x01", b"\x11\x00", b"\x15"))
        data = head + rng.randbytes(rng.randint(0, 40))
        assert _ours(data) == _reference(data)
        stream = rng.choice(streams["lzo-rle"] + streams["lzo"])
        limit = rng.randrange(PAGE)
        assert _ours(stream, limit) is None  # every page is 4096 bytes: any smaller limit overruns
        assert _reference(stream, limit) is None


@given(st.binary(max_size=200), st.sampled_from([b"", b"\x11\x01", b"\x12", b"\x11\x01\x12", b"\x20"]))
def test_hypothesis_arbitrary_input(data, head):
    data = head + data
    assert _ours(data) == _reference(data)


@given(st.data())
def test_hypothesis_edits_of_valid_streams(data):
    streams = _streams_cached()
    algorithm = data.draw(st.sampled_from(["lzo", "lzo-rle"]))
    stream = bytearray(data.draw(st.sampled_from(streams[algorithm])))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(stream) - 1))
        stream[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(stream)))
    candidate = bytes(stream[:cut]) if data.draw(st.booleans()) else bytes(stream)
    ours = _ours(candidate)
    assert ours == _reference(candidate)
    if algorithm == "lzo" and ours is not None:
        assert _liblzo2(candidate) == ours


_STREAMS: dict[str, list[bytes]] = {}


def _streams_cached() -> dict[str, list[bytes]]:
    if not _STREAMS:
        _STREAMS.update(_streams())
    return _STREAMS


def test_decoder_rejects_what_the_kernel_rejects():
    good = _kcomp.lzo1x_1_compress(b"hello hello hello hello hello hello")
    assert _ours(good + b"\0") is None  # trailing bytes
    assert _ours(good[:-1]) is None  # the end marker cut
    assert _ours(b"") is None and _ours(b"\x11") is None
    assert _ours(b"\x11\x00\x00") == b""  # the empty stream
    assert _ours(b"\x12A\x11\x00\x00") == b"A"
    assert _ours(b"\x12A\x7c\xff\x11\x00\x00") is None  # a match reaching before the start
    assert _ours(b"\x12A\x10\x00\x00") is None  # an end marker of the wrong length
    with pytest.raises(ValueError):
        _kcomp.lzo_decompress(good, -1)


# --------------------------------------------------------------------------
# The LZ4 block decoder (the compiled read path's), against liblz4's LZ4_decompress_safe


def _lz4_ours(data: bytes, max_out: int = PAGE) -> bytes | None:
    try:
        out = _kcomp.lz4_decompress(data, max_out)
    except ValueError:
        return None
    assert len(out) <= max_out
    return out


def _lz4_theirs(data: bytes, max_out: int = PAGE) -> bytes | None:
    """lz4.block's safe decoder, with the same output limit; what it refuses, None."""
    try:
        return lz4.block.decompress(data, max_out)
    except Exception:  # LZ4BlockError, or ValueError for what it cannot size
        return None


def _lz4_streams() -> list[bytes]:
    pages = edge_pages() + [p for p in _streams_pages()]
    return [_kcomp.lz4_compress(p) for p in pages] + [lz4.block.compress(p, store_size=False) for p in pages]


def _streams_pages() -> list[bytes]:
    rng = random.Random(9)
    out = []
    for _ in range(30):
        words = [rng.randbytes(rng.randint(2, 12)) for _ in range(30)]
        text = b"".join(rng.choice(words) + bytes(rng.choice((0, 0, 4, 9, 300))) for _ in range(600))
        out.append(text[:PAGE].ljust(PAGE, b"\0"))
    return out


def test_lz4_decoder_reads_every_valid_block(real_pages):
    """Blocks of real and edge pages, from the kernel-exact compressor and from liblz4 (whose HC
    and fast modes make other sequences): each decodes to its page, as liblz4 decodes it."""
    pages = [p for kind in real_pages.values() for p in kind[:: 4 if SANITIZING else 1]] + edge_pages()
    for page in pages:
        for block in (_kcomp.lz4_compress(page), lz4.block.compress(page, store_size=False),
                      lz4.block.compress(page, mode="high_compression", store_size=False)):
            assert _kcomp.lz4_decompress(block, PAGE) == page


LZ4_MUTATIONS = 20_000 if SANITIZING else 120_000


def test_lz4_mutated_blocks_decode_as_liblz4_does():
    """Mutations of valid blocks: where ours decodes, liblz4 decodes the same bytes; what it
    refuses, ours refuses.  Ours is stricter on a few (under 0.1%): it checks the format's
    end-of-block rules (the last 5 bytes literals, no match in the last 12) and offset 0 on every
    sequence, where liblz4 1.9's fast paths skip them.  Both read paths use ours, so a damaged
    object reads the same through either."""
    rng = random.Random(4096)
    streams = _lz4_streams()
    decoded = errors = stricter = 0
    for n in range(LZ4_MUTATIONS):
        data = _mutate(rng, rng.choice(streams))
        limit = PAGE if n % 8 else rng.randrange(PAGE + 1)
        ours, theirs = _lz4_ours(data, limit), _lz4_theirs(data, limit)
        if ours is not None:
            assert theirs == ours, f"mutation {n}: liblz4 disagrees"
            decoded += 1
        else:
            errors += 1
            stricter += theirs is not None
    assert decoded > 100 and errors > LZ4_MUTATIONS // 4  # both outcomes are reached
    assert stricter <= LZ4_MUTATIONS // 1000


@given(st.binary(max_size=300), st.integers(0, PAGE))
@example(b"\x01", 0)  # no room at all: liblz4 takes only the one-byte empty block (found in CI)
@example(b"\x00", 0)
def test_lz4_hypothesis_arbitrary_input(data, limit):
    ours = _lz4_ours(data, limit)
    assert ours is None or ours == _lz4_theirs(data, limit)


def test_lz4_decoder_edges():
    assert _lz4_ours(b"") is None  # no token
    assert _lz4_ours(b"\x00", 0) == b""  # one empty literal run
    assert _lz4_ours(b"\x50hello") == b"hello"
    assert _lz4_ours(b"\x50hell") is None  # the literals cut
    assert _lz4_ours(b"\xf0" + b"\xff" * 3) is None  # a length that runs off the input
    # A match one byte back, 4 + 15 + 200 long, after 8 literals and before 5 more: an overlap.
    block = b"\x8f" + b"abcdefgh" + b"\x01\x00" + b"\xc8" + b"\x50" + b"tail!"
    assert _lz4_ours(block) == b"abcdefgh" + b"h" * 219 + b"tail!" == _lz4_theirs(block)
    assert _lz4_ours(b"\x8f" + b"abcdefgh" + b"\x09\x00\x00\x50tail!") is None  # before the start
    with pytest.raises(ValueError):
        _kcomp.lz4_decompress(b"\x00", -1)


# --------------------------------------------------------------------------
# Threads: the GIL is released around the page work


def test_compressors_are_pure_and_thread_safe():
    pages = edge_pages()[:40]
    expected = {alg: [FAST[alg](p) for p in pages] for alg in ALGORITHMS}
    failures: list[str] = []

    def work(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(400):
            alg = rng.choice(ALGORITHMS)
            i = rng.randrange(len(pages))
            if FAST[alg](pages[i]) != expected[alg][i]:
                failures.append(f"{alg} page {i}")
            if alg != "lz4" and _kcomp.lzo_decompress(expected[alg][i], PAGE) != pages[i]:
                failures.append(f"{alg} decode {i}")

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not failures


def test_buffers_of_any_kind_are_taken():
    page = (b"zram " * 1000)[:PAGE]
    for buf in (page, bytearray(page), memoryview(page)):
        assert _kcomp.lzo1x_1_compress(buf) == _kcomp.lzo1x_1_compress(page)
        assert _kcomp.lz4_compress(buf) == _kcomp.lz4_compress(page)
    assert _kcomp.lzo_decompress(bytearray(_kcomp.lzorle1x_1_compress(page)), PAGE) == page


# --------------------------------------------------------------------------
# StreamJob: compression streams as native threads


def job_results(job) -> list[bytes]:
    out: list[bytes] = []
    while batch := job.take():
        out += batch
    return out


KINDS = {"lzo": 0, "lzo-rle": 1, "lz4": 2}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize(
    ("threads", "batch", "slots"), [(1, 1, 1), (1, 32, 4), (3, 2, 2), (4, 7, 64), (8, 300, 3)]
)
def test_stream_job_gives_compress_pages_results_in_page_order(algorithm, threads, batch, slots):
    """Any number of threads, batch size and ring: the same bytes as one call per page, in order."""
    data = b"".join(edge_pages()[:50] + [os.urandom(PAGE), bytes(PAGE)])
    kind = KINDS[algorithm]
    job = _kcomp.StreamJob(kind, data, PAGE, threads, batch, slots)
    got = job_results(job)
    job.close()
    assert got == _kcomp.compress_pages(kind, data, PAGE) == [FAST[algorithm](p) for p in pages_of(data)]
    assert job.threads == 0


def test_stream_job_takes_lz4_acceleration():
    data = b"".join(edge_pages()[:20])
    job = _kcomp.StreamJob(2, data, PAGE, 2, 3, 2, 9)
    assert job_results(job) == [_kcomp.lz4_compress(p, 9) for p in pages_of(data)]
    job.close()


def test_stream_job_holds_the_buffer_until_closed():
    """The threads read the caller's buffer: it cannot be resized (or freed) until close(); after
    close nothing reads it, and take() says the job is closed."""
    buf = bytearray(b"".join(edge_pages()[:40]))
    job = _kcomp.StreamJob(1, memoryview(buf), PAGE, 2, 4, 2)
    with pytest.raises(BufferError):
        buf.extend(b"x")
    assert job.threads == 2
    job.take()
    job.close()
    buf.extend(b"x")
    with pytest.raises(ValueError, match="closed"):
        job.take()
    job.close()  # closing twice does nothing


def test_stream_job_stopped_midway_and_dropped_unclosed_ends_its_threads():
    """A job closed before its last batch, or dropped without close, stops and joins its threads."""
    data = b"".join(edge_pages()) * 4
    before = len(os.listdir("/proc/self/task"))  # (an earlier test's idle threads may end meanwhile)
    for _ in range(20):
        job = _kcomp.StreamJob(1, data, PAGE, 4, 2, 2)
        job.take()
        job.close()
        assert job.threads == 0
        job = _kcomp.StreamJob(2, data, PAGE, 4, 2, 2)
        del job
    assert len(os.listdir("/proc/self/task")) <= before  # 20 jobs of 4 threads: none left running


@given(st.data())
def test_stream_job_hypothesis_any_shape_and_any_stop(data):
    """Any page size, page count, thread count, batch and ring, and a close at any point: every
    batch taken holds exactly what one call per page gives, in order, and nothing is taken
    after close (under ``make sanitize`` too: no read or write outside the buffers)."""
    kind = data.draw(st.sampled_from([0, 1, 2]), label="kind")
    page = data.draw(st.sampled_from([16, 100, 512, PAGE, 12288]), label="page")
    count = data.draw(st.integers(0, 24), label="pages")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    rng = random.Random(seed)
    kinds = (lambda i: rng.randbytes(page), lambda i: bytes(page), lambda i: (b"job %d " % i * page)[:page])
    buf = b"".join(rng.choice(kinds)(i) for i in range(count))
    threads = data.draw(st.integers(1, 4), label="threads")
    batch = data.draw(st.integers(1, 9), label="batch")
    slots = data.draw(st.integers(1, 5), label="slots")
    stop = data.draw(st.integers(0, count // batch + 1), label="takes before close")
    job = _kcomp.StreamJob(kind, bytearray(buf), page, threads, batch, slots)
    expected = _kcomp.compress_pages(kind, buf, page)
    got: list[bytes] = []
    for _ in range(stop):
        got += job.take()
    job.close()
    assert got == expected[: len(got)] and len(got) == min(len(expected), stop * batch)
    assert job.threads == 0


def test_stream_job_edges():
    assert job_results(_kcomp.StreamJob(1, b"", PAGE, 4, 8, 2)) == []
    one = _kcomp.StreamJob(1, bytes(PAGE), PAGE, 4, 8, 2)
    assert one.threads == 1  # no more threads than batches
    assert job_results(one) == [_kcomp.lzorle1x_1_compress(bytes(PAGE))]
    assert one.take() == []
    for bad in [(3, b"", PAGE, 1, 1, 1), (1, bytes(PAGE + 1), PAGE, 1, 1, 1), (1, b"", 0, 1, 1, 1),
                (1, b"", PAGE, 0, 1, 1), (1, b"", PAGE, 257, 1, 1), (1, b"", PAGE, 1, 0, 1),
                (1, b"", PAGE, 1, 1, 0), (1, b"", PAGE, 1, 4097, 1), (0, b"", 1 << 20, 1, 1, 1)]:  # fmt: skip
        with pytest.raises(ValueError):
            _kcomp.StreamJob(*bad)
    with pytest.raises(TypeError):
        _kcomp.StreamJob(1, "text", PAGE, 1, 1, 1)


# --------------------------------------------------------------------------
# The sanitizer build, as CI runs it


@pytest.mark.skipif(SANITIZING, reason="this is the sanitizer run")
def test_make_sanitize():
    """``make sanitize``: the module under AddressSanitizer and UBSan runs this file's fast checks."""
    gcc = shutil.which("gcc")
    if gcc is None or shutil.which("make") is None:
        pytest.skip("gcc or make is missing")
    asan = subprocess.run([gcc, "-print-file-name=libasan.so"], capture_output=True, text=True)
    libasan = asan.stdout.strip()
    if not libasan or not os.path.isabs(libasan) or not os.path.exists(libasan):
        pytest.skip("libasan is missing")
    proc = subprocess.run(
        ["make", "-s", "sanitize", f"PYTHON={sys.executable}"],
        cwd=ROOT, capture_output=True, text=True, timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "passed" in proc.stdout


# --------------------------------------------------------------------------
# Levels at set-up, through the command line (issue 7 item 8)

ZRAMCTL = [sys.executable, "-m", "zramctl"]


def _cli(root: Path, *args: str, data: bytes | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [*ZRAMCTL, "--root", str(root), *args], input=data, capture_output=True, timeout=120,
        env=dict(os.environ, LC_ALL="C.UTF-8"),
    )
    assert b"Traceback" not in proc.stderr and b"internal error" not in proc.stderr, proc.stderr
    return proc


@pytest.mark.skipif(SANITIZING, reason="command-line tests run in the ordinary suite")
@pytest.mark.parametrize(
    ("algorithm", "level"),
    [("zstd", "99999"), ("zstd", "-99999"), ("zstd", "22"), ("zstd", "-2147483648"), ("zstd", "0"),
     ("lz4", "99999"), ("lz4", "-5"), ("lz4", "2147483647"), ("lz4hc", "99999"), ("lz4hc", "-3"),
     ("deflate", "9"), ("deflate", "-1"), ("deflate", "0"), ("lzo-rle", "7"), ("lzo", "-7")],
)
def test_levels_the_kernel_clamps_give_a_working_device(tmp_path, algorithm, level):
    """zstd clamps as zstd_get_params does, lz4/lz4hc as LZ4 does, lzo ignores it: the device works."""
    proc = _cli(tmp_path, "-f", "-s", "1M", "-a", algorithm, "-p", f"level={level}")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"zram0\n", b"")
    data = real_bytes(64 * PAGE)
    assert _cli(tmp_path, "write", "zram0", data=data).returncode == 0
    assert _cli(tmp_path, "read", "zram0", "--length", str(len(data))).stdout == data
    mm = _cli(tmp_path, "attr", "zram0", "mm_stat").stdout.split()
    assert int(mm[0]) == len(data) and int(mm[1]) > 0
    io = _cli(tmp_path, "attr", "zram0", "io_stat").stdout.split()
    assert io[1] == b"0"  # failed_writes


def real_bytes(n: int) -> bytes:
    """``n`` bytes of an installed program (the interpreter), repeated if it is shorter."""
    found = [shutil.which("python3.11"), "/usr/bin/python3", os.path.realpath(sys.executable)]
    binary = max((f for f in found if f and os.path.isfile(f)), key=os.path.getsize)
    with open(binary, "rb") as f:
        data = f.read(n)
    return (data * (n // len(data) + 1))[:n]


@pytest.mark.skipif(SANITIZING, reason="command-line tests run in the ordinary suite")
@pytest.mark.parametrize(
    ("algorithm", "level", "words"),
    [("deflate", "99999", "failed to set disksize"), ("deflate", "-99999", "failed to set disksize"),
     ("deflate", "10", "failed to set disksize"), ("deflate", "-2", "failed to set disksize"),
     ("zstd", "99999999999999999999", "Numerical result out of range"),
     ("zstd", "9" * 5000, "Numerical result out of range"),
     ("deflate", "-" + "9" * 5000, "Numerical result out of range"),
     ("lz4", "2147483648", "Numerical result out of range"),
     ("zstd", "3x", "Invalid argument"), ("zstd", "-+3", "Invalid argument")],
)
def test_levels_the_kernel_refuses_fail_at_set_up(tmp_path, algorithm, level, words):
    """deflate outside -1..9 (zlib_deflateInit2), and levels that are no 32-bit number (kstrtoint):
    one line, exit 1, and no device left set up that cannot be written."""
    proc = _cli(tmp_path, "-f", "-s", "1M", "-a", algorithm, "-p", f"level={level}")
    assert proc.returncode == 1 and proc.stdout == b""
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zramctl: zram0: ") and words in lines[0], lines
    assert len(lines[0]) < 300  # the level itself is not echoed back
    listing = _cli(tmp_path, "-o", "NAME,DISKSIZE", "-b", "-n", "--raw").stdout
    assert listing in (b"", b"zram0 0\n")  # nothing set up that claims to hold data it cannot write


def test_no_silent_fallback_when_the_module_is_missing(monkeypatch):
    """Without the compiled module, choosing lzo-rle, lzo or lz4 fails and says how to fix it."""
    from zramctl.kernel import zcomp as compress

    monkeypatch.setitem(sys.modules, "zramctl.kernel._kcomp", None)  # import now fails
    for name in ("lzo-rle", "lzo", "lz4"):
        with pytest.raises(ImportError, match=r"not built: reinstall zramctl with a C compiler"):
            compress.get_backend(name)
    assert compress.get_backend("zstd").name == "zstd"  # the others do not need it


def test_zstd_and_deflate_use_the_kernels_parameters():
    """zstd: zstandard >= 0.24 (zstd 1.5.7), level 3, content size written; deflate: raw, level 6,
    a 2^11 window, memLevel 9 (backend_zstd.c, backend_deflate.c)."""
    import zlib

    import zstandard

    from zramctl.kernel.zcomp import get_backend

    assert tuple(int(x) for x in zstandard.__version__.split(".")[:2]) >= (0, 24)
    page = real_bytes(PAGE)
    zstd = get_backend("zstd")
    stream = zstd.compress(page)
    assert zstandard.get_frame_parameters(stream).content_size == PAGE
    assert stream == zstandard.ZstdCompressor(level=3, write_content_size=True).compress(page)
    assert zstd.decompress(stream) == page
    deflate = get_backend("deflate")
    c = zlib.compressobj(6, zlib.DEFLATED, -11, 9)
    assert deflate.compress(page) == c.compress(page) + c.flush()
    assert get_backend("deflate", -1).compress(page) == deflate.compress(page)  # Z_DEFAULT_COMPRESSION
    assert zlib.decompress(deflate.compress(page), -11) == page


@pytest.mark.skipif(SANITIZING, reason="command-line tests run in the ordinary suite")
@pytest.mark.parametrize("algorithm", ["lzo", "lz4"])
def test_images_written_by_the_earlier_compressors_still_read(tmp_path, monkeypatch, algorithm):
    """A device filled through python-lzo / lz4.block (what earlier versions stored) reads back
    through today's decoders in a new process, passes check --data, and keeps its counters."""
    from zramctl.cli import main as cli
    from zramctl.kernel import zcomp as compress

    def old_backend(level: int | None) -> compress.Backend:
        if algorithm == "lzo":
            return compress.Backend(
                "lzo", lambda p: lzo.compress(p, 1, False), lambda d: lzo.decompress(d, False, PAGE)
            )
        return compress.Backend(
            "lz4", lambda p: lz4.block.compress(p, store_size=False), lambda d: lz4.block.decompress(d, PAGE)
        )

    data = real_bytes(96 * PAGE)
    assert cli.main(["--root", str(tmp_path), "-f", "-s", "1M", "-a", algorithm]) == 0
    with monkeypatch.context() as m:
        m.setitem(compress._FACTORIES, algorithm, old_backend)
        src = tmp_path / "data.bin"
        src.write_bytes(data)
        assert cli.main(["--root", str(tmp_path), "write", "zram0", str(src)]) == 0
    before = _cli(tmp_path, "attr", "zram0", "mm_stat").stdout

    def stored(compress_page) -> int:  # compr_data_size: object sizes, huge pages raw
        sizes = (len(compress_page(data[i : i + PAGE])) for i in range(0, len(data), PAGE))
        return sum(PAGE if n >= 3625 else n for n in sizes)

    assert int(before.split()[1]) == stored(old_backend(None).compress) != stored(FAST[algorithm])
    assert _cli(tmp_path, "read", "zram0", "--length", str(len(data))).stdout == data
    assert _cli(tmp_path, "check", "zram0", "--data").returncode == 0
    assert _cli(tmp_path, "attr", "zram0", "mm_stat").stdout == before  # stored counters kept
