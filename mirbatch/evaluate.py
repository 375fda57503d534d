"""Evaluation of a classifier on labelled data, beside the MFCC-SVM baseline stored in its checkpoint.

Reports accuracy, per-label precision/recall/F1 and macro-F1 at file level (the mean of a file's
patch probabilities, as ``tag`` labels files) and at patch level, and writes the confusion matrices
as JSON and PNG.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mirbatch.datasets.layouts import load_dataset
from mirbatch.models import load_checkpoint
from mirbatch.training import build_patch_set, predict_files

__all__ = ["ClassifierReport", "Scores", "evaluate_classifier", "scores"]


@dataclass(frozen=True)
class Scores:
    """Classification scores of one predictor at one level.

    Attributes
    ----------
    accuracy, macro_f1 : float
        ``macro_f1`` averages F1 over the labels present in the data.
    precision, recall, f1 : dict
        Per label (labels present in the data, or predicted).
    support : dict
        Items per true label.
    confusion : np.ndarray [shape=(labels, labels)]
        Counts; rows true, columns predicted.
    """

    accuracy: float
    macro_f1: float
    precision: dict[str, float]
    recall: dict[str, float]
    f1: dict[str, float]
    support: dict[str, int]
    confusion: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "support": self.support,
            "confusion": self.confusion.tolist(),
        }


def scores(targets: np.ndarray, predicted: np.ndarray, labels: tuple[str, ...]) -> Scores:
    """Scores of ``predicted`` against ``targets`` (label indices [shape=(n,)])."""
    n = len(labels)
    confusion = np.zeros((n, n), dtype=np.int64)
    np.add.at(confusion, (targets, predicted), 1)
    true_counts, predicted_counts, hits = confusion.sum(1), confusion.sum(0), np.diag(confusion)
    present = [i for i in range(n) if true_counts[i] > 0]
    precision = {labels[i]: float(hits[i] / predicted_counts[i]) if predicted_counts[i] else 0.0 for i in present}
    recall = {labels[i]: float(hits[i] / true_counts[i]) for i in present}
    f1 = {
        k: (2 * precision[k] * recall[k] / (precision[k] + recall[k])) if precision[k] + recall[k] else 0.0
        for k in recall
    }
    return Scores(
        accuracy=float(hits.sum() / max(1, confusion.sum())),
        macro_f1=float(np.mean(list(f1.values()))) if f1 else 0.0,
        precision=precision,
        recall=recall,
        f1=f1,
        support={labels[i]: int(true_counts[i]) for i in present},
        confusion=confusion,
    )


@dataclass(frozen=True)
class ClassifierReport:
    """One evaluation: the model at file and patch level, and the baseline at file level."""

    model: str
    data: list[str]
    labels: tuple[str, ...]
    files: int
    patches: int
    file: Scores
    patch: Scores
    baseline: Scores | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "data": self.data,
            "labels": list(self.labels),
            "files": self.files,
            "patches": self.patches,
            "file_level": self.file.to_dict(),
            "patch_level": self.patch.to_dict(),
            "baseline_mfcc_svm_file_level": self.baseline.to_dict() if self.baseline else None,
        }

    def format(self) -> str:
        base = self.baseline
        lines = [
            f"model {self.model}: {self.files} files, {self.patches} patches with sound",
            f"{'':24}{'model':>8}{'MFCC-SVM':>10}",
            f"{'file-level accuracy':24}{self.file.accuracy:8.4f}{base.accuracy if base else float('nan'):10.4f}",
            f"{'file-level macro-F1':24}{self.file.macro_f1:8.4f}{base.macro_f1 if base else float('nan'):10.4f}",
            f"{'patch-level accuracy':24}{self.patch.accuracy:8.4f}",
            f"{'patch-level macro-F1':24}{self.patch.macro_f1:8.4f}",
            "",
            f"{'label':<16}{'files':>6}{'precision':>10}{'recall':>8}{'F1':>7}{'F1 SVM':>8}  most confused with",
        ]
        for label in self.file.recall:
            i = self.labels.index(label)
            row = self.file.confusion[i].copy()
            row[i] = 0
            other = f"{self.labels[int(row.argmax())]} ({int(row.max())})" if row.max() > 0 else "-"
            svm_f1 = f"{base.f1.get(label, 0.0):8.3f}" if base else f"{'-':>8}"
            lines.append(
                f"{label:<16}{self.file.support[label]:>6}{self.file.precision[label]:10.3f}"
                f"{self.file.recall[label]:8.3f}{self.file.f1[label]:7.3f}{svm_f1}  {other}"
            )
        if base is None:
            lines.append("(this checkpoint carries no MFCC-SVM baseline: retrain it with this mirbatch)")
        return "\n".join(lines)

    def write(self, folder: Path) -> list[Path]:
        """``report.json`` and confusion-matrix PNGs into ``folder``."""
        from mirbatch.plots import plot_confusion

        folder.mkdir(parents=True, exist_ok=True)
        written = [folder / "report.json"]
        written[0].write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        written.append(
            plot_confusion(self.file.confusion, self.labels, folder / "confusion_files.png", f"{self.model}: files")
        )
        written.append(
            plot_confusion(
                self.patch.confusion, self.labels, folder / "confusion_patches.png", f"{self.model}: patches"
            )
        )
        if self.baseline:
            written.append(
                plot_confusion(self.baseline.confusion, self.labels, folder / "confusion_baseline.png", "MFCC-SVM")
            )
        return written


def evaluate_classifier(model: str, data: list[Path]) -> ClassifierReport:
    """Evaluate checkpoint ``model`` (and its baseline) on the data sets ``data``."""
    checkpoint = load_checkpoint(model)
    labels = checkpoint.meta.labels
    files = [f for root in data for f in load_dataset(root)]
    unknown = sorted({f.label for f in files} - set(labels))
    if unknown:
        raise ValueError(f"the data has labels the model does not know: {', '.join(unknown)}")
    patches = build_patch_set(files, labels, checkpoint.meta.features)
    patch_probs, file_scores = predict_files(checkpoint.model, checkpoint.meta.features, patches)
    file_targets = np.array([labels.index(f.label) for f in patches.files])
    use = patches.active
    baseline = None
    if checkpoint.baseline is not None:
        baseline = scores(file_targets, checkpoint.baseline.predict(patches.file_stats), labels)
    return ClassifierReport(
        model=checkpoint.model_id,
        data=[str(d) for d in data],
        labels=labels,
        files=len(patches.files),
        patches=int(use.sum()),
        file=scores(file_targets, file_scores.argmax(axis=1), labels),
        patch=scores(patches.targets.numpy()[use], patch_probs.argmax(axis=1)[use], labels),
        baseline=baseline,
    )
