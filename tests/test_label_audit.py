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


def test_only_the_surest_suspects_leave_training_and_many_suspects_are_called_so(tmp_path):
    """A weak auditing model flags far more images than carry wrong labels (the cpu run on
    HAM10000: a third): drop_label_issues removes at most audit_max_drop of the images, the
    lowest label quality first, and the sentence says the share is implausible."""
    from skinhelpers.files import write_csv, write_json
    from skinhelpers.train.experiment import drop_label_suspects

    n = 200
    audit = pd.DataFrame(
        {
            "image_id": [f"i{k}" for k in range(n)],
            "relpath": [f"r{k}" for k in range(n)],
            "label": "nv",
            "suggested": "mel",
            "quality": np.linspace(0.0, 1.0, n)[::-1],  # r199 the most suspect
            "is_issue": [k >= 140 for k in range(n)],  # 60 suspects, 30%
            "drop": False,
            "split": "train",
        }
    )
    marked = label_audit.mark_drops(audit, 0.02)
    assert marked["drop"].sum() == 4  # 2% of 200
    assert set(marked.loc[marked["drop"], "relpath"]) == {"r199", "r198", "r197", "r196"}
    assert label_audit.mark_drops(audit, 1.0)["drop"].sum() == 60  # never beyond the suspects
    assert label_audit.mark_drops(audit, 0.0)["drop"].sum() == 0
    text = label_audit.audit_sentence(marked, 0.61)
    assert "60 suspects of 200 images (30.0%)" in text and "cheap model's own errors" in text
    assert "the 4 most suspect" in text
    few = audit.assign(is_issue=[k >= 199 for k in range(n)])
    assert "cheap model's own errors" not in label_audit.audit_sentence(few, 0.9)
    # 07 leaves out the marked ones, not every suspect
    train = marked[["relpath", "label"]]
    write_csv(tmp_path / "label_issues.csv", marked)
    write_json(tmp_path / "label_audit.json", {"drop_from_training": True})
    kept = drop_label_suspects(tmp_path, train, verbose=False)
    assert len(kept) == n - 4 and "r199" not in set(kept["relpath"])
    import pytest

    with pytest.raises(ValueError, match="audit_max_drop"):
        label_audit.mark_drops(audit, 1.5)
