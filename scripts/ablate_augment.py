"""Augmentation ablation on cross-library validation: train with each augmentation left out in turn.

Trains the same model with ``--augment none``, ``default`` and ``default,-NAME`` for every
augmentation on the training libraries, evaluates each on the held-out library, and prints a
table (file-level accuracy and macro-F1 on the held-out library). Usage:

    python scripts/ablate_augment.py --train data/fluidr3 --train data/freepats --test data/timgm6mb \\
        --out build/ablation --epochs 15
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mirbatch.augment import AUGMENTATION_NAMES, AugmentConfig
from mirbatch.evaluate import evaluate_classifier
from mirbatch.training import TrainConfig, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", action="append", required=True, help="training data set (repeat)")
    parser.add_argument("--test", required=True, help="held-out data set")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()
    specs = ["none", "default", *(f"default,-{name}" for name in AUGMENTATION_NAMES)]
    rows = []
    for spec in specs:
        tag = spec.replace(",", "_").replace("-", "no-")
        config = TrainConfig(
            data=tuple(args.train), architecture=args.model, epochs=args.epochs, patience=args.epochs,
            augment=AugmentConfig.parse(spec),
        )  # fmt: skip
        path, result = train(config, args.out / f"{tag}.safetensors", storage=str(args.out / "runs"), name=tag)
        report = evaluate_classifier(str(path), [Path(args.test)])
        rows.append({"augment": spec, "val": result["val_file_accuracy"], "test": report.file.accuracy,
                     "test_macro_f1": report.file.macro_f1})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    (args.out / "ablation.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"\n{'augment':<28}{'val (train libs)':>18}{'held-out acc':>14}{'held-out F1':>13}")
    for r in rows:
        print(f"{r['augment']:<28}{r['val']:>18.3f}{r['test']:>14.3f}{r['test_macro_f1']:>13.3f}")


if __name__ == "__main__":
    main()
