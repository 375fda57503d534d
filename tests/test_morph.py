"""Spectral morphs between two libraries' renders of the same clips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from mirbatch.cli import main
from mirbatch.datasets.layouts import load_dataset
from mirbatch.datasets.morph import MorphConfig, MorphError, morph_datasets, morph_spectra
from mirbatch.datasets.render import RenderConfig, render_dataset
from mirbatch.training import describe_dataset

RATE = 22050
F0 = 344.53125  # bin 16 of a 1024-point FFT at 22,050 Hz: harmonics sit on bins, no leakage to model


def _tone(harmonic_db: list[float], seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (
        np.sum([10 ** (db / 20) * np.sin(2 * np.pi * F0 * k * t) for k, db in enumerate(harmonic_db, 1)], axis=0) * 0.1
    )


def _harmonic_db(y: np.ndarray) -> np.ndarray:
    middle = y[RATE // 4 : RATE // 4 + 1024 * 8] * np.hanning(1024 * 8)
    spectrum = np.abs(np.fft.rfft(middle))
    return 20 * np.log10(np.array([spectrum[16 * 8 * k] for k in range(1, 7)]))


def test_a_morph_lies_halfway_between_two_spectral_envelopes_in_db() -> None:
    bright = _tone([0, -3, -6, -9, -12, -15])
    dark = _tone([0, -12, -24, -36, -48, -60])
    halfway = _harmonic_db(morph_spectra(bright, dark, 0.5))
    expected = (_harmonic_db(bright) + _harmonic_db(dark)) / 2
    # Relative to the fundamental (the morph is rescaled to the louder input's peak). Overlapping
    # frames with mixed phases cost a little; 1.5 dB is far under the 6-22 dB between the inputs.
    np.testing.assert_allclose(halfway - halfway[0], expected - expected[0], atol=1.5)
    whole = _harmonic_db(morph_spectra(bright, dark, 1.0))
    np.testing.assert_allclose(whole - whole[0], _harmonic_db(bright) - _harmonic_db(bright)[0], atol=0.5)


def test_morphs_of_two_real_libraries_pair_clips_by_notes(tmp_path: Path) -> None:
    labels = ("flute", "viola")  # freepats has no viola: only flute pairs
    render_dataset(RenderConfig("fluidr3", per_class=3, seed=4, labels=labels), tmp_path / "fluidr3")
    render_dataset(RenderConfig("freepats", per_class=3, seed=4, labels=labels), tmp_path / "freepats")
    written = morph_datasets(tmp_path / "fluidr3", tmp_path / "freepats", tmp_path / "morph", MorphConfig(seed=1))
    assert written == 3
    assert sorted(f.label for f in load_dataset(tmp_path / "morph")) == ["flute"] * 3
    records = [json.loads(line) for line in (tmp_path / "morph" / "clips.jsonl").read_text().splitlines()]
    for record in records:
        assert 0.25 <= record["mix"] <= 0.75
        y, rate = sf.read(tmp_path / "morph" / record["path"])
        a, _ = sf.read(tmp_path / "fluidr3" / record["sources"][0])
        b, _ = sf.read(tmp_path / "freepats" / record["sources"][1])
        assert rate == RATE and len(y) == max(len(a), len(b))
        assert np.abs(y).max() == pytest.approx(max(np.abs(a).max(), np.abs(b).max()), rel=0.01)
    meta = json.loads((tmp_path / "morph" / "morph.json").read_text())
    assert meta["libraries"] == ["fluidr3", "freepats"]
    # Checkpoints name their training data by what made it.
    assert describe_dataset(tmp_path / "morph") == "morph of fluidr3 and freepats (seed 1, fluidr3 weight 0.25-0.75)"
    assert describe_dataset(tmp_path / "fluidr3") == "fluidr3 render (seed 4, 3 per label)"
    # The same seed draws the same weights: a rerun writes the same files.
    again = morph_datasets(tmp_path / "fluidr3", tmp_path / "freepats", tmp_path / "again", MorphConfig(seed=1))
    assert again == 3
    for record in records:
        assert (tmp_path / "again" / record["path"]).read_bytes() == (tmp_path / "morph" / record["path"]).read_bytes()


def test_renders_of_other_notes_are_refused(tmp_path: Path) -> None:
    render_dataset(RenderConfig("fluidr3", per_class=2, seed=1, labels=("oboe",)), tmp_path / "a")
    render_dataset(RenderConfig("fluidr3", per_class=2, seed=2, labels=("oboe",)), tmp_path / "b")
    with pytest.raises(MorphError, match="same --seed"):
        morph_datasets(tmp_path / "a", tmp_path / "b", tmp_path / "out", MorphConfig())
    result = CliRunner().invoke(main, ["data", "morph", str(tmp_path / "a"), str(tmp_path / "b"), "--out", "x"])
    assert result.exit_code == 1 and "same --seed" in result.output
    ok = CliRunner().invoke(
        main,
        ["data", "morph", str(tmp_path / "a"), str(tmp_path / "a"), "--out", str(tmp_path / "c"), "--mix", "0", "1"],
    )
    assert ok.exit_code == 0 and "morphed 2 clips" in ok.output
    with pytest.raises(MorphError, match="low <= high"):
        MorphConfig(low=0.8, high=0.2)
