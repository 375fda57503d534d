"""Sources: what the user points at -> a stream of file records.

A source is a local file, folder (walked recursively, through symlinked folders, each real folder
once) or glob (``**``: any folders); an ``s3://bucket/prefix`` (every object under it), object or
glob; or a zip/tar archive in either place, whose audio members become
records named ``archive.zip::member.wav`` and are read without unpacking the archive (zip members
and plain-tar members by byte range; compressed tars by streaming to the member). Archives met while
walking a folder or prefix are expanded the same way. Hidden names met while walking (any part
starting with ``.``, such as macOS's ``._x.wav`` AppleDouble files) and ``__MACOSX`` folders are
passed over: no one means them as audio. A hidden file named on its own is read.

Each record carries a stable ``file_id`` (URI + size + modification time or ETag), the key that
makes output exactly-once and runs resumable. S3 credentials come from the standard AWS chain
(environment, profile, instance role) on every machine that reads; the endpoint of an S3-compatible
store from ``--s3-endpoint`` or ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``. Only the endpoint is
ever passed around, never a credential.
"""

from __future__ import annotations

import glob
import hashlib
import io
import logging
import os
import sys
import tarfile
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from fnmatch import fnmatchcase
from itertools import islice
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, TypeVar

from mirbatch.audio import MEDIA_EXTENSIONS

__all__ = [
    "ARCHIVE_SUFFIXES",
    "FileRecord",
    "is_archive",
    "is_hidden",
    "S3Options",
    "SourceError",
    "filesystem",
    "list_sources",
    "make_file_id",
    "read_bytes",
    "read_source_list",
    "open_record",
    "record_bytes",
    "split_member",
    "walk",
]

ARCHIVE_SUFFIXES: tuple[str, ...] = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
MEMBER_SEPARATOR = "::"
_RETRIES = 4  # reads of remote objects: transient errors are retried with backoff
_LOOKUPS = 16  # lines of a source list looked up at once

T = TypeVar("T")
log = logging.getLogger(__name__)


class SourceError(Exception):
    """A source does not exist or cannot be listed."""


@dataclass(frozen=True)
class S3Options:
    """How to reach S3: only the endpoint of an S3-compatible store (credentials: the AWS chain)."""

    endpoint_url: str | None = None

    @classmethod
    def resolve(cls, endpoint_url: str | None = None) -> S3Options:
        """``endpoint_url``, else ``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL``, else AWS itself."""
        return cls(endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None)

    def storage_options(self) -> dict[str, Any]:
        return {"client_kwargs": {"endpoint_url": self.endpoint_url}} if self.endpoint_url else {}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FileRecord:
    """One input file.

    Attributes
    ----------
    path : str
        The input as listed (what the output's ``path`` column shows); archive members as
        ``archive.zip::member.wav``.
    uri : str
        Where to read it from: an absolute local path or ``s3://bucket/key``, with ``::member`` for
        archive members.
    size : int
        Bytes (of the member, for archive members).
    version : str
        What changes when the content does: modification time in ns, the S3 ETag, plus the member's
        CRC or header offset inside an archive.
    file_id : str
        Stable id derived from uri, size and version.
    offset : int
        Byte offset of a plain-tar member's data inside its archive (read by range); -1 otherwise.
    """

    path: str
    uri: str
    size: int
    version: str
    file_id: str
    offset: int = -1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_file_id(uri: str, size: int, version: str) -> str:
    """Stable id of an input: 32 hex digits of sha256 over uri, size and version."""
    return hashlib.sha256(f"{uri}\0{size}\0{version}".encode()).hexdigest()[:32]


def _record(path: str, uri: str, size: int, version: str, offset: int = -1) -> FileRecord:
    return FileRecord(path, uri, size, version, make_file_id(uri, size, version), offset)


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def is_hidden(relative: str) -> bool:
    """Whether a name met while walking is passed over: a part of it starts with ``.`` (macOS's
    ``._x.wav`` AppleDouble files, ``.Trash``) or is ``__MACOSX`` (what zips made on a Mac hold)."""
    return any(
        (part.startswith(".") and part not in (".", "..")) or part == "__MACOSX"
        for part in PurePosixPath(relative).parts
    )


