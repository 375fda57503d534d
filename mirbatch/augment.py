"""Audio augmentation for cross-recording generalization.

A model trained on one sample library learns that library's recording chain (its EQ, its room, its
noise floor, its tuning) unless training varies them. Each augmentation here imitates one way real
archives differ from a clean render; ``AugmentConfig`` gives each a probability, so an ablation
turns them off one at a time (``mirbatch train --augment``).

All functions take and return mono float32 ``y`` [shape=(n,)] at ``rate`` and draw randomness from
the ``np.random.Generator`` they are given, so a cache built with one seed is reproducible.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import librosa
import numpy as np
import soxr
from scipy.signal import butter, fftconvolve, sosfilt

__all__ = [
    "AUGMENTATIONS",
    "AUGMENTATION_NAMES",
    "AugmentConfig",
    "add_noise",
    "augment_clip",
    "band_limit",
    "clean_harmonics",
    "equalize",
    "low_pass",
    "mix_in",
    "noise_only",
    "pitch_shift",
    "reverberate",
    "wavetable_sustains",
]


_TRACK_HOP = 256  # samples between pitch-track frames


def _pitch_track(y: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame centres, periods (YIN, samples) and voicing of ``y`` [shape=(n,)], every 256 samples.

    Voicing is each frame's normalised correlation with the same frame one period later: near 1
    on a steady pitched tone, low on noise, clicks, chords and silence.
    """
    frame = 1024
    frame_period = rate / librosa.yin(y, fmin=50.0, fmax=2000.0, sr=rate, frame_length=2048, hop_length=_TRACK_HOP)
    lag = np.round(frame_period).astype(int)
    centers = np.arange(len(frame_period)) * _TRACK_HOP
    padded = np.pad(y.astype(np.float64), (frame, frame + int(lag.max())))
    window = centers[:, None] + frame // 2 + np.arange(frame)[None, :]
    here, later = padded[window], padded[window + lag[:, None]]
    energy = np.sqrt(np.sum(here**2, axis=1) * np.sum(later**2, axis=1))
    return centers, frame_period, np.sum(here * later, axis=1) / (energy + 1e-12)


