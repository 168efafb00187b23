"""Symlink, hard-to-see permission and race attacks on the store (issue 7).

The store's promise: a file is only ever opened relative to the checked root
directory, never through a symbolic link, and only if it is a regular file; a
root that someone else could write into (or owns) is refused as ssh refuses a
~/.ssh with bad modes; directories it creates are 0700 whatever the umask; two
concurrent ``-f`` never get the same device.

The cross-user tests run the unprivileged side with ``setpriv --reuid=nobody``
and skip without root (or without setpriv).
"""

from __future__ import annotations

import errno
import fcntl
import multiprocessing
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from zramctl.cli import main as cli
from zramctl.errors import ZramError
from zramctl.image.io import WAL_BLOCK, CrashPoints, LogRecord, write_log
from zramctl.store import RootError, Store, check_image, choose_root

ROOT_ONLY = os.geteuid() == 0
SETPRIV = shutil.which("setpriv")
needs_root = pytest.mark.skipif(not ROOT_ONLY, reason="needs root (to act as two users)")
needs_setpriv = pytest.mark.skipif(not (ROOT_ONLY and SETPRIV), reason="needs root and setpriv")
SECRET = b"root's secret, which no zramctl command may change\n"
NOBODY = ["--reuid=nobody", "--regid=nogroup", "--clear-groups"]


