"""Sources: what the user points at -> a stream of file records.

A source is a file, a directory (walked recursively; only audio file names are taken), or a glob.
Each record carries a stable ``file_id`` (URI + size + modification time), the key that makes
output exactly-once and runs resumable.
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mirbatch.audio import AUDIO_EXTENSIONS

__all__ = ["FileRecord", "SourceError", "make_file_id", "list_sources", "read_bytes"]


class SourceError(Exception):
    """A source does not exist or cannot be listed."""


@dataclass(frozen=True)
class FileRecord:
    """One input file.

    Attributes
    ----------
    path : str
        The input as listed (what the output's ``path`` column shows).
    uri : str
        Where to read it from (an absolute path for local files).
    size : int
        Bytes.
    version : str
        What changes when the content does (modification time in ns for local files).
    file_id : str
        Stable id derived from uri, size and version.
    """

    path: str
    uri: str
    size: int
    version: str
    file_id: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_file_id(uri: str, size: int, version: str) -> str:
    """Stable id of an input: 32 hex digits of sha256 over uri, size and version."""
    return hashlib.sha256(f"{uri}\0{size}\0{version}".encode()).hexdigest()[:32]


def _local_record(listed: str, path: Path) -> FileRecord:
    st = path.stat()
    uri = str(path.absolute())
    version = str(st.st_mtime_ns)
    return FileRecord(listed, uri, st.st_size, version, make_file_id(uri, st.st_size, version))


def _walk(root: Path) -> Iterator[Path]:
    """Audio files under ``root`` in sorted order; symlinked folders are not followed (no loops)."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False, onerror=None):
        dirnames.sort()
        for name in sorted(filenames):
            if Path(name).suffix.lower() in AUDIO_EXTENSIONS:
                yield Path(dirpath) / name


def _list_one(source: str) -> Iterator[FileRecord]:
    if "://" in source and not source.startswith("file://"):
        scheme = source.split("://", 1)[0]
        raise SourceError(f"unsupported source scheme {scheme!r} in {source!r}; use a local file, folder or glob")
    local = source.removeprefix("file://")
    path = Path(local)
    if path.is_dir():
        for file in _walk(path):
            yield _local_record(str(file), file)
    elif path.is_file():
        yield _local_record(local, path)
    elif glob.has_magic(local):
        matches = sorted(glob.glob(local, recursive=True))
        if not matches:
            raise SourceError(f"no files match {source!r}")
        for match in matches:
            if Path(match).is_file():
                yield _local_record(match, Path(match))
    else:
        raise SourceError(f"source {source!r} does not exist")


def list_sources(sources: Iterable[str]) -> Iterator[FileRecord]:
    """Records of every input in ``sources``, each file once even when listed by two sources."""
    seen: set[str] = set()
    for source in sources:
        for record in _list_one(source):
            if record.uri not in seen:
                seen.add(record.uri)
                yield record


def read_bytes(uri: str) -> bytes:
    """Content of a record's ``uri``."""
    return Path(uri).read_bytes()
