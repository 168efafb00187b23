"""The util-linux grammar, in process: options, messages, exit codes, actions, set-up order.

Every expected message here is util-linux zramctl's (2.42, ``sys-utils/zramctl.c``
and ``lib/strutils.c``); where 2.38.1 prints the same, test_parity_util_linux.py
also checks it against the installed binary.
"""

from __future__ import annotations

import errno
import json

import pytest

from zramctl.cli import main as cli
from zramctl.errors import ZramError
from zramctl.kernel import sysfs, zram_drv
from zramctl.store import Store

TRY = "Try 'zramctl --help' for more information.\n"
AMBIGUOUS = "is ambiguous; possibilities:"
COMBINE = "options --algorithm, --algorithm-params, and --streams must be combined with --size"


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("ZRAMCTL_ROOT", str(tmp_path))
    monkeypatch.delenv("POSIXLY_CORRECT", raising=False)
    return tmp_path


def run(capsys, *args: str) -> tuple[int, str, str]:
    rc = cli.main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


# --- getopt_long -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "err"),
    [
        (["--bogus"], "zramctl: unrecognized option '--bogus'\n" + TRY),
        (["--bogus=3"], "zramctl: unrecognized option '--bogus=3'\n" + TRY),
        (["-x"], "zramctl: invalid option -- 'x'\n" + TRY),
        (["-bx"], "zramctl: invalid option -- 'x'\n" + TRY),
        (["-o"], "zramctl: option requires an argument -- 'o'\n" + TRY),
        (["-s"], "zramctl: option requires an argument -- 's'\n" + TRY),
        (["--output"], "zramctl: option '--output' requires an argument\n" + TRY),
        (["--out"], f"zramctl: option '--out' {AMBIGUOUS} '--output' '--output-all'\n" + TRY),
        (["--out=X"], f"zramctl: option '--out=X' {AMBIGUOUS} '--output' '--output-all'\n" + TRY),
        (["--al=lz4"], f"zramctl: option '--al=lz4' {AMBIGUOUS} '--algorithm' '--algorithm-params'\n" + TRY),
        (["--by=3"], "zramctl: option '--bytes' doesn't allow an argument\n" + TRY),
        (["--outp"], f"zramctl: option '--outp' {AMBIGUOUS} '--output' '--output-all'\n" + TRY),
        (["--ro"], "zramctl: option '--root' requires an argument\n" + TRY),
    ],
)
def test_getopt_errors(root, capsys, args, err):
    assert run(capsys, *args) == (1, "", err)


def test_options_are_handled_in_order(root, capsys):
    rc, out, err = run(capsys, "-h", "--bogus")
    assert (rc, err) == (0, "") and out.startswith("\nUsage:\n")
    rc, out, err = run(capsys, "--bogus", "-h")
    assert (rc, out) == (1, "") and "unrecognized option" in err
    rc, out, _ = run(capsys, "-V", "--help")
    assert rc == 0 and out.startswith("zramctl from zramctl ")


def test_gnu_permutation_and_double_dash(root, capsys):
    Store(root).hot_add()
    rc, out, _ = run(capsys, "zram0", "--raw", "-o", "NAME")
    assert (rc, out) == (0, "NAME\nzram0\n")
    rc, out, _ = run(capsys, "-o", "name", "--", "zram0")
    assert (rc, out) == (0, "NAME\nzram0\n")
    rc, _, err = run(capsys, "--", "-b")
    assert (rc, err) == (1, "zramctl: -b: No such device\n")


def test_posixly_correct_stops_at_the_first_operand(root, capsys, monkeypatch):
    Store(root).hot_add()
    monkeypatch.setenv("POSIXLY_CORRECT", "1")
    rc, _, err = run(capsys, "zram0", "-b")
    assert (rc, err) == (1, "zramctl: only one <device> at a time is allowed\n")


def test_short_options_cluster_and_take_attached_arguments(root, capsys):
    Store(root).hot_add()
    rc, out, _ = run(capsys, "-bnoNAME,DISKSIZE", "zram0")
    assert (rc, out) == (0, "zram0        0\n")  # -n: the header still sets the width


