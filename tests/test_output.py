"""Output dataset: schema, atomic parts, resume ids, reset, commit marker."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.dataset as pads
import pytest

from mirbatch.output import OUTPUT_SCHEMA, SUCCESS_FILE, ResultWriter, completed_file_ids, reset_output


def _row(i: int, status: str = "ok") -> dict[str, Any]:
    ok = status == "ok"
    return {
        "path": f"f{i}.wav",
        "status": status,
        "error": None if ok else "not a readable audio file",
        "label": "piano" if ok else None,
        "confidence": 0.9 if ok else None,
        "top_labels": ["piano", "organ"] if ok else [],
        "top_scores": [0.9, 0.05] if ok else [],
        "segments": [{"start_s": 0.0, "end_s": 1.0, "label": "piano", "confidence": 0.9}] if ok else [],
        "duration_s": 1.0 if ok else None,
        "sample_rate": 44100 if ok else None,
        "channels": 2 if ok else None,
        "mode": "classify",
        "model": "cnn-default@abc",
        "features": "mel",
        "file_id": f"id{i}",
        "size_bytes": 100,
        "tagged_at": datetime.now(UTC),
    }


def test_parts_are_readable_by_pandas_and_pyarrow(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path, rows_per_part=3)
    writer.extend(_row(i) for i in range(7))
    writer.add(_row(7, "error"))
    assert len(list(tmp_path.glob("part-*.parquet"))) == 2  # 6 rows flushed, 2 buffered
    assert not (tmp_path / SUCCESS_FILE).exists()
    writer.commit({"files_ok": 7})
    assert json.loads((tmp_path / SUCCESS_FILE).read_text())["files_ok"] == 7
    df = pd.read_parquet(tmp_path)
    assert len(df) == 8 and df.file_id.is_unique
    assert pads.dataset(tmp_path, format="parquet").schema.equals(OUTPUT_SCHEMA, check_metadata=False)
    assert set(df.status) == {"ok", "error"}
    assert not list(tmp_path.glob(".*"))  # no temporary parts left behind


def test_resume_ids_and_reset(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path, rows_per_part=2)
    writer.extend(_row(i) for i in range(5))
    writer.flush()
    assert completed_file_ids(tmp_path) == {f"id{i}" for i in range(5)}
    (tmp_path / "keep.txt").write_text("user file")
    reset_output(tmp_path)
    assert completed_file_ids(tmp_path) == set()
    assert (tmp_path / "keep.txt").exists()


def test_new_run_clears_the_commit_marker(tmp_path: Path) -> None:
    first = ResultWriter(tmp_path)
    first.add(_row(0))
    first.commit({})
    assert (tmp_path / SUCCESS_FILE).exists()
    second = ResultWriter(tmp_path)
    assert not (tmp_path / SUCCESS_FILE).exists()  # incomplete until the new run commits
    second.commit({})
    assert len(pd.read_parquet(tmp_path)) == 1


def test_rows_of_files_that_changed_since_are_dropped_the_newest_kept(tmp_path: Path) -> None:
    first = ResultWriter(tmp_path, rows_per_part=2)
    first.extend(_row(i) for i in range(5))  # parts of f0 f1, f2 f3, f4
    first.commit({})
    assert first.drop_superseded() == 0  # nothing changed: nothing rewritten
    # f1 and f4 changed (new file_id) and were tagged again; f1 now says organ.
    second = ResultWriter(tmp_path, rows_per_part=10)
    second.extend([{**_row(1), "file_id": "id1-new", "label": "organ"}, {**_row(4), "file_id": "id4-new"}])
    assert second.drop_superseded() == 2
    df = pd.read_parquet(tmp_path).set_index("path")
    assert df.index.is_unique and sorted(df.index) == [f"f{i}.wav" for i in range(5)]
    assert df.loc["f1.wav", "file_id"] == "id1-new" and df.loc["f1.wav", "label"] == "organ"
    assert df.loc["f4.wav", "file_id"] == "id4-new"
    assert len(list(tmp_path.glob("part-*.parquet"))) == 3  # f4's own part went with its only row
    assert not list(tmp_path.glob(".*"))
    # Two runs at once into one folder tagged f0 twice with the same id: the newer row stays.
    third = ResultWriter(tmp_path)
    third.add({**_row(0), "label": "tuba"})
    assert third.drop_superseded() == 1
    df = pd.read_parquet(tmp_path).set_index("path")
    assert df.index.is_unique and df.loc["f0.wav", "label"] == "tuba"


def test_an_output_folder_that_cannot_be_made_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(OSError, match=f"cannot create the output folder {tmp_path / 'file' / 'labels'}: "):
        ResultWriter(tmp_path / "file" / "labels")


def test_show_prints_rows_as_a_table_csv_or_json_lines_and_counts_per_label(tmp_path: Path) -> None:
    import csv
    import io

    from click.testing import CliRunner

    from mirbatch.cli import main

    out = tmp_path / "labels"
    writer = ResultWriter(out)
    rows = [_row(0), {**_row(1), "label": "organ", "confidence": 0.5, "duration_s": 3600.0}, _row(2, "error"), _row(3)]
    writer.extend(rows)
    writer.commit({})

    def show(*args: str) -> str:
        result = CliRunner().invoke(main, ["show", str(out), *args])
        assert result.exit_code == 0, result.output
        return result.output

    table = show("--limit", "2")
    assert table.splitlines()[1].split() == ["f0.wav", "piano", "0.900"] and "... 2 more rows" in table
    records = list(csv.DictReader(io.StringIO(show("--format", "csv", "--limit", "0"))))
    assert [r["path"] for r in records] == ["f0.wav", "f1.wav", "f2.wav", "f3.wav"]
    assert records[0]["top_labels"] == "piano;organ" and records[0]["top_scores"] == "0.9;0.05"
    assert records[2]["status"] == "error" and records[2]["error"] == "not a readable audio file"
    lines = [json.loads(line) for line in show("--format", "jsonl", "--limit", "0").splitlines()]
    assert lines[1] == {
        "path": "f1.wav",
        "status": "ok",
        "label": "organ",
        "confidence": 0.5,
        "top_labels": ["piano", "organ"],
        "top_scores": [0.9, 0.05],
        "duration_s": 3600.0,
        "error": None,
    }
    counts = [json.loads(line) for line in show("--counts", "--format", "jsonl").splitlines()]
    assert counts == [
        {"label": "piano", "files": 2, "hours": 0.0006, "mean_confidence": 0.9},
        {"label": "organ", "files": 1, "hours": 1.0, "mean_confidence": 0.5},
        {"label": "(error)", "files": 1, "hours": 0.0, "mean_confidence": None},
    ]
    assert show("--counts").splitlines()[-1].split() == ["(all)", "4", "1.001"]
