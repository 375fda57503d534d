"""Tagging from and to S3 (a real S3 protocol server on loopback), and archives on S3."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pyarrow.dataset as pads
import pytest
import s3fs
from click.testing import CliRunner

from mirbatch.cli import main
from mirbatch.output import SUCCESS_FILE
from mirbatch.sources import S3Options, list_sources, read_bytes

pytestmark = pytest.mark.usefixtures("ray_session")


@pytest.fixture(scope="module")
def bucket(s3_server: str, fluidr3_clips: Path) -> tuple[s3fs.S3FileSystem, list[Path]]:
    """Bucket ``archive`` with loose WAVs under ``audio/``, a zip and a tar of other clips."""
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server})
    fs.mkdir("archive")
    clips = sorted(fluidr3_clips.rglob("*.wav"))
    loose, zipped, tarred = clips[:10], clips[10:16], clips[16:20]
    for path in loose:
        fs.pipe_file(f"archive/audio/{path.parent.name}/{path.name}", path.read_bytes())
    fs.pipe_file("archive/audio/notes.txt", b"not audio")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for path in zipped:
            z.write(path, f"clips/{path.name}")
        z.writestr("readme.txt", "not audio")
    fs.pipe_file("archive/bundles/set.zip", buffer.getvalue())
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as t:
        for path in tarred:
            t.add(path, f"takes/{path.name}")
    fs.pipe_file("archive/bundles/set.tar", buffer.getvalue())
    return fs, clips


def _read(fs: s3fs.S3FileSystem, prefix: str) -> list[dict[str, object]]:
    dataset = pads.dataset(prefix, format="parquet", filesystem=fs)
    return dataset.to_table(columns=["path", "status", "label", "file_id"]).to_pylist()


def test_listing_and_member_reads(s3_server: str, bucket: tuple[s3fs.S3FileSystem, list[Path]]) -> None:
    _, clips = bucket
    s3 = S3Options(s3_server)
    records = list(list_sources(["s3://archive/"], s3))
    assert len(records) == 20  # 10 loose + 6 zip members + 4 tar members; text files left out
    zipped = [r for r in records if "set.zip::" in r.path]
    tarred = [r for r in records if "set.tar::" in r.path]
    assert len(zipped) == 6 and len(tarred) == 4
    assert all(r.offset >= 0 for r in tarred)  # plain tar members are read by byte range
    for record, clip in ((zipped[0], clips[10]), (tarred[0], clips[16])):
        assert record.path.endswith(clip.name)
        assert read_bytes(record.uri, record.offset, record.size, s3) == clip.read_bytes()
    assert len({r.file_id for r in records}) == 20


def test_tag_s3_prefix_to_s3_exactly_once(s3_server: str, bucket: tuple[s3fs.S3FileSystem, list[Path]]) -> None:
    fs, _ = bucket
    runner = CliRunner()
    args = ["tag", "s3://archive/audio/", "--out", "s3://archive/labels/", "--s3-endpoint", s3_server]
    result = runner.invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = _read(fs, "archive/labels/")
    assert len(rows) == 10 and len({r["path"] for r in rows}) == 10
    assert all(r["status"] == "ok" and str(r["path"]).startswith("s3://archive/audio/") for r in rows)
    assert fs.exists(f"archive/labels/{SUCCESS_FILE}")
    # A rerun resumes from what is on S3: nothing is tagged twice.
    again = runner.invoke(main, args, catch_exceptions=False)
    assert again.exit_code == 0 and "10 already done" in again.output
    assert len(_read(fs, "archive/labels/")) == 10


def test_tag_zip_and_tar_on_s3(
    s3_server: str, bucket: tuple[s3fs.S3FileSystem, list[Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    fs, _ = bucket
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server)  # the standard variable instead of --s3-endpoint
    sources = ["s3://archive/bundles/set.zip", "s3://archive/bundles/set.tar"]
    result = CliRunner().invoke(main, ["tag", *sources, "--out", "s3://archive/bundled/"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = _read(fs, "archive/bundled/")
    assert len(rows) == 10 and all(r["status"] == "ok" for r in rows)
    paths = sorted(str(r["path"]) for r in rows)
    assert sum(p.startswith("s3://archive/bundles/set.zip::clips/") for p in paths) == 6
    assert sum(p.startswith("s3://archive/bundles/set.tar::takes/") for p in paths) == 4


def test_missing_bucket_is_a_clear_error(s3_server: str) -> None:
    result = CliRunner().invoke(main, ["tag", "s3://no-such-bucket/x/", "--out", "o", "--s3-endpoint", s3_server])
    assert result.exit_code != 0
    assert "no-such-bucket" in result.output and "Traceback" not in result.output
