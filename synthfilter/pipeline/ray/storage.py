"""Where the Ray engine's files live: a store on a local disk or any pyarrow/fsspec filesystem,
the input shards found there, and the score stage's annotation files read back in chunks."""

from __future__ import annotations

import contextlib
import fnmatch
import os
import pickle
import re
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from synthfilter.io.shards import InputError, Shard, SUPPORTED, atomic_write_bytes, discover_shards, shard_format
from synthfilter.pipeline.run import UsageError
from synthfilter.pipeline.stages import KEPT, STATUS_OK, WorkPaths, reason_of_status

# Records per annotation chunk read from the work files (signatures: 512 bytes a record).
CHUNK_ROWS = 65_536

_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]+://")


def is_uri(location: str) -> bool:
    return bool(_URI.match(location))


def _filesystem(uri: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path) for a URI: pyarrow's own filesystems, else fsspec's."""
    import pyarrow.fs as pafs

    import pyarrow as pa

    try:
        return pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
        pass  # a scheme pyarrow does not know: try fsspec
    try:
        import fsspec
    except ImportError:
        raise UsageError(f"{uri}: pyarrow does not know this filesystem, and fsspec is not installed") from None
    try:
        fs, path = fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as e:
        raise UsageError(f"{uri}: no filesystem for this URI ({e})") from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


class Store:
    """A directory on a local disk or on any filesystem pyarrow or fsspec reach (s3://, gs://, ...).

    Picklable (only the location travels); paths inside are POSIX, relative to the root.
    """

    def __init__(self, root: str):
        # Local paths absolute: Ray workers do not run in the driver's working directory.
        self.root = root.rstrip("/") if is_uri(root) else os.path.abspath(root)
        self._fs: Any = None
        self._base: str | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["root"])  # type: ignore[misc]

    @property
    def local(self) -> Path | None:
        """The directory as a local path, or None on a remote filesystem."""
        return None if is_uri(self.root) else Path(self.root)

    def _resolve(self) -> tuple[Any, str]:
        if self._fs is None:
            if self.local is not None:
                import pyarrow.fs as pafs

                self._fs, self._base = pafs.LocalFileSystem(), self.local.resolve().as_posix()
            else:
                self._fs, self._base = _filesystem(self.root)
                self._base = self._base.rstrip("/")
        return self._fs, self._base  # type: ignore[return-value]

    @property
    def fs(self) -> Any:
        return self._resolve()[0]

    def path(self, rel: str = "") -> str:
        base = self._resolve()[1]
        return f"{base}/{rel}" if rel else base

    def uri(self, rel: str = "") -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def sub(self, rel: str) -> "Store":
        return Store(str(Path(self.root) / rel) if self.local is not None else f"{self.root}/{rel}")

    def exists(self, rel: str = "") -> bool:
        import pyarrow.fs as pafs

        return self.fs.get_file_info(self.path(rel)).type != pafs.FileType.NotFound

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open_input_stream(self.path(rel)) as f:
            return f.read()

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Whole file or nothing: a temporary name, then a rename (an object store PUT is atomic)."""
        local = self.local
        if local is not None:
            atomic_write_bytes(local / rel, data)
            return
        target = self.path(rel)
        self.fs.create_dir(str(PurePosixPath(target).parent), recursive=True)
        with self.fs.open_output_stream(target) as f:
            f.write(data)

    def upload(self, local_file: Path, rel: str) -> None:
        local = self.local
        if local is not None:
            dest = local / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
            shutil.copyfile(local_file, tmp)
            os.replace(tmp, dest)
            return
        import pyarrow.fs as pafs

        target = self.path(rel)
        self.fs.create_dir(str(PurePosixPath(target).parent), recursive=True)
        pafs.copy_files(str(local_file), target, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self.fs)

    def download(self, rel: str, local_file: Path) -> None:
        import pyarrow.fs as pafs

        local_file.parent.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(self.path(rel), str(local_file), source_filesystem=self.fs,
                        destination_filesystem=pafs.LocalFileSystem())

    def open_input(self, rel: str) -> Any:
        return self.fs.open_input_file(self.path(rel))

    def delete(self, rel: str = "") -> None:
        import pyarrow.fs as pafs

        info = self.fs.get_file_info(self.path(rel))
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(self.path(rel))
        elif info.type == pafs.FileType.File:
            self.fs.delete_file(self.path(rel))

    def entries(self) -> list[str]:
        """Names directly under the root (empty if it does not exist)."""
        import pyarrow.fs as pafs

        if not self.exists():
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(self.path(), recursive=False))
        return sorted(PurePosixPath(i.path).name for i in infos)


