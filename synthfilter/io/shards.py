"""Find, read and write shards: JSONL (plain, .gz, .zst) and Parquet, with atomic writes.

Readers never raise on a bad record: they yield it with an error message, and the caller
decides (fail with a one-line error, or quarantine). They do raise ``InputError`` for
problems that concern the whole file (not found, unreadable, truncated compression, ...).
"""

from __future__ import annotations

import errno
import glob
import gzip
import hashlib
import io
import os
import re
import stat as stat_module
import zlib
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Iterator, Sequence

import orjson
import zstandard

JSONL_SUFFIXES = {".jsonl": None, ".jsonl.gz": "gz", ".jsonl.zst": "zst"}
PARQUET_SUFFIX = ".parquet"
SUPPORTED = tuple(JSONL_SUFFIXES) + (PARQUET_SUFFIX,)
_CHUNK = 1 << 20


def pyarrow_without_pandas() -> bool:
    """Keep pandas out of this process (unless it is imported already), for pyarrow's sake.

    pyarrow imports pandas (0.15 s) on its first conversion to or from Python and NumPy, only to
    recognise pandas objects, which the stages never hand it; with pandas out of reach it
    converts the same way without it. Only for processes that need no pandas: the local
    engine's workers and the CLI's own process (``import pandas`` fails there afterwards).
    Returns whether pandas is kept out.
    """
    import sys

    if _NoPandas in sys.meta_path:
        return True
    if "pandas" in sys.modules:
        return False
    sys.meta_path.insert(0, _NoPandas)
    return True


def pandas_left_out() -> bool:
    """Whether ``pyarrow_without_pandas`` keeps pandas out of this process."""
    import sys

    return _NoPandas in sys.meta_path


class _NoPandas:
    """A meta path finder that refuses pandas (``pyarrow_without_pandas``)."""

    @staticmethod
    def find_spec(name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"No module named {name!r} (left out of this process)", name=name)


class InputError(Exception):
    """A problem with an input that the user must fix; ``str()`` is the one-line message."""

    def __init__(self, path: str | os.PathLike[str] | None, message: str, line: int | None = None):
        self.path = str(path) if path is not None else None
        self.line = line
        self.message = message
        where = self.path or ""
        if line is not None:
            where += f":{line}"
        super().__init__(f"{where}: {message}" if where else message)

    def __reduce__(self) -> tuple:
        # Rebuilt from its parts, so an error raised in a worker process reaches the CLI intact.
        return (type(self), (self.path, self.message, self.line))


# errno values that mean "the output cannot take this write", not a bug: what the user must fix.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
READ_ONLY_ERRNOS = frozenset({errno.EROFS})
DENIED_ERRNOS = frozenset({errno.EACCES, errno.EPERM})


class OutputError(Exception):
    """An output that cannot be written (disk full, read-only, not allowed); ``str()`` is the
    one-line message. Whatever was being written stays under its temporary name (and is removed),
    never under its final one."""

    def __init__(self, path: str | os.PathLike[str], errno_: int, advice: str = "run again"):
        self.path = str(path)
        self.errno = errno_
        self.advice = advice
        if errno_ in (errno.ENOSPC, errno.EDQUOT):
            what = "no space left on device" if errno_ == errno.ENOSPC else "disk quota exceeded"
            message = f"{what} writing {self.path}: free space and {advice}"
        elif errno_ == errno.EFBIG:
            message = (f"file too large writing {self.path} (the file system's or the process's file size limit): "
                       f"raise the limit or write elsewhere, and {advice}")
        elif errno_ in READ_ONLY_ERRNOS:
            message = f"read-only file system: cannot write {self.path}: make it writable (or choose another output) and {advice}"
        else:
            message = f"permission denied writing {self.path}: make it writable (or choose another output) and {advice}"
        super().__init__(message)

    def __reduce__(self) -> tuple:
        return (type(self), (self.path, self.errno, self.advice))

    def with_advice(self, advice: str) -> "OutputError":
        return type(self)(self.path, self.errno, advice)


def output_error(e: BaseException, path: str | os.PathLike[str] | None) -> OutputError | None:
    """The ``OutputError`` an ``OSError`` from writing ``path`` stands for, or None (another problem)."""
    if isinstance(e, OutputError):
        return e
    if not isinstance(e, OSError) or e.errno is None:
        return None
    if e.errno in NO_SPACE_ERRNOS or e.errno in READ_ONLY_ERRNOS or e.errno in DENIED_ERRNOS:
        return OutputError(getattr(e, "filename", None) or path or "the output", e.errno)
    return None


@dataclass(frozen=True)
class Shard:
    """One input file and the relative path its outputs get under kept/ and rejected/."""

    path: Path
    rel: str
    format: str  # "jsonl" or "parquet"
    compression: str | None  # None, "gz" or "zst" (JSONL only)

    @property
    def size(self) -> int:
        return self.path.stat().st_size


def shard_format(path: Path) -> tuple[str, str | None] | None:
    name = path.name.lower()
    for suffix, comp in JSONL_SUFFIXES.items():
        if name.endswith(suffix):
            return "jsonl", comp
    if name.endswith(PARQUET_SUFFIX):
        return "parquet", None
    return None


def _is_glob(s: str) -> bool:
    return any(c in s for c in "*?[")


def _glob_root(pattern: str) -> Path:
    parts = Path(pattern).parts
    root: list[str] = []
    for part in parts:
        if _is_glob(part):
            break
        root.append(part)
    return Path(*root) if root else Path(".")


def glob_root_of(raw: str | os.PathLike[str]) -> Path | None:
    """The directory a glob input's matches are read under (its part before the first wildcard),
    or None where the input is read as a path (no wildcard, or a file or directory so named)."""
    s = str(raw)
    return _glob_root(s) if _is_glob(s) and not Path(s).exists() else None


def discover_shards(inputs: Sequence[str | os.PathLike[str]]) -> tuple[list[Shard], list[str]]:
    """Expand files, directories (recursively) and globs into shards, in a stable order.

    Returns the shards and the files that were found inside directories but skipped because
    their extension is not a supported one (the caller reports them; nothing is skipped silently).
    """
    if not inputs:
        raise InputError(None, "no INPUT given: pass files, directories or globs of .jsonl/.jsonl.gz/.jsonl.zst/.parquet")
    found: list[tuple[Path, str]] = []
    ignored: list[str] = []
    for raw in inputs:
        s = str(raw)
        root = glob_root_of(s)
        if root is not None:
            matches = sorted(glob.glob(s, recursive=True))
            if not matches:
                raise InputError(s, "glob matched no files")
            for m in matches:
                p = Path(m)
                if p.is_dir():
                    found.extend(_walk(p, root, ignored))
                elif shard_format(p) is None:
                    raise InputError(p, f"unknown extension; supported: {', '.join(SUPPORTED)}")
                else:
                    found.append((p, p.relative_to(root).as_posix() if _inside(p, root) else p.name))
            continue
        p = Path(s)
        if not p.exists():
            raise InputError(p, "path does not exist")
        if p.is_dir():
            found.extend(_walk(p, p, ignored))
        elif shard_format(p) is None:
            raise InputError(p, f"unknown extension; supported: {', '.join(SUPPORTED)}")
        else:
            found.append((p, p.name))
    shards: list[Shard] = []
    seen_paths: set[Path] = set()
    by_rel: dict[str, Path] = {}
    for p, rel in found:
        real = p.resolve()
        if real in seen_paths:
            continue
        seen_paths.add(real)
        if rel in by_rel:
            raise InputError(
                p, f"maps to the same output path {rel!r} as {by_rel[rel]}; pass their common parent directory instead"
            )
        by_rel[rel] = p
        kind = special_file(real)
        if kind is not None and kind != PIPE:
            raise InputError(p, f"{kind}, not a regular file: synthfilter reads each input more than once, so it takes "
                                "files (or named pipes fed once per read) only; write the data to a file first")
        fmt, comp = shard_format(p)  # type: ignore[misc]
        shards.append(Shard(path=real, rel=rel, format=fmt, compression=comp))
    if not shards:
        raise InputError(", ".join(str(i) for i in inputs), f"no input shards found ({', '.join(SUPPORTED)})")
    shards.sort(key=lambda sh: sh.rel)
    return shards, ignored


PIPE = "a named pipe (FIFO)"


