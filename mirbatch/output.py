"""Output: the Parquet schema of ``tag --out DIR``, atomic part files, resume and commit.

``DIR`` (a folder or an ``s3://`` prefix) is a Parquet dataset of ``part-<run>-<seq>.parquet``
files. Each part appears whole: on disk it is written under a hidden temporary name and renamed
into place, on S3 it is one PUT. So a reader (pandas, pyarrow.dataset, DuckDB: all skip names
starting with ``.`` or ``_``) never sees half a part. A run that ends writes ``_SUCCESS``
(a JSON summary); its absence means the dataset is partial, and rerunning the same command resumes:
inputs whose ``file_id`` is already in a part are not processed again.
"""

from __future__ import annotations

import io
import json
import os
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mirbatch.sources import S3Options, filesystem

__all__ = ["OUTPUT_SCHEMA", "SUCCESS_FILE", "ResultWriter", "completed_file_ids", "read_output", "reset_output"]

SEGMENT_TYPE = pa.struct(
    [
        ("start_s", pa.float32()),
        ("end_s", pa.float32()),
        ("label", pa.string()),
        ("confidence", pa.float32()),
    ]
)

OUTPUT_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("label", pa.string()),
        ("confidence", pa.float32()),
        ("top_labels", pa.list_(pa.string())),
        ("top_scores", pa.list_(pa.float32())),
        ("segments", pa.list_(SEGMENT_TYPE)),
        ("duration_s", pa.float64()),
        ("sample_rate", pa.int32()),
        ("channels", pa.int32()),
        ("mode", pa.string()),
        ("model", pa.string()),
        ("features", pa.string()),
        ("file_id", pa.string()),
        ("size_bytes", pa.int64()),
        ("tagged_at", pa.timestamp("us", tz="UTC")),
    ]
)

SUCCESS_FILE = "_SUCCESS"
_PART_GLOB = "part-*.parquet"
_READERS = 16  # parts read at once


def _fs(out: str | Path, s3: S3Options | None) -> tuple[Any, str]:
    fs, root = filesystem(str(out), s3)
    return fs, root.rstrip("/")


def _write_atomic(fs: Any, root: str, name: str, data: bytes) -> None:
    """Make ``root/name`` appear whole: on a local disk a hidden temporary file renamed into place; on
    S3 one PUT (objects appear only when complete)."""
    target = f"{root}/{name}"
    if "file" in fs.protocol:  # ("file", "local") for local disks
        tmp = f"{root}/.{name}.tmp"
        with fs.open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    else:
        fs.pipe_file(target, data)


def _parts(fs: Any, root: str) -> list[str]:
    return sorted(fs.glob(f"{root}/{_PART_GLOB}")) if fs.exists(root) else []


def _read_parts(fs: Any, parts: list[str], columns: list[str] | None) -> list[pa.Table]:
    """``columns`` of each part, in the order of ``parts``; read 16 at a time, since on S3 each part
    costs round trips (footer, then columns) more than bytes."""

    def read(part: str) -> pa.Table:
        with fs.open(part, "rb") as f:
            return pq.read_table(f, columns=columns)

    with ThreadPoolExecutor(max_workers=max(1, min(_READERS, len(parts)))) as pool:
        return list(pool.map(read, parts))


def completed_file_ids(out: str | Path, s3: S3Options | None = None) -> set[str]:
    """``file_id``s already written to ``out`` by earlier runs (empty when there is none)."""
    fs, root = _fs(out, s3)
    return {i for table in _read_parts(fs, _parts(fs, root), ["file_id"]) for i in table.column("file_id").to_pylist()}


def read_output(
    out: str | Path, columns: list[str] | None = None, s3: S3Options | None = None
) -> tuple[pa.Table, bool]:
    """The rows of the tag output ``out`` (local or ``s3://``) and whether its last run committed.

    Raises
    ------
    FileNotFoundError
        When ``out`` holds no part: it is no tag output, or no run has written a part yet.
    """
    fs, root = _fs(out, s3)
    tables = _read_parts(fs, _parts(fs, root), columns)
    if not tables:
        raise FileNotFoundError(f"{out} holds no tag output (no {_PART_GLOB} files)")
    return pa.concat_tables(tables), fs.exists(f"{root}/{SUCCESS_FILE}")


