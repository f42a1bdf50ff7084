"""The backbone registry: one name, one constructor, one binary logit (or ``num_classes`` logits).

Adding a backbone is one entry in ``BACKBONES``: its timm name (or builder) and
the layer Grad-CAM should explain.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import nn

logger = logging.getLogger(__name__)

CNN_PRESETS: dict[str, tuple[int, ...]] = {
    "micro": (8, 16, 32),
    "small": (16, 32, 64),
    "medium": (32, 64, 128, 256),
    "large": (32, 64, 128, 256, 512),
}


class PretrainedWeightsError(RuntimeError):
    """ImageNet weights were asked for but could not be loaded."""


class SimpleCNN(nn.Module):
    """A plain VGG-style CNN: conv-BN-ReLU pairs, max-pooling, global average pooling."""

    def __init__(self, channels: tuple[int, ...], dropout: float = 0.0, in_chans: int = 3, num_classes: int = 1):
        super().__init__()
        blocks, previous = [], in_chans
        for width in channels:
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(previous, width, 3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(width, width, 3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                    nn.MaxPool2d(2),
                )
            )
            previous = width
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(previous, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x)).flatten(1)
        return self.head(self.dropout(x))


MIN_CAM_SIDE = 4
"""Grad-CAM explains the deepest stage whose map is at least this many cells a side (a 1 x 1 map cannot say where)."""


@dataclass(frozen=True)
class BackboneSpec:
    """How to build a backbone and which layers Grad-CAM may explain.

    ``cam_stages`` lists the backbone's stages, shallow to deep (for the timm models the stages of
    stride 4, 8, 16 and 32); Grad-CAM explains the deepest whose map is at least ``MIN_CAM_SIDE`` a side.
    """

    timm_name: str | None
    cam_stages: Callable[[nn.Module], list[nn.Module]]


BACKBONES: dict[str, BackboneSpec] = {
    "simple_cnn": BackboneSpec(None, lambda m: list(m.features)),
    "resnet18": BackboneSpec("resnet18", lambda m: [m.layer1[-1], m.layer2[-1], m.layer3[-1], m.layer4[-1]]),
    "resnet34": BackboneSpec("resnet34", lambda m: [m.layer1[-1], m.layer2[-1], m.layer3[-1], m.layer4[-1]]),
    "resnet50": BackboneSpec("resnet50", lambda m: [m.layer1[-1], m.layer2[-1], m.layer3[-1], m.layer4[-1]]),
    "efficientnet_b0": BackboneSpec("efficientnet_b0", lambda m: [m.blocks[1], m.blocks[2], m.blocks[4], m.bn2]),
    "convnext_tiny": BackboneSpec("convnext_tiny", lambda m: list(m.stages)),
    # timm's feature_info: blocks 0, 1, 3 and 5 end the stages of stride 4, 8, 16 and 32.
    "mobilenetv3_small": BackboneSpec("mobilenetv3_small_100",
                                      lambda m: [m.blocks[0], m.blocks[1], m.blocks[3], m.blocks[5]]),
}


def _load_weights_file(model: nn.Module, path: Path, timm_name: str) -> nn.Module:
    """Loads an ImageNet weights file into ``model``; every weight but the classifier's must fit.

    timm loads a file non-strictly whenever the classifier is replaced (always, for one logit), so a file
    whose keys do not match (a ``model.`` prefix, another architecture) would leave a random init unnoticed.
    """
    heads = model.pretrained_cfg.get("classifier") or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)

    def is_head(key: str) -> bool:
        return any(key == head or key.startswith(f"{head}.") for head in heads)

    state = {k: v for k, v in timm.models.load_state_dict(str(path)).items() if not is_head(k)}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not is_head(k)]
    if missing or result.unexpected_keys:
        raise PretrainedWeightsError(
            f"pretrained_path {str(path)!r} does not hold {timm_name}'s weights: {len(missing)} of its weights "
            f"missing (e.g. {missing[:3]}), {len(result.unexpected_keys)} unexpected keys "
            f"(e.g. {result.unexpected_keys[:3]}); download the file for {timm_name} from the Hugging Face hub "
            f"(timm/{timm_name}...) or point pretrained_path at its cache folder"
        )
    return model


def _load_pretrained(timm_name: str, dropout: float, pretrained_path: str | None, num_classes: int = 1) -> nn.Module:
    kwargs = {"num_classes": num_classes, "drop_rate": dropout}
    if pretrained_path:
        path = Path(pretrained_path).expanduser()
        if path.is_file():
            return _load_weights_file(timm.create_model(timm_name, pretrained=False, **kwargs), path, timm_name)
        if path.is_dir():
            return timm.create_model(timm_name, pretrained=True, cache_dir=str(path), **kwargs)
        raise PretrainedWeightsError(
            f"pretrained_path {str(path)!r} for {timm_name} does not exist; point it at a weights file "
            f"(.safetensors / .pth) or a Hugging Face cache directory"
        )
    return timm.create_model(timm_name, pretrained=True, **kwargs)


def create_model(
    name: str,
    pretrained: bool = False,
    cnn_preset: str = "medium",
    dropout: float = 0.0,
    pretrained_path: str | None = None,
    num_classes: int = 1,
) -> nn.Module:
    """Builds a backbone with a single output logit (label 1 = fake), or ``num_classes`` logits.

    Args:
        name: A key of ``BACKBONES``.
        pretrained: Load ImageNet weights (timm's hub loading, or ``pretrained_path``).
        cnn_preset: Width preset of ``simple_cnn``.
        dropout: Dropout before the classifier.
        pretrained_path: A local weights file or cache directory for users without network.
        num_classes: Output logits: 1 for the binary detector, more for a multi-class classifier.

    Returns:
        The model, in training mode.

    Raises:
        KeyError: Unknown backbone.
        PretrainedWeightsError: Weights were asked for and could not be loaded.
    """
    if name not in BACKBONES:
        raise KeyError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    spec = BACKBONES[name]
    if spec.timm_name is None:
        if pretrained:
            raise PretrainedWeightsError(f"{name} has no pretrained weights; set pretrained: false")
        return SimpleCNN(CNN_PRESETS[cnn_preset], dropout=dropout, num_classes=num_classes)
    if not pretrained:
        return timm.create_model(spec.timm_name, pretrained=False, num_classes=num_classes, drop_rate=dropout)
    try:
        return _load_pretrained(spec.timm_name, dropout, pretrained_path, num_classes)
    except PretrainedWeightsError:
        raise
    except Exception as error:  # timm raises many kinds (HTTP, offline, file format)
        raise PretrainedWeightsError(
            f"could not load ImageNet weights for {name} (timm model {spec.timm_name!r}): "
            f"{type(error).__name__}: {error}. Fix: allow network access to the Hugging Face hub once, "
            f"or download the weights and set pretrained_path: /path/to/weights.safetensors in the "
            f"experiment, or set pretrained: false to train from scratch."
        ) from error


def _spatial_sizes(model: nn.Module, layers: list[nn.Module], image_size: int) -> list[int]:
    """The smaller side of each layer's output for one ``image_size`` input (one dry forward pass)."""
    seen: dict[int, int] = {}

    def record(position: int):
        def hook(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            seen.setdefault(position, int(min(output.shape[-2:])))  # returns None: the output is left alone
        return hook

    handles = [layer.register_forward_hook(record(i)) for i, layer in enumerate(layers)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size, device=next(model.parameters()).device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return [int(seen[i]) for i in range(len(layers))]


def cam_target_layer(name: str, model: nn.Module, image_size: int | None = None) -> nn.Module:
    """The layer whose activations Grad-CAM explains for this backbone.

    Args:
        name: A key of ``BACKBONES``.
        model: The built model.
        image_size: When given, the deepest stage whose map is at least ``MIN_CAM_SIDE`` cells a side at
            this size (the shallowest stage when none is); without it, the deepest stage.

    Returns:
        The target layer.
    """
    stages = BACKBONES[name].cam_stages(model)
    if image_size is None:
        return stages[-1]
    sides = _spatial_sizes(model, stages, image_size)
    for stage, side in zip(reversed(stages), reversed(sides)):
        if side >= MIN_CAM_SIDE:
            return stage
    return stages[0]


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())
