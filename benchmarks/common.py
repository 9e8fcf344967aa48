"""Shared bits for the benchmark scripts: machine description, timing, result files."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from skinhelpers.files import shared_data_dir

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = shared_data_dir()
# where result JSON goes; the CI smoke test points it at a temporary folder
RESULTS_DIR = Path(os.environ.get("SKINLAB_BENCH_RESULTS", ROOT / "benchmarks" / "results"))


def machine() -> dict:
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "gpu": gpu,
        "python": platform.python_version(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
    }


def repeat(fn, repeats: int) -> list[float]:
    """Run ``fn`` ``repeats`` times; return the wall times in seconds."""
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def spread(values: list[float]) -> dict:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def save(name: str, payload: dict) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "machine": machine(), "command": " ".join(sys.argv), **payload}
    path = RESULTS_DIR / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    tmp.replace(path)
    print(f"wrote {path}")
    return path


def pipeline_args(pairs: list[list[str]]) -> dict:
    """``-p NAME VALUE`` pairs as notebook parameters (values parsed like run_all.sh does)."""
    from skinhelpers.run.pipeline import parse_value

    return {k: parse_value(v) for k, v in pairs}


def run_model(run_dir, checkpoint: str = "best_ema"):
    """A run folder's split and its checkpoint ready for CPU prediction:
    ``(split frame, checkpoint path, model, checkpoint info)``."""
    from skinhelpers.evaluate import summary, tta
    from skinhelpers.model import checkpoints
    from skinhelpers.split import store

    df = store.read_split(run_dir)
    primary, ckpts = summary.resolve_checkpoints(run_dir, checkpoint)
    raw, info = checkpoints.model_from_checkpoint(ckpts[primary], "cpu")
    return df, ckpts[primary], tta.prepare_model(raw, channels_last=True), info


def test_predictions(run_dir, csv: str = "predictions_test.csv"):
    """A run's test predictions (notebook 08's CSV): ``(frame, y, probs, classes, groups,
    source)``. ``groups``: each image's lesion, from the CSV's ``group`` column or, for a
    CSV written before it had one, the run's ``split.csv`` (by relpath); ``None`` when
    neither has them (``source`` "none": the bootstrap then resamples images)."""
    import numpy as np
    import pandas as pd

    from skinhelpers.evaluate.compare import prediction_groups

    path = Path(run_dir) / csv
    if not path.exists():
        raise SystemExit(f"{path} not found: run notebook 08 in {run_dir} first")
    df = pd.read_csv(path)
    cols = [c for c in df.columns if c.startswith("p_")]
    classes = [c[2:] for c in cols]
    unknown = sorted(set(df["label"]) - set(classes))
    if unknown:
        raise SystemExit(f"{path}: labels {unknown} have no probability column")
    y = df["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    groups, source = (None, "none")
    if "relpath" in df.columns:
        groups, source = prediction_groups(df, Path(run_dir))
    return (
        df,
        y,
        df[cols].to_numpy(np.float64),
        classes,
        (None if groups is None else groups.to_numpy()),
        source,
    )


def unit_note(groups, source: str) -> str:
    """One line saying what the bootstrap resamples."""
    if groups is None:
        return (
            "bootstrap: images (no lesion groups: no 'group' column and no split.csv), "
            "intervals too narrow where a lesion has several images"
        )
    return f"bootstrap: {len(set(groups)):,} lesions (groups from {source})"
