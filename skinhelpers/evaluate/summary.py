"""What notebook 08 starts from and what it leaves: which checkpoints to evaluate, and the
``metrics.json`` record of the evaluation (read by the HTML report and by the
comparisons between runs)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from skinhelpers.evaluate import scores

CHECKPOINT_NAMES = ("best", "best_ema", "final_ema")


def resolve_checkpoints(run_dir, checkpoint: str = "best_ema") -> tuple[str, dict[str, Path]]:
    """The checkpoints notebook 08 evaluates, and the reported one.

    ``checkpoint``: ``best``, ``best_ema`` or ``final_ema`` (the EMA weights at the end of
    training; in ``<run_dir>/checkpoints/``), or a path to a
    ``.pt`` file (named by its stem, evaluated first). Returns ``(primary, {name: path})``
    for the files that exist; FileNotFoundError when the reported one does not.
    """
    run_dir = Path(run_dir)
    candidates = {n: run_dir / "checkpoints" / f"{n}.pt" for n in CHECKPOINT_NAMES}
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


def summary_sentences(
    clinical: dict | None, calibration: dict, tta: dict | None, lesion: dict | None
) -> list[str]:
    """The plain-language findings of the evaluation, for the report."""
    out = list(clinical["sentences"]) if clinical else []
    out.append(
        f"Calibration: temperature {calibration['temperature']:.2f} fitted on "
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
    unit = scores.bootstrap_unit(test_groups, len(test))
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
