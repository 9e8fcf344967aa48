"""The SYNTHETIC demo set: deterministic, HAM10000-shaped, with real class signal."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from skinhelpers.data import synthetic
from skinhelpers.data.imaging import read_rgb
from skinhelpers.data.registry import HAM_CLASSES


def _digest(root):
    h = hashlib.sha1()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    small = {"nv": 6, "mel": 4, "df": 3}
    a = synthetic.generate_demo(tmp_path / "a", seed=3, counts=small)
    b = synthetic.generate_demo(tmp_path / "b", seed=3, counts=small)
    c = synthetic.generate_demo(tmp_path / "c", seed=4, counts=small)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


def test_demo_looks_like_ham10000(demo_manifest):
    df = demo_manifest
    assert df.attrs["synthetic"] is True and df.attrs["dataset"] == "demo"
    assert df.attrs["classes"] == list(HAM_CLASSES)
    assert set(df["label"]) == set(HAM_CLASSES)
    assert 400 < len(df) < 700
    # a re-encoded melanoma filed as a nevus of another lesion: not byte-identical
    assert df.loc[df.image_id == df.image_id.max(), "label"].item() == "nv"
    per_lesion = df.groupby("lesion_id").size()
    assert per_lesion.max() >= 3 and (per_lesion > 1).sum() > 50  # several images per lesion
    assert df["age"].notna().all() and set(df["sex"]) <= {"male", "female", "unknown"}
    assert df["localization"].nunique() > 5 and df["mask_path"].notna().all()
    # dx_type carries the diagnosis (a shortcut, like in the real data)
    assert set(df.loc[df.label == "mel", "dx_type"]) == {"histo"}
    assert "follow_up" in set(df.loc[df.label == "nv", "dx_type"])
    # two planted byte-identical pairs under different ids
    dup = df[df["sha1"].duplicated(keep=False)]
    assert dup["sha1"].nunique() == 2 and dup["image_id"].nunique() == 4
    img = read_rgb(df.path[0])
    assert img.shape == (150, 200, 3)


def test_classes_differ_in_the_lesion_colour(demo_manifest):
    """Inside the mask, melanomas are darker than nevi and vascular lesions redder."""
    df = demo_manifest

    def lesion_rgb(label):
        vals = []
        for _, r in df[df.label == label].head(15).iterrows():
            img = read_rgb(r.path).astype(float)
            m = read_rgb(r.mask_path)[:, :, 0] > 127
            vals.append(img[m].mean(axis=0))
        return np.mean(vals, axis=0)

    mel, nv, vasc = lesion_rgb("mel"), lesion_rgb("nv"), lesion_rgb("vasc")
    assert mel.sum() < nv.sum()
    assert vasc[0] - vasc[1] > nv[0] - nv[1]


def test_ensure_demo_reuses_and_refuses_foreign_folders(tmp_path):
    root = tmp_path / "demo"
    synthetic.ensure_demo(root, seed=0)
    stamp = (root / "HAM10000_metadata.csv").stat().st_mtime_ns
    synthetic.ensure_demo(root, seed=0)
    assert (root / "HAM10000_metadata.csv").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="made with"):
        synthetic.ensure_demo(root, seed=1)
    other = tmp_path / "other"
    other.mkdir()
    (other / "precious.txt").write_text("x")
    with pytest.raises(ValueError, match="refusing to write"):
        synthetic.ensure_demo(other, seed=0)
    assert not list(tmp_path.glob(".*.tmp-*"))


def _ensure_in_child(root):
    return str(synthetic.ensure_demo(root, seed=0))


def test_two_processes_asking_at_once_get_one_dataset(tmp_path):
    # two test workers on a fresh clone asked for the default demo set together: the
    # second renamed its copy onto the first's and failed (CI, 2026-12-06); now one waits
    import concurrent.futures
    import multiprocessing

    root = tmp_path / "demo" / "seed0"
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as pool:
        done = list(pool.map(_ensure_in_child, [root, root]))
    assert done == [str(root), str(root)]
    assert len(list(root.rglob("*.jpg"))) > 500 and (root / ".demo.json").exists()
    assert not list(root.parent.glob(".*.tmp-*"))
