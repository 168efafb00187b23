"""The package's layers, read from its imports (ast): no cycles, and nothing imports upward.

The tree is the design (README, "How it is built"):

- ``zramctl.kernel``: the kernel model (zram_drv, zsmalloc, sysfs, profiles, zcomp and the
  compiled compressors, the zbud/z3fold models);
- ``zramctl.image``: the on-disk image (format, io, maps, commits, check);
- ``zramctl.store``: the device directory, locks and the commands' device I/O;
- ``zramctl.cli``: the command line;

with ``zramctl.errors`` and ``zramctl.interrupts`` below them all, and the estimate engine
(``zramctl.estimate``, ``zramctl.procmem``) beside the store, over the kernel model.
Every import counts, those inside functions too: a cycle hidden in a function is a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "zramctl"

# Lower number = lower layer.  A module may import only modules of its own layer or below.
LAYERS = {
    "zramctl.errors": 0,
    "zramctl.interrupts": 0,
    "zramctl.crc": 0,
    "zramctl.kernel": 1,
    "zramctl.image": 2,
    "zramctl.estimate": 2,
    "zramctl.procmem": 2,
    "zramctl.store": 3,
    "zramctl.cli": 4,
    "zramctl.__main__": 5,
}


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports, anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in known else target)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return {m for m in out if m in known and m != name}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def layer(module: str) -> int | None:
    for prefix, level in sorted(LAYERS.items(), key=lambda kv: -len(kv[0])):
        if module == prefix or module.startswith(prefix + "."):
            return level
    return None


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(u: str) -> list[str] | None:
        state[u] = 1
        stack.append(u)
        for v in sorted(edges.get(u, ())):
            if state.get(v) == 1:
                return stack[stack.index(v) :] + [v]
            if v not in state and (found := visit(v)):
                return found
        stack.pop()
        state[u] = 2
        return None

    for u in sorted(edges):
        if u not in state and (found := visit(u)):
            return found
    return None


def test_every_module_has_a_layer() -> None:
    unplaced = [m for m in modules() if m != "zramctl" and layer(m) is None]
    assert unplaced == [], f"modules outside every layer: {unplaced}"


def test_no_import_cycles() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_module_imports_a_higher_layer() -> None:
    upward = [
        f"{m} ({layer(m)}) imports {d} ({layer(d)})"
        for m, deps in sorted(graph().items())
        for d in sorted(deps)
        if layer(m) is not None and layer(d) is not None and layer(d) > layer(m)  # type: ignore[operator]
    ]
    assert upward == []


def test_the_kernel_model_knows_no_files_nor_command_line() -> None:
    """The kernel model imports neither the image, the store nor the command line."""
    bad = [
        (m, d)
        for m, deps in graph().items()
        if m.startswith("zramctl.kernel")
        for d in deps
        if d.startswith(("zramctl.image", "zramctl.store", "zramctl.cli", "zramctl.estimate"))
    ]
    assert bad == []


def test_the_image_does_not_import_the_command_line() -> None:
    bad = [(m, d) for m, deps in graph().items() if m.startswith("zramctl.image") for d in deps
           if d.startswith(("zramctl.cli", "zramctl.store"))]
    assert bad == []


@pytest.mark.parametrize(
    "edges, cycle",
    [
        ({"a": {"b"}, "b": {"a"}}, ["a", "b", "a"]),
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ],
)
def test_the_cycle_finder_can_fail(edges: dict[str, set[str]], cycle: list[str] | None) -> None:
    assert find_cycle(edges) == cycle
