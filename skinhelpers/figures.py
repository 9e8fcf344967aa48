"""Plots shared by the notebooks. Each function returns a matplotlib Figure."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from skinhelpers.data.imaging import read_rgb
from skinhelpers.files import PROJECT_ROOT, atomic_path

log = logging.getLogger(__name__)

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


FIGURE_DPI = 110  # the saved PNGs' resolution

#: the run folder of the notebook running in this process (set by
#: :func:`skinhelpers.run.folders.start_notebook`); its figures go to ``<run>/figures/``
_RUN_DIR: Path | None = None


def set_run_dir(run_dir: str | os.PathLike | None) -> None:
    """Where :func:`save_figure` puts the figures from now on: ``<run_dir>/figures/``."""
    global _RUN_DIR
    _RUN_DIR = Path(run_dir) if run_dir else None


def figures_dir(dataset: str) -> Path:
    """``figures/<dataset>/``: the latest copy of each of a dataset's figures."""
    d = PROJECT_ROOT / "figures" / dataset
    d.mkdir(parents=True, exist_ok=True)
    return d


def save_figure(
    fig,
    dataset: str,
    name: str,
    synthetic: bool = False,
    dpi: int = FIGURE_DPI,
    run_dir: str | os.PathLike | None = None,
) -> Path:
    """Save a matplotlib figure as ``<run_dir>/figures/<name>.png`` (atomically), and copy it
    to ``figures/<dataset>/<name>.png``; returns the run folder's file.

    ``run_dir``: the run folder (default: the one the notebook's ``start_notebook`` set).
    Each run keeps its own figures there, never overwritten by another run; the copy under
    ``figures/<dataset>/`` is the latest of each figure of that dataset, from whichever run
    wrote it last (each PNG names its run in its ``Source`` text chunk). Without a run
    folder only the ``figures/<dataset>/`` file is written. Figures made from the synthetic
    demo data get a SYNTHETIC stamp.
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
    run = Path(run_dir) if run_dir else _RUN_DIR
    meta = {"Source": f"skinlesion-lab run {run}" if run else "skinlesion-lab"}
    latest = figures_dir(dataset) / f"{name}.png"
    out = run / "figures" / f"{name}.png" if run else latest
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png", metadata=meta)
    if out != latest:
        with atomic_path(latest) as tmp:
            shutil.copyfile(out, tmp)
    return out


def show(fig, dataset: str, name: str, **save_kw) -> Path:
    """Save ``fig`` (:func:`save_figure`, given ``save_kw``) and show it; returns the run
    folder's file.

    In a notebook (the inline backend) the saved PNG itself is shown, at the size the
    inline backend would give the figure, and the figure is closed: the figure is drawn
    once, not once more for the display (each drawing is two with a tight bounding box:
    0.3 s for a gallery on 2 cores). Elsewhere (a script, an interactive backend such as
    ``%matplotlib widget``) it is ``plt.show()``.
    """
    out = save_figure(fig, dataset, name, **save_kw)
    dpi = save_kw.get("dpi", FIGURE_DPI)
    if "inline" not in str(plt.get_backend()):
        plt.show()
        return out
    from IPython.display import Image, display
    from PIL import Image as PILImage

    data = out.read_bytes()
    with PILImage.open(out) as im:
        width = im.size[0]
    display(Image(data=data, format="png", width=max(1, round(width * fig.dpi / dpi))))
    plt.close(fig)
    return out
