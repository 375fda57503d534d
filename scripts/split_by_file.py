"""Split a data set laid out a folder per label into two such folders, per label, by file.

Each label's files are shuffled with a generator seeded by ``(seed, label)`` alone, so a label's
split does not depend on the others; the first ``--per-label`` of them (never more than half) go to
``--first``, the rest to ``--second``. Both are folders of symlinks to the original files, ready for
``mirbatch train --data FIRST`` and ``mirbatch eval --data SECOND`` (README, Fine-tuning on your own
files: the recorded notes split in halves).

    python scripts/split_by_file.py data/real_notes --first data/notes_learn --second data/notes_test --seed 0
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from mirbatch.audio import MEDIA_EXTENSIONS

__all__ = ["split_by_file"]


def split_by_file(
    data: Path, first: Path, second: Path, seed: int, per_label: int | None = None
) -> dict[str, tuple[int, int]]:
    """Link each label's files into ``first`` (half of them, or ``per_label`` if fewer) and ``second``.

    Returns
    -------
    dict
        ``{label: (files in first, files in second)}``. Existing links are kept, so a rerun with the
        same arguments changes nothing; a folder that holds files of another split is refused.
    """
    counts: dict[str, tuple[int, int]] = {}
    for folder in sorted(p for p in data.iterdir() if p.is_dir()):
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in MEDIA_EXTENSIONS)
        random.Random(f"{seed}-{folder.name}").shuffle(files)
        n = len(files) // 2 if per_label is None else min(per_label, len(files) // 2)
        for destination, chosen in ((first, files[:n]), (second, files[n:])):
            target = destination / folder.name
            target.mkdir(parents=True, exist_ok=True)
            wanted = {f.name for f in chosen}
            strays = sorted(p.name for p in target.iterdir() if p.name not in wanted)
            if strays:
                raise SystemExit(f"{target} holds files of another split ({strays[0]}, ...): remove the folder first")
            for source in chosen:
                link = target / source.name
                if not link.is_symlink():
                    link.symlink_to(source.resolve())
        counts[folder.name] = (n, len(files) - n)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="a data set, a folder per label")
    parser.add_argument("--first", type=Path, required=True, help="folder for the first part (to learn from)")
    parser.add_argument("--second", type=Path, required=True, help="folder for the rest (to test on)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-label", type=int, default=None, help="files per label in --first (default: half)")
    args = parser.parse_args()
    counts = split_by_file(args.data, args.first, args.second, args.seed, args.per_label)
    learn, test = (sum(c[i] for c in counts.values()) for i in (0, 1))
    print(f"{len(counts)} labels: {learn} files -> {args.first}, {test} -> {args.second}")


if __name__ == "__main__":
    main()
