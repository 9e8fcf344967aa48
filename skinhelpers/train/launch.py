"""Distributed launch, kept apart from the trainer: the launch-config file, the
``torchrun`` entry point (``python -m skinhelpers.train.launch --config cfg.json``) and
:func:`launch`, which starts it and streams its output.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from skinhelpers.data.imaging import canonical_size
from skinhelpers.files import PROJECT_ROOT, read_json, write_json
from skinhelpers.train import distributed as ddp
from skinhelpers.train.config import (
    TrainConfig,
)
from skinhelpers.train.experiment import load_data, train


def main(argv: list[str] | None = None) -> int:
    """``torchrun --nproc_per_node N -m skinhelpers.train.launch --config cfg.json``."""

    ap = argparse.ArgumentParser(
        prog="python -m skinhelpers.train.launch", description=main.__doc__
    )
    ap.add_argument(
        "--config", required=True, help="JSON written by experiment.write_launch_config"
    )
    a = ap.parse_args(argv)

    spec = json.loads(Path(a.config).read_text())
    res = run_from_launch_config(spec)
    if res is not None and res.get("rank", 0) == 0:
        summary = {k: v for k, v in res.items() if k not in ("history", "model")}
        write_json(Path(spec["out_dir"]) / "train_result.json", summary)
    return 0


def weight_checksums(model, dist: ddp.DistInfo) -> list[float]:
    """One checksum of all weights and buffers per rank (equal when DDP kept them in sync)."""

    total = sum(
        float(t.double().sum()) for t in model.state_dict().values() if t.is_floating_point()
    )
    return ddp.all_gather_cat(torch.tensor([total], dtype=torch.float64), dist).tolist()


def write_launch_config(
    path,
    cfg: TrainConfig,
    run_dir,
    out_dir,
    image_size: int | list[int],
    max_train_images: int = 0,
    augmentation: dict | None = None,
    fold: int | None = None,
) -> Path:
    """The JSON that ``python -m skinhelpers.train.launch --config`` reads (``fold``: the
    K-fold model to train, see :func:`skinhelpers.train.experiment.load_data`)."""
    spec = {
        "train": asdict(cfg),
        "run_dir": str(Path(run_dir).resolve()),
        "out_dir": str(Path(out_dir).resolve()),
        "image_size": canonical_size(image_size),
        "max_train_images": int(max_train_images or 0),
        "augmentation": augmentation,
        "fold": fold,
    }
    return write_json(path, spec)


def run_from_launch_config(spec: dict) -> dict:
    """What each torchrun process does: join the group, load the data, train."""
    cfg = TrainConfig.from_dict(spec["train"])
    dist = ddp.setup(cfg.device)
    try:
        if not dist.is_main:  # rank 0 builds the image cache, the others reuse it
            ddp.barrier(dist)
        data = load_data(
            spec["run_dir"],
            spec["image_size"],
            cfg.workers,
            cfg.seed,
            spec.get("max_train_images", 0),
            spec.get("augmentation"),
            show_progress=dist.is_main,
            fold=spec.get("fold"),
        )
        if dist.is_main:
            ddp.barrier(dist)
        res = train(cfg, data, spec["out_dir"], dist=dist)
        res["rank_checksums"] = weight_checksums(res.pop("model"), dist)
        return res
    finally:
        ddp.cleanup()


def launch(config_path, nproc: int, log_path=None, extra_env: dict | None = None) -> dict:
    """Run ``torchrun --nproc_per_node nproc -m skinhelpers.train.launch`` and stream its output.

    Returns the summary the main process wrote (``train_result.json``); a failure raises
    with the tail of the log.
    """

    spec = read_json(config_path)
    gpus = torch.cuda.device_count()
    if int(nproc) < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    if gpus and int(nproc) > gpus:
        raise ValueError(f"nproc={nproc} but this machine has {gpus} GPU(s); use at most {gpus}")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={int(nproc)}",
        "-m",
        "skinhelpers.train.launch",
        "--config",
        str(Path(config_path).resolve()),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH", "")])
    )
    print("$", " ".join(cmd), flush=True)
    tail: list[str] = []
    errors: list[str] = []  # first exception lines of the workers' tracebacks
    error_line = re.compile(r"^(\[rank\d+\]:\s*)?[\w.]*(Error|Exception)\b: ")
    log = open(log_path, "a") if log_path else None
    with subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=str(PROJECT_ROOT),
        bufsize=1,
    ) as proc:
        for line in proc.stdout:
            print(line, end="", flush=True)
            tail = (tail + [line])[-40:]
            if len(errors) < 3 and error_line.match(line):
                errors.append(line.strip())
            if log:
                log.write(line)
        rc = proc.wait()
    if log:
        log.close()
    if rc != 0:
        first = "\n".join(errors) or "(no exception line found)"
        raise RuntimeError(
            f"torchrun exited with status {rc}. First error(s):\n{first}\n"
            f"Last lines:\n{''.join(tail)}"
        )
    return read_json(Path(spec["out_dir"]) / "train_result.json")


if __name__ == "__main__":
    sys.exit(main())
