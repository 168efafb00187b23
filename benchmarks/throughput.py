#!/usr/bin/env python3
"""Issue 10's targets, measured side by side in one run on the same data: the kernel, zramctl, the engine.

The data is ``tools/make-corpus mixed`` (``--size``, 256 MiB by default), made once in
the temporary directory and used for every figure; the output names it (with the start
of its SHA-256).  For each algorithm (``-a``, default lzo-rle and lz4):

- **the kernel** (where /sys/block/zram0 is writable, unless ``--no-kernel``): the
  corpus written to a freshly set-up zram0 (disksize = the corpus) in 1 MiB
  ``O_DIRECT`` writes from a page-aligned copy of it in memory, by one writer, and by
  two threads writing a half each (``pwrite`` runs without the GIL, so they run on both
  cores as two processes would); then read back by one reader, ``O_DIRECT``, 1 MiB at a
  time.  Done as ``tools/kernel-oracle`` does it (its code is imported): an exclusive
  flock on /tmp/kernel-oracle.lock, a device in use (disksize != 0) is refused and left
  alone, and zram0 is reset at the end whatever happens (an error, SIGINT, SIGTERM, SIGHUP);
- **zramctl**, run as a user runs it (the ``zramctl`` beside this Python, else on PATH):
  ``zramctl --root DIR -f -s SIZE -a ALG -t T`` (not timed), then ``zramctl write DEV FILE``
  timed as a whole command (start-up and the commit included), with ``-t 1`` and ``-t 2``;
  then ``zramctl read DEV > /dev/null``.  The images live under ``--tmp`` (/var/tmp by
  default; the output names the file system, which should be a local disk, not tmpfs);
- **the in-memory engine** (``Zram``, set up through ``sysfs.store`` of comp_algorithm
  and disksize), one stream, 4 MiB calls as ``zramctl write`` and ``read`` make them
  (``write``, and ``read_into`` one reused buffer), beside the **bounds**: a loop that only
  compresses (decompresses) the same 4 KiB pages with ``compress.get_backend(alg)``, and
  nothing else.

Then, with the first algorithm:

- **a pipe into write**: ``--pipe-size`` bytes (1 GiB; the corpus repeated) from
  ``cat FILE |`` into ``zramctl write DEV`` beside ``zramctl write DEV FILE`` on a fresh
  device each, alternated: MB/s (best of ``--repeat``), the peak RSS of the zramctl
  process (``/usr/bin/time -f %M``, its ``wait4`` figure; else VmHWM sampled every 50 ms),
  and the temporary space it used: zramctl runs with TMPDIR set to a directory of its own,
  and the files it holds open there are sampled every 50 ms (a spool file is unlinked, so
  this is the way to see it); the peak RSS and space are the most of any run;
- **a status listing** (``zramctl --root DIR`` with those two devices) beside
  ``python -c "import typer"`` with the same Python, median of ``--runs``, alternated.
  zramctl's modules are byte-compiled before any command runs (``compileall``), as
  installing a wheel does and as typer's are: an editable install never compiles them,
  and with PYTHONDONTWRITEBYTECODE set every command would compile its ~40 modules afresh
  (35 ms of a 64 MiB write), which measures the checkout, not the tool;
- **a 4 KiB write command** (``zramctl write DEV PAGE --offset X``, X a random page) on
  the device the pipe filled beside the same on an empty device of the same size,
  median of ``--runs``, alternated.

Each figure is printed as a ratio beside its target and the raw figures.  "-t 2 vs the
kernel" is read as the issue writes it: against the kernel's *single*-writer speed (the
two-writer ratio is printed too, for information).  MB is 10^6 bytes; each throughput is
the best of ``--repeat`` runs.  ``--json FILE`` saves every figure.  It never asserts:
the targets are printed, not checked (tests/test_benchmarks.py runs a tiny version).

usage: .venv/bin/python benchmarks/throughput.py [--size 256M] [-a lzo-rle,lz4] [--repeat 3]
       [--pipe-size 1G] [--runs 9] [--tmp /var/tmp] [--no-kernel] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib.machinery
import importlib.util
import json
import mmap
import os
import random
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from zramctl.kernel import sysfs  # noqa: E402
from zramctl.kernel.zcomp import get_backend  # noqa: E402
from zramctl.kernel.zram_drv import Zram  # noqa: E402

PROG = "throughput"
PAGE = 4096
CHUNK = 4 << 20  # bytes per engine call, as zramctl write/read
WRITE_T2_TARGET = 0.8  # issue 10: zramctl write -t 2 / the kernel's single writer
DIRECT_CHUNK = 1 << 20  # bytes per O_DIRECT write/read to /dev/zram0
MAKE_CORPUS = ROOT / "tools" / "make-corpus"
KERNEL_ORACLE = ROOT / "tools" / "kernel-oracle"
LOCK = "/tmp/kernel-oracle.lock"
SYS = Path("/sys/block/zram0")
DEV = Path("/dev/zram0")
SAMPLE = 0.05  # seconds between samples of a process's temporary files
TIME = "/usr/bin/time"  # GNU time: -f %M is the peak RSS in KiB


class BenchError(Exception):
    """Something stopped the benchmark: one line, exit 1."""


class Signalled(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def parse_size(text: str) -> int:
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    shift = {"K": 10, "M": 20, "G": 30}.get(text[-1:], 0)
    try:
        value = int(text[:-1] if shift else text) << shift
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad size '{text}'") from None
    if value <= 0 or value % PAGE:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive multiple of {PAGE} bytes")
    return value


def mb_s(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e6


# --------------------------------------------------------------------------
# Results


@dataclass
class KernelFigures:
    """MB/s of the machine's zram0 on the corpus."""

    write1: float
    write2: float
    read1: float


