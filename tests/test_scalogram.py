"""Scalogram parity: the batched frequency-domain CWT against a direct time-domain convolution.

The oracle builds each scaled wavelet in the time domain independently of the FFT path (Morlet from
PyWavelets' own ``cmorB-C`` definition, Morse by numerically integrating its Fourier definition),
convolves with numpy, and compares magnitudes at every scale. PyWavelets' ``cwt`` itself is not the
oracle: it integrates the wavelet on a coarse grid and is inaccurate at small scales (DESIGN.md).

Tolerance: 1e-3 of the largest coefficient. The FFT path runs in float32 (relative rounding ~1e-6
per coefficient, summed over ~3e4 bins), and the oracle truncates each wavelet where its envelope
is under 1e-7, which moves small coefficients by about that much.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import pywt
import torch

from mirbatch.features import (
    MelConfig,
    ScalogramConfig,
    ScalogramFeaturizer,
    bin_means,
    cwt_magnitude,
    shift_pitch,
    wavelet_context,
    wavelet_spectrum,
)

RATE = 22050


def _morlet_time(config: ScalogramConfig, scale: float, half: int) -> np.ndarray:
    wavelet = pywt.ContinuousWavelet(f"cmor{config.morlet_bandwidth}-{config.morlet_center}")
    assert wavelet.bandwidth_frequency == config.morlet_bandwidth
    assert wavelet.center_frequency == config.morlet_center
    t = np.arange(-half, half + 1) / scale
    b, c = config.morlet_bandwidth, config.morlet_center
    psi = (np.pi * b) ** -0.5 * np.exp(-(t**2) / b) * np.exp(2j * np.pi * c * t)  # pywt's cmor formula
    # Cross-check the formula against PyWavelets' sampled wavelet at its own grid points.
    values, grid = wavelet.wavefun(10)
    expected = (np.pi * b) ** -0.5 * np.exp(-(grid**2) / b) * np.exp(2j * np.pi * c * grid)
    np.testing.assert_allclose(values, expected, atol=1e-12)
    return psi / scale


def _morse_time(config: ScalogramConfig, center_hz: float, half: int) -> np.ndarray:
    # psi_s(n) = integral over f in [0, 1/2] of psihat_s(f) exp(2 pi i f n) df, summed on 2^19 frequency
    # points (an inverse DFT of 2^20, far longer than the wavelet, so nothing wraps), then cut to +-half.
    n_dense = 1 << 20
    single = replace(config, fmin=center_hz, fmax=center_hz, n_freqs=1)
    spectrum = wavelet_spectrum(single, np.fft.rfftfreq(n_dense))[0]
    psi = np.fft.ifft(np.concatenate([spectrum, np.zeros(n_dense // 2 - 1)]))
    return np.concatenate([psi[-half:], psi[: half + 1]])


def _direct_cwt(y: np.ndarray, config: ScalogramConfig, rows: list[int], half: int) -> np.ndarray:
    centers = config.frequencies()
    out = []
    for k in rows:
        if config.wavelet == "morlet":
            psi = _morlet_time(config, config.morlet_center * RATE / centers[k], half)
        else:
            psi = _morse_time(config, float(centers[k]), half)
        # W(tau) = sum_n y[n] conj(psi(n - tau)): correlation, i.e. convolution with conj(psi(-n)).
        out.append(np.abs(np.convolve(y, np.conj(psi[::-1]), mode="same")))
    return np.array(out)


@pytest.mark.parametrize("wavelet", ["morse", "morlet"])
def test_fft_cwt_matches_direct_convolution_at_all_scales(wavelet: str) -> None:
    config = ScalogramConfig(wavelet=wavelet, n_freqs=12)
    rng = np.random.default_rng(0)
    y = np.zeros(12000)
    y[2000:10000] = rng.standard_normal(8000) * np.hanning(8000)  # zeros around: the FFT's wrap is harmless
    spectrum = torch.from_numpy(wavelet_spectrum(config, np.fft.rfftfreq(len(y))).astype(np.float32))
    fast = cwt_magnitude(torch.from_numpy(y.astype(np.float32))[None], spectrum)[0].numpy()
    rows = list(range(config.n_freqs))
    half = min(wavelet_context(config), len(y) // 2 - 1)
    direct = _direct_cwt(y, config, rows, half)
    np.testing.assert_allclose(fast, direct, atol=1e-3 * direct.max())


@pytest.mark.parametrize("wavelet", ["morse", "morlet"])
def test_tone_peaks_at_its_row(wavelet: str) -> None:
    config = ScalogramConfig(wavelet=wavelet)
    for hz in (110.0, 440.0, 3000.0):
        t = np.arange(RATE) / RATE
        batch = ScalogramFeaturizer(config)([np.sin(2 * np.pi * hz * t).astype(np.float32)], resize=False)
        profile = batch.inputs[0, 0].mean(dim=1).numpy()
        expected = int(np.argmin(np.abs(config.frequencies() - hz)))
        assert abs(int(profile.argmax()) - expected) <= 1


@pytest.mark.parametrize("wavelet", ["morse", "morlet"])
def test_multirate_patches_equal_the_full_rate_transform_of_the_whole_clip(wavelet: str) -> None:
    # Each patch sees real audio as context (not padding), and the multi-rate inverse FFTs give the
    # full-rate magnitudes: compared per time bin, relative to the patch's largest bin. 5e-3 (0.04 dB)
    # covers averaging |W| over coarse samples at the low rates (the modulus is smooth, not constant,
    # within one coarse sample), the spectrum cut where the wavelet is under 1e-7, and float32.
    config = ScalogramConfig(wavelet=wavelet)
    rng = np.random.default_rng(1)
    y = rng.standard_normal(RATE * 3).astype(np.float32) * 0.1
    featurizer = ScalogramFeaturizer(config)
    batch = featurizer([y], resize=False)
    starts = (batch.start_s * RATE).round().astype(int)
    length = featurizer.segment_length(len(starts))  # one segment holds all five patches
    assert len(featurizer.plan(length, torch.device("cpu")).groups) > 3  # several rates are in use
    context = featurizer.context
    whole = torch.nn.functional.pad(torch.from_numpy(y), (context, context))
    spectrum = torch.from_numpy(wavelet_spectrum(config, np.fft.rfftfreq(whole.numel())).astype(np.float32))
    mag = cwt_magnitude(whole[None], spectrum)[0]
    segment = torch.nn.functional.pad(torch.from_numpy(y), (context, length))[:length]
    fast = featurizer.magnitude_bins(segment[None], torch.from_numpy(context + starts)[None])[0]
    for i in range(len(starts)):
        edges = context + starts[i] + torch.arange(config.time_bins + 1) * (RATE / config.time_bins)
        expected = bin_means(mag, edges.double())
        np.testing.assert_allclose(fast[i].numpy(), expected.numpy(), atol=5e-3 * float(expected.max()))
        power = expected.square()
        db = 10 * torch.log10(torch.clamp(power / power.max(), min=1e-8))
        normalized = (torch.clamp(db, min=-80) / 80 + 1).numpy()
        loud = power.numpy() > 1e-4 * float(power.max())
        np.testing.assert_allclose(batch.inputs[i, 0].numpy()[loud], normalized[loud], atol=2e-3)


def test_segmenting_does_not_change_the_patches() -> None:
    # Patches transformed one per segment, two per segment (with a remainder and an end-aligned last
    # patch) and eight per segment, across clips of different lengths batched together: the same
    # scalograms. 2e-3 of the [0, 1] range: float32 FFTs of different lengths round differently.
    rng = np.random.default_rng(2)
    clips = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (RATE * 5 + 3000, 900, RATE * 2)]
    config = ScalogramConfig()
    reference = ScalogramFeaturizer(config, patches_per_segment=1)(clips, resize=False)
    for per_segment in (2, 8):
        batch = ScalogramFeaturizer(config, patches_per_segment=per_segment)(clips, resize=False)
        assert batch.owner.tolist() == reference.owner.tolist()
        np.testing.assert_array_equal(batch.start_s, reference.start_s)
        np.testing.assert_allclose(batch.inputs.numpy(), reference.inputs.numpy(), atol=2e-3)
        np.testing.assert_allclose(batch.level_db, reference.level_db, atol=1e-2)


def test_bin_means_integrates_piecewise_constant_samples() -> None:
    values = torch.tensor([[1.0, 2.0, 3.0, 4.0]])  # sample i stands for [i - 1/2, i + 1/2)
    assert bin_means(values, torch.tensor([-0.5, 1.5, 3.5], dtype=torch.float64)).tolist() == [[1.5, 3.5]]
    # Half of sample 0 and half of sample 1.
    assert bin_means(values, torch.tensor([0.0, 1.0], dtype=torch.float64)).tolist() == [[1.5]]


def test_output_shape_and_range() -> None:
    featurizer = ScalogramFeaturizer(ScalogramConfig())
    batch = featurizer([np.zeros(100, np.float32), np.ones(RATE * 2, np.float32) * 0.1])
    assert batch.inputs.shape[1:] == (1, 224, 224)
    assert list(batch.owner) == [0, 1, 1, 1]
    assert float(batch.inputs.min()) >= 0 and float(batch.inputs.max()) <= 1


def _harmonic_tone(hz: float) -> np.ndarray:
    t = np.arange(RATE) / RATE
    return np.sum([np.sin(2 * np.pi * hz * h * t) / h for h in (1, 2, 3, 4)], axis=0).astype(np.float32)


@pytest.mark.parametrize("semitones", [12, 6, -12])
def test_shifting_rows_transposes_a_tone(semitones: int) -> None:
    """A 220 Hz tone with four harmonics, moved ``semitones`` along the rows, is the scalogram of the
    same tone played that much higher or lower: its peak rows land within one row of where the
    transposed tone puts them, and the profiles over frequency correlate above 0.9 (not exactly 1:
    the shift rounds to whole rows, about one per semitone, and a wavelet's bandwidth is a fixed
    share of its frequency only approximately at the rate's edges)."""
    config = ScalogramConfig()
    featurizer = ScalogramFeaturizer(config)
    low = featurizer([_harmonic_tone(220.0)], resize=False).inputs
    transposed = featurizer([_harmonic_tone(220.0 * 2 ** (semitones / 12))], resize=False).inputs
    moved = shift_pitch(low, semitones, config)
    profile, expected = moved[0, 0].mean(dim=1).numpy(), transposed[0, 0].mean(dim=1).numpy()
    assert abs(int(profile.argmax()) - int(expected.argmax())) <= 1
    assert np.corrcoef(profile, expected)[0, 1] > 0.9
    # Rows moved in from outside the patch are silent, and no shift leaves the patch unchanged.
    edge = slice(0, semitones) if semitones > 0 else slice(semitones, None)
    assert float(moved[0, 0, edge].max()) == 0.0
    assert torch.equal(shift_pitch(low, 0, config), low)
    assert 12.0 < config.rows_per_octave() < 13.0


def test_mel_patches_cannot_be_pitch_shifted() -> None:
    x = torch.rand(2, 1, 128, 44)
    assert torch.equal(shift_pitch(x, 0, MelConfig()), x)
    with pytest.raises(ValueError, match="scalogram"):
        shift_pitch(x, 12, MelConfig())
