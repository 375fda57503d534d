"""The seed CNN's shapes, the checkpoint format (safetensors + JSON metadata, never pickle) and the
fast inference copy of every architecture (``inference_model``)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from mirbatch.audio import decode
from mirbatch.features import MelConfig, make_featurizer, resize_patches
from mirbatch.models import (
    ARCHITECTURES,
    BUNDLED_MODELS,
    DEFAULT_CLASSIFIER,
    VGGCNN,
    CheckpointError,
    CheckpointMeta,
    Matcher,
    SeedCNN,
    build_model,
    inference_model,
    load_checkpoint,
    read_checkpoint_meta,
    save_checkpoint,
)
from mirbatch.precision import autocast
from mirbatch.taxonomy import DEFAULT_LABELS


def test_seed_cnn_layer_shapes() -> None:
    model = SeedCNN(n_labels=18).eval()
    x = torch.rand(5, 1, 150, 150)
    c1 = model.features[0](x)
    assert c1.shape == (5, 32, 37, 37)  # 3x3 stride 4
    pooled = model.features[2](model.features[1](c1))
    assert pooled.shape == (5, 32, 18, 18)  # 3x3 max-pool stride 2
    assert model.features[3](pooled).shape == (5, 32, 16, 16)
    assert model(x).shape == (5, 18)
    # Dropout is active in training mode only.
    model.train()
    torch.manual_seed(0)
    assert not torch.equal(model(x), model(x))


@pytest.mark.parametrize("size", [(96, 44), (96, 112)])  # unresized log-mel and scalogram patches
def test_vgg_cnn_keeps_frequency_bands_on_native_patches(size: tuple[int, int]) -> None:
    model = VGGCNN(n_labels=18).eval()
    x = torch.rand(3, 1, *size)
    assert model.features(x).shape == (3, 64, 6, size[1] // 4)  # rows 96 -> 6, time halved twice
    assert model(x).shape == (3, 18)
    # The head sees the 6 bands apart: one pattern low or high in frequency gives other logits.
    low, high = torch.zeros(1, 1, *size), torch.zeros(1, 1, *size)
    low[..., 2:10, :], high[..., -10:-2, :] = 1.0, 1.0
    assert not torch.allclose(model(low), model(high), atol=1e-4)


# Patch sizes each architecture reads: the seed's resize, log-mel with 25 harmonic rows, scalograms.
_INPUT_ROWS_COLUMNS = {
    "cnn": (150, 150),
    "cnn-freq": (150, 150),
    "cnn-vgg": (96, 44),
    "cnn-harmonic": (96 + 25, 44),
    "siamese": (96, 96),
    "residual-siamese": (96, 96),
}


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model.embed(x) if isinstance(model, Matcher) else model(x)


def _check_inference_copy(model: nn.Module, x: torch.Tensor) -> None:
    """The fast copy gives the model's outputs up to float rounding and leaves the model as it was."""
    before = {k: v.clone() for k, v in model.state_dict().items()}
    layers = [type(m) for m in model.modules()]
    eager = _outputs(model, x)
    fast = inference_model(model)
    # Folding rescales each convolution's weights by its batch norm's 1/sqrt(var): rounding of the
    # order of float32's epsilon times the largest output, far under any difference between labels.
    tolerance = 1e-5 * float(eager.abs().max()) + 1e-6
    for batch in (x, x[:1]):  # also a batch of one, as the last batch of a file often is
        assert (_outputs(fast, batch) - _outputs(model, batch)).abs().max() <= tolerance
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules()), "every 2-D batch norm folded"
    assert all(
        m.weight.is_contiguous(memory_format=torch.channels_last) for m in fast.modules() if isinstance(m, nn.Conv2d)
    )
    assert [type(m) for m in model.modules()] == layers, "the model itself keeps its batch norms"
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name", BUNDLED_MODELS)
def test_the_inference_copy_of_a_bundled_model_predicts_the_same(name: str) -> None:
    checkpoint = load_checkpoint(name)
    rows, columns = _INPUT_ROWS_COLUMNS[checkpoint.meta.architecture]
    _check_inference_copy(
        checkpoint.model, torch.rand(16, 1, rows, columns, generator=torch.Generator().manual_seed(0))
    )


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_16_bit_forwards_keep_the_bundled_classifier_s_labels(precision: str) -> None:
    """``tag --precision``: on the bundled examples' patches, the same label for every file and
    patch probabilities within 0.03 of float32's (bf16 keeps 8 bits of mantissa: 0.010 measured)."""
    checkpoint = load_checkpoint(DEFAULT_CLASSIFIER)
    features = checkpoint.meta.features
    examples = sorted((Path(__file__).parents[1] / "examples").iterdir())
    batch = make_featurizer(features)([decode(p, features.sample_rate).samples for p in examples], resize=False)
    x = resize_patches(batch.inputs, features)
    model = inference_model(checkpoint.model)
    with torch.inference_mode():
        exact = torch.softmax(model(x), dim=1)
        with autocast("cpu", precision):
            logits = model(x)
        rounded = torch.softmax(logits.float(), dim=1)
    assert logits.dtype == (torch.bfloat16 if precision == "bf16" else torch.float16)
    assert (rounded - exact).abs().max() < 0.03
    owner = torch.from_numpy(batch.owner)
    for i in range(len(examples)):
        assert rounded[owner == i].mean(0).argmax() == exact[owner == i].mean(0).argmax()
    with pytest.raises(ValueError, match="fp32, bf16, fp16"):
        autocast("cpu", "int8")


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_the_inference_copy_of_every_architecture_predicts_the_same(architecture: str) -> None:
    params = {"harmonic_rows": 25} if architecture == "cnn-harmonic" else {}
    model = build_model(architecture, 18, **params)
    # Fresh batch norms are identities; give them statistics and scales as training would.
    generator = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d) and m.affine:
            assert m.running_mean is not None and m.running_var is not None
            m.running_mean.normal_(generator=generator)
            m.running_var.uniform_(0.25, 4.0, generator=generator)
            m.weight.data.normal_(generator=generator)
            m.bias.data.normal_(generator=generator)
    model.eval()
    rows, columns = _INPUT_ROWS_COLUMNS[architecture]
    _check_inference_copy(model, torch.rand(16, 1, rows, columns, generator=generator))


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    model = SeedCNN(n_labels=3)
    meta = CheckpointMeta("cnn", ("a", "b", "c"), MelConfig(patch_hop_s=0.25), training={"data": ["x"]})
    digest = save_checkpoint(tmp_path / "m.safetensors", model, meta)
    loaded = load_checkpoint(str(tmp_path / "m.safetensors"))
    assert loaded.meta.labels == ("a", "b", "c")
    assert loaded.meta.features == MelConfig(patch_hop_s=0.25)
    assert loaded.meta.training == {"data": ["x"]}
    assert loaded.sha256 == digest
    assert loaded.model_id == f"m@{digest[:12]}"
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.model.state_dict()[key])
    # The metadata alone, from the header, is the same.
    assert read_checkpoint_meta(str(tmp_path / "m.safetensors")) == loaded.meta
    # Readable as any file the user writes (the umask decides), not 0600 as safetensors' save_file makes.
    (tmp_path / "plain").write_text("")
    assert (tmp_path / "m.safetensors").stat().st_mode == (tmp_path / "plain").stat().st_mode


