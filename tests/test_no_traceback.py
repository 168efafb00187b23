"""No input makes zramctl print a Python traceback: every failure is one ``zramctl: ...`` line.

A corpus of bad inputs (sizes, columns, devices, files, corrupt images, a root
that is a file, bytes that are not UTF-8), plus Ctrl-C, a closed or full
stdout and a file-size limit, each run through the installed command.
"""

from __future__ import annotations

import fcntl
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ZRAMCTL = str(Path(sys.executable).with_name("zramctl"))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """zram0 set up with data, zram1 not set up, zram2 garbage, zram3 an empty file."""
    root = tmp_path_factory.mktemp("corpus")
    env = dict(os.environ, ZRAMCTL_ROOT=str(root))
    for args in (["-f", "-s", "4M"], ["hot-add"], ["hot-add"], ["hot-add"]):
        subprocess.run([ZRAMCTL, *args], env=env, check=True, capture_output=True)
    subprocess.run(
        [ZRAMCTL, "write", "zram0"], input=os.urandom(64 << 10) + bytes(64 << 10), env=env, check=True
    )
    (root / "zram2.img").write_bytes(b"not an image at all " * 500)
    (root / "zram3.img").write_bytes(b"")
    (root / "notes.txt").write_text("not a device\n")
    return root


def env_for(root: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, ZRAMCTL_ROOT=str(root))
    env.update(extra)
    env.pop("NO_COLOR", None)
    return env


def assert_clean(proc: subprocess.CompletedProcess, rc: int | None = 1) -> None:
    err = proc.stderr.decode(errors="replace")
    assert "Traceback" not in err and "internal error" not in err, err
    if rc is not None:
        assert proc.returncode == rc, (proc.args, proc.returncode, err)
    for line in err.splitlines():
        assert line.startswith(("zramctl: ", "Try 'zramctl")), (proc.args, err)


HUGE = "9" * 5000

