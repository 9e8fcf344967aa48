"""The augmentation presets as data: one table, read by both implementations.

:func:`skinhelpers.train.augment.train_transform` (torchvision, one image at a time in the
DataLoader) and :class:`skinhelpers.train.batch_augment.BatchAugment` (kornia, a whole
batch on the device) build their steps from :data:`PRESET_SPECS`, so a preset's ranges are
written once (tests/test_presets.py checks that both draw from them). Every preset but
``none`` also flips both ways and turns by multiples of 90 degrees.

Keys of a spec (each optional):

* ``affine``: ``degrees``, ``translate``, ``scale``, ``shear`` of a random affine warp
  (nearest neighbour, zero fill);
* ``color``: ``brightness``, ``contrast``, ``saturation``: factors drawn per image from
  ``1 +- amount`` (torchvision's ColorJitter; no hue: lesion colour carries diagnosis);
* ``blur``: Gaussian blur, ``kernel_size``, ``sigma`` range, probability ``p``;
* ``noise``: Gaussian noise of standard deviation ``sigma`` (images in [0, 1]), ``p``;
* ``erasing``: random erasing of an area share ``scale``, zero fill, ``p``;
* ``policy``: ``autoaugment`` or ``randaugment`` (torchvision's policies, per image only).
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

MILD_AFFINE = {"degrees": 15, "scale": (0.9, 1.1)}

PRESET_SPECS: dict[str, dict] = {
    "none": {},
    "basic": {
        "affine": MILD_AFFINE,
        "color": {"brightness": 0.15, "contrast": 0.15, "saturation": 0.1},
    },
    "strong": {
        "affine": {
            "degrees": 30,
            "translate": (0.05, 0.05),
            "scale": (0.8, 1.2),
            "shear": (-10.0, 10.0, -10.0, 10.0),
        },
        "color": {"brightness": 0.3, "contrast": 0.3, "saturation": 0.3},
        "noise": {"sigma": 0.04, "p": 0.5},
        "erasing": {"scale": (0.02, 0.12), "p": 0.25},
    },
    # a lever against source shift (several datasets): what differs between cameras
    "shift": {
        "affine": MILD_AFFINE,
        "color": {"brightness": 0.35, "contrast": 0.4, "saturation": 0.35},
        "blur": {"kernel_size": 5, "sigma": (0.2, 1.6), "p": 0.35},
        "noise": {"sigma": 0.03, "p": 0.3},
    },
    "autoaugment": {"policy": "autoaugment"},
    "randaugment": {"policy": "randaugment", "num_ops": 2, "magnitude": 9},
}
PRESETS = tuple(PRESET_SPECS)
#: the presets the batched (kornia) path implements: all but torchvision's policies
BATCH_PRESETS = tuple(p for p, s in PRESET_SPECS.items() if "policy" not in s)


def spec(preset: str) -> dict:
    """The spec of ``preset``; a clear error naming the choices for an unknown one."""
    if preset not in PRESET_SPECS:
        raise ValueError(f"unknown augmentation preset '{preset}'; choose one of {list(PRESETS)}")
    return PRESET_SPECS[preset]


__all__ = ["BATCH_PRESETS", "PRESETS", "PRESET_SPECS", "spec"]
