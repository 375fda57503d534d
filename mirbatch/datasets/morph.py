"""Spectral morphs of two libraries' renders of the same clips: a timbre between two recordings.

Two renders with the same ``--seed`` play the same notes (clip ``i`` of a label depends only on
``(seed, label, i)``), so their clips line up in time. A morph keeps those notes and takes, bin by
bin, the geometric mean of the two magnitude spectrograms weighted by ``mix``:
``|M| = |A|^mix |B|^(1 - mix)``, with the phase of the louder of the two. In log-magnitude (what the
models see) that is a straight line between the two libraries' spectral envelopes, decay and
attack: an instrument as neither library recorded it, still labelled as both are. Sample libraries
differ most in how their instruments are filtered and shaped, and a model trained on two of them
learns those two; morphs fill in the space between.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import librosa
import numpy as np
import soundfile as sf

from mirbatch.datasets.layouts import clip_records, write_clip_records
from mirbatch.datasets.render import clip_file_name, clip_rng

__all__ = ["MorphConfig", "MorphError", "morph_spectra", "morph_datasets"]

_N_FFT = 1024
_HOP = 256


class MorphError(ValueError):
    """The two data sets cannot be morphed (no shared clips, other notes, other rates)."""


@dataclass(frozen=True)
class MorphConfig:
    """How to morph two renders (stored beside the output as ``morph.json``).

    Attributes
    ----------
    seed : int
        Seeds each clip's mix weight with its label and index.
    low, high : float
        Each clip's weight of the first data set is drawn uniformly from [low, high].
    """

    seed: int = 0
    low: float = 0.25
    high: float = 0.75

    def __post_init__(self) -> None:
        if not 0.0 <= self.low <= self.high <= 1.0:
            raise MorphError(f"the mix range must satisfy 0 <= low <= high <= 1; got {self.low}, {self.high}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def morph_spectra(a: np.ndarray, b: np.ndarray, mix: float) -> np.ndarray:
    """Morph two time-aligned mono signals of one rate.

    Parameters
    ----------
    a, b : np.ndarray [shape=(n,), shape=(m,)]
        The same notes from two libraries; the shorter is padded with silence.
    mix : float
        Weight of ``a`` in [0, 1] (1 gives back ``a``'s magnitudes).

    Returns
    -------
    np.ndarray [shape=(max(n, m),)], float32
        The morph, at the louder input's peak level.
    """
    length = max(len(a), len(b))
    a = np.pad(a.astype(np.float64), (0, length - len(a)))
    b = np.pad(b.astype(np.float64), (0, length - len(b)))
    spec_a = librosa.stft(a, n_fft=_N_FFT, hop_length=_HOP)
    spec_b = librosa.stft(b, n_fft=_N_FFT, hop_length=_HOP)
    mag_a, mag_b = np.abs(spec_a), np.abs(spec_b)
    # A floor keeps one silent bin from zeroing the other's energy (log 0).
    floor = 1e-6 * max(float(mag_a.max()), float(mag_b.max()), 1e-12)
    magnitude = np.exp(mix * np.log(mag_a + floor) + (1.0 - mix) * np.log(mag_b + floor))
    phase = np.where(mag_a >= mag_b, np.angle(spec_a), np.angle(spec_b))
    y = librosa.istft(magnitude * np.exp(1j * phase), hop_length=_HOP, length=length)
    peak = float(np.abs(y).max())
    target = max(float(np.abs(a).max()), float(np.abs(b).max()))
    return (y * (target / peak) if peak > 0 else y).astype(np.float32)


def _clips(root: Path) -> dict[tuple[str, int], dict[str, Any]]:
    records = clip_records(root)
    if not records:
        raise MorphError(f"{root} has no clips.jsonl: morph data sets written by `mirbatch data render`")
    return {(r["label"], int(r["index"])): r for r in records}


def _library(root: Path) -> str:
    render = root / "render.json"
    return str(json.loads(render.read_text())["library"]) if render.is_file() else root.name


def _pairs(a_root: Path, b_root: Path) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    a_clips, b_clips = _clips(a_root), _clips(b_root)
    shared = sorted(set(a_clips) & set(b_clips))
    pairs = [(a_clips[k], b_clips[k]) for k in shared if a_clips[k]["notes"] == b_clips[k]["notes"]]
    if not pairs:
        raise MorphError(
            f"{a_root} and {b_root} share no clip with the same notes: render both with the same --seed and labels"
        )
    return pairs


def morph_datasets(a_root: Path, b_root: Path, out: Path, config: MorphConfig, jobs: int = 2) -> int:
    """Morph every clip two renders share into ``out/<label>/*.wav`` plus ``morph.json`` and ``clips.jsonl``.

    Clips are paired by label and index and kept only where both play the same notes (a library
    without one of a label's programs draws another). Returns the number of clips written.
    """
    pairs = _pairs(a_root, b_root)
    libraries = (_library(a_root), _library(b_root))
    prefix = "morph_" + "_".join(libraries)

    def write(pair: tuple[dict[str, Any], dict[str, Any]]) -> dict[str, Any]:
        a_clip, b_clip = pair
        label, index = a_clip["label"], int(a_clip["index"])
        a, a_rate = sf.read(str(a_root / a_clip["path"]), dtype="float32", always_2d=True)
        b, b_rate = sf.read(str(b_root / b_clip["path"]), dtype="float32", always_2d=True)
        if a_rate != b_rate:
            raise MorphError(f"{a_clip['path']} is at {a_rate} Hz and its pair at {b_rate} Hz: render both at one rate")
        mix = float(clip_rng(config.seed, label, index).uniform(config.low, config.high))
        path = f"{label}/{clip_file_name(prefix, label, index, int(a_clip['program']))}"
        (out / label).mkdir(parents=True, exist_ok=True)
        sf.write(str(out / path), morph_spectra(a.mean(axis=1), b.mean(axis=1), mix), a_rate, subtype="PCM_16")
        return {**a_clip, "path": path, "mix": round(mix, 4), "sources": [a_clip["path"], b_clip["path"]]}

    out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        records = list(pool.map(write, pairs))
    meta = {**config.to_dict(), "sources": [str(a_root), str(b_root)], "libraries": list(libraries)}
    (out / "morph.json").write_text(json.dumps(meta, indent=2) + "\n")
    write_clip_records(out, records)
    return len(records)
