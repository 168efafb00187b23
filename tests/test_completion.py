"""Shell completions, run in the real shells.

bash: the completion function is called the way bash's programmable completion calls it
(COMP_WORDS, COMP_CWORD) and COMPREPLY is read back.  zsh: the file is loaded by compinit,
and, where the zsh/zpty module exists, completion is driven in an interactive zsh on a
pseudo-terminal.  fish: ``fish -n`` and ``complete -C``.  The lists built into the scripts
(columns, algorithms, attributes, verbs) must be the code's.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from zramctl.cli import main as cli
from zramctl.cli.columns import ALL_COLUMNS
from zramctl.kernel import sysfs
from zramctl.kernel.profiles import PROFILES
from zramctl.kernel.zcomp import AVAILABLE

REPO = Path(__file__).resolve().parent.parent
BASH = REPO / "completions" / "zramctl"
ZSH = REPO / "completions" / "_zramctl"
FISH = REPO / "completions" / "zramctl.fish"
FILES = {"bash": BASH, "zsh": ZSH, "fish": FISH}

ATTRIBUTES = list(dict.fromkeys(a.name for a in sysfs.MODERN_ATTRIBUTES + sysfs.LEGACY_ATTRIBUTES))
LONG = [f"--{o.name}" for o in cli.LONG_OPTIONS]
COLUMN_NAMES = [c.name for c in ALL_COLUMNS]
"""util-linux's columns, then ours that only -o shows: -o completes all of them."""


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """A root with two devices (and files that are not devices), and a second root."""
    base = tmp_path_factory.mktemp("completion")
    root = base / "root"
    root.mkdir()
    for name in ("zram0.img", "zram3.img", "zram01.img", "zramx.img", "zram5.wal", "notes.txt"):
        (root / name).write_bytes(b"")
    other = base / "other"
    other.mkdir()
    (other / "zram7.img").write_bytes(b"")
    (base / "work").mkdir()
    (base / "work" / "input.bin").write_bytes(b"")
    return base


@pytest.mark.parametrize("shell", FILES)
def test_built_in_lists_are_the_codes(shell):
    text = FILES[shell].read_text()
    assert " ".join(COLUMN_NAMES) in text
    assert " ".join(AVAILABLE) in text
    assert " ".join(ATTRIBUTES) in text
    assert " ".join(PROFILES) in text
    for verb in cli.VERBS:
        assert verb in text


# --- bash ------------------------------------------------------------------------------------------

BASH_CASES = {
    "first": (["zramctl", ""], [*cli.VERBS, "zram0", "zram3"]),
    "options": (["zramctl", "--"], LONG),
    "columns": (["zramctl", "-o", "NAME,D"], ["NAME,DISKSIZE,", "NAME,DATA,"]),
    "columns-typed": (
        ["zramctl", "--output", "=", "+name,DATA,"],
        [f"+name,DATA,{c}," for c in COLUMN_NAMES if c not in ("NAME", "DATA")],
    ),
    "algorithms": (["zramctl", "-a", ""], list(AVAILABLE)),
    "compat": (["zramctl", "-s", "1M", "--compat", ""], list(PROFILES)),
    "device-after-option": (["zramctl", "-b", ""], ["zram0", "zram3"]),
    "dev-prefix": (["zramctl", "--raw", "/dev/zr"], ["/dev/zram0", "/dev/zram3"]),
    "reset": (["zramctl", "-r", "zram0", "z"], ["zram0", "zram3"]),
    "verb-device": (["zramctl", "write", ""], ["zram0", "zram3"]),
    "verb-file": (["zramctl", "write", "zram0", "in"], ["input.bin"]),
    "verb-options": (["zramctl", "read", "zram0", "--"], ["--offset", "--length", "--root", "--help"]),
    "stat-options": (["zramctl", "stat", "--"], ["--json", "--root", "--help"]),
    "check-options": (["zramctl", "check", "zram3", "--"], ["--data", "--root", "--help"]),
    "offset-value": (["zramctl", "write", "zram0", "--offset", ""], []),
    "attributes": (["zramctl", "attr", "zram3", ""], ATTRIBUTES),
    "attribute-prefix": (["zramctl", "attr", "zram3", "mm"], ["mm_stat"]),
    "attribute-value": (["zramctl", "attr", "zram0", "comp_algorithm", ""], list(AVAILABLE)),
    "attribute-value-idle": (["zramctl", "attr", "zram0", "idle", ""], ["all"]),
    "hot-add": (["zramctl", "hot-add", ""], []),
    "root-option": (["zramctl", "--root", "../other", "stat", ""], ["zram7"]),
    "root-equals": (["zramctl", "--root", "=", "../other", "-o", "NAME", ""], ["zram7"]),
    "root-after-verb": (["zramctl", "compact", "--root", "../other", ""], ["zram7"]),
    "global-then-verb": (["zramctl", "--root", "../root", "hot-r"], ["hot-remove"]),
    # post-processing
    "extra-columns": (["zramctl", "-o", "NAME,BD-"], ["NAME,BD-COUNT,", "NAME,BD-READS,", "NAME,BD-WRITES,"]),
    "secondary-algorithm": (["zramctl", "-s", "1M", "--secondary-algorithm", ""], list(AVAILABLE)),
    "writeback-device": (["zramctl", "-s", "1M", "--writeback-device", "in"], ["input.bin"]),
    "idle-device": (["zramctl", "idle", ""], ["zram0", "zram3"]),
    "idle-options": (["zramctl", "idle", "zram0", "--"], ["--all", "--age", "--root", "--help"]),
    "idle-age": (["zramctl", "idle", "zram0", "--age", ""], []),
    "writeback-options": (
        ["zramctl", "writeback", "zram0", "--"],
        ["--idle", "--huge", "--huge-idle", "--incompressible", "--page-index", "--page-indexes", "--root",
         "--help"],
    ),
    "writeback-index": (["zramctl", "writeback", "--page-index", "3", ""], ["zram0", "zram3"]),
    "recompress-options": (
        ["zramctl", "recompress", "zram0", "--"],
        ["--type", "--max-pages", "--threshold", "--algo", "--priority", "--root", "--help"],
    ),
    "recompress-type": (["zramctl", "recompress", "zram0", "--type", ""], ["idle", "huge", "huge_idle"]),
    "recompress-algo": (["zramctl", "recompress", "zram0", "--algo", "z"], ["zstd"]),
}


