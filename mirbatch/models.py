"""Models and checkpoints.

Architectures are registered by name (``cnn`` is the seed paper's classifier). A checkpoint is one
``.safetensors`` file: tensors plus a JSON metadata document in the safetensors header, so loading
never unpickles anything and a checkpoint is self-describing (architecture, features, labels, data,
metrics).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval

from mirbatch.baseline import MfccSvm
from mirbatch.features import FeatureConfig, check_pitch_shifts, feature_config_from_dict

__all__ = [
    "SeedCNN",
    "FreqCNN",
    "VGGCNN",
    "HarmonicCNN",
    "WeightedL1Head",
    "Matcher",
    "SiameseNet",
    "ResidualSiameseNet",
    "ARCHITECTURES",
    "MATCHER_ARCHITECTURES",
    "is_matcher",
    "count_parameters",
    "label_layers",
    "build_model",
    "inference_model",
    "CheckpointMeta",
    "Checkpoint",
    "CheckpointError",
    "save_checkpoint",
    "write_tensors",
    "load_checkpoint",
    "read_checkpoint_meta",
    "checkpoint_from_bytes",
    "read_checkpoint_bytes",
    "resolve_model_path",
    "BUNDLED_MODELS",
    "DEFAULT_CLASSIFIER",
    "DEFAULT_MATCHER",
]

ModuleT = TypeVar("ModuleT", bound=nn.Module)
_FORMAT = "mirbatch-checkpoint/1"
BUNDLED_MODELS: tuple[str, ...] = ("cnn-default", "siamese-default")
DEFAULT_CLASSIFIER = "cnn-default"
DEFAULT_MATCHER = "siamese-default"


class SeedCNN(nn.Module):
    """The seed paper's CNN over one-channel log-mel images.

    C1 32@3x3 stride 4 + ReLU + 3x3 max-pool stride 2; C2 32@3x3 + ReLU; C3 64@3x3 + ReLU; global
    max pool; fully connected + ReLU; dropout 0.5; linear to the labels (softmax is applied outside,
    so training can use the numerically safer cross-entropy on logits).

    Input ``x`` [shape=(batch, 1, height, width)] -> logits [shape=(batch, n_labels)].
    """

    def __init__(self, n_labels: int, hidden: int = 128, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, stride=4),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2),
            nn.Conv2d(32, 32, 3),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 3),
            nn.ReLU(inplace=True),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(64, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_labels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class FreqCNN(nn.Module):
    """The seed CNN's three-layer topology with batch norm and a frequency-aware head.

    The seed's global max pool throws away where in frequency a pattern occurs, that is the
    instrument's register (cello and violin share textures, not ranges). Here the last feature map
    is max-pooled over time only and the frequency rows go to the classifier.

    Input ``x`` [shape=(batch, 1, height, width)] -> logits [shape=(batch, n_labels)].
    """

    def __init__(self, n_labels: int, width: int = 32, freq_rows: int = 8, hidden: int = 256, dropout: float = 0.5):
        super().__init__()
        c1, c2, c3 = width, width, 2 * width
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, stride=4),
            nn.BatchNorm2d(c1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2),
            nn.Conv2d(c1, c2, 3),
            nn.BatchNorm2d(c2),
            nn.ReLU(inplace=True),
            nn.Conv2d(c2, c3, 3),
            nn.BatchNorm2d(c3),
            nn.ReLU(inplace=True),
            nn.AdaptiveMaxPool2d((freq_rows, 1)),  # rows = frequency bands, max over time
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(c3 * freq_rows, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_labels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class WeightedL1Head(nn.Module):
    """The Siamese score: ``sigmoid(sum_j gamma_j |e1_j - e2_j| + b)`` (seed paper, eq. 2).

    ``gamma_j = -softplus(w_j)`` is kept negative, so the logit is ``b`` minus a weighted L1
    distance: the score is a proper similarity (identical embeddings score highest) and a query can be
    scored against thousands of support embeddings with one ``torch.cdist(p=1)`` on scaled
    embeddings, never materializing the (queries, support, dim) difference tensor.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        # Embeddings leave the encoders batch-normalized (|e1_j - e2_j| ~ 1), so these start the
        # summed distance near 1 and the logit near 0.
        self.weight = nn.Parameter(torch.full((dim,), math.log(math.expm1(1.0 / dim))))
        self.bias = nn.Parameter(torch.tensor(1.0))

    def scale(self) -> torch.Tensor:
        """``|gamma|`` [shape=(dim,)]."""
        return nn.functional.softplus(self.weight)

    def pair_logits(self, e1: torch.Tensor, e2: torch.Tensor) -> torch.Tensor:
        """Logits of row-wise pairs: ``e1``, ``e2`` [shape=(n, dim)] -> [shape=(n,)]."""
        return self.bias - ((e1 - e2).abs() * self.scale()).sum(dim=-1)

    def cross_logits(self, queries: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        """Logits of every pair: ``queries`` [shape=(q, dim)], ``support`` [shape=(s, dim)] -> [shape=(q, s)]."""
        g = self.scale()
        return self.bias - torch.cdist(queries * g, support * g, p=1)


class Matcher(nn.Module):
    """Shared interface of the Siamese architectures: one ``encoder`` (the twins share it) + ``head``."""

    encoder: nn.Module
    head: WeightedL1Head

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [shape=(batch, 1, height, width)] -> embeddings [shape=(batch, dim)]."""
        return self.encoder(x)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor | None = None) -> torch.Tensor:
        """Pair logits of ``(x1[i], x2[i])`` [shape=(batch,)]; without ``x2``, the logits of every pair
        within ``x1`` [shape=(batch, batch)] (how training scores a batch: each input embedded once)."""
        e1 = self.embed(x1)
        if x2 is None:
            return self.head.cross_logits(e1, e1)
        return self.head.pair_logits(e1, self.embed(x2))


def _conv_bn(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]


class VGGCNN(nn.Module):
    """A VGG-type classifier over patches at their native resolution (no resize: 96x44 log-mel).

    Four blocks of two 3x3 conv + batch norm + ReLU, each followed by a max pool that halves the
    frequency rows (the first two also halve time): ``width``, 2, 4 and 4 x ``width`` channels.
    The last map is averaged down to ``freq_rows`` bands, each band's mean and max over time go to
    the classifier, so, as in ``cnn-freq``, where in frequency a pattern sits (the register)
    survives. The seed CNN's single stride-4 convolution on an upsampled image sees the
    spectrogram's fine structure once, coarsely; eight convolutions at full resolution learn it
    in stages. Across sample libraries this scored 0.64 against 0.59 for ``cnn-freq`` on the
    same cache (README, cross-library results).

    Input ``x`` [shape=(batch, 1, height, width)] -> logits [shape=(batch, n_labels)].
    """

    def __init__(self, n_labels: int, width: int = 16, freq_rows: int = 6, hidden: int = 256, dropout: float = 0.5):
        super().__init__()
        widths = [width, 2 * width, 4 * width, 4 * width]
        pools = [(2, 2), (2, 2), (2, 1), (2, 1)]
        layers: list[nn.Module] = []
        c_in = 1
        for c, pool in zip(widths, pools, strict=True):
            layers += [*_conv_bn(c_in, c), *_conv_bn(c, c), nn.MaxPool2d(pool)]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.freq_rows = freq_rows
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(2 * c_in * freq_rows, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_labels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        h = F.adaptive_avg_pool2d(h, (self.freq_rows, h.shape[-1]))  # rows = frequency bands
        return self.classifier(torch.cat([h.mean(-1), h.amax(-1)], dim=1).flatten(1))


class HarmonicCNN(nn.Module):
    """``cnn-vgg`` on the log-mel rows beside a per-frame network on the harmonic-level rows.

    Log-mel CNNs trained on two sample libraries learn cues that a third library's strings lack
    (bow noise, vibrato) and hear its single-cycle violins as saxophones; the levels of a note's
    harmonics, read per harmonic number, carry the instrument family across libraries
    (``features.harmonic_levels``). The harmonic branch sees one frame at a time plus its two
    neighbours (two 1-D convolutions over 25 rows of levels and pitch and the frame's loudness),
    pooled by mean and max over the patch.

    Each branch has its own classifier and, while training, its own loss: trained together on one
    sum, the branch that learns the training libraries fastest (the log-mel one) would leave the
    other nothing to learn. The answer is their product (the sum of log-probabilities).

    Input ``x`` [shape=(batch, 1, mel rows + harmonic_rows, frames)] -> logits [shape=(batch,
    n_labels)] in eval mode, per-branch logits [shape=(batch, 2, n_labels)] in train mode.
    """

    def __init__(self, n_labels: int, harmonic_rows: int, width: int = 16, hidden: int = 128, dropout: float = 0.5):
        super().__init__()
        self.harmonic_rows = harmonic_rows
        self.mel = VGGCNN(n_labels, width=width)
        self.harmonic = nn.Sequential(
            nn.Conv1d(harmonic_rows + 1, hidden, 1, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv1d(hidden, hidden, 3, padding=1, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
        )
        self.harmonic_head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * hidden, n_labels))

    def branch_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the log-mel and harmonic branches [shape=(batch, 2, n_labels)]."""
        mel, harmonic = x[:, :, : -self.harmonic_rows], x[:, 0, -self.harmonic_rows :]
        loudness = mel[:, 0].amax(dim=1, keepdim=True)  # each frame's level under the patch peak, in [0, 1]
        h = self.harmonic(torch.cat([harmonic, loudness], dim=1))
        harmonic_logits = self.harmonic_head(torch.cat([h.mean(-1), h.amax(-1)], dim=1))
        return torch.stack([self.mel(mel), harmonic_logits], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.branch_logits(x)
        return logits if self.training else F.log_softmax(logits, dim=-1).sum(1)


class SiameseNet(Matcher):
    """The seed paper's VGG-type twin network, sized to run fast.

    Shared encoder: four blocks of 3x3 conv + batch norm + ReLU + 2x2 max pool (16, 32, 64, 128
    channels), the frequency rows kept by pooling over time only, dropout, a linear embedding (batch-normalized); then
    the weighted-L1 head. Twins share weights by construction: one encoder embeds both inputs.

    """

    def __init__(self, n_labels: int = 0, embedding: int = 128, width: int = 16, freq_rows: int = 4,
                 dropout: float = 0.3) -> None:  # fmt: skip
        super().__init__()
        del n_labels  # a matcher's output does not depend on the training labels
        widths = [width, 2 * width, 4 * width, 8 * width]
        layers: list[nn.Module] = []
        c_in = 1
        for c in widths:
            layers += [*_conv_bn(c_in, c), nn.MaxPool2d(2)]
            c_in = c
        layers += [nn.AdaptiveMaxPool2d((freq_rows, 1)), nn.Flatten(), nn.Dropout(dropout)]
        self.encoder = nn.Sequential(
            *layers, nn.Linear(c_in * freq_rows, embedding), nn.BatchNorm1d(embedding, affine=False)
        )
        self.head = WeightedL1Head(embedding)


class _ResidualBlock(nn.Module):
    """Two 3x3 convs with a skip connection (1x1 projection when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn(c_in, c_out, stride),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.skip: nn.Module = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.skip(x))


class ResidualSiameseNet(Matcher):
    """The seed paper's residual Siamese variant: a stride-2 stem, three residual stages (each
    halving the resolution), frequency rows kept, a linear embedding and the weighted-L1 head.
    Same interface as ``SiameseNet``."""

    def __init__(self, n_labels: int = 0, embedding: int = 128, width: int = 16, freq_rows: int = 4,
                 dropout: float = 0.3) -> None:  # fmt: skip
        super().__init__()
        del n_labels
        c1, c2, c3 = width, 2 * width, 4 * width
        self.encoder = nn.Sequential(
            *_conv_bn(1, c1, 2),
            _ResidualBlock(c1, c1, 1),
            _ResidualBlock(c1, c2, 2),
            _ResidualBlock(c2, c3, 2),
            nn.AdaptiveMaxPool2d((freq_rows, 1)),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(c3 * freq_rows, embedding),
            nn.BatchNorm1d(embedding, affine=False),
        )
        self.head = WeightedL1Head(embedding)


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "cnn": SeedCNN,
    "cnn-freq": FreqCNN,
    "cnn-vgg": VGGCNN,
    "cnn-harmonic": HarmonicCNN,
    "siamese": SiameseNet,
    "residual-siamese": ResidualSiameseNet,
}
MATCHER_ARCHITECTURES: frozenset[str] = frozenset({"siamese", "residual-siamese"})


def is_matcher(architecture: str) -> bool:
    """Whether ``architecture`` embeds and matches (Siamese) rather than classifies."""
    return architecture in MATCHER_ARCHITECTURES


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def label_layers(model: nn.Module) -> tuple[str, ...]:
    """Names of the layers whose output rows are the labels: each ``nn.Sequential`` that ends in a
    linear layer ends in one (a classifier's head; both heads of ``cnn-harmonic``). Matchers have none.

    Row ``i`` of such a layer's weight and bias belongs to label ``i``, which is how a checkpoint's
    auxiliary labels are dropped and how fine-tuning carries a label's rows to a new label set.
    """
    names = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Sequential) and len(module) and isinstance(module[-1], nn.Linear):
            names.append(f"{name}.{len(module) - 1}" if name else str(len(module) - 1))
    return tuple(names)


def build_model(architecture: str, n_labels: int, **params: Any) -> nn.Module:
    """Instantiate a registered architecture."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[architecture](n_labels=n_labels, **params)


def inference_model(model: ModuleT) -> ModuleT:
    """A copy of ``model``, in eval mode, made to predict fast where it lives.

    Each batch norm that follows a convolution is folded into that convolution's weights and bias
    (it is an affine map in eval mode), and on the CPU the weights are kept channels-last, the
    layout oneDNN's convolutions work in, so activations stay in it from layer to layer instead of
    being reordered around every convolution. The outputs are ``model``'s up to float rounding
    (tests/test_models.py); on 64-patch batches of real patches on a 2-core CPU the bundled
    classifier ran 1.5-1.7x as fast and the matcher's embedding 1.2-1.4x (bench/run.py prints the
    classifier's ratio). The copy is for inference only: its batch norms are gone, so it cannot be
    trained or saved as a checkpoint.
    """
    fast = copy.deepcopy(model).eval()
    for block in [m for m in fast.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(block) - 1):
            conv, norm = block[i], block[i + 1]
            if isinstance(conv, nn.Conv1d | nn.Conv2d) and isinstance(norm, nn.BatchNorm1d | nn.BatchNorm2d):
                block[i] = fuse_conv_bn_eval(conv, norm)
                block[i + 1] = nn.Identity()
    for module in fast.modules():
        if isinstance(module, nn.Conv2d) and module.weight.device.type == "cpu":
            module.weight.data = module.weight.data.contiguous(memory_format=torch.channels_last)
    return fast


class CheckpointError(Exception):
    """A checkpoint is missing, malformed or not a mirbatch checkpoint."""


@dataclass(frozen=True)
class CheckpointMeta:
    """What a checkpoint says about itself (stored as JSON in the safetensors header).

    ``support_shifts`` (matchers): the pitch shifts in semitones at which support examples are
    enrolled beside themselves unless a library chooses others (see ``features.shift_pitch``);
    ``metrics["unknown_threshold"]`` was calibrated with them, ``metrics["unknown_thresholds"]``
    holds one threshold per calibrated shift set.
    """

    architecture: str
    labels: tuple[str, ...]
    features: FeatureConfig
    params: dict[str, Any] = field(default_factory=dict)
    support_shifts: tuple[int, ...] = (0,)
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["labels"] = list(self.labels)
        d["support_shifts"] = list(self.support_shifts)
        d["features"] = self.features.to_dict()
        return {"format": _FORMAT, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CheckpointMeta:
        if d.get("format") != _FORMAT:
            raise CheckpointError(f"not a mirbatch checkpoint (format {d.get('format')!r}, expected {_FORMAT!r})")
        try:
            labels = tuple(str(x) for x in d["labels"])
            meta = cls(
                architecture=str(d["architecture"]),
                labels=labels,
                features=feature_config_from_dict(dict(d["features"])),
                params=dict(d.get("params", {})),
                support_shifts=tuple(int(x) for x in d.get("support_shifts", (0,))),
                training=dict(d.get("training", {})),
                metrics=dict(d.get("metrics", {})),
                created=str(d.get("created", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"invalid checkpoint metadata: {exc}") from None
        if meta.architecture not in ARCHITECTURES:
            raise CheckpointError(f"checkpoint architecture {meta.architecture!r} is unknown to this mirbatch")
        if not labels or len(set(labels)) != len(labels):
            raise CheckpointError("checkpoint labels must be a non-empty list of distinct names")
        try:
            check_pitch_shifts(meta.support_shifts, meta.features)
        except ValueError as exc:
            raise CheckpointError(f"invalid checkpoint support_shifts: {exc}") from None
        return meta


@dataclass(frozen=True)
class Checkpoint:
    """A loaded model with its metadata and identity."""

    model: nn.Module
    meta: CheckpointMeta
    name: str
    sha256: str
    baseline: MfccSvm | None = None

    @property
    def model_id(self) -> str:
        """``name@hash12``: what output rows record as the model."""
        return f"{self.name}@{self.sha256[:12]}"


def save_checkpoint(
    path: Path, model: nn.Module, meta: CheckpointMeta, extra: dict[str, torch.Tensor] | None = None
) -> str:
    """Write ``model``'s weights (plus ``extra`` tensors, e.g. the baseline) and ``meta`` to ``path``
    atomically; return the file's sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update(extra or {})
    return write_tensors(path, tensors, metadata={"mirbatch": json.dumps(meta.to_dict(), sort_keys=True)})


def write_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> str:
    """Write ``tensors`` to the safetensors file ``path`` atomically; return the file's sha256.

    Written by Python, not safetensors' ``save_file``, which creates files 0600 whatever the umask
    (safetensors issue 782): a model or a training checkpoint in a shared folder must be readable there.
    """
    data = save(tensors, metadata=metadata)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return hashlib.sha256(data).hexdigest()


def resolve_model_path(name_or_path: str) -> tuple[str, Path]:
    """Map a bundled model name or a checkpoint path to ``(name, path)``."""
    if name_or_path in BUNDLED_MODELS:
        path = Path(str(resources.files("mirbatch") / "weights" / f"{name_or_path}.safetensors"))
        if not path.is_file():
            raise CheckpointError(f"bundled model {name_or_path} is missing from this installation ({path}); reinstall")
        return name_or_path, path
    path = Path(name_or_path).expanduser()
    if not path.exists():
        raise CheckpointError(
            f"model {name_or_path!r} is neither a bundled model ({', '.join(BUNDLED_MODELS)}) nor an existing file"
        )
    return path.stem, path


def _header_metadata(data: bytes, source: str) -> dict[str, str]:
    """The safetensors header's ``__metadata__``: plain JSON, so loading never executes code."""
    if len(data) < 8:
        raise CheckpointError(f"{source} is not a safetensors file (too short)")
    size = int.from_bytes(data[:8], "little")
    if size > len(data) - 8:
        raise CheckpointError(f"{source} is not a safetensors file (header size {size})")
    try:
        header = json.loads(data[8 : 8 + size])
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{source} is not a safetensors file (bad header)") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or "mirbatch" not in meta:
        raise CheckpointError(f"{source} is a safetensors file without mirbatch metadata")
    return meta


def _meta_from_bytes(data: bytes, name: str) -> CheckpointMeta:
    """The metadata in a checkpoint's content (the header is enough)."""
    try:
        meta_json = json.loads(_header_metadata(data, name)["mirbatch"])
    except json.JSONDecodeError:
        raise CheckpointError(f"{name}: checkpoint metadata is not valid JSON") from None
    return CheckpointMeta.from_dict(meta_json)


def checkpoint_from_bytes(data: bytes, name: str, device: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint from its file content (how workers on other machines receive it)."""
    meta = _meta_from_bytes(data, name)
    model = build_model(meta.architecture, len(meta.labels), **meta.params)
    try:
        tensors = load(data)
    except SafetensorError as exc:  # the header read, the tensors not: a cut-off copy or download
        raise CheckpointError(f"{name}: the checkpoint file is damaged or incomplete ({exc}); copy it again") from None
    try:
        weights, baseline = MfccSvm.split(tensors)
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{name}: weights do not match architecture {meta.architecture!r}: {exc}") from None
    model.to(device).eval()
    return Checkpoint(
        model=model,
        meta=meta,
        name=name,
        sha256=hashlib.sha256(data).hexdigest(),
        baseline=MfccSvm.from_tensors(baseline),
    )


def read_checkpoint_bytes(name_or_path: str) -> tuple[str, bytes]:
    """Resolve a bundled name or path and return ``(name, file content)``."""
    name, path = resolve_model_path(name_or_path)
    return name, path.read_bytes()


def read_checkpoint_meta(name_or_path: str) -> CheckpointMeta:
    """A checkpoint's metadata alone, read from its header: no network is built and no weights are
    read (what a command needs to choose how to run one)."""
    name, path = resolve_model_path(name_or_path)
    with path.open("rb") as f:
        head = f.read(8)
        data = head + f.read(int.from_bytes(head, "little")) if len(head) == 8 else head
    return _meta_from_bytes(data, name)


def load_checkpoint(name_or_path: str, device: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint by bundled name or path; validates metadata and tensor names/shapes."""
    name, data = read_checkpoint_bytes(name_or_path)
    return checkpoint_from_bytes(data, name, device)
