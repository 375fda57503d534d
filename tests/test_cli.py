"""Every command documents itself with an example; train/eval/render work through the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import SR, free_port, sine, write_audio

from mirbatch.cli import main
from mirbatch.features import FEATURES
from mirbatch.models import ARCHITECTURES, load_checkpoint
from mirbatch.training import LR_SCHEDULES, OPTIMIZERS


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for name, command in group.commands.items():
        path = (*prefix, name)
        if isinstance(command, click.Group):
            found.extend(_commands(command, path))
        else:
            found.append(path)
    return found


COMMANDS = _commands(main)


def test_expected_commands_exist() -> None:
    expected = {("tag",), ("train",), ("eval",), ("data", "render"), ("show",)}
    expected |= {("support", "add"), ("support", "list"), ("support", "remove")}
    assert expected <= set(COMMANDS)


def test_train_choices_name_exactly_what_the_library_registers() -> None:
    # The CLI spells its choices out so that `--help` need not import torch; this keeps them in step.
    choices = {
        p.name: sorted(p.type.choices) for p in main.commands["train"].params if isinstance(p.type, click.Choice)
    }
    assert choices["architecture"] == sorted(ARCHITECTURES)
    assert choices["optimizer"] == sorted(OPTIMIZERS)
    assert choices["lr_schedule"] == sorted(LR_SCHEDULES)
    assert choices["features"] == sorted(FEATURES)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help_with_an_example(command: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.output
    assert f"mirbatch {' '.join(command)}" in result.output.split("Example:")[1]
    # And every option says what it does.
    leaf: click.Command = main
    for name in command:
        assert isinstance(leaf, click.Group)
        leaf = leaf.commands[name]
    assert [p.opts for p in leaf.params if isinstance(p, click.Option) and not p.help] == []


@pytest.mark.usefixtures("ray_session")
def test_render_train_eval_through_the_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    data = tmp_path / "data"
    labels = "flute,tuba,piano"
    result = runner.invoke(
        main, ["data", "render", "--soundfont", "timgm6mb", "--out", str(data), "--per-class", "8", "--labels", labels]
    )
    assert result.exit_code == 0, result.output
    assert "rendered 24 clips of 3 labels" in result.output
    write_audio(data / "tuba" / "silence.wav", np.zeros(SR, np.float32), SR)  # no example of a tuba
    ckpt = tmp_path / "model.safetensors"
    result = runner.invoke(
        main,
        ["train", "--data", str(data), "--out", str(ckpt), "--epochs", "2", "--val-fraction", "0.25",
         "--augment", "none", "--storage", str(tmp_path / "runs"), "--precision", "bf16"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "epoch   2" in result.output and "saved" in result.output
    assert "skipped 1 (named above)" in result.output
    checkpoint = load_checkpoint(str(ckpt))
    assert checkpoint.meta.labels == ("flute", "piano", "tuba")
    assert checkpoint.meta.training["epochs"] == 2 and checkpoint.meta.training["precision"] == "bf16"
    assert all(t.dtype == torch.float32 for t in checkpoint.model.state_dict().values() if t.is_floating_point())
    result = runner.invoke(main, ["eval", "--model", str(ckpt), "--data", str(data)])
    assert result.exit_code == 0, result.output
    assert "24 files" in result.output and "file-level accuracy" in result.output
    assert "(power aggregation)" in result.output
    plain = runner.invoke(main, ["eval", "--model", str(ckpt), "--data", str(data), "--aggregate", "mean"])
    assert plain.exit_code == 0 and "(mean aggregation)" in plain.output, plain.output
    assert "MFCC-SVM" in result.output and "macro-F1" in result.output
    assert ckpt.with_suffix(".curves.png").exists()
    report = tmp_path / "report"
    result = runner.invoke(main, ["eval", "--model", str(ckpt), "--data", str(data), "--report", str(report)])
    assert result.exit_code == 0, result.output
    assert {p.name for p in report.iterdir()} == {
        "report.json", "files.csv", "confusion_files.png", "confusion_patches.png", "confusion_baseline.png"
    }  # fmt: skip
    # Each file's answers, which agree with the accuracies of report.json.
    with (report / "files.csv").open() as f:
        answers = list(csv.DictReader(f))
    saved = json.loads((report / "report.json").read_text())
    assert sorted(a["path"] for a in answers) == sorted(str(p) for p in data.rglob("*.wav") if p.name != "silence.wav")
    assert {a["label"] for a in answers} == {"flute", "piano", "tuba"}
    hits = sum(a["predicted"] == a["label"] for a in answers)
    assert hits / len(answers) == pytest.approx(saved["file_level"]["accuracy"])
    baseline_hits = sum(a["baseline_predicted"] == a["label"] for a in answers)
    assert baseline_hits / len(answers) == pytest.approx(saved["baseline_mfcc_svm_file_level"]["accuracy"])
    assert all(0.0 < float(a["confidence"]) <= 1.0 for a in answers)
    # What answering only over each confidence keeps (tag --unknown-threshold), from the same answers.
    assert [row["threshold"] for row in saved["by_confidence"]] == [0.5, 0.6, 0.7, 0.8, 0.9]
    for row in saved["by_confidence"]:
        if any(abs(float(a["confidence"]) - row["threshold"]) <= 1e-4 for a in answers):
            continue  # files.csv rounds scores to 4 decimals: this row's count is not readable from it
        kept = [a for a in answers if float(a["confidence"]) >= row["threshold"]]
        assert row["files"] == len(kept) and row["fraction"] == pytest.approx(len(kept) / len(answers))
        right = sum(a["predicted"] == a["label"] for a in kept)
        assert row["accuracy"] == (pytest.approx(right / len(kept)) if kept else None)
    assert "answers scoring at least" in result.output


def test_eval_refuses_labels_the_model_does_not_know(tmp_path: Path) -> None:
    (tmp_path / "kazoo").mkdir()
    (tmp_path / "kazoo" / "a.wav").write_bytes(b"")
    result = CliRunner().invoke(main, ["eval", "--data", str(tmp_path)])
    assert result.exit_code == 1 and "kazoo" in result.output


def test_eval_leaves_out_labels_the_model_does_not_know(tmp_path: Path) -> None:
    # IRMAS's layout: three-letter folders; its voice ("voi") is not one of the taxonomy's labels.
    irmas = tmp_path / "irmas"
    for code, freq in (("cel", 131.0), ("flu", 880.0), ("voi", 330.0)):
        for i in range(2):
            write_audio(irmas / code / f"{code}{i}.wav", sine(freq * (1 + i / 10), 2.0), SR)
    # Neither silence nor a broken file is an example of its label: named and skipped, not scored.
    silent, broken = irmas / "cel" / "cel_silent.wav", irmas / "flu" / "flu_broken.wav"
    write_audio(silent, np.zeros(2 * SR, np.float32), SR)
    broken.write_bytes(b"not audio")
    runner = CliRunner()
    report = tmp_path / "report"
    result = runner.invoke(main, ["eval", "--data", str(irmas), "--report", str(report)])
    assert result.exit_code == 0, result.output
    assert "4 files" in result.output
    assert "left out 2 files of labels the model does not know: voice (2)" in result.output
    assert "skipped 2 files that do not decode or have no sound" in result.output
    saved = json.loads((report / "report.json").read_text())
    assert saved["files"] == 4 and saved["left_out_files"] == {"voice": 2}
    assert [f["path"] for f in saved["skipped_files"]] == sorted([str(silent), str(broken)])
    assert "no sound (nothing over -80 dBFS): not an example of cello" in saved["skipped_files"][0]["reason"]
    assert saved["skipped_files"][1]["reason"].startswith("not a readable audio file")
    with (report / "files.csv").open() as f:  # the files evaluated, under the model's label names
        assert sorted(row["label"] for row in csv.DictReader(f)) == ["cello", "cello", "flute", "flute"]
    only_voice = tmp_path / "voice_only"
    write_audio(only_voice / "voi" / "a.wav", sine(330.0, 2.0), SR)
    refused = runner.invoke(main, ["eval", "--data", str(only_voice)])
    assert refused.exit_code != 0 and "none of the data's labels (voice)" in refused.output


@pytest.mark.parametrize("command", ["tag", "train"])
def test_a_cluster_address_nothing_answers_at_fails_at_once(command: str, tmp_path: Path) -> None:
    """Ray itself retries an unreachable head for ever; the CLI says so and stops."""
    address = f"127.0.0.1:{free_port()}"
    clip = write_audio(tmp_path / "flute" / "a.wav", sine(440.0, 1.0), SR)
    args = {
        "tag": ["tag", str(clip), "--out", str(tmp_path / "out")],
        "train": ["train", "--data", str(tmp_path), "--out", str(tmp_path / "m.safetensors")],
    }[command]
    result = CliRunner().invoke(main, [*args, "--address", f"ray://{address}"])
    assert result.exit_code == 1, result.output
    assert f"no Ray cluster answers at ray://{address} (Connection refused)" in result.output


def test_a_request_the_local_ray_cannot_grant_is_refused(ray_session: None, tmp_path: Path) -> None:
    """A Ray started here without the GPUs or CPUs asked for would wait for them for ever; on a
    cluster (--address) the autoscaler may add them, so only the local case is refused."""
    for label, freq in (("flute", 880.0), ("tuba", 110.0)):
        for n in range(4):
            write_audio(tmp_path / "data" / label / f"{n}.wav", sine(freq * (1 + n / 10), 1.0), SR)
    runs = [
        (["tag", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--gpus-per-worker", "1"],
         "--gpus-per-worker 1 with --workers 1 need 1 GPU (it has 0)"),
        (["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "m.safetensors"), "--use-gpu",
          "--storage", str(tmp_path / "runs")], "--workers 1 with --use-gpu need 1 GPU (it has 0)"),
        # Half a CPU a worker: five need 2.5 of the session's 2.
        (["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "m.safetensors"), "--workers", "5",
          "--storage", str(tmp_path / "runs")], "--workers 5 need 2.5 CPU (it has 2)"),
    ]  # fmt: skip
    for args, message in runs:
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1, result.output
        assert f"{message} from the Ray started here" in result.output, result.output
    # The refused training run left no run behind that a rerun would have to --resume.
    again = CliRunner().invoke(
        main,
        ["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "m.safetensors"), "--epochs", "1",
         "--augment", "none", "--val-fraction", "0.5", "--storage", str(tmp_path / "runs")],
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    assert (tmp_path / "m.safetensors").is_file()


def test_eval_and_train_make_their_output_folders_before_they_start(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    report = tmp_path / "file" / "report"
    result = CliRunner().invoke(main, ["eval", "--data", str(tmp_path), "--report", str(report)])
    assert result.exit_code == 1
    assert f"cannot create the --report folder {report}: Not a directory" in result.output
    out = tmp_path / "file" / "m.safetensors"
    result = CliRunner().invoke(main, ["train", "--data", str(tmp_path), "--out", str(out)])
    assert result.exit_code == 1
    assert f"cannot create the folder of --out {out}: File exists" in result.output
