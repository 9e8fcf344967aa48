"""Plots and comparison tables for training (notebooks 06 and 07). Each plot returns a Figure."""

from __future__ import annotations

import logging

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from skinhelpers.figures import synthetic_title
from skinhelpers.model.factory import parse_variant

log = logging.getLogger(__name__)

METRIC_LABELS = {
    "balanced_accuracy": "balanced accuracy",
    "macro_f1": "macro-F1",
    "macro_auc": "macro AUC",
    "positive_auc": "melanoma AUC",
}


def plot_history(
    hist: pd.DataFrame, monitor: str = "balanced_accuracy", title: str = "", synthetic: bool = False
):
    """Learning curves: loss (train, val), validation metrics (model, EMA), learning rate."""
    hist = pd.DataFrame(hist)
    ep = hist["epoch"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    ax = axes[0]
    ax.plot(ep, hist["train_loss"], "o-", color="C0", label="train (training loss)")
    ax.plot(ep, hist["val_loss"], "o-", color="C1", label="validation (cross-entropy)")
    if "ema_val_loss" in hist:
        ax.plot(
            ep, hist["ema_val_loss"], "o--", color="C1", alpha=0.6, label="validation, EMA weights"
        )
    ax.set_title("loss")
    ax = axes[1]
    other = "macro_f1" if monitor != "macro_f1" else "balanced_accuracy"
    for i, (key, style) in enumerate(((monitor, "o-"), (other, "s-"), ("macro_auc", "^-"))):
        ax.plot(ep, hist[f"val_{key}"], style, color=f"C{i + 2}", label=METRIC_LABELS.get(key, key))
        if f"ema_val_{key}" in hist and key == monitor:
            ax.plot(
                ep,
                hist[f"ema_val_{key}"],
                "o--",
                color=f"C{i + 2}",
                alpha=0.6,
                label=f"{METRIC_LABELS.get(key, key)}, EMA",
            )
    best = hist[f"val_{monitor}"].idxmax() if hist[f"val_{monitor}"].notna().any() else None
    if best is not None:
        ax.axvline(hist.loc[best, "epoch"], color="grey", lw=0.8, ls=":")
        ax.annotate(
            f"best {hist.loc[best, f'val_{monitor}']:.3f}",
            (hist.loc[best, "epoch"], hist.loc[best, f"val_{monitor}"]),
            textcoords="offset points",
            xytext=(4, -12),
            fontsize=8,
        )
    ax.set_ylim(0, 1.02)
    ax.set_title("validation metrics")
    ax = axes[2]
    ax.plot(ep, hist["lr_head"], "o-", label="head")
    ax.plot(ep, hist["lr_backbone"], "o-", label="backbone")
    ax.set_title("learning rate (mean per epoch)")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    phases = hist["phase"].tolist()
    for i in range(1, len(phases)):
        if phases[i] != phases[i - 1]:
            for a in axes:
                a.axvline(ep.iloc[i] - 0.5, color="crimson", lw=0.8, alpha=0.6)
            axes[2].annotate(
                "unfreeze",
                (ep.iloc[i] - 0.5, axes[2].get_ylim()[1]),
                fontsize=8,
                color="crimson",
                va="top",
                ha="left",
            )

    for a in axes:
        a.set_xlabel("epoch")
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.spines[["top", "right"]].set_visible(False)
        a.legend(fontsize=8)
    fig.suptitle(synthetic_title(title or "Learning curves", synthetic))
    fig.tight_layout()
    return fig


def plot_trials(table: pd.DataFrame, title: str = "", synthetic: bool = False):
    """Validation metrics per trial (bars) and balanced accuracy against training speed."""
    t = table.dropna(subset=["balanced_accuracy"]).sort_values("balanced_accuracy")
    metrics = [m for m in ("balanced_accuracy", "macro_f1", "macro_auc", "positive_auc") if m in t]
    fig, axes = plt.subplots(
        1, 2, figsize=(14, max(3.2, 0.55 * len(t) + 1.5)), gridspec_kw={"width_ratios": [1.4, 1]}
    )
    ax = axes[0]
    y = np.arange(len(t))
    h = 0.8 / len(metrics)
    for i, m in enumerate(metrics):
        ax.barh(y + (i - (len(metrics) - 1) / 2) * h, t[m], height=h, label=METRIC_LABELS.get(m, m))
    ax.set_yticks(y, t["trial"])
    ax.set_xlim(0, 1)
    ax.set_xlabel("validation score at the best epoch")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("validation metrics per trial")
    ax = axes[1]
    size = 30 + 300 * t["params_m"] / max(t["params_m"].max(), 1e-9)
    ax.scatter(t["images_per_s"], t["balanced_accuracy"], s=size, alpha=0.6)
    for _, r in t.iterrows():
        ax.annotate(
            r["trial"],
            (r["images_per_s"], r["balanced_accuracy"]),
            fontsize=8,
            textcoords="offset points",
            xytext=(5, 3),
        )
    ax.set_xscale("log")
    ax.margins(x=0.25, y=0.15)
    ax.set_xlabel("training images / s (log)")
    ax.set_ylabel("validation balanced accuracy")
    ax.set_title("accuracy vs speed (marker size: parameters)")
    for a in axes:
        a.spines[["top", "right"]].set_visible(False)
    fig.suptitle(synthetic_title(title or "Model trials", synthetic))
    fig.tight_layout()
    return fig


def plot_trial_curves(
    histories: dict, metric: str = "balanced_accuracy", title: str = "", synthetic: bool = False
):
    """Validation ``metric`` per epoch for every trial."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for label, h in histories.items():
        h = pd.DataFrame(h)
        ax.plot(h["epoch"], h[f"val_{metric}"], "o-", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"validation {METRIC_LABELS.get(metric, metric)}")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, ncols=2)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title(
        synthetic_title(
            title or f"Validation {METRIC_LABELS.get(metric, metric)} per epoch", synthetic
        )
    )
    fig.tight_layout()
    return fig


NORM_NAMES = {
    "weights": "the weights' statistics (ImageNet)",
    "dataset": "dataset featurewise mean/std",
    "sample": "samplewise centering",
}


def paired_comparisons(table: pd.DataFrame, metric: str = "balanced_accuracy") -> pd.DataFrame:
    """Pretrained vs random initialisation, frozen vs fine-tuned and the input
    normalisations, where both trials of a pair were run.

    Pairs are trials of the same architecture: ``X`` vs ``X:scratch`` (or ``resnet50`` from
    scratch vs ``resnet50_finetune``), ``X:frozen`` / ``resnet50_frozen`` vs the
    fine-tuned one, and ``X`` vs ``X@dataset`` / ``X@sample`` (same initialisation).
    """
    rows = []
    t = table.dropna(subset=[metric])
    info = {r["trial"]: {**parse_variant(r["trial"]), "score": r[metric]} for _, r in t.iterrows()}

    def base(trial):
        arch = info[trial]["arch"]
        return {"resnet50_frozen": "resnet50", "resnet50_finetune": "resnet50"}.get(arch, arch)

    for a, ia in info.items():
        for b, ib in info.items():
            if a == b or base(a) != base(b):
                continue
            question = None
            same_norm = ia["input_norm"] == ib["input_norm"]
            if ia["pretrained"] and not ia["frozen"] and not ib["pretrained"] and same_norm:
                question = "pretrained vs random init"
            if (
                ia["pretrained"]
                and not ia["frozen"]
                and ib["pretrained"]
                and ib["frozen"]
                and same_norm
            ):
                question = "fine-tuned vs frozen backbone"
            if (
                ia["input_norm"] == "weights"
                and ib["input_norm"] != "weights"
                and (ia["pretrained"], ia["frozen"]) == (ib["pretrained"], ib["frozen"])
            ):
                question = f"the weights' statistics vs {NORM_NAMES[ib['input_norm']]}"
            if question:
                rows.append(
                    {
                        "question": question,
                        "architecture": base(a),
                        "A": a,
                        "B": b,
                        f"A {metric}": ia["score"],
                        f"B {metric}": ib["score"],
                        "A - B": ia["score"] - ib["score"],
                    }
                )
    return pd.DataFrame(
        rows, columns=["question", "architecture", "A", "B", f"A {metric}", f"B {metric}", "A - B"]
    )