@dataclass
class AlgorithmFigures:
    algorithm: str
    kernel: KernelFigures | None
    cli_write_t1: float
    cli_write_t2: float
    cli_read: float
    cli_write_fixed_s: float
    """Seconds: ``zramctl write`` of one page to a 4 KiB device (start-up, open, commit)."""
    cli_read_fixed_s: float
    """Seconds: ``zramctl read`` of a 4 KiB device."""
    cli_write_t2_cpu_s: float
    """CPU seconds (user + system, from wait4) of the fastest ``zramctl write -t 2``."""
    engine_write: float
    compress_bound: float
    engine_read: float
    decompress_bound: float


@dataclass
class PipeFigures:
    algorithm: str
    size: int
    pipe_mb_s: float
    file_mb_s: float
    pipe_rss: int
    """Bytes: the zramctl process's peak RSS (see ``rss_how``)."""
    file_rss: int
    pipe_tmp_peak: int
    """Bytes on disk of the files zramctl held open under its TMPDIR, the most seen at once."""
    file_tmp_peak: int
    rss_how: str


@dataclass
class CommandFigures:
    runs: int
    status_s: float
    import_typer_s: float
    full_size: int
    write4k_full_s: float
    write4k_empty_s: float


@dataclass
class Results:
    corpus: str
    size: int
    sha256: str
    repeat: int
    tmp: str
    tmp_fstype: str
    zramctl: list[str]
    cpus: int
    load: str
    kernel_note: str
    algorithms: list[AlgorithmFigures] = field(default_factory=list)
    pipe: PipeFigures | None = None
    commands: CommandFigures | None = None


# --------------------------------------------------------------------------
# The corpus


def make_corpus(size: int, where: Path) -> Path:
    path = where / f"mixed-{size >> 20}M.bin"
    proc = subprocess.run(
        [sys.executable, str(MAKE_CORPUS), "mixed", str(size), str(path)], capture_output=True, text=True
    )
    if proc.returncode:
        raise BenchError(f"make-corpus: {proc.stderr.strip() or proc.returncode}")
    return path


def aligned_copy(path: Path) -> mmap.mmap:
    """The file in anonymous (so page-aligned) memory, as O_DIRECT wants its buffers."""
    size = path.stat().st_size
    buf = mmap.mmap(-1, size)
    with open(path, "rb", buffering=0) as f, memoryview(buf) as view:
        done = 0
        while done < size:
            got = f.readinto(view[done:])
            if not got:
                raise BenchError(f"{path}: shorter than {size} bytes")
            done += got
    return buf


def fstype(path: Path) -> str:
    """The type of the file system holding ``path`` (longest mount point in /proc/self/mounts)."""
    best, kind = "", "?"
    real = str(path.resolve())
    with contextlib.suppress(OSError), open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 2:
                mnt = parts[1].replace("\\040", " ")
                if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                    best, kind = mnt, parts[2]
    return kind


# --------------------------------------------------------------------------
# The kernel