def _is_media(name: str) -> bool:
    return Path(name).suffix.lower() in MEDIA_EXTENSIONS


def split_member(uri: str) -> tuple[str, str | None]:
    """``archive.zip::member.wav`` -> (``archive.zip``, ``member.wav``); other URIs -> (uri, None)."""
    head, sep, member = uri.partition(MEMBER_SEPARATOR)
    if sep and is_archive(head):
        return head, member
    return uri, None


def filesystem(uri: str, s3: S3Options | None = None) -> tuple[Any, str]:
    """(fsspec file system, path inside it) for a local path or an ``s3://`` URI."""
    if uri.startswith("s3://"):
        import s3fs

        return s3fs.S3FileSystem(**(s3 or S3Options.resolve()).storage_options()), uri.removeprefix("s3://")
    if "://" in uri and not uri.startswith("file://"):
        raise SourceError(f"unsupported scheme {uri.split('://', 1)[0]!r} in {uri!r}; use a local path or s3://")
    from fsspec.implementations.local import LocalFileSystem

    return LocalFileSystem(), uri.removeprefix("file://")


def _retry(action: Callable[[], T], what: str) -> T:
    """Run ``action``, retrying transient I/O errors (missing and forbidden objects are not transient)."""
    for attempt in range(_RETRIES):
        try:
            return action()
        except (FileNotFoundError, PermissionError, IsADirectoryError):
            raise
        except OSError as exc:
            if attempt == _RETRIES - 1:
                raise OSError(f"{what}: {exc} (after {_RETRIES} attempts)") from None
            time.sleep(0.25 * 2**attempt)
    raise AssertionError("unreachable")


# --- listing -------------------------------------------------------------------------------------


def _members(archive_path: str, archive_uri: str, version: str, fs: Any, fs_path: str) -> Iterator[FileRecord]:
    """Audio members of an archive (names only are read: the central directory or tar headers), and
    archives inside it, which are not opened: they become inputs whose row says so."""
    try:
        with fs.open(fs_path, "rb") as f:
            if archive_uri.lower().endswith(".zip"):
                with zipfile.ZipFile(f) as z:
                    for info in z.infolist():
                        if not info.is_dir() and _walkable(info.filename) and not is_hidden(info.filename):
                            yield _record(
                                f"{archive_path}{MEMBER_SEPARATOR}{info.filename}",
                                f"{archive_uri}{MEMBER_SEPARATOR}{info.filename}",
                                info.file_size,
                                f"{version}:{info.CRC:08x}",
                            )
                return
            plain = archive_uri.lower().endswith(".tar")
            with tarfile.open(fileobj=f, mode="r:" if plain else "r:*") as t:
                for m in t:
                    if m.isfile() and _walkable(m.name) and not is_hidden(m.name):
                        yield _record(
                            # `tar czf a.tgz .` names members ./x.wav; the path shows x.wav.
                            f"{archive_path}{MEMBER_SEPARATOR}{m.name.removeprefix('./')}",
                            f"{archive_uri}{MEMBER_SEPARATOR}{m.name}",
                            m.size,
                            f"{version}:{m.offset}",
                            m.offset_data if plain else -1,
                        )
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise SourceError(f"cannot read archive {archive_path}: {exc}") from None


def _local_entry(listed: str, path: Path) -> Iterator[FileRecord]:
    uri = str(path.absolute())
    try:
        st = path.stat()
    except OSError as exc:
        # A dangling link or a symlink loop: still one input, whose read fails with the reason.
        yield _record(listed, uri, 0, f"unreadable:{exc.errno}")
        return
    version = str(st.st_mtime_ns)
    if is_archive(path.name):
        from fsspec.implementations.local import LocalFileSystem

        yield from _members(listed, uri, version, LocalFileSystem(), uri)
    else:
        yield _record(listed, uri, st.st_size, version)


