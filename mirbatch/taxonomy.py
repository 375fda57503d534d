"""The default label set: 18 instruments, the GM programs that render them, and playing ranges."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Instrument",
    "TAXONOMY",
    "DEFAULT_LABELS",
    "EXTRA_TRAINING_PROGRAMS",
    "GM_PROGRAM_NAMES",
    "program_label",
    "program_instrument",
    "program_set",
    "instrument",
    "is_reserved_program",
]


@dataclass(frozen=True)
class Instrument:
    """One label of the taxonomy.

    Attributes
    ----------
    label : str
        snake_case label name (fixed by DESIGN.md).
    programs : tuple of int
        0-based General MIDI programs that render this instrument.
    low, high : int
        MIDI note range the instrument plays (inclusive); rendering stays inside it.
    sustained : bool
        Whether a note can be held (bowed, blown, organ) rather than decaying (plucked, struck).
    """

    label: str
    programs: tuple[int, ...]
    low: int
    high: int
    sustained: bool


# Ranges are the instruments' practical playing ranges (written pitch transposed to concert pitch).
TAXONOMY: tuple[Instrument, ...] = (
    Instrument("piano", (0, 1), 21, 108, False),
    Instrument("organ", (16, 19), 36, 96, True),
    Instrument("acoustic_guitar", (24, 25), 40, 84, False),
    Instrument("electric_guitar", (26, 27, 29), 40, 86, False),
    Instrument("double_bass", (43,), 28, 62, True),
    Instrument("violin", (40,), 55, 100, True),
    Instrument("viola", (41,), 48, 88, True),
    Instrument("cello", (42,), 36, 76, True),
    Instrument("clarinet", (71,), 50, 91, True),
    Instrument("trumpet", (56,), 54, 84, True),
    Instrument("trombone", (57,), 40, 72, True),
    Instrument("tuba", (58,), 28, 58, True),
    Instrument("french_horn", (60,), 41, 77, True),
    Instrument("saxophone", (64, 65, 66), 44, 84, True),
    Instrument("oboe", (68,), 58, 91, True),
    Instrument("english_horn", (69,), 52, 81, True),
    Instrument("bassoon", (70,), 34, 72, True),
    Instrument("flute", (73,), 60, 96, True),
)

DEFAULT_LABELS: tuple[str, ...] = tuple(i.label for i in TAXONOMY)

# GM programs outside the taxonomy that may train the Siamese matcher (DESIGN.md). Every other
# program not in TAXONOMY is reserved for one-shot evaluation and must never be trained on.
EXTRA_TRAINING_PROGRAMS: frozenset[int] = frozenset(
    [
        4,
        6,
        8,
        11,
        14,
        15,
        18,
        20,
        32,
        33,
        44,
        45,
        47,
        48,
        52,
        59,
        61,
        74,
        77,
        78,
        79,
        *list(range(80, 96)),
        111,
        112,
        113,
        115,
        116,
        117,
    ]
)

_BY_LABEL = {i.label: i for i in TAXONOMY}

# General MIDI level 1 program names (0-based), snake_case.
GM_PROGRAM_NAMES: tuple[str, ...] = (
    "acoustic_grand_piano", "bright_acoustic_piano", "electric_grand_piano", "honky_tonk_piano",
    "electric_piano_1", "electric_piano_2", "harpsichord", "clavinet",
    "celesta", "glockenspiel", "music_box", "vibraphone", "marimba", "xylophone", "tubular_bells", "dulcimer",
    "drawbar_organ", "percussive_organ", "rock_organ", "church_organ", "reed_organ", "accordion", "harmonica",
    "tango_accordion",
    "nylon_guitar", "steel_guitar", "jazz_guitar", "clean_guitar", "muted_guitar", "overdriven_guitar",
    "distortion_guitar", "guitar_harmonics",
    "acoustic_bass", "finger_bass", "pick_bass", "fretless_bass", "slap_bass_1", "slap_bass_2", "synth_bass_1",
    "synth_bass_2",
    "violin", "viola", "cello", "contrabass", "tremolo_strings", "pizzicato_strings", "orchestral_harp", "timpani",
    "string_ensemble_1", "string_ensemble_2", "synth_strings_1", "synth_strings_2", "choir_aahs", "voice_oohs",
    "synth_voice", "orchestra_hit",
    "trumpet", "trombone", "tuba", "muted_trumpet", "french_horn", "brass_section", "synth_brass_1",
    "synth_brass_2",
    "soprano_sax", "alto_sax", "tenor_sax", "baritone_sax", "oboe", "english_horn", "bassoon", "clarinet",
    "piccolo", "flute", "recorder", "pan_flute", "blown_bottle", "shakuhachi", "whistle", "ocarina",
    "lead_square", "lead_sawtooth", "lead_calliope", "lead_chiff", "lead_charang", "lead_voice", "lead_fifths",
    "lead_bass",
    "pad_new_age", "pad_warm", "pad_polysynth", "pad_choir", "pad_bowed", "pad_metallic", "pad_halo", "pad_sweep",
    "fx_rain", "fx_soundtrack", "fx_crystal", "fx_atmosphere", "fx_brightness", "fx_goblins", "fx_echoes",
    "fx_sci_fi",
    "sitar", "banjo", "shamisen", "koto", "kalimba", "bagpipe", "fiddle", "shanai",
    "tinkle_bell", "agogo", "steel_drums", "woodblock", "taiko_drum", "melodic_tom", "synth_drum", "reverse_cymbal",
    "guitar_fret_noise", "breath_noise", "seashore", "bird_tweet", "telephone_ring", "helicopter", "applause",
    "gunshot",
)  # fmt: skip

# Playing range and sustain per GM family (program // 8), refined for programs that differ.
_FAMILY_RANGES: tuple[tuple[int, int, bool], ...] = (
    (21, 108, False), (53, 96, False), (36, 96, True), (40, 86, False),
    (28, 60, False), (36, 96, True), (36, 84, True), (40, 84, True),
    (44, 84, True), (60, 96, True), (48, 96, True), (36, 84, True),
    (36, 84, True), (48, 84, False), (48, 84, False), (48, 84, False),
)  # fmt: skip
_PROGRAM_RANGES: dict[int, tuple[int, int, bool]] = {
    45: (36, 88, False), 46: (24, 103, False), 47: (40, 57, False), 55: (48, 84, False),
    58: (28, 58, True), 70: (34, 72, True), 72: (74, 108, True), 109: (55, 77, True), 110: (55, 96, True),
    111: (55, 84, True), 116: (36, 60, False),
}  # fmt: skip


def program_label(program: int) -> str:
    """Label of a single GM program rendered as its own class, e.g. ``gm006_harpsichord``."""
    return f"gm{program:03d}_{GM_PROGRAM_NAMES[program]}"


def program_instrument(program: int) -> Instrument:
    """A GM program as an instrument of its own (label from ``program_label``)."""
    if not 0 <= program < 128:
        raise KeyError(f"GM program {program} is out of range 0-127")
    low, high, sustained = _PROGRAM_RANGES.get(program, _FAMILY_RANGES[program // 8])
    return Instrument(program_label(program), (program,), low, high, sustained)


def program_set(spec: str) -> tuple[int, ...]:
    """Parse a program selection: ``extra`` (programs allowed for training the matcher), ``reserved``
    (held out for one-shot evaluation), or comma-separated numbers and ranges (``4,6,80-87``)."""
    spec = spec.strip().lower()
    if spec == "extra":
        return tuple(sorted(EXTRA_TRAINING_PROGRAMS))
    if spec == "reserved":
        return tuple(p for p in range(128) if is_reserved_program(p))
    programs: list[int] = []
    for part in spec.split(","):
        low, _, high = part.strip().partition("-")
        try:
            programs.extend(range(int(low), int(high or low) + 1))
        except ValueError:
            raise ValueError(f"bad program list {spec!r}: use extra, reserved, or numbers like 4,6,80-87") from None
    if not all(0 <= p < 128 for p in programs):
        raise ValueError(f"GM programs are 0-127; got {spec!r}")
    return tuple(dict.fromkeys(programs))


def instrument(label: str) -> Instrument:
    """Return the taxonomy entry for ``label`` (or a GM program label such as ``gm006_harpsichord``);
    raise ``KeyError`` naming the valid labels."""
    if label in _BY_LABEL:
        return _BY_LABEL[label]
    if label.startswith("gm") and label[2:5].isdigit() and int(label[2:5]) < 128:
        program = int(label[2:5])
        if label == program_label(program):
            return program_instrument(program)
    raise KeyError(
        f"unknown label {label!r}; the taxonomy has: {', '.join(DEFAULT_LABELS)}, "
        "and single GM programs are named like gm006_harpsichord"
    )


def is_reserved_program(program: int) -> bool:
    """True when ``program`` is held out for one-shot evaluation (no training may use it)."""
    taxonomy_programs = {p for i in TAXONOMY for p in i.programs}
    return program not in taxonomy_programs and program not in EXTRA_TRAINING_PROGRAMS
