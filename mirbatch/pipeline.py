"""Ray Data wiring for ``mirbatch tag``.

records (driver) -> ``decoding.decode_batch`` (CPU tasks: files -> mono chunks) -> ``ScoreActor`` (actor
pool: features + model, on the actor's GPU when it has one; class probabilities, or in match mode
the support labels' scores) -> driver: chunks -> files (``aggregate``) -> ``ResultWriter`` (atomic
Parquet parts, resume by ``file_id``).

Long files are cut into chunks at decode time, so no stage ever holds more than one chunk of one
file per row, and one file's chunks can run on several actors at once.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import numpy as np
import pyarrow as pa

from mirbatch.aggregate import AGGREGATIONS, DEFAULT_AGGREGATION, aggregate_file
from mirbatch.decoding import DECODED_SCHEMA, decode_batch
from mirbatch.features import SILENT_DBFS, FeatureConfig, full_scale_level_db, make_featurizer, shifts_key
from mirbatch.matching import SupportSet, calibrated_threshold, score_against_support
from mirbatch.models import (
    DEFAULT_CLASSIFIER,
    DEFAULT_MATCHER,
    Checkpoint,
    Matcher,
    checkpoint_from_bytes,
    inference_model,
    read_checkpoint_bytes,
)
from mirbatch.output import ResultWriter, completed_file_ids, reset_output
from mirbatch.precision import PRECISIONS, autocast
from mirbatch.sources import FileRecord, S3Options, list_sources
from mirbatch.wording import counted

__all__ = [
    "TagConfig",
    "TagSummary",
    "TagInterrupted",
    "ScoreActor",
    "FileAssembler",
    "default_token_notice_dropped",
    "ensure_ray",
    "check_local_resources",
    "run_tag",
    "plan_tag",
    "TagPlan",
    "sigterm_as_interrupt",
]

log = logging.getLogger(__name__)

_SCORED_SCHEMA = pa.schema(
    [f for f in DECODED_SCHEMA if f.name != "samples"]
    + [
        pa.field("probs", pa.large_binary()),
        pa.field("starts", pa.large_binary()),
        pa.field("levels", pa.large_binary()),
    ]
)


@dataclass(frozen=True)
class TagConfig:
    """One ``tag`` run (the CLI's options)."""

    sources: tuple[str, ...]
    out: str
    files_from: str | None = None  # a source list: one source per line (``sources.read_source_list``)
    mode: str = "classify"
    model: str | None = None
    support: str | None = None
    unknown_threshold: float | None = None
    features: str | None = None
    workers: int = 1
    gpus_per_worker: float = 0.0
    batch_size: int = 64
    address: str | None = None
    resume: bool = True
    top_k: int = 3
    aggregation: str = DEFAULT_AGGREGATION
    precision: str = "fp32"
    chunk_s: float = 60.0
    files_per_call: int = 16
    s3_endpoint: str | None = None
    part_seconds: float = 15.0

    def __post_init__(self) -> None:
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {self.aggregation!r}: use one of {', '.join(AGGREGATIONS)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}: use one of {', '.join(PRECISIONS)}")


@dataclass
class TagSummary:
    """What a run did (printed at the end and stored in ``_SUCCESS``)."""

    files_total: int = 0
    files_skipped: int = 0
    files_ok: int = 0
    files_error: int = 0
    audio_s: float = 0.0
    wall_s: float = 0.0
    first_row_s: float | None = None  # when the first result arrived (start-up: actors, model, pipeline)
    first_row_audio_s: float = 0.0
    model: str = ""
    aggregation: str = DEFAULT_AGGREGATION
    precision: str = "fp32"
    out: str = ""
    rows_superseded: int = 0  # older rows of files tagged again, removed (one row per path)
    errors: list[tuple[str, str]] = field(default_factory=list)

    def count(self, row: dict[str, Any], elapsed_s: float) -> None:
        """Count a written output ``row``, ``elapsed_s`` seconds into the run."""
        if row["status"] == "ok":
            self.files_ok += 1
            self.audio_s += row["duration_s"]
        else:
            self.files_error += 1
            self.errors.append((row["path"], row["error"]))
        if self.first_row_s is None:
            self.first_row_s = elapsed_s
            self.first_row_audio_s = self.audio_s

    @property
    def throughput(self) -> float:
        """Audio seconds tagged per wall-clock second."""
        return self.audio_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def steady_throughput(self) -> float:
        """Audio seconds per second after the first result: the rate once actors are up."""
        if self.first_row_s is None or self.wall_s <= self.first_row_s or self.audio_s <= self.first_row_audio_s:
            return self.throughput
        return (self.audio_s - self.first_row_audio_s) / (self.wall_s - self.first_row_s)

    def to_dict(self) -> dict[str, Any]:
        return {
            "files_total": self.files_total,
            "files_skipped_resume": self.files_skipped,
            "files_ok": self.files_ok,
            "files_error": self.files_error,
            "rows_superseded": self.rows_superseded,
            "audio_hours": round(self.audio_s / 3600, 4),
            "wall_s": round(self.wall_s, 2),
            "audio_s_per_s": round(self.throughput, 2),
            "steady_audio_s_per_s": round(self.steady_throughput, 2),
            "model": self.model,
            "aggregation": self.aggregation,
            "precision": self.precision,
        }


MANIFEST_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("uri", pa.string()),
        ("size", pa.int64()),
        ("version", pa.string()),
        ("file_id", pa.string()),
        ("offset", pa.int64()),
    ]
)


