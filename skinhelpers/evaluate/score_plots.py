"""The pictures of :mod:`skinhelpers.evaluate.scores` and
:mod:`skinhelpers.evaluate.calibration`: confusion matrices, ROC and precision-recall
curves, the reliability diagram (each returns a Figure)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from sklearn import metrics as skm

from skinhelpers.evaluate.calibration import expected_calibration_error, reliability_table
from skinhelpers.evaluate.scores import confusion
from skinhelpers.figures import synthetic_title
from skinhelpers.model.metrics import check_predictions

log = logging.getLogger(__name__)


def _title(fig, title: str, synthetic: bool):
    fig.suptitle(synthetic_title(title, synthetic))


def plot_confusion_matrices(
    y, probs, classes: Sequence[str], title: str = "", synthetic: bool = False
):
    """Counts and row-normalised (recall) confusion matrices side by side."""
    import matplotlib.pyplot as plt

    n = len(classes)
    fig, axes = plt.subplots(1, 2, figsize=(2 * (0.6 * n + 2.8), 0.6 * n + 2.2))
    for ax, norm in zip(axes, (None, "true")):
        cm = confusion(y, probs, normalize=norm)
        im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=1 if norm else max(1, cm.max()))
        for i in range(n):
            for j in range(n):
                v = cm[i, j]
                txt = f"{v:.2f}" if norm else f"{int(v)}"
                hi = v > (0.5 if norm else cm.max() / 2)
                ax.text(
                    j,
                    i,
                    txt,
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if hi else "black",
                )
        ax.set_xticks(range(n), classes, rotation=40, ha="right", fontsize=8)
        ax.set_yticks(range(n), classes, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title("normalised by true class (recall)" if norm else "counts", fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    _title(fig, title or "Confusion matrices", synthetic)
    fig.tight_layout()
    return fig


def _binary_curves(classes):
    return len(classes) == 2


def plot_roc_pr_curves(
    y,
    probs,
    classes: Sequence[str],
    title: str = "",
    synthetic: bool = False,
    positive: int | None = None,
):
    """One-vs-rest ROC and precision-recall curves per class (the positive class only for
    binary problems), with AUC / average precision in the legend."""
    import matplotlib.pyplot as plt

    y, probs = check_predictions(y, probs)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.6))
    which = (
        [positive if positive is not None else 1]
        if _binary_curves(classes)
        else range(len(classes))
    )
    cmap = plt.get_cmap("tab10")
    for c in which:
        pos = y == c
        if pos.all() or not pos.any():
            continue
        fpr, tpr, _ = skm.roc_curve(pos, probs[:, c])
        prec, rec, _ = skm.precision_recall_curve(pos, probs[:, c])
        auc = skm.roc_auc_score(pos, probs[:, c])
        ap = skm.average_precision_score(pos, probs[:, c])
        col = cmap(c % 10)
        a1.plot(fpr, tpr, color=col, lw=1.5, label=f"{classes[c]} (AUC {auc:.3f})")
        a2.plot(
            rec,
            prec,
            color=col,
            lw=1.5,
            label=f"{classes[c]} (AP {ap:.3f}, prev. {pos.mean():.2f})",
        )
    a1.plot([0, 1], [0, 1], ls=":", color="grey")
    a1.set(
        xlabel="false positive rate (1 - specificity)",
        ylabel="true positive rate (sensitivity)",
        title="ROC, one vs rest",
    )
    a2.set(
        xlabel="recall (sensitivity)",
        ylabel="precision (PPV)",
        title="Precision-recall, one vs rest",
        ylim=(0, 1.02),
    )
    for a in (a1, a2):
        a.legend(fontsize=7.5, loc="lower right" if a is a1 else "lower left")
        a.grid(alpha=0.3)
        a.spines[["top", "right"]].set_visible(False)
    _title(fig, title or "ROC and precision-recall curves", synthetic)
    fig.tight_layout()
    return fig


def plot_reliability(
    y, curves: dict[str, np.ndarray], n_bins: int = 15, title: str = "", synthetic: bool = False
):
    """Reliability diagram: accuracy against confidence per bin, one line per entry of
    ``curves`` (name -> probs), ECE in the legend, and a histogram of confidences."""
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(
        2, 1, figsize=(5.6, 6.4), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    a1.plot([0, 1], [0, 1], ls=":", color="grey", label="perfect calibration")
    cmap = plt.get_cmap("tab10")
    for i, (name, p) in enumerate(curves.items()):
        t = reliability_table(y, p, n_bins)
        t = t[t["count"] > 0]
        ece = expected_calibration_error(y, p, n_bins)
        a1.plot(
            t["confidence"], t["accuracy"], color=cmap(i), lw=1.2, label=f"{name} (ECE {ece:.3f})"
        )
        a1.scatter(
            t["confidence"],
            t["accuracy"],
            s=12 + 120 * t["count"] / t["count"].max(),
            color=cmap(i),
            alpha=0.8,
            zorder=3,
        )
        a2.hist(
            np.asarray(p).max(1),
            bins=np.linspace(0, 1, n_bins + 1),
            alpha=0.45,
            color=cmap(i),
            label=name,
        )
    a1.set(ylabel="accuracy (marker size: images in the bin)", xlim=(0, 1), ylim=(0, 1.02))
    a1.legend(fontsize=8, loc="upper left")
    a1.grid(alpha=0.3)
    a2.set(xlabel="confidence (top-class probability)", ylabel="images")
    _title(fig, title or "Reliability diagram", synthetic)
    fig.tight_layout()
    return fig


__all__ = ["plot_confusion_matrices", "plot_reliability", "plot_roc_pr_curves"]
