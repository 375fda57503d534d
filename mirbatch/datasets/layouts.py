"""Labelled data-set layouts -> lists of ``LabelledFile``.

- folder per label: ``ROOT/<label>/**/<audio>`` (what ``mirbatch data render`` writes, and what users
  with their own recordings bring); any label names.
- IRMAS training data: ``ROOT/<code>/*.wav`` with IRMAS's three-letter instrument codes (``cel``,
  ``cla``, ``flu``, ``gac``, ``gel``, ``org``, ``pia``, ``sax``, ``tru``, ``vio``, ``voi``), mapped to
  taxonomy labels (``voi``, the voice, keeps its name ``voice``).
- NSynth: ``ROOT/examples.json`` + ``ROOT/audio/<note>.wav``; the label is the note's
  ``instrument_family_str`` (``bass``, ``brass``, ``flute``, ``guitar``, ...), the family being what
  NSynth's own classification task uses.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mirbatch.audio import MEDIA_EXTENSIONS
from mirbatch.sources import is_hidden, walk

__all__ = [
    "IRMAS_LABELS",
    "LAYOUTS",
    "LabelledFile",
    "clip_records",
    "detect_layout",
    "folder_dataset",
    "irmas_dataset",
    "load_dataset",
    "nsynth_dataset",
    "split_by_file",
    "split_by_label",
    "write_clip_records",
]

IRMAS_LABELS: dict[str, str] = {
    "cel": "cello",
    "cla": "clarinet",
    "flu": "flute",
    "gac": "acoustic_guitar",
    "gel": "electric_guitar",
    "org": "organ",
    "pia": "piano",
    "sax": "saxophone",
    "tru": "trumpet",
    "vio": "violin",
    "voi": "voice",
}


@dataclass(frozen=True)
class LabelledFile:
    """One training/evaluation file and its label.

    Attributes
    ----------
    path, label : str
        Where the audio is, and what plays in it.
    group : str
        Files of one group land on the same side of a split: the renders of one planned clip in
        every library, and the morphs between them, play the same notes. Empty: the file's name.
    """

    path: str
    label: str
    group: str = ""


def _audio_files(folder: Path) -> list[Path]:
    """Audio files under ``folder``, walked as ``tag`` walks a source (archives are not opened)."""
    return sorted(walk(folder, lambda name: Path(name).suffix.lower() in MEDIA_EXTENSIONS))


def _keep(label: str, labels: tuple[str, ...] | None) -> bool:
    return labels is None or label in labels


def clip_records(root: Path) -> list[dict[str, Any]]:
    """The records of a render's or morph's ``clips.jsonl`` (one per clip: path, label, index, notes,
    ...); empty when ``root`` has none."""
    index = root / "clips.jsonl"
    if not index.is_file():
        return []
    with index.open() as f:
        return [json.loads(line) for line in f]


def write_clip_records(root: Path, records: list[dict[str, Any]]) -> None:
    """Write ``root/clips.jsonl``, one JSON record per clip (what ``clip_records`` reads)."""
    with (root / "clips.jsonl").open("w") as f:
        f.writelines(json.dumps(record) + "\n" for record in records)


def _clip_groups(root: Path) -> dict[str, str]:
    """Relative path -> ``label/index`` of the planned clip."""
    return {r["path"]: f"{r['label']}/{int(r['index']):05d}" for r in clip_records(root)}


def folder_dataset(root: Path, labels: tuple[str, ...] | None = None) -> list[LabelledFile]:
    """``root/<label>/**/<audio>``; ``labels`` keeps only those folders.

    Renders and morphs (a ``clips.jsonl`` beside the folders) group each file with its planned clip.
    """
    groups = _clip_groups(root)
    files: list[LabelledFile] = []
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir() and not is_hidden(p.name)):
        if _keep(label_dir.name, labels):
            files.extend(
                LabelledFile(str(p), label_dir.name, groups.get(p.relative_to(root).as_posix(), ""))
                for p in _audio_files(label_dir)
            )
    return files


def irmas_dataset(root: Path, labels: tuple[str, ...] | None = None) -> list[LabelledFile]:
    """IRMAS training layout: a folder per three-letter code, mapped to taxonomy labels."""
    files: list[LabelledFile] = []
    for code, label in IRMAS_LABELS.items():
        folder = root / code
        if folder.is_dir() and _keep(label, labels):
            files.extend(LabelledFile(str(p), label) for p in _audio_files(folder))
    return files


def nsynth_dataset(root: Path, labels: tuple[str, ...] | None = None) -> list[LabelledFile]:
    """NSynth layout: ``examples.json`` maps note names to ``instrument_family_str``."""
    examples = json.loads((root / "examples.json").read_text())
    if not isinstance(examples, dict):
        raise ValueError(f"{root / 'examples.json'} is not an NSynth examples file (expected an object)")
    files: list[LabelledFile] = []
    for note, info in sorted(examples.items()):
        family = info.get("instrument_family_str") if isinstance(info, dict) else None
        if not isinstance(family, str):
            raise ValueError(f"NSynth example {note!r} has no instrument_family_str")
        path = root / "audio" / f"{note}.wav"
        if path.is_file() and _keep(family, labels):
            files.append(LabelledFile(str(path), family))
    return files


LAYOUTS: dict[str, Callable[[Path, tuple[str, ...] | None], list[LabelledFile]]] = {
    "folder": folder_dataset,
    "irmas": irmas_dataset,
    "nsynth": nsynth_dataset,
}


def detect_layout(root: Path) -> str:
    """``nsynth`` when ``examples.json`` and ``audio/`` are there, ``irmas`` when every sub-folder
    is an IRMAS code, else ``folder``."""
    if (root / "examples.json").is_file() and (root / "audio").is_dir():
        return "nsynth"
    subdirs = {p.name for p in root.iterdir() if p.is_dir() and not is_hidden(p.name)}
    if subdirs and subdirs <= set(IRMAS_LABELS):
        return "irmas"
    return "folder"


def load_dataset(root: Path, labels: tuple[str, ...] | None = None, layout: str | None = None) -> list[LabelledFile]:
    """Files of the data set at ``root`` (layout detected unless given), optionally only ``labels``.

    Raises
    ------
    FileNotFoundError
        When ``root`` is missing or holds no labelled audio.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"data set folder {root} does not exist")
    kind = layout or detect_layout(root)
    if kind not in LAYOUTS:
        raise ValueError(f"unknown data-set layout {kind!r}; known: {', '.join(LAYOUTS)}")
    files = LAYOUTS[kind](root, labels)
    if not files:
        raise FileNotFoundError(
            f"no labelled audio found in {root} ({kind} layout): expected e.g. {root}/violin/a.wav, "
            f"IRMAS folders ({', '.join(IRMAS_LABELS)}) or NSynth's examples.json + audio/"
        )
    return files


