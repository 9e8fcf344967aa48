"""Benchmark 2: training-loop overhead of the real trainer against a bare loop.

Both halves run in one process on the same :class:`skinhelpers.train.trainer.Trainer` (same model,
``torch.compile`` setting, channels_last, optimizer, loss, precision, batch size and image
size, the ``cpu`` profile's recipe by default):

* **bare** - ``steps`` optimizer steps on one pre-made, already normalised batch;
* **real** - ``Trainer.train_epoch`` over the real HAM10000 image cache (Shades of Gray,
  the ``basic`` augmentation preset, the square-root class-balanced sampler, EMA, the
  scheduler, the progress bar), one epoch of ``steps`` batches, for each DataLoader
  ``workers`` setting (``device``: the batched ``basic`` preset of
  :mod:`skinhelpers.train.batch_augment` instead of the per-image DataLoader).

The ratio real / bare (images/s) is the share of the machine the trainer gives to the
model; target >= 0.95 on the CPU, >= 0.9 on a GPU. Bare and real alternate within each
repeat so that drifts in the machine's speed hit both. Each measurement also records the
process's CPU time (images per CPU-second: steadier than the wall clock on a machine
shared with other jobs). Several ``--batch-sizes`` and ``--compile-modes`` give one block
of rows each (a fresh trainer each). On a GPU, one more epoch runs with CUDA's sync debug
mode on and counts the host-device syncs it reports (``syncs_per_epoch``: a constant, not
one per step).

    .venv/bin/python benchmarks/bench_train.py                        # cpu profile recipe
    .venv/bin/python benchmarks/bench_train.py --steps 3 --repeats 1 --workers 0 \
        --no-compile --n-cache 200                                     # quick check (CI)
    .venv/bin/python benchmarks/bench_train.py --profile gpu --arch efficientnet_lite0 \
        --batch-sizes 64,256 --compile-modes off,reduce-overhead --workers device  # a GPU
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings

import torch
from common import SHARED_DATA, save, spread

from skinhelpers.data.cache import CachedImageDataset, build_cache
from skinhelpers.data.manifest import load_manifest, subsample
from skinhelpers.files import PROJECT_ROOT
from skinhelpers.run.profiles import resolve
from skinhelpers.train.augment import train_transform
from skinhelpers.train.batch_augment import DeviceBatchLoader
from skinhelpers.train.config import DataMeta, TrainConfig
from skinhelpers.train.experiment import make_config
from skinhelpers.train.trainer import Trainer


def bare_steps(tr: Trainer, x: torch.Tensor, y: torch.Tensor, steps: int) -> tuple[float, float]:
    """(images/s, images per CPU-second) of ``steps`` plain optimizer steps of the trainer's
    (compiled) model, in the trainer's precision."""
    model = tr.train_model
    model.train()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        if getattr(tr, "_cudagraphs", False):
            torch.compiler.cudagraph_mark_step_begin()
        with tr._autocast():
            out = model(x)
        loss = tr.criterion(out.float(), y)
        tr.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        tr.optimizer.step()
    if tr.dev.type == "cuda":
        torch.cuda.synchronize(tr.dev)
    n = steps * len(y)
    return n / (time.perf_counter() - t0), n / max(time.process_time() - c0, 1e-9)


def trainer_epoch(tr: Trainer, epoch: int) -> tuple[float, float]:
    """(images/s, images per CPU-second) of one ``Trainer.train_epoch``."""
    c0 = time.process_time()
    res = tr.train_epoch(epoch)
    n = res["images_per_s"] * res["train_seconds"]
    return res["images_per_s"], n / max(time.process_time() - c0, 1e-9)


def count_syncs(tr: Trainer, epoch: int) -> int | None:
    """Host-device syncs CUDA's sync debug mode reports during one trainer epoch (None off
    a GPU)."""
    if tr.dev.type != "cuda":
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            tr.train_epoch(epoch)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message).lower() for w in caught)


def load_images(dataset: str, data_dir: str, n: int):
    """The manifest of ``n`` images of HAM10000 (real) or of the SYNTHETIC demo set."""
    if dataset == "demo":
        from skinhelpers.data.synthetic import ensure_demo

        df = load_manifest("demo", ensure_demo(PROJECT_ROOT / "data" / "demo" / "seed0"))
    else:
        df = load_manifest("ham10000", data_dir or SHARED_DATA / "ham10000")
    return subsample(df.drop_duplicates("sha1"), min(n, len(df)), seed=0).reset_index(drop=True)


