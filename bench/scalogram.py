"""Scalograms: a ``pywt.cwt(method="fft")`` loop vs mirbatch's batched multi-rate CWT, same scales.

Both compute the Morlet (``cmor1.5-1.0``) magnitude scalogram of 1 s patches at the 96 centre
frequencies of ``ScalogramConfig(wavelet="morlet")``; pywt on each patch (with the same context
padding mirbatch uses, so both see the same signal), mirbatch on the whole clip (its featurizer
transforms runs of overlapping patches together). Prints patches per second and the ratio. Parity
with a direct time-domain convolution is tested in tests/test_scalogram.py.

    python bench/scalogram.py [--patches 64] [--device cpu --device cuda]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import pywt
import torch

from mirbatch.features import ScalogramConfig, ScalogramFeaturizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", type=int, default=64)
    parser.add_argument(
        "--device", action="append", help="Where mirbatch's transform runs (cpu, cuda); repeat for several."
    )
    args = parser.parse_args()
    config = ScalogramConfig(wavelet="morlet")
    rate = config.sample_rate
    rng = np.random.default_rng(0)
    t = np.arange(rate * (args.patches // 2 + 1)) / rate
    clip = (np.sin(2 * np.pi * 440 * t) * np.exp(-(t % 1.0) * 3) + 0.01 * rng.normal(size=t.size)).astype(np.float32)
    wavelet = pywt.ContinuousWavelet(f"cmor{config.morlet_bandwidth}-{config.morlet_center}")
    scales = pywt.frequency2scale(wavelet, config.frequencies() / rate)
    context = ScalogramFeaturizer(config).context
    hop = config.patch_hop_samples
    segments = [
        clip[max(0, s - context) : s + config.patch_samples + context] for s in range(0, args.patches * hop, hop)
    ]
    segments = [s for s in segments if len(s) > config.patch_samples][: args.patches]

    def best_of(repeats: int, fn: Callable[[], object]) -> float:
        """The fastest of ``repeats`` runs (the least disturbed by the rest of the machine)."""
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    pywt.cwt(segments[0], scales[:4], wavelet, method="fft")  # warm-up
    n_ref = min(len(segments), 16)

    def reference_loop() -> None:
        for segment in segments[:n_ref]:
            np.abs(pywt.cwt(segment, scales, wavelet, sampling_period=1 / rate, method="fft")[0])

    ref_rate = n_ref / best_of(3, reference_loop)
    print(f"pywt.cwt loop ({len(scales)} scales): {ref_rate:8.1f} patches/s   1.00x")
    for device in args.device or ["cpu"]:
        featurizer = ScalogramFeaturizer(config).to(device)

        def ours_once(featurizer: ScalogramFeaturizer = featurizer, device: str = device) -> int:
            patches = featurizer([clip])
            if device.startswith("cuda"):
                torch.cuda.synchronize()  # GPU work is asynchronous: time it finished
            return len(patches.owner)

        featurizer([clip[: rate * 2]])  # warm-up
        our_rate = ours_once() / best_of(3, ours_once)
        print(
            f"mirbatch scalogram (same scales, {device}, torch threads {torch.get_num_threads()}): "
            f"{our_rate:8.1f} patches/s   {our_rate / ref_rate:.1f}x"
        )


if __name__ == "__main__":
    main()
