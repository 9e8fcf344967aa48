"""Notebooks 01-03 run under papermill (via the pipeline) on demo and on real HAM10000."""

from __future__ import annotations

import json
import shutil
import uuid

import nbformat
import pandas as pd
import pytest

from skinhelpers.files import PROJECT_ROOT
from skinhelpers.run import pipeline

pytestmark = pytest.mark.slow
PAIR_COLUMNS = {"relpath_a", "relpath_b", "distance", "kind", "same_group"}


@pytest.fixture
def run_name():
    name = f"pytest-nb0103-{uuid.uuid4().hex[:8]}"
    yield name
    shutil.rmtree(PROJECT_ROOT / "runs" / name, ignore_errors=True)


def _check_common(run_dir, preprocess):
    for nb in ("01_eda.ipynb", "02_quality_preprocessing.ipynb", "03_leakage.ipynb"):
        assert (run_dir / nb).exists(), nb
    record = json.loads((run_dir / "run.json").read_text())
    assert "failed" not in record and set(record["timings_s"]) == {
        "01_eda.ipynb",
        "02_quality_preprocessing.ipynb",
        "03_leakage.ipynb",
    }
    manifest = pd.read_csv(run_dir / "manifest.csv")
    for f in ("manifest.json", "validation_findings.csv", "image_info.csv"):
        assert (run_dir / f).exists(), f
    q = pd.read_csv(run_dir / "quality.csv")
    assert q["relpath"].is_unique and set(q["relpath"]) <= set(manifest["relpath"])
    assert q["error"].isna().all()
    assert json.loads((run_dir / "preprocessing.json").read_text()) == {
        "preprocess": preprocess,
        "resize_mode": "squash",
    }
    pairs = pd.read_csv(run_dir / "near_duplicates.csv")
    assert PAIR_COLUMNS <= set(pairs.columns)
    assert set(pairs["kind"]) <= {"exact", "near"}
    return manifest, q, pairs


def test_notebooks_01_03_on_demo(run_name):
    run_dir = pipeline.run(
        "demo",
        None,
        "smoke",
        run_name,
        only="01-03",
        extra={
            "image_size": 32,
            "preprocess": "hair_removal+clahe",
            "sample_size": 10,
            "near_dup_scope": "manifest",
        },
        html=False,
    )
    manifest, q, pairs = _check_common(run_dir, "hair_removal+clahe")
    assert len(q) == len(manifest) == 521  # 523 files, the 2 planted copies deduplicated
    # the planted identical pairs of the demo set are found in the raw files
    assert (pairs["kind"] == "exact").sum() == 2
    # and the planted re-encoded melanoma filed as a nevus of another lesion
    cross = pairs[(pairs["kind"] == "near") & ~pairs["same_group"].astype(bool)]
    assert len(cross) >= 1
    # the chosen preprocessing reached the cache
    caches = list(
        (PROJECT_ROOT / "data" / "cache" / "demo").glob("32px-hair_removal_clahe-squash-*.json")
    )
    assert caches and json.loads(caches[0].read_text())["n"] == len(manifest)
    for fig in (
        "01_meta_dx_type",
        "01_image_sizes",
        "02_before_after",
        "02_cost",
        "03_split_leak",
        "03_associations",
    ):
        assert (PROJECT_ROOT / "figures" / "demo" / f"{fig}.png").exists(), fig


@pytest.mark.realdata
def test_notebooks_01_03_on_real_ham10000(ham_dir, run_name):
    run_dir = pipeline.run(
        "ham10000",
        str(ham_dir.parent),
        "smoke",
        run_name,
        only="01-03",
        extra={
            "max_images": 400,
            "image_size": 32,
            "sample_size": 10,
            "near_dup_scope": "manifest",
        },
        html=False,
    )
    manifest, q, pairs = _check_common(run_dir, "none")
    assert 300 <= len(manifest) <= 500 and len(q) == min(400, len(manifest))
    exact = pairs[pairs["kind"] == "exact"]
    stem = lambda p: p.split("/")[-1][:-4]  # noqa: E731
    found = {frozenset({stem(a), stem(b)}) for a, b in zip(exact["relpath_a"], exact["relpath_b"])}
    assert found == {
        frozenset({"ISIC_0024366", "ISIC_0029861"}),
        frozenset({"ISIC_0024777", "ISIC_0029938"}),
    }
    # 01 on the real data: every class, the validation's only finding the identical
    # files, the resolved parameters beside the run, the plots drawn
    assert set(manifest["label"]) == {"akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"}
    assert set(pd.read_csv(run_dir / "validation_findings.csv")["kind"]) == {"byte_identical"}
    params = json.loads((run_dir / "params" / "01_eda.json").read_text())["params"]
    assert params["dataset"] == "ham10000" and params["max_images"] == 400
    nb = nbformat.read(run_dir / "01_eda.ipynb", as_version=4)
    assert any(
        o.get("output_type") == "display_data" for c in nb.cells for o in c.get("outputs", [])
    )
