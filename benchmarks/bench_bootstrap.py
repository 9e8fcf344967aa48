"""Benchmark 12: the bootstrap of notebook 08's headline metrics, one resample at a time
(scikit-learn on each) against all resamples at once (``scores.headline_resampled``).

Notebook 08 bootstraps the headline metrics of every weight set it scores and of every
paired comparison: at 1,000 resamples of the 1,430 HAM10000 test images, the loop took
about 15 s per model (30 s per paired comparison), minutes of the cpu profile's hour.
This times both on a run's test predictions (``predictions_test.csv``) or, without a
run, on synthetic probabilities of the same shape, and checks they agree.

    .venv/bin/python benchmarks/bench_bootstrap.py --run runs/ham-cpu-v6-final-seed2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import save

from skinhelpers.evaluate import scores


def predictions(run: str | None, n: int, classes: int) -> tuple[np.ndarray, np.ndarray, str]:
    if run is None:
        rng = np.random.default_rng(0)
        y = rng.integers(0, classes, n)
        logits = rng.normal(0, 1, (n, classes)) + 2.0 * np.eye(classes)[y]
        return y, scores.softmax(logits), f"synthetic ({n} x {classes})"
    path = Path(run) / "predictions_test.csv"
    if not path.exists():
        raise SystemExit(f"{path} not found: run notebook 08 in {run} first")
    df = pd.read_csv(path)
    cols = [c for c in df.columns if c.startswith("p_")]
    names = [c[2:] for c in cols]
    unknown = sorted(set(df["label"]) - set(names))
    if unknown:
        raise SystemExit(f"{path}: labels {unknown} have no probability column")
    y = df["label"].map({c: i for i, c in enumerate(names)}).to_numpy()
    return y, df[cols].to_numpy(np.float64), str(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default=None, help="a run folder where notebook 08 has run")
    ap.add_argument("--n-bootstrap", type=int, default=1000)
    ap.add_argument("--n", type=int, default=1430, help="synthetic images (without --run)")
    ap.add_argument("--classes", type=int, default=7, help="synthetic classes (without --run)")
    a = ap.parse_args()
    y, probs, source = predictions(a.run, a.n, a.classes)
    loop_fns = dict(scores.HEADLINE)  # a copy: bootstrap_ci scores it one resample at a time
    t0 = time.perf_counter()
    slow = scores.bootstrap_ci(y, probs, loop_fns, n_bootstrap=a.n_bootstrap)
    t_loop = time.perf_counter() - t0
    t0 = time.perf_counter()
    fast = scores.bootstrap_ci(y, probs, n_bootstrap=a.n_bootstrap)
    t_fast = time.perf_counter() - t0
    diff = float(
        (fast[["value", "ci_low", "ci_high"]] - slow[["value", "ci_low", "ci_high"]])
        .abs()
        .to_numpy()
        .max()
    )
    print(fast.round(4).to_string())
    print(
        f"{a.n_bootstrap} resamples of {len(y)} images: loop {t_loop:.2f} s, vectorised "
        f"{t_fast:.2f} s ({t_loop / t_fast:.0f}x); largest difference {diff:.1e}"
    )
    if diff > 1e-9:
        raise SystemExit(f"the vectorised bootstrap differs from the loop by {diff:.1e}")
    save(
        "bootstrap",
        {
            "source": source,
            "images": int(len(y)),
            "classes": int(probs.shape[1]),
            "n_bootstrap": a.n_bootstrap,
            "loop_s": t_loop,
            "vectorised_s": t_fast,
            "speedup": t_loop / t_fast,
            "max_abs_difference": diff,
        },
    )


if __name__ == "__main__":
    main()
