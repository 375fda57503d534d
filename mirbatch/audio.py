"""Decoding: encoded bytes or files -> mono float32 at the model's sample rate.

libsndfile (through soundfile) reads WAV, FLAC, OGG/Vorbis, OGG/Opus, MP3, AIFF and more; what it
cannot open, FFmpeg (through PyAV) decodes: M4A (AAC, ALAC), AAC, WMA, as music libraries keep them,
and the first audio stream of a video file (MP4, MOV, MKV, MXF, ...), as broadcasters keep it.
soxr resamples with a proper band-limited filter. Audio is read, downmixed and resampled block by block
and handed on in chunks (``decode_chunks``), so memory holds one block and a chunk or two, never
the whole input.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import soundfile as sf
import soxr

if TYPE_CHECKING:
    import av  # imported where used: 0.1 s that files libsndfile reads never need

__all__ = [
    "MEDIA_EXTENSIONS",
    "AudioChunk",
    "DecodeError",
    "DecodedAudio",
    "decode",
    "decode_chunks",
    "to_mono",
    "resample",
]

# File name endings listed when a source is a directory (explicit files are always tried).
MEDIA_EXTENSIONS: frozenset[str] = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".w64", ".caf"}
    | {".m4a", ".aac", ".wma"}  # through FFmpeg
    # Video containers, through FFmpeg: their first audio stream (broadcast and web archives keep
    # their sound there). Not .ts: as often TypeScript as MPEG transport streams.
    | {
        ".mp4",
        ".m4v",
        ".mov",
        ".mkv",
        ".webm",
        ".avi",
        ".mxf",
        ".mts",
        ".m2ts",
        ".mpg",
        ".mpeg",
        ".wmv",
        ".flv",
        ".3gp",
    }
)
_SUPPORTED = (
    "WAV, FLAC, OGG, Opus, MP3, AIFF, M4A (AAC, ALAC), AAC, WMA, and the audio of video files "
    "(MP4, MOV, MKV, WebM, AVI, MXF, MPEG, WMV)"
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
    if block.shape[1] == 1:
        return np.ascontiguousarray(block[:, 0], dtype=np.float32)
    # A matrix-vector product: several times faster than ``mean(axis=1)`` over a short axis.
    weights = np.full(block.shape[1], 1.0 / block.shape[1], dtype=np.float32)
    return np.asarray(block, dtype=np.float32) @ weights


def resample(y: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Resample mono ``y`` [shape=(n,)] with soxr's high-quality filter (what librosa uses by default)."""
    if orig_rate == target_rate:
        return y.astype(np.float32, copy=False)
    return soxr.resample(y, orig_rate, target_rate, quality="HQ").astype(np.float32, copy=False)


class _FFmpegReader:
    """The part of ``soundfile.SoundFile`` that ``decode_chunks`` reads, for what libsndfile cannot
    open: the first audio stream of a container, decoded by FFmpeg (PyAV) as packed float32."""

    def __init__(self, container: av.container.InputContainer) -> None:
        import av

        self._container = container
        stream = container.streams.audio[0]
        self.samplerate = int(stream.codec_context.sample_rate)
        self.channels = int(stream.codec_context.channels)
        self._frames = container.decode(stream)
        # Packed float32 in the stream's own layout, whatever each frame's sample format.
        self._to_float = av.AudioResampler(format="flt", layout=stream.codec_context.layout)
        self._pending: list[np.ndarray] = []
        self._n_pending = 0
        self._ended = False

    def read(self, frames: int, dtype: str = "float32", always_2d: bool = True) -> np.ndarray:
        """Up to ``frames`` frames [shape=(n, channels), dtype=float32]; none at the end. A stream
        that breaks off (a truncated download) ends where the damage starts."""
        import av

        while self._n_pending < frames and not self._ended:
            try:
                frame = next(self._frames)
            except (StopIteration, av.error.FFmpegError):
                self._ended = True
                break
            for packed in self._to_float.resample(frame):
                block = packed.to_ndarray().reshape(-1, self.channels)
                self._pending.append(block)
                self._n_pending += len(block)
        joined = np.concatenate(self._pending) if self._pending else np.zeros((0, self.channels), np.float32)
        out, rest = joined[:frames], joined[frames:]
        self._pending, self._n_pending = ([rest] if len(rest) else []), len(rest)
        return out

    def __enter__(self) -> _FFmpegReader:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._container.close()


def _open_ffmpeg(handle: str | BinaryIO) -> _FFmpegReader | str:
    """``handle`` opened by FFmpeg when it holds an audio stream, else why not (FFmpeg's words)."""
    import av

    if not isinstance(handle, str):
        handle.seek(0)  # libsndfile read some of it
    try:
        container = av.open(handle, mode="r")
    except av.error.FFmpegError as exc:
        return str(exc.strerror or exc)
    except (OSError, ValueError) as exc:
        return str(exc)
    if not container.streams.audio or container.streams.audio[0].codec_context.channels < 1:
        container.close()
        return "no audio stream in it"
    return _FFmpegReader(container)


def _open(source: bytes | str | Path | BinaryIO) -> sf.SoundFile | _FFmpegReader:
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
    except sf.LibsndfileError:
        reader = _open_ffmpeg(handle)
        if isinstance(reader, str):
            # FFmpeg's reason, the last decoder's: libsndfile's can mislead (a damaged MP3 opened by
            # path reads "File does not exist or is not a regular file").
            raise DecodeError(f"not a readable audio file ({reader}); supported: {_SUPPORTED}") from None
        return reader
    except (OSError, RuntimeError) as exc:
        raise DecodeError(f"cannot open audio: {exc}") from None


