"""scripts/real_notes.py on a package tarball the test writes (npm itself is never called)."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import soundfile as sf

from mirbatch.audio import decode
from mirbatch.datasets.layouts import load_dataset


def _mp3(freq: float) -> bytes:
    t = np.arange(22050) / 22050
    buffer = io.BytesIO()
    sf.write(buffer, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 22050, format="MP3")
    return buffer.getvalue()


def _package(path: Path, members: dict[str, bytes]) -> None:
    """An npm tarball: every member under ``package/`` unless its name says otherwise."""
    with tarfile.open(path, "w:gz") as archive:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            archive.addfile(info, io.BytesIO(body))


def test_notes_land_in_their_label_folder_and_nothing_leaves_it(
    tmp_path: Path, load_script: Callable[[str], ModuleType]
) -> None:
    script = load_script("real_notes")
    cache, out = tmp_path / "cache", tmp_path / "real"
    cache.mkdir()
    for instrument, (version, _) in script.PACKAGES.items():
        members = {"package/A2.mp3": _mp3(110.0), "package/README.md": b"# notes", "package/index.js": b""}
        if instrument == "cello":
            # A second take with a space in its name, and a member whose path points outside.
            members |= {"package/F2 v2.mp3": _mp3(87.3), "../../escape.mp3": _mp3(440.0)}
        _package(cache / f"{script.package_name(instrument)}-{version}.tgz", members)

    counts = script.write_dataset(out, cache)  # the tarballs are in the cache: no npm call

    assert counts["cello"] == 3 and counts["acoustic_guitar"] == 2  # steel and nylon strings
    assert sum(counts.values()) == len(script.PACKAGES) + 2
    assert sorted(p.name for p in (out / "cello").iterdir()) == [
        "cello-A2.mp3",
        "cello-F2_v2.mp3",
        "cello-escape.mp3",
    ]
    assert not (tmp_path / "escape.mp3").exists() and not list(tmp_path.glob("*.mp3"))
    sources = json.loads((out / "sources.json").read_text())
    assert {s["package"] for s in sources} == {script.package_name(i) for i in script.PACKAGES}
    assert all(len(s["tarball_sha256"]) == 64 for s in sources)

    files = load_dataset(out)  # the folder-per-label layout that `mirbatch eval --data` reads
    assert len(files) == sum(counts.values())
    assert {f.label for f in files} == set(counts)
    audio = decode(out / "violin" / "violin-A2.mp3")
    assert audio.duration_s > 0.9 and audio.sample_rate == 22050
