"""Post-processing through the command line (issue 11): the idle, writeback and recompress verbs,
the set-up options --secondary-algorithm and --writeback-device, the columns only -o shows,
stat and --json, read's access times, and a zram-generator-like session.

The verbs are thin: each builds one attribute's text and stores it as ``attr`` does.  So the
text each writes is checked here (a spy on sysfs.store), and the model's effect of that text
is checked through the command (the model's own tests check the attributes themselves).  In
the session every counter the command shows (mm_stat, bd_stat, the columns) is compared at each
step with what is expected from the data itself: which pages are random, same-filled, text, and
what separate devices given only one kind of page store for it; the page flags are read from
block_state.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from zramctl.cli import main as cli
from zramctl.cli import verbs
from zramctl.kernel import sysfs
from zramctl.store import Store

ZRAMCTL = str(Path(sys.executable).with_name("zramctl"))
PAGE = 4096
PP_COLUMNS = "HUGE,HUGE-SINCE,BD-COUNT,BD-READS,BD-WRITES,IDLE"
UTIL_LINUX_ALL = (
    "NAME DISKSIZE DATA COMPR ALGORITHM STREAMS ZERO-PAGES TOTAL MEM-LIMIT MEM-USED MIGRATED COMP-RATIO"
    " MOUNTPOINT"
)


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("ZRAMCTL_ROOT", str(tmp_path / "root"))
    monkeypatch.delenv("POSIXLY_CORRECT", raising=False)
    return tmp_path / "root"


def run(capsys, *args: str) -> tuple[int, str, str]:
    rc = cli.main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def stores(monkeypatch):
    """Every (attribute, text) the command stores, in order (the store itself still happens)."""
    calls: list[tuple[str, str]] = []
    real = sysfs.store

    def spy(z, name, value):
        calls.append((name, value))
        return real(z, name, value)

    monkeypatch.setattr(sysfs, "store", spy)
    return calls


EXCLUDE = "options --idle, --huge, --huge-idle, --incompressible and --page-index(es) exclude each other"


def one_line(err: str) -> bool:
    return err.startswith("zramctl: ") and err.endswith("\n") and err.count("\n") == 1


def says(err: str, words: str) -> bool:
    """One line: ``zramctl: <words>``, perhaps followed by the device's detail in parentheses."""
    head = f"zramctl: {words}"
    return one_line(err) and (err == head + "\n" or err.startswith(head + " ("))


# --- what each verb writes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["idle", "zram0"], "all\n"),
        (["idle", "zram0", "--all"], "all\n"),
        (["idle", "zram0", "--age", "60"], "60\n"),
        (["idle", "zram0", "--age", "0x10"], "0x10\n"),  # the kernel's kstrtoull(base 0) judges it
        (["writeback", "zram0", "--idle"], "type=idle\n"),
        (["writeback", "zram0", "--huge"], "type=huge\n"),
        (["writeback", "zram0", "--huge-idle"], "type=huge_idle\n"),
        (["writeback", "zram0", "--incompressible"], "type=incompressible\n"),
        (["writeback", "zram0", "--page-index", "7"], "page_index=7\n"),
        (
            ["writeback", "zram0", "--page-index", "7", "--page-indexes", "1-3", "--page-index", "9",
             "--page-indexes", "20-30"],
            "page_index=7 page_index=9 page_indexes=1-3 page_indexes=20-30\n",
        ),
        (["recompress", "zram0"], "\n"),
        (["recompress", "zram0", "--type", "huge"], "type=huge\n"),
        (["recompress", "zram0", "--type", "huge_idle", "--max-pages", "5"], "type=huge_idle max_pages=5\n"),
        (
            ["recompress", "zram0", "--priority", "2", "--algo", "zstd", "--threshold", "1000",
             "--max-pages", "9", "--type", "idle"],
            "type=idle max_pages=9 threshold=1000 algo=zstd priority=2\n",
        ),
    ],
)
def test_each_verb_writes_exactly_its_attribute_text(root, capsys, stores, args, text):
    assert run(capsys, "-f", "-s", "1M")[0] == 0
    stores.clear()
    run(capsys, *args)  # whatever the device says of it
    assert stores == [(args[0], text)]


