"""Every error that one layer raises and another catches, in one module below them all.

The kernel model raises ``ZramError`` (an errno, what failed, and words: what the
kernel would return from a sysfs store or a bio), ``CompressionError`` and the
allocator's ``ZsError``/``ZsCorrupt``; the image and the store raise ``ZramError``
too.  The command line turns any of them into one line through
``device_failure``/``error_words`` and raises ``Failure``, an error already
worded for the user, which ``cli.main`` prints as ``zramctl: <message>``.
Keeping them here lets every layer import its errors downward only.
"""

from __future__ import annotations

import errno
import os

# --- raised by the kernel model, the image and the store ---------------------------------


class ZramError(OSError):
    """A failure the kernel would report with an errno: ``what`` failed, ``strerror`` says why.

    ``done`` is how many bytes of a write/read/discard completed before it failed.
    """

    def __init__(self, code: int, what: str, detail: str | None = None, done: int = 0) -> None:
        super().__init__(code, os.strerror(code))
        self.what = what
        self.detail = detail
        self.done = done

    def __str__(self) -> str:
        text = f"{self.what}: {self.strerror}"
        return f"{text} ({self.detail})" if self.detail else text


class CompressionError(Exception):
    """A backend failed to compress or decompress; ``errno`` says how the kernel would report it."""

    def __init__(self, errno_code: int, message: str) -> None:
        super().__init__(message)
        self.errno = errno_code


class ZsError(Exception):
    """An allocation request the allocator refuses (the kernel's -EINVAL/-ENOSPC/-ENOMEM)."""

    def __init__(self, errno_code: int, message: str) -> None:
        super().__init__(message)
        self.errno = errno_code


class ZsCorrupt(ZsError):
    """The allocator's own bytes contradict its records (a slot word, a free link, a handle): EUCLEAN."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EUCLEAN, message)
        self.midway = False
        """Found after the operation had changed something (its checks came first and passed)."""


# --- the command line's words -----------------------------------------------------------


class Failure(Exception):
    """An error already worded for the user.

    ``main`` prints ``zramctl: <message>`` (nothing when message is None) and
    exits with ``code``; ``usage`` adds util-linux's "Try 'zramctl --help'" line.
    """

    def __init__(self, message: str | None, code: int = 1, usage: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.usage = usage
        """The command whose --help the "Try" line names (``zramctl``, ``zramctl write``)."""


def error_words(exc: BaseException) -> str:
    """The system's words for an OSError (``strerror``) plus its detail, if it has one."""
    if isinstance(exc, OSError):
        words = exc.strerror or (os.strerror(exc.errno) if exc.errno else str(exc))
        detail = detail_words(exc, words)
        return f"{words} ({detail})" if detail else words
    return str(exc)


def detail_words(exc: BaseException, words: str) -> str | None:
    """ZramError.detail without repeating the system's words (``no such device``, ``...: File too large``)."""
    detail = getattr(exc, "detail", None)
    if not detail or detail.lower() == words.lower():
        return None
    return detail.removesuffix(f": {words}")


def device_failure(device: str, exc: BaseException, doing: str | None = None) -> Failure:
    """``<device>: <doing or what failed>: <strerror> (<detail>)``: the one shape of a device error.

    ``doing`` is util-linux's phrase ("failed to set algorithm"); without it the
    failing attribute or operation (ZramError.what) is named.  A ``what`` equal
    to the device name itself (a missing device) is not repeated.
    """
    if doing is None:
        what = getattr(exc, "what", None)
        doing = what if what and what != device else None
    parts = [device] + ([doing] if doing else []) + [error_words(exc)]
    return Failure(": ".join(parts))
