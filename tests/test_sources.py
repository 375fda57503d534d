"""Listing inputs: files, folders (recursive, audio names only), globs; stable ids."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import sine, write_audio

from mirbatch.sources import SourceError, list_sources


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for rel in ["a/one.wav", "a/b/two.flac", "d/four.ogg"]:
        write_audio(tmp_path / rel, sine(440, 0.1), 22050)
    # Listing goes by name only: an upper-case extension counts, and content is not read.
    (tmp_path / "a/b/c").mkdir(parents=True)
    (tmp_path / "a/b/c/three.MP3").write_bytes(b"x")
    (tmp_path / "a/notes.txt").write_text("not audio")
    return tmp_path


def test_folder_is_walked_recursively_for_audio_names(tree: Path) -> None:
    records = list(list_sources([str(tree / "a")]))
    # os.walk order: a folder's files, then its sub-folders, each sorted.
    assert [Path(r.path).relative_to(tree).as_posix() for r in records] == [
        "a/one.wav",
        "a/b/two.flac",
        "a/b/c/three.MP3",
    ]
    assert all(Path(r.uri).is_absolute() for r in records)


def test_glob_file_and_dedupe(tree: Path) -> None:
    single = str(tree / "d" / "four.ogg")
    records = list(list_sources([str(tree / "**" / "*.wav"), single, single]))
    assert sorted(Path(r.path).name for r in records) == ["four.ogg", "one.wav"]


def test_explicit_files_are_taken_whatever_their_name(tree: Path) -> None:
    (record,) = list_sources([str(tree / "a" / "notes.txt")])
    assert record.size == len("not audio")


def test_file_id_changes_with_content_and_is_stable_otherwise(tree: Path) -> None:
    path = tree / "a" / "one.wav"
    (first,) = list_sources([str(path)])
    (again,) = list_sources([str(path)])
    assert first.file_id == again.file_id
    os.utime(path, ns=(0, first_ns := int(first.version) + 1_000_000_000))
    (touched,) = list_sources([str(path)])
    assert touched.version == str(first_ns) and touched.file_id != first.file_id


def test_symlinked_folders_are_followed_and_each_real_folder_walked_once(tree: Path) -> None:
    """Archives on shared storage link their volumes in; loops and second links must add nothing
    (Python's glob follows a loop until the OS stops it, listing every file again at each turn)."""
    (tree / "a" / "loop").symlink_to(tree / "a", target_is_directory=True)
    (tree / "a" / "volume").symlink_to(tree / "d", target_is_directory=True)
    (tree / "a" / "volume_again").symlink_to(tree / "d", target_is_directory=True)
    expected = ["a/one.wav", "a/b/two.flac", "a/b/c/three.MP3", "a/volume/four.ogg"]
    walked = [Path(r.path).relative_to(tree).as_posix() for r in list_sources([str(tree / "a")])]
    assert walked == expected
    globbed = [Path(r.path).relative_to(tree).as_posix() for r in list_sources([str(tree / "a" / "**" / "*")])]
    assert globbed == ["a/notes.txt", *expected]  # a glob takes any name it matches
    deep = [Path(r.path).relative_to(tree).as_posix() for r in list_sources([str(tree / "a" / "**" / "*.ogg")])]
    assert deep == ["a/volume/four.ogg"]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("a/*.wav", ["a/one.wav"]),
        ("a/**/*.wav", ["a/one.wav"]),
        ("**/t*.*", ["a/b/two.flac", "a/b/c/three.MP3"]),
        ("*/b/*", ["a/b/two.flac"]),
        ("a/**", ["a/notes.txt", "a/one.wav", "a/b/two.flac", "a/b/c/three.MP3"]),
        ("a/b/c/*.mp3", []),  # case-sensitive, as the shell's globs
        ("[ad]/*.[ow]*", ["a/one.wav", "d/four.ogg"]),
    ],
)
def test_globs_match_as_the_shell_does(
    tree: Path, pattern: str, expected: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tree)  # a relative pattern lists relative paths, as glob does
    if not expected:
        with pytest.raises(SourceError, match="no files match"):
            list(list_sources([pattern]))
        return
    assert [r.path for r in list_sources([pattern])] == expected


@pytest.mark.parametrize("source", ["/no/such/dir", "/no/such/*.wav", "ftp://host/x.wav"])
def test_bad_sources_are_errors(source: str) -> None:
    with pytest.raises(SourceError):
        list(list_sources([source]))


