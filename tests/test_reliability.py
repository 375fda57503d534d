"""Reliability: a corpus of broken and odd inputs in one run, a killed worker, a killed driver + rerun."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from click.testing import CliRunner
from conftest import SR, sine, write_audio

from mirbatch.aggregate import UNKNOWN
from mirbatch.cli import EXIT_INTERRUPTED, EXIT_PARTIAL, main
from mirbatch.taxonomy import DEFAULT_LABELS

pytestmark = pytest.mark.usefixtures("ray_session")


def _long_flac(path: Path, minutes: int) -> None:
    """A long FLAC written block by block (a slow melody of decaying tones; never whole in memory)."""
    rng = np.random.default_rng(0)
    with sf.SoundFile(str(path), "w", samplerate=SR, channels=1, format="FLAC") as f:
        for _ in range(minutes * 60):
            t = np.arange(SR) / SR
            tone = 0.3 * np.sin(2 * np.pi * rng.choice([220.0, 330.0, 440.0, 550.0]) * t) * np.exp(-3 * t)
            f.write(tone.astype(np.float32))


@pytest.fixture(scope="module")
def corpus(fluidr3_clips: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """Good rendered clips mixed with every kind of bad input; returns (root, {name: expected status})."""
    root = tmp_path_factory.mktemp("corpus")
    expected: dict[str, str] = {}
    for wav in sorted(fluidr3_clips.rglob("*.wav"))[:12]:
        (root / wav.name).write_bytes(wav.read_bytes())
        expected[wav.name] = "ok"
    good = sorted(fluidr3_clips.rglob("*.wav"))[0]
    y, rate = sf.read(good, dtype="float32")

    def add(name: str, status: str) -> Path:
        expected[name] = status
        return root / name

    add("zero.wav", "error").write_bytes(b"")
    add("random.wav", "error").write_bytes(np.random.default_rng(1).bytes(20000))
    add("text.flac", "error").write_text("this is not audio\n" * 100)
    png = b"\x89PNG\r\n\x1a\n" + np.random.default_rng(2).bytes(3000)
    add("image.flac", "error").write_bytes(png)
    full = root / "full.flac"
    write_audio(full, np.tile(y, 3), rate)
    add("truncated.flac", "ok").write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    full.unlink()
    mp3 = root / "whole.mp3"
    write_audio(mp3, np.tile(y, 3), rate)
    add("truncated.mp3", "ok").write_bytes(mp3.read_bytes()[: mp3.stat().st_size // 2])
    mp3.unlink()
    broken = sine(440.0, 2.0).copy()
    broken[100:200] = np.nan
    broken[300] = np.inf
    write_audio(add("nan_inf.wav", "ok"), broken, SR, subtype="FLOAT")
    write_audio(add("silence.wav", "ok"), np.zeros(SR * 2, np.float32), SR)
    write_audio(add("tiny.wav", "ok"), sine(440.0, 0.01), SR)
    _long_flac(add("sixty_minutes.flac", "ok"), 60)
    multi = np.stack([sine(220.0 * (c + 1), 1.5, 192000, 0.1) for c in range(8)], axis=1)
    write_audio(add("eight_channels_192k.wav", "ok"), multi, 192000)
    write_audio(add("telephone_8k.wav", "ok"), sine(440.0, 2.0, 8000), 8000)
    write_audio(add("ünïcødé name with spaces 'single' \"double\".wav", "ok"), sine(330.0, 1.0), SR)
    (root / "sub").mkdir()
    os.symlink("..", root / "sub" / "loop_dir")  # a folder loop: not followed
    os.symlink("loop_b.wav", add("loop_a.wav", "error"))
    os.symlink("loop_a.wav", add("loop_b.wav", "error"))
    os.symlink("gone.wav", add("dangling.wav", "error"))
    locked = add("locked.wav", "ok")
    write_audio(locked, sine(440.0, 1.0), SR)
    locked.chmod(0)
    if not os.access(locked, os.R_OK):  # as root the OS reads it anyway
        expected["locked.wav"] = "error"
    return root, expected


@pytest.mark.slow
def test_bad_inputs_get_one_row_each_with_the_right_status(corpus: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    root, expected = corpus
    out = tmp_path / "labels"
    result = CliRunner().invoke(main, ["tag", str(root), "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == EXIT_PARTIAL, result.output  # some inputs failed, the run did not
    df = pd.read_parquet(out)
    names = df["path"].map(lambda p: Path(p).name)
    assert sorted(names) == sorted(expected)  # one row per input, none twice, none lost
    by_name = dict(zip(names, df.to_dict("records"), strict=True))
    for name, status in expected.items():
        row = by_name[name]
        assert row["status"] == status, (name, row["error"])
        if status == "error":
            assert row["error"] and pd.isna(row["label"])
        elif name != "silence.wav":
            assert row["label"] in DEFAULT_LABELS and 0.0 < row["confidence"] <= 1.0
    # Digital silence is no instrument: unknown, with no candidates, patch by patch too.
    silence = by_name["silence.wav"]
    assert (silence["label"], silence["confidence"], list(silence["top_labels"])) == (UNKNOWN, 0.0, [])
    assert {seg["label"] for seg in silence["segments"]} == {UNKNOWN}
    assert "empty file" in by_name["zero.wav"]["error"]
    assert "not a readable audio file" in by_name["text.flac"]["error"]
    assert "symbolic links" in by_name["loop_a.wav"]["error"]
    assert "No such file" in by_name["dangling.wav"]["error"]
    long = by_name["sixty_minutes.flac"]
    assert long["duration_s"] == pytest.approx(3600.0)
    starts = np.array([seg["start_s"] for seg in long["segments"]])
    ends = np.array([seg["end_s"] for seg in long["segments"]])
    assert len(starts) > 6900 and np.all(np.diff(starts) > 0)  # ~2 patches a second, in order
    # No hole between patches beyond what a file's end may leave (under half a 0.5 s hop), chunk
    # borders included: the 60 s chunks of a long file are analysed like short files end to end.
    assert np.all(starts[1:] - ends[:-1] <= 0.26)
    assert starts[0] == 0.0 and ends[-1] > 3599.0
    eight = by_name["eight_channels_192k.wav"]
    assert (eight["channels"], eight["sample_rate"]) == (8, 192000)
    assert by_name["telephone_8k.wav"]["sample_rate"] == 8000
    assert by_name["truncated.flac"]["duration_s"] < 3 * 2.5  # only what decoded before the cut


def _audio_folder(root: Path, n: int) -> Path:
    rng = np.random.default_rng(5)
    for i in range(n):
        tone = sine(float(rng.uniform(110, 880)), float(rng.uniform(4.0, 8.0)))  # long enough to kill mid-run
        write_audio(root / f"d{i % 7}" / f"clip_{i:04d}.wav", tone, SR)
    return root


def _command(source: Path, out: Path) -> list[str]:
    import ray

    address = ray.get_runtime_context().gcs_address
    command = ["tag", str(source), "--out", str(out), "--address", address, "--part-seconds", "1"]
    return [sys.executable, "-m", "mirbatch.cli", *command]


def _exactly_once(out: Path, source: Path) -> pd.DataFrame:
    df = pd.read_parquet(out)
    expected = sorted(str(p) for p in source.rglob("*.wav"))
    assert sorted(df["path"]) == expected
    assert df["file_id"].is_unique and df["path"].is_unique
    assert (df["status"] == "ok").all()
    return df


@pytest.mark.slow
def test_a_killed_driver_and_a_rerun_end_with_every_input_once(tmp_path: Path, cluster_env: dict[str, str]) -> None:
    source = _audio_folder(tmp_path / "audio", 300)
    out = tmp_path / "labels"
    process = subprocess.Popen(
        _command(source, out), env=cluster_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while not list(out.glob("part-*.parquet")) and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "_SUCCESS").exists(), "the run finished before it could be killed"
    done_before = len(pd.read_parquet(out))
    assert 0 < done_before < 300
    rerun = subprocess.run(_command(source, out), env=cluster_env, capture_output=True, text=True, check=False)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{done_before} already done" in rerun.stdout
    _exactly_once(out, source)
    # --no-resume starts over cleanly: the same inputs, once each, all from the new run.
    fresh = subprocess.run([*_command(source, out), "--no-resume"], env=cluster_env, capture_output=True, text=True)
    assert fresh.returncode == 0 and "0 already done" in fresh.stdout
    assert len(_exactly_once(out, source)) == 300


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_writes_every_finished_file_then_the_rerun_resumes(
    tmp_path: Path, cluster_env: dict[str, str], stop: signal.Signals
) -> None:
    """Ctrl-C, ``jobs stop`` or an evicted pod: the files finished so far are kept, though no part
    was due for ten minutes (before, they were lost, and SIGTERM ended the process where it stood)."""
    source = _audio_folder(tmp_path / "audio", 300)
    out = tmp_path / "labels"
    command = [*_command(source, out), "--part-seconds", "600"]
    process = subprocess.Popen(command, env=cluster_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    for line in process.stderr:  # progress lines, about one a second
        if line.startswith("tagged ") and not line.startswith("tagged 0/"):
            break
    assert process.poll() is None, "the run ended before it could be stopped"
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == EXIT_INTERRUPTED, stderr[-2000:]
    assert not (out / "_SUCCESS").exists()
    kept = len(pd.read_parquet(out))
    assert 0 < kept < 300
    assert f"interrupted: {kept} files of this run written to {out}; rerun the same command to resume" in stderr
    rerun = subprocess.run(_command(source, out), env=cluster_env, capture_output=True, text=True, check=False)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{kept} already done" in rerun.stdout
    assert len(_exactly_once(out, source)) == 300


@pytest.mark.slow
def test_a_sigkilled_model_worker_loses_nothing(tmp_path: Path, cluster_env: dict[str, str]) -> None:
    import ray
    from ray.util.state import list_actors

    source = _audio_folder(tmp_path / "audio", 300)
    out = tmp_path / "labels"
    process = subprocess.Popen(_command(source, out), env=cluster_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    address = ray.get_runtime_context().gcs_address
    deadline = time.time() + 300
    victims: list[int] = []
    while not victims and time.time() < deadline and process.poll() is None:
        if list(out.glob("part-*.parquet")):  # mid-run: results are coming out
            alive = list_actors(address=address, filters=[("state", "=", "ALIVE")])
            victims = [a.pid for a in alive if a.pid is not None and "ScoreActor" in (a.class_name or "")]
        time.sleep(0.1)
    assert victims, "no model actor was found while the run was going"
    os.kill(victims[0], signal.SIGKILL)
    assert not (out / "_SUCCESS").exists(), "the run finished before the worker was killed"
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr.decode()[-2000:]
    assert (out / "_SUCCESS").exists()
    _exactly_once(out, source)
