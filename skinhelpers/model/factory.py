"""One factory for every network the suite trains.

``build_model(name, num_classes, ...)`` returns a :class:`Classifier`: a feature
``backbone`` (a timm model with its classifier removed, or the small from-scratch CNN)
and a configurable ``head`` (dropout, optional hidden layer). Splitting the two makes the
training recipe simple: freeze the backbone and warm up the head, then unfreeze with a
smaller learning rate for the backbone.

A network is named by a factory entry (``MODEL_NAMES`` of :mod:`skinhelpers.model.specs`,
with their own defaults) or by **any** ``timm.list_models()`` name, optionally with a
pretrained tag (``convnext_tiny``, ``efficientnet_b3``, ``convnext_tiny.fb_in22k``,
``swin_tiny_patch4_window7_224``): such a model defaults to ImageNet weights, fine-tuned.

Where the pretrained weights come from (hub, offline package or file), and the error
when they cannot be had: :mod:`skinhelpers.model.weights`.
"""

from __future__ import annotations

import logging

import pandas as pd
import timm
import torch
from torch import nn

from skinhelpers.model.specs import MODEL_SPECS, model_spec
from skinhelpers.model.weights import (
    PretrainedWeightsError,
    hub_available,
    load_into_backbone,
    pretrained_state_dict,
    weights_location,
)

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


VARIANTS = ("pretrained", "scratch", "frozen", "finetune")
#: input normalisation (``name@norm``): ``weights``, the statistics the weights were trained
#: with (ImageNet's; the default); ``dataset``, the training images' per-channel mean and
#: std (featurewise); ``sample``, each image centred on its own per-channel mean (samplewise)
INPUT_NORMS = ("weights", "dataset", "sample")


def parse_variant(text: str) -> dict:
    """``"efficientnet_lite0:scratch@dataset"`` -> ``{"arch", "pretrained", "frozen",
    "input_norm", "label"}``.

    A trial is a factory name with an optional modifier: ``:scratch`` (random init),
    ``:pretrained``, ``:frozen`` (pretrained backbone frozen, head trained) or
    ``:finetune`` (pretrained, everything trained), and an optional input normalisation
    ``@weights`` (the default), ``@dataset`` or ``@sample`` (see ``INPUT_NORMS``).
    Without them, the model's defaults.
    """
    text_, _, norm = str(text).partition("@")
    norm = norm.strip() or "weights"
    if norm not in INPUT_NORMS:
        raise ValueError(f"input normalisation '{norm}' in '{text}' is not one of {INPUT_NORMS}")
    name, _, variant = text_.partition(":")
    spec = model_spec(name.strip())
    variant = variant.strip()
    if variant and variant not in VARIANTS:
        raise ValueError(f"model variant '{variant}' in '{text}' is not one of {VARIANTS}")
    pretrained, frozen = spec.pretrained, spec.frozen
    if variant == "scratch":
        pretrained, frozen = False, False
    elif variant == "pretrained":
        pretrained = True
    elif variant == "frozen":
        pretrained, frozen = True, True
    elif variant == "finetune":
        pretrained, frozen = True, False
    return {
        "arch": name.strip(),
        "pretrained": pretrained,
        "frozen": frozen,
        "input_norm": norm,
        "label": str(text).strip(),
    }


