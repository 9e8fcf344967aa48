"""The picture of a split (:mod:`skinhelpers.split.grouped`): images per class and split,
and each split's class mix."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from skinhelpers.figures import synthetic_title
from skinhelpers.split import checks, store

log = logging.getLogger(__name__)

SPLIT_COLORS = {"train": "#4c72b0", "val": "#dd8452", "test": "#55a868"}


def plot_split(split_df: pd.DataFrame, title: str | None = None):
    """Images per class and split (log scale), and each split's class mix side by side."""
    import matplotlib.pyplot as plt

    t = store.split_table(split_df)[list(checks.SPLITS)]
    classes = list(t.index)
    x = np.arange(len(classes))
    w = 0.27
    fig, axes = plt.subplots(1, 2, figsize=(max(9, 1.3 * len(classes) + 4), 4.2))
    for i, s in enumerate(checks.SPLITS):
        bars = axes[0].bar(x + (i - 1) * w, t[s].to_numpy(), w, label=s, color=SPLIT_COLORS[s])
        axes[0].bar_label(bars, labels=[f"{v:,}" for v in t[s]], fontsize=6, rotation=90, padding=2)
        share = t[s] / max(1, t[s].sum())
        axes[1].bar(x + (i - 1) * w, share.to_numpy() * 100, w, label=s, color=SPLIT_COLORS[s])
    axes[0].set_yscale("log")
    axes[0].set_ylabel("images (log scale)")
    axes[0].set_title("Images per class and split")
    axes[1].set_ylabel("% of the split")
    shipped = checks.is_shipped(split_df)
    axes[1].set_title(
        "Class mix of each split"
        + (
            " (test as shipped; train and val stratified)"
            if shipped
            else " (stratified: bars match)"
        )
    )
    for ax in axes:
        ax.set_xticks(x, classes, rotation=30, ha="right", fontsize=8)
        ax.spines[["top", "right"]].set_visible(False)
    summ = store.split_summary(split_df)
    legend = [
        f"{s}: {summ.loc[s, 'images']:,} img / {summ.loc[s, 'groups']:,} groups"
        for s in checks.SPLITS
    ]
    handles, _ = axes[0].get_legend_handles_labels()
    axes[1].legend(handles, legend, fontsize=8, frameon=False)
    head = (title or f"{split_df.attrs.get('dataset', '')} grouped split").strip()
    fig.suptitle(synthetic_title(head, split_df), fontsize=11)
    fig.tight_layout()
    ymax = axes[0].get_ylim()[1]
    axes[0].set_ylim(top=ymax * 3)  # room for the rotated counts
    return fig


# ----------------------------------------------------------------------------- persistence


__all__ = ["SPLIT_COLORS", "plot_split"]
