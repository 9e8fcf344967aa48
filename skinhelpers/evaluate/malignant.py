"""A malignant-vs-benign operating point beside the melanoma one (notebook 08).

A clinic that refers a lesion for any skin cancer, not only melanoma, wants a threshold on
p(malignant): on HAM10000 the sum of the probabilities of melanoma (``mel``), basal cell
carcinoma (``bcc``) and actinic keratosis / intraepithelial carcinoma (``akiec``).
``malignant_classes`` (a parameter of notebook 08, for every dataset) names them;
:func:`malignant_classes` keeps those the dataset has, and :func:`malignant_analysis`
chooses thresholds on validation and measures them on test exactly as the melanoma
analysis does (:func:`skinhelpers.evaluate.thresholds.positive_class_analysis`), on the summed
balanced scores.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from skinhelpers.evaluate import thresholds

log = logging.getLogger(__name__)

#: notebook 08's default: HAM10000's malignant (or pre-malignant) classes
DEFAULT = "mel,bcc,akiec"


def parse_classes(spec) -> list[str]:
    """``"mel,bcc,akiec"`` or a list -> class names (empty: off)."""
    if spec is None:
        return []
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    return [str(c).strip() for c in items if str(c).strip()]


def malignant_classes(spec, classes: Sequence[str], positive: str | None = None):
    """``(kept, note)``: the classes of ``spec`` this dataset has, in its class order, or
    ``[]`` with a note saying why there is no malignant operating point (off, none of them
    exists, they are the positive class alone, or they are every class)."""
    wanted = parse_classes(spec)
    if not wanted:
        return [], "malignant_classes is empty: no malignant-vs-benign operating point."
    kept = [c for c in classes if c in wanted]
    missing = [c for c in wanted if c not in classes]
    if not kept:
        return [], (
            f"none of malignant_classes ({', '.join(wanted)}) is a class of this dataset "
            f"({', '.join(classes)}): set malignant_classes to its malignant classes."
        )
    if len(kept) == len(classes):
        return [], "malignant_classes names every class: nothing would be benign."
    if kept == [positive]:
        return [], (
            f"the only malignant class here is the positive class {positive}: the melanoma "
            "operating points above are the malignant ones."
        )
    note = f" ({', '.join(missing)} not in this dataset)" if missing else ""
    return kept, f"malignant: {', '.join(kept)}{note}; benign: every other class."


def binary_scores(probs, indices: Sequence[int]) -> np.ndarray:
    """``[1 - s, s]`` with ``s`` the summed probability of ``indices``."""
    p = np.asarray(probs, dtype=np.float64)
    s = np.clip(p[:, list(indices)].sum(1), 0.0, 1.0)
    return np.stack([1 - s, s], 1)


def malignant_analysis(
    y_val,
    p_val,
    y_test,
    p_test,
    classes: Sequence[str],
    kept: Sequence[str],
    targets: Sequence[float] = (0.95, 0.90),
    n_bootstrap: int = 1000,
    seed: int = 0,
    groups=None,
) -> dict:
    """Operating points of malignant (``kept``) vs benign, thresholds chosen on validation:
    :func:`~skinhelpers.evaluate.thresholds.positive_class_analysis` on the summed scores,
    plus ``classes`` (the malignant ones) and ``score``."""
    idx = [list(classes).index(c) for c in kept]
    yv = np.isin(np.asarray(y_val), idx).astype(int)
    yt = np.isin(np.asarray(y_test), idx).astype(int)
    name = f"malignant ({', '.join(kept)})"
    out = thresholds.positive_class_analysis(
        yv,
        binary_scores(p_val, idx),
        yt,
        binary_scores(p_test, idx),
        1,
        name=name,
        targets=targets,
        n_bootstrap=n_bootstrap,
        seed=seed,
        groups=groups,
    )
    out.update(
        {
            "classes": list(kept),
            "class_indices": idx,
            "score": "the sum of the balanced scores of the malignant classes",
        }
    )
    out.pop("class_index", None)
    return out


__all__ = ["DEFAULT", "binary_scores", "malignant_analysis", "malignant_classes", "parse_classes"]