def split_by_file(
    files: list[LabelledFile], val_fraction: float, seed: int = 0
) -> tuple[list[LabelledFile], list[LabelledFile]]:
    """Split into (train, validation) by a hash of each file's group (else its name), so all patches of
    a file, and all renders and morphs of one planned clip, stay together.

    The assignment of a file depends only on its label, group or name and ``seed``, not on the other
    files, so adding files to a data set never moves existing ones across the split.
    """
    train: list[LabelledFile] = []
    val: list[LabelledFile] = []
    for f in files:
        key = f"{seed}:{f.label}/{f.group or Path(f.path).name}".encode()
        u = int.from_bytes(hashlib.sha256(key).digest()[:8], "little") / 2**64
        (val if u < val_fraction else train).append(f)
    return train, val


def split_by_label(
    files: list[LabelledFile], val_fraction: float, seed: int = 0
) -> tuple[list[LabelledFile], list[LabelledFile]]:
    """Split into (train, validation) by label: validation labels are never trained on, which is what
    a one-shot matcher must be validated on. At least one label lands on each side when there are
    two or more; the choice depends only on the label names and ``seed``."""
    labels = sorted({f.label for f in files})

    def rank(label: str) -> float:
        return int.from_bytes(hashlib.sha256(f"{seed}:{label}".encode()).digest()[:8], "little") / 2**64

    by_rank = sorted(labels, key=rank)
    n_val = min(len(labels) - 1, max(1, round(val_fraction * len(labels)))) if len(labels) > 1 else 0
    val_labels = set(by_rank[:n_val])
    return [f for f in files if f.label not in val_labels], [f for f in files if f.label in val_labels]
