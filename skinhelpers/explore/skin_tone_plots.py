"""The picture of :mod:`skinhelpers.explore.skin_tone`: images per ITA band and class."""

from __future__ import annotations

import logging

import matplotlib.pyplot as plt
import pandas as pd

from skinhelpers.figures import synthetic_title

log = logging.getLogger(__name__)


def plot_ita_bands(
    by_class: pd.DataFrame, title: str = "Skin tone (ITA bands) by class", synthetic: bool = False
):
    """Stacked bars: images per ITA band (lightest left), split by class, counts on a log
    scale so the few darker-skin images stay visible."""
    fig, ax = plt.subplots(figsize=(8, 4))
    bottom = pd.Series(0.0, index=by_class.index)
    cmap = plt.get_cmap("tab10")
    for k, cls in enumerate(by_class.columns):
        ax.bar(
            by_class.index.astype(str),
            by_class[cls],
            bottom=bottom,
            color=cmap(k % 10),
            label=str(cls),
        )
        bottom += by_class[cls]
    for x, total in enumerate(bottom):
        ax.text(x, total, f"{int(total):,}", ha="center", va="bottom", fontsize=8)
    ax.set_yscale("symlog", linthresh=10)
    ax.set_ylabel("images (symlog scale)")
    ax.set_xlabel("ITA band (estimated from the skin around the lesion)")
    ax.set_title(synthetic_title(title, synthetic))
    ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=8, title="class")
    fig.tight_layout()
    return fig


__all__ = ["plot_ita_bands"]
