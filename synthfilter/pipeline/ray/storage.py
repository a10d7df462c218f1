"""Where the Ray engine's files live: a store on a local disk or any pyarrow/fsspec filesystem,
and the input shards found there (``annotations``: the score stage's files read back)."""

from __future__ import annotations

import contextlib
import fnmatch
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Sequence

from synthfilter.io.shards import InputError, Shard, SUPPORTED, atomic_write_bytes, discover_shards, shard_format
from synthfilter.pipeline.run import UsageError
from synthfilter.pipeline.stages import WorkPaths

# Records per annotation chunk read from the work files (signatures: 512 bytes a record).
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
