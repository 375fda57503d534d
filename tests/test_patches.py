"""Patch sets: what training caches and eval scores, on files written by soundfile."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mirbatch.augment import AugmentConfig
from mirbatch.datasets.layouts import LabelledFile
from mirbatch.features import MelConfig
from mirbatch.patches import build_patch_set

RATE = 22050


def _tone(f0: float, seconds: float, level: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    partials = np.stack([np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6)])
    return (level * partials.sum(axis=0)).astype(np.float32)


def test_silent_and_undecodable_files_are_left_out_and_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(0)
    files = {
        "violin/tone.wav": _tone(440.0, 2.0, 0.3),
        "violin/zeros.wav": np.zeros(2 * RATE, np.float32),
        # 16-bit dither: +-1 LSB of noise, which the -80 dBFS floor must count as silence.
        "flute/dither.wav": (rng.integers(-1, 2, 2 * RATE) / 32768).astype(np.float32),
        "flute/quiet.wav": _tone(660.0, 1.5, 10 ** (-50 / 20)),  # quiet, but sound
    }
    for name, y in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        sf.write(tmp_path / name, y, RATE, subtype="PCM_16")
    (tmp_path / "flute" / "junk.wav").write_bytes(b"not audio at all")
    listed = [LabelledFile(str(tmp_path / name), name.split("/")[0]) for name in [*files, "flute/junk.wav"]]
    labels = ("flute", "violin")

    with caplog.at_level(logging.WARNING, logger="mirbatch.patches"):
        patches = build_patch_set(listed, labels, MelConfig(), AugmentConfig(variants=2), seed=3)

    assert [Path(f.path).name for f in patches.files] == ["tone.wav", "quiet.wav"]
    skipped = {Path(r.args[0]).name: r.getMessage() for r in caplog.records}  # type: ignore[index, arg-type]
    assert set(skipped) == {"zeros.wav", "dither.wav", "junk.wav"}
    assert "no sound (nothing over -80 dBFS): not an example of violin" in skipped["zeros.wav"]
    assert "not an example of flute" in skipped["dither.wav"]
    assert {Path(path).name for path, _ in patches.skipped} == set(skipped)  # what eval reports
    # Every patch belongs to a kept file, carries that file's label, and each file has its clean
    # patches and both augmented copies.
    assert patches.owner.min() == 0 and patches.owner.max() == 1
    expected = np.array([labels.index(f.label) for f in patches.files])[patches.owner]
    np.testing.assert_array_equal(patches.targets.numpy(), expected)
    for i in range(2):
        assert set(patches.variant[patches.owner == i].tolist()) == {0, 1, 2}
    assert len(patches.file_stats) == 2
    assert (patches.weights()[patches.variant == 0] > 0).all()  # steady tones: every clean patch counts


def test_a_chunk_of_silence_only_is_an_error_that_says_so(tmp_path: Path) -> None:
    sf.write(tmp_path / "zeros.wav", np.zeros(RATE, np.float32), RATE)
    with pytest.raises(ValueError, match=r"none of the data-set files.*no sound"):
        build_patch_set([LabelledFile(str(tmp_path / "zeros.wav"), "violin")], ("violin",), MelConfig())