def test_a_source_with_no_audio_in_it_is_an_error_that_names_it(tmp_path: Path) -> None:
    """Most likely the wrong folder: saying so beats tagging nothing and exiting 0."""
    import zipfile

    (tmp_path / "empty").mkdir()
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "notes.txt").write_text("not audio")
    with zipfile.ZipFile(tmp_path / "docs.zip", "w") as z:
        z.writestr("readme.md", "text")
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "a.wav").write_bytes(b"RIFF")
    for name in ("empty", "text", "docs.zip"):
        with pytest.raises(SourceError, match=f"no audio files in '{tmp_path / name}' \\(looked for [^)]*\\.wav"):
            list(list_sources([str(tmp_path / "audio"), str(tmp_path / name)]))


def test_local_archives_list_members_and_read_them_alone(tmp_path: Path) -> None:
    import tarfile
    import zipfile

    from mirbatch.sources import read_bytes

    clips = {f"c{i}.wav": bytes([i]) * (100 + i) for i in range(3)}
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as z:
        for name, data in clips.items():
            z.writestr(f"dir/{name}", data)
        z.writestr("dir/readme.md", "text")
    with tarfile.open(tmp_path / "b.tar.gz", "w:gz") as t:
        for name in clips:
            (tmp_path / name).write_bytes(clips[name])
            t.add(tmp_path / name, f"./t/{name}")  # as `tar czf b.tar.gz .` names them
            (tmp_path / name).unlink()
    records = list(list_sources([str(tmp_path)]))
    assert sorted(r.path.split("::")[1] for r in records) == sorted(
        [f"dir/{n}" for n in clips] + [f"t/{n}" for n in clips]
    )
    # The shown path drops tar's "./"; the uri keeps the member's real name, which reads it.
    assert sorted(r.uri.split("::")[1] for r in records if ".tar" in r.uri) == [f"./t/{n}" for n in sorted(clips)]
    for record in records:
        name = record.path.rsplit("/", 1)[1]
        assert read_bytes(record.uri, record.offset, record.size) == clips[name]
        assert record.offset == -1  # zip and compressed tar: read through the archive index / stream
    # Rewriting the archive changes its members' ids (resume never trusts stale output).
    before = {r.path: r.file_id for r in records}
    with zipfile.ZipFile(tmp_path / "a.zip", "a") as z:
        z.writestr("dir/c9.wav", b"x")
    after = {r.path: r.file_id for r in list_sources([str(tmp_path / "a.zip")])}
    assert all(after[p] != before[p] for p in after if p in before)


def test_a_broken_archive_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "bad.zip").write_bytes(b"PK not a zip")
    with pytest.raises(SourceError, match="cannot read archive"):
        list(list_sources([str(tmp_path / "bad.zip")]))


def test_archive_members_that_try_to_escape_are_only_names(tmp_path: Path) -> None:
    import zipfile

    from mirbatch.sources import read_bytes

    archive = tmp_path / "inner" / "evil.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("../../escaped.wav", b"RIFF one")
        z.writestr("/tmp/absolute.wav", b"RIFF two")
    records = {r.path.split("::")[1]: r for r in list_sources([str(archive)])}
    assert set(records) == {"../../escaped.wav", "/tmp/absolute.wav"}
    assert read_bytes(records["../../escaped.wav"].uri) == b"RIFF one"
    assert not (tmp_path / "escaped.wav").exists() and not Path("/tmp/absolute.wav").exists()


def test_hidden_names_and_macos_folders_are_passed_over_when_walking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import zipfile

    apple_double = b"\x00\x05\x16\x07 AppleDouble metadata"
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "flute.wav").write_bytes(b"RIFF flute")
    (tmp_path / "sub" / "._flute.wav").write_bytes(apple_double)
    (tmp_path / "__MACOSX" / "sub").mkdir(parents=True)
    (tmp_path / "__MACOSX" / "sub" / "._flute.wav").write_bytes(apple_double)
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "tuba.wav").write_bytes(b"RIFF tuba")
    with zipfile.ZipFile(tmp_path / "mac.zip", "w") as z:
        z.writestr("sub/oboe.wav", b"RIFF oboe")
        z.writestr("sub/._oboe.wav", apple_double)
        z.writestr("__MACOSX/sub/._oboe.wav", apple_double)
    listed = [r.path.removeprefix(str(tmp_path)) for r in list_sources([str(tmp_path)])]
    assert listed == ["/mac.zip::sub/oboe.wav", "/sub/flute.wav"]
    # A glob passes them over under its fixed folders, wherever those are; a file named alone is read.
    assert [r.path for r in list_sources([f"{tmp_path}/**/*.wav"])] == [f"{tmp_path}/sub/flute.wav"]
    # A relative glob whose first part is a wildcard has no fixed folders at all.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "__MACOSX" / "sub" / "oboe.wav").write_bytes(b"RIFF oboe")
    assert [r.path for r in list_sources(["**/*.wav"])] == ["sub/flute.wav"]
    assert [r.path for r in list_sources([str(tmp_path / "sub" / "._flute.wav")])] == [
        str(tmp_path / "sub" / "._flute.wav")
    ]
    hidden_root = tmp_path / ".cache"
    assert [r.path for r in list_sources([str(hidden_root)])] == [str(hidden_root / "tuba.wav")]


