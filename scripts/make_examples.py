"""Render the bundled example clips: one short TimGM6mb clip per taxonomy label, in assorted formats.

The default model is trained on all three libraries, TimGM6mb included, but on other clips (seed 7
here, seed 1 there), so the demo shows it working in-library on clips it never heard.
Usage: python scripts/make_examples.py examples
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from mirbatch.audio import resample
from mirbatch.datasets.render import RenderConfig, render_dataset

# (extension, soundfile format, subtype, sample rate, channels): every decoder path the demo can show.
FORMATS = [
    ("wav", "WAV", "PCM_16", 22050, 1),
    ("flac", "FLAC", "PCM_16", 44100, 2),
    ("ogg", "OGG", "VORBIS", 48000, 1),
    ("mp3", "MP3", "MPEG_LAYER_III", 44100, 2),
]


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        rendered = render_dataset(RenderConfig("timgm6mb", per_class=1, seed=7, phrase_fraction=1.0), Path(tmp))
        for i, plan in enumerate(rendered.clips):
            y, rate = sf.read(Path(tmp) / plan.label / plan.file_name("timgm6mb"), dtype="float32")
            ext, fmt, subtype, target_rate, channels = FORMATS[i % len(FORMATS)]
            y = resample(y[: int(3.0 * rate)], rate, target_rate)
            y = y / max(1e-6, float(np.abs(y).max())) * 0.5
            data = np.stack([y] * channels, axis=1) if channels > 1 else y
            sf.write(out / f"{plan.label}.{ext}", data, target_rate, format=fmt, subtype=subtype)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "examples"))