def zramctl(*args: str, user: str | None = None, umask: int | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the command line in a fresh process, as root or (``user="nobody"``) unprivileged."""
    cmd = [sys.executable, "-m", "zramctl", *args]
    if user is not None:
        assert SETPRIV is not None
        cmd = [SETPRIV, *NOBODY, *cmd]
    base = {k: v for k, v in os.environ.items() if k != "ZRAMCTL_ROOT"}
    base.update(env or {})
    base.setdefault("HOME", "/nonexistent")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=base, cwd="/",
                          preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)


@pytest.fixture
def shared() -> Iterator[Path]:
    """A root-owned 0755 directory outside pytest's 0700 tree, so that nobody can reach into it."""
    top = Path(tempfile.mkdtemp(prefix="zram-sec-", dir="/tmp"))
    os.chmod(top, 0o755)
    try:
        yield top
    finally:
        shutil.rmtree(top, ignore_errors=True)


def victim(where: Path) -> Path:
    """A root-only file (0600) with known content."""
    path = where / "secret"
    path.write_bytes(SECRET)
    os.chmod(path, 0o600)
    return path


def image_bytes(store: Store, dev: int) -> bytes:
    return store.image_path(dev).read_bytes()


def new_device(root: Path, size: str = "1M") -> Store:
    store = Store(root)
    dev = store.hot_add()
    with store.open(dev, write=True) as h:
        from zramctl.kernel import sysfs

        sysfs.store(h.zram, "disksize", size)
    return store


# --- the attack, end to end ---------------------------------------------------------


@needs_setpriv
def test_planted_log_link_in_a_users_directory_never_reaches_roots_file(shared: Path) -> None:
    """nobody sets a device up, swaps zram0.wal for a link to a root-only file; root's commands
    must leave that file alone: refused for the directory's owner, and, in a root-owned
    directory, refused for the link itself."""
    secret = victim(shared)
    r = shared / "r"
    r.mkdir(mode=0o700)
    os.chown(r, 65534, 65534)
    made = zramctl("--root", str(r), "-f", "-s", "1M", user="nobody")
    assert (made.returncode, made.stdout) == (0, "zram0\n"), made.stderr
    (r / "zram0.wal").unlink()
    os.symlink(secret, r / "zram0.wal")  # as nobody would (root planting it changes nothing)
    os.lchown(r / "zram0.wal", 65534, 65534)

    res = zramctl("--root", str(r))
    assert res.returncode == 1
    assert res.stderr == (
        f"zramctl: {r}: bad ownership: directory is owned by nobody (uid 65534), not by you or root; "
        f"use a directory of your own, or run: chown root {r}\n"
    )
    assert secret.read_bytes() == SECRET

    os.chown(r, 0, 0)  # even in a root-owned directory, the planted link is refused
    os.chmod(r, 0o755)
    for args in (["--root", str(r)], ["--root", str(r), "zram0"], ["--root", str(r), "write", "zram0"],
                 ["--root", str(r), "-s", "2M", "zram0"], ["--root", str(r), "discard", "zram0"]):
        res = subprocess.run([sys.executable, "-m", "zramctl", *args], input="x", capture_output=True,
                             text=True, timeout=120, cwd="/")
        assert res.returncode == 1, args
        assert "zram0.wal is a symbolic link; refusing to follow it" in res.stderr, (args, res.stderr)
        assert "Traceback" not in res.stderr
        assert secret.read_bytes() == SECRET, args
    assert os.path.islink(r / "zram0.wal")


# --- a link (or a non-file) at every name the store uses ------------------------------------------


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory"])
def test_log_name_holding_no_regular_file_is_refused(tmp_path: Path, kind: str) -> None:
    secret = victim(tmp_path)
    store = new_device(tmp_path / "r")
    wal = store.wal_path(0)
    wal.unlink()
    if kind == "symlink":
        os.symlink(secret, wal)
    elif kind == "fifo":
        os.mkfifo(wal)
    else:
        wal.mkdir()
    for write in (False, True):
        with pytest.raises(ZramError) as info:
            Store(store.root).open(0, write=write, timeout=2)
        detail = "is a symbolic link; refusing to follow it" if kind == "symlink" else "is not a regular file"
        assert detail in str(info.value.detail)
    assert secret.read_bytes() == SECRET


def test_image_link_is_refused_and_reset_through_it_leaves_the_other_image_alone(tmp_path: Path) -> None:
    """-r through zram0.img -> another root's image must not reset (or delete) that image."""
    other = new_device(tmp_path / "other")
    with other.open(0, write=True) as h:
        h.zram.write(0, b"\x5a" * 8192 + os.urandom(8192))
    before = image_bytes(other, 0)
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    os.symlink(other.image_path(0), mine / "zram0.img")
    res = zramctl("--root", str(mine), "-r", "zram0")
    assert res.returncode == 1
    assert "zram0: failed to reset" in res.stderr and "zram0.img is a symbolic link" in res.stderr
    res = zramctl("--root", str(mine))
    assert res.returncode == 1 and "zram0.img is a symbolic link; refusing to follow it" in res.stderr
    for args in (["read", "zram0"], ["write", "zram0"], ["hot-remove", "zram0"], ["-s", "1M", "zram0"]):
        res = zramctl("--root", str(mine), *args)
        assert res.returncode == 1 and "Traceback" not in res.stderr, (args, res.stderr)
    assert image_bytes(other, 0) == before
    assert os.path.islink(mine / "zram0.img")
    assert check_image((other, 0), data=True) == []


def test_hot_add_removes_a_planted_temporary_link_and_never_writes_through_it(tmp_path: Path) -> None:
    """The temporary image is created O_EXCL|O_NOFOLLOW: a link at its name is removed, not followed."""
    secret = victim(tmp_path)
    root = tmp_path / "r"
    root.mkdir(mode=0o700)
    for dev in range(3):
        os.symlink(secret, root / f".zram{dev}.img.{os.getpid()}.tmp")
    store = Store(root)
    assert [store.hot_add() for _ in range(3)] == [0, 1, 2]
    assert secret.read_bytes() == SECRET
    for dev in range(3):
        st = os.lstat(store.image_path(dev))
        assert stat.S_ISREG(st.st_mode) and st.st_nlink == 1
        assert not os.path.samefile(store.image_path(dev), secret)
        assert not (root / f".zram{dev}.img.{os.getpid()}.tmp").exists()


def test_hot_add_replaces_a_planted_log_link_with_a_fresh_log(tmp_path: Path) -> None:
    secret = victim(tmp_path)
    root = tmp_path / "r"
    root.mkdir(mode=0o700)
    os.symlink(secret, root / "zram0.wal")
    res = zramctl("--root", str(root), "-f", "-s", "1M")
    assert (res.returncode, res.stdout, res.stderr) == (0, "zram0\n", "")
    assert secret.read_bytes() == SECRET
    wal = os.lstat(root / "zram0.wal")
    assert stat.S_ISREG(wal.st_mode) and wal.st_size == 0


@needs_setpriv
def test_unprivileged_links_at_every_name_in_a_root_owned_root(shared: Path) -> None:
    """Root's directory, but a name inside it holding a link planted earlier by nobody (through a
    window when the directory was theirs): every command refuses; the target is intact."""
    secret = victim(shared)
    r = shared / "r"
    r.mkdir(mode=0o755)
    store = new_device(r)
    for name in ("zram0.img", "zram0.wal"):
        keep = r / (name + ".keep")
        os.rename(r / name, keep)
        os.symlink(secret, r / name)
        commands = ([], ["zram0"], ["-s", "2M", "zram0"], ["attr", "zram0", "reset", "1"])
        for args in (*commands, ["compact", "zram0"]):
            res = zramctl("--root", str(r), *args)
            assert res.returncode == 1, (name, args)
            assert f"{name} is a symbolic link" in res.stderr, (name, args, res.stderr)
            assert secret.read_bytes() == SECRET
        os.unlink(r / name)
        os.rename(keep, r / name)
    assert check_image((store, 0), data=True) == []


# --- the root's own permissions -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "who"),
    [(0o777, "group and others"), (0o757, "others"), (0o770, "its group"), (0o1777, "group and others")],
)
def test_root_writable_by_others_is_refused_with_the_fix(tmp_path: Path, mode: int, who: str) -> None:
    root = tmp_path / "r"
    new_device(root)
    os.chmod(root, mode)
    res = zramctl("--root", str(root))
    assert (res.returncode, res.stdout) == (1, "")
    assert res.stderr == (f"zramctl: {root}: bad permissions: directory is writable by {who}; "
                          f"run: chmod go-w {root}\n")
    res = zramctl("--root", str(root), "stat", "zram0")
    assert res.returncode == 1 and "bad permissions" in res.stderr
    os.chmod(root, 0o700)
    assert zramctl("--root", str(root)).returncode == 0


