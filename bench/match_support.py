"""One-shot matching against a large support library: cost per query and memory.

Scores query patches against N support embeddings (default 10,000: 2,500 shots of 4 patches over
500 labels) with ``matching.score_against_support`` (chunked ``cdist``), and, in the same process as
the baseline, the direct formula that materializes every |q - s| difference. Prints queries per
second, microseconds per query, the ratio, and the peak memory each needs.

    python bench/match_support.py [--support 10000] [--queries 256] [--dim 128]
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable

import numpy as np
import torch

from mirbatch.matching import SupportSet, score_against_support
from mirbatch.models import WeightedL1Head


def _naive(head: WeightedL1Head, queries: torch.Tensor, support: SupportSet) -> torch.Tensor:
    """The paper's formula over one (queries, support, dim) tensor, then the same aggregation."""
    with torch.inference_mode():
        logits = head.bias - ((queries[:, None, :] - support.embeddings[None, :, :]).abs() * head.scale()).sum(-1)
        best = torch.full((len(queries), support.n_shots), -torch.inf)
        best.scatter_reduce_(1, support.shot.expand(len(queries), -1), logits, reduce="amax")
        shot_scores = torch.sigmoid(best)
        sums = torch.zeros(len(queries), len(support.labels)).index_add_(1, support.shot_label, shot_scores)
        return sums / torch.bincount(support.shot_label, minlength=len(support.labels))


def _timed(fn: Callable[[], torch.Tensor], repeats: int) -> tuple[float, torch.Tensor]:
    fn()  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    return (time.perf_counter() - started) / repeats, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--support", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=256)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    head = WeightedL1Head(args.dim)
    embeddings = rng.normal(size=(args.support, args.dim)).astype(np.float32)
    shots = [str(i // 4) for i in range(args.support)]
    labels = [f"label{(i // 4) % 500}" for i in range(args.support)]
    support = SupportSet.build(embeddings, shots, labels)
    queries = torch.randn(args.queries, args.dim)
    print(f"support: {args.support} embeddings, {support.n_shots} shots, {len(support.labels)} labels, dim {args.dim}")
    print(f"query batch: {args.queries} patches; torch threads: {torch.get_num_threads()}")

    rows = []
    for name, fn in (
        ("naive (q, s, dim) broadcast", lambda: _naive(head, queries, support)),
        ("mirbatch chunked cdist", lambda: score_against_support(head, queries, support)),
    ):
        seconds, out = _timed(fn, args.repeats)
        rows.append((name, seconds, out))
    (base_name, base_s, base_out), (name, s, out) = rows
    torch.testing.assert_close(out, base_out, rtol=1e-4, atol=1e-5)  # same scores
    for label, seconds in ((base_name, base_s), (name, s)):
        print(f"{label:<30} {args.queries / seconds:10.0f} queries/s  {seconds / args.queries * 1e6:8.1f} us/query")
    print(f"speed-up: {base_s / s:.1f}x")
    # Memory: the naive form holds queries x support x dim floats at once; the chunked form at most
    # queries x 4096 scores.
    naive_bytes = args.queries * args.support * args.dim * 4
    chunked_bytes = args.queries * min(args.support, 4096) * 4 * 3
    print(f"working memory: naive {naive_bytes / 2**20:.0f} MiB, chunked ~{chunked_bytes / 2**20:.1f} MiB")
    print(f"process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
