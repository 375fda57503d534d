"""Patch sets: labelled files -> decoded, augmented, featurized patches, as training caches them
and evaluation scores them.

``build_patch_set`` decodes each file once, leaves out what cannot be an example of its label
(undecodable files, files with no sound), adds ``AugmentConfig.variants`` augmented copies of each
and cuts everything into unresized feature patches (``PatchSet``; saved as numeric arrays, loaded
without pickle). Every module a patch's values come from is in ``training``'s cache digest, this
one included, so a cache is never reused across changes to them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mirbatch.aggregate import DEFAULT_AGGREGATION, active_patches, patch_weights
from mirbatch.audio import DecodeError, decode
from mirbatch.augment import AugmentConfig, augment_clip
from mirbatch.baseline import stats_for
from mirbatch.datasets.layouts import LabelledFile
from mirbatch.features import (
    NO_SOUND,
    SILENT_DBFS,
    FeatureConfig,
    Featurizer,
    ScalogramFeaturizer,
    full_scale_level_db,
    make_featurizer,
)

__all__ = ["PatchSet", "build_patch_set"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PatchSet:
    """Cached patches.

    Attributes
    ----------
    inputs : torch.Tensor [shape=(patches, 1, rows, columns), dtype=float16]
        Unresized patches in [0, 1].
    targets : torch.Tensor [shape=(patches,), dtype=int64]
        Label index of each patch.
    owner : np.ndarray [shape=(patches,)]
        Index into ``files`` of each patch.
    level_db : np.ndarray [shape=(patches,), dtype=float32]
        The patch's peak level, which weighs it in its file's scores (``weights``).
    variant : np.ndarray [shape=(patches,), dtype=int8]
        0 for the clean file, 1.. for augmented copies.
    files : list of LabelledFile
    file_stats : np.ndarray [shape=(files, 80)]
        MFCC statistics of each clean file, for the baseline.
    skipped : tuple of (path, reason)
        The files left out when the set was built (not saved: a loaded set has none).
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    owner: np.ndarray
    level_db: np.ndarray
    variant: np.ndarray
    files: list[LabelledFile]
    file_stats: np.ndarray
    skipped: tuple[tuple[str, str], ...] = ()

    def save(self, path: Path) -> None:
        np.savez(
            path,
            inputs=self.inputs.numpy(),
            targets=self.targets.numpy(),
            owner=self.owner,
            level_db=self.level_db,
            variant=self.variant,
            paths=np.array([f.path for f in self.files], dtype=np.str_),
            labels=np.array([f.label for f in self.files], dtype=np.str_),
            file_stats=self.file_stats,
        )

    def weights(self, aggregation: str = DEFAULT_AGGREGATION) -> np.ndarray:
        """Each patch's weight in its file's scores [shape=(patches,)], as ``tag`` weighs them
        (``aggregate.patch_weights``); each clip (a file, or one augmented copy) against its own
        loudest patch. 0: the patch carries no sound."""
        return patch_weights(self.level_db, aggregation, group=self.owner.astype(np.int64) * 256 + self.variant)

    @classmethod
    def load(cls, path: Path) -> PatchSet:
        with np.load(path, allow_pickle=False) as z:
            files = [LabelledFile(str(p), str(label)) for p, label in zip(z["paths"], z["labels"], strict=True)]
            return cls(
                inputs=torch.from_numpy(z["inputs"]),
                targets=torch.from_numpy(z["targets"]),
                owner=z["owner"],
                level_db=z["level_db"],
                variant=z["variant"],
                files=files,
                file_stats=z["file_stats"],
            )


def _featurize(
    featurizer: Featurizer | ScalogramFeaturizer, clips: Sequence[tuple[int, int, np.ndarray]]
) -> tuple[torch.Tensor, np.ndarray, np.ndarray, np.ndarray]:
    """Clips ``(file index, variant, audio)`` -> (inputs, owner, variant, level_db) of their patches."""
    inputs, owners, variant_ids, levels = [], [], [], []
    for start in range(0, len(clips), 32):
        chunk = clips[start : start + 32]
        batch = featurizer([y for _, _, y in chunk], resize=False)
        inputs.append(batch.inputs.to(torch.float16))
        owners.append(np.array([c[0] for c in chunk])[batch.owner])
        variant_ids.append(np.array([c[1] for c in chunk], dtype=np.int8)[batch.owner])
        levels.append(batch.level_db.astype(np.float32))
    return torch.cat(inputs), np.concatenate(owners), np.concatenate(variant_ids), np.concatenate(levels)


