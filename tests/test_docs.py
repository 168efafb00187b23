"""Nothing the command line offers is missing from the man page, the completions or --help.

The lists come from the code: util-linux's options from ``getopt.LONG_OPTIONS``, the verbs and
their options from the typer application, the columns from ``columns.COLUMNS``.  The man page
must also render without a single warning.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import typer

from zramctl.cli import main as cli
from zramctl.cli import verbs
from zramctl.cli.columns import ALL_COLUMNS, COLUMNS, DEFAULT_COLUMNS, EXTRA_COLUMNS

REPO = Path(__file__).resolve().parent.parent
MAN = REPO / "man" / "zramctl.8"
COMPLETIONS = {
    "bash": REPO / "completions" / "zramctl",
    "zsh": REPO / "completions" / "_zramctl",
    "fish": REPO / "completions" / "zramctl.fish",
}


def man_text() -> str:
    """The man page source with roff's escaped hyphens made plain."""
    return MAN.read_text().replace("\\-", "-")


def verb_options() -> dict[str, list[str]]:
    group = typer.main.get_command(verbs.app)
    return {
        name: [opt for p in cmd.params if p.param_type_name == "option" for opt in p.opts if opt[:2] == "--"]
        for name, cmd in group.commands.items()
    }


def help_text(capsys) -> str:
    assert cli.main(["--help"]) == 0
    return capsys.readouterr().out


def test_the_verbs_are_the_ones_typer_runs():
    assert sorted(verb_options()) == sorted(cli.VERBS)


@pytest.mark.parametrize("where", ["man", "help", *COMPLETIONS])
def test_every_option_and_verb_is_documented(where, capsys):
    if where == "man":
        text = man_text()
    elif where == "help":
        text = help_text(capsys)
    else:
        text = COMPLETIONS[where].read_text()
    if where == "fish":  # complete -s a -l algorithm
        text = re.sub(r"-l ([\w-]+)", r"--\1", re.sub(r"-s (\w)\b", r"-\1", text))
    missing = []
    for opt in cli.LONG_OPTIONS:
        if not re.search(rf"--{re.escape(opt.name)}\b(?!-)", text):
            missing.append(f"--{opt.name}")
        if len(opt.key) == 1:
            short = f"-{opt.key}"
            found = re.search(rf"(?<![\w-]){re.escape(short)}\b", text)
            if not found and where != "bash":  # util-linux's bash completion offers long options only
                missing.append(short)
    for verb, options in verb_options().items():
        if not re.search(rf"(?<![\w-]){re.escape(verb)}(?![\w-])", text):
            missing.append(verb)
        for opt in options:
            if opt not in text:
                missing.append(f"{verb} {opt}")
    assert not missing, f"{where} lacks: {missing}"


@pytest.mark.parametrize("verb", cli.VERBS)
def test_every_verb_option_is_in_its_help(verb, capsys):
    assert cli.main([verb, "--help"]) == 0
    text = capsys.readouterr().out
    for opt in verb_options()[verb]:
        assert opt in text, (verb, opt)


def test_man_columns_section_is_the_column_table():
    text = MAN.read_text()
    section = text.split("\n.SH COLUMNS\n")[1].split("\n.SH ")[0]
    entries = re.findall(r"^\.TP\n\.B (.+)\n(.+)$", section, re.M)
    documented = [(name.replace("\\-", "-"), help_) for name, help_ in entries]
    assert documented == [(c.name, c.help) for c in ALL_COLUMNS]
    defaults = ", ".join(c.name for c in DEFAULT_COLUMNS[:-1]) + " and " + DEFAULT_COLUMNS[-1].name
    plain = " ".join(section.replace("\\-", "-").split())
    assert f"The default columns are {defaults}." in plain


def test_help_columns_come_from_the_table(capsys):
    text = help_text(capsys)
    listed = text.split("Available output columns:\n")[1].split("\n\n")[0].splitlines()
    assert listed == [f" {c.name:>11}  {c.help}" for c in COLUMNS]
    extra = text.split("Columns shown only when named with --output (not by --output-all):\n")[1]
    assert extra.split("\n\n")[0].splitlines() == [f" {c.name:>11}  {c.help}" for c in EXTRA_COLUMNS]


