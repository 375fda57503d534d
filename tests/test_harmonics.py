"""Harmonic levels (pitch by subharmonic summation, levels per harmonic number) and ``cnn-harmonic``.

Tolerances, and why:
- pitch: candidates are a third of a semitone apart, and a harmonic counts wherever its peak lies
  within 16 Hz (3 bins), so at low pitches the candidates either side of a tone can tie: within
  half a semitone (a 65 Hz tone reads 64.2 Hz).
- levels: a harmonic's level is the largest 4096-point Hann-windowed bin within 3 bins of it; a
  partial between two bins reads up to 1.42 dB low (the window's scalloping loss), so 1.5 dB.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mirbatch.features import HARMONIC_N_FFT, MelConfig, harmonic_levels, make_featurizer
from mirbatch.models import HarmonicCNN
from mirbatch.training import TrainConfig, augment_patches, classifier_loss, default_features

RATE = 22050
HARMONIC_CONFIG = default_features("cnn-harmonic")


def _tone(f0: float, amplitudes: list[float], seconds: float = 1.5) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    y = sum(a * np.sin(2 * np.pi * f0 * k * t + k) for k, a in enumerate(amplitudes, start=1))
    return (0.3 * y / np.max(np.abs(y))).astype(np.float32)


def _rows(y: np.ndarray, harmonics: int = 24) -> np.ndarray:
    spec = torch.stft(
        torch.from_numpy(y), HARMONIC_N_FFT, 512, window=torch.hann_window(HARMONIC_N_FFT, periodic=True),
        center=True, pad_mode="constant", return_complex=True,
    )  # fmt: skip
    rows = harmonic_levels(spec.abs(), RATE, harmonics).numpy()
    return rows[:, 5:-5]  # frames whose window lies inside the tone


@pytest.mark.parametrize("f0", [65.4, 220.0, 523.3, 1318.5])  # C2 (cello), A3, C5, E6 (violin)
def test_a_sawtooth_reads_its_pitch_and_its_harmonics_at_their_levels(f0: float) -> None:
    amplitudes = [1.0 / k for k in range(1, 31)]
    rows = _rows(_tone(f0, amplitudes))
    pitch_hz = 55.0 * 2.0 ** (5.0 * rows[-1])
    assert np.all(np.abs(12 * np.log2(pitch_hz / f0)) < 0.5)
    audible = [k for k in range(1, 11) if k * f0 < 0.95 * RATE / 2]
    expected_db = np.array([20 * np.log10(amplitudes[k - 1]) for k in audible])
    measured_db = (np.median(rows[[k - 1 for k in audible]], axis=1) - 1.0) * 80.0
    np.testing.assert_allclose(measured_db, expected_db, atol=1.5)
    # Harmonics above 95 % of Nyquist read 0, not the noise there.
    above = [k for k in range(1, 25) if k * f0 >= 0.95 * RATE / 2]
    assert np.all(rows[[k - 1 for k in above]] == 0.0)


def test_odd_harmonics_alone_still_read_the_fundamental() -> None:
    # A clarinet-like tone: its octave below shares half the partials, its octave above none.
    rows = _rows(_tone(196.0, [1.0 / k if k % 2 else 0.0 for k in range(1, 16)]))
    assert np.all(np.abs(12 * np.log2(55.0 * 2.0 ** (5.0 * rows[-1]) / 196.0)) < 0.5)
    assert np.median(rows[1]) < 0.5  # the missing second harmonic sits 40 dB or more under the first


def test_patches_carry_harmonic_rows_under_unchanged_mel_rows() -> None:
    y = np.concatenate([_tone(220.0, [1.0, 0.5, 0.3, 0.2]), np.zeros(RATE, np.float32)])
    plain = make_featurizer(replace(MelConfig(), input_size=MelConfig().native_size))([y], resize=True)
    batch = make_featurizer(HARMONIC_CONFIG)([y], resize=True)
    assert HARMONIC_CONFIG.native_size == (96 + 25, 44) == tuple(batch.inputs.shape[-2:])
    torch.testing.assert_close(batch.inputs[:, :, :96], plain.inputs)
    harmonic = batch.inputs[:, 0, 96:]
    assert harmonic.shape[1] == 25 and float(harmonic.min()) >= 0.0 and float(harmonic.max()) <= 1.0
    # The last patch is mostly the silence after the tone: its quiet frames carry no harmonic rows.
    last = batch.inputs[-1, 0]
    quiet = last[:96].amax(dim=0) <= 0.5  # 40 dB or more under the patch's loudest frame
    assert quiet.any() and torch.all(last[96:, quiet] == 0.0)
    with pytest.raises(ValueError, match="not resized"):
        make_featurizer(replace(HARMONIC_CONFIG, input_size=(150, 150)))([y], resize=True)


def test_the_harmonic_model_answers_with_the_product_of_its_branches() -> None:
    model = HarmonicCNN(n_labels=5, harmonic_rows=25)
    x = torch.rand(4, 1, 121, 44)
    model.train()
    branches = model(x)
    assert branches.shape == (4, 2, 5)
    model.eval()
    with torch.no_grad():
        expected = F.log_softmax(model.branch_logits(x), dim=-1).sum(1)
        torch.testing.assert_close(model(x), expected)
    # Each branch is trained on its own loss: the sum of their cross-entropies.
    targets = torch.tensor([0, 1, 2, 3])
    torch.testing.assert_close(
        classifier_loss(branches, targets),
        F.cross_entropy(branches[:, 0], targets) + F.cross_entropy(branches[:, 1], targets),
    )
    # The harmonic branch reads the harmonic rows: changing only them changes its logits, not the other's.
    other = x.clone()
    other[:, :, 96:] = torch.rand(4, 1, 25, 44)
    with torch.no_grad():
        a, b = model.branch_logits(x), model.branch_logits(other)
    torch.testing.assert_close(a[:, 0], b[:, 0])
    assert not torch.allclose(a[:, 1], b[:, 1])


def test_batch_augmentation_only_masks_harmonic_rows_in_time() -> None:
    x = torch.rand(16, 1, 121, 44)
    out = augment_patches(x, torch.Generator().manual_seed(3), fixed_rows=25)
    for i in range(16):
        kept = torch.all(out[i, 0, 96:] == x[i, 0, 96:], dim=0)
        masked = torch.all(out[i, 0, 96:] == 0.0, dim=0)
        assert torch.all(kept | masked)  # each frame's harmonic rows are as they were, or masked out
    assert not torch.equal(out[:, :, :96], x[:, :, :96])  # the spectral rows were augmented


def test_the_harmonic_model_needs_harmonic_rows() -> None:
    with pytest.raises(ValueError, match="--features mel"):
        default_features("cnn-harmonic", "scalogram")
    with pytest.raises(ValueError, match="mel features with harmonics"):
        TrainConfig(data=("x",), architecture="cnn-harmonic")  # plain mel: no harmonic rows
    with pytest.raises(ValueError, match="auxiliary labels"):
        TrainConfig(data=("x",), architecture="cnn-harmonic", features=HARMONIC_CONFIG, aux_labels=("rest",))
    config = TrainConfig(data=("x",), architecture="cnn-harmonic", features=HARMONIC_CONFIG)
    assert config.model_params == {"harmonic_rows": 25} and config.optimizer_name == "adamw"
