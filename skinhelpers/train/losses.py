"""Training losses: cross-entropy (label smoothing, class weights) and focal loss.

Both accept hard labels ``(N,)`` or soft targets ``(N, C)`` (what CutMix/MixUp make),
and both can be *logit adjusted* (Menon et al., 2021, "Long-tail learning via logit
adjustment"): during training ``tau * log(prior)`` is added to the logits, so the network
itself learns scores whose argmax suits *balanced* accuracy; nothing changes at inference.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

LOSSES = ("ce", "focal")


def _soft_targets(target: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    if target.ndim == 1:
        target = F.one_hot(target.long(), num_classes).float()
    if smoothing > 0:
        target = target * (1.0 - smoothing) + smoothing / num_classes
    return target


class FocalLoss(nn.Module):
    """Focal loss (Lin et al., 2017) for soft or hard multi-class targets.

    ``loss = -sum_c w_c * t_c * (1 - p_c)^gamma * log p_c``, averaged over the batch
    (divided by the mean weight of the targets when class weights are given, like
    ``F.cross_entropy``).
    """

    def __init__(
        self, gamma: float = 2.0, weight: torch.Tensor | None = None, label_smoothing: float = 0.0
    ):
        super().__init__()
        self.gamma = float(gamma)
        self.label_smoothing = float(label_smoothing)
        self.register_buffer("weight", weight if weight is not None else None)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        t = _soft_targets(target, logits.shape[1], self.label_smoothing)
        logp = F.log_softmax(logits.float(), dim=1)
        per = -(t * (1.0 - logp.exp()).pow(self.gamma) * logp)
        if self.weight is None:
            return per.sum(1).mean()
        w = self.weight.to(per)
        return (per * w).sum(1).sum() / (t * w).sum().clamp_min(1e-12)


class LossWithLogitAdjustment(nn.Module):
    """Wrap a loss so that it sees ``logits + tau * log(prior)`` (training only)."""

    def __init__(self, loss: nn.Module, prior: torch.Tensor, tau: float = 1.0):
        super().__init__()
        self.loss = loss
        self.tau = float(tau)
        self.register_buffer("log_prior", torch.log(prior.float().clamp_min(1e-12)))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss(logits + self.tau * self.log_prior.to(logits.dtype), target)


class CrossEntropy(nn.Module):
    """``F.cross_entropy`` with label smoothing and class weights, hard or soft targets."""

    def __init__(self, weight: torch.Tensor | None = None, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = float(label_smoothing)
        self.register_buffer("weight", weight if weight is not None else None)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        w = None if self.weight is None else self.weight.to(logits.device, torch.float32)
        if target.ndim == 2:
            target = target.float()
        return F.cross_entropy(
            logits.float(), target, weight=w, label_smoothing=self.label_smoothing
        )


def build_loss(
    kind: str = "ce",
    num_classes: int | None = None,
    label_smoothing: float = 0.0,
    class_weights: torch.Tensor | None = None,
    focal_gamma: float = 2.0,
    logit_adjust_tau: float = 0.0,
    prior: torch.Tensor | None = None,
) -> nn.Module:
    """The training loss by name (``ce`` or ``focal``), optionally logit adjusted."""
    if kind not in LOSSES:
        raise ValueError(f"loss '{kind}' is not one of {LOSSES}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if class_weights is not None and num_classes is not None and len(class_weights) != num_classes:
        raise ValueError(f"{len(class_weights)} class weights for {num_classes} classes")
    if kind == "ce":
        loss: nn.Module = CrossEntropy(class_weights, label_smoothing)
    else:
        loss = FocalLoss(focal_gamma, class_weights, label_smoothing)
    if logit_adjust_tau:
        if prior is None:
            raise ValueError("logit adjustment needs the training class prior")
        loss = LossWithLogitAdjustment(loss, prior, logit_adjust_tau)
    return loss
