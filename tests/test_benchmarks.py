"""Every benchmark script runs once with a tiny budget (so they don't rot) and writes a
result file with sensible numbers. The figures themselves are measured by hand, see
benchmarks/RESULTS.md; no timing is asserted here."""

from __future__ import annotations

import json
import os

import pytest
from helpers_script import run_script
from helpers_train import demo_run_folder

from skinhelpers.files import PROJECT_ROOT
from skinhelpers.run.profiles import PROFILES

BENCH = PROJECT_ROOT / "benchmarks"
pytestmark = [pytest.mark.slow]
PRECISION_TINY = ("--steps", "1", "--repeats", "1", "--size", "32", "--batch", "4")


def _bench(tmp_path, script, *args, ok=True):
    """Run a benchmark script (as ``python script ARGS`` would, in this process: its imports
    are loaded already, tests/helpers_script.py); it must succeed (``ok``) or refuse with a
    non-zero exit."""
    env = {
        **os.environ,
        "SKINLAB_BENCH_RESULTS": str(tmp_path / "results"),
        "SKINHELPERS_PROGRESS": "plain",
        "HF_HUB_OFFLINE": "1",
    }
    proc = run_script(BENCH / script, *args, env=env, cwd=PROJECT_ROOT)
    assert (proc.returncode == 0) == ok, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def _result(tmp_path, name):
    data = json.loads((tmp_path / "results" / f"{name}.json").read_text())
    assert data["machine"]["cores"] >= 1 and data["command"]
    return data


@pytest.mark.realdata
def test_bench_cache_tiny(tmp_path, ham_dir):
    _bench(
        tmp_path,
        "bench_cache.py",
        "--n",
        "40",
        "--repeats",
        "1",
        "--sizes",
        "64",
        "--preprocess",
        "none,clahe",
        "--workers",
        "1",
    )
    rows = _result(tmp_path, "cache")["rows"]
    assert [(r["size"], r["preprocess"]) for r in rows] == [(64, "none"), (64, "clahe")]
    assert all(r["images"] == 40 and r["images_per_s"]["median"] > 0 for r in rows)


@pytest.mark.realdata
def test_bench_train_tiny(tmp_path, ham_dir):
    _bench(
        tmp_path,
        "bench_train.py",
        "--steps",
        "2",
        "--repeats",
        "1",
        "--workers",
        "0,device",
        "--no-compile",
        "--image-size",
        "64",
    )
    d = _result(tmp_path, "train_overhead")
    bare, real, batched = d["rows"]
    assert bare["loop"] == "bare" and real["loop"] == "trainer" and real["workers"] == 0
    assert batched["loop"] == "trainer" and batched["workers"] == "device"
    # the ratios are measurements (benchmarks/RESULTS.md), not claims a test can make on a
    # shared machine: only that they were measured
    assert bare["median"] > 0 and real["ratio"] > 0 and batched["ratio"] > 0
    cpu = PROFILES["cpu"]  # the script measures the cpu profile's recipe by default
    assert d["arch"] == cpu["arch"] and d["image_size"] == 64 and not d["compile"]
    assert d["batch_sizes"] == [cpu.get("batch_size", 32)]


@pytest.mark.realdata
def test_bench_infer_tiny(tmp_path, ham_dir):
    _bench(
        tmp_path,
        "bench_infer.py",
        "--n",
        "16",
        "--batch-size",
        "8",
        "--repeats",
        "1",
        "--views",
        "1,2",
        "--no-compile",
    )
    rows = _result(tmp_path, "inference")["rows"]
    assert [(r["channels_last"], r["views"]) for r in rows] == [
        (False, 1),
        (False, 2),
        (True, 1),
        (True, 2),
    ]
    assert all(r["median"] > 0 for r in rows)


