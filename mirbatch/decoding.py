"""Decoding stage of ``tag``: file records -> mono chunks at the model's rate, as Arrow rows.

Kept apart from ``pipeline`` so the Ray tasks that run it import only soundfile, soxr and pyarrow,
never torch or librosa (seconds per worker process).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from mirbatch.audio import DecodeError, decode_chunks
from mirbatch.sources import S3Options, is_archive, open_record, split_member

__all__ = ["DECODED_SCHEMA", "decode_batch"]

DECODED_SCHEMA = pa.schema(
    [
        ("file_id", pa.string()),
        ("path", pa.string()),
        ("size", pa.int64()),
        ("chunk", pa.int32()),
        ("n_chunks", pa.int32()),
        ("offset_s", pa.float64()),
        ("samples", pa.large_binary()),
        ("duration_s", pa.float64()),
        ("sample_rate", pa.int32()),
        ("channels", pa.int32()),
        ("error", pa.string()),
    ]
)


def decode_batch(batch: pa.Table, sample_rate: int, chunk_s: float, s3: S3Options | None = None) -> Iterator[pa.Table]:
    """Ray Data stage: file records -> decoded mono chunks (one row per chunk, or an error row).

    A generator: rows leave in blocks of about one chunk of audio as they are decoded, so a task
    holds at most a chunk or two of one file however long it is. Only a file's last row carries
    ``n_chunks`` (the count is known once the stream ends); the others carry -1.
    """
    rows: list[dict[str, Any]] = []
    buffered = 0
    chunk_len = max(1, int(chunk_s * sample_rate))
    for rec in batch.to_pylist():
        base = {"file_id": rec["file_id"], "path": rec["path"], "size": rec["size"]}
        index = 0
        _, member = split_member(rec["uri"])
        if member is not None and is_archive(member):
            reason = f"an archive inside an archive is not opened: extract {member} and tag it as a source of its own"
            rows.append({**base, "chunk": 0, "n_chunks": 1, "offset_s": 0.0, "error": reason})
            continue
        try:
            with open_record(rec, s3) as handle:
                for chunk in decode_chunks(handle, sample_rate, chunk_len):
                    index = chunk.index
                    rows.append(
                        {
                            **base,
                            "chunk": chunk.index,
                            "n_chunks": chunk.index + 1 if chunk.last else -1,
                            "offset_s": chunk.index * chunk_len / sample_rate,
                            "samples": chunk.samples.tobytes(),
                            "duration_s": chunk.duration_s,
                            "sample_rate": chunk.source_rate,
                            "channels": chunk.channels,
                            "error": None,
                        }
                    )
                    index += 1
                    buffered += len(chunk.samples)
                    if buffered >= chunk_len:
                        yield pa.Table.from_pylist(rows, schema=DECODED_SCHEMA)
                        rows, buffered = [], 0
        except DecodeError as exc:
            rows.append({**base, "chunk": index, "n_chunks": index + 1, "offset_s": 0.0, "error": exc.reason})
        except OSError as exc:
            error = f"cannot read file: {exc}"
            rows.append({**base, "chunk": index, "n_chunks": index + 1, "offset_s": 0.0, "error": error})
    if rows:
        yield pa.Table.from_pylist(rows, schema=DECODED_SCHEMA)
