"""Real test corpora, made from what any Linux machine with Python has.

``tools/make-corpus KIND SIZE FILE`` is the command; the tests and benchmarks run
it (or import this module by path).  Every byte comes from the machine: installed
files, or the memory of a live Python process.  Nothing is synthetic, because
compressors (and so zram's counters) behave differently on made-up data.

Kinds:

- ``files``: program binaries, shared libraries and Python sources, a third of
  the bytes each, one whole file after another;
- ``binaries``: program binaries only: the running Python interpreter (and its
  libpython when it is built shared), then the ELF files of /usr/bin and /usr/sbin;
- ``text``: Python sources (the standard library's), then text files from /usr/share;
- ``memory``: the resident, writable, anonymous memory (heap, arenas, stacks) of a
  freshly started Python process that imported a good part of the standard library
  and built the kind of objects programs hold: the pages a swap device would see;
- ``mixed``: ``files`` and ``memory`` interleaved in 1 MiB runs.

``files``, ``binaries`` and ``text`` are deterministic on a given machine (sorted
walks); ``memory`` varies a little from run to run (it is a live heap).  When a
machine has less data of a kind than SIZE, the data is repeated.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Iterator
from dataclasses import dataclass

PAGE = 4096
RUN = 1 << 20  # the interleaving unit of the mixed corpus
MAX_FILE = 4 << 20  # at most this much of any one file, so no single file dominates
KINDS = ("files", "binaries", "text", "memory", "mixed")
USAGE = """usage: make-corpus KIND SIZE FILE
  KIND  files     program binaries, shared libraries and Python sources (a third each)
        binaries  program binaries only (the Python interpreter, /usr/bin and /usr/sbin ELF files)
        text      Python sources and text files from /usr/share
        memory    the resident anonymous memory of a freshly started Python process
                  that imported much of the standard library: pages as swap sees them
        mixed     files and memory interleaved in 1 MiB runs
  SIZE  bytes, or with a K/M/G suffix (powers of 1024)
  FILE  where to write exactly SIZE bytes ('-' for standard output)"""


class CorpusError(Exception):
    """A problem the user can fix (bad size, no data of a kind on this machine)."""


def parse_size(text: str) -> int:
    """``4096``, ``64K``, ``32M``, ``1G`` (also ``32MiB``): a positive number of bytes."""
    m = re.fullmatch(r"(\d+)\s*([KMG]?)(?:I?B)?", text.strip().upper())
    if not m or int(m[1]) == 0:
        raise CorpusError(f"bad size '{text}'")
    return int(m[1]) << {"": 0, "K": 10, "M": 20, "G": 30}[m[2]]


# --------------------------------------------------------------------------
# Installed files


def walk(root: str, accept: Callable[[str], bool]) -> Iterator[str]:
    """Regular files under ``root`` that ``accept`` takes, in sorted order, each (device, inode) once."""
    seen: set[tuple[int, int]] = set()
    for dirpath, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in ("__pycache__", "site-packages", "dist-packages"))
        for name in sorted(names):
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen or not accept(path):
                continue
            seen.add(key)
            yield path


def head(path: str, n: int = MAX_FILE) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def is_elf(path: str) -> bool:
    return head(path, 4) == b"\x7fELF"


def is_python_source(path: str) -> bool:
    return path.endswith(".py")


def is_text(path: str) -> bool:
    """UTF-8 text without NUL bytes (which leaves out gzip'd changelogs, images and the like)."""
    sample = head(path, 64 << 10)
    if not sample or b"\0" in sample:
        return False
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as e:  # a sample may end inside a character
        return e.start >= len(sample) - 3
    return True


def stdlib_dir() -> str:
    return sysconfig.get_paths()["stdlib"]


def interpreter_files() -> list[str]:
    """The running interpreter's binary, and its libpython when it is a shared library."""
    out = [os.path.realpath(sys.executable)]
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        libdir, name = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY")
        lib = os.path.join(libdir or "", name or "")
        if os.path.isfile(lib):
            out.append(os.path.realpath(lib))
    return out


def binary_files() -> Iterator[str]:
    seen: set[str] = set()
    for path in interpreter_files():
        seen.add(path)
        yield path
    for root in ("/usr/bin", "/usr/sbin"):
        for path in walk(root, is_elf):
            if os.path.realpath(path) not in seen:
                yield path


def library_files() -> Iterator[str]:
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    roots = [os.path.join("/usr/lib", multiarch)] if multiarch else []
    roots += ["/usr/lib64", "/usr/lib"] if not multiarch else []
    for root in roots:
        yield from walk(root, lambda p: ".so" in os.path.basename(p) and is_elf(p))


def python_sources() -> Iterator[str]:
    yield from walk(stdlib_dir(), is_python_source)


def share_texts() -> Iterator[str]:
    yield from walk("/usr/share", is_text)


@dataclass
class Stream:
    """Whole files, one after another, read lazily from a list of paths."""

    name: str
    paths: Iterator[str]
    taken: int = 0
    done: bool = False

    def next_file(self) -> bytes:
        """The next non-empty file's bytes, or b"" at the end."""
        for path in self.paths:
            data = head(path)
            if data:
                self.taken += len(data)
                return data
        self.done = True
        return b""


def from_streams(streams: list[Stream], n: int) -> bytes:
    """``n`` bytes of whole files, taking the next file from whichever stream has given the least.

    With one stream this is its files in order; with several, each gives about
    an equal share of the bytes.  Raises CorpusError when no stream has any data.
    """
    out = bytearray()
    while len(out) < n:
        live = [s for s in streams if not s.done]
        if not live:
            break
        data = min(live, key=lambda s: s.taken).next_file()
        out += data
    if not out:
        raise CorpusError("no " + " or ".join(s.name for s in streams) + " on this machine")
    return repeat_to(bytes(out), n)


def repeat_to(data: bytes, n: int) -> bytes:
    return (data * (n // len(data) + 1))[:n] if len(data) < n else data[:n]


def files_corpus(n: int) -> bytes:
    return from_streams(
        [
            Stream("program binaries", binary_files()),
            Stream("shared libraries", library_files()),
            Stream("Python sources", python_sources()),
        ],
        n,
    )


def binaries_corpus(n: int) -> bytes:
    return from_streams([Stream("program binaries", binary_files())], n)


def text_corpus(n: int) -> bytes:
    half = n // 2
    sources = from_streams([Stream("Python sources", python_sources())], half)
    return sources + from_streams([Stream("text files in /usr/share", share_texts())], n - half)


# --------------------------------------------------------------------------
# A live process's memory

# The child imports much of the standard library and builds objects of the kinds
# programs keep (records, strings, numbers, parsed documents, a database), until its
# resident anonymous memory is at least the size asked for, then waits on stdin.
CHILD = r"""
import importlib, random, sys
target = int(sys.argv[1])
modules = []
for name in ("abc argparse array ast asyncio base64 bisect calendar collections concurrent.futures "
             "configparser contextlib copy csv dataclasses datetime decimal difflib email email.parser "
             "enum fractions functools gettext glob gzip hashlib heapq hmac html html.parser http.client "
             "http.cookies inspect io ipaddress itertools json locale logging lzma mimetypes numbers "
             "operator pathlib pickle pprint queue random re shlex shutil socket sqlite3 statistics "
             "string struct subprocess tarfile tempfile textwrap threading tokenize traceback typing "
             "unittest urllib.parse urllib.request uuid xml.dom.minidom xml.etree.ElementTree zipfile "
             "zlib").split():
    try:
        modules.append(importlib.import_module(name))
    except ImportError:
        pass
import datetime, decimal, json, re, sqlite3, email.message, xml.dom.minidom, collections, ipaddress, uuid

def rss_anon():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0

rng = random.Random(1)
words = [w for w in re.findall(r"[A-Za-z_]{3,}", open(json.__file__).read() + open(re.__file__).read())]
db = sqlite3.connect(":memory:")
db.execute("create table orders (id integer primary key, customer text, amount real, note text, day text)")
keep = []
batch = 0
while rss_anon() < target:
    batch += 1
    records = []
    for i in range(2000):
        n = batch * 2000 + i
        records.append({
            "id": n,
            "name": " ".join(rng.choice(words) for _ in range(rng.randint(1, 4))),
            "price": decimal.Decimal(rng.randint(1, 10 ** 6)) / 100,
            "score": rng.random(),
            "tags": [rng.choice(words) for _ in range(rng.randint(0, 5))],
            "when": datetime.datetime(2024, 1, 1) + datetime.timedelta(seconds=rng.randint(0, 10 ** 8)),
            "addr": ipaddress.ip_address(rng.getrandbits(32)),
            "uuid": uuid.UUID(int=rng.getrandbits(128)),
        })
    text = json.dumps([{k: str(v) for k, v in r.items()} for r in records[:300]])
    parsed = json.loads(text)
    counts = collections.Counter(w for r in records for w in r["tags"])
    db.executemany("insert into orders (customer, amount, note, day) values (?, ?, ?, ?)",
                   [(r["name"], float(r["price"]), " ".join(r["tags"]), r["when"].isoformat())
                    for r in records[:500]])
    doc = xml.dom.minidom.parseString("<items>" + "".join(
        '<item id="%d" score="%.3f">%s</item>' % (r["id"], r["score"], r["name"]) for r in records[:200])
        + "</items>")
    msg = email.message.EmailMessage()
    msg["Subject"] = " ".join(rng.choice(words) for _ in range(6))
    msg.set_content("\n".join(r["name"] for r in records[:100]))
    lines = ["%08d %-30s %12.2f %s" % (r["id"], r["name"], r["price"], r["when"]) for r in records]
    blob = "\n".join(lines).encode()
    floats = [rng.gauss(0, 1) for _ in range(2000)]
    keep.append((records, parsed, counts, doc, msg, lines, blob, floats))
    if batch > 100000:
        break
sys.stdout.write("ready\n")
sys.stdout.flush()
sys.stdin.read()
"""


def anonymous_ranges(maps: str) -> Iterator[tuple[int, int]]:
    """(start, end) of every private, writable, anonymous mapping in a /proc/PID/maps text."""
    for line in maps.splitlines():
        f = line.split()
        if len(f) < 5 or "w" not in f[1] or "p" not in f[1]:
            continue
        name = f[5] if len(f) > 5 else ""
        if name and name not in ("[heap]", "[stack]") and not name.startswith("[anon"):
            continue  # a file's .data/.bss, or [vvar] and the like
        lo, hi = (int(x, 16) for x in f[0].split("-"))
        yield lo, hi


def resident_pages(pid: int, n: int) -> bytes:
    """Up to ``n`` bytes of process ``pid``'s resident (or swapped) anonymous pages, in address order.

    /proc/PID/pagemap says which pages were ever touched (bit 63 present, bit 62
    swapped): pages never touched are not memory a swap device would see.
    """
    with open(f"/proc/{pid}/maps") as f:
        maps = f.read()
    out = bytearray()
    with open(f"/proc/{pid}/pagemap", "rb") as pagemap, open(f"/proc/{pid}/mem", "rb") as mem:
        for lo, hi in anonymous_ranges(maps):
            pagemap.seek(lo // PAGE * 8)
            entries = pagemap.read((hi - lo) // PAGE * 8)
            i = 0
            count = len(entries) // 8
            while i < count and len(out) < n:
                if not entries[i * 8 + 7] & 0xC0:  # neither present nor swapped
                    i += 1
                    continue
                j = i
                while j < count and entries[j * 8 + 7] & 0xC0:
                    j += 1
                try:
                    mem.seek(lo + i * PAGE)
                    out += mem.read((j - i) * PAGE)
                except OSError:
                    pass
                i = j
            if len(out) >= n:
                break
    return bytes(out[:n])


def memory_corpus(n: int) -> bytes:
    # Ask for a little more than n: part of the resident memory is the interpreter's own.
    target = n + n // 8 + (4 << 20)
    child = subprocess.Popen(
        [sys.executable, "-I", "-c", CHILD, str(target)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        if child.stdout.readline() != b"ready\n":
            raise CorpusError("the Python process whose memory is the corpus did not start")
        try:
            data = resident_pages(child.pid, n)
        except OSError as e:
            raise CorpusError(f"cannot read the memory of process {child.pid}: {e.strerror}") from None
    finally:
        child.kill()
        child.wait()
    if not data:
        raise CorpusError(f"process {child.pid} showed no anonymous memory")
    return repeat_to(data, n)


def mixed_corpus(n: int) -> bytes:
    half = (n + 1) // 2 + RUN
    a, b = files_corpus(half), memory_corpus(half)
    out = bytearray()
    for i in range(0, half, RUN):
        out += a[i : i + RUN] + b[i : i + RUN]
        if len(out) >= n:
            break
    return bytes(out[:n])


MAKERS: dict[str, Callable[[int], bytes]] = {
    "files": files_corpus,
    "binaries": binaries_corpus,
    "text": text_corpus,
    "memory": memory_corpus,
    "mixed": mixed_corpus,
}


def make(kind: str, n: int) -> bytes:
    """Exactly ``n`` bytes of corpus ``kind`` (one of KINDS)."""
    if kind not in MAKERS:
        raise CorpusError(f"unknown kind '{kind}' (one of: {', '.join(KINDS)})")
    data = MAKERS[kind](n)
    assert len(data) == n
    return data


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 1 and args[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if len(args) != 3:
        print(USAGE, file=sys.stderr)
        return 2
    kind, size, path = args
    try:
        data = make(kind, parse_size(size))
        if path == "-":
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
        else:
            with open(path, "wb") as f:
                f.write(data)
    except CorpusError as e:
        print(f"make-corpus: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"make-corpus: {path}: {e.strerror}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