def test_bench_seeds_and_wall_tiny(tmp_path, demo_dir, demo_manifest):
    src = demo_run_folder(demo_manifest, tmp_path / "src")
    _bench(
        tmp_path,
        "bench_seeds.py",
        "--source",
        str(src),
        "--dataset",
        "demo",
        "--data-dir",
        str(demo_dir),
        "--profile",
        "smoke",
        "--seeds",
        "0,1",
        "--only",
        "07",
        "--out",
        str(tmp_path / "runs"),
        "--label",
        "ci",
        "-p",
        "epochs",
        "1",
        "-p",
        "image_size",
        "32",
        "-p",
        "batch_size",
        "16",
        "-p",
        "freeze_epochs",
        "0",
        "-p",
        "arch",
        "small_cnn",
    )
    d = _result(tmp_path, "seeds_ci")
    assert [r["seed"] for r in d["rows"]] == [0, 1]
    assert all(r["epochs_run"] == 1 for r in d["rows"])
    assert "best_val_balanced_accuracy" in d["summary"]

    # a trained run folder: test resolution and bfloat16 inference scored on it
    seed_run = tmp_path / "runs" / "src-ci-seed0"
    _bench(
        tmp_path, "bench_fixres.py", "--run", str(seed_run), "--sizes", "40", "--n-bootstrap", "20"
    )
    f = _result(tmp_path, "fixres")
    assert [r["size"] for r in f["rows"]] == [32, 40] and f["chosen_on_validation"] in (32, 40)
    assert (
        0 <= f["rows"][0]["val_balanced_accuracy"] <= 1 and "40" in f["paired_test_vs_train_size"]
    )
    _bench(
        tmp_path,
        "bench_precision.py",
        *PRECISION_TINY,
        "--run",
        str(seed_run),
        "--n-bootstrap",
        "20",
    )
    q = _result(tmp_path, "precision")["run_validation"]
    assert q["n_val"] > 0 and 0 <= q["max_abs_prob_diff"] < 1 and q["bf16_speedup"] > 0
    _bench(
        tmp_path,
        "bench_selection.py",
        "--run",
        str(seed_run),
        "--views",
        "2",
        "--crt",
        "last",
        "--n-bootstrap",
        "20",
    )
    sel = _result(tmp_path, "selection")
    names = [r["checkpoint"] for r in sel["rows"]]
    assert names[0] == "best" and "last" in names  # best.pt and last.pt are always written
    ens = next(r for r in sel["rows"] if r["checkpoint"] == "ensemble")  # snapshot ensemble
    assert ens["members"] == names[:-1] and names[-1] == "ensemble"
    assert sel["reference"] in names and set(sel["paired_test_vs_reference"]) == (
        set(names) - {sel["reference"]}
    )
    assert all(0 <= r["test_balanced_accuracy"] <= 1 for r in sel["rows"])
    assert sel["crt"]["chosen_C"] in [g["C"] for g in sel["crt"]["grid"]]
    assert "balanced_accuracy" in sel["crt"]["paired_test_crt_minus_own"]

    _bench(
        tmp_path,
        "bench_wall.py",
        "--label",
        "ci",
        "--",
        "--dataset",
        "demo",
        "--data-dir",
        str(demo_dir),
        "--only",
        "01",
        "--no-html",
    )
    w = _result(tmp_path, "wall_ci")
    assert list(w["notebooks_s"]) == ["01_eda.ipynb"] and w["wall_s"]["median"] > 0
    assert not (PROJECT_ROOT / "runs" / "bench-ci-0").exists()  # cleaned up


def test_bench_precision_tiny(tmp_path):
    _bench(
        tmp_path,
        "bench_precision.py",
        *PRECISION_TINY,
    )
    d = _result(tmp_path, "precision")
    for kind in ("train", "infer"):
        assert d["images_per_s"][kind]["fp32"]["median"] > 0
        assert d["bf16_over_fp32"][kind] > 0
    assert isinstance(d["cpu_flags"], list) and d["torch_cpu_capability"]


def test_bench_bootstrap_tiny(tmp_path):
    _bench(tmp_path, "bench_bootstrap.py", "--n-bootstrap", "20", "--n", "200", "--classes", "4")
    data = _result(tmp_path, "bootstrap")
    assert data["images"] == 200 and data["classes"] == 4 and data["n_bootstrap"] == 20
    assert data["max_abs_difference"] <= 1e-9 and data["loop_s"] > 0 < data["vectorised_s"]
    assert data["bootstrap_unit"] == "group" and 100 < data["groups"] < 200  # lesions


