"""Support libraries: a few labelled examples per instrument, embedded once, matched against.

A library is a folder holding ``support.parquet``: one row per sounding patch of every enrolled file
and pitch shift of the library's (label, source URI, file id, model id and hash,
patch start, pitch shift, embedding, added time) and nothing else, so it loads without unpickling
and is readable by any Parquet tool. Embeddings belong to one matcher: a library remembers the
checkpoint hash that made it and refuses every other model with the fix spelled out. Writes
replace the file atomically.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from mirbatch.aggregate import active_patches
from mirbatch.audio import DecodeError, decode
from mirbatch.features import (
    NO_SOUND,
    SILENT_DBFS,
    check_pitch_shifts,
    full_scale_level_db,
    make_featurizer,
    shifts_key,
)
from mirbatch.matching import SupportSet, embed_support_patches
from mirbatch.models import DEFAULT_MATCHER, Checkpoint, Matcher, inference_model, load_checkpoint
from mirbatch.sources import FileRecord, S3Options, is_hidden, list_sources, read_bytes

__all__ = [
    "SUPPORT_SCHEMA",
    "SupportError",
    "SupportLibrary",
    "EnrollResult",
    "labelled_sources",
    "embed_records",
    "enroll",
]

log = logging.getLogger(__name__)

SUPPORT_FILE = "support.parquet"

SUPPORT_SCHEMA = pa.schema(
    [
        ("label", pa.string()),
        ("source", pa.string()),
        ("file_id", pa.string()),
        ("patch", pa.int32()),
        ("start_s", pa.float32()),
        ("pitch_shift", pa.int16()),
        ("model", pa.string()),
        ("model_sha256", pa.string()),
        ("features", pa.string()),
        ("embedding", pa.list_(pa.float32())),
        ("added_at", pa.timestamp("us", tz="UTC")),
    ]
)


class SupportError(Exception):
    """A support library is missing, malformed, or belongs to another model."""


@dataclass(frozen=True)
class SupportLibrary:
    """A support library in memory (``open``, change, ``save``)."""

    path: Path
    table: pa.Table = field(repr=False)

    @classmethod
    def open(cls, path: str | Path, must_exist: bool = False) -> SupportLibrary:
        """Load ``path`` (a library folder), validating its schema; an absent one is empty unless
        ``must_exist``."""
        folder = Path(path)
        file = folder / SUPPORT_FILE
        if not file.exists():
            if must_exist:
                raise SupportError(
                    f"no support library at {folder} (no {SUPPORT_FILE}); create one with "
                    f"'mirbatch support add {folder} EXAMPLES/ --label NAME'"
                )
            return cls(folder, SUPPORT_SCHEMA.empty_table())
        try:
            table = pq.read_table(file)
        except (OSError, pa.ArrowInvalid) as exc:
            raise SupportError(f"{file} is not a readable Parquet file: {exc}") from None
        if "pitch_shift" not in table.column_names:  # libraries from before pitch-shifted enrolment
            table = table.append_column("pitch_shift", pa.array(np.zeros(len(table), dtype=np.int16)))
        missing = [f.name for f in SUPPORT_SCHEMA if f.name not in table.column_names]
        if missing:
            raise SupportError(f"{file} is not a mirbatch support library (missing columns: {', '.join(missing)})")
        try:
            table = table.select(SUPPORT_SCHEMA.names).cast(SUPPORT_SCHEMA)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise SupportError(f"{file} has columns of the wrong type: {exc}") from None
        library = cls(folder, table)
        hashes = library.model_hashes
        if len(hashes) > 1:
            raise SupportError(f"{file} mixes embeddings of {len(hashes)} models; rebuild it with one model")
        dims = set(pa.compute.list_value_length(table["embedding"]).to_pylist())
        if len(dims) > 1:
            raise SupportError(f"{file} has embeddings of different lengths {sorted(dims)}")
        return library

    @property
    def model_hashes(self) -> list[str]:
        return sorted(set(self.table["model_sha256"].to_pylist()))

    @property
    def model(self) -> str | None:
        """``name@hash12`` of the model that embedded this library (None when empty)."""
        return self.table["model"][0].as_py() if len(self.table) else None

    @property
    def shifts(self) -> tuple[int, ...]:
        """The pitch shifts its examples are enrolled at (``()`` when empty)."""
        return tuple(sorted(set(self.table["pitch_shift"].to_pylist())))

    @property
    def labels(self) -> list[str]:
        return sorted(set(self.table["label"].to_pylist()))

    def check_model(self, checkpoint: Checkpoint) -> None:
        """Raise ``SupportError`` (with the fix) unless ``checkpoint`` made this library's embeddings."""
        hashes = self.model_hashes
        if not hashes or hashes == [checkpoint.sha256]:
            return
        if self.model and self.model.split("@")[0] == checkpoint.name:
            raise SupportError(
                f"support library {self.path} was enrolled with another build of {checkpoint.name} "
                f"({self.model}; this one is {checkpoint.model_id}, e.g. recalibrated by an upgrade): enroll the "
                f"examples again into a new library: 'mirbatch support add NEW_LIB EXAMPLES/ --model {checkpoint.name}'"
            )
        raise SupportError(
            f"support library {self.path} holds embeddings of model {self.model}, not {checkpoint.model_id}; "
            f"use --model {self.model.split('@')[0] if self.model else ''} (the library's model), or enroll "
            f"the examples again with that model into a new library: "
            f"'mirbatch support add NEW_LIB EXAMPLES/ --model {checkpoint.name}'"
        )

    def add(self, rows: pa.Table) -> SupportLibrary:
        """A library with ``rows`` (SUPPORT_SCHEMA) appended."""
        return SupportLibrary(self.path, pa.concat_tables([self.table, rows.cast(SUPPORT_SCHEMA)]))

    def remove(self, label: str) -> tuple[SupportLibrary, int]:
        """A library without ``label``'s examples, and how many files were removed."""
        mask = pa.compute.equal(self.table["label"], label)
        files = len(set(self.table.filter(mask)["file_id"].to_pylist()))
        return SupportLibrary(self.path, self.table.filter(pa.compute.invert(mask))), files

    def enrolled(self) -> set[tuple[str, str]]:
        """(label, file_id) pairs already in the library."""
        return set(zip(self.table["label"].to_pylist(), self.table["file_id"].to_pylist(), strict=True))

    def save(self) -> None:
        """Write atomically (temporary file, then rename)."""
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.path / f".{SUPPORT_FILE}.tmp"
        pq.write_table(self.table, tmp)
        tmp.replace(self.path / SUPPORT_FILE)

    def summary(self) -> list[tuple[str, int, int]]:
        """(label, files, patches) per label (patches as enrolled, not counting pitch-shifted copies)."""
        unshifted = self.table.filter(pa.compute.equal(self.table["pitch_shift"], 0))
        labels = unshifted["label"].to_pylist()
        file_ids = unshifted["file_id"].to_pylist()
        files: dict[str, set[str]] = {}
        patches: dict[str, int] = {}
        for label, fid in zip(labels, file_ids, strict=True):
            files.setdefault(label, set()).add(fid)
            patches[label] = patches.get(label, 0) + 1
        return [(label, len(files[label]), patches[label]) for label in sorted(files)]

    def embeddings(self) -> np.ndarray:
        """[shape=(rows, dim), dtype=float32]"""
        if not len(self.table):
            return np.zeros((0, 0), dtype=np.float32)
        flat = self.table["embedding"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
        return np.asarray(flat, dtype=np.float32).reshape(len(self.table), -1)

    def support_set(self) -> SupportSet:
        """The library ready for scoring (shots are enrolled files, per label)."""
        shots = [f"{label}\0{fid}" for label, fid in zip(self.table["label"].to_pylist(),
                                                         self.table["file_id"].to_pylist(), strict=True)]  # fmt: skip
        return SupportSet.build(self.embeddings(), shots, self.table["label"].to_pylist())


def labelled_sources(
    sources: Sequence[str], label: str | None, s3: S3Options | None = None
) -> Iterator[tuple[str, FileRecord]]:
    """(label, record) for every input: all of ``sources`` under ``label``, or, without a label, each
    source is a local folder holding a folder per label."""
    if label is not None:
        for record in list_sources(sources, s3):
            yield label, record
        return
    for source in sources:
        root = Path(source)
        if not root.is_dir():
            raise SupportError(f"{source} is not a folder; without --label, each SOURCE must hold a folder per label")
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not is_hidden(p.name))
        if not folders:
            raise SupportError(f"{source} has no label folders; pass --label NAME to enroll its files under one label")
        for folder in folders:
            for record in list_sources([str(folder)]):
                yield folder.name, record