def measure(tr, ds, labels, a, bs, workers) -> tuple[list[dict], dict]:
    """Bare and trainer loops of one trainer, alternating; its rows and what was seen."""
    loader_args = dict(
        batch_size=bs,
        sampler=tr.train_loader.sampler,
        drop_last=True,
        generator=tr.generator,
        pin_memory=tr.dev.type == "cuda",
    )
    # the epoch length the benchmark uses: `steps` batches from the balanced sampler
    if hasattr(tr.train_loader.sampler, "per_rank"):
        tr.train_loader.sampler.per_rank = a.steps * bs

    xb = torch.stack([ds[i % len(ds)][0] for i in range(bs)])
    y = torch.tensor(labels)[torch.arange(bs) % len(labels)].to(tr.dev)  # a copy: read-only
    x = tr._to_input(xb)
    loaders = {
        w: (
            DeviceBatchLoader(ds, loader_args["sampler"], bs, tr.dev, "basic")
            if w == "device"
            else torch.utils.data.DataLoader(ds, num_workers=w, **loader_args)
        )
        for w in workers
    }
    tr.train_loader = loaders[workers[0]]
    t0 = time.perf_counter()
    tr.train_epoch(0)  # compiles (when on; a failed compile trains eagerly, with a note)
    warm_s = time.perf_counter() - t0
    # untimed warm-up of both loops: a compiled model keeps speeding up for a few dozen
    # steps (seen: 49 -> 63 -> 69 images/s over the first three bare measurements)
    bare_steps(tr, x, y, a.steps)
    compiled = tr.train_model is not getattr(tr, "_eager_model", tr.model)
    print(f"warm-up (batch {bs}, compiled={compiled}): {warm_s:.0f} s", flush=True)

    bare, real, epoch = [], {w: [] for w in workers}, 1
    for r in range(a.repeats):
        bare.append(bare_steps(tr, x, y, a.steps))
        for w in workers:
            tr.train_loader = loaders[w]
            real[w].append(trainer_epoch(tr, epoch))
            epoch += 1
        print(
            f"repeat {r + 1}: bare {bare[-1][0]:.1f} img/s, real "
            + ", ".join(f"{w} workers {real[w][-1][0]:.1f}" for w in workers),
            flush=True,
        )
    tr.train_loader = loaders[workers[-1]]
    syncs = count_syncs(tr, epoch)
    common = {"batch_size": bs, "compiled": compiled}
    rows = [
        {
            "loop": "bare",
            "workers": None,
            **common,
            **spread([b[0] for b in bare]),
            "ratio": 1.0,
            "per_cpu_s": spread([b[1] for b in bare])["median"],
        }
    ]
    for w in workers:
        ratios = [rv[0] / bv[0] for rv, bv in zip(real[w], bare)]
        cpu_ratios = [rv[1] / bv[1] for rv, bv in zip(real[w], bare)]
        rows.append(
            {
                "loop": "trainer",
                "workers": w,
                **common,
                **spread([rv[0] for rv in real[w]]),
                "ratio": spread(ratios)["median"],
                "ratio_min": min(ratios),
                "ratio_max": max(ratios),
                "per_cpu_s": spread([rv[1] for rv in real[w]])["median"],
                "cpu_ratio": spread(cpu_ratios)["median"],
            }
        )
    precision = str(tr.amp_dtype).replace("torch.", "") if tr.use_amp else "float32"
    info = {"warmup_s": warm_s, "syncs_per_epoch": syncs, "steps_per_epoch": a.steps}
    return rows, {**info, "device": str(tr.dev), "precision": precision}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="cpu", help="recipe and sizes from this profile")
    ap.add_argument("--steps", type=int, default=30, help="optimizer steps per measurement")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--workers",
        default="0,device",
        help="loaders to compare: DataLoader worker counts, and/or 'device' (batched "
        "augmentation on the training device)",
    )
    ap.add_argument("--arch", default="", help="default: the profile's arch")
    ap.add_argument("--no-compile", action="store_true", help="same as --compile-modes off")
    modes_help = "off, default, reduce-overhead, ... (default: the profile's compile setting)"
    ap.add_argument("--compile-modes", default="", help=modes_help)
    ap.add_argument("--batch-sizes", default="", help="comma-separated (default: the profile's)")
    ap.add_argument("--image-size", type=int, default=0, help="default: the profile's")
    ap.add_argument("--dataset", default="ham10000", choices=["ham10000", "demo"])
    ap.add_argument("--data-dir", default="", help="HAM10000's folder (default: shared data)")
    ap.add_argument(
        "--n-cache",
        type=int,
        default=0,
        help="images to cache (0: steps x the largest batch size); fewer are drawn again",
    )
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's choice)")
    a = ap.parse_args()
    if a.threads:  # one thread: no OpenMP spinning, steadier on a machine shared with others
        torch.set_num_threads(a.threads)

    p = resolve(a.profile)
    size = a.image_size or int(p["image_size"])
    sizes = [int(b) for b in (a.batch_sizes or str(p.get("batch_size", 32))).split(",")]
    recipe = {k: v for k, v in p.items() if k in TrainConfig.__dataclass_fields__}
    recipe.update(
        arch=a.arch or p.get("arch") or "efficientnet_lite0",
        freeze_epochs=0,
        epochs=1000,
        device=a.device,
        tensorboard=False,
        save="none",
        augment_on="loader",
    )
    profile_mode = recipe.get("compile_mode", "default") if recipe.get("torch_compile") else "off"
    modes = ["off"] if a.no_compile else (a.compile_modes or profile_mode).split(",")
    # an int: the per-image preset in a DataLoader with that many worker processes;
    # "device": the batched preset on the training device (augment_on="device")
    workers = [w if w == "device" else int(w) for w in a.workers.split(",")]

    df = load_images(a.dataset, a.data_dir, a.n_cache or a.steps * max(sizes))
    rows, seen = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        cache = build_cache(
            df, size, p.get("preprocess", "none"), cache_dir=tmp, show_progress=False
        )
        ds = CachedImageDataset(cache, df, train_transform("basic", size))
        meta = DataMeta(
            classes=list(df.attrs["classes"]),
            image_size=size,
            preprocess=p.get("preprocess", "none"),
            dataset=a.dataset,
            positive_class=df.attrs.get("positive_class"),
        )
        labels = df["label_idx"].to_numpy()
        for bs in sizes:
            for mode in modes:
                compile_args = {"torch_compile": mode != "off"}
                if mode not in ("off", "default"):
                    compile_args["compile_mode"] = mode
                cfg = make_config({**recipe, "batch_size": bs, **compile_args})
                tr = Trainer(cfg, ds, ds, labels, meta, tmp)
                tr._enter_phase("finetune", 0, cfg.epochs, None)
                got, info = measure(tr, ds, labels, a, bs, workers)
                rows += [{**r, "compile_mode": mode} for r in got]
                seen[f"{bs}/{mode}"] = info
                del tr
    for row in rows:
        print(
            f"batch {row['batch_size']:4d} {row['compile_mode']:16s} {row['loop']:8s} "
            f"workers={row['workers']!s:6s} {row['median']:8.1f} img/s "
            f"({row['min']:.1f}-{row['max']:.1f}, n={row['n']})  ratio {row['ratio']:.3f}"
            + (f"  per CPU-s ratio {row['cpu_ratio']:.3f}" if "cpu_ratio" in row else "")
        )
    first = seen[f"{sizes[0]}/{modes[0]}"]
    for k, info in seen.items():
        if info["syncs_per_epoch"] is not None:
            print(f"{k}: {info['syncs_per_epoch']} host syncs in an epoch of {a.steps} steps")
    save(
        "train_overhead",
        {
            "arch": cfg.arch,
            "image_size": size,
            "batch_size": sizes[0],
            "batch_sizes": sizes,
            "compile": modes != ["off"],
            "compile_modes": modes,
            "channels_last": cfg.channels_last,
            "precision": first["precision"],
            "dataset": a.dataset,
            "steps": a.steps,
            "torch_threads": torch.get_num_threads(),
            "device": first["device"],
            "warmup_s": first["warmup_s"],
            "measured": seen,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
