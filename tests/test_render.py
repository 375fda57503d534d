"""Rendering training data from the GM sample libraries: layout, ranges, determinism."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from mirbatch.cli import main
from mirbatch.datasets.layouts import clip_records
from mirbatch.datasets.render import RenderConfig, RenderError, plan_clips, render_dataset, resolve_library
from mirbatch.taxonomy import DEFAULT_LABELS, instrument


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.wav"))}


def test_plan_is_deterministic_and_in_range() -> None:
    config = RenderConfig("fluidr3", per_class=20, seed=3)
    plans = plan_clips(config)
    assert plans == plan_clips(config)
    assert plans != plan_clips(RenderConfig("fluidr3", per_class=20, seed=4))
    assert len(plans) == 20 * len(DEFAULT_LABELS)
    kinds = {p.kind for p in plans}
    assert kinds == {"note", "phrase"}
    for plan in plans:
        inst = instrument(plan.label)
        assert plan.program in inst.programs
        assert all(inst.low <= n.pitch <= inst.high for n in plan.notes)
        assert all(1 <= n.velocity <= 127 for n in plan.notes)
    # Adding clips keeps the existing ones: clip i depends on (seed, label, i) only.
    assert plan_clips(RenderConfig("fluidr3", per_class=5, seed=3, labels=("oboe",))) == [
        p for p in plans if p.label == "oboe" and p.index < 5
    ]


def test_render_layout_and_determinism(tmp_path: Path) -> None:
    config = RenderConfig("timgm6mb", per_class=2, seed=9, labels=("piano", "flute", "tuba"))
    render_dataset(config, tmp_path / "a")
    render_dataset(config, tmp_path / "b")
    first = _digests(tmp_path / "a")
    assert first == _digests(tmp_path / "b")
    assert sorted(first) == sorted(
        f"{label}/timgm6mb_{label}_{i:05d}_p{p.program:03d}.wav"
        for label in ("piano", "flute", "tuba")
        for i, p in enumerate(x for x in plan_clips(config) if x.label == label)
    )
    meta = json.loads((tmp_path / "a" / "render.json").read_text())
    assert meta["library"] == "timgm6mb" and meta["seed"] == 9
    assert len((tmp_path / "a" / "clips.jsonl").read_text().splitlines()) == 6
    for wav in (tmp_path / "a").rglob("*.wav"):
        y, rate = sf.read(wav)
        assert rate == 22050
        assert 0.3 < len(y) / rate < 12.0
        assert 0.001 < np.abs(y).max() <= 1.0  # the clip holds sound


def test_clips_a_library_plays_no_sample_for_are_named_not_written(tmp_path: Path) -> None:
    # FluidR3_GM's contrabass has no sample over key 57; the double bass's range reaches 62. Clip 15
    # of seed 1 is one note at key 60: it comes out silent, and silence is no double bass.
    out = tmp_path / "fluidr3"
    stale = out / "double_bass" / "fluidr3_double_bass_00015_p043.wav"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left by an earlier render")
    result = CliRunner().invoke(
        main,
        ["data", "render", "--soundfont", "fluidr3", "--out", str(out), "--per-class", "16", "--seed", "1",
         "--labels", "double_bass"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "rendered 15 clips of 1 label to" in result.output
    assert "left out 1 clip with no sound (nothing over -80 dBFS), double_bass 1 (key 60): the library" in result.output
    assert not stale.exists()
    assert len(list((out / "double_bass").glob("*.wav"))) == 15
    assert [r["index"] for r in clip_records(out)] == [i for i in range(16) if i != 15]
    assert json.loads((out / "render.json").read_text())["silent_clips"] == ["double_bass/" + stale.name]
    for wav in (out / "double_bass").glob("*.wav"):
        assert np.abs(sf.read(wav)[0]).max() > 1e-3


def test_different_seed_renders_different_audio(tmp_path: Path) -> None:
    labels = ("violin",)
    render_dataset(RenderConfig("fluidr3", per_class=2, seed=1, labels=labels), tmp_path / "a")
    render_dataset(RenderConfig("fluidr3", per_class=2, seed=2, labels=labels), tmp_path / "b")
    assert set(_digests(tmp_path / "a").values()).isdisjoint(_digests(tmp_path / "b").values())


def test_freepats_renders_with_timidity_and_skips_missing_programs(tmp_path: Path) -> None:
    config = RenderConfig("freepats", per_class=1, seed=0, labels=("viola", "cello", "double_bass"))
    rendered = render_dataset(config, tmp_path)
    assert [p.label for p in rendered.clips] == ["cello"]  # freepats has no viola (41) or double bass (43)
    (wav,) = (tmp_path / "cello").glob("*.wav")
    y, _ = sf.read(wav)
    onset = np.nonzero(np.abs(y) > 0.05 * np.abs(y).max())[0][0]
    assert onset < 0.05 * 22050  # TiMidity must keep leading silence or clips would be cut late


def test_unknown_library_says_what_to_do() -> None:
    with pytest.raises(RenderError, match="fluidr3, timgm6mb, freepats"):
        resolve_library("no-such-font")


def _centroid(y: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(y))
    return float((np.fft.rfftfreq(len(y), 1 / rate) * spectrum).sum() / spectrum.sum())


def test_varied_render_darkens_the_filtered_clips_and_keeps_the_notes(tmp_path: Path) -> None:
    plain = RenderConfig("fluidr3", per_class=6, seed=7, labels=("violin", "trumpet"))
    varied = RenderConfig("fluidr3", per_class=6, seed=7, labels=("violin", "trumpet"), vary=True)
    plans = render_dataset(varied, tmp_path / "varied").clips
    render_dataset(plain, tmp_path / "plain")
    assert [p.notes for p in plans] == [p.notes for p in plan_clips(plain)]  # same music, other synthesizer
    darker = [p for p in plans if p.variation is not None and p.variation.filter_cents < -3000]
    assert darker, "seed 7 draws some strongly filtered clips"
    for plan in darker:
        relative = Path(plan.label) / plan.file_name("fluidr3")
        y_varied, rate = sf.read(tmp_path / "varied" / relative)
        y_plain, _ = sf.read(tmp_path / "plain" / relative)
        assert _centroid(y_varied, rate) < 0.85 * _centroid(y_plain, rate)
    records = [json.loads(line) for line in (tmp_path / "varied" / "clips.jsonl").read_text().splitlines()]
    assert all(set(r["variation"]) == {"filter_cents", "filter_q_cb", "vibrato_cents"} for r in records)
    assert json.loads((tmp_path / "varied" / "render.json").read_text())["vary"] is True


def test_vary_needs_a_soundfont(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match="SoundFont"):
        render_dataset(RenderConfig("freepats", per_class=1, labels=("flute",), vary=True), tmp_path)
