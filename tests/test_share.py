"""Sharing a model: ONNX / safetensors export, predict from ONNX, the model card, the demo.

Everything runs on real HAM10000 images: a small CNN trained for a few steps (seconds) for
the export, and a run folder evaluated by notebook 08 (thresholds, metrics) for the model
card and the demo page, which is served on 127.0.0.1 and queried with gradio_client and,
where Chromium exists, opened in a headless browser.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from short_checkpoint import pick_images, train_short_checkpoint

from skinhelpers.__main__ import main as cli
from skinhelpers.data import manifest as datasets
from skinhelpers.evaluate.predict import predict_images
from skinhelpers.model.checkpoints import model_from_checkpoint

pytestmark = pytest.mark.realdata


def _pcols(df):
    return [c for c in df.columns if c.startswith("p_")]


@pytest.fixture(scope="module")
def short(ham_manifest, tmp_path_factory):
    """A checkpoint with non-default preprocessing and resize mode, and 14 real images it
    never saw (two per class)."""
    train = pick_images(ham_manifest, per_class=3, seed=0)
    train.attrs = ham_manifest.attrs
    d = tmp_path_factory.mktemp("share")
    ckpt = train_short_checkpoint(
        train, d / "short.pt", size=32, steps=10, preprocess="shades_of_gray", resize_mode="crop"
    )
    rest = ham_manifest[~ham_manifest["image_id"].isin(train["image_id"])]
    others = pick_images(rest, per_class=2, seed=1)
    return ckpt, list(others["path"])


@pytest.fixture(scope="module")
def onnx_dir(short, tmp_path_factory):
    ckpt, _ = short
    out = tmp_path_factory.mktemp("onnx")
    assert cli(["export", "--checkpoint", str(ckpt), "--format", "onnx", "--out", str(out)]) == 0
    return out


def test_onnx_export_predicts_the_same_probabilities(short, onnx_dir, tmp_path):
    ckpt, images = short
    cfg = json.loads((onnx_dir / "config.json").read_text())
    assert (cfg["image_size"], cfg["preprocess"], cfg["resize_mode"]) == (
        32,
        "shades_of_gray",
        "crop",
    )
    assert cfg["classes"] == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    assert cfg["weights"] == "model.onnx" and len(cfg["sha256"]) == 64
    assert "CC BY-NC 4.0" in cfg["data_licence"]
    assert cfg["thresholds"] is None  # no metrics.json beside this checkpoint
    assert not list(onnx_dir.glob("*.data"))  # weights inside the one .onnx file
    ref = {}
    for tta in (1, 2):  # batch size 5: batches of 5, 5, 4 (dynamic batch axis)
        a = ref[tta] = predict_images(
            ckpt, images, tta=tta, batch_size=5, show_progress=False, precision="float32"
        )
        b = predict_images(
            onnx_dir / "model.onnx", images, tta=tta, batch_size=5, show_progress=False
        )
        assert len(a) == len(b) == len(images)
        assert np.abs(a[_pcols(a)].to_numpy() - b[_pcols(b)].to_numpy()).max() < 1e-4
        assert (a["pred"] == b["pred"]).all()
    # the CLI takes the .onnx too
    a, out = ref[1], tmp_path / "preds.csv"
    assert (
        cli(
            [
                "predict",
                "--checkpoint",
                str(onnx_dir / "model.onnx"),
                "--images",
                *images[:3],
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert np.allclose(
        pd.read_csv(out)[_pcols(a)].to_numpy(), a[_pcols(a)].to_numpy()[:3], atol=1e-4
    )


def test_an_ensemble_predicts_and_exports_as_one_model(short, ham_manifest, tmp_path, capsys):
    """Several checkpoints (a K-fold run's models) predict as the mean of their
    probabilities, in Python and on the command line, and export as one ONNX graph that
    gives the same; members prepared differently, or safetensors, are clear errors."""
    ckpt, images = short
    train = pick_images(ham_manifest, per_class=3, seed=2)
    train.attrs = ham_manifest.attrs
    kw_ckpt = dict(size=32, steps=10, preprocess="shades_of_gray", resize_mode="crop")
    other = train_short_checkpoint(train, tmp_path / "other.pt", seed=1, **kw_ckpt)
    kw = dict(tta=2, batch_size=5, show_progress=False, precision="float32")
    a, b = predict_images(ckpt, images, **kw), predict_images(other, images, **kw)
    pa, pb = a[_pcols(a)].to_numpy(), b[_pcols(b)].to_numpy()
    assert np.abs(pa - pb).max() > 1e-3  # two different members
    mean = (pa + pb) / 2
    ens = predict_images([ckpt, other], images, **kw)
    assert np.abs(ens[_pcols(ens)].to_numpy() - mean).max() < 1e-6
    assert ens.attrs["checkpoint"]["arch"].startswith("ensemble of 2")
    assert (ens["pred"] == ens[_pcols(ens)].idxmax(axis=1).str[2:]).all()

    out = tmp_path / "ens"
    args = ["export", "--checkpoint", str(ckpt), str(other), "--out", str(out)]
    assert cli([*args, "--format", "onnx"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert [m["checkpoint"] for m in cfg["members"]] == [str(ckpt), str(other)]
    assert cfg["thresholds"] is None and cfg["weights"] == "model.onnx"
    onnx = predict_images(out / "model.onnx", images, tta=2, batch_size=5, show_progress=False)
    assert np.abs(onnx[_pcols(onnx)].to_numpy() - mean).max() < 1e-4

    csv = tmp_path / "ens.csv"
    predict = ["predict", "--images", *images[:3], "--out", str(csv), "--precision", "float32"]
    assert cli([*predict, "--tta", "2", "--checkpoint", str(ckpt), str(other)]) == 0
    assert np.abs(pd.read_csv(csv)[_pcols(a)].to_numpy() - mean[:3]).max() < 1e-6

    plain = train_short_checkpoint(
        train, tmp_path / "plain.pt", size=32, steps=2, preprocess="none", resize_mode="crop"
    )
    capsys.readouterr()
    assert cli([*predict, "--checkpoint", str(ckpt), str(plain)]) == 2
    assert "differ in ['preprocess']" in capsys.readouterr().err
    assert cli([*args, "--format", "safetensors"]) == 2
    assert "onnx only" in capsys.readouterr().err


def test_onnx_without_its_config_is_a_clear_error(onnx_dir, short, tmp_path, capsys):
    lone = tmp_path / "lone.onnx"
    shutil.copy(onnx_dir / "model.onnx", lone)
    assert (
        cli(
            [
                "predict",
                "--checkpoint",
                str(lone),
                "--images",
                short[1][0],
                "--out",
                str(tmp_path / "o.csv"),
            ]
        )
        == 2
    )
    assert "config.json not found" in capsys.readouterr().err


def test_safetensors_round_trip(short, tmp_path):
    from safetensors.torch import load_file

    from skinhelpers.model.factory import build_model

    ckpt, _ = short
    assert (
        cli(
            ["export", "--checkpoint", str(ckpt), "--format", "safetensors", "--out", str(tmp_path)]
        )
        == 0
    )
    cfg = json.loads((tmp_path / "config.json").read_text())
    net = build_model(cfg["arch"], **cfg["model_kwargs"])
    net.load_state_dict(load_file(tmp_path / "model.safetensors"), strict=True)
    net.eval()
    ref, _ = model_from_checkpoint(ckpt)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(net(x), ref(x))


# --------------------------------------------------- a run folder evaluated by notebook 08


@pytest.fixture(scope="module")
def run08(ham_manifest, ham_dir, tmp_path_factory):
    """Manifest, split and two short checkpoints, evaluated by notebook 08 (metrics.json
    with operating points), plus a subgroup table computed from its test predictions."""
    from sklearn.metrics import balanced_accuracy_score
    from test_notebook_08 import small_evaluated_run

    df = datasets.subsample(ham_manifest, 110, seed=0)
    run = small_evaluated_run(tmp_path_factory.mktemp("share08"), df, "ham10000", ham_dir.parent)
    pred = pd.read_csv(run / "predictions_test.csv").merge(
        ham_manifest[["image_id", "sex"]], on="image_id"
    )
    rows = [
        {
            "group": f"sex={s}",
            "n": len(g),
            "balanced_accuracy": balanced_accuracy_score(g["label"], g["pred"]),
        }
        for s, g in pred.groupby("sex")
    ]
    pd.DataFrame(rows).to_csv(run / "subgroups.csv", index=False)
    return run


@pytest.mark.slow
def test_model_card_of_an_evaluated_run(run08):
    from skinhelpers.run.report import render_report

    index = render_report(run08)
    card = (run08 / "MODEL_CARD.md").read_text()
    m = json.loads((run08 / "metrics.json").read_text())
    for heading in (
        "## Model",
        "## Intended use",
        "## Data and split",
        "## Test metrics (95% bootstrap CI)",
        "## Operating points: melanoma",
        "## Calibration",
        "## Levers chosen on validation",
        "## Subgroups",
        "## Limits",
        "## Licence",
    ):
        assert heading in card, heading
    assert "Not a diagnostic device" in card and "CC BY-NC 4.0" in card
    assert "non-commercial" in card and "SYNTHETIC" not in card
    assert f"| evaluated in | {m['precision']} |" in card
    ba = m["models"]["best_ema"]["headline"]["balanced_accuracy"]
    assert f"{ba['value']:.3f} ({ba['ci_low']:.3f}–{ba['ci_high']:.3f})" in card
    for op in m["positive_class"]["operating_points"]:
        assert f"| {op['threshold']:.3f} |" in card
    assert "sex=female" in card or "sex=male" in card
    assert "## External test sets" not in card  # none in this run
    assert "model_card.html" in index.read_text()
    assert "<table>" in (run08 / "report" / "model_card.html").read_text()


@pytest.mark.slow
def test_export_of_the_primary_checkpoint_carries_its_thresholds(run08, tmp_path):
    from skinhelpers.share.export import export_model

    m = json.loads((run08 / "metrics.json").read_text())
    cfg = json.loads(
        export_model(run08 / "checkpoints" / "best_ema.pt", "safetensors", tmp_path)[
            "config"
        ].read_text()
    )
    t = cfg["thresholds"]
    assert t["class"] == "mel" and t["tta_views"] == ["identity", "hflip"]
    assert [o["threshold"] for o in t["operating_points"]] == [
        o["threshold"] for o in m["positive_class"]["operating_points"]
    ]
    assert "balanced score" in t["score"]  # not the probabilities under the data's mix
    # the malignant-vs-benign points chosen in 08 travel too, and the probabilities' recipe
    assert t["malignant"]["classes"] == ["akiec", "bcc", "mel"]
    assert t["malignant"]["class_indices"] == [0, 1, 4]
    assert [o["threshold"] for o in t["malignant"]["operating_points"]] == [
        o["threshold"] for o in m["malignant"]["operating_points"]
    ]
    assert cfg["train_prior"]["tau"] == 1.0 and cfg["probabilities"]["default_prior"] == "data"
    other = export_model(run08 / "checkpoints" / "best.pt", "safetensors", tmp_path / "b")
    assert json.loads(other["config"].read_text())["thresholds"] is None  # not the primary


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def demo_server(run08):
    from skinhelpers.share.demo import serve

    port = _free_port()
    # float32 in both: the page's numbers must be predict's to the last digit
    app = serve(run08 / "checkpoints" / "best_ema.pt", port=port, block=False, precision="float32")
    yield app, f"http://127.0.0.1:{port}/"
    app.close()


@pytest.mark.slow
def test_demo_answers_like_predict(demo_server, run08, ham_manifest, tmp_path):
    import os

    from gradio_client import Client, handle_file

    app, url = demo_server
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"
    client = Client(url, verbose=False)
    ckpt = run08 / "checkpoints" / "best_ema.pt"
    # images the guard notebook 08 stored passes (a flagged one gets no verdict: below)
    pool = predict_images(
        ckpt, list(pick_images(ham_manifest, per_class=2, seed=3)["path"]), show_progress=False
    )
    assert pool.attrs["ood_guard"] is not None
    images = list(pool.loc[pool["in_distribution"], "path"])[:3]
    assert len(images) == 3
    # the training data's mix (the default), the balanced scores (the checkpoint was trained
    # with tau = 1: they are the equal-prior probabilities) and a clinic's melanoma rate
    ref, balanced, clinic = (
        predict_images(
            ckpt,
            images,
            tta=app.demo_model.views,
            show_progress=False,
            precision="float32",
            prior=prior,
        )
        for prior in ("data", "equal", "mel=0.02")
    )
    assert app.demo_model.views == ["identity", "hflip"]  # those of the thresholds
    dm = app.demo_model
    screening = next(c["label"] for c in dm.choices if "melanoma: sensitivity ≥ 95%" in c["label"])
    for i, path in enumerate(images):
        # the defaults: the first operating point, the training data's class mix
        label, verdict, cam, prep = client.predict(handle_file(path), api_name="/classify")
        got = {c["label"]: c["confidence"] for c in label["confidences"]}
        want = {c[2:]: ref.iloc[i][c] for c in _pcols(ref)}
        assert got.keys() == want.keys()
        assert max(abs(got[k] - want[k]) for k in got) < 1e-6
        assert label["label"] == max(want, key=want.get)  # the most probable under the mix
        assert f"Predicted class: {ref.iloc[i]['pred']}" in verdict  # the balanced decision
        assert "training data's class mix" in verdict and "training data's class mix" in prep
        assert "melanoma" in verdict and "sensitivity" in verdict and "specificity" in verdict
        p_mel = balanced.iloc[i]["p_mel"]  # a threshold applies to the balanced score
        assert ("Flagged" in verdict) == (p_mel >= dm.op["threshold"])
        assert Path(cam).exists()
        assert "resize `squash` to 32 x 32 px" in prep and "CC BY-NC 4.0" in prep
        # the user picks the screening point and a clinic's melanoma rate of 2%
        label, verdict, _, prep = client.predict(
            handle_file(path), screening, "a melanoma prevalence I give", 2.0, api_name="/classify"
        )
        got = {c["label"]: c["confidence"] for c in label["confidences"]}
        assert max(abs(got[c[2:]] - clinic.iloc[i][c]) for c in _pcols(clinic)) < 1e-6
        assert "sensitivity ≥ 95%" in verdict and "mel 2.0%" in prep
        thr = next(c["op"]["threshold"] for c in dm.choices if c["label"] == screening)
        assert ("Flagged" in verdict) == (p_mel >= thr)
        label, _, _, _ = client.predict(
            handle_file(path),
            screening,
            "equal priors (every class equally likely)",
            None,
            api_name="/classify",
        )
        got = {c["label"]: c["confidence"] for c in label["confidences"]}
        assert max(abs(got[c[2:]] - balanced.iloc[i][c]) for c in _pcols(balanced)) < 1e-6
    labels = [c["label"] for c in dm.choices]
    assert len(labels) == 8 and any(x.startswith("malignant (akiec, bcc, mel)") for x in labels)
    # an image far from the training images: no class, no verdict, the reason given
    from PIL import Image

    from skinhelpers.evaluate.ood import package_photos

    photos = tmp_path / "photos"
    photos.mkdir()
    for name, im in package_photos(crops_per_photo=0)[:8]:
        Image.fromarray(im).save(photos / f"{name}.png")
    far = predict_images(ckpt, photos, show_progress=False)
    flagged = far.loc[~far["in_distribution"], "path"]
    if len(flagged):  # a model trained for seconds may pass some photos: those it flags
        label, verdict, _, prep = client.predict(handle_file(flagged.iloc[0]), api_name="/classify")
        assert "does not look like the images the model was trained on" in verdict
        assert "Predicted class" not in verdict and "out-of-distribution score" in prep
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image at all")
    with pytest.raises(Exception, match="is not an image this demo can read"):
        client.predict(handle_file(bad), api_name="/classify")


@pytest.mark.slow
def test_demo_page_in_a_headless_browser(demo_server, tmp_path):
    from PIL import Image

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("no chromium binary (Debian: apt-get install chromium)")
    _, url = demo_server
    flags = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--window-size=1200,900",
        "--virtual-time-budget=15000",
    ]
    dom = subprocess.run(
        flags + ["--dump-dom", url], capture_output=True, text=True, timeout=120
    ).stdout
    assert "skinlesion-lab: try the model" in dom  # rendered by the page's JavaScript
    assert "Not a diagnostic device" in dom
    shot = tmp_path / "demo.png"
    subprocess.run(flags + [f"--screenshot={shot}", url], capture_output=True, timeout=120)
    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.shape == (900, 1200) and img.std() > 10  # a page, not a blank screen
    keep = Path(__file__).resolve().parents[1] / "runs" / "screenshots"
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, keep / "demo_page.png")  # for a human to look at (runs/ is ignored)
