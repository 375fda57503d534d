"""Render training data from General MIDI sample libraries (FluidSynth and TiMidity++).

Each clip is a single note or a short phrase played by one GM program inside the instrument's
playing range, with varied lengths and velocities. Clips are planned from ``(seed, label, index)``
alone, so a render is deterministic and any clip can be re-rendered on its own. Clips are written
into MIDI files of many clips each (one synthesizer start per file, not per clip) separated by
silence, rendered, then cut apart. A library need not cover an instrument's whole range
(FluidR3_GM's contrabass has no sample over key 57, its violin none at key 94), and a ``vary``
filter can close under a high note: a clip that comes out silent is not written, and the render
names it.

``vary`` randomizes the synthesizer itself per clip (FluidSynth only), through the SoundFont 2.01
NRPNs that offset an instrument's generators: the low-pass filter's cutoff and resonance, and the
vibrato depth. One library then sounds like several: sample libraries differ most in how their
instruments are filtered (TimGM6mb's strings, for one, sit behind low-pass filters starting at
0.5-3.6 kHz that FluidR3_GM's do not have).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mido
import numpy as np
import soundfile as sf

from mirbatch.datasets.layouts import write_clip_records
from mirbatch.features import SILENT_DBFS
from mirbatch.taxonomy import TAXONOMY, Instrument, instrument

__all__ = [
    "SampleLibrary",
    "SAMPLE_LIBRARIES",
    "resolve_library",
    "Note",
    "ClipPlan",
    "Variation",
    "RenderConfig",
    "clip_file_name",
    "clip_rng",
    "plan_clips",
    "render_dataset",
    "Rendered",
    "RenderError",
]

_TICKS_PER_BEAT = 480
_TEMPO_US = 500_000  # 120 bpm: one beat = 0.5 s, so seconds -> ticks is exact enough
_TAIL_S = 1.0  # release tail kept after the last note-off
_GAP_S = 0.75  # extra silence between clips so tails never bleed into the next clip
_CLIPS_PER_MIDI = 40
_SILENT_PEAK = 10 ** (SILENT_DBFS / 20)  # a clip whose samples all stay under it is not written


class RenderError(RuntimeError):
    """A synthesizer is missing or failed."""


@dataclass(frozen=True)
class SampleLibrary:
    """A sample library and the synthesizer that plays it.

    Attributes
    ----------
    name : str
        Short name used in file names and metadata (``fluidr3``, ``timgm6mb``, ``freepats``).
    path : str
        SoundFont (``.sf2``) for FluidSynth, or TiMidity++ config (``.cfg``).
    synth : str
        ``fluidsynth`` or ``timidity``.
    """

    name: str
    path: str
    synth: str

    def available_programs(self) -> frozenset[int] | None:
        """GM programs the library defines (bank 0), or None when every program is assumed present."""
        if self.synth != "timidity":
            return None
        programs: set[int] = set()
        in_bank0 = False
        for line in Path(self.path).read_text(errors="replace").splitlines():
            words = line.split()
            if not words:
                continue
            if words[0] in ("bank", "drumset"):
                in_bank0 = words[0] == "bank" and words[1:2] == ["0"]
            elif in_bank0 and words[0].isdigit():
                programs.add(int(words[0]))
        return frozenset(programs)


SAMPLE_LIBRARIES: dict[str, SampleLibrary] = {
    "fluidr3": SampleLibrary("fluidr3", "/usr/share/sounds/sf2/FluidR3_GM.sf2", "fluidsynth"),
    "timgm6mb": SampleLibrary("timgm6mb", "/usr/share/sounds/sf2/TimGM6mb.sf2", "fluidsynth"),
    "freepats": SampleLibrary("freepats", "/etc/timidity/freepats.cfg", "timidity"),
}


def resolve_library(spec: str) -> SampleLibrary:
    """Turn a library name (``fluidr3``, ``timgm6mb``, ``freepats``) or a ``.sf2``/``.cfg`` path into a library."""
    key = spec.lower()
    aliases = {"fluidr3_gm": "fluidr3", "fluidr3_gm.sf2": "fluidr3", "timgm6mb.sf2": "timgm6mb"}
    key = aliases.get(key, key)
    if key in SAMPLE_LIBRARIES:
        library = SAMPLE_LIBRARIES[key]
    else:
        path = Path(spec)
        if path.suffix.lower() == ".sf2":
            library = SampleLibrary(path.stem.lower(), str(path), "fluidsynth")
        elif path.suffix.lower() == ".cfg":
            library = SampleLibrary(path.stem.lower(), str(path), "timidity")
        else:
            raise RenderError(
                f"unknown sample library {spec!r}: give one of {', '.join(SAMPLE_LIBRARIES)} "
                "or a path to a .sf2 SoundFont or a TiMidity++ .cfg"
            )
    if not Path(library.path).exists():
        raise RenderError(
            f"sample library {library.name!r} not found at {library.path}; install it with "
            "'apt-get install fluid-soundfont-gm timgm6mb-soundfont freepats' (or pass a path)"
        )
    if shutil.which(library.synth) is None:
        raise RenderError(f"{library.synth} is not installed; install it with 'apt-get install {library.synth}'")
    return library


@dataclass(frozen=True)
class Note:
    """One MIDI note: onset and duration in seconds from the clip start."""

    start_s: float
    duration_s: float
    pitch: int
    velocity: int


@dataclass(frozen=True)
class Variation:
    """Offsets of a clip's SoundFont generators (SF2 NRPN, FluidSynth): 0 leaves the instrument as it is.

    Attributes
    ----------
    filter_cents : int
        Low-pass cutoff (``initialFilterFc``) offset in cents: negative is darker.
    filter_q_cb : int
        Filter resonance (``initialFilterQ``) offset in centibels.
    vibrato_cents : int
        Vibrato LFO depth (``vibLfoToPitch``) offset in cents.
    """

    filter_cents: int = 0
    filter_q_cb: int = 0
    vibrato_cents: int = 0

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Variation:
        """A random variation: most clips darker by 1-5 octaves, some resonant, some with vibrato.

        An unfiltered instrument's cutoff is ~20 kHz, so 1-5 octaves down puts it at 0.6-10 kHz.
        """
        return cls(
            filter_cents=int(rng.uniform(-6000, -1200)) if rng.random() < 0.7 else 0,
            filter_q_cb=int(rng.uniform(0, 120)) if rng.random() < 0.3 else 0,
            vibrato_cents=int(rng.uniform(5, 30)) if rng.random() < 0.4 else 0,
        )

    def midi(self, channel: int = 0) -> list[mido.Message]:
        """NRPN messages (MSB 120 = SoundFont generator, LSB = generator number) setting every offset."""
        messages = []
        # (generator, offset, FluidSynth's NRPN scale for it)
        offsets = ((8, self.filter_cents, 2), (9, self.filter_q_cb, 1), (6, self.vibrato_cents, 2))
        for generator, offset, scale in offsets:
            value = int(np.clip(8192 + round(offset / scale), 0, 16383))  # 14 bits, 8192 = no offset
            for control, data in ((99, 120), (98, generator), (6, value >> 7), (38, value & 127)):
                messages.append(mido.Message("control_change", channel=channel, control=control, value=data))
        return messages


@dataclass(frozen=True)
class ClipPlan:
    """What one rendered clip plays."""

    label: str
    index: int
    program: int
    kind: str  # "note" or "phrase"
    notes: tuple[Note, ...]
    variation: Variation | None = None

    @property
    def duration_s(self) -> float:
        return max(n.start_s + n.duration_s for n in self.notes)

    def file_name(self, library: str) -> str:
        return clip_file_name(library, self.label, self.index, self.program)


@dataclass(frozen=True)
class RenderConfig:
    """How to render a data set (stored beside it as ``render.json``)."""

    library: str
    per_class: int
    seed: int = 0
    sample_rate: int = 22050
    phrase_fraction: float = 0.5
    labels: tuple[str, ...] = field(default_factory=lambda: tuple(i.label for i in TAXONOMY))
    vary: bool = False

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "labels": list(self.labels)}


_MAJOR = (0, 2, 4, 5, 7, 9, 11)
_MINOR = (0, 2, 3, 5, 7, 8, 10)


def _plan_note(inst: Instrument, rng: np.random.Generator) -> tuple[Note, ...]:
    pitch = int(rng.integers(inst.low, inst.high + 1))
    duration = float(rng.uniform(0.4, 3.0)) if inst.sustained else float(rng.uniform(0.6, 3.0))
    return (Note(0.0, round(duration, 3), pitch, int(rng.integers(40, 121))),)


def _plan_phrase(inst: Instrument, rng: np.random.Generator) -> tuple[Note, ...]:
    scale = _MAJOR if rng.random() < 0.6 else _MINOR
    # Keep the phrase's span inside the range: pick a tonic with an octave of room when possible.
    tonic = int(rng.integers(inst.low, max(inst.low + 1, inst.high - 11)))
    degree = int(rng.integers(0, 7))
    n_notes = int(rng.integers(3, 9))
    base_velocity = int(rng.integers(45, 116))
    legato = rng.random() < 0.6
    chords = not inst.sustained and rng.random() < 0.3
    notes: list[Note] = []
    t = 0.0
    for _ in range(n_notes):
        step = int(rng.choice([-2, -1, -1, 1, 1, 2, 3, -3, 0]))
        degree = max(-7, min(14, degree + step))
        pitch = tonic + 12 * (degree // 7) + scale[degree % 7]
        pitch = min(inst.high, max(inst.low, pitch))
        ioi = float(rng.choice([0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.75]))
        duration = ioi * (1.0 if legato else float(rng.uniform(0.4, 0.8)))
        velocity = int(np.clip(base_velocity + rng.integers(-12, 13), 20, 127))
        notes.append(Note(round(t, 3), round(duration, 3), pitch, velocity))
        if chords and rng.random() < 0.5:
            for interval in (4, 7) if rng.random() < 0.5 else (3, 7):
                if pitch + interval <= inst.high:
                    notes.append(Note(round(t, 3), round(duration, 3), pitch + interval, velocity))
        t += ioi
    return tuple(notes)


def clip_file_name(library: str, label: str, index: int, program: int) -> str:
    """A rendered (or morphed) clip's file name: its library, label, index and GM program."""
    return f"{library}_{label}_{index:05d}_p{program:03d}.wav"