@pytest.mark.parametrize(
    ("args", "err"),
    [
        (["idle", "zram0", "--all", "--age", "5"], "options --all and --age exclude each other"),
        (["writeback", "zram0"], "say what to write back: --idle, --huge, --huge-idle, --incompressible, "
                                 "--page-index or --page-indexes"),
        (["writeback", "zram0", "--idle", "--huge"], EXCLUDE),
        (["writeback", "zram0", "--idle", "--page-index", "3"], EXCLUDE),
        (["writeback", "zram0", "--page-index", "1 type=huge"], "invalid --page-index value: '1 type=huge'"),
        (["writeback", "zram0", "--page-indexes", ""], "invalid --page-indexes value: ''"),
        (["recompress", "zram0", "--type", "all"], "invalid --type value: 'all' (idle, huge or huge_idle)"),
        (["recompress", "zram0", "--algo", 'zstd"'], "invalid --algo value: 'zstd\"'"),
        (["recompress", "zram0", "--max-pages", "1\n2"], "invalid --max-pages value: '1\n2'"),
        (["idle", "zram0", "--age", "1 2"], "invalid --age value: '1 2'"),
    ],
)
def test_a_text_the_verb_cannot_build_is_a_usage_error(root, capsys, stores, args, err):
    """Nothing is stored: the kernel would read such text as other keys (or, for --type, as none)."""
    assert run(capsys, "-f", "-s", "1M")[0] == 0
    stores.clear()
    try_line = f"Try 'zramctl {args[0]} --help' for more information.\n"
    assert run(capsys, *args) == (1, "", f"zramctl: {err}\n{try_line}")
    assert stores == []


def test_setup_writes_secondary_algorithms_then_params_then_backing_file_before_disksize(
    root, capsys, stores, tmp_path
):
    backing = tmp_path / "backing.img"
    backing.write_bytes(bytes(64 * PAGE))
    args = ["-f", "-s", "1M", "-a", "lzo-rle", "--writeback-device", str(backing), "-p", "algo=zstd level=9",
            "--secondary-algorithm", "zstd", "--secondary-algorithm", "deflate:3",
            "--secondary-algorithm", "lz4"]
    run(capsys, *args)
    assert stores == [
        ("reset", "1"),
        ("comp_algorithm", "lzo-rle"),
        ("recomp_algorithm", "algo=zstd priority=1"),
        ("recomp_algorithm", "algo=deflate priority=3"),
        ("recomp_algorithm", "algo=lz4 priority=3"),
        ("algorithm_params", "algo=zstd level=9"),
        ("backing_dev", str(backing)),
        ("disksize", "1048576"),
    ]


@pytest.mark.parametrize("option", ["--writeback-device", "--secondary-algorithm"])
def test_setup_options_need_size(root, capsys, option):
    err = f"zramctl: option {option} must be combined with --size\n"
    assert run(capsys, option, "x") == (1, "", err)
    assert run(capsys, "-f", option, "x") == (1, "", err)


def test_a_secondary_algorithm_with_a_blank_is_refused_before_anything_changes(root, capsys, stores):
    Store(root).hot_add()
    err = "zramctl: failed to parse secondary algorithm: 'zstd priority=2'\n"
    assert run(capsys, "zram0", "-s", "1M", "--secondary-algorithm", "zstd priority=2") == (1, "", err)
    assert stores == []