def test_a_writable_directory_above_the_root_is_refused_unless_sticky(tmp_path: Path) -> None:
    above = tmp_path / "above"
    root = above / "r"
    new_device(root)
    os.chmod(above, 0o777)
    res = zramctl("--root", str(root))
    assert res.returncode == 1
    assert res.stderr == (f"zramctl: {root}: bad permissions: {above} above it is writable by group and "
                          f"others; run: chmod go-w {above}\n")
    os.chmod(above, 0o1777)  # sticky, as /tmp: nobody else may rename r
    assert zramctl("--root", str(root)).returncode == 0


@needs_setpriv
def test_unprivileged_user_refuses_a_root_owned_by_someone_else(shared: Path) -> None:
    r = shared / "r"
    r.mkdir(mode=0o755)
    os.chown(r, 1, 1)  # daemon
    res = zramctl("--root", str(r), user="nobody")
    assert res.returncode == 1 and f"{r}: bad ownership: directory is owned by" in res.stderr


@needs_root
def test_root_may_use_its_own_directory_and_a_user_may_use_a_root_owned_one(shared: Path) -> None:
    r = shared / "r"
    r.mkdir(mode=0o755)
    assert zramctl("--root", str(r), "-f", "-s", "1M").stdout == "zram0\n"
    if SETPRIV:
        os.chmod(r / "zram0.img", 0o644)
        os.chmod(r / "zram0.wal", 0o644)
        res = zramctl("--root", str(r), "--raw", "-n", "-o", "NAME,DISKSIZE", "--bytes", user="nobody")
        assert (res.returncode, res.stdout, res.stderr) == (0, "zram0 1048576\n", "")


@needs_setpriv
def test_a_reader_who_may_not_write_is_told_a_commit_is_pending(shared: Path) -> None:
    """Not "Bad file descriptor": who can complete it, and where it is."""
    r = shared / "r"
    r.mkdir(mode=0o755)
    store = new_device(r)
    head = store.image_path(0).read_bytes()[:4096]
    write_log(store.wal_path(0), 99, [LogRecord(WAL_BLOCK, 0, head)], CrashPoints())
    os.chmod(r / "zram0.img", 0o644)
    os.chmod(r / "zram0.wal", 0o644)
    res = zramctl("--root", str(r), "zram0", user="nobody")
    assert res.returncode == 1
    assert res.stderr == ("zramctl: zram0: open: Permission denied (an interrupted commit in zram0.wal must "
                          "first be completed by a user who may write zram0.img)\n")
    assert zramctl("--root", str(r), "zram0").returncode == 0  # root completes it
    assert os.stat(r / "zram0.wal").st_size == 0
    res = zramctl("--root", str(r), "zram0", "--raw", "-n", "-o", "NAME", user="nobody")
    assert (res.returncode, res.stdout) == (0, "zram0\n")


# --- created directories, umask, the empty root ---------------------------------------------------


def test_created_directories_are_0700_under_umask_000(tmp_path: Path) -> None:
    root = tmp_path / "a" / "b" / "c"
    res = zramctl("--root", str(root), "-f", "-s", "1M", umask=0)
    assert (res.returncode, res.stdout, res.stderr) == (0, "zram0\n", "")
    for d in (tmp_path / "a", tmp_path / "a" / "b", root):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700, d
    for f in ("zram0.img", "zram0.wal"):
        assert stat.S_IMODE(os.stat(root / f).st_mode) == 0o600
    res = zramctl("hot-add", env={"ZRAMCTL_ROOT": str(tmp_path / "x" / "y")}, umask=0o277)
    assert res.returncode == 0, res.stderr
    assert stat.S_IMODE(os.stat(tmp_path / "x").st_mode) == 0o700


