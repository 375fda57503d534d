"""The default label set: 18 instruments, the GM programs that render them, and playing ranges."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Instrument",
    "TAXONOMY",
    "DEFAULT_LABELS",
    "EXTRA_TRAINING_PROGRAMS",
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


def instrument(label: str) -> Instrument:
    """Return the taxonomy entry for ``label``; raise ``KeyError`` naming the valid labels."""
    try:
        return _BY_LABEL[label]
    except KeyError:
        raise KeyError(f"unknown label {label!r}; the taxonomy has: {', '.join(DEFAULT_LABELS)}") from None


def is_reserved_program(program: int) -> bool:
    """True when ``program`` is held out for one-shot evaluation (no training may use it)."""
    taxonomy_programs = {p for i in TAXONOMY for p in i.programs}
    return program not in taxonomy_programs and program not in EXTRA_TRAINING_PROGRAMS
