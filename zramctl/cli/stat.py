"""``zramctl stat``: a device report (``report.py``) for people, or as JSON.

On a terminal (and without NO_COLOR) it is drawn with rich: tables for the
settings, counters, attributes and allocator classes, and a bar chart of
stored object sizes, because a histogram is read at a glance.  Piped, it is
plain aligned text that diffs and greps well.  ``--json`` gives the same
report as one JSON object, numbers as numbers.
"""

from __future__ import annotations

import json
import sys

from .report import DeviceReport, report_to_dict
from .units import size_to_human_string

BAR_WIDTH = 40
"""Characters of the longest histogram bar in the plain rendering."""
SIZE_SETTINGS = ("disksize", "mem_limit")
SIZE_COUNTERS = ("orig_data_size", "compr_data_size", "mem_used_total", "mem_used_max")


def _value(name: str, value: object, sizes: tuple[str, ...]) -> str:
    if value is None:
        return "-"
    if name in sizes and isinstance(value, int) and value:
        return f"{value}  ({size_to_human_string(value)})"
    return str(value)


def _ratio(report: DeviceReport) -> str:
    ratio = report.compression_ratio
    return "-" if ratio is None else f"{ratio:.4f}"


def _bins(report: DeviceReport) -> list[tuple[str, int]]:
    rows = [(f"{b.low}-{b.high}", b.count) for b in report.histogram]
    rows.append(("same-filled", report.same_pages))
    rows.append(("raw (huge)", report.huge_pages))
    return rows


def _class_header(report: DeviceReport) -> list[str]:
    groups = list(report.classes[0].zspages) if report.classes else []
    tail = ["obj_allocated", "obj_used", "pages_used", "pages_per_zspage", "freeable"]
    return ["class", "size", *groups, *tail]


def _class_cells(report: DeviceReport) -> list[list[str]]:
    return [
        [
            str(c.index),
            str(c.size),
            *(str(n) for n in c.zspages.values()),
            str(c.objs_allocated),
            str(c.objs_inuse),
            str(c.pages_used),
            str(c.pages_per_zspage),
            str(c.freeable),
        ]
        for c in report.classes
    ]


# --- plain text ---------------------------------------------------------------------------


def _pairs(lines: list[str], items: list[tuple[str, str]]) -> None:
    width = max((len(k) for k, _ in items), default=0)
    for key, text in items:
        first, *rest = text.split("\n") if text else [""]
        lines.append(f"  {key:<{width}}  {first}".rstrip())
        lines += [f"  {'':<{width}}  {more}".rstrip() for more in rest]


def render_plain(name: str, report: DeviceReport) -> str:
    lines = [f"{name}: settings"]
    _pairs(lines, [(k, _value(k, v, SIZE_SETTINGS)) for k, v in report.settings.items()])
    lines += ["", f"{name}: counters"]
    counters = [(k, _value(k, v, SIZE_COUNTERS)) for k, v in report.counters.items()]
    _pairs(lines, [*counters, ("compression ratio", _ratio(report))])
    lines += ["", f"{name}: attributes"]
    _pairs(lines, [(k, v.rstrip("\n")) for k, v in report.attributes.items()])
    lines += ["", f"{name}: allocator size classes"]
    if report.classes:
        table = [_class_header(report), *_class_cells(report)]
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        for row in table:
            lines.append("  " + " ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))
    else:
        lines.append("  (no objects stored)")
    lines += ["", f"{name}: stored object sizes (bytes)"]
    bins = _bins(report)
    most = max((n for _, n in bins), default=0)
    label = max(len(k) for k, _ in bins)
    digits = max(len(str(n)) for _, n in bins)
    for key, n in bins:
        bar = "#" * (round(n * BAR_WIDTH / most) if most else 0)
        if n and not bar:
            bar = "."
        lines.append(f"  {key:>{label}}  {n:>{digits}}  {bar}".rstrip())
    return "\n".join(lines) + "\n"


# --- rich ---------------------------------------------------------------------------------


def render_rich(name: str, report: DeviceReport) -> None:
    from rich import box
    from rich.console import Console, Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    console = Console()

    def pairs(title: str, items: list[tuple[str, str]]) -> Table:
        t = Table(title=title, show_header=False, box=None, title_justify="left", title_style="bold")
        t.add_column(style="cyan")
        t.add_column(justify="right")
        for k, v in items:
            t.add_row(k, v)
        return t

    settings = pairs("settings", [(k, _value(k, v, SIZE_SETTINGS)) for k, v in report.settings.items()])
    counters = pairs(
        "counters",
        [(k, _value(k, v, SIZE_COUNTERS)) for k, v in report.counters.items()]
        + [("compression ratio", _ratio(report))],
    )
    top = Table.grid(padding=(0, 4))
    top.add_row(settings, counters)
    console.print(Panel(top, title=f"[bold]{name}[/bold]", expand=False))

    attrs = Table(title="attributes", title_justify="left", title_style="bold", show_header=False, box=None)
    attrs.add_column(style="cyan")
    attrs.add_column()
    for k, v in report.attributes.items():
        attrs.add_row(k, Text(v.rstrip("\n")))
    console.print(attrs)

    if report.classes:
        # The fullness groups are folded into one column ("100%:49 10%:1"), so the table fits.
        classes = Table(title="allocator size classes", title_justify="left", title_style="bold",
                        box=box.SIMPLE_HEAD, padding=(0, 1))
        for head in ("class", "size"):
            classes.add_column(head, justify="right", style="cyan", no_wrap=True)
        classes.add_column("zspages by fullness", overflow="fold")
        for head in ("obj_allocated", "obj_used", "pages_used", "pages_per_zspage", "freeable"):
            classes.add_column(head, justify="right", no_wrap=True)
        for c in report.classes:
            groups = " ".join(f"{g}:{n}" for g, n in c.zspages.items() if n)
            classes.add_row(str(c.index), str(c.size), groups, str(c.objs_allocated), str(c.objs_inuse),
                            str(c.pages_used), str(c.pages_per_zspage), str(c.freeable))
        console.print(classes)

    bins = _bins(report)
    most = max((n for _, n in bins), default=0) or 1
    width = max(10, min(60, console.width - 30))
    chart = Table(title="stored object sizes (bytes)", title_justify="left", title_style="bold", box=None)
    chart.add_column("size", justify="right", style="cyan")
    chart.add_column("objects", justify="right")
    chart.add_column("")
    for key, n in bins:
        length = n * width / most
        bar = Text("█" * int(length) + ("▌" if length - int(length) >= 0.5 else ""), style="green")
        chart.add_row(key, str(n), bar)
    console.print(Group(chart))


def print_report(name: str, report: DeviceReport, *, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps({"name": name, **report_to_dict(report)}, indent=2) + "\n")
        return
    from .output import use_rich

    if use_rich(sys.stdout):
        render_rich(name, report)
    else:
        sys.stdout.write(render_plain(name, report))
