"""Probabilities said right: the trainer records the logit adjustment's prior in every
checkpoint, and ``predict`` (checkpoint and ONNX) gives probabilities under the training
data's class mix by default, under equal priors or a given prevalence on request, while
the predicted class stays the balanced decision."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers_train import toy_dataset
from short_checkpoint import pick_images, train_short_checkpoint

from skinhelpers.evaluate import priors
from skinhelpers.evaluate.predict import predict_images
from skinhelpers.model import checkpoints
from skinhelpers.model.inference import predict_batch
from skinhelpers.train.config import DataMeta, TrainConfig
from skinhelpers.train.sampling import sampling_prior
from skinhelpers.train.trainer import Trainer


def _softmax(z):
    z = np.asarray(z, float)
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


# ----------------------------------------------------------------------------- the record


def test_the_trainer_saves_tau_and_both_priors_in_every_checkpoint(tmp_path):
    ds, _ = toy_dataset(60, size=24)
    labels = np.array([0] * 36 + [1] * 16 + [2] * 8)  # imbalanced: 60% / 27% / 13%
    ds = torch.utils.data.TensorDataset(ds.tensors[0], torch.as_tensor(labels))
    meta = DataMeta(classes=["a", "b", "c"], image_size=24, positive_class="b", dataset="toy")
    cfg = TrainConfig(
        arch="small_cnn",
        epochs=1,
        batch_size=16,
        workers=0,
        patience=0,
        tensorboard=False,
        seed=0,
        balance_power=0.5,
        logit_adjust_tau=1.0,
    )
    Trainer(cfg, ds, ds, labels, meta, tmp_path / "out").fit()
    for name in ("best.pt", "last.pt"):
        ck = checkpoints.load_checkpoint(tmp_path / "out" / "checkpoints" / name)
        rec = checkpoints.train_prior(ck)
        assert rec["tau"] == 1.0
        assert np.allclose(rec["sampling"], sampling_prior(labels, 3, 0.5).numpy(), atol=1e-6)
        assert np.allclose(rec["data"], [0.6, 16 / 60, 8 / 60], atol=1e-6)
        # square-root balancing: the batches' mix is not the data's
        assert not np.allclose(rec["sampling"], rec["data"], atol=0.05)


def test_a_checkpoint_without_the_record_reads_as_none():
    assert checkpoints.train_prior({"classes": ["a", "b"]}) is None
    with pytest.raises(checkpoints.CheckpointError, match="does not fit"):
        checkpoints.train_prior(
            {"classes": ["a", "b"], "train_prior": {"tau": 1, "sampling": [1], "data": [1, 1]}}
        )


# ----------------------------------------------------------------------------- the math

CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
DATA = np.array([327, 514, 1099, 115, 1113, 6705, 142], float) / 10015  # HAM10000's mix


def _logits(n=50, seed=0):
    return np.random.default_rng(seed).normal(0, 2, (n, len(CLASSES)))


def test_data_prior_with_unbalanced_batches_is_softmax_of_logits_plus_tau_log_prior():
    """balance_power 0: the batches had the data's mix, and the probabilities under it are
    softmax(logits + tau * log(prior)), for any tau; they sum to one; the decision stays."""
    z = _logits()
    for tau in (1.0, 0.5, 0.0):
        rec = {"tau": tau, "sampling": DATA.tolist(), "data": DATA.tolist()}
        shift = priors.prior_shift(rec, CLASSES, "data")
        p = shift.apply(_softmax(z))
        assert np.allclose(p.sum(1), 1, atol=1e-12)
        assert np.allclose(p, _softmax(z + tau * np.log(DATA)), atol=1e-12)
        assert np.allclose(p, _softmax(z + shift.offsets), atol=1e-12)
    assert (priors.balanced_decision(_softmax(z)) == z.argmax(1)).all()


def test_data_prior_with_square_root_balanced_batches():
    """balance_power 0.5 (the default): the model's probabilities under the batches' mix,
    softmax(logits + tau log pi_s), moved by Bayes' rule to the data's mix."""
    z = _logits(seed=1)
    sampling = np.sqrt(DATA) / np.sqrt(DATA).sum()
    for tau in (1.0, 0.7):
        rec = {"tau": tau, "sampling": sampling.tolist(), "data": DATA.tolist()}
        p = priors.prior_shift(rec, CLASSES).apply(_softmax(z))
        batches = _softmax(z + tau * np.log(sampling))  # what the training loss fitted
        direct = batches * DATA / sampling
        assert np.allclose(p, direct / direct.sum(1, keepdims=True), atol=1e-12)
        # tau = 1: simply softmax(logits + log(data prior))
        if tau == 1.0:
            assert np.allclose(p, _softmax(z + np.log(DATA)), atol=1e-12)
    # data prior moves mass towards nv, away from the rare classes, on average
    assert p[:, CLASSES.index("nv")].mean() > _softmax(z)[:, CLASSES.index("nv")].mean()


def test_equal_and_given_prevalence():
    z = _logits(seed=2)
    rec = {"tau": 1.0, "sampling": DATA.tolist(), "data": DATA.tolist()}
    assert np.allclose(priors.prior_shift(rec, CLASSES, "equal").apply(_softmax(z)), _softmax(z))
    shift = priors.prior_shift(rec, CLASSES, "mel=2%")
    q = shift.target
    assert q[CLASSES.index("mel")] == pytest.approx(0.02) and q.sum() == pytest.approx(1)
    others = np.array([c != "mel" for c in CLASSES])
    assert np.allclose(q[others] / q[others].sum(), DATA[others] / DATA[others].sum())
    p = shift.apply(_softmax(z))
    assert np.allclose(p, _softmax(z + np.log(q)), atol=1e-12)
    assert shift.record()["target"]["mel"] == pytest.approx(0.02)
    assert "class mix given (akiec" in shift.describe() and "mel 2.0%" in shift.describe()


def test_prior_specs_and_refusals():
    assert priors.parse_prior("DATA") == "data" and priors.parse_prior("uniform") == "equal"
    assert priors.parse_prior("Balanced") == "balanced"
    assert priors.parse_prior("mel=0.02, bcc=1%") == {"mel": 0.02, "bcc": 0.01}
    assert priors.parse_prior("0.5,0.5") == [0.5, 0.5]
    for bad, msg in (
        ("mel=abc", "not a number"),
        ("mel=1.5", "probability"),
        ("sometimes", "give 'data'"),
    ):
        with pytest.raises(ValueError, match=msg):
            priors.parse_prior(bad)
    with pytest.raises(ValueError, match="model's classes"):
        priors.target_prior({"melanoma": 0.1}, CLASSES, DATA)
    with pytest.raises(ValueError, match="leave nothing"):
        priors.target_prior({"mel": 0.6, "nv": 0.5}, CLASSES, DATA)
    with pytest.raises(ValueError, match="numbers for 7 classes"):
        priors.target_prior([0.5, 0.5], CLASSES, DATA)


def test_balanced_is_the_raw_softmax_for_any_tau():
    """'balanced' leaves the scores as they are (what 08's metrics and thresholds use); with
    tau = 1 it is 'equal', otherwise the mix pi_s ** (1 - tau) it stands for."""
    z = _logits(seed=4)
    sampling = np.sqrt(DATA) / np.sqrt(DATA).sum()
    for tau in (1.0, 0.5):
        rec = {"tau": tau, "sampling": sampling.tolist(), "data": DATA.tolist()}
        shift = priors.prior_shift(rec, CLASSES, "balanced")
        assert np.allclose(shift.apply(_softmax(z)), _softmax(z), atol=1e-12)
        q = sampling ** (1 - tau)
        assert np.allclose(shift.target, q / q.sum())
        equal = priors.prior_shift(rec, CLASSES, "equal").apply(_softmax(z))
        assert np.allclose(equal, _softmax(z), atol=1e-12) == (tau == 1.0)
    assert "softmax of the raw logits" in shift.describe()


def test_no_record_means_equal_priors_with_a_note():
    z = _logits(seed=3)
    shift = priors.prior_shift(None, CLASSES, "data")
    assert not shift.known and shift.name == "equal"
    assert np.allclose(shift.apply(_softmax(z)), _softmax(z))
    assert "carries no training prior" in shift.describe()
    assert shift.record()["note"] == priors.NO_PRIOR_NOTE


# ----------------------------------------------------------------------------- predict


@pytest.fixture(scope="module")
def ham_checkpoints(ham_manifest, tmp_path_factory):
    """A short-trained CNN on real HAM10000 images, saved twice: with a train_prior record
    (tau 1, square-root balanced batches, HAM10000's class mix) and without (an old file)."""
    sub = pick_images(ham_manifest, per_class=3, seed=0)
    sub.attrs = ham_manifest.attrs
    d = tmp_path_factory.mktemp("priors")
    old = train_short_checkpoint(sub, d / "old.pt", size=32, steps=8)
    ck = checkpoints.load_checkpoint(old)
    counts = ham_manifest["label"].value_counts().reindex(ck["classes"]).to_numpy(float)
    rec = {
        "tau": 1.0,
        "sampling": (np.sqrt(counts) / np.sqrt(counts).sum()).tolist(),
        "data": (counts / counts.sum()).tolist(),
    }
    ck["train_prior"] = rec
    new = d / "new.pt"
    torch.save(ck, new)
    rest = ham_manifest[~ham_manifest["image_id"].isin(sub["image_id"])]
    images = list(pick_images(rest, per_class=1, seed=1)["path"])
    return old, new, rec, images


def test_predict_gives_the_data_prior_and_keeps_the_balanced_decision(ham_checkpoints):
    old, new, rec, images = ham_checkpoints
    df = predict_images(new, images, show_progress=False, precision="float32")
    classes = df.attrs["classes"]
    pcols = [f"p_{c}" for c in classes]
    p = df[pcols].to_numpy()
    assert np.allclose(p.sum(1), 1, atol=1e-9)
    # the direct computation from the network's raw logits
    model, info = checkpoints.model_from_checkpoint(new)
    from skinhelpers.data.imaging import load_for_model

    x = torch.from_numpy(
        np.stack([load_for_model(f, 32, info["preprocess"], info["resize_mode"]) for f in images])
    ).permute(0, 3, 1, 2)
    _, logits = predict_batch(model, x, info["mean"], info["std"], 1)
    z = logits.numpy()
    assert np.allclose(p, _softmax(z + np.log(rec["data"])), atol=1e-5)
    assert (df["pred"] == [classes[i] for i in z.argmax(1)]).all()  # the balanced decision
    rows = np.arange(len(df))
    assert np.allclose(df["confidence"], p[rows, z.argmax(1)])
    assert df.attrs["prior"]["prior"] == "data" and df.attrs["prior"]["known"]
    # the data's mix is two-thirds nv: its probability rises against the balanced scores
    assert (df["p_nv"].to_numpy() >= _softmax(z)[:, classes.index("nv")] - 1e-9).all()
    eq = predict_images(new, images, show_progress=False, precision="float32", prior="equal")
    assert np.allclose(eq[pcols].to_numpy(), _softmax(z), atol=1e-5)
    assert (eq["pred"] == df["pred"]).all()
    clinic = predict_images(new, images, show_progress=False, precision="float32", prior="mel=0.02")
    assert (clinic["pred"] == df["pred"]).all()
    assert clinic.attrs["prior"]["target"]["mel"] == pytest.approx(0.02)
    # an old checkpoint: equal priors, with a note
    o = predict_images(old, images, show_progress=False, precision="float32")
    assert np.allclose(o[pcols].to_numpy(), _softmax(z), atol=1e-5)
    assert not o.attrs["prior"]["known"] and "no training prior" in o.attrs["prior"]["note"]


def test_cli_prior_option_and_onnx_export(ham_checkpoints, tmp_path, capsys):
    from skinhelpers.__main__ import main as cli

    old, new, rec, images = ham_checkpoints
    out = tmp_path / "onnx"
    assert cli(["export", "--checkpoint", str(new), "--format", "onnx", "--out", str(out)]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["train_prior"]["tau"] == 1.0
    assert np.allclose(cfg["train_prior"]["data"], rec["data"])
    assert cfg["probabilities"]["default_prior"] == "data"
    off = np.array(list(cfg["probabilities"]["data_prior_logit_offsets"].values()))
    # the offsets a user adds to the logits give the same probabilities as predict
    ref = predict_images(new, images, show_progress=False, precision="float32")
    pcols = [c for c in ref.columns if c.startswith("p_")]
    onnx = predict_images(out / "model.onnx", images, show_progress=False)
    assert np.allclose(onnx[pcols].to_numpy(), ref[pcols].to_numpy(), atol=1e-5)
    assert (onnx["pred"] == ref["pred"]).all()
    assert np.allclose(np.exp(off) / np.exp(off).sum(), rec["data"], atol=1e-9)  # tau = 1
    csv = tmp_path / "p.csv"
    argv = ["predict", "--checkpoint", str(new), "--images", *images[:3], "--out", str(csv)]
    assert cli([*argv, "--prior", "mel=0.05", "--precision", "float32"]) == 0
    said = capsys.readouterr().out
    assert "mel 5.0%" in said and "balanced decision" in said
    assert cli([*argv, "--prior", "melanoma=0.05"]) == 2
    assert "model's classes" in capsys.readouterr().err
    old_cfg = tmp_path / "old"
    assert cli(["export", "--checkpoint", str(old), "--format", "onnx", "--out", str(old_cfg)]) == 0
    c = json.loads((old_cfg / "config.json").read_text())
    assert c["train_prior"] is None and c["probabilities"]["default_prior"] == "equal"
    assert "no training prior" in c["probabilities"]["note"]