def test_bench_rescore_puts_group_beside_image_intervals(tmp_path):
    """A finished run whose lesions have three images each (same picture, same scores):
    re-scored, the group intervals are those of the group bootstrap, wider than the image
    ones; the groups come from split.csv when the predictions lack them."""
    import numpy as np
    import pandas as pd

    from skinhelpers.evaluate import bootstrap, calibration

    classes = ["bcc", "mel", "nv"]
    rng = np.random.default_rng(3)
    lesion_y = rng.integers(0, 3, 60)
    logits = rng.normal(0, 1, (60, 3)) + 1.2 * np.eye(3)[lesion_y]
    y, probs = np.repeat(lesion_y, 3), np.repeat(calibration.softmax(logits), 3, axis=0)
    groups = np.repeat([f"L{i:02d}" for i in range(60)], 3)
    run = tmp_path / "old-run"
    run.mkdir()
    pred = pd.DataFrame(probs, columns=[f"p_{c}" for c in classes])
    pred.insert(0, "label", [classes[i] for i in y])
    pred.insert(0, "relpath", [f"img/{i}.jpg" for i in range(len(y))])
    pred.insert(0, "image_id", [f"i{i}" for i in range(len(y))])
    pred.to_csv(run / "predictions_test.csv", index=False)  # written before the group column
    pred[["relpath", "image_id"]].assign(group=groups).to_csv(run / "split.csv", index=False)
    _bench(tmp_path, "bench_rescore.py", str(run), "--n-bootstrap", "200", "--label", "t")
    d = _result(tmp_path, "rescore_t")["runs"][0]
    assert d["images"] == 180 and d["groups"] == 60 and d["groups_from"] == "split.csv"
    want = bootstrap.bootstrap_ci(y, probs, n_bootstrap=200, groups=groups)
    img = bootstrap.bootstrap_ci(y, probs, n_bootstrap=200)
    for k in bootstrap.HEADLINE:
        m = d["metrics"][k]
        assert m["group_ci_low"] == pytest.approx(want.loc[k, "ci_low"])
        assert m["image_ci_high"] == pytest.approx(img.loc[k, "ci_high"])
    assert d["metrics"]["accuracy"]["width_ratio"] > 1.3  # ~ sqrt(3): three copies per lesion
    assert "mel_auc" in d["metrics"]
    (run / "split.csv").unlink()  # no groups anywhere: refused, with the reason
    proc = _bench(tmp_path, "bench_rescore.py", str(run), ok=False)
    assert "no lesion groups" in proc.stderr


def _predictions(run_dir, labels, probs, classes):
    import pandas as pd

    run_dir.mkdir(parents=True)
    df = pd.DataFrame(probs, columns=[f"p_{c}" for c in classes])
    df.insert(0, "label", labels)
    df.insert(0, "image_id", [f"img{i}" for i in range(len(labels))])
    df["pred"] = [classes[i] for i in probs.argmax(1)]
    df.to_csv(run_dir / "predictions_test.csv", index=False)


def test_bench_run_ensemble_averages_runs(tmp_path):
    """Two runs wrong on different images: their mean is right on more of them, and the
    paired difference against the first run says so; mismatched runs are refused."""
    import numpy as np

    classes = ["a", "b", "c"]
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 40)
    labels = [classes[i] for i in y]

    def run_probs(wrong):  # confident and right, except a weakly wrong vote on `wrong`
        p = np.full((len(y), 3), 0.05)
        p[np.arange(len(y)), y] = 0.9
        for i in wrong:
            p[i] = 0.3
            p[i, (y[i] + 1) % 3] = 0.4
        return p

    wrong_a = rng.choice(len(y), 30, replace=False)
    wrong_b = np.setdiff1d(np.arange(len(y)), wrong_a)[:30]
    _predictions(tmp_path / "ra", labels, run_probs(wrong_a), classes)
    _predictions(tmp_path / "rb", labels, run_probs(wrong_b), classes)
    _bench(
        tmp_path,
        "bench_run_ensemble.py",
        str(tmp_path / "ra"),
        str(tmp_path / "rb"),
        "--n-bootstrap",
        "50",
    )
    d = _result(tmp_path, "run_ensemble")
    ba = d["paired_mean_minus_against"]["balanced_accuracy"]
    assert d["n_test"] == len(y)
    recall_a = [np.mean(~np.isin(np.flatnonzero(y == k), wrong_a)) for k in range(3)]
    assert ba["a"] == pytest.approx(np.mean(recall_a)) and ba["b"] == pytest.approx(1.0)
    assert ba["ci_low"] > 0
    # --against: the mean of B and C scored against A, which is not a member
    _predictions(tmp_path / "rd", labels, run_probs(wrong_a[:15]), classes)
    _bench(
        tmp_path,
        "bench_run_ensemble.py",
        str(tmp_path / "rb"),
        str(tmp_path / "rd"),
        "--against",
        str(tmp_path / "ra"),
        "--label",
        "x",
        "--n-bootstrap",
        "50",
    )
    x = _result(tmp_path, "run_ensemble_x")
    assert x["against"] == str(tmp_path / "ra") and str(tmp_path / "ra") not in x["runs"]
    assert x["paired_mean_minus_against"]["balanced_accuracy"]["a"] == pytest.approx(ba["a"])
    assert x["paired_mean_minus_against"]["balanced_accuracy"]["b"] == pytest.approx(1.0)

    _predictions(tmp_path / "rc", labels[:-1], run_probs([])[:-1], classes)
    proc = _bench(
        tmp_path, "bench_run_ensemble.py", str(tmp_path / "ra"), str(tmp_path / "rc"), ok=False
    )
    assert "test images differ" in proc.stderr