CORPUS = [
    # sizes and numbers
    ["-s", "abc", "zram0"],
    ["-s", "-1", "zram0"],
    ["-s", "1.5", "zram0"],
    ["-s", "99999999999999999999", "zram0"],
    ["-s", "1Z", "zram0"],
    ["-s", "1 ", "zram0"],
    ["-t", "x"],
    ["-t", "-5"],
    ["zram1", "-s", "1M", "-t", "99999999999"],
    ["write", "zram0", "--offset", "lots"],
    ["write", "zram0", "--offset", "99999999999999999999999"],
    ["read", "zram0", "--length", "-1"],
    ["read", "zram0", "--offset", "1E"],
    ["discard", "zram0", "--length", "1Q"],
    ["read", "zram0", "--offset", "5M"],
    ["discard", "zram0", "--offset", "3M", "--length", "2M"],
    # columns
    ["-o", "FOO"],
    ["-o", ""],
    ["-o", "NAME,"],
    ["-o", ",,"],
    ["-o", "+"],
    ["-o", "NAME" + ",NAME" * 40],
    # options
    ["--bogus"],
    ["-Z"],
    ["-o"],
    ["--output-all=1"],
    ["-f", "-r"],
    ["--compat", "9.9", "-s", "1M", "zram1"],
    ["--root"],
    ["--root", ""],
    ["write"],
    ["attr", "zram0"],
    ["stat"],
    ["hot-add", "extra"],
    ["stat", "zram0", "--bogus"],
    ["write", "zram0", "a", "b"],
    # devices that do not exist, or are not names
    ["zram9"],
    ["/dev/sda"],
    ["../zram0"],
    ["zram-1"],
    ["zram00"],
    ["notes"],
    ["stat", "zram9"],
    ["read", "zram9"],
    ["write", "zram9"],
    ["discard", "zram9"],
    ["attr", "zram9", "disksize"],
    ["compact", "zram9"],
    ["check", "zram9"],
    ["hot-remove", "zram9"],
    ["-s", "1M", "zram9"],
    # attributes
    ["attr", "zram0", "nosuch"],
    ["attr", "zram0", "reset"],
    ["attr", "zram0", "mm_stat", "1"],
    ["attr", "zram0", "disksize", "1G"],
    ["attr", "zram0", "comp_algorithm", "842"],
    ["attr", "zram1", "compact", "1"],
    ["attr", "zram0", "../../etc/passwd"],
    ["attr", "zram0", "max_comp_streams", "-3"],
    # unreadable input, devices not set up
    ["write", "zram0", "/nonexistent/file"],
    ["write", "zram0", "/"],
    ["write", "zram1"],
    ["read", "zram1"],
    ["compact", "zram1"],
    ["write", "zram0", "/dev/zero"],
    # corrupt and truncated images
    ["zram2"],
    ["--output-all", "zram3"],
    ["stat", "zram2"],
    ["read", "zram2"],
    ["write", "zram3"],
    ["attr", "zram2", "mm_stat"],
    ["compact", "zram3"],
    ["zram2", "-s", "1M"],
    ["-f"],
    [],
    # bytes that are not UTF-8
    [b"\xff\xfe".decode("utf-8", "surrogateescape")],
    ["-o", b"NAME,\xff".decode("utf-8", "surrogateescape")],
    # numbers of any length (Python's int() refuses more than 4,300 digits)
    ["-s", HUGE, "zram0"],
    ["-s", HUGE + "M", "zram1"],
    ["-s", "1." + HUGE + "K", "zram1"],
    ["-s", "0x" + "f" * 5000, "zram1"],
    ["-t", HUGE, "-s", "1M", "zram1"],
    ["-t", "-" + HUGE, "-s", "1M", "zram1"],
    ["zram" + HUGE],
    ["stat", "zram" + HUGE],
    ["-r", "zram" + HUGE],
    ["write", "zram0", "--offset", HUGE],
    ["read", "zram0", "--offset", HUGE],
    ["read", "zram0", "--length", HUGE],
    ["discard", "zram0", "--offset", HUGE],
    ["discard", "zram0", "--length", HUGE],
    ["attr", "zram0", "disksize", HUGE],
    ["attr", "zram1", "disksize", HUGE],
    ["attr", "zram1", "disksize", "18446744073709551615"],
    ["attr", "zram0", "mem_used_max", HUGE],
    ["attr", "zram0", "max_comp_streams", HUGE],
    ["attr", "zram0", "reset", HUGE],
    ["attr", "zram0", "algorithm_params", "level=" + HUGE],
    ["attr", "zram0", "comp_algorithm", HUGE],
    ["attr", "zram0", "compat", HUGE],
    # garbage in attributes
    ["attr", "zram0", "max_comp_streams", ""],
    ["attr", "zram0", "max_comp_streams", "   "],
    ["attr", "zram0", "max_comp_streams", "é"],
    ["attr", "zram0", "reset", "\u0663"],
    ["attr", "zram0", "reset", "x" * 100_000],
    ["attr", "zram0", "mem_limit", "--", "-1"],
    ["attr", "zram0", "mem_used_max", "1_0"],
    ["attr", "zram1", "disksize", " "],
    ["attr", "zram1", "comp_algorithm", ""],
    ["attr", "zram1", "comp_algorithm", "x" * 100_000],
    ["attr", "zram0", "", "1"],
    ["attr", "zram0", "x" * 100_000],
    # estimate: empty input, missing or unreadable processes, bad lists and files
    ["estimate"],
    ["estimate", "-"],
    ["estimate", "/nonexistent"],
    ["estimate", "/"],
    ["estimate", "a", "b"],
    ["estimate", "--pid", "99999999"],
    ["estimate", "--pid", "2"],
    ["estimate", "--pid", "x"],
    ["estimate", "--pid", HUGE],
    ["estimate", "--pid", ""],
    ["estimate", "--all-processes", "x"],
    ["estimate", "-a", "foo"],
    ["estimate", "-a", HUGE],
    ["estimate", "-a", "zstd:" + HUGE],
    ["estimate", "-a", "zstd:9..1"],
    ["estimate", "-a", ","],
    ["estimate", "--allocator", "bar"],
    ["estimate", "--allocator", "zsmalloc:" + HUGE],
    ["estimate", "-t", "0"],
    ["estimate", "-t", HUGE],
    # post-processing: the verbs, the set-up options and the columns only -o shows
    ["idle", "zram1"],
    ["idle", "zram2"],
    ["idle", "zram9"],
    ["idle", "zram0", "--age", "-1"],
    ["idle", "zram0", "--age", HUGE],
    ["idle", "zram0", "--age", "1 2"],
    ["idle", "zram0", "--all", "--age", "1"],
    ["writeback", "zram0"],
    ["writeback", "zram0", "--idle"],
    ["writeback", "zram0", "--idle", "--huge"],
    ["writeback", "zram0", "--page-index", HUGE],
    ["writeback", "zram0", "--page-index", "\u0663"],
    ["writeback", "zram0", "--page-indexes", "x-y"],
    ["writeback", "zram0", "--page-indexes", HUGE + "-" + HUGE],
    ["writeback", "zram1", "--huge"],
    ["writeback", "zram3", "--huge"],
    ["writeback", "zram9", "--huge"],
    ["recompress", "zram0"],
    ["recompress", "zram1"],
    ["recompress", "zram0", "--type", "bogus"],
    ["recompress", "zram0", "--max-pages", HUGE],
    ["recompress", "zram0", "--threshold", HUGE],
    ["recompress", "zram0", "--priority", "-1"],
    ["recompress", "zram0", "--algo", HUGE],
    ["recompress", "zram0", "--algo", "x" * 100_000],
    ["-s", "1M", "zram1", "--writeback-device", "/nonexistent"],
    ["-s", "1M", "zram1", "--writeback-device", "/"],
    ["-s", "1M", "zram1", "--writeback-device", "/dev/null"],
    ["-s", "1M", "zram1", "--writeback-device", ""],
    ["-s", "1M", "zram1", "--writeback-device", "x" * 100_000],
    ["-s", "1M", "zram1", "--secondary-algorithm", HUGE],
    ["-s", "1M", "zram1", "--secondary-algorithm", "zstd:" + HUGE],
    ["-s", "1M", "zram1", "--secondary-algorithm", ""],
    ["-s", "1M", "zram1", "--secondary-algorithm", "zstd:\u0663"],
    ["--writeback-device", "x"],
    ["--secondary-algorithm", "zstd"],
    ["-o", "HUGE,FOO"],
    ["-o", "IDLE", "zram2"],
    ["attr", "zram0", "block_state", "1"],
    ["attr", "zram1", "block_state"],
]


