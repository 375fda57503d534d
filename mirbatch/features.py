"""Features: batched torch log-mel spectrograms and wavelet scalograms cut into fixed-length patches.

The functional core (``mel_filterbank``, ``mel_power``, ``power_to_db``, ``frame_patches``) mirrors
librosa's ``feature.melspectrogram`` + ``power_to_db`` (checked in ``tests/test_librosa_compat.py``);
``Featurizer`` wraps them into the module a model actor runs, on whatever device the model is on.
``harmonic_levels`` reads each frame's pitch and the levels of its harmonics: with
``MelConfig.harmonics`` set, those rows travel under the log-mel rows of every patch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "FeatureConfig",
    "ScalogramConfig",
    "ScalogramFeaturizer",
    "bin_means",
    "check_pitch_shifts",
    "cwt_magnitude",
    "make_featurizer",
    "resize_patches",
    "shift_pitch",
    "shifts_key",
    "wavelet_context",
    "wavelet_spectrum",
    "MelConfig",
    "FEATURES",
    "NO_SOUND",
    "SILENT_DBFS",
    "full_scale_level_db",
    "feature_config_from_dict",
    "HARMONIC_F0_RANGE",
    "HARMONIC_N_FFT",
    "harmonic_levels",
    "mel_filterbank",
    "mel_power",
    "power_to_db",
    "patch_starts",
    "PatchBatch",
    "Featurizer",
]


class _PatchFeatures:
    """What every feature config shares: 1 s patches at a sample rate, and a dict round trip."""

    sample_rate: int
    patch_s: float
    input_size: tuple[int, int]

    @property
    def patch_samples(self) -> int:
        return round(self.patch_s * self.sample_rate)

    @property
    def harmonic_rows(self) -> int:
        """Rows under the spectral ones that are not a spectrum (``MelConfig.harmonics``): none here."""
        return 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)  # type: ignore[call-overload]
        d["input_size"] = list(self.input_size)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Any:
        known = {f.name for f in fields(cls) if f.init}  # type: ignore[arg-type]
        unknown = set(d) - known - {"name"}
        if unknown:
            raise ValueError(f"unknown {cls.__name__} settings: {sorted(unknown)}")
        kwargs = {k: v for k, v in d.items() if k in known}
        if "input_size" in kwargs:
            kwargs["input_size"] = tuple(int(v) for v in kwargs["input_size"])
        return cls(**kwargs)


@dataclass(frozen=True)
class MelConfig(_PatchFeatures):
    """Log-mel patches as in the seed CNN paper.

    Attributes
    ----------
    sample_rate, n_fft, hop_length, n_mels : int
        STFT and mel parameters (22,050 Hz, 2048, 512, 96 per DESIGN.md).
    fmin : float
    fmax : float or None
        Mel band edges in Hz (None: Nyquist).
    top_db : float
        Dynamic range kept below each patch's peak.
    patch_s : float
        Patch length in seconds.
    patch_hop_s : float
        Distance between patch starts in seconds.
    input_size : tuple of int
        (height, width) the patches are resized to for the model.
    harmonics : int
        0, or rows of harmonic levels under the mel rows: the levels of harmonics 1..``harmonics``
        of each frame's pitch (``harmonic_levels``), then one row for the pitch itself. They are
        read per harmonic number, so one instrument's rows look alike at every note.
    """

    name: str = field(default="mel", init=False)
    sample_rate: int = 22050
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 96
    fmin: float = 0.0
    fmax: float | None = None
    top_db: float = 80.0
    patch_s: float = 1.0
    patch_hop_s: float = 0.5
    input_size: tuple[int, int] = (150, 150)
    harmonics: int = 0

    @property
    def harmonic_rows(self) -> int:
        """Rows of harmonic levels and pitch under the mel rows (0 without ``harmonics``)."""
        return self.harmonics + 1 if self.harmonics else 0

    @property
    def patch_frames(self) -> int:
        """STFT frames in one patch (centered frames, as librosa counts them)."""
        return 1 + self.patch_samples // self.hop_length

    @property
    def patch_hop_frames(self) -> int:
        return max(1, round(self.patch_hop_s * self.sample_rate / self.hop_length))

    @property
    def native_size(self) -> tuple[int, int]:
        """(rows, columns) of an unresized patch: mel bands (and harmonic rows) x STFT frames."""
        return (self.n_mels + self.harmonic_rows, self.patch_frames)


@dataclass(frozen=True)
class ScalogramConfig(_PatchFeatures):
    """Wavelet scalogram patches as in the one-shot Siamese paper.

    Attributes
    ----------
    wavelet : str
        ``morse`` (generalized Morse, the default) or ``morlet`` (PyWavelets' complex Morlet ``cmorB-C``).
    gamma, beta : float
        Morse parameters (3 and 20: MATLAB's default).
    morlet_bandwidth, morlet_center : float
        ``B`` and ``C`` of ``cmorB-C``.
    fmin, fmax : float
        Centre frequencies of the lowest and highest scale in Hz (log-spaced in between). ``fmax``
        None takes the highest centre whose wavelet has decayed under 1e-6 of its peak at Nyquist
        (about 6.5 kHz for Morse 3/20 at 22,050 Hz): a wavelet cut off by Nyquist rings for
        thousands of samples and is no longer the wavelet it claims to be.
    n_freqs : int
        Number of scales (rows).
    time_bins : int
        Columns per patch: the magnitude is averaged over ``patch_samples / time_bins`` samples.
    top_db : float
        Dynamic range kept under each patch's peak (magnitude in dB, 20 log10).
    patch_s, patch_hop_s : float
    input_size : tuple of int
    """

    name: str = field(default="scalogram", init=False)
    sample_rate: int = 22050
    wavelet: str = "morse"
    gamma: float = 3.0
    beta: float = 20.0
    morlet_bandwidth: float = 1.5
    morlet_center: float = 1.0
    fmin: float = 32.7
    fmax: float | None = None
    n_freqs: int = 96
    time_bins: int = 112
    top_db: float = 80.0
    patch_s: float = 1.0
    patch_hop_s: float = 0.5
    input_size: tuple[int, int] = (224, 224)

    @property
    def patch_hop_samples(self) -> int:
        return max(1, round(self.patch_hop_s * self.sample_rate))

    @property
    def native_size(self) -> tuple[int, int]:
        """(rows, columns) of an unresized patch: scales x time bins."""
        return (self.n_freqs, self.time_bins)

    def frequencies(self) -> np.ndarray:
        """Centre frequency of each row in Hz [shape=(n_freqs,)], low to high."""
        return np.geomspace(self.fmin, self.highest_frequency(), self.n_freqs)

    def highest_frequency(self) -> float:
        """``fmax``, or the highest centre (in Hz) whose wavelet is under 1e-6 at Nyquist."""
        if self.fmax is not None:
            return self.fmax
        nyquist = self.sample_rate / 2
        for center in np.geomspace(nyquist, self.fmin, 2000):
            probe = _scaled_wavelets(self, np.array([center / self.sample_rate]), np.array([0.5]))
            if probe[0, 0] < 1e-6:
                return float(center)
        raise ValueError(f"no {self.wavelet} wavelet above {self.fmin} Hz fits under Nyquist")

    def rows_per_octave(self) -> float:
        """Rows per octave of the log-spaced scales (12.4 at the defaults: about one per semitone)."""
        return (self.n_freqs - 1) / float(np.log2(self.highest_frequency() / self.fmin))


FeatureConfig = MelConfig | ScalogramConfig

FEATURES: dict[str, type[MelConfig] | type[ScalogramConfig]] = {"mel": MelConfig, "scalogram": ScalogramConfig}


def feature_config_from_dict(d: dict[str, Any]) -> FeatureConfig:
    """Rebuild a feature config from its ``to_dict`` form (the ``name`` key picks the kind)."""
    name = d.get("name", "mel")
    if name not in FEATURES:
        raise ValueError(f"unknown feature kind {name!r}; known: {', '.join(FEATURES)}")
    config: FeatureConfig = FEATURES[name].from_dict(d)
    return config


def mel_filterbank(config: MelConfig) -> torch.Tensor:
    """Slaney mel filterbank [shape=(n_mels, 1 + n_fft // 2)], librosa's own definition."""
    import librosa  # here, not at module level: its import costs a second in every worker that loads this

    fb = librosa.filters.mel(
        sr=config.sample_rate, n_fft=config.n_fft, n_mels=config.n_mels, fmin=config.fmin, fmax=config.fmax
    )
    return torch.from_numpy(fb.astype(np.float32))


def mel_power(y: torch.Tensor, filterbank: torch.Tensor, window: torch.Tensor, config: MelConfig) -> torch.Tensor:
    """Mel power spectrogram of mono ``y`` [shape=(n,)] -> [shape=(n_mels, frames)].

    Centered frames with zero padding and a periodic Hann window, like librosa >= 0.10.
    """
    spec = torch.stft(
        y,
        n_fft=config.n_fft,
        hop_length=config.hop_length,
        window=window,
        center=True,
        pad_mode="constant",
        return_complex=True,
    )
    power = spec.real.square() + spec.imag.square()
    return filterbank @ power


def power_to_db(
    power: torch.Tensor, ref: torch.Tensor | float = 1.0, amin: float = 1e-10, top_db: float | None = 80.0
) -> torch.Tensor:
    """``10 * log10(power / ref)`` floored at ``top_db`` under the maximum of the last two axes.

    Same as ``librosa.power_to_db`` applied to each [..., n_mels, frames] matrix on its own.
    """
    log_spec = 10.0 * torch.log10(torch.clamp(power, min=amin))
    ref_t = torch.as_tensor(ref, dtype=power.dtype, device=power.device)
    log_spec = log_spec - 10.0 * torch.log10(torch.clamp(ref_t, min=amin))
    if top_db is not None:
        peak = log_spec.amax(dim=(-2, -1), keepdim=True)
        log_spec = torch.maximum(log_spec, peak - top_db)
    return log_spec


HARMONIC_N_FFT = 4096  # 5.4 Hz bins at 22,050 Hz: the harmonics of a 55 Hz tone stand 10 bins apart
HARMONIC_F0_RANGE = (55.0, 1760.0)  # Hz, the pitch candidates: 5 octaves in thirds of a semitone
_F0_STEPS_PER_OCTAVE = 36
_SALIENCE_HARMONICS = 10
_SALIENCE_DECAY = 0.8
_PEAK_HALF_WIDTH = 3  # bins: a harmonic's level is the largest magnitude within 16 Hz of its frequency
_QUIET_DB = 40.0  # frames this far under their patch's loudest carry no harmonic rows


def harmonic_levels(magnitude: torch.Tensor, sample_rate: int, harmonics: int) -> torch.Tensor:
    """Each frame's pitch and the levels of its harmonics.

    The pitch is the candidate (``HARMONIC_F0_RANGE``, a third of a semitone apart) whose first 10
    harmonics hold the most compressed magnitude, weighted 0.8 ** (k - 1) (subharmonic summation).
    A harmonic's level is the largest magnitude within 3 bins of its frequency, in dB under the
    frame's loudest harmonic. Read per harmonic number, these rows are what held notes of one
    instrument share across its range and across sample libraries: an RBF-SVM on them heard 14 of
    40 TimGM6mb violins and 29 cellos right after training on FluidR3_GM and freepats only, where
    log-mel CNNs heard 0-5 (README, cross-library results).

    Parameters
    ----------
    magnitude : torch.Tensor [shape=(1 + HARMONIC_N_FFT // 2, frames)]
        STFT magnitude of a ``HARMONIC_N_FFT``-point transform.
    sample_rate : int
    harmonics : int
        Harmonics whose levels are read.

    Returns
    -------
    torch.Tensor [shape=(harmonics + 1, frames)]
        Rows 0..harmonics-1: the level of harmonic k + 1, mapped from [-80, 0] dB to [0, 1] (0
        where it lies above 95 % of Nyquist); last row: log2(pitch / 55 Hz) / 5, in [0, 1].
    """
    n_bins = magnitude.shape[0]
    bin_hz = sample_rate / (2 * (n_bins - 1))
    peaks = F.max_pool1d(magnitude.T.unsqueeze(1), 2 * _PEAK_HALF_WIDTH + 1, 1, _PEAK_HALF_WIDTH).squeeze(1).T
    low, high = HARMONIC_F0_RANGE
    candidates = low * 2.0 ** (np.arange(round(np.log2(high / low) * _F0_STEPS_PER_OCTAVE) + 1) / _F0_STEPS_PER_OCTAVE)
    multiples = np.arange(1, _SALIENCE_HARMONICS + 1)
    partials = candidates[:, None] * multiples[None, :]
    weights = np.where(partials < sample_rate / 2, _SALIENCE_DECAY ** (multiples - 1.0), 0.0)
    bins = torch.from_numpy(np.minimum(np.round(partials / bin_hz), n_bins - 1).astype(np.int64)).to(peaks.device)
    salience = (peaks.sqrt()[bins] * torch.from_numpy(weights).to(peaks)[:, :, None]).sum(1)  # (candidates, frames)
    f0 = torch.from_numpy(candidates).to(peaks)[salience.argmax(0)]
    orders = torch.arange(1, harmonics + 1, device=peaks.device, dtype=peaks.dtype)[:, None]
    harmonic_hz = orders * f0[None, :]
    level = torch.gather(peaks, 0, torch.clamp(torch.round(harmonic_hz / bin_hz).long(), max=n_bins - 1))
    level_db = 20.0 * torch.log10(torch.clamp(level, min=1e-10))
    level_db = torch.clamp(level_db - level_db.amax(0, keepdim=True), min=-80.0)
    rows = torch.where(harmonic_hz < 0.95 * sample_rate / 2, level_db / 80.0 + 1.0, torch.zeros_like(level_db))
    pitch = torch.log2(f0 / low) / np.log2(high / low)
    return torch.cat([rows, pitch[None, :]])


def patch_starts(n_frames: int, patch_frames: int, hop_frames: int) -> list[int]:
    """Start frames of patches covering ``n_frames``.

    Patches start every ``hop_frames``; when more than half a hop is left uncovered at the end, one
    more patch is aligned to the end.
    """
    if n_frames <= patch_frames:
        return [0]
    starts = list(range(0, n_frames - patch_frames + 1, hop_frames))
    if n_frames - (starts[-1] + patch_frames) > hop_frames // 2:
        starts.append(n_frames - patch_frames)
    return starts


@dataclass(frozen=True)
class PatchBatch:
    """Model inputs for a batch of clips.

    Attributes
    ----------
    inputs : torch.Tensor [shape=(patches, 1, height, width)]
        Log-mel patches mapped to [0, 1], resized to the model input (or n_mels x frames unresized).
    owner : np.ndarray [shape=(patches,), dtype=int64]
        Index of the clip each patch came from.
    start_s : np.ndarray [shape=(patches,), dtype=float32]
        Patch start within its clip, in seconds.
    level_db : np.ndarray [shape=(patches,), dtype=float32]
        Peak mel power of each patch in dB (absolute): tells silent patches apart.
    """

    inputs: torch.Tensor
    owner: np.ndarray
    start_s: np.ndarray
    level_db: np.ndarray


def resize_patches(inputs: torch.Tensor, config: FeatureConfig) -> torch.Tensor:
    """Bilinear resize of patches [shape=(p, 1, rows, columns)] to ``config.input_size``."""
    if tuple(inputs.shape[-2:]) == tuple(config.input_size):
        return inputs
    return F.interpolate(inputs, size=config.input_size, mode="bilinear", align_corners=False)


def shifts_key(shifts: Sequence[int]) -> str:
    """A set of support shifts as text (and checkpoint metrics key): ``(0, -12, 12)`` -> ``"-12,0,12"``."""
    return ",".join(str(k) for k in sorted(shifts))


def check_pitch_shifts(shifts: Sequence[int], config: FeatureConfig) -> None:
    """Refuse a set of support pitch shifts (semitones) that ``shift_pitch`` cannot apply.

    A set must be distinct shifts including 0 (every example is enrolled as it is), and any shift
    but 0 needs log-spaced rows (scalogram features; mel rows are not). Raises ``ValueError``.
    """
    listed = shifts_key(shifts)
    if 0 not in shifts or len(set(shifts)) != len(shifts):
        raise ValueError(f"support shifts {listed} must be distinct semitones and include 0")
    if set(shifts) != {0} and not isinstance(config, ScalogramConfig):
        raise ValueError(
            f"pitch shifts {listed} need log-frequency rows (scalogram features), not {config.name}; "
            "use support shifts 0 with mel models"
        )


def shift_pitch(inputs: torch.Tensor, semitones: int, config: FeatureConfig) -> torch.Tensor:
    """Transpose unresized scalogram patches by moving their rows.

    Scalogram rows are log-spaced, so a pitch shift is a shift along the rows (with the spectral
    envelope moving along, as when a sampler replays one recording at other keys). Rows moved in
    from outside the patch are silent (0, the floor).

    Parameters
    ----------
    inputs : torch.Tensor [shape=(p, 1, rows, columns)]
        Unresized patches in [0, 1], row 0 the lowest scale.
    semitones : int
        Positive shifts up.
    config : FeatureConfig
        The patches' features; mel rows are not log-spaced, so mel patches are refused (but for 0).

    Returns
    -------
    torch.Tensor [shape=(p, 1, rows, columns)]
    """
    if semitones == 0:
        return inputs
    check_pitch_shifts((0, semitones), config)
    assert isinstance(config, ScalogramConfig)  # for the type checker: mel was refused above
    rows = round(semitones * config.rows_per_octave() / 12)
    if rows == 0:
        return inputs
    shifted = torch.zeros_like(inputs)
    if abs(rows) < inputs.shape[2]:
        if rows > 0:
            shifted[:, :, rows:] = inputs[:, :, :-rows]
        else:
            shifted[:, :, :rows] = inputs[:, :, -rows:]
    return shifted


def _patch_batch(
    power: torch.Tensor,
    owner: list[int],
    starts_s: list[float],
    config: FeatureConfig,
    resize: bool,
    harmonic: torch.Tensor | None = None,
) -> PatchBatch:
    """Power patches [shape=(p, rows, columns)] -> a ``PatchBatch``: each patch in dB against its own
    peak, floored ``top_db`` under it, mapped onto [0, 1]; the peak itself kept as the patch level.

    ``harmonic`` [shape=(p, harmonic rows, columns)] (``harmonic_levels`` of the same frames) goes
    under the mel rows, zeroed on frames 40 dB or more under the patch's loudest; such patches
    are never resized (their rows are not a picture)."""
    peak = power.amax(dim=(-2, -1), keepdim=True)
    db = power_to_db(power, ref=peak, top_db=config.top_db)
    level_db = 10.0 * torch.log10(torch.clamp(peak.flatten(), min=1e-10))
    inputs = (db / config.top_db + 1.0).unsqueeze(1)
    if harmonic is not None:
        if resize and tuple(config.input_size) != tuple(config.native_size):
            raise ValueError("patches with harmonic rows are not resized: give them input_size = native_size")
        loud = db.amax(dim=-2, keepdim=True) > -_QUIET_DB  # (p, 1, columns)
        inputs = torch.cat([inputs, (harmonic * loud).unsqueeze(1)], dim=2)
    return PatchBatch(
        inputs=resize_patches(inputs, config) if resize else inputs,
        owner=np.asarray(owner, dtype=np.int64),
        start_s=np.asarray(starts_s, dtype=np.float32),
        level_db=level_db.cpu().numpy().astype(np.float32),
    )


class Featurizer(torch.nn.Module):
    """Clips -> normalized log-mel patches, on the device the module is moved to.

    Each patch is converted to dB against its own peak (``ref=max``), so the level of a recording
    does not change its features, then mapped from [-top_db, 0] dB to [0, 1] and resized. With
    ``config.harmonics``, a ``HARMONIC_N_FFT``-point transform of the same frames gives each patch
    its rows of harmonic levels and pitch (``harmonic_levels``) under the mel rows.
    """

    filterbank: torch.Tensor
    window: torch.Tensor
    harmonic_window: torch.Tensor

    def __init__(self, config: MelConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("filterbank", mel_filterbank(config), persistent=False)
        self.register_buffer("window", torch.hann_window(config.n_fft, periodic=True), persistent=False)
        self.register_buffer("harmonic_window", torch.hann_window(HARMONIC_N_FFT, periodic=True), persistent=False)

    def resize(self, inputs: torch.Tensor) -> torch.Tensor:
        """Patches [shape=(p, 1, n_mels, frames)] resized to the model input."""
        return resize_patches(inputs, self.config)

    @torch.inference_mode()
    def forward(self, clips: list[np.ndarray], resize: bool = True) -> PatchBatch:
        """Patches of ``clips`` (mono float32 arrays at the config's rate); ``resize=False`` keeps mel x frames."""
        cfg = self.config
        device = self.filterbank.device
        mels: list[torch.Tensor] = []
        harmonic: list[torch.Tensor] = []
        owner: list[int] = []
        starts_s: list[float] = []
        for index, clip in enumerate(clips):
            y = torch.as_tensor(np.array(clip, dtype=np.float32), device=device)  # a copy: inputs may be read-only
            if y.numel() < cfg.patch_samples:  # short clips are padded to one full patch
                y = F.pad(y, (0, cfg.patch_samples - y.numel()))
            mel = mel_power(y, self.filterbank, self.window, cfg)
            starts = patch_starts(mel.shape[-1], cfg.patch_frames, cfg.patch_hop_frames)
            index_t = torch.tensor(starts, device=device)[:, None] + torch.arange(cfg.patch_frames, device=device)
            mels.append(mel[:, index_t].permute(1, 0, 2))  # (patches, n_mels, patch_frames)
            if cfg.harmonics:  # centred frames at the same hop: frame i of both transforms has the same centre
                spec = torch.stft(
                    y, HARMONIC_N_FFT, cfg.hop_length, window=self.harmonic_window, center=True,
                    pad_mode="constant", return_complex=True,
                )  # fmt: skip
                rows = harmonic_levels(spec.abs(), cfg.sample_rate, cfg.harmonics)
                harmonic.append(rows[:, index_t].permute(1, 0, 2))
            owner.extend([index] * len(starts))
            starts_s.extend(s * cfg.hop_length / cfg.sample_rate for s in starts)
        power = torch.cat(mels)
        return _patch_batch(power, owner, starts_s, cfg, resize, torch.cat(harmonic) if harmonic else None)


def wavelet_spectrum(config: ScalogramConfig, freqs: np.ndarray) -> np.ndarray:
    """Fourier transforms of the scaled wavelets, peak 1, at ``freqs`` (cycles per sample).

    Parameters
    ----------
    config : ScalogramConfig
    freqs : np.ndarray [shape=(bins,)]
        Non-negative frequencies in cycles per sample.

    Returns
    -------
    np.ndarray [shape=(n_freqs, bins), dtype=float64]
        Row ``k`` is the scaled wavelet whose peak sits at ``config.frequencies()[k]``. Both
        wavelets are real in frequency and vanish at negative frequencies (analytic).
    """
    return _scaled_wavelets(config, config.frequencies() / config.sample_rate, np.asarray(freqs, dtype=np.float64))


def _scaled_wavelets(config: ScalogramConfig, centers: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    """Wavelets peaking at ``centers`` (cycles per sample), evaluated at ``freqs`` (cycles per sample)."""
    f = freqs[None, :]
    if config.wavelet == "morse":
        gamma, beta = config.gamma, config.beta
        omega_peak = (beta / gamma) ** (1.0 / gamma)
        scales = omega_peak / (2 * np.pi * centers)  # in samples
        omega = scales[:, None] * 2 * np.pi * f
        with np.errstate(divide="ignore"):
            log_psi = beta * np.log(omega) - omega**gamma + (beta / gamma) * (1 + np.log(gamma) - np.log(beta))
        return np.where(omega > 0, np.exp(log_psi), 0.0)
    if config.wavelet == "morlet":
        # PyWavelets' cmorB-C: psi(t) = (pi B)^-1/2 exp(-t^2 / B) exp(2j pi C t), whose transform is
        # exp(-pi^2 B (f - C)^2); negative frequencies (under exp(-pi^2 B C^2) ~ 4e-7) are dropped.
        scales = config.morlet_center / centers
        return np.where(
            f >= 0,
            np.exp(-(np.pi**2) * config.morlet_bandwidth * (scales[:, None] * f - config.morlet_center) ** 2),
            0.0,
        )
    raise ValueError(f"unknown wavelet {config.wavelet!r}; use morse or morlet")


def wavelet_context(config: ScalogramConfig) -> int:
    """Samples of context each side of a patch so the widest (lowest) wavelet sees real audio, not padding.

    The half-width holding all but 1e-6 of the lowest-frequency wavelet's energy.
    """
    n = 1 << 18
    lowest = _scaled_wavelets(config, np.array([config.fmin / config.sample_rate]), np.fft.rfftfreq(n))[0]
    psi = np.fft.ifft(np.concatenate([lowest, np.zeros(n // 2 - 1)]))
    energy = np.abs(np.fft.fftshift(psi)) ** 2
    cumulative = np.cumsum(energy) / energy.sum()
    left = int(np.searchsorted(cumulative, 0.5e-6))
    right = int(np.searchsorted(cumulative, 1 - 0.5e-6))
    return int(max(n // 2 - left, right - n // 2)) + 1


def cwt_magnitude(segments: torch.Tensor, spectrum: torch.Tensor) -> torch.Tensor:
    """|CWT| of real ``segments`` [shape=(b, n)] -> [shape=(b, n_freqs, n)] by multiplication in frequency.

    ``spectrum`` [shape=(n_freqs, n // 2 + 1)] is ``wavelet_spectrum`` at ``rfftfreq(n)``. The
    product is placed on the positive frequencies of a full-length spectrum (analytic wavelets), so
    the inverse FFT gives the complex coefficients; the transform is circular: callers pad.
    """
    n = segments.shape[-1]
    x = torch.fft.rfft(segments, n=n)
    full = torch.zeros((segments.shape[0], spectrum.shape[0], n), dtype=x.dtype, device=segments.device)
    full[..., : n // 2 + 1] = x[:, None, :] * spectrum
    return torch.fft.ifft(full).abs()


def bin_means(values: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Means of ``values`` [shape=(..., n)] between fractional sample positions ``edges`` [shape=(..., bins + 1)].

    The leading dimensions of ``edges`` broadcast against those of ``values`` (one set of edges for
    all rows, or one per window) -> [shape=(broadcast leading dims..., bins)]. ``values`` is read as
    piecewise constant, sample ``i`` standing for ``[i - 1/2, i + 1/2)``: the value at time ``i``
    represents its neighbourhood, which keeps signals sampled at different rates aligned (a coarser
    sample covers a wider interval around the same instant).
    """
    n = values.shape[-1]
    shape = torch.broadcast_shapes(values.shape[:-1], edges.shape[:-1])
    zeros = torch.zeros((*values.shape[:-1], 1), dtype=values.dtype, device=values.device)
    cumulative = torch.cat([zeros, values.cumsum(-1)], dim=-1)  # integral up to each interval boundary
    shifted = edges + 0.5
    lower = shifted.floor().long().clamp(0, n - 1)
    fraction = (shifted - lower).to(values.dtype).expand(*shape, -1)
    index = lower.expand(*shape, -1)
    at_edges = cumulative.expand(*shape, -1).gather(-1, index) + fraction * values.expand(*shape, -1).gather(-1, index)
    width = (edges[..., 1:] - edges[..., :-1]).to(values.dtype)
    return (at_edges[..., 1:] - at_edges[..., :-1]) / width


@dataclass(frozen=True)
class _RatePlan:
    """How to transform segments of one length: rows grouped by inverse-FFT length, with their spectra."""

    groups: list[tuple[int, int, int]]  # (first row, last row + 1, inverse FFT length)
    spectra: list[torch.Tensor]  # per group: [shape=(rows, bins kept)], the wavelets' band only


class ScalogramFeaturizer(torch.nn.Module):
    """Clips -> normalized log-magnitude scalogram patches (rows low to high frequency).

    One transform serves several overlapping patches: a clip is cut into segments of up to
    ``patches_per_segment`` consecutive patches plus the wavelet context on each side, so audio
    shared by overlapping patches (and the context) is transformed once, not once per patch (2x
    less work at 50 % overlap, more with the context).

    Multi-rate: a row whose wavelet vanishes above bin ``K`` of the segment's spectrum needs only
    ``K`` complex output samples (its analytic band is ``[0, K)`` bins wide), so rows are grouped by
    the power-of-two fraction ``L = N / 2^j`` of the segment length that holds their band, and each
    group runs an inverse FFT of length ``L`` instead of ``N``. Every octave down halves the work;
    the magnitudes are then averaged over the same time bins at every rate (``bin_means``).
    """

    anchor: torch.Tensor

    def __init__(self, config: ScalogramConfig, patches_per_segment: int = 8, batch_samples: int = 1 << 20) -> None:
        super().__init__()
        self.config = config
        self.patches_per_segment = patches_per_segment
        self.batch_samples = batch_samples
        self.context = wavelet_context(config)
        # Only marks the device the module was moved to; the spectra are built there on first use.
        self.register_buffer("anchor", torch.zeros(0), persistent=False)
        self._plans: dict[tuple[int, str], _RatePlan] = {}

    def segment_length(self, patches: int) -> int:
        """Transform length for ``patches`` consecutive patches and their context: a multiple of 2^8
        (so the rates N / 2^j stay integers down to 8 octaves) with only 2, 3, 5 as prime factors."""
        cfg = self.config
        span = (patches - 1) * cfg.patch_hop_samples + cfg.patch_samples + 2 * self.context
        return 256 * _fast_length(-(-span // 256))

    def plan(self, length: int, device: torch.device) -> _RatePlan:
        """The (cached) rate groups and wavelet spectra for segments of ``length`` samples."""
        key = (length, str(device))
        if key not in self._plans:
            cfg = self.config
            spectrum = wavelet_spectrum(cfg, np.fft.rfftfreq(length))
            above = spectrum > 1e-7 * spectrum.max(axis=1, keepdims=True)
            band = np.array([np.nonzero(row)[0][-1] + 1 for row in above])  # bins each row needs
            shortest = 8 * cfg.time_bins * length // cfg.patch_samples  # >= 8 samples per time bin
            groups: list[tuple[int, int, int]] = []
            for row, need in enumerate(band):
                size = length
                while size % 2 == 0 and size // 2 >= max(2 * need, shortest):
                    size //= 2
                if groups and groups[-1][2] == size:
                    groups[-1] = (groups[-1][0], row + 1, size)
                else:
                    groups.append((row, row + 1, size))
            spectra = [
                torch.from_numpy(spectrum[first:last, : min(size, length // 2 + 1)].astype(np.float32)).to(device)
                for first, last, size in groups
            ]
            self._plans[key] = _RatePlan(groups, spectra)
        return self._plans[key]

    def resize(self, inputs: torch.Tensor) -> torch.Tensor:
        """Patches [shape=(p, 1, n_freqs, time_bins)] resized to the model input."""
        return resize_patches(inputs, self.config)

    def magnitude_bins(self, segments: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Time-binned |CWT| of patches inside ``segments``.

        Parameters
        ----------
        segments : torch.Tensor [shape=(b, N)]
            Audio, each segment holding its patches and the wavelet context around them.
        offsets : torch.Tensor [shape=(b, w), dtype=int64]
            Start sample of each of a segment's ``w`` patches within it.

        Returns
        -------
        torch.Tensor [shape=(b, w, n_freqs, time_bins)]
        """
        cfg = self.config
        n = segments.shape[-1]
        plan = self.plan(n, segments.device)
        x = torch.fft.rfft(segments, n=n)
        bin_edges = torch.arange(cfg.time_bins + 1, dtype=torch.float64) * (cfg.patch_samples / cfg.time_bins)
        edges = (offsets.double().cpu()[:, :, None, None] + bin_edges).to(segments.device)  # (b, w, 1, bins + 1)
        rows = []
        for (group_first, group_last, length), spectrum in zip(plan.groups, plan.spectra, strict=True):
            keep = spectrum.shape[1]
            # Rows in blocks of about 2^16 complex values (512 KiB): fresh 100 MB buffers per call
            # cost more in page faults (kernel time) than the FFTs themselves; this halved the time
            # per patch on a 2-core CPU and made kernel time vanish.
            step = max(1, (1 << 16) // (x.shape[0] * length))
            for first in range(0, group_last - group_first, step):
                band = x[:, None, :keep] * spectrum[first : first + step]
                # An inverse FFT of length L (``n`` zero-pads the band) samples the same analytic
                # signal at L/N of the rate; scaling by L/N keeps the full-rate amplitude.
                mag = _modulus(torch.fft.ifft(band, n=length)) * (length / n)
                rows.append(bin_means(mag[:, None], edges * (length / n)))
        return torch.cat(rows, dim=2)

    @torch.inference_mode()
    def forward(self, clips: list[np.ndarray], resize: bool = True) -> PatchBatch:
        cfg = self.config
        device = self.anchor.device
        owner: list[int] = []
        starts_s: list[float] = []
        # Segments by patch count (equal lengths batch together): (segment audio, patch offsets, patch indices).
        pending: dict[int, list[tuple[torch.Tensor, list[int], list[int]]]] = {}
        for index, clip in enumerate(clips):
            y = torch.as_tensor(np.array(clip, dtype=np.float32), device=device)
            n = max(y.numel(), cfg.patch_samples)
            starts = patch_starts(n, cfg.patch_samples, cfg.patch_hop_samples)
            first_patch = len(owner)
            owner.extend([index] * len(starts))
            starts_s.extend(s / cfg.sample_rate for s in starts)
            longest = self.segment_length(min(len(starts), self.patches_per_segment))
            # Zeros before the start and after the end; real audio everywhere else.
            padded = F.pad(y, (self.context, longest + n - y.numel()))
            for run in range(0, len(starts), self.patches_per_segment):
                run_starts = starts[run : run + self.patches_per_segment]
                length = self.segment_length(len(run_starts))
                segment = padded[run_starts[0] : run_starts[0] + length]
                offsets = [self.context + s - run_starts[0] for s in run_starts]
                patches = list(range(first_patch + run, first_patch + run + len(run_starts)))
                pending.setdefault(len(run_starts), []).append((segment, offsets, patches))
        power = torch.empty((len(owner), cfg.n_freqs, cfg.time_bins), device=device)
        for count, items in pending.items():
            per_batch = max(1, self.batch_samples // self.segment_length(count))
            for first in range(0, len(items), per_batch):
                batch = items[first : first + per_batch]
                segments = torch.stack([segment for segment, _, _ in batch])
                patch_offsets = torch.tensor([o for _, o, _ in batch], dtype=torch.int64)
                rows = torch.tensor([p for _, _, patches in batch for p in patches], device=device)
                power[rows] = self.magnitude_bins(segments, patch_offsets).flatten(0, 1).square()
        return _patch_batch(power, owner, starts_s, cfg, resize)


def _modulus(z: torch.Tensor) -> torch.Tensor:
    """``|z|`` of complex ``z``: about 3x faster on CPU than ``torch.abs``, whose overflow-safe
    ``hypot`` is not needed at audio magnitudes."""
    parts = torch.view_as_real(z)
    return torch.addcmul(parts[..., 0].square(), parts[..., 1], parts[..., 1]).sqrt_()


def _fast_length(n: int) -> int:
    """Smallest length >= n whose only prime factors are 2, 3 and 5 (fast FFT sizes)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def make_featurizer(config: FeatureConfig) -> Featurizer | ScalogramFeaturizer:
    """The featurizer module for a feature config."""
    if isinstance(config, ScalogramConfig):
        return ScalogramFeaturizer(config)
    return Featurizer(config)


SILENT_DBFS = -80.0  # a patch quieter than this (16-bit dither is) holds no instrument to name
NO_SOUND = f"no sound (nothing over {SILENT_DBFS:.0f} dBFS)"  # why a file with no such patch is no example


def full_scale_level_db(featurizer: Featurizer | ScalogramFeaturizer) -> float:
    """The patch level (``PatchBatch.level_db``) that ``featurizer`` gives a full-scale 440 Hz sine:
    levels minus this are dB re full scale (dBFS of a sine), whatever the feature kind's scale."""
    config = featurizer.config
    t = np.arange(config.patch_samples) / config.sample_rate
    tone = np.sin(2 * np.pi * 440.0 * t).astype(np.float32)
    return float(featurizer([tone], resize=False).level_db.max())
