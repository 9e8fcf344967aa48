"""Compare runs: ``python -m skinhelpers compare RUN_A RUN_B [RUN_C ...]``.

Prints each run's headline metrics (``metrics.json`` of notebook 08) side by side, then,
on the test images the runs share (``predictions_test.csv``, matched by ``relpath``), the
paired bootstrap difference of every run against the first with its 95% CI; writes
``compare.csv`` (into ``--out``, default the first run's folder). The bootstrap resamples
lesions (the ``group`` column of the predictions, or, for a CSV written before it had
one, the run's ``split.csv`` matched by ``relpath``); with no groups anywhere it resamples
images and says so (``bootstrap_unit`` in compare.csv). Refuses with a message
when the runs' classes differ, or when they share fewer test lesions (images, where no
lesions are known) than ``--min-shared`` (30): a paired difference on a handful of images
says nothing (two smoke runs with seeds 0 and 1 shared one test image and printed
differences of 0.0 (0.0-0.0)). It says when the runs' splits differ (``split.json``:
split seed, method, sizes, folds, held-out source, the smoke subsample, the test images
themselves) and how to share one (``-p split_seed``). A run may also be given as a
predictions CSV of that layout, e.g. a K-fold run's ``predictions_test_ensemble.csv``
(its headline metrics are then computed from the CSV).

:func:`log_hparams` writes a run's parameters and headline metrics to TensorBoard's
hparams view (``<run>/tb/``), so runs can be browsed together with
``tensorboard --logdir runs``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from skinhelpers.evaluate import bootstrap
from skinhelpers.files import PROJECT_ROOT, read_json, write_csv

log = logging.getLogger(__name__)


class CompareError(ValueError):
    """Runs that cannot be compared (say why)."""


#: fewest shared test lesions (images, where no lesions are known) for a paired comparison
MIN_SHARED = 30

#: the split.json keys that make two splits different, with how to say each
_SPLIT_KEYS = {
    "dataset": "dataset",
    "seed": "split seed",
    "test_method": "test split method",
    "val_size": "val_size",
    "test_size": "test_size",
    "n_folds": "n_folds",
    "holdout_source": "held-out source",
}


def split_info(folder: Path) -> dict | None:
    """A run folder's ``split.json`` (None when there is none)."""
    f = Path(folder) / "split.json"
    return read_json(f) if f.exists() else None


def split_differences(a: dict | None, b: dict | None) -> list[str]:
    """How two runs' splits (their ``split.json``) differ, one phrase per difference
    (empty: the same split, as far as split.json tells; unknown when one is missing)."""
    if a is None or b is None:
        return ["unknown (no split.json beside one of the predictions)"]
    out = []
    for k, what in _SPLIT_KEYS.items():
        if k in a and k in b and a.get(k) != b.get(k):
            out.append(f"{what} {a.get(k)!r} vs {b.get(k)!r}")
    sa, sb = a.get("subsample") or {}, b.get("subsample") or {}
    if (
        "subsample" in a
        and "subsample" in b
        and (sa.get("max_images"), sa.get("seed"))
        != (
            sb.get("max_images"),
            sb.get("seed"),
        )
    ):
        out.append(
            f"subsample (max_images, seed) {(sa.get('max_images'), sa.get('seed'))} vs "
            f"{(sb.get('max_images'), sb.get('seed'))}"
        )
    fa, fb = a.get("test_fingerprint"), b.get("test_fingerprint")
    if fa and fb and fa != fb:
        out.append("different test images")
    return out


def _run_path(run: str | os.PathLike) -> Path:
    """The predictions CSV of ``run``: a run folder's ``predictions_test.csv``, or a CSV."""
    p = Path(run)
    for cand in (p, PROJECT_ROOT / "runs" / p, PROJECT_ROOT / p):
        if cand.is_file() and cand.suffix.lower() == ".csv":
            return cand.resolve()
        if (cand / "predictions_test.csv").exists():
            return (cand / "predictions_test.csv").resolve()
    raise CompareError(
        f"run '{run}': no predictions_test.csv in {p} or runs/{p} (run notebook 08 in it "
        "first), and not a predictions CSV"
    )


def prediction_groups(pred: pd.DataFrame, folder: Path) -> tuple[pd.Series | None, str]:
    """Each predicted image's group (lesion), by ``relpath``, and where it came from: the
    predictions' own ``group`` column, else the run folder's ``split.csv``; ``(None,
    "none")`` when neither has them (the bootstrap then resamples images)."""
    key = pred["relpath"] if "relpath" in pred.columns else pred.index
    if "group" in pred.columns and pred["group"].notna().all():
        return pd.Series(pred["group"].astype(str).to_numpy(), index=key), "predictions"
    split = folder / "split.csv"
    if split.exists() and "relpath" in pred.columns:
        s = pd.read_csv(split, dtype=str)
        if {"relpath", "group"} <= set(s.columns):
            g = s.drop_duplicates("relpath").set_index("relpath")["group"]
            if pred["relpath"].isin(g.index).all():
                return g.reindex(pred["relpath"]), "split.csv"
    return None, "none"