@dataclass(frozen=True)
class ShardSource:
    """One input shard; ``uri`` is set for a shard on a remote filesystem (``shard.path`` is then
    only a placeholder: workers copy the file to local scratch space and read it there)."""

    shard: Shard
    uri: str | None = None
    size: int = 0
    mtime_ns: int = 0

    @property
    def location(self) -> str:
        return self.uri or str(self.shard.path)


def discover_sources(inputs: Sequence[str | os.PathLike[str]]) -> tuple[list[ShardSource], list[str]]:
    """Local inputs exactly as the local engine finds them; URIs listed through their filesystem."""
    locations = [os.fspath(i) for i in inputs]
    local = [loc for loc in locations if not is_uri(loc)]
    remote = [loc for loc in locations if is_uri(loc)]
    sources: list[ShardSource] = []
    ignored: list[str] = []
    if local or not remote:
        shards, ignored = discover_shards(local)
        sources = [ShardSource(sh) for sh in shards]
    for uri in remote:
        sources.extend(_discover_remote(uri, ignored))
    if not sources:
        raise InputError(", ".join(locations), f"no input shards found ({', '.join(SUPPORTED)})")
    by_rel: dict[str, str] = {}
    for src in sources:
        if src.shard.rel in by_rel and by_rel[src.shard.rel] != src.location:
            raise InputError(src.location, f"maps to the same output path {src.shard.rel!r} as {by_rel[src.shard.rel]}; "
                                           "pass their common parent directory instead")
        by_rel[src.shard.rel] = src.location
    unique = {src.location: src for src in sources}
    return sorted(unique.values(), key=lambda s: s.shard.rel), ignored


def _discover_remote(uri: str, ignored: list[str]) -> list[ShardSource]:
    """A file, a directory (searched recursively) or a glob on a remote filesystem; outputs
    mirror paths relative to the directory or to the glob's fixed prefix, as for local inputs."""
    import pyarrow.fs as pafs

    glob_at = next((i for i, c in enumerate(uri) if c in "*?["), None)
    root_uri = uri if glob_at is None else uri[: uri.rfind("/", 0, glob_at)]
    fs, root = _filesystem(root_uri)
    root = root.rstrip("/")
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise InputError(uri, "path does not exist")
    if info.type == pafs.FileType.File:
        fmt = shard_format(Path(root))
        if fmt is None:
            raise InputError(uri, f"unknown extension; supported: {', '.join(SUPPORTED)}")
        name = PurePosixPath(root).name
        shard = Shard(path=Path(name), rel=name, format=fmt[0], compression=fmt[1])
        return [ShardSource(shard, uri=uri, size=int(info.size or 0), mtime_ns=int(info.mtime_ns or 0))]
    found: list[ShardSource] = []
    listing = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    for i in sorted((x for x in listing if x.type == pafs.FileType.File), key=lambda x: x.path):
        rel = PurePosixPath(i.path).relative_to(root).as_posix()
        full = f"{root_uri.rstrip('/')}/{rel}"
        if glob_at is not None and not fnmatch.fnmatchcase(full, uri):
            continue
        fmt = shard_format(Path(i.path))
        if fmt is None:
            if glob_at is not None:
                raise InputError(full, f"unknown extension; supported: {', '.join(SUPPORTED)}")
            if not PurePosixPath(i.path).name.startswith("."):
                ignored.append(full)
            continue
        shard = Shard(path=Path(PurePosixPath(i.path).name), rel=rel, format=fmt[0], compression=fmt[1])
        found.append(ShardSource(shard, uri=full, size=int(i.size or 0), mtime_ns=int(i.mtime_ns or 0)))
    if not found and glob_at is not None:
        raise InputError(uri, "glob matched no files")
    return found