@pytest.mark.parametrize(
    "args", CORPUS, ids=lambda a: " ".join(a).encode("ascii", "replace").decode()[:60] or "status"
)
def test_bad_input_is_one_line_of_words(root, args):
    proc = subprocess.run(
        [ZRAMCTL, *args], env=env_for(root), capture_output=True, timeout=60, stdin=subprocess.DEVNULL
    )
    if args in (["-f"], []):  # -f hot-adds past the broken images; the listing warns about them
        assert_clean(proc, rc=None)
        return
    assert_clean(proc)
    silent = args[:1] == ["-o"] and args[1:] in (
        [""],
        [",,"],
        ["+"],
        ["NAME" + ",NAME" * 40],
    )  # util-linux: exit 1
    assert bool(proc.stderr) != silent, args
    assert len(proc.stderr.splitlines()) <= 2, args  # the error, and perhaps "Try ... --help"


def test_check_reports_corrupt_and_empty_images(root):
    for dev in ("zram2", "zram3"):
        proc = subprocess.run([ZRAMCTL, "check", dev], env=env_for(root), capture_output=True, timeout=60)
        assert_clean(proc)
        assert proc.stdout.decode().startswith(f"{dev}: ")


def test_root_that_is_a_file(root):
    env = env_for(root, ZRAMCTL_ROOT=str(root / "notes.txt"))
    for args in ([], ["-f"], ["hot-add"], ["stat", "zram0"], ["-r", "zram0"], ["zram0", "-s", "1M"]):
        proc = subprocess.run([ZRAMCTL, *args], env=env, capture_output=True, timeout=60)
        assert_clean(proc)