def test_an_empty_root_is_refused_alike_from_the_option_and_the_environment(tmp_path: Path) -> None:
    with pytest.raises(RootError):
        choose_root("")
    with pytest.raises(RootError):
        choose_root(None, {"ZRAMCTL_ROOT": ""})
    assert choose_root(None, {"ZRAMCTL_ROOT": str(tmp_path)}) == tmp_path
    assert choose_root(str(tmp_path / "o"), {"ZRAMCTL_ROOT": ""}) == tmp_path / "o"
    env = {"HOME": str(tmp_path)}
    for args, extra in ((["--root", ""], {}), ([], {"ZRAMCTL_ROOT": ""}), (["--root", "", "hot-add"], {}),
                        (["hot-add"], {"ZRAMCTL_ROOT": ""}), (["hot-add", "--root", ""], {})):
        res = zramctl(*args, env={**env, **extra})
        assert res.returncode == 1, (args, extra)
        assert res.stderr in ("zramctl: option --root needs a directory name, not ''\n",
                              "zramctl: ZRAMCTL_ROOT is set but empty; unset it or name a directory\n")
    assert not (tmp_path / ".local").exists()  # the default directory was never touched


# --- no device handed out twice --------------------------------------------------------------------

WORKERS = 8
ROUNDS = 50


def _finder(root_of: list[str], me: int, start: multiprocessing.synchronize.Barrier, out: Path) -> None:
    """One of the concurrent -f callers: one `zramctl -f -s 1M` per round, its stdout to a file."""
    for k, root in enumerate(root_of):
        start.wait()
        with open(out / f"{k}.{me}", "w") as f:
            sys.stdout = f
            code = cli.main(["--root", root, "-f", "-s", "1M"])
            f.write(f"rc={code}\n")
    os._exit(0)


def test_concurrent_find_never_hands_out_a_device_twice(tmp_path: Path) -> None:
    """8 processes run -f at once, 50 rounds, while a reader holds a shared lock on zram0.img
    (as ``flock -s R/zram0.img sleep`` does): every round, 8 distinct devices."""
    ctx = multiprocessing.get_context("fork")
    roots = []
    for k in range(ROUNDS):
        root = tmp_path / f"r{k}"
        Store(root).hot_add()
        roots.append(str(root))
    out = tmp_path / "out"
    out.mkdir()
    start = ctx.Barrier(WORKERS + 1)
    procs = [ctx.Process(target=_finder, args=(roots, me, start, out)) for me in range(WORKERS)]
    for p in procs:
        p.start()
    try:
        for root in roots:
            fd = os.open(os.path.join(root, "zram0.img"), os.O_RDONLY)
            fcntl.flock(fd, fcntl.LOCK_SH)
            start.wait(timeout=60)
            time.sleep(0.05)  # the callers' look at zram0 happens under our shared lock
            os.close(fd)
    finally:
        for p in procs:
            p.join(timeout=120)
            if p.is_alive():
                p.kill()
    for k in range(ROUNDS):
        got = [(out / f"{k}.{me}").read_text().split() for me in range(WORKERS)]
        assert all(g[-1] == "rc=0" for g in got), got
        names = [g[0] for g in got]
        assert sorted(names) == [f"zram{i}" for i in range(WORKERS)], (k, names)


def test_find_moves_on_when_its_device_was_taken_meanwhile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """The choice is checked again under the exclusive lock: a device set up by someone else
    between the look and the lock is left alone."""
    store = Store(tmp_path)
    store.hot_add()
    real = Store.open

    def racing(self: Store, dev: int, *, write: bool, timeout: float = 10.0):  # type: ignore[no-untyped-def]
        if write and dev == 0 and not racing.done:  # type: ignore[attr-defined]
            racing.done = True  # type: ignore[attr-defined]
            with real(self, 0, write=True) as h:  # another -f wins zram0 just before our lock
                from zramctl.kernel import sysfs

                sysfs.store(h.zram, "disksize", "4M")
        return real(self, dev, write=write, timeout=timeout)

    racing.done = False  # type: ignore[attr-defined]
    monkeypatch.setattr(Store, "open", racing)
    assert cli.main(["--root", str(tmp_path), "-f", "-s", "1M"]) == 0
    assert capsys.readouterr().out == "zram1\n"
    monkeypatch.undo()
    with Store(tmp_path).open(0, write=False) as h:
        assert h.zram.config.disksize == 4 << 20  # not reset by the second caller


