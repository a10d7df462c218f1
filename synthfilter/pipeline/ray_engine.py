"""The local engine's stages on Ray Data, from one machine to a cluster, with the same outputs.

Score and write are Ray Data ``map_batches`` over the local engine's own ``score_shard`` and
``write_shard`` (an actor pool for scoring, so the detector loads once per worker). Decide runs
as Ray shuffles over the per-shard annotation files: exact-hash groups and LSH band buckets are
found on the workers, candidate pairs are verified there, and the driver keeps only the
duplicate edges and their components, never one value per record (the one exception, a
target ratio, is described at ``_decide_target_ratio``). Decisions are identical to
``synthfilter.pipeline.run``: the same rules, replayed in the same order.

Ray is optional: it is imported only here and in ``synthfilter.ray``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fnmatch
import json
import logging
import math
import os
import pickle
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from synthfilter import __version__
from synthfilter.config import Config
from synthfilter.io.shards import InputError, Shard, SUPPORTED, atomic_write_bytes, discover_shards, shard_format
from synthfilter.pipeline.run import (
    OUTPUT_ENTRIES,
    WORK_DIR,
    Progress,
    RunResult,
    UsageError,
    build_manifest,
    build_report,
    check_conservation,
    check_out_dir,
    config_fingerprint,
    model_info,
    prepare_out_dir,
)
from synthfilter.pipeline.stages import (
    DOWNSAMPLED,
    EXACT_DUP,
    KEPT,
    MALFORMED,
    NEAR_DUP,
    REASONS,
    STATUS_OK,
    Annotations,
    ConservationError,
    Decisions,
    Scorer,
    SurvivorCounts,
    WorkPaths,
    decide_synthetic,
    estimate_section,
    merge_labels,
    score_shard,
    survivors,
    synthetic_without_estimate,
    write_shard,
)
from synthfilter.ratio import SCORE_CLIP, HumanLossError, logit
from synthfilter.reliability import LabelledScores, cut_counts
# The estimator's binning (ratio._Bins.build): distinct values up to MAX_SCORE_BINS, else logit bins.
from synthfilter.ratio import MAX_BINS as MAX_SCORE_BINS

log = logging.getLogger("synthfilter")

RAY_INSTALL_HINT = 'Ray is not installed; install the extra with: pip install "synthfilter[ray]"'

# Rows one shuffle partition holds (about 25-40 bytes each, sorted in place on a worker).
ROWS_PER_PARTITION = 2_000_000
# Records per annotation chunk read from the work files (signatures: 512 bytes a record).
CHUNK_ROWS = 65_536
# Shuffles of more rows than this use Ray's hash shuffle (see ``grouped``).
HASH_SHUFFLE_ROWS = 20_000_000
# The rounds near_duplicate_components re-splits a bucket whose members failed verification.
MAX_ROUNDS = 8
EXACT_KIND = -1  # the "band" of exact-hash rows in the key shuffle
VERIFY_CHUNK = 16_384  # candidate pairs the driver checks per numpy step (bounds temporaries)


# -- Ray ----------------------------------------------------------------------------------------


def import_ray() -> Any:
    """The ``ray`` module with Ray Data, or a UsageError that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise UsageError(f"{RAY_INSTALL_HINT} ({e})") from None
    return ray


@contextlib.contextmanager
def ray_session(cfg: Config) -> Iterator[Any]:
    """Use the caller's Ray, else join ``cfg.ray_address``, else start a local cluster.

    A cluster this function joined or started is left (shut down) when the block ends.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "include_dashboard": False}
    if cfg.ray_address:
        kwargs["address"] = cfg.ray_address
    else:
        # "local" (not None): a RAY_ADDRESS in the environment must not redirect a local run.
        kwargs["address"] = "local"
        kwargs["logging_level"] = logging.ERROR  # a private cluster's start-up notes are noise
        if cfg.workers > 0:
            kwargs["num_cpus"] = cfg.workers
    try:
        ray.init(**kwargs)
    except (ConnectionError, ValueError, RuntimeError) as e:
        where = cfg.ray_address or "a new local cluster"
        raise UsageError(f"could not start or join Ray at {where}: {str(e).splitlines()[0]}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


@contextlib.contextmanager
def data_context() -> Iterator[Any]:
    """Ray Data settings for synthfilter's jobs, restored afterwards.

    Sort-based shuffles: synthfilter's shuffles group a few keys per partition, where the
    hash shuffle's per-run aggregator actors cost seconds each. No Ray progress bars or stats
    logs: synthfilter prints its own progress.
    """
    from ray.data import DataContext

    ctx = DataContext.get_current()
    saved = (ctx.shuffle_strategy, ctx.enable_progress_bars, ctx.enable_auto_log_stats)
    data_log = logging.getLogger("ray.data")
    saved_level = data_log.level
    ctx.shuffle_strategy = "sort_shuffle_pull_based"
    data_log.setLevel(logging.ERROR)  # before the next line, which warns that bars are off
    ctx.enable_progress_bars = False
    ctx.enable_auto_log_stats = False
    try:
        yield ctx
    finally:
        ctx.shuffle_strategy, ctx.enable_progress_bars, ctx.enable_auto_log_stats = saved
        data_log.setLevel(saved_level)


def cluster_cpus() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


_RESOLVED: dict[str, Any] = {}


def resolve(ref: Any) -> Any:
    """``ray.get`` once per worker process for a broadcast object (only the latest is cached)."""
    import ray

    key = ref.hex()
    if key not in _RESOLVED:
        _RESOLVED.clear()
        _RESOLVED[key] = ray.get(ref)
    return _RESOLVED[key]


def partitions_for(rows: int) -> int:
    return max(2 * cluster_cpus(), math.ceil(rows / ROWS_PER_PARTITION))


def collect(ds: Any) -> dict[str, np.ndarray]:
    """All rows of a (small: edges, keys, bins) dataset on the driver, as numpy columns."""
    parts: dict[str, list[np.ndarray]] = {}
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for k, v in batch.items():
            parts.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in parts.items()}


def grouped(ds: Any, fn: Callable[..., dict[str, np.ndarray]], rows: int = 0, **fn_kwargs: Any) -> Any:
    """``fn`` over hash partitions of ``ds`` (column ``part``): one call sees a whole partition.

    ``rows``: about how many rows are shuffled. Up to ``HASH_SHUFFLE_ROWS`` a sort-based shuffle
    (no start-up cost); beyond, Ray's hash shuffle, whose aggregators keep the driver from
    tracking one object per (map block, partition) pair. Either gives the same groups.
    """
    if rows > HASH_SHUFFLE_ROWS:
        ds.context.shuffle_strategy = "hash_shuffle"
        return ds.groupby("part", num_partitions=partitions_for(rows)).map_groups(
            fn, batch_format="numpy", fn_kwargs=fn_kwargs)
    return ds.groupby("part").map_groups(fn, batch_format="numpy", fn_kwargs=fn_kwargs)


# -- where files live -----------------------------------------------------------------------------

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


# -- score -----------------------------------------------------------------------------------------


class ScoreShards:
    """Ray Data actor: ``score_shard`` for whole shards; the scorer (detector, MinHasher) is
    built once per actor. The annotation files land in the run's work directory."""

    def __init__(self, cfg: Config, work_root: str, bands: tuple[int, int] | None):
        self.cfg = cfg
        self.work = Store(work_root)
        self.scorer = Scorer(cfg)
        if self.scorer.uses_near:
            # The driver's choice of bands x rows (a grid search of about a second per process).
            self.scorer._bands = bands
            _ = self.scorer.hasher
        if self.scorer.uses_detector:
            _ = self.scorer.detector

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        metas = [_outcome(self.score, pickle.loads(blob)) for blob in batch["source"]]
        return {"meta": np.array(metas, dtype=object)}

    def score(self, src: ShardSource) -> dict[str, Any]:
        work_local = self.work.local
        if work_local is not None and src.uri is None:
            return score_shard(src.shard, self.cfg, work_local, self.scorer)
        with tempfile.TemporaryDirectory(prefix="synthfilter-") as tmp:
            scratch = Path(tmp)
            with local_shard(src, scratch) as shard:
                meta = score_shard(shard, self.cfg, scratch / "work", self.scorer)
            if src.uri is not None:
                meta.update(path=src.uri, size=src.size, mtime_ns=src.mtime_ns)
            rel = shard_dir(src.shard)
            folder = scratch / "work" / rel
            for f in sorted(folder.iterdir()):
                if f.name != "score.json":
                    self.work.upload(f, f"{rel}/{f.name}")
            # score.json last: it is the marker that says the shard's annotations are complete.
            self.work.write_bytes(f"{rel}/score.json", json.dumps(meta, indent=1).encode())
        return meta


