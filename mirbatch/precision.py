"""The arithmetic a model's forward runs in (``tag --precision``, ``train --precision``).

Kept apart from ``models`` so the CLI can offer the choices without importing torch.
"""

from __future__ import annotations

import contextlib
from typing import Any

__all__ = ["PRECISIONS", "TRAINING_PRECISIONS", "autocast"]

PRECISIONS = ("fp32", "bf16", "fp16")
# fp16 gradients underflow without loss scaling; bf16 keeps float32's exponent range and needs none.
TRAINING_PRECISIONS = ("fp32", "bf16")


def autocast(device: str, precision: str) -> contextlib.AbstractContextManager[Any]:
    """The context a model's forward runs in at ``precision`` on ``device`` (``cpu``, ``cuda``).

    ``fp32``: as it is. ``bf16`` and ``fp16``: ``torch.autocast``, which runs convolutions and matrix
    products in that 16-bit type and keeps reductions in float32. It pays on hardware with native
    16-bit arithmetic (GPUs; CPUs with AVX512-BF16 or AMX for ``bf16``) and costs elsewhere; scores
    move by about 1e-2 (tests/test_models.py), so take the outputs back to float32 before a softmax.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type=device, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