def load_run(run: str | os.PathLike) -> dict:
    """A run's folder, name, classes, test predictions, their groups (lesions; see
    :func:`prediction_groups`) and (if any) metrics.json; for a predictions CSV other than a
    run's ``predictions_test.csv``, no metrics (its headline is computed from the CSV) and
    the name ``<run>/<file stem>``."""
    csv = _run_path(run)
    path, own = csv.parent, csv.name == "predictions_test.csv"
    metrics = read_json(path / "metrics.json") if (path / "metrics.json").exists() else {}
    pred = pd.read_csv(csv)
    missing = [c for c in ("relpath", "label") if c not in pred.columns]
    if missing or not any(c.startswith("p_") for c in pred.columns):
        raise CompareError(f"{csv} lacks {missing or 'p_<class> columns'}: not a predictions CSV")
    classes = metrics.get("classes") or [c[2:] for c in pred.columns if c.startswith("p_")]
    groups, source = prediction_groups(pred, path)
    return {
        "path": path if own else csv,
        "name": path.name if own else f"{path.name}/{csv.stem}",
        "classes": list(classes),
        "pred": pred,
        "groups": groups,
        "groups_source": source,
        "metrics": metrics if own else {"classes": metrics.get("classes")},
    }


def headline(run: dict) -> dict:
    """``{metric: value}`` of the reported model (from metrics.json, else recomputed)."""
    m = run["metrics"]
    if m.get("models") and m.get("primary") in m["models"]:
        out = {k: v["value"] for k, v in m["models"][m["primary"]]["headline"].items()}
    else:
        y, p = _arrays(run["pred"], run["classes"])
        out = {k: float(f(y, p)) for k, f in bootstrap.HEADLINE.items()}
    pc = m.get("positive_class") or {}
    if "auc" in pc:
        out["melanoma_auc"] = pc["auc"]["value"]
    return out


