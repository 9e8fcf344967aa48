"""Device choice: CUDA when present, else the CPU; DataLoader workers; torch.compile checks."""

from __future__ import annotations

import shutil

import torch


def pick_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: the local GPU if there is one (``cuda:LOCAL_RANK``), else the CPU.

    Asking for ``cuda`` on a machine without CUDA falls back to the CPU with a printed note
    (a notebook written on a GPU box still runs on a laptop); a malformed name is an error.
    """
    if device in ("auto", "", None):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(
            f"device '{device}' is not a device name: use auto, cpu, cuda or cuda:N"
        ) from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        print(
            f"note: device '{device}' asked for, but CUDA is not available here: using the CPU",
            flush=True,
        )
        return torch.device("cpu")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank)
    return dev


def loader_workers(workers: int, device: torch.device | str) -> int:
    """DataLoader worker processes to use on ``device``: ``workers`` on a GPU, none on the CPU.

    On the CPU the model's compute threads already occupy every core, and a worker process
    that preempts one of them stalls each parallel region at its barrier: on 2 cores, 1 or 2
    workers halved training speed while loading in the main process kept 96% of a bare
    loop's speed (``benchmarks/bench_train.py``, RESULTS.md section 2). Augmenting a cached
    image costs ~1.5 ms, cheap beside the model's step.
    """
    return 0 if torch.device(device).type == "cpu" else max(0, int(workers))


def compile_blocker(device: torch.device | str) -> str | None:
    """Why ``torch.compile`` cannot run on ``device`` here, or ``None`` when it can: its CPU
    backend builds C++ kernels and needs a compiler (g++ or clang++)."""

    if torch.device(device).type == "cpu" and not any(
        shutil.which(c) for c in ("g++", "c++", "clang++")
    ):
        return "torch.compile on the CPU needs a C++ compiler (g++ or clang++), none found"
    return None


def inference_dtype(device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype for inference on ``device``: bfloat16 on a CUDA GPU that supports
    it, else None (float32; on the CPU, benchmarks/bench_precision.py decides)."""
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None