@pytest.fixture(scope="module")
def bash_results(roots):
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    lines = [f"source {BASH}", "complete -p zramctl"]
    for key, (words, _) in BASH_CASES.items():
        quoted = " ".join("'" + w + "'" for w in words)
        lines.append(
            f"COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; COMPREPLY=(); _zramctl_module; "
            f"printf '%s\\t' '{key}' \"${{COMPREPLY[@]}}\"; echo"
        )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(roots), "ZRAMCTL_ROOT": str(roots / "root")}
    proc = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", "\n".join(lines)],
        capture_output=True, text=True, cwd=roots / "work", env=env, timeout=60,
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    out = proc.stdout.splitlines()
    assert out[0] == "complete -F _zramctl_module zramctl"
    results = {}
    for line in out[1:]:
        key, *words = line.rstrip("\t").split("\t")
        results[key] = [w for w in words if w]
    return results


@pytest.mark.parametrize("case", BASH_CASES)
def test_bash(bash_results, case):
    expected = BASH_CASES[case][1]
    assert sorted(bash_results[case]) == sorted(expected)


# --- zsh -------------------------------------------------------------------------------------------

# Drives an interactive zsh on a pty and prints every match compadd is given (after the idea of
# Valodim's zsh-capture-completion).  $1 is the command line, $2 the directory of _zramctl.
ZSH_CAPTURE = r"""
zmodload zsh/zpty || exit 3
zpty z zsh -f -i
local line
setopt rcquotes
() {
    zpty -w z source $1
    repeat 4; do
        zpty -r z line
        [[ $line == ok* ]] && return
    done
    echo 'error initializing.' >&2
    exit 2
} =( <<< "
fpath=($2 \$fpath)
PROMPT=
autoload -U compinit
compinit -u -D
bindkey '^I' complete-word
null-line () { echo -E - \$'\0' }
compprefuncs=( null-line )
comppostfuncs=( null-line exit )
zstyle ':completion:*' list-grouped false
zle_bracketed_paste=()
compadd () {
    if [[ \${@[1,(i)(-|--)]} == *-(O|A|D)\ * ]]; then
        builtin compadd \"\$@\"
        return \$?
    fi
    typeset -a __hits
    builtin compadd -A __hits \"\$@\"
    setopt localoptions norcexpandparam extendedglob
    typeset -A apre hpre hsuf asuf
    zparseopts -E P:=apre p:=hpre S:=asuf s:=hsuf
    [[ -n \$__hits ]] || return
    for i in {1..\$#__hits}; do
        echo -E - \$IPREFIX\$apre\$hpre\$__hits[\$i]\$hsuf\$asuf
    done
}
echo ok")
zpty -w z "$1"$'\t'
integer tog=0
while zpty -r z; do :; done | while IFS= read -r line; do
    if [[ $line == *$'\0\r' ]]; then
        (( tog++ )) && return 0 || continue
    fi
    (( tog )) && echo -E - $line
done
return 2
"""


def test_zsh_loads_it():
    if shutil.which("zsh") is None:
        pytest.skip("zsh is not installed")
    proc = subprocess.run(
        ["zsh", "-f", "-c", f"autoload -U compinit; compinit -u -D; source {ZSH}; print -r $_comps[zramctl]"],
        capture_output=True, text=True, timeout=60,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "_zramctl\n", "")


