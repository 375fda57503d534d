"""The classic baseline every evaluation reports beside the model: MFCC statistics + RBF SVM.

Each file becomes the mean and standard deviation of 20 MFCCs and their deltas (80 numbers);
scikit-learn's SVC (one-vs-one, RBF kernel) is trained on the standardized vectors of the model's own
training files. The fitted SVM is stored as plain arrays in the model's checkpoint (no pickle) and
evaluated here with libsvm's one-vs-one voting, so ``mirbatch eval`` can report it anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import librosa
import numpy as np
import torch

__all__ = ["MfccSvm", "mfcc_stats", "stats_for"]

_PREFIX = "baseline."


def mfcc_stats(y: np.ndarray, rate: int) -> np.ndarray:
    """MFCC statistics of mono ``y`` [shape=(n,)] -> [shape=(80,)]: mean and std of 20 MFCCs and deltas."""
    if len(y) < 2048:
        y = np.pad(y, (0, 2048 - len(y)))
    mfcc = librosa.feature.mfcc(y=y, sr=rate, n_mfcc=20)
    width = min(9, mfcc.shape[1] if mfcc.shape[1] % 2 else mfcc.shape[1] - 1)
    delta = librosa.feature.delta(mfcc, width=max(3, width), mode="nearest")
    feats = np.concatenate([mfcc, delta])
    return np.concatenate([feats.mean(axis=1), feats.std(axis=1)]).astype(np.float32)


@dataclass(frozen=True)
class MfccSvm:
    """A fitted RBF SVM over standardized MFCC statistics, as arrays.

    Attributes
    ----------
    mean, scale : np.ndarray [shape=(80,)]
        Standardization.
    support_vectors : np.ndarray [shape=(n_sv, 80)]
    dual_coef : np.ndarray [shape=(n_classes - 1, n_sv)]
    intercept : np.ndarray [shape=(n_classes * (n_classes - 1) / 2,)]
    n_support : np.ndarray [shape=(n_classes,)]
    classes : np.ndarray [shape=(n_classes,)]
        Label indices (into the model's labels) in SVM order.
    gamma : float
    """

    mean: np.ndarray
    scale: np.ndarray
    support_vectors: np.ndarray
    dual_coef: np.ndarray
    intercept: np.ndarray
    n_support: np.ndarray
    classes: np.ndarray
    gamma: float

    @classmethod
    def fit(cls, features: np.ndarray, targets: np.ndarray, c: float = 10.0) -> MfccSvm:
        """Fit on ``features`` [shape=(files, 80)] and label indices ``targets`` [shape=(files,)]."""
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import SVC

        scaler = StandardScaler().fit(features)
        svm = SVC(C=c, kernel="rbf", gamma="scale").fit(scaler.transform(features), targets)
        return cls(
            mean=scaler.mean_.astype(np.float64),
            scale=scaler.scale_.astype(np.float64),
            support_vectors=svm.support_vectors_.astype(np.float64),
            dual_coef=svm.dual_coef_.astype(np.float64),
            intercept=svm.intercept_.astype(np.float64),
            n_support=svm.n_support_.astype(np.int64),
            classes=svm.classes_.astype(np.int64),
            gamma=float(svm._gamma),
        )

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Label indices for ``features`` [shape=(files, 80)] by one-vs-one voting (libsvm's rule)."""
        x = (features - self.mean) / self.scale
        sq = (x**2).sum(1)[:, None] + (self.support_vectors**2).sum(1)[None, :] - 2 * x @ self.support_vectors.T
        kernel = np.exp(-self.gamma * np.maximum(sq, 0.0))
        n_classes = len(self.classes)
        starts = np.concatenate([[0], np.cumsum(self.n_support)])
        votes = np.zeros((len(x), n_classes), dtype=np.int64)
        pair = 0
        for i in range(n_classes):
            for j in range(i + 1, n_classes):
                si, sj = slice(starts[i], starts[i + 1]), slice(starts[j], starts[j + 1])
                decision = (
                    kernel[:, si] @ self.dual_coef[j - 1, si]
                    + kernel[:, sj] @ self.dual_coef[i, sj]
                    + self.intercept[pair]
                )
                votes[:, i] += decision > 0
                votes[:, j] += decision <= 0
                pair += 1
        return self.classes[votes.argmax(axis=1)]

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """Arrays for a safetensors file, under the ``baseline.`` prefix."""
        arrays = {
            "mean": self.mean,
            "scale": self.scale,
            "support_vectors": self.support_vectors,
            "dual_coef": self.dual_coef,
            "intercept": self.intercept,
            "n_support": self.n_support,
            "classes": self.classes,
            "gamma": np.array([self.gamma]),
        }
        return {_PREFIX + k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> MfccSvm | None:
        """Rebuild from a checkpoint's tensors; None when it carries no baseline."""
        if _PREFIX + "mean" not in tensors:
            return None
        a = {k.removeprefix(_PREFIX): v.numpy() for k, v in tensors.items() if k.startswith(_PREFIX)}
        return cls(
            a["mean"], a["scale"], a["support_vectors"], a["dual_coef"], a["intercept"], a["n_support"],
            a["classes"], float(a["gamma"][0]),
        )  # fmt: skip

    @staticmethod
    def split(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(model tensors, baseline tensors) of a checkpoint."""
        model = {k: v for k, v in tensors.items() if not k.startswith(_PREFIX)}
        return model, {k: v for k, v in tensors.items() if k.startswith(_PREFIX)}


def stats_for(clips: Sequence[np.ndarray], rate: int) -> np.ndarray:
    """``mfcc_stats`` of each clip, stacked [shape=(clips, 80)]."""
    return np.stack([mfcc_stats(y, rate) for y in clips])
