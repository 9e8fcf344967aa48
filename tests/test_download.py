"""Kaggle download without network or credentials: a clear error, fast."""

from __future__ import annotations

import subprocess
import sys

import pytest

from skinhelpers.data import download as D


@pytest.fixture()
def no_creds(monkeypatch, tmp_path):
    for k in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "kaggle-config"))


@pytest.mark.timeout(60)  # a hang guard, not a speed claim (that is benchmark territory)
def test_without_credentials_the_error_says_how_to_fix_it(no_creds, tmp_path):
    with pytest.raises(D.DownloadError) as e:
        D.download("ham10000", tmp_path / "dest")
    msg = str(e.value)
    assert "no Kaggle credentials" in msg and "kaggle.json" in msg and "KAGGLE_KEY" in msg
    assert "kmader/skin-cancer-mnist-ham10000" in msg and "--data-dir" in msg
    assert not (tmp_path / "dest").exists()  # nothing half-made


@pytest.mark.timeout(60)  # the download's own timeout is 2 s: a hang fails the test
def test_unreachable_kaggle_fails_fast_and_never_shows_the_key(monkeypatch, tmp_path):
    secret = "s3cr3t-key-do-not-print"
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", secret)
    monkeypatch.setattr(D, "KAGGLE_HOST", "kaggle.invalid")  # never resolves
    with pytest.raises(D.DownloadError) as e:
        D.download("isic9", tmp_path / "dest", timeout=2)
    assert "not reachable" in str(e.value) and secret not in str(e.value)


def test_an_existing_local_copy_is_used_without_any_network(no_creds, shared_data):
    assert D.download("ham10000", shared_data / "ham10000").name == "ham10000"


def test_demo_and_folder_are_not_downloadable(tmp_path):
    with pytest.raises(D.DownloadError, match="generated offline"):
        D.download("demo", tmp_path)
    with pytest.raises(D.DownloadError, match="point data_dir"):
        D.download("folder", tmp_path)


def test_cli_reports_the_error_with_exit_code_2(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KAGGLE_CONFIG_DIR": str(tmp_path)}
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "skinhelpers",
            "download",
            "melanoma10k",
            "--dest",
            str(tmp_path / "d"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert p.returncode == 2, p.stderr
    assert "no Kaggle credentials" in p.stderr
    assert "hasnainjaved/melanoma-skin-cancer-dataset-of-10000-images" in p.stderr
