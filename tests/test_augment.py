"""Each augmentation does what its docstring says, on synthesized tones, reproducibly per seed."""

from __future__ import annotations

import numpy as np
import pytest

from mirbatch.augment import (
    AUGMENTATIONS,
    AugmentConfig,
    add_noise,
    augment_clip,
    band_limit,
    clean_harmonics,
    equalize,
    low_pass,
    mix_in,
    pitch_shift,
    reverberate,
)

RATE = 22050


def _tone(hz: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _level_db(y: np.ndarray, hz: float) -> float:
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    freqs = np.fft.rfftfreq(len(y), 1 / RATE)
    return float(20 * np.log10(spectrum[np.abs(freqs - hz) < 5].max() + 1e-12))


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_same_length_float32_and_reproducible(name: str) -> None:
    y = _tone(440) + _tone(3000) * 0.3
    fn = AUGMENTATIONS[name]
    a = fn(y, RATE, np.random.default_rng(5))
    b = fn(y, RATE, np.random.default_rng(5))
    assert a.dtype == np.float32
    assert abs(len(a) - len(y)) <= (len(y) // 15 if name == "pitch" else 0)  # pitch changes speed too
    np.testing.assert_array_equal(a, b)
    assert np.isfinite(a).all()


def test_low_pass_darkens_upper_harmonics_and_keeps_the_fundamental() -> None:
    y = _tone(300) + _tone(9000)
    for seed in range(5):
        out = low_pass(y, RATE, np.random.default_rng(seed))
        assert abs(_level_db(out, 300) - _level_db(y, 300)) < 1.0
        assert _level_db(out, 9000) < _level_db(y, 9000) - 6.0


def test_band_limit_removes_content_above_the_lower_rate() -> None:
    y = _tone(440) + _tone(10000)
    out = band_limit(y, RATE, np.random.default_rng(0))
    assert _level_db(out, 10000) < _level_db(y, 10000) - 40
    assert abs(_level_db(out, 440) - _level_db(y, 440)) < 1.0


def test_pitch_shift_stays_within_a_semitone() -> None:
    y = _tone(440, 2.0)
    for seed in range(5):
        out = pitch_shift(y, RATE, np.random.default_rng(seed))
        spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
        peak = np.fft.rfftfreq(len(out), 1 / RATE)[spectrum.argmax()]
        assert 440 * 2 ** (-1 / 12) - 2 <= peak <= 440 * 2 ** (1 / 12) + 2


def test_noise_snr_is_between_15_and_45_db() -> None:
    y = _tone(440)
    for seed in range(5):
        noise = add_noise(y, RATE, np.random.default_rng(seed)) - y
        snr = 10 * np.log10(np.mean(y**2) / np.mean(noise**2))
        assert 14.9 <= snr <= 45.1


def test_equalize_and_reverb_change_the_signal_but_not_its_pitch() -> None:
    y = _tone(440)
    for fn in (equalize, reverberate):
        out = fn(y, RATE, np.random.default_rng(3))
        assert not np.allclose(out, y)
        spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
        assert abs(np.fft.rfftfreq(len(out), 1 / RATE)[spectrum.argmax()] - 440) < 3


def test_mix_in_puts_the_other_clip_12_to_25_db_under() -> None:
    y, other = _tone(440), _tone(1000)
    out = mix_in(y, other, np.random.default_rng(0))
    gap = _level_db(out, 440) - _level_db(out, 1000)
    assert 11.5 <= gap <= 25.5


def _harmonic_and_between_db(y: np.ndarray, f0: float) -> tuple[float, float]:
    """Energy within 3 % of f0 of harmonics 1-8, and 0.2-0.5 of f0 away from them, 0.5-1.5 s in."""
    part = y[RATE // 2 : 3 * RATE // 2]
    power = np.abs(np.fft.rfft(part * np.hanning(len(part)))) ** 2
    ratio = np.fft.rfftfreq(len(part), 1 / RATE) / f0
    offset = np.abs(ratio - np.round(ratio))
    inside = (ratio > 0.5) & (ratio < 8.5)
    return (
        float(10 * np.log10(power[inside & (offset < 0.03)].sum())),
        float(10 * np.log10(power[inside & (offset > 0.2)].sum())),
    )


@pytest.mark.parametrize(("f0", "vibrato_cents"), [(220.0, 0.0), (220.0, 30.0), (880.0, 30.0)])
def test_clean_harmonics_lowers_what_lies_between_harmonics_and_keeps_them(f0: float, vibrato_cents: float) -> None:
    t = np.arange(2 * RATE) / RATE
    depth = (2 ** (vibrato_cents / 1200) - 1) / (2 * np.pi * 5.5)
    phase = 2 * np.pi * f0 * (t + depth * (1 - np.cos(2 * np.pi * 5.5 * t)))
    note = sum(np.sin(k * phase) / k for k in range(1, 9))
    noise = np.random.default_rng(1).standard_normal(len(t)) * np.sqrt(np.mean(note**2)) * 0.1  # 20 dB SNR
    y = (0.3 * (note + noise)).astype(np.float32)
    harmonics_before, between_before = _harmonic_and_between_db(y, f0)
    for seed in range(3):
        out = clean_harmonics(y, RATE, np.random.default_rng(seed))
        harmonics_after, between_after = _harmonic_and_between_db(out, f0)
        assert abs(harmonics_after - harmonics_before) < 0.5
        # measured 29-34 dB on the steady tone, 20-29 dB with vibrato (the period follows it)
        assert between_after < between_before - 15


def test_clean_harmonics_leaves_noise_and_silence_alone() -> None:
    rng = np.random.default_rng(0)
    noise = (0.1 * rng.standard_normal(RATE)).astype(np.float32)  # no period: nothing is combed
    np.testing.assert_allclose(clean_harmonics(noise, RATE, rng), noise, atol=1e-6)
    assert np.all(clean_harmonics(np.zeros(RATE, np.float32), RATE, rng) == 0.0)


def test_augment_clip_with_everything_off_returns_the_input() -> None:
    y = _tone(440)
    off = AugmentConfig(**{**{name: 0.0 for name in AUGMENTATIONS}, "mix": 0.0})
    np.testing.assert_array_equal(augment_clip(y, RATE, off, np.random.default_rng(0), lambda: _tone(1000)), y)


def test_parse_leaves_named_augmentations_out() -> None:
    config = AugmentConfig.parse("default,-low_pass,-reverb")
    assert config.low_pass == 0.0 and config.reverb == 0.0 and config.eq == AugmentConfig().eq
    assert AugmentConfig.parse("default,-mix").mix == 0.0
    assert AugmentConfig.parse("none").variants == 0
    with pytest.raises(ValueError, match="unknown augmentation"):
        AugmentConfig.parse("default,-chorus")
