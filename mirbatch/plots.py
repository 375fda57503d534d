"""Figures written next to results: confusion matrices and training curves (PNG, via matplotlib)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_confusion", "plot_training_curves"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(confusion: np.ndarray, labels: Sequence[str], path: Path, title: str) -> Path:
    """Row-normalized confusion matrix [shape=(labels, labels)], counts in the cells, as a PNG."""
    plt = _pyplot()
    rows = confusion.sum(axis=1, keepdims=True)
    share = np.divide(confusion, rows, out=np.zeros_like(confusion, dtype=float), where=rows > 0)
    size = max(6.0, 0.45 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=90)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(len(labels)):
        for j in range(len(labels)):
            if confusion[i, j]:
                ax.text(j, i, str(int(confusion[i, j])), ha="center", va="center", fontsize=7,
                        color="white" if share[i, j] > 0.5 else "black")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_training_curves(history: Sequence[dict[str, Any]], path: Path, title: str) -> Path:
    """Training loss and validation accuracies per epoch (from epoch 0, the starting checkpoint, when
    fine-tuned), as a PNG."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    trained = [h for h in history if h["train_loss"] is not None]  # epoch 0 of a fine-tuned run has none
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot([h["epoch"] for h in trained], [h["train_loss"] for h in trained], marker="o")
    left.set_xlabel("epoch")
    left.set_ylabel("training loss")
    right.plot(epochs, [h["val_file_accuracy"] for h in history], marker="o", label="validation, per file")
    right.plot(epochs, [h["val_patch_accuracy"] for h in history], marker=".", label="validation, per patch")
    right.set_xlabel("epoch")
    right.set_ylabel("accuracy")
    right.set_ylim(0, 1)
    right.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
