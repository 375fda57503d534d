"""Fine-tuning (``train --init``): a checkpoint's weights carried into a run by label name, and
checked against the run's network and features. The Ray Train runs are in test_training.py."""

from __future__ import annotations

import pytest
import torch

from mirbatch.features import MelConfig
from mirbatch.models import Checkpoint, CheckpointMeta, build_model, label_layers
from mirbatch.training import (
    MatcherWithAux,
    TrainConfig,
    check_init,
    default_features,
    describe_init,
    initial_weights,
)


def _checkpoint(architecture: str, labels: tuple[str, ...], **params: object) -> Checkpoint:
    torch.manual_seed(1)
    model = build_model(architecture, len(labels), **params).eval()
    features = default_features(architecture)
    return Checkpoint(model, CheckpointMeta(architecture, labels, features, params=dict(params)), "start", "0" * 64)


def test_every_architecture_names_its_label_layers() -> None:
    assert label_layers(build_model("cnn", 4)) == ("classifier.3",)
    assert label_layers(build_model("cnn-vgg", 4)) == ("classifier.4",)
    # Both branches of cnn-harmonic answer with the labels.
    assert label_layers(build_model("cnn-harmonic", 4, harmonic_rows=25)) == ("mel.classifier.4", "harmonic_head.1")
    assert label_layers(build_model("residual-siamese", 4)) == ()
    for architecture in ("cnn", "cnn-freq", "cnn-vgg"):
        model = build_model(architecture, 7)
        for name in label_layers(model):
            assert model.get_submodule(name).out_features == 7


@pytest.mark.parametrize("architecture", ["cnn-vgg", "cnn-harmonic"])
def test_known_labels_keep_their_answers_and_new_labels_start_fresh(architecture: str) -> None:
    params = {"harmonic_rows": 25} if architecture == "cnn-harmonic" else {}
    start = _checkpoint(architecture, ("flute", "tuba", "piano"), **params)
    torch.manual_seed(2)
    fresh = build_model(architecture, 3, **params)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    # The new run's labels in another order, one of them new.
    fresh.load_state_dict(initial_weights(fresh, ("piano", "banjo", "flute"), start))
    fresh.eval()
    heads = {f"{layer}.{part}" for layer in label_layers(fresh) for part in ("weight", "bias")}
    for key, value in fresh.state_dict().items():
        if key in heads:
            assert torch.equal(value[0], start.model.state_dict()[key][2])  # piano
            assert torch.equal(value[2], start.model.state_dict()[key][0])  # flute
            assert torch.equal(value[1], before[key][1])  # banjo: as initialized
        else:
            assert torch.equal(value, start.model.state_dict()[key]), key
    # So the fine-tuned network answers as the checkpoint did for the labels both know.
    x = torch.rand(4, 1, *start.meta.features.input_size)
    with torch.no_grad():
        ours, theirs = fresh(x), start.model(x)
    if architecture == "cnn-harmonic":  # eval mode: the sum of both branches' log-probabilities over all labels
        ours, theirs = fresh.branch_logits(x), start.model.branch_logits(x)  # type: ignore[operator]
    torch.testing.assert_close(ours[..., [0, 2]], theirs[..., [2, 0]])


def test_a_matcher_takes_every_weight_and_keeps_its_own_training_classifier() -> None:
    start = _checkpoint("siamese", ("flute", "tuba"))
    torch.manual_seed(3)
    fresh = MatcherWithAux(build_model("siamese", 0), 5)  # type: ignore[arg-type]
    aux = {k: v.clone() for k, v in fresh.aux.state_dict().items()}
    fresh.load_state_dict(initial_weights(fresh, ("a", "b", "c", "d", "e"), start))
    for key, value in fresh.matcher.state_dict().items():
        assert torch.equal(value, start.model.state_dict()[key]), key
    for key, value in fresh.aux.state_dict().items():
        assert torch.equal(value, aux[key])


def test_a_checkpoint_only_starts_a_run_of_its_own_network_and_features() -> None:
    start = _checkpoint("cnn-vgg", ("flute", "tuba"))
    same = TrainConfig(data=("d",), architecture="cnn-vgg", features=default_features("cnn-vgg"), init="start")
    check_init(same, start.meta, "start")
    others = [
        TrainConfig(data=("d",), architecture="cnn-freq", init="start"),
        TrainConfig(data=("d",), architecture="cnn-vgg", width=32, features=default_features("cnn-vgg"), init="x"),
        TrainConfig(data=("d",), architecture="cnn-vgg", features=MelConfig(), init="start"),  # resized patches
    ]
    for config in others:
        with pytest.raises(ValueError, match="leave out --model, --features, --wavelet and --width to take them"):
            check_init(config, start.meta, "start")


def test_fine_tuning_learns_at_a_lower_rate_unless_told() -> None:
    assert TrainConfig(data=("d",), architecture="cnn-vgg").learning_rate == pytest.approx(1e-3)
    assert TrainConfig(data=("d",), architecture="cnn-vgg", init="cnn-default").learning_rate == pytest.approx(3e-4)
    assert TrainConfig(data=("d",), architecture="cnn-vgg", init="cnn-default", lr=1e-3).learning_rate == 1e-3


def test_the_run_says_what_it_takes_from_its_checkpoint() -> None:
    classifier = _checkpoint("cnn-vgg", ("flute", "tuba"))
    line = describe_init(classifier, ("tuba", "banjo", "flute"))
    assert line == "starting from start@000000000000: 2 of 3 labels keep its output rows (new: banjo)"
    # A matcher has no output rows to keep: it says which labels it has trained on.
    matcher = _checkpoint("siamese", ("flute", "tuba"))
    assert describe_init(matcher, ("flute", "tuba")).endswith(": 2 of 2 labels were among its training labels")
