"""Evaluation on labelled data.

Classifiers: accuracy, per-label precision/recall/F1 and macro-F1 at file level (the mean of a file's
patch probabilities, as ``tag`` labels files) and at patch level, beside the MFCC-SVM baseline stored
in the checkpoint; confusion matrices as JSON and PNG; each file's answers as CSV.

Matchers: N-way K-shot episodes over files (a shot is a whole file, scored as ``tag --mode match``
scores it), mean accuracy with a 95% confidence interval, beside a nearest neighbour on MFCC
statistics over the very same episodes.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mirbatch.aggregate import DEFAULT_AGGREGATION
from mirbatch.datasets.layouts import LabelledFile, load_dataset
from mirbatch.matching import EpisodeResult, file_score_matrix, run_episodes
from mirbatch.models import Matcher, load_checkpoint
from mirbatch.patches import build_patch_set
from mirbatch.training import embed_clean_patches, embed_queries_and_shots, predict_files
from mirbatch.wording import counted

__all__ = [
    "CONFIDENCE_THRESHOLDS",
    "ClassifierReport",
    "ConfidenceRow",
    "FilePrediction",
    "MatcherReport",
    "Scores",
    "evaluate_classifier",
    "evaluate_matcher",
    "scores",
]


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
class FilePrediction:
    """One evaluated file: its label, the model's answer with its score, and the baseline's answer
    (None when the checkpoint carries no baseline)."""

    path: str
    label: str
    predicted: str
    confidence: float
    baseline: str | None


# Confidences at which eval reports what is kept and how often it is right (tag --unknown-threshold).
CONFIDENCE_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass(frozen=True)
class ConfidenceRow:
    """The files whose answer scores at least ``threshold``: how many, and how often they are right
    (None when none is kept). ``tag --unknown-threshold`` labels the others ``unknown``."""

    threshold: float
    files: int
    fraction: float
    accuracy: float | None


@dataclass(frozen=True)
class ClassifierReport:
    """One evaluation: the model at file and patch level, and the baseline at file level."""

    model: str
    data: list[str]
    labels: tuple[str, ...]
    files: int
    patches: int
    aggregation: str
    file: Scores
    patch: Scores
    baseline: Scores | None
    left_out: dict[str, int]  # files of labels the model does not know, per label
    predictions: tuple[FilePrediction, ...]  # in the order the data sets list them
    skipped: tuple[tuple[str, str], ...] = ()  # (path, why): files that do not decode or have no sound

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "data": self.data,
            "labels": list(self.labels),
            "files": self.files,
            "patches": self.patches,
            "aggregation": self.aggregation,
            "left_out_files": self.left_out,
            "skipped_files": [{"path": path, "reason": reason} for path, reason in self.skipped],
            "file_level": self.file.to_dict(),
            "patch_level": self.patch.to_dict(),
            "baseline_mfcc_svm_file_level": self.baseline.to_dict() if self.baseline else None,
            "by_confidence": [asdict(row) for row in self.by_confidence()],
        }

    def by_confidence(self, thresholds: tuple[float, ...] = CONFIDENCE_THRESHOLDS) -> list[ConfidenceRow]:
        """What answering only at or over each confidence keeps, and how often that is right."""
        confidence = np.array([p.confidence for p in self.predictions])
        hit = np.array([p.predicted == p.label for p in self.predictions])
        rows = []
        for t in thresholds:
            kept = confidence >= t
            n = int(kept.sum())
            rows.append(ConfidenceRow(t, n, n / max(len(hit), 1), float(hit[kept].mean()) if n else None))
        return rows

    def format(self) -> str:
        base = self.baseline
        lines = [
            f"model {self.model}: {counted(self.files, 'file')}, "
            f"{counted(self.patches, 'patch', 'patches')} with sound ({self.aggregation} aggregation)",
            f"{'':24}{'model':>8}{'MFCC-SVM':>10}",
            f"{'file-level accuracy':24}{self.file.accuracy:8.4f}{base.accuracy if base else float('nan'):10.4f}",
            f"{'file-level macro-F1':24}{self.file.macro_f1:8.4f}{base.macro_f1 if base else float('nan'):10.4f}",
            f"{'patch-level accuracy':24}{self.patch.accuracy:8.4f}",
            f"{'patch-level macro-F1':24}{self.patch.macro_f1:8.4f}",
            "",
            f"{'label':<16}{'files':>6}{'precision':>10}{'recall':>8}{'F1':>7}{'F1 SVM':>8}  most confused with",
        ]
        if self.left_out:
            counts = ", ".join(f"{label} ({n})" for label, n in self.left_out.items())
            left_out = counted(sum(self.left_out.values()), "file")
            lines.insert(1, f"left out {left_out} of labels the model does not know: {counts}")
        if self.skipped:
            lines.insert(
                1, f"skipped {counted(len(self.skipped), 'file')} that do not decode or have no sound (named above)"
            )
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
        lines += ["", "answers scoring at least (tag --unknown-threshold labels the rest 'unknown'):"]
        lines.append(f"{'confidence':>12}{'files':>8}{'share':>8}{'accuracy':>10}")
        for row in self.by_confidence():
            accuracy = f"{row.accuracy:10.3f}" if row.accuracy is not None else f"{'-':>10}"
            lines.append(f"{row.threshold:12.2f}{row.files:8d}{row.fraction:8.3f}{accuracy}")
        return "\n".join(lines)

    def write(self, folder: Path) -> list[Path]:
        """``report.json``, ``files.csv`` (each file's answers: which ones were wrong) and
        confusion-matrix PNGs into ``folder``."""
        from mirbatch.plots import plot_confusion

        folder.mkdir(parents=True, exist_ok=True)
        written = [folder / "report.json", folder / "files.csv"]
        written[0].write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        with written[1].open("w", newline="") as out:
            rows = csv.writer(out)
            rows.writerow(["path", "label", "predicted", "confidence", "baseline_predicted"])
            for p in self.predictions:
                rows.writerow([p.path, p.label, p.predicted, f"{p.confidence:.4f}", p.baseline or ""])
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


def evaluate_classifier(model: str, data: list[Path], aggregation: str = DEFAULT_AGGREGATION) -> ClassifierReport:
    """Evaluate checkpoint ``model`` (and its baseline) on the data sets ``data``; files' scores from
    their patches' by ``aggregation`` (``aggregate.AGGREGATIONS``).

    Files of labels the model does not know (IRMAS's voice, say) are left out and counted in the
    report; data with none of the model's labels is an error.
    """
    checkpoint = load_checkpoint(model)
    labels = checkpoint.meta.labels
    every = [f for root in data for f in load_dataset(root)]
    files = [f for f in every if f.label in labels]
    left_out = dict(sorted(Counter(f.label for f in every if f.label not in labels).items()))
    if not files:
        raise ValueError(
            f"none of the data's labels ({', '.join(left_out) or 'no labelled files'}) is one the model knows "
            f"({', '.join(labels)}): name the data's folders after the model's labels, or train a model on them"
        )
    patches = build_patch_set(files, labels, checkpoint.meta.features)
    patch_probs, file_scores = predict_files(
        checkpoint.model, checkpoint.meta.features, patches, aggregation=aggregation
    )
    file_targets = np.array([labels.index(f.label) for f in patches.files])
    use = patches.weights(aggregation) > 0
    baseline = None
    baseline_predicted: list[str | None] = [None] * len(patches.files)
    if checkpoint.baseline is not None:
        baseline_answers = checkpoint.baseline.predict(patches.file_stats)
        baseline = scores(file_targets, baseline_answers, labels)
        baseline_predicted = [labels[int(i)] for i in baseline_answers]
    answers = file_scores.argmax(axis=1)
    predictions = tuple(
        FilePrediction(f.path, f.label, labels[int(i)], float(file_scores[n, i]), b)
        for n, (f, i, b) in enumerate(zip(patches.files, answers, baseline_predicted, strict=True))
    )
    return ClassifierReport(
        model=checkpoint.model_id,
        data=[str(d) for d in data],
        labels=labels,
        files=len(patches.files),
        patches=int(use.sum()),
        aggregation=aggregation,
        file=scores(file_targets, answers, labels),
        patch=scores(patches.targets.numpy()[use], patch_probs.argmax(axis=1)[use], labels),
        baseline=baseline,
        left_out=left_out,
        predictions=predictions,
        skipped=patches.skipped,
    )


@dataclass(frozen=True)
class MatcherReport:
    """Episodic results of a matcher and of the MFCC nearest-neighbour baseline on the same episodes."""

    model: str
    data: list[str]
    support_data: list[str]
    support_shifts: list[int]
    aggregation: str
    labels: list[str]
    seen_in_training: list[str]
    results: list[tuple[EpisodeResult, EpisodeResult]]  # (model, baseline) per protocol

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "data": self.data,
            "support_data": self.support_data,
            "support_shifts": self.support_shifts,
            "aggregation": self.aggregation,
            "labels": self.labels,
            "seen_in_training": self.seen_in_training,
            "results": [
                {
                    "n_way": m.n_way,
                    "k_shot": m.k_shot,
                    "episodes": m.episodes,
                    "accuracy": round(m.mean, 4),
                    "ci95": round(m.ci95, 4),
                    "baseline_accuracy": round(b.mean, 4),
                    "baseline_ci95": round(b.ci95, 4),
                }
                for m, b in self.results
            ],
        }

    def format(self) -> str:
        lines = [
            f"model {self.model}",
            f"queries: {', '.join(self.data)}",
            f"support: {', '.join(self.support_data)} (pitch shifts {','.join(map(str, self.support_shifts))})",
            f"query patches: {self.aggregation} aggregation",
            f"{counted(len(self.labels), 'label')}: {', '.join(self.labels)}",
        ]
        if self.seen_in_training:
            lines.append(f"warning: labels the model was trained on: {', '.join(self.seen_in_training)}")
        lines.append(f"{'protocol':<16}{'episodes':>9}  {'matcher':>16}  {'MFCC-NN baseline':>18}")
        for m, b in self.results:
            protocol = f"{m.n_way}-way {m.k_shot}-shot"
            lines.append(
                f"{protocol:<16}{m.episodes:>9}  {m.mean:>8.3f} ± {m.ci95:.3f}  {b.mean:>10.3f} ± {b.ci95:.3f}"
            )
        return "\n".join(lines)

    def write(self, folder: Path) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "episodes.json"
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return [path]


def _mfcc_scores(query_stats: np.ndarray, shot_stats: np.ndarray) -> np.ndarray:
    """Baseline similarity: minus the Euclidean distance of z-scored MFCC statistics."""
    both = np.concatenate([query_stats, shot_stats])
    mean, std = both.mean(axis=0), both.std(axis=0) + 1e-8
    q, s = (query_stats - mean) / std, (shot_stats - mean) / std
    return -np.sqrt(((q[:, None, :] - s[None, :, :]) ** 2).sum(axis=-1))


def evaluate_matcher(
    model: str,
    data: list[Path],
    support_data: list[Path] | None = None,
    protocols: list[tuple[int, int]] | None = None,
    episodes: int = 1000,
    queries_per_label: int = 5,
    seed: int = 0,
    aggregation: str = DEFAULT_AGGREGATION,
) -> MatcherReport:
    """N-way K-shot episodes of matcher ``model`` on the labelled data sets ``data``.

    Parameters
    ----------
    data : list of Path
        Query data sets (a folder per label, IRMAS, NSynth).
    support_data : list of Path, optional
        Where shots come from (e.g. another sample library); default: the query data itself, with a
        file never its own shot.
    protocols : list of (n_way, k_shot)
        Default: the paper's 2-way 1-shot and 5-way 1-shot and 5-shot.
    aggregation : str
        How a query file's patches weigh in its scores (``aggregate.AGGREGATIONS``).
    """
    checkpoint = load_checkpoint(model)
    if not isinstance(checkpoint.model, Matcher):
        raise ValueError(f"model {checkpoint.name} is a classifier; episodic evaluation needs a matcher")
    features = checkpoint.meta.features
    protocols = protocols or [(2, 1), (5, 1), (5, 5)]

    def load(roots: list[Path]) -> tuple[list[LabelledFile], list[str]]:
        files = [f for root in roots for f in load_dataset(root)]
        return files, sorted({f.label for f in files})

    query_files, query_labels = load(data)
    same_pool = support_data is None
    shot_files, shot_labels = (query_files, query_labels) if support_data is None else load(support_data)
    labels = sorted(set(query_labels) & set(shot_labels))
    queries = build_patch_set(query_files, query_labels, features)
    shots = queries if same_pool else build_patch_set(shot_files, shot_labels, features)
    shifts = checkpoint.meta.support_shifts
    if same_pool:
        q_emb, q_owner, q_weight, s_emb, s_owner = embed_queries_and_shots(
            checkpoint.model, features, queries, shifts, aggregation
        )
    else:
        q_emb, q_owner, q_weight = embed_clean_patches(checkpoint.model, features, queries, aggregation=aggregation)
        s_emb, s_owner, _ = embed_clean_patches(checkpoint.model, features, shots, shifts)
    matrix = file_score_matrix(
        checkpoint.model.head, q_emb, q_owner, q_weight, len(queries.files), s_emb, s_owner, len(shots.files)
    )
    baseline = _mfcc_scores(queries.file_stats, shots.file_stats)
    q_names = [f.label for f in queries.files]
    s_names = [f.label for f in shots.files]
    results = []
    for n_way, k_shot in protocols:
        model_result, baseline_result = (
            run_episodes(m, q_names, s_names, n_way, k_shot, episodes, queries_per_label, same_pool, seed)
            for m in (matrix, baseline)
        )
        results.append((model_result, baseline_result))
    return MatcherReport(
        model=checkpoint.model_id,
        data=[str(d) for d in data],
        support_data=[str(d) for d in (support_data or data)],
        support_shifts=list(shifts),
        aggregation=aggregation,
        labels=labels,
        seen_in_training=sorted(set(labels) & set(checkpoint.meta.labels)),
        results=results,
    )
