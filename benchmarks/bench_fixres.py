"""Benchmark 10: test resolution (the FixRes effect) for a trained run.

A network trained at ``image_size`` with random-scale augmentation sees objects larger at
training than at test time; testing at a somewhat higher resolution can undo that
(Touvron et al., arXiv 1906.06423). This scores the run's checkpoint on its validation
and test splits with the image cache built at each ``--sizes`` value (same preprocessing,
same resize), and reports the paired change against the training size (a paired
bootstrap of the test lesions): the choice is read
off *validation*; test shows whether it holds.

    .venv/bin/python benchmarks/bench_fixres.py --run runs/ham-cpu-v3 --sizes 160,176,200
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import run_model, save
from sklearn.metrics import balanced_accuracy_score

from skinhelpers.data import cache, manifest
from skinhelpers.evaluate import bootstrap, tta
from skinhelpers.model.metrics import macro_auc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True, help="a run folder with checkpoints and a split")
    ap.add_argument("--checkpoint", default="best_ema")
    ap.add_argument("--sizes", default="", help="comma-separated test sizes (px)")
    ap.add_argument("--views", type=int, default=1, help="TTA views")
    ap.add_argument("--n-bootstrap", type=int, default=1000)
    a = ap.parse_args()

    run = Path(a.run)
    df, ckpt, model, info = run_model(run, a.checkpoint)
    splits = {s: df[df["split"] == s].reset_index(drop=True) for s in ("val", "test")}
    if not isinstance(info["image_size"], int):
        raise SystemExit(
            f"bench_fixres compares square test sizes; this run's images are "
            f"{info['image_size']} (height, width)"
        )
    train_size = int(info["image_size"])
    sizes = sorted({train_size, *(int(s) for s in a.sizes.split(",") if s.strip())})
    man = manifest.read_manifest(run)
    preds, rows = {}, []
    for size in sizes:
        c = cache.build_cache(man, size, info["preprocess"], info["resize_mode"])
        t0 = time.perf_counter()
        for s, d in splits.items():
            preds[size, s] = tta.predict_frame(
                model, c, d, info["mean"], info["std"], a.views, 64, 0, desc=f"{size} px {s}"
            )
        secs = time.perf_counter() - t0
        row = {"size": size, "seconds": secs}
        for s in splits:
            p = preds[size, s]
            row[f"{s}_balanced_accuracy"] = balanced_accuracy_score(p.labels, p.probs.argmax(1))
            row[f"{s}_macro_auc"] = macro_auc(p.labels, p.probs)
        rows.append(row)
        print(
            f"{size} px: val balanced accuracy {row['val_balanced_accuracy']:.4f}, "
            f"test {row['test_balanced_accuracy']:.4f}, test macro AUC "
            f"{row['test_macro_auc']:.4f} ({secs:.0f} s)",
            flush=True,
        )
    best = max(rows, key=lambda r: (round(r["val_balanced_accuracy"], 10), -r["size"]))["size"]
    paired = {}
    for size in sizes:
        if size == train_size:
            continue
        t = preds[train_size, "test"]
        d = bootstrap.paired_bootstrap_diff(
            t.labels,
            t.probs,
            preds[size, "test"].probs,
            n_bootstrap=a.n_bootstrap,
            desc=None,
            groups=splits["test"]["group"].to_numpy(),  # resample the test lesions
        )
        paired[size] = d.to_dict(orient="index")
        b = d.loc["balanced_accuracy"]
        print(
            f"test at {size} px minus {train_size} px: balanced accuracy {b['diff']:+.4f} "
            f"(95% CI {b['ci_low']:+.4f} to {b['ci_high']:+.4f})"
        )
    print(f"chosen on validation: {best} px (trained at {train_size} px)")
    save(
        "fixres",
        {
            "run": str(run),
            "checkpoint": str(ckpt),
            "train_size": train_size,
            "views": a.views,
            "rows": rows,
            "chosen_on_validation": best,
            "bootstrap_unit": "group",
            "paired_test_vs_train_size": paired,
        },
    )


if __name__ == "__main__":
    main()
