"""Each augmentation does what its docstring says, on synthesized tones, reproducibly per seed."""

from __future__ import annotations

import itertools

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
    noise_only,
    pitch_shift,
    reverberate,
    wavetable_sustains,
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


def test_noise_snr_is_between_15_and_45_db_in_the_audible_band() -> None:
    y = _tone(440)
    freqs = np.fft.rfftfreq(len(y), 1 / RATE)
    slopes = []
    for seed in range(12):  # all three colours come up
        noise = add_noise(y, RATE, np.random.default_rng(seed)) - y
        power = np.abs(np.fft.rfft(noise)) ** 2
        # Parseval: the power over 20 Hz against the tone's; in this 1 s clip brown noise once hid 98 %
        # of its power under 20 Hz, 17 dB out of earshot.
        snr = 10 * np.log10(np.mean(y**2) / (2 * power[freqs >= 20.0].sum() / len(y) ** 2))
        assert 14.8 <= snr <= 45.2
        octave_power = [power[(freqs >= f) & (freqs < 2 * f)].mean() for f in (250.0, 4000.0)]
        slopes.append(10 * np.log10(octave_power[1] / octave_power[0]) / 4)  # dB per octave
    assert min(slopes) < -5 and max(slopes) > -1 and any(-4 < x < -2 for x in slopes)  # brown, white, pink


def test_noise_only_is_broadband_noise_of_many_colours_and_levels() -> None:
    rng = np.random.default_rng(0)
    clips = [noise_only(RATE, RATE, rng) for _ in range(40)]
    assert all(c.dtype == np.float32 and c.shape == (RATE,) for c in clips)
    rms_db = np.array([20 * np.log10(np.sqrt(np.mean(c.astype(np.float64) ** 2))) for c in clips])
    assert rms_db.min() >= -60.5 and rms_db.max() <= -19.5 and np.ptp(rms_db) > 20
    # Spectral slope in dB per octave (a line through the band levels, 100 Hz-8 kHz, octave bands):
    # -9 to +3 by construction, bent further by the EQ's tilt (+-3) and bands (+-12 dB).
    freqs = np.fft.rfftfreq(RATE, 1 / RATE)
    centres = 125 * 2.0 ** np.arange(7)
    slopes = []
    for c in clips:
        power = np.abs(np.fft.rfft(c)) ** 2
        bands = [10 * np.log10(power[(freqs >= f / np.sqrt(2)) & (freqs < f * np.sqrt(2))].mean()) for f in centres]
        slopes.append(np.polyfit(np.log2(centres), bands, 1)[0] - 3.0)  # octave bands double in width: +3 dB
    assert min(slopes) < -6 and max(slopes) > 0 and all(-20 < x < 12 for x in slopes)
    assert all(abs(np.corrcoef(a, b)[0, 1]) < 0.2 for a, b in itertools.pairwise(clips[:11]))
    again = noise_only(RATE, RATE, np.random.default_rng(0))
    np.testing.assert_array_equal(again, clips[0])


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


def _bowed_note(f0: float, seconds: float = 2.0, seed: int = 1) -> np.ndarray:
    """Harmonics 1-8 with a 30-cent vibrato and +-3 dB swells of single harmonics, in noise at 20 dB SNR."""
    t = np.arange(int(seconds * RATE)) / RATE
    depth = (2 ** (30 / 1200) - 1) / (2 * np.pi * 5.5)
    phase = 2 * np.pi * f0 * (t + depth * (1 - np.cos(2 * np.pi * 5.5 * t)))
    swell = [10 ** (3 * np.sin(2 * np.pi * (1.5 + k) * t + k) / 20) for k in range(1, 9)]
    note = sum(swell[k - 1] * np.sin(k * phase) / k for k in range(1, 9))
    noise = np.random.default_rng(seed).standard_normal(len(t)) * np.sqrt(np.mean(note**2)) * 0.1
    return (0.3 * (note + noise)).astype(np.float32)


def _harmonic_motion_db(y: np.ndarray, f0: float) -> float:
    """How much harmonics 2-6 move against the frame's total: median std over 46 ms frames, 0.3-1.7 s in."""
    frames = [y[i : i + 1024] * np.hanning(1024) for i in range(int(0.3 * RATE), int(1.7 * RATE), 512)]
    freqs = np.fft.rfftfreq(1024, 1 / RATE)
    levels = []
    for frame in frames:
        power = np.abs(np.fft.rfft(frame)) ** 2
        bands = [power[np.abs(freqs - k * f0) < 0.4 * f0].sum() for k in range(2, 7)]
        levels.append(10 * np.log10(np.array(bands) / sum(bands)))
    return float(np.median(np.std(levels, axis=0)))


@pytest.mark.parametrize("f0", [196.0, 440.0])
def test_wavetable_sustains_leave_a_still_clean_harmonic_series_at_the_same_pitch(f0: float) -> None:
    y = _bowed_note(f0)
    _, between_before = _harmonic_and_between_db(y, f0)
    motion_before = _harmonic_motion_db(y, f0)  # about 2 dB: the swells
    for seed in range(4):
        out = wavetable_sustains(y, RATE, np.random.default_rng(seed))
        _, between_after = _harmonic_and_between_db(out, f0)
        assert between_after < between_before - 25  # one period looped holds nothing between harmonics
        assert _harmonic_motion_db(out, f0) < motion_before / 3
        spectrum = np.abs(np.fft.rfft(out[RATE // 2 : 3 * RATE // 2] * np.hanning(RATE)))
        peaks = np.fft.rfftfreq(RATE, 1 / RATE)[spectrum.argmax()] / f0
        assert abs(peaks - round(peaks)) < 0.02  # the strongest peak is still a harmonic of f0
        assert abs(np.sqrt(np.mean(out**2)) / np.sqrt(np.mean(y**2)) - 1) < 0.5  # level envelope followed


def test_wavetable_sustains_keep_noise_silence_and_the_attack() -> None:
    rng = np.random.default_rng(0)
    noise = (0.1 * rng.standard_normal(RATE)).astype(np.float32)
    np.testing.assert_array_equal(wavetable_sustains(noise, RATE, rng), noise)
    assert np.all(wavetable_sustains(np.zeros(RATE, np.float32), RATE, rng) == 0.0)
    burst_then_note = np.concatenate([noise[: RATE // 4], _bowed_note(330.0, 1.0)])
    out = wavetable_sustains(burst_then_note, RATE, rng)
    np.testing.assert_array_equal(out[: RATE // 4 - 1024], burst_then_note[: RATE // 4 - 1024])
    assert not np.allclose(out[RATE // 2 :], burst_then_note[RATE // 2 :])


def test_augment_clip_with_everything_off_returns_the_input() -> None:
    y = _tone(440)
    off = AugmentConfig.from_dict({**{name: 0.0 for name in AUGMENTATIONS}, "mix": 0.0})
    np.testing.assert_array_equal(augment_clip(y, RATE, off, np.random.default_rng(0), lambda: _tone(1000)), y)


def test_parse_leaves_named_augmentations_out() -> None:
    config = AugmentConfig.parse("default,-low_pass,-reverb")
    assert config.low_pass == 0.0 and config.reverb == 0.0 and config.eq == AugmentConfig().eq
    assert AugmentConfig.parse("default,-mix").mix == 0.0
    assert AugmentConfig.parse("none").variants == 0
    with pytest.raises(ValueError, match="unknown augmentation"):
        AugmentConfig.parse("default,-chorus")