@dataclass(frozen=True)
class Manifest:
    """The inputs still to do, as Arrow blocks in Ray's object store (spilled to disk under
    pressure), never as Python objects in the driver."""

    blocks: list[Any]  # ObjectRefs of pa.Table in MANIFEST_SCHEMA
    total: int
    todo: int


def _block_size(listed: int) -> int:
    """Small blocks first (a few files keep every CPU busy), growing to 1,024 records for big archives."""
    return min(1024, max(4, listed // 16))


def write_manifest(records: Iterable[FileRecord], done: set[str], start_ray: Callable[[], None]) -> Manifest:
    """Stream ``records`` into manifest blocks, leaving out ``done`` file ids; Ray is started (by
    ``start_ray``) only once there is something to do."""
    import ray

    blocks: list[Any] = []
    pending: list[dict[str, Any]] = []
    total = todo = 0

    def emit() -> None:
        if pending:
            if not blocks:  # the first block: once, not per block (it may check a cluster's address)
                start_ray()
            blocks.append(ray.put(pa.Table.from_pylist(pending, schema=MANIFEST_SCHEMA)))
            pending.clear()

    for record in records:
        total += 1
        if record.file_id in done:
            continue
        todo += 1
        pending.append(record.to_dict())
        if len(pending) >= _block_size(todo):
            emit()
    emit()
    return Manifest(blocks, total, todo)


@dataclass
class TagPlan:
    """What a ``tag`` run would do (``plan_tag``): inputs listed, those already in ``--out``, and the
    first few of the rest."""

    listed: int = 0
    done: int = 0
    first_todo: list[str] = field(default_factory=list)

    @property
    def todo(self) -> int:
        return self.listed - self.done


def plan_tag(config: TagConfig, show: int = 10) -> TagPlan:
    """List ``config``'s sources and compare them with its output, as ``run_tag`` would, without
    loading a model, starting Ray or touching the output (``--no-resume`` counts nothing as done)."""
    s3 = S3Options.resolve(config.s3_endpoint)
    done = completed_file_ids(config.out, s3) if config.resume else set()
    plan = TagPlan()
    for record in list_sources(config.sources, s3, config.files_from):
        plan.listed += 1
        if record.file_id in done:
            plan.done += 1
        elif len(plan.first_todo) < show:
            plan.first_todo.append(record.path)
    return plan


class ScoreActor:
    """Ray Data stage (actor): decoded chunks -> per-patch scores: class probabilities, or (match
    mode) each support label's score (``matching.score_against_support``).

    The model, featurizer and support embeddings are loaded once in ``__init__`` and placed on the
    actor's GPU when Ray gave it one, else on the CPU.
    """

    def __init__(
        self,
        checkpoint: list[Any],
        name: str,
        batch_size: int,
        torch_threads: int,
        support: list[Any] | None = None,
        precision: str = "fp32",
    ) -> None:
        import ray
        import torch

        torch.set_num_threads(max(1, torch_threads))
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        # ``checkpoint`` is [ObjectRef of the file's bytes]: put in the object store once by the
        # driver and fetched here, rather than copied into every actor's creation arguments.
        self.checkpoint = checkpoint_from_bytes(ray.get(checkpoint[0]), name, self.device)
        self.model = inference_model(self.checkpoint.model)
        self.featurizer = make_featurizer(self.checkpoint.meta.features).to(self.device)
        self.full_scale_db = full_scale_level_db(self.featurizer)  # levels are shipped in dBFS
        self.batch_size = batch_size
        self.precision = precision
        # ``support`` is [ObjectRef of the support arrays] in match mode (fetched once, like the checkpoint).
        self.support = SupportSet.from_arrays(ray.get(support[0])).to(self.device) if support else None
        self._group_samples = 120 * self.checkpoint.meta.features.sample_rate

    def _score(self, ok: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Per-patch scores of decoded rows, as output rows."""
        import torch

        clips = [np.frombuffer(r["samples"], dtype=np.float32) for r in ok]
        patches = self.featurizer(clips, resize=False)
        probs = []
        with torch.inference_mode():
            for start in range(0, len(patches.owner), self.batch_size):
                x = self.featurizer.resize(patches.inputs[start : start + self.batch_size])
                model = self.model
                with autocast(self.device, self.precision):
                    out = model.embed(x) if self.support is not None and isinstance(model, Matcher) else model(x)
                if self.support is not None and isinstance(model, Matcher):
                    scores = score_against_support(model.head, out.float(), self.support)
                else:
                    scores = torch.softmax(out.float(), dim=1)
                probs.append(scores.float().cpu())
        all_probs = torch.cat(probs).numpy()
        out = []
        for i, r in enumerate(ok):
            sel = patches.owner == i
            row = {k: v for k, v in r.items() if k != "samples"}
            row["probs"] = np.ascontiguousarray(all_probs[sel], dtype=np.float32).tobytes()
            row["starts"] = (patches.start_s[sel] + np.float32(r["offset_s"])).astype(np.float32).tobytes()
            row["levels"] = (patches.level_db[sel] - np.float32(self.full_scale_db)).tobytes()
            out.append(row)
        return out

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        out: list[dict[str, Any]] = [{k: v for k, v in r.items() if k != "samples"} for r in rows if r["error"]]
        ok = [r for r in rows if r["error"] is None]
        # Featurize at most ~2 minutes of audio at once: a call can hold many 60 s chunks, and their
        # spectra together would cost gigabytes.
        group: list[dict[str, Any]] = []
        samples = 0
        for r in ok:
            group.append(r)
            samples += len(r["samples"]) // 4
            if samples >= self._group_samples:
                out.extend(self._score(group))
                group, samples = [], 0
        if group:
            out.extend(self._score(group))
        return pa.Table.from_pylist(out, schema=_SCORED_SCHEMA)


class FileAssembler:
    """Driver side: collects a file's chunks and turns them into one output row when all arrived."""

    def __init__(
        self,
        labels: tuple[str, ...],
        features: FeatureConfig,
        model_id: str,
        mode: str,
        top_k: int,
        unknown_threshold: float | None = None,
        aggregation: str = DEFAULT_AGGREGATION,
    ) -> None:
        self.labels = labels
        self.features = features
        self.model_id = model_id
        self.mode = mode
        self.top_k = top_k
        self.unknown_threshold = unknown_threshold
        self.aggregation = aggregation
        self._pending: dict[str, list[dict[str, Any]]] = {}

    def add(self, chunk: dict[str, Any]) -> dict[str, Any] | None:
        """Add a chunk; return the file's output row once its last chunk is in."""
        parts = self._pending.setdefault(chunk["file_id"], [])
        if any(p["chunk"] == chunk["chunk"] for p in parts):
            return None  # a retried task delivered this chunk twice
        parts.append(chunk)
        total = max(p["n_chunks"] for p in parts)  # known from the file's last row only
        if total <= 0 or len(parts) < total:
            return None
        del self._pending[chunk["file_id"]]
        return self._row(sorted(parts, key=lambda p: p["chunk"]))

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _row(self, parts: list[dict[str, Any]]) -> dict[str, Any]:
        first = parts[0]
        row: dict[str, Any] = {
            "path": first["path"],
            "file_id": first["file_id"],
            "size_bytes": first["size"],
            "mode": self.mode,
            "model": self.model_id,
            "features": self.features.name,
            "tagged_at": datetime.now(UTC),
            "top_labels": [],
            "top_scores": [],
            "segments": [],
        }
        error = next((p["error"] for p in parts if p["error"]), None)
        if error:
            return {**row, "status": "error", "error": error}
        n_labels = len(self.labels)
        probs = np.concatenate([np.frombuffer(p["probs"], np.float32).reshape(-1, n_labels) for p in parts])
        starts = np.concatenate([np.frombuffer(p["starts"], np.float32) for p in parts])
        levels = np.concatenate([np.frombuffer(p["levels"], np.float32) for p in parts])
        result = aggregate_file(
            probs,
            starts,
            levels,
            self.labels,
            self.features.patch_s,
            self.top_k,
            self.unknown_threshold,
            self.aggregation,
            SILENT_DBFS,
        )
        duration = float(parts[-1]["duration_s"])
        return {
            **row,
            "status": "ok",
            "error": None,
            "label": result.label,
            "confidence": result.confidence,
            "top_labels": result.top_labels,
            "top_scores": result.top_scores,
            # A clip shorter than one patch is padded; its segment still ends where the audio does.
            "segments": [
                {
                    "start_s": seg.start_s,
                    "end_s": min(seg.end_s, duration),
                    "label": seg.label,
                    "confidence": seg.confidence,
                }
                for seg in result.segments
            ],
            "duration_s": duration,
            "sample_rate": first["sample_rate"],
            "channels": first["channels"],
        }


class TagInterrupted(KeyboardInterrupt):
    """A tag run stopped by Ctrl-C or SIGTERM after writing every file it had finished; ``summary``
    counts them. The same command resumes after them. A ``KeyboardInterrupt``, so that handlers of
    errors let it through."""

    def __init__(self, summary: TagSummary) -> None:
        super().__init__(f"interrupted after {counted(summary.files_ok + summary.files_error, 'file')}")
        self.summary = summary


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (``jobs stop``, a pod evicted, ``kill``) stops a run as Ctrl-C does: a ``KeyboardInterrupt``,
    so that what the run finished is kept and the user is told how to go on. Entered once Ray runs:
    its core worker installs a handler of its own at start-up that ends the process where it stands,
    as Python's default would."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread takes signals
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast where nothing answers at ``address`` (``HOST:PORT``, ``ray://HOST:PORT``): Ray itself
    retries an unreachable head for ever, logging a warning every 30 s. ``auto`` is left to Ray."""
    host, sep, port = address.split("://", 1)[-1].rstrip("/").rpartition(":")
    if not sep or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConnectionError(
            f"no Ray cluster answers at {address} ({exc.strerror or exc}): start its head (ray start --head), "
            "or give the head's address (HOST:6379, ray://HOST:10001, or auto on one of its nodes)"
        ) from None


def ensure_ray(address: str | None, num_cpus: int | None = None) -> None:
    """Connect to ``address`` (or ``$RAY_ADDRESS``), else start a local Ray (reusing one already
    initialized in this process)."""
    import ray

    # Inside a Ray job (``mirbatch submit``) the job server sets RAY_ADDRESS: join that cluster.
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        _check_reachable(address)
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
        return
    with default_token_notice_dropped():
        ray.init(
            address="local",
            num_cpus=num_cpus or os.cpu_count() or 1,
            # None: the dashboard starts when ray[default]'s packages are installed (as mirbatch's
            # dependencies ask) and is skipped without an error on a minimal Ray install.
            include_dashboard=None,
            logging_level=logging.WARNING,
            # Ray Train 2.60's watcher for draining nodes logs an error line at every start
            # (ray-project/ray#53727) and has nothing to watch on one local node.
            runtime_env={"env_vars": {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}},
        )


def check_local_resources(need: dict[str, float], address: str | None, asked: str) -> None:
    """Refuse what a Ray started here can never grant, where it would wait for ever.

    Parameters
    ----------
    need : dict
        Resources in all, e.g. ``{"CPU": 2.5, "GPU": 0.0}``.
    address : str or None
        The cluster asked for; with one (or ``RAY_ADDRESS``) Ray is left to wait, as its autoscaler
        may yet add nodes (Ray says what it waits for).
    asked : str
        The options that asked, for the message (``--workers 5``).
    """
    import ray

    if address or os.environ.get("RAY_ADDRESS"):
        return
    have = ray.cluster_resources()
    short = [(kind, n, float(have.get(kind, 0))) for kind, n in need.items() if n > float(have.get(kind, 0)) + 1e-9]
    if short:
        what = ", ".join(f"{n:g} {kind} (it has {got:g})" for kind, n, got in short)
        raise ValueError(
            f"{asked} need {what} from the Ray started here, which would wait for them for ever: "
            "ask for less, or pass --address of a cluster that has them"
        )


@contextmanager
def default_token_notice_dropped() -> Iterator[None]:
    """While it is open, Ray's notice that a new local cluster turned token authentication on (as
    it does by default, on every run) is dropped; the authentication stays on, and the logger's
    other warnings (such as one that it is off) still show."""

    def not_the_notice(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled for this Ray cluster.")

    notices = logging.getLogger("ray._private.authentication.authentication_token_setup")
    notices.addFilter(not_the_notice)
    try:
        yield
    finally:
        notices.removeFilter(not_the_notice)


def _resolve_model(config: TagConfig) -> tuple[bytes, Checkpoint]:
    """The checkpoint's bytes and the loaded checkpoint, checked against the mode and features."""
    if config.mode not in ("classify", "match"):
        raise ValueError(f"unknown mode {config.mode!r}; use classify or match")
    match = config.mode == "match"
    name, data = read_checkpoint_bytes(config.model or (DEFAULT_MATCHER if match else DEFAULT_CLASSIFIER))
    checkpoint = checkpoint_from_bytes(data, name)
    meta = checkpoint.meta
    if match != isinstance(checkpoint.model, Matcher):
        raise ValueError(
            f"model {name} is a {meta.architecture} "
            + (
                f"classifier; --mode match needs a matcher ({DEFAULT_MATCHER}, or one trained with --model siamese)"
                if match
                else f"matcher; use --mode match --support LIB, or a classifier ({DEFAULT_CLASSIFIER})"
            )
        )
    if config.features and config.features != meta.features.name:
        raise ValueError(
            f"model {name} was trained on {meta.features.name} features, not {config.features}; "
            f"drop --features or pass a model trained with --features {config.features}"
        )
    return data, checkpoint


def _resolve_support(config: TagConfig, checkpoint: Checkpoint) -> tuple[SupportSet | None, float | None]:
    """The support set (match mode) and the unknown threshold: ``--unknown-threshold``, else in
    match mode the one the checkpoint calibrated for the library's pitch shifts (classify mode:
    none, every file gets its best label)."""
    from mirbatch.support import SupportLibrary

    if config.mode != "match":
        if config.support:
            raise ValueError("--support is used with --mode match")
        return None, config.unknown_threshold
    if not config.support:
        raise ValueError("--mode match needs --support LIB (build one with 'mirbatch support add LIB ...')")
    library = SupportLibrary.open(config.support, must_exist=True)
    library.check_model(checkpoint)
    threshold = config.unknown_threshold
    if threshold is None:
        threshold = calibrated_threshold(checkpoint.meta, library.shifts)
    if threshold is None:
        raise ValueError(
            f"support library {config.support} is enrolled at pitch shifts {shifts_key(library.shifts)}, for which "
            f"{checkpoint.model_id} has no calibrated unknown threshold; pass --unknown-threshold, or enroll the "
            f"examples at --support-shifts {shifts_key(checkpoint.meta.support_shifts)}"
        )
    return library.support_set(), threshold


def run_tag(config: TagConfig, progress: Callable[[TagSummary, int], None] | None = None) -> TagSummary:
    """Tag every input of ``config.sources`` into the Parquet dataset ``config.out``.

    Parameters
    ----------
    config : TagConfig
    progress : callable, optional
        Called as ``progress(summary_so_far, files_to_do)`` about once a second and at the end.
    """
    import ray
    import ray.data

    started = time.perf_counter()
    checkpoint, loaded = _resolve_model(config)
    support, threshold = _resolve_support(config, loaded)
    name, meta, model_id = loaded.name, loaded.meta, loaded.model_id
    labels = support.labels if support else meta.labels
    s3 = S3Options.resolve(config.s3_endpoint)
    out = config.out
    if not config.resume:
        reset_output(out, s3)
    done = completed_file_ids(out, s3)
    manifest = write_manifest(
        list_sources(config.sources, s3, config.files_from), done, lambda: ensure_ray(config.address)
    )
    if manifest.todo:
        asked = f"--gpus-per-worker {config.gpus_per_worker:g} with --workers {config.workers}"
        check_local_resources({"GPU": config.gpus_per_worker * config.workers}, config.address, asked)
    del done
    summary = TagSummary(
        files_total=manifest.total,
        files_skipped=manifest.total - manifest.todo,
        model=model_id,
        aggregation=config.aggregation,
        precision=config.precision,
        out=str(out),
    )
    writer = ResultWriter(out, flush_s=config.part_seconds, s3=s3)
    if manifest.todo:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # run_tag reports progress itself
        ctx.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        cpus = max(1.0, float(ray.cluster_resources().get("CPU", 1)))
        # Actors reserve a fraction of a CPU so decode tasks are never starved of slots.
        actor_cpus = 0.0 if config.gpus_per_worker > 0 else min(1.0, cpus / (config.workers + 1))
        torch_threads = max(1, int(cpus // max(1, config.workers)))
        ds: Any = ray.data.from_arrow_refs(manifest.blocks)
        ds = ds.map_batches(
            functools.partial(decode_batch, sample_rate=meta.features.sample_rate, chunk_s=config.chunk_s, s3=s3),
            batch_format="pyarrow",
            batch_size=4,
            num_cpus=0.5,
        )
        ds = ds.map_batches(
            ScoreActor,
            batch_format="pyarrow",
            batch_size=config.files_per_call,
            fn_constructor_kwargs={
                "checkpoint": [ray.put(checkpoint)],
                "name": name,
                "batch_size": config.batch_size,
                "torch_threads": torch_threads,
                "support": [ray.put(support.to_arrays())] if support else None,
                "precision": config.precision,
            },
            compute=ray.data.ActorPoolStrategy(size=config.workers),
            num_cpus=actor_cpus,
            num_gpus=config.gpus_per_worker,
        )
        assembler = FileAssembler(
            labels, meta.features, model_id, config.mode, config.top_k, threshold, config.aggregation
        )
        written: set[str] = set()
        last_report = 0.0
        try:
            with sigterm_as_interrupt():
                for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
                    for chunk in batch.to_pylist():
                        row = assembler.add(chunk)
                        if row is None or row["file_id"] in written:
                            continue
                        written.add(row["file_id"])
                        writer.add(row)
                        summary.count(row, time.perf_counter() - started)
                    now = time.perf_counter()
                    summary.wall_s = now - started
                    if progress and now - last_report > 1.0 and summary.files_ok + summary.files_error < manifest.todo:
                        progress(summary, manifest.todo)
                        last_report = now
        except KeyboardInterrupt:
            writer.flush()  # every finished file's row: the rerun resumes after them
            summary.wall_s = time.perf_counter() - started
            raise TagInterrupted(summary) from None
        if assembler.pending:
            lost = counted(assembler.pending, "file")
            raise RuntimeError(f"{lost} lost chunks in the pipeline; rerun to resume them")
        summary.rows_superseded = writer.drop_superseded()
    summary.wall_s = time.perf_counter() - started
    writer.commit(summary.to_dict())
    if progress:
        progress(summary, manifest.todo)
    return summary