def test_man_says_which_columns_only_o_shows():
    """The paragraph after the column list names the extra columns' count and their sources."""
    section = man_text().split("\n.SH COLUMNS\n")[1].split("\n.SH ")[0]
    plain = " ".join(section.split())
    assert "The last six columns are ours" in plain and len(EXTRA_COLUMNS) == 6
    for source in ("huge_pages", "huge_pages_since", "bd_stat", "block_state", "4 KiB pages"):
        assert source in plain, source


def test_man_has_the_sections_and_references():
    text = MAN.read_text()
    sections = re.findall(r"^\.SH (.+)$", text, re.M)
    assert [s.strip('"') for s in sections] == [
        "NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "VERBS", "COLUMNS", "EXIT STATUS", "ENVIRONMENT",
        "FILES", "EXAMPLES", "SEE ALSO",
    ]
    plain = man_text()
    for word in ("ZRAMCTL_ROOT", "XDG_STATE_HOME", "NO_COLOR", "zram-image (5)", "zramctl (8)"):
        assert word.replace(" ", "") in plain.replace(".BR ", "").replace(" (", "("), word
    assert "tar c" in plain and "| sha256sum" in plain and "zramctl --find --size 1024M" in plain


def test_man_renders_without_warnings():
    if shutil.which("groff") is None and shutil.which("mandoc") is None:
        pytest.skip("neither groff nor mandoc is installed")
    if shutil.which("groff"):
        proc = subprocess.run(["groff", "-man", "-ww", "-z", str(MAN)], capture_output=True, text=True)
        assert (proc.returncode, proc.stderr) == (0, "")
    if shutil.which("mandoc"):
        proc = subprocess.run(["mandoc", "-Tlint", str(MAN)], capture_output=True, text=True)
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


README = REPO / "README.md"


def readme_module_table() -> set[str]:
    """Every path the README's module table names (a bare name is in the folder of the path before it)."""
    section = README.read_text().split("## How it is built")[1].split("\n## ")[0]
    named: set[str] = set()
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        folder = ""
        for name in re.findall(r"`([^`]+)`", line.split("|")[1]):
            path = name if "/" in name else f"{folder}/{name}"
            folder = path.rstrip("/").rpartition("/")[0] if not path.endswith("/") else path.rstrip("/")
            named.add(path.rstrip("/"))
    return named


def test_readme_module_table_is_the_tree():
    """The table under "How it is built" lists every module and package of zramctl/, and nothing else."""
    package = REPO / "zramctl"
    modules = {
        str(p.relative_to(REPO))
        for p in [*package.rglob("*.py"), *package.rglob("*.c")]
        if p.name not in ("__init__.py", "__main__.py")
    }
    packages = {str(p.parent.relative_to(REPO)) for p in package.rglob("__init__.py")} - {"zramctl"}
    named = readme_module_table()
    assert sorted(modules | packages) == sorted(named)


def test_no_file_cites_notes_outside_the_repository():
    """Docstrings, tests and docs cite the kernel's and util-linux's files or the project's docs/, never a
    facts document that a clone does not have."""
    stems = ("kernel-zram", "kernel-compressors", "zramctl-compat", "design", "style")
    outside = re.compile(r"\b(" + "|".join(re.escape(s) for s in stems) + r")\.md\b")
    kept = {p.name for p in (REPO / "docs").glob("*.md")}
    found = []
    for folder in ("zramctl", "tests", "benchmarks", "tools", "docs", "man"):
        for path in sorted((REPO / folder).rglob("*")):
            if not path.is_file() or path.suffix in (".so", ".pyc") or path.name == "test_standalone.py":
                continue
            for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if any(m[0] not in kept for m in outside.finditer(line)):
                    found.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    for n, line in enumerate(README.read_text().splitlines(), 1):
        if any(m[0] not in kept for m in outside.finditer(line)):
            found.append(f"README.md:{n}: {line.strip()}")
    assert found == []