# --- checks during and after parsing --------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "err"),
    [
        (["-f", "-r"], "mutually exclusive arguments: --find --output --reset"),
        (["-r", "-f"], "mutually exclusive arguments: --find --output --reset"),
        (["-f", "-o", "NAME"], "mutually exclusive arguments: --find --output --reset"),
        (["-r", "-s", "1M"], "mutually exclusive arguments: --output --reset --size"),
        (["-s", "1M", "-o", "NAME"], "mutually exclusive arguments: --output --reset --size"),
        (["-f", "zram0"], "option --find is mutually exclusive with <device>"),
        (["zram0", "zram1"], "only one <device> at a time is allowed"),
        (["-a", "lz4"], COMBINE),
        (["-p", "level=1"], COMBINE),
        (["-f", "-t", "2"], COMBINE),
        (["--compat", "3.11"], "option --compat must be combined with --size"),
        (["--compat", "4.0"], "unknown --compat version: '4.0' (known: 3.11, 6.18)"),
        (["-s", "1M"], "no device specified"),
        (["-r"], "no device specified"),
        (["-s", "1.5"], "failed to parse size: '1.5': Invalid argument"),
        (["-s", ""], "failed to parse size: '': Invalid argument"),
        (["-s", "-1"], "failed to parse size: '-1': Invalid argument"),
        (["-s", "1Z"], "failed to parse size: '1Z': Numerical result out of range"),
        (["-s", "1MIB"], "failed to parse size: '1MIB': Invalid argument"),
        (["-t", "abc"], "failed to parse streams: 'abc'"),
        (["-t", "-1"], "failed to parse streams: '-1': Numerical result out of range"),
        (["-t", "99999999999999999999999"],
         "failed to parse streams: '99999999999999999999999': Numerical result out of range"),
        (["-o", "FOO"], "unknown column: FOO"),
        (["-o", "NAME,FOO,DATA"], "unknown column: FOO,DATA"),
        (["-o", "NAME,"], "unknown column: NAME,"),
        (["zram9"], "zram9: No such device"),
        (["/dev/zram9"], "zram9: No such device"),
        (["foo"], "foo: No such device"),
        (["-s", "1M", "zram9"], "zram9: No such device"),
    ],
)
def test_usage_checks(root, capsys, args, err):
    assert run(capsys, *args) == (1, "", f"zramctl: {err}\n")


@pytest.mark.parametrize("spec", ["", ",NAME", "NAME,,DATA", "+", ",".join(["NAME"] * 27)])
def test_silent_column_errors(root, capsys, spec):
    assert run(capsys, "-o", spec) == (1, "", "")


def test_check_order_matches_util_linux(root, capsys):
    # --find with a device is reported before the column list or the algorithm check
    err = run(capsys, "-f", "-a", "x", "zram0")[2]
    assert err == "zramctl: option --find is mutually exclusive with <device>\n"
    # the --algorithm check comes before the column list is parsed
    assert "must be combined" in run(capsys, "-o", "FOO", "-a", "x")[2]
    # the column list is parsed before the device is looked up
    assert run(capsys, "-o", "FOO", "zram9")[2] == "zramctl: unknown column: FOO\n"
    # -t 0 means "not given"
    assert run(capsys, "-t", "0") == (0, "", "")


# --- help and version -------------------------------------------------------------------


def test_help_keeps_util_linux_layout(root, capsys):
    rc, out, err = run(capsys, "--help")
    assert (rc, err) == (0, "")
    lines = out.split("\n")
    assert lines[:5] == ["", "Usage:", " zramctl [options] <device>", " zramctl -r <device> [...]",
                         " zramctl [options] -f | <device> -s <size>"]
    assert " -p, --algorithm-params <parameter>...\n" + " " * 27 + "algorithm parameters to use\n" in out
    assert " -r, --reset <device>...   reset the specified zram devices\n     --raw " in out
    assert " -b, --bytes               print sizes in bytes, not in human-readable form\n" in out
    assert (
        ' Values for <size> may be followed by a suffix: KiB, MiB,\n'
        ' GiB, TiB, PiB, EiB, ZiB, or YiB (where the "iB" is optional).\n'
    ) in out
    assert " -h, --help                display this help\n -V, --version             display version\n" in out
    assert "    MEM-USED  peak memory usage to store compressed data\n" in out
    assert "  COMP-RATIO  compression ratio: DATA/TOTAL\n" in out
    assert out.endswith("\nFor more details see zramctl(8).\n")
    for line in lines:
        assert len(line) <= 80, line


