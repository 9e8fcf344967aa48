"""The pictures of :mod:`skinhelpers.explore.leakage` (notebook 03): images per lesion,
duplicate pairs side by side, the hash-distance histogram, naive against grouped splits,
and the metadata associations."""

from __future__ import annotations

import logging
from itertools import combinations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from skinhelpers.data.imaging import read_rgb
from skinhelpers.explore.leakage import images_per_group
from skinhelpers.figures import synthetic_title

log = logging.getLogger(__name__)


def _off(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)


def plot_images_per_group(df: pd.DataFrame, group_name: str = "lesion"):
    """Bar plot: how many groups have 1, 2, 3, ... images."""
    t = images_per_group(df)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    bars = ax.bar(t.index.astype(str), t["groups"], color="#4c72b0")
    ax.bar_label(bars, labels=[f"{v:,}" for v in t["groups"]], fontsize=8)
    ax.set_xlabel(f"images per {group_name}")
    ax.set_ylabel(f"{group_name}s")
    multi = t.loc[t.index > 1, "images"].sum()
    ax.set_title(
        synthetic_title(
            f"{df['group'].nunique():,} {group_name}s; {multi:,} of {len(df):,} "
            f"images belong to a {group_name} with 2+ images",
            df,
        ),
        fontsize=10,
    )
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


def plot_pairs(
    pairs: pd.DataFrame, paths: dict, n: int = 8, ncol: int = 2, title: str = "Duplicate pairs"
):
    """Side-by-side pairs (``paths`` maps relpath -> file), distance and labels on top."""
    p = pairs.head(n)
    if p.empty:
        fig, ax = plt.subplots(figsize=(5, 1))
        _off(ax)
        ax.text(0.5, 0.5, "no pairs", ha="center", va="center")
        return fig
    nrow = int(np.ceil(len(p) / ncol))
    fig, axes = plt.subplots(nrow, 2 * ncol, figsize=(4.4 * ncol, 2.0 * nrow + 0.5), squeeze=False)
    for ax in axes.ravel():
        _off(ax)
    for k, (_, r) in enumerate(p.iterrows()):
        i, j = divmod(k, ncol)
        for side, col in enumerate(("a", "b")):
            ax = axes[i, 2 * j + side]
            ax.imshow(read_rgb(paths[r[f"relpath_{col}"]]))
            name = str(r[f"relpath_{col}"]).split("/")[-1]
            ax.set_title(f"{name}\n{r[f'label_{col}']} · {r[f'group_{col}']}", fontsize=6.5)
        tag = "same group" if r["same_group"] else "CROSS-GROUP"
        axes[i, 2 * j].set_ylabel(
            f"{r['kind']} d={r['distance']}\n{tag}",
            fontsize=7,
            color="black" if r["same_group"] else "crimson",
        )
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot_distance_hist(
    bits: np.ndarray,
    groups: np.ndarray,
    max_distance: int,
    sample: int = 3000,
    seed: int = 0,
    title: str = "",
):
    """Hamming distances of random pairs vs pairs within one group, with the threshold."""
    rng = np.random.default_rng(seed)
    bits = np.asarray(bits)
    if bits.ndim == 3:  # dihedral hashes: the plain view
        bits = bits[:, 0]
    n, nbits = bits.shape
    x = bits.astype(np.float32) * 2 - 1
    ia, ib = rng.integers(0, n, sample), rng.integers(0, n, sample)
    keep = ia != ib
    rand = np.rint((nbits - np.sum(x[ia[keep]] * x[ib[keep]], axis=1)) / 2)
    g = pd.Series(np.arange(n)).groupby(np.asarray(groups)).apply(list)
    same = []
    for members in g:
        for a, b in combinations(members, 2):
            same.append(int(np.sum(bits[a] != bits[b])))
            if len(same) >= sample:
                break
    fig, ax = plt.subplots(figsize=(7, 3.2))
    bins = np.arange(0, nbits // 2 + 8, 4)
    ax.hist(
        rand,
        bins=bins,
        alpha=0.6,
        color="#999999",
        density=True,
        label=f"random pairs ({len(rand):,})",
    )
    if same:
        ax.hist(
            same,
            bins=bins,
            alpha=0.6,
            color="#4c72b0",
            density=True,
            label=f"pairs within one group ({len(same):,})",
        )
    ax.set_yscale("log")
    ax.axvline(
        max_distance + 0.5,
        color="crimson",
        ls="--",
        label=f"threshold ({max_distance} of {nbits} bits)",
    )
    ax.set_xlabel("Hamming distance of the perceptual hashes (bits)")
    ax.set_ylabel("density (log)")
    ax.legend(fontsize=8, frameon=False, loc="upper left")
    ax.set_title(title or "How far apart are images?", fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


def plot_split_leak(table: pd.DataFrame, df: pd.DataFrame | None = None):
    """Share of test images whose lesion also has images in train, per split method."""
    t = table.groupby("method", sort=False).agg(
        share=("test_images_leaked_share", "mean"),
        sd=("test_images_leaked_share", "std"),
        groups=("shared_groups", "mean"),
        runs=("seed", "size"),
    )
    order = [m for m in ("naive", "grouped", "shipped") if m in t.index]
    t = t.loc[order]
    colors = {"naive": "crimson", "grouped": "#55a868", "shipped": "#8172b2"}
    fig, ax = plt.subplots(figsize=(6, 3.2))
    bars = ax.bar(
        t.index,
        100 * t["share"],
        yerr=100 * t["sd"].fillna(0),
        capsize=4,
        color=[colors[m] for m in t.index],
    )
    ax.bar_label(
        bars,
        labels=[
            f"{100 * s:.1f}%\n({g:.0f} shared groups)" for s, g in zip(t["share"], t["groups"])
        ],
        fontsize=8,
        padding=2,
    )
    ax.set_ylabel("test images whose group (lesion)\nalso has images in train (%)")
    ax.set_ylim(0, max(5, 100 * t["share"].max() * 1.35))
    n_seeds = int(t["runs"].max())
    ax.set_title(
        synthetic_title(f"Train/test leakage by split method (mean of {n_seeds} seeds)", df),
        fontsize=10,
    )
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


def plot_associations(assoc: pd.DataFrame, df: pd.DataFrame | None = None):
    """Cramer's V per metadata column (p-value in the label)."""
    fig, ax = plt.subplots(figsize=(6, 0.5 * max(1, len(assoc)) + 1.2))
    a = assoc.sort_values("cramers_v")
    bars = ax.barh(a["column"], a["cramers_v"], color="#dd8452")
    ax.bar_label(
        bars,
        labels=[
            f"V={v:.2f}  (p={p:.1g}, n={n:,})"
            for v, p, n in zip(a["cramers_v"], a["p_value"], a["n"])
        ],
        fontsize=8,
    )
    ax.set_xlim(0, 1)
    ax.set_xlabel("Cramér's V with the diagnosis (0: none, 1: determines it)")
    ax.set_title(synthetic_title("Metadata vs diagnosis", df), fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


__all__ = [
    "plot_associations",
    "plot_distance_hist",
    "plot_images_per_group",
    "plot_pairs",
    "plot_split_leak",
]
