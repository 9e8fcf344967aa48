"""What notebook 08 starts from and what it leaves: which checkpoints to evaluate, and the
``metrics.json`` record of the evaluation (read by the HTML report and by the
comparisons between runs)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from skinhelpers.evaluate import bootstrap
from skinhelpers.model.metrics import classification_metrics

CHECKPOINT_NAMES = ("best", "best_ema", "final_ema")


#: the ``checkpoint`` value that lets validation choose the reported checkpoint
BY_VALIDATION = "validation"
#: the metric validation chooses by, and the order that breaks a tie
SELECTION_METRIC = "balanced_accuracy"
NOT_FOR_CHOOSING = (
    "The reported checkpoint was fixed before the test split was scored (by the "
    "`checkpoint` parameter, or chosen on validation). The other checkpoints' test numbers "
    "are shown for the record only: picking the reported model after seeing them would be "
    "choosing on test, and the chosen number would then be optimistic."
)

log = logging.getLogger(__name__)


def resolve_checkpoints(
    run_dir, checkpoint: str = "best_ema"
) -> tuple[str | None, dict[str, Path]]:
    """The checkpoints notebook 08 evaluates, and the reported one.

    ``checkpoint``: ``best``, ``best_ema`` or ``final_ema`` (the EMA weights at the end of
    training; in ``<run_dir>/checkpoints/``), ``"validation"`` (the reported one is chosen
    afterwards on validation alone, :func:`choose_checkpoint`: primary ``None``), or a path
    to a ``.pt`` file (named by its stem, evaluated first). Returns
    ``(primary, {name: path})`` for the files that exist; FileNotFoundError when the
    reported one (for ``"validation"``: every one) does not.
    """
    run_dir = Path(run_dir)
    candidates = {n: run_dir / "checkpoints" / f"{n}.pt" for n in CHECKPOINT_NAMES}
    if checkpoint == BY_VALIDATION:
        found = {name: p for name, p in candidates.items() if p.exists()}
        if not found:
            raise FileNotFoundError(
                f"no checkpoint in {run_dir / 'checkpoints'} ({', '.join(CHECKPOINT_NAMES)}): "
                "run notebook 07 in this run folder first"
            )
        return None, found
    if checkpoint in candidates:
        primary = checkpoint
    else:  # a path given by the reader
        primary = Path(checkpoint).stem
        candidates = {primary: Path(checkpoint), **candidates}
    found = {name: p for name, p in candidates.items() if p.exists()}
    if primary not in found:
        raise FileNotFoundError(
            f"checkpoint '{checkpoint}' ({candidates[primary]}) does not "
            "exist: run notebook 07 in this run folder first, or pass an "
            "existing checkpoint"
        )
    return primary, found


def choose_checkpoint(
    primary: str | None, checkpoint: str, y_val, val_probs: dict[str, object]
) -> tuple[str, dict]:
    """The reported checkpoint, fixed before test is scored, and the record of how.

    ``primary`` from :func:`resolve_checkpoints` (None when ``checkpoint`` is
    ``"validation"``: the checkpoint with the highest validation balanced accuracy of
    ``val_probs``, ``{name: validation probabilities}``; a tie goes to the earlier name in
    ``val_probs``' order). Returns ``(primary, record)``; the record (``rule``,
    ``checkpoint``, ``validation``: every candidate's validation score, ``sentence``) goes
    to ``metrics.json["selection"]``.
    """
    y = np.asarray(y_val)
    val = {
        n: float(classification_metrics(y, np.asarray(p))[SELECTION_METRIC])
        for n, p in val_probs.items()
    }
    if primary is None:
        if not val:
            raise ValueError("no validation predictions to choose a checkpoint from")
        best = max(val.values())
        primary = next(n for n, v in val.items() if v == best)
        rule = BY_VALIDATION
        sentence = (
            f"Reported checkpoint: **{primary}**, chosen on validation (the highest "
            f"validation balanced accuracy, {best:.3f}, among "
            + ", ".join(f"{n} {v:.3f}" for n, v in val.items())
            + ") before the test split was scored."
        )
    else:
        rule = "parameter"
        sentence = (
            f"Reported checkpoint: **{primary}**, fixed by the `checkpoint` parameter "
            f"(`{checkpoint}`) before the test split was scored"
            + (f" (validation balanced accuracy {val[primary]:.3f})." if primary in val else ".")
        )
    return primary, {
        "rule": rule,
        "checkpoint": primary,
        "metric": SELECTION_METRIC,
        "validation": val,
        "sentence": sentence,
        "not_for_choosing": NOT_FOR_CHOOSING,
    }


def summary_sentences(
    clinical: dict | None, calibration: dict, tta: dict | None, lesion: dict | None
) -> list[str]:
    """The plain-language findings of the evaluation, for the report."""
    out = list(clinical["sentences"]) if clinical else []
    prior = (calibration.get("probabilities") or {}).get("prior")
    which = {
        "data": " of the probabilities under the training data's class mix",
        "equal": " of the probabilities under equal class priors",
    }.get(prior, "")
    out.append(
        f"Calibration{which}: temperature {calibration['temperature']:.2f} fitted on "
        f"validation changes the test ECE from {calibration['before']['ece']:.3f} to "
        f"{calibration['after']['ece']:.3f}."
    )
    if tta:
        d = tta["diff"]["balanced_accuracy"]
        out.append(
            f"TTA ({len(tta['views'])} views) changes test balanced accuracy by "
            f"{d['diff']:+.3f} (95% CI {d['ci_low']:+.3f} to {d['ci_high']:+.3f})."
        )
    if lesion:
        out.append(
            f"Grad-CAM: {lesion['cam_inside_mean']:.0%} of the attention falls on the "
            f"lesion, which covers {lesion['lesion_area_mean']:.0%} of the image."
        )
    return out


def metrics_record(
    split_df: pd.DataFrame,
    primary: str,
    views: list,
    n_bootstrap: int,
    checkpoints: dict[str, Path],
    infos: dict[str, dict],
    results: dict[str, dict],
    clinical: dict | None,
    calibration: dict,
    tta: dict | None,
    lesion: dict | None,
    timings: dict[tuple, float],
    test_groups=None,
) -> dict:
    """The ``metrics.json`` record of notebook 08.

    ``split_df``: the run's split (its attrs name the dataset and classes); ``infos`` and
    ``results``: per evaluated model, the checkpoint info and the output of
    :func:`skinhelpers.evaluate.scores.evaluate_predictions`; ``timings``: seconds per
    ``(model, split, views)``; ``test_groups``: the test images' groups (lesions) the
    bootstrap resampled, ``None`` if it resampled images. Records ``bootstrap_unit``
    ("group" or "image") and ``n_test_groups`` (lesions in the test split).
    """
    test = split_df[split_df["split"] == "test"]
    unit = bootstrap.bootstrap_unit(test_groups, len(test))
    return {
        "dataset": split_df.attrs["dataset"],
        "synthetic": bool(split_df.attrs["synthetic"]),
        "classes": list(split_df.attrs["classes"]),
        "n_test": int(len(test)),
        "n_val": int((split_df["split"] == "val").sum()),
        "n_test_groups": int(test["group"].nunique()) if "group" in test else None,
        "n_bootstrap": int(n_bootstrap),
        "bootstrap_unit": unit["bootstrap_unit"],
        "n_bootstrap_units": unit["n_units"],
        "primary": primary,
        "tta_views": views,
        "models": {
            n: {
                "checkpoint": str(checkpoints[n]),
                "arch": infos[n]["arch"],
                "epoch": infos[n]["epoch"],
                **results[n],
            }
            for n in results
        },
        "positive_class": clinical,
        "calibration": calibration,
        "tta": tta,
        "gradcam_in_lesion": lesion,
        "sentences": summary_sentences(clinical, calibration, tta, lesion),
        "timings_s": {f"{n}/{s}/{v}": round(t, 2) for (n, s, v), t in timings.items()},
    }
