"""Output: the Parquet schema of ``tag --out DIR``, atomic part files, resume and commit.

``DIR`` is a Parquet dataset of ``part-<run>-<seq>.parquet`` files. Each part is written under a
hidden temporary name and renamed into place, so a reader (pandas, pyarrow.dataset, DuckDB: all skip
names starting with ``.`` or ``_``) never sees half a part. A run that ends writes ``_SUCCESS``
(a JSON summary); its absence means the dataset is partial, and rerunning the same command resumes:
inputs whose ``file_id`` is already in a part are not processed again.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["OUTPUT_SCHEMA", "SUCCESS_FILE", "ResultWriter", "completed_file_ids", "reset_output"]

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


def completed_file_ids(out: Path) -> set[str]:
    """``file_id``s already written to ``out`` by earlier runs (empty when there is none)."""
    if not out.is_dir():
        return set()
    done: set[str] = set()
    for part in sorted(out.glob(_PART_GLOB)):
        table = pq.read_table(part, columns=["file_id"])
        done.update(table.column("file_id").to_pylist())
    return done


def reset_output(out: Path) -> None:
    """Remove what earlier runs wrote to ``out`` (parts, temporary parts, marker), nothing else."""
    if not out.is_dir():
        return
    for path in [*out.glob(_PART_GLOB), *out.glob(".part-*"), out / SUCCESS_FILE]:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


class ResultWriter:
    """Buffers result rows and writes them as atomic Parquet parts.

    Parameters
    ----------
    out : Path
        Dataset folder (created).
    rows_per_part : int
        Rows buffered before a part is written.
    """

    def __init__(self, out: Path, rows_per_part: int = 2000) -> None:
        self.out = out
        self.rows_per_part = rows_per_part
        self.run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
        self._rows: list[dict[str, Any]] = []
        self._seq = 0
        self.rows_written = 0
        out.mkdir(parents=True, exist_ok=True)
        # A new run makes the dataset incomplete until it commits.
        (out / SUCCESS_FILE).unlink(missing_ok=True)

    def add(self, row: dict[str, Any]) -> None:
        self._rows.append(row)
        if len(self._rows) >= self.rows_per_part:
            self.flush()

    def extend(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            self.add(row)

    def flush(self) -> None:
        """Write buffered rows as one part (temporary name, then an atomic rename)."""
        if not self._rows:
            return
        table = pa.Table.from_pylist(self._rows, schema=OUTPUT_SCHEMA)
        name = f"part-{self.run_id}-{self._seq:05d}.parquet"
        tmp = self.out / f".{name}.tmp"
        pq.write_table(table, tmp, compression="zstd")
        tmp.replace(self.out / name)
        self._seq += 1
        self.rows_written += len(self._rows)
        self._rows = []

    def commit(self, summary: dict[str, Any]) -> None:
        """Flush and mark the dataset complete with ``summary`` in ``_SUCCESS``."""
        self.flush()
        record = {"run_id": self.run_id, "committed_at": datetime.now(UTC).isoformat(timespec="seconds"), **summary}
        tmp = self.out / f".{SUCCESS_FILE}.tmp"
        tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
        tmp.replace(self.out / SUCCESS_FILE)