def embed_records(
    checkpoint: Checkpoint,
    items: Iterable[tuple[str, FileRecord]],
    shifts: Sequence[int],
    batch_size: int = 64,
    s3: S3Options | None = None,
) -> tuple[pa.Table, list[tuple[str, str]]]:
    """Decode, featurize and embed files in this process, each patch at every pitch shift in ``shifts``.

    Returns (rows in SUPPORT_SCHEMA for every sounding patch, [(path, reason)] of files that could not
    be used).
    """
    if not isinstance(checkpoint.model, Matcher):
        raise SupportError(
            f"model {checkpoint.name} ({checkpoint.meta.architecture}) is a classifier; support libraries need a "
            f"matcher: {DEFAULT_MATCHER}, or a checkpoint trained with --model siamese|residual-siamese"
        )
    model = inference_model(checkpoint.model)
    features = checkpoint.meta.features
    featurizer = make_featurizer(features)
    full_scale_db = full_scale_level_db(featurizer)
    now = datetime.now(UTC)
    columns: dict[str, list[object]] = {name: [] for name in SUPPORT_SCHEMA.names}
    failed: list[tuple[str, str]] = []
    for label, record in items:
        try:
            audio = decode(read_bytes(record.uri, record.offset, record.size, s3), features.sample_rate)
        except DecodeError as exc:
            failed.append((record.path, exc.reason))
            continue
        except OSError as exc:
            failed.append((record.path, f"cannot read file: {exc}"))
            continue
        with torch.inference_mode():
            patches = featurizer([audio.samples], resize=False)
        # As tag hears them: no patch under -80 dBFS, none far under the file's loudest.
        keep = active_patches(patches.level_db - full_scale_db, floor_db=SILENT_DBFS)
        if not keep.any():
            failed.append((record.path, f"{NO_SOUND}: not an example of anything"))
            continue
        inputs = patches.inputs[torch.from_numpy(keep)]
        emb, shift = embed_support_patches(model, features, inputs, shifts, batch_size)
        starts = np.tile(patches.start_s[keep], len(shifts))
        indices = np.tile(np.arange(len(inputs)), len(shifts))
        for i, start, k, vector in zip(indices, starts, shift, emb.numpy(), strict=True):
            for name, value in (
                ("label", label),
                ("source", record.path),
                ("file_id", record.file_id),
                ("patch", int(i)),
                ("start_s", float(start)),
                ("pitch_shift", int(k)),
                ("model", checkpoint.model_id),
                ("model_sha256", checkpoint.sha256),
                ("features", features.name),
                ("embedding", vector.astype(np.float32)),
                ("added_at", now),
            ):
                columns[name].append(value)
    return pa.Table.from_pydict(columns, schema=SUPPORT_SCHEMA), failed


