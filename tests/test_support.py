"""Support libraries and ``tag --mode match``: enrollment, safe loading, model checks, the output contract."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from conftest import SR, write_audio

from mirbatch.aggregate import active_patches
from mirbatch.audio import decode
from mirbatch.cli import main
from mirbatch.datasets.render import RenderConfig, render_dataset
from mirbatch.features import make_featurizer, shift_pitch
from mirbatch.matching import embed_patches
from mirbatch.models import CheckpointMeta, Matcher, build_model, load_checkpoint, save_checkpoint
from mirbatch.output import OUTPUT_SCHEMA
from mirbatch.support import SUPPORT_FILE, SupportError, SupportLibrary, enroll
from mirbatch.training import default_features

LABELS = ("gm009_glockenspiel", "gm072_piccolo", "gm105_banjo")


def _matcher(
    path: Path, seed: int, threshold: float = 0.5, features: str = "mel", shifts: tuple[int, ...] = (0,)
) -> Path:
    """An untrained residual-siamese checkpoint (the plumbing does not depend on what it learned)."""
    torch.manual_seed(seed)
    model = build_model("residual-siamese", 1)
    meta = CheckpointMeta(
        architecture="residual-siamese",
        labels=("train_label",),
        features=default_features("residual-siamese", features),
        support_shifts=shifts,
        metrics={"unknown_threshold": threshold},
    )
    save_checkpoint(path, model, meta)
    return path


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder per reserved GM program (instruments outside the taxonomy), two clips each."""
    root = tmp_path_factory.mktemp("shots")
    render_dataset(RenderConfig("fluidr3", per_class=2, seed=31, labels=LABELS), root)
    return root


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("matchers")
    return _matcher(root / "a.safetensors", 0), _matcher(root / "b.safetensors", 1)


