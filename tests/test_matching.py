"""One-shot matching: the Siamese head, support scoring, episodes, thresholds, label splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mirbatch.datasets.layouts import LabelledFile, split_by_label
from mirbatch.matching import SupportSet, calibrate_threshold, file_score_matrix, run_episodes, score_against_support
from mirbatch.models import ResidualSiameseNet, SiameseNet, WeightedL1Head, build_model, count_parameters
from mirbatch.taxonomy import instrument, is_reserved_program, program_label, program_set


def _head(dim: int = 8, seed: int = 0) -> WeightedL1Head:
    torch.manual_seed(seed)
    head = WeightedL1Head(dim)
    with torch.no_grad():
        head.weight.normal_()  # unequal per-dimension weights, so the weighting is exercised
        head.bias.fill_(0.3)
    return head


def test_cross_logits_equal_the_papers_formula_pair_by_pair() -> None:
    head = _head()
    q, s = torch.randn(5, 8), torch.randn(7, 8)
    gamma = -torch.nn.functional.softplus(head.weight)
    expected = torch.stack([torch.stack([(gamma * (a - b).abs()).sum() + head.bias for b in s]) for a in q])
    torch.testing.assert_close(head.cross_logits(q, s), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(head.pair_logits(q, s[:5]), expected.diagonal())
    # Identical inputs score highest: the logit is the bias minus a distance.
    assert torch.all(head.cross_logits(q, q).diagonal()[:, None] >= head.cross_logits(q, q) - 1e-6)


@pytest.mark.parametrize("architecture", ["siamese", "residual-siamese"])
def test_matchers_embed_and_score_pairs(architecture: str) -> None:
    model = build_model(architecture, 3).eval()
    assert isinstance(model, SiameseNet | ResidualSiameseNet)
    x = torch.rand(6, 1, 96, 96)
    with torch.inference_mode():
        e = model.embed(x)
        all_pairs = model(x)
        pairs = model(x, x.flip(0))
    assert e.shape == (6, 128)
    assert all_pairs.shape == (6, 6) and pairs.shape == (6,)
    torch.testing.assert_close(pairs, all_pairs[torch.arange(6), torch.arange(5, -1, -1)], rtol=1e-4, atol=1e-4)
    assert count_parameters(model) < 500_000  # sized to run fast (the paper's is 420M)


def _support(n_shots: int = 9, per_shot: int = 3, n_labels: int = 4, dim: int = 8) -> tuple[SupportSet, np.ndarray]:
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(n_shots * per_shot, dim)).astype(np.float32)
    shot_ids = [f"shot{i // per_shot}" for i in range(len(emb))]
    labels = [f"label{(i // per_shot) % n_labels}" for i in range(len(emb))]
    return SupportSet.build(emb, shot_ids, labels), emb


def test_support_scores_are_the_mean_over_shots_of_the_best_patch_whatever_the_chunk() -> None:
    head = _head()
    support, emb = _support()
    queries = torch.randn(5, 8)
    full = score_against_support(head, queries, support)
    chunked = score_against_support(head, queries, support, chunk=2)  # chunks cut shots apart
    torch.testing.assert_close(full, chunked)
    # Brute force, straight from the definition.
    probs = torch.sigmoid(head.cross_logits(queries, torch.from_numpy(emb))).detach()
    expected = torch.zeros(5, len(support.labels))
    for li in range(len(support.labels)):
        shots = [s for s in range(support.n_shots) if support.shot_label[s] == li]
        per_shot = [probs[:, (support.shot == s).numpy()].max(dim=1).values for s in shots]
        expected[:, li] = torch.stack(per_shot).mean(dim=0)
    torch.testing.assert_close(full, expected, rtol=1e-5, atol=1e-6)


def test_ten_thousand_support_embeddings_are_scored_in_chunks() -> None:
    head = WeightedL1Head(128)
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(10_000, 128)).astype(np.float32)
    support = SupportSet.build(emb, [str(i // 4) for i in range(10_000)], [f"l{i % 50}" for i in range(10_000)])
    scores = score_against_support(head, torch.randn(64, 128), support, chunk=1024)
    assert scores.shape == (64, 50)
    assert torch.all((scores >= 0) & (scores <= 1))


def test_file_score_matrix_weighs_query_patches_of_best_shot_patches() -> None:
    head = _head()
    q = torch.randn(5, 8)
    q_owner = np.array([0, 0, 1, 1, 1])
    q_weight = np.array([1.0, 1.0, 1.0, 0.1, 0.01], dtype=np.float32)  # loudest, 10 and 20 dB under
    s = torch.randn(4, 8)
    s_owner = np.array([0, 1, 1, 1])
    matrix = file_score_matrix(head, q, q_owner, q_weight, 2, s, s_owner, 2)
    probs = torch.sigmoid(head.cross_logits(q, s)).detach().numpy()
    best = probs[2:, 1:].max(axis=1)
    assert matrix[1, 1] == pytest.approx((best * q_weight[2:]).sum() / q_weight[2:].sum(), rel=1e-5)
    assert matrix[0, 0] == pytest.approx(probs[:2, 0].mean(), rel=1e-5)


def test_episodes_reach_one_with_perfect_scores_and_chance_with_noise() -> None:
    labels = np.repeat([f"l{i}" for i in range(8)], 6)
    perfect = (labels[:, None] == labels[None, :]).astype(float)
    assert run_episodes(perfect, labels, labels, 5, 1, 200).mean == 1.0
    noise = np.random.default_rng(0).random((len(labels), len(labels)))
    result = run_episodes(noise, labels, labels, 5, 1, 400)
    assert abs(result.mean - 0.2) < 0.05
    assert result.ci95 < 0.05
    # A file is never its own shot: a matrix that only recognizes a file itself is at chance.
    selfish = np.eye(len(labels)) + 1e-3 * noise
    assert run_episodes(selfish, labels, labels, 5, 1, 400).mean < 0.3


def test_episodes_refuse_too_few_labels() -> None:
    labels = np.repeat(["a", "b"], 3)
    with pytest.raises(ValueError, match="5-way"):
        run_episodes(np.zeros((6, 6)), labels, labels, 5, 1, 10)


def test_threshold_separates_same_from_different() -> None:
    rng = np.random.default_rng(0)
    same, different = rng.uniform(0.6, 0.9, 200), rng.uniform(0.1, 0.55, 300)
    t = calibrate_threshold(same, different)
    assert different.max() < t <= same.min()  # scores >= t count as "same"


def test_label_split_never_shares_a_label_and_is_stable() -> None:
    files = [LabelledFile(f"/d/{label}/{i}.wav", label) for label in "abcdefghij" for i in range(3)]
    train, val = split_by_label(files, 0.2, seed=1)
    assert {f.label for f in train}.isdisjoint({f.label for f in val})
    assert len({f.label for f in val}) == 2
    assert split_by_label(list(reversed(files)), 0.2, seed=1)[1] == list(reversed(val))


def test_gm_program_labels_and_sets() -> None:
    assert program_label(6) == "gm006_harpsichord"
    assert instrument("gm006_harpsichord").programs == (6,)
    assert 6 in program_set("extra") and not any(is_reserved_program(p) for p in program_set("extra"))
    assert all(is_reserved_program(p) for p in program_set("reserved"))
    assert program_set("4,80-82") == (4, 80, 81, 82)
    with pytest.raises(KeyError):
        instrument("gm006_piano")
    with pytest.raises(ValueError):
        program_set("4,x")