def test_errno_of_refusals() -> None:
    """The refusals carry errnos a script can tell apart."""
    assert RootError(errno.EPERM, "/x", "bad permissions").errno == errno.EPERM
    assert str(RootError(errno.EPERM, "/x", "bad permissions")) == "/x: bad permissions"


def test_a_root_that_cannot_be_a_directory_is_said_so(tmp_path: Path) -> None:
    """Not "no free zram device found" (-f) nor a bare errno (hot-add): the directory is named."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    for root, words in ((blocker, "not a directory"),
                        (blocker / "r", "cannot create the device directory: Not a directory")):
        for args in (["-f"], ["-f", "-s", "1M"], ["hot-add"], []):
            res = zramctl("--root", str(root), *args)
            if not args and words != "not a directory":
                assert (res.returncode, res.stderr) == (0, "")  # nothing there: no devices to list
                continue
            assert (res.returncode, res.stderr) == (1, f"zramctl: {root}: {words}\n"), args


# --- the backing file (issue 11) -----------------------------------------------------------------

def _pp_device(root: Path, backing: Path) -> Store:
    """A 6.18 device whose backing file is ``backing``, with pages written back (idle, then all)."""
    from zramctl.kernel import sysfs

    store = Store(root)
    store.hot_add()
    with store.open(0, write=True) as h:
        sysfs.store(h.zram, "backing_dev", str(backing))
        sysfs.store(h.zram, "disksize", "1M")
        for i in range(8):
            h.zram.write(i * 4096, bytes([i + 1]) * 100 + os.urandom(3996))
        sysfs.store(h.zram, "writeback", "huge")
        assert h.zram.stats.bd_count == 8
    return store


def test_a_link_planted_as_the_backing_file_is_refused(tmp_path: Path) -> None:
    from zramctl.kernel import sysfs

    victim = tmp_path / "roots-file"
    victim.write_bytes(SECRET * 100)
    link = tmp_path / "backing"
    link.symlink_to(victim)
    store = Store(tmp_path / "r")
    store.hot_add()
    with store.open(0, write=True) as h, pytest.raises(ZramError) as e:
        sysfs.store(h.zram, "backing_dev", str(link))
    assert e.value.errno == errno.ELOOP and "symbolic link" in str(e.value.detail)
    assert victim.read_bytes() == SECRET * 100


def test_a_link_swapped_in_after_setup_is_never_followed(tmp_path: Path) -> None:
    """The image records a path; a link put there later is refused when the file is next opened."""
    backing = tmp_path / "backing"
    backing.write_bytes(bytes(32 * 4096))
    store = _pp_device(tmp_path / "r", backing)
    victim = tmp_path / "roots-file"
    victim.write_bytes(SECRET * 100)
    backing.unlink()
    backing.symlink_to(victim)
    with store.open(0, write=True) as h:
        with pytest.raises(ZramError) as e:
            h.zram.read(0, 4096)
        assert e.value.errno == errno.EIO and str(backing) in str(e.value.detail)
        h.zram.write(0, bytes(4096))  # what needs no backing file still works
    assert victim.read_bytes() == SECRET * 100


def test_two_devices_never_share_a_backing_file(tmp_path: Path) -> None:
    from zramctl.kernel import sysfs

    backing = tmp_path / "backing"
    backing.write_bytes(bytes(32 * 4096))
    store = _pp_device(tmp_path / "r", backing)
    store.hot_add()
    with store.open(0, write=False) as h0:
        h0.zram.read(0, 4096)  # device 0 has its backing file open
        with store.open(1, write=True) as h1, pytest.raises(ZramError) as e:
            sysfs.store(h1.zram, "backing_dev", str(backing))
        assert e.value.errno == errno.EBUSY
    # Another command holding the file (flock) is refused alike, and device 0 says whose file.
    fd = os.open(backing, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with store.open(0, write=True) as h:
            with pytest.raises(ZramError) as e:
                h.zram.read(0, 4096)
            assert e.value.errno == errno.EIO and "in use" in str(e.value.detail)
            assert h.zram.stats.bd_count == 8  # status and counters need no backing file
    finally:
        os.close(fd)


def test_a_damaged_written_back_page_is_an_error_never_data(tmp_path: Path) -> None:
    backing = tmp_path / "backing"
    backing.write_bytes(bytes(32 * 4096))
    store = _pp_device(tmp_path / "r", backing)
    with store.open(0, write=False) as h:
        blk = h.zram.table[3][1]
    with open(backing, "r+b") as f:
        f.seek(blk * 4096 + 10)
        f.write(b"\xff")
    with store.open(0, write=False) as h:
        with pytest.raises(ZramError) as e:
            h.zram.read(3 * 4096, 4096)
        assert e.value.errno == errno.EIO and "checksum" in str(e.value.detail)
    problems = check_image((store, 0))
    assert any(f"block {blk}" in p and "checksum" in p for p in problems)


def test_a_crafted_written_back_entry_is_euclean(tmp_path: Path) -> None:
    """A leaf rewritten with a valid checksum but a written-back entry naming block 0 (or a
    bit no kind uses): the leaf is refused, never read as a page."""
    from zramctl.image import format as fmt

    backing = tmp_path / "backing"
    backing.write_bytes(bytes(32 * 4096))
    store = _pp_device(tmp_path / "r", backing)
    with store.open(0, write=False) as h:
        leaf = h.image.state.table.radix.lookup(0)
    path = store.image_path(0)
    for damage in (fmt.E_BLOCK.in_place, fmt.E_SIZE.put(1)):
        data = bytearray(path.read_bytes())
        block = data[leaf * 4096 : (leaf + 1) * 4096]
        v = int.from_bytes(block[16:32], "little")  # page 1's entry: written back
        assert fmt.E_KIND.get(v) == fmt.KIND_WB
        v = v & ~damage if damage == fmt.E_BLOCK.in_place else v | damage
        block[16:32] = v.to_bytes(16, "little")
        data[leaf * 4096 : (leaf + 1) * 4096] = fmt.seal(leaf, fmt.TYPE_TABLE, bytes(block[: fmt.PAYLOAD]))
        saved = path.read_bytes()
        path.write_bytes(bytes(data))
        with store.open(0, write=False) as h, pytest.raises(ZramError) as e:
            h.zram.read(4096, 4096)
        assert e.value.errno == errno.EUCLEAN and "entry 1" in str(e.value.detail)
        path.write_bytes(saved)


# --- the backing file's claim: one owner across commands and roots ----------------------------------


def _claim(backing: Path) -> object:
    from zramctl.image.backing import decode_claim

    return decode_claim(backing.read_bytes()[:4096])


def _image_id(store: Store, dev: int = 0) -> bytes:
    with store.open(dev, write=False) as h:
        return h.image.header.image_id


def _set_backing(store: Store, dev: int, backing: Path) -> None:
    from zramctl.kernel import sysfs

    with store.open(dev, write=True) as h:
        sysfs.store(h.zram, "backing_dev", str(backing))


def test_the_reproduction_a_second_device_is_refused_and_the_first_keeps_its_pages(tmp_path: Path) -> None:
    """The lead's reproduction, on the command line: zram1 was accepted, and its writeback
    overwrote zram0's written-back pages."""
    root = tmp_path / "root"
    backing = tmp_path / "backing.img"
    backing.touch()
    os.truncate(backing, 1 << 20)  # truncate -s 1M: zeros
    env = {"ZRAMCTL_ROOT": str(root)}
    first = zramctl("-f", "-s", "8M", "--writeback-device", str(backing), env=env)
    assert first.returncode == 0 and first.stdout == "zram0\n", first.stderr
    store = Store(root)
    data = [os.urandom(4096) for _ in range(8)]
    with store.open(0, write=True) as h:
        for i, page in enumerate(data):
            h.zram.write(i * 4096, page)
    wb = zramctl("writeback", "zram0", "--huge", env=env)
    assert wb.returncode == 0, wb.stderr
    second = zramctl("-f", "-s", "8M", "--writeback-device", str(backing), env=env)
    assert second.returncode != 0
    lines = second.stderr.splitlines()
    assert len(lines) == 1, second.stderr
    assert os.strerror(errno.EBUSY) in lines[0]
    assert str(store.image_path(0)) in lines[0]
    assert f"dd if=/dev/zero of={backing} bs=4096 count=1 conv=notrunc" in lines[0]
    with store.open(0, write=False) as h:
        assert h.zram.stats.bd_count == len(data)
        assert h.zram.read(0, len(data) * 4096) == b"".join(data)
        assert h.zram.stats.bd_reads == len(data)


