"""Lay out recorded instrument notes from npm as a data set, to test models on audio no SoundFont made.

The ``tonejs-instrument-*-mp3`` packages hold sampled recordings of instruments, one note per file
(1.4-26 s, MP3 at 44.1 kHz), for 15 of the taxonomy's 18 labels (none for viola, oboe or English
horn). Their READMEs say the samples come from public-domain sources (CC-BY 3.0) and were trimmed,
volume-matched, normalized and denoised. This fetches the pinned versions with ``npm pack`` (the
ordinary npm client; nothing else reaches the network) and writes a folder per label, which
``mirbatch eval`` reads, with ``sources.json`` naming each package, version and tarball hash. For
evaluation only: DESIGN.md allows the three sample libraries, and nothing else, as training
sources. Usage:

    python scripts/real_notes.py data/real_notes          # then: mirbatch eval --data data/real_notes
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import tarfile
from pathlib import Path, PurePosixPath

from mirbatch.taxonomy import DEFAULT_LABELS

__all__ = ["PACKAGES", "extract_notes", "fetch_package", "main", "write_dataset"]

# instrument -> (pinned version, taxonomy label); the package is tonejs-instrument-<instrument>-mp3.
PACKAGES: dict[str, tuple[str, str]] = {
    "bassoon": ("1.1.2", "bassoon"),
    "cello": ("1.1.1", "cello"),
    "clarinet": ("1.1.2", "clarinet"),
    "contrabass": ("1.1.2", "double_bass"),
    "flute": ("1.1.2", "flute"),
    "french-horn": ("1.1.2", "french_horn"),
    "guitar-acoustic": ("1.1.2", "acoustic_guitar"),
    "guitar-nylon": ("1.1.1", "acoustic_guitar"),
    "guitar-electric": ("1.1.1", "electric_guitar"),
    "organ": ("1.1.1", "organ"),
    "piano": ("1.1.2", "piano"),
    "saxophone": ("1.1.2", "saxophone"),
    "trombone": ("1.1.2", "trombone"),
    "trumpet": ("1.1.2", "trumpet"),
    "tuba": ("1.1.2", "tuba"),
    "violin": ("1.1.1", "violin"),
}
assert {label for _, label in PACKAGES.values()} <= set(DEFAULT_LABELS)


def package_name(instrument: str) -> str:
    return f"tonejs-instrument-{instrument}-mp3"


def fetch_package(instrument: str, cache: Path) -> Path:
    """The package's tarball in ``cache``, packed there by ``npm pack`` unless it already is."""
    version = PACKAGES[instrument][0]
    tarball = cache / f"{package_name(instrument)}-{version}.tgz"
    if not tarball.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        try:
            subprocess.run(
                ["npm", "pack", f"{package_name(instrument)}@{version}", "--pack-destination", str(cache)],
                check=True,
                capture_output=True,
                text=True,
            )
        except FileNotFoundError as exc:
            raise SystemExit("npm is not installed: install Node.js's npm client (apt-get install npm)") from exc
        except subprocess.CalledProcessError as exc:
            raise SystemExit(f"npm pack {package_name(instrument)}@{version} failed:\n{exc.stderr}") from exc
    return tarball


def extract_notes(tarball: Path, instrument: str, label_dir: Path) -> list[str]:
    """Copy the package's MP3 notes into ``label_dir`` as ``<instrument>-<note>.mp3``; their names.

    Members are read by name, never extracted as given (a member path cannot leave ``label_dir``);
    a note's other takes (``F2 v2.mp3``) keep their suffix with the space replaced.
    """
    label_dir.mkdir(parents=True, exist_ok=True)
    names = []
    with tarfile.open(tarball, "r:gz") as archive:
        for member in archive.getmembers():
            stem = PurePosixPath(member.name)
            if not member.isfile() or stem.suffix.lower() != ".mp3":
                continue
            name = f"{instrument}-{re.sub(r'[^A-Za-z0-9_.-]', '_', stem.name)}"
            source = archive.extractfile(member)
            assert source is not None  # a regular file member always has a body
            (label_dir / name).write_bytes(source.read())
            names.append(name)
    return sorted(names)


def write_dataset(out: Path, cache: Path) -> dict[str, int]:
    """Fetch every package and write ``out/<label>/*.mp3`` and ``out/sources.json``; files per label."""
    sources = []
    counts: dict[str, int] = {}
    for instrument, (version, label) in PACKAGES.items():
        tarball = fetch_package(instrument, cache)
        notes = extract_notes(tarball, instrument, out / label)
        counts[label] = counts.get(label, 0) + len(notes)
        digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
        package = {"package": package_name(instrument), "version": version, "label": label}
        sources.append({**package, "tarball_sha256": digest, "notes": notes})
    (out / "sources.json").write_text(json.dumps(sources, indent=1) + "\n")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="data-set folder to write (a folder per label)")
    parser.add_argument("--cache", type=Path, default=Path("build/npm"), help="where package tarballs are kept")
    args = parser.parse_args()
    counts = write_dataset(args.out, args.cache)
    for label, n in sorted(counts.items()):
        print(f"{label:<16} {n:>4}")
    print(f"{sum(counts.values())} notes in {len(counts)} labels -> {args.out}")


if __name__ == "__main__":
    main()
