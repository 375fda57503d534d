"""scripts/split_by_file.py: a folder-per-label data set split per label by file into two folders."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import soundfile as sf

from mirbatch.datasets.layouts import load_dataset


def _data(root: Path, counts: dict[str, int]) -> Path:
    for label, n in counts.items():
        (root / label).mkdir(parents=True)
        for i in range(n):
            sf.write(str(root / label / f"{label}-{i}.wav"), np.zeros(800, dtype="float32"), 8000)
        (root / label / "notes.txt").write_text("not audio")
    return root


def test_each_label_splits_in_halves_and_no_file_lands_twice(
    tmp_path: Path, load_script: Callable[[str], ModuleType]
) -> None:
    split_by_file = load_script("split_by_file").split_by_file
    data = _data(tmp_path / "data", {"flute": 9, "tuba": 4, "piano": 1})
    counts = split_by_file(data, tmp_path / "a", tmp_path / "b", seed=3)
    assert counts == {"flute": (4, 5), "piano": (0, 1), "tuba": (2, 2)}
    for label in counts:
        first = {p.name for p in (tmp_path / "a" / label).iterdir()}
        second = {p.name for p in (tmp_path / "b" / label).iterdir()}
        assert not first & second
        assert first | second == {p.name for p in (data / label).glob("*.wav")}
        assert all((tmp_path / "a" / label / name).resolve().parent == (data / label).resolve() for name in first)
    # Both sides load as data sets; the same seed gives the same split, another seed another one.
    assert len(load_dataset(tmp_path / "b")) == 8
    assert split_by_file(data, tmp_path / "a", tmp_path / "b", seed=3) == counts
    other = tmp_path / "c"
    split_by_file(data, other, tmp_path / "d", seed=4)
    assert {p.name for p in (other / "flute").iterdir()} != {p.name for p in (tmp_path / "a" / "flute").iterdir()}


def test_a_count_per_label_caps_the_first_part_and_another_split_is_refused(
    tmp_path: Path, load_script: Callable[[str], ModuleType]
) -> None:
    split_by_file = load_script("split_by_file").split_by_file
    data = _data(tmp_path / "data", {"flute": 9, "tuba": 4})
    assert split_by_file(data, tmp_path / "a", tmp_path / "b", seed=0, per_label=3) == {"flute": (3, 6), "tuba": (2, 2)}
    with pytest.raises(SystemExit, match="another split"):
        split_by_file(data, tmp_path / "a", tmp_path / "b", seed=1, per_label=3)
