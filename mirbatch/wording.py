"""Wording that messages share."""

from __future__ import annotations

__all__ = ["counted", "duration"]


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and ``noun``, plural unless ``n`` is 1: ``1 file``, ``2 files``, ``3 patches``.

    Parameters
    ----------
    n : int
        How many.
    noun : str
        The singular.
    plural : str, optional
        The plural when adding an ``s`` will not do (``patches``, ``copies``).
    """
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def duration(seconds: float) -> str:
    """A span as people say it, to two figures at most: ``40 s``, ``12 min``, ``3.4 h``, ``26 h``."""
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    hours = seconds / 3600
    return f"{hours:.1f} h" if hours < 10 else f"{hours:.0f} h"