def test_version(root, capsys):
    rc, out, _ = run(capsys, "-V")
    assert rc == 0 and out.startswith("zramctl from zramctl ")
    assert out.endswith(" (util-linux 2.42 options and messages; 2.38.1 table layout)\n")


# --- actions -----------------------------------------------------------------------------------


def test_status_prints_nothing_without_initialised_devices(root, capsys):
    assert run(capsys) == (0, "", "")
    Store(root).hot_add()
    assert run(capsys, "--output-all") == (0, "", "")
    rc, out, _ = run(capsys, "--json")
    assert (rc, json.loads(out)) == (0, {"zramdevices": []})


def test_named_uninitialised_device_gets_a_row(root, capsys, monkeypatch):
    monkeypatch.setattr(zram_drv, "usable_cpus", lambda: 3)  # STREAMS: one per usable CPU (6.18)
    Store(root).hot_add()
    rc, out, _ = run(capsys, "zram0")
    assert (rc, out) == (
        0,
        "NAME  ALGORITHM DISKSIZE DATA COMPR TOTAL STREAMS MOUNTPOINT\n"
        "zram0 lzo-rle         0B   0B    0B    0B       3 \n",
    )
    assert run(capsys, "/dev/zram0", "--raw", "-b")[1] == (
        "NAME ALGORITHM DISKSIZE DATA COMPR TOTAL STREAMS MOUNTPOINT\nzram0 lzo-rle 0 0 0 0 3 \n"
    )


def test_listing_is_sorted_by_number(root, capsys):
    store = Store(root)
    for _ in range(11):
        store.hot_add()
    for n in (10, 2, 1):
        assert run(capsys, f"zram{n}", "-s", "1M") == (0, "", "")
    assert run(capsys, "-o", "NAME", "--raw", "-n")[1] == "zram1\nzram2\nzram10\n"


def test_find_hot_adds_and_sets_up(root, capsys, monkeypatch):
    monkeypatch.setattr(zram_drv, "usable_cpus", lambda: 5)  # zram0, without -t: one stream per CPU
    assert run(capsys, "-f") == (0, "zram0\n", "")  # -f alone creates a device, as hot_add does
    assert run(capsys, "-f") == (0, "zram0\n", "")
    assert run(capsys, "--find", "--size", "1M") == (0, "zram0\n", "")
    assert run(capsys, "-f", "-s", "2M", "-a", "zstd", "-t", "3") == (0, "zram1\n", "")
    rc, out, _ = run(capsys, "-b", "--raw", "-n", "-o", "NAME,DISKSIZE,ALGORITHM,STREAMS")
    assert out == "zram0 1048576 lzo-rle 5\nzram1 2097152 zstd 3\n"


