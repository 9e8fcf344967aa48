"""The picture of :mod:`skinhelpers.evaluate.selective`: the risk-coverage curve."""

from __future__ import annotations

import logging

import matplotlib.pyplot as plt
import pandas as pd

from skinhelpers.figures import synthetic_title

log = logging.getLogger(__name__)


def plot_risk_coverage(table: pd.DataFrame, aurc: float, title: str = "", synthetic: bool = False):
    """Left: error rate of the cases kept against the share kept (AURC in the legend).
    Right: balanced accuracy and melanoma sensitivity of the kept cases."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.plot(table["coverage"], table["risk"], color="#c44e52", label=f"error (AURC {aurc:.3f})")
    a.set_xlabel("coverage: share of cases the model answers")
    a.set_ylabel("error rate of the answered cases")
    a.set_xlim(0, 1)
    a.legend(fontsize=8)
    b.plot(table["coverage"], table["balanced_accuracy"], label="balanced accuracy")
    if "sensitivity" in table:
        b.plot(table["coverage"], table["sensitivity"], label="melanoma sensitivity")
    b.set_xlabel("coverage: share of cases the model answers")
    b.set_ylim(0, 1.02)
    b.set_xlim(0, 1)
    b.legend(fontsize=8, loc="lower left")
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.suptitle(synthetic_title(title or "Refer the least confident cases", synthetic))
    fig.tight_layout()
    return fig


__all__ = ["plot_risk_coverage"]
