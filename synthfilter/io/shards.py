"""Find, read and write shards: JSONL (plain, .gz, .zst) and Parquet, with atomic writes.

Readers never raise on a bad record: they yield it with an error message, and the caller
decides (fail with a one-line error, or quarantine). They do raise ``InputError`` for
problems that concern the whole file (not found, unreadable, truncated compression, ...).
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import io
import os
import zlib
from dataclasses import dataclass, field
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
        if _is_glob(s) and not Path(s).exists():
            matches = sorted(glob.glob(s, recursive=True))
            if not matches:
                raise InputError(s, "glob matched no files")
            root = _glob_root(s)
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
        fmt, comp = shard_format(p)  # type: ignore[misc]
        shards.append(Shard(path=real, rel=rel, format=fmt, compression=comp))
    if not shards:
        raise InputError(", ".join(str(i) for i in inputs), f"no input shards found ({', '.join(SUPPORTED)})")
    shards.sort(key=lambda sh: sh.rel)
    return shards, ignored


def _inside(p: Path, root: Path) -> bool:
    try:
        p.relative_to(root)
        return True
    except ValueError:
        return False


def _walk(directory: Path, root: Path, ignored: list[str]) -> list[tuple[Path, str]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if shard_format(p) is None:
                if not name.startswith("."):
                    ignored.append(str(p))
                continue
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


class _ZstdRaw(io.RawIOBase):
    """Streaming zstd decompression that notices a truncated final frame (zstandard's own
    stream reader returns a silent short read there)."""

    def __init__(self, f: IO[bytes], path: Path):
        self._f = f
        self._path = path
        self._dctx = zstandard.ZstdDecompressor()
        self._obj = self._dctx.decompressobj()
        self._pending = b""
        self._in_frame = False
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._pending and not self._eof:
            chunk = self._f.read(_CHUNK)
            if not chunk:
                if self._in_frame:
                    raise InputError(self._path, "truncated .zst file (the last frame is incomplete); re-copy or re-compress it")
                self._eof = True
                break
            try:
                self._pending = self._feed(chunk)
            except zstandard.ZstdError as e:
                raise InputError(self._path, f"corrupt .zst data ({e})") from None
        n = min(len(b), len(self._pending))
        b[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def _feed(self, chunk: bytes) -> bytes:
        out = []
        while chunk:
            self._in_frame = True
            out.append(self._obj.decompress(chunk))
            if self._obj.eof:
                chunk = self._obj.unused_data
                self._obj = self._dctx.decompressobj()
                self._in_frame = False
            else:
                chunk = b""
        return b"".join(out)


@dataclass
class RawRecord:
    """One record as read: where it is, its bytes/values, the parsed object, or why it is bad."""

    index: int  # 0-based ordinal among the shard's records
    line: int  # 1-based line (JSONL) or row (Parquet) number
    raw: bytes | None  # JSONL: the line without its newline
    obj: Any  # the parsed value (a dict for a good record)
    error: str | None  # set when the record is malformed
    offset: int = 0  # JSONL: byte offset of the line in the decompressed stream


@dataclass
class RecordBatch:
    """Consecutive records of a shard as parallel lists (one entry per record, no per-record
    objects): what ``RawRecord`` holds, column by column. ``start`` is the first record's index."""

    start: int
    lines: list[int] = field(default_factory=list)
    raw: list[bytes | None] = field(default_factory=list)
    objs: list[Any] = field(default_factory=list)  # None where malformed or not parsed
    errors: list[str | None] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)

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
            yield RawRecord(self.start + j, line, self.raw[j], self.objs[j], self.errors[j], self.offsets[j])


# Bytes that ``bytes.strip()`` removes: a line starting with any other byte is not blank.
_ASCII_WHITESPACE = frozenset(b" \t\n\r\x0b\x0c")


