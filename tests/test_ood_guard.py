"""The out-of-distribution guard wired through every place that scores an image: stored
in the checkpoint (weights_only), in ``predict`` (columns ``ood_score``, ``in_distribution``),
in the ONNX export (a second output, the same score), in the demo page (no verdict for an
image the guard flags) and the model card. Real HAM10000 images as the training images,
the photos that ship inside scikit-image and matplotlib as the far out-of-distribution set,
a small CNN trained for a few steps as the model."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from short_checkpoint import pick_images, train_short_checkpoint

from skinhelpers.__main__ import main as cli
from skinhelpers.data.imaging import load_for_model
from skinhelpers.evaluate import ood, ood_fit
from skinhelpers.evaluate.predict import predict_images
from skinhelpers.model.checkpoints import load_checkpoint, model_from_checkpoint

pytestmark = pytest.mark.realdata
SIZE = 32


def _batch(paths, info):
    x = np.stack(
        [
            load_for_model(p, info["image_size"], info["preprocess"], info["resize_mode"])
            for p in paths
        ]
    )
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="module")
def guarded(ham_manifest, tmp_path_factory):
    """A checkpoint with a guard fitted on 70 training images, chosen on 35 validation
    images against half the photos; 14 unseen HAM10000 images and 6 photos saved as files."""
    d = tmp_path_factory.mktemp("guard")
    train = pick_images(ham_manifest, per_class=10, seed=0)
    train.attrs = ham_manifest.attrs
    plain = train_short_checkpoint(train, d / "plain.pt", size=SIZE, steps=30)
    rest = ham_manifest[~ham_manifest["image_id"].isin(train["image_id"])]
    val = pick_images(rest, per_class=5, seed=1)
    rest = rest[~rest["image_id"].isin(val["image_id"])]
    new = list(pick_images(rest, per_class=2, seed=2)["path"])
    model, info = model_from_checkpoint(plain)
    tr_f, _ = ood.features_and_logits(model, _batch(train["path"], info), info["mean"], info["std"])
    va_f, va_l = ood.features_and_logits(
        model, _batch(val["path"], info), info["mean"], info["std"]
    )
    choose, measure = ood_fit.split_photos(ood.package_photos(crops_per_photo=1), seed=0)
    ch_f, ch_l = ood_fit.photo_features(model, info, choose)
    guard = ood.fit_guard(tr_f, train["label_idx"].to_numpy(), va_f, va_l, ch_f, ch_l, 0.9)
    ckpt = d / "guarded.pt"
    shutil.copy(plain, ckpt)
    ood_fit.attach_guard(ckpt, guard)
    photo_paths = []
    for name, im in measure[:6]:
        p = d / f"{name.replace('/', '_')}.png"
        Image.fromarray(im).save(p)
        photo_paths.append(str(p))
    return {"plain": plain, "ckpt": ckpt, "guard": guard, "new": new, "photos": photo_paths}


def test_photos_split_by_source_photo():
    photos = ood.package_photos(crops_per_photo=2)
    a, b = ood_fit.split_photos(photos, seed=0)
    base = lambda part: {n.split("/")[0] for n, _ in part}  # noqa: E731
    assert len(a) + len(b) == len(photos)
    assert base(a) and base(b) and not base(a) & base(b)  # a photo and its crops: one half
    assert ood_fit.split_photos(photos, seed=0)[0][0][0] == a[0][0]  # same seed, same halves


def test_the_checkpoint_carries_the_guard_and_loads_with_weights_only(guarded):
    raw = torch.load(guarded["ckpt"], weights_only=True)
    back = ood.guard_of(raw)
    g = guarded["guard"]
    assert back.method == g.method and back.threshold == pytest.approx(g.threshold)
    assert back.measured["auroc_vs_far_ood"] == g.measured["auroc_vs_far_ood"]
    assert ood.guard_of(load_checkpoint(guarded["plain"])) is None  # none fitted: none claimed


@pytest.mark.parametrize("method", ["mahalanobis", "energy"])
def test_the_guarded_network_scores_like_the_reference(guarded, method):
    from skinhelpers.model.inference import to_model_input

    model, info = model_from_checkpoint(guarded["ckpt"])
    x = _batch(guarded["new"] + guarded["photos"], info)
    f, lg = ood.features_and_logits(model, x, info["mean"], info["std"])
    gauss = ood.FeatureGaussian.fit(f, np.arange(len(f)) % 3) if method == "mahalanobis" else None
    guard = ood.OODGuard(method, 1.0, 0.95, gauss, 1.5)
    with torch.inference_mode():
        logits, got = ood.GuardedModel(model, guard)(to_model_input(x, info["mean"], info["std"]))
    np.testing.assert_allclose(logits.numpy(), lg, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.numpy(), guard.score(f, lg), rtol=1e-4, atol=1e-4)


def test_predict_writes_the_guards_columns_and_flags_photos(guarded, tmp_path, capsys):
    paths = guarded["new"] + guarded["photos"]
    df = predict_images(guarded["ckpt"], paths, tta=2, show_progress=False, precision="float32")
    g = guarded["guard"]
    assert {"ood_score", "in_distribution"} <= set(df.columns)
    assert df.attrs["ood_guard"]["method"] == g.method
    model, info = model_from_checkpoint(guarded["ckpt"])
    f, lg = ood.features_and_logits(model, _batch(df["path"], info), info["mean"], info["std"])
    np.testing.assert_allclose(df["ood_score"], g.score(f, lg), rtol=1e-4)  # the plain view
    assert (df["in_distribution"] == (df["ood_score"] <= g.threshold)).all()
    photo = df["path"].isin(guarded["photos"])
    assert df.loc[photo, "ood_score"].median() > df.loc[~photo, "ood_score"].median()
    # the same probabilities as without a guard: the guard adds columns, changes nothing
    plain = predict_images(guarded["plain"], paths, tta=2, show_progress=False, precision="float32")
    assert "ood_score" not in plain and plain.attrs["ood_guard"] is None
    pcols = [c for c in plain if c.startswith("p_")]
    np.testing.assert_allclose(df[pcols], plain[pcols], atol=1e-6)
    out = tmp_path / "p.csv"
    assert cli(["predict", "--checkpoint", str(guarded["ckpt"]), "--images", *paths,
                "--out", str(out)]) == 0  # fmt: skip
    said = capsys.readouterr().out
    n_out = int((~pd.read_csv(out)["in_distribution"]).sum())
    assert f"{n_out} of {len(paths)} image(s) do not look like the training images" in said
    assert cli(["predict", "--checkpoint", str(guarded["plain"]), "--images", *paths,
                "--out", str(out)]) == 0  # fmt: skip
    assert "no out-of-distribution guard" in capsys.readouterr().out


def test_onnx_export_outputs_the_same_score(guarded, tmp_path):
    out = tmp_path / "onnx"
    assert cli(["export", "--checkpoint", str(guarded["ckpt"]), "--format", "onnx",
                "--out", str(out)]) == 0  # fmt: skip
    cfg = json.loads((out / "config.json").read_text())
    g = guarded["guard"]
    assert cfg["ood_guard"]["method"] == g.method
    assert cfg["ood_guard"]["threshold"] == pytest.approx(g.threshold)
    paths = guarded["new"] + guarded["photos"]
    kw = {"tta": 1, "show_progress": False, "precision": "float32"}
    torch_pred = predict_images(guarded["ckpt"], paths, **kw)
    onnx_pred = predict_images(out / "model.onnx", paths, **kw)
    np.testing.assert_allclose(onnx_pred["ood_score"], torch_pred["ood_score"], rtol=1e-4)
    pcols = [c for c in torch_pred if c.startswith("p_")]
    np.testing.assert_allclose(onnx_pred[pcols], torch_pred[pcols], atol=1e-4)
    # safetensors carries the guard's tensors by name
    st = tmp_path / "st"
    assert cli(["export", "--checkpoint", str(guarded["ckpt"]), "--format", "safetensors",
                "--out", str(st)]) == 0  # fmt: skip
    from safetensors.torch import load_file

    tensors = load_file(str(st / "model.safetensors"))
    if g.method == "mahalanobis":
        np.testing.assert_allclose(tensors["ood_guard.means"].numpy(), g.gaussian.means)


def test_the_demo_gives_no_verdict_for_an_image_the_guard_flags(guarded):
    from skinhelpers.share.demo import DemoModel

    dm = DemoModel(guarded["ckpt"], tta=1, precision="float32")
    pred = predict_images(
        guarded["ckpt"],
        guarded["new"] + guarded["photos"],
        show_progress=False,
        precision="float32",
    )
    flagged = pred.loc[~pred["in_distribution"], "path"].tolist()
    passed = pred.loc[pred["in_distribution"], "path"].tolist()
    assert flagged and passed
    label, text, _, prep = dm.analyse(flagged[0])
    assert label == {} and "does not look like the images the model was trained on" in text
    assert "Predicted class" not in text and "out-of-distribution score" in prep
    label, text, _, prep = dm.analyse(passed[0])
    assert label and "Predicted class" in text and "out-of-distribution score" in prep
    plain = DemoModel(guarded["plain"], tta=1, precision="float32")
    label, text, _, prep = plain.analyse(flagged[0])
    assert label and "Predicted class" in text and "guard: none in this checkpoint" in prep


def test_passed_vs_flagged_counts_and_scores():
    y = np.array([0, 0, 1, 1, 2, 2, 0, 1])
    probs = np.eye(3)[[0, 1, 1, 1, 2, 0, 0, 0]] * 0.8 + 0.2 / 3
    inside = np.array([True, True, True, True, True, True, False, False])
    t = ood_fit.passed_vs_flagged(
        y, probs, inside, ["a", "b", "c"], pos_index=1, min_class_images=1
    )
    passed, flagged = t.iloc[0], t.iloc[1]
    assert passed["n"] == 6 and flagged["n"] == 2 and passed["share"] == pytest.approx(0.75)
    assert passed["accuracy"] == pytest.approx(4 / 6) and flagged["accuracy"] == pytest.approx(0.5)
    assert passed["balanced accuracy (classes with >= 1)"] == pytest.approx((0.5 + 1 + 0.5) / 3)


@pytest.fixture(scope="module")
def layered(ham_manifest, tmp_path_factory):
    """A Lite0 checkpoint (timm: stages to read) with a ``mahalanobis_layers`` guard fitted
    on 35 real training images and 21 validation images."""
    d = tmp_path_factory.mktemp("layered")
    train = pick_images(ham_manifest, per_class=5, seed=3)
    train.attrs = ham_manifest.attrs
    ckpt = train_short_checkpoint(
        train, d / "lite0.pt", size=SIZE, steps=3, arch="efficientnet_lite0"
    )
    rest = ham_manifest[~ham_manifest["image_id"].isin(train["image_id"])]
    val = pick_images(rest, per_class=3, seed=4)
    model, info = model_from_checkpoint(ckpt)
    assert ood.has_layers(model)
    tr_f, _ = ood.features_and_logits(
        model, _batch(train["path"], info), info["mean"], info["std"], layers=True
    )
    va_f, va_l = ood.features_and_logits(
        model, _batch(val["path"], info), info["mean"], info["std"], layers=True
    )
    lg = ood.LayerGaussians.fit(tr_f, train["label_idx"].to_numpy(), va_f)
    val_scores = lg.score(va_f)
    guard = ood.OODGuard(
        "mahalanobis_layers", float(np.quantile(val_scores, 0.9)), 0.9, None, 1.0, {}, lg
    )
    ood_fit.attach_guard(ckpt, guard)
    images = list(pick_images(rest, per_class=1, seed=5)["path"])
    for name, im in ood.package_photos(crops_per_photo=0, tiles_per_side=1)[:4]:
        p = d / f"{name}.png"
        Image.fromarray(im).save(p)
        images.append(str(p))
    return {"ckpt": ckpt, "guard": guard, "images": images, "tr_f": tr_f, "va_f": va_f,
            "va_l": va_l, "y": train["label_idx"].to_numpy()}  # fmt: skip


def test_every_stage_of_a_timm_backbone_is_read(layered):
    model, info = model_from_checkpoint(layered["ckpt"])
    x = _batch(layered["images"][:3], info)
    layers, lg = ood.features_and_logits(model, x, info["mean"], info["std"], layers=True)
    plain, lg1 = ood.features_and_logits(model, x, info["mean"], info["std"])
    # Lite0's five stages (16, 24, 40, 112, 320 channels), then what the head sees
    assert [f.shape[1] for f in layers] == [16, 24, 40, 112, 320, plain.shape[1]]
    np.testing.assert_allclose(layers[-1], plain, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(lg, lg1, rtol=1e-5, atol=1e-5)
    g = layered["guard"]
    with pytest.raises(ValueError, match="layers of features"):
        g.score(plain, lg)  # the penultimate features alone are not enough


def test_fit_guard_weighs_the_layered_score_only_with_layers(layered):
    tr_f, va_f, va_l, y = layered["tr_f"], layered["va_f"], layered["va_l"], layered["y"]
    far_f, far_l = [f[:5] * 3 + 1 for f in va_f], va_l[:5]  # stand-ins: shifted features
    g = ood.fit_guard(tr_f, y, va_f, va_l, far_f, far_l, 0.9)
    assert set(g.measured["auroc_vs_far_ood"]) == set(ood.METHODS)
    assert g.measured["n_layers"] == 6
    g1 = ood.fit_guard(tr_f[-1], y, va_f[-1], va_l, far_f[-1], far_l, 0.9)
    assert set(g1.measured["auroc_vs_far_ood"]) == {"mahalanobis", "energy"}
    # the layered score is the sum of each layer's distance on its validation scale
    lg = ood.LayerGaussians.fit(tr_f, y, va_f)
    d = np.stack([gg.score(v) for gg, v in zip(lg.layers, va_f)], 1)
    np.testing.assert_allclose(np.median((d - lg.centre) / lg.scale, 0), 0, atol=1e-5)


def test_the_layered_guard_survives_checkpoint_predict_and_onnx(layered, tmp_path):
    from skinhelpers.model.inference import to_model_input

    g = layered["guard"]
    back = ood.guard_of(torch.load(layered["ckpt"], weights_only=True))
    assert back.method == "mahalanobis_layers" and len(back.layers.layers) == 6
    model, info = model_from_checkpoint(layered["ckpt"])
    x = _batch(layered["images"], info)
    f, lg = ood.features_and_logits(model, x, info["mean"], info["std"], layers=True)
    ref = g.score(f, lg)
    np.testing.assert_allclose(back.score(f, lg), ref, rtol=1e-5)
    with torch.inference_mode():
        _, got = ood.GuardedModel(model, back)(to_model_input(x, info["mean"], info["std"]))
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-4, atol=1e-3)
    kw = {"tta": 1, "show_progress": False, "precision": "float32"}
    torch_pred = predict_images(layered["ckpt"], layered["images"], **kw)
    np.testing.assert_allclose(torch_pred["ood_score"], ref, rtol=1e-4, atol=1e-3)
    out = tmp_path / "onnx"
    assert cli(["export", "--checkpoint", str(layered["ckpt"]), "--format", "onnx",
                "--out", str(out)]) == 0  # fmt: skip
    onnx_pred = predict_images(out / "model.onnx", layered["images"], **kw)
    np.testing.assert_allclose(onnx_pred["ood_score"], torch_pred["ood_score"], rtol=1e-4)
    assert json.loads((out / "config.json").read_text())["ood_guard"]["method"] == g.method
    st = tmp_path / "st"
    assert cli(["export", "--checkpoint", str(layered["ckpt"]), "--format", "safetensors",
                "--out", str(st)]) == 0  # fmt: skip
    from safetensors.torch import load_file

    tensors = load_file(str(st / "model.safetensors"))
    for i, gg in enumerate(g.layers.layers):
        np.testing.assert_allclose(tensors[f"ood_guard.layer{i}.precision"].numpy(), gg.precision)
    np.testing.assert_allclose(tensors["ood_guard.layer_scale"].numpy(), g.layers.scale)


def test_a_guarded_checkpoint_runs_in_float32(layered, guarded):
    # the threshold was fixed on float32 features; bfloat16 moved the cpu model's layered
    # score by about a third of it (RESULTS.md section 25): "auto" is float32 with a guard
    kw = {"tta": 1, "show_progress": False}
    for ckpt in (layered["ckpt"], guarded["ckpt"]):
        assert predict_images(ckpt, layered["images"][:2], **kw).attrs["precision"] == "float32"
        with pytest.raises(ValueError, match="float32 features"):
            predict_images(ckpt, layered["images"][:2], precision="bfloat16", **kw)
    plain = predict_images(guarded["plain"], layered["images"][:2], precision="bfloat16", **kw)
    assert plain.attrs["precision"] == "bfloat16"  # without a guard, as asked
    assert ood.guarded_precision({}, "auto") == "auto"