def special_file(path: Path) -> str | None:
    """What ``path`` is where it is neither a regular file nor a directory (``PIPE``, a device,
    a socket), else None (also where it cannot be looked at: reading it says what is wrong)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    for test, kind in ((stat_module.S_ISFIFO, PIPE), (stat_module.S_ISCHR, "a character device"),
                       (stat_module.S_ISBLK, "a block device"), (stat_module.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return None


def pipe_notes(shards: Sequence[Shard]) -> list[str]:
    """A note for each input that is a named pipe. A run opens each input more than once (its
    first bytes are looked at, it is scored, then its records are written): what feeds the pipe
    must write the same data each time it is opened, and until it does the run waits there.
    Said at the start, so that such a wait is explained."""
    return [f"note: {sh.path}: a named pipe; a run opens each input more than once (to score it, then to write its "
            "records), so what writes to it must write the same data each time it is opened; the run waits until it does"
            for sh in shards if special_file(sh.path) == PIPE]


def _inside(p: Path, root: Path) -> bool:
    try:
        p.relative_to(root)
        return True
    except ValueError:
        return False


def _walk(directory: Path, root: Path, ignored: list[str]) -> list[tuple[Path, str]]:
    """The shards under ``directory``, with their paths relative to ``root``.

    A symbolic link to a directory is followed like a directory (a dataset assembled from
    links to its parts must not lose them silently). Each real directory is read once: one
    reached again by another link adds nothing (its shards are found already, as a file
    reached twice is deduplicated by ``discover_shards``), and a link back to a directory it
    is inside of is a loop, refused as a broken link to a file is.
    """
    out = []
    visited = {directory.resolve()}
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=True):
        dirnames.sort()
        here = Path(dirpath).resolve()
        # Links last: a directory reached both as itself and by a link here is read as itself.
        for name in sorted(dirnames, key=lambda d: os.path.islink(os.path.join(dirpath, d))):
            sub = Path(dirpath) / name
            real = sub.resolve()
            if real == here or real in here.parents:
                raise InputError(sub, f"symbolic link loop (to {os.readlink(sub)}): it leads back to {real}, which "
                                      "holds it, inside an input directory; remove it")
            if real in visited:
                dirnames.remove(name)  # read once already, by another path
            else:
                visited.add(real)
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if shard_format(p) is None:
                if not name.startswith("."):
                    ignored.append(str(p))
                continue
            if not p.exists():
                raise InputError(p, f"broken symbolic link (to {os.readlink(p)}) inside an input directory; "
                                    "fix or remove it")
            out.append((p, p.relative_to(root).as_posix()))
    return out


# -- reading ----------------------------------------------------------------------------------


class _HashingRaw(io.RawIOBase):
    """A raw reader that hashes every byte it hands out (sha256 of the file as stored)."""

    def __init__(self, f: IO[bytes]):
        self._f = f
        self.sha256 = hashlib.sha256()
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = self._f.readinto(b)  # type: ignore[attr-defined]
        if n:
            mv = memoryview(b)[:n]
            self.sha256.update(mv)
            self.bytes_read += n
        return n or 0

    def close(self) -> None:
        self._f.close()
        super().close()


@dataclass(frozen=True)
class Break:
    """A place where a shard stops being readable, and what was lost there.

    A truncated or corrupt ``.gz``/``.zst`` shard breaks where its compressed data does: what
    was decoded before the break is read as usual, and reading goes on at the next gzip member
    or zstd frame found after it, if any. A gzip member that fails its checks (bad deflate data,
    a CRC or length mismatch) is not read at all, as any of its data may be damaged; one cut
    short (by the end of the file, or where another member starts) is read up to the cut. So is
    a zstd frame that fails (a decoding error, a content checksum mismatch) or is cut short where
    another starts: not read at all; one cut short by the end of the file is read up to the cut
    when it has no content checksum, and not at all when it has one (``_ZstdDecoder``). A
    Parquet shard breaks at an unreadable row group (or, when its footer is gone, as a whole).
    Under ``--on-error quarantine`` each break is one ``malformed`` record; under ``fail`` the
    first one is the error.
    """

    # "truncated" or "corrupt" (compressed JSONL), "misnamed" (a .gz/.zst name on data that starts
    # as something else: none of it read), "row_group" or "file" (Parquet)
    kind: str
    detail: str  # one line without the path: what broke, where, and what was lost
    offset: int  # byte offset in the file where reading broke
    resumed_at: int | None = None  # byte offset where reading went on; None: nothing readable after it
    unreadable_bytes: int = 0  # bytes of the file that gave no record (skipped compressed bytes, a row group)
    partial_line_bytes: int = 0  # JSONL: decoded bytes of the line the break cut (kept as the record's raw)
    missing_bytes: int | None = None  # zstd: decoded bytes of the cut frame known to be missing
    untrusted_bytes: int | None = None  # gzip / zstd: bytes decoded from a member / frame that fails, none read
    row_group: int | None = None  # Parquet
    rows_lost: int | None = None  # Parquet: rows that could not be read

    def to_dict(self, detail: bool = True) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None and (detail or k != "detail")}


_OUT_STEP = 4 * _CHUNK  # decoded bytes per step at most (bounds memory on highly compressible data)


class _Corrupt(Exception):
    """Raised by a decoder step: the data breaks at ``offset``; ``out`` was decoded before it."""

    def __init__(self, offset: int, reason: str, out: bytes = b""):
        self.offset, self.reason, self.out = offset, reason, out


class _Decoder(io.RawIOBase):
    """Incremental decompression of gzip members (``_GzipDecoder``) or zstd frames
    (``_ZstdDecoder``), one after another, each handed out only once it has checked, that stops
    cleanly where the data breaks.

    ``readinto`` returns 0 at the end of the data and at a break; ``pending`` then describes
    the break, and ``resume()`` goes on at the next member or frame found after it (if any).
    """

    name = ""  # ".gz" / ".zst"
    magic = b""
    unit = ""  # "gzip member" / "zstd frame"

    def __init__(self, src: "_Input", file_name: str = ""):
        self._src = src
        self.file_name = file_name  # the shard's name, for the advice on a misnamed file
        self._out = memoryview(b"")
        self._eof = False
        self.pending: Break | None = None
        self._gen = self._units()

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not len(self._out):
            if self.pending is not None or self._eof:
                return 0
            self._out = memoryview(self._step())
        n = min(len(b), len(self._out))
        b[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def resume(self) -> None:
        """Go on after the pending break: at the member / frame it resumed at, or end."""
        brk, self.pending = self.pending, None
        if brk is None or brk.resumed_at is None:
            self._eof = True

    def _step(self) -> bytes:
        """The next decoded bytes (b"" at the end, or at a break: ``pending`` set)."""
        out = next(self._gen, None)
        if out is None:
            self._eof = True
            return b""
        return out

    def close(self) -> None:
        self._gen.close()  # stops a thread decoding ahead (``_ahead``), if any
        self._src.close()
        super().close()

    def _units(self) -> Iterator[bytes]:
        """The decoded data, member by member / frame by frame, each only once it has checked;
        at a break, ``pending`` is set and b"" yielded."""
        src = self._src
        pos = 0
        while True:
            pos = self._skip_padding(pos)
            src.keep(pos)
            head = src.read_at(pos, 8)
            if not head:
                return
            brk = self._not_a_unit(pos, head)
            if isinstance(brk, int):  # something without records, passed over
                pos = brk
                continue
            if brk is None:
                checked = self._check(pos)
                if checked.end is not None:  # it checks: its data goes out
                    yield from self._emit(pos, checked)
                    pos = checked.end
                    continue
                brk = yield from self._failed(pos, checked)
            self.pending = brk
            yield b""
            if brk.resumed_at is None:
                return
            pos = brk.resumed_at

    def _skip_padding(self, pos: int) -> int:
        """Where the next member / frame may start from ``pos``, past bytes the format allows between them."""
        return pos

    def _not_a_unit(self, pos: int, head: bytes) -> "Break | int | None":
        """For the bytes at ``pos`` (``head``: their first 8): None where a member / frame starts,
        else the break for them, or the offset past bytes the format allows there (no records)."""
        return None if head[:len(self.magic)] == self.magic else self._no_unit(pos)

    def _check(self, start: int) -> Any:
        raise NotImplementedError

    def _emit(self, start: int, checked: Any) -> Iterator[bytes]:
        raise NotImplementedError

    def _failed(self, start: int, checked: Any) -> Iterator[bytes]:
        raise NotImplementedError

    # -- shared by the decoders that read through ``_Input`` --------------------------------------

    @staticmethod
    def _held(window: list[bytes]) -> Iterator[bytes]:
        """The decoded bytes a check held, in order, each let go as it is handed out."""
        window.reverse()
        while window:
            yield window.pop()

    def _eof_offset(self) -> int:
        while not self._src.eof:
            self._src.read_at(self._src.end, _CHUNK)
        return self._src.end

    def _plausible(self, at: int) -> bool:
        """Whether a member / frame starting at ``at`` decodes."""
        raise NotImplementedError

    def _find_unit(self, start: int) -> int | None:
        """Offset of the first member / frame from ``start`` on that decodes; None if none does."""
        src, magic = self._src, self.magic
        at = start
        while True:
            block = src.read_at(at, _CHUNK + len(magic) - 1)
            if len(block) < len(magic):
                return None
            i = block.find(magic)
            while i >= 0:
                if self._plausible(at + i):
                    return at + i
                i = block.find(magic, i + 1)
            at += len(block) - (len(magic) - 1)

    def _no_unit(self, pos: int) -> Break:
        """The break for bytes that are not a member / frame where one should start."""
        nxt = self._find_unit(pos + 1)
        end = nxt if nxt is not None else self._eof_offset()
        if pos == 0 and nxt is None:
            # Nothing in the file decodes: its first bytes may say what it is instead (plain JSONL,
            # or the other compression), which is a name to change, not damage to repair.
            misnamed = misnamed_message(self.file_name, self.name[1:], self._src.read_at(0, 8))
            if misnamed is not None:
                return Break("misnamed", misnamed, offset=0, unreadable_bytes=end)
        detail = f"corrupt {self.name} file: no {self.unit} starts at byte {pos:,}"
        if nxt is not None:
            detail += f"; reading went on at the next {self.unit}, at byte {nxt:,} ({end - pos:,} bytes skipped)"
        else:
            detail += f"; no readable {self.unit} follows in the remaining {end - pos:,} bytes"
        return Break("corrupt", detail, offset=pos, resumed_at=nxt, unreadable_bytes=end - pos)

    def _set_aside(self, detail: str, start: int, nxt: int | None, end: int, size: int, lines: int) -> Break:
        """The break for the member / frame at ``start`` that failed: none of the ``size`` bytes
        decoded from it is read; reading goes on at ``nxt`` (None: nothing readable follows)."""
        detail += (f"; none of the {size:,} bytes ({lines:,} lines) decoded from it is read as a record, as any of "
                   "them may be damaged")
        if nxt is not None:
            detail += f"; reading went on at the next {self.unit}, at byte {nxt:,} ({nxt - start:,} bytes skipped)"
        else:
            detail += f"; no readable {self.unit} follows ({end - start:,} bytes skipped)"
        return Break("corrupt", detail, offset=start, resumed_at=nxt, unreadable_bytes=end - start,
                     untrusted_bytes=size)


class _Input:
    """The compressed bytes of a shard, read once in order through ``f`` (the hashing reader, so
    the shard's sha256 covers every byte as stored), and read again at an offset already passed:
    with ``os.pread`` on a regular file (``fd``), otherwise from a spool of what was read since
    the last ``keep`` (bounded memory: it spills to a temporary file)."""

    def __init__(self, f: IO[bytes], fd: int | None):
        self._f = f
        self._fd = fd
        self._buf = b""  # the bytes last read in order
        self._at = 0  # file offset of self._buf[0]
        self.eof = False
        self._spool: Any = None
        self._spool_at = 0  # file offset of the spool's first byte
        if fd is None:
            import tempfile

            self._spool = tempfile.SpooledTemporaryFile(max_size=_GZIP_WINDOW)

    @property
    def end(self) -> int:
        """Bytes read so far (the file's size once ``eof``)."""
        return self._at + len(self._buf)

    def read_at(self, offset: int, n: int) -> bytes:
        """Up to ``n`` bytes at ``offset`` (fewer only at the end of the file)."""
        if offset >= self._at:
            while self.end < offset + n and not self.eof:
                self._advance(offset)
            i = offset - self._at
            return self._buf[i:i + n]
        first = min(n, self._at - offset)
        if self._fd is not None:
            got = b""
            while len(got) < first:
                piece = os.pread(self._fd, first - len(got), offset + len(got))
                if not piece:
                    return got
                got += piece
        else:
            if offset < self._spool_at:
                raise RuntimeError(f"re-read of byte {offset:,}, before what is kept (byte {self._spool_at:,})")
            self._spool.seek(offset - self._spool_at)
            got = self._spool.read(first)
        return got + self.read_at(self._at, n - first) if n > first and len(got) == first else got

    def keep(self, offset: int) -> None:
        """Nothing before ``offset`` will be read again (an input that cannot seek forgets it)."""
        if self._spool is not None and offset >= self._at:
            self._spool.seek(0)
            self._spool.truncate()
            self._spool_at = self._at

    def _advance(self, needed: int) -> None:
        chunk = self._f.read(_CHUNK)
        if not chunk:
            self.eof = True
            return
        drop = min(max(needed - self._at, 0), len(self._buf))  # what lies before ``needed`` goes
        if drop:
            if self._spool is not None:
                self._spool.seek(0, io.SEEK_END)
                self._spool.write(memoryview(self._buf)[:drop])
            self._buf = self._buf[drop:]
            self._at += drop
        self._buf = self._buf + chunk if self._buf else chunk

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()


# gzip: decoded bytes of a member held in memory until its trailer checks (``_GzipDecoder``).
_GZIP_WINDOW = 64 << 20
# gzip: how far a damaged member's decoded length may stray from the length its trailer states.
_ISIZE_SLACK = 1 << 16


class _GzipDecoder(_Decoder):
    """gzip members, one after another, each checked before any of its data goes out.

    zlib checks a member's CRC-32 and length only at its end, and damaged deflate data often
    decodes without an error into other bytes until then: the check is all that catches it. So
    a member's data is handed out only once its trailer has checked. Meanwhile up to
    ``window`` decoded bytes are held in memory; a member that decodes to more is checked to
    its end first (what it decodes past the window is dropped) and then decoded again from
    where the window filled, its compressed bytes read again (``_Input``), by a thread ahead of
    their use (``_ahead``). Memory stays bounded; the price is decoding twice what a member
    holds past the window (a multi-member file's members are mostly far smaller than it).

    A member that fails (bad deflate data, a CRC or length mismatch) is one break and none of
    its data is read: it may all be damaged. Reading goes on at the first gzip member found
    after where it starts, not after where zlib failed: a member cut short and followed by
    another is decoded into the next one's bytes, as if they were its own, before zlib notices.
    When that next member starts at or before the point where zlib failed, and the bytes before
    it are not a gzip trailer (of a member complete but damaged), the failed member was cut
    short there: what it decodes up to that byte is read, as for a file cut short, and nothing
    decoded from the next member's bytes is.
    """

    name = ".gz"
    magic = b"\x1f\x8b\x08"
    unit = "gzip member"
    window = _GZIP_WINDOW

    def _skip_padding(self, pos: int) -> int:
        """gzip(1) allows zeros after a member."""
        while True:
            chunk = self._src.read_at(pos, 1 << 16)
            rest = chunk.lstrip(b"\x00")
            pos += len(chunk) - len(rest)
            if rest or not chunk:
                return pos

    def _check(self, start: int) -> "_Checked":
        """Decode the member at ``start`` to its end or to where it fails, keeping the window."""
        src = self._src
        state = zlib.decompressobj(wbits=31)
        window: list[bytes] = []
        held = 0
        resume: tuple[Any, int] | None = None
        p, tail = start, b""
        while True:
            data = tail or src.read_at(p, _CHUNK)
            if not data:  # the file ends inside the member
                out = _gzip_flush(state)
                if resume is None and out:
                    window.append(out)
                return _Checked(None, src.end, None, window, resume)
            before = state.copy()
            try:
                out = state.decompress(data, _OUT_STEP)
            except zlib.error as e:
                reason = _first_line(e).replace("Error -3 while decompressing data: ", "")
                return _Checked(None, p + _decodable_prefix(before, data), reason, window, resume)
            tail = b"" if state.eof else state.unconsumed_tail
            if resume is None:
                if held + len(out) <= self.window:
                    if out:
                        window.append(out)
                        held += len(out)
                else:  # past the window: decoded again from here once the member checks
                    resume = (before, p)
            if state.eof:
                return _Checked(p + len(data) - len(state.unused_data), None, None, window, resume)
            p += len(data) - len(tail)

    def _inflate(self, state: Any, start: int, limit: int | None = None) -> Iterator[bytes]:
        """What ``state`` decodes from the compressed bytes at ``start`` (up to ``limit``), in
        steps; to the member's end, or to the end of the input and what zlib then holds."""
        src = self._src
        p, tail = start, b""
        while True:
            data = tail or src.read_at(p, _CHUNK if limit is None else min(_CHUNK, limit - p))
            if not data:
                out = _gzip_flush(state)
                if out:
                    yield out
                return
            out = state.decompress(data, _OUT_STEP)
            if out:
                yield out
            if state.eof:
                return
            tail = state.unconsumed_tail
            p += len(data) - len(tail)

    def _emit(self, start: int, checked: "_Checked") -> Iterator[bytes]:
        """The data of the member at ``start`` that its check let through: the window it held,
        then (for a member larger than the window) the rest, decoded again from the saved state
        up to the member's end (to the end of the file for a member cut short there)."""
        yield from self._held(checked.window)
        if checked.resume is not None:
            state, at = checked.resume
            yield from _ahead(self._again(start, state, at, checked.end))

    def _again(self, start: int, state: Any, at: int, limit: int | None = None) -> Iterator[bytes]:
        """``_inflate`` of bytes of the member at ``start`` that decoded without an error the
        first time: an error now means that the file changed while it was read (an ``OSError``,
        which the reader's one-line error turns into one naming the file and line)."""
        try:
            yield from self._inflate(state, at, limit)
        except zlib.error as e:
            raise OSError(errno.EIO, f"the file changed while it was read: the gzip member at byte {start:,} "
                          f"decodes differently the second time ({_first_line(e)})") from None

    def _measure(self, start: int, limit: int) -> tuple[int, int]:
        """Bytes and newlines the member at ``start`` decodes to from its bytes before ``limit``."""
        size = lines = 0
        try:
            for out in self._inflate(zlib.decompressobj(wbits=31), start, limit):
                size += len(out)
                lines += out.count(b"\n")
        except zlib.error:
            pass
        return size, lines

    def _failed(self, start: int, checked: "_Checked") -> Iterator[bytes]:
        """The break for a member that fails (see the class): returns it, after yielding what
        of the member is read (what it decodes to before the point where it was cut short)."""
        failed_at, reason = checked.failed_at, checked.reason
        assert failed_at is not None
        unit = self.unit
        nxt = self._find_unit(start + 1)
        end = nxt if nxt is not None else self._eof_offset()
        # Where it may have been cut short: where the next member starts, if zlib read on into
        # it; at the end of the file, if zlib ran out of data. Unless a trailer ends there.
        cut = nxt if nxt is not None and nxt <= failed_at else end if reason is None else None
        overran = cut is not None and self._trailer_before(start, cut)
        if overran:
            cut, failed_at = None, cut - 8  # what it decodes to before its trailer is its own
        if cut is not None and cut == nxt:
            checked.window.clear()
            yield from self._again(start, zlib.decompressobj(wbits=31), start, nxt)
            detail = (f"truncated .gz data: the {unit} at byte {start:,} is cut off at byte {nxt:,}, where another "
                      f"{unit} starts (the rest of it is missing); reading went on at that member")
            return Break("truncated", detail, offset=nxt, resumed_at=nxt)
        if cut is not None:  # cut short by the end of the file
            yield from self._emit(start, checked)
            detail = (f"truncated .gz file: the compressed data ends at byte {end:,} (the end of the file) in the "
                      f"middle of a {unit}; the rest of the original is missing")
            return Break("truncated", detail, offset=end)
        checked.window.clear()
        size, lines = self._measure(start, min(failed_at, end))
        if overran:
            detail = (f"corrupt .gz data: the {unit} at byte {start:,} does not end at its trailer (at byte "
                      f"{failed_at:,}): its data is damaged")
        elif reason is not None and ("incorrect data check" in reason or "incorrect length check" in reason):
            what = "CRC" if "data check" in reason else "length"
            detail = (f"corrupt .gz data: the {unit} at byte {start:,} fails its {what} check at byte {failed_at:,} "
                      f"({what} mismatch: what it decodes to is not the data that was compressed)")
        else:
            detail = (f"corrupt .gz data: the {unit} at byte {start:,} cannot be decoded at byte {failed_at:,} "
                      f"({reason})")
        return self._set_aside(detail, start, nxt, end, size, lines)

    def _plausible(self, at: int) -> bool:
        """Whether a member starting at ``at`` decodes (its first 64 KB, or up to where another starts)."""
        head = self._src.read_at(at, 1 << 16)
        if len(head) > 3 and head[3] & 0xE0:
            return False  # reserved gzip flag bits set
        cut = head.find(self.magic, len(self.magic))
        if cut > 0:
            head = head[:cut]  # a member cut short where another starts is a member all the same
        return _decodes(zlib.decompressobj(wbits=31), head)

    def _trailer_before(self, start: int, at: int) -> bool:
        """Whether the 8 bytes before ``at`` look like the trailer of the member at ``start``
        (that member is then complete and damaged, not cut short at ``at``): the length the
        trailer states is, within ``_ISIZE_SLACK``, what the member decodes to before it. Bytes
        of a member cut short are deflate data, which match by chance once in 32,768 times."""
        if at - 8 < start + 10:
            return False
        isize = int.from_bytes(self._src.read_at(at - 4, 4), "little")
        size, _ = self._measure(start, at - 8)
        gap = (size - isize) % (1 << 32)
        return min(gap, (1 << 32) - gap) <= _ISIZE_SLACK


@dataclass
class _Checked:
    """What ``_GzipDecoder._check`` found: the member's ``end`` when it checks, else where it
    failed and why (``reason`` None: the file ends inside it); the decoded ``window``, and where
    to decode again from (state, offset) for what did not fit in it."""

    end: int | None
    failed_at: int | None
    reason: str | None
    window: list[bytes]
    resume: tuple[Any, int] | None


def _ahead(chunks: Iterator[bytes], depth: int = 2) -> Iterator[bytes]:
    """``chunks``, made by a thread up to ``depth`` ahead of the caller's use of them. zlib and
    os.pread let go of the GIL, so a member's second decoding (``_GzipDecoder``) runs while
    the caller parses what the first left in the window. The thread stops when the caller does."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def run() -> None:
        try:
            for chunk in chunks:
                if not put(chunk):
                    return
            end: Any = done
        except BaseException as e:  # noqa: BLE001 - raised in the caller's thread
            end = e
        put(end)

    thread = threading.Thread(target=run, name="synthfilter-gunzip", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def _gzip_flush(state: Any) -> bytes:
    try:
        return state.flush()
    except zlib.error:
        return b""


def _decodes(state: Any, data: bytes) -> bool:
    """Whether ``state`` decodes ``data`` without an error (the output is dropped, in steps)."""
    try:
        while data and not state.eof:
            state.decompress(data, _OUT_STEP)
            data = state.unconsumed_tail
    except zlib.error:
        return False
    return True


def _decodable_prefix(state: Any, data: bytes) -> int:
    """The length of the longest prefix of ``data`` that a copy of ``state`` decodes without an
    error, when the whole fails (errors are monotonic in the prefix): the failing byte's index."""
    lo, hi = 0, len(data)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _decodes(state.copy(), data[:mid]):
            lo = mid
        else:
            hi = mid
    return lo


# zstd: a block decodes to at most this many bytes (the format's limit), which bounds what one
# step of ``_ZstdDecoder`` decodes to (``_OUT_STEP`` bytes: so many blocks at most).
_ZSTD_BLOCK_MAX = 128 << 10


class _ZstdDecoder(_Decoder):
    """zstd frames, one after another, each decoded to its end without an error (and, when it
    has one, its content checksum matched) before any of its data goes out.

    Damaged zstd data may decode without an error into other bytes until the frame's end,
    where its content checksum (an optional field) is all that catches it. So, as for gzip
    (``_GzipDecoder``), a frame's data is handed out only once the frame has decoded to its
    end: up to ``window`` decoded bytes are held in memory meanwhile; a frame that decodes to
    more is decoded to its end first (what it decodes past the window is dropped) and then
    decoded again from its start (a zstd decompressor's state cannot be copied), the window's
    bytes, handed out already, skipped. Each step feeds the decompressor whole blocks, at most
    ``_OUT_STEP // _ZSTD_BLOCK_MAX`` of them (found by walking the block headers), so what one step decodes
    to is bounded whatever the compression ratio.

    A frame that fails (a decoding error, a checksum mismatch) is one break and none of its data
    is read; reading goes on at the first zstd frame found after where it starts. A frame with
    no content checksum cannot be checked: damage that zstd decodes without an error goes
    unnoticed there (the format gives nothing to check it by; writers should set checksums),
    but any error zstd reports sets the whole frame aside all the same. A frame cut short by
    the end of the file is read up to the cut, as a gzip member cut short there (nothing follows
    that it could have overrun into; its checksum, if it has one, is lost with the cut); one that
    decodes to the end of the file without an error where another frame starts inside it is set
    aside whole (cut short there, it decoded the next frame's bytes as its own; reading goes on
    at that frame).
    """

    name = ".zst"
    magic = b"\x28\xb5\x2f\xfd"
    unit = "zstd frame"
    window = _GZIP_WINDOW
    _SKIPPABLE = tuple((0x184D2A50 + i).to_bytes(4, "little") for i in range(16))

    def _not_a_unit(self, pos: int, head: bytes) -> "Break | int | None":
        if head[:4] in self._SKIPPABLE:  # metadata: no records
            end = pos + 8 + int.from_bytes(head[4:8], "little") if len(head) == 8 else pos + 8
            if len(self._src.read_at(end - 1, 1)) == 1:
                return end
            eof = self._eof_offset()
            detail = (f"truncated .zst file: the compressed data ends at byte {eof:,} (the end of the file) in "
                      f"the middle of a skippable zstd frame (metadata, no records) at byte {pos:,}")
            return Break("truncated", detail, offset=eof, unreadable_bytes=eof - pos)
        return super()._not_a_unit(pos, head)

    def _steps(self, start: int) -> Iterator[tuple[int, int]]:
        """(offset, length) of the pieces of the frame at ``start`` to feed the decompressor:
        whole blocks, at most ``_OUT_STEP // _ZSTD_BLOCK_MAX`` of them or about ``_CHUNK`` bytes, found by
        walking the block headers as the decompressor reads them; where the walk cannot go on
        (a damaged header, which the decompressor then reports), small pieces to the end of the
        file. The caller stops at the frame's end, an error, or the end of the file."""
        src = self._src
        head = src.read_at(start, 18)
        p = begin = start
        try:
            p += zstandard.frame_header_size(head)
            checksum = zstandard.get_frame_parameters(head).has_checksum
        except zstandard.ZstdError:
            p = -1
        if p >= 0:
            blocks, most = 0, max(_OUT_STEP // _ZSTD_BLOCK_MAX, 1)
            while True:
                bh = src.read_at(p, 3)
                if len(bh) < 3:
                    break
                v = int.from_bytes(bh, "little")
                kind, size = (v >> 1) & 3, v >> 3
                p += 3 + (1 if kind == 1 else size)
                blocks += 1
                if kind == 3 or size > _ZSTD_BLOCK_MAX:
                    break
                if v & 1:  # the last block, then the checksum on its own (so all is decoded before it)
                    yield begin, p - begin
                    if checksum:
                        yield p, 4
                    begin = p + 4 * checksum
                    break
                if blocks >= most or p - begin >= _CHUNK:
                    yield begin, p - begin
                    begin, blocks = p, 0
        while True:
            yield begin, 1 << 14
            begin += 1 << 14

    def _inflate(self, start: int, done: list[int]) -> Iterator[bytes]:
        """What the frame at ``start`` decodes to, in steps; to its end (whose offset is then
        appended to ``done``) or to the end of the file. ``_Corrupt`` at an error."""
        state = zstandard.ZstdDecompressor().decompressobj()
        src = self._src
        for off, n in self._steps(start):
            data = src.read_at(off, n)
            if data:
                try:
                    out = state.decompress(data)
                except zstandard.ZstdError as e:
                    raise _Corrupt(off, _first_line(e).replace("zstd decompressor error: ", "")) from None
                if out:
                    yield out
                if state.eof:
                    done.append(off + len(data) - len(state.unused_data))
                    return
            if len(data) < n:
                return

    def _check(self, start: int) -> "_ZstdChecked":
        """Decode the frame at ``start`` to its end or to where it fails, keeping the window."""
        head = self._src.read_at(start, 18)
        try:
            params = zstandard.get_frame_parameters(head)
            checksum = bool(params.has_checksum)
            size = None if params.content_size == zstandard.CONTENTSIZE_UNKNOWN else int(params.content_size)
        except zstandard.ZstdError:
            checksum, size = False, None
        checked = _ZstdChecked(None, None, None, [], 0, 0, False, checksum, size)
        window, limit = checked.window, self.window
        done: list[int] = []
        try:
            for out in self._inflate(start, done):
                checked.decoded += len(out)
                if not checked.overflow:
                    if checked.held + len(out) <= limit:
                        window.append(out)
                        checked.held += len(out)
                    else:  # past the window: decoded again once the frame checks
                        checked.overflow = True
        except _Corrupt as c:
            checked.failed_at, checked.reason = c.offset, c.reason
            return checked
        if done:
            checked.end = done[0]
        else:
            checked.failed_at = self._eof_offset()
        return checked

    def _emit(self, start: int, checked: "_ZstdChecked") -> Iterator[bytes]:
        """The data of the frame at ``start`` that its check let through: the window it held,
        then (for a frame larger than the window) the rest, decoded again from its start."""
        yield from self._held(checked.window)
        if checked.overflow:
            yield from _ahead(self._again(start, checked.held))

    def _again(self, start: int, skip: int) -> Iterator[bytes]:
        """The frame at ``start`` decoded again, its first ``skip`` bytes left out. It decoded
        without an error the first time: an error now means that the file changed while it was
        read (an ``OSError``, which the reader turns into a one-line error naming the file)."""
        try:
            for out in self._inflate(start, []):
                if skip >= len(out):
                    skip -= len(out)
                    continue
                yield out[skip:] if skip else out
                skip = 0
        except _Corrupt as c:
            raise OSError(errno.EIO, f"the file changed while it was read: the zstd frame at byte {start:,} "
                          f"decodes differently the second time ({c.reason})") from None

    def _measure(self, start: int) -> tuple[int, int]:
        """Bytes and newlines the frame at ``start`` decodes to before it fails."""
        size = lines = 0
        try:
            for out in self._inflate(start, []):
                size += len(out)
                lines += out.count(b"\n")
        except _Corrupt:
            pass
        return size, lines

    def _failed(self, start: int, checked: "_ZstdChecked") -> Iterator[bytes]:
        """The break for a frame that fails (see the class): returns it, after yielding what of
        the frame is read (a frame without a checksum cut short by the end of the file)."""
        unit = self.unit
        nxt = self._find_unit(start + 1)
        if checked.reason is None and nxt is not None:  # cut short where another frame starts
            checked.window.clear()
            size, lines = self._measure(start)
            detail = (f"truncated .zst data: the {unit} at byte {start:,} is cut off before its end, and another "
                      f"{unit} starts at byte {nxt:,}; none of the {size:,} bytes ({lines:,} lines) decoded from it "
                      f"is read as a record, as what it decoded from the next one's bytes is not its own; reading "
                      f"went on at that frame ({nxt - start:,} bytes skipped)")
            return Break("truncated", detail, offset=start, resumed_at=nxt, unreadable_bytes=nxt - start,
                         untrusted_bytes=size)
        if checked.reason is None:  # the file ends inside the frame
            end = self._eof_offset()
            missing = None
            if checked.size is not None and checked.size >= checked.decoded:
                missing = checked.size - checked.decoded
            detail = (f"truncated .zst file: the compressed data ends at byte {end:,} (the end of the file) in the "
                      f"middle of a {unit}")
            # Read up to the cut, as a gzip member cut short by the end of the file: nothing follows
            # that it could have overrun into. Its content checksum, at its end, is lost with the cut,
            # as a gzip member's trailer is (zstd writes a whole file as one frame by default, so
            # setting it aside would lose the whole shard to a cut copy).
            yield from self._emit(start, checked)
            if missing is not None:
                detail += f", {missing:,} of its {checked.size:,} decoded bytes are missing"
            else:
                detail += "; the rest of the original is missing"
            if checked.checksum:
                detail += " (and its content checksum, at its end, so what it decoded to could not be checked)"
            return Break("truncated", detail, offset=end, missing_bytes=missing)
        checked.window.clear()
        end = nxt if nxt is not None else self._eof_offset()
        size, lines = self._measure(start)
        if "checksum" in checked.reason:
            detail = (f"corrupt .zst data: the {unit} at byte {start:,} fails its content checksum (what it "
                      "decodes to is not the data that was compressed)")
        else:
            detail = (f"corrupt .zst data: the {unit} at byte {start:,} cannot be decoded at or after byte "
                      f"{checked.failed_at:,} ({checked.reason})")
        return self._set_aside(detail, start, nxt, end, size, lines)

    def _plausible(self, at: int) -> bool:
        """Whether a frame starting at ``at`` decodes (its first 64 KB, or up to where another starts)."""
        head = self._src.read_at(at, 1 << 16)
        cut = head.find(self.magic, len(self.magic))
        try:
            zstandard.ZstdDecompressor().decompressobj().decompress(head[:cut] if cut > 0 else head)
        except zstandard.ZstdError:
            return False
        return True


@dataclass
class _ZstdChecked:
    """What ``_ZstdDecoder._check`` found: the frame's ``end`` when it decodes to its end
    without an error, else where it failed and why (``reason`` None: the file ends inside it);
    the decoded ``window`` (``held`` bytes; ``overflow``: the frame decodes to more), the bytes
    ``decoded`` in all, whether the frame has a content ``checksum``, and the decoded ``size``
    its header states, if it does."""

    end: int | None
    failed_at: int | None
    reason: str | None
    window: list[bytes]
    held: int
    decoded: int
    overflow: bool
    checksum: bool
    size: int | None


@dataclass
class RawRecord:
    """One record as read: where it is, its bytes/values, the parsed object, or why it is bad."""

    index: int  # 0-based ordinal among the shard's records
    line: int  # 1-based line (JSONL) or row (Parquet) number
    raw: bytes | None  # JSONL: the line without its newline
    obj: Any  # the parsed value (a dict for a good record)
    error: str | None  # set when the record is malformed
    offset: int = 0  # JSONL: byte offset of the line in the decompressed stream
    brk: Break | None = None  # set on the record that stands for an unreadable part of the shard


@dataclass
class RecordBatch:
    """Consecutive records of a shard as parallel lists (one entry per record, no per-record
    objects): what ``RawRecord`` holds, column by column. ``start`` is the first record's index;
    ``breaks`` maps a position in the batch to the ``Break`` that record stands for."""

    start: int
    lines: list[int] = field(default_factory=list)
    raw: list[bytes | None] = field(default_factory=list)
    # None where not a JSON object or not parsed; an object whose error is a key it repeats
    # (``RepeatedKeys``) is kept, as read, beside its error
    objs: list[Any] = field(default_factory=list)
    errors: list[str | None] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    breaks: dict[int, Break] = field(default_factory=dict)
    # position -> the line's full size, for a line over ``max_line_bytes``: its raw is only the
    # first ``OVERSIZED_RAW_PREFIX`` bytes (the rest is never held in memory)
    oversized: dict[int, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.lines)

    def append(self, line: int, raw: bytes | None, obj: Any, error: str | None, offset: int = 0) -> None:
        self.lines.append(line)
        self.raw.append(raw)
        self.objs.append(obj)
        self.errors.append(error)
        self.offsets.append(offset)

    def records(self) -> Iterator[RawRecord]:
        for j, line in enumerate(self.lines):
            yield RawRecord(self.start + j, line, self.raw[j], self.objs[j], self.errors[j], self.offsets[j],
                            self.breaks.get(j))


# Bytes that ``bytes.strip()`` removes: a line starting with any other byte is not blank.
_ASCII_WHITESPACE = frozenset(b" \t\n\r\x0b\x0c")
OVERSIZED_RAW_PREFIX = 1024  # bytes of an over-long line kept as its quarantined raw line
_BOM = b"\xef\xbb\xbf"  # a UTF-8 byte order mark, which some tools put at the start of a file
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def misnamed_message(name: str, compression: str | None, head: bytes) -> str | None:
    """Why a JSONL shard named ``name`` (compression ``compression`` by its name: None, "gz" or
    "zst") cannot be what its first bytes ``head`` say it is, and the name to give it; None
    where they do not contradict the name (a corrupt file says so in its own words)."""
    if head.startswith(_GZIP_MAGIC):
        found = "gz"
    elif head.startswith(_ZSTD_MAGIC):
        found = "zst"
    elif head.startswith(_BOM) or head[:1] == b"{" or (head and head[0] in _ASCII_WHITESPACE):
        found = None  # plain text, as a JSON line starts
    else:
        return None
    if found == compression:
        return None
    tool = {"gz": "gzip", "zst": "zstd"}
    base = name[:-len(compression) - 1] if compression and name.lower().endswith("." + compression) else name
    if compression is None:
        return (f"{name} starts with {tool[found]}'s magic bytes ({head[:2 if found == 'gz' else 4].hex(' ')}), "
                f"so it is {tool[found]}-compressed: name it {name}.{found}")  # type: ignore[index]
    if found is None:
        return f"{name} is not {tool[compression]}: it starts like plain JSONL; rename it {base}"
    return f"{name} is not {tool[compression]}: it starts with {tool[found]}'s magic bytes; rename it {base}.{found}"


def _fail_message(brk: Break, records: int) -> str:
    if brk.kind == "misnamed":
        return brk.detail  # the fix is a new name: nothing is damaged
    if not records:
        return (f"{brk.detail}; re-copy or re-create the file, or use --on-error quarantine to set the unreadable "
                "part aside and keep what follows, if readable")
    readable = f"the {records:,} records before it" if records != 1 else "the record before it"
    return (f"{brk.detail}; re-copy or re-create the file, or use --on-error quarantine to keep {readable}"
            " (and what follows, if readable) and set the unreadable part aside")


class ShardReader:
    """Iterate the records of one shard. ``sha256``/``bytes_read``/``breaks`` are final after iteration.

    With ``recover`` a break in the data (truncated or corrupt compression, an unreadable
    Parquet row group) becomes one malformed record in place, carrying the ``Break``, and
    reading goes on after it where it can; without, the first break raises ``InputError``
    naming the byte offset or row group (after the records read before it).

    ``fields`` are the (dotted) fields the caller reads from each record: a JSON line that
    repeats a key on the way to one of them is malformed (``RepeatedKeys``), its object kept
    beside the error. A key the caller does not read may repeat; so may any, without ``fields``.
    """

    def __init__(self, shard: Shard, max_line_bytes: int = 50 * 1024 * 1024, batch_rows: int = 4096,
                 recover: bool = False, fields: Sequence[str | None] = ()):
        self.shard = shard
        self.max_line_bytes = max_line_bytes
        self.batch_rows = batch_rows
        self.recover = recover
        self.repeated_keys = RepeatedKeys(fields) if any(fields) else None
        self.blank_lines = 0
        self.sha256 = ""
        self.bytes_read = 0
        self.parquet_schema: Any = None
        self.breaks: list[Break] = []

    def __iter__(self) -> Iterator[RawRecord]:
        for batch in self.batches():
            yield from batch.records()

    def batches(self, parse: bool = True, raw: bool = True) -> Iterator[RecordBatch]:
        """The shard's records in batches of ``batch_rows``.

        JSONL only: with ``parse=False`` lines are not parsed: ``objs`` is all None and only
        problems found without parsing (an over-long line) set ``errors``; the caller parses the
        lines it needs with ``parse_json_line``. With ``raw=False`` the lines are not kept
        (``raw`` is all None), which saves memory traffic when only the parsed values are used;
        a break's record keeps the line it cut all the same. On a whole-file ``InputError`` the
        records read before it come first, as a last (short) batch.
        """
        self.breaks = []
        if self.shard.format == "parquet":
            yield from self._parquet_batches()
        else:
            yield from self._jsonl_batches(parse, raw)

    # JSONL ----------------------------------------------------------------------------------

    def _open_jsonl(self) -> tuple[_HashingRaw, _Decoder | None, IO[bytes]]:
        path = self.shard.path
        try:
            f = open(path, "rb")
        except OSError as e:
            raise InputError(path, f"cannot open: {e.strerror}") from None
        hraw = _HashingRaw(f)
        decoder: _Decoder | None = None
        if self.shard.compression in ("gz", "zst"):
            st = os.fstat(f.fileno())
            # Re-read by offset on a regular file (os.pread), spooled otherwise (a pipe).
            fd = f.fileno() if stat_module.S_ISREG(st.st_mode) else None
            src = _Input(io.BufferedReader(hraw, _CHUNK), fd)
            decoder = (_GzipDecoder if self.shard.compression == "gz" else _ZstdDecoder)(src, Path(self.shard.rel).name)
            stream: IO[bytes] = io.BufferedReader(decoder, _CHUNK)
        else:
            stream = io.BufferedReader(hraw, _CHUNK)
        return hraw, decoder, stream

    def _jsonl_batches(self, parse: bool, keep_raw: bool) -> Iterator[RecordBatch]:
        # One tight loop per line (this is the hot path of both the score and write stages):
        # locals for everything it calls, and records appended to the batch's lists.
        path = self.shard.path
        hraw, decoder, stream = self._open_jsonl()
        readline = stream.readline
        loads, decode_error = orjson.loads, orjson.JSONDecodeError
        repeats = self.repeated_keys
        may_repeat = repeats.may_repeat if repeats is not None else None
        limit = self.max_line_bytes
        rows = self.batch_rows
        line_no = 0
        offset = 0
        batch = RecordBatch(0)
        add_line, add_raw, add_obj = batch.lines.append, batch.raw.append, batch.objs.append
        add_error, add_offset = batch.errors.append, batch.offsets.append
        try:
            while True:  # one pass per readable stretch: the whole file, unless it breaks
                cut = b""
                while True:
                    try:
                        line = readline(limit + 1)
                    except OSError as e:
                        raise InputError(path, f"cannot read: {e.strerror or e}", line_no + 1) from None
                    if not line:
                        break
                    if decoder is not None and decoder.pending is not None and not line.endswith(b"\n") \
                            and len(line) <= limit:
                        cut = line  # the line the break cut: it belongs to the break's record
                        break
                    line_no += 1
                    start = offset
                    offset += len(line)
                    if len(line) > limit and not line.endswith(b"\n"):
                        size = len(line) + self._skip_rest_of_line(stream)
                        offset = start + size
                        batch.oversized[len(batch.lines)] = size
                        batch.append(
                            line_no, line[:OVERSIZED_RAW_PREFIX], None,
                            f"line is {size:,} bytes, over the {limit:,}-byte limit (max_line_bytes)", start,
                        )
                    else:
                        # The raw line keeps a CR of CRLF (kept lines are written back as read);
                        # the JSON parsed is the line without it, and without a UTF-8 BOM.
                        raw = line[:-1] if line.endswith(b"\n") else line
                        body = raw.rstrip(b"\r\n")
                        if start == 0 and body.startswith(_BOM):
                            body = body[3:]
                        if not body or (body[0] in _ASCII_WHITESPACE and not body.strip()):
                            self.blank_lines += 1
                            continue
                        obj = error = None
                        if start == 0 and decoder is None and (misnamed := misnamed_message(
                                Path(self.shard.rel).name, None, body[:4])) is not None:
                            # Compressed data under a plain name: not a JSON line, and not a
                            # damaged one either. Fail on the name; quarantine as usual.
                            if not self.recover:
                                raise InputError(path, misnamed)
                            error = misnamed
                        elif parse:
                            try:
                                obj = loads(body)
                            except decode_error:
                                pass
                            if type(obj) is not dict or holds_big_number(obj):
                                obj, error = parse_json_line(body)
                            if may_repeat is not None and error is None and may_repeat(body):
                                error = repeats.confirm(body)  # type: ignore[union-attr]
                        add_line(line_no)
                        add_raw(raw if keep_raw else None)
                        add_obj(obj)
                        add_error(error)
                        add_offset(start)
                    if len(batch.lines) >= rows:
                        yield batch
                        batch = RecordBatch(batch.start + len(batch.lines))
                        add_line, add_raw, add_obj = batch.lines.append, batch.raw.append, batch.objs.append
                        add_error, add_offset = batch.errors.append, batch.offsets.append
                if decoder is None or decoder.pending is None:
                    break
                brk = decoder.pending
                if not self.recover:
                    self.breaks.append(brk)
                    raise InputError(path, _fail_message(brk, batch.start + len(batch.lines)))
                if cut:
                    brk = replace(brk, partial_line_bytes=len(cut), unreadable_bytes=brk.unreadable_bytes + len(cut),
                                  detail=f"{brk.detail}; the {len(cut):,}-byte line it cut is kept as this record's raw line")
                self.breaks.append(brk)
                line_no += 1
                batch.breaks[len(batch.lines)] = brk
                batch.append(line_no, cut or None, None, brk.detail, offset)
                offset += len(cut)
                decoder.resume()
                stream.detach()  # a new buffer over the same decoder (closing the old one would close it)
                stream = io.BufferedReader(decoder, _CHUNK)
                readline = stream.readline
            if batch.lines:
                yield batch
        except InputError:
            if batch.lines:
                yield batch
            raise
        finally:
            try:
                # Hash whatever the decoder left unread (e.g. gzip trailer) so sha256 covers the file.
                while hraw.read(_CHUNK):
                    pass
            except (OSError, ValueError):
                pass
            self.sha256 = hraw.sha256.hexdigest()
            self.bytes_read = hraw.bytes_read
            stream.close()

    @staticmethod
    def _skip_rest_of_line(stream: IO[bytes]) -> int:
        skipped = 0
        while True:
            chunk = stream.readline(_CHUNK)
            skipped += len(chunk)
            if not chunk or chunk.endswith(b"\n"):
                return skipped

    # Parquet --------------------------------------------------------------------------------

    def _parquet_batches(self) -> Iterator[RecordBatch]:
        path = self.shard.path
        self.sha256, self.bytes_read = file_sha256(path), path.stat().st_size
        index = 0
        pieces = ParquetPieces(path, self.batch_rows)
        ambiguous: str | None = None
        checked = self.repeated_keys is None
        for row, piece in pieces:
            if not checked and pieces.schema is not None:
                # A column (or struct field) read whose name the schema gives twice: which one
                # is the text is ambiguous, as for a JSON key given twice. Every row is malformed.
                checked = True
                ambiguous = schema_repeat(pieces.schema, self.repeated_keys.paths)  # type: ignore[union-attr]
                if ambiguous is not None and not self.recover:
                    raise InputError(path, ambiguous)
            self.parquet_schema = pieces.schema
            if isinstance(piece, Break):
                self.breaks.append(piece)
                if not self.recover:
                    if piece.kind == "file":
                        raise InputError(path, f"{piece.detail}; re-copy or re-create the file")
                    raise InputError(path, _fail_message(piece, index))
                batch = RecordBatch(index)
                batch.append(row + 1, None, None, piece.detail)
                batch.breaks[0] = piece
                index += 1
                yield batch
                continue
            rows = _parquet_rows(piece)
            n = len(rows)
            yield RecordBatch(index, list(range(row + 1, row + n + 1)), [None] * n, rows, [ambiguous] * n, [0] * n)
            index += n
        self.parquet_schema = pieces.schema


def _parquet_rows(piece: Any) -> list[dict[str, Any]]:
    """The rows of a record batch as Python dicts, for the score stage to find its fields in.

    Only those values are used: the write stage copies the rows from the file itself, so a column
    that has no exact Python value is given one that stands for it here, rather than failing the
    run. Without pandas (which this process keeps out) a nanosecond timestamp, time or duration
    that is not a whole number of microseconds has none: it is read as its text
    (``2020-09-13 12:26:40.000000123``), which holds every digit."""
    import pyarrow as pa

    try:
        return piece.to_pylist()
    except (ValueError, pa.ArrowException):
        pass
    names = piece.schema.names
    columns = [_column_values(piece.column(i)) for i in range(piece.num_columns)]
    return [dict(zip(names, values)) for values in zip(*columns)] if columns else [{} for _ in range(piece.num_rows)]


def _column_values(column: Any) -> list[Any]:
    """One column's values as Python objects: as pyarrow converts them, else as text (see
    ``_parquet_rows``), a struct field by field (a text field may be nested beside such a value),
    else None (a list of such values: no text cast for it)."""
    import pyarrow as pa

    try:
        return column.to_pylist()
    except (ValueError, pa.ArrowException):
        pass
    if pa.types.is_struct(column.type):
        names = [column.type.field(i).name for i in range(column.type.num_fields)]
        children = [_column_values(child) for child in column.flatten()]
        valid = column.is_valid().to_pylist()
        return [dict(zip(names, values)) if ok else None for ok, *values in zip(valid, *children)]
    try:
        return column.cast(pa.string()).to_pylist()
    except (ValueError, pa.ArrowException):
        return [None] * len(column)


class ParquetPieces:
    """Iterate ``(first row, piece)`` over a Parquet file, where a piece is a readable
    ``pyarrow.RecordBatch`` or a ``Break`` for a row group (or the rest of one) that cannot be
    read, or for the whole file when even its footer is unreadable. Rows are numbered from 0 in
    the file, whatever breaks. The score and write stages both read through this, so they see
    the same records at the same places. ``schema`` is the file's (empty when unreadable)."""

    def __init__(self, path: Path, batch_rows: int):
        self.path = path
        self.batch_rows = batch_rows
        self.schema: Any = None

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = self.path
        try:
            pf = pq.ParquetFile(path)
            md = pf.metadata
        except (pa.ArrowException, OSError) as e:
            self.schema = pa.schema([])
            size = path.stat().st_size if path.exists() else 0
            yield 0, Break("file", f"not a readable Parquet file ({_first_line(e)}): none of its {size:,} bytes "
                           "can be read as rows", offset=0, unreadable_bytes=size)
            return
        self.schema = pf.schema_arrow
        row = 0
        groups = md.num_row_groups
        for g in range(groups):
            rg = md.row_group(g)
            n = rg.num_rows
            got = 0
            try:
                for b in pf.iter_batches(batch_size=self.batch_rows, row_groups=[g]):
                    yield row + got, b
                    got += b.num_rows
                if got != n:
                    raise ValueError(f"{got:,} rows read where the footer says {n:,}")
            except (pa.ArrowException, OSError, ValueError) as e:
                cols = [rg.column(c) for c in range(rg.num_columns)]
                start = min((c.dictionary_page_offset or c.data_page_offset for c in cols), default=0)
                size = sum(c.total_compressed_size for c in cols)
                where = f"rows {row + got + 1:,}-{row + n:,}" if n - got != 1 else f"row {row + n:,}"
                lost = f"{n - got:,} row{'s' if n - got != 1 else ''}"
                after = f" after its first {got:,} rows" if got else ""
                yield row + got, Break(
                    "row_group", f"corrupt Parquet data: row group {g + 1} of {groups} ({size:,} bytes at byte "
                    f"{start:,}) is unreadable{after} ({_first_line(e)}): {where}, {lost} lost",
                    offset=start, resumed_at=None if g + 1 == groups else start + size, unreadable_bytes=size,
                    row_group=g, rows_lost=n - got)
            row += n


def parse_json_line(body: bytes, repeated_keys: "RepeatedKeys | None" = None) -> tuple[Any, str | None]:
    """A JSON line as an object, or (None, why not). A BOM or CR around it is ignored; a line
    orjson refuses only for an integer beyond 64 bits is read by the standard library's parser.
    With ``repeated_keys``, an object that repeats a key read from it is returned with the error
    that says so."""
    body = body.rstrip(b"\r")
    if body.startswith(_BOM):
        body = body[3:]
    try:
        obj = orjson.loads(body)
        if holds_big_number(obj):
            obj = _parse_big_numbers(body.decode("utf-8"))
    except orjson.JSONDecodeError as e:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as ue:
            return None, f"invalid UTF-8 (byte 0x{body[ue.start]:02x} at column {ue.start + 1})"
        obj = _parse_big_numbers(text)
        if obj is None:
            return None, f"malformed JSON ({_first_line(e)})"
    if not isinstance(obj, dict):
        return None, f"expected a JSON object, got {type(obj).__name__ if obj is not None else 'null'}"
    if repeated_keys is not None and repeated_keys.may_repeat(body):
        return obj, repeated_keys.confirm(body)
    return obj, None


def _any_spelling(key: str) -> bytes:
    """A regular expression (bytes) for every JSON spelling of the string ``key`` between its
    quotes: each character as its UTF-8 bytes, as a ``\\uXXXX`` escape in either case of hex
    digit (a pair of them beyond the BMP), or as its short escape (``\\/``, ``\\n``, ...)."""

    def hex4(unit: int) -> bytes:
        return b"".join(
            b"[" + re.escape(d.lower().encode()) + re.escape(d.upper().encode()) + b"]" if d.isalpha()
            else d.encode() for d in f"{unit:04x}")

    def escapes(ch: str) -> list[bytes]:
        code = ord(ch)
        if code > 0xFFFF:
            high, low = 0xD800 + ((code - 0x10000) >> 10), 0xDC00 + ((code - 0x10000) & 0x3FF)
            forms = [rb"\\u" + hex4(high) + rb"\\u" + hex4(low)]
        else:
            forms = [rb"\\u" + hex4(code)]
        short = {"/": b"/", '"': b'"', "\\": b"\\", "\b": b"b", "\f": b"f", "\n": b"n", "\r": b"r", "\t": b"t"}
        if ch in short:
            forms.append(rb"\\" + re.escape(short[ch]))
        if ch not in '"\\' and code >= 0x20:
            forms.append(re.escape(ch.encode("utf-8")))
        return forms

    return b"".join(b"(?:" + b"|".join(escapes(ch)) + b")" for ch in key)


_AMBIGUOUS = "which one counts is ambiguous; keep only one"  # a key, column or field given twice


class RepeatedKeys:
    """Whether a JSON line repeats a key on the way to the fields read from it.

    JSON lets an object name a key twice (``{"text": "first body", "text": "second body"}``);
    parsers keep one of the values (orjson and the standard library the last) and say nothing,
    so the record would be scored, deduplicated and labelled on a text, id or provenance the
    one who wrote it may not think it has. Such a record is malformed when the repeated key is
    one a field is read through: the field's own key, or a key on a dotted field's way (``meta``
    and ``source`` for ``meta.source``, the way ``records.get_path`` follows it: the whole
    dotted name first, where the object has that key). A repeated key nothing reads is left
    alone: the record is read as it is without this check.

    orjson does not report repeats, so a line is first tested on its bytes (``may_repeat``: the
    JSON spelling of a key read followed by a colon, ``"text":``, found more than once, in one
    regular expression pass over the line), and only such a line is parsed again, by a parser
    that sees every key-value pair (``confirm``): ``"text"`` as a key of another object is no
    repeat. Every spelling of a key counts: ``"te\\u0078t"`` is ``"text"`` to any parser.
    """

    def __init__(self, fields: Sequence[str | None]):
        self.paths = tuple(dict.fromkeys(f for f in fields if f))
        keys = dict.fromkeys(k for path in self.paths for k in (path, *path.split(".")))
        # One pattern finds every spelling of every key read in one pass over the line (a
        # bytes.count per key would take a pass per key, each over the whole text): each
        # character as UTF-8 or as any JSON escape of it (``"te\\u0078t"`` is ``"text"``). A
        # quote, then a look-ahead that skips most quotes at once (a key's first byte, or a
        # backslash), the spellings and the closing quote; then a colon: a key ("type": "text"
        # has no colon after "text").
        firsts = b"".join(sorted({re.escape(k[:1].encode("utf-8")[:1] or b'"') for k in keys}))
        spellings = b"|".join(_any_spelling(k) for k in keys)
        self._find_all = re.compile(b'("(?=[' + firsts + rb'\\])(?:' + spellings + rb')")[ \t\r\n]*:').findall
        self._plain = {orjson.dumps(k): k for k in keys}
        self._plain_set = frozenset(self._plain)

    def may_repeat(self, body: bytes) -> bool:
        """Whether ``body`` (a JSON line) may repeat a key read from it: ``confirm`` tells."""
        found = self._find_all(body)
        if len(found) < 2:
            return False
        distinct = set(found)
        if not distinct <= self._plain_set:  # a key spelled with escapes: the key it spells
            plain = self._plain
            distinct = {plain[s] if s in plain else orjson.loads(s) for s in found}
        return len(distinct) < len(found)

    def confirm(self, body: bytes) -> str | None:
        """Why the JSON object line ``body`` (read as one already) is malformed for a key it
        repeats on the way to a field read, or None where it repeats none of those."""
        import json

        text = body.decode("utf-8")
        lone = _SURROGATE_ESCAPE.search(text) is not None  # keys read as U+FFFD there, as they are read

        def pairs(items: list[tuple[str, Any]]) -> _PairedObject:
            if lone:
                items = [(_SURROGATE.sub("\ufffd", k), v) for k, v in items]
            obj = _PairedObject(items)
            if len(obj) < len(items):
                counts: dict[str, int] = {}
                for k, _ in items:
                    counts[k] = counts.get(k, 0) + 1
                obj.repeats = counts
            return obj

        def refuse(name: str) -> Any:
            raise ValueError(name)

        try:
            top = json.loads(text, object_pairs_hook=pairs, parse_constant=refuse)
        except (ValueError, RecursionError):
            return None  # not for this parser (it was read): nothing to tell
        for path in self.paths:
            found = _repeat_on_way(top, path)
            if found is not None:
                key, n, way = found
                where = f" in its {orjson.dumps('.'.join(way)).decode()} object" if way else ""
                return f"the record repeats the key {orjson.dumps(key).decode()}{where} ({n} values): {_AMBIGUOUS}"
        return None


class _PairedObject(dict):
    """A JSON object read by ``RepeatedKeys.confirm``: the last value of each key, as any parser
    keeps it, and ``repeats``: each key's count, where one is repeated (else None)."""

    repeats: dict[str, int] | None = None


def _repeat_on_way(obj: Any, path: str) -> tuple[str, int, list[str]] | None:
    """(key, its count, the keys of the objects it is in) for the first key repeated on the
    way ``records.get_path`` follows ``path`` through ``obj`` (``_PairedObject``s), or None."""
    if type(obj) is not _PairedObject:
        return None
    parts = [path] if path in obj else path.split(".")  # the whole dotted name first, as read
    way: list[str] = []
    for part in parts:
        if type(obj) is not _PairedObject or part not in obj:
            return None
        if obj.repeats is not None and obj.repeats[part] > 1:
            return part, obj.repeats[part], way
        way.append(part)
        obj = obj[part]
    return None


def schema_repeat(schema: Any, paths: Sequence[str]) -> str | None:
    """Why a Parquet file whose schema (``pyarrow.Schema``) names a column, or a struct field,
    twice on the way ``records.get_path`` follows one of ``paths`` is malformed, or None. Each row
    read from it would hold only the last of them (the file's own columns all pass through)."""
    import pyarrow as pa

    top = [(f.name, f.type) for f in schema]
    for path in paths:
        level = top
        parts = [path] if any(name == path for name, _ in top) else path.split(".")
        way: list[str] = []
        for part in parts:
            found = [t for name, t in level if name == part]
            if len(found) > 1:
                key = orjson.dumps(part).decode()
                if not way:
                    return f"the file has {len(found)} columns named {key}: {_AMBIGUOUS}"
                within = orjson.dumps(".".join(way)).decode()
                return f"the file's {within} column has {len(found)} fields named {key}: {_AMBIGUOUS}"
            if not found:
                break
            way.append(part)
            kind = found[0]
            level = [(f.name, f.type) for f in kind] if pa.types.is_struct(kind) else []
    return None


_BIG = float(1 << 64)


def holds_big_number(obj: Any) -> bool:
    """Whether orjson may have read an integer beyond 64 bits as a float (it does, silently):
    a float of magnitude 2**64 or more anywhere in the record. Such a line is read again by the
    standard library's parser, which keeps the integer exact."""
    if type(obj) is dict:
        values: Any = obj.values()
    elif type(obj) is list:
        values = obj
    else:
        return type(obj) is float and not -_BIG < obj < _BIG
    for v in values:
        t = type(v)
        if t is float:
            if not -_BIG < v < _BIG:
                return True
        elif (t is dict or t is list) and holds_big_number(v):
            return True
    return False


def _parse_big_numbers(text: str) -> Any:
    """The standard library's reading of a line orjson refused, when it is valid JSON (integers
    of any size; NaN and Infinity, which JSON does not have, still refused); None otherwise.

    JSON may also escape a lone UTF-16 surrogate (``"\\ud800"``: half of an emoji cut by a
    truncating exporter), which orjson refuses and no UTF-8 text can hold. Such a surrogate is
    read as U+FFFD, the replacement character, so the text can be scored and the record written;
    a kept line is still copied as it was read."""
    import json

    def refuse(name: str) -> Any:
        raise ValueError(name)

    try:
        obj = json.loads(text, parse_constant=refuse)
    except (ValueError, RecursionError):
        return None
    if _SURROGATE_ESCAPE.search(text):
        obj = _without_surrogates(obj)
    return obj


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE_ESCAPE_BYTES = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _without_surrogates(obj: Any) -> Any:
    """``obj`` with every lone surrogate in its strings (keys too) replaced by U+FFFD. The JSON
    parser has already joined escaped pairs into one character, so any left are lone. The
    parser's fresh dicts and lists are changed in place, walked with a stack of their own: a
    record nested as deep as the parser allows must not run out of Python's stack here."""
    def fix(value: Any) -> Any:
        return _SURROGATE.sub("\ufffd", value) if type(value) is str else value

    if type(obj) is not dict and type(obj) is not list:
        return fix(obj)
    stack = [obj]
    while stack:
        node = stack.pop()
        if type(node) is dict:
            items = [(fix(k), fix(v)) for k, v in node.items()]
            node.clear()
            node.update(items)  # keys in their order
            values = [v for _, v in items]
        else:
            node[:] = [fix(v) for v in node]
            values = node
        stack.extend(v for v in values if type(v) is dict or type(v) is list)
    return obj


def dump_json_line(obj: Any) -> bytes:
    """A record as one JSON line: orjson, or (for integers beyond 64 bits) ``_encode_exact``.
    Never ``NaN`` or ``Infinity``, which are not JSON: a float that is not finite is written as
    null, as orjson writes it."""
    try:
        return orjson.dumps(obj)
    except TypeError:
        return _encode_exact(obj).encode("utf-8")


def json_line_with(raw: bytes, obj: dict[str, Any], name: str, value: Any) -> bytes:
    """The JSON object line ``raw`` (``obj`` as read from it) with one member added at its end
    (or, where it has one already, set in its place): how a written record gets its
    ``synthfilter`` object.

    The record's own text is written back as read: parsed and written again, a number can
    change (orjson reads ``1e400`` as infinity, ``5e-400`` as 0.0, a long decimal rounded to a
    float), and the output must hold the record as it came. So the member is added to the line's
    bytes; only a line that names it already, or escapes a lone surrogate (no UTF-8 text can
    hold one: it is written as U+FFFD, as it is read), is parsed again and written member by
    member with each number's own text (``_encode_exact``).
    """
    body = raw[3:] if raw.startswith(_BOM) else raw
    body = body.strip()  # no CR, and no space after the closing brace
    if name not in obj and not _SURROGATE_ESCAPE_BYTES.search(body):
        sep = b"," if obj else b""
        return body[:-1] + sep + orjson.dumps(name) + b":" + dump_json_line(value) + b"}"
    record = _parse_exact(body.decode("utf-8"))
    record[name] = value
    return _encode_exact(record).encode("utf-8")


class _Verbatim(str):
    """JSON text written as it is: a number as it was read (``_parse_exact``), or punctuation."""


def _parse_exact(text: str) -> Any:
    """A JSON line's value with each number kept as its text (``_Verbatim``) and lone
    surrogates as U+FFFD; ``text`` is valid JSON (it was read once already)."""
    import json

    obj = json.loads(text, parse_float=_Verbatim, parse_int=_Verbatim)
    return _without_surrogates(obj) if _SURROGATE_ESCAPE.search(text) else obj


def _encode_exact(obj: Any) -> str:
    """``obj`` as compact JSON with the standard library's encoder, numbers read by
    ``_parse_exact`` as their text, integers of any size, a float that is not finite as null.
    Walked with a stack of its own: a record nested as deep as the parser allows must not run
    out of Python's stack here."""
    import json
    import math

    encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    out: list[str] = []
    todo: list[Any] = [obj]
    while todo:
        value = todo.pop()
        kind = type(value)
        if kind is _Verbatim:
            out.append(value)
        elif kind is dict:
            todo.append(_Verbatim("}"))
            items = list(value.items())
            for i in range(len(items) - 1, -1, -1):
                todo.append(items[i][1])
                todo.append(_Verbatim(("," if i else "") + encode(str(items[i][0])) + ":"))
            todo.append(_Verbatim("{"))
        elif kind is list:
            todo.append(_Verbatim("]"))
            for i in range(len(value) - 1, -1, -1):
                todo.append(value[i])
                if i:
                    todo.append(_Verbatim(","))
            todo.append(_Verbatim("["))
        elif isinstance(value, float) and not math.isfinite(value):
            out.append("null")
        else:
            out.append(encode(value))
    return "".join(out)


def _first_line(e: BaseException) -> str:
    """The first line of an exception's message, without control characters (libraries quote raw bytes)."""
    text = str(e).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in line).strip() or type(e).__name__


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


# -- writing ----------------------------------------------------------------------------------


def tmp_path_for(final: Path) -> Path:
    return final.with_name(f".{final.name}.tmp-{os.getpid()}")


class AtomicJsonlWriter:
    """Write JSONL lines (optionally .gz/.zst) to a temp file; ``commit`` renames it into place.

    Compression is deterministic (gzip mtime 0 and no file name; fixed zstd level) so the same
    records always give the same bytes. The rename makes a killed run leave either the whole
    file or none of it; there is no fsync (it protects against power loss, not interruption,
    and costs more than the rest of the write).
    """

    def __init__(self, final: Path, compression: str | None):
        self.final = final
        self.tmp = tmp_path_for(final)
        with _writing(final):
            final.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.tmp, "wb")
        self._stream: Any
        if compression == "gz":
            self._stream = gzip.GzipFile(filename="", fileobj=self._file, mode="wb", mtime=0, compresslevel=6)
        elif compression == "zst":
            # With a content checksum, as the zstd tool writes: a reader (ours too) can then tell
            # a damaged frame from a good one instead of trusting what it decodes to.
            self._stream = zstandard.ZstdCompressor(level=3, write_checksum=True).stream_writer(self._file, closefd=False)
        else:
            self._stream = None
        self._buf: list[bytes] = []
        self._buffered = 0
        self.count = 0

    def write_line(self, line: bytes) -> None:
        # A copy of the line's own size: the bytes orjson returns keep the room it grew into
        # (4 KB for a short line, 32 KB for a 3 KB one), ten times the data in a buffer of them.
        self._buf.append(line + b"\n")
        self._buffered += len(line) + 1
        self.count += 1
        if self._buffered >= _CHUNK:
            self._flush()

    def write_lines(self, lines: Sequence[bytes]) -> None:
        """``write_line`` for each of ``lines``, in one go."""
        if not lines:
            return
        data = b"\n".join(lines)
        self._buf.append(data)
        self._buf.append(b"\n")
        self._buffered += len(data) + 1
        self.count += len(lines)
        if self._buffered >= _CHUNK:
            self._flush()

    def _flush(self) -> None:
        data = b"".join(self._buf)
        self._buf.clear()
        self._buffered = 0
        with _writing(self.final):
            (self._stream or self._file).write(data)

    def commit(self) -> None:
        self._flush()
        with _writing(self.final):
            if self._stream is not None:
                self._stream.close()
            self._file.close()
            os.replace(self.tmp, self.final)

    def abort(self) -> None:
        try:
            self._file.close()
        except OSError:
            pass  # e.g. no space for the last buffered bytes: the file is removed all the same
        finally:
            self.tmp.unlink(missing_ok=True)


class AtomicParquetWriter:
    """Write Arrow record batches to a Parquet temp file; ``commit`` renames it into place."""

    def __init__(self, final: Path, schema: Any):
        import pyarrow.parquet as pq

        self.final = final
        self.tmp = tmp_path_for(final)
        with _writing(final):
            final.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(self.tmp, schema)
        self.count = 0

    def write_table(self, table: Any) -> None:
        if table.num_rows:
            with _writing(self.final):
                self._writer.write_table(table)
            self.count += table.num_rows

    def commit(self) -> None:
        with _writing(self.final):
            self._writer.close()
            os.replace(self.tmp, self.final)

    def abort(self) -> None:
        try:
            self._writer.close()
        except OSError:
            pass
        finally:
            self.tmp.unlink(missing_ok=True)


class _writing:
    """Turn an OSError that means "the output cannot take this" into an ``OutputError`` naming ``final``."""

    def __init__(self, final: Path):
        self.final = final

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, e: BaseException | None, tb: Any) -> None:
        if isinstance(e, OSError) and output_error(e, self.final) is not None:
            raise OutputError(self.final, e.errno) from None  # type: ignore[arg-type]


@contextmanager
def atomic_open(final: Path) -> Iterator[IO[bytes]]:
    """A binary file to write ``final`` through: it is written under a temporary name and renamed
    into place when the block ends; on any failure the temporary file is removed and ``final`` is
    untouched. A disk that refuses the write raises ``OutputError`` naming ``final``."""
    tmp = tmp_path_for(final)
    try:
        with _writing(final):
            final.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                yield f
            os.replace(tmp, final)
    except BaseException:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise


def atomic_write_bytes(final: Path, data: bytes) -> None:
    """Write ``data`` to ``final`` atomically (``atomic_open``)."""
    with atomic_open(final) as f:
        f.write(data)