def _patch_chunk(
    files: Sequence[LabelledFile],
    labels: Sequence[str],
    features: FeatureConfig,
    augment: AugmentConfig | None,
    seed: int,
    salt: int,
) -> PatchSet | tuple[tuple[str, str], ...]:
    """Decode, augment and featurize one chunk of files (a Ray task or a plain call).

    Undecodable files and files with no sound (no patch over ``SILENT_DBFS``, which ``tag`` labels
    ``unknown``) are left out and listed in ``skipped``: neither is an example of its label. A chunk
    with no file left returns its skipped files alone.
    """
    index = {label: i for i, label in enumerate(labels)}
    rate = features.sample_rate
    featurizer = make_featurizer(features)
    decoded: list[tuple[LabelledFile, np.ndarray]] = []
    skipped: list[tuple[str, str]] = []
    for f in files:
        try:
            decoded.append((f, decode(f.path, rate).samples))
        except DecodeError as exc:
            skipped.append((f.path, exc.reason))
    if not decoded:
        return tuple(skipped)
    inputs, owner, variant, level = _featurize(featurizer, [(i, 0, y) for i, (_, y) in enumerate(decoded)])
    # The rule tag and support add apply: a file with no patch over the floor has no sound.
    active = active_patches(level - full_scale_level_db(featurizer), floor_db=SILENT_DBFS, group=owner)
    silent = np.bincount(owner, weights=active, minlength=len(decoded)) == 0
    kept = []
    for (f, y), is_silent in zip(decoded, silent, strict=True):
        if is_silent:
            skipped.append((f.path, f"{NO_SOUND}: not an example of {f.label}"))
        else:
            kept.append((f, y))
    if not kept:
        return tuple(skipped)
    renumbered = np.cumsum(~silent) - 1
    sounding = ~silent[owner]
    parts = [(inputs[torch.from_numpy(sounding)], renumbered[owner[sounding]], variant[sounding], level[sounding])]
    if augment is not None and augment.variants:
        clips: list[tuple[int, int, np.ndarray]] = []  # (file index, variant, audio)
        for i, (f, y) in enumerate(kept):
            rng = np.random.default_rng([seed, salt, i])

            def other(rng: np.random.Generator = rng, label: str = f.label) -> np.ndarray:
                for _ in range(20):  # a clip of another label, for mixing
                    g, y2 = kept[int(rng.integers(len(kept)))]
                    if g.label != label:
                        return y2
                return np.zeros(1, np.float32)

            clips.extend((i, v, augment_clip(y, rate, augment, rng, other)) for v in range(1, augment.variants + 1))
        parts.append(_featurize(featurizer, clips))
    owner = np.concatenate([p[1] for p in parts])
    kept_files = [f for f, _ in kept]
    return PatchSet(
        torch.cat([p[0] for p in parts]),
        torch.tensor([index[kept_files[o].label] for o in owner], dtype=torch.int64),
        owner,
        np.concatenate([p[3] for p in parts]),
        np.concatenate([p[2] for p in parts]),
        kept_files,
        stats_for([y for _, y in kept], rate),
        tuple(skipped),
    )


def _concat(parts: Sequence[PatchSet], skipped: tuple[tuple[str, str], ...]) -> PatchSet:
    offsets = np.cumsum([0] + [len(p.files) for p in parts[:-1]])
    return PatchSet(
        torch.cat([p.inputs for p in parts]),
        torch.cat([p.targets for p in parts]),
        np.concatenate([p.owner + o for p, o in zip(parts, offsets, strict=True)]),
        np.concatenate([p.level_db for p in parts]),
        np.concatenate([p.variant for p in parts]),
        [f for p in parts for f in p.files],
        np.concatenate([p.file_stats for p in parts]),
        skipped,
    )


def build_patch_set(
    files: Sequence[LabelledFile],
    labels: Sequence[str],
    features: FeatureConfig,
    augment: AugmentConfig | None = None,
    seed: int = 0,
    on_ray: bool = False,
) -> PatchSet:
    """Decode ``files``, add augmented copies, and cut everything into unresized patches.

    Files that do not decode or have no sound are left out, each named in a log line here (on the
    driver, once) and in ``PatchSet.skipped``. ``augment`` None or ``variants=0`` gives the clean
    patches only. ``on_ray`` spreads chunks of files over Ray tasks (the cluster's CPUs); chunks
    interleave the files (``files[i::n]``) so each holds many labels to mix from.
    """
    n_chunks = max(1, min(len(files) // 64, 256)) if on_ray else 1
    args = [([*files[i::n_chunks]], list(labels), features, augment, seed, i) for i in range(n_chunks)]
    if on_ray:
        import ray

        task = ray.remote(num_cpus=1)(_patch_chunk)
        results = ray.get([task.remote(*a) for a in args])
    else:
        results = [_patch_chunk(*a) for a in args]
    parts = [r for r in results if isinstance(r, PatchSet)]
    skipped = tuple(sorted(s for r in results for s in (r.skipped if isinstance(r, PatchSet) else r)))
    for path, reason in skipped:
        log.warning("skipping %s: %s", path, reason)
    if not parts:
        raise ValueError(
            "none of the data-set files can be used: each one is unreadable or has no sound (see the lines above)"
        )
    return _concat(parts, skipped)
