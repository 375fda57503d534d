"""scripts/soundfont_samples.py on the SoundFonts that render the training data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from mirbatch.datasets.render import resolve_library


def test_timgm6mb_plays_its_violin_cycles_for_viola_and_fluidr3_does_not(
    load_script: Callable[[str], ModuleType],
) -> None:
    script = load_script("soundfont_samples")
    timgm = script.label_samples(Path(resolve_library("timgm6mb").path))
    fluid = script.label_samples(Path(resolve_library("fluidr3").path))
    # TimGM6mb: viola is its violin samples, each a few tens of ms around loops of a cycle or so.
    assert timgm["viola"].keys() == timgm["violin"].keys() and len(timgm["violin"]) == 8
    assert all(h.seconds < 0.05 and h.loop_seconds < 0.003 for h in timgm["violin"].values())
    # FluidR3: recorded strings of about a second, every label on samples of its own.
    assert not fluid["viola"].keys() & fluid["violin"].keys()
    assert all(h.seconds > 0.5 and h.rate == 44100 for h in fluid["violin"].values())
    assert all(fluid[label] for label in fluid)  # every taxonomy label has a GM preset there


def test_a_file_that_is_not_a_soundfont_is_refused(tmp_path: Path, load_script: Callable[[str], ModuleType]) -> None:
    not_sf2 = tmp_path / "x.sf2"
    not_sf2.write_bytes(b"RIFF\x04\x00\x00\x00WAVE")
    with pytest.raises(ValueError, match="not a SoundFont 2 file"):
        load_script("soundfont_samples").read_tables(not_sf2)
