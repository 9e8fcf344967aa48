"""The pictures of :mod:`skinhelpers.explore.shift`: class mix by source and the source
probe."""

from __future__ import annotations

import logging

import matplotlib.pyplot as plt
import pandas as pd

log = logging.getLogger(__name__)


def plot_class_mix_by_source(shares: pd.DataFrame, title: str = "Class mix by source"):
    """Stacked bars: each source's share of every class (``by_source(..., share=True)``)."""
    fig, ax = plt.subplots(figsize=(1.8 + 1.3 * shares.shape[1], 4.2))
    bottom = pd.Series(0.0, index=shares.columns)
    cmap = plt.get_cmap("tab10")
    for k, (cls, row) in enumerate(shares.iterrows()):
        ax.bar(shares.columns, row, bottom=bottom, color=cmap(k % 10), label=str(cls))
        for x, (v, b) in enumerate(zip(row, bottom)):
            if v >= 0.06:
                ax.text(x, b + v / 2, f"{v:.0%}", ha="center", va="center", fontsize=8)
        bottom += row
    ax.set_ylabel("share of the source's images")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=8, title="class")
    fig.tight_layout()
    return fig


def plot_source_probe(probe: pd.DataFrame, title: str = "Can the image tell its source?"):
    """Horizontal bars: balanced accuracy of the source probe per feature set, chance
    marked."""
    fig, ax = plt.subplots(figsize=(6.5, 0.6 + 0.55 * len(probe)))
    ax.barh(probe.index, probe["balanced_accuracy"], color="#4c72b0")
    ax.axvline(float(probe["chance"].iloc[0]), color="grey", ls="--", label="chance")
    for y, v in enumerate(probe["balanced_accuracy"]):
        ax.text(v + 0.01, y, f"{v:.2f}", va="center", fontsize=9)
    ax.set_xlim(0, 1.08)
    ax.set_xlabel("balanced accuracy of telling the source (out-of-fold, grouped)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    ax.invert_yaxis()
    fig.tight_layout()
    return fig


__all__ = ["plot_class_mix_by_source", "plot_source_probe"]