# --------------------------------------------------------------------------- networks
class SmallCNN(nn.Module):
    """A plain 4-stage conv net (about 1.2 M parameters): the from-scratch baseline."""

    def __init__(self, widths=(32, 64, 128, 256), drop_path_rate: float = 0.0):
        super().__init__()
        layers, c = [], 3
        for w in widths:
            layers += [
                nn.Conv2d(c, w, 3, padding=1, bias=False),
                nn.BatchNorm2d(w),
                nn.ReLU(inplace=True),
                nn.Conv2d(w, w, 3, padding=1, bias=False),
                nn.BatchNorm2d(w),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            c = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = c

    def forward(self, x):
        return self.pool(self.features(x)).flatten(1)


def make_head(
    num_features: int, num_classes: int, drop_rate: float = 0.2, hidden_dim: int = 0
) -> nn.Sequential:
    """Dropout -> Linear, or Dropout -> Linear(hidden) -> SiLU -> Dropout -> Linear."""
    if hidden_dim and hidden_dim > 0:
        return nn.Sequential(
            nn.Dropout(drop_rate),
            nn.Linear(num_features, hidden_dim),
            nn.SiLU(inplace=True),
            nn.Dropout(drop_rate),
            nn.Linear(hidden_dim, num_classes),
        )
    return nn.Sequential(nn.Dropout(drop_rate), nn.Linear(num_features, num_classes))


class Classifier(nn.Module):
    """``backbone`` (image -> pooled features) followed by ``head`` (features -> logits).

    ``mean``/``std`` are the input normalisation (the checkpoint carries them, and the one
    input function applies them); ``sample_center`` also centres each image on its own
    per-channel mean inside the network (samplewise centering), so every consumer of the
    model, the ONNX export included, gets it without knowing."""

    def __init__(
        self, backbone: nn.Module, head: nn.Module, arch: str, mean, std, sample_center=False
    ):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.arch = arch
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.sample_center = bool(sample_center)
        self.backbone_frozen = False
        self.pretrained_source = "none"

    def forward(self, x):
        if self.sample_center:
            x = x - x.mean(dim=(2, 3), keepdim=True)
        return self.head(self.backbone(x))

    def freeze_backbone(self, frozen: bool = True) -> "Classifier":
        """Stop (or restart) training the backbone; frozen BatchNorm keeps its statistics."""
        self.backbone_frozen = bool(frozen)
        for p in self.backbone.parameters():
            p.requires_grad_(not frozen)
        self.train(self.training)
        return self

    def train(self, mode: bool = True):
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.eval()
        return self

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"backbone": list(self.backbone.parameters()), "head": list(self.head.parameters())}

    def cam_layer(self) -> nn.Module:
        """The last convolutional stage, where Grad-CAM looks."""
        bb = self.backbone
        if isinstance(bb, SmallCNN):
            return bb.features[-3]  # last ReLU before the final pooling
        if hasattr(bb, "layer4"):
            return bb.layer4[-1]
        if hasattr(bb, "bn2") and hasattr(bb, "conv_head"):
            return bb.bn2  # BatchNormAct: post-activation features of the head conv
        raise ValueError(f"no Grad-CAM layer known for {self.arch}")


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def build_model(
    name: str,
    num_classes: int,
    pretrained: bool | str | None = None,
    drop_rate: float = 0.2,
    hidden_dim: int = 0,
    drop_path_rate: float = 0.0,
    frozen: bool | None = None,
    sample_center: bool = False,
) -> Classifier:
    """Build a :class:`Classifier` by factory name (see ``MODEL_NAMES``) or timm model name.

    ``pretrained``: None (the model's default), False (random init), True/"auto" (hub,
    then offline package), "hub", "package", or a path to a weights file.
    ``drop_rate``/``hidden_dim`` configure the head; ``drop_path_rate`` is timm's
    stochastic depth; ``frozen`` (default: the model's) freezes the backbone;
    ``sample_center`` centres each input image on its own per-channel mean.
    """
    spec = model_spec(name)
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    pretrained = spec.pretrained if pretrained is None else pretrained
    frozen = spec.frozen if frozen is None else frozen
    if spec.timm_name is None:
        if pretrained:
            raise PretrainedWeightsError(
                f"'{name}' is trained from scratch; it has no pretrained weights"
            )
        backbone, mean, std, source = SmallCNN(), IMAGENET_MEAN, IMAGENET_STD, "none"
    else:
        if pretrained:  # weights that cannot be had fail before the network is built
            weights_location(name, pretrained)
        backbone = timm.create_model(
            spec.timm_name, pretrained=False, num_classes=0, drop_path_rate=float(drop_path_rate)
        )
        cfg = backbone.pretrained_cfg
        mean, std, source = cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD), "none"
        if pretrained:
            sd, source = pretrained_state_dict(name, backbone, pretrained)
            load_into_backbone(backbone, sd, source)
    model = Classifier(
        backbone,
        make_head(backbone.num_features, int(num_classes), float(drop_rate), int(hidden_dim or 0)),
        name,
        mean,
        std,
        sample_center,
    )
    model.pretrained_source = source
    if frozen:
        model.freeze_backbone(True)
    return model


def describe_models(num_classes: int = 7) -> "pd.DataFrame":
    """One row per factory model: what it is, its parameter count, where its weights come from.

    The networks are built on the ``meta`` device (no memory, no weights), so this is quick.
    """

    hub = hub_available()
    rows = []
    for name, spec in MODEL_SPECS.items():
        with torch.device("meta"):
            total, _ = count_parameters(build_model(name, num_classes, pretrained=False))
        source = (
            "none (from scratch)"
            if not spec.pretrained
            else "offline package"
            if spec.package
            else "Hugging Face hub" + ("" if hub else " (NOT reachable here)")
        )
        rows.append(
            {
                "model": name,
                "what": spec.description,
                "parameters (M)": total / 1e6,
                "default weights": source,
            }
        )
    return pd.DataFrame(rows)


def model_kwargs(
    num_classes: int,
    drop_rate: float = 0.2,
    hidden_dim: int = 0,
    drop_path_rate: float = 0.0,
    sample_center: bool = False,
) -> dict:
    """The keyword arguments a checkpoint stores to rebuild the network
    (``sample_center`` only when set, so earlier checkpoints read the same)."""
    kw = {
        "num_classes": int(num_classes),
        "drop_rate": float(drop_rate),
        "hidden_dim": int(hidden_dim or 0),
        "drop_path_rate": float(drop_path_rate),
        "pretrained": False,
    }
    if sample_center:
        kw["sample_center"] = True
    return kw
