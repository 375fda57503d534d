"""One-shot matching: embeddings scored against support examples, episodes, thresholds.

A support *shot* is one enrolled file, stored as the embeddings of its sounding patches. A query
patch's score for a shot is the Siamese score of its best-matching patch of that shot (max over the
shot's patches: a shot holds several notes, the query needs to resemble one of them); a shot's
patches are enrolled at its library's pitch shifts too (by default the checkpoint's
``support_shifts``: transposed copies, so one example also stands for its instrument an octave
away); a label's score is the mean over the label's shots; a file's score is the mean over its
sounding patches.
``tag --mode match``, episodic evaluation and threshold calibration all use these functions, so
their numbers describe the same computation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mirbatch.features import FeatureConfig, resize_patches, shift_pitch, shifts_key
from mirbatch.models import CheckpointMeta, Matcher, WeightedL1Head

__all__ = [
    "SupportSet",
    "embed_patches",
    "embed_support_patches",
    "score_against_support",
    "file_score_matrix",
    "EpisodeResult",
    "run_episodes",
    "calibrate_threshold",
    "calibrated_threshold",
]

_CHUNK = 4096  # support embeddings scored at once: bounds memory at queries x chunk floats


@dataclass(frozen=True)
class SupportSet:
    """Support embeddings grouped by shot and label, ready for scoring.

    Attributes
    ----------
    embeddings : torch.Tensor [shape=(n, dim), dtype=float32]
        One row per sounding patch of every shot.
    shot : torch.Tensor [shape=(n,), dtype=int64]
        Shot (enrolled file) index of each row, in ``0 .. n_shots - 1``.
    shot_label : torch.Tensor [shape=(n_shots,), dtype=int64]
        Label index of each shot.
    labels : tuple of str
    """

    embeddings: torch.Tensor
    shot: torch.Tensor
    shot_label: torch.Tensor
    labels: tuple[str, ...]

    @classmethod
    def build(cls, embeddings: np.ndarray, shot_ids: Sequence[str], labels: Sequence[str]) -> SupportSet:
        """From per-row embeddings [shape=(n, dim)], shot ids and labels (one per row)."""
        if len(embeddings) == 0:
            raise ValueError("the support library is empty: enroll examples with 'mirbatch support add'")
        label_names = tuple(sorted(set(labels)))
        shot_index: dict[str, int] = {}
        shot_label: list[int] = []
        shot = np.empty(len(shot_ids), dtype=np.int64)
        for i, (s, label) in enumerate(zip(shot_ids, labels, strict=True)):
            if s not in shot_index:
                shot_index[s] = len(shot_index)
                shot_label.append(label_names.index(label))
            shot[i] = shot_index[s]
        return cls(
            torch.from_numpy(np.array(embeddings, dtype=np.float32)),  # a copy: inputs may be read-only
            torch.from_numpy(shot),
            torch.tensor(shot_label, dtype=torch.int64),
            label_names,
        )

    def to_arrays(self) -> dict[str, Any]:
        """Plain arrays (how the driver ships a support set to actors)."""
        return {
            "embeddings": self.embeddings.numpy(),
            "shot": self.shot.numpy(),
            "shot_label": self.shot_label.numpy(),
            "labels": list(self.labels),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, Any]) -> SupportSet:
        return cls(
            torch.from_numpy(np.array(arrays["embeddings"], dtype=np.float32)),
            torch.from_numpy(np.array(arrays["shot"], dtype=np.int64)),
            torch.from_numpy(np.array(arrays["shot_label"], dtype=np.int64)),
            tuple(arrays["labels"]),
        )

    @property
    def n_shots(self) -> int:
        return len(self.shot_label)

    def to(self, device: str | torch.device) -> SupportSet:
        return SupportSet(self.embeddings.to(device), self.shot.to(device), self.shot_label.to(device), self.labels)


def embed_patches(model: Matcher, features: FeatureConfig, inputs: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Embed unresized patches [shape=(n, 1, rows, columns)] -> [shape=(n, dim), dtype=float32] on the CPU."""
    device = next(model.parameters()).device
    out = []
    with torch.inference_mode():
        for start in range(0, len(inputs), batch_size):
            x = resize_patches(inputs[start : start + batch_size].float().to(device), features)
            out.append(model.embed(x).float().cpu())
    dim = model.head.weight.numel()
    return torch.cat(out) if out else torch.zeros(0, dim)


