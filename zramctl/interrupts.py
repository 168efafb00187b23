"""Signals that stop a command only between units of work.

Python turns SIGINT into KeyboardInterrupt at whatever bytecode the process is
running when it arrives; for a command that is changing a device that can be
the middle of a page's bookkeeping (a zspage's in-use count raised, its object
not yet in the page table), and committing after that saves half-updated state.
SIGTERM and SIGHUP, left to their default, kill the process outright: safe (the
image keeps its last commit) but with nothing said.

``Deferred`` is the remedy.  While it is entered, SIGINT, SIGTERM and SIGHUP
only *record* the signal.  The code doing the work looks at ``received``
between pages (or between whole operations) and stops there, commits exactly
what is stored and says so; the exit status is ``128 + signal``, as the shell
reports a process killed by it.  Around waits that change nothing (taking a
lock, reading input, writing to stdout) ``allowed()`` lets a signal stop the
command at once, as an ``Interrupted`` exception, so that Ctrl-C never has to
wait for a slow pipe.

A signal the command was started with ignored (``nohup``, ``cmd &`` in a
script) stays ignored.  Outside the main thread nothing is installed (Python
delivers signals to the main thread only).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType
from typing import Any

SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
WORDS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated", signal.SIGHUP: "hung up"}


class Interrupted(KeyboardInterrupt):
    """A signal that stopped the command where stopping at once is safe; exit ``128 + signum``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def exit_code(signum: int) -> int:
    return 128 + signum


def words(signum: int) -> str:
    """How a message names the signal: ``interrupted`` (Ctrl-C), ``terminated``, ``hung up``."""
    return WORDS.get(signum, f"stopped by signal {signum}")  # type: ignore[call-overload]


class Deferred:
    """Record SIGINT/SIGTERM/SIGHUP while entered; see the module docstring."""

    def __init__(self, *, linger: bool = False, redeliver: bool = False) -> None:
        self.received: int | None = None
        """The first signal that arrived, or None."""
        self.redeliver = redeliver
        """On exit, raise the signal received (if any) again, to whatever handles it then: for a
        short critical section (a commit) inside code that may or may not defer signals itself.
        Under an outer Deferred it is recorded there; under Python's default, KeyboardInterrupt
        is raised once the section is complete."""
        self.linger = linger
        """Leave the recording handlers in place after a clean exit: for a command whose work is
        done and committed, a signal in its last moments must not make it look interrupted.
        ``saved_handlers``/``restore_handlers`` around the whole command put them back."""
        self._raising = False
        self._saved: dict[int, Any] = {}

    def __enter__(self) -> Deferred:
        try:
            for sig in SIGNALS:
                previous = signal.getsignal(sig)
                if previous == signal.SIG_IGN:
                    continue
                signal.signal(sig, self._record)
                self._saved[sig] = previous
        except ValueError:  # not the main thread: signals are not ours to take
            self._restore()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None and self.linger and self.received is None:
            self._saved = {}
            return
        installed = bool(self._saved)
        self._restore()
        if self.redeliver and installed and self.received is not None:
            signal.raise_signal(self.received)

    def _restore(self) -> None:
        saved, self._saved = self._saved, {}
        for sig, previous in saved.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
        if self._raising:
            raise Interrupted(signum)

    @contextmanager
    def allowed(self, *, stop_now: bool = True) -> Iterator[None]:
        """Within this, a signal stops the command at once, and so does one already received
        unless ``stop_now`` is false (to finish something short, such as flushing stdout,
        that a second signal may still cut short).

        Only for code that changes nothing a commit would save.
        """
        if stop_now and self.received is not None:
            raise Interrupted(self.received)
        raising, self._raising = self._raising, True
        try:
            yield
        finally:
            self._raising = raising

    def check(self) -> None:
        """Stop now (``Interrupted``) if a signal was received: for points where nothing is pending."""
        if self.received is not None:
            raise Interrupted(self.received)


def saved_handlers() -> dict[int, Any]:
    """The current handlers of SIGNALS, for ``restore_handlers`` when the command ends."""
    try:
        return {sig: signal.getsignal(sig) for sig in SIGNALS}
    except ValueError:
        return {}


def restore_handlers(saved: dict[int, Any]) -> None:
    for sig, handler in saved.items():
        try:
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        except ValueError:  # not the main thread
            return


def block_signals() -> None:
    """Block SIGNALS for the rest of the process (one arriving is discarded when it exits)."""
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    except (AttributeError, OSError, ValueError):  # a platform without it
        pass
