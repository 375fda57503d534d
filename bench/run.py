"""mirbatch benchmarks against the baselines users know, run in one process.

Generates a corpus (3 s files of 44.1 kHz stereo WAV, like CD rips, plus one 60-minute FLAC), then
prints audio-seconds per wall-second and ratios for:

1. the loop users write: per file ``librosa.load`` + ``melspectrogram`` + ``power_to_db`` + the
   same CNN on the same 1 s patches (the baseline); and the CNN alone, as loaded against the copy
   that tagging runs (``models.inference_model``), on the same 64-patch batches;
2. ``mirbatch tag`` (mel, the bundled CNN) with 1 and 2 workers, end to end with Parquet written;
   Ray start-up is reported apart from the steady-state rate; with CUDA present, also one model
   actor per GPU (audio-seconds per second per GPU);
3. scalograms: a ``pywt.cwt(method="fft")`` loop vs mirbatch's scalogram at the same scales (and
   on the GPU when there is one);
4. one-shot matching against 10,000 support embeddings (``bench/match_support.py``);
5. peak memory (RSS) of the driver and of each Ray worker process, also for the 60-minute file.

    python bench/run.py               # the full run (an hour of audio)
    python bench/run.py --hours 0.1   # a quick look
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf
import torch

if TYPE_CHECKING:
    from mirbatch.models import Checkpoint

RATE = 44100


def _tone_clip(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """A few harmonic notes with decay and a little noise [shape=(n, 2)], float32."""
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    y = np.zeros(n, np.float32)
    for start in np.sort(rng.uniform(0, seconds - 0.3, size=int(rng.integers(1, 5)))):
        f0 = 110.0 * 2 ** (rng.integers(0, 36) / 12)
        env = np.where(t >= start, np.exp(-(t - start) * rng.uniform(1, 6)), 0.0)
        for h in range(1, 6):
            y += (0.3 / h * env * np.sin(2 * np.pi * f0 * h * (t - start))).astype(np.float32)
    y += rng.normal(scale=0.003, size=n).astype(np.float32)
    return np.stack([y, 0.9 * y], axis=1) * 0.5


def _write_short(path: Path, index: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), _tone_clip(np.random.default_rng([0, index]), 3.0), RATE, subtype="PCM_16")


def _long_part(index: int) -> np.ndarray:
    return _tone_clip(np.random.default_rng([1, index]), 3.0)


def make_corpus(root: Path, hours: float) -> tuple[list[Path], Path]:
    """``hours`` of 3 s WAV files and one 60-minute FLAC under ``root`` (kept between runs).

    Files are generated in parallel, each from its own seed, so the corpus is the same whatever the
    number of processes.
    """
    short = root / "short"
    n = int(hours * 3600 / 3)
    files = [short / f"{i // 100:03d}" / f"clip_{i:05d}.wav" for i in range(n)]
    todo = [i for i, path in enumerate(files) if not path.exists()]
    long = root / "long" / "sixty_minutes.flac"
    with ProcessPoolExecutor() as pool:
        list(pool.map(_write_short, [files[i] for i in todo], todo, chunksize=64))
        if not long.exists():
            long.parent.mkdir(parents=True, exist_ok=True)
            with sf.SoundFile(str(long), "w", samplerate=RATE, channels=2, format="FLAC") as f:
                for part in pool.map(_long_part, range(1200), chunksize=32):
                    f.write(part)
    return files, long


def users_loop(files: list[Path], checkpoint: Checkpoint) -> float:
    """The baseline: what a user writes by hand, per file, for the checkpoint's features and model:
    ``librosa`` decode and log-mel (and, for a model that reads them, the harmonic rows from a
    ``librosa`` STFT), 1 s patches every 0.5 s, the same CNN. Returns audio seconds processed."""
    import librosa

    from mirbatch.features import HARMONIC_N_FFT, MelConfig, harmonic_levels, resize_patches

    cfg = checkpoint.meta.features
    assert isinstance(cfg, MelConfig), "the users' loop computes log-mel patches"
    width = cfg.patch_frames
    audio_s = 0.0
    for path in files:
        y, sr = librosa.load(str(path), sr=cfg.sample_rate, mono=True)
        mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=cfg.n_fft, hop_length=cfg.hop_length, n_mels=cfg.n_mels)
        db = librosa.power_to_db(mel, ref=np.max, top_db=cfg.top_db)
        starts = range(0, max(1, db.shape[1] - width + 1), cfg.patch_hop_frames)
        patches = [db[:, s : s + width] for s in starts]
        x = torch.from_numpy(np.stack([(p - p.min()) / (np.ptp(p) + 1e-6) for p in patches])[:, None])
        if cfg.harmonics:
            spec = torch.from_numpy(np.abs(librosa.stft(y, n_fft=HARMONIC_N_FFT, hop_length=cfg.hop_length)))
            rows = harmonic_levels(spec, cfg.sample_rate, cfg.harmonics)
            x = torch.cat([x, torch.stack([rows[:, s : s + width] for s in starts])[:, None]], dim=2)
        x = resize_patches(x.float(), cfg)
        with torch.no_grad():
            torch.softmax(checkpoint.model(x), dim=1).mean(dim=0)
        audio_s += len(y) / sr
    return audio_s


def model_rates(checkpoint: Checkpoint, rounds: int = 20, calls: int = 3) -> tuple[float, float, float]:
    """Patches per second of the checkpoint's model as loaded, of ``inference_model`` of it (what
    tagging runs) and of that copy in bfloat16 (``tag --precision bf16``), on the same 64-patch
    batch. The three take turns, ``calls`` batches at a time, so all see the same machine: on this
    shared one the rate of any of them moves by up to 2x between runs.
    """
    from mirbatch.features import resize_patches
    from mirbatch.models import inference_model
    from mirbatch.precision import autocast

    features = checkpoint.meta.features
    # Patches are min-max scaled to [0, 1], as the featurizer makes them.
    x = resize_patches(torch.rand(64, 1, *features.native_size, generator=torch.Generator().manual_seed(0)), features)
    fast = inference_model(checkpoint.model)
    forms = ((checkpoint.model, "fp32"), (fast, "fp32"), (fast, "bf16"))
    spent = [0.0] * len(forms)
    with torch.inference_mode():
        for model, precision in forms:
            with autocast("cpu", precision):
                model(x)  # warm-up: oneDNN picks its kernels on the first call
        for _ in range(rounds):
            for i, (model, precision) in enumerate(forms):
                t0 = time.perf_counter()
                with autocast("cpu", precision):
                    for _ in range(calls):
                        model(x)
                spent[i] += time.perf_counter() - t0
    patches = rounds * calls * len(x)
    eager, copy, half = (patches / t for t in spent)
    return eager, copy, half


class PeakMemory:
    """Samples the peak private RSS (RssAnon, every 0.25 s) of mirbatch's Ray worker processes.

    Model actors already alive when sampling starts belong to earlier runs in the same Ray session
    (an actor process serves only its actor) and are left out, so the peaks are this run's own.
    """

    def __init__(self) -> None:
        self.peaks: dict[str, int] = {}
        self._earlier_actors: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _workers() -> dict[str, str]:
        """Process title of every live mirbatch decode task or model actor, by pid."""
        found = {}
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            except OSError:
                continue
            if title.startswith("ray::") and re.search("decode_batch|ScoreActor", title):
                found[pid] = title
        return found

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid, title in self._workers().items():
                if pid in self._earlier_actors:
                    continue
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                # Private memory (RssAnon): VmRSS also counts the pages of Ray's shared object store
                # a worker has touched, which belong to the store, not to the worker.
                match = re.search(r"RssAnon:\s+(\d+) kB", status)
                if match:
                    key = f"{title.split()[0].split('.')[0][:48]} (pid {pid})"
                    self.peaks[key] = max(self.peaks.get(key, 0), int(match.group(1)) * 1024)
            time.sleep(0.25)

    def __enter__(self) -> PeakMemory:
        self._earlier_actors = {pid for pid, title in self._workers().items() if "ScoreActor" in title}
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=2.0, help="Audio in 3 s files (>= 1 for the record).")
    parser.add_argument("--corpus", type=Path, default=Path(tempfile.gettempdir()) / "mirbatch-bench")
    parser.add_argument("--baseline-files", type=int, default=300, help="Files the users' loop times.")
    parser.add_argument("--gpu-batch-size", type=int, default=256, help="Patches per model call on a GPU.")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, {sys.platform}")
    started = time.perf_counter()
    files, long = make_corpus(args.corpus, args.hours)
    print(f"corpus: {len(files)} files x 3 s ({len(files) * 3 / 3600:.2f} h) + 60 min FLAC, "
          f"ready in {time.perf_counter() - started:.0f}s")  # fmt: skip

    from mirbatch.models import load_checkpoint

    checkpoint = load_checkpoint("cnn-default")
    sample = files[: args.baseline_files]
    users_loop(sample[:5], checkpoint)  # warm-up (imports, numba)
    t0 = time.perf_counter()
    audio = users_loop(sample, checkpoint)
    loop_rate = audio / (time.perf_counter() - t0)
    print(f"\n[1] users' loop (librosa + CNN), {len(sample)} files: {loop_rate:8.1f} audio-s/s   1.00x")
    eager, fast, bf16 = model_rates(checkpoint)
    print(f"    the CNN alone, 64-patch batches: as loaded {eager:.0f} patches/s, as tagging runs it "
          f"(batch norms folded, channels-last) {fast:.0f} patches/s   {fast / eager:.2f}x; "
          f"with --precision bf16 {bf16:.0f} patches/s   {bf16 / fast:.2f}x the fp32 copy")  # fmt: skip

    import ray

    from mirbatch.pipeline import TagConfig, run_tag

    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.ERROR)
    startup = time.perf_counter() - t0
    print(f"\n[2] Ray start-up: {startup:.1f}s")
    out_root = Path(tempfile.mkdtemp(prefix="mirbatch-bench-out-"))
    short_corpus = TagConfig(sources=(str(args.corpus / "short"),), out=str(out_root / "short"), resume=False)
    rates = {}
    for workers in (1, 2):
        with PeakMemory() as memory:
            summary = run_tag(replace(short_corpus, out=str(out_root / f"w{workers}"), workers=workers))
        rates[workers] = steady = summary.steady_throughput
        with_startup = summary.audio_s / (summary.wall_s + startup)
        print(f"    mirbatch tag --workers {workers}: steady {steady:.1f} audio-s/s ({steady / loop_rate:.2f}x the "
              f"loop) after {summary.first_row_s:.1f}s to the first result; whole run {summary.throughput:.1f} "
              f"audio-s/s ({summary.throughput / loop_rate:.2f}x); with Ray start-up {with_startup:.1f} audio-s/s "
              f"({with_startup / loop_rate:.2f}x)")  # fmt: skip
        for name, peak in sorted(memory.peaks.items()):
            print(f"      peak private RSS {name}: {_mib(peak)}")
    print(f"    2 workers / 1 worker: {rates[2] / rates[1]:.2f}x")
    gpus = torch.cuda.device_count()
    if gpus:
        # One model actor per GPU (features and model on the device), decode tasks on every CPU.
        for batch_size in (64, args.gpu_batch_size):
            config = replace(short_corpus, out=str(out_root / f"gpu{batch_size}"), workers=gpus,
                             gpus_per_worker=1.0, batch_size=batch_size)  # fmt: skip
            summary = run_tag(config)
            steady = summary.steady_throughput
            print(f"    mirbatch tag on {gpus} x {torch.cuda.get_device_name(0)}, --batch-size {batch_size}: steady "
                  f"{steady:.1f} audio-s/s ({steady / gpus:.1f} per GPU, {steady / loop_rate:.2f}x the loop); "
                  f"whole run {summary.throughput:.1f} audio-s/s")  # fmt: skip
    with PeakMemory() as memory:
        summary = run_tag(TagConfig(sources=(str(long),), out=str(out_root / "long"), resume=False))
    print(
        f"    60-minute file: {summary.throughput:.1f} audio-s/s; worker peaks: "
        + ", ".join(f"{n.split(' (')[0]} {_mib(p)}" for n, p in sorted(memory.peaks.items()))
    )
    ray.shutdown()

    print("\n[3] scalograms: pywt.cwt(method='fft') loop vs mirbatch at the same scales (Morlet)")
    devices = ["--device", "cpu"] + (["--device", "cuda"] if gpus else [])
    subprocess.run([sys.executable, str(Path(__file__).with_name("scalogram.py")), *devices], check=True)
    print("\n[4] one-shot matching against 10,000 support embeddings")
    subprocess.run([sys.executable, str(Path(__file__).with_name("match_support.py"))], check=True)
    import resource

    print(f"\ndriver peak RSS: {_mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)}")


if __name__ == "__main__":
    main()