def test_a_claim_survives_between_commands_and_names_its_image(tmp_path: Path) -> None:
    from zramctl.image.backing import Owner

    backing = tmp_path / "backing"
    backing.write_bytes(bytes(32 * 4096))
    store = _pp_device(tmp_path / "r", backing)
    claim = _claim(backing)
    assert isinstance(claim, Owner)
    assert claim.image_id == _image_id(store) and any(claim.image_id)
    assert claim.path == str(store.image_path(0))
    store.hot_add()
    with pytest.raises(ZramError) as e:
        _set_backing(store, 1, backing)
    assert e.value.errno == errno.EBUSY and str(store.image_path(0)) in str(e.value.detail)
    with store.open(0, write=True) as h:  # its owner still writes back to it
        h.zram.write(20 * 4096, os.urandom(4096))
        from zramctl.kernel import sysfs

        sysfs.store(h.zram, "writeback", "page_index=20")
        assert h.zram.stats.bd_count == 9


def test_two_roots_never_share_a_backing_file(tmp_path: Path) -> None:
    backing = tmp_path / "backing"
    backing.write_bytes(bytes(32 * 4096))
    store = _pp_device(tmp_path / "one", backing)
    other = Store(tmp_path / "two")
    other.hot_add()
    with pytest.raises(ZramError) as e:
        _set_backing(other, 0, backing)
    assert e.value.errno == errno.EBUSY and str(store.image_path(0)) in str(e.value.detail)
    with store.open(0, write=False) as h:
        assert h.zram.read(0, 4096)[:100] == bytes([1]) * 100


