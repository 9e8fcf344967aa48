"""The cases a dermatologist asks to see (notebook 08): the melanomas the model missed at
the chosen operating point, and the images behind the main confusions (melanoma called a
nevus, a benign keratosis called a melanoma).

Each function returns the rows of a prediction frame
(:func:`skinhelpers.evaluate.scores.prediction_frame`: ``image_id, relpath, label,
p_<class>..., pred, confidence``, and ``group``) to show, most telling first;
:func:`case_titles` writes their captions for
:func:`skinhelpers.evaluate.explain.plot_image_gallery`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

#: the confusions a dermatologist asks about first, (true, said), where both classes exist
NAMED_CONFUSIONS = (("mel", "nv"), ("bkl", "mel"))


def missed_positives(
    pred: pd.DataFrame, positive: str, threshold: float, k: int = 12, score=None
) -> pd.DataFrame:
    """The test images of class ``positive`` whose score is below ``threshold`` (missed
    at that operating point), the lowest score first; ``score`` (one per row of ``pred``)
    defaults to ``p_<positive>``. Adds ``score``; all of them are in ``attrs["n_missed"]``,
    the positives in ``attrs["n_positive"]``."""
    s = pred[f"p_{positive}"].to_numpy() if score is None else np.asarray(score, float)
    out = pred.assign(score=s)
    pos = out["label"] == positive
    missed = out[pos & (out["score"] < threshold)].sort_values("score", kind="stable")
    res = missed.head(k).copy()
    res.attrs.update({"n_missed": int(len(missed)), "n_positive": int(pos.sum())})
    return res


def confusion_pairs(
    pred: pd.DataFrame, classes: Sequence[str], n: int = 2, named=NAMED_CONFUSIONS
) -> list[tuple[str, str, int]]:
    """The confusions to show, ``(true, said, count)``: the ``named`` ones whose classes
    both exist, else (and to fill up to ``n``) the most frequent off-diagonal pairs of
    the argmax decision."""
    counts = pd.crosstab(pred["label"], pred["pred"])
    get = lambda t, s: int(counts.at[t, s]) if t in counts.index and s in counts.columns else 0  # noqa: E731
    out = [(t, s, get(t, s)) for t, s in named if t in classes and s in classes]
    ranked = sorted(
        ((t, s, get(t, s)) for t in counts.index for s in counts.columns if t != s),
        key=lambda r: -r[2],
    )
    for t, s, c in ranked:
        if len(out) >= n:
            break
        if c > 0 and (t, s) not in {(a, b) for a, b, _ in out}:
            out.append((t, s, c))
    return out


def confusion_cases(pred: pd.DataFrame, true: str, said: str, k: int = 6) -> pd.DataFrame:
    """The images of class ``true`` the model called ``said``, the most confident first
    (by ``p_<said>``)."""
    rows = pred[(pred["label"] == true) & (pred["pred"] == said)]
    return rows.sort_values(f"p_{said}", ascending=False, kind="stable").head(k)


def case_titles(rows: pd.DataFrame, positive: str | None = None, extra=None) -> list[str]:
    """Captions: the image, its true class and the decision, the probability of
    ``positive`` (or of the decision), and ``extra`` columns that exist (e.g. ``dx_type``,
    ``age``, ``localization``)."""
    out = []
    for r in rows.to_dict("records"):
        p = r.get("score", r.get(f"p_{positive}")) if positive else r.get(f"p_{r['pred']}")
        what = f"p({positive})" if positive else f"p({r['pred']})"
        more = [str(r[c]) for c in (extra or ()) if c in r and pd.notna(r[c])]
        out.append(
            f"{r['image_id']}\ntrue {r['label']}, said {r['pred']}\n{what}={p:.2f}"
            + (f"\n{', '.join(more)}" if more else "")
        )
    return out


__all__ = [
    "NAMED_CONFUSIONS",
    "case_titles",
    "confusion_cases",
    "confusion_pairs",
    "missed_positives",
]