@contextlib.contextmanager
def local_shard(src: ShardSource, scratch: Path) -> Iterator[Shard]:
    """The shard as a local file: itself, or a copy of a remote one in ``scratch``."""
    if src.uri is None:
        yield src.shard
        return
    fs, path = _filesystem(src.uri)
    import pyarrow.fs as pafs

    local = scratch / "input" / PurePosixPath(src.shard.rel).name
    local.parent.mkdir(parents=True, exist_ok=True)
    pafs.copy_files(path, str(local), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    yield Shard(path=local, rel=src.shard.rel, format=src.shard.format, compression=src.shard.compression)


def shard_dir(shard: Shard) -> str:
    """The shard's folder under the work directory, relative to it (as WorkPaths lays it out)."""
    return WorkPaths.for_shard(Path("."), shard).root.as_posix()


# -- annotations as Ray datasets ------------------------------------------------------------------


# "language": only in the annotations of a run that identifies languages (cfg.identifies_language).
ANN_TABLE_COLUMNS = ("id", "status", "hash_hi", "hash_lo", "score", "provenance", "uniform", "length", "language")


@dataclass(frozen=True)
class AnnotationPart:
    """One shard's annotation files: rows ``offset .. offset + n`` of the global order."""

    folder: str
    offset: int
    n: int
    bands: int
    num_perm: int


class FileAnnotations:
    """The decide stage's input on the engine's work files: one Ray task per shard reads its
    annotations in chunks (only the columns a pass needs), so no pass holds a whole corpus.

    Columns: those of ``ann.arrow``, ``bands`` and ``sigs`` (matrices), and ``reason`` (the
    record's decision, once the decide stage has saved the shard's ``overrides.arrow``).
    """

    def __init__(self, work: Store, parts: Sequence[AnnotationPart]):
        self.work = work
        self.parts = [p for p in parts if p.n > 0]
        self.total = sum(p.n for p in parts)

    def map_chunks(self, fn: Callable[..., dict[str, np.ndarray] | None], columns: Sequence[str],
                   **fn_kwargs: Any) -> Any:
        """A dataset of ``fn(chunk, **fn_kwargs)`` over every chunk of annotations."""
        import ray

        items = [{"part": pickle.dumps(p)} for p in self.parts] or [{"part": b""}]
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        return ds.map_batches(_map_file_chunks, batch_size=1, fn_kwargs={
            "work": self.work, "columns": tuple(columns), "fn": fn, "fn_kwargs": fn_kwargs,
        })

    def lookup(self, requests: Any, columns: Sequence[str]) -> Any:
        """``requests`` (a dataset with ``gidx``) with the asked-for columns of each record:
        rows go to the task of their shard, which reads only the chunks they fall in."""
        from synthfilter.pipeline.ray.session import grouped

        offsets = np.array([p.offset for p in self.parts], np.int64)
        tagged = requests.map_batches(_tag_part, batch_format="numpy", batch_size=None, fn_kwargs={"offsets": offsets})
        return grouped(tagged, _lookup_part, key="shard", work=self.work, parts=self.parts, columns=tuple(columns))


def _tag_part(batch: dict[str, np.ndarray], offsets: np.ndarray) -> dict[str, np.ndarray]:
    return {**batch, "shard": np.searchsorted(offsets, batch["gidx"], side="right") - 1}


def _lookup_part(batch: dict[str, np.ndarray], work: Store, parts: Sequence[AnnotationPart],
                 columns: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    part = parts[int(batch["shard"][0])]
    requests = {k: v for k, v in batch.items() if k != "shard"}
    order = np.argsort(requests["gidx"], kind="stable")
    requests = {k: v[order] for k, v in requests.items()}
    found = [attach(requests, chunk, columns)
             for chunk in read_chunks(work, part, columns, only=np.unique(requests["gidx"]))]
    found = [f for f in found if f is not None]
    if not found:
        return None
    return {k: np.concatenate([f[k] for f in found]) for k in found[0]}


def attach(requests: dict[str, np.ndarray], chunk: dict[str, np.ndarray],
           columns: Sequence[str]) -> dict[str, np.ndarray] | None:
    """The rows of ``requests`` (sorted by ``gidx``; a record may be asked for more than once)
    whose record is in ``chunk``, with the chunk's ``columns`` of that record added."""
    g = chunk["gidx"]
    if not len(g) or not len(requests["gidx"]):
        return None
    order = np.argsort(g, kind="stable")
    sorted_g = g[order]
    want = requests["gidx"]
    pos = np.minimum(np.searchsorted(sorted_g, want), len(g) - 1)
    hit = np.flatnonzero(sorted_g[pos] == want)
    if not len(hit):
        return None
    at = order[pos[hit]]
    out = {k: v[hit] for k, v in requests.items()}
    for c in columns:
        out[c] = chunk[c][at]
    return out


def _map_file_chunks(batch: dict[str, np.ndarray], work: Store, columns: tuple[str, ...],
                     fn: Callable[..., Any], fn_kwargs: dict[str, Any]) -> Iterator[dict[str, np.ndarray]]:
    for blob in batch["part"]:
        if not blob:
            continue
        for chunk in read_chunks(work, pickle.loads(blob), columns):
            out = fn(chunk, **fn_kwargs)
            if out is not None and len(next(iter(out.values()))):
                yield out


def read_overrides(work: Store, folder: str) -> Any:
    """A shard's non-kept decisions (row, reason, duplicate_of, posterior), or None."""
    import pyarrow.ipc as ipc

    if not work.exists(f"{folder}/overrides.arrow"):
        return None
    with work.open_input(f"{folder}/overrides.arrow") as f:
        return ipc.open_file(f).read_all()


def read_chunks(work: Store, part: AnnotationPart, columns: Sequence[str], chunk_rows: int | None = None,
                only: np.ndarray | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Chunks of one shard's annotations: ``gidx`` (global index) plus the asked-for columns;
    with ``only`` (sorted global indices), just the chunks that hold one of them."""
    import pyarrow.ipc as ipc

    chunk_rows = chunk_rows or CHUNK_ROWS
    table_cols = [c for c in columns if c in ANN_TABLE_COLUMNS]
    if "reason" in columns and "status" not in table_cols:
        table_cols.append("status")
    table = None
    if table_cols:
        with work.open_input(f"{part.folder}/ann.arrow") as f:
            table = ipc.open_file(f).read_all().select(table_cols)
    overrides = read_overrides(work, part.folder) if "reason" in columns else None
    o_rows = overrides.column("row").to_numpy() if overrides is not None else np.zeros(0, np.int64)
    o_reason = overrides.column("reason").to_numpy() if overrides is not None else np.zeros(0, np.int8)
    matrices = {name: (fname, width, dtype) for name, fname, width, dtype in (
        ("bands", "bands.u64", part.bands, np.uint64), ("sigs", "sigs.u32", part.num_perm, np.uint32),
    ) if name in columns}
    handles = {name: work.open_input(f"{part.folder}/{fname}") for name, (fname, _, _) in matrices.items()}
    try:
        for lo in range(0, part.n, chunk_rows):
            hi = min(part.n, lo + chunk_rows)
            if only is not None and np.searchsorted(only, part.offset + lo) == np.searchsorted(only, part.offset + hi):
                continue
            chunk: dict[str, np.ndarray] = {"gidx": np.arange(part.offset + lo, part.offset + hi, dtype=np.int64)}
            if table is not None:
                sl = table.slice(lo, hi - lo)
                for c in table_cols:
                    col = sl.column(c)
                    chunk[c] = np.asarray(col.to_pylist(), dtype=object) if c == "id" else col.to_numpy()
            if "reason" in columns:
                reason = np.where(chunk["status"] == STATUS_OK, KEPT, reason_of_status(chunk["status"])).astype(np.int8)
                a, b = np.searchsorted(o_rows, [lo, hi])
                reason[o_rows[a:b] - lo] = o_reason[a:b]
                chunk["reason"] = reason
            for name, (_, width, dtype) in matrices.items():
                itemsize = np.dtype(dtype).itemsize
                raw = handles[name].read_at((hi - lo) * width * itemsize, lo * width * itemsize)
                chunk[name] = np.frombuffer(raw, dtype=dtype).reshape(hi - lo, width)
            yield chunk
    finally:
        for h in handles.values():
            h.close()
