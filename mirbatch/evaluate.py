"""Evaluation of a classifier on labelled data: file-level and patch-level accuracy, per label."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mirbatch.datasets.layouts import folder_dataset
from mirbatch.features import Featurizer
from mirbatch.models import load_checkpoint
from mirbatch.training import build_patch_set, predict_files

__all__ = ["ClassifierReport", "evaluate_classifier"]


@dataclass(frozen=True)
class ClassifierReport:
    """Accuracy figures of one evaluation.

    Attributes
    ----------
    model : str
        ``name@hash`` of the checkpoint.
    files, patches : int
        How many were evaluated (patches: those with sound, as aggregation uses them).
    file_accuracy, patch_accuracy : float
    per_label : dict
        label -> (files, file accuracy) for the labels present in the data.
    confusion : np.ndarray [shape=(labels, labels)]
        File counts, rows true label, columns predicted, in ``labels`` order.
    labels : tuple of str
    """

    model: str
    files: int
    patches: int
    file_accuracy: float
    patch_accuracy: float
    per_label: dict[str, tuple[int, float]]
    confusion: np.ndarray
    labels: tuple[str, ...]

    def format(self) -> str:
        lines = [
            f"model {self.model}: {self.files} files, {self.patches} patches",
            f"file-level accuracy  {self.file_accuracy:.4f}",
            f"patch-level accuracy {self.patch_accuracy:.4f}",
            "",
            f"{'label':<16} {'files':>6} {'accuracy':>9}  most confused with",
        ]
        for i, label in enumerate(self.labels):
            if label not in self.per_label:
                continue
            n, acc = self.per_label[label]
            row = self.confusion[i].copy()
            row[i] = 0
            other = f"{self.labels[int(row.argmax())]} ({int(row.max())})" if row.max() > 0 else "-"
            lines.append(f"{label:<16} {n:>6} {acc:>9.3f}  {other}")
        return "\n".join(lines)


def evaluate_classifier(model: str, data: list[Path], jobs: int = 2) -> ClassifierReport:
    """Evaluate checkpoint ``model`` on folder-per-label data sets ``data``."""
    checkpoint = load_checkpoint(model)
    labels = checkpoint.meta.labels
    files = [f for root in data for f in folder_dataset(root)]
    unknown = sorted({f.label for f in files} - set(labels))
    if unknown:
        raise ValueError(f"the data has labels the model does not know: {', '.join(unknown)}")
    featurizer = Featurizer(checkpoint.meta.features)
    patches = build_patch_set(files, labels, featurizer, jobs)
    patch_probs, file_scores = predict_files(checkpoint.model, featurizer, patches)
    file_targets = np.zeros(len(patches.files), dtype=np.int64)
    file_targets[patches.owner] = patches.targets.numpy()
    predicted = file_scores.argmax(axis=1)
    confusion = np.zeros((len(labels), len(labels)), dtype=np.int64)
    np.add.at(confusion, (file_targets, predicted), 1)
    per_label = {
        labels[i]: (int(confusion[i].sum()), float(confusion[i, i] / confusion[i].sum()))
        for i in range(len(labels))
        if confusion[i].sum() > 0
    }
    return ClassifierReport(
        model=checkpoint.model_id,
        files=len(patches.files),
        patches=int(patches.active.sum()),
        file_accuracy=float((predicted == file_targets).mean()),
        patch_accuracy=float((patch_probs.argmax(1) == patches.targets.numpy())[patches.active].mean()),
        per_label=per_label,
        confusion=confusion,
        labels=labels,
    )
