"""Patch scores -> file labels.

A file's scores are the mean of its patches' softmax outputs (the seed paper's rule), taken over the
patches that carry sound: patches more than ``silence_db`` under the file's loudest patch (release
tails, pauses) are left out of the mean but still reported as segments.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["UNKNOWN", "Segment", "FileLabels", "active_patches", "aggregate_file"]

SILENCE_DB = 50.0
UNKNOWN = "unknown"  # match mode's label when no support label scores above the threshold


@dataclass(frozen=True)
class Segment:
    """One patch's result."""

    start_s: float
    end_s: float
    label: str
    confidence: float


@dataclass(frozen=True)
class FileLabels:
    """A file's result: best label, its score, the top-k, and per-patch segments."""

    label: str
    confidence: float
    top_labels: list[str]
    top_scores: list[float]
    segments: list[Segment]
    scores: np.ndarray  # [shape=(n_labels,)]: the aggregated scores


def active_patches(level_db: np.ndarray, silence_db: float = SILENCE_DB) -> np.ndarray:
    """Boolean mask of patches within ``silence_db`` of the loudest one.

    ``level_db`` [shape=(patches,)]. A file that is silent throughout keeps every patch.
    """
    if level_db.size == 0:
        return np.zeros(0, dtype=bool)
    mask = level_db >= level_db.max() - silence_db
    return mask if mask.any() else np.ones_like(mask)


def aggregate_file(
    patch_scores: np.ndarray,
    start_s: np.ndarray,
    level_db: np.ndarray,
    labels: tuple[str, ...] | list[str],
    patch_s: float,
    top_k: int = 3,
    unknown_threshold: float | None = None,
) -> FileLabels:
    """Aggregate one file's patches.

    Parameters
    ----------
    patch_scores : np.ndarray [shape=(patches, n_labels)]
        Per-patch probabilities (softmax outputs).
    start_s : np.ndarray [shape=(patches,)]
        Patch start times in seconds.
    level_db : np.ndarray [shape=(patches,)]
        Patch peak levels, for leaving out silent patches.
    labels : sequence of str
        Label names, in score order.
    patch_s : float
        Patch length (segment end = start + patch_s).
    top_k : int
        How many labels ``top_labels``/``top_scores`` keep.
    unknown_threshold : float, optional
        Match mode: a file (or segment) whose best score is below it is labelled ``unknown``; its
        confidence stays the best label's score, and ``top_labels`` still name the candidates.
    """
    mask = active_patches(level_db)
    scores = patch_scores[mask].mean(axis=0)
    order = np.argsort(-scores, kind="stable")[: min(top_k, len(labels))]
    best = patch_scores.argmax(axis=1)

    def name(index: int, score: float) -> str:
        return UNKNOWN if unknown_threshold is not None and score < unknown_threshold else labels[index]

    segments = [
        Segment(float(s), float(s + patch_s), name(int(b), float(p[int(b)])), float(p[int(b)]))
        for s, b, p in zip(start_s, best, patch_scores, strict=True)
    ]
    return FileLabels(
        label=name(int(order[0]), float(scores[order[0]])),
        confidence=float(scores[order[0]]),
        top_labels=[labels[int(i)] for i in order],
        top_scores=[float(scores[i]) for i in order],
        segments=segments,
        scores=scores,
    )