def embed_support_patches(
    model: Matcher, features: FeatureConfig, inputs: torch.Tensor, shifts: Sequence[int], batch_size: int = 256
) -> tuple[torch.Tensor, np.ndarray]:
    """Embed unresized support patches [shape=(n, 1, rows, columns)] at each pitch shift.

    Returns (embeddings [shape=(len(shifts) * n, dim)], shift in semitones of each row
    [shape=(len(shifts) * n,)]), shift-major: rows ``i * n .. (i + 1) * n`` are ``shifts[i]``.
    """
    parts = [embed_patches(model, features, shift_pitch(inputs, k, features), batch_size) for k in shifts]
    dim = model.head.weight.numel()
    embeddings = torch.cat(parts) if parts else torch.zeros(0, dim)
    return embeddings, np.repeat(np.asarray(shifts, dtype=np.int16), len(inputs))


def _best_per_shot(
    head: WeightedL1Head, queries: torch.Tensor, support: SupportSet, chunk: int = _CHUNK
) -> torch.Tensor:
    """Max logit over each shot's patches: [shape=(queries, n_shots)], ``chunk`` support rows at a time."""
    best = torch.full((len(queries), support.n_shots), -torch.inf, device=queries.device)
    for start in range(0, len(support.embeddings), chunk):
        logits = head.cross_logits(queries, support.embeddings[start : start + chunk])
        index = support.shot[start : start + chunk].expand(len(queries), -1)
        best.scatter_reduce_(1, index, logits, reduce="amax")
    return best


def score_against_support(
    head: WeightedL1Head, queries: torch.Tensor, support: SupportSet, chunk: int = _CHUNK
) -> torch.Tensor:
    """Label scores of query patches.

    Parameters
    ----------
    head : WeightedL1Head
        The matcher's scoring head.
    queries : torch.Tensor [shape=(q, dim)]
        Query patch embeddings (same device as ``support``).
    support : SupportSet
    chunk : int
        Support rows scored at once: memory stays at ``q x chunk`` scores however large the library.

    Returns
    -------
    torch.Tensor [shape=(q, len(support.labels))]
        Per label, the mean over its shots of the best patch score (a probability in [0, 1]).
    """
    with torch.inference_mode():
        shot_scores = torch.sigmoid(_best_per_shot(head, queries, support, chunk))
        sums = torch.zeros(len(queries), len(support.labels), device=queries.device)
        sums.index_add_(1, support.shot_label, shot_scores)
        counts = torch.bincount(support.shot_label, minlength=len(support.labels)).clamp(min=1)
        return sums / counts


def file_score_matrix(
    head: WeightedL1Head,
    query_emb: torch.Tensor,
    query_owner: np.ndarray,
    query_weight: np.ndarray,
    n_query_files: int,
    shot_emb: torch.Tensor,
    shot_owner: np.ndarray,
    n_shot_files: int,
) -> np.ndarray:
    """File-against-file scores: for every query file and every candidate shot file, the mean over the
    query's patches of the best shot-patch score, weighted as ``tag`` weighs a file's patches
    (``aggregate.patch_weights``). [shape=(n_query_files, n_shot_files)]

    ``*_owner`` [shape=(patches,)] give each embedding row's file index; ``query_weight``
    [shape=(query patches,)] each query patch's weight.
    """
    support = SupportSet(
        shot_emb,
        torch.from_numpy(np.asarray(shot_owner, dtype=np.int64)),
        torch.zeros(n_shot_files, dtype=torch.int64),
        ("",),
    )
    with torch.inference_mode():
        patch_scores = torch.sigmoid(_best_per_shot(head, query_emb, support)).numpy()
    weight = np.asarray(query_weight, dtype=np.float64)
    sums = np.zeros((n_query_files, n_shot_files))
    np.add.at(sums, np.asarray(query_owner), weight[:, None] * patch_scores)
    totals = np.bincount(np.asarray(query_owner), weights=weight, minlength=n_query_files)
    return sums / np.where(totals > 0, totals, 1.0)[:, None]


