"""Notebook 08's library side: which checkpoints, the Grad-CAM attention on lesions,
the metrics.json record."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from test_explain import PatchNet

from skinhelpers.evaluate import explain, summary


def test_resolve_checkpoints(tmp_path):
    ck = tmp_path / "checkpoints"
    ck.mkdir()
    (ck / "best.pt").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="best_ema.*notebook 07"):
        summary.resolve_checkpoints(tmp_path, "best_ema")
    assert summary.resolve_checkpoints(tmp_path, "best") == ("best", {"best": ck / "best.pt"})
    (ck / "best_ema.pt").write_bytes(b"x")
    primary, found = summary.resolve_checkpoints(tmp_path)
    assert primary == "best_ema" and list(found) == ["best", "best_ema"]
    other = tmp_path / "elsewhere" / "mine.pt"
    other.parent.mkdir()
    other.write_bytes(b"x")
    primary, found = summary.resolve_checkpoints(tmp_path, str(other))
    assert primary == "mine" and list(found) == ["mine", "best", "best_ema"]
    with pytest.raises(FileNotFoundError, match="nothere.pt"):
        summary.resolve_checkpoints(tmp_path, str(tmp_path / "nothere.pt"))


def _lesion_images(tmp_path: Path, n: int = 4):
    """Black images with a bright channel-0 patch (PatchNet's class-1 evidence) and a mask
    on that patch; image 3 has no mask."""
    images = np.zeros((n, 32, 32, 3), np.uint8)
    rows = []
    for i in range(n):
        y, x = 2 + 5 * i, 18 - 4 * i
        images[i, y : y + 10, x : x + 10, 0] = 255
        mask = np.zeros((32, 32, 3), np.uint8)
        mask[y : y + 10, x : x + 10] = 255
        mp = tmp_path / f"m{i}.png"
        Image.fromarray(mask).save(mp)
        rows.append(
            {
                "relpath": f"img{i}.jpg",
                "label": "b" if i % 2 else "a",
                "pred": "b",
                "correct": bool(i % 2),
                "mask_path": str(mp) if i != 3 else None,
            }
        )
    cache = SimpleNamespace(
        images=images, rows_for=lambda df: np.array([int(r[3]) for r in df["relpath"]])
    )
    return cache, pd.DataFrame(rows)


def test_attention_on_lesions_follows_the_patch(tmp_path):
    cache, pred = _lesion_images(tmp_path)
    model = PatchNet().eval()
    layer = explain.find_target_layer(model, 32)
    att = explain.attention_on_lesions(
        model,
        cache,
        pred,
        ["a", "b"],
        [0, 0, 0],
        [1, 1, 1],
        layer,
        32,
        max_images=10,
        batch_size=2,
        seed=0,
    )
    assert sorted(att["relpath"]) == ["img0.jpg", "img1.jpg", "img2.jpg"]  # masked rows only
    assert (att["cam_inside"] > 0.9).all() and (att["ratio"] > 5).all()
    part = explain.attention_on_lesions(
        model,
        cache,
        pred,
        ["a", "b"],
        [0, 0, 0],
        [1, 1, 1],
        layer,
        32,
        max_images=2,
        batch_size=1,
        seed=0,
    )
    assert len(part) == 2 and set(part["relpath"]) <= set(att["relpath"])
    pred["mask_path"] = None
    assert (
        explain.attention_on_lesions(
            model, cache, pred, ["a", "b"], [0, 0, 0], [1, 1, 1], layer, 32
        )
        is None
    )


def test_attention_summary_arithmetic():
    att = pd.DataFrame(
        {
            "label": ["a", "a", "b"],
            "correct": [True, False, True],
            "cam_inside": [0.2, 0.4, 0.9],
            "lesion_area": [0.1, 0.1, 0.3],
            "ratio": [2.0, 4.0, 3.0],
        }
    )
    by, rec = explain.attention_summary(att, ["a", "b", "c"])
    assert by.loc["a", "cam_inside"] == pytest.approx(0.3) and by.loc["a", "images"] == 2
    assert np.isnan(by.loc["c", "cam_inside"]) and by.loc["c", "images"] == 0
    assert by.loc["all", "images"] == 3 and by.loc["all", "ratio"] == pytest.approx(3.0)
    assert rec["images"] == 3 and rec["cam_inside_mean"] == pytest.approx(0.5)
    assert rec["cam_inside_correct"] == pytest.approx(0.55)
    assert rec["cam_inside_wrong"] == pytest.approx(0.4)
    assert set(rec["per_class"]) == {"a", "b", "c"}


def test_metrics_record():
    split = pd.DataFrame({"split": ["train", "val", "test", "test"]})
    split.attrs.update(dataset="demo", synthetic=True, classes=["a", "b"])
    cal = {"temperature": 1.5, "before": {"ece": 0.2}, "after": {"ece": 0.05}}
    tta = {
        "views": ["id", "hflip"],
        "time_ratio": 2.0,
        "diff": {"balanced_accuracy": {"diff": 0.01, "ci_low": -0.02, "ci_high": 0.04}},
    }
    lesion = {"cam_inside_mean": 0.61, "lesion_area_mean": 0.3}
    rec = summary.metrics_record(
        split,
        "best_ema",
        ["id", "hflip"],
        200,
        {"best_ema": Path("c/best_ema.pt")},
        {"best_ema": {"arch": "small_cnn", "epoch": 3}},
        {"best_ema": {"metrics": {"x": 1}}},
        {"sentences": ["Melanoma: ..."]},
        cal,
        tta,
        lesion,
        {("best_ema", "test", 2): 1.234567},
    )
    assert rec["n_test"] == 2 and rec["n_val"] == 1 and rec["synthetic"] is True
    assert rec["models"] == {
        "best_ema": {
            "checkpoint": "c/best_ema.pt",
            "arch": "small_cnn",
            "epoch": 3,
            "metrics": {"x": 1},
        }
    }
    assert rec["timings_s"] == {"best_ema/test/2": 1.23}
    assert rec["sentences"][0] == "Melanoma: ..." and len(rec["sentences"]) == 4
    assert "0.200 to 0.050" in rec["sentences"][1] and "TTA (2 views)" in rec["sentences"][2]
    assert "61% of the attention" in rec["sentences"][3]
    short = summary.metrics_record(split, "best", [], 1, {}, {}, {}, None, cal, None, None, {})
    assert len(short["sentences"]) == 1 and short["tta"] is None
    # what the intervals resampled: no groups given, images (and said so)
    assert rec["bootstrap_unit"] == "image" and rec["n_bootstrap_units"] == 2
    assert rec["n_test_groups"] is None  # this split has no group column


def test_metrics_record_names_the_bootstrap_unit():
    """metrics.json says the intervals resample the test split's lesions, and how many."""
    split = pd.DataFrame(
        {
            "split": ["train", "val", "test", "test", "test", "test", "test"],
            "group": ["g0", "g1", "g2", "g2", "g3", "g4", "g4"],
        }
    )
    split.attrs.update(dataset="demo", synthetic=True, classes=["a", "b"])
    cal = {"temperature": 1.0, "before": {"ece": 0.1}, "after": {"ece": 0.1}}
    test_groups = split.loc[split["split"] == "test", "group"].to_numpy()
    rec = summary.metrics_record(
        split, "best", [], 100, {}, {}, {}, None, cal, None, None, {}, test_groups=test_groups
    )
    assert rec["bootstrap_unit"] == "group"
    assert rec["n_test_groups"] == rec["n_bootstrap_units"] == 3 and rec["n_test"] == 5
    assert json.loads(json.dumps(rec))["bootstrap_unit"] == "group"  # JSON-ready