class ShardReader:
    """Iterate the records of one shard. ``sha256``/``bytes_read`` are final after iteration."""

    def __init__(self, shard: Shard, max_line_bytes: int = 50 * 1024 * 1024, batch_rows: int = 4096):
        self.shard = shard
        self.max_line_bytes = max_line_bytes
        self.batch_rows = batch_rows
        self.blank_lines = 0
        self.sha256 = ""
        self.bytes_read = 0
        self.parquet_schema: Any = None

    def __iter__(self) -> Iterator[RawRecord]:
        for batch in self.batches():
            yield from batch.records()

    def batches(self, parse: bool = True, raw: bool = True) -> Iterator[RecordBatch]:
        """The shard's records in batches of ``batch_rows``.

        JSONL only: with ``parse=False`` lines are not parsed: ``objs`` is all None and only
        problems found without parsing (an over-long line) set ``errors``; the caller parses the
        lines it needs with ``parse_json_line``. With ``raw=False`` the lines are not kept
        (``raw`` is all None), which saves memory traffic when only the parsed values are used.
        On a whole-file ``InputError`` the records read before it come first, as a last (short)
        batch.
        """
        if self.shard.format == "parquet":
            yield from self._parquet_batches()
        else:
            yield from self._jsonl_batches(parse, raw)

    # JSONL ----------------------------------------------------------------------------------

    def _open_jsonl(self) -> tuple[_HashingRaw, IO[bytes]]:
        path = self.shard.path
        try:
            f = open(path, "rb")
        except OSError as e:
            raise InputError(path, f"cannot open: {e.strerror}") from None
        hraw = _HashingRaw(f)
        stream: IO[bytes]
        if self.shard.compression == "gz":
            # The outer BufferedReader gives a C-level readline over GzipFile's Python one.
            stream = io.BufferedReader(gzip.GzipFile(fileobj=io.BufferedReader(hraw, _CHUNK), mode="rb"), _CHUNK)  # type: ignore[arg-type]
        elif self.shard.compression == "zst":
            stream = io.BufferedReader(_ZstdRaw(io.BufferedReader(hraw, _CHUNK), path), _CHUNK)
        else:
            stream = io.BufferedReader(hraw, _CHUNK)
        return hraw, stream

    def _jsonl_batches(self, parse: bool, keep_raw: bool) -> Iterator[RecordBatch]:
        # One tight loop per line (this is the hot path of both the score and write stages):
        # locals for everything it calls, and records appended to the batch's lists.
        path = self.shard.path
        hraw, stream = self._open_jsonl()
        readline = stream.readline
        loads, decode_error = orjson.loads, orjson.JSONDecodeError
        limit = self.max_line_bytes
        rows = self.batch_rows
        line_no = 0
        offset = 0
        batch = RecordBatch(0)
        add_line, add_raw, add_obj = batch.lines.append, batch.raw.append, batch.objs.append
        add_error, add_offset = batch.errors.append, batch.offsets.append
        try:
            while True:
                try:
                    line = readline(limit + 1)
                except EOFError:
                    raise InputError(
                        path, "truncated .gz file (ended before the end-of-stream marker); re-copy or re-compress it", line_no + 1
                    ) from None
                except (OSError, zlib.error) as e:
                    raise InputError(path, f"corrupt compressed data ({e})", line_no + 1) from None
                if not line:
                    break
                line_no += 1
                start = offset
                offset += len(line)
                if len(line) > limit and not line.endswith(b"\n"):
                    size = len(line) + self._skip_rest_of_line(stream)
                    offset = start + size
                    batch.append(
                        line_no, line[:1024], None, f"line is {size:,} bytes, over the {limit:,}-byte limit (max_line_bytes)", start,
                    )
                else:
                    body = line.rstrip(b"\r\n")
                    if not body or (body[0] in _ASCII_WHITESPACE and not body.strip()):
                        self.blank_lines += 1
                        continue
                    obj = error = None
                    if parse:
                        try:
                            obj = loads(body)
                        except decode_error:
                            pass
                        if type(obj) is not dict:
                            obj, error = parse_json_line(body)
                    add_line(line_no)
                    add_raw(body if keep_raw else None)
                    add_obj(obj)
                    add_error(error)
                    add_offset(start)
                if len(batch.lines) >= rows:
                    yield batch
                    batch = RecordBatch(batch.start + len(batch.lines))
                    add_line, add_raw, add_obj = batch.lines.append, batch.raw.append, batch.objs.append
                    add_error, add_offset = batch.errors.append, batch.offsets.append
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
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = self.shard.path
        self.sha256, self.bytes_read = file_sha256(path), path.stat().st_size
        try:
            pf = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as e:
            raise InputError(path, f"not a readable Parquet file ({_first_line(e)})") from None
        self.parquet_schema = pf.schema_arrow
        index = 0
        try:
            for pa_batch in pf.iter_batches(batch_size=self.batch_rows):
                rows = pa_batch.to_pylist()
                n = len(rows)
                yield RecordBatch(index, list(range(index + 1, index + n + 1)), [None] * n, rows, [None] * n, [0] * n)
                index += n
        except (pa.ArrowException, OSError) as e:
            raise InputError(path, f"corrupt Parquet data ({_first_line(e)})", index + 1) from None


def parse_json_line(body: bytes) -> tuple[Any, str | None]:
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as ue:
            return None, f"invalid UTF-8 (byte 0x{body[ue.start]:02x} at column {ue.start + 1})"
        return None, f"malformed JSON ({_first_line(e)})"
    if not isinstance(obj, dict):
        return None, f"expected a JSON object, got {type(obj).__name__ if obj is not None else 'null'}"
    return obj, None


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


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
        final.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.tmp, "wb")
        self._stream: Any
        if compression == "gz":
            self._stream = gzip.GzipFile(filename="", fileobj=self._file, mode="wb", mtime=0, compresslevel=6)
        elif compression == "zst":
            self._stream = zstandard.ZstdCompressor(level=3).stream_writer(self._file, closefd=False)
        else:
            self._stream = None
        self._buf: list[bytes] = []
        self._buffered = 0
        self.count = 0

    def write_line(self, line: bytes) -> None:
        self._buf.append(line)
        self._buf.append(b"\n")
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
        (self._stream or self._file).write(data)

    def commit(self) -> None:
        self._flush()
        if self._stream is not None:
            self._stream.close() if not isinstance(self._stream, gzip.GzipFile) else self._stream.close()
        self._file.close()
        os.replace(self.tmp, self.final)

    def abort(self) -> None:
        try:
            self._file.close()
        finally:
            self.tmp.unlink(missing_ok=True)


class AtomicParquetWriter:
    """Write Arrow record batches to a Parquet temp file; ``commit`` renames it into place."""

    def __init__(self, final: Path, schema: Any):
        import pyarrow.parquet as pq

        self.final = final
        self.tmp = tmp_path_for(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        self._writer = pq.ParquetWriter(self.tmp, schema)
        self.count = 0

    def write_table(self, table: Any) -> None:
        if table.num_rows:
            self._writer.write_table(table)
            self.count += table.num_rows

    def commit(self) -> None:
        self._writer.close()
        os.replace(self.tmp, self.final)

    def abort(self) -> None:
        try:
            self._writer.close()
        finally:
            self.tmp.unlink(missing_ok=True)


def atomic_write_bytes(final: Path, data: bytes) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(final)
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, final)