def test_new_long_options_keep_every_util_linux_abbreviation():
    """--writeback-device and --secondary-algorithm start with letters no util-linux option's
    shortest unique abbreviation uses, so each abbreviation still means what it means there."""
    from zramctl.cli.getopt import LONG_OPTIONS, long_option

    util_linux = [o.name for o in LONG_OPTIONS[:13]]
    for name in util_linux:
        for n in range(1, len(name) + 1):
            prefix = name[:n]
            theirs = [o for o in util_linux if o.startswith(prefix)]
            if name in theirs and (len(theirs) == 1 or prefix == name):
                assert long_option(prefix)[0].name == name, prefix


# --- errors: one line, exit 1 -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [["idle", "zram0"], ["writeback", "zram0", "--huge"], ["recompress", "zram0", "--type", "huge"]],
)
def test_a_311_device_has_no_post_processing_attributes(root, capsys, args):
    assert run(capsys, "-f", "-s", "1M", "--compat", "3.11")[0] == 0
    assert run(capsys, *args) == (1, "", f"zramctl: zram0: {args[0]}: No such file or directory\n")


@pytest.mark.parametrize("option", ["--writeback-device", "--secondary-algorithm"])
def test_a_311_device_refuses_the_setup_options(root, capsys, tmp_path, option):
    value = str(tmp_path / "b.img") if option == "--writeback-device" else "zstd"
    Path(tmp_path / "b.img").write_bytes(bytes(PAGE * 4))
    what = "writeback device" if option == "--writeback-device" else "secondary algorithm"
    rc, out, err = run(capsys, "-f", "-s", "1M", "--compat", "3.11", option, value)
    assert (rc, out) == (1, "") and says(err, f"zram0: failed to set {what}: No such file or directory"), err


def test_writeback_without_a_backing_file_is_enodev(root, capsys):
    assert run(capsys, "-f", "-s", "1M")[0] == 0
    assert run(capsys, "write", "zram0", os.devnull)[0] == 0
    rc, out, err = run(capsys, "writeback", "zram0", "--idle")
    assert (rc, out) == (1, "") and says(err, "zram0: writeback: No such device")


def test_recompress_without_a_secondary_algorithm_is_einval(root, capsys):
    assert run(capsys, "-f", "-s", "1M")[0] == 0
    rc, out, err = run(capsys, "recompress", "zram0")
    assert (rc, out) == (1, "") and says(err, "zram0: recompress: Invalid argument")


@pytest.mark.parametrize(
    ("args", "err"),
    [
        (["idle", "zram0", "--age", "abc"], "idle: Invalid argument"),
        (["writeback", "zram0", "--page-index", "999999"], "writeback: Numerical result out of range"),
        (["writeback", "zram0", "--page-indexes", "9-1"], "writeback: Numerical result out of range"),
        (["writeback", "zram0", "--page-indexes", "5"], "writeback: Invalid argument"),
        (["recompress", "zram0", "--threshold", "4000"], "recompress: Invalid argument"),
        (["recompress", "zram0", "--algo", "lz4"], "recompress: Invalid argument"),
        (["recompress", "zram0", "--max-pages", "x"], "recompress: Invalid argument"),
    ],
)
def test_the_device_judges_the_values_in_the_kernels_words(root, capsys, tmp_path, args, err):
    backing = tmp_path / "backing.img"
    backing.write_bytes(bytes(16 * PAGE))
    setup = ["-f", "-s", "1M", "--secondary-algorithm", "zstd", "--writeback-device", str(backing)]
    assert run(capsys, *setup) == (0, "zram0\n", "")
    rc, out, got = run(capsys, *args)
    assert (rc, out) == (1, "") and says(got, f"zram0: {err}"), got


