"""Shared fixtures: one local Ray for the whole session, audio rendered from real sample libraries,
and the repository's scripts loaded as modules."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import soundfile as sf

from mirbatch.datasets.render import RenderConfig, render_dataset

SR = 22050

# Credentials for the loopback S3 server (moto accepts any); set before Ray starts so its workers
# inherit them through the standard AWS chain, as they would on a cluster.
for _key, _value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                     ("AWS_DEFAULT_REGION", "us-east-1")):  # fmt: skip
    os.environ.setdefault(_key, _value)


@pytest.fixture(scope="session")
def load_script() -> Callable[[str], ModuleType]:
    """``load_script("real_notes")``: ``scripts/real_notes.py`` as a module (scripts are no package)."""

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "scripts" / f"{name}.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """A local Ray started once (start-up costs ~11 s), in its own short temp dir so runs never collide."""
    import ray

    temp_dir = tempfile.mkdtemp(prefix="mbray", dir="/tmp")
    # Loopback-only test cluster without token auth, so CLI subprocesses can join it by address.
    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(address="local", num_cpus=2, _temp_dir=temp_dir, logging_level=logging.WARNING)
    yield
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture
def cluster_env(ray_session: None) -> dict[str, str]:
    """The environment of a CLI subprocess that joins the session's Ray as its own driver (the test
    cluster listens on loopback without token auth)."""
    return {**os.environ, "RAY_AUTH_MODE": "disabled"}


@pytest.fixture(scope="session")
def fluidr3_clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two FluidR3_GM clips per taxonomy label (a seed the bundled model was not trained on)."""
    out = tmp_path_factory.mktemp("fluidr3")
    render_dataset(RenderConfig("fluidr3", per_class=2, seed=4242), out)
    return out


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A real S3 protocol server (moto) on loopback; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def sine(freq: float, seconds: float, rate: int = SR, amplitude: float = 0.5) -> np.ndarray:
    """A sine tone [shape=(n,)], float32."""
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def free_port() -> int:
    """A loopback TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_audio(path: Path, y: np.ndarray, rate: int, **kwargs: str) -> Path:
    """Write ``y`` with soundfile (format from the file name unless given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), y, rate, **kwargs)
    return path
