"""benchmarks/bench_sources.py pairs a one-source run with a several-source run on the
test images both scored (by name: B's relpaths carry their source as a prefix), or with
another one-source run on its test split and every external non-copy, or two several-source
runs per source of their shared test split, and its numbers are those a direct computation
gives. Small synthetic prediction tables."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
from helpers_script import run_script
from sklearn.metrics import roc_auc_score

from skinhelpers.files import PROJECT_ROOT

CLASSES = ["bkl", "mel", "nv"]


def _frame(rel, labels, probs, groups, **extra):
    df = pd.DataFrame({"image_id": [r.split("/")[-1] for r in rel], "relpath": rel,
                       "label": labels})  # fmt: skip
    for j, c in enumerate(CLASSES):
        df[f"p_{c}"] = probs[:, j]
    df["pred"] = [CLASSES[k] for k in probs.argmax(1)]
    df["group"] = groups
    return df.assign(**extra)


def _bench(tmp_path, a, b, *args):
    """Run bench_sources.py on run folders ``a`` and ``b``; the result JSON it wrote."""
    env = {**os.environ, "SKINLAB_BENCH_RESULTS": str(tmp_path / "results")}
    p = run_script(PROJECT_ROOT / "benchmarks" / "bench_sources.py", str(a), str(b),
                   "--n-bootstrap", "50", *args, env=env, cwd=PROJECT_ROOT)  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    label = args[args.index("--label") + 1] if "--label" in args else ""
    return json.loads(
        (tmp_path / "results" / f"sources{'_' + label if label else ''}.json").read_text()
    )


def test_pairs_by_source_and_matches_direct_computation(tmp_path):
    rng = np.random.default_rng(0)
    n_h, n_e = 90, 80
    lab_h = rng.choice(CLASSES, n_h)
    lab_e = np.array(["mel"] * 30 + ["nv"] * 30 + ["bkl"] * 20)
    pa_h, pb_h = rng.dirichlet([1, 1, 1], n_h), rng.dirichlet([1, 1, 1], n_h)
    pa_e, pb_e = rng.dirichlet([1, 1, 1], n_e), rng.dirichlet([1, 1, 1], n_e)
    rel_h = [f"HAM/img{i}.jpg" for i in range(n_h)]
    rel_e = [f"Train/x/img{i}.jpg" for i in range(n_e)]
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    _frame(rel_h, lab_h, pa_h, [f"L{i // 2}" for i in range(n_h)]).to_csv(
        a / "predictions_test.csv", index=False
    )
    # A's external set: 80 non-copies plus 5 copies (left out of every score)
    cp = [f"Train/c/{i}.jpg" for i in range(5)]
    copies = _frame(cp, ["mel"] * 5, rng.dirichlet([1, 1, 1], 5), cp, overlap=True)
    ext = _frame(rel_e, lab_e, pa_e, [f"E{i}" for i in range(n_e)], overlap=False)
    pd.concat([ext, copies]).to_csv(a / "predictions_external_isic9.csv", index=False)
    # B's test split: the same HAM images and the ISIC share (first 60 of the non-copies)
    pd.concat(
        [
            _frame(["ham10000/" + r for r in rel_h], lab_h, pb_h,
                   [f"ham10000:L{i // 2}" for i in range(n_h)]),
            _frame(["isic9/" + r for r in rel_e[:60]], lab_e[:60], pb_e[:60],
                   [f"isic9:E{i}" for i in range(60)]),
        ]
    ).to_csv(b / "predictions_test.csv", index=False)  # fmt: skip
    pd.DataFrame({"source": ["ham10000"] * n_h + ["isic9"] * n_e}).to_csv(b / "manifest.csv")
    rec = _bench(tmp_path, a, b, "--min-class", "20")
    isic = {r["metric"]: r for r in rec["sources"]["isic9"]["paired"]}
    mel = (lab_e[:60] == "mel").astype(int)
    assert isic["mel_auc"]["a"] == roc_auc_score(mel, pa_e[:60, 1])
    assert isic["mel_auc"]["b"] == roc_auc_score(mel, pb_e[:60, 1])
    # 30 mel and 30 nv among B's 60 ISIC images, no bkl: the average runs over mel and nv
    bal = isic["balanced_accuracy_mel_nv"]
    want = np.mean([np.mean(pb_e[:60][lab_e[:60] == c].argmax(1) == CLASSES.index(c))
                    for c in ("mel", "nv")])  # fmt: skip
    assert bal["b"] == want and isic["mel_auc"]["n_images"] == 60
    ham = {r["metric"]: r for r in rec["sources"]["ham10000"]["paired"]}
    assert ham["mel_auc"]["n_lesions"] == n_h // 2 and rec["sources"]["ham10000"]["n_b_test"] == n_h
    alone = {r["metric"]: r for r in rec["a_on_all_external"]["metrics"]}
    assert rec["a_on_all_external"]["n"] == n_e  # the copies left out
    assert alone["mel_auc"]["value"] == roc_auc_score(lab_e == "mel", pa_e[:, 1])
    assert "balanced_accuracy_bkl_mel_nv" in alone


def test_two_one_source_runs_pair_on_every_external_non_copy(tmp_path):
    """A lever of number (a), or number (c): B trained on HAM10000 alone too."""
    rng = np.random.default_rng(1)
    n_h, n_e = 60, 70
    lab_h = rng.choice(CLASSES, n_h)
    lab_e = np.array(["mel"] * 30 + ["nv"] * 25 + ["bkl"] * 15)
    rel_h = [f"HAM/img{i}.jpg" for i in range(n_h)]
    rel_e = [f"Train/x/img{i}.jpg" for i in range(n_e)]
    probs = {k: (rng.dirichlet([1, 1, 1], n_h), rng.dirichlet([1, 1, 1], n_e)) for k in "ab"}
    for k in "ab":
        d = tmp_path / k
        d.mkdir()
        _frame(rel_h, lab_h, probs[k][0], [f"L{i // 3}" for i in range(n_h)]).to_csv(
            d / "predictions_test.csv", index=False
        )
        cp = [f"Train/c/{i}.jpg" for i in range(4)]
        copies = _frame(cp, ["nv"] * 4, rng.dirichlet([1, 1, 1], 4), cp, overlap=True)
        ext = _frame(rel_e, lab_e, probs[k][1], [f"E{i}" for i in range(n_e)], overlap=False)
        pd.concat([ext, copies]).to_csv(d / "predictions_external_isic9.csv", index=False)
        pd.DataFrame({"image_id": rel_h}).to_csv(d / "manifest.csv")  # no 'source': one
    rec = _bench(tmp_path, tmp_path / "a", tmp_path / "b", "--label", "lever")
    assert rec["b_sources"] == "one"
    isic = {r["metric"]: r for r in rec["sources"]["isic9"]["paired"]}
    mel = lab_e == "mel"
    assert isic["mel_auc"]["n_images"] == n_e  # every non-copy, the copies left out
    assert isic["mel_auc"]["a"] == roc_auc_score(mel, probs["a"][1][:, 1])
    assert isic["mel_auc"]["b"] == roc_auc_score(mel, probs["b"][1][:, 1])
    assert isic["mel_auc"]["diff"] == isic["mel_auc"]["b"] - isic["mel_auc"]["a"]
    ham = {r["metric"]: r for r in rec["sources"]["ham10000"]["paired"]}
    assert ham["mel_auc"]["n_lesions"] == n_h // 3
    b_alone = {r["metric"]: r for r in rec["b_on_all_external"]["metrics"]}
    assert b_alone["mel_auc"]["value"] == roc_auc_score(mel, probs["b"][1][:, 1])


def test_two_several_source_runs_pair_per_source(tmp_path):
    """A lever of number (b) (e.g. source_balance_power): both trained on both sources,
    the same split; paired per source on chapter 08's test predictions."""
    rng = np.random.default_rng(2)
    n_h, n_e = 50, 40
    rel = [f"ham10000/HAM/img{i}.jpg" for i in range(n_h)]
    rel += [f"isic9/Train/x/img{i}.jpg" for i in range(n_e)]
    labels = np.concatenate([rng.choice(CLASSES, n_h), ["mel"] * 20 + ["nv"] * 20])
    groups = [f"G{i // 2}" for i in range(n_h + n_e)]
    probs = {k: rng.dirichlet([1, 1, 1], n_h + n_e) for k in "ab"}
    for k in "ab":
        d = tmp_path / k
        d.mkdir()
        _frame(rel, labels, probs[k], groups).to_csv(d / "predictions_test.csv", index=False)
        pd.DataFrame({"source": ["ham10000"] * n_h + ["isic9"] * n_e}).to_csv(d / "manifest.csv")
    rec = _bench(tmp_path, tmp_path / "a", tmp_path / "b", "--label", "bb")
    assert rec["a_sources"] == rec["b_sources"] == "several"
    assert "a_on_all_external" not in rec and "b_on_all_external" not in rec
    isic = {r["metric"]: r for r in rec["sources"]["isic9"]["paired"]}
    mel = labels[n_h:] == "mel"
    assert isic["mel_auc"]["n_images"] == n_e and rec["sources"]["isic9"]["n_b_test"] == n_e
    assert isic["mel_auc"]["a"] == roc_auc_score(mel, probs["a"][n_h:, 1])
    assert isic["mel_auc"]["b"] == roc_auc_score(mel, probs["b"][n_h:, 1])
    assert rec["sources"]["ham10000"]["n_b_test"] == n_h