ZSH_CASES = {
    "zramctl --ou": ["--output", "--output-all"],
    "zramctl ": [*cli.VERBS, "zram0", "zram3"],
    "zramctl -b ": ["zram0", "zram3"],
    "zramctl -o NAME,D": ["NAME,DISKSIZE", "NAME,DATA"],
    "zramctl -a ": list(AVAILABLE),
    "zramctl --compat=": [f"--compat={p}" for p in PROFILES],
    "zramctl write ": ["zram0", "zram3"],
    "zramctl attr zram0 mm": ["mm_stat"],
    "zramctl read zram0 --l": ["--length"],
    "zramctl --root ../other stat ": ["zram7"],
    "zramctl -o NAME,BD": ["NAME,BD-COUNT", "NAME,BD-READS", "NAME,BD-WRITES"],
    "zramctl writeback zram0 --hu": ["--huge", "--huge-idle"],
    "zramctl recompress zram0 --type=": ["--type=idle", "--type=huge", "--type=huge_idle"],
    "zramctl idle ": ["zram0", "zram3"],
    "zramctl -s 1M --secondary-algorithm=z": ["--secondary-algorithm=zstd"],
}


@pytest.fixture(scope="module")
def zsh_capture(roots, tmp_path_factory):
    if shutil.which("zsh") is None:
        pytest.skip("zsh is not installed")
    if subprocess.run(["zsh", "-f", "-c", "zmodload zsh/zpty"], capture_output=True).returncode:
        pytest.skip("zsh has no zpty module")
    script = tmp_path_factory.mktemp("zsh") / "capture.zsh"
    script.write_text(ZSH_CAPTURE)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(roots), "ZRAMCTL_ROOT": str(roots / "root"), "TERM": "dumb"}

    def capture(line: str) -> list[str]:
        proc = subprocess.run(
            ["zsh", "-f", str(script), line, str(ZSH.parent)],
            capture_output=True, text=True, cwd=roots / "work", env=env, timeout=60,
        )
        return [w for w in proc.stdout.replace("\r", "").split("\n") if w]

    return capture


@pytest.mark.parametrize("line", ZSH_CASES)
def test_zsh(zsh_capture, line):
    assert sorted(zsh_capture(line)) == sorted(ZSH_CASES[line])


# --- fish ------------------------------------------------------------------------------------------

FISH_CASES = {
    "zramctl --ou": ["--output", "--output-all"],
    "zramctl ": [*cli.VERBS, "zram0", "zram3"],
    "zramctl -b ": ["zram0", "zram3"],
    "zramctl -o NAME,D": ["NAME,DISKSIZE", "NAME,DATA"],
    "zramctl --output=name,DATA,CO": ["--output=name,DATA,COMPR", "--output=name,DATA,COMP-RATIO"],
    "zramctl -a ": list(AVAILABLE),
    "zramctl write ": ["zram0", "zram3"],
    "zramctl write zram0 in": ["input.bin"],
    "zramctl attr zram0 mm": ["mm_stat"],
    "zramctl read zram0 --": ["--offset", "--length", "--root", "--help"],
    "zramctl --root ../other stat ": ["zram7"],
    "zramctl --": LONG,
    "zramctl -o NAME,BD-": ["NAME,BD-COUNT", "NAME,BD-READS", "NAME,BD-WRITES"],
    "zramctl writeback zram0 --": [
        "--idle", "--huge", "--huge-idle", "--incompressible", "--page-index", "--page-indexes", "--root",
        "--help",
    ],
    "zramctl recompress zram0 --type ": ["idle", "huge", "huge_idle"],
    "zramctl idle zram0 --a": ["--all", "--age"],
    "zramctl --secondary-algorithm z": ["zstd"],
}


@pytest.fixture(scope="module")
def fish_results(roots):
    if shutil.which("fish") is None:
        pytest.skip("fish is not installed")
    proc = subprocess.run(["fish", "-n", str(FISH)], capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stderr) == (0, "")
    script = [f"source {FISH}"]
    for n, line in enumerate(FISH_CASES):
        script.append(f"echo '@@{n}'; complete -C'{line}'")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(roots), "ZRAMCTL_ROOT": str(roots / "root")}
    proc = subprocess.run(
        ["fish", "--no-config", "-c", "\n".join(script)],
        capture_output=True, text=True, cwd=roots / "work", env=env, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    results: dict[int, list[str]] = {}
    current = -1
    for row in proc.stdout.splitlines():
        if row.startswith("@@"):
            current = int(row[2:])
            results[current] = []
        else:
            results[current].append(row.split("\t")[0])
    return {line: results[n] for n, line in enumerate(FISH_CASES)}


@pytest.mark.parametrize("line", FISH_CASES)
def test_fish(fish_results, line):
    assert sorted(fish_results[line]) == sorted(FISH_CASES[line])
