"""Training: a feature cache built once, then a Ray Train (TorchTrainer, DDP) run over it.

1. ``build_cache`` decodes every file once, adds ``AugmentConfig.variants`` augmented copies of each
   training file (EQ, reverb, noise, pitch, band limit, mixing), cuts all of them into unresized
   feature patches and writes ``train.npz`` / ``val.npz`` (numeric arrays only: loaded without
   pickle). The split is by file (by planned clip for renders and morphs), so no file has patches on
   both sides.
2. ``train_loop`` runs in every Ray Train worker: each epoch draws as many patches as the clean
   training set has from the clean and augmented ones, shards them by rank, trains the DDP model,
   evaluates its shard of the validation files and all-reduces the counts, so every worker takes
   the same early-stopping decision. Rank 0 reports a checkpoint each epoch (latest weights,
   optimizer state, best weights, history); a restarted worker group and ``--resume`` continue
   from the latest one.
3. ``train`` drives both and exports the best epoch as a mirbatch checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import mirbatch.aggregate
import mirbatch.audio
import mirbatch.augment
import mirbatch.baseline
import mirbatch.features
import mirbatch.patches
from mirbatch.aggregate import DEFAULT_AGGREGATION
from mirbatch.augment import AugmentConfig
from mirbatch.baseline import MfccSvm
from mirbatch.datasets.layouts import LabelledFile, load_dataset, split_by_file, split_by_label
from mirbatch.features import (
    FeatureConfig,
    MelConfig,
    ScalogramConfig,
    check_pitch_shifts,
    feature_config_from_dict,
    make_featurizer,
    resize_patches,
    shifts_key,
)
from mirbatch.matching import (
    calibrate_threshold,
    embed_support_patches,
    file_score_matrix,
    run_episodes,
)
from mirbatch.models import (
    ARCHITECTURES,
    Checkpoint,
    CheckpointError,
    CheckpointMeta,
    Matcher,
    build_model,
    checkpoint_from_bytes,
    count_parameters,
    inference_model,
    is_matcher,
    label_layers,
    read_checkpoint_bytes,
    save_checkpoint,
    write_tensors,
)
from mirbatch.patches import PatchSet, build_patch_set
from mirbatch.precision import TRAINING_PRECISIONS, autocast
from mirbatch.sources import S3Options, filesystem
from mirbatch.taxonomy import is_reserved_program
from mirbatch.wording import counted

__all__ = [
    "DEFAULT_SUPPORT_SHIFTS",
    "LR_SCHEDULES",
    "OPTIMIZERS",
    "EpochMetrics",
    "MatcherWithAux",
    "RunStorage",
    "TrainConfig",
    "TrainingInterrupted",
    "augment_patches",
    "classifier_loss",
    "build_cache",
    "calibrate_matcher",
    "check_init",
    "initial_weights",
    "default_features",
    "describe_dataset",
    "describe_init",
    "embed_clean_patches",
    "embed_queries_and_shots",
    "latest_checkpoint",
    "matcher_file_scores",
    "noise_patches",
    "predict_files",
    "same_and_different",
    "scheduled_lr",
    "train",
    "train_loop",
    "uniform_loss",
]

log = logging.getLogger(__name__)

# The modules a cached patch's values come from (decode, augment, gate, features, MFCC stats, patch sets).
_PATCH_CODE = (
    mirbatch.audio,
    mirbatch.augment,
    mirbatch.aggregate,
    mirbatch.features,
    mirbatch.baseline,
    mirbatch.patches,
)

# What the split keeps on one side (datasets.layouts.split_by_file / split_by_label), for checkpoint metadata.
_SPLIT_UNITS = {"file": "file (renders and morphs of one planned clip together)", "label": "label"}

LR_SCHEDULES = ("constant", "cosine")
HARMONICS = 24  # harmonic levels cnn-harmonic reads: up to 4.7 kHz at a violin's G3
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "rmsprop": torch.optim.RMSprop,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,  # weight decay 0.01 (torch's default)
}
# Each support example also enrolled an octave and a half-octave up and down: on held-out renders,
# +0.006-0.037 accuracy over the unshifted example in few-way episodes (README, one-shot results).
DEFAULT_SUPPORT_SHIFTS: tuple[int, ...] = (-12, -6, 0, 6, 12)


def scheduled_lr(base: float, schedule: str, step: int, total_steps: int) -> float:
    """Learning rate at optimizer ``step`` (0-based) of ``total_steps`` under ``schedule``.

    A function of the step alone, so a resumed run picks the schedule up where it stopped.
    """
    if schedule == "constant":
        return base
    return base * 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(1, total_steps)))


class TrainingInterrupted(KeyboardInterrupt):
    """A training run stopped by Ctrl-C or SIGTERM; the epochs it finished are checkpointed in
    ``run_uri``, and the same command with ``--resume`` continues from the newest. A
    ``KeyboardInterrupt``, so that handlers of errors let it through."""

    def __init__(self, run_uri: str) -> None:
        super().__init__(
            f"interrupted: the finished epochs' checkpoints are in {run_uri}; "
            "rerun the same command with --resume to continue"
        )
        self.run_uri = run_uri


@dataclass(frozen=True)
class TrainConfig:
    """A training run.

    Attributes
    ----------
    data : tuple of str
        Data sets (a folder per label, IRMAS or NSynth layouts); several are pooled.
    architecture : str
        Registered architecture name.
    labels : tuple of str or None
        Labels to train; None takes every label found.
    aux_labels : tuple of str
        Classifiers: more labels trained as auxiliary classes, never predicted (the checkpoint keeps
        only ``labels``): telling more instruments apart shapes features that carry further.
        ``("rest",)`` takes every label found beyond ``labels``.
    epochs, batch_size : training schedule (global batch).
    lr : float or None
        Learning rate; None takes the seed papers' (RMSprop 1e-3 for CNNs, Adam 6e-4 for ``siamese``,
        5e-4 for ``residual-siamese``), and 1e-3 for ``cnn-vgg`` and ``cnn-harmonic``; 0.3 times
        those when fine-tuning (``init``).
    optimizer : str or None
        ``rmsprop``, ``adam`` or ``adamw`` (Adam with decoupled weight decay 0.01); None: the
        architecture's (RMSprop for ``cnn`` and ``cnn-freq`` as in the seed
        paper, AdamW for ``cnn-vgg`` and ``cnn-harmonic``, Adam for the matchers).
    val_fraction : float
        Share held out for validation: of the files for a classifier, of the labels for a matcher
        (a one-shot matcher is validated on instruments it never trained on).
    patience : int
        Epochs without a better validation file accuracy before stopping early.
    seed : int
    features : MelConfig or ScalogramConfig
    augment : AugmentConfig
    workers : int
        Ray Train workers (DDP ranks).
    use_gpu : bool
        One GPU per worker.
    aux_weight : float
        Matchers: weight of the auxiliary classification loss beside the pair loss (0: pairs only).
    lr_schedule : str
        ``cosine``: the learning rate falls from ``lr`` to 0 over ``epochs`` along a half cosine, step
        by step; ``constant``: ``lr`` throughout (the seed papers').
    width : int or None
        Channels of the first convolution stage, doubled by later stages; None: the architecture's
        own (16 for the matchers, ``cnn-vgg`` and ``cnn-harmonic``, 32 for ``cnn-freq``). ``cnn`` is
        the seed paper's fixed network.
    support_shifts : tuple of int or None
        Matchers: pitch shifts (semitones, 0 included) at which support examples are enrolled, here
        for validation and the unknown threshold, and by default wherever the checkpoint enrolls; None:
        ``DEFAULT_SUPPORT_SHIFTS`` for scalograms, ``(0,)`` for mel (whose rows are not log-spaced).
    precision : str
        ``fp32``, or ``bf16``: each training step's forward and loss under ``torch.autocast`` in
        bfloat16 (``precision.autocast``); the weights, the optimizer and validation stay float32.
    init : str or None
        A checkpoint (bundled name or path) to start from instead of random weights: fine-tuning.
        Its architecture, width and features must be this run's (``check_init``); the output rows of
        labels it knows are carried over by name, new labels start fresh (``initial_weights``).
    noise_outliers : float
        Classifiers: weight of a loss that teaches noise with no instrument in it (hiss, rumble, room
        tone: ``augment.noise_only``) to score alike for every label (``uniform_loss``), on noise
        patches a quarter as many as each batch's; 0: off. A model trained so is unsure on such noise,
        and ``tag --unknown-threshold`` turns it ``unknown``.
    """

    data: tuple[str, ...]
    architecture: str = "cnn"
    labels: tuple[str, ...] | None = None
    aux_labels: tuple[str, ...] = ()
    epochs: int = 30
    batch_size: int = 32
    lr: float | None = None
    val_fraction: float = 0.15
    patience: int = 8
    seed: int = 0
    features: FeatureConfig = field(default_factory=MelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    workers: int = 1
    use_gpu: bool = False
    aux_weight: float = 1.0
    lr_schedule: str = "constant"
    optimizer: str | None = None
    width: int | None = None
    support_shifts: tuple[int, ...] | None = None
    precision: str = "fp32"
    init: str | None = None
    noise_outliers: float = 0.0

    def __post_init__(self) -> None:
        if self.precision not in TRAINING_PRECISIONS:
            raise ValueError(
                f"unknown training precision {self.precision!r}; choose one of {', '.join(TRAINING_PRECISIONS)} "
                "(fp16 would need loss scaling)"
            )
        if self.optimizer is not None and self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown lr_schedule {self.lr_schedule!r}; choose one of {', '.join(LR_SCHEDULES)}")
        if self.width is not None and (self.architecture == "cnn" or self.width < 1):
            *others, last = (name for name in ARCHITECTURES if name != "cnn")
            raise ValueError(
                "width must be a positive channel count and is not for cnn (the seed paper's fixed network); "
                f"use {', '.join(others)} or {last} to size a model"
            )
        if self.architecture == "cnn-harmonic":
            if not self.features.harmonic_rows:
                raise ValueError(
                    "cnn-harmonic reads harmonic rows under the log-mel ones: give it default_features('cnn-harmonic') "
                    "(mel features with harmonics)"
                )
            if self.aux_labels:
                raise ValueError("auxiliary labels are for cnn, cnn-freq and cnn-vgg, not cnn-harmonic")
        if self.noise_outliers < 0 or (self.noise_outliers > 0 and is_matcher(self.architecture)):
            raise ValueError(
                "noise_outliers (--noise-outliers) is a loss weight of 0 or more, for the classifiers (cnn, cnn-freq, "
                "cnn-vgg, cnn-harmonic), not the matchers"
            )
        if self.support_shifts is not None:
            if not is_matcher(self.architecture):
                raise ValueError("support shifts are for matchers (siamese, residual-siamese), not classifiers")
            check_pitch_shifts(self.support_shifts, self.features)

    @property
    def shot_shifts(self) -> tuple[int, ...]:
        """The support shifts in force: ``support_shifts``, else the default for a scalogram matcher,
        else ``(0,)`` (mel matchers; classifiers have no support)."""
        if self.support_shifts is not None:
            return self.support_shifts
        scalogram_matcher = is_matcher(self.architecture) and isinstance(self.features, ScalogramConfig)
        return DEFAULT_SUPPORT_SHIFTS if scalogram_matcher else (0,)

    @property
    def model_params(self) -> dict[str, Any]:
        """Keyword arguments of the architecture (stored in the checkpoint to rebuild it)."""
        params: dict[str, Any] = {} if self.width is None else {"width": self.width}
        if self.architecture == "cnn-harmonic":
            params["harmonic_rows"] = self.features.harmonic_rows
        return params

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        base = {"siamese": 6e-4, "residual-siamese": 5e-4}.get(self.architecture, 1e-3)
        # Fine-tuning cnn-default on recorded notes: 0.3x its rate did best of 0.1x, 0.3x and 1x (README).
        return 0.3 * base if self.init is not None else base

    @property
    def optimizer_name(self) -> str:
        """The optimizer in force: ``optimizer``, else the architecture's."""
        if self.optimizer is not None:
            return self.optimizer
        if is_matcher(self.architecture):
            return "adam"
        return "adamw" if self.architecture in ("cnn-vgg", "cnn-harmonic") else "rmsprop"

    @property
    def predicted(self) -> int | None:
        """How many of the trained labels (the first ones) the model predicts; None: all."""
        return len(self.labels) if self.aux_labels and self.labels else None

    @property
    def split(self) -> str:
        """``label`` for matchers, ``file`` for classifiers."""
        return "label" if is_matcher(self.architecture) else "file"

    def cache_key(self, files: Sequence[LabelledFile]) -> str:
        """What the cached features depend on: files, labels, split, features, augmentation, seed, code."""
        payload = {
            "files": [(f.path, f.label, f.group) for f in files],  # the group decides the split
            "labels": list(self.labels or ()),
            "aux_labels": list(self.aux_labels),
            "val_fraction": self.val_fraction,
            "split": self.split,
            "seed": self.seed,
            "features": self.features.to_dict(),
            "augment": self.augment.to_dict(),
            "code": _patch_code_digest(),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _patch_code_digest() -> str:
    """Digest of the modules a cached patch is computed by: a cache built by other decoding,
    augmentation or feature code (an upgrade, a local change) is never reused."""
    digest = hashlib.sha256()
    for module in _PATCH_CODE:
        digest.update(Path(str(module.__file__)).read_bytes())
    return digest.hexdigest()[:16]


def augment_patches(x: torch.Tensor, generator: torch.Generator, fixed_rows: int = 0) -> torch.Tensor:
    """Cheap per-batch augmentation of unresized patches [shape=(b, 1, rows, columns)] in [0, 1].

    - a raised floor (a noise floor 30-80 dB under the peak) on half the patches;
    - a shift of up to 2 rows (frequency bands): small tuning differences;
    - one frequency mask and one time mask (SpecAugment): no single band or instant decides.

    The last ``fixed_rows`` rows (harmonic levels and pitch, ``MelConfig.harmonics``) are not a
    spectrum: only the time mask reaches them.
    """
    spectral = x.shape[2] - fixed_rows
    b, _, rows, columns = x[:, :, :spectral].shape
    floor = torch.rand(b, 1, 1, 1, generator=generator) * 0.6
    floor = torch.where(torch.rand(b, 1, 1, 1, generator=generator) < 0.5, floor, torch.zeros_like(floor))
    x = torch.cat([torch.maximum(x[:, :, :spectral], floor), x[:, :, spectral:]], dim=2)
    out = x.clone()
    shifts = torch.randint(-2, 3, (b,), generator=generator).tolist()
    f_width = torch.randint(0, rows // 8 + 1, (b,), generator=generator).tolist()
    t_width = torch.randint(0, columns // 6 + 1, (b,), generator=generator).tolist()
    for i, s in enumerate(shifts):
        out[i, :, :spectral] = torch.roll(x[i, :, :spectral], shifts=s, dims=-2)
        if s > 0:
            out[i, :, :s] = x[i, :, :1]
        elif s < 0:
            out[i, :, spectral + s : spectral] = x[i, :, spectral - 1 : spectral]
        f0 = int(torch.randint(0, rows - f_width[i] + 1, (1,), generator=generator))
        t0 = int(torch.randint(0, columns - t_width[i] + 1, (1,), generator=generator))
        out[i, :, f0 : f0 + f_width[i]] = 0.0
        out[i, :, :, t0 : t0 + t_width[i]] = 0.0
    return out


_NOISE_CLIPS = 600  # 3 s noise clips featurized once per worker (3,000 log-mel patches: a few seconds)


def noise_patches(features: FeatureConfig, seed: int, clips: int = _NOISE_CLIPS) -> torch.Tensor:
    """Unresized feature patches [shape=(patches, 1, rows, columns)] of ``clips`` 3 s clips of
    ``augment.noise_only``: examples of no instrument, for ``TrainConfig.noise_outliers``."""
    rng = np.random.default_rng([seed, 7])
    audio = [mirbatch.augment.noise_only(3 * features.sample_rate, features.sample_rate, rng) for _ in range(clips)]
    return make_featurizer(features)(audio, resize=False).inputs


def uniform_loss(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of logits [shape=(b, labels)] (or [shape=(b, branches, labels)], summed over the
    branches as ``classifier_loss`` does) towards equal odds for every label: log(labels) at its
    least, where every label scores alike."""
    branches = 1 if logits.dim() == 2 else logits.shape[1]
    return -branches * F.log_softmax(logits, dim=-1).mean(dim=-1).mean()


def classifier_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of logits [shape=(b, labels)], or the sum over branches of a model that answers
    per branch while training (``cnn-harmonic``: [shape=(b, branches, labels)])."""
    if logits.dim() == 2:
        return F.cross_entropy(logits, targets)
    branches = logits.shape[1]
    return branches * F.cross_entropy(logits.flatten(0, 1), targets.repeat_interleave(branches))


@torch.inference_mode()
def predict_files(
    model: torch.nn.Module,
    features: FeatureConfig,
    patches: PatchSet,
    batch_size: int = 256,
    aggregation: str = DEFAULT_AGGREGATION,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (patch probabilities [shape=(patches, labels)], file scores [shape=(files, labels)]).

    File scores are the mean of the file's patch probabilities weighted by ``aggregation`` (as ``tag``
    computes them, ``aggregate.aggregate_file``). Only clean patches (variant 0) count. ``model``
    runs as ``models.inference_model`` makes it.
    """
    model = inference_model(model)
    device = next(model.parameters()).device
    probs = []
    for start in range(0, len(patches.targets), batch_size):
        x = resize_patches(patches.inputs[start : start + batch_size].float().to(device), features)
        probs.append(torch.softmax(model(x), dim=1).cpu())
    patch_probs = torch.cat(probs).numpy()
    weight = np.where(patches.variant == 0, patches.weights(aggregation), 0.0)
    n_files = len(patches.files)
    sums = np.zeros((n_files, patch_probs.shape[1]))
    np.add.at(sums, patches.owner, weight[:, None] * patch_probs)
    totals = np.bincount(patches.owner, weights=weight, minlength=n_files)
    return patch_probs, sums / np.where(totals > 0, totals, 1.0)[:, None]


@dataclass(frozen=True)
class EpochMetrics:
    """One epoch's line of a run's history; epoch 0 is a fine-tuned run's starting checkpoint (no
    training loss)."""

    epoch: int
    train_loss: float | None
    val_patch_accuracy: float
    val_file_accuracy: float
    seconds: float


@dataclass(frozen=True)
class RunStorage:
    """Where training runs keep checkpoints and the feature cache.

    A folder (local, or shared by every node: NFS) or an ``s3://`` prefix every node can reach
    (credentials from the AWS chain on each node; ``s3`` names a non-AWS endpoint).
    """

    uri: str
    s3: S3Options = field(default_factory=S3Options)

    @classmethod
    def resolve(cls, uri: str | None, s3: S3Options | None = None) -> RunStorage:
        """``uri`` (default ``./runs``), local paths made absolute so every worker sees the same one."""
        uri = uri or "runs"
        if "://" not in uri:
            uri = str(Path(uri).absolute())
        return cls(uri.rstrip("/"), s3 or S3Options.resolve())

    @property
    def remote(self) -> bool:
        return "://" in self.uri

    def join(self, *parts: str) -> str:
        return "/".join([self.uri, *parts])

    def filesystem(self, uri: str | None = None) -> tuple[Any, str]:
        """(fsspec file system, path inside it) of ``uri`` (default: the storage root)."""
        return filesystem(uri or self.uri, self.s3)

    def arrow_filesystem(self) -> Any:
        """The pyarrow file system Ray Train writes checkpoints through (None: Ray's local default)."""
        if not self.remote:
            return None
        import pyarrow.fs

        return pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(self.filesystem()[0]))

    def to_dict(self) -> dict[str, Any]:
        return {"uri": self.uri, "s3": self.s3.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunStorage:
        return cls(d["uri"], S3Options(**d["s3"]))


@contextmanager
def _local_cache(cache: str, storage: RunStorage, names: tuple[str, ...]) -> Iterator[Path]:
    """A local folder holding files ``names`` of the feature cache ``cache``: the cache itself, or a
    temporary download from ``s3://``."""
    if "://" not in cache:
        yield Path(cache)
        return
    fs, path = storage.filesystem(cache)
    with tempfile.TemporaryDirectory(prefix="mirbatch-cache-") as directory:
        for name in names:
            fs.get(f"{path}/{name}", str(Path(directory) / name))
        yield Path(directory)


def build_cache(
    config: TrainConfig,
    cache_dir: str,
    log_line: Callable[[str], None] = print,
    storage: RunStorage | None = None,
) -> tuple[tuple[str, ...], str]:
    """Build (or reuse) ``train.npz`` and ``val.npz`` under ``cache_dir/<key>``; return (labels, that folder).

    ``cache_dir`` is a local folder or, with ``storage``, an ``s3://`` prefix: then the cache is
    built locally and uploaded, ``done.json`` last, so a half-uploaded cache is never reused.
    """
    files: list[LabelledFile] = []
    rest = config.aux_labels == ("rest",)
    wanted = None if config.labels is None or rest else (*config.labels, *config.aux_labels)
    for root in config.data:
        files.extend(load_dataset(Path(root), wanted))
    found = sorted({f.label for f in files})
    labels = tuple(config.labels) if config.labels else tuple(found)
    aux: tuple[str, ...] = ()
    if config.aux_labels:
        if is_matcher(config.architecture):
            raise ValueError("auxiliary labels are for classifiers; a matcher trains on every label it is given")
        if config.labels is None:
            raise ValueError("auxiliary labels need --labels (the labels the model predicts)")
        aux = tuple(x for x in found if x not in labels) if rest else config.aux_labels
        missing = sorted(set(aux) - set(found))
        if missing:
            raise ValueError(f"auxiliary labels not in the data: {', '.join(missing)}")
        labels = (*labels, *aux)
    reserved = sorted(label for label in labels if _reserved_label(label))
    if reserved:
        raise ValueError(
            f"labels {', '.join(reserved)} are GM programs reserved for one-shot evaluation (DESIGN.md); "
            "no training may use them: drop those folders or pass --labels"
        )
    splitter = split_by_label if config.split == "label" else split_by_file
    train_files, val_files = splitter(files, config.val_fraction, config.seed)
    if not train_files or not val_files:
        raise ValueError(
            f"need files on both sides of the split; got {len(train_files)} train, {len(val_files)} val"
            + (" (a matcher splits by label: give it at least two labels)" if config.split == "label" else "")
        )
    target = f"{cache_dir.rstrip('/')}/{config.cache_key(files)}"
    fs, target_path = (storage or RunStorage.resolve(None)).filesystem(target)
    if fs.exists(f"{target_path}/done.json"):
        log_line(f"features: reusing the cache in {target}")
        return labels, target
    started = time.perf_counter()
    train_set = build_patch_set(train_files, labels, config.features, config.augment, config.seed, on_ray=True)
    val_set = build_patch_set(val_files, labels, config.features, on_ray=True)
    summary = {
        "labels": list(labels),
        "train_files": len(train_set.files),
        "train_patches": len(train_set.targets),
        "val_files": len(val_set.files),
        "val_patches": len(val_set.targets),
        "skipped_files": len(train_set.skipped) + len(val_set.skipped),  # named in the log lines above
    }
    remote = "://" in target
    if not remote:
        fs.makedirs(target_path, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mirbatch-cache-") as staging:
        folder = Path(staging) if remote else Path(target_path)  # remote caches are staged, then uploaded
        for name, patch_set in (("train.npz", train_set), ("val.npz", val_set)):
            patch_set.save(folder / name)
            if remote:
                fs.put(str(folder / name), f"{target_path}/{name}")
        fs.pipe(f"{target_path}/done.json", json.dumps(summary, indent=2).encode())
    log_line(
        f"features: {counted(len(train_set.files), 'train file')} "
        f"({counted(len(train_set.targets), 'patch', 'patches')} with "
        f"{counted(config.augment.variants, 'augmented copy', 'augmented copies')}), "
        f"{counted(len(val_set.files), 'val file')}, {counted(len(labels), 'label')}"
        + (f", skipped {summary['skipped_files']} (named above)" if summary["skipped_files"] else "")
        + f", built in {time.perf_counter() - started:.0f}s"
    )
    return labels, target


def default_features(architecture: str, kind: str | None = None, wavelet: str = "morse") -> FeatureConfig:
    """Feature config for training ``architecture``: ``kind`` mel or scalogram (default: mel for
    classifiers, scalogram for matchers, as in the seed papers). Matchers take 96x96 inputs (the
    patches' native 96 frequency rows), which keeps them fast; ``cnn-vgg`` takes patches as they
    are (96x44 log-mel, 96x112 scalogram), ``cnn-harmonic`` log-mel patches with the levels of 24
    harmonics and the pitch under them (121x44)."""
    kind = kind or ("scalogram" if is_matcher(architecture) else "mel")
    config: FeatureConfig
    if kind == "scalogram":
        if architecture == "cnn-harmonic":
            raise ValueError("cnn-harmonic reads harmonic levels beside log-mel: use --features mel")
        config = ScalogramConfig(wavelet=wavelet)
    elif kind == "mel":
        config = MelConfig(harmonics=HARMONICS if architecture == "cnn-harmonic" else 0)
    else:
        raise ValueError(f"unknown features {kind!r}: use mel or scalogram")
    if architecture in ("cnn-vgg", "cnn-harmonic"):
        return replace(config, input_size=config.native_size)
    return replace(config, input_size=(96, 96)) if is_matcher(architecture) else config


def _reserved_label(label: str) -> bool:
    """Whether ``label`` names a single reserved GM program (``gm009_glockenspiel``)."""
    return label.startswith("gm") and label[2:5].isdigit() and is_reserved_program(int(label[2:5]))


def _pk_batch(groups: list[np.ndarray], size: int, rng: np.random.Generator, per_label: int = 4) -> torch.Tensor:
    """A matcher batch: ``size // per_label`` labels, ``per_label`` patches each (indices into the set).

    Every batch then holds same-label pairs (across files and libraries) and different-label pairs.
    """
    n_labels = min(len(groups), max(2, size // per_label))
    chosen = rng.choice(len(groups), size=n_labels, replace=False)
    return torch.from_numpy(np.concatenate([rng.choice(groups[g], size=per_label) for g in chosen]))


def _pair_loss(logits: torch.Tensor, targets: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
    """Balanced binary cross-entropy over every pair of a batch's all-pairs logits [shape=(b, b)].

    Positives: same label, different file (two patches of one file are trivially alike). Negatives:
    different labels. Both sides weigh half, whatever their counts.
    """
    same = targets[:, None] == targets[None, :]
    positive = same & (owner[:, None] != owner[None, :])
    negative = ~same
    loss = logits.new_zeros(())
    for mask, value in ((positive, 1.0), (negative, 0.0)):
        if mask.any():
            chosen = logits[mask]
            loss = loss + 0.5 * F.binary_cross_entropy_with_logits(chosen, torch.full_like(chosen, value))
    return loss


def matcher_file_scores(
    model: torch.nn.Module, features: FeatureConfig, patches: PatchSet, shifts: Sequence[int] = (0,)
) -> tuple[np.ndarray, np.ndarray]:
    """Every clean file of ``patches`` scored against every other as a one-shot support enrolled at
    pitch ``shifts`` (semitones).

    Returns (file scores [shape=(files, files)], file label names [shape=(files,)]).
    """
    if not isinstance(model, Matcher):
        raise TypeError(f"{type(model).__name__} is not a matcher")
    q_emb, q_owner, q_weight, s_emb, s_owner = embed_queries_and_shots(model, features, patches, shifts)
    n = len(patches.files)
    scores = file_score_matrix(model.head, q_emb, q_owner, q_weight, n, s_emb, s_owner, n)
    return scores, np.array([f.label for f in patches.files])


def embed_clean_patches(
    model: Matcher,
    features: FeatureConfig,
    patches: PatchSet,
    shifts: Sequence[int] = (0,),
    aggregation: str = DEFAULT_AGGREGATION,
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Embeddings of the clean (not augmented) sounding patches at each pitch shift
    [shape=(len(shifts) * n, dim)], shift-major as ``embed_support_patches``, with each row's file
    index and patch weight (``PatchSet.weights`` by ``aggregation``). ``model`` runs as
    ``models.inference_model`` makes it."""
    model = inference_model(model)
    weight = patches.weights(aggregation)
    use = (weight > 0) & (patches.variant == 0)
    emb, _ = embed_support_patches(model, features, patches.inputs[torch.from_numpy(use)], shifts)
    return emb, np.tile(patches.owner[use], len(shifts)), np.tile(weight[use], len(shifts))


def embed_queries_and_shots(
    model: Matcher,
    features: FeatureConfig,
    patches: PatchSet,
    shifts: Sequence[int],
    aggregation: str = DEFAULT_AGGREGATION,
) -> tuple[torch.Tensor, np.ndarray, np.ndarray, torch.Tensor, np.ndarray]:
    """One pool of files as queries (as they are) and as shots (at pitch ``shifts``), embedded once:
    (query embeddings, their files, their weights by ``aggregation``, shot embeddings, their files)."""
    s_emb, s_owner, s_weight = embed_clean_patches(model, features, patches, shifts, aggregation)
    n, unshifted = len(s_owner) // len(shifts), list(shifts).index(0)
    rows = slice(unshifted * n, (unshifted + 1) * n)
    return s_emb[rows], s_owner[rows], s_weight[rows], s_emb, s_owner


def calibrate_matcher(
    model: torch.nn.Module, features: FeatureConfig, val_set: PatchSet, shifts: Sequence[int]
) -> dict[str, tuple[float, float]]:
    """Per support shift set, ``shifts`` and also ``(0,)`` (examples as they are, which a support
    library may choose): (unknown threshold, 5-way 1-shot accuracy as in validation) on ``val_set``,
    labels never trained on. Keys are ``matching.shifts_key``."""
    calibrated = {}
    for chosen in dict.fromkeys([tuple(shifts), (0,)]):
        scores, labels = matcher_file_scores(model, features, val_set, chosen)
        threshold = round(calibrate_threshold(*same_and_different(scores, labels)), 4)
        five_way = round(_validation_episodes(scores, labels), 4)
        calibrated[shifts_key(chosen)] = (threshold, five_way)
    return calibrated


def same_and_different(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores of same-label file pairs (a file with itself left out) and of different-label pairs."""
    same = labels[:, None] == labels[None, :]
    return scores[same & ~np.eye(len(labels), dtype=bool)], scores[~same]


class MatcherWithAux(torch.nn.Module):
    """Training-time wrapper of a matcher: the Siamese network plus an auxiliary linear classifier
    over the training labels on its embeddings.

    ``forward(x)`` -> (all-pairs logits [shape=(b, b)], class logits [shape=(b, labels)]). The pair
    loss is the seed paper's; the auxiliary cross-entropy gives every patch a gradient towards its
    own label among all training labels at once, which a batch of pairs alone does slowly. Only the
    matcher is exported; the classifier is dropped.
    """

    def __init__(self, matcher: Matcher, n_labels: int) -> None:
        super().__init__()
        self.matcher = matcher
        self.aux = torch.nn.Linear(matcher.head.weight.numel(), n_labels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.matcher.embed(x)
        return self.matcher.head.cross_logits(e, e), self.aux(e)


def _export_state(model: torch.nn.Module, predicted: int | None = None) -> dict[str, torch.Tensor]:
    """The weights a checkpoint keeps: a matcher without its training-time classifier; a classifier
    with only the output rows of the ``predicted`` first labels (auxiliary classes dropped, so the
    softmax runs over the predicted labels alone)."""
    inner = model.matcher if isinstance(model, MatcherWithAux) else model
    state = {k: v.detach().cpu().clone().contiguous() for k, v in inner.state_dict().items()}
    if predicted is not None:
        for layer in label_layers(inner):
            for key in (f"{layer}.weight", f"{layer}.bias"):
                state[key] = state[key][:predicted].contiguous()
    return state


def check_init(config: TrainConfig, init: CheckpointMeta, name: str) -> None:
    """Raise ValueError unless checkpoint ``init`` (called ``name``) can start ``config``'s run: the
    same architecture, width and features (the weights must fit the network and mean the same inputs)."""
    theirs, ours = init.features.to_dict(), config.features.to_dict()
    pairs = {
        "network": (init.architecture, config.architecture),
        "network size": (init.params, config.model_params),
        "features": (theirs["name"], ours["name"]),
    }
    if theirs["name"] == ours["name"]:  # the same kind: name the settings that differ
        pairs.update({f"features' {key}": (theirs[key], ours[key]) for key in sorted(theirs) if key in ours})
    differ = [f"{what} {a} (this run: {b})" for what, (a, b) in pairs.items() if a != b]
    if differ:
        raise ValueError(
            f"--init {name} has another {'; '.join(differ)}. Fine-tuning keeps the checkpoint's network and "
            "features: leave out --model, --features, --wavelet and --width to take them from it"
        )


def describe_init(init: Checkpoint, labels: Sequence[str]) -> str:
    """The line a fine-tuning run logs: what it takes from checkpoint ``init`` for ``labels``."""
    new = [label for label in labels if label not in init.meta.labels]
    # A matcher has no output rows: all of it carries over, its training-time classifier starts fresh.
    carried = "were among its training labels" if is_matcher(init.meta.architecture) else "keep its output rows"
    known = f"{len(labels) - len(new)} of {len(labels)} labels {carried}"
    return f"starting from {init.model_id}: {known}" + (f" (new: {', '.join(new)})" if new else "")


def initial_weights(model: torch.nn.Module, labels: Sequence[str], init: Checkpoint) -> dict[str, torch.Tensor]:
    """``model``'s state (``model`` built for ``labels``) taken from checkpoint ``init``: fine-tuning.

    Every tensor comes from ``init`` except in the label layers (``models.label_layers``), where
    only the rows of labels ``init`` knows are carried over, matched by name; rows of new labels
    keep ``model``'s fresh initialization, as does a matcher's training-time classifier.
    """
    inner = model.matcher if isinstance(model, MatcherWithAux) else model
    source = init.model.state_dict()
    known = [(row, init.meta.labels.index(label)) for row, label in enumerate(labels) if label in init.meta.labels]
    rows = torch.tensor([row for row, _ in known], dtype=torch.long)
    init_rows = torch.tensor([row for _, row in known], dtype=torch.long)
    heads = {f"{layer}.{part}" for layer in label_layers(inner) for part in ("weight", "bias")}
    state = {key: value.clone() for key, value in inner.state_dict().items()}
    for key in state:
        if key in heads:
            state[key][rows] = source[key][init_rows].to(state[key].dtype)
        else:
            state[key] = source[key].clone()
    if inner is model:
        return state
    return {**model.state_dict(), **{f"matcher.{key}": value for key, value in state.items()}}


def _validate_matcher(
    model: torch.nn.Module, features: FeatureConfig, val_set: PatchSet, shifts: Sequence[int]
) -> tuple[float, float]:
    """(balanced same/different accuracy of file pairs at score 0.5, 5-way 1-shot episode accuracy),
    shots enrolled at pitch ``shifts``."""
    scores, labels = matcher_file_scores(model, features, val_set, shifts)
    same, different = same_and_different(scores, labels)
    tpr = float((same >= 0.5).mean())
    tnr = float((different < 0.5).mean())
    return (tpr + tnr) / 2, _validation_episodes(scores, labels)


def _validation_episodes(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean accuracy of 300 5-way 1-shot episodes (fewer ways when fewer labels) over a file score matrix."""
    return run_episodes(scores, labels, labels, min(5, len(set(labels))), 1, episodes=300, seed=0).mean


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Optimizer state as flat tensors (stored with safetensors, so resuming never unpickles)."""
    flat: dict[str, torch.Tensor] = {}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            flat[f"{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    return flat


def _load_optimizer(optimizer: torch.optim.Optimizer, flat: dict[str, torch.Tensor]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in flat.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the model itself)."""
    inner = getattr(model, "module", model)
    assert isinstance(inner, torch.nn.Module)
    return inner


def train_loop(loop_config: dict[str, Any]) -> None:
    """Ray Train worker loop (see the module docstring). ``loop_config`` is JSON-like."""
    import ray.train
    import ray.train.torch
    from ray.train.v2._internal.execution import context as train_context

    # Ray Train 2.60 logs every report at INFO through a logger named by its file path, which
    # LoggingConfig's level does not reach: two lines of metrics and paths per epoch otherwise.
    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(max(1, int(loop_config["threads"])))
    features = feature_config_from_dict(loop_config["features"])
    storage = RunStorage.from_dict(loop_config["storage"])
    with _local_cache(loop_config["cache"], storage, ("train.npz", "val.npz")) as cache:
        train_set, val_set = PatchSet.load(cache / "train.npz"), PatchSet.load(cache / "val.npz")
    labels = loop_config["labels"]
    predicted = loop_config["predicted"]  # None, or the first labels that are predicted (others auxiliary)
    n_predicted = predicted or len(labels)
    matcher = is_matcher(loop_config["architecture"])
    # The seed fixes the initial weights (the same on every rank; DDP would broadcast rank 0's anyway).
    torch.manual_seed(loop_config["seed"])
    model = build_model(loop_config["architecture"], len(labels), **loop_config["model_params"])
    if matcher:
        model = MatcherWithAux(model, len(labels))  # type: ignore[arg-type]
    if loop_config["init"] is not None:
        name, data = loop_config["init"]
        model.load_state_dict(initial_weights(model, labels, checkpoint_from_bytes(data, name)))
    optimizer = OPTIMIZERS[loop_config["optimizer"]](model.parameters(), lr=loop_config["lr"])
    start_epoch, history, best_acc, best_epoch = 1, [], -1.0, 0
    best_state = _export_state(model, predicted)
    # This attempt's own latest checkpoint (after a worker failure), else an earlier attempt's.
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None and loop_config.get("resume_from"):
        checkpoint = ray.train.Checkpoint(loop_config["resume_from"], filesystem=storage.arrow_filesystem())
    if checkpoint:
        with checkpoint.as_directory() as directory:
            state = json.loads((Path(directory) / "state.json").read_text())
            model.load_state_dict(load_file(str(Path(directory) / "latest.safetensors")))
            best_state = load_file(str(Path(directory) / "best.safetensors"))
            _load_optimizer(optimizer, load_file(str(Path(directory) / "optimizer.safetensors")))
        start_epoch, history = state["epoch"] + 1, state["history"]
        best_acc, best_epoch = state["best_acc"], state["best_epoch"]
    model = ray.train.torch.prepare_model(model)
    torch.manual_seed(loop_config["seed"] * 1000 + rank)  # dropout: repeatable, and not alike on every rank
    device = ray.train.torch.get_device()
    per_worker_batch = max(1, loop_config["batch_size"] // world)
    sounding = train_set.weights() > 0
    clean = np.nonzero(sounding & (train_set.variant == 0))[0]
    pool = torch.from_numpy(np.nonzero(sounding)[0])
    pool_targets = train_set.targets[pool].numpy()
    groups = [pool.numpy()[pool_targets == t] for t in np.unique(pool_targets)]
    val_files = np.arange(len(val_set.files))
    my_val = val_files[val_files % world == rank]
    val_mask = np.isin(val_set.owner, my_val)
    my_val_set = PatchSet(
        val_set.inputs[torch.from_numpy(val_mask)],
        val_set.targets[torch.from_numpy(val_mask)],
        val_set.owner[val_mask],
        val_set.level_db[val_mask],
        val_set.variant[val_mask],
        val_set.files,
        val_set.file_stats,
    )
    val_sounding = my_val_set.weights() > 0
    noise_weight = loop_config["noise_outliers"]
    noise = noise_patches(features, loop_config["seed"]) if noise_weight > 0 else None

    def validate(total: float, seen: float) -> tuple[float, float, float]:
        """(patch, file accuracy on validation, mean training loss), over every rank."""
        if matcher:  # every rank scores the whole (small) validation set with the same weights
            wrapper = _unwrap(model)
            assert isinstance(wrapper, MatcherWithAux)
            pair_acc, episode_acc = _validate_matcher(wrapper.matcher, features, val_set, loop_config["support_shifts"])
            scaled = [pair_acc * world, float(world), episode_acc * world, float(world)]
            counts = torch.tensor([*scaled, total, float(seen)])
        else:
            # Accuracy over the predicted labels only (auxiliary classes are never an answer).
            patch_probs, file_scores = predict_files(_unwrap(model), features, my_val_set)
            patch_targets = my_val_set.targets.numpy()
            use = val_sounding & (patch_targets < n_predicted)
            patch_hits = float((patch_probs[:, :n_predicted].argmax(1) == patch_targets)[use].sum())
            file_targets = np.array([labels.index(f.label) for f in val_set.files])
            mine = my_val[file_targets[my_val] < n_predicted]
            file_hits = float((file_scores[:, :n_predicted].argmax(1) == file_targets)[mine].sum())
            counts = torch.tensor([patch_hits, float(use.sum()), file_hits, float(len(mine)), total, float(seen)])
        if world > 1:
            torch.distributed.all_reduce(counts)
        return float(counts[0] / counts[1]), float(counts[2] / counts[3]), float(counts[4] / max(1.0, float(counts[5])))

    if loop_config["init"] is not None and start_epoch == 1:
        # Epoch 0 is the starting checkpoint (best_state already holds it): fine-tuning keeps it
        # unless an epoch validates better.
        started = time.perf_counter()
        patch_acc, best_acc, _ = validate(0.0, 0.0)
        history.append(asdict(EpochMetrics(0, None, patch_acc, best_acc, time.perf_counter() - started)))
        if rank == 0:
            _log_epoch(history[-1], matcher)
    for epoch in range(start_epoch, loop_config["epochs"] + 1):
        started = time.perf_counter()
        # Same permutation on every rank (seeded by epoch), then each rank takes its stride.
        generator = torch.Generator().manual_seed(loop_config["seed"] * 1000 + epoch)
        order = pool[torch.randperm(len(pool), generator=generator)[: len(clean)]][rank::world]
        model.train()
        total, seen = 0.0, 0
        steps = math.ceil(len(clean) / world / per_worker_batch)
        rng = np.random.default_rng([loop_config["seed"], epoch, rank])
        for step in range(steps):  # every rank runs the same number of steps (DDP all-reduces each)
            lr = scheduled_lr(
                loop_config["lr"], loop_config["lr_schedule"], (epoch - 1) * steps + step, loop_config["epochs"] * steps
            )
            for group in optimizer.param_groups:
                group["lr"] = lr
            if matcher:
                idx = _pk_batch(groups, per_worker_batch, rng)
            else:
                idx = order[step * per_worker_batch : (step + 1) * per_worker_batch]
                if len(idx) == 0:
                    idx = order[:per_worker_batch]
            x = train_set.inputs[idx].float()
            if noise is not None:  # examples of no instrument after the batch's own
                x = torch.cat([x, noise[rng.choice(len(noise), max(1, len(idx) // 4), replace=False)].float()])
            x = resize_patches(augment_patches(x, generator, features.harmonic_rows), features).to(device)
            with autocast(device.type, loop_config["precision"]):
                if matcher:
                    owner = torch.from_numpy(train_set.owner[idx.numpy()]).to(device)
                    targets = train_set.targets[idx].to(device)
                    pair_logits, class_logits = model(x)
                    loss = _pair_loss(pair_logits.float(), targets, owner)
                    if loop_config["aux_weight"] > 0:
                        loss = loss + loop_config["aux_weight"] * F.cross_entropy(class_logits.float(), targets)
                else:
                    logits = model(x).float()
                    loss = classifier_loss(logits[: len(idx)], train_set.targets[idx].to(device))
                    if noise is not None:
                        loss = loss + noise_weight * uniform_loss(logits[len(idx) :])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        patch_acc, file_acc, train_loss = validate(total, seen)
        metrics = EpochMetrics(epoch, train_loss, patch_acc, file_acc, time.perf_counter() - started)
        history.append(asdict(metrics))
        if rank == 0:
            _log_epoch(history[-1], matcher)
        if file_acc > best_acc:
            best_acc, best_epoch = file_acc, epoch
            best_state = _export_state(_unwrap(model), predicted)
        stop = epoch - best_epoch >= loop_config["patience"] or epoch == loop_config["epochs"]
        report = {**asdict(metrics), "best_epoch": best_epoch, "best_val_file_accuracy": best_acc, "done": stop}
        with tempfile.TemporaryDirectory() as directory:
            saved = None
            if rank == 0:
                latest = {k: v.detach().cpu().contiguous() for k, v in _unwrap(model).state_dict().items()}
                write_tensors(Path(directory) / "latest.safetensors", latest)
                write_tensors(Path(directory) / "best.safetensors", best_state)
                write_tensors(Path(directory) / "optimizer.safetensors", _optimizer_tensors(optimizer))
                state = {"epoch": epoch, "history": history, "best_acc": best_acc, "best_epoch": best_epoch}
                (Path(directory) / "state.json").write_text(json.dumps(state))
                saved = ray.train.Checkpoint.from_directory(directory)
            ray.train.report(report, checkpoint=saved)
        if stop:
            break


def _log_epoch(metrics: dict[str, Any], matcher: bool) -> None:
    """Write an epoch's line to the Ray Train worker's stdout, which Ray streams to the driver.

    Not ``print``: Ray Train 2.60 replaces it in its workers with one that writes each line both to
    the stream and to a logger that reaches the driver too, so every line showed twice.
    """
    names = ("val pair acc", "val 5-way 1-shot") if matcher else ("val patch acc", "val file acc")
    loss = metrics["train_loss"]
    sys.stdout.write(
        f"epoch {metrics['epoch']:3d}  loss {'-' if loss is None else f'{loss:.4f}':>6}  {names[0]} "
        f"{metrics['val_patch_accuracy']:.3f}  {names[1]} {metrics['val_file_accuracy']:.3f}  "
        f"({metrics['seconds']:.0f}s)\n"
    )
    sys.stdout.flush()


def train(
    config: TrainConfig,
    out: Path,
    storage: str | None = None,
    name: str | None = None,
    resume: bool = False,
    address: str | None = None,
    cache: Path | None = None,
    log_line: Callable[[str], None] = print,
    s3: S3Options | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Train ``config`` on Ray Train and save the best epoch as a mirbatch checkpoint at ``out``.

    Parameters
    ----------
    config : TrainConfig
    out : Path
        Checkpoint file to write.
    storage : str, optional
        Where runs keep checkpoints and the feature cache: a folder (on a cluster, shared by every
        node: NFS) or an ``s3://bucket/prefix``. Default: ``./runs``.
    name : str, optional
        Run name under ``storage`` (default: ``out``'s stem).
    resume : bool
        Continue the run ``name`` from its latest checkpoint. Without it an existing run is an error.
    address : str, optional
        Ray cluster address; default starts a local Ray.
    cache : Path, optional
        Feature cache folder (default: ``storage/feature-cache``).
    log_line : callable
        Receives progress lines.
    s3 : S3Options, optional
        Endpoint of an S3-compatible store for an ``s3://`` storage (default: from the environment).

    Returns
    -------
    (Path, dict)
        The checkpoint path and ``{"best_epoch", "val_file_accuracy", "history", ...}``.
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    from mirbatch.pipeline import check_local_resources, ensure_ray, sigterm_as_interrupt

    try:  # before training, not after: the checkpoint must have somewhere to go
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create the folder of --out {out}: {exc.strerror or exc}") from exc
    init: Checkpoint | None = None
    if config.init is not None:
        try:
            init_name, init_bytes = read_checkpoint_bytes(config.init)
            init = checkpoint_from_bytes(init_bytes, init_name)
        except CheckpointError as exc:
            raise ValueError(f"--init: {exc}") from None
        check_init(config, init.meta, config.init)
    run_storage = RunStorage.resolve(storage, s3)
    name = name or out.stem
    run_uri = run_storage.join(name)
    fs, run_path = run_storage.filesystem(run_uri)
    # A run that failed before its first epoch left an empty folder: no run to continue.
    if fs.exists(run_path) and fs.ls(run_path) and not resume:
        raise ValueError(
            f"a run named {name!r} exists in {run_storage.uri}; pass --resume to continue it, or --name NEW"
        )
    if run_storage.remote:
        bucket = run_path.split("/", 1)[0]
        if not fs.exists(bucket):
            raise ValueError(
                f"--storage {run_storage.uri}: bucket {bucket!r} does not exist (or is not readable); create it first"
            )
    else:
        fs.makedirs(run_path, exist_ok=True)
    cache_root = str(cache.absolute()) if cache else run_storage.join("feature-cache")
    ensure_ray(address)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    # Half a CPU a worker at least, so that more workers than cores can share them.
    worker_cpus = 1.0 if config.use_gpu else max(0.5, cpus / config.workers)
    check_local_resources(
        {"CPU": worker_cpus * config.workers, "GPU": float(config.workers) if config.use_gpu else 0.0},
        address,
        f"--workers {config.workers}" + (" with --use-gpu" if config.use_gpu else ""),
    )
    labels, cache_dir = build_cache(config, cache_root, log_line, run_storage)
    if init is not None:
        log_line(describe_init(init, labels))
    resume_from = latest_checkpoint(fs, run_path) if resume else None
    loop_config = {
        "architecture": config.architecture,
        "labels": list(labels),
        "features": config.features.to_dict(),
        "cache": cache_dir,
        "storage": run_storage.to_dict(),
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "lr": config.learning_rate,
        "lr_schedule": config.lr_schedule,
        "optimizer": config.optimizer_name,
        "model_params": config.model_params,
        "patience": config.patience,
        "seed": config.seed,
        "aux_weight": config.aux_weight,
        "noise_outliers": config.noise_outliers,
        "support_shifts": list(config.shot_shifts),
        "predicted": config.predicted,
        "precision": config.precision,
        # Shipped as bytes: the workers need not reach the file (a bundled name or a driver's path).
        "init": (init.name, init_bytes) if init is not None else None,
        "threads": max(1, cpus // config.workers),
        # An earlier attempt's newest complete checkpoint (in the run folder every node can reach).
        "resume_from": resume_from,
    }
    if resume:
        log_line(
            f"resuming from {run_uri}/{resume_from.removeprefix(run_path).lstrip('/')}"
            if resume_from
            else f"--resume: run {name!r} has no complete checkpoint in {run_storage.uri}; starting at epoch 1"
        )
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=config.workers,
            use_gpu=config.use_gpu,
            resources_per_worker={"CPU": worker_cpus},
        ),
        run_config=ray.train.RunConfig(  # type: ignore[call-arg]  # typed as Train v1's; v2 runs and has logging_config
            # One folder per attempt: a resumed run starts from the newest complete checkpoint of any
            # earlier attempt, never from a run snapshot a killed driver may have left half-written.
            name=datetime.now(UTC).strftime("attempt-%Y%m%dT%H%M%S"),
            storage_path=run_path,
            storage_filesystem=run_storage.arrow_filesystem(),
            failure_config=ray.train.FailureConfig(max_failures=3),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            # Ray Train's own INFO lines (resources, checkpoint paths) would bury the epoch lines.
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
        ),
    )
    try:
        with sigterm_as_interrupt():
            result = trainer.fit()
    except (KeyboardInterrupt, SystemExit):
        # Ctrl-C: Ray Train's own handler aborts the run and exits; SIGTERM: a KeyboardInterrupt.
        raise TrainingInterrupted(run_uri) from None
    if result.error:
        raise RuntimeError(f"training failed: {result.error}")
    assert result.checkpoint is not None
    with result.checkpoint.as_directory() as directory:
        state = json.loads((Path(directory) / "state.json").read_text())
        best = load_file(str(Path(directory) / "best.safetensors"))
    predicted_labels = labels[: config.predicted] if config.predicted else labels
    model = build_model(config.architecture, len(predicted_labels), **config.model_params)
    model.load_state_dict(best)
    best_metrics = next(h for h in state["history"] if h["epoch"] == state["best_epoch"])
    summary: dict[str, Any] = {
        "best_epoch": state["best_epoch"],
        "val_file_accuracy": round(state["best_acc"], 4),
        "val_patch_accuracy": round(best_metrics["val_patch_accuracy"], 4),
        "epochs_run": state["epoch"],
        "parameters": count_parameters(model),
    }
    extra: dict[str, torch.Tensor] | None = None
    trained_labels = predicted_labels
    if is_matcher(config.architecture):
        # The unknown threshold: the file-pair score that best separates same from different
        # instruments among the validation labels (never trained on).
        with _local_cache(cache_dir, run_storage, ("val.npz",)) as local:
            val_set = PatchSet.load(local / "val.npz")
        calibrated = calibrate_matcher(model, config.features, val_set, config.shot_shifts)
        thresholds = {key: threshold for key, (threshold, _) in calibrated.items()}
        summary.update(
            unknown_threshold=thresholds[shifts_key(config.shot_shifts)],
            unknown_thresholds=thresholds,
            val_labels=sorted({f.label for f in val_set.files}),
        )
        summary["validation"] = (
            "val_file_accuracy: 5-way 1-shot episodes over the validation labels; val_patch_accuracy: "
            "balanced same/different accuracy of validation file pairs at score 0.5; shots enrolled at "
            "the support shifts"
        )
        trained_labels = tuple(label for label in labels if label not in set(summary["val_labels"]))
    else:
        with _local_cache(cache_dir, run_storage, ("train.npz",)) as local:
            train_set = PatchSet.load(local / "train.npz")
        # The baseline learns the predicted labels' files, as the model answers with those only.
        file_targets = np.array([labels.index(f.label) for f in train_set.files])
        keep = file_targets < len(predicted_labels)
        extra = MfccSvm.fit(train_set.file_stats[keep], file_targets[keep]).to_tensors()
    cache_fs, cache_path = run_storage.filesystem(cache_dir)
    cache_summary = json.loads(cache_fs.cat(f"{cache_path}/done.json"))
    meta = CheckpointMeta(
        architecture=config.architecture,
        labels=trained_labels,
        features=config.features,
        params=config.model_params,
        support_shifts=config.shot_shifts,
        training={
            "data": [describe_dataset(Path(d)) for d in config.data],
            "files": cache_summary["train_files"],
            "epochs": state["epoch"],
            "batch_size": config.batch_size,
            "lr": config.learning_rate,
            "lr_schedule": config.lr_schedule,
            "optimizer": config.optimizer_name,
            "seed": config.seed,
            "split": f"by {_SPLIT_UNITS[config.split]}, {config.val_fraction:.0%} validation",
            "augment": config.augment.to_dict(),
            "workers": config.workers,
            "precision": config.precision,
            **({"init": init.model_id} if init is not None else {}),
            **({"aux_weight": config.aux_weight} if is_matcher(config.architecture) else {}),
            **({"noise_outliers": config.noise_outliers} if config.noise_outliers > 0 else {}),
            **({"aux_labels": list(labels[len(predicted_labels) :])} if config.predicted else {}),
        },
        metrics=summary,
    )
    save_checkpoint(out, model, meta, extra=extra)
    history_path = out.with_suffix(".history.json")
    history_path.write_text(json.dumps(state["history"], indent=2) + "\n")
    return out, {**summary, "history": state["history"], "run_dir": run_uri}


_CHECKPOINT_FILES = ("latest.safetensors", "best.safetensors", "optimizer.safetensors", "state.json")


def latest_checkpoint(fs: Any, run_path: str) -> str | None:
    """Path (inside ``fs``) of the newest complete checkpoint (all files present, state readable) of
    any attempt of a run, or None when it has none yet."""
    best: tuple[int, str] | None = None
    for state_path in fs.glob(f"{run_path}/attempt-*/checkpoint_*/state.json"):
        folder = str(state_path).rsplit("/", 1)[0]
        if not all(fs.isfile(f"{folder}/{name}") for name in _CHECKPOINT_FILES):
            continue
        try:
            epoch = int(json.loads(fs.cat(state_path))["epoch"])
        except (ValueError, KeyError, TypeError):
            continue
        if best is None or epoch > best[0]:
            best = (epoch, folder)
    return best[1] if best else None


def describe_dataset(root: Path) -> str:
    """A data set's name for checkpoint metadata: what rendered or morphed it, else its folder's name."""
    render, morph = root / "render.json", root / "morph.json"
    if render.exists():
        meta = json.loads(render.read_text())
        return f"{meta['library']} render (seed {meta['seed']}, {meta['per_class']} per label)"
    if morph.exists():
        meta = json.loads(morph.read_text())
        first, second = meta["libraries"]
        return f"morph of {first} and {second} (seed {meta['seed']}, {first} weight {meta['low']}-{meta['high']})"
    return root.name