def test_bundled_default_loads() -> None:
    checkpoint = load_checkpoint(DEFAULT_CLASSIFIER)
    assert sorted(checkpoint.meta.labels) == sorted(DEFAULT_LABELS)
    assert checkpoint.meta.architecture in ("cnn", "cnn-freq", "cnn-vgg")
    assert checkpoint.meta.features.name == "mel"
    assert any("fluidr3" in d for d in checkpoint.meta.training["data"])


def test_pickle_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(str(path))
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        read_checkpoint_meta(str(path))
    path.write_bytes(b"abc")
    with pytest.raises(CheckpointError, match="too short"):
        read_checkpoint_meta(str(path))


def test_safetensors_without_metadata_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="without mirbatch metadata"):
        load_checkpoint(str(path))


def test_metadata_is_validated(tmp_path: Path) -> None:
    path = tmp_path / "bad.safetensors"
    meta = CheckpointMeta("cnn", ("a", "b"), MelConfig()).to_dict()
    meta["architecture"] = "transformer-9000"
    save_file(SeedCNN(2).state_dict(), str(path), metadata={"mirbatch": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="unknown to this mirbatch"):
        load_checkpoint(str(path))
    meta["architecture"] = "cnn"
    meta["support_shifts"] = [12, -12]
    save_file(SeedCNN(2).state_dict(), str(path), metadata={"mirbatch": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="include 0"):
        load_checkpoint(str(path))
    meta["support_shifts"] = [0, 12]  # mel rows are not log-spaced: no shift moves a mel patch's pitch
    save_file(SeedCNN(2).state_dict(), str(path), metadata={"mirbatch": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="scalogram features"):
        load_checkpoint(str(path))
    del meta["support_shifts"]  # checkpoints from before support shifts enrol examples as they are
    save_file(SeedCNN(2).state_dict(), str(path), metadata={"mirbatch": json.dumps(meta)})
    assert load_checkpoint(str(path)).meta.support_shifts == (0,)


def test_weights_must_fit_the_labels(tmp_path: Path) -> None:
    path = tmp_path / "mismatch.safetensors"
    meta = CheckpointMeta("cnn", ("a", "b", "c"), MelConfig()).to_dict()
    save_file(SeedCNN(2).state_dict(), str(path), metadata={"mirbatch": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(str(path))


def test_a_cut_off_checkpoint_says_so(tmp_path: Path) -> None:
    """Its header reads, its tensors do not: a copy or download that stopped early, not a wrong model."""
    whole = tmp_path / "whole.safetensors"
    save_checkpoint(whole, SeedCNN(3), CheckpointMeta("cnn", ("a", "b", "c"), MelConfig()))
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    assert read_checkpoint_meta(str(cut)).labels == ("a", "b", "c")
    with pytest.raises(CheckpointError, match=r"cut: the checkpoint file is damaged or incomplete .*; copy it again"):
        load_checkpoint(str(cut))


def test_missing_model_names_the_choices() -> None:
    with pytest.raises(CheckpointError, match="cnn-default"):
        load_checkpoint("no-such-model")