def test_ctrl_c_while_reading_a_pipe_exits_130_quietly(root):
    proc = subprocess.Popen(
        [ZRAMCTL, "write", "zram0"], env=env_for(root), stdin=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdin.write(b"x" * 1000)
    proc.stdin.flush()
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and err == b""


def test_ctrl_c_while_waiting_for_a_lock_exits_130_quietly(root):
    with open(root / "zram1.img", "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        proc = subprocess.Popen([ZRAMCTL, "zram1", "-s", "1M"], env=env_for(root), stderr=subprocess.PIPE)
        time.sleep(0.7)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and err == b""


def test_closed_pipe_on_stdout_stops_quietly(root):
    proc = subprocess.Popen(
        [ZRAMCTL, "read", "zram0"], env=env_for(root), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert len(proc.stdout.read(100)) == 100
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=30) == 141 and err == b""
    for args in (["--output-all", "zram0"], ["-h"], ["stat", "zram0"], ["write", "--help"], ["hot-add"]):
        r, w = os.pipe()
        os.close(r)  # no reader at all: the first write fails with EPIPE
        proc = subprocess.run(
            [ZRAMCTL, *args], env=env_for(root), stdout=w, stderr=subprocess.PIPE, timeout=60
        )
        os.close(w)
        assert proc.stderr == b"" and proc.returncode == 141, args


def test_closed_and_full_stdout_say_write_error(root):
    proc = subprocess.run(
        ["sh", "-c", f"'{ZRAMCTL}' --output-all zram0 >&-"],
        env=env_for(root),
        capture_output=True,
        timeout=60,
    )
    assert_clean(proc)
    assert proc.stderr == b"zramctl: write error: Bad file descriptor\n"
    with open("/dev/full", "wb") as full:
        for args in (["--output-all", "zram0"], ["read", "zram0"], ["stat", "zram0", "--json"]):
            proc = subprocess.run([ZRAMCTL, *args], env=env_for(root), stdout=full, stderr=subprocess.PIPE)
            assert_clean(proc)
            assert proc.stderr == b"zramctl: write error: No space left on device\n"


def test_file_size_limit_is_an_error_not_a_signal(tmp_path):
    env = env_for(tmp_path / "root")
    subprocess.run([ZRAMCTL, "-f", "-s", "4M"], env=env, check=True, capture_output=True)

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))

    proc = subprocess.run(
        [ZRAMCTL, "write", "zram0"],
        input=os.urandom(1 << 20),
        env=env,
        capture_output=True,
        preexec_fn=limit,
        timeout=60,
    )
    assert_clean(proc)
    assert proc.stderr.startswith(b"zramctl: zram0: write: File too large (")
    proc = subprocess.run([ZRAMCTL, "check", "zram0"], env=env, capture_output=True, timeout=60)
    assert (proc.returncode, proc.stdout) == (0, b"")  # the last commit is intact


def _sh(root: Path, script: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["sh", "-c", script], env=env_for(root, Z=ZRAMCTL), capture_output=True, timeout=60
    )


def test_a_closed_stdin(root):
    proc = _sh(root, '"$Z" write zram0 <&-')
    assert_clean(proc)
    assert proc.stderr == b"zramctl: zram0: write: stdin: Bad file descriptor\n"
    proc = _sh(root, '"$Z" --output-all zram0 <&-')
    assert_clean(proc, rc=0)


