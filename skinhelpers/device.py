"""Device choice: CUDA when present, else the CPU; DataLoader workers; torch.compile checks;
the precision of inference."""

from __future__ import annotations

import logging
import shutil

import torch

log = logging.getLogger(__name__)


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
        log.warning(
            f"note: device '{device}' asked for, but CUDA is not available here: using the CPU",
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


PRECISIONS = ("auto", "float32", "bfloat16")


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU runs bfloat16 matrix work natively: ``avx512_bf16`` or ``amx_bf16``
    among the flags of ``/proc/cpuinfo`` (Linux). Elsewhere, or unreadable: False."""
    try:
        text = open(cpuinfo, encoding="utf-8", errors="replace").read()
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[-1].split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def precision_name(dtype: torch.dtype | None) -> str:
    """How :func:`inference_dtype`'s answer is reported: ``"float32"`` or ``"bfloat16"``."""
    return str(dtype or torch.float32).replace("torch.", "")


def inference_dtype(
    device: torch.device | str, precision: str = "auto", cpuinfo: str = "/proc/cpuinfo"
) -> torch.dtype | None:
    """The autocast dtype for inference on ``device``, or None for plain float32.

    ``precision``: ``"float32"``; ``"bfloat16"`` (an error on a GPU without it);
    ``"auto"``: bfloat16 on a CUDA GPU that supports it, and on a CPU that advertises
    native bfloat16 (AVX-512 BF16 or AMX), else float32. On such CPUs bfloat16 inference
    measured 1.45x-2.3x faster (AMD EPYC, Intel Xeon) without lowering the validation score
    (benchmarks/RESULTS.md section 8); without them it is emulated and slower. Probabilities
    move by up to ~0.1 on single images, so comparisons that need the same numbers on
    every machine ask for ``"float32"``.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision '{precision}' is not one of {', '.join(PRECISIONS)}")
    dev = torch.device(device)
    if precision == "float32":
        return None
    if dev.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16
        if precision == "bfloat16":
            raise ValueError(f"precision 'bfloat16' asked for, but {dev} does not support it")
        return None
    if dev.type == "cpu" and (precision == "bfloat16" or cpu_has_native_bf16(cpuinfo)):
        return torch.bfloat16
    return None