def clip_rng(seed: int, label: str, index: int) -> np.random.Generator:
    """The random generator of clip ``index`` of ``label``: a clip depends on nothing else."""
    label_key = sum(ord(c) * 31**k for k, c in enumerate(label)) % (2**31)
    return np.random.default_rng([seed, label_key, index])


def plan_clips(config: RenderConfig, available: frozenset[int] | None = None) -> list[ClipPlan]:
    """Plan every clip of a render; depends only on the config (and the library's programs).

    Labels none of whose programs the library defines are left out (freepats has no viola, no
    double bass).
    """
    plans: list[ClipPlan] = []
    for label in config.labels:
        inst = instrument(label)
        programs = [p for p in inst.programs if available is None or p in available]
        if not programs:
            continue
        for index in range(config.per_class):
            rng = clip_rng(config.seed, label, index)
            program = int(programs[int(rng.integers(0, len(programs)))])
            is_phrase = rng.random() < config.phrase_fraction
            notes = _plan_phrase(inst, rng) if is_phrase else _plan_note(inst, rng)
            variation = Variation.draw(rng) if config.vary else None
            plans.append(ClipPlan(label, index, program, "phrase" if is_phrase else "note", notes, variation))
    return plans


def _write_midi(clips: Sequence[ClipPlan], path: Path) -> list[float]:
    """Write clips one after another on channel 0; return each clip's start time in seconds."""
    seconds_per_tick = _TEMPO_US / 1e6 / _TICKS_PER_BEAT
    events: list[tuple[float, int, mido.Message]] = []  # (time, order, message): note-offs first
    starts: list[float] = []
    t0 = 0.25
    for clip in clips:
        starts.append(t0)
        events.append((t0 - 0.1, 0, mido.Message("program_change", program=clip.program, channel=0)))
        if clip.variation is not None:  # offsets persist on the channel: every varied clip sets all of them
            events.extend((t0 - 0.1, 0, message) for message in clip.variation.midi())
        for note in clip.notes:
            events.append((t0 + note.start_s, 2, mido.Message("note_on", note=note.pitch, velocity=note.velocity)))
            off = t0 + note.start_s + note.duration_s
            events.append((off, 1, mido.Message("note_off", note=note.pitch, velocity=0)))
        t0 += clip.duration_s + _TAIL_S + _GAP_S
    events.sort(key=lambda e: (e[0], e[1]))
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=_TEMPO_US, time=0))
    now_ticks = 0
    for time_s, _, message in events:
        ticks = max(now_ticks, round(time_s / seconds_per_tick))
        track.append(message.copy(time=ticks - now_ticks))
        now_ticks = ticks
    track.append(mido.MetaMessage("end_of_track", time=round((_TAIL_S + _GAP_S) / seconds_per_tick)))
    midi = mido.MidiFile(ticks_per_beat=_TICKS_PER_BEAT)
    midi.tracks.append(track)
    midi.save(str(path))
    return starts


