"""Patch scores -> file labels: the weights, the rule, and eval reporting what tag computes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from mirbatch.aggregate import UNKNOWN, aggregate_file, patch_weights
from mirbatch.audio import decode
from mirbatch.datasets.layouts import LabelledFile
from mirbatch.features import FEATURES, SILENT_DBFS, full_scale_level_db, make_featurizer, resize_patches
from mirbatch.models import inference_model, load_checkpoint
from mirbatch.patches import build_patch_set
from mirbatch.training import predict_files

LABELS = ("piano", "acoustic_guitar", "flute")


def test_weights_follow_power_and_leave_out_what_is_50_db_under() -> None:
    levels = np.array([-3.0, -13.0, -23.0, -54.0, -60.0], dtype=np.float32)
    assert patch_weights(levels) == pytest.approx([1.0, 0.1, 0.01, 0.0, 0.0], rel=1e-5)
    # A silent file (every patch at the floor) weighs its patches alike rather than dropping them.
    assert patch_weights(np.full(4, -100.0, dtype=np.float32)).tolist() == [1.0] * 4
    # Under an absolute floor a patch weighs nothing, however close to its file's loudest.
    assert patch_weights(levels, floor_db=-20.0) == pytest.approx([1.0, 0.1, 0.0, 0.0, 0.0], rel=1e-5)
    assert not patch_weights(np.full(4, -100.0, dtype=np.float32), floor_db=-80.0).any()
    assert patch_weights(np.zeros(0, dtype=np.float32)).shape == (0,)
    # The seed paper's rule: every sounding patch alike.
    assert patch_weights(levels, "mean").tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="power, mean"):
        patch_weights(levels, "median")


def test_grouped_weights_take_each_file_against_its_own_loudest_patch() -> None:
    levels = np.array([-3.0, -13.0, -40.0, -50.0, -100.0], dtype=np.float32)
    group = np.array([0, 0, 1, 1, 1])
    assert patch_weights(levels, group=group) == pytest.approx([1.0, 0.1, 1.0, 0.1, 0.0], rel=1e-5)


def test_a_loud_attack_outweighs_a_long_quiet_tail() -> None:
    # Two loud patches say piano; eight patches 20 dB under say guitar (a ringing note's tail).
    scores = np.array([[0.8, 0.1, 0.1]] * 2 + [[0.2, 0.7, 0.1]] * 8, dtype=np.float32)
    levels = np.array([0.0, -2.0] + [-20.0] * 8, dtype=np.float32)
    result = aggregate_file(scores, np.arange(10) * 0.5, levels, LABELS, patch_s=1.0)
    assert result.label == "piano"
    plain = aggregate_file(scores, np.arange(10) * 0.5, levels, LABELS, 1.0, aggregation="mean")
    assert plain.label == "acoustic_guitar"  # the seed paper's plain mean hears the tail
    assert len(result.segments) == 10 and result.segments[-1].label == "acoustic_guitar"
    assert result.scores.sum() == pytest.approx(1.0, rel=1e-5)
    # Match mode: the same weighted score is compared with the threshold.
    unsure = aggregate_file(scores, np.arange(10) * 0.5, levels, LABELS, 1.0, unknown_threshold=0.9)
    assert unsure.label == UNKNOWN and unsure.top_labels[0] == "piano"


def test_patches_under_the_floor_are_no_instrument() -> None:
    scores = np.array([[0.1, 0.1, 0.8], [0.7, 0.2, 0.1], [0.6, 0.3, 0.1]], dtype=np.float32)
    starts = np.arange(3) * 0.5
    # A quiet note (-60 to -70) and a silent patch (at the floor of the features, -100) that a
    # model would call a flute: the file is a piano, the silent segment no instrument.
    levels = np.array([-100.0, -60.0, -70.0], dtype=np.float32)
    result = aggregate_file(scores, starts, levels, LABELS, 1.0, floor_db=-80.0)
    assert result.label == "piano" and result.confidence == pytest.approx((0.7 + 0.1 * 0.6) / 1.1, rel=1e-5)
    assert [s.label for s in result.segments] == [UNKNOWN, "piano", "piano"]
    assert result.segments[0].confidence == 0.0
    # Without a floor, the silent patch's segment names what the model made of it.
    assert aggregate_file(scores, starts, levels, LABELS, 1.0).segments[0].label == "flute"
    # Nothing over the floor: the file is unknown, with no candidates.
    silent = aggregate_file(scores, starts, np.full(3, -100.0, np.float32), LABELS, 1.0, floor_db=-80.0)
    assert (silent.label, silent.confidence, silent.top_labels, silent.top_scores) == (UNKNOWN, 0.0, [], [])
    assert {s.label for s in silent.segments} == {UNKNOWN} and not silent.scores.any()


@pytest.mark.parametrize("kind", ["mel", "scalogram"])
def test_levels_against_a_full_scale_sine_are_dbfs(kind: str) -> None:
    config = FEATURES[kind]()
    featurizer = make_featurizer(config)
    full_scale = full_scale_level_db(featurizer)
    rate = config.sample_rate
    t = np.arange(2 * rate) / rate
    rng = np.random.default_rng(0)

    def dbfs(y: np.ndarray) -> float:
        return float(featurizer([y.astype(np.float32)], resize=False).level_db.max()) - full_scale

    assert dbfs(10 ** (-60 / 20) * np.sin(2 * np.pi * 440.0 * t)) == pytest.approx(-60.0, abs=0.1)
    assert dbfs(10 ** (-6 / 20) * np.sin(2 * np.pi * 440.0 * t)) == pytest.approx(-6.0, abs=0.1)
    assert dbfs(np.zeros(len(t))) < SILENT_DBFS
    assert dbfs(rng.integers(-1, 2, len(t)) / 32768.0) < SILENT_DBFS  # 16-bit dither, one step either way


def test_eval_weighs_patches_as_tag_does(tmp_path: Path) -> None:
    """``predict_files`` (eval, validation) and ``aggregate_file`` (tag) agree on a decaying note."""
    rate = 22050
    t = np.arange(int(6.0 * rate)) / rate
    note = np.exp(-t / 0.8) * sum(np.sin(2 * np.pi * 196.0 * k * t) / k for k in range(1, 8))
    sustained = 0.3 * np.sin(2 * np.pi * 440.0 * t[: 3 * rate])
    paths = [tmp_path / "decay.wav", tmp_path / "flat.wav"]
    for path, y in zip(paths, (0.5 * note, sustained), strict=True):
        sf.write(path, y.astype(np.float32), rate)
    checkpoint = load_checkpoint("cnn-default")
    features, labels = checkpoint.meta.features, checkpoint.meta.labels
    patches = build_patch_set([LabelledFile(str(p), "piano") for p in paths], labels, features)
    _, file_scores = predict_files(checkpoint.model, features, patches)

    model = inference_model(checkpoint.model)
    featurizer = make_featurizer(features)
    for path, expected in zip(paths, file_scores, strict=True):
        with torch.inference_mode():
            batch = featurizer([decode(path, features.sample_rate).samples], resize=False)
            probs = torch.softmax(model(resize_patches(batch.inputs, features)), dim=1).numpy()
        tagged = aggregate_file(probs, batch.start_s, batch.level_db, labels, features.patch_s)
        # Patch sets keep their inputs as float16, tag's actor float32: scores differ by about 1e-4.
        np.testing.assert_allclose(tagged.scores, expected, atol=1e-3)
    weights = patches.weights()[patches.owner == 0]
    assert weights.max() == 1.0 and weights.min() < 0.01  # the decay spans more than 20 dB