def _outcome(fn: Callable[[ShardSource], Any], src: ShardSource) -> str:
    """``fn(src)`` as JSON; a bad input or a failed check comes back as data, so the driver can
    raise the same one-line error as the local engine (exceptions that cross Ray get wrapped)."""
    try:
        return json.dumps({"rel": src.shard.rel, "result": fn(src)})
    except InputError as e:
        return json.dumps({"rel": src.shard.rel, "input_error": [e.path, e.message, e.line]})
    except ConservationError as e:
        return json.dumps({"rel": src.shard.rel, "conservation_error": str(e)})


def _result(outcome: str) -> tuple[str, Any]:
    d = json.loads(outcome)
    if "input_error" in d:
        raise InputError(*d["input_error"])
    if "conservation_error" in d:
        raise ConservationError(d["conservation_error"])
    return d["rel"], d["result"]


def previous_meta(src: ShardSource, work: Store) -> dict[str, Any] | None:
    """The shard's score summary from an interrupted run, if it is complete and still valid."""
    rel = f"{shard_dir(src.shard)}/score.json"
    if not work.exists(rel):
        return None
    meta = json.loads(work.read_bytes(rel))
    if src.uri is None:
        st = src.shard.path.stat()
        size, mtime = st.st_size, st.st_mtime_ns
    else:
        size, mtime = src.size, src.mtime_ns
    if meta.get("size") != size or meta.get("mtime_ns") != mtime:
        raise UsageError(f"{src.location}: input changed since the interrupted run; use --overwrite to start again")
    return meta


# -- annotations as Ray datasets ------------------------------------------------------------------


ANN_TABLE_COLUMNS = ("id", "status", "hash_hi", "hash_lo", "score", "provenance", "uniform", "length")


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
    annotations in chunks (only the columns a pass needs), so no pass holds a whole corpus."""

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


def _map_file_chunks(batch: dict[str, np.ndarray], work: Store, columns: tuple[str, ...],
                     fn: Callable[..., Any], fn_kwargs: dict[str, Any]) -> Iterator[dict[str, np.ndarray]]:
    for blob in batch["part"]:
        if not blob:
            continue
        for chunk in read_chunks(work, pickle.loads(blob), columns):
            out = fn(chunk, **fn_kwargs)
            if out is not None and len(next(iter(out.values()))):
                yield out


def read_chunks(work: Store, part: AnnotationPart, columns: Sequence[str],
                chunk_rows: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Chunks of one shard's annotations: ``gidx`` (global index) plus the asked-for columns."""
    import pyarrow.ipc as ipc

    chunk_rows = chunk_rows or CHUNK_ROWS

    table_cols = [c for c in columns if c in ANN_TABLE_COLUMNS]
    table = None
    if table_cols:
        with work.open_input(f"{part.folder}/ann.arrow") as f:
            table = ipc.open_file(f).read_all().select(table_cols)
    matrices = {name: (fname, width, dtype) for name, fname, width, dtype in (
        ("bands", "bands.u64", part.bands, np.uint64), ("sigs", "sigs.u32", part.num_perm, np.uint32),
    ) if name in columns}
    handles = {name: work.open_input(f"{part.folder}/{fname}") for name, (fname, _, _) in matrices.items()}
    try:
        for lo in range(0, part.n, chunk_rows):
            hi = min(part.n, lo + chunk_rows)
            chunk: dict[str, np.ndarray] = {"gidx": np.arange(part.offset + lo, part.offset + hi, dtype=np.int64)}
            if table is not None:
                sl = table.slice(lo, hi - lo)
                for c in table_cols:
                    col = sl.column(c)
                    chunk[c] = np.asarray(col.to_pylist(), dtype=object) if c == "id" else col.to_numpy()
            for name, (_, width, dtype) in matrices.items():
                itemsize = np.dtype(dtype).itemsize
                raw = handles[name].read_at((hi - lo) * width * itemsize, lo * width * itemsize)
                chunk[name] = np.frombuffer(raw, dtype=dtype).reshape(hi - lo, width)
            yield chunk
    finally:
        for h in handles.values():
            h.close()


# -- decide: pure parts (the driver's side, testable without Ray) -------------------------------


