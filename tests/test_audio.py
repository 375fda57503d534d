"""Decoding every supported format, rate and channel layout, and rejecting what is not audio."""

from __future__ import annotations

from pathlib import Path

import av
import librosa
import numpy as np
import pytest
from conftest import sine, write_audio

from mirbatch.audio import MEDIA_EXTENSIONS, DecodeError, decode, decode_chunks

# (extension, soundfile format, subtype)
FORMATS = [
    ("wav", "WAV", "PCM_16"),
    ("wav", "WAV", "FLOAT"),
    ("flac", "FLAC", "PCM_24"),
    ("ogg", "OGG", "VORBIS"),
    ("mp3", "MP3", "MPEG_LAYER_III"),
]


def _dominant_hz(y: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.fft.rfftfreq(len(y), 1 / rate)[spectrum.argmax()])


@pytest.mark.parametrize(("ext", "fmt", "subtype"), FORMATS)
@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000])
def test_formats_and_rates_decode_to_mono_22050(tmp_path: Path, ext: str, fmt: str, subtype: str, rate: int) -> None:
    y = sine(440.0, 1.5, rate)
    path = write_audio(tmp_path / f"tone.{ext}", np.stack([y, y], axis=1), rate, format=fmt, subtype=subtype)
    audio = decode(path)
    assert audio.sample_rate == 22050
    assert audio.source_rate == rate
    assert audio.channels == 2
    assert audio.samples.dtype == np.float32 and audio.samples.ndim == 1
    # Lossy codecs add encoder delay/padding (MP3 up to ~50 ms); the length must still be close.
    assert abs(audio.duration_s - 1.5) < 0.08
    assert abs(len(audio.samples) / 22050 - audio.duration_s) < 2 / rate + 1e-3
    assert abs(_dominant_hz(audio.samples, 22050) - 440.0) < 3.0


@pytest.mark.parametrize("rate", [96000, 192000])
@pytest.mark.parametrize("channels", [1, 6, 8])
def test_high_rates_and_many_channels(tmp_path: Path, rate: int, channels: int) -> None:
    y = sine(1000.0, 1.0, rate)
    data = np.stack([y] * channels, axis=1) if channels > 1 else y
    audio = decode(write_audio(tmp_path / "multi.flac", data, rate))
    assert audio.channels == channels and audio.source_rate == rate
    assert len(audio.samples) == pytest.approx(22050, abs=2)
    assert abs(_dominant_hz(audio.samples, 22050) - 1000.0) < 3.0
    # Energy is kept: the resampler passes a 1 kHz tone at unit gain.
    assert np.abs(audio.samples[2000:-2000]).max() == pytest.approx(0.5, abs=0.01)


def _encode_with_ffmpeg(path: Path, codec: str, container: str, data: np.ndarray, rate: int) -> Path:
    """Write ``data`` [shape=(channels, n)] with one of FFmpeg's encoders (libsndfile has none of these)."""
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout="stereo" if len(data) == 2 else "mono")
        assert isinstance(stream, av.AudioStream)
        if codec != "alac":
            stream.bit_rate = 256_000  # at FFmpeg's default AAC's joint stereo moves level between channels
        _mux_audio(out, stream, data, rate, step=2048 if codec == "wmav2" else 1024)  # the encoders' frame sizes
    return path


def _mux_audio(
    out: av.container.OutputContainer, stream: av.AudioStream, data: np.ndarray, rate: int, step: int
) -> None:
    """Encode ``data`` [shape=(channels, n)] into ``stream``, ``step`` samples a frame, and flush it."""
    for start in range(0, data.shape[1], step):
        piece = np.ascontiguousarray(data[:, start : start + step], dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(piece, format="fltp", layout=stream.layout)
        frame.sample_rate, frame.pts = rate, start
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)


# (file name, FFmpeg encoder, container): what music libraries keep besides the formats above.
FFMPEG_FORMATS = [
    ("tone.m4a", "aac", "ipod"),
    ("lossless.m4a", "alac", "ipod"),
    ("tone.aac", "aac", "adts"),
    ("tone.wma", "wmav2", "asf"),
]


@pytest.mark.parametrize(("name", "codec", "container"), FFMPEG_FORMATS)
def test_what_libsndfile_cannot_open_ffmpeg_decodes(tmp_path: Path, name: str, codec: str, container: str) -> None:
    y = sine(440.0, 1.5, 48000)
    path = _encode_with_ffmpeg(tmp_path / name, codec, container, np.stack([y, 0.5 * y]), 48000)
    assert path.suffix in MEDIA_EXTENSIONS  # so folders list them
    audio = decode(path)
    assert (audio.source_rate, audio.channels, audio.sample_rate) == (48000, 2, 22050)
    assert abs(audio.duration_s - 1.5) < 0.08  # AAC's encoder delay and padding, as for MP3
    assert abs(_dominant_hz(audio.samples, 22050) - 440.0) < 3.0
    assert np.abs(audio.samples[2000:-2000]).max() == pytest.approx(0.375, abs=0.02)  # the two channels' mean
    if codec == "alac":  # lossless: the very samples, resampled
        reference = decode(write_audio(tmp_path / "same.wav", np.stack([y, 0.5 * y], axis=1), 48000, subtype="FLOAT"))
        np.testing.assert_allclose(audio.samples, reference.samples, atol=1e-4)
    # Streamed in chunks as long files are, from bytes as archive members and S3 objects come.
    chunks = list(decode_chunks(path.read_bytes(), 22050, chunk_samples=8000))
    assert [len(c.samples) for c in chunks[:-1]] == [8000] * (len(chunks) - 1) and chunks[-1].last
    np.testing.assert_array_equal(np.concatenate([c.samples for c in chunks]), audio.samples)