def reset_output(out: str | Path, s3: S3Options | None = None) -> None:
    """Remove what earlier runs wrote to ``out`` (parts, temporary parts, marker), nothing else."""
    fs, root = _fs(out, s3)
    if not fs.exists(root):
        return
    doomed = [*_parts(fs, root), *fs.glob(f"{root}/.part-*")]
    if fs.exists(f"{root}/{SUCCESS_FILE}"):
        doomed.append(f"{root}/{SUCCESS_FILE}")
    for path in doomed:
        fs.rm(path, recursive=True)


class ResultWriter:
    """Buffers result rows and writes them as atomic Parquet parts, locally or on S3.

    Parameters
    ----------
    out : str or Path
        Dataset folder or ``s3://bucket/prefix``.
    rows_per_part : int
        Rows buffered before a part is written.
    flush_s : float
        A part is also written when this long has passed since the last one, so a killed driver
        loses at most that much work (the rerun redoes it).
    s3 : S3Options, optional
    """

    def __init__(
        self, out: str | Path, rows_per_part: int = 2000, flush_s: float = 15.0, s3: S3Options | None = None
    ) -> None:
        self.fs, self.root = _fs(out, s3)
        self.rows_per_part = rows_per_part
        self.flush_s = flush_s
        self._last_flush = time.monotonic()
        self.run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
        self._rows: list[dict[str, Any]] = []
        self._seq = 0
        try:
            self.fs.makedirs(self.root, exist_ok=True)
        except OSError as exc:
            raise OSError(f"cannot create the output folder {out}: {exc.strerror or exc}") from exc
        # A new run makes the dataset incomplete until it commits.
        if self.fs.exists(f"{self.root}/{SUCCESS_FILE}"):
            self.fs.rm(f"{self.root}/{SUCCESS_FILE}")

    def add(self, row: dict[str, Any]) -> None:
        self._rows.append(row)
        if len(self._rows) >= self.rows_per_part or time.monotonic() - self._last_flush >= self.flush_s:
            self.flush()

    def extend(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            self.add(row)

    def flush(self) -> None:
        """Write buffered rows as one part, atomically."""
        self._last_flush = time.monotonic()
        if not self._rows:
            return
        table = pa.Table.from_pylist(self._rows, schema=OUTPUT_SCHEMA)
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        _write_atomic(self.fs, self.root, f"part-{self.run_id}-{self._seq:05d}.parquet", buffer.getvalue())
        self._seq += 1
        self._rows = []

    def drop_superseded(self) -> int:
        """Keep one row per ``path``, the newest; return how many older rows went.

        A rerun tags a file that changed since again (its ``file_id`` follows its content), and two
        runs started at once into one ``--out`` tag the same files twice: either leaves two rows with
        one ``path``. Only parts holding older rows are rewritten, each atomically under its own
        name, so a reader sees the old part or the new one, and a run killed half-way leaves the
        rest to the next commit.
        """
        self.flush()
        parts = _parts(self.fs, self.root)  # listed once: a run writing beside this one adds parts
        keys = _read_parts(self.fs, parts, ["path", "tagged_at"])
        newest: dict[str, tuple[Any, int, int]] = {}
        for n, table in enumerate(keys):
            for row, (path, at) in enumerate(
                zip(*(table.column(c).to_pylist() for c in ("path", "tagged_at")), strict=True)
            ):
                if path not in newest or at > newest[path][0]:
                    newest[path] = (at, n, row)
        dropped = 0
        for n, (part, table) in enumerate(zip(parts, keys, strict=True)):
            keep = [newest[path][1:] == (n, row) for row, path in enumerate(table.column("path").to_pylist())]
            if all(keep):
                continue
            dropped += len(keep) - sum(keep)
            if not any(keep):
                self.fs.rm(part)
                continue
            with self.fs.open(part, "rb") as f:
                kept = pq.read_table(f).filter(pa.array(keep))
            buffer = io.BytesIO()
            pq.write_table(kept, buffer, compression="zstd")
            _write_atomic(self.fs, self.root, part.rsplit("/", 1)[-1], buffer.getvalue())
        return dropped

    def commit(self, summary: dict[str, Any]) -> None:
        """Flush and mark the dataset complete with ``summary`` in ``_SUCCESS``."""
        self.flush()
        record = {"run_id": self.run_id, "committed_at": datetime.now(UTC).isoformat(timespec="seconds"), **summary}
        _write_atomic(self.fs, self.root, SUCCESS_FILE, (json.dumps(record, indent=2, default=str) + "\n").encode())
