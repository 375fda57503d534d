"""The MFCC-statistics + RBF-SVM baseline: numpy one-vs-one voting equals scikit-learn's predict."""

from __future__ import annotations

import numpy as np
from conftest import sine
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from mirbatch.baseline import MfccSvm, mfcc_stats


def test_numpy_voting_equals_sklearn() -> None:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(5, 80)) * 2
    targets = rng.integers(0, 5, 300)
    features = centers[targets] + rng.normal(size=(300, 80)) * 3  # overlapping classes: many SVs
    ours = MfccSvm.fit(features, targets)
    scaler = StandardScaler().fit(features)
    reference = SVC(C=10.0, kernel="rbf", gamma="scale").fit(scaler.transform(features), targets)
    queries = centers[rng.integers(0, 5, 200)] + rng.normal(size=(200, 80)) * 3
    np.testing.assert_array_equal(ours.predict(queries), reference.predict(scaler.transform(queries)))


def test_round_trip_through_tensors_and_label_subsets() -> None:
    rng = np.random.default_rng(1)
    targets = np.array([2, 5, 7] * 20)  # label indices need not be 0..k-1
    features = rng.normal(size=(60, 80)) + targets[:, None]
    svm = MfccSvm.fit(features, targets)
    tensors = {"model.weight": None, **svm.to_tensors()}
    weights, baseline = MfccSvm.split(tensors)  # type: ignore[arg-type]
    assert list(weights) == ["model.weight"]
    again = MfccSvm.from_tensors(baseline)
    assert again is not None
    np.testing.assert_array_equal(again.predict(features), svm.predict(features))
    assert set(svm.predict(features)) <= {2, 5, 7}
    assert MfccSvm.from_tensors({}) is None


def test_mfcc_stats_shape_and_short_clips() -> None:
    assert mfcc_stats(sine(440.0, 1.0), 22050).shape == (80,)
    assert np.isfinite(mfcc_stats(sine(440.0, 0.01), 22050)).all()
