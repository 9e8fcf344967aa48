"""Plots shared by the notebooks. Each function returns a matplotlib Figure."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from skinhelpers.data.imaging import read_rgb
from skinhelpers.files import PROJECT_ROOT, atomic_path

SYNTHETIC_TAG = "  [SYNTHETIC]"


def is_synthetic(data) -> bool:
    """``data``: a bool, or a DataFrame whose ``attrs['synthetic']`` says (None: False)."""
    if isinstance(data, pd.DataFrame):
        return bool(data.attrs.get("synthetic"))
    return bool(data)


def synthetic_title(title: str, synthetic) -> str:
    """The one place a title, caption or heading is marked SYNTHETIC (demo data).

    ``synthetic``: a bool or a DataFrame carrying ``attrs['synthetic']``."""
    return f"{title}{SYNTHETIC_TAG}" if is_synthetic(synthetic) else title


def class_counts_bar(df: pd.DataFrame, title: str = "Images per class"):
    """Bar plot of images per class, with counts and the imbalance ratio in the title."""
    counts = df["label"].value_counts().reindex(df.attrs["classes"], fill_value=0)
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(counts) + 2), 3.6))
    bars = ax.bar(range(len(counts)), counts.to_numpy(), color="#8c564b")
    ax.bar_label(bars, labels=[f"{v:,}" for v in counts], fontsize=8)
    ax.set_xticks(range(len(counts)), counts.index, rotation=30, ha="right")
    ax.set_ylabel("images")
    nz = counts[counts > 0]
    ratio = nz.max() / nz.min() if len(nz) else float("nan")
    ax.set_title(synthetic_title(f"{title} (n={len(df):,}, imbalance {ratio:.0f}:1)", df))
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


def image_grid(
    df: pd.DataFrame,
    per_class: int = 6,
    seed: int = 0,
    size: int = 96,
    title: str = "Examples per class",
):
    """A grid: one row per class, ``per_class`` random images (seeded)."""
    classes = [c for c in df.attrs["classes"] if (df["label"] == c).any()]
    fig, axes = plt.subplots(
        len(classes),
        per_class,
        figsize=(per_class * 1.3 + 1.2, len(classes) * 1.1 + 0.6),
        squeeze=False,
    )
    rng = np.random.default_rng(seed)
    for i, c in enumerate(classes):
        sub = df[df["label"] == c]
        pick = sub.iloc[rng.permutation(len(sub))[:per_class]]
        for j in range(per_class):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if j < len(pick):
                ax.imshow(read_rgb(pick["path"].iloc[j]))
            if j == 0:
                ax.set_ylabel(c, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(synthetic_title(title, df), fontsize=11)
    fig.tight_layout()
    return fig


def table(df: pd.DataFrame, title: str, synthetic: bool = False, precision: int = 3):
    """A table for display in a notebook, captioned (and marked SYNTHETIC for demo data)."""
    caption = synthetic_title(title, synthetic)
    return (
        df.style.set_caption(caption)
        .format(precision=precision, thousands=",")
        .set_table_styles(
            [
                {
                    "selector": "caption",
                    "props": "font-weight: bold; text-align: left;"
                    + (" color: crimson;" if is_synthetic(synthetic) else ""),
                }
            ]
        )
    )


def figures_dir(dataset: str) -> Path:
    """``figures/<dataset>/``: where a notebook saves the figures a reader looks at."""
    d = PROJECT_ROOT / "figures" / dataset
    d.mkdir(parents=True, exist_ok=True)
    return d


def save_figure(fig, dataset: str, name: str, synthetic: bool = False, dpi: int = 110) -> Path:
    """Save a matplotlib figure to ``figures/<dataset>/<name>.png`` (atomically).

    Figures made from the synthetic demo data get a SYNTHETIC stamp.
    """
    if is_synthetic(synthetic):
        fig.text(
            0.995,
            0.005,
            "SYNTHETIC DATA",
            ha="right",
            va="bottom",
            fontsize=9,
            color="crimson",
            alpha=0.8,
            weight="bold",
        )
    out = figures_dir(dataset) / f"{name}.png"
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    return out
