"""What each label plays in a SoundFont: its samples, their lengths and loops, and samples shared.

Reads the preset, instrument and sample tables of an SF2 file (no audio is decoded) and prints, for
each label of the taxonomy, how many distinct samples its GM programs play, their sample rates,
lengths and loop lengths; then every pair of labels that plays some of the same samples. A label
whose samples are a few milliseconds long is a looped single cycle (a wavetable); two labels on the
same samples differ only in the notes they play. Usage:

    python scripts/soundfont_samples.py timgm6mb   # or fluidr3, or the path of any .sf2 file
"""

from __future__ import annotations

import argparse
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from mirbatch.datasets.render import resolve_library
from mirbatch.taxonomy import TAXONOMY

__all__ = ["Records", "SampleHeader", "label_samples", "preset_samples", "read_tables"]

# SF2 generator operators (SoundFont 2.04, section 8.1.2).
_INSTRUMENT = 41
_SAMPLE_ID = 53
_RECORDS = {
    "phdr": "<20sHHHIII",  # name, program, bank, first preset bag, library, genre, morphology
    "pbag": "<HH",  # first generator, first modulator
    "pgen": "<HH",  # operator, amount
    "inst": "<20sH",  # name, first instrument bag
    "ibag": "<HH",
    "igen": "<HH",
    "shdr": "<20sIIIIIBbHH",  # name, start, end, loop start, loop end, rate, pitch, correction, link, type
}


Records = list[tuple[int | bytes, ...]]  # unpacked records of one SF2 table


@dataclass(frozen=True)
class SampleHeader:
    """One sample of an SF2 file: lengths in seconds."""

    name: str
    rate: int
    seconds: float
    loop_seconds: float


def _chunks(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(chunk id, body) of the RIFF chunks that make up ``data``."""
    start = 0
    while start + 8 <= len(data):
        chunk_id, size = data[start : start + 4], struct.unpack("<I", data[start + 4 : start + 8])[0]
        yield chunk_id, data[start + 8 : start + 8 + size]
        start += 8 + size + (size & 1)  # chunks are padded to an even size


def _pdta(f: BinaryIO, path: Path) -> bytes:
    """The body of the ``pdta`` list of the SF2 file ``f``; the sample data (most of it) is skipped."""
    if f.read(4) != b"RIFF" or f.read(8)[4:] != b"sfbk":
        raise ValueError(f"{path} is not a SoundFont 2 file (no RIFF sfbk header)")
    while len(header := f.read(8)) == 8:
        chunk_id, size = header[:4], struct.unpack("<I", header[4:])[0]
        kind = f.read(4) if chunk_id == b"LIST" else b""
        if kind == b"pdta":
            return f.read(size - 4)
        f.seek(size + (size & 1) - len(kind), 1)
    raise ValueError(f"{path}: no pdta list (preset, instrument and sample tables)")


def read_tables(path: Path) -> dict[str, Records]:
    """The SF2 ``pdta`` tables named in ``_RECORDS``, as lists of unpacked records."""
    with path.open("rb") as f:
        raw = {chunk_id.decode("ascii"): body for chunk_id, body in _chunks(_pdta(f, path))}
    missing = set(_RECORDS) - set(raw)
    if missing:
        raise ValueError(f"{path}: SF2 tables missing: {sorted(missing)}")
    return {name: list(struct.iter_unpack(fmt, raw[name])) for name, fmt in _RECORDS.items()}


def _generators(bags: Records, gens: Records, first: int, last: int, operator: int) -> set[int]:
    """Amounts of ``operator`` in the generators of bags ``first`` to ``last`` (exclusive)."""
    found: set[int] = set()
    for bag in range(first, last):
        for gen in range(int(bags[bag][0]), int(bags[bag + 1][0])):
            if gens[gen][0] == operator:
                found.add(int(gens[gen][1]))
    return found


def preset_samples(tables: dict[str, Records]) -> dict[int, set[int]]:
    """Sample indices played by each GM program of bank 0 (every key and velocity zone)."""
    presets, instruments = tables["phdr"], tables["inst"]
    played: dict[int, set[int]] = {}
    for index, preset in enumerate(presets[:-1]):  # the last record is the terminal EOP
        if preset[2] != 0:
            continue
        samples: set[int] = set()
        for instrument in _generators(
            tables["pbag"], tables["pgen"], int(preset[3]), int(presets[index + 1][3]), _INSTRUMENT
        ):
            first, last = int(instruments[instrument][1]), int(instruments[instrument + 1][1])
            samples |= _generators(tables["ibag"], tables["igen"], first, last, _SAMPLE_ID)
        played[int(preset[1])] = samples
    return played


def _header(record: tuple[int | bytes, ...]) -> SampleHeader:
    name, start, end, loop_start, loop_end, rate = record[:6]
    assert isinstance(name, bytes)
    rate = int(rate) or 1
    return SampleHeader(
        name.split(b"\0")[0].decode("latin-1"),
        rate,
        (int(end) - int(start)) / rate,
        (int(loop_end) - int(loop_start)) / rate,
    )


def label_samples(path: Path) -> dict[str, dict[int, SampleHeader]]:
    """For each taxonomy label, the samples (by index) its GM programs play in the SoundFont."""
    tables = read_tables(path)
    played = preset_samples(tables)
    return {
        instrument.label: {s: _header(tables["shdr"][s]) for p in instrument.programs for s in played.get(p, set())}
        for instrument in TAXONOMY
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("soundfont", help="fluidr3, timgm6mb, or the path of an .sf2 file")
    args = parser.parse_args()
    labels = label_samples(Path(resolve_library(args.soundfont).path))
    print(f"{'label':<16} {'samples':>7}  {'rates (Hz)':<20} {'length (s)':<13} loop (ms)")
    for label, samples in labels.items():
        if not samples:
            print(f"{label:<16} {0:>7}  (no preset in bank 0)")
            continue
        heads = samples.values()
        rates = ",".join(str(r) for r in sorted({h.rate for h in heads}))
        lengths = f"{min(h.seconds for h in heads):.3f}-{max(h.seconds for h in heads):.3f}"
        loops = f"{min(h.loop_seconds for h in heads) * 1e3:.1f}-{max(h.loop_seconds for h in heads) * 1e3:.1f}"
        print(f"{label:<16} {len(samples):>7}  {rates:<20} {lengths:<13} {loops}")
    names = list(labels)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = len(labels[a].keys() & labels[b].keys())
            if shared:
                print(
                    f"shared: {a} and {b} play {shared} of the same samples (of {len(labels[a])} and {len(labels[b])})"
                )


if __name__ == "__main__":
    main()