def _write_video(path: Path, audio_codec: str | None, data: np.ndarray, rate: int) -> Path:
    """A video file: 2 s of MPEG-4 video, and ``data`` [shape=(n,)] in one ``audio_codec`` stream
    (none when None), as a broadcaster's or a phone's files hold their sound."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("mpeg4", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        sound = out.add_stream(audio_codec, rate=rate, layout="mono") if audio_codec else None
        assert sound is None or isinstance(sound, av.AudioStream)
        if sound is not None and audio_codec == "aac":
            sound.bit_rate = 256_000  # FFmpeg's default AAC rate for mono overshoots a 0.5 sine to 0.84
        for i in range(50):
            picture = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 5, np.uint8), format="rgb24")
            for packet in video.encode(picture):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
        if sound is not None:
            _mux_audio(out, sound, data[None], rate, step=1024)
    return path


@pytest.mark.parametrize(("name", "codec"), [("clip.mp4", "aac"), ("clip.mov", "alac"), ("clip.mkv", "flac")])
def test_the_sound_of_a_video_file_is_decoded(tmp_path: Path, name: str, codec: str) -> None:
    path = _write_video(tmp_path / name, codec, sine(440.0, 2.0, 48000), 48000)
    assert path.suffix in MEDIA_EXTENSIONS  # so folders list them
    audio = decode(path)
    assert (audio.source_rate, audio.channels) == (48000, 1)
    assert abs(audio.duration_s - 2.0) < 0.08
    assert abs(_dominant_hz(audio.samples, 22050) - 440.0) < 3.0
    assert np.abs(audio.samples[2000:-2000]).max() == pytest.approx(0.5, abs=0.02)


def test_a_video_file_without_sound_says_so(tmp_path: Path) -> None:
    with pytest.raises(DecodeError, match=r"not a readable audio file \(no audio stream in it\)"):
        decode(_write_video(tmp_path / "silent.mp4", None, np.zeros(0, np.float32), 48000))


def test_a_truncated_aac_stream_keeps_what_decodes(tmp_path: Path) -> None:
    path = _encode_with_ffmpeg(tmp_path / "long.aac", "aac", "adts", sine(440.0, 4.0, 44100)[None], 44100)
    cut = tmp_path / "cut.aac"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    audio = decode(cut)
    assert 1.5 < audio.duration_s < 2.5 and abs(_dominant_hz(audio.samples, 22050) - 440.0) < 3.0


def test_downmix_averages_channels(tmp_path: Path) -> None:
    left = sine(440.0, 1.0)
    data = np.stack([left, -left], axis=1)  # opposite phase: the mono mix cancels
    audio = decode(write_audio(tmp_path / "cancel.wav", data, 22050, subtype="FLOAT"))
    assert np.abs(audio.samples).max() < 1e-6


def test_resampling_matches_librosa_load(tmp_path: Path) -> None:
    # Both use soxr HQ; block-wise streaming resampling must equal librosa's one-shot call.
    rng = np.random.default_rng(0)
    y = (rng.standard_normal(44100 * 3) * 0.1).astype(np.float32)
    path = write_audio(tmp_path / "noise.wav", y, 44100, subtype="FLOAT")
    ours = decode(path).samples
    ref, _ = librosa.load(path, sr=22050, mono=True)
    assert len(ours) == len(ref)
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_bytes_and_path_agree(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "a.flac", sine(330.0, 0.5, 44100), 44100)
    np.testing.assert_array_equal(decode(path).samples, decode(path.read_bytes()).samples)


def test_nan_and_inf_samples_are_zeroed(tmp_path: Path) -> None:
    y = sine(440.0, 1.0)
    y[100:200] = np.nan
    y[5000] = np.inf
    audio = decode(write_audio(tmp_path / "nan.wav", y, 22050, subtype="FLOAT"))
    assert np.isfinite(audio.samples).all()


@pytest.mark.parametrize(
    ("content", "name", "reason"),
    [
        (b"", "bad.wav", "empty file"),
        (b"\x00\x01garbage" * 100, "bad.wav", "not a readable audio file (Invalid data"),
        # libsndfile, handed this path, says "File does not exist or is not a regular file".
        (b"\x00\x01garbage" * 100, "bad.mp3", "not a readable audio file (Invalid data"),
        (b"this is a text file\n" * 50, "bad.flac", "not a readable audio file ("),
        (b"\x89PNG\r\n\x1a\n" + bytes(200), "bad.wav", "not a readable audio file (no audio stream in it)"),
    ],
)
def test_undecodable_input_raises_one_typed_error(tmp_path: Path, content: bytes, name: str, reason: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    for source in (path, content):
        with pytest.raises(DecodeError) as info:
            decode(source)
        assert info.value.reason.startswith(reason)
        assert "does not exist" not in info.value.reason


def test_truncated_flac_keeps_what_decodes(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "long.flac", sine(440.0, 4.0, 44100), 44100)
    data = path.read_bytes()
    cut = tmp_path / "cut.flac"
    cut.write_bytes(data[: len(data) // 2])
    try:
        audio = decode(cut)
    except DecodeError as exc:  # libsndfile may refuse outright; then the reason must say so
        assert "audio" in exc.reason
    else:
        assert 0.5 < len(audio.samples) / 22050 < 4.0


def test_header_only_wav_has_no_samples(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "empty.wav", np.zeros(0, np.float32), 22050)
    with pytest.raises(DecodeError, match="no audio samples"):
        decode(path)
