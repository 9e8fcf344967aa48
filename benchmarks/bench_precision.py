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

With ``--run RUN_DIR`` it also scores the run's checkpoint (``--checkpoint``, default
best_ema) on the run's validation split both ways, in float32 and under bfloat16 autocast:
time, the largest probability difference, and the paired change in balanced accuracy and
macro AUC with a 95% bootstrap interval of the validation lesions (the question "faster
without lowering the validation score?").

    .venv/bin/python benchmarks/bench_precision.py --steps 4 --repeats 2 --run runs/ham-cpu-v3
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import time
from pathlib import Path

import torch
from common import run_model, save, spread

from skinhelpers.data import cache, manifest
from skinhelpers.evaluate import bootstrap, tta
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
    ap.add_argument("--run", default="", help="a run folder: score its checkpoint both ways")
    ap.add_argument("--checkpoint", default="best_ema")
    ap.add_argument("--n-bootstrap", type=int, default=1000)
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
    quality = validation_both_ways(a.run, a.checkpoint, a.n_bootstrap) if a.run else None
    save(
        "precision",
        {
            "run_validation": quality,
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


def validation_both_ways(run: str, checkpoint: str, n_bootstrap: int) -> dict:
    """The run's checkpoint on its validation split, float32 against bfloat16 autocast."""
    run_dir = Path(run)
    df, ckpt, model, info = run_model(run_dir, checkpoint)
    val = df[df["split"] == "val"].reset_index(drop=True)
    c = cache.build_cache(
        manifest.read_manifest(run_dir),
        info["image_size"],
        info["preprocess"],
        info["resize_mode"],
    )
    out, secs = {}, {}
    for prec, dtype in (("fp32", None), ("bf16", torch.bfloat16), ("fp32", None)):
        t0 = time.perf_counter()  # fp32 twice: the first pass warms the kernels up
        out[prec] = tta.predict_frame(
            model, c, val, info["mean"], info["std"], 1, 64, 0, desc=None, amp_dtype=dtype
        )
        secs[prec] = time.perf_counter() - t0
    y = out["fp32"].labels
    diff = bootstrap.paired_bootstrap_diff(
        y,
        out["fp32"].probs,
        out["bf16"].probs,
        n_bootstrap=n_bootstrap,
        desc=None,
        groups=val["group"].to_numpy(),  # resample the validation lesions
    )
    res = {
        "run": str(run_dir),
        "checkpoint": str(ckpt),
        "n_val": len(val),
        "n_val_groups": int(val["group"].nunique()),
        "bootstrap_unit": "group",
        "seconds": secs,
        "bf16_speedup": secs["fp32"] / secs["bf16"],
        "max_abs_prob_diff": float(abs(out["fp32"].probs - out["bf16"].probs).max()),
        "argmax_changed": int((out["fp32"].probs.argmax(1) != out["bf16"].probs.argmax(1)).sum()),
        "paired_bf16_minus_fp32": diff.to_dict(orient="index"),
    }
    d = diff.loc["balanced_accuracy"]
    print(
        f"validation ({len(val)} images): bf16 {res['bf16_speedup']:.2f}x the speed of fp32; "
        f"max |dp| {res['max_abs_prob_diff']:.3g}, {res['argmax_changed']} decisions change; "
        f"balanced accuracy {d['a']:.4f} -> {d['b']:.4f} ({d['diff']:+.4f}, 95% CI "
        f"{d['ci_low']:+.4f} to {d['ci_high']:+.4f})"
    )
    return res


if __name__ == "__main__":
    main()