def _salvage(f: sf.SoundFile, position: int, channels: int) -> np.ndarray:
    """Re-read from ``position`` in small steps up to the first damage: the frames a failed large
    read would have lost [shape=(n, channels)]."""
    pieces: list[np.ndarray] = []
    try:
        f.seek(position)
        while True:
            block = f.read(4096, dtype="float32", always_2d=True)
            if len(block) == 0:
                break
            pieces.append(block)
    except (sf.LibsndfileError, RuntimeError):
        pass
    return np.concatenate(pieces) if pieces else np.zeros((0, channels), np.float32)


@dataclass(frozen=True)
class AudioChunk:
    """One piece of a decoded stream (``decode_chunks``).

    Attributes
    ----------
    index : int
        0, 1, ... in stream order.
    samples : np.ndarray [shape=(n,), dtype=float32]
        Mono samples at the target rate; every chunk but the last holds exactly the chunk length.
    last : bool
        Whether this is the stream's final chunk.
    source_rate, channels : int
        Of the input.
    duration_s : float
        Input duration decoded so far (the whole file's on the last chunk).
    """

    index: int
    samples: np.ndarray
    last: bool
    source_rate: int
    channels: int
    duration_s: float


def decode_chunks(
    source: bytes | str | Path | BinaryIO, target_rate: int = 22050, chunk_samples: int | None = None
) -> Iterator[AudioChunk]:
    """Decode to mono float32 at ``target_rate`` in chunks of ``chunk_samples`` output samples.

    Memory holds one read block and at most two chunks, however long the input: a 60-minute file is
    never whole in memory. ``chunk_samples`` None yields one chunk with everything.

    Raises
    ------
    DecodeError
        Before the first chunk, when the input is empty, not audio or holds no samples. A file
        truncated after some audio yields what decoded before the damage.
    """
    with _open(source) as f:
        source_rate, channels = int(f.samplerate), int(f.channels)
        if source_rate <= 0 or channels <= 0:
            raise DecodeError(f"invalid header: {source_rate} Hz, {channels} channels")
        stream = None
        if source_rate != target_rate:
            stream = soxr.ResampleStream(source_rate, target_rate, 1, "float32", "HQ")
        pending: list[np.ndarray] = []
        n_pending = 0
        n_in = 0
        index = 0
        held: np.ndarray | None = None  # a full chunk kept back until we know whether it is the last

        def info(samples: np.ndarray, last: bool) -> AudioChunk:
            return AudioChunk(index, samples, last, source_rate, channels, n_in / source_rate)

        done = damaged = False
        while not done:
            if damaged:
                block = np.zeros((0, channels), np.float32)
            else:
                try:
                    block = f.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)
                except sf.LibsndfileError as exc:
                    # Truncated or corrupt: keep what decodes before the damage.
                    assert isinstance(f, sf.SoundFile)  # FFmpeg's reader ends at damage by itself
                    block, damaged = _salvage(f, n_in, channels), True
                    if n_in == 0 and len(block) == 0:
                        raise DecodeError(f"unreadable audio data ({exc.error_string.rstrip('.')})") from None
            if len(block) == 0:
                done = True
                if n_in == 0:
                    raise DecodeError("the file holds no audio samples")
                out = stream.resample_chunk(np.zeros(0, np.float32), last=True) if stream else None
            else:
                n_in += len(block)
                mono = to_mono(block)
                if not np.isfinite(mono).all():
                    # Float files can carry NaN/inf; zero them before the resampler smears them around.
                    mono = np.nan_to_num(mono, nan=0.0, posinf=0.0, neginf=0.0)
                out = mono if stream is None else stream.resample_chunk(mono)
            if out is not None and len(out):
                pending.append(np.asarray(out, dtype=np.float32))
                n_pending += len(out)
            while chunk_samples and n_pending >= chunk_samples and not (done and n_pending == chunk_samples):
                joined = np.concatenate(pending)
                piece, rest = joined[:chunk_samples], joined[chunk_samples:]
                pending, n_pending = ([rest] if len(rest) else []), len(rest)
                if held is not None:
                    yield info(held, False)
                    index += 1
                held = piece
        tail = np.concatenate(pending) if pending else np.zeros(0, np.float32)
        if held is not None and len(tail) == 0:
            yield info(np.ascontiguousarray(held), True)
            return
        if held is not None:
            yield info(held, False)
            index += 1
        yield info(np.ascontiguousarray(tail), True)


def decode(source: bytes | str | Path | BinaryIO, target_rate: int = 22050) -> DecodedAudio:
    """Decode an audio file to mono float32 at ``target_rate`` (whole; see ``decode_chunks`` for
    long inputs).

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
    chunks = list(decode_chunks(source, target_rate))
    last = chunks[-1]
    samples = np.concatenate([c.samples for c in chunks]) if len(chunks) > 1 else last.samples
    return DecodedAudio(
        samples=np.ascontiguousarray(samples, dtype=np.float32),
        sample_rate=target_rate,
        source_rate=last.source_rate,
        channels=last.channels,
        duration_s=last.duration_s,
    )
