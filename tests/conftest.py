"""Shared fixtures: one local Ray for the whole session, and audio rendered from real sample libraries."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mirbatch.datasets.render import RenderConfig, render_dataset

SR = 22050


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """A local Ray started once (start-up costs ~11 s), in its own short temp dir so runs never collide."""
    import ray

    temp_dir = tempfile.mkdtemp(prefix="mbray", dir="/tmp")
    # Loopback-only test cluster without token auth, so CLI subprocesses can join it by address.
    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(address="local", num_cpus=2, _temp_dir=temp_dir, logging_level="WARNING")
    yield
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def fluidr3_clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two FluidR3_GM clips per taxonomy label (a seed the bundled model was not trained on)."""
    out = tmp_path_factory.mktemp("fluidr3")
    render_dataset(RenderConfig("fluidr3", per_class=2, seed=4242), out)
    return out


def sine(freq: float, seconds: float, rate: int = SR, amplitude: float = 0.5) -> np.ndarray:
    """A sine tone [shape=(n,)], float32."""
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_audio(path: Path, y: np.ndarray, rate: int, **kwargs: str) -> Path:
    """Write ``y`` with soundfile (format from the file name unless given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), y, rate, **kwargs)
    return path