def test_setup_failures_are_one_line_each(root, capsys, tmp_path):
    missing = tmp_path / "missing.img"
    rc, _, err = run(capsys, "-f", "-s", "1M", "--writeback-device", str(missing))
    assert rc == 1 and says(err, "zram0: failed to set writeback device: No such file or directory"), err
    rc, _, err = run(capsys, "zram0", "-s", "1M", "--secondary-algorithm", "bogus")
    assert rc == 1 and says(err, "zram0: failed to set secondary algorithm: Invalid argument"), err
    rc, _, err = run(capsys, "zram0", "-s", "1M", "--secondary-algorithm", "zstd:4")
    assert rc == 1 and says(err, "zram0: failed to set secondary algorithm: Invalid argument"), err
    assert run(capsys, "zram0", "--raw", "-n", "-b", "-o", "DISKSIZE")[1] == "0\n"  # not set up


def text_pages(n: int, seed: int = 7) -> bytes:
    """``n`` pages of words: stored compressed (not huge), never same-filled."""
    rnd = random.Random(seed)
    words = [rnd.randbytes(rnd.randrange(2, 9)).hex().encode() for _ in range(64)]
    return b"".join(b" ".join(rnd.choice(words) for _ in range(PAGE // 4))[:PAGE] for _ in range(n))


@pytest.mark.parametrize("limit", [None, 2])
def test_pages_written_back_before_a_failure_stay_written_back(root, capsys, tmp_path, limit):
    """ENOSPC (the backing file is full) or EIO (writeback_limit used up) after some pages: the
    kernel keeps those written back, and so does the image (the command commits them)."""
    backing = tmp_path / "backing.img"
    backing.write_bytes(bytes((3 if limit is None else 16) * PAGE))  # block 0 is never used
    src = tmp_path / "data"
    src.write_bytes(text_pages(5))
    assert run(capsys, "-f", "-s", "1M", "--writeback-device", str(backing))[0] == 0
    assert run(capsys, "write", "zram0", str(src))[0] == 0
    assert run(capsys, "idle", "zram0")[0] == 0
    if limit is not None:
        assert run(capsys, "attr", "zram0", "writeback_limit", str(limit))[0] == 0
        assert run(capsys, "attr", "zram0", "writeback_limit_enable", "1")[0] == 0
    rc, out, err = run(capsys, "writeback", "zram0", "--idle")
    words = "No space left on device" if limit is None else "Input/output error"
    assert (rc, out) == (1, "") and says(err, f"zram0: writeback: {words}"), err
    assert run(capsys, "attr", "zram0", "bd_stat")[1].split() == ["2", "0", "2"]
    flags = [f for _, f in block_flags(capsys).values()]
    assert sorted(flags) == ["...i..", "...i..", "...i..", ".w....", ".w...."]
    if limit is not None:
        assert run(capsys, "attr", "zram0", "writeback_limit") == (0, "0\n", "")
    rc, out, _ = run(capsys, "read", "zram0", "--length", str(5 * PAGE))
    assert (rc, out) == (0, src.read_text())


def test_stat_histogram_leaves_written_back_pages_out(root, capsys, tmp_path):
    """A written-back page holds no object: stat's object-size histogram counts only the objects
    in the allocator, so objects + same-filled + raw + written back = the pages stored."""
    backing = tmp_path / "backing.img"
    backing.write_bytes(bytes(3 * PAGE))  # blocks 1 and 2
    src = tmp_path / "data"
    src.write_bytes(text_pages(5))
    assert run(capsys, "-f", "-s", "1M", "--writeback-device", str(backing))[0] == 0
    assert run(capsys, "write", "zram0", str(src))[0] == 0
    assert run(capsys, "idle", "zram0")[0] == 0
    assert run(capsys, "writeback", "zram0", "--idle")[0] == 1  # ENOSPC after two pages
    rc, out, _ = run(capsys, "stat", "zram0", "--json")
    report = json.loads(out)
    objects = sum(b["count"] for b in report["histogram"])
    assert report["counters"]["bd_count"] == 2
    assert (objects, report["same_pages"], report["huge_pages"]) == (3, 0, 0)


# --- columns, stat, --json ------------------------------------------------------------------------------


def test_output_all_is_util_linux_columns_and_the_new_ones_come_with_o(root, capsys):
    assert run(capsys, "-f", "-s", "1M")[0] == 0
    rc, out, _ = run(capsys, "--output-all", "--raw")
    assert out.splitlines()[0] == UTIL_LINUX_ALL
    rc, out, _ = run(capsys, "-o", "NAME," + PP_COLUMNS, "--raw")
    assert out == f"NAME {PP_COLUMNS.replace(',', ' ')}\nzram0 0 0 0 0 0 0\n"
    rc, out, _ = run(capsys, "-o", "+idle", "--raw")
    assert out.splitlines()[0].endswith("MOUNTPOINT IDLE")


def test_a_311_device_shows_the_new_columns_empty(root, capsys):
    assert run(capsys, "-f", "-s", "1M", "--compat", "3.11")[0] == 0
    assert run(capsys, "-o", "NAME," + PP_COLUMNS, "--raw", "-n") == (0, "zram0      \n", "")
    rc, out, _ = run(capsys, "-o", "NAME," + PP_COLUMNS, "--json")
    row = json.loads(out)["zramdevices"][0]
    assert row == {"name": "zram0", **{c.lower(): None for c in PP_COLUMNS.split(",")}}


# --- read records accesses on 6.18 ----------------------------------------------------------------------


def block_flags(capsys, dev: str = "zram0") -> dict[int, tuple[float, str]]:
    """block_state as {index: (access time, flags)}."""
    rc, out, err = run(capsys, "attr", dev, "block_state")
    assert (rc, err) == (0, "")
    state = {}
    for line in out.splitlines():
        index, when, flags = line.split()
        state[int(index)] = (float(when), flags)
    return state


def test_a_read_clears_idle_and_sets_the_access_time_and_is_committed(root, capsys, tmp_path):
    rnd = random.Random(3)
    data = bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(8 * PAGE))  # printable
    src = tmp_path / "data"
    src.write_bytes(data)
    assert run(capsys, "-f", "-s", "1M")[0] == 0
    assert run(capsys, "write", "zram0", str(src))[0] == 0
    assert run(capsys, "idle", "zram0")[0] == 0
    assert {i: f[3] for i, (_, f) in block_flags(capsys).items()} == dict.fromkeys(range(8), "i")
    before = time.time()
    read = run(capsys, "read", "zram0", "--offset", "8K", "--length", "8K")
    assert read == (0, data[2 * PAGE:4 * PAGE].decode(), "")
    state = block_flags(capsys)  # a new command: what it sees was committed
    assert [i for i, (_, f) in state.items() if f[3] == "i"] == [0, 1, 4, 5, 6, 7]
    assert all(when >= int(before) for i, (when, _) in state.items() if i in (2, 3))
    assert run(capsys, "-o", "IDLE", "--raw", "-n") == (0, "6\n", "")


def test_a_311_device_is_read_under_a_shared_lock(root, capsys, monkeypatch):
    assert run(capsys, "-f", "-s", "1M", "--compat", "3.11")[0] == 0
    monkeypatch.setattr(verbs, "LOCK_WAIT", 0.2)
    with Store(root).open(0, write=False):  # another reader
        assert cli.main(["read", "zram0", "--length", "4K"]) == 0
    assert capsys.readouterr().out == "\0" * PAGE


def test_a_618_device_is_read_as_a_writer(root, capsys, monkeypatch):
    """A reader's shared lock makes a 6.18 read wait (here 0.2 s, then EBUSY): it commits."""
    assert run(capsys, "-f", "-s", "1M")[0] == 0
    monkeypatch.setattr(verbs, "LOCK_WAIT", 0.2)
    with Store(root).open(0, write=False):
        rc, out, err = run(capsys, "read", "zram0", "--length", "4K")
    assert (rc, out) == (1, "") and one_line(err) and "Device or resource busy" in err
    assert run(capsys, "read", "zram0", "--length", "4K") == (0, "\0" * PAGE, "")


def test_concurrent_reads_of_a_618_device_take_turns(tmp_path):
    env = dict(os.environ, ZRAMCTL_ROOT=str(tmp_path / "root"))
    data = random.Random(5).randbytes(256 * PAGE)
    subprocess.run([ZRAMCTL, "-f", "-s", "4M"], env=env, check=True, capture_output=True)
    subprocess.run([ZRAMCTL, "write", "zram0"], input=data, env=env, check=True)
    readers = [
        subprocess.Popen([ZRAMCTL, "read", "zram0", "--length", "1M"], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    # Every reader's output is drained at once, as in a shell: a 6.18 reader holds the device
    # until its output is taken (a reader nobody drains keeps the others waiting, up to EBUSY).
    with ThreadPoolExecutor(len(readers)) as pool:
        results = list(pool.map(lambda p: p.communicate(timeout=60), readers))
    for proc, (out, err) in zip(readers, results, strict=True):
        assert (proc.returncode, err) == (0, b""), err.decode()
        assert out == data
    check = subprocess.run([ZRAMCTL, "check", "zram0", "--data"], env=env, capture_output=True)
    assert (check.returncode, check.stdout, check.stderr) == (0, b"", b"")


def test_a_read_only_image_is_still_readable(root, capsys, tmp_path):
    """A reader who may not write the image reads it (the accesses are then not recorded)."""
    if os.geteuid() == 0:
        pytest.skip("root may write a read-only file")
    assert run(capsys, "-f", "-s", "1M")[0] == 0
    image = Store(root).image_path(0)
    image.chmod(0o400)
    try:
        assert run(capsys, "read", "zram0", "--length", "4K") == (0, "\0" * PAGE, "")
    finally:
        image.chmod(0o600)


# --- a zram-generator-like session -------------------------------------------------------------------------


def corpus(seed: int = 11) -> tuple[bytes, dict[str, list[int]]]:
    """Pages of four kinds, interleaved, and the indexes of each kind.

    random: incompressible by every algorithm (lzo-rle stores them raw: huge; zstd cannot
    shrink them either); alpha32: random letters from a 32-letter alphabet (lzo-rle, which has no
    entropy coder, cannot shrink them; zstd's Huffman stage takes them to about 5/8);
    same: one repeated 8-byte word; text: words, compressible by both.
    """
    rnd = random.Random(seed)
    words = [rnd.randbytes(rnd.randrange(2, 9)).hex().encode() for _ in range(64)]
    alphabet = bytes(range(65, 97))
    kinds = ["random", "alpha32", "same", "text", "text"]
    pages, index = [], {k: [] for k in kinds}
    for i in range(60):
        kind = kinds[i % len(kinds)]
        if kind == "random":
            page = rnd.randbytes(PAGE)
        elif kind == "alpha32":
            page = bytes(rnd.choice(alphabet) for _ in range(PAGE))
        elif kind == "same":
            page = rnd.randbytes(8) * (PAGE // 8)
        else:
            page = b" ".join(rnd.choice(words) for _ in range(PAGE // 4))[:PAGE]
        index[kind].append(i)
        pages.append(page)
    return b"".join(pages), index


class Session:
    """The installed command, run as a user runs it, under its own root."""

    def __init__(self, tmp_path: Path) -> None:
        self.env = dict(os.environ, ZRAMCTL_ROOT=str(tmp_path / "root"), LC_ALL="C")
        self.env.pop("NO_COLOR", None)

    def __call__(self, *args: str, input: bytes | None = None) -> str:
        proc = subprocess.run([ZRAMCTL, *args], input=input, capture_output=True, env=self.env, timeout=120)
        assert (proc.returncode, proc.stderr) == (0, b""), (args, proc.stderr.decode(errors="replace"))
        return proc.stdout.decode(errors="surrogateescape")

    def numbers(self, attr: str, dev: str = "zram0") -> list[int]:
        return [int(x) for x in self("attr", dev, attr).split()]

    def columns(self, dev: str = "zram0") -> dict[str, int]:
        out = self("-o", PP_COLUMNS, "--raw", "-n", dev)
        return dict(zip(PP_COLUMNS.split(","), map(int, out.split()), strict=True))

    def flags(self, dev: str = "zram0") -> dict[int, str]:
        lines = self("attr", dev, "block_state").splitlines()
        return {int(line.split()[0]): line.split()[2] for line in lines}

    def stat(self, dev: str = "zram0") -> dict:
        return json.loads(self("stat", dev, "--json"))

    def stored(self, algorithm: str, data: bytes) -> int:
        """compr_data_size of a fresh device of ``algorithm`` given ``data`` alone: what the device
        under test must hold for those pages, found without it."""
        dev = self("-f", "-s", "1M", "-a", algorithm).strip()
        self("write", dev, input=data)
        size = self.numbers("mm_stat", dev)[1]
        self("-r", dev)
        return size


def with_flag(flags: dict[int, str], letter: str) -> set[int]:
    position = "swhirn".index(letter)
    return {i for i, f in flags.items() if f[position] == letter}


def test_zram_generator_like_session(tmp_path):
    """lzo-rle first, zstd second, a backing file; fill; idle; recompress huge; write idle back; read."""
    z = Session(tmp_path)
    data, kind = corpus()
    pages = len(data) // PAGE
    page = {i: data[i * PAGE:(i + 1) * PAGE] for i in range(pages)}
    rnd, alpha, same, text = (set(kind[k]) for k in ("random", "alpha32", "same", "text"))
    backing = tmp_path / "backing.img"
    backing.write_bytes(bytes((len(text) + 8) * PAGE))

    # What each kind costs, from devices that hold nothing else (not from the device under test).
    text_lzo = z.stored("lzo-rle", b"".join(page[i] for i in sorted(text)))
    alpha_zstd = z.stored("zstd", b"".join(page[i] for i in sorted(alpha)))
    assert z.stored("lzo-rle", b"".join(page[i] for i in sorted(rnd | alpha))) == len(rnd | alpha) * PAGE
    assert z.stored("zstd", b"".join(page[i] for i in sorted(rnd))) == len(rnd) * PAGE
    assert alpha_zstd < len(alpha) * 3 * PAGE // 4

    assert z("-f", "-s", "1M", "-a", "lzo-rle", "--secondary-algorithm", "zstd",
             "--writeback-device", str(backing)) == "zram0\n"
    assert z("attr", "zram0", "recomp_algorithm").startswith("#1: ")
    assert "[zstd]" in z("attr", "zram0", "recomp_algorithm")
    assert z("attr", "zram0", "backing_dev") == f"{backing.resolve()}\n"
    z("write", "zram0", input=data)

    # 1. filled: huge = the pages lzo-rle cannot shrink; nothing idle, nothing written back
    flags = z.flags()
    assert set(flags) == set(range(pages))
    assert with_flag(flags, "s") == same and with_flag(flags, "h") == rnd | alpha
    mm = z.numbers("mm_stat")
    assert mm[0] == pages * PAGE and mm[5] == len(same)
    assert mm[1] == text_lzo + len(rnd | alpha) * PAGE
    assert (mm[7], mm[8]) == (len(rnd | alpha), len(rnd | alpha))
    assert z.numbers("bd_stat") == [0, 0, 0]
    columns = {"HUGE": len(rnd | alpha), "HUGE-SINCE": len(rnd | alpha), "BD-COUNT": 0, "BD-READS": 0,
               "BD-WRITES": 0, "IDLE": 0}
    assert z.columns() == columns

    # 2. idle --all: every stored page but the same-filled ones
    z("idle", "zram0")
    flags = z.flags()
    assert with_flag(flags, "i") == rnd | alpha | text
    assert z.columns() == {**columns, "IDLE": len(rnd | alpha | text)}
    assert z.numbers("mm_stat") == mm

    # 3. recompress --type huge: zstd shrinks the alpha32 pages (priority 1, no longer huge), not the
    #    random ones (now incompressible); every page tried loses its idle mark
    z("recompress", "zram0", "--type", "huge")
    flags = z.flags()
    assert with_flag(flags, "r") == alpha and with_flag(flags, "n") == rnd
    assert with_flag(flags, "h") == rnd and with_flag(flags, "i") == text
    mm_after = z.numbers("mm_stat")
    assert mm_after[0] == pages * PAGE and mm_after[5] == len(same)
    assert mm_after[1] == text_lzo + len(rnd) * PAGE + alpha_zstd
    assert (mm_after[7], mm_after[8]) == (len(rnd), len(rnd | alpha))
    columns = {**columns, "HUGE": len(rnd), "IDLE": len(text)}
    assert z.columns() == columns

    # 4. writeback --idle: the text pages go to the backing file, whole
    z("writeback", "zram0", "--idle")
    flags = z.flags()
    assert with_flag(flags, "w") == text and not with_flag(flags, "i")
    assert all(flags[i] == ".w...." for i in text)
    mm_wb = z.numbers("mm_stat")
    assert mm_wb[0] == pages * PAGE and mm_wb[1] == len(rnd) * PAGE + alpha_zstd
    assert (mm_wb[7], mm_wb[8]) == (len(rnd), len(rnd | alpha))
    assert z.numbers("bd_stat") == [len(text), 0, len(text)]
    columns = {**columns, "BD-COUNT": len(text), "BD-WRITES": len(text), "IDLE": 0}
    assert z.columns() == columns
    held = backing.read_bytes()
    blocks = {held[b * PAGE:(b + 1) * PAGE] for b in range(1, len(held) // PAGE)}
    assert {page[i] for i in text} <= blocks  # each page uncompressed in a block (block 0 unused)
    from zramctl.image.backing import Owner, decode_claim

    assert isinstance(decode_claim(held[:PAGE]), Owner)  # block 0 holds no page: the device's claim

    # 5. stat shows every counter by its kernel name, and the columns' JSON the same numbers
    report = z.stat()
    counters = report["counters"]
    assert (counters["huge_pages"], counters["huge_pages_since"]) == (len(rnd), len(rnd | alpha))
    assert (counters["bd_count"], counters["bd_reads"], counters["bd_writes"]) == (len(text), 0, len(text))
    assert counters["idle_pages"] == 0
    assert report["settings"]["backing_dev"] == str(backing.resolve())
    assert report["settings"]["recomp_algorithm"] == "#1: zstd"
    plain = z("stat", "zram0")
    for name in ("huge_pages", "huge_pages_since", "bd_count", "bd_reads", "bd_writes", "idle_pages"):
        assert f"  {name} " in plain, name
    rows = json.loads(z("-o", "NAME," + PP_COLUMNS, "--json"))["zramdevices"]
    assert rows == [{"name": "zram0", **{k.lower(): v for k, v in columns.items()}}]

    # 6. read it all back: the content is the input; each written-back page is read from the
    #    backing file once; every page now accessed (no idle mark), and so idle --age 3600 marks none
    assert z("read", "zram0", "--length", str(len(data))).encode(errors="surrogateescape") == data
    assert z.numbers("bd_stat") == [len(text), len(text), len(text)]
    assert z.columns() == {**columns, "BD-READS": len(text)}
    z("idle", "zram0", "--age", "3600")
    assert z.columns()["IDLE"] == 0
    z("idle", "zram0")
    assert z.columns()["IDLE"] == len(rnd | alpha)  # neither same-filled nor written-back pages
    check = subprocess.run([ZRAMCTL, "check", "zram0", "--data"], env=z.env, capture_output=True)
    assert (check.returncode, check.stdout, check.stderr) == (0, b"", b"")
