"""Re-enrol a trained matcher's support at other pitch shifts and recalibrate its unknown threshold.

A matcher checkpoint states the pitch shifts at which support examples are enrolled, and its
unknown threshold was calibrated with them (``mirbatch train --support-shifts``). This rewrites a
checkpoint for new shifts without retraining: the threshold is calibrated again, the way training
does, on renders of the checkpoint's validation labels (instruments it never trained on), and the
5-way 1-shot accuracy over those labels is recorded beside it. The model's weights are unchanged; its
hash changes, so support libraries must be enrolled again.

Usage::

    python scripts/calibrate_matcher.py mirbatch/weights/siamese-default.safetensors \
        --data data/val_fluidr3 --data data/val_timgm6mb --data data/val_freepats --support-shifts -12,-6,0,6,12
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from mirbatch.datasets.layouts import load_dataset
from mirbatch.features import shifts_key
from mirbatch.models import Matcher, load_checkpoint, save_checkpoint
from mirbatch.patches import build_patch_set
from mirbatch.training import calibrate_matcher, describe_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data", type=Path, action="append", required=True, help="renders of the validation labels")
    parser.add_argument("--support-shifts", required=True, help="comma-separated semitones, 0 included")
    args = parser.parse_args()
    checkpoint = load_checkpoint(str(args.checkpoint))
    if not isinstance(checkpoint.model, Matcher):
        parser.error(f"{args.checkpoint} is a classifier, not a matcher")
    val_labels = set(checkpoint.meta.metrics.get("val_labels", ()))
    files = [f for root in args.data for f in load_dataset(root) if f.label in val_labels]
    if len({f.label for f in files}) < 5:
        parser.error(f"--data must hold renders of at least 5 of the validation labels {sorted(val_labels)}")
    shifts = tuple(sorted(int(x) for x in args.support_shifts.split(",")))
    features = checkpoint.meta.features
    patches = build_patch_set(files, sorted({f.label for f in files}), features)
    calibrated = calibrate_matcher(checkpoint.model, features, patches, shifts)
    thresholds = {key: threshold for key, (threshold, _) in calibrated.items()}
    five_way = {key: accuracy for key, (_, accuracy) in calibrated.items()}
    calibration = {
        "data": [describe_dataset(d) for d in args.data],
        "files": len(patches.files),
        # A checkpoint calibrated before keeps the threshold its training found.
        "unknown_threshold_at_training": checkpoint.meta.metrics.get("shift_calibration", {}).get(
            "unknown_threshold_at_training", checkpoint.meta.metrics.get("unknown_threshold")
        ),
        "val_5way_1shot": five_way,
    }
    metrics = {
        **checkpoint.meta.metrics,
        "unknown_threshold": thresholds[shifts_key(shifts)],
        "unknown_thresholds": thresholds,
        "shift_calibration": calibration,
    }
    meta = replace(checkpoint.meta, support_shifts=shifts, metrics=metrics)
    sha = save_checkpoint(args.checkpoint, checkpoint.model, meta)
    print(f"{args.checkpoint}: support shifts {list(shifts)}; on {len(patches.files)} validation files, unknown "
          f"thresholds {thresholds}, 5-way 1-shot {five_way}; sha256 {sha[:12]}")  # fmt: skip


if __name__ == "__main__":
    main()
