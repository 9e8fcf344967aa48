"""Benchmark 12: the bootstrap of notebook 08's headline metrics, one resample at a time
(scikit-learn on each resample written out) against all resamples at once
(``bootstrap.headline_weighted``), both resampling the test split's lesions (groups).

Notebook 08 bootstraps the headline metrics of every weight set it scores and of every
paired comparison: at 1,000 resamples of the 1,430 HAM10000 test images (1,066 lesions),
the loop took about 15 s per model (30 s per paired comparison), minutes of the cpu
profile's hour. A resample draws whole lesions, class by class, so its size varies; the
vectorised form scores it as integer multiplicities over the images. This times both on a
run's test predictions (``predictions_test.csv``, its lesions from the CSV's ``group``
column or the run's ``split.csv``) or, without a run, on synthetic probabilities of the
same shape with lesions of one to three images, checks they agree, and times the image
bootstrap (no groups) beside them.

    .venv/bin/python benchmarks/bench_bootstrap.py --run runs/ham-cpu-v6-final-seed2
"""

from __future__ import annotations

import argparse
import functools
import time

import numpy as np
from common import save, test_predictions, unit_note

from skinhelpers.evaluate import bootstrap, calibration


def synthetic(n: int, classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` images in lesions of 1-3 images (mean ~1.34, HAM10000's test split), one
    label per lesion, and probabilities of a fair model."""
    rng = np.random.default_rng(0)
    sizes = rng.choice([1, 2, 3], n, p=[0.75, 0.17, 0.08])
    groups = np.repeat(np.arange(n), sizes)[:n]
    y = rng.integers(0, classes, n)[groups]
    logits = rng.normal(0, 1, (n, classes)) + 2.0 * np.eye(classes)[y]
    return y, calibration.softmax(logits), groups


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default=None, help="a run folder where notebook 08 has run")
    ap.add_argument("--n-bootstrap", type=int, default=1000)
    ap.add_argument("--n", type=int, default=1430, help="synthetic images (without --run)")
    ap.add_argument("--classes", type=int, default=7, help="synthetic classes (without --run)")
    a = ap.parse_args()
    if a.run is None:
        y, probs, groups = synthetic(a.n, a.classes)
        source = f"synthetic ({a.n} x {a.classes})"
        print(unit_note(groups, "synthetic lesions"))
    else:
        _, y, probs, _, groups, where = test_predictions(a.run)
        source = f"{a.run}/predictions_test.csv"
        print(unit_note(groups, where))
    # wrapped: bootstrap_ci vectorises HEADLINE's own functions, and scores others one
    # resample at a time
    loop_fns = {k: functools.partial(f) for k, f in bootstrap.HEADLINE.items()}
    t0 = time.perf_counter()
    slow = bootstrap.bootstrap_ci(y, probs, loop_fns, n_bootstrap=a.n_bootstrap, groups=groups)
    t_loop = time.perf_counter() - t0
    t0 = time.perf_counter()
    fast = bootstrap.bootstrap_ci(y, probs, n_bootstrap=a.n_bootstrap, groups=groups)
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    by_image = bootstrap.bootstrap_ci(y, probs, n_bootstrap=a.n_bootstrap)
    t_image = time.perf_counter() - t0
    cols = ["value", "ci_low", "ci_high"]
    diff = float((fast[cols] - slow[cols]).abs().to_numpy().max())
    print(fast.round(4).to_string())
    print(
        f"{a.n_bootstrap} resamples of {len(y)} images ({fast.attrs['n_units']} "
        f"{fast.attrs['bootstrap_unit']}s): loop {t_loop:.2f} s, vectorised {t_fast:.2f} s "
        f"({t_loop / t_fast:.0f}x; resampling images instead: {t_image:.2f} s); largest "
        f"difference {diff:.1e}"
    )
    if diff > 1e-9:
        raise SystemExit(f"the vectorised bootstrap differs from the loop by {diff:.1e}")
    save(
        "bootstrap",
        {
            "source": source,
            "images": int(len(y)),
            "classes": int(probs.shape[1]),
            "bootstrap_unit": fast.attrs["bootstrap_unit"],
            "groups": fast.attrs["n_units"],
            "n_bootstrap": a.n_bootstrap,
            "loop_s": t_loop,
            "vectorised_s": t_fast,
            "image_vectorised_s": t_image,
            "speedup": t_loop / t_fast,
            "max_abs_difference": diff,
            "width_group_over_image": {
                k: float(
                    (fast.loc[k, "ci_high"] - fast.loc[k, "ci_low"])
                    / (by_image.loc[k, "ci_high"] - by_image.loc[k, "ci_low"])
                )
                for k in fast.index
            },
        },
    )


if __name__ == "__main__":
    main()
