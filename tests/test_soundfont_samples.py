"""scripts/soundfont_samples.py on the SoundFonts that render the training data."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from mirbatch.datasets.render import resolve_library

SCRIPT = Path(__file__).parents[1] / "scripts" / "soundfont_samples.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("soundfont_samples", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_timgm6mb_plays_its_violin_cycles_for_viola_and_fluidr3_does_not() -> None:
    script = _script()
    timgm = script.label_samples(Path(resolve_library("timgm6mb").path))
    fluid = script.label_samples(Path(resolve_library("fluidr3").path))
    # TimGM6mb: viola is its violin samples, each a few tens of ms around loops of a cycle or so.
    assert timgm["viola"].keys() == timgm["violin"].keys() and len(timgm["violin"]) == 8
    assert all(h.seconds < 0.05 and h.loop_seconds < 0.003 for h in timgm["violin"].values())
    # FluidR3: recorded strings of about a second, every label on samples of its own.
    assert not fluid["viola"].keys() & fluid["violin"].keys()
    assert all(h.seconds > 0.5 and h.rate == 44100 for h in fluid["violin"].values())
    assert all(fluid[label] for label in fluid)  # every taxonomy label has a GM preset there


def test_a_file_that_is_not_a_soundfont_is_refused(tmp_path: Path) -> None:
    not_sf2 = tmp_path / "x.sf2"
    not_sf2.write_bytes(b"RIFF\x04\x00\x00\x00WAVE")
    with pytest.raises(ValueError, match="not a SoundFont 2 file"):
        _script().read_tables(not_sf2)
