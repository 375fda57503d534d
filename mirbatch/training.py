"""Training the classifier: decode once, cache patches, train with augmentation, keep the best epoch.

Audio is decoded and turned into unresized log-mel patches once (``PatchSet``); every epoch then
only augments, resizes and trains. The split is by file (``split_by_file``), so no file has patches
on both sides. The best epoch by validation file accuracy is what gets saved.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mirbatch.aggregate import active_patches
from mirbatch.audio import DecodeError, decode
from mirbatch.datasets.layouts import LabelledFile, folder_dataset, split_by_file
from mirbatch.features import Featurizer, MelConfig
from mirbatch.models import CheckpointMeta, build_model, save_checkpoint

__all__ = ["TrainConfig", "PatchSet", "build_patch_set", "augment", "predict_files", "train", "EpochMetrics"]


@dataclass(frozen=True)
class TrainConfig:
    """A training run.

    Attributes
    ----------
    data : tuple of str
        Data-set folders (a folder per label); several are pooled.
    architecture : str
        Registered architecture name.
    labels : tuple of str or None
        Labels to train; None takes every label folder found.
    epochs, batch_size, lr : training schedule (RMSprop, per the seed paper).
    val_fraction : float
        Share of files held out for validation (split by file).
    patience : int
        Epochs without a better validation accuracy before stopping.
    seed : int
    features : MelConfig
    """

    data: tuple[str, ...]
    architecture: str = "cnn"
    labels: tuple[str, ...] | None = None
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    val_fraction: float = 0.15
    patience: int = 8
    seed: int = 0
    features: MelConfig = field(default_factory=MelConfig)


@dataclass(frozen=True)
class PatchSet:
    """Cached training patches.

    Attributes
    ----------
    inputs : torch.Tensor [shape=(patches, 1, n_mels, frames), dtype=float16]
        Unresized patches in [0, 1].
    targets : torch.Tensor [shape=(patches,), dtype=int64]
        Label index of each patch.
    owner : np.ndarray [shape=(patches,)]
        Index into ``files`` of each patch.
    active : np.ndarray [shape=(patches,), dtype=bool]
        Whether the patch carries sound (see ``aggregate.active_patches``).
    files : list of LabelledFile
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    owner: np.ndarray
    active: np.ndarray
    files: list[LabelledFile]


def build_patch_set(
    files: Sequence[LabelledFile], labels: Sequence[str], featurizer: Featurizer, jobs: int = 2
) -> PatchSet:
    """Decode ``files`` (in ``jobs`` threads) and cut them into cached patches; undecodable files are skipped."""
    index = {label: i for i, label in enumerate(labels)}
    rate = featurizer.config.sample_rate

    def load(f: LabelledFile) -> np.ndarray | None:
        try:
            return decode(f.path, rate).samples
        except DecodeError:
            return None

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        decoded = list(pool.map(load, files))
    kept = [(f, y) for f, y in zip(files, decoded, strict=True) if y is not None]
    if not kept:
        raise ValueError("none of the data-set files could be decoded")
    inputs, owners, actives = [], [], []
    for start in range(0, len(kept), 64):
        chunk = kept[start : start + 64]
        batch = featurizer([y for _, y in chunk], resize=False)
        inputs.append(batch.inputs.to(torch.float16))
        owners.append(batch.owner + start)
        active = np.zeros(len(batch.owner), dtype=bool)
        for j in range(len(chunk)):
            sel = batch.owner == j
            active[sel] = active_patches(batch.level_db[sel])
        actives.append(active)
    owner = np.concatenate(owners)
    kept_files = [f for f, _ in kept]
    targets = torch.tensor([index[kept_files[o].label] for o in owner], dtype=torch.int64)
    return PatchSet(torch.cat(inputs), targets, owner, np.concatenate(actives), kept_files)


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Augment unresized patches [shape=(b, 1, n_mels, frames)] in [0, 1].

    - a raised floor (a noise floor 30-80 dB under the peak): recordings are not silent between notes;
    - a shift of up to 2 mel bands: small pitch and tuning differences between libraries;
    - one frequency mask and one time mask (SpecAugment): no single band or instant decides.
    """
    b, _, n_mels, frames = x.shape
    floor = torch.rand(b, 1, 1, 1, generator=generator) * 0.6
    floor = torch.where(torch.rand(b, 1, 1, 1, generator=generator) < 0.5, floor, torch.zeros_like(floor))
    x = torch.maximum(x, floor)
    out = torch.empty_like(x)
    shifts = torch.randint(-2, 3, (b,), generator=generator).tolist()
    for i, s in enumerate(shifts):
        out[i] = torch.roll(x[i], shifts=s, dims=-2)
        if s > 0:
            out[i, :, :s] = x[i, :, :1]
        elif s < 0:
            out[i, :, s:] = x[i, :, -1:]
    f_width = torch.randint(0, n_mels // 8 + 1, (b,), generator=generator).tolist()
    t_width = torch.randint(0, frames // 6 + 1, (b,), generator=generator).tolist()
    for i in range(b):
        f0 = int(torch.randint(0, n_mels - f_width[i] + 1, (1,), generator=generator))
        t0 = int(torch.randint(0, frames - t_width[i] + 1, (1,), generator=generator))
        out[i, :, f0 : f0 + f_width[i]] = 0.0
        out[i, :, :, t0 : t0 + t_width[i]] = 0.0
    return out


@torch.inference_mode()
def predict_files(
    model: torch.nn.Module, featurizer: Featurizer, patches: PatchSet, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Return (patch probabilities [shape=(patches, labels)], file scores [shape=(files, labels)]).

    File scores are the mean of the file's active patches' probabilities (as ``tag`` computes them).
    """
    model.eval()
    probs = []
    for start in range(0, len(patches.targets), batch_size):
        x = featurizer.resize(patches.inputs[start : start + batch_size].float())
        probs.append(torch.softmax(model(x), dim=1))
    patch_probs = torch.cat(probs).numpy()
    n_files = len(patches.files)
    sums = np.zeros((n_files, patch_probs.shape[1]))
    counts = np.zeros(n_files)
    np.add.at(sums, patches.owner[patches.active], patch_probs[patches.active])
    np.add.at(counts, patches.owner[patches.active], 1)
    return patch_probs, sums / np.maximum(counts, 1)[:, None]


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int
    train_loss: float
    val_patch_accuracy: float
    val_file_accuracy: float
    seconds: float


