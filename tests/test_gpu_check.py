"""benchmarks/gpu_check.sh, the prepared GPU check of issue 26, runs end to end on the CPU with
tiny arguments (the SYNTHETIC demo set, 32 px, a few steps, three fold models of one epoch)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from test_gpu_profile import TINY_GPU_OVERRIDES

from skinhelpers.files import PROJECT_ROOT
from skinhelpers.run import pipeline


def _pairs(selected: str) -> str:
    """TINY_GPU_OVERRIDES that the notebooks ``selected`` declare, as ``-p NAME VALUE``."""
    nbs = pipeline.select(pipeline.numbered_notebooks(), selected)
    declared = set().union(*(pipeline.declared_parameters(nb) for nb in nbs))
    keep = {k: v for k, v in TINY_GPU_OVERRIDES.items() if k in declared and k != "image_size"}
    return " ".join(f"-p {k} {v}" for k, v in keep.items())


@pytest.mark.slow
def test_gpu_check_runs_on_the_cpu_with_tiny_arguments(tmp_path):
    out = tmp_path / "out"
    env = {
        **os.environ,
        "PY": sys.executable,
        "DATASET": "demo",
        "RUN": str(tmp_path / "run"),
        "GPU_CHECK_OUT": str(out),
        "IMAGE_SIZE": "32",
        "BATCH_SIZES": "8,16",
        "STEPS": "2",
        "REPEATS": "1",
        "N_CACHE": "48",
        "MAX_MINUTES": "1",
        "PREP_P": _pairs("01-05"),
        "RUN_P": _pairs("07-08"),
        "HF_HUB_OFFLINE": "1",
    }
    proc = subprocess.run(
        ["bash", str(PROJECT_ROOT / "benchmarks" / "gpu_check.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "=== gpu_check 5/5" in proc.stdout
    env_json = json.loads((out / "env.json").read_text())
    assert env_json["torch"] and "gpus" in env_json
    eager = json.loads((out / "eager" / "train_overhead.json").read_text())
    assert eager["image_size"] == 32 and eager["batch_sizes"] == [8, 16]
    assert {(r["batch_size"], r["loop"]) for r in eager["rows"]} == {
        (b, loop) for b in (8, 16) for loop in ("bare", "trainer")
    }
    compiled = json.loads((out / "compiled" / "train_overhead.json").read_text())
    assert compiled["compile_modes"] == ["reduce-overhead"] and compiled["batch_sizes"] == [16]
    assert not any(r["compiled"] for r in compiled["rows"])  # a GPU mode: eager on the CPU
    summary = json.loads((out / "summary.json").read_text())
    assert summary["predictions_saved"] == [
        "predictions_test.csv",
        "predictions_test_ensemble.csv",
    ]
    assert summary["models"] == 3 and summary["max_minutes"] == 1.0
    assert {"ensemble", summary["primary"]} <= set(summary["test"])
    run = json.loads((out / "run" / "run.json").read_text())
    assert run["profile"] == "gpu" and run["parameters"]["arch"] == "efficientnet_lite0"
    assert len(list((out / "run" / "folds").iterdir())) == 2
