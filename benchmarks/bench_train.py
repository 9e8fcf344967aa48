"""Benchmark 2: training-loop overhead of the real trainer against a bare loop.

Both halves run in one process on the same :class:`skinhelpers.train.trainer.Trainer` (same model,
``torch.compile`` setting, channels_last, optimizer, loss, batch size and image size, the
``cpu`` profile's recipe by default):

* **bare** - ``steps`` optimizer steps on one pre-made, already normalised batch;
* **real** - ``Trainer.train_epoch`` over the real HAM10000 image cache (Shades of Gray,
  the ``basic`` augmentation preset, the square-root class-balanced sampler, EMA, the
  scheduler, the progress bar), one epoch of ``steps`` batches, for each DataLoader
  ``workers`` setting (``device``: the batched ``basic`` preset of
  :mod:`skinhelpers.train.batch_augment` instead of the per-image DataLoader).

The ratio real / bare (images/s) is the share of the machine the trainer gives to the
model; target >= 0.95. Bare and real alternate within each repeat so that drifts in the
machine's speed hit both.

    .venv/bin/python benchmarks/bench_train.py                        # cpu profile recipe
    .venv/bin/python benchmarks/bench_train.py --steps 3 --repeats 1 --workers 0 \
        --no-compile --n-cache 200                                     # quick check (CI)
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from common import SHARED_DATA, save, spread

from skinhelpers.data.cache import CachedImageDataset, build_cache
from skinhelpers.data.manifest import load_manifest, subsample
from skinhelpers.run.profiles import resolve
from skinhelpers.train.augment import train_transform
from skinhelpers.train.batch_augment import DeviceBatchLoader
from skinhelpers.train.config import DataMeta, TrainConfig
from skinhelpers.train.experiment import make_config
from skinhelpers.train.trainer import Trainer


def bare_steps(tr: Trainer, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    """images/s of ``steps`` plain optimizer steps of the trainer's (compiled) model."""
    model = tr.train_model
    model.train()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = tr.criterion(model(x).float(), y)
        tr.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        tr.optimizer.step()
    if tr.dev.type == "cuda":
        torch.cuda.synchronize(tr.dev)
    return steps * len(y) / (time.perf_counter() - t0)


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
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument(
        "--n-cache", type=int, default=0, help="images to cache (0: steps x batch size)"
    )
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()

    p = resolve(a.profile)
    size, bs = int(p["image_size"]), int(p.get("batch_size", TrainConfig.batch_size))
    recipe = {k: v for k, v in p.items() if k in TrainConfig.__dataclass_fields__}
    recipe.update(
        arch=a.arch or p.get("arch") or "efficientnet_lite0",
        freeze_epochs=0,
        epochs=1000,
        device=a.device,
        tensorboard=False,
        save="none",
    )
    if a.no_compile:
        recipe["compile"] = False
    cfg = make_config(recipe)

    n = a.n_cache or a.steps * bs
    df = load_manifest("ham10000", SHARED_DATA / "ham10000")
    df = subsample(df.drop_duplicates("sha1"), n, seed=0).reset_index(drop=True)
    with tempfile.TemporaryDirectory() as tmp:
        cache = build_cache(
            df, size, p.get("preprocess", "none"), cache_dir=tmp, show_progress=False
        )
        ds = CachedImageDataset(cache, df, train_transform("basic", size))
        meta = DataMeta(
            classes=list(df.attrs["classes"]),
            image_size=size,
            preprocess=p.get("preprocess", "none"),
            dataset="ham10000",
            positive_class=df.attrs.get("positive_class"),
        )
        labels = df["label_idx"].to_numpy()
        tr = Trainer(cfg, ds, ds, labels, meta, tmp)
        tr._enter_phase("finetune", 0, cfg.epochs, None)
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

        xb = torch.stack([ds[i][0] for i in range(bs)])
        x, y = tr._to_input(xb), torch.as_tensor(labels[:bs]).to(tr.dev)
        t0 = time.perf_counter()
        bare_steps(tr, x, y, 3)  # compiles (when on)
        warm_s = time.perf_counter() - t0
        # untimed warm-up of both loops: a compiled model keeps speeding up for a few dozen
        # steps (seen: 49 -> 63 -> 69 images/s over the first three bare measurements)
        bare_steps(tr, x, y, a.steps)
        tr.train_epoch(0)
        print(f"warm-up (compile={tr.train_model is not tr.model}): {warm_s:.0f} s", flush=True)

        # an int: the per-image preset in a DataLoader with that many worker processes;
        # "device": the batched preset on the training device (augment_on="device")
        workers = [w if w == "device" else int(w) for w in a.workers.split(",")]
        bare, real = [], {w: [] for w in workers}
        epoch = 1
        for r in range(a.repeats):
            bare.append(bare_steps(tr, x, y, a.steps))
            for w in workers:
                tr.train_loader = (
                    DeviceBatchLoader(ds, loader_args["sampler"], bs, tr.dev, "basic")
                    if w == "device"
                    else torch.utils.data.DataLoader(ds, num_workers=w, **loader_args)
                )
                real[w].append(tr.train_epoch(epoch)["images_per_s"])
                epoch += 1
            print(
                f"repeat {r + 1}: bare {bare[-1]:.1f} img/s, real "
                + ", ".join(f"{w} workers {real[w][-1]:.1f}" for w in workers),
                flush=True,
            )

        rows = [{"loop": "bare", "workers": None, **spread(bare), "ratio": 1.0}]
        for w in workers:
            ratios = [rv / bv for rv, bv in zip(real[w], bare)]
            rows.append(
                {
                    "loop": "trainer",
                    "workers": w,
                    **spread(real[w]),
                    "ratio": spread(ratios)["median"],
                    "ratio_min": min(ratios),
                    "ratio_max": max(ratios),
                }
            )
    for row in rows:
        print(
            f"{row['loop']:8s} workers={row['workers']!s:4s} {row['median']:7.1f} img/s "
            f"({row['min']:.1f}-{row['max']:.1f}, n={row['n']})  ratio {row['ratio']:.3f}"
        )
    save(
        "train_overhead",
        {
            "arch": cfg.arch,
            "image_size": size,
            "batch_size": bs,
            "compile": bool(cfg.compile),
            "channels_last": cfg.channels_last,
            "steps": a.steps,
            "torch_threads": torch.get_num_threads(),
            "device": str(tr.dev),
            "warmup_s": warm_s,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