@pytest.mark.parametrize("opened", [False, True], ids=["untouched", "opened"])
def test_reset_releases_the_claim_so_another_device_can_take_the_file(tmp_path: Path, opened: bool) -> None:
    """Whether or not the resetting command opened the backing file (a read of a written-back
    page opens it), the claim is cleared after the reset's commit."""
    from zramctl.image.backing import Owner
    from zramctl.kernel import sysfs

    backing = tmp_path / "backing"
    backing.write_bytes(bytes(32 * 4096))
    store = _pp_device(tmp_path / "r", backing)
    store.hot_add()
    with store.open(0, write=True) as h:
        if opened:
            h.zram.read(0, 4096)
        sysfs.store(h.zram, "reset", "1")
        assert isinstance(_claim(backing), Owner)  # not before the commit
    assert _claim(backing) is None
    _set_backing(store, 1, backing)
    claim = _claim(backing)
    assert isinstance(claim, Owner) and claim.image_id == _image_id(store, 1)


def test_hot_remove_releases_the_claim_so_another_device_can_take_the_file(tmp_path: Path) -> None:
    """The kernel's hot_remove resets the device, which lets its backing device go: removing a
    device clears its claim (after the image is gone), so the file needs no dd to be reused."""
    from zramctl.image.backing import Owner

    backing = tmp_path / "backing"
    backing.write_bytes(bytes(32 * 4096))
    store = _pp_device(tmp_path / "r", backing)
    assert isinstance(_claim(backing), Owner)
    store.hot_remove(0)
    assert _claim(backing) is None
    store.hot_add()
    _set_backing(store, 0, backing)
    claim = _claim(backing)
    assert isinstance(claim, Owner) and claim.image_id == _image_id(store, 0)


def test_a_backing_dev_never_committed_leaves_no_claim(tmp_path: Path) -> None:
    from zramctl.kernel import sysfs

    backing = tmp_path / "backing"
    backing.write_bytes(bytes(8 * 4096))
    store = Store(tmp_path / "r")
    store.hot_add()
    with pytest.raises(RuntimeError), store.open(0, write=True) as h:
        sysfs.store(h.zram, "backing_dev", str(backing))
        assert _claim(backing) is not None
        raise RuntimeError("the command fails before its commit")
    assert _claim(backing) is None


def test_a_stale_claim_is_refused_with_the_dd_that_clears_it(tmp_path: Path) -> None:
    """The owner's image is gone (its file deleted behind zramctl's back, so nothing released
    the claim): refused, naming it; the dd in the message clears the claim, and the file can
    then be taken."""
    backing = tmp_path / "backing"
    backing.write_bytes(bytes(32 * 4096))
    store = _pp_device(tmp_path / "r", backing)
    gone = str(store.image_path(0))
    os.unlink(gone)
    store.hot_add()
    with pytest.raises(ZramError) as e:
        _set_backing(store, 0, backing)
    detail = str(e.value.detail)
    assert e.value.errno == errno.EBUSY and gone in detail and len(detail.splitlines()) == 1
    dd = detail[detail.index("dd if=") :].split()
    assert subprocess.run(dd, capture_output=True).returncode == 0
    assert len(backing.read_bytes()) == 32 * 4096  # conv=notrunc: only block 0 changed
    _set_backing(store, 0, backing)
    assert _claim(backing) is not None