def runs_of_equal(*sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows sorted by ``sorted_keys``: (run start, run length) of every run of >= 2 equal rows."""
    n = len(sorted_keys[0])
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    same = np.ones(n - 1, dtype=bool)
    for k in sorted_keys:
        same &= k[1:] == k[:-1]
    boundary = np.flatnonzero(np.r_[True, ~same, True])
    starts, lengths = boundary[:-1], np.diff(boundary)
    multi = lengths >= 2
    return starts[multi], lengths[multi]


@dataclass
class BandEdges:
    """Candidate pairs of the LSH buckets, each member linked to its bucket's smallest record.

    ``passed``: the pair's estimated Jaccard reached the threshold (checked on the workers).
    ``failed_gidx`` / ``failed_sigs``: signatures of the members that failed a check, sorted by
    record, for the re-split rounds (they need pairs among failed members only).
    """

    band: np.ndarray
    rep: np.ndarray
    member: np.ndarray
    passed: np.ndarray
    failed_gidx: np.ndarray
    failed_sigs: np.ndarray

    @classmethod
    def from_rows(cls, rows: dict[str, np.ndarray], num_perm: int) -> "BandEdges":
        """From the rows ``_verify_buckets`` emits (failed members carry their signature)."""
        failed = np.flatnonzero(~rows["passed"] & (np.frompyfunc(len, 1, 1)(rows["sig"]) > 0).astype(bool))
        fg, first = np.unique(rows["member"][failed], return_index=True)
        sigs = np.stack([np.frombuffer(rows["sig"][failed[i]], dtype=np.uint32) for i in first]) if len(fg) else \
            np.zeros((0, num_perm), np.uint32)
        return cls(rows["band"], rows["rep"], rows["member"], rows["passed"].astype(bool), fg, sigs)

    @classmethod
    def from_table(cls, table: Any, num_perm: int) -> "BandEdges":
        """From an Arrow table of those rows, reading the signatures straight from the Arrow
        buffer (no Python object per row)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        passed = table.column("passed").to_numpy(zero_copy_only=False).astype(bool)
        has_sig = pc.greater(pc.binary_length(table.column("sig")), 0).to_numpy(zero_copy_only=False)
        with_sig = table.filter(pa.array(~passed & has_sig))
        members = with_sig.column("member").to_numpy()
        sigs = _fixed_width_rows(with_sig.column("sig"), num_perm)
        fg, first = np.unique(members, return_index=True)
        return cls(table.column("band").to_numpy(), table.column("rep").to_numpy(), table.column("member").to_numpy(),
                   passed, fg, sigs[first])

    @classmethod
    def empty(cls, num_perm: int) -> "BandEdges":
        z = np.zeros(0, np.int64)
        return cls(z.astype(np.int16), z, z, z.astype(bool), z, np.zeros((0, num_perm), np.uint32))


class NearReplay:
    """``near_duplicate_components`` replayed over candidate edges instead of all records.

    Fed one band at a time, in band order: rounds in order, pairs already in one cluster
    skipped, failed members re-split among themselves, as the local engine does, so the
    clusters are the same. Holds the local engine's union-find over the records that have an
    edge (``nodes``, sorted; compact ids) and one band's edges at a time.
    """

    def __init__(self, nodes: np.ndarray, threshold: float, verify: bool, max_rounds: int = MAX_ROUNDS):
        from synthfilter.dedup.clusters import Forest

        self.nodes = np.asarray(nodes, dtype=np.int64)
        self.forest = Forest(len(self.nodes))
        self.threshold, self.verify, self.max_rounds = threshold, verify, max_rounds

    def add_band(self, edges: BandEdges) -> None:
        if len(edges.rep) == 0:
            return
        nodes, forest = self.nodes, self.forest
        rep = np.searchsorted(nodes, edges.rep)
        member = np.searchsorted(nodes, edges.member)
        order = np.lexsort((member, rep))
        u, v, passed = rep[order], member[order], edges.passed[order]
        group = u
        num_perm = edges.failed_sigs.shape[1]

        def similar(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            # Later rounds pair failed members of one bucket: the workers sent their signatures.
            out = np.empty(len(a), dtype=bool)
            for lo in range(0, len(a), VERIFY_CHUNK):
                sa = edges.failed_sigs[np.searchsorted(edges.failed_gidx, nodes[a[lo:lo + VERIFY_CHUNK]])]
                sb = edges.failed_sigs[np.searchsorted(edges.failed_gidx, nodes[b[lo:lo + VERIFY_CHUNK]])]
                out[lo:lo + VERIFY_CHUNK] = np.count_nonzero(sa == sb, axis=1) / num_perm >= self.threshold
            return out

        records = v
        for round_no in range(self.max_rounds):
            if round_no:
                # Members that failed against their representative, with a new representative
                # (the smallest) per bucket: near_duplicate_components' next round.
                starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
                sizes = np.diff(np.r_[starts, len(records)])
                new_rep = np.repeat(np.minimum.reduceat(records, starts), sizes)
                is_member = records != new_rep
                u, v, group = new_rep[is_member], records[is_member], group[is_member]
            root_u, root_v = forest.find(u), forest.find(v)
            todo = root_u != root_v
            passed_now = passed[todo] if round_no == 0 else similar(u[todo], v[todo])
            forest.union(root_u[todo][passed_now], root_v[todo][passed_now])
            if not self.verify:
                return
            failed = np.zeros(len(u), dtype=bool)
            failed[np.flatnonzero(todo)[~passed_now]] = True
            records, group = v[failed], group[failed]
            if len(records) < 2:
                return
            starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
            sizes = np.diff(np.r_[starts, len(records)])
            keep = np.repeat(sizes >= 2, sizes)
            records, group = records[keep], group[keep]
            if len(records) < 2:
                return

    def components(self) -> tuple[np.ndarray, np.ndarray]:
        """(records in a near-duplicate cluster, sorted; the smallest record of each one's cluster)."""
        nodes = self.nodes
        labels = nodes[self.forest.labels()]
        linked = labels != nodes
        # A cluster's smallest record is its root: it is in the result too (label == itself).
        in_cluster = linked | np.isin(nodes, labels[linked])
        return nodes[in_cluster], labels[in_cluster]


def _fixed_width_rows(column: Any, num_perm: int) -> np.ndarray:
    """(rows, num_perm) uint32 from a binary column whose values are all num_perm x 4 bytes."""
    import pyarrow as pa

    arr = pa.concat_arrays([c.cast(pa.large_binary()) for c in column.chunks]) if column.num_chunks else \
        pa.array([], pa.large_binary())
    if len(arr) == 0:
        return np.zeros((0, num_perm), np.uint32)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset: arr.offset + len(arr) + 1]
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[offsets[0]: offsets[-1]]
    return data.view(np.uint32).reshape(len(arr), num_perm)


def near_components(edges: BandEdges, threshold: float, verify: bool,
                    max_rounds: int = MAX_ROUNDS) -> tuple[np.ndarray, np.ndarray]:
    """``NearReplay`` over edges of all bands at once (see ``NearReplay.components``)."""
    replay = NearReplay(np.unique(np.concatenate([edges.rep, edges.member])), threshold, verify, max_rounds)
    for band in np.unique(edges.band):
        at = edges.band == band
        failed = np.isin(edges.failed_gidx, edges.member[at & ~edges.passed])
        replay.add_band(BandEdges(edges.band[at], edges.rep[at], edges.member[at], edges.passed[at],
                                  edges.failed_gidx[failed], edges.failed_sigs[failed]))
    return replay.components()


@dataclass
class NodeAttributes:
    """What the survivor rule and the reasons need of each record in a duplicate group."""

    gidx: np.ndarray
    hash_hi: np.ndarray
    hash_lo: np.ndarray
    score: np.ndarray
    provenance: np.ndarray
    length: np.ndarray


@dataclass
class DuplicateDecisions:
    """Duplicate groups on the driver: records rejected as duplicates and group sizes."""

    gidx: np.ndarray  # sorted, rejected records
    reason: np.ndarray  # EXACT_DUP / NEAR_DUP
    duplicate_of: np.ndarray  # global index of the kept record
    cluster_sizes: np.ndarray


def group_nodes(exact_rep: np.ndarray, exact_member: np.ndarray, near_nodes: np.ndarray,
                near_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Records in any duplicate group and their group label (smallest record), as ``decide``
    merges exact and near labels; records outside every group are left out."""
    nodes = np.unique(np.concatenate([exact_rep, exact_member, near_nodes, near_labels]))
    if len(nodes) == 0:
        return nodes, nodes.copy()
    exact = np.arange(len(nodes), dtype=np.int64)
    exact[np.searchsorted(nodes, exact_member)] = np.searchsorted(nodes, exact_rep)
    near = np.arange(len(nodes), dtype=np.int64)
    near[np.searchsorted(nodes, near_nodes)] = np.searchsorted(nodes, near_labels)
    labels = merge_labels(exact, near)
    return nodes, nodes[labels]


def duplicate_decisions(nodes: np.ndarray, labels: np.ndarray, attrs: NodeAttributes,
                        cfg: Config) -> DuplicateDecisions:
    """Survivors by the configured keep rule over the groups' members, as ``decide`` picks them."""
    if len(nodes) == 0:
        z = np.zeros(0, np.int64)
        return DuplicateDecisions(z, z.astype(np.int8), z, z)
    if not np.array_equal(attrs.gidx, nodes):
        raise RuntimeError("node attributes do not match the duplicate groups")
    n = len(nodes)
    compact = Annotations(
        shard=np.zeros(n, np.int32), status=np.zeros(n, np.int8), hash_hi=attrs.hash_hi, hash_lo=attrs.hash_lo,
        score=attrs.score, provenance=attrs.provenance, uniform=np.zeros(n), length=attrs.length,
    )
    # Compact indices keep the global order, so "earliest record" ties break the same way.
    survivor = survivors(labels, compact, cfg.dedup.keep_rule)
    idx = np.arange(n)
    dup = survivor != idx
    same_hash = (attrs.hash_hi == attrs.hash_hi[survivor]) & (attrs.hash_lo == attrs.hash_lo[survivor])
    reason = np.where(same_hash, EXACT_DUP, NEAR_DUP).astype(np.int8)
    _, sizes = np.unique(labels, return_counts=True)
    return DuplicateDecisions(
        gidx=nodes[dup], reason=reason[dup], duplicate_of=nodes[survivor[dup]],
        cluster_sizes=sizes[sizes >= 2].astype(np.int64),
    )


def score_bins_from_unique(values: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The estimator's bins (``ratio._Bins.build``) when the distinct values fit in them."""
    order = np.argsort(values)
    return values[order], counts[order].astype(np.int64)


def logit_bin_edges(vmin: float, vmax: float) -> np.ndarray:
    """Equal-width logit-scale bin edges over [vmin, vmax], as ``ratio._Bins.build`` draws them."""
    lu = logit(np.array([vmin, vmax], dtype=np.float64))
    return np.linspace(lu[0], lu[-1], MAX_SCORE_BINS + 1)


def logit_bin_of(values: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lu = logit(values)
    return np.clip(np.searchsorted(edges, lu, side="right") - 1, 0, MAX_SCORE_BINS - 1), lu


def logit_bin_sums(values: np.ndarray, counts: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bin, records, sum of logit x count) for whole bins: the sums run over ascending values,
    one addition at a time, as ``np.bincount`` adds them in ``ratio._Bins.build``."""
    order = np.argsort(values, kind="stable")
    values, counts = values[order], counts[order]
    b, lu = logit_bin_of(values, edges)
    used, local = np.unique(b, return_inverse=True)
    n = np.bincount(local, weights=counts.astype(np.float64), minlength=len(used))
    total = np.bincount(local, weights=lu * counts, minlength=len(used))
    return used, n, total


def bins_from_sums(bins: np.ndarray, n: np.ndarray, total: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(bins)
    n, total = n[order], total[order]
    rep = total / n
    return 1.0 / (1.0 + np.exp(-rep)), n.astype(np.int64)


# -- decide: the passes on Ray ---------------------------------------------------------------------


def _emit_keys(chunk: dict[str, np.ndarray], exact: bool, n_bands: int, parts: int) -> dict[str, np.ndarray]:
    """Rows to group: the normalised-text hash and every band key of each usable record."""
    ok = chunk["status"] == STATUS_OK
    g = chunk["gidx"][ok]
    kinds, k1, k2, gidx = [], [], [], []
    if exact:
        kinds.append(np.full(len(g), EXACT_KIND, np.int16))
        k1.append(chunk["hash_hi"][ok])
        k2.append(chunk["hash_lo"][ok])
        gidx.append(g)
    if n_bands:
        bands = chunk["bands"][ok]
        kinds.append(np.tile(np.arange(n_bands, dtype=np.int16), len(g)))
        k1.append(bands.ravel())
        k2.append(np.zeros(len(g) * n_bands, np.uint64))
        gidx.append(np.repeat(g, n_bands))
    key1 = np.concatenate(k1)
    key2 = np.concatenate(k2)
    return {"part": ((key1 ^ key2) % np.uint64(parts)).astype(np.int64), "kind": np.concatenate(kinds),
            "k1": key1, "k2": key2, "gidx": np.concatenate(gidx)}


def _find_groups(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per partition: exact-duplicate edges (member -> smallest record) and the band keys
    shared by two or more records."""
    kind, k1, k2, gidx = batch["kind"], batch["k1"], batch["k2"], batch["gidx"]
    order = np.lexsort((gidx, k2, k1, kind))
    kind, k1, gidx = kind[order], k1[order], gidx[order]
    starts, lengths = runs_of_equal(kind, k1, k2[order])
    exact_run = kind[starts] == EXACT_KIND
    # Exact groups: every member but the first (the smallest record) gets an edge to it.
    es, el = starts[exact_run], lengths[exact_run]
    member_pos = np.repeat(es, el - 1) + _ranks_after_first(el)
    rep = np.repeat(gidx[es], el - 1)
    bs = starts[~exact_run]
    return {
        "kind": np.concatenate([np.full(len(member_pos), EXACT_KIND, np.int16), kind[bs]]),
        "key": np.concatenate([np.zeros(len(member_pos), np.uint64), k1[bs]]),
        "rep": np.concatenate([rep, np.full(len(bs), -1, np.int64)]),
        "member": np.concatenate([gidx[member_pos], np.full(len(bs), -1, np.int64)]),
    }


def _ranks_after_first(lengths: np.ndarray) -> np.ndarray:
    """1, 2, ..., len - 1 for each run length, concatenated."""
    total = int(np.sum(lengths - 1))
    if total == 0:
        return np.zeros(0, np.int64)
    run_start = np.repeat(np.cumsum(np.r_[0, lengths[:-1] - 1]), lengths - 1)
    return np.arange(total, dtype=np.int64) - run_start + 1


def _emit_bucket_members(chunk: dict[str, np.ndarray], keys_ref: Any, parts: int, with_sigs: bool) -> dict[str, np.ndarray] | None:
    """Rows of the records whose band key is shared (with their signature, to verify there)."""
    keys_by_band: dict[int, np.ndarray] = resolve(keys_ref)
    ok = chunk["status"] == STATUS_OK
    bands = chunk["bands"]
    out: dict[str, list[np.ndarray]] = {"band": [], "key": [], "gidx": []}
    if with_sigs:
        out["sig"] = []
    for b, keys in keys_by_band.items():
        if not len(keys):
            continue
        col = bands[:, b]
        at = np.minimum(np.searchsorted(keys, col), len(keys) - 1)
        hit = ok & (keys[at] == col)
        if not hit.any():
            continue
        out["band"].append(np.full(int(hit.sum()), b, np.int16))
        out["key"].append(col[hit])
        out["gidx"].append(chunk["gidx"][hit])
        if with_sigs:
            out["sig"].append(chunk["sigs"][hit])
    if not out["band"]:
        return None
    res = {k: np.concatenate(v) for k, v in out.items()}
    res["part"] = (res["key"] % np.uint64(parts)).astype(np.int64)
    return res


def _verify_buckets(batch: dict[str, np.ndarray], threshold: float, verify: bool) -> dict[str, np.ndarray]:
    """Per partition: each bucket member against the bucket's smallest record (first round of
    ``near_duplicate_components``). A failed member keeps its signature when its bucket has
    another failed member: only those can meet again in a later round."""
    band, key, gidx = batch["band"], batch["key"], batch["gidx"]
    order = np.lexsort((gidx, key, band))
    band, key, gidx = band[order], key[order], gidx[order]
    starts, lengths = runs_of_equal(band, key)
    member_pos = np.repeat(starts, lengths - 1) + _ranks_after_first(lengths)
    rep_pos = np.repeat(starts, lengths - 1)
    if verify:
        sigs = batch["sig"][order]
        num_perm = sigs.shape[1]
        passed = np.count_nonzero(sigs[rep_pos] == sigs[member_pos], axis=1) / num_perm >= threshold
        bucket = np.repeat(np.arange(len(starts)), lengths - 1)
        failed_in_bucket = np.bincount(bucket[~passed], minlength=len(starts))
        failed_sig = np.full(len(member_pos), b"", dtype=object)
        for i in np.flatnonzero(~passed & (failed_in_bucket[bucket] >= 2)).tolist():
            failed_sig[i] = sigs[member_pos[i]].tobytes()
    else:
        passed = np.ones(len(member_pos), dtype=bool)
        failed_sig = np.full(len(member_pos), b"", dtype=object)
    return {"band": band[member_pos], "rep": gidx[rep_pos], "member": gidx[member_pos], "passed": passed,
            "sig": failed_sig}


def _emit_nodes(chunk: dict[str, np.ndarray], nodes_ref: Any, fields: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """The asked-for columns of the records in a broadcast sorted set."""
    nodes: np.ndarray = resolve(nodes_ref)
    g = chunk["gidx"]
    at = np.minimum(np.searchsorted(nodes, g), max(len(nodes) - 1, 0))
    hit = nodes[at] == g if len(nodes) else np.zeros(len(g), bool)
    if not hit.any():
        return None
    return {k: chunk[k][hit] for k in ("gidx", *fields)}


def _survivor_mask(chunk: dict[str, np.ndarray], dups_ref: Any) -> np.ndarray:
    dups: np.ndarray = resolve(dups_ref)
    ok = chunk["status"] == STATUS_OK
    if len(dups):
        g = chunk["gidx"]
        at = np.minimum(np.searchsorted(dups, g), len(dups) - 1)
        ok &= dups[at] != g
    return ok


# Kinds of rows in the survivor statistics; the labelled kinds carry the known-provenance
# records' scores as counts between the card's cut points (``value`` is the interval's index).
_STAT_VALUE, _STAT_HUMAN, _STAT_MACHINE, _STAT_UNSCORED, _STAT_LABELLED_HUMAN, _STAT_LABELLED_MACHINE = range(6)


def _emit_score_counts(chunk: dict[str, np.ndarray], dups_ref: Any, parts: int,
                       cuts: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per chunk of survivors: distinct clipped scores with counts, provenance counts and (with
    ``cuts``) the labelled records' score counts."""
    keep = _survivor_mask(chunk, dups_ref)
    prov = chunk["provenance"][keep]
    score = chunk["score"][keep].astype(np.float64)
    unknown = prov == 0
    scored = unknown & np.isfinite(score)
    values, counts = np.unique(np.clip(score[scored], SCORE_CLIP, 1.0 - SCORE_CLIP), return_counts=True)
    extra = np.array([(prov == 1).sum(), (prov == 2).sum(), (unknown & ~np.isfinite(score)).sum()], np.int64)
    kinds, idx, labelled = [np.array([1, 2, 3], np.int8)], [np.full(3, np.nan)], [extra]
    if cuts is not None:
        for kind, code in ((_STAT_LABELLED_HUMAN, 1), (_STAT_LABELLED_MACHINE, 2)):
            c = cut_counts(score[prov == code], cuts)
            kinds.append(np.full(len(c), kind, np.int8))
            idx.append(np.arange(len(c), dtype=np.float64))
            labelled.append(c)
    kinds_, idx_, counts_ = np.concatenate(kinds), np.concatenate(idx), np.concatenate(labelled)
    return {
        "part": np.r_[(values.view(np.uint64) % np.uint64(parts)).astype(np.int64), np.zeros(len(kinds_), np.int64)],
        "kind": np.r_[np.full(len(values), _STAT_VALUE, np.int8), kinds_],
        "value": np.r_[values, idx_],
        "count": np.r_[counts.astype(np.int64), counts_],
    }


def _merge_score_counts(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    kind, value, count = batch["kind"], batch["value"], batch["count"]
    is_value = kind == _STAT_VALUE
    uniq, inverse = np.unique(value[is_value], return_inverse=True)
    summed = np.bincount(inverse, weights=count[is_value], minlength=len(uniq)).astype(np.int64)
    other = np.array([count[kind == k].sum() for k in (_STAT_HUMAN, _STAT_MACHINE, _STAT_UNSCORED)], np.int64)
    kinds, values, counts = [np.zeros(len(uniq), np.int8), np.array([1, 2, 3], np.int8)], [uniq, np.full(3, np.nan)], [summed, other]
    for k in (_STAT_LABELLED_HUMAN, _STAT_LABELLED_MACHINE):
        rows = kind == k
        if rows.any():
            at = value[rows].astype(np.int64)
            c = np.bincount(at, weights=count[rows], minlength=int(at.max()) + 1).astype(np.int64)
            kinds.append(np.full(len(c), k, np.int8))
            values.append(np.arange(len(c), dtype=np.float64))
            counts.append(c)
    return {"kind": np.concatenate(kinds), "value": np.concatenate(values), "count": np.concatenate(counts)}


def _labelled_rows(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    rows = batch["kind"] >= _STAT_LABELLED_HUMAN
    return {k: batch[k][rows] for k in ("kind", "value", "count")}


def _labelled_from_rows(rows: dict[str, np.ndarray], cuts: np.ndarray | None) -> LabelledScores | None:
    if cuts is None:
        return None
    counts = []
    for k in (_STAT_LABELLED_HUMAN, _STAT_LABELLED_MACHINE):
        sel = rows["kind"] == k if rows else np.zeros(0, bool)
        at = rows["value"][sel].astype(np.int64) if rows else np.zeros(0, np.int64)
        weights = rows["count"][sel] if rows else np.zeros(0)
        counts.append(np.bincount(at, weights=weights, minlength=len(cuts) + 1).astype(np.int64))
    return LabelledScores(cuts, counts[0], counts[1])


def _summarise_values(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    is_value = batch["kind"] == _STAT_VALUE
    v = batch["value"][is_value]
    counts = [int((batch["count"][batch["kind"] == k]).sum()) for k in (1, 2, 3)]
    return {"distinct": np.array([len(v)]), "vmin": np.array([v.min() if len(v) else np.inf]),
            "vmax": np.array([v.max() if len(v) else -np.inf]), "human": np.array([counts[0]]),
            "machine": np.array([counts[1]]), "unscored": np.array([counts[2]])}


def _assign_logit_bins(batch: dict[str, np.ndarray], edges: np.ndarray) -> dict[str, np.ndarray]:
    is_value = batch["kind"] == _STAT_VALUE
    values, counts = batch["value"][is_value], batch["count"][is_value]
    b, _ = logit_bin_of(values, edges)
    return {"part": b.astype(np.int64), "value": values, "count": counts}


def _sum_logit_bins(batch: dict[str, np.ndarray], edges: np.ndarray) -> dict[str, np.ndarray]:
    used, n, total = logit_bin_sums(batch["value"], batch["count"], edges)
    return {"bin": used.astype(np.int64), "n": n, "total": total}


def _emit_survivor_scores(chunk: dict[str, np.ndarray], dups_ref: Any) -> dict[str, np.ndarray] | None:
    keep = _survivor_mask(chunk, dups_ref)
    if not keep.any():
        return None
    return {"gidx": chunk["gidx"][keep], "score": chunk["score"][keep], "provenance": chunk["provenance"][keep],
            "uniform": chunk["uniform"][keep]}


@dataclass
class SparseDecisions:
    """Every decision that is not "kept", on the driver: duplicates and downsampled records by
    global index (malformed records are those whose score status says so)."""

    gidx: np.ndarray
    reason: np.ndarray
    duplicate_of: np.ndarray  # global index, -1 where it does not apply
    duplicate_of_id: np.ndarray  # object: the kept record's id, or None
    posterior: np.ndarray  # float32, NaN where it does not apply
    cluster_sizes: np.ndarray
    malformed: int
    total: int
    synthetic: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        c = np.bincount(self.reason, minlength=len(REASONS)).astype(np.int64)
        c[MALFORMED] += self.malformed
        c[KEPT] = self.total - int(c[1:].sum())
        return {name: int(c[i]) for i, name in enumerate(REASONS)}


def decide_on_ray(source: Any, total: int, cfg: Config, card: dict[str, Any] | None, malformed: int,
                  n_bands: int, num_perm: int) -> SparseDecisions:
    """``decide`` for annotations that stay on the cluster (``source.map_chunks``)."""
    import ray

    near = cfg.dedup.near and n_bands > 0
    exact_rep = exact_member = np.zeros(0, np.int64)
    keys_by_band: dict[int, np.ndarray] = {}
    if cfg.dedup.exact or near:
        parts = partitions_for(total * ((n_bands if near else 0) + 1))
        cols = ["status", "hash_hi", "hash_lo"] + (["bands"] if near else [])
        keyed = source.map_chunks(_emit_keys, cols, exact=cfg.dedup.exact, n_bands=n_bands if near else 0, parts=parts)
        # Streamed: the driver keeps exact edges and shared band keys, not the batches.
        reps, members, keys = [], [], []
        groups = grouped(keyed, _find_groups, rows=total * ((n_bands if near else 0) + 1))
        for batch in groups.iter_batches(batch_size=None, batch_format="numpy"):
            is_exact = batch["kind"] == EXACT_KIND
            reps.append(batch["rep"][is_exact])
            members.append(batch["member"][is_exact])
            keys.append((batch["kind"][~is_exact], batch["key"][~is_exact]))
        if reps:
            exact_rep, exact_member = np.concatenate(reps), np.concatenate(members)
        for b in range(n_bands):
            keys_by_band[b] = np.sort(np.concatenate([k[kind == b] for kind, k in keys] or [np.zeros(0, np.uint64)]))
        del reps, members, keys
    near_nodes = near_labels = np.zeros(0, np.int64)
    if near and any(len(k) for k in keys_by_band.values()):
        verify = cfg.dedup.verify
        n_keys = sum(len(k) for k in keys_by_band.values())
        members = source.map_chunks(
            _emit_bucket_members, ["status", "bands"] + (["sigs"] if verify else []),
            keys_ref=ray.put(keys_by_band), parts=partitions_for(4 * n_keys), with_sigs=verify,
        )
        del keys_by_band
        verified = grouped(members, _verify_buckets, threshold=cfg.dedup.verify_at, verify=verify).materialize()
        # The replay holds the records with an edge and one band's edges at a time.
        replay = NearReplay(_edge_nodes(verified), cfg.dedup.verify_at, verify)
        for table in _bands_in_order(verified, n_bands):
            replay.add_band(BandEdges.from_table(table, num_perm))
        near_nodes, near_labels = replay.components()
        del replay, verified
    nodes, labels = group_nodes(exact_rep, exact_member, near_nodes, near_labels)
    attrs = _node_attributes(source, nodes)
    dups = duplicate_decisions(nodes, labels, attrs, cfg)
    del attrs, nodes, labels
    decisions = SparseDecisions(
        gidx=dups.gidx, reason=dups.reason, duplicate_of=dups.duplicate_of,
        duplicate_of_id=_ids_of(source, dups.duplicate_of), posterior=np.full(len(dups.gidx), np.nan, np.float32),
        cluster_sizes=dups.cluster_sizes, malformed=malformed, total=total,
    )
    dups_ref = ray.put(dups.gidx)
    if cfg.ratio.target_ratio is None:
        _decide_estimate(source, decisions, dups_ref, cfg, card)
    else:
        _decide_target_ratio(source, decisions, dups_ref, cfg, card)
    return decisions


def _batch_nodes(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"node": np.unique(np.concatenate([batch["rep"], batch["member"]]))}


def _edge_nodes(verified: Any) -> np.ndarray:
    got = collect(verified.select_columns(["rep", "member"]).map_batches(_batch_nodes, batch_size=None,
                                                                         batch_format="numpy"))
    return np.unique(got["node"]) if got else np.zeros(0, np.int64)


def _bands_in_order(verified: Any, n_bands: int) -> Iterator[Any]:
    """The verified edges of one band at a time, in band order, as Arrow tables: the driver
    never holds more than one band's edges."""
    import pyarrow as pa
    from ray.data.expressions import col

    for b in range(n_bands):
        band = verified.filter(expr=col("band") == b)
        tables = [t for t in band.iter_batches(batch_size=None, batch_format="pyarrow") if t.num_rows]
        if tables:
            yield pa.concat_tables(tables)
            del tables


def _node_attributes(source: Any, nodes: np.ndarray) -> NodeAttributes:
    import ray

    if len(nodes) == 0:
        z = np.zeros(0, np.int64)
        return NodeAttributes(z, z.astype(np.uint64), z.astype(np.uint64), z.astype(np.float32), z.astype(np.int8),
                              z.astype(np.int32))
    cols = ("hash_hi", "hash_lo", "score", "provenance", "length")
    got = collect(source.map_chunks(_emit_nodes, cols, nodes_ref=ray.put(nodes), fields=cols))
    order = np.argsort(got["gidx"])
    return NodeAttributes(*(got[k][order] for k in ("gidx", *cols)))


def _ids_of(source: Any, gidx: np.ndarray) -> np.ndarray:
    """Record ids (object array) of the given records (the kept record of each duplicate group:
    ``duplicate_of`` needs their ids, and only theirs)."""
    import ray

    targets = np.unique(gidx)
    if len(targets) == 0:
        return np.zeros(0, dtype=object)
    got = collect(source.map_chunks(_emit_nodes, ["id"], nodes_ref=ray.put(targets), fields=("id",)))
    ids = got["id"][np.argsort(got["gidx"])]
    return ids[np.searchsorted(targets, gidx)]


def _decide_estimate(source: Any, decisions: SparseDecisions, dups_ref: Any, cfg: Config,
                     card: dict[str, Any] | None) -> None:
    """The prevalence estimate from per-chunk score histograms (no per-record array anywhere)."""
    from synthfilter import ratio as ratio_mod

    parts = partitions_for(decisions.total)
    cuts = ratio_mod.card_score_cuts(card) if cfg.ratio.remeasure_rates and card is not None else None
    merged = grouped(
        source.map_chunks(_emit_score_counts, ["status", "score", "provenance"], dups_ref=dups_ref, parts=parts,
                          cuts=cuts),
        _merge_score_counts, rows=decisions.total,
    ).materialize()
    summary = collect(merged.map_batches(_summarise_values, batch_size=None, batch_format="numpy"))
    distinct = int(summary["distinct"].sum())
    human, machine, unscored = (int(summary[k].sum()) for k in ("human", "machine", "unscored"))
    if distinct == 0:
        bin_scores, bin_counts = np.zeros(0), np.zeros(0, np.int64)
    elif distinct <= MAX_SCORE_BINS:
        rows = collect(merged)
        is_value = rows["kind"] == _STAT_VALUE
        bin_scores, bin_counts = score_bins_from_unique(rows["value"][is_value], rows["count"][is_value])
    else:
        edges = logit_bin_edges(float(summary["vmin"].min()), float(summary["vmax"].max()))
        sums = collect(grouped(merged.map_batches(_assign_logit_bins, batch_size=None, batch_format="numpy",
                                                  fn_kwargs={"edges": edges}), _sum_logit_bins, edges=edges))
        bin_scores, bin_counts = bins_from_sums(sums["bin"], sums["n"], sums["total"])
    n_scored = int(bin_counts.sum())
    counts = SurvivorCounts(n_scored + human + machine + unscored, n_scored, human, machine, unscored)
    if synthetic_without_estimate(counts, cfg, decisions):  # type: ignore[arg-type]
        return
    r = cfg.ratio
    labelled = _labelled_from_rows(
        collect(merged.map_batches(_labelled_rows, batch_size=None, batch_format="numpy")), cuts)
    est = ratio_mod.estimate_prevalence_from_bins(
        bin_scores, bin_counts, n_unscored=unscored, known_human=human, known_machine=machine,
        card=card, method=r.method, n_boot=r.bootstrap, seed=cfg.seed, labelled=labelled, widen=r.widen,
    )
    decisions.synthetic = estimate_section(est)
    decisions.warnings.extend(est.warnings)


def _decide_target_ratio(source: Any, decisions: SparseDecisions, dups_ref: Any, cfg: Config,
                         card: dict[str, Any] | None) -> None:
    """Target-ratio downsampling: the one step that needs every survivor's score.

    The plan ranks all survivors by posterior (a global order, with a bisection over kept
    sets for the confidence bound), so the driver holds a score (4 bytes), a provenance code
    (1) and a uniform (8) per survivor, 13 bytes, and runs the local engine's own
    ``decide_synthetic`` on them; a run without a target ratio needs none of this.
    """
    got = collect(source.map_chunks(_emit_survivor_scores, ["status", "score", "provenance", "uniform"],
                                    dups_ref=dups_ref))
    if got:
        order = np.argsort(got["gidx"])
        gidx = got["gidx"][order]
        score, prov, uniform = got["score"][order], got["provenance"][order], got["uniform"][order]
        del got
    else:
        gidx = np.zeros(0, np.int64)
        score, prov, uniform = np.zeros(0, np.float32), np.zeros(0, np.int8), np.zeros(0)
    n = len(gidx)
    compact = Annotations(shard=np.zeros(n, np.int32), status=np.zeros(n, np.int8), hash_hi=np.zeros(n, np.uint64),
                          hash_lo=np.zeros(n, np.uint64), score=score.astype(np.float32), provenance=prov.astype(np.int8),
                          uniform=uniform.astype(np.float64), length=np.zeros(n, np.int32))
    local = Decisions(reason=np.zeros(n, np.int8), duplicate_of=np.full(n, -1, np.int64),
                      cluster_sizes=np.zeros(0, np.int64), posterior=np.full(n, np.nan, np.float32))
    decide_synthetic(compact, cfg, card, local)
    decisions.synthetic = local.synthetic
    decisions.warnings.extend(local.warnings)
    dropped = np.flatnonzero(local.reason == DOWNSAMPLED)
    if len(dropped):
        all_g = np.concatenate([decisions.gidx, gidx[dropped]])
        order = np.argsort(all_g)
        decisions.gidx = all_g[order]
        decisions.reason = np.concatenate([decisions.reason, np.full(len(dropped), DOWNSAMPLED, np.int8)])[order]
        decisions.duplicate_of = np.concatenate([decisions.duplicate_of, np.full(len(dropped), -1, np.int64)])[order]
        decisions.duplicate_of_id = np.concatenate([decisions.duplicate_of_id, np.full(len(dropped), None, object)])[order]
        decisions.posterior = np.concatenate([decisions.posterior, local.posterior[dropped]])[order]


# -- write ----------------------------------------------------------------------------------------


def save_overrides(work: Store, sources: Sequence[ShardSource], offsets: Sequence[int], decisions: SparseDecisions) -> None:
    """Each shard's non-kept decisions (local row, reason, duplicate_of id, posterior) as
    ``overrides.arrow`` in its work folder: the write tasks read only their own."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    shard_of = np.searchsorted(np.asarray(offsets), decisions.gidx, side="right") - 1
    bounds = np.searchsorted(shard_of, np.arange(len(sources) + 1))
    for si, src in enumerate(sources):
        lo, hi = bounds[si], bounds[si + 1]
        if lo == hi:
            continue
        table = pa.table({
            "row": pa.array(decisions.gidx[lo:hi] - offsets[si], type=pa.int64()),
            "reason": pa.array(decisions.reason[lo:hi], type=pa.int8()),
            "duplicate_of": pa.array(decisions.duplicate_of_id[lo:hi].tolist(), type=pa.string()),
            "posterior": pa.array(decisions.posterior[lo:hi], type=pa.float32()),
        })
        sink = pa.BufferOutputStream()
        with ipc.new_file(sink, table.schema) as w:
            w.write_table(table)
        work.write_bytes(f"{shard_dir(src.shard)}/overrides.arrow", sink.getvalue().to_pybytes())


def per_shard_counts(decisions: SparseDecisions, offsets: Sequence[int], metas: Sequence[dict[str, Any]]) -> np.ndarray:
    """(shards, reasons) record counts, from the sparse decisions and the shards' malformed counts."""
    counts = np.zeros((len(metas), len(REASONS)), dtype=np.int64)
    shard_of = np.searchsorted(np.asarray(offsets), decisions.gidx, side="right") - 1
    np.add.at(counts, (shard_of, decisions.reason.astype(np.int64)), 1)
    for si, m in enumerate(metas):
        counts[si, MALFORMED] += int(m.get("malformed", 0))
        counts[si, KEPT] = int(m["records"]) - counts[si, 1:].sum()
    return counts


def _shard_decisions_table(work: Store, folder: str) -> Any:
    """decisions.arrow of one shard (the local engine's layout), from its status and overrides."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    with work.open_input(f"{folder}/ann.arrow") as f:
        status = ipc.open_file(f).read_all().column("status").to_numpy()
    n = len(status)
    reason = np.where(status == STATUS_OK, KEPT, MALFORMED).astype(np.int8)
    duplicate_of: list[str | None] = [None] * n
    posterior = np.full(n, np.nan, dtype=np.float32)
    if work.exists(f"{folder}/overrides.arrow"):
        with work.open_input(f"{folder}/overrides.arrow") as f:
            o = ipc.open_file(f).read_all()
        rows = o.column("row").to_numpy()
        reason[rows] = o.column("reason").to_numpy()
        posterior[rows] = o.column("posterior").to_numpy()
        for r, d in zip(rows.tolist(), o.column("duplicate_of").to_pylist()):
            duplicate_of[r] = d
    return pa.table({
        "reason": pa.array(reason, type=pa.int8()),
        "duplicate_of": pa.array(duplicate_of, type=pa.string()),
        "posterior": pa.array(posterior, type=pa.float32()),
    })


def _write_ipc(path: Path, table: Any) -> None:
    import pyarrow.ipc as ipc

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with ipc.new_file(str(tmp), table.schema) as w:
        w.write_table(table)
    os.replace(tmp, path)


def write_shards(batch: dict[str, np.ndarray], cfg: Config, work_root: str, out_root: str) -> dict[str, np.ndarray]:
    """Ray Data task: ``write_shard`` for whole shards. A retried task rewrites the same files
    under temporary names and renames them into place, so no record is ever written twice."""
    work, out = Store(work_root), Store(out_root)
    results = [_outcome(lambda src: _write_one(src, cfg, work, out), pickle.loads(blob)) for blob in batch["source"]]
    return {"result": np.array(results, dtype=object)}


def _write_one(src: ShardSource, cfg: Config, work: Store, out: Store) -> dict[str, int]:
    """One shard: its decisions.arrow from the sparse decisions, then the local engine's write."""
    folder = shard_dir(src.shard)
    table = _shard_decisions_table(work, folder)
    if work.local is not None and out.local is not None and src.uri is None:
        _write_ipc(work.local / folder / "decisions.arrow", table)
        counts = write_shard(src.shard, cfg, work.local, out.local)
    else:
        with tempfile.TemporaryDirectory(prefix="synthfilter-") as tmp:
            scratch = Path(tmp)
            work.download(f"{folder}/ann.arrow", scratch / "work" / folder / "ann.arrow")
            _write_ipc(scratch / "work" / folder / "decisions.arrow", table)
            with local_shard(src, scratch) as shard:
                counts = write_shard(shard, cfg, scratch / "work", scratch / "out")
            for sub in ("rejected", "kept"):  # kept last: with the marker, it says the shard is done
                f = scratch / "out" / sub / src.shard.rel
                if f.exists():
                    out.upload(f, f"{sub}/{src.shard.rel}")
            work.write_bytes(f"{folder}/written.json", json.dumps(counts).encode())
    return counts


# -- report extras: diversity sample, score histogram ---------------------------------------------


def _decision_lookup(decisions: SparseDecisions) -> dict[str, np.ndarray]:
    return {"gidx": decisions.gidx, "reason": decisions.reason}


def _reasons_of(gidx: np.ndarray, status: np.ndarray | None, lookup: dict[str, np.ndarray]) -> np.ndarray:
    """Decision code of each record: the sparse decisions, else malformed or kept by status."""
    reason = np.full(len(gidx), KEPT, dtype=np.int8) if status is None else \
        np.where(status == STATUS_OK, KEPT, MALFORMED).astype(np.int8)
    keys = lookup["gidx"]
    if len(keys):
        at = np.minimum(np.searchsorted(keys, gidx), len(keys) - 1)
        hit = keys[at] == gidx
        reason[hit] = lookup["reason"][at[hit]]
    return reason


def _emit_score_counts_by_reason(chunk: dict[str, np.ndarray], lookup_ref: Any) -> dict[str, np.ndarray]:
    from synthfilter.report.charts import score_counts

    reason = _reasons_of(chunk["gidx"], chunk["status"], resolve(lookup_ref))
    return {"counts": score_counts(chunk["score"], reason, len(REASONS))[None]}


class RunLengthArray:
    """A long 1-D array given as (value, repeat) runs; slices are built on demand, so a chart
    that reads a billion-record array in chunks never holds it whole."""

    def __init__(self, values: np.ndarray, repeats: np.ndarray, dtype: Any):
        keep = repeats > 0
        self.values = np.asarray(values[keep], dtype=dtype)
        self.ends = np.cumsum(repeats[keep])
        self.dtype = np.dtype(dtype)

    def __len__(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    def __getitem__(self, key: slice) -> np.ndarray:
        lo, hi, _ = key.indices(len(self))
        first = np.searchsorted(self.ends, lo, side="right")
        last = np.searchsorted(self.ends, max(hi - 1, lo), side="right")
        starts = np.r_[0, self.ends[:-1]]
        reps = np.minimum(self.ends[first:last + 1], hi) - np.maximum(starts[first:last + 1], lo)
        return np.repeat(self.values[first:last + 1], np.maximum(reps, 0)).astype(self.dtype)


def score_histogram_arrays(source: Any, decisions: SparseDecisions) -> tuple[Any, Any]:
    """(scores, reasons) for ``render_run_report``: the per-reason score histogram, computed on
    the workers, as run-length arrays that give the chart the same counts."""
    import ray

    from synthfilter.report.charts import score_counts

    got = collect(source.map_chunks(_emit_score_counts_by_reason, ["status", "score"],
                                    lookup_ref=ray.put(_decision_lookup(decisions))))
    bins = score_counts(np.zeros(0), np.zeros(0, np.int8), len(REASONS)).shape[1]
    counts = got["counts"].sum(axis=0) if got else np.zeros((len(REASONS), bins), np.int64)
    centres = (np.arange(bins) + 0.5) / bins
    values = np.tile(centres, len(REASONS))
    codes = np.repeat(np.arange(len(REASONS)), bins)
    reps = counts.ravel()
    return RunLengthArray(values, reps, np.float32), RunLengthArray(codes, reps, np.int8)


def _sample_rows(batch: dict[str, np.ndarray], work: Store) -> Iterator[dict[str, np.ndarray]]:
    import pyarrow.ipc as ipc

    for blob in batch["part"]:
        if not blob:
            continue
        part: AnnotationPart = pickle.loads(blob)
        if not work.exists(f"{part.folder}/sample.arrow"):
            continue
        with work.open_input(f"{part.folder}/sample.arrow") as f:
            t = ipc.open_file(f).read_all()
        if t.num_rows:
            yield {"uniform": t.column("uniform").to_numpy(), "gidx": t.column("index").to_numpy() + part.offset,
                   "text": np.asarray(t.column("text").to_pylist(), dtype=object),
                   "group": np.asarray(t.column("group").to_pylist(), dtype=object)}


def diversity_on_ray(source: "FileAnnotations", decisions: SparseDecisions, cfg: Config) -> dict[str, Any]:
    """``run.diversity_report`` with the corpus-wide bottom-k sample chosen by a Ray sort
    (the k records with the smallest uniforms over all shards' samples)."""
    import ray

    from synthfilter.diversity import diversity_section

    k = cfg.report.sample_size
    items = [{"part": pickle.dumps(p)} for p in source.parts] or [{"part": b""}]
    samples = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        _sample_rows, batch_size=1, fn_kwargs={"work": source.work})
    got = collect(samples.sort(["uniform", "gidx"]).limit(k))
    if not got:
        return diversity_section([], [], [], [], seed=cfg.seed)
    order = np.lexsort((got["gidx"], got["uniform"]))[:k]
    g = got["gidx"][order]
    texts = got["text"][order].tolist()
    groups = got["group"][order].tolist()
    kept = _reasons_of(g, None, _decision_lookup(decisions)) == KEPT
    sigs = None
    if cfg.dedup.near and any(p.num_perm for p in source.parts):
        nodes = np.sort(g)
        found = collect(source.map_chunks(_emit_nodes, ["sigs"], nodes_ref=ray.put(nodes), fields=("sigs",)))
        sigs = found["sigs"][np.argsort(found["gidx"])][np.searchsorted(nodes, g)]
    return diversity_section(
        texts, [t for t, keep in zip(texts, kept) if keep], groups, [x for x, keep in zip(groups, kept) if keep],
        before_sigs=sigs, after_sigs=None if sigs is None else sigs[kept], seed=cfg.seed,
    )


# -- the run ----------------------------------------------------------------------------------------


class CountedReasons:
    """``Decisions.reason`` for the report builders, which only count reasons per shard slice:
    a slice returns that shard's reasons as counts (in reason order, not record order)."""

    def __init__(self, offsets: Sequence[int], counts: np.ndarray):
        self.offsets = list(offsets)
        self.counts = counts

    def __len__(self) -> int:
        return self.offsets[-1]

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, slice) or key.start not in self.offsets:
            raise TypeError("only whole-shard slices of the reasons are available on the driver")
        si = self.offsets.index(key.start)
        if key.stop != self.offsets[si + 1]:
            # Several shards can share a start when some are empty.
            si = next(i for i in range(si, len(self.offsets) - 1)
                      if self.offsets[i] == key.start and self.offsets[i + 1] == key.stop)
        return np.repeat(np.arange(len(REASONS), dtype=np.int8), self.counts[si])


@dataclass
class CountedDecisions:
    """What ``build_report``, ``build_manifest`` and ``check_conservation`` read of ``Decisions``."""

    reason: CountedReasons
    cluster_sizes: np.ndarray
    synthetic: dict[str, Any]
    warnings: list[str]
    totals: dict[str, int]

    def counts(self) -> dict[str, int]:
        return dict(self.totals)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _prepare_remote_out(out: Store, cfg: Config) -> dict[str, Any] | None:
    """The local engine's rules for an output directory, on a remote filesystem. Returns the
    finished run's report and manifest when ``--resume`` finds nothing left to do."""
    entries = out.entries()
    if not entries:
        return None
    if cfg.resume:
        if "manifest.json" in entries and WORK_DIR not in entries:
            return {"report": json.loads(out.read_bytes("report.json")),
                    "manifest": json.loads(out.read_bytes("manifest.json"))}
        if not out.exists(f"{WORK_DIR}/run.json"):
            raise UsageError(f"{out.root}: --resume given but this directory holds no synthfilter run to resume")
        prev = json.loads(out.read_bytes(f"{WORK_DIR}/run.json"))
        if prev.get("fingerprint") != config_fingerprint(cfg):
            raise UsageError(f"{out.root}: the interrupted run used different settings (config, seed, model or dedup "
                             "settings); resume with the same settings, or use --overwrite")
        return None
    if cfg.overwrite:
        for name in OUTPUT_ENTRIES:
            if name in entries:
                out.delete(name)
        leftover = [e for e in out.entries() if e not in OUTPUT_ENTRIES]
        if leftover:
            raise UsageError(f"{out.root}: --overwrite removes only synthfilter's own outputs, and the directory also "
                             f"holds {', '.join(leftover[:5])}; choose an empty directory")
        return None
    raise UsageError(f"{out.root}: output directory is not empty; pass --resume to continue a run or --overwrite to replace it")


def run_pipeline_ray(inputs: Sequence[str], out: str | os.PathLike[str], cfg: Config,
                     progress: Progress | None = None) -> RunResult:
    """``synthfilter run --engine ray``: the local engine's run, with its stages on Ray Data.

    Inputs and ``out`` may be local paths (they must then be the same paths on every node:
    a shared filesystem) or URIs of any filesystem pyarrow or fsspec supports (``s3://...``).
    A URI is taken as the str it is: never pass one through ``pathlib.Path`` (``s3:/...``).
    """
    import_ray()
    t_start = time.perf_counter()
    started = _now()
    out_loc = os.fspath(out)
    out_store = Store(out_loc)
    sources, ignored = discover_sources(inputs)
    shards = [s.shard for s in sources]
    if out_store.local is not None:
        out_path = out_store.local
        check_out_dir(out_path, [s.shard for s in sources if s.uri is None],
                       [i for i in map(os.fspath, inputs) if not is_uri(i)], cfg)
        if cfg.resume and (out_path / "manifest.json").exists() and not (out_path / WORK_DIR).exists():
            (progress or Progress(quiet=True)).log(f"{out_path}: run already complete; nothing to resume")
            return RunResult(report=json.loads((out_path / "report.json").read_text()),
                             manifest=json.loads((out_path / "manifest.json").read_text()), out=out_path)
        prepare_out_dir(out_path, cfg)
    else:
        finished = _prepare_remote_out(out_store, cfg)
        if finished is not None:
            (progress or Progress(quiet=True)).log(f"{out_loc}: run already complete; nothing to resume")
            return RunResult(report=finished["report"], manifest=finished["manifest"], out=out_loc)
    progress = progress or Progress(quiet=True)
    for path in ignored:
        progress.log(f"note: {path}: not a supported shard extension, not read")
    work = out_store.sub(WORK_DIR)
    scorer = Scorer(cfg)
    model = model_info(scorer)
    work.write_bytes("run.json", json.dumps({"fingerprint": config_fingerprint(cfg), "version": __version__}).encode())

    with ray_session(cfg), data_context():
        metas = _score_all(sources, cfg, work, progress, scorer)
        offsets = [0]
        for src in sources:
            offsets.append(offsets[-1] + int(metas[src.shard.rel]["records"]))
        try:
            t_decide = time.perf_counter()
            progress.log(f"decide: {offsets[-1]:,} records on Ray")
            source, decisions = _decide_all(sources, cfg, work, metas, offsets, scorer)
            progress.log(f"decide: {len(decisions.gidx):,} rejected as duplicates or downsampled "
                         f"({time.perf_counter() - t_decide:,.1f} s)")
        except HumanLossError:
            out_store.delete(WORK_DIR)
            if out_store.local is not None and not any(out_store.local.iterdir()):
                out_store.local.rmdir()
            raise
        written: dict[str, dict[str, int]] = {}
        if not cfg.dry_run:
            save_overrides(work, sources, offsets, decisions)
            written = _write_all(sources, cfg, work, out_store, progress)
        diversity = diversity_on_ray(source, decisions, cfg) if cfg.report.diversity else None
        histogram = score_histogram_arrays(source, decisions) if cfg.report.html else None
    meta_list = [metas[s.shard.rel] for s in sources]
    counted = CountedDecisions(
        reason=CountedReasons(offsets, per_shard_counts(decisions, offsets, meta_list)),
        cluster_sizes=decisions.cluster_sizes, synthetic=decisions.synthetic, warnings=decisions.warnings,
        totals=decisions.counts(),
    )
    conservation = check_conservation(shards, metas, written, counted, offsets, cfg.dry_run)  # type: ignore[arg-type]
    seconds = time.perf_counter() - t_start
    report = build_report(shards, metas, counted, cfg, seconds, scorer)  # type: ignore[arg-type]
    if diversity is not None:
        report["diversity"] = diversity
    manifest = build_manifest(shards, metas, counted, offsets, cfg, started, _now(), model, scorer,  # type: ignore[arg-type]
                              conservation, ignored)
    for entry, src in zip(manifest["inputs"], sources):
        entry["path"] = src.location
    out_store.write_bytes("manifest.json", json.dumps(manifest, indent=2).encode())
    out_store.write_bytes("report.json", json.dumps(report, indent=2).encode())
    if histogram is not None:
        from synthfilter.report.html import render_run_report

        html = render_run_report(report, manifest, scores=histogram[0], reasons=histogram[1],
                                 cluster_sizes=decisions.cluster_sizes)
        out_store.write_bytes("report.html", html.encode("utf-8"))
    out_store.delete(WORK_DIR)
    if out_store.local is not None:
        # A worker killed mid-write leaves its temporary file behind; its retry wrote the real one.
        for tmp in out_store.local.rglob(".*.tmp-*"):
            tmp.unlink(missing_ok=True)
    return RunResult(report=report, manifest=manifest, out=out_store.local or out_loc)


def _items(sources: Sequence[ShardSource]) -> Any:
    import ray

    items = [{"source": pickle.dumps(s)} for s in sources]
    return ray.data.from_items(items, override_num_blocks=max(1, len(items)))


def _score_all(sources: Sequence[ShardSource], cfg: Config, work: Store, progress: Progress,
               scorer: Scorer) -> dict[str, dict[str, Any]]:
    import ray

    metas: dict[str, dict[str, Any]] = {}
    todo = []
    for src in sources:
        meta = previous_meta(src, work) if cfg.resume else None
        if meta is not None:
            metas[src.shard.rel] = meta
        else:
            todo.append(src)
    progress.stage("score", len(todo))
    if not todo:
        return metas
    workers = cfg.workers if cfg.workers > 0 else cluster_cpus()
    ds = _items(todo).map_batches(
        ScoreShards, batch_size=1, compute=ray.data.ActorPoolStrategy(size=max(1, min(workers, len(todo)))),
        fn_constructor_kwargs={"cfg": cfg, "work_root": work.root, "bands": scorer.bands if scorer.uses_near else None},
    )
    for row in ds.iter_rows():
        _, meta = _result(row["meta"])
        metas[meta["rel"]] = meta
        progress.shard_done(meta["rel"], meta["records"])
    return metas


def _decide_all(sources: Sequence[ShardSource], cfg: Config, work: Store, metas: dict[str, dict[str, Any]],
                offsets: Sequence[int], scorer: Scorer) -> tuple[FileAnnotations, SparseDecisions]:
    near = cfg.dedup.near
    parts = []
    n_bands = num_perm = 0
    for si, src in enumerate(sources):
        m = metas[src.shard.rel]
        if near and m["records"]:
            n_bands, num_perm = int(m["bands"]), int(m["num_perm"])
        parts.append(AnnotationPart(shard_dir(src.shard), offsets[si], int(m["records"]), int(m["bands"]), int(m["num_perm"])))
    malformed = sum(int(m.get("malformed", 0)) for m in metas.values())
    card = scorer.detector.card if scorer.uses_detector else None
    source = FileAnnotations(work, parts)
    return source, decide_on_ray(source, offsets[-1], cfg, card, malformed, n_bands, num_perm)


def _write_all(sources: Sequence[ShardSource], cfg: Config, work: Store, out: Store,
               progress: Progress) -> dict[str, dict[str, int]]:
    written: dict[str, dict[str, int]] = {}
    todo = []
    for src in sources:
        folder = shard_dir(src.shard)
        if cfg.resume and work.exists(f"{folder}/written.json") and out.exists(f"kept/{src.shard.rel}"):
            written[src.shard.rel] = json.loads(work.read_bytes(f"{folder}/written.json"))
        else:
            todo.append(src)
    progress.stage("write", len(todo))
    if not todo:
        return written
    ds = _items(todo).map_batches(write_shards, batch_size=1, fn_kwargs={
        "cfg": cfg, "work_root": work.root, "out_root": out.root,
    })
    for row in ds.iter_rows():
        rel, counts = _result(row["result"])
        written[rel] = counts
        progress.shard_done(rel, counts["kept"] + counts["rejected"])
    return written
