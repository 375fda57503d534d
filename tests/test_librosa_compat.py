"""Parity of mirbatch's torch log-mel with librosa (the reference the seed paper's features come from).

Tolerances, and why:
- mel power: float32 STFT in torch vs float32 (complex64) STFT in librosa via numpy's pocketfft;
  the two FFTs round differently, so agreement is relative (rtol 1e-4) plus an absolute floor
  far below the quietest band anyone can hear (1e-6 of the peak power).
- dB: compared where the power is above 1e-6 of the peak; 0.01 dB is below any effect on a model.
"""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch
from conftest import sine

from mirbatch.features import Featurizer, MelConfig, mel_filterbank, mel_power, patch_starts, power_to_db

CFG = MelConfig()


def _signal(kind: str) -> np.ndarray:
    rng = np.random.default_rng(1)
    if kind == "noise":
        return (rng.standard_normal(22050 * 2) * 0.1).astype(np.float32)
    if kind == "chirp":
        return librosa.chirp(fmin=50, fmax=8000, sr=22050, duration=2.5).astype(np.float32) * 0.3
    return sine(440.0, 1.7) + 0.2 * sine(3000.0, 1.7)


def _librosa_mel(y: np.ndarray) -> np.ndarray:
    return librosa.feature.melspectrogram(y=y, sr=22050, n_fft=2048, hop_length=512, n_mels=96)


@pytest.mark.parametrize("kind", ["noise", "chirp", "tones"])
def test_mel_power_matches_librosa(kind: str) -> None:
    y = _signal(kind)
    ref = _librosa_mel(y)
    ours = mel_power(torch.from_numpy(y), mel_filterbank(CFG), torch.hann_window(2048, periodic=True), CFG).numpy()
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6 * ref.max())


@pytest.mark.parametrize("kind", ["noise", "chirp", "tones"])
@pytest.mark.parametrize("ref", [1.0, "max"])
def test_power_to_db_matches_librosa(kind: str, ref: float | str) -> None:
    power = _librosa_mel(_signal(kind))
    expected = librosa.power_to_db(power, ref=np.max if ref == "max" else 1.0, top_db=80.0)
    ref_value = float(power.max()) if ref == "max" else 1.0
    ours = power_to_db(torch.from_numpy(power), ref=ref_value, top_db=80.0).numpy()
    loud = power > 1e-6 * power.max()
    np.testing.assert_allclose(ours[loud], expected[loud], atol=0.01)
    # The top_db floor lands on the same value.
    assert ours.min() == pytest.approx(expected.min(), abs=0.01)


def test_patches_are_librosa_db_of_each_one_second_slice() -> None:
    y = _signal("chirp")
    batch = Featurizer(CFG)([y], resize=False)
    power = _librosa_mel(y)
    starts = patch_starts(power.shape[1], CFG.patch_frames, CFG.patch_hop_frames)
    assert batch.inputs.shape == (len(starts), 1, 96, CFG.patch_frames)
    for i, start in enumerate(starts):
        window = power[:, start : start + CFG.patch_frames]
        db = librosa.power_to_db(window, ref=np.max, top_db=80.0)
        expected = db / 80.0 + 1.0  # the featurizer maps [-80, 0] dB onto [0, 1]
        loud = window > 1e-6 * window.max()
        np.testing.assert_allclose(batch.inputs[i, 0].numpy()[loud], expected[loud], atol=0.01 / 80)
        assert batch.start_s[i] == pytest.approx(start * 512 / 22050)


def test_one_second_patch_is_44_frames_and_short_clips_are_padded() -> None:
    assert CFG.patch_frames == 44  # 1 + 22050 // 512, librosa's centered frame count for 1 s
    batch = Featurizer(CFG)([sine(440.0, 0.01), sine(440.0, 1.0), sine(440.0, 3.0)])
    assert batch.inputs.shape[1:] == (1, 150, 150)
    counts = np.bincount(batch.owner)
    assert counts[0] == 1 and counts[1] == 1
    assert counts[2] == len(patch_starts(1 + 3 * 22050 // 512, 44, CFG.patch_hop_frames))
    assert float(batch.inputs.min()) >= 0.0 and float(batch.inputs.max()) <= 1.0


def test_level_does_not_change_features() -> None:
    # Each patch is referenced to its own peak, so a recording 30 dB quieter gives the same input.
    y = _signal("tones")
    featurizer = Featurizer(CFG)
    loud, quiet = featurizer([y]), featurizer([y * 10 ** (-30 / 20)])
    np.testing.assert_allclose(loud.inputs.numpy(), quiet.inputs.numpy(), atol=1e-4)
    np.testing.assert_allclose(loud.level_db - quiet.level_db, 30.0, atol=0.01)


def test_patch_starts_cover_the_end() -> None:
    assert patch_starts(44, 44, 22) == [0]
    assert patch_starts(10, 44, 22) == [0]
    assert patch_starts(45, 44, 22) == [0]  # one frame left over: not worth a patch
    assert patch_starts(110, 44, 22) == [0, 22, 44, 66]
    assert patch_starts(120, 44, 22) == [0, 22, 44, 66]  # 10 frames left: under half a hop
    assert patch_starts(130, 44, 22) == [0, 22, 44, 66, 86]  # 20 frames left: end-aligned patch
