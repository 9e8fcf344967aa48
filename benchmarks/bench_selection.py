"""Benchmark 11: which weights to keep, and a class-balanced head refit (cRT), for a run.

The trainer keeps ``best.pt`` and ``best_ema.pt`` (the epochs with the highest validation
balanced accuracy, raw and EMA weights) and ``last.pt`` (the last epoch, raw weights with
the EMA weights beside them). With a few validation images per rare class, a best-epoch
score is noisy; with a cosine schedule that anneals inside the budget, the last epoch's
EMA needs no selection at all. This scores the four on the run's validation and test
splits with the same views and reports each one's paired change in test balanced accuracy
against ``best_ema`` (the reported model; ``best`` in a run without EMA), with a paired
bootstrap interval over the test lesions (the split's groups). It also scores the
probability mean of all of them (a snapshot ensemble of one training run: free to train,
N times the prediction cost) the same way.

``--crt NAME`` also re-fits the classifier of checkpoint NAME on frozen features of the
training split, class-balanced (multinomial logistic regression with balanced class
weights, its strength chosen on validation): the classifier re-training of Kang et al.,
"Decoupling representation and classifier for long-tailed recognition" (ICLR 2020),
scored with one view against the same network's own head with one view.

    .venv/bin/python benchmarks/bench_selection.py --run runs/ham-cpu-v5 --views 8 --crt last_ema
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from common import run_model, save
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.preprocessing import StandardScaler

from skinhelpers.data import cache, manifest
from skinhelpers.device import inference_dtype
from skinhelpers.evaluate import bootstrap, tta
from skinhelpers.model import checkpoints
from skinhelpers.model.metrics import macro_auc
from skinhelpers.split import store

NAMES = ("best", "best_ema", "last", "last_ema")


def available(run: Path) -> list[str]:
    """The NAMES this run folder holds (no EMA: no best_ema, no last_ema)."""
    d = run / "checkpoints"
    names = [n for n in ("best", "best_ema", "last") if (d / f"{n}.pt").exists()]
    if "last" in names and checkpoints.load_checkpoint(d / "last.pt").get("ema_state_dict"):
        names.append("last_ema")
    if "best" not in names:
        raise SystemExit(f"{d} holds no best.pt: run notebook 07 there first")
    return names


def load(run: Path, name: str):
    """``(model ready for CPU prediction, info)`` of one of NAMES."""
    if name in ("best", "best_ema"):  # the files notebook 08 evaluates
        _, _, model, info = run_model(run, name)
        return model, info
    ck = checkpoints.load_checkpoint(run / "checkpoints" / "last.pt")
    if name == "last_ema":  # the EMA weights stored beside the raw ones
        ck = {**ck, "state_dict": ck["ema_state_dict"]}
    raw, info = checkpoints.model_from_checkpoint(ck, "cpu")
    return tta.prepare_model(raw, channels_last=True), info


def headline(labels, probs, pos: int | None) -> dict:
    out = {
        "balanced_accuracy": float(balanced_accuracy_score(labels, probs.argmax(1))),
        "macro_auc": float(macro_auc(labels, probs)),
    }
    if pos is not None:
        out["melanoma_auc"] = float(roc_auc_score(labels == pos, probs[:, pos]))
    return out


def paired(labels, a, b, n: int, groups) -> dict:
    """The paired bootstrap of ``b - a``, resampling ``groups`` (the test lesions)."""
    d = bootstrap.paired_bootstrap_diff(labels, a, b, n_bootstrap=n, desc=None, groups=groups)
    return {k: {c: float(v) for c, v in row.items()} for k, row in d.to_dict("index").items()}


def crt(model, info, c, splits, n_boot: int, amp) -> dict:
    """Re-fit the head on frozen (1-view) features of the training split, class-balanced."""
    head, model.head = model.head, torch.nn.Identity()
    try:
        feats = {
            s: tta.predict_frame(
                model, c, d, info["mean"], info["std"], 1, 64, 0, f"features {s}", amp
            )
            for s, d in splits.items()
        }
    finally:
        model.head = head
    own = {
        s: tta.predict_frame(model, c, d, info["mean"], info["std"], 1, 64, 0, None, amp)
        for s, d in splits.items()
        if s != "train"
    }
    sc = StandardScaler().fit(feats["train"].logits)
    x = {s: sc.transform(f.logits) for s, f in feats.items()}
    y = {s: f.labels for s, f in feats.items()}
    grid = []
    for C in (0.001, 0.003, 0.01, 0.03, 0.1):
        lr = LogisticRegression(C=C, class_weight="balanced", max_iter=2000)
        lr.fit(x["train"], y["train"])
        va = balanced_accuracy_score(y["val"], lr.predict(x["val"]))
        grid.append({"C": C, "val_balanced_accuracy": float(va), "model": lr})
        print(f"cRT C={C}: validation balanced accuracy {va:.4f}", flush=True)
    best = max(grid, key=lambda g: g["val_balanced_accuracy"])
    p_test = best["model"].predict_proba(x["test"])
    t = own["test"]
    d = paired(t.labels, t.probs, p_test, n_boot, splits["test"]["group"].to_numpy())
    return {
        "grid": [{k: v for k, v in g.items() if k != "model"} for g in grid],
        "chosen_C": best["C"],
        "own_head_val_balanced_accuracy": float(
            balanced_accuracy_score(own["val"].labels, own["val"].probs.argmax(1))
        ),
        "test_own_head": headline(t.labels, t.probs, None),
        "test_crt": headline(t.labels, p_test, None),
        "paired_test_crt_minus_own": d,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True, help="a run folder with checkpoints and a split")
    ap.add_argument("--views", type=int, default=1, help="TTA views")
    ap.add_argument("--precision", default="float32", help="float32 | bfloat16 | auto")
    ap.add_argument("--crt", default="", help="re-fit this checkpoint's head (one of NAMES)")
    ap.add_argument("--n-bootstrap", type=int, default=1000)
    ap.add_argument("--label", default="", help="save as results/selection_LABEL.json")
    a = ap.parse_args()

    run = Path(a.run)
    df = store.read_split(run)
    classes = list(df.attrs["classes"])
    pos = classes.index("mel") if "mel" in classes else None
    splits = {s: df[df["split"] == s].reset_index(drop=True) for s in ("train", "val", "test")}
    amp = inference_dtype("cpu", a.precision)
    man = manifest.read_manifest(run)
    preds, rows, c = {}, [], None
    names = available(run)
    ref = "best_ema" if "best_ema" in names else "best"
    for name in names:
        model, info = load(run, name)
        if c is None:
            c = cache.build_cache(man, info["image_size"], info["preprocess"], info["resize_mode"])
        t0 = time.perf_counter()
        for s in ("val", "test"):
            preds[name, s] = tta.predict_frame(
                model,
                c,
                splits[s],
                info["mean"],
                info["std"],
                a.views,
                64,
                0,
                f"{name} {s}",
                amp,
            )
        row = {"checkpoint": name, "epoch": int(info["epoch"]), "seconds": time.perf_counter() - t0}
        for s in ("val", "test"):
            p = preds[name, s]
            row.update({f"{s}_{k}": v for k, v in headline(p.labels, p.probs, pos).items()})
        rows.append(row)
        print(
            f"{name} (epoch {row['epoch']}): val balanced accuracy "
            f"{row['val_balanced_accuracy']:.4f}, test {row['test_balanced_accuracy']:.4f}, "
            f"test macro AUC {row['test_macro_auc']:.4f}, melanoma AUC "
            f"{row.get('test_melanoma_auc', float('nan')):.4f}",
            flush=True,
        )
    if len(names) > 1:  # the snapshot ensemble: probability mean of the run's checkpoints
        for s in ("val", "test"):
            p = preds[names[0], s]
            mean = sum(preds[n, s].probs for n in names) / len(names)
            preds["ensemble", s] = dataclasses.replace(p, probs=mean, logits=np.log(mean))
        row = {"checkpoint": "ensemble", "members": list(names)}
        for s in ("val", "test"):
            p = preds["ensemble", s]
            row.update({f"{s}_{k}": v for k, v in headline(p.labels, p.probs, pos).items()})
        rows.append(row)
        print(
            f"ensemble of {', '.join(names)}: val balanced accuracy "
            f"{row['val_balanced_accuracy']:.4f}, test {row['test_balanced_accuracy']:.4f}",
            flush=True,
        )
        names = [*names, "ensemble"]
    t = preds[ref, "test"]
    lesions = splits["test"]["group"].to_numpy()  # the unit the paired bootstrap resamples
    vs = {}
    for name in names:
        if name == ref:
            continue
        vs[name] = paired(t.labels, t.probs, preds[name, "test"].probs, a.n_bootstrap, lesions)
        b = vs[name]["balanced_accuracy"]
        print(
            f"test, {name} minus {ref}: balanced accuracy {b['diff']:+.4f} "
            f"(95% CI {b['ci_low']:+.4f} to {b['ci_high']:+.4f})",
            flush=True,
        )
    out = {
        "run": str(run),
        "views": a.views,
        "precision": a.precision,
        "rows": rows,
        "reference": ref,
        "bootstrap_unit": "group",
        "test_groups": int(len(set(lesions))),
        "paired_test_vs_reference": vs,
    }
    if a.crt:
        if a.crt not in names:
            raise SystemExit(f"--crt {a.crt}: this run holds {', '.join(names)}")
        model, info = load(run, a.crt)
        out["crt"] = {"checkpoint": a.crt, **crt(model, info, c, splits, a.n_bootstrap, amp)}
        b = out["crt"]["paired_test_crt_minus_own"]["balanced_accuracy"]
        print(
            f"test, cRT head minus {a.crt}'s own head (1 view): balanced accuracy "
            f"{b['diff']:+.4f} (95% CI {b['ci_low']:+.4f} to {b['ci_high']:+.4f})",
            flush=True,
        )
    save(f"selection_{a.label}" if a.label else "selection", out)


if __name__ == "__main__":
    main()
