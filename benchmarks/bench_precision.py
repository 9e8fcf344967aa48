"""Benchmark 7: bfloat16 autocast against float32 on the CPU, for training and inference.

Some CPUs run bfloat16 matrix work natively (AVX-512 BF16, AMX), others emulate it. This
measures, on this machine, one training step (forward, backward, fused AdamW) and one
inference pass of the cpu profile's network (EfficientNet-Lite0 with its ImageNet weights,
channels_last, eager) in float32 and under ``torch.autocast("cpu", torch.bfloat16)``, the
two alternating within each repeat so that drifts in the machine's speed hit both. It also
records what the CPU advertises (``avx512_bf16`` / ``amx_bf16`` in /proc/cpuinfo) and
torch's CPU capability.

The trainer keeps float32 on the CPU unless this shows bfloat16 faster (RESULTS.md).

    .venv/bin/python benchmarks/bench_precision.py                 # 128 px, batch 32
    .venv/bin/python benchmarks/bench_precision.py --steps 2 --repeats 1 --size 64   # CI
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import time
from pathlib import Path

import torch
from common import save, spread

from skinhelpers.model.factory import build_model


def cpu_flags() -> list[str]:
    """The bfloat16-related flags this CPU advertises."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")),
        [],
    )
    return sorted(f for f in flags if "bf16" in f or f.startswith("amx"))


def images_per_s(fn, steps: int, batch: int) -> float:
    fn()  # warm-up (allocations, oneDNN kernel choice)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="efficientnet_lite0")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10, help="steps per measurement")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()

    torch.manual_seed(0)
    model = build_model(a.arch, pretrained=True, num_classes=7).to(
        memory_format=torch.channels_last
    )
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    x = torch.randn(a.batch, 3, a.size, a.size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 7, (a.batch,))

    def ctx(bf16: bool):
        return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def train_step(bf16: bool):
        model.train()
        with ctx(bf16):
            logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    @torch.inference_mode()
    def infer(bf16: bool):
        model.eval()
        with ctx(bf16):
            model(x)

    res = {"train": {"fp32": [], "bf16": []}, "infer": {"fp32": [], "bf16": []}}
    for r in range(a.repeats):
        for kind, fn in (("train", train_step), ("infer", infer)):
            for prec in ("fp32", "bf16") if r % 2 == 0 else ("bf16", "fp32"):
                ips = images_per_s(functools.partial(fn, prec == "bf16"), a.steps, a.batch)
                res[kind][prec].append(ips)
                print(f"repeat {r + 1}: {kind:5s} {prec}: {ips:7.1f} images/s", flush=True)
    summary = {k: {p: spread(v) for p, v in d.items()} for k, d in res.items()}
    ratios = {k: summary[k]["bf16"]["median"] / summary[k]["fp32"]["median"] for k in res}
    for k, rt in ratios.items():
        print(f"{k}: bfloat16 / float32 = {rt:.2f}")
    save(
        "precision",
        {
            "arch": a.arch,
            "image_size": a.size,
            "batch_size": a.batch,
            "steps": a.steps,
            "threads": torch.get_num_threads(),
            "cpu_flags": cpu_flags(),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "images_per_s": summary,
            "bf16_over_fp32": ratios,
        },
    )


if __name__ == "__main__":
    main()