def _synthesize(library: SampleLibrary, midi_path: Path, wav_path: Path, sample_rate: int) -> np.ndarray:
    """Render a MIDI file to mono float32 at ``sample_rate``; reverb and chorus off so clips stay apart."""
    if library.synth == "fluidsynth":
        cmd = [
            "fluidsynth", "-ni", "-q", "-R", "0", "-C", "0", "-g", "0.6", "-r", str(sample_rate),
            "-F", str(wav_path), "-T", "wav", library.path, str(midi_path),
        ]  # fmt: skip
    else:
        cmd = [
            "timidity", "-c", library.path, "-Ow", "--output-mono", "--preserve-silence", "-s", str(sample_rate),
            "-EFreverb=0", "-EFchorus=0", "-o", str(wav_path), str(midi_path),
        ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not wav_path.exists():
        raise RenderError(f"{library.synth} failed ({result.returncode}): {result.stderr.strip()[-500:]}")
    audio, rate = sf.read(str(wav_path), dtype="float32", always_2d=True)
    if rate != sample_rate:
        raise RenderError(f"{library.synth} wrote {rate} Hz, asked for {sample_rate} Hz")
    return audio.mean(axis=1)


def _render_chunk(library: SampleLibrary, clips: Sequence[ClipPlan], out: Path, sample_rate: int) -> list[ClipPlan]:
    """Render and write ``clips``; return those that came out silent (not written)."""
    silent: list[ClipPlan] = []
    with tempfile.TemporaryDirectory(prefix="mirbatch-render-") as tmp:
        midi_path = Path(tmp) / "chunk.mid"
        starts = _write_midi(clips, midi_path)
        audio = _synthesize(library, midi_path, Path(tmp) / "chunk.wav", sample_rate)
    for clip, start in zip(clips, starts, strict=True):
        begin = round(start * sample_rate)
        end = min(len(audio), round((start + clip.duration_s + _TAIL_S) * sample_rate))
        piece = audio[begin:end]
        # Trim the release tail once it falls 60 dB under the clip's peak, but never into the notes.
        peak = float(np.abs(piece).max()) if piece.size else 0.0
        target = out / clip.label / clip.file_name(library.name)
        if peak < _SILENT_PEAK:  # no sample at those keys, or a filter closed under them: no example
            target.unlink(missing_ok=True)  # nor one left from an earlier render
            silent.append(clip)
            continue
        loud = np.nonzero(np.abs(piece) > peak * 1e-3)[0]
        keep = max(int(clip.duration_s * sample_rate), int(loud[-1]) + 1 if loud.size else 0)
        piece = piece[: min(len(piece), keep)]
        if peak > 0.99:
            piece = piece * (0.99 / peak)
        target.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(target), piece, sample_rate, subtype="PCM_16")
    return silent