def test_find_reports_when_no_device_can_be_added(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("ZRAMCTL_ROOT", str(blocker / "root"))
    # The root cannot be made: said as such, not as "no free zram device found" (issue 7).
    message = f"zramctl: {blocker / 'root'}: cannot create the device directory: Not a directory\n"
    assert run(capsys, "-f") == (1, "", message)
    monkeypatch.setenv("ZRAMCTL_ROOT", str(blocker))
    assert run(capsys, "-f") == (1, "", f"zramctl: {blocker}: not a directory\n")


def test_setup_order_is_reset_compat_streams_algorithm_params_disksize(root, capsys, monkeypatch):
    Store(root).hot_add()
    calls = []
    real = sysfs.store

    def spy(z, name, value):
        calls.append((name, value))
        return real(z, name, value)

    monkeypatch.setattr(sysfs, "store", spy)
    args = ["zram0", "-s", "1M", "-a", "lz4", "-t", "2", "-p", "level=3", "--compat", "6.18"]
    assert run(capsys, *args) == (0, "", "")
    assert calls == [
        ("reset", "1"),
        ("compat", "6.18"),
        ("max_comp_streams", "2"),
        ("comp_algorithm", "lz4"),
        ("algorithm_params", "level=3"),
        ("disksize", "1048576"),
    ]


@pytest.mark.parametrize(
    ("args", "err"),
    [
        (["-a", "842"], "failed to set algorithm: Invalid argument"),
        (["-a", "bogus"], "failed to set algorithm: Invalid argument"),
        (["-p", "level=x"], "failed to set algorithm params: Invalid argument"),
        (["-t", "99999999999"], "failed to set number of streams: Numerical result out of range"),
        (["--compat", "3.11", "-a", "lz4"], "failed to set algorithm: No such file or directory"),
    ],
)
def test_setup_failures_name_the_step(root, capsys, args, err):
    Store(root).hot_add()
    rc, out, got = run(capsys, "zram0", "-s", "1M", *args)
    assert (rc, out) == (1, "")
    assert got.startswith(f"zramctl: zram0: {err}") and got.endswith("\n") and got.count("\n") == 1


def test_size_zero_is_refused_by_the_device(root, capsys):
    Store(root).hot_add()
    err = "zramctl: zram0: failed to set disksize (0 bytes): Invalid argument\n"
    assert run(capsys, "zram0", "-s", "0") == (1, "", err)


def test_failed_setup_leaves_the_reset_done(root, capsys):
    Store(root).hot_add()
    run(capsys, "zram0", "-s", "1M")
    assert run(capsys, "zram0", "-s", "2M", "-a", "bogus")[0] == 1
    assert run(capsys, "zram0", "--raw", "-n", "-b", "-o", "DISKSIZE")[1] == "0\n"


def test_streams_enoent_is_ignored(root, capsys, monkeypatch):
    """util-linux >= 2.42: kernels >= 6.15 have no max_comp_streams; -t is then ignored."""
    Store(root).hot_add()
    real = sysfs.store

    def no_streams(z, name, value):
        if name == "max_comp_streams":
            raise ZramError(errno.ENOENT, name)
        return real(z, name, value)

    monkeypatch.setattr(sysfs, "store", no_streams)
    assert run(capsys, "zram0", "-s", "1M", "-t", "4") == (0, "", "")


def test_compat_is_recorded(root, capsys):
    assert run(capsys, "-f", "-s", "1M", "--compat", "3.11") == (0, "zram0\n", "")
    assert run(capsys, "attr", "zram0", "compat") == (0, "3.11\n", "")
    # a 3.11 device has no mm_stat, mem_limit, mem_used_max or num_migrated: those cells are empty
    rc, out, _ = run(capsys, "--output-all", "--raw", "-b")
    assert out.splitlines()[1] == "zram0 1048576 0 0  1 0 0    -nan "


def test_reset_removes_continues_and_fails(root, capsys):
    store = Store(root)
    for _ in range(3):
        store.hot_add()
    run(capsys, "zram1", "-s", "1M")
    rc, out, err = run(capsys, "-r", "zram1", "zram7", "foo", "/dev/zram2")
    assert (rc, out) == (1, "")
    assert err == (
        "zramctl: zram7: failed to reset: No such device\n"
        "zramctl: foo: failed to reset: No such device\n"
    )
    assert store.ids() == [0]
    assert run(capsys, "-r", "zram0") == (0, "", "")
    assert store.ids() == []


def test_reset_of_a_busy_device_fails_and_keeps_it(root, capsys):
    store = Store(root)
    store.hot_add()
    with store.open(0, write=True):
        rc, _, err = run(capsys, "--reset", "zram0")
    assert rc == 1
    assert err.startswith("zramctl: zram0: failed to reset: Device or resource busy")
    assert store.ids() == [0]