@dataclass(frozen=True)
class EnrollResult:
    """What ``enroll`` did."""

    files_added: int
    files_already_enrolled: int
    patches_added: int
    failed: list[tuple[str, str]]
    model: str


def enroll(
    library: str | Path,
    sources: Sequence[str],
    label: str | None = None,
    model: str | None = None,
    s3_endpoint: str | None = None,
    shifts: Sequence[int] | None = None,
) -> EnrollResult:
    """Embed ``sources`` with ``model`` (default: the bundled matcher) and add them to ``library``.

    ``shifts``: pitch shifts (semitones, 0 included) at which each example is also enrolled;
    default: the library's own, else the model's ``support_shifts``. A library keeps one set.
    Files already enrolled under the same label are skipped, so repeating a command is harmless.
    """
    lib = SupportLibrary.open(library)
    checkpoint = load_checkpoint(model or DEFAULT_MATCHER)
    lib.check_model(checkpoint)
    chosen = tuple(sorted(shifts)) if shifts is not None else lib.shifts or checkpoint.meta.support_shifts
    try:
        check_pitch_shifts(chosen, checkpoint.meta.features)
    except ValueError as exc:
        raise SupportError(f"model {checkpoint.model_id}: {exc} (--support-shifts)") from None
    if lib.shifts and chosen != lib.shifts:
        raise SupportError(
            f"support library {lib.path} is enrolled at pitch shifts {shifts_key(lib.shifts)}; enroll at those "
            f"(--support-shifts={shifts_key(lib.shifts)}) or into a new library"
        )
    done = lib.enrolled()
    s3 = S3Options.resolve(s3_endpoint)
    items = list(labelled_sources(sources, label, s3))
    todo = [(lab, rec) for lab, rec in items if (lab, rec.file_id) not in done]
    rows, failed = embed_records(checkpoint, todo, chosen, s3=s3)
    if len(rows):
        lib.add(rows).save()
    return EnrollResult(
        files_added=len(set(rows["file_id"].to_pylist())),
        files_already_enrolled=len(items) - len(todo),
        patches_added=len(rows) // len(chosen),
        failed=failed,
        model=checkpoint.model_id,
    )
