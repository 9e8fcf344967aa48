"""Calibration: do the probabilities mean what they say? Reliability (confidence bins),
the expected calibration error (ECE), temperature scaling fitted on validation, and the log
loss as a bootstrapped metric; the reliability diagram is in
:mod:`skinhelpers.evaluate.score_plots`.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import torch
from sklearn import metrics as skm

from skinhelpers.model.metrics import check_predictions

log = logging.getLogger(__name__)


def softmax(logits) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def reliability_table(y, probs, n_bins: int = 15) -> pd.DataFrame:
    """Top-label reliability: confidence bins of equal width with their count, mean
    confidence and accuracy (the data of a reliability diagram)."""
    y, probs = check_predictions(y, probs)
    conf = probs.max(1)
    correct = probs.argmax(1) == y
    edges = np.linspace(0, 1, n_bins + 1)
    b = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    rows = []
    for i in range(n_bins):
        m = b == i
        rows.append(
            {
                "bin_low": edges[i],
                "bin_high": edges[i + 1],
                "count": int(m.sum()),
                "confidence": float(conf[m].mean()) if m.any() else float("nan"),
                "accuracy": float(correct[m].mean()) if m.any() else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def expected_calibration_error(y, probs, n_bins: int = 15) -> float:
    """ECE (Guo et al. 2017): sum over equal-width confidence bins of
    ``|accuracy - confidence| * share of samples``, for the top-label prediction."""
    t = reliability_table(y, probs, n_bins)
    t = t[t["count"] > 0]
    return float(
        (t["count"] * (t["accuracy"] - t["confidence"]).abs()).sum() / max(1, t["count"].sum())
    )


def fit_temperature(logits, y, max_iter: int = 200) -> float:
    """Temperature scaling (Guo et al. 2017): the ``T > 0`` minimising the NLL of
    ``softmax(logits / T)`` on (validation) data, found by L-BFGS on ``log T``."""

    z = torch.as_tensor(np.asarray(logits, dtype=np.float64))
    t = torch.as_tensor(np.asarray(y).astype(np.int64))
    if z.ndim != 2 or len(z) != len(t):
        raise ValueError(f"logits {tuple(z.shape)} and y ({len(t)}) do not match")
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")
    loss_fn = torch.nn.CrossEntropyLoss()

    def closure():
        opt.zero_grad()
        loss = loss_fn(z / log_t.exp(), t)
        loss.backward()
        return loss

    opt.step(closure)
    temp = float(log_t.exp().item())
    if not math.isfinite(temp) or temp <= 0:
        raise RuntimeError(f"temperature scaling diverged (T={temp})")
    return temp


def apply_temperature(logits, temperature: float) -> np.ndarray:
    return softmax(np.asarray(logits, dtype=np.float64) / float(temperature))


def calibration_summary(y_val, logits_val, y_test, logits_test, n_bins: int = 15) -> dict:
    """Fit ``T`` on validation; ECE, NLL and Brier score on test before and after."""
    temp = fit_temperature(logits_val, y_val)
    out = {"temperature": temp, "n_bins": n_bins}
    for key, p in (
        ("before", softmax(logits_test)),
        ("after", apply_temperature(logits_test, temp)),
    ):
        y, p = check_predictions(y_test, p)
        onehot = np.eye(p.shape[1])[y]
        out[key] = {
            "ece": expected_calibration_error(y, p, n_bins),
            "nll": float(skm.log_loss(y, np.clip(p, 1e-12, 1), labels=list(range(p.shape[1])))),
            "brier": float(np.mean(np.sum((p - onehot) ** 2, axis=1))),
        }
    return out


def neg_log_loss(y, probs) -> float:
    """Minus the log loss (higher is better, like the other bootstrapped metrics)."""
    probs = np.asarray(probs)
    return -float(skm.log_loss(y, np.clip(probs, 1e-12, 1), labels=list(range(probs.shape[1]))))


__all__ = [
    "softmax",
    "reliability_table",
    "expected_calibration_error",
    "fit_temperature",
    "apply_temperature",
    "calibration_summary",
    "neg_log_loss",
]