@dataclass(frozen=True)
class EpisodeResult:
    """Accuracy over few-shot episodes."""

    n_way: int
    k_shot: int
    episodes: int
    accuracies: np.ndarray  # [shape=(episodes,)]

    @property
    def mean(self) -> float:
        return float(self.accuracies.mean())

    @property
    def ci95(self) -> float:
        """Half-width of the 95% confidence interval of the mean (normal approximation)."""
        if len(self.accuracies) < 2:
            return float("nan")
        return float(1.96 * self.accuracies.std(ddof=1) / np.sqrt(len(self.accuracies)))


def run_episodes(
    scores: np.ndarray,
    query_labels: Sequence[str] | np.ndarray,
    shot_labels: Sequence[str] | np.ndarray,
    n_way: int,
    k_shot: int,
    episodes: int,
    queries_per_label: int = 5,
    same_pool: bool = True,
    seed: int = 0,
) -> EpisodeResult:
    """N-way K-shot episodes over a precomputed file score matrix.

    Each episode draws ``n_way`` labels, ``k_shot`` shot files and up to ``queries_per_label`` query
    files per label (distinct from the shots when queries and shots come from one pool), and predicts
    each query's label as the best mean score over a label's shots.

    Parameters
    ----------
    scores : np.ndarray [shape=(query files, shot files)]
        Higher is more similar (Siamese scores, or negative distances for a baseline).
    query_labels, shot_labels : sequence of str
        Label of each row and each column of ``scores``.
    same_pool : bool
        Rows and columns are the same files (then a file is never its own shot).
    """
    rng = np.random.default_rng(seed)
    q_labels, s_labels = np.asarray(query_labels), np.asarray(shot_labels)
    need_q = 1 + (k_shot if same_pool else 0)
    usable = sorted(
        label
        for label in set(q_labels) & set(s_labels)
        if (q_labels == label).sum() >= need_q and (s_labels == label).sum() >= k_shot
    )
    if len(usable) < n_way:
        raise ValueError(
            f"{n_way}-way {k_shot}-shot episodes need {n_way} labels with at least {need_q} files each; "
            f"the data has {len(usable)} such labels"
        )
    accuracies = np.empty(episodes)
    for e in range(episodes):
        chosen = rng.choice(usable, size=n_way, replace=False)
        shots: list[np.ndarray] = []
        queries: list[tuple[int, int]] = []  # (query row, true way)
        for way, label in enumerate(chosen):
            cols = rng.permutation(np.nonzero(s_labels == label)[0])
            shots.append(cols[:k_shot])
            rows = np.nonzero(q_labels == label)[0]
            if same_pool:
                rows = np.setdiff1d(rows, cols[:k_shot])
            rows = rng.permutation(rows)[:queries_per_label]
            queries.extend((int(r), way) for r in rows)
        rows = np.array([r for r, _ in queries])
        truth = np.array([w for _, w in queries])
        label_scores = np.stack([scores[np.ix_(rows, s)].mean(axis=1) for s in shots], axis=1)
        accuracies[e] = float((label_scores.argmax(axis=1) == truth).mean())
    return EpisodeResult(n_way, k_shot, episodes, accuracies)


def calibrate_threshold(same: np.ndarray, different: np.ndarray) -> float:
    """The score that best separates same-label from different-label pairs (max balanced accuracy).

    ``same``, ``different`` [shape=(n,)]: scores of same-label and different-label file pairs.
    """
    if len(same) == 0 or len(different) == 0:
        return 0.5
    candidates = np.unique(np.concatenate([same, different]))
    tpr = 1.0 - np.searchsorted(np.sort(same), candidates, side="left") / len(same)
    tnr = np.searchsorted(np.sort(different), candidates, side="left") / len(different)
    return float(candidates[int(np.argmax(tpr + tnr))])


def calibrated_threshold(meta: CheckpointMeta, shifts: Sequence[int]) -> float | None:
    """The unknown threshold calibrated for supports enrolled at pitch ``shifts``, or None.

    Checkpoints list one per calibrated shift set in ``metrics["unknown_thresholds"]``; older ones
    hold a single ``unknown_threshold`` for their own ``support_shifts`` (0.5 when they hold none).
    """
    per_shifts = meta.metrics.get("unknown_thresholds", {})
    if shifts_key(shifts) in per_shifts:
        return float(per_shifts[shifts_key(shifts)])
    if shifts_key(shifts) == shifts_key(meta.support_shifts):
        return float(meta.metrics.get("unknown_threshold", 0.5))
    return None