def test_enroll_list_remove(shots: Path, models: tuple[Path, Path], tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    result = enroll(lib, [str(shots)], model=str(models[0]))
    assert result.files_added == 6 and not result.failed
    library = SupportLibrary.open(lib, must_exist=True)
    assert library.labels == sorted(LABELS)
    assert [files for _, files, _ in library.summary()] == [2, 2, 2]
    rows = pd.read_parquet(lib / SUPPORT_FILE)  # plain Parquet, one row per sounding patch
    assert len(rows) == result.patches_added >= 6
    assert set(rows["model"]) == {result.model}
    assert {len(e) for e in rows["embedding"]} == {128}
    assert rows["source"].str.endswith(".wav").all()
    # Enrolling the same files again adds nothing; one more label from a single file works.
    again = enroll(lib, [str(shots)], model=str(models[0]))
    assert again.files_added == 0 and again.files_already_enrolled == 6
    one = next((shots / LABELS[0]).glob("*.wav"))
    assert enroll(lib, [str(one)], label="glock", model=str(models[0])).files_added == 1
    # Silence is no example: refused with the reason, the rest of the call enrolled.
    silent = write_audio(tmp_path / "silent.wav", np.zeros(2 * SR, np.float32), SR)
    refused = enroll(lib, [str(silent)], label="glock", model=str(models[0]))
    assert refused.files_added == 0 and refused.failed == [
        (str(silent), "no sound (nothing over -80 dBFS): not an example of anything")
    ]
    library = SupportLibrary.open(lib)
    assert "glock" in library.labels
    smaller, removed = library.remove("glock")
    smaller.save()
    assert removed == 1 and SupportLibrary.open(lib).labels == sorted(LABELS)


def test_examples_are_enrolled_at_the_models_pitch_shifts(shots: Path, tmp_path: Path) -> None:
    """A scalogram matcher with support shifts -12, 0, 12 stores every sounding patch three times: as
    it is and an octave down and up (the transposed rows, embedded), counted once as enrolled."""
    model = _matcher(tmp_path / "scal.safetensors", 0, features="scalogram", shifts=(-12, 0, 12))
    one = next((shots / LABELS[0]).glob("*.wav"))
    result = enroll(tmp_path / "lib", [str(one)], label="glock", model=str(model))
    rows = pd.read_parquet(tmp_path / "lib" / SUPPORT_FILE)
    assert len(rows) == 3 * result.patches_added and result.patches_added >= 2
    assert rows.groupby("pitch_shift").size().to_dict() == {k: result.patches_added for k in (-12, 0, 12)}
    library = SupportLibrary.open(tmp_path / "lib")
    assert library.summary() == [("glock", 1, result.patches_added)]
    assert library.support_set().n_shots == 1  # the copies belong to the one example
    # The stored rows are the transposed patches' embeddings, not copies of the unshifted ones.
    checkpoint = load_checkpoint(str(model))
    up = rows[rows["pitch_shift"] == 12].sort_values("patch")
    first = (rows["pitch_shift"] == 0).idxmax()
    assert not np.allclose(up["embedding"].iloc[0], rows["embedding"][first])
    features = checkpoint.meta.features
    batch = make_featurizer(features)([decode(one.read_bytes(), features.sample_rate).samples], resize=False)
    patches = batch.inputs[torch.from_numpy(active_patches(batch.level_db))][up["patch"].tolist()]
    assert isinstance(checkpoint.model, Matcher)
    expected = embed_patches(checkpoint.model, features, shift_pitch(patches, 12, features)).numpy()
    np.testing.assert_allclose(np.stack(up["embedding"].to_numpy()), expected, atol=1e-4)


@pytest.mark.usefixtures("ray_session")
def test_a_library_chooses_its_shifts_and_tagging_uses_their_threshold(shots: Path, tmp_path: Path) -> None:
    """A library may enroll at other shifts than the model's (one set per library); tagging then uses
    the threshold the checkpoint calibrated for those shifts, and refuses shifts it never calibrated."""
    model = tmp_path / "scal.safetensors"
    _matcher(model, 0, threshold=0.0, features="scalogram", shifts=(-12, 0, 12))
    checkpoint = load_checkpoint(str(model))
    metrics = {"unknown_threshold": 0.0, "unknown_thresholds": {"-12,0,12": 0.0, "0": 1.0}}
    save_checkpoint(model, checkpoint.model, replace(checkpoint.meta, metrics=metrics))
    plain, odd = tmp_path / "plain", tmp_path / "odd"
    one = next((shots / LABELS[0]).glob("*.wav"))
    enroll(plain, [str(shots)], model=str(model), shifts=(0,))
    assert SupportLibrary.open(plain).shifts == (0,)
    with pytest.raises(SupportError, match="enrolled at pitch shifts 0"):
        enroll(plain, [str(one)], label="glock", model=str(model), shifts=(-12, 0, 12))
    assert enroll(plain, [str(one)], label="glock", model=str(model)).files_added == 1  # the library's shifts
    with pytest.raises(SupportError, match="include 0"):
        enroll(odd, [str(one)], label="glock", model=str(model), shifts=(7,))
    runner = CliRunner()
    added = runner.invoke(main, ["support", "add", str(odd), str(one), "--label", "glock", "--model", str(model),
                                 "--support-shifts=-7,0"])  # fmt: skip
    assert added.exit_code == 0 and SupportLibrary.open(odd).shifts == (-7, 0)
    base = ["tag", str(shots), "--mode", "match", "--model", str(model)]
    tagged = runner.invoke(main, [*base, "--support", str(plain), "--out", str(tmp_path / "out")])
    assert tagged.exit_code == 0, tagged.output
    assert set(pd.read_parquet(tmp_path / "out")["label"]) == {"unknown"}  # the threshold of shifts 0: 1.0
    refused = runner.invoke(main, [*base, "--support", str(odd), "--out", str(tmp_path / "x")])
    assert refused.exit_code != 0 and "no calibrated unknown threshold" in refused.output
    chosen = runner.invoke(
        main, [*base, "--support", str(odd), "--out", str(tmp_path / "y"), "--unknown-threshold", "0"]
    )
    assert chosen.exit_code == 0, chosen.output


def test_mel_models_enroll_without_shifts(shots: Path, models: tuple[Path, Path], tmp_path: Path) -> None:
    one = next((shots / LABELS[0]).glob("*.wav"))
    with pytest.raises(SupportError, match="scalogram features"):
        enroll(tmp_path / "lib", [str(one)], label="glock", model=str(models[0]), shifts=(0, 12))


def test_libraries_without_pitch_shifts_still_open(shots: Path, models: tuple[Path, Path], tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    result = enroll(lib, [str(shots)], model=str(models[0]))
    table = pq.read_table(lib / SUPPORT_FILE)
    pq.write_table(table.drop_columns(["pitch_shift"]), lib / SUPPORT_FILE)  # as written before the column
    library = SupportLibrary.open(lib, must_exist=True)
    assert set(library.table["pitch_shift"].to_pylist()) == {0}
    assert sum(patches for _, _, patches in library.summary()) == result.patches_added


def test_another_model_is_refused_with_the_fix(shots: Path, models: tuple[Path, Path], tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    enroll(lib, [str(shots / LABELS[0])], label="x", model=str(models[0]))
    with pytest.raises(SupportError, match="--model a") as info:
        enroll(lib, [str(shots / LABELS[1])], label="y", model=str(models[1]))
    assert "support add NEW_LIB" in str(info.value)


def test_a_rebuilt_model_of_the_same_name_asks_for_enrolling_again(
    shots: Path, models: tuple[Path, Path], tmp_path: Path
) -> None:
    lib = tmp_path / "lib"
    enroll(lib, [str(shots / LABELS[0])], label="x", model=str(models[0]))
    checkpoint = load_checkpoint(str(models[0]))
    rebuilt = tmp_path / "rebuilt" / models[0].name  # same name, other metadata: another hash
    rebuilt.parent.mkdir()
    metrics = {**checkpoint.meta.metrics, "unknown_threshold": 0.9}
    save_checkpoint(rebuilt, checkpoint.model, replace(checkpoint.meta, metrics=metrics))
    with pytest.raises(SupportError, match="another build of a") as info:
        enroll(lib, [str(shots / LABELS[1])], label="y", model=str(rebuilt))
    assert "support add NEW_LIB EXAMPLES/ --model a'" in str(info.value)


def test_classifiers_cannot_enroll(shots: Path, tmp_path: Path) -> None:
    with pytest.raises(SupportError, match="classifier"):
        enroll(tmp_path / "lib", [str(shots)], model="cnn-default")


def test_malformed_libraries_are_rejected(tmp_path: Path) -> None:
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / SUPPORT_FILE).write_bytes(b"PAR1 not really")
    with pytest.raises(SupportError, match="not a readable Parquet"):
        SupportLibrary.open(tmp_path / "garbage")
    other = tmp_path / "other"
    other.mkdir()
    pd.DataFrame({"label": ["a"], "x": [1]}).to_parquet(other / SUPPORT_FILE)
    with pytest.raises(SupportError, match="missing columns"):
        SupportLibrary.open(other)
    with pytest.raises(SupportError, match="support add"):
        SupportLibrary.open(tmp_path / "absent", must_exist=True)


def test_cli_support_commands(shots: Path, models: tuple[Path, Path], tmp_path: Path) -> None:
    lib = str(tmp_path / "lib")
    runner = CliRunner()
    added = runner.invoke(main, ["support", "add", lib, str(shots), "--model", str(models[0])])
    assert added.exit_code == 0, added.output
    assert "enrolled 6 files" in added.output
    listed = runner.invoke(main, ["support", "list", lib])
    assert listed.exit_code == 0 and all(label in listed.output for label in LABELS)
    assert "pitch shifts 0\n" in listed.output
    missing = runner.invoke(main, ["support", "remove", lib, "--label", "nope"])
    assert missing.exit_code != 0 and "has no label 'nope'" in missing.output
    removed = runner.invoke(main, ["support", "remove", lib, "--label", LABELS[0]])
    assert removed.exit_code == 0 and "removed 2 files" in removed.output


@pytest.mark.usefixtures("ray_session")
def test_tag_match_writes_the_contract_and_honours_the_threshold(
    shots: Path, models: tuple[Path, Path], tmp_path: Path
) -> None:
    lib = str(tmp_path / "lib")
    enroll(lib, [str(shots)], model=str(models[0]))
    runner = CliRunner()
    base = ["tag", str(shots), "--mode", "match", "--support", lib, "--model", str(models[0])]
    outputs = {}
    for threshold in ("0", "1"):
        out = tmp_path / f"out{threshold}"
        result = runner.invoke(main, [*base, "--out", str(out), "--unknown-threshold", threshold])
        assert result.exit_code == 0, result.output
        table = pads.dataset(out, format="parquet").to_table()
        for field in OUTPUT_SCHEMA:
            assert table.schema.field(field.name).type == field.type
        outputs[threshold] = table.to_pandas()
    never, always = outputs["0"], outputs["1"]
    assert len(never) == 6 and never["path"].is_unique
    assert set(never["mode"]) == {"match"}
    assert set(never["label"]) <= set(LABELS)  # nothing is below a zero threshold
    assert set(always["label"]) == {"unknown"}  # no sigmoid score reaches 1
    # Each file's own patches are in the library: an untrained matcher still finds itself best.
    own = never["path"].map(lambda p: Path(p).parent.name)
    assert (never["label"] == own).mean() >= 0.8
    # Wrong pairings are refused before any work.
    other = runner.invoke(main, [*base[:-1], str(models[1]), "--out", str(tmp_path / "x")])
    assert other.exit_code != 0 and "holds embeddings of model a@" in other.output
    as_classifier = [*base[:-1], "cnn-default", "--out", str(tmp_path / "y")]
    classifier = runner.invoke(main, as_classifier)
    assert classifier.exit_code != 0 and "needs a matcher" in classifier.output


RESERVED = ("gm009_glockenspiel", "gm021_accordion", "gm053_voice_oohs", "gm072_piccolo", "gm105_banjo")


@pytest.mark.usefixtures("ray_session")
def test_bundled_matcher_labels_instruments_it_never_heard(tmp_path: Path) -> None:
    """One FluidR3 clip per reserved GM program (no training ever used them) enrolled with the
    bundled matcher; other recordings of them are tagged in match mode."""
    from mirbatch.taxonomy import is_reserved_program

    assert all(is_reserved_program(int(label[2:5])) for label in RESERVED)
    assert not set(RESERVED) & set(load_checkpoint("siamese-default").meta.labels)
    shots, queries = tmp_path / "shots", tmp_path / "queries"
    render_dataset(RenderConfig("fluidr3", per_class=1, seed=41, labels=RESERVED), shots)
    render_dataset(RenderConfig("fluidr3", per_class=6, seed=42, labels=RESERVED), queries)
    lib = tmp_path / "lib"
    assert enroll(lib, [str(shots)]).files_added == len(RESERVED)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["tag", str(queries), "--out", str(out), "--mode", "match", "--support", str(lib)]
    )
    assert result.exit_code == 0, result.output
    df = pd.read_parquet(out)
    truth = df["path"].map(lambda p: Path(p).parent.name)
    best = df["top_labels"].map(lambda labels: labels[0])
    assert len(df) == 30 and set(df["model"].str.split("@").str[0]) == {"siamese-default"}
    assert (best == truth).mean() >= 0.7  # chance: 0.2
    assert set(df["label"]) <= {*RESERVED, "unknown"}
