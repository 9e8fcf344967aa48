"""``python -m skinhelpers predict`` and ``predict_images`` on real HAM10000 images."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from short_checkpoint import pick_images, train_short_checkpoint

from skinhelpers.__main__ import main as cli
from skinhelpers.data.imaging import load_for_model
from skinhelpers.evaluate.predict import predict_images
from skinhelpers.model.checkpoints import model_from_checkpoint
from skinhelpers.model.inference import to_model_input

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(ham_manifest, tmp_path_factory):
    """A small CNN trained for a few steps on 21 real images, stored with a
    non-default preprocessing and resize mode (prediction must take them from the file)."""
    sub = pick_images(ham_manifest, per_class=3, seed=0)
    sub.attrs = ham_manifest.attrs
    d = tmp_path_factory.mktemp("predict")
    ckpt = train_short_checkpoint(
        sub, d / "short.pt", size=32, steps=10, preprocess="shades_of_gray", resize_mode="crop"
    )
    return ckpt, sub


@pytest.fixture(scope="module")
def image_dir(trained, tmp_path_factory):
    """Six real images, a corrupt .jpg, a truncated .jpg and a text file."""
    _, sub = trained
    d = tmp_path_factory.mktemp("images")
    for p in sub["path"].iloc[:6]:
        shutil.copy(p, d)
    (d / "corrupt.jpg").write_bytes(b"this is not a jpeg at all" * 10)
    raw = Path(sub["path"].iloc[6]).read_bytes()
    (d / "sub").mkdir()
    (d / "sub" / "truncated.jpg").write_bytes(raw[:200])
    (d / "notes.txt").write_text("not an image")
    return d


def _check_frame(df: pd.DataFrame, classes: list[str]):
    pcols = [f"p_{c}" for c in classes]
    assert list(df.columns[:2]) == ["image_id", "path"]
    assert pcols == [c for c in df.columns if c.startswith("p_")]
    p = df[pcols].to_numpy()
    assert np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()
    assert np.allclose(p.sum(1), 1.0, atol=1e-6)
    assert (df["pred"] == [classes[i] for i in p.argmax(1)]).all()


def test_cli_writes_probabilities_and_skips_corrupt_files(trained, image_dir, tmp_path, capsys):
    ckpt, sub = trained
    classes = sub.attrs["classes"]
    out, errs = tmp_path / "preds.csv", tmp_path / "errors.csv"
    rc = cli(
        [
            "predict",
            "--checkpoint",
            str(ckpt),
            "--images",
            str(image_dir),
            "--out",
            str(out),
            "--errors",
            str(errs),
        ]
    )
    assert rc == 0
    captured = capsys.readouterr()
    assert "corrupt.jpg" in captured.err and "truncated.jpg" in captured.err
    df = pd.read_csv(out)
    assert len(df) == 6
    assert set(df["image_id"]) == set(sub["image_id"].iloc[:6])
    _check_frame(df, classes)
    bad = pd.read_csv(errs)
    assert sorted(Path(p).name for p in bad["path"]) == ["corrupt.jpg", "truncated.jpg"]


def test_python_api_applies_the_stored_preprocessing(trained, image_dir):
    ckpt, sub = trained
    files = sorted(p for p in image_dir.glob("ISIC_*.jpg"))
    df = predict_images(ckpt, files, show_progress=False, precision="float32")
    assert len(df) == len(files) and df.attrs["skipped"] == []
    model, info = model_from_checkpoint(ckpt)
    assert (info["preprocess"], info["resize_mode"], info["image_size"]) == (
        "shades_of_gray",
        "crop",
        32,
    )

    def manual(pre, mode):
        x = torch.from_numpy(np.stack([load_for_model(f, 32, pre, mode) for f in files]))
        with torch.no_grad():
            return (
                model(to_model_input(x.permute(0, 3, 1, 2), info["mean"], info["std"]))
                .softmax(1)
                .numpy()
            )

    got = df[[f"p_{c}" for c in info["classes"]]].to_numpy()
    assert np.allclose(got, manual("shades_of_gray", "crop"), atol=1e-5)
    assert not np.allclose(got, manual("none", "squash"), atol=1e-3)


def test_tta_option_and_files_and_folders_mixed(trained, image_dir):
    ckpt, sub = trained
    one = sorted(image_dir.glob("ISIC_*.jpg"))[0]
    d1 = predict_images(ckpt, [one, image_dir / "sub"], tta=1, show_progress=False)
    d8 = predict_images(ckpt, [one], tta=8, show_progress=False)
    assert len(d1) == 1 and len(d1.attrs["skipped"]) == 1  # the truncated file
    _check_frame(d8, sub.attrs["classes"])
    assert d8.attrs["tta_views"] == [
        "identity",
        "hflip",
        "vflip",
        "rot180",
        "rot90",
        "rot270",
        "transpose",
        "antitranspose",
    ]
    pc = [c for c in d1.columns if c.startswith("p_")]
    assert not np.allclose(d1[pc].to_numpy(), d8[pc].to_numpy(), atol=1e-6)


def test_errors_are_clear(trained, image_dir, tmp_path, capsys):
    ckpt, _ = trained
    assert (
        cli(
            [
                "predict",
                "--checkpoint",
                str(tmp_path / "nope.pt"),
                "--images",
                str(image_dir),
                "--out",
                str(tmp_path / "o.csv"),
            ]
        )
        == 2
    )
    assert "nope.pt does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.jpg").write_bytes(b"garbage")
    assert (
        cli(
            [
                "predict",
                "--checkpoint",
                str(ckpt),
                "--images",
                str(bad),
                "--out",
                str(tmp_path / "o.csv"),
            ]
        )
        == 1
    )
    assert "no image could be read" in capsys.readouterr().err
    assert (
        cli(
            [
                "predict",
                "--checkpoint",
                str(ckpt),
                "--images",
                str(tmp_path / "none"),
                "--out",
                str(tmp_path / "o.csv"),
            ]
        )
        == 2
    )


def test_module_command_runs(trained, image_dir, tmp_path):
    ckpt, _ = trained
    out = tmp_path / "p.csv"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "skinhelpers",
            "predict",
            "--checkpoint",
            str(ckpt),
            "--images",
            str(image_dir / "sub"),
            str(sorted(image_dir.glob("ISIC_*.jpg"))[0]),
            "--out",
            str(out),
            "--tta",
            "2",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "truncated.jpg" in r.stderr and "1 image(s) predicted" in r.stdout
    assert len(pd.read_csv(out)) == 1


def test_precision_float32_bfloat16_and_auto(trained, image_dir, tmp_path, capsys):
    from skinhelpers.device import cpu_has_native_bf16

    ckpt, sub = trained
    files = sorted(image_dir.glob("ISIC_*.jpg"))
    f32 = predict_images(ckpt, files, show_progress=False, precision="float32", device="cpu")
    b16 = predict_images(ckpt, files, show_progress=False, precision="bfloat16", device="cpu")
    auto = predict_images(ckpt, files, show_progress=False, device="cpu")
    assert (f32.attrs["precision"], b16.attrs["precision"]) == ("float32", "bfloat16")
    assert auto.attrs["precision"] == ("bfloat16" if cpu_has_native_bf16() else "float32")
    _check_frame(b16, sub.attrs["classes"])
    pc = [c for c in f32.columns if c.startswith("p_")]
    gap = np.abs(f32[pc].to_numpy() - b16[pc].to_numpy()).max()
    assert 0 < gap < 0.05  # autocast ran (bfloat16 rounds), and only rounds
    with pytest.raises(ValueError, match="precision 'fp16'"):
        predict_images(ckpt, files, show_progress=False, precision="fp16")
    out = tmp_path / "p.csv"
    args = ["predict", "--checkpoint", str(ckpt), "--images", str(files[0]), "--out", str(out)]
    assert cli([*args, "--precision", "float32"]) == 0
    assert "(float32)" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # argparse: invalid choice, exit status 2
        cli([*args, "--precision", "half"])
    assert "invalid choice: 'half'" in capsys.readouterr().err