def test_a_file_with_other_data_in_block_0_is_never_taken(tmp_path: Path) -> None:
    backing = tmp_path / "backing"
    content = b"someone's data\n" * 300 + bytes(32 * 4096)
    backing.write_bytes(content[: 32 * 4096])
    store = Store(tmp_path / "r")
    store.hot_add()
    with pytest.raises(ZramError) as e:
        _set_backing(store, 0, backing)
    assert e.value.errno == errno.EBUSY and "other data" in str(e.value.detail)
    assert backing.read_bytes() == content[: 32 * 4096]
    with store.open(0, write=False) as h:
        assert h.zram.config.backing_dev is None


@pytest.mark.parametrize("offset", [20, 40, 600], ids=["owner", "path", "past-the-record"])
def test_a_damaged_claim_is_never_trusted_even_by_its_owner(tmp_path: Path, offset: int) -> None:
    """A damaged claim is not ours: the owner's writeback fails EBUSY (its pages still read),
    another device is refused, and block 0 is never rewritten."""
    from zramctl.kernel import sysfs

    backing = tmp_path / "backing"
    backing.write_bytes(bytes(32 * 4096))
    store = _pp_device(tmp_path / "r", backing)
    data = bytearray(backing.read_bytes())
    data[offset] ^= 0x01
    backing.write_bytes(bytes(data))
    with store.open(0, write=True) as h:
        assert h.zram.read(0, 4096)[:100] == bytes([1]) * 100
        h.zram.write(20 * 4096, os.urandom(4096))
        with pytest.raises(ZramError) as e:
            sysfs.store(h.zram, "writeback", "page_index=20")
        assert e.value.errno == errno.EBUSY and "damaged" in str(e.value.detail)
        assert h.zram.stats.bd_count == 8
    store.hot_add()
    with pytest.raises(ZramError) as e:
        _set_backing(store, 1, backing)
    assert e.value.errno == errno.EBUSY and "damaged" in str(e.value.detail)
    assert backing.read_bytes() == bytes(data)


def test_another_images_claim_stops_writeback_but_not_reads(tmp_path: Path) -> None:
    """Device 0's claim was cleared by hand and device 1 took the file: device 0 reads its
    pages (CRC-checked) and its writeback fails EBUSY, naming device 1."""
    from zramctl.kernel import sysfs

    backing = tmp_path / "backing"
    backing.write_bytes(bytes(32 * 4096))
    store = _pp_device(tmp_path / "r", backing)
    with open(backing, "r+b") as f:
        f.write(bytes(4096))
    store.hot_add()
    _set_backing(store, 1, backing)
    with store.open(0, write=True) as h:
        assert h.zram.read(7 * 4096, 4096)[:100] == bytes([8]) * 100
        h.zram.write(20 * 4096, os.urandom(4096))
        with pytest.raises(ZramError) as e:
            sysfs.store(h.zram, "writeback", "page_index=20")
        assert e.value.errno == errno.EBUSY and str(store.image_path(1)) in str(e.value.detail)


def test_a_file_recorded_before_claims_is_claimed_by_its_device_and_not_by_a_reader(tmp_path: Path) -> None:
    """Block 0 zero under a device that records the file (written before claims existed): a
    reader leaves it alone; the device's next writer claims it, and another device is refused."""
    from zramctl.image.backing import Owner

    backing = tmp_path / "backing"
    backing.write_bytes(bytes(32 * 4096))
    store = _pp_device(tmp_path / "r", backing)
    with open(backing, "r+b") as f:
        f.write(bytes(4096))
    with store.open(0, write=False) as h:
        h.zram.read(0, 4096)
    assert _claim(backing) is None
    with store.open(0, write=True) as h:
        h.zram.read(0, 4096)
    claim = _claim(backing)
    assert isinstance(claim, Owner) and claim.image_id == _image_id(store)
    store.hot_add()
    with pytest.raises(ZramError):
        _set_backing(store, 1, backing)


def test_an_image_without_an_id_is_given_one_when_next_written(tmp_path: Path) -> None:
    """image_id is zero in an image written before it existed; a writer gives it one, kept."""
    from zramctl.image import format as fmt

    store = new_device(tmp_path / "r")
    path = store.image_path(0)
    data = bytearray(path.read_bytes())
    h = fmt.decode_header(bytes(data[:4096]))
    assert any(h.image_id)
    h.image_id = bytes(fmt.IMAGE_ID_SIZE)
    data[:4096] = fmt.encode_header(h)
    path.write_bytes(bytes(data))
    assert not any(_image_id(store))  # a reader leaves it as it is
    with store.open(0, write=True) as hd:
        hd.zram.write(0, os.urandom(4096))
    given = _image_id(store)
    assert any(given)
    with store.open(0, write=True) as hd:
        from zramctl.kernel import sysfs

        sysfs.store(hd.zram, "reset", "1")
    assert _image_id(store) == given
