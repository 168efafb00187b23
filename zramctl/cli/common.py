"""What every part of the command line shares: the program's name, its warnings, the util-linux
options' record, the device store it works on, and the progress bar of long transfers.

It sits below ``main``, ``status``, ``verbs`` and ``estimate``, which all import it, so that
none of them has to import another for these.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import Failure

if TYPE_CHECKING:
    from ..store import Store

PROG = "zramctl"

LONG_TRANSFER = 32 << 20
"""A transfer at least this long gets a progress bar on a terminal (a pipe's, of unknown length, too)."""


STDIN_IS_DIRECTORY = "ZRAMCTL_STDIN_IS_DIRECTORY"
"""Set (to 1) by the ``zramctl`` launcher when it found stdin a directory, which Python itself
refuses to start with; it then runs us with stdin on /dev/null (see bin/zramctl)."""


def warn(message: str) -> None:
    """``zramctl: <message>`` on stderr (for failures that do not stop the command)."""
    try:
        sys.stderr.write(f"{PROG}: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # stderr closed or gone (a hung-up terminal): nowhere to say it
        pass


@dataclass
class Options:
    """What the util-linux grammar asked for."""

    algorithm: str | None = None
    params: str | None = None
    inbytes: bool = False
    find: bool = False
    outarg: str | None = None
    output_all: bool = False
    noheadings: bool = False
    raw: bool = False
    reset: bool = False
    size: int | None = None
    streams: int = 0
    """0 means "not given", as in util-linux (``-t 0`` is accepted and ignored)."""
    json: bool = False
    compat: str | None = None
    backing_dev: str | None = None
    """--writeback-device: the file written to ``backing_dev`` at set-up."""
    recomp_algorithms: list[str] = field(default_factory=list)
    """--secondary-algorithm, each ``NAME[:PRIORITY]`` as given, in order (``recomp_algorithm``)."""
    root: str | None = None
    devices: list[str] = field(default_factory=list)

    @property
    def action(self) -> str:
        if self.reset:
            return "reset"
        if self.size is not None:
            return "create"
        return "find" if self.find else "status"


def root_dir(option: str | None) -> str:
    """The store's directory: store.choose_root() decides (--root, $ZRAMCTL_ROOT, the default;
    an empty --root or ZRAMCTL_ROOT is refused alike), its refusal said in one line."""
    from ..store import RootError, choose_root

    try:
        return str(choose_root(option))
    except RootError as exc:
        raise Failure(str(exc)) from None


def open_store(root: str | None) -> Store:
    """The Store for ``root`` (as root_dir() decides), its directory checked now if it exists, so
    that a bad root is said in its own words (``<dir>: bad permissions: ...``) before any device's."""
    from ..store import RootError, Store

    store = Store(root_dir(root))
    try:
        store.dir_fd()
    except RootError as exc:
        raise Failure(str(exc)) from None
    return store


@contextmanager
def progress(
    total: int | None, label: str, ratio: Callable[[], float | None]
) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr for a long transfer to or from a terminal user; else nothing.

    Yields ``advance(nbytes)``.  Shows bytes done, throughput and, when the
    device has data, its compression ratio so far (DATA/TOTAL).  ``total`` None
    is a pipe's, not known: the bar then shows bytes and rate only, from the start.
    """
    if (total is not None and total < LONG_TRANSFER) or not sys.stderr.isatty():
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        FileSizeColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns: list[ProgressColumn | str] = [TextColumn("{task.description}")]
    if total is not None:
        columns += [BarColumn(), DownloadColumn(binary_units=True)]
    else:  # a pipe: no bar, no "of ?", no time left; bytes so far, in the units of the rate
        columns.append(FileSizeColumn())
    columns += [TransferSpeedColumn(), TextColumn("{task.fields[ratio]}")]
    if total is not None:
        columns.append(TimeRemainingColumn())
    bar = Progress(*columns, console=Console(stderr=True), transient=True)
    with bar:
        task = bar.add_task(label, total=total, ratio="")

        def advance(n: int) -> None:
            r = ratio()
            bar.update(task, advance=n, ratio=f"ratio {r:.2f}" if r else "")

        yield advance