def test_a_directory_as_stdin(root):
    """Python itself refuses to start with a directory as stdin; the installed command does not."""
    proc = _sh(root, '"$Z" --version < /')
    assert_clean(proc, rc=0)
    assert proc.stdout.startswith(b"zramctl from zramctl ")
    proc = _sh(root, '"$Z" zram0 < /')
    assert_clean(proc, rc=0)
    assert proc.stdout.startswith(b"NAME ")
    proc = _sh(root, '"$Z" stat zram0 < /')
    assert_clean(proc, rc=0)
    before = _sh(root, '"$Z" attr zram0 mm_stat').stdout
    for script in ('"$Z" write zram0 < /', '"$Z" write zram0 - < /'):
        proc = _sh(root, script)
        assert_clean(proc)
        assert proc.stderr == b"zramctl: zram0: write: stdin: Is a directory\n"
    assert _sh(root, '"$Z" attr zram0 mm_stat').stdout == before


def test_a_terminal_stdin_ends_at_one_ctrl_d(root):
    """``write`` from a terminal: what is typed, up to one ^D at the start of a line."""
    import pty

    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [ZRAMCTL, "write", "zram0", "--offset", "3M"],
            env=env_for(root),
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        os.close(slave)
        slave = -1
        os.write(master, b"typed line\n")
        time.sleep(0.3)
        os.write(master, b"\x04")  # one ^D
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            pytest.fail("write still waited for input after one ^D")
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert (proc.returncode, err) == (0, b"")
    back = subprocess.run(
        [ZRAMCTL, "read", "zram0", "--offset", "3M", "--length", "11"],
        env=env_for(root),
        capture_output=True,
        timeout=60,
    )
    assert back.stdout == b"typed line\n"


ATTR_GARBAGE = ["", " \t\n", "-1", HUGE, "0x" + "f" * 5000, "\u0663", "1_0", "level=" + HUGE, "x" * 100_000]
"""One of each kind (tests/test_sysfs.py runs many more through the attributes themselves)."""


@pytest.mark.parametrize("compat", ["6.18", "3.11"])
def test_every_attribute_with_every_garbage(tmp_path, monkeypatch, capfd, compat):
    """In process (the same main() the command runs): one line of words or success, every time."""
    from zramctl.cli import main as cli
    from zramctl.kernel import sysfs
    from zramctl.kernel.zram_drv import Zram, ZramConfig

    monkeypatch.setenv("ZRAMCTL_ROOT", str(tmp_path))
    def fresh() -> None:
        """zram0 set up, zram1 not (a failed write to an attribute changes nothing)."""
        for n in (0, 1):
            cli.main(["hot-remove", f"zram{n}"])
        assert cli.main(["--compat", compat, "-f", "-s", "1M"]) == 0
        assert cli.main(["hot-add"]) == 0
        capfd.readouterr()

    fresh()
    names = sorted(sysfs.attributes(Zram(ZramConfig(compat=compat))))
    for name in names:
        for value in ATTR_GARBAGE:
            for dev in ("zram0", "zram1"):  # set up, and not
                rc = cli.main(["attr", dev, name, "--", value])
                err = capfd.readouterr().err
                where = (compat, dev, name, value[:30], rc, err[:300])
                assert rc in (0, 1), where
                assert "internal error" not in err and "Traceback" not in err, where
                assert (rc == 0) == (err == ""), where
                assert len(err.splitlines()) <= 2, where
                assert all(line.startswith(("zramctl: ", "Try 'zramctl")) for line in err.splitlines()), where
                if rc == 0:
                    fresh()


def test_the_command_does_not_import_from_the_current_directory(root, tmp_path):
    """The launcher runs Python with -c, which puts the current directory first on sys.path; a
    ``zramctl`` folder there must not replace the program (think of root in a user's directory)."""
    planted = tmp_path / "cwd" / "zramctl"
    planted.mkdir(parents=True)
    marker = tmp_path / "planted-code-ran"
    (planted / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (planted / "cli.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    proc = subprocess.run(
        [ZRAMCTL, "--version"], cwd=planted.parent, env=env_for(root), capture_output=True, timeout=60
    )
    assert_clean(proc, rc=0)
    assert proc.stdout.startswith(b"zramctl from zramctl ") and not marker.exists()
