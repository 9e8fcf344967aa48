"""Benchmark 25: out-of-distribution scores of a trained run's model, side by side.

Fits every candidate score on the run's training features (a seeded sample of
``--train-images``) and scores the validation split (in distribution), the photos bundled
in scikit-image and matplotlib (far out of distribution: whole, crops and tiles) and,
with ``--external``, another dataset's images that are not copies of the run's (near out
of distribution: ``predictions_external_<name>.csv`` of its chapter 09 names them). For
each score: AUROC of validation against the photos, the share of photos and of external
images flagged at the threshold 95% of validation passes. Nothing is trained.

Candidates: ``mahalanobis`` (class means, one Ledoit-Wolf covariance of the raw
penultimate features), ``mahalanobis_layers`` (the same at every stage of the backbone,
each on its validation scale, summed: the guard's third candidate), ``mahalanobis_l2``
(the same on L2-normalised features), ``energy`` (of the logits), ``knn`` (distance to
the k-th nearest training feature, L2-normalised; Sun et al. 2022) and ``msp`` (minus the
top softmax probability). ``--test-source`` scores a several-source run's test images of
one source (in distribution for that run: the share it flags).

    .venv/bin/python benchmarks/bench_ood.py runs/ham-a --external isic9
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from common import run_model, save

from skinhelpers.data import cache as image_cache
from skinhelpers.data.imaging import read_rgb
from skinhelpers.evaluate import ood, ood_fit


def _l2(f: np.ndarray) -> np.ndarray:
    return f / np.clip(np.linalg.norm(f, axis=1, keepdims=True), 1e-12, None)


def knn_score(bank: np.ndarray, f: np.ndarray, k: int = 10, chunk: int = 512) -> np.ndarray:
    """Distance to the k-th nearest of ``bank`` (both L2-normalised), higher: further."""
    out = []
    for i in range(0, len(f), chunk):
        sim = f[i : i + chunk] @ bank.T
        kth = -np.partition(-sim, k - 1, axis=1)[:, k - 1]
        out.append(np.sqrt(np.clip(2 - 2 * kth, 0, None)))
    return np.concatenate(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--checkpoint", default="best_ema")
    ap.add_argument("--external", default="", help="e.g. isic9: scored from 09's CSV list")
    ap.add_argument(
        "--test-source", default="", help="a several-source run: score its test images of it"
    )
    ap.add_argument("--train-images", type=int, default=3000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--label", default="")
    a = ap.parse_args()
    df, _, model, info = run_model(a.run, a.checkpoint)
    model = getattr(model, "_orig_mod", model)
    cache = image_cache.build_cache(
        df, info["image_size"], info["preprocess"], info["resize_mode"], show_progress=False
    )
    train = df[df["split"] == "train"]
    train = train.sample(min(a.train_images, len(train)), random_state=a.seed)
    val = df[df["split"] == "val"]
    mean, std = info["mean"], info["std"]
    kw = {"layers": ood.has_layers(model)}
    tr_f, _ = ood_fit.frame_features(model, cache, train, mean, std, desc="train", **kw)
    va_f, va_l = ood_fit.frame_features(model, cache, val, mean, std, desc="validation", **kw)
    photos = ood.package_photos(seed=a.seed)
    ph_f, ph_l = ood_fit.photo_features(model, info, photos, **kw)
    sets = {"validation": (va_f, va_l), "photos": (ph_f, ph_l)}
    if a.test_source:
        test = df[(df["split"] == "test") & (df["source"] == a.test_source)]
        sets[a.test_source] = ood_fit.frame_features(model, cache, test, mean, std, **kw)
    if a.external:
        pred = pd.read_csv(a.run / f"predictions_external_{a.external}.csv")
        pred = pred[~pred["overlap"].astype(bool)]
        from skinhelpers.data.manifest import load_manifest
        from skinhelpers.files import read_json

        ext_root = read_json(a.run / "run.json")["parameters"].get("external_data_dir") or None
        ext = load_manifest(a.external, ext_root)
        path_of = dict(zip(ext["relpath"], ext["path"]))
        imgs = [read_rgb(path_of[r]) for r in pred["relpath"]]
        x = ood.images_to_batch(imgs, info["image_size"], info["preprocess"], info["resize_mode"])
        sets[a.external] = ood.features_and_logits(model, x, mean, std, **kw)
    y = train["label_idx"].to_numpy()
    pen = ood.penultimate
    layered = ood.LayerGaussians.fit(tr_f, y, va_f) if kw["layers"] else None
    tr_f = pen(tr_f)
    g_raw = ood.FeatureGaussian.fit(tr_f, y)
    g_l2 = ood.FeatureGaussian.fit(_l2(tr_f), y)
    bank = _l2(tr_f).astype(np.float32)

    def msp(lg):
        z = lg - lg.max(1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
        return -p.max(1)

    scorers = {
        "mahalanobis": lambda f, lg: g_raw.score(pen(f)),
        "mahalanobis_l2": lambda f, lg: g_l2.score(_l2(pen(f))),
        "energy": lambda f, lg: ood.energy_score(lg),
        "knn": lambda f, lg: knn_score(bank, _l2(pen(f)).astype(np.float32), a.k),
        "msp": lambda f, lg: msp(lg),
    }
    if layered is not None:
        scorers["mahalanobis_layers"] = lambda f, lg: layered.score(f)
    rows = []
    for name, fn in scorers.items():
        s = {k: fn(*v) for k, v in sets.items()}
        thr = float(np.quantile(s["validation"], 0.95, method="higher"))
        row = {
            "score": name,
            "auroc_val_vs_photos": ood.auroc(s["validation"], s["photos"]),
            "photos_flagged": float(np.mean(s["photos"] > thr)),
        }
        for other in (a.external, a.test_source):
            if other:
                row[f"auroc_val_vs_{other}"] = ood.auroc(s["validation"], s[other])
                row[f"{other}_flagged"] = float(np.mean(s[other] > thr))
        rows.append(row)
        worst = sorted(zip(s["photos"], [n for n, _ in photos]))[:5]
        row["photos_scored_lowest"] = [n for _, n in worst]
    t = pd.DataFrame(rows).set_index("score")
    print(t.drop(columns="photos_scored_lowest").round(4).to_string())
    save(
        f"ood{'_' + a.label if a.label else ''}",
        {
            "run": str(a.run),
            "n_train": len(train),
            "n_val": len(val),
            "n_photos": len(photos),
            "n_external": int(len(sets[a.external][1])) if a.external else 0,
            "n_test_source": int(len(sets[a.test_source][1])) if a.test_source else 0,
            "rows": t.reset_index().to_dict(orient="records"),
        },
    )


if __name__ == "__main__":
    main()