def clean_harmonics(y: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Less between the harmonics: a pitch-synchronous comb on voiced frames; the rest kept.

    A small sample library loops one or a few periods of each note, so its sustain holds little
    that is not a harmonic. On held notes (0.3-0.9 s in), the energy 0.2-0.5 of f0 away from any
    harmonic, per tenth of f0 and against the note's total, is -36 to -44 dB for FluidR3_GM's and
    freepats' bowed strings but -54 to -69 dB for TimGM6mb's, cleaner than FluidR3's saxophone,
    English horn and oboe (-44 to -51 dB). Models had learnt that floor as part of a bowed
    string: with FluidR3's attack, TimGM6mb's harmonic levels resynthesized and FluidR3's
    between-harmonic residual, a model heard 18 of 21 violins right; with TimGM6mb's residual, 4.

    Each sample becomes a weighted mean (triangular, 2-6 periods either side) of the signal one,
    two, ... periods away, the period following ``librosa.yin`` frame by frame: harmonics add up,
    what lies between them averages away (17-34 dB on a steady harmonic tone in noise at 20 dB
    SNR, 3-9 dB at 65 Hz with a 30-cent vibrato). Only frames whose correlation with themselves
    one period on exceeds 0.6 are combed, so noise, clicks and most attacks pass unchanged.
    """
    centers, frame_period, voicing = _pitch_track(y, rate)
    n = len(y)
    t = np.arange(n, dtype=np.float64)
    period = np.interp(t, centers, frame_period)
    weight = np.clip((np.interp(t, centers, voicing) - 0.6) / 0.1, 0.0, 1.0)  # fully combed from 0.7
    taps = int(rng.integers(2, 7))
    total = np.zeros(n)
    norm = np.zeros(n)
    for m in range(-taps, taps + 1):
        at = t + m * period
        inside = (at >= 0) & (at <= n - 1)  # near the clip's ends, average what there is
        w = (1.0 - abs(m) / (taps + 1)) * inside
        total += w * np.interp(at, t, y)
        norm += w
    return (weight * total / norm + (1.0 - weight) * y).astype(np.float32)


def _steady_runs(voiced: np.ndarray, period: np.ndarray, min_frames: int) -> list[tuple[int, int]]:
    """(first, last) frames of the runs of voiced frames whose pitch moves under half a semitone per frame."""
    runs: list[tuple[int, int]] = []
    start = -1
    for i in range(len(voiced) + 1):
        steady = i < len(voiced) and voiced[i] and (start < 0 or abs(12 * np.log2(period[i] / period[i - 1])) < 0.5)
        if steady and start < 0:
            start = i
        elif not steady and start >= 0:
            if i - start >= min_frames:
                runs.append((start, i - 1))
            start = i if i < len(voiced) and voiced[i] else -1
    return runs


def wavetable_sustains(y: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Held notes as a small wavetable library plays them: a short attack, then one period looped.

    TimGM6mb's bowed strings are single cycles: each sample is 6-120 ms of a real note whose
    loop is one period at its root key (10-300 frames at 44.1 kHz), played across a range of
    keys behind a low-pass that a modulation envelope closes over 2-5 s. Such a sustain has no
    noise, no motion and formants that move with the key; models that heard only full
    recordings of strings take it for a saxophone, and take FluidR3's violins for one too once
    they pass through here (38 -> 11 of 40 right). Trained with it, a model hears those right
    again (27 of 40) and scored +0.04 across libraries in one pair, though TimGM6mb's own
    violins stay saxophones (README, cross-library results).

    Each steady voiced stretch of ``y`` (YIN pitch within half a semitone, voicing over 0.8, at
    least 0.15 s) keeps its first 10-50 ms; the rest becomes the harmonic series measured at
    that point (peaks of a 2,048-point spectrum at multiples of the stretch's median f0, random
    phases) at a constant pitch, following the original's level envelope. On half the stretches
    the levels are read off that series moved by up to an octave, at the same loudness (a cycle
    recorded at another key: the formants move, the pitch stays), and on half, independently, a
    second-order low-pass closes from 3-12 kHz to 0.5-4 kHz with a 0.3-3 s time constant. 10 ms
    crossfades join it to the original on both sides; unvoiced frames (noise, clicks, chords the
    pitch track cannot follow) are kept.
    """
    centers, period, voicing = _pitch_track(y, rate)
    n, n_fft = len(y), 2048
    source = y.astype(np.float64)
    level = np.sqrt(np.convolve(source**2, np.ones(512) / 512, mode="same")) + 1e-9  # 23 ms RMS
    runs = _steady_runs(voicing > 0.8, period, min_frames=int(0.15 * rate / _TRACK_HOP))
    out = source.copy()
    window = np.hanning(n_fft)
    fade = int(0.01 * rate)
    for first, last in runs:
        start, end = int(centers[first]), min(n, int(centers[last]) + _TRACK_HOP)
        f0 = rate / float(np.median(period[first : last + 1]))
        ref = min(end - fade, start + int(rng.uniform(0.01, 0.05) * rate))
        frame = np.pad(source, (n_fft // 2, n_fft // 2))[ref : ref + n_fft] * window
        spectrum = np.abs(np.fft.rfft(frame)) * 2 / window.sum()
        harmonics = np.arange(1, min(80, int(0.95 * rate / 2 / f0)) + 1)
        half_width = max(1, int(0.3 * f0 * n_fft / rate))
        bins = np.round(harmonics * f0 * n_fft / rate).astype(int)
        amps = np.array([spectrum[max(0, b - half_width) : b + half_width + 1].max() for b in bins])
        if rng.random() < 0.5:  # a cycle recorded at another key: the formants move, the pitch stays
            moved = harmonics * 2 ** (-rng.uniform(-12.0, 12.0) / 12)
            shifted = np.exp(np.interp(moved, harmonics, np.log(amps + 1e-12), right=np.log(1e-12)))
            amps = shifted * np.sqrt(np.sum(amps**2) / (np.sum(shifted**2) + 1e-24))  # same loudness
        t = np.arange(end - ref) / rate
        gain = level[ref:end] / level[ref]
        if rng.random() < 0.5:
            high, low = rng.uniform(3000.0, 12000.0), rng.uniform(500.0, 4000.0)
            cutoff = low + (high - low) * np.exp(-t / rng.uniform(0.3, 3.0))
        else:
            cutoff = np.full(len(t), np.inf)
        phases = rng.uniform(0, 2 * np.pi, len(harmonics))
        synth = np.zeros(len(t))
        for k, amp, phase in zip(harmonics, amps, phases, strict=True):
            filt = 1.0 / np.sqrt(1.0 + (k * f0 / cutoff) ** 4)
            synth += amp * filt * np.cos(2 * np.pi * k * f0 * t + phase)
        ramp = np.ones(len(t))
        ramp[:fade] = np.linspace(0.0, 1.0, fade)
        ramp[len(t) - fade :] = np.minimum(ramp[len(t) - fade :], np.linspace(1.0, 0.0, fade))
        out[ref:end] = ramp * synth * gain + (1 - ramp) * source[ref:end]
    return out.astype(np.float32)


def _sloped_noise(n: int, rate: int, db_per_octave: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise [shape=(n,), dtype=float64] whose level changes by ``db_per_octave`` (0: white,
    -3: pink, -6: brown), with nothing under 20 Hz.

    The cut keeps a falling slope from piling its power under the audible band, where a stated level
    would no longer be the level heard (brown noise over 1/f^2 down to the first FFT bin puts about
    99 % of its power under 20 Hz in a 4 s clip).
    """
    freqs = np.fft.rfftfreq(n, 1.0 / rate)
    spectrum = np.fft.rfft(rng.standard_normal(n)) * (freqs >= 20.0)
    octaves = np.log2(np.maximum(freqs, 20.0) / 1000.0)
    return np.fft.irfft(spectrum * 10 ** (db_per_octave * octaves / 20), n)


def add_noise(y: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
    """White, pink or brown noise at 15-45 dB SNR (tape hiss, room tone, preamp noise)."""
    pink_slope = -10 * np.log10(2.0)  # 1/f power: -3 dB per octave
    noise = _sloped_noise(len(y), rate, pink_slope * rng.integers(0, 3), rng)  # white, pink or brown
    signal_rms = np.sqrt(np.mean(y**2)) + 1e-12
    noise_rms = np.sqrt(np.mean(noise**2)) + 1e-12
    snr_db = rng.uniform(15.0, 45.0)
    return (y + noise * (signal_rms / noise_rms) * 10 ** (-snr_db / 20)).astype(np.float32)


def noise_only(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Noise with no instrument in it: hiss, rumble, room tone or tape, to teach a classifier what is
    no instrument (``TrainConfig.noise_outliers``).

    Parameters
    ----------
    n : int
        Samples.
    rate : int
        Sample rate (Hz).
    rng : np.random.Generator

    Returns
    -------
    np.ndarray [shape=(n,), dtype=float32]
        Gaussian noise with a spectral slope of -9 to +3 dB per octave (brown to bluer than white),
        coloured further by ``equalize``, its level wobbling by up to +-50 % at 0.2-3 Hz, at -60 to
        -20 dB RMS.
    """
    noise = equalize(_sloped_noise(n, rate, rng.uniform(-9.0, 3.0), rng), rate, rng).astype(np.float64)
    wobble = 2 * np.pi * rng.uniform(0.2, 3.0) * np.arange(n) / rate + rng.uniform(0, 2 * np.pi)
    noise *= 1.0 + rng.uniform(0.0, 0.5) * np.sin(wobble)
    rms = np.sqrt(np.mean(noise**2)) + 1e-12
    return (noise * 10 ** (rng.uniform(-60.0, -20.0) / 20) / rms).astype(np.float32)


def equalize(y: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A random smooth EQ curve: a spectral tilt plus 1-3 peaks or dips of up to +-12 dB.

    Different microphones, rooms and sample libraries colour the same instrument differently.
    """
    n = len(y)
    freqs = np.fft.rfftfreq(n, 1.0 / rate)
    octaves = np.log2(np.maximum(freqs, 20.0) / 1000.0)  # octaves from 1 kHz
    gain_db = rng.uniform(-3.0, 3.0) * octaves  # tilt in dB per octave
    for _ in range(rng.integers(1, 4)):
        center = rng.uniform(np.log2(60 / 1000), np.log2(8000 / 1000))
        width = rng.uniform(0.3, 1.5)  # octaves
        gain_db += rng.uniform(-12.0, 12.0) * np.exp(-0.5 * ((octaves - center) / width) ** 2)
    return np.fft.irfft(np.fft.rfft(y) * 10 ** (gain_db / 20), n).astype(np.float32)


def low_pass(y: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A Butterworth low-pass at 1.5-8 kHz (log-uniform), 12 or 24 dB per octave.

    Sample libraries and microphones differ most in how fast the upper harmonics fall: the bowed
    strings of one library measured here lose 15-25 dB more by the 8th-10th harmonic than another's
    (a sampler's filter, a darker microphone). A tilt of a few dB per octave does not cover that.
    """
    cutoff = float(np.exp(rng.uniform(np.log(1500.0), np.log(min(8000.0, 0.45 * rate)))))
    sos = butter(int(rng.choice([2, 4])), cutoff, btype="lowpass", fs=rate, output="sos")
    return sosfilt(sos, y).astype(np.float32)


def reverberate(y: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Convolve with a synthetic room: exponentially decaying noise, RT60 0.2-1.5 s, 10-60 % wet."""
    rt60 = rng.uniform(0.2, 1.5)
    length = int(rt60 * rate)
    t = np.arange(length) / rate
    impulse = rng.standard_normal(length) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    impulse[: int(0.005 * rate)] *= np.linspace(0, 1, int(0.005 * rate))  # no click at the onset
    impulse /= np.sqrt(np.sum(impulse**2)) + 1e-12
    wet = fftconvolve(y, impulse)[: len(y)]
    mix = rng.uniform(0.1, 0.6)
    dry_rms = np.sqrt(np.mean(y**2)) + 1e-12
    wet_rms = np.sqrt(np.mean(wet**2)) + 1e-12
    return ((1 - mix) * y + mix * wet * dry_rms / wet_rms).astype(np.float32)


def pitch_shift(y: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Up to +-1 semitone by resampling (pitch and speed together, like a tape off speed): tunings differ."""
    factor = 2 ** (rng.uniform(-1.0, 1.0) / 12)
    return soxr.resample(y, rate, rate / factor, quality="HQ").astype(np.float32)


def band_limit(y: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Down to 8, 11.025 or 16 kHz and back: archives recorded or stored at low rates lack the top octave."""
    low = int(rng.choice([8000, 11025, 16000]))
    return soxr.resample(soxr.resample(y, rate, low), low, rate).astype(np.float32)[: len(y)]


def mix_in(y: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add ``other`` (another instrument) 12-25 dB under ``y``: bleed and accompaniment."""
    if len(other) < len(y):
        other = np.pad(other, (0, len(y) - len(other)))
    start = rng.integers(0, len(other) - len(y) + 1)
    piece = other[start : start + len(y)]
    y_rms = np.sqrt(np.mean(y**2)) + 1e-12
    other_rms = np.sqrt(np.mean(piece**2)) + 1e-12
    return (y + piece * (y_rms / other_rms) * 10 ** (-rng.uniform(12.0, 25.0) / 20)).astype(np.float32)


@dataclass(frozen=True)
class AugmentConfig:
    """Probability of each augmentation per augmented copy, and how many copies each file gets.

    Attributes
    ----------
    variants : int
        Augmented copies cached per training file (besides the clean one).
    wavetable, clean, pitch, eq, low_pass, reverb, noise, band_limit, mix : float
        Probability that a copy gets that augmentation (applied in this order).
    """

    variants: int = 2
    wavetable: float = 0.4
    clean: float = 0.4
    pitch: float = 0.5
    eq: float = 0.8
    low_pass: float = 0.4
    reverb: float = 0.5
    noise: float = 0.5
    band_limit: float = 0.2
    mix: float = 0.3

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AugmentConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown augmentation settings: {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)

    @classmethod
    def parse(cls, spec: str) -> AugmentConfig:
        """From the CLI: ``default``, ``none``, or ``default,-reverb,-mix`` (leave some out)."""
        names = [s.strip() for s in spec.split(",") if s.strip()]
        if names == ["none"]:
            return cls(variants=0)
        if not names or names[0] != "default":
            raise ValueError(f"--augment takes 'none', 'default' or 'default,-NAME,...'; got {spec!r}")
        values = asdict(cls())
        for name in names[1:]:
            key = name.removeprefix("-").replace("-", "_")
            if not name.startswith("-") or key not in AUGMENTATION_NAMES:
                known = ", ".join(AUGMENTATION_NAMES)
                raise ValueError(f"unknown augmentation {name!r}; use -NAME with NAME in {known}")
            values[key] = 0.0
        return cls(**values)


AUGMENTATIONS: dict[str, Callable[[np.ndarray, int, np.random.Generator], np.ndarray]] = {
    "wavetable": wavetable_sustains,
    "clean": clean_harmonics,
    "pitch": pitch_shift,
    "eq": equalize,
    "low_pass": low_pass,
    "reverb": reverberate,
    "noise": add_noise,
    "band_limit": band_limit,
}
AUGMENTATION_NAMES: tuple[str, ...] = (*AUGMENTATIONS, "mix")  # mix needs another clip, so it is applied apart


def augment_clip(
    y: np.ndarray,
    rate: int,
    config: AugmentConfig,
    rng: np.random.Generator,
    other: Callable[[], np.ndarray] | None = None,
) -> np.ndarray:
    """One augmented copy of ``y``; ``other()`` supplies a clip of another label for ``mix``."""
    out = y
    for name, fn in AUGMENTATIONS.items():
        if rng.random() < getattr(config, name):
            out = fn(out, rate, rng)
    if other is not None and rng.random() < config.mix:
        out = mix_in(out, other(), rng)
    peak = float(np.abs(out).max()) if out.size else 0.0
    return out / peak * 0.9 if peak > 1.0 else out
