"""Labelled data-set layouts -> lists of ``LabelledFile``.

A folder per label (``ROOT/<label>/**/*.wav``) is the layout ``mirbatch data render`` writes and the
one users with their own recordings bring.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from mirbatch.audio import AUDIO_EXTENSIONS

__all__ = ["LabelledFile", "folder_dataset", "split_by_file"]


@dataclass(frozen=True)
class LabelledFile:
    """One training/evaluation file and its label."""

    path: str
    label: str


def folder_dataset(root: Path, labels: tuple[str, ...] | None = None) -> list[LabelledFile]:
    """List ``root/<label>/**/<audio file>``; ``labels`` keeps only those folders.

    Raises
    ------
    FileNotFoundError
        When ``root`` is missing or holds no labelled audio.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"data set folder {root} does not exist")
    files: list[LabelledFile] = []
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if labels is not None and label_dir.name not in labels:
            continue
        for path in sorted(label_dir.rglob("*")):
            if path.is_file() and path.suffix.lower() in AUDIO_EXTENSIONS:
                files.append(LabelledFile(str(path), label_dir.name))
    if not files:
        raise FileNotFoundError(f"no audio found in {root}: expected a folder per label, e.g. {root}/violin/a.wav")
    return files


def split_by_file(
    files: list[LabelledFile], val_fraction: float, seed: int = 0
) -> tuple[list[LabelledFile], list[LabelledFile]]:
    """Split into (train, validation) by a hash of each file's name, so all patches of a file stay together.

    The assignment of a file depends only on its name and ``seed``, not on the other files, so
    adding files to a data set never moves existing ones across the split.
    """
    train: list[LabelledFile] = []
    val: list[LabelledFile] = []
    for f in files:
        key = f"{seed}:{f.label}/{Path(f.path).name}".encode()
        u = int.from_bytes(hashlib.sha256(key).digest()[:8], "little") / 2**64
        (val if u < val_fraction else train).append(f)
    return train, val