def test_a_folder_that_cannot_be_listed_is_left_out_with_a_warning(
    tree: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # chmod 000 does not stop root (who runs CI), so the OS's refusal is made here.
    scandir = os.scandir

    def refuse_b(path: str | Path) -> object:
        if Path(path).name == "b":
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refuse_b)
    records = list(list_sources([str(tree / "a")]))
    assert [Path(r.path).name for r in records] == ["one.wav"]
    assert f"cannot list folder {tree / 'a' / 'b'} (Permission denied): its files are left out" in caplog.text


def test_an_archive_inside_an_archive_is_an_input_whose_row_says_to_extract_it(tmp_path: Path) -> None:
    """Sample packs ship zips of zips: saying so beats leaving them out without a word."""
    import tarfile
    import zipfile

    import pyarrow as pa

    from mirbatch.decoding import decode_batch

    tone = write_audio(tmp_path / "tone.wav", sine(440, 0.5), 22050)
    with zipfile.ZipFile(tmp_path / "inner.zip", "w") as z:
        z.write(tone, "deep.wav")
    with tarfile.open(tmp_path / "pack.tar.gz", "w:gz") as t:
        t.add(tone, "a/tone.wav")
        t.add(tmp_path / "inner.zip", "a/inner.zip")
    records = list(list_sources([str(tmp_path / "pack.tar.gz")]))
    assert [r.path.split("::")[1] for r in records] == ["a/tone.wav", "a/inner.zip"]
    rows = pa.concat_tables(decode_batch(pa.Table.from_pylist([r.to_dict() for r in records]), 22050, 10.0))
    errors = dict(zip(rows.column("path").to_pylist(), rows.column("error").to_pylist(), strict=True))
    assert errors[records[0].path] is None
    assert errors[records[1].path] == (
        "an archive inside an archive is not opened: extract a/inner.zip and tag it as a source of its own"
    )


def test_a_source_list_names_inputs_one_per_line_and_a_missing_one_gets_a_row(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A catalogue's export outlives some of its files: one gone must not stop a million others."""
    import io

    import pyarrow as pa

    from mirbatch.decoding import decode_batch

    write_audio(tree / "trailing space .wav", sine(440, 0.2), 22050)
    listing = tree / "list.txt"
    listing.write_text(
        "# exported from the catalogue\n"
        f"{tree / 'a' / 'one.wav'}\n"
        "\n"
        "d\n"  # a folder, relative to the working folder
        f"{tree / 'gone.wav'}\r\n"
        f"{tree / 'trailing space .wav'}\n"
        f"{tree / 'a' / 'one.wav'}\n"  # twice: one input
    )
    monkeypatch.chdir(tree)
    records = list(list_sources([str(tree / "a" / "b")], files_from=str(listing)))
    assert [r.path for r in records] == [
        str(tree / "a" / "b" / "two.flac"),
        str(tree / "a" / "b" / "c" / "three.MP3"),
        str(tree / "a" / "one.wav"),
        "d/four.ogg",
        str(tree / "gone.wav"),
        str(tree / "trailing space .wav"),
    ]
    gone = pa.Table.from_pylist([records[4].to_dict()])
    (row,) = pa.concat_tables(decode_batch(gone, 22050, 10.0)).to_pylist()
    assert row["error"] == f"cannot read file: [Errno 2] No such file or directory: '{tree / 'gone.wav'}'"
    # Standard input, and a line that names nothing a glob or folder can hold: the run stops there.
    (tree / "dangling.wav").symlink_to(tree / "gone.wav")
    monkeypatch.setattr("sys.stdin", io.StringIO("a/one.wav\ndangling.wav\nnothing/*.wav\n"))
    listed = list_sources([], files_from="-")
    assert [next(listed).path, next(listed).version] == ["a/one.wav", "missing"]  # a dangling link is not there
    with pytest.raises(SourceError, match=r"^- line 3: no files match 'nothing/\*\.wav'$"):
        next(listed)
    listed = list_sources([], files_from="-")
    monkeypatch.setattr("sys.stdin", io.StringIO("ftp://host/x.wav\n"))
    with pytest.raises(SourceError, match=r"^- line 1: unsupported source scheme 'ftp'"):
        next(listed)
    with pytest.raises(SourceError, match=r"cannot read the source list /no/such/list\.txt"):
        list(list_sources([], files_from="/no/such/list.txt"))