def _arrays(pred: pd.DataFrame, classes) -> tuple[np.ndarray, np.ndarray]:
    y = pred["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    return y, pred[[f"p_{c}" for c in classes]].to_numpy(np.float64)


def _folder(run: dict) -> Path:
    """The folder a run's predictions came from (a predictions CSV: its folder)."""
    p = Path(run["path"])
    return p.parent if p.is_file() else p


def _shared_groups(base: dict, other: dict, shared: pd.Index) -> np.ndarray | None:
    """The lesions of the shared images: the first run's, else the other's; None if
    neither run knows them."""
    for r in (base, other):
        if r.get("groups") is not None:
            g = r["groups"]
            g = g[~g.index.duplicated()]
            return g.reindex(shared).astype(str).to_numpy()
    return None


def compare_runs(
    runs: list[str | os.PathLike],
    n_bootstrap: int = 1000,
    seed: int = 0,
    min_shared: int = MIN_SHARED,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(side_by_side, differences)``: headline metrics per run, and the paired bootstrap
    difference of each later run minus the first on their shared test images (columns
    ``run_a, run_b, n_shared, n_groups, bootstrap_unit, metric, a, b, diff, ci_low,
    ci_high, p_better, split``). The bootstrap resamples the shared images' lesions
    (groups); when neither run has them, images (``bootstrap_unit`` "image").

    Refuses (:class:`CompareError`, naming the numbers) when a pair shares fewer than
    ``min_shared`` test lesions (images, when no lesions are known). ``split`` says how
    the pair's splits differ ("same" when split.json shows no difference);
    ``differences.attrs["splits"]`` holds the phrases per later run."""
    if len(runs) < 2:
        raise CompareError("compare needs at least two runs")
    loaded = [load_run(r) for r in runs]
    names = [r["name"] for r in loaded]
    if len(set(names)) < len(names):
        names = [str(r["path"]) for r in loaded]
    base = loaded[0]
    for r in loaded[1:]:
        if r["classes"] != base["classes"]:
            raise CompareError(
                f"runs {base['path']} and {r['path']} have different classes: "
                f"{base['classes']} vs {r['classes']}"
            )
    side = pd.DataFrame({n: headline(r) for n, r in zip(names, loaded)})
    diffs, splits = [], {}
    base_split = split_info(_folder(base))
    for name, r in zip(names[1:], loaded[1:]):
        a = base["pred"].drop_duplicates("relpath").set_index("relpath")
        b = r["pred"].drop_duplicates("relpath").set_index("relpath")
        shared = a.index.intersection(b.index)
        differ = split_differences(base_split, split_info(_folder(r)))
        splits[name] = differ
        why = (
            f" Their splits differ: {'; '.join(differ)}. Runs that differ only in the "
            "training seed share their test images when they share the split: give both "
            "the same -p split_seed."
            if differ
            else ""
        )
        if len(shared) == 0:
            raise CompareError(
                f"runs {base['path']} and {r['path']} share no test image "
                "(predictions_test.csv relpaths): a paired comparison needs "
                "the same images." + why
            )
        groups = _shared_groups(base, r, shared)
        n_units = len(set(groups)) if groups is not None else len(shared)
        if n_units < min_shared:
            unit = "lesion(s)" if groups is not None else "image(s) (no lesions known)"
            raise CompareError(
                f"runs {names[0]} and {name} share {len(shared)} test image(s)"
                + (f" of {len(set(groups))} lesion(s)" if groups is not None else "")
                + f" (of {len(a)} and {len(b)} test images): fewer than the {min_shared} "
                f"shared {unit} a paired comparison needs (--min-shared); differences on "
                "so few say nothing." + why
            )
        a, b = a.loc[shared], b.loc[shared]
        if (a["label"] != b["label"]).any():
            raise CompareError(
                f"runs {names[0]} and {name} label "
                f"{int((a['label'] != b['label']).sum())} shared images "
                "differently"
            )
        ya, pa = _arrays(a, base["classes"])
        _, pb = _arrays(b, base["classes"])
        t = bootstrap.paired_bootstrap_diff(
            ya, pa, pb, n_bootstrap=n_bootstrap, seed=seed, groups=groups
        )
        t = t.reset_index().assign(
            run_a=names[0],
            run_b=name,
            n_shared=len(shared),
            n_groups=t.attrs["n_units"] if groups is not None else pd.NA,
            bootstrap_unit=t.attrs["bootstrap_unit"],
            split="; ".join(differ) if differ else "same",
        )
        diffs.append(t)
    diff = pd.concat(diffs, ignore_index=True)[
        [
            "run_a",
            "run_b",
            "n_shared",
            "n_groups",
            "bootstrap_unit",
            "metric",
            "a",
            "b",
            "diff",
            "ci_low",
            "ci_high",
            "p_better",
            "split",
        ]
    ]
    diff.attrs["splits"] = splits
    return side, diff


def log_hparams(
    run_dir: str | os.PathLike, params: dict | None = None, metrics: dict | None = None
) -> Path:
    """Write the run's parameters and headline metrics to TensorBoard's hparams view
    (``<run_dir>/tb/``). Defaults: the parameters of ``run.json`` (else the notebooks'
    params files) and the reported model's headline of ``metrics.json``."""
    from torch.utils.tensorboard import SummaryWriter  # local: slow to import: only when logging

    run_dir = Path(run_dir)
    if params is None:
        params = {}
        if (run_dir / "run.json").exists():
            params = dict(read_json(run_dir / "run.json").get("parameters", {}))
        for f in sorted((run_dir / "params").glob("*.json")):
            for k, v in read_json(f).get("params", {}).items():
                params.setdefault(k, v)
    if metrics is None:
        metrics = headline(
            {"metrics": read_json(run_dir / "metrics.json"), "pred": None, "classes": []}
        )
    hp = {
        k: (v if isinstance(v, (int, float, str, bool)) else str(v))
        for k, v in params.items()
        if v is not None
    }
    hm = {
        f"hparam/{k}": float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and np.isfinite(v)
    }
    with SummaryWriter(log_dir=str(run_dir / "tb")) as w:
        w.add_hparams(hp, hm, run_name="hparams")
    return run_dir / "tb"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="skinhelpers compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("runs", nargs="+", help="run folders (or names under runs/)")
    ap.add_argument("--n-bootstrap", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--min-shared",
        type=int,
        default=MIN_SHARED,
        help=f"fewest shared test lesions (images, where no lesions are known) to compare "
        f"(default {MIN_SHARED})",
    )
    ap.add_argument("--out", default=None, help="folder for compare.csv (default: first run)")
    a = ap.parse_args(argv)
    try:
        side, diff = compare_runs(a.runs, a.n_bootstrap, a.seed, a.min_shared)
    except CompareError as e:
        print(f"compare: error: {e}", file=sys.stderr)
        return 2
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print("Headline metrics (test):")
        print(side.round(4).to_string())
        by_group = (diff["bootstrap_unit"] == "group").all()
        print(
            f"\nPaired bootstrap, later run minus {diff['run_a'].iloc[0]} on the shared "
            "test images, resampling "
            + ("their lesions (groups)" if by_group else "images")
            + " (95% CI):"
        )
        if not by_group:
            print(
                "Note: no lesion groups for some of these runs (no 'group' column in the "
                "predictions and no split.csv beside them): images were resampled, so "
                "those intervals are too narrow where a lesion has several images."
            )
        for name, differ in diff.attrs["splits"].items():
            if differ:
                print(
                    f"Note: the splits of {diff['run_a'].iloc[0]} and {name} differ "
                    f"({'; '.join(differ)}): the comparison uses only the "
                    f"{int(diff.loc[diff['run_b'] == name, 'n_shared'].iloc[0])} test "
                    "images they share."
                )
        print(diff.drop(columns="split").round(4).to_string(index=False))
    out = Path(a.out) if a.out else _run_path(a.runs[0]).parent
    path = write_csv(out / "compare.csv", diff)
    print(f"\nwrote {path}")
    return 0


__all__ = [
    "CompareError",
    "MIN_SHARED",
    "compare_runs",
    "headline",
    "load_run",
    "log_hparams",
    "main",
    "prediction_groups",
    "split_differences",
    "split_info",
]