def walk(root: Path, keep: Callable[[str], bool], enter: Callable[[str], bool] = lambda _: True) -> Iterator[Path]:
    """Files under ``root`` whose path relative to it (POSIX) ``keep`` accepts, in sorted order: a
    folder's files, then its subfolders that ``enter`` accepts.

    Hidden names are passed over. Symlinked folders are followed (archives on shared storage link
    their volumes in); each real folder is walked once, so a link back up the tree (a loop) or a
    second link to one folder adds nothing. A folder that cannot be listed is skipped with a warning.
    """
    seen: set[tuple[int, int]] = set()
    stack = [(root, "")]
    while stack:
        folder, relative = stack.pop()
        try:
            st = folder.stat()
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            log.warning("cannot list folder %s (%s): its files are left out", folder, exc.strerror or exc)
            continue
        subfolders = []
        for entry in entries:
            name = f"{relative}{entry.name}"
            if is_hidden(entry.name):
                continue
            try:
                is_folder = entry.is_dir()  # follows links; a dangling link is a file (its read fails)
            except OSError:
                is_folder = False
            if is_folder:
                if enter(name):
                    subfolders.append((Path(entry.path), f"{name}/"))
            elif keep(name):
                yield Path(entry.path)
        stack.extend(reversed(subfolders))


def _walkable(name: str) -> bool:
    return _is_media(name) or is_archive(name)


def _glob_states(parts: tuple[str, ...], names: Iterable[str]) -> set[int]:
    """Where the glob ``parts`` can stand after matching the path parts ``names``: the indices of the
    parts still to match (``len(parts)``: matched whole). ``**`` matches any number of folders."""

    def skip_recursive(states: set[int]) -> set[int]:
        out = set(states)
        for i in sorted(states):
            while i < len(parts) and parts[i] == "**":
                i += 1
                out.add(i)
        return out

    states = skip_recursive({0})
    for name in names:
        states = skip_recursive(
            {
                i if parts[i] == "**" else i + 1
                for i in states
                if i < len(parts) and (parts[i] == "**" or fnmatchcase(name, parts[i]))
            }
        )
    return states


def _fixed_prefix(pattern: str) -> str:
    """The folders of a glob before its first wildcard: ``a/b/`` of ``a/b/*/c*.wav``, ``/`` of
    ``/*/x.wav``, and nothing of ``*/x.wav``."""
    parts = pattern.split("/")
    fixed = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    return "".join(f"{part}/" for part in parts[:fixed])


def _glob_local(pattern: str) -> Iterator[str]:
    """Files matching the local glob ``pattern`` (``**``: any folders), by walking only where it can
    match: Python's glob follows a symlink loop until the OS stops it and lists each file again at
    every turn."""
    fixed = _fixed_prefix(pattern)
    parts = tuple(pattern[len(fixed) :].split("/"))

    def keep(relative: str) -> bool:
        return len(parts) in _glob_states(parts, relative.split("/"))

    def enter(relative: str) -> bool:
        return any(i < len(parts) for i in _glob_states(parts, relative.split("/")))

    for file in walk(Path(fixed or "."), keep, enter):
        yield fixed + file.relative_to(fixed or ".").as_posix()


def _list_local(source: str) -> Iterator[FileRecord]:
    local = source.removeprefix("file://")
    path = Path(local)
    if path.is_dir():
        for file in walk(path, _walkable):
            yield from _local_entry(str(file), file)
    elif path.is_file():
        yield from _local_entry(local, path)
    elif glob.has_magic(local):
        matched = False
        for match in _glob_local(local):
            matched = True
            yield from _local_entry(match, Path(match))
        if not matched:
            raise SourceError(f"no files match {source!r}")
    else:
        raise SourceError(f"source {source!r} does not exist")


