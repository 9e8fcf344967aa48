"""An ensemble of checkpoints that is one ``torch.nn.Module``: the K-fold models of the gpu
profile (:mod:`skinhelpers.train.kfold`), averaged in probability.

:class:`Ensemble`'s forward returns ``log`` of the members' mean softmax. The softmax of
that is the mean probability again, so everything that takes a classifier's logits (the one
prediction loop with its test-time views, temperature scaling, the metrics) takes the
ensemble unchanged. The members must agree on everything inference depends on (classes,
image size, preprocessing, resizing, normalisation); :func:`load_ensemble` checks it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import torch

from skinhelpers.model.checkpoints import CheckpointError, model_from_checkpoint

log = logging.getLogger(__name__)

#: what every member must share, because the images are prepared once for all of them
SHARED_KEYS = ("classes", "image_size", "preprocess", "resize_mode", "mean", "std")


class Ensemble(torch.nn.Module):
    """Mean of the members' class probabilities, returned as log-probabilities."""

    def __init__(self, members: Sequence[torch.nn.Module]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = torch.nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.stack([m(x).float().softmax(1) for m in self.members]).mean(0)
        return p.clamp_min(1e-12).log()


def load_ensemble(
    paths: Sequence[str | os.PathLike], device: str | torch.device = "cpu"
) -> tuple[Ensemble, dict]:
    """``(Ensemble, info)`` from checkpoint files; ``info`` is the first member's, with
    ``arch`` naming the ensemble, ``members`` the files and ``epoch`` the members' epochs.
    Members that would need their images prepared differently are a CheckpointError."""
    if not paths:
        raise ValueError("no checkpoints given for the ensemble")
    models, infos = zip(*(model_from_checkpoint(p, device) for p in paths))
    first = infos[0]
    for p, info in zip(paths[1:], infos[1:]):
        differ = [k for k in SHARED_KEYS if info.get(k) != first.get(k)]
        if differ:
            raise CheckpointError(
                f"{p} cannot join an ensemble with {paths[0]}: they differ in {differ}"
            )
    archs = sorted({i["arch"] for i in infos})
    info = {
        **first,
        "arch": f"ensemble of {len(paths)} x {'/'.join(archs)}",
        "epoch": [i.get("epoch") for i in infos],
        "members": [str(p) for p in paths],
        "metrics": {},  # each member's validation scores are on its own fold
    }
    return Ensemble(list(models)).to(device).eval(), info


__all__ = ["SHARED_KEYS", "Ensemble", "load_ensemble"]
