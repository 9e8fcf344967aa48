"""The ways a model leaves the suite, offline (issue 27 item 5): the ``predict`` CLI, the
ONNX export and its parity with torch, the model card and the demo page (Gradio client), on
the synthetic demo set only, so ``-m "not realdata"`` covers them too.

One run folder is built once for the whole file: a manifest and split of the demo set, two
short-trained checkpoints (seconds) and notebook 08 executed on them (thresholds, metrics, the
out-of-distribution guard stored in the reported checkpoint). tests/test_share.py and
tests/test_predict.py test the same paths on real HAM10000 images.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_notebook_08 import small_evaluated_run

from skinhelpers.__main__ import main as cli
from skinhelpers.data import manifest as datasets
from skinhelpers.evaluate.predict import predict_images

pytestmark = pytest.mark.slow


def _pcols(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c.startswith("p_")]


@pytest.fixture(scope="module")
def run08(demo_manifest, demo_dir, tmp_path_factory):
    df = datasets.subsample(demo_manifest, 120, seed=0)
    return small_evaluated_run(tmp_path_factory.mktemp("offline08"), df, "demo", demo_dir)


@pytest.fixture(scope="module")
def test_images(run08):
    """Paths of ten test-split images of the run (never trained on)."""
    pred = pd.read_csv(run08 / "predictions_test.csv")
    man = pd.read_csv(run08 / "manifest.csv")
    paths = dict(zip(man["image_id"], man["path"]))
    return [paths[i] for i in pred["image_id"].head(10)]


def test_predict_cli_writes_guarded_probabilities_and_skips_bad_files(
    run08, test_images, tmp_path, capsys
):
    folder = tmp_path / "in"
    folder.mkdir()
    for p in test_images[:5]:
        (folder / Path(p).name).write_bytes(Path(p).read_bytes())
    (folder / "corrupt.jpg").write_bytes(b"not a jpeg" * 20)
    out, errs = tmp_path / "preds.csv", tmp_path / "errors.csv"
    ckpt = run08 / "checkpoints" / "best_ema.pt"
    rc = cli(["predict", "--checkpoint", str(ckpt), "--images", str(folder), "--out", str(out),
              "--errors", str(errs)])  # fmt: skip
    assert rc == 0
    assert "corrupt.jpg" in capsys.readouterr().err
    df = pd.read_csv(out)
    assert sorted(df["image_id"]) == sorted(Path(p).stem for p in test_images[:5])
    p = df[_pcols(df)].to_numpy()
    assert np.allclose(p.sum(1), 1, atol=1e-6) and (p >= 0).all()
    # the guard 08 stored travels with the checkpoint: a score and a verdict per image
    assert df["ood_score"].notna().all()
    assert df["in_distribution"].dtype == bool
    assert list(pd.read_csv(errs)["path"].map(lambda s: Path(s).name)) == ["corrupt.jpg"]
    # an unreadable checkpoint is a clear error naming it, not a traceback
    bad = tmp_path / "missing.pt"
    args = ["predict", "--checkpoint", str(bad), "--images", str(folder), "--out", str(out)]
    try:
        rc = cli(args)
    except SystemExit as e:
        rc = e.code
    assert rc != 0 and "missing.pt" in capsys.readouterr().err


def test_onnx_export_gives_the_same_probabilities_and_ood_score(run08, test_images, tmp_path):
    ckpt = run08 / "checkpoints" / "best_ema.pt"
    out = tmp_path / "onnx"
    assert cli(["export", "--checkpoint", str(ckpt), "--format", "onnx", "--out", str(out)]) == 0
    cfg = json.loads((out / "config.json").read_text())
    m = json.loads((run08 / "metrics.json").read_text())
    assert cfg["ood_guard"] is not None and cfg["thresholds"]["class"] == "mel"
    assert [o["threshold"] for o in cfg["thresholds"]["operating_points"]] == [
        o["threshold"] for o in m["positive_class"]["operating_points"]
    ]
    kw = dict(tta=2, batch_size=4, show_progress=False)
    a = predict_images(ckpt, test_images, precision="float32", **kw)
    b = predict_images(out / "model.onnx", test_images, **kw)
    assert np.abs(a[_pcols(a)].to_numpy() - b[_pcols(b)].to_numpy()).max() < 1e-4
    np.testing.assert_allclose(b["ood_score"], a["ood_score"], rtol=1e-4)
    assert (a["in_distribution"] == b["in_distribution"]).all()


def test_model_card_of_the_demo_run(run08):
    from skinhelpers.run.report import render_report

    index = render_report(run08)
    card = (run08 / "MODEL_CARD.md").read_text()
    m = json.loads((run08 / "metrics.json").read_text())
    for heading in ("## Model", "## Intended use", "## Test metrics (95% bootstrap CI)",
                    "## Operating points: melanoma", "## Limits", "## Licence"):  # fmt: skip
        assert heading in card, heading
    ba = m["models"][m["primary"]]["headline"]["balanced_accuracy"]
    assert f"{ba['value']:.3f} ({ba['ci_low']:.3f}–{ba['ci_high']:.3f})" in card
    assert "SYNTHETIC" in card  # a model of made-up images says so
    assert "model_card.html" in index.read_text()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_demo_page_answers_like_predict(run08, test_images):
    from gradio_client import Client, handle_file

    from skinhelpers.share.demo import serve

    ckpt = run08 / "checkpoints" / "best_ema.pt"
    port = _free_port()
    app = serve(ckpt, port=port, block=False, precision="float32")
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        ref = predict_images(
            ckpt, test_images, tta=app.demo_model.views, show_progress=False, precision="float32"
        )
        passed = ref[ref["in_distribution"]]
        assert len(passed), "the guard flagged every test image of its own run"
        row = passed.iloc[0]
        label, verdict, _, _ = client.predict(handle_file(row["path"]), api_name="/classify")
        got = {c["label"]: c["confidence"] for c in label["confidences"]}
        assert max(abs(got[c[2:]] - row[c]) for c in _pcols(ref)) < 1e-6
        assert f"Predicted class: {row['pred']}" in verdict
    finally:
        app.close()