def _s3_entry(fs: Any, key: str, info: dict[str, Any]) -> Iterator[FileRecord]:
    uri = f"s3://{key}"
    version = str(info.get("ETag") or info.get("LastModified") or "").strip('"')
    if is_archive(key):
        yield from _members(uri, uri, version, fs, key)
    elif _is_media(key):
        yield _record(uri, uri, int(info.get("size") or info.get("Size") or 0), version)


def _object_info(fs: Any, path: str) -> dict[str, Any] | None:
    """The object ``path``'s details (one request), or None when it is a prefix or nothing."""
    try:
        info: dict[str, Any] = fs.info(path)
    except FileNotFoundError:
        return None
    return info if info.get("type") == "file" else None


def _list_s3(source: str, s3: S3Options) -> Iterator[FileRecord]:
    fs, path = filesystem(source, s3)
    try:
        if glob.has_magic(path):
            found = fs.glob(path, detail=True)
            if not found:
                raise SourceError(f"no objects match {source!r}")
        elif (info := _object_info(fs, path)) is not None:
            found = {path: info}
        else:
            found = fs.find(path.rstrip("/") + "/", detail=True)
            if not found:
                raise SourceError(f"no objects under {source!r}")
    except OSError as exc:  # missing bucket, no permission, unreachable store
        raise SourceError(f"cannot list {source!r}: {exc}") from None
    fixed = _fixed_prefix(path) if glob.has_magic(path) else path
    for key in sorted(found):
        info = found[key]
        if info.get("type", "file") == "file" and (key == path or not is_hidden(key[len(fixed) :])):
            yield from _s3_entry(fs, key, info)


def read_source_list(location: str, s3: S3Options | None = None) -> Iterator[tuple[int, str]]:
    """(line number, source) for each line of the list at ``location`` (a local file, an ``s3://``
    object, or ``-`` for standard input), read lazily: blank lines and lines starting with ``#`` are
    skipped, and nothing but the line break is cut (names may end in spaces)."""
    try:
        if location == "-":
            lines: Iterable[str] = sys.stdin
            yield from _source_lines(lines)
            return
        fs, path = filesystem(location, s3)
        with fs.open(path, "rt", encoding="utf-8") as f:
            yield from _source_lines(f)
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"cannot read the source list {location}: {exc}") from None


