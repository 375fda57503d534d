"""Features: batched torch log-mel spectrograms cut into fixed-length patches.

The functional core (``mel_filterbank``, ``mel_power``, ``power_to_db``, ``frame_patches``) mirrors
librosa's ``feature.melspectrogram`` + ``power_to_db`` (checked in ``tests/test_librosa_compat.py``);
``Featurizer`` wraps them into the module a model actor runs, on whatever device the model is on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import librosa
import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "MelConfig",
    "FEATURES",
    "feature_config_from_dict",
    "mel_filterbank",
    "mel_power",
    "power_to_db",
    "patch_starts",
    "PatchBatch",
    "Featurizer",
]


@dataclass(frozen=True)
class MelConfig:
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

    @property
    def patch_samples(self) -> int:
        return round(self.patch_s * self.sample_rate)

    @property
    def patch_frames(self) -> int:
        """STFT frames in one patch (centered frames, as librosa counts them)."""
        return 1 + self.patch_samples // self.hop_length

    @property
    def patch_hop_frames(self) -> int:
        return max(1, round(self.patch_hop_s * self.sample_rate / self.hop_length))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MelConfig:
        known = {f.name for f in fields(cls) if f.init}
        unknown = set(d) - known - {"name"}
        if unknown:
            raise ValueError(f"unknown mel feature settings: {sorted(unknown)}")
        kwargs = {k: v for k, v in d.items() if k in known}
        if "input_size" in kwargs:
            kwargs["input_size"] = tuple(int(v) for v in kwargs["input_size"])
        return cls(**kwargs)


FEATURES: dict[str, type[MelConfig]] = {"mel": MelConfig}


def feature_config_from_dict(d: dict[str, Any]) -> MelConfig:
    """Rebuild a feature config from its ``to_dict`` form (the ``name`` key picks the kind)."""
    name = d.get("name", "mel")
    if name not in FEATURES:
        raise ValueError(f"unknown feature kind {name!r}; known: {', '.join(FEATURES)}")
    return FEATURES[name].from_dict(d)


def mel_filterbank(config: MelConfig) -> torch.Tensor:
    """Slaney mel filterbank [shape=(n_mels, 1 + n_fft // 2)], librosa's own definition."""
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


class Featurizer(torch.nn.Module):
    """Clips -> normalized log-mel patches, on the device the module is moved to.

    Each patch is converted to dB against its own peak (``ref=max``), so the level of a recording
    does not change its features, then mapped from [-top_db, 0] dB to [0, 1] and resized.
    """

    filterbank: torch.Tensor
    window: torch.Tensor

    def __init__(self, config: MelConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("filterbank", mel_filterbank(config), persistent=False)
        self.register_buffer("window", torch.hann_window(config.n_fft, periodic=True), persistent=False)

    def resize(self, inputs: torch.Tensor) -> torch.Tensor:
        """Bilinear resize of patches [shape=(p, 1, n_mels, frames)] to the model input size."""
        return F.interpolate(inputs, size=self.config.input_size, mode="bilinear", align_corners=False)

    @torch.inference_mode()
    def forward(self, clips: list[np.ndarray], resize: bool = True) -> PatchBatch:
        """Patches of ``clips`` (mono float32 arrays at the config's rate); ``resize=False`` keeps mel x frames."""
        cfg = self.config
        device = self.filterbank.device
        mels: list[torch.Tensor] = []
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
            owner.extend([index] * len(starts))
            starts_s.extend(s * cfg.hop_length / cfg.sample_rate for s in starts)
        power = torch.cat(mels)
        peak = power.amax(dim=(-2, -1), keepdim=True)
        db = power_to_db(power, ref=peak, top_db=cfg.top_db)
        level_db = 10.0 * torch.log10(torch.clamp(peak.flatten(), min=1e-10))
        inputs = (db / cfg.top_db + 1.0).unsqueeze(1)
        return PatchBatch(
            inputs=self.resize(inputs) if resize else inputs,
            owner=np.asarray(owner, dtype=np.int64),
            start_s=np.asarray(starts_s, dtype=np.float32),
            level_db=level_db.cpu().numpy().astype(np.float32),
        )
