"""The compiled commit I/O (``_durable.run``) against its Python reference (``io.run_reference``).

Both run the same operation lists on two copies of the same files; the files (bytes, length,
holes), the operations done, the durable points passed and the errno must come out the same,
including a crash at any point (a torn write, then SIGKILL, in a forked child).  Bad arguments
are refused before anything is written.
"""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zramctl.image import _durable
from zramctl.image import io as image_io
from zramctl.image.io import (
    OP_ALLOCATE,
    OP_CLEAR,
    OP_PUNCH,
    OP_SHRINK,
    OP_SYNC,
    OP_TRUNCATE,
    OP_WRITE,
    CrashPoints,
    Op,
    hole_ranges,
    run_ops,
    run_reference,
)

run_compiled = _durable.run
IOV_MAX = _durable.IOV_MAX
SPAN = 64 << 10
"""Operations land within the first SPAN bytes of each file."""

# An operation with a symbolic file (0 or 1), made concrete for each side's files.
Symbolic = tuple[int, int, int, int, list[bytes] | None]


def ops_strategy() -> st.SearchStrategy[list[Symbolic]]:
    offset = st.integers(0, SPAN)
    length = st.integers(1, SPAN // 4)
    data = st.lists(st.binary(min_size=0, max_size=3000), min_size=1, max_size=6)
    f = st.integers(0, 1)
    one = st.one_of(
        st.tuples(st.just(OP_WRITE), f, offset, st.just(0), data),
        st.tuples(st.just(OP_ALLOCATE), f, offset, length, st.none()),
        st.tuples(st.just(OP_PUNCH), f, offset, length, st.none()),
        st.tuples(st.just(OP_SHRINK), f, offset, st.just(0), st.none()),
        st.tuples(st.just(OP_TRUNCATE), f, offset, st.just(0), st.none()),
        st.tuples(st.just(OP_SYNC), f, st.just(0), st.just(0), st.none()),
        st.tuples(st.just(OP_CLEAR), f, offset, st.just(0), st.none()),
    )
    return st.lists(one, max_size=12)


def concrete(ops: list[Symbolic], fds: list[int]) -> list[Op]:
    return [Op(kind, fds[f], arg, length, data) for kind, f, arg, length, data in ops]


def make_files(where: Path, seed: bytes) -> list[int]:
    fds = []
    for name in ("image", "log"):
        path = where / name
        path.write_bytes(seed)
        fds.append(os.open(path, os.O_RDWR))
    return fds


def state(fds: list[int]) -> list[tuple[bytes, int, list[tuple[int, int]]]]:
    out = []
    for fd in fds:
        size = os.fstat(fd).st_size
        out.append((os.pread(fd, size + 1, 0), size, hole_ranges(fd, 0, size)))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ops_strategy(), seed=st.binary(max_size=SPAN // 2))
def test_the_compiled_run_equals_the_reference(tmp_path_factory: pytest.TempPathFactory, ops, seed) -> None:
    sides = []
    for runner in (run_compiled, run_reference):
        where = tmp_path_factory.mktemp("side")
        fds = make_files(where, seed)
        try:
            result = runner(concrete(ops, fds), -1)
            sides.append((result, state(fds)))
        finally:
            for fd in fds:
                os.close(fd)
    assert sides[0] == sides[1]
    done, _, err = sides[0][0]
    assert (done, err) == (len(ops), 0)


def crashed(runner, ops: list[Op], crash_in: int) -> int:
    """Run ``ops`` in a forked child that crashes at its ``crash_in``-th point; its exit signal."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            runner(ops, crash_in)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0


def test_a_crash_at_every_point_leaves_the_same_files(tmp_path: Path) -> None:
    """A torn write writes the first half of its bytes (across its buffers), then SIGKILL; every
    other point dies before it acts.  Both sides leave the same files at every point."""
    seed = bytes(range(256)) * 64
    ops: list[Symbolic] = [
        (OP_ALLOCATE, 0, 16384, 8192, None),
        (OP_WRITE, 1, 0, 0, [b"a" * 100, b"b" * 301, b"c" * 7]),
        (OP_TRUNCATE, 1, 408, 0, None),
        (OP_SYNC, 1, 0, 0, None),
        (OP_WRITE, 0, 4096, 0, [b"\x01" * 4096, b"\x02" * 4096]),
        (OP_PUNCH, 0, 0, 4096, None),
        (OP_SHRINK, 0, 12288, 0, None),
        (OP_SYNC, 0, 0, 0, None),
        (OP_CLEAR, 1, 0, 0, None),
    ]
    points = 8  # every kind but TRUNCATE has one; SHRINK has one here (16 KiB + is cut to 12 KiB)
    assert run_compiled(concrete(ops, make_files(tmp_path, seed)), -1)[1] == points
    for at in range(points + 1):
        sides = []
        for k, runner in enumerate((run_compiled, run_reference)):
            where = tmp_path / f"{at}-{k}"
            where.mkdir()
            fds = make_files(where, seed)
            try:
                died = crashed(runner, concrete(ops, fds), at)
                sides.append((died, state(fds)))
            finally:
                for fd in fds:
                    os.close(fd)
        assert sides[0] == sides[1], at
        assert sides[0][0] == (signal.SIGKILL if at < points else 0)


def test_crash_points_count_across_calls(tmp_path: Path) -> None:
    """run_ops keeps CrashPoints' count: the points passed are added, whichever side runs them."""
    fds = make_files(tmp_path, b"")
    crash = CrashPoints()
    run_ops([Op(OP_SYNC, fds[0]), Op(OP_TRUNCATE, fds[0], 0), Op(OP_CLEAR, fds[1], 0)], crash)
    assert crash.count == 2
    run_ops([Op(OP_SHRINK, fds[0], 10)], crash)  # not longer than 10 bytes: no point
    assert crash.count == 2


def test_a_failure_stops_the_list_with_its_errno(tmp_path: Path) -> None:
    fds = make_files(tmp_path, b"x" * 100)
    ro = os.open(tmp_path / "image", os.O_RDONLY)
    ops = [Op(OP_WRITE, fds[0], 0, 0, [b"y"]), Op(OP_WRITE, ro, 0, 0, [b"z"]), Op(OP_CLEAR, fds[1], 0)]
    for runner in (run_compiled, run_reference):
        assert runner(ops, -1) == (1, 2, errno.EBADF)
    assert os.pread(fds[1], 10, 0) == b"x" * 10  # the CLEAR after the failure never ran
    with pytest.raises(OSError) as info:
        run_ops(ops, CrashPoints())
    assert info.value.errno == errno.EBADF


@pytest.mark.parametrize(
    "bad",
    [
        (99, 0, 0, 0, None),  # no such kind
        (OP_WRITE, 0, 0, 0, []),  # a write of nothing
        (OP_WRITE, 0, 0, 0, [b"x"] * (IOV_MAX + 1)),  # more buffers than pwritev takes
        (OP_WRITE, 0, -1, 0, [b"x"]),  # a negative offset
        (OP_PUNCH, 0, 0, -5, None),  # a negative length
        (OP_ALLOCATE, 0, (1 << 63) - 10, 100, None),  # past the largest offset
        (OP_WRITE, -1, 0, 0, [b"x"]),  # a negative fd
        (OP_WRITE, 0, 0, 0, [12]),  # not a buffer
        (OP_SYNC, 0, 0),  # not five fields
    ],
)
def test_bad_operations_are_refused_before_anything_is_done(tmp_path: Path, bad) -> None:
    fds = make_files(tmp_path, b"keep")
    first = Op(OP_WRITE, fds[0], 0, 0, [b"gone"])
    op = tuple(fds[0] if i == 1 and v == 0 else v for i, v in enumerate(bad))
    with pytest.raises((ValueError, TypeError, OverflowError)):
        run_compiled([first, op], -1)
    assert os.pread(fds[0], 10, 0) == b"keep"


def test_the_reference_is_what_the_tests_put_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests that make an os call fail swap ``_run_compiled`` for the reference: the same
    signature, so the swap changes nothing else."""
    assert image_io._run_compiled is run_compiled
    monkeypatch.setattr(image_io, "_run_compiled", run_reference)
    assert image_io._run_compiled is run_reference
