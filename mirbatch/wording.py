"""Wording that messages share."""

from __future__ import annotations

__all__ = ["counted"]


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