def _source_lines(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(lines, 1):
        entry = line.rstrip("\r\n")
        if entry.strip() and not entry.lstrip().startswith("#"):
            yield number, entry


def _not_there(source: str, s3: S3Options | None) -> bool:
    """Whether ``source`` names one local file or S3 object that is not there (a dangling link is
    not there either); globs and other schemes never are."""
    if glob.has_magic(source):
        return False
    if source.startswith("s3://"):
        fs, path = filesystem(source, s3)
        return not fs.exists(path)
    return "://" not in source.removeprefix("file://") and not os.path.exists(source.removeprefix("file://"))


def _missing(source: str) -> FileRecord:
    """An input named in a source list that is not there: one row, whose read says so."""
    uri = source if source.startswith("s3://") else str(Path(source.removeprefix("file://")).absolute())
    return _record(source, uri, 0, "missing")


def _list_one(source: str, s3: S3Options | None) -> Iterator[FileRecord]:
    if source.startswith("s3://"):
        records = _list_s3(source, s3 or S3Options.resolve())
    elif "://" in source and not source.startswith("file://"):
        scheme = source.split("://", 1)[0]
        raise SourceError(f"unsupported source scheme {scheme!r} in {source!r}; use a local path, glob or s3://")
    else:
        records = _list_local(source)
    listed = False
    for record in records:
        listed = True
        yield record
    if not listed:  # a folder, prefix or archive with no audio in it: most likely the wrong one
        kinds = ", ".join(sorted({*MEDIA_EXTENSIONS, *ARCHIVE_SUFFIXES}))
        raise SourceError(f"no audio files in {source!r} (looked for {kinds})")


def _listed_in(location: str, s3: S3Options | None) -> Iterator[FileRecord]:
    """The inputs of the source list at ``location``, in its order. One that is not there is an input
    too (a catalogue's list outlives some of its files): its row says so, where a source on the
    command line would stop the run. Lines are looked up 16 at a time (an S3 object costs round
    trips); each line's records are gathered before they stream on."""

    def lookup(line: tuple[int, str]) -> list[FileRecord]:
        number, source = line
        try:
            return list(_list_one(source, s3))
        except SourceError as exc:
            if not _not_there(source, s3):
                raise SourceError(f"{location} line {number}: {exc}") from None
            return [_missing(source)]

    lines = read_source_list(location, s3)
    with ThreadPoolExecutor(max_workers=_LOOKUPS) as pool:
        while batch := list(islice(lines, 16 * _LOOKUPS)):
            for records in pool.map(lookup, batch):
                yield from records


def list_sources(
    sources: Iterable[str], s3: S3Options | None = None, files_from: str | None = None
) -> Iterator[FileRecord]:
    """Records of every input in ``sources``, then in the source list ``files_from`` (see
    ``read_source_list``), each once even when listed twice (lazily: a source is listed only as the
    stream reaches it)."""
    seen: set[str] = set()
    listings = [_list_one(source, s3) for source in sources]  # generators: nothing is listed yet
    if files_from is not None:
        listings.append(_listed_in(files_from, s3))
    for records in listings:
        for record in records:
            if record.uri not in seen:
                seen.add(record.uri)
                yield record


# --- reading -------------------------------------------------------------------------------------


def read_bytes(uri: str, offset: int = -1, size: int = -1, s3: S3Options | None = None) -> bytes:
    """Content of a record's ``uri`` (archive members: only that member's bytes are fetched when
    the archive allows it)."""
    container, member = split_member(uri)
    fs, path = filesystem(container, s3)
    if member is None:
        return _retry(lambda: fs.cat_file(path), uri)
    if offset >= 0 and size >= 0:  # plain tar: a byte range
        return _retry(lambda: fs.cat_file(path, start=offset, end=offset + size), uri)

    def from_archive() -> bytes:
        with fs.open(path, "rb") as f:
            if container.lower().endswith(".zip"):
                with zipfile.ZipFile(f) as z:
                    return z.read(member)
            with tarfile.open(fileobj=f, mode="r:*") as t:
                extracted = t.extractfile(member)
                if extracted is None:
                    raise FileNotFoundError(f"{member} is not a file in {container}")
                return extracted.read()

    try:
        return _retry(from_archive, uri)
    except KeyError:
        raise FileNotFoundError(f"{member} is not in {container}") from None
    except (zipfile.BadZipFile, tarfile.TarError) as exc:
        raise OSError(f"cannot read {member} from {container}: {exc}") from None


@contextmanager
def open_record(record: dict[str, Any], s3: S3Options | None = None) -> Iterator[str | BinaryIO]:
    """Something ``soundfile`` reads a record from without holding the whole file: a local path, a
    buffered S3 file (range reads), or an archive member's bytes (members are read alone)."""
    container, member = split_member(record["uri"])
    if member is not None:
        yield io.BytesIO(record_bytes(record, s3))
    elif container.startswith("s3://"):
        fs, path = filesystem(container, s3)
        with _retry(lambda: fs.open(path, "rb", block_size=8 << 20), container) as f:
            yield f
    else:
        path = container.removeprefix("file://")
        with open(path, "rb"):  # fails here with the OS's reason (missing, symlink loop, permission)
            pass
        yield path


def record_bytes(record: dict[str, Any], s3: S3Options | None = None) -> bytes:
    """``read_bytes`` for a record as a dict (how pipeline stages receive them)."""
    return read_bytes(record["uri"], int(record.get("offset", -1)), int(record.get("size", -1)), s3)