def load_oracle() -> ModuleType:
    """tools/kernel-oracle as a module (a script without .py: loaded by path)."""
    name = "tools_kernel_oracle"
    if name in sys.modules:
        return sys.modules[name]
    loader = importlib.machinery.SourceFileLoader(name, str(KERNEL_ORACLE))
    spec = importlib.util.spec_from_loader(name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    loader.exec_module(module)
    return module


def kernel_usable() -> str | None:
    """None when zram0 can be used here, else why not."""
    if not DEV.exists() or not os.access(SYS / "reset", os.W_OK):
        return "no writable kernel zram0 on this machine"
    return None


def _direct_write(data: mmap.mmap, start: int, end: int, stop: threading.Event) -> None:
    fd = os.open(DEV, os.O_WRONLY | os.O_DIRECT)
    try:
        with memoryview(data) as view:
            off = start
            while off < end and not stop.is_set():
                off += os.pwrite(fd, view[off : min(off + DIRECT_CHUNK, end)], off)
    finally:
        os.close(fd)


def _direct_read(size: int) -> None:
    buf = mmap.mmap(-1, DIRECT_CHUNK)
    fd = os.open(DEV, os.O_RDONLY | os.O_DIRECT)
    try:
        off = 0
        while off < size:
            got = os.preadv(fd, [buf], off)
            if got <= 0:
                raise BenchError(f"zram0: short read at {off}")
            off += got
    finally:
        os.close(fd)
        buf.close()


def _two_writers(data: mmap.mmap, size: int) -> None:
    half = size // 2 // PAGE * PAGE
    stop = threading.Event()
    errors: list[BaseException] = []

    def one(start: int, end: int) -> None:
        try:
            _direct_write(data, start, end, stop)
        except BaseException as exc:  # handed to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=one, args=span) for span in ((0, half), (half, size))]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    finally:
        stop.set()  # a signal in the main thread: the writers stop at their next MiB
        for t in threads:
            t.join()
    if errors:
        raise errors[0]


def kernel_figures(data: mmap.mmap, size: int, algorithm: str, repeat: int) -> KernelFigures | str:
    """Best-of-``repeat`` MB/s of zram0, or why there are none (nothing was touched then)."""
    why = kernel_usable()
    if why:
        return why
    oracle = load_oracle()
    zram = oracle.Zram0(SYS, DEV, "auto")
    w1, w2, r1 = [], [], []
    with open(LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if zram.get("disksize").strip() != "0":
            return "zram0 is in use (disksize != 0); left as it is"
        try:
            for _ in range(repeat):
                for two in (False, True):  # a fresh device each run: zram0 starts at disksize 0
                    oracle.set_up(zram, algorithm, str(size))
                    t = time.perf_counter()
                    if two:
                        _two_writers(data, size)
                        w2.append(time.perf_counter() - t)
                    else:
                        _direct_write(data, 0, size, threading.Event())
                        w1.append(time.perf_counter() - t)
                        if int(zram.mm_stat()[0]) != size:
                            raise BenchError(f"zram0: {zram.mm_stat()[0]} bytes stored of {size}")
                        t = time.perf_counter()
                        _direct_read(size)
                        r1.append(time.perf_counter() - t)
                    zram.reset()
        except oracle.Unavailable as exc:
            return str(exc)
        except oracle.Failed as exc:
            raise BenchError(str(exc)) from None
        finally:
            old = {
                s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
            }
            try:
                zram.reset()  # nothing may stop the reset
            finally:
                for s, handler in old.items():
                    signal.signal(s, handler)
    return KernelFigures(mb_s(size, min(w1)), mb_s(size, min(w2)), mb_s(size, min(r1)))


# --------------------------------------------------------------------------
# zramctl, as a command


def zramctl_command() -> list[str]:
    """The ``zramctl`` installed beside this Python, else ours on PATH, else ``python -m zramctl``."""
    beside = Path(sys.executable).parent / "zramctl"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    found = shutil.which("zramctl")
    if found:  # util-linux's has no --root: take it only if it is ours
        proc = subprocess.run([found, "--help"], capture_output=True, text=True)
        if "--root" in proc.stdout:
            return [found]
    return [sys.executable, "-m", "zramctl"]


@dataclass
class Ran:
    seconds: float
    maxrss: int
    """Bytes: the process's peak resident set (0 unless watched)."""
    tmp_peak: int
    cpu_s: float
    """CPU seconds, user and system, of the command and what it waited for (wait4)."""


def _child(pid: int) -> int | None:
    """The first child of ``pid`` (the command /usr/bin/time runs), or None (not yet, or gone)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            first = f.read().split()[:1]
        return int(first[0]) if first else None
    except FileNotFoundError:  # a kernel without CONFIG_PROC_CHILDREN, or pid gone: look at every parent
        pass
    except OSError:
        return None
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                with open(f"/proc/{name}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        return int(name)
    return None


def _vm_hwm(pid: int) -> int:
    """Bytes: the peak RSS of ``pid`` so far (VmHWM), 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _tmp_bytes(pid: int, tmpdir: str) -> int:
    """Bytes on disk of the regular files ``pid`` holds open under ``tmpdir`` (deleted ones too)."""
    total = 0
    fds = f"/proc/{pid}/fd"
    with contextlib.suppress(OSError):
        for name in os.listdir(fds):
            with contextlib.suppress(OSError):
                if os.readlink(f"{fds}/{name}").startswith(tmpdir + "/"):
                    total += os.stat(f"{fds}/{name}").st_blocks * 512
    return total


class Runner:
    """Runs zramctl commands under one --root, with TMPDIR a directory of their own."""

    def __init__(self, command: list[str], root: Path) -> None:
        self.command = command
        self.root = root
        self.tmpdir = root / "tmp"
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ, TMPDIR=str(self.tmpdir), NO_COLOR="1")
        self.errors = root / "stderr"

    def argv(self, *args: str) -> list[str]:
        return [*self.command, "--root", str(self.root / "images"), *args]

    def check(self, *args: str) -> str:
        """An untimed command; its standard output."""
        proc = subprocess.run(self.argv(*args), capture_output=True, text=True, env=self.env)
        if proc.returncode:
            raise BenchError(f"zramctl {' '.join(args)}: {proc.stderr.strip() or f'exit {proc.returncode}'}")
        return proc.stdout

    def new_device(self, size: int, algorithm: str, streams: int = 1) -> str:
        return self.check("-f", "-s", str(size), "-a", algorithm, "-t", str(streams)).strip()

    def timed(
        self,
        argv: list[str],
        stdin: str | int = os.devnull,
        watch: bool = False,
        feeder: list[str] | None = None,
    ) -> Ran:
        """One command, timed from its start to its exit (a ``feeder`` command's output as its stdin).

        ``watch``: also its peak RSS and the temporary files it holds.  Not wait4's ru_maxrss of
        our own child: posix_spawn's child starts in this process's memory (vfork), and exec
        keeps the larger high-water mark, so a benchmark holding the corpus would be charged to
        it.  /usr/bin/time, a small process, forks the command and reports its own child's
        figure; without it, VmHWM sampled every ``SAMPLE`` seconds (it may miss the last ones).
        """
        wrapped = watch and os.access(TIME, os.X_OK)
        rss_file = self.root / "maxrss"
        run_argv = [TIME, "-f", "%M", "-o", str(rss_file), *argv] if wrapped else argv
        exe = shutil.which(run_argv[0])
        if exe is None:
            raise BenchError(f"{run_argv[0]}: not found")
        err = os.open(self.errors, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        out = os.open(os.devnull, os.O_WRONLY)
        pipe_r = pipe_w = -1
        inp = os.open(stdin, os.O_RDONLY) if isinstance(stdin, str) else os.dup(stdin)
        fed = None
        children: list[int] = []
        try:
            t = time.perf_counter()
            if feeder:
                pipe_r, pipe_w = os.pipe()
                fed = os.posix_spawnp(
                    feeder[0], feeder, self.env, file_actions=[(os.POSIX_SPAWN_DUP2, pipe_w, 1)]
                )
                children.append(fed)
                os.close(pipe_w)
                pipe_w = -1
                os.close(inp)
                inp, pipe_r = pipe_r, -1
            actions = [(os.POSIX_SPAWN_DUP2, fd, n) for n, fd in enumerate((inp, out, err))]
            pid = os.posix_spawn(exe, run_argv, self.env, file_actions=actions)
            children.append(pid)
            os.close(inp)
            inp = -1
            peak = hwm = 0
            if watch:
                pidfd = os.pidfd_open(pid)
                try:
                    while not select.select([pidfd], [], [], SAMPLE)[0]:
                        target = _child(pid) if wrapped else pid
                        if target is not None:
                            peak = max(peak, _tmp_bytes(target, str(self.tmpdir)))
                            hwm = max(hwm, _vm_hwm(target))
                finally:
                    os.close(pidfd)
            _, status, usage = os.wait4(pid, 0)
            seconds = time.perf_counter() - t
            children.remove(pid)
            if fed is not None:
                os.waitpid(fed, 0)
                children.remove(fed)
        finally:
            for fd in (err, out, inp, pipe_r, pipe_w):
                if fd >= 0:
                    os.close(fd)
            for child in children:  # stopped (a signal, an error): none outlives the benchmark
                with contextlib.suppress(OSError):
                    os.kill(child, signal.SIGTERM)
                    os.waitpid(child, 0)
        code = os.waitstatus_to_exitcode(status)
        if code:
            said = self.errors.read_text(errors="replace").strip().splitlines()
            raise BenchError(f"{' '.join(argv[len(self.command) :])}: {said[-1] if said else f'exit {code}'}")
        if wrapped:
            with contextlib.suppress(OSError, ValueError, IndexError):
                hwm = int(rss_file.read_text().split()[-1]) * 1024
        return Ran(seconds, hwm, peak, usage.ru_utime + usage.ru_stime)


def cli_figures(
    run: Runner, corpus: Path, size: int, algorithm: str, repeat: int
) -> tuple[float, float, float, float, float, float]:
    """Best-of-``repeat`` MB/s of ``zramctl write`` with -t 1 and -t 2, and of ``zramctl read``;
    then the best seconds of each command on a 4 KiB device: what a command costs whatever its size;
    then the CPU seconds of the fastest write with -t 2."""
    w: dict[int, list[Ran]] = {1: [], 2: []}
    r: list[float] = []
    for _ in range(repeat):
        for streams in (1, 2):
            dev = run.new_device(size, algorithm, streams)
            try:
                w[streams].append(run.timed(run.argv("write", dev, str(corpus))))
                if streams == 1:
                    r.append(run.timed(run.argv("read", dev)).seconds)
            finally:
                run.check("-r", dev)
    page = run.root / "first-page.bin"
    with open(corpus, "rb") as f:
        page.write_bytes(f.read(PAGE))
    fixed_w: list[float] = []
    fixed_r: list[float] = []
    dev = run.new_device(PAGE, algorithm)
    try:
        for _ in range(repeat):
            fixed_w.append(run.timed(run.argv("write", dev, str(page))).seconds)
            fixed_r.append(run.timed(run.argv("read", dev)).seconds)
    finally:
        run.check("-r", dev)
        page.unlink()
    fastest = {streams: min(runs, key=lambda ran: ran.seconds) for streams, runs in w.items()}
    return (
        mb_s(size, fastest[1].seconds), mb_s(size, fastest[2].seconds), mb_s(size, min(r)),
        min(fixed_w), min(fixed_r), fastest[2].cpu_s,
    )


# --------------------------------------------------------------------------
# The engine and its bounds


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def engine_figures(data: bytes, algorithm: str, repeat: int) -> tuple[float, float, float, float]:
    """MB/s: engine write, compress-only bound, engine read, decompress-only bound."""
    n = len(data)
    view = memoryview(data)
    backend = get_backend(algorithm)
    compress, decompress = backend.compress, backend.decompress

    def comp() -> list[bytes]:
        return [compress(data[i : i + PAGE]) for i in range(0, n, PAGE)]

    packed = comp()

    def decomp() -> None:
        for c in packed:
            decompress(c)

    bc, bd = best(comp, repeat), best(decomp, repeat)
    writes = []
    z = Zram()
    for _ in range(repeat):
        z = Zram()
        sysfs.store(z, "max_comp_streams", "1")  # the figure is one stream's (default: one per CPU)
        sysfs.store(z, "comp_algorithm", algorithm)
        sysfs.store(z, "disksize", str(n))
        t = time.perf_counter()
        for off in range(0, n, CHUNK):
            z.write(off, view[off : off + CHUNK])
        writes.append(time.perf_counter() - t)

    out = memoryview(bytearray(CHUNK))

    def read() -> None:  # each chunk into one buffer, as zramctl read reads it (then writes it out)
        for off in range(0, n, CHUNK):
            z.read_into(off, out[: min(CHUNK, n - off)])

    br = best(read, repeat)
    for off in range(0, n, CHUNK):
        if z.read(off, min(CHUNK, n - off)) != view[off : off + CHUNK]:
            raise BenchError(f"engine ({algorithm}): read-back differs from the corpus at {off}")
    return mb_s(n, min(writes)), mb_s(n, bc), mb_s(n, br), mb_s(n, bd)


# --------------------------------------------------------------------------
# A pipe, a listing, a 4 KiB command


def repeated(corpus: Path, size: int, where: Path) -> Path:
    """``size`` bytes: the corpus over and over."""
    path = where / f"pipe-{size >> 20}M.bin"
    data = corpus.read_bytes()
    with open(path, "wb") as f:
        left = size
        while left:
            part = data[: min(left, len(data))]
            f.write(part)
            left -= len(part)
    return path


def pipe_figures(
    run: Runner, corpus: Path, size: int, algorithm: str, repeat: int
) -> tuple[PipeFigures, str]:
    """A pipe into ``write`` beside a file, alternated, best of ``repeat`` each (the peak RSS and
    temporary space: the most of any run); returns the figures and the last device, left full."""
    source = repeated(corpus, size, run.root)
    runs: dict[bool, list[Ran]] = {True: [], False: []}
    dev = ""
    try:
        for i in range(repeat):
            for piped in (True, False) if i % 2 else (False, True):
                if dev:
                    run.check("-r", dev)
                dev = run.new_device(size, algorithm)
                if piped:
                    ran = run.timed(run.argv("write", dev), feeder=["cat", str(source)], watch=True)
                else:
                    ran = run.timed(run.argv("write", dev, str(source)), watch=True)
                runs[piped].append(ran)
    finally:
        source.unlink()
    pipe, file = runs[True], runs[False]
    figures = PipeFigures(
        algorithm,
        size,
        mb_s(size, min(r.seconds for r in pipe)),
        mb_s(size, min(r.seconds for r in file)),
        max(r.maxrss for r in pipe),
        max(r.maxrss for r in file),
        max(r.tmp_peak for r in pipe),
        max(r.tmp_peak for r in file),
        f"{TIME} -f %M" if os.access(TIME, os.X_OK) else f"VmHWM sampled every {SAMPLE} s",
    )
    return figures, dev


def command_figures(
    run: Runner, corpus: Path, full: str, size: int, algorithm: str, runs: int
) -> CommandFigures:
    """Medians: the status listing beside ``import typer``; a 4 KiB write on ``full`` beside an empty one."""
    empty = run.new_device(size, algorithm)
    page = run.root / "page.bin"
    with open(corpus, "rb") as f:
        f.seek(corpus.stat().st_size // 2 // PAGE * PAGE)
        page.write_bytes(f.read(PAGE))
    typer = [sys.executable, "-c", "import typer"]
    listing = run.argv()
    rnd = random.Random(10)
    times: dict[str, list[float]] = {"status": [], "typer": [], "full": [], "empty": []}
    for i in range(runs):
        # Alternated, so that a change in the machine's load hits both sides alike.
        for what in ("status", "typer") if i % 2 else ("typer", "status"):
            times[what].append(run.timed(listing if what == "status" else typer).seconds)
        offset = str(rnd.randrange(size // PAGE) * PAGE)
        for what in ("full", "empty") if i % 2 else ("empty", "full"):
            dev = full if what == "full" else empty
            times[what].append(run.timed(run.argv("write", dev, str(page), "--offset", offset)).seconds)
    med = {k: statistics.median(v) for k, v in times.items()}
    return CommandFigures(runs, med["status"], med["typer"], size, med["full"], med["empty"])


# --------------------------------------------------------------------------
# The table


def _ratio(value: float, base: float) -> float:
    return value / base if base else float("nan")


def _vs(value: float, base: float | None, target: float | None, unit: str) -> str:
    """``0.42 no  (250 / 600 MB/s)``: the ratio, whether it meets ``target`` (>= ; < 0: <= -target)."""
    if base is None:
        return f"- ({value:.0f} {unit}, no kernel)"
    r = _ratio(value, base)
    met = "" if target is None else "met " if (r >= target if target >= 0 else r <= -target) else "no  "
    return f"{r:.2f} {met}({value:.0f} / {base:.0f} {unit})"


def table(res: Results) -> str:
    """One table: each figure a ratio, its target, ``met``/``no``, and the raw figures."""
    algs = res.algorithms
    lines = [
        f"issue 10 throughput: corpus `make-corpus mixed {res.size >> 20}M` ({res.size} bytes,"
        f" sha256 {res.sha256[:12]}), algorithms {', '.join(a.algorithm for a in algs)}",
        f"MB/s = 10^6 bytes/s, best of {res.repeat}; {res.cpus} CPUs, load average {res.load}",
        f"images under {res.tmp} ({res.tmp_fstype}); zramctl = {' '.join(res.zramctl)}",
        f"kernel: {res.kernel_note}",
        "",
    ]
    label_w, target_w, cell_w = 44, 8, 32

    def row(label: str, target: str, cells: list[str]) -> None:
        text = f"{label:<{label_w}} {target:>{target_w}}  " + "  ".join(f"{c:<{cell_w}}" for c in cells)
        lines.append(text.rstrip())

    row("figure", "target", [a.algorithm for a in algs])
    lines.append("-" * (label_w + target_w + 3 + (cell_w + 2) * len(algs) - 2))
    # (label, target (None: for information), the figure, the kernel's (k.) or the bound's it is divided by)
    ratios = (
        ("zramctl write -t 1 / kernel 1 writer", 0.5, "cli_write_t1", "k.write1"),
        ("zramctl write -t 2 / kernel 1 writer", WRITE_T2_TARGET, "cli_write_t2", "k.write1"),
        ("zramctl write -t 2 / kernel 2 writers", None, "cli_write_t2", "k.write2"),
        ("zramctl read / kernel 1 reader", 0.5, "cli_read", "k.read1"),
        ("engine write / compress-only, 1 stream", 0.8, "engine_write", "compress_bound"),
        ("engine read / decompress-only, 1 stream", 0.8, "engine_read", "decompress_bound"),
    )
    for label, target, what, base in ratios:
        cells = []
        for a in algs:
            k = a.kernel
            by = (getattr(k, base[2:]) if k else None) if base.startswith("k.") else getattr(a, base)
            cells.append(_vs(getattr(a, what), by, target, "MB/s"))
        row(label, "-" if target is None else f">= {target:.2f}", cells)
    row(
        "kernel MB/s: 1 writer, 2 writers, 1 reader",
        "-",
        [
            f"{a.kernel.write1:.0f}, {a.kernel.write2:.0f}, {a.kernel.read1:.0f}" if a.kernel else "-"
            for a in algs
        ],
    )
    row("write, read of a 4 KiB device (start-up)", "-",
        [f"{a.cli_write_fixed_s * 1000:.0f}, {a.cli_read_fixed_s * 1000:.0f} ms" for a in algs])  # fmt: skip
    # What the command ratios could reach at best: the start-up above, then nothing but the
    # (de)compressor alone, on one stream or on every CPU (a bound: nothing else is free).
    n = res.cpus
    ceilings = (  # (label, the start-up, the bound, CPUs it runs on, the kernel's figure)
        ("  at best: write -t 1 / kernel 1 writer", "cli_write_fixed_s", "compress_bound", 1, "write1"),
        (f"  at best: write -t {n} / kernel 1 writer", "cli_write_fixed_s", "compress_bound", n, "write1"),
        (f"  at best: read, {n} CPUs / kernel 1 reader", "cli_read_fixed_s", "decompress_bound", n, "read1"),
    )
    for label, fixed, bound, cpus, kernel in ceilings:
        cells = []
        for a in algs:
            best = mb_s(res.size, getattr(a, fixed) + res.size / (getattr(a, bound) * 1e6 * cpus))
            cells.append(_vs(best, getattr(a.kernel, kernel) if a.kernel else None, None, "MB/s"))
        row(label, "-", cells)
    # The CPU time the fastest write -t 2 took (user and system: the commit's writeback by the
    # kernel's threads comes on top), as a share of what the CPUs give in the time the target
    # allows; beside it, the share that write kept busy.  A need near or past 1.00 means no
    # overlap of the work can meet the target on this machine.
    cells = []
    for a in algs:
        if a.kernel is None:
            cells.append("-")
            continue
        allowed = res.size / (WRITE_T2_TARGET * a.kernel.write1 * 1e6)
        took = res.size / (a.cli_write_t2 * 1e6)
        need, had = a.cli_write_t2_cpu_s / (n * allowed), a.cli_write_t2_cpu_s / (n * took)
        cells.append(f"{need:.2f} / {had:.2f} ({a.cli_write_t2_cpu_s:.2f} CPU s)")
    row(f"  CPU of write -t 2 / {n} CPUs: target, had", "-", cells)
    p = res.pipe
    if p is not None:
        lines += [
            "",
            f"a pipe into write: {p.size >> 20} MiB (the corpus repeated), {p.algorithm}, fresh devices,"
            f" best of {res.repeat} alternated (RSS, space: the most of any run)",
        ]
        met = "met" if p.pipe_rss <= 150e6 else "no "
        rss = f"{p.pipe_rss / 1e6:.0f} MB {met} (from a file: {p.file_rss / 1e6:.0f} MB)"
        row("peak RSS of zramctl, pipe", "<= 150MB", [rss + f", by {p.rss_how}"])
        row("MB/s, pipe / file", ">= 0.90", [_vs(p.pipe_mb_s, p.file_mb_s, 0.9, "MB/s")])
        spool = f"{p.pipe_tmp_peak / 2**20:.0f} MiB (from a file: {p.file_tmp_peak / 2**20:.0f} MiB)"
        row("temporary files held open, at most, pipe", "-", [spool])
    c = res.commands
    if c is not None:
        lines += ["", f"whole commands, median of {c.runs}, alternated:"]
        row("status listing / python -c 'import typer'", "<= 1.50",
            [_vs(c.status_s * 1000, c.import_typer_s * 1000, -1.5, "ms")])  # fmt: skip
        row(f"4 KiB write, {c.full_size >> 20} MiB-full / empty device", "<= 1.50",
            [_vs(c.write4k_full_s * 1000, c.write4k_empty_s * 1000, -1.5, "ms")])  # fmt: skip
    return "\n".join(lines)


# --------------------------------------------------------------------------


def on_signal(signum: int, frame: object) -> None:
    raise Signalled(signum)


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """SIGTERM and SIGHUP become exceptions, as SIGINT is, so that every clean-up runs."""
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def measure(a: argparse.Namespace, work: Path) -> Results:
    algorithms = [x for x in a.algorithms.split(",") if x]
    command = zramctl_command()
    corpus = make_corpus(a.size, work)
    data = corpus.read_bytes()
    why = "not measured (--no-kernel)" if a.no_kernel else kernel_usable()
    res = Results(
        corpus=f"make-corpus mixed {a.size >> 20}M",
        size=a.size,
        sha256=hashlib.sha256(data).hexdigest(),
        repeat=a.repeat,
        tmp=str(work),
        tmp_fstype=fstype(work),
        zramctl=command,
        cpus=os.cpu_count() or 1,
        load=" ".join(f"{x:.1f}" for x in os.getloadavg()),
        kernel_note=why
        or f"/dev/zram0, {DIRECT_CHUNK >> 20} MiB O_DIRECT writes and reads, fresh device each run",
    )
    if res.tmp_fstype in ("tmpfs", "ramfs"):
        print(f"{PROG}: warning: {work} is on {res.tmp_fstype}, not a disk (--tmp DIR)", file=sys.stderr)
    run = Runner(command, work / "zramctl")
    # Every zramctl command below runs from compiled bytecode (see "a status listing" above).
    package = Path(__file__).resolve().parent.parent / "zramctl"
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], check=True)
    aligned = aligned_copy(corpus) if why is None else None
    try:
        for alg in algorithms:
            print(f"{PROG}: {alg} ...", file=sys.stderr, flush=True)
            kernel = None
            if aligned is not None:
                got = kernel_figures(aligned, a.size, alg, a.repeat)
                if isinstance(got, str):
                    res.kernel_note = f"{alg}: {got}"
                else:
                    kernel = got
            cli = cli_figures(run, corpus, a.size, alg, a.repeat)
            eng = engine_figures(data, alg, a.repeat)
            res.algorithms.append(AlgorithmFigures(alg, kernel, *cli, *eng))
    finally:
        if aligned is not None:
            aligned.close()
    del data
    if a.pipe_size:
        print(f"{PROG}: pipe ...", file=sys.stderr, flush=True)
        res.pipe, full = pipe_figures(run, corpus, a.pipe_size, algorithms[0], a.repeat)
        if a.runs:
            print(f"{PROG}: single commands ...", file=sys.stderr, flush=True)
            res.commands = command_figures(run, corpus, full, a.pipe_size, algorithms[0], a.runs)
    return res


def main(argv: list[str] | None = None) -> int:
    doc = __doc__ or ""
    ap = argparse.ArgumentParser(prog=PROG, description=doc.split("\n\n")[0])
    ap.add_argument("--size", type=parse_size, default=parse_size("256M"), help="corpus bytes (256M)")
    ap.add_argument("-a", "--algorithms", default="lzo-rle,lz4", help="comma-separated (lzo-rle,lz4)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per throughput; the best counts (3)")
    ap.add_argument("--pipe-size", type=lambda s: 0 if s == "0" else parse_size(s), default=parse_size("1G"),
                    help="bytes piped into write (1G; 0: no pipe, listing or 4 KiB figures)")  # fmt: skip
    ap.add_argument("--runs", type=int, default=9, help="runs of each single command; the median counts (9)")
    ap.add_argument("--tmp", type=Path, default=Path("/var/tmp"), help="where the images go (/var/tmp)")
    ap.add_argument("--no-kernel", action="store_true", help="leave the kernel's zram0 alone")
    ap.add_argument("--json", type=Path, help="also save every figure here")
    a = ap.parse_args(argv)
    if a.repeat < 1 or a.runs < 0:
        ap.error("--repeat must be at least 1, --runs at least 0")
    try:
        with signals_raise(), tempfile.TemporaryDirectory(prefix="zramctl-throughput-", dir=a.tmp) as tmp:
            res = measure(a, Path(tmp))
        print(table(res))
        if a.json:
            a.json.write_text(json.dumps(asdict(res), indent=2) + "\n")
    except BenchError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(
            f"{PROG}: {exc.filename or ''}{': ' if exc.filename else ''}{exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Signalled as exc:
        print(f"{PROG}: stopped by signal {exc.signum}", file=sys.stderr)
        return 128 + exc.signum
    return 0


if __name__ == "__main__":
    sys.exit(main())