def _accuracies(model: torch.nn.Module, featurizer: Featurizer, patches: PatchSet) -> tuple[float, float]:
    patch_probs, file_scores = predict_files(model, featurizer, patches)
    hits = patch_probs.argmax(1) == patches.targets.numpy()
    patch_acc = float(hits[patches.active].mean())
    file_targets = np.zeros(len(patches.files), dtype=np.int64)
    file_targets[patches.owner] = patches.targets.numpy()
    return patch_acc, float((file_scores.argmax(1) == file_targets).mean())


def train(
    config: TrainConfig, out: Path, log: Callable[[str], None] = print, jobs: int = 2
) -> tuple[Path, dict[str, Any]]:
    """Train ``config`` and save the best epoch's checkpoint to ``out``; return (path, metrics)."""
    torch.manual_seed(config.seed)
    files: list[LabelledFile] = []
    for root in config.data:
        files.extend(folder_dataset(Path(root), config.labels))
    labels = tuple(config.labels) if config.labels else tuple(sorted({f.label for f in files}))
    train_files, val_files = split_by_file(files, config.val_fraction, config.seed)
    if not train_files or not val_files:
        raise ValueError(f"need files on both sides of the split; got {len(train_files)} train, {len(val_files)} val")
    featurizer = Featurizer(config.features)
    t0 = time.perf_counter()
    train_set = build_patch_set(train_files, labels, featurizer, jobs)
    val_set = build_patch_set(val_files, labels, featurizer, jobs)
    log(
        f"data: {len(train_set.files)} train files ({len(train_set.targets)} patches), "
        f"{len(val_set.files)} val files ({len(val_set.targets)} patches), {len(labels)} labels, "
        f"featurized in {time.perf_counter() - t0:.1f}s"
    )
    model = build_model(config.architecture, len(labels))
    optimizer = torch.optim.RMSprop(model.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    # Train on patches with sound only: silent tails carry no instrument and would teach noise.
    train_idx = torch.from_numpy(np.nonzero(train_set.active)[0])
    best: tuple[float, dict[str, torch.Tensor], EpochMetrics] | None = None
    history: list[EpochMetrics] = []
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        model.train()
        order = train_idx[torch.randperm(len(train_idx), generator=generator)]
        total, seen = 0.0, 0
        for start in range(0, len(order), config.batch_size):
            idx = order[start : start + config.batch_size]
            x = featurizer.resize(augment(train_set.inputs[idx].float(), generator))
            loss = F.cross_entropy(model(x), train_set.targets[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        patch_acc, file_acc = _accuracies(model, featurizer, val_set)
        metrics = EpochMetrics(epoch, total / max(seen, 1), patch_acc, file_acc, time.perf_counter() - started)
        history.append(metrics)
        log(
            f"epoch {epoch:3d}  loss {metrics.train_loss:.4f}  val patch acc {patch_acc:.3f}  "
            f"val file acc {file_acc:.3f}  ({metrics.seconds:.0f}s)"
        )
        if best is None or file_acc > best[0]:
            best = (file_acc, {k: v.clone() for k, v in model.state_dict().items()}, metrics)
        elif epoch - best[2].epoch >= config.patience:
            log(f"early stop: no better validation accuracy for {config.patience} epochs")
            break
    assert best is not None
    model.load_state_dict(best[1])
    result = {
        "best_epoch": best[2].epoch,
        "val_file_accuracy": round(best[2].val_file_accuracy, 4),
        "val_patch_accuracy": round(best[2].val_patch_accuracy, 4),
        "history": [vars(m) for m in history],
    }
    meta = CheckpointMeta(
        architecture=config.architecture,
        labels=labels,
        features=config.features,
        training={
            "data": [str(Path(d).name) for d in config.data],
            "files": len(train_set.files),
            "val_files": len(val_set.files),
            "epochs": len(history),
            "batch_size": config.batch_size,
            "lr": config.lr,
            "optimizer": "rmsprop",
            "seed": config.seed,
            "split": f"by file, {config.val_fraction:.0%} validation",
        },
        metrics={k: v for k, v in result.items() if k != "history"},
    )
    save_checkpoint(out, model, meta)
    if not math.isfinite(best[2].train_loss):
        raise RuntimeError("training diverged (loss is not finite)")
    return out, result