def _chunks(plans: Sequence[ClipPlan]) -> Iterable[list[ClipPlan]]:
    for start in range(0, len(plans), _CLIPS_PER_MIDI):
        yield list(plans[start : start + _CLIPS_PER_MIDI])


@dataclass(frozen=True)
class Rendered:
    """What a render wrote (``clips``, in label then index order) and the planned clips that came out
    silent and were left out (``silent``: the library plays no sample at their keys, or a ``vary``
    filter closed under the note)."""

    clips: list[ClipPlan]
    silent: list[ClipPlan]

    def describe_silent(self) -> str:
        """``double_bass 13 (keys 58-62), violin 1 (key 94)``: the silent clips per label and the
        keys of their single notes."""
        parts = []
        for label in sorted({c.label for c in self.silent}):
            clips = [c for c in self.silent if c.label == label]
            keys = sorted({n.pitch for c in clips if c.kind == "note" for n in c.notes})
            span = "" if not keys else f" (key {keys[0]})" if len(keys) == 1 else f" (keys {keys[0]}-{keys[-1]})"
            parts.append(f"{label} {len(clips)}{span}")
        return ", ".join(parts)


def render_dataset(config: RenderConfig, out: Path, jobs: int = 2) -> Rendered:
    """Render ``config`` into ``out/<label>/*.wav`` plus ``render.json`` and ``clips.jsonl``.

    Parameters
    ----------
    config : RenderConfig
        Library, clips per class, seed, rate and labels.
    out : Path
        Destination folder (a folder per label; files are overwritten).
    jobs : int
        Synthesizer processes run at once.

    Returns
    -------
    Rendered
        The clips written, in label then index order, and those left out as silent.
    """
    library = resolve_library(config.library)
    if config.vary and library.synth != "fluidsynth":
        raise RenderError(f"--vary needs a SoundFont (FluidSynth); {library.name} is played by {library.synth}")
    plans = plan_clips(config, library.available_programs())
    if not plans:
        raise RenderError(f"library {library.name!r} has none of the programs of labels {config.labels}")
    out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(_render_chunk, library, chunk, out, config.sample_rate) for chunk in _chunks(plans)]
        silent = [clip for future in futures for clip in future.result()]
    left_out = {(clip.label, clip.index) for clip in silent}
    written = [plan for plan in plans if (plan.label, plan.index) not in left_out]
    meta = {
        **config.to_dict(),
        "library": library.name,
        "library_path": library.path,
        "synth": library.synth,
        "silent_clips": [f"{plan.label}/{plan.file_name(library.name)}" for plan in silent],
    }
    (out / "render.json").write_text(json.dumps(meta, indent=2) + "\n")
    records = [{"path": f"{plan.label}/{plan.file_name(library.name)}", **asdict(plan)} for plan in written]
    write_clip_records(out, records)
    return Rendered(written, silent)
