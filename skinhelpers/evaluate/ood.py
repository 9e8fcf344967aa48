"""Out-of-distribution scores: does an image look like the images the model was trained on?

A classifier answers every image, a photo of a cat included. Two scores from the model's
own outputs say how far an image is from its training data (higher: further):

* ``mahalanobis`` - the smallest Mahalanobis distance of the image's penultimate features
  (the pooled backbone output, what the head sees) to the training classes' means, with
  one shared covariance (Lee et al. 2018), estimated with Ledoit-Wolf shrinkage (the
  features outnumber the images of the small classes). Feature-space scores are the better
  kind for near-OOD dermoscopy (see ../shared/notes).
* ``mahalanobis_layers`` - the same distance at every stage of the backbone (each stage's
  output averaged over the image, timm's ``forward_intermediates``) and at the penultimate
  features, each put on the scale of the validation images' own distances (median and
  interquartile range) and summed: Lee et al.'s feature ensemble with equal weights (their
  weights are fitted on out-of-distribution images; equal weights need none). The early
  stages see colour, texture and sharpness, which a photo differs in even when its
  penultimate features pass; they also see a change of camera or resolution, so another
  dermoscopy source can read as out of distribution too (benchmarks/RESULTS.md).
* ``energy`` - the negative free energy of the logits, ``-T logsumexp(logits / T)`` (Liu et
  al. 2020): no fitting, but it sees only what the classes' logits see.

:func:`fit_guard` fits them on the training features, compares them on validation against
far out-of-distribution photos, keeps the better one and fixes the threshold that
``pass_rate`` (95%) of the in-distribution validation images pass. The photos that ship
inside installed packages (:func:`package_photos`: scikit-image's ``skimage.data`` and
matplotlib's sample data, with crops of them) serve as the far-OOD set, so the guard can be
measured offline.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn import metrics as skm
from sklearn.covariance import LedoitWolf

from skinhelpers.data.imaging import prepare, read_rgb
from skinhelpers.model.inference import model_device, to_model_input

log = logging.getLogger(__name__)

METHODS = ("mahalanobis", "energy", "mahalanobis_layers")
#: real photos bundled in scikit-image's wheel (no download): people, animals, objects,
#: text, textures, astronomy, microscopy, a retina
SKIMAGE_PHOTOS = (
    "astronaut",
    "camera",
    "chelsea",
    "coffee",
    "coins",
    "moon",
    "page",
    "rocket",
    "text",
    "clock",
    "colorwheel",
    "grass",
    "gravel",
    "brick",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
)
MATPLOTLIB_PHOTOS = ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png")


# ----------------------------------------------------------------------------- photos


def _rgb(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if a.dtype != np.uint8:
        a = (255 * (a - a.min()) / max(float(a.max() - a.min()), 1e-9)).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    return np.ascontiguousarray(a[:, :, :3])


def package_photos(
    crops_per_photo: int = 3, seed: int = 0, tiles_per_side: int = 2
) -> list[tuple[str, np.ndarray]]:
    """Ordinary photos that ship inside installed packages, each whole, as
    ``crops_per_photo`` random crops (a third to two-thirds of its side) and as the
    ``tiles_per_side`` x ``tiles_per_side`` tiles of a grid (for numbers: more images of
    the same scenes): ``(name, RGB uint8)``, a crop named ``photo/cropK``, a tile
    ``photo/tileRC``. Photos a package does not bundle (downloads) are skipped."""
    import matplotlib
    import skimage.data  # a dev dependency: measuring the guard, not using it

    rng = np.random.default_rng(seed)
    whole = []
    for name in SKIMAGE_PHOTOS:
        try:
            whole.append((name, _rgb(getattr(skimage.data, name)())))
        except Exception as e:  # noqa: BLE001 - a photo the wheel does not bundle
            log.info("skimage.data.%s not available: %s", name, e)
    sample = os.path.join(matplotlib.get_data_path(), "sample_data")
    for fn in MATPLOTLIB_PHOTOS:
        p = os.path.join(sample, fn)
        if os.path.exists(p):
            whole.append((fn.rsplit(".", 1)[0], read_rgb(p)))
    out = list(whole)
    for name, img in whole:
        h, w = img.shape[:2]
        for k in range(crops_per_photo):
            s = rng.uniform(1 / 3, 2 / 3)
            ch, cw = max(16, int(h * s)), max(16, int(w * s))
            y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            out.append((f"{name}/crop{k}", img[y : y + ch, x : x + cw].copy()))
        n = tiles_per_side
        if n > 1 and min(h, w) >= 16 * n:
            for r in range(n):
                for c in range(n):
                    tile = img[r * h // n : (r + 1) * h // n, c * w // n : (c + 1) * w // n]
                    out.append((f"{name}/tile{r}{c}", tile.copy()))
    return out


def images_to_batch(
    images: Sequence[np.ndarray], size, preprocess: str = "none", resize_mode: str = "squash"
) -> torch.Tensor:
    """RGB uint8 images of any size -> a ``(N, 3, H, W)`` uint8 batch prepared exactly as
    the image cache prepares training images."""
    arr = np.stack([prepare(_rgb(im), size, preprocess, resize_mode) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


# ----------------------------------------------------------------------------- features


def has_layers(model: torch.nn.Module) -> bool:
    """Whether the network's backbone gives its stages' outputs (timm's
    ``forward_intermediates``, which nearly every timm model has; the small CNN has not)."""
    bb = getattr(model, "backbone", None)
    return hasattr(bb, "forward_intermediates") and hasattr(bb, "forward_head")


def _pooled(t: torch.Tensor) -> torch.Tensor:
    return t.float().mean((2, 3)) if t.ndim == 4 else t.float().mean(1)


def backbone_layers(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """``[stage 1, ..., stage S, penultimate]``: every stage's output averaged over the
    image, then the features the head sees (the last item is ``model.backbone(x)``); just
    ``[penultimate]`` for a backbone without stages (:func:`has_layers`)."""
    bb = model.backbone
    if not has_layers(model):
        return [bb(x)]
    final, stages = bb.forward_intermediates(x)
    return [_pooled(t) for t in stages] + [bb.forward_head(final, pre_logits=True)]


@torch.inference_mode()
def features_and_logits(
    model: torch.nn.Module, x: torch.Tensor, mean, std, batch_size: int = 64, layers: bool = False
) -> tuple[np.ndarray | list[np.ndarray], np.ndarray]:
    """Penultimate features (the head's input) and logits of a uint8 batch ``x``; with
    ``layers``, a list of every layer's features instead (:func:`backbone_layers`)."""
    if not hasattr(model, "backbone") or not hasattr(model, "head"):
        raise TypeError("out-of-distribution scores need a skinhelpers Classifier (backbone+head)")
    model.eval()
    dev = model_device(model)
    feats, logits = [], []
    for i in range(0, len(x), batch_size):
        xb = to_model_input(x[i : i + batch_size], mean, std, dev)
        if getattr(model, "sample_center", False):
            xb = xb - xb.mean(dim=(2, 3), keepdim=True)
        fs = backbone_layers(model, xb) if layers else [model.backbone(xb)]
        feats.append([f.float().cpu().numpy() for f in fs])
        logits.append(model.head(fs[-1]).float().cpu().numpy())
    return join_batches(feats, logits, layers)


def join_batches(feats: list[list[np.ndarray]], logits: list[np.ndarray], layers: bool):
    """Batches' features (each a list of layers' arrays) and logits joined row-wise: the
    ``(features, logits)`` of :func:`features_and_logits`, the features a list of layers
    with ``layers``, else the penultimate array."""
    per_layer = [np.concatenate(f) for f in zip(*feats)]
    return (per_layer if layers else per_layer[0]), np.concatenate(logits)


def penultimate(features) -> np.ndarray:
    """The features the head sees, from the penultimate array or a list of every layer's."""
    return features[-1] if isinstance(features, (list, tuple)) else features


def energy_score(logits, temperature: float = 1.0) -> np.ndarray:
    """``-T logsumexp(logits / T)`` (higher: further from the training data)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    m = z.max(1, keepdims=True)
    return -temperature * (m[:, 0] + np.log(np.exp(z - m).sum(1)))


@dataclass
class FeatureGaussian:
    """Class means and one shared (Ledoit-Wolf) precision of the training features."""

    means: np.ndarray  # (C, D)
    precision: np.ndarray  # (D, D)

    @classmethod
    def fit(cls, features, labels) -> FeatureGaussian:
        f = np.asarray(features, dtype=np.float64)
        y = np.asarray(labels)
        classes = np.unique(y)
        means = np.stack([f[y == c].mean(0) for c in classes])
        centred = f - means[np.searchsorted(classes, y)]
        lw = LedoitWolf(assume_centered=True).fit(centred)
        return cls(means.astype(np.float32), lw.precision_.astype(np.float32))

    def score(self, features) -> np.ndarray:
        """The smallest squared Mahalanobis distance to a class mean (higher: further)."""
        f = np.asarray(features, dtype=np.float64)
        p = self.precision.astype(np.float64)
        m = self.means.astype(np.float64)
        # (f - m) P (f - m) = fPf - 2 fPm + mPm: one product with P for all classes (BLAS)
        fp = f @ p
        d = (fp * f).sum(1)[:, None] - 2 * (fp @ m.T) + ((m @ p) * m).sum(1)[None, :]
        return d.min(axis=1)


@dataclass
class LayerGaussians:
    """A :class:`FeatureGaussian` per layer, and each layer's scale: the median and the
    interquartile range of the validation images' distances. The score is the sum over
    layers of ``(distance - median) / range`` (higher: further)."""

    layers: list[FeatureGaussian]
    centre: np.ndarray  # (L,)
    scale: np.ndarray  # (L,)

    @classmethod
    def fit(cls, train_layers, labels, val_layers) -> LayerGaussians:
        if len(train_layers) != len(val_layers):
            raise ValueError(f"{len(train_layers)} training layers, {len(val_layers)} validation")
        gs = [FeatureGaussian.fit(f, labels) for f in train_layers]
        d = np.stack([g.score(v) for g, v in zip(gs, val_layers)], 1)
        q25, centre, q75 = np.percentile(d, [25, 50, 75], axis=0)
        scale = np.maximum(q75 - q25, 1e-12)
        return cls(gs, centre.astype(np.float32), scale.astype(np.float32))

    def score(self, layers) -> np.ndarray:
        if not isinstance(layers, (list, tuple)) or len(layers) != len(self.layers):
            got = len(layers) if isinstance(layers, (list, tuple)) else "one"
            raise ValueError(
                f"this guard scores {len(self.layers)} layers of features "
                f"(features_and_logits with layers=True), got {got}"
            )
        d = np.stack([g.score(f) for g, f in zip(self.layers, layers)], 1)
        return ((d - self.centre) / self.scale).sum(1)


@dataclass
class OODGuard:
    """The chosen score, its threshold, and what was measured to choose them."""

    method: str
    threshold: float
    pass_rate: float
    gaussian: FeatureGaussian | None = None
    temperature: float = 1.0
    measured: dict = field(default_factory=dict)
    layers: LayerGaussians | None = None

    @property
    def needs_layers(self) -> bool:
        """Whether :meth:`score` needs every layer's features (``layers=True``)."""
        return self.method == "mahalanobis_layers"

    def score(self, features, logits) -> np.ndarray:
        """``features``: the penultimate features, or the list of every layer's (the
        last item the penultimate), as :func:`features_and_logits` gives them."""
        if self.method == "mahalanobis_layers":
            return self.layers.score(features)
        if self.method == "mahalanobis":
            return self.gaussian.score(penultimate(features))
        return energy_score(logits, self.temperature)

    def in_distribution(self, scores) -> np.ndarray:
        return np.asarray(scores) <= self.threshold

    def state(self) -> dict:
        """What a checkpoint or an export stores (tensors and plain values)."""
        out = {
            "method": self.method,
            "threshold": float(self.threshold),
            "pass_rate": float(self.pass_rate),
            "temperature": float(self.temperature),
            "measured": self.measured,
        }
        if self.gaussian is not None:
            out["means"] = torch.from_numpy(self.gaussian.means)
            out["precision"] = torch.from_numpy(self.gaussian.precision)
        if self.layers is not None:
            out["layer_means"] = [torch.from_numpy(g.means) for g in self.layers.layers]
            out["layer_precision"] = [torch.from_numpy(g.precision) for g in self.layers.layers]
            out["layer_centre"] = torch.from_numpy(self.layers.centre)
            out["layer_scale"] = torch.from_numpy(self.layers.scale)
        return out

    @classmethod
    def from_state(cls, s: dict) -> OODGuard:
        g = None
        if "means" in s:
            g = FeatureGaussian(np.asarray(s["means"]), np.asarray(s["precision"]))
        lg = None
        if "layer_means" in s:
            lg = LayerGaussians(
                [
                    FeatureGaussian(np.asarray(m), np.asarray(p))
                    for m, p in zip(s["layer_means"], s["layer_precision"])
                ],
                np.asarray(s["layer_centre"]),
                np.asarray(s["layer_scale"]),
            )
        return cls(
            s["method"],
            float(s["threshold"]),
            float(s["pass_rate"]),
            g,
            float(s.get("temperature", 1.0)),
            dict(s.get("measured", {})),
            lg,
        )


def guard_of(info: dict) -> OODGuard | None:
    """The guard a checkpoint (or its info dict) carries under ``ood_guard``, or None for a
    checkpoint that carries none (written before notebook 08 fitted one, or by hand)."""
    state = info.get("ood_guard") if isinstance(info, dict) else None
    return OODGuard.from_state(state) if isinstance(state, dict) else None


class GuardedModel(torch.nn.Module):
    """A skinhelpers ``Classifier`` and its guard as one module: ``forward`` returns
    ``(logits, ood_score)``, so the prediction loop, the ONNX export (two outputs) and the
    demo compute the score in the same pass as the logits, the same way.

    The score is computed in float32 outside autocast (distances in bfloat16 would be off
    by a percent); :meth:`OODGuard.score` is the float64 reference it must agree with."""

    def __init__(self, model: torch.nn.Module, guard: OODGuard):
        super().__init__()
        if not hasattr(model, "backbone") or not hasattr(model, "head"):
            raise TypeError("a guard needs a skinhelpers Classifier (backbone + head)")
        self.model = model
        self.method = guard.method
        self.temperature = float(guard.temperature)
        if guard.method == "mahalanobis":
            self.register_buffer("means", torch.as_tensor(guard.gaussian.means).float())
            self.register_buffer("precision", torch.as_tensor(guard.gaussian.precision).float())
        self.n_layers = 0
        if guard.method == "mahalanobis_layers":
            if not has_layers(model):
                raise TypeError(f"a {guard.method} guard needs a backbone with stages (timm)")
            self.n_layers = len(guard.layers.layers)
            for i, g in enumerate(guard.layers.layers):
                self.register_buffer(f"means{i}", torch.as_tensor(g.means).float())
                self.register_buffer(f"precision{i}", torch.as_tensor(g.precision).float())
            self.register_buffer("centre", torch.as_tensor(guard.layers.centre).float())
            self.register_buffer("scale", torch.as_tensor(guard.layers.scale).float())

    @staticmethod
    def _mahalanobis(f: torch.Tensor, means: torch.Tensor, precision: torch.Tensor):
        z = f.float()[:, None, :] - means[None]  # (N, C, D)
        return ((z @ precision) * z).sum(-1).amin(1)

    def _score(self, fs: list[torch.Tensor], logits: torch.Tensor) -> torch.Tensor:
        if self.method == "mahalanobis_layers":
            d = torch.stack(
                [
                    self._mahalanobis(f, getattr(self, f"means{i}"), getattr(self, f"precision{i}"))
                    for i, f in enumerate(fs)
                ],
                1,
            )
            return ((d - self.centre) / self.scale).sum(1)
        if self.method == "mahalanobis":
            return self._mahalanobis(fs[-1], self.means, self.precision)
        t = self.temperature
        return -t * torch.logsumexp(logits.float() / t, dim=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.model
        if getattr(m, "sample_center", False):
            x = x - x.mean(dim=(2, 3), keepdim=True)
        fs = backbone_layers(m, x) if self.n_layers else [m.backbone(x)]
        logits = m.head(fs[-1])
        dev = logits.device.type
        if torch.is_autocast_enabled(dev):
            with torch.autocast(dev, enabled=False):
                return logits, self._score(fs, logits)
        return logits, self._score(fs, logits)


def guarded_precision(info: dict, precision: str) -> str:
    """The precision a checkpoint with a guard is run in: its threshold was fixed on float32
    features, and bfloat16 autocast moves the scores (the layered score of the cpu model by
    about a third of its threshold, flagging 7% of the test images instead of 2.7%:
    benchmarks/RESULTS.md section 25). So ``"auto"`` means float32 with a guard, and
    ``"bfloat16"`` is refused; without a guard ``precision`` is returned as it is."""
    if guard_of(info) is None:
        return precision
    if precision == "bfloat16":
        raise ValueError(
            "precision 'bfloat16': this checkpoint carries an out-of-distribution guard whose "
            "threshold was fixed on float32 features, and bfloat16 moves its score; use "
            "'float32' or 'auto' (float32 with a guard)"
        )
    return "float32" if precision == "auto" else precision


def guarded(model: torch.nn.Module, info: dict) -> torch.nn.Module:
    """``model`` wrapped with the checkpoint's guard (:class:`GuardedModel`), or ``model``
    itself when the checkpoint carries none."""
    guard = guard_of(info)
    return model if guard is None else GuardedModel(model, guard).eval()


def auroc(in_scores, out_scores) -> float:
    """ROC-AUC of telling out-of-distribution (positive) from in-distribution images."""
    y = np.r_[np.zeros(len(in_scores)), np.ones(len(out_scores))]
    return float(skm.roc_auc_score(y, np.r_[in_scores, out_scores]))


def fit_guard(
    train_features,
    train_labels,
    val_features,
    val_logits,
    ood_features,
    ood_logits,
    pass_rate: float = 0.95,
) -> OODGuard:
    """Fit the scores, keep the one with the higher AUROC of validation images against the
    far-OOD images (the first of :data:`METHODS` on a tie), and fix its threshold at the
    ``pass_rate`` quantile of validation.

    The features are the penultimate ones, or lists of every layer's
    (:func:`features_and_logits` with ``layers=True``): ``mahalanobis_layers`` is a
    candidate only with more than one layer."""
    if not 0.5 <= pass_rate < 1:
        raise ValueError(f"pass_rate must be in [0.5, 1), got {pass_rate}")
    g = FeatureGaussian.fit(penultimate(train_features), train_labels)
    val = {"mahalanobis": g.score(penultimate(val_features)), "energy": energy_score(val_logits)}
    far = {"mahalanobis": g.score(penultimate(ood_features)), "energy": energy_score(ood_logits)}
    lg = None
    if isinstance(train_features, (list, tuple)) and len(train_features) > 1:
        lg = LayerGaussians.fit(train_features, train_labels, val_features)
        val["mahalanobis_layers"] = lg.score(val_features)
        far["mahalanobis_layers"] = lg.score(ood_features)
    methods = [m for m in METHODS if m in val]
    aurocs = {m: auroc(val[m], far[m]) for m in methods}
    best = max(methods, key=lambda m: aurocs[m])
    # "higher": at least pass_rate of validation passes (no interpolation below it)
    thr = float(np.quantile(val[best], pass_rate, method="higher"))
    measured = {
        "auroc_vs_far_ood": aurocs,
        "n_val": int(len(val_logits)),
        "n_far_ood": int(len(ood_logits)),
        "far_ood_flagged": float(np.mean(far[best] > thr)),
        "val_passed": float(np.mean(val[best] <= thr)),
    }
    if lg is not None:
        measured["n_layers"] = len(lg.layers)
    return OODGuard(
        best,
        thr,
        pass_rate,
        g if best == "mahalanobis" else None,
        1.0,
        measured,
        lg if best == "mahalanobis_layers" else None,
    )


__all__ = [
    "METHODS",
    "FeatureGaussian",
    "GuardedModel",
    "LayerGaussians",
    "OODGuard",
    "auroc",
    "backbone_layers",
    "energy_score",
    "features_and_logits",
    "fit_guard",
    "guard_of",
    "guarded",
    "guarded_precision",
    "has_layers",
    "images_to_batch",
    "join_batches",
    "package_photos",
    "penultimate",
]
