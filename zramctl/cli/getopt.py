"""glibc's ``getopt_long()``, as util-linux's zramctl calls it, with glibc's exact messages.

Python's ``getopt`` permutes and abbreviates too, but words its errors its own
way and drops the ``=value`` glibc prints back; scripts (and our tests) compare
these messages with util-linux's byte for byte, so the few rules are kept here:

- options and operands may be mixed (GNU permutation); ``--`` ends the options;
  with POSIXLY_CORRECT set, the first operand does;
- a long option may be abbreviated to a unique prefix (an exact name always
  wins: ``--output`` is not ambiguous with ``--output-all``); its argument is
  ``--name=value`` or the next word;
- short options cluster (``-bn``) and take their argument attached (``-oNAME``)
  or as the next word, even one that starts with ``-``.

Errors are raised when they are met, as getopt prints them when it meets them:
util-linux handles each option as it comes, so ``-h --bogus`` prints the help.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass


class GetoptError(Exception):
    """What getopt would print after ``zramctl: `` (``unrecognized option '--bogus'``)."""


@dataclass(frozen=True)
class LongOption:
    name: str
    has_arg: bool
    key: str
    """The short letter, or the long name for options without one."""


# util-linux's longopts[] in its order (the order of the "is ambiguous"
# possibilities), then ours.
LONG_OPTIONS = (
    LongOption("algorithm", True, "a"),
    LongOption("algorithm-params", True, "p"),
    LongOption("bytes", False, "b"),
    LongOption("find", False, "f"),
    LongOption("help", False, "h"),
    LongOption("output", True, "o"),
    LongOption("output-all", False, "output-all"),
    LongOption("noheadings", False, "n"),
    LongOption("reset", False, "r"),
    LongOption("raw", False, "raw"),
    LongOption("size", True, "s"),
    LongOption("streams", True, "t"),
    LongOption("version", False, "V"),
    # extensions
    LongOption("json", False, "json"),
    LongOption("root", True, "root"),
    LongOption("compat", True, "compat"),
    LongOption("writeback-device", True, "writeback-device"),
    LongOption("secondary-algorithm", True, "secondary-algorithm"),
)
SHORT_OPTIONS = "a:bfho:p:nrs:t:V"
"""util-linux's optstring: a letter followed by ``:`` takes an argument."""


def long_option(text: str) -> tuple[LongOption, str | None]:
    """Match ``name[=value]`` (the word without its ``--``): the exact name, else a unique prefix."""
    name, eq, value = text.partition("=")
    exact = [o for o in LONG_OPTIONS if o.name == name]
    matches = exact or [o for o in LONG_OPTIONS if o.name.startswith(name)]
    if len(matches) > 1:
        names = " ".join(f"'--{o.name}'" for o in matches)
        raise GetoptError(f"option '--{text}' is ambiguous; possibilities: {names}")
    if not matches:
        raise GetoptError(f"unrecognized option '--{text}'")
    return matches[0], (value if eq else None)


def getopt_long(argv: Sequence[str], positionals: list[str]) -> Iterator[tuple[str, str | None]]:
    """Yield ``(key, argument)`` for each option in order; operands are appended to ``positionals``."""
    permute = "POSIXLY_CORRECT" not in os.environ
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            positionals.extend(argv[i:])
            return
        if not arg.startswith("-") or arg == "-":
            positionals.append(arg)
            if not permute:
                positionals.extend(argv[i:])
                return
            continue
        if arg.startswith("--"):
            opt, value = long_option(arg[2:])
            if value is not None and not opt.has_arg:
                raise GetoptError(f"option '--{opt.name}' doesn't allow an argument")
            if opt.has_arg and value is None:
                if i >= len(argv):
                    raise GetoptError(f"option '--{opt.name}' requires an argument")
                value = argv[i]
                i += 1
            yield opt.key, value
            continue
        j = 1
        while j < len(arg):
            c = arg[j]
            j += 1
            pos = SHORT_OPTIONS.find(c)
            if pos < 0 or c == ":":
                raise GetoptError(f"invalid option -- '{c}'")
            if SHORT_OPTIONS[pos + 1 : pos + 2] != ":":
                yield c, None
                continue
            if j < len(arg):
                value = arg[j:]
            elif i < len(argv):
                value = argv[i]
                i += 1
            else:
                raise GetoptError(f"option requires an argument -- '{c}'")
            yield c, value
            break
