"""What to do next, read from a run's ``metrics.json`` (the end of notebook 08 and of the
report index): each finding that calls for an action, then the steps every run shares."""

from __future__ import annotations

import logging
import math

log = logging.getLogger(__name__)


def _num(v) -> float | None:
    if isinstance(v, dict):
        v = v.get("value")
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def what_next(metrics: dict, external_done: bool = False) -> list[str]:
    """Plain-language next steps for the run whose ``metrics.json`` is ``metrics``
    (``external_done``: notebook 09 has scored it on another dataset)."""
    out: list[str] = []
    if metrics.get("synthetic"):
        out.append(
            "This run used the SYNTHETIC demo set: run the suite on real data "
            "(`./run_all.sh --dataset ham10000 --data-dir ../shared/data --profile cpu`) "
            "before reading anything into the numbers."
        )
    primary = metrics.get("primary")
    res = (metrics.get("models") or {}).get(primary) or {}
    ba = (res.get("headline") or {}).get("balanced_accuracy")
    if isinstance(ba, dict) and _num(ba) is not None:
        width = ba["ci_high"] - ba["ci_low"]
        if width > 0.08:
            out.append(
                f"The balanced accuracy's interval is {width:.2f} wide: the test split has "
                "too few lesions of the rare classes to pin it down. A larger test set (or "
                "pooling the lesion-grouped folds) narrows it; a longer run alone does not."
            )
    per_class = res.get("per_class") or {}
    recalls = {
        c: v.get("recall") for c, v in per_class.items() if _num(v.get("recall")) is not None
    }
    if recalls:
        worst = min(recalls, key=recalls.get)
        if recalls[worst] < 0.6:
            out.append(
                f"The weakest class is {worst} (recall {recalls[worst]:.2f}): look at its "
                "errors in the galleries, and at how many training images it has; more "
                "images of it, a higher resolution or a longer budget are the levers."
            )
    pos = metrics.get("positive_class") or {}
    for op in pos.get("operating_points") or []:
        got = _num((op.get("test") or {}).get(op.get("target")))
        if got is not None and got < op["target_value"] - 0.03:
            out.append(
                f"The threshold chosen on validation for {op['target']} "
                f"{op['target_value']:.0%} reaches {got:.0%} on test: a validation split with "
                "more melanomas would choose it more reliably; re-check the threshold on "
                "local data before any use."
            )
            break
    cal = metrics.get("calibration") or {}
    ece = _num((cal.get("before") or {}).get("ece"))
    if ece is not None and ece > 0.05:
        t = cal.get("temperature")
        out.append(
            f"The probabilities are off by {ece:.2f} on average (ECE): read them as scores, "
            + (f"or apply the temperature T = {t:.2f} fitted on validation." if t else ".")
        )
    if metrics.get("gradcam_skipped"):
        out.append(
            "Grad-CAM was skipped (feature map below 4x4): train at 128 px or more to see "
            "where the model looks."
        )
    les = metrics.get("gradcam_in_lesion") or {}
    ratio = _num(les.get("ratio_mean"))
    if ratio is not None and ratio < 1.2:
        out.append(
            f"Grad-CAM puts about as much attention off the lesion as on it (ratio "
            f"{ratio:.2f}): check for shortcuts (rulers, ink, dark corners) before trusting it."
        )
    if not metrics.get("ensemble"):
        out.append(
            "On a GPU, the gpu profile (224 px, five lesion-grouped fold models averaged) "
            "reached 0.812 test balanced accuracy on HAM10000 where the cpu recipe averages "
            "0.781 (benchmarks/RESULTS.md sections 12-13; not a paired comparison)."
        )
    if not external_done:
        out.append(
            "Test it on a source it never saw (notebook 09, `-p external_dataset isic9 -p "
            "external_data_dir DIR`): on HAM10000 alone the model does not carry over to other "
            "cameras and clinics, and an external set is the honest estimate."
        )
    out.append(
        "Before any clinical question: a prospective study on the intended population and "
        "devices, against dermatologists, with the operating point fixed in advance. This "
        "model is not a diagnostic device."
    )
    return out


__all__ = ["what_next"]
