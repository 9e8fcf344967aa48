"""The picture of the out-of-distribution guard: its scores per set, with the threshold."""

from __future__ import annotations

import logging

import matplotlib.pyplot as plt
import numpy as np

from skinhelpers.figures import synthetic_title

log = logging.getLogger(__name__)


def plot_ood_scores(scores: dict, threshold: float, title: str = "", synthetic: bool = False):
    """One histogram per set (``{"validation": array, ...}``) of the guard's score on a log
    axis where all scores are positive, and the threshold as a vertical line: images
    to its right are flagged."""
    fig, ax = plt.subplots(figsize=(8, 3.6))
    allv = np.concatenate([np.asarray(v, float) for v in scores.values() if len(v)])
    log = bool(len(allv)) and allv.min() > 0
    lo, hi = (allv.min(), allv.max()) if len(allv) else (0.0, 1.0)
    bins = np.geomspace(lo, hi, 40) if log and hi > lo else 40
    for name, v in scores.items():
        v = np.asarray(v, float)
        if len(v):
            flagged = float(np.mean(v > threshold))
            ax.hist(
                v,
                bins=bins,
                alpha=0.5,
                density=True,
                label=f"{name} (n={len(v):,}, {flagged:.0%} flagged)",
            )
    ax.axvline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:.4g}")
    if log:
        ax.set_xscale("log")
    ax.set_xlabel("out-of-distribution score (higher: further from the training images)")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title(synthetic_title(title or "Out-of-distribution scores", synthetic))
    fig.tight_layout()
    return fig


__all__ = ["plot_ood_scores"]
