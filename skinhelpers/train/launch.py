"""Distributed launch, kept apart from the trainer: the launch-config file, the
``torchrun`` entry point (``python -m skinhelpers.train.launch --config cfg.json``) and
:func:`launch`, which starts it and streams its output.

**Several machines.** ``launch(..., nnodes=2, node_rank=R, rdzv_endpoint="HOST:PORT")`` on
every machine (``run_all.sh --nnodes 2 --node-rank R --rdzv-endpoint HOST:PORT``; HOST is
node 0's address, reachable from the others) runs torchrun's c10d rendezvous, hosted by
node 0 (the rendezvous is named after the run folder, so every machine names its run
alike): the machines train one model together, each with ``nproc`` processes, the data
sharded by the samplers as for several GPUs of one machine. Every process takes node 0's
training configuration and data settings (only the folders stay its own), so the nodes
cannot train different recipes; each node builds its own image cache (once per node, from
its own copy of the data and run folder); only local rank 0 of node 0 writes checkpoints,
history, TensorBoard logs and ``train_result.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from urllib.parse import urlsplit

import torch

from skinhelpers.data.imaging import canonical_size
from skinhelpers.files import PROJECT_ROOT, read_json, write_json
from skinhelpers.train import distributed as ddp
from skinhelpers.train.config import (
    TrainConfig,
)
from skinhelpers.train.experiment import load_data, train

# run with `python -m` this module is "__main__": its spec keeps its name under skinhelpers
log = logging.getLogger(__spec__.name if __spec__ else __name__)


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
    if res is not None and res.get("is_main"):
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


#: what every process takes from the main process (node 0): all but its own folders
SHARED_SPEC_KEYS = ("train", "image_size", "max_train_images", "augmentation", "fold")


def run_from_launch_config(spec: dict) -> dict:
    """What each torchrun process does: join the group, take the main process's settings,
    load the data (local rank 0 of each node builds the node's image cache, the node's
    other processes wait and reuse it), train."""
    dist = ddp.setup(TrainConfig.from_dict(spec["train"]).device)
    try:
        shared = ddp.broadcast_object({k: spec.get(k) for k in SHARED_SPEC_KEYS}, dist)
        spec = {**spec, **shared}
        cfg = TrainConfig.from_dict(spec["train"])
        if dist.local_rank != 0:  # wait for every node's cache builder (one barrier each)
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
        if dist.local_rank == 0:
            ddp.barrier(dist)
        res = train(cfg, data, spec["out_dir"], dist=dist)
        res["rank_checksums"] = weight_checksums(res.pop("model"), dist)
        return res
    finally:
        ddp.cleanup()


def rendezvous_args(
    nnodes: int,
    node_rank: int,
    rdzv_endpoint: str,
    rdzv_id: str,
    timeout_s: int = 1800,
    local_addr: str | None = None,
) -> list[str]:
    """torchrun's arguments for one machine of ``nnodes`` (c10d rendezvous at
    ``rdzv_endpoint``, hosted by node 0; the others wait up to ``timeout_s`` for it), or
    ``--standalone`` for one machine."""
    nnodes, node_rank = int(nnodes), int(node_rank)
    if nnodes < 1 or not 0 <= node_rank < nnodes:
        raise ValueError(f"need nnodes >= 1 and 0 <= node_rank < nnodes, got {nnodes}, {node_rank}")
    if nnodes == 1:
        return ["--standalone"]
    parts = urlsplit(f"//{rdzv_endpoint}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or not port:
        raise ValueError(
            f"rdzv_endpoint {rdzv_endpoint!r} is not HOST:PORT (node 0's address and a free "
            "port, e.g. 10.0.0.1:29500)"
        )
    conf = f"is_host={int(node_rank == 0)},join_timeout={timeout_s},read_timeout={timeout_s}"
    args = [
        f"--nnodes={nnodes}",  # (--node-rank is static rendezvous's: the env carries it)
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={rdzv_endpoint}",
        f"--rdzv-id={rdzv_id}",
        f"--rdzv-conf={conf}",
    ]
    return args + ([f"--local-addr={local_addr}"] if local_addr else [])


def nodes_of(params: dict) -> dict:
    """The several-machines keywords of :func:`launch` from a notebook's parameters."""
    defaults = {"nnodes": 1, "node_rank": 0, "rdzv_endpoint": ""}
    return {k: params.get(k, d) for k, d in defaults.items()}


def launch(
    config_path,
    nproc: int,
    log_path=None,
    extra_env: dict | None = None,
    nnodes: int = 1,
    node_rank: int = 0,
    rdzv_endpoint: str = "",
    local_addr: str | None = None,
) -> dict:
    """Run ``torchrun --nproc_per_node nproc -m skinhelpers.train.launch`` and stream its output;
    with ``nnodes`` > 1, this machine's part of a run over several machines (see the module's
    docstring).

    Returns the summary the main process wrote (``train_result.json``); on a node other than
    node 0, which writes nothing, ``{"node_rank": node_rank}``. A failure raises with the tail
    of the log.
    """

    spec = read_json(config_path)
    gpus = torch.cuda.device_count()
    if int(nproc) < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    if gpus and int(nproc) > gpus:
        raise ValueError(f"nproc={nproc} but this machine has {gpus} GPU(s); use at most {gpus}")
    rdzv_id = "skinlab-" + re.sub(
        r"[^A-Za-z0-9_-]+", "-", f"{Path(spec['run_dir']).name}-{Path(spec['out_dir']).name}"
    )
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        *rendezvous_args(nnodes, node_rank, rdzv_endpoint, rdzv_id, local_addr=local_addr),
        f"--nproc_per_node={int(nproc)}",
        "-m",
        "skinhelpers.train.launch",
        "--config",
        str(Path(config_path).resolve()),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    env[ddp.NODE_RANK_ENV] = str(int(node_rank))
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH", "")])
    )
    log.info("$ " + " ".join(cmd))
    tail: list[str] = []
    errors: list[str] = []  # first exception lines of the workers' tracebacks
    error_line = re.compile(r"^(\[rank\d+\]:\s*)?[\w.]*(Error|Exception)\b: ")
    log_file = open(log_path, "a") if log_path else None
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
            log.info(line.rstrip("\n"))  # the workers' output, relayed
            tail = (tail + [line])[-40:]
            if len(errors) < 3 and error_line.match(line):
                errors.append(line.strip())
            if log_file:
                log_file.write(line)
        rc = proc.wait()
    if log_file:
        log_file.close()
    if rc != 0:
        first = "\n".join(errors) or "(no exception line found)"
        raise RuntimeError(
            f"torchrun exited with status {rc}. First error(s):\n{first}\n"
            f"Last lines:\n{''.join(tail)}"
        )
    if int(nnodes) > 1 and int(node_rank) != 0:
        return {"node_rank": int(node_rank)}  # node 0 wrote the results
    return read_json(Path(spec["out_dir"]) / "train_result.json")


if __name__ == "__main__":
    sys.exit(main())
