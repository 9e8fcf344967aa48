"""A reader who runs a chapter by hand, in JupyterLab (no papermill): the parameters left at
the notebook's defaults take the run's values, so the chapters of one run agree; the
figures go into the run folder."""

from __future__ import annotations

import json

import nbformat
import pytest
import torch
from helpers_train import demo_run_folder

from skinhelpers.files import PROJECT_ROOT, write_json

NB = PROJECT_ROOT / "notebooks"
pytestmark = pytest.mark.slow  # one kernel, a one-epoch training at 32 px (~40 s)


def test_07_run_by_hand_takes_the_runs_image_size(tmp_path, demo_dir, demo_manifest, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("SKINHELPERS_PROGRESS", "plain")
    monkeypatch.delenv("SKINHELPERS_RUN_PARAMS", raising=False)
    monkeypatch.delenv("SKINHELPERS_NOTEBOOK_DIR", raising=False)
    run = demo_run_folder(demo_manifest, tmp_path / "run")
    # what run_all.sh recorded (its command line and profile)
    write_json(
        run / "run.json",
        {
            "parameters": {
                "dataset": "demo",
                "data_dir": str(demo_dir),
                "run_dir": str(run),
                "image_size": 32,
                "arch": "small_cnn",
                "epochs": 1,
                "freeze_epochs": 0,
                "batch_size": 16,
                "workers": 0,
                "patience": 0,
            }
        },
    )
    nb = nbformat.read(NB / "07_final_retrain.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert 'run_dir = "runs/interactive"' in cell.source and "image_size = 128" in cell.source
    # the reader's one edit: which run folder
    cell.source = cell.source.replace('run_dir = "runs/interactive"', f"run_dir = {str(run)!r}")
    from nbclient import NotebookClient

    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NB)}}
    ).execute()

    rec = json.loads((run / "params" / "07_final_retrain.json").read_text())
    assert rec["params"]["image_size"] == 32 and rec["params"]["arch"] == "small_cnn"
    assert rec["from_run"]["image_size"] == "run.json" and "run_dir" not in rec["from_run"]
    raw = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert raw["image_size"] == 32 and raw["arch"] == "small_cnn"
    text = "".join(
        o.get("text", "") for c in nb.cells for o in c.get("outputs", []) if o.get("name")
    )
    assert "take the run's value" in text and "image_size = 32  (notebook default 128" in text
    # 07 shows what differs from TrainConfig's defaults, not every field
    assert "TrainConfig fields differ from their defaults" in text
    # the figures of this run are in its folder
    assert (run / "figures" / "07_learning_curves.png").exists()
