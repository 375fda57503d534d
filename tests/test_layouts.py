"""Data-set layouts (folder per label, IRMAS, NSynth) on files the tests write, and the split rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import sine, write_audio

from mirbatch.datasets.layouts import (
    LabelledFile,
    detect_layout,
    load_dataset,
    split_by_file,
)


def test_folder_per_label(tmp_path: Path) -> None:
    write_audio(tmp_path / "kazoo" / "a.wav", sine(440, 0.2), 22050)
    write_audio(tmp_path / "kazoo" / "deep" / "b.flac", sine(440, 0.2), 22050)
    write_audio(tmp_path / "theremin" / "c.ogg", sine(440, 0.2), 22050)
    (tmp_path / "theremin" / "notes.txt").write_text("x")
    # What a Mac leaves in a folder or a zip it made: never audio, never a label.
    (tmp_path / "theremin" / "._c.ogg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    write_audio(tmp_path / "__MACOSX" / "theremin" / "d.wav", sine(440, 0.2), 22050)
    write_audio(tmp_path / ".trash" / "e.wav", sine(440, 0.2), 22050)
    # A label's recordings kept elsewhere and linked in count; a link back up the tree adds nothing.
    write_audio(tmp_path.parent / f"{tmp_path.name}-elsewhere" / "f.mp4", sine(440, 0.2), 22050, format="WAV")
    (tmp_path / "theremin" / "linked").symlink_to(tmp_path.parent / f"{tmp_path.name}-elsewhere")
    (tmp_path / "kazoo" / "deep" / "up").symlink_to(tmp_path / "kazoo")
    assert detect_layout(tmp_path) == "folder"
    files = load_dataset(tmp_path)
    assert sorted((Path(f.path).name, f.label) for f in files) == [
        ("a.wav", "kazoo"),
        ("b.flac", "kazoo"),
        ("c.ogg", "theremin"),
        ("f.mp4", "theremin"),  # a video file's sound, as tag reads it
    ]
    assert [f.label for f in load_dataset(tmp_path, labels=("theremin",))] == ["theremin"] * 2


def test_irmas_codes_map_to_taxonomy(tmp_path: Path) -> None:
    for code in ("cel", "gac", "voi"):
        write_audio(tmp_path / code / f"001__[{code}][nod][cla]0058__1.wav", sine(440, 0.2), 44100)
    assert detect_layout(tmp_path) == "irmas"
    assert sorted(f.label for f in load_dataset(tmp_path)) == ["acoustic_guitar", "cello", "voice"]


def test_nsynth_examples_json(tmp_path: Path) -> None:
    notes = {
        "bass_synthetic_033-022-050": {"instrument_family_str": "bass", "pitch": 22},
        "brass_acoustic_006-040-075": {"instrument_family_str": "brass", "pitch": 40},
        "missing_audio_000-000-000": {"instrument_family_str": "flute", "pitch": 0},
    }
    (tmp_path / "examples.json").write_text(json.dumps(notes))
    for note in list(notes)[:2]:
        write_audio(tmp_path / "audio" / f"{note}.wav", sine(440, 0.2), 16000)
    assert detect_layout(tmp_path) == "nsynth"
    files = load_dataset(tmp_path)
    assert [(Path(f.path).stem, f.label) for f in files] == [
        ("bass_synthetic_033-022-050", "bass"),
        ("brass_acoustic_006-040-075", "brass"),
    ]


def test_nsynth_without_families_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "examples.json").write_text(json.dumps({"x": {"pitch": 1}}))
    (tmp_path / "audio").mkdir()
    with pytest.raises(ValueError, match="instrument_family_str"):
        load_dataset(tmp_path)


def test_empty_or_missing_folders_say_what_is_expected(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "violin").mkdir()
    with pytest.raises(FileNotFoundError, match="no labelled audio"):
        load_dataset(tmp_path)


def test_split_is_by_file_stable_and_near_the_fraction() -> None:
    files = [LabelledFile(f"/data/{label}/clip{i}.wav", label) for label in ("a", "b") for i in range(500)]
    train, val = split_by_file(files, 0.2, seed=3)
    assert not {f.path for f in train} & {f.path for f in val}
    assert len(train) + len(val) == len(files)
    assert 0.15 < len(val) / len(files) < 0.25
    # A file's side depends on itself only: adding files or moving the folder moves nobody.
    more = [*files, *(LabelledFile(f"/data/a/new{i}.wav", "a") for i in range(100))]
    _, val_more = split_by_file(more, 0.2, seed=3)
    assert {Path(f.path).name for f in val} <= {Path(f.path).name for f in val_more}
    moved = [LabelledFile(f.path.replace("/data/", "/elsewhere/"), f.label) for f in files]
    assert [Path(f.path).name for f in split_by_file(moved, 0.2, seed=3)[1]] == [Path(f.path).name for f in val]
    assert split_by_file(files, 0.2, seed=4)[1] != val


def test_renders_and_morphs_of_one_planned_clip_land_on_one_side(tmp_path: Path) -> None:
    # Three folders as `data render` (two libraries, one seed) and `data morph` write them: the same
    # clip index plays the same notes in each, so one clip's files must never straddle the split.
    libraries = ("fluidr3", "timgm6mb", "morph_fluidr3_timgm6mb")
    for library in libraries:
        records = []
        for label in ("cello", "flute"):
            for index in range(40):
                path = f"{label}/{library}_{label}_{index:05d}_p042.wav"
                write_audio(tmp_path / library / path, sine(220, 0.05), 22050)
                records.append({"path": path, "label": label, "index": index})
        (tmp_path / library / "clips.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    files = [f for library in libraries for f in load_dataset(tmp_path / library)]
    assert len({f.group for f in files}) == 80
    train, val = split_by_file(files, 0.3, seed=0)
    train_groups, val_groups = {f.group for f in train}, {f.group for f in val}
    assert train_groups and val_groups and not train_groups & val_groups
    assert len(val) == 3 * len(val_groups)  # every library's render of a validation clip, and its morph
    # Folders without clips.jsonl keep splitting by file name.
    (tmp_path / "timgm6mb" / "clips.jsonl").unlink()
    assert {f.group for f in load_dataset(tmp_path / "timgm6mb")} == {""}
