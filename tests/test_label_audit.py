"""Label audit (skinhelpers.evaluate.label_audit): cleanlab on out-of-fold probabilities of
frozen ImageNet features finds label flips planted in a real HAM10000 subset."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from skinhelpers.data.imaging import load_for_model
from skinhelpers.evaluate import label_audit

CLASSES = ["bcc", "bkl", "nv", "vasc"]


def test_planted_label_flips_are_found(ham_manifest):
    df = ham_manifest[ham_manifest["label"].isin(CLASSES)]
    sub = pd.concat(
        [g.sample(min(len(g), 120), random_state=0) for _, g in df.groupby("label")]
    ).reset_index(drop=True)
    x = torch.from_numpy(np.stack([load_for_model(p, 96) for p in sub["path"]]))
    feats = label_audit.frozen_features(x.permute(0, 3, 1, 2).contiguous())
    y = sub["label"].map({c: i for i, c in enumerate(CLASSES)}).to_numpy()
    rng = np.random.default_rng(0)
    flip = rng.choice(len(y), 24, replace=False)
    noisy = y.copy()
    noisy[flip] = (y[flip] + rng.integers(1, len(CLASSES), len(flip))) % len(CLASSES)
    sub["label_idx"] = noisy
    probs = label_audit.out_of_fold_probs(feats, noisy, sub["group"], len(CLASSES), seed=0)
    audit = label_audit.audit_labels(sub, probs, CLASSES)
    planted = set(sub["relpath"].iloc[flip])
    flagged = set(audit.loc[audit["is_issue"], "relpath"])
    assert len(flagged & planted) >= 0.6 * len(planted)
    # the most suspect tenth holds the planted flips at several times their base rate
    top = set(audit["relpath"].head(len(audit) // 10))
    base = len(planted) / len(audit)
    assert len(top & planted) / len(top) >= 3 * base
    counts = label_audit.issue_counts(audit, CLASSES)
    assert counts["suspects"].sum() == audit["is_issue"].sum()
    assert list(audit.columns) == label_audit.COLUMNS


def test_suspects_leave_training_only_when_asked(tmp_path):
    from skinhelpers.files import write_csv, write_json
    from skinhelpers.train.experiment import drop_label_suspects

    train = pd.DataFrame({"relpath": ["a", "b", "c"], "label": ["nv", "nv", "mel"]})
    write_csv(
        tmp_path / "label_issues.csv",
        pd.DataFrame({"relpath": ["b", "z"], "is_issue": [True, True]}),
    )
    write_json(tmp_path / "label_audit.json", {"drop_from_training": False})
    assert len(drop_label_suspects(tmp_path, train)) == 3
    write_json(tmp_path / "label_audit.json", {"drop_from_training": True})
    assert drop_label_suspects(tmp_path, train, verbose=False)["relpath"].tolist() == ["a", "c"]
    assert len(drop_label_suspects(tmp_path / "no-audit", train)) == 3  # no audit: unchanged
