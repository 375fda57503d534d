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
from conftest import free_port

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
    fs.pipe_file(f"archive/audio/{loose[0].parent.name}/._{loose[0].name}", b"\x00\x05\x16\x07 AppleDouble")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for path in zipped:
            z.write(path, f"clips/{path.name}")
        z.writestr("readme.txt", "not audio")
        z.writestr(f"__MACOSX/clips/._{zipped[0].name}", b"\x00\x05\x16\x07 AppleDouble")
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
    assert len(records) == 20  # 10 loose + 6 zip members + 4 tar members; text and AppleDouble files left out
    zipped = [r for r in records if "set.zip::" in r.path]
    tarred = [r for r in records if "set.tar::" in r.path]
    assert len(zipped) == 6 and len(tarred) == 4
    assert all(r.offset >= 0 for r in tarred)  # plain tar members are read by byte range
    for record, clip in ((zipped[0], clips[10]), (tarred[0], clips[16])):
        assert record.path.endswith(clip.name)
        assert read_bytes(record.uri, record.offset, record.size, s3) == clip.read_bytes()
    assert len({r.file_id for r in records}) == 20


def test_a_source_list_on_s3_names_objects_and_a_missing_one_gets_a_row(
    s3_server: str, bucket: tuple[s3fs.S3FileSystem, list[Path]]
) -> None:
    fs, clips = bucket
    s3 = S3Options(s3_server)
    loose = f"s3://archive/audio/{clips[0].parent.name}/{clips[0].name}"
    fs.pipe_file(
        "archive/lists/tonight.txt", f"{loose}\ns3://archive/bundles/set.zip\ns3://archive/gone.wav\n".encode()
    )
    records = list(list_sources([], s3, files_from="s3://archive/lists/tonight.txt"))
    assert [r.path for r in records[:1] + records[-1:]] == [loose, "s3://archive/gone.wav"]
    assert len(records) == 1 + 6 + 1 and records[-1].version == "missing"
    assert read_bytes(records[0].uri, s3=s3) == clips[0].read_bytes()


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
    # show reads the dataset on S3; without _SUCCESS it says the run did not finish.
    shown = runner.invoke(main, ["show", "s3://archive/labels/", "--s3-endpoint", s3_server])
    assert shown.exit_code == 0, shown.output
    assert all(str(r["path"]) in shown.output for r in rows) and "did not finish" not in shown.output
    fs.rm(f"archive/labels/{SUCCESS_FILE}")
    partial = runner.invoke(main, ["show", "s3://archive/labels/", "--s3-endpoint", s3_server])
    assert "its last run did not finish; rerun the same tag command" in partial.output
    missing = runner.invoke(main, ["show", "s3://archive/nothing/", "--s3-endpoint", s3_server])
    assert missing.exit_code == 1 and "holds no tag output" in missing.output


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


class _FlakyProxy:
    """An HTTP proxy in front of the S3 server that answers 503 (SlowDown) to the first GET of every
    object, or 500 to every PUT when ``fail_puts`` is set: S3's own transient failures, for real."""

    def __init__(self, upstream: str) -> None:
        import http.client
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import urlsplit

        self.failed_gets: set[str] = set()
        self.fail_puts = False
        target = urlsplit(upstream)
        host = target.hostname or "127.0.0.1"
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # answers "Expect: 100-continue" as clients expect

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                body = self._body()
                key = self.path.split("?")[0]
                if self.command == "GET" and key.count("/") >= 2 and key not in proxy.failed_gets:
                    proxy.failed_gets.add(key)
                    return self._fail(503, "SlowDown")
                if self.command == "PUT" and proxy.fail_puts:
                    return self._fail(500, "InternalError")
                connection = http.client.HTTPConnection(host, target.port, timeout=30)
                # The upstream's own Host header (moto reads the bucket from it).
                drop = ("host", "expect", "transfer-encoding", "content-length")
                headers = {k: v for k, v in self.headers.items() if k.lower() not in drop}
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                # A HEAD's length is the object's; otherwise the body's.
                length = response.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(data))
                self.send_header("Content-Length", length)
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> bytes | None:
                if "chunked" in self.headers.get("Transfer-Encoding", ""):
                    data = b""
                    while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                        data += self.rfile.read(size)
                        self.rfile.readline()
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return data
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else None

            def _fail(self, status: int, code: str) -> None:
                data = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def test_transient_read_errors_are_retried_and_failed_writes_keep_committed_output(
    s3_server: str, bucket: tuple[s3fs.S3FileSystem, list[Path]]
) -> None:
    fs, _ = bucket
    proxy = _FlakyProxy(s3_server)
    try:
        args = ["tag", "s3://archive/audio/", "--out", "s3://archive/flaky/", "--s3-endpoint", proxy.url]
        result = CliRunner().invoke(main, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert len(proxy.failed_gets) >= 10  # every object's first read failed, and was retried
        rows = _read(fs, "archive/flaky/")
        assert len(rows) == 10 and all(r["status"] == "ok" for r in rows)
        committed = {p: fs.cat_file(p) for p in fs.glob("archive/flaky/part-*.parquet")}
        assert committed
        # One more input, and now every write fails: the run fails, and what was committed stays.
        fs.pipe_file("archive/audio/late/late.wav", fs.cat_file(next(iter(sorted(fs.find("archive/audio/"))))))
        proxy.fail_puts = True
        again = CliRunner().invoke(main, args)
        assert again.exit_code != 0
        fs.invalidate_cache()
        assert {p: fs.cat_file(p) for p in fs.glob("archive/flaky/part-*.parquet")} == committed
        fs.rm("archive/audio/late/late.wav")
    finally:
        proxy.close()


def test_credentials_never_reach_output_or_messages(
    s3_server: str, bucket: tuple[s3fs.S3FileSystem, list[Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "SECRETkey-never-print-me-0123456789"
    fs, _ = bucket
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)  # the driver's S3 calls sign with it
    runner = CliRunner()
    ok = runner.invoke(main, ["tag", "s3://archive/audio/", "--out", "s3://archive/secret/", "--s3-endpoint",
                              s3_server])  # fmt: skip
    failed = runner.invoke(main, ["tag", "s3://missing-bucket/", "--out", "o", "--s3-endpoint", s3_server])
    texts = [ok.output, failed.output, fs.cat_file("archive/secret/_SUCCESS").decode()]
    texts += [fs.cat_file(p).decode("latin-1") for p in fs.glob("archive/secret/part-*.parquet")]
    assert not any(secret in text for text in texts)


def test_no_credentials_and_an_endpoint_that_does_not_answer_are_one_line_errors(tmp_path: Path) -> None:
    """botocore raises these outside OSError; the CLI says what is wrong, and what to do, in one line."""
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    tag = ["tag", "s3://archive/audio/", "--out", str(tmp_path / "out"), "--s3-endpoint", endpoint]
    no_credentials = {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "AWS_PROFILE": None,
                      "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_CONFIG_FILE": str(tmp_path / "none"),
                      "AWS_EC2_METADATA_DISABLED": "true"}  # fmt: skip
    # Another endpoint: s3fs caches a file system per endpoint, with the credentials it found then.
    result = CliRunner().invoke(main, [*tag[:-1], f"http://127.0.0.1:{free_port()}"], env=no_credentials)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: S3: Unable to locate credentials: set AWS_ACCESS_KEY_ID"), result.output
    for args in (tag, ["show", "s3://archive/labels/", "--s3-endpoint", endpoint]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1, result.output
        assert result.output.startswith(f'Error: S3: Could not connect to the endpoint URL: "{endpoint}/'), (
            result.output
        )
