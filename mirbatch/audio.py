"""Decoding: encoded bytes or files -> mono float32 at the model's sample rate.

libsndfile (through soundfile) reads WAV, FLAC, OGG/Vorbis, OGG/Opus, MP3, AIFF and more; soxr
resamples with a proper band-limited filter. Audio is read, downmixed and resampled block by block,
so memory holds the mono output plus one block, never the whole multichannel input.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

__all__ = ["AUDIO_EXTENSIONS", "DecodeError", "DecodedAudio", "decode", "to_mono", "resample"]

# File name endings listed when a source is a directory (explicit files are always tried).
AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".w64", ".caf"}
)

_BLOCK_FRAMES = 1 << 18  # ~6 s at 44.1 kHz per read: bounded memory for any channel count


class DecodeError(Exception):
    """An input could not be decoded; ``reason`` says why in words a user can act on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class DecodedAudio:
    """Decoded audio and what the input was.

    Attributes
    ----------
    samples : np.ndarray [shape=(n,), dtype=float32]
        Mono signal at ``sample_rate``.
    sample_rate : int
        Rate of ``samples`` (the model's rate).
    source_rate : int
        Sample rate of the input.
    channels : int
        Channel count of the input.
    duration_s : float
        Duration of the input in seconds.
    """

    samples: np.ndarray
    sample_rate: int
    source_rate: int
    channels: int
    duration_s: float


def to_mono(block: np.ndarray) -> np.ndarray:
    """Average channels: ``block`` [shape=(n, channels)] -> [shape=(n,)], float32."""
    if block.ndim == 1:
        return block.astype(np.float32, copy=False)
    return block.mean(axis=1, dtype=np.float32)


def resample(y: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Resample mono ``y`` [shape=(n,)] with soxr's high-quality filter (what librosa uses by default)."""
    if orig_rate == target_rate:
        return y.astype(np.float32, copy=False)
    return soxr.resample(y, orig_rate, target_rate, quality="HQ").astype(np.float32, copy=False)


def _open(source: bytes | str | Path | BinaryIO) -> sf.SoundFile:
    if isinstance(source, bytes):
        if not source:
            raise DecodeError("empty file (0 bytes)")
        handle: str | BinaryIO = io.BytesIO(source)
    elif isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_file() and path.stat().st_size == 0:
            raise DecodeError("empty file (0 bytes)")
        handle = str(path)
    else:
        handle = source
    try:
        return sf.SoundFile(handle)
    except sf.LibsndfileError as exc:
        raise DecodeError(
            f"not a readable audio file ({exc.error_string.rstrip('.')}); supported: WAV, FLAC, OGG, Opus, MP3, AIFF"
        ) from None
    except (OSError, RuntimeError) as exc:
        raise DecodeError(f"cannot open audio: {exc}") from None


def decode(source: bytes | str | Path | BinaryIO, target_rate: int = 22050) -> DecodedAudio:
    """Decode an audio file to mono float32 at ``target_rate``.

    Parameters
    ----------
    source : bytes, path or binary file object
        The encoded audio.
    target_rate : int
        Output sample rate in Hz.

    Returns
    -------
    DecodedAudio

    Raises
    ------
    DecodeError
        When the input is empty, not audio, truncated beyond reading, or holds no samples.
    """
    with _open(source) as f:
        source_rate, channels = int(f.samplerate), int(f.channels)
        if source_rate <= 0 or channels <= 0:
            raise DecodeError(f"invalid header: {source_rate} Hz, {channels} channels")
        stream = None
        if source_rate != target_rate:
            stream = soxr.ResampleStream(source_rate, target_rate, 1, "float32", "HQ")
        pieces: list[np.ndarray] = []
        n_in = 0
        try:
            while True:
                block = f.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)
                if len(block) == 0:
                    break
                n_in += len(block)
                mono = to_mono(block)
                if not np.isfinite(mono).all():
                    # Float files can carry NaN/inf; zero them before the resampler smears them around.
                    mono = np.nan_to_num(mono, nan=0.0, posinf=0.0, neginf=0.0)
                pieces.append(mono if stream is None else stream.resample_chunk(mono))
        except sf.LibsndfileError as exc:
            if n_in == 0:
                raise DecodeError(f"unreadable audio data ({exc.error_string.rstrip('.')})") from None
            # A truncated file: keep what decoded before the damage.
        if stream is not None:
            pieces.append(stream.resample_chunk(np.zeros(0, np.float32), last=True))
    if n_in == 0:
        raise DecodeError("the file holds no audio samples")
    samples = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
    return DecodedAudio(
        samples=np.ascontiguousarray(samples, dtype=np.float32),
        sample_rate=target_rate,
        source_rate=source_rate,
        channels=channels,
        duration_s=n_in / source_rate,
    )
