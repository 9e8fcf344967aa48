"""benchmarks/bench_ood.py compares the out-of-distribution scores of a run's model (here a
small CNN trained for a few steps on the synthetic demo set) and writes one row per score."""

from __future__ import annotations

import json
import os

from helpers_script import run_script
from helpers_train import demo_run_folder
from short_checkpoint import train_short_checkpoint

from skinhelpers.files import PROJECT_ROOT
from skinhelpers.split import store


def test_bench_ood_scores_side_by_side(tmp_path, demo_manifest):
    run = demo_run_folder(demo_manifest, tmp_path / "run")
    split = store.read_split(run)
    train = split[split["split"] == "train"].head(60).reset_index(drop=True)
    train.attrs = split.attrs
    train_short_checkpoint(train, run / "checkpoints" / "best_ema.pt", size=32, steps=5)
    env = {**os.environ, "SKINLAB_BENCH_RESULTS": str(tmp_path / "results"),
           "SKINHELPERS_PROGRESS": "off"}  # fmt: skip
    p = run_script(PROJECT_ROOT / "benchmarks" / "bench_ood.py", str(run),
                   "--train-images", "80", "--k", "3", "--label", "t",
                   env=env, cwd=PROJECT_ROOT)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    d = json.loads((tmp_path / "results" / "ood_t.json").read_text())
    rows = {r["score"]: r for r in d["rows"]}
    assert set(rows) == {"mahalanobis", "mahalanobis_l2", "energy", "knn", "msp"}
    assert d["n_train"] == 80 and d["n_photos"] > 20
    for r in rows.values():
        assert 0 <= r["auroc_val_vs_photos"] <= 1 and 0 <= r["photos_flagged"] <= 1
        assert len(r["photos_scored_lowest"]) == 5
