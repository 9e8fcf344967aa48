"""Benchmark 3: inference images/s of the final model, with and without test-time
augmentation, eager versus ``torch.compile``, channels_last versus contiguous.

Runs :func:`skinhelpers.model.inference.predict_batch` (what notebook 08 and ``predict`` use) over
real HAM10000 images from the image cache, batch by batch, for every combination; each
combination is timed ``--repeats`` times after a warm-up (the compile time is reported
apart). Images/s counts images, not views: 8-view TTA does 8 forward passes per image.

    .venv/bin/python benchmarks/bench_infer.py --checkpoint runs/<run>/checkpoints/best_ema.pt
    .venv/bin/python benchmarks/bench_infer.py      # ImageNet Lite0 with a 7-class head:
                                                    # the same network, the same speed
    .venv/bin/python benchmarks/bench_infer.py --n 64 --repeats 1 --views 1 --no-compile  # CI
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time

import torch
from common import SHARED_DATA, save, spread

from skinhelpers.data.cache import build_cache
from skinhelpers.data.manifest import load_manifest, subsample
from skinhelpers.evaluate.tta import prepare_model
from skinhelpers.model.checkpoints import model_from_checkpoint
from skinhelpers.model.factory import build_model
from skinhelpers.model.inference import predict_batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default="", help="a checkpoint (default: ImageNet Lite0)")
    ap.add_argument("--arch", default="efficientnet_lite0", help="without --checkpoint")
    ap.add_argument("--size", type=int, default=128, help="without --checkpoint")
    ap.add_argument("--n", type=int, default=256, help="images")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--views", default="1,8", help="TTA views to compare")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-compile", action="store_true", help="eager only")
    a = ap.parse_args()

    if a.checkpoint:
        base, info = model_from_checkpoint(a.checkpoint)
        size, pre, mode = info["image_size"], info["preprocess"], info["resize_mode"]
        mean, std, name = info["mean"], info["std"], a.checkpoint
    else:
        base = build_model(a.arch, num_classes=7)
        size, pre, mode = a.size, "shades_of_gray", "squash"
        mean, std, name = base.mean, base.std, f"{a.arch} (ImageNet, 7-class head)"
    base.eval()

    df = load_manifest("ham10000", SHARED_DATA / "ham10000")
    df = subsample(df.drop_duplicates("sha1"), a.n, seed=0).reset_index(drop=True)
    bs = a.batch_size
    with tempfile.TemporaryDirectory() as tmp:
        cache = build_cache(df, size, pre, mode, cache_dir=tmp, show_progress=False)
        images = torch.from_numpy(cache.images[cache.rows_for(df)]).permute(0, 3, 1, 2).contiguous()
    n = len(images) // bs * bs  # whole batches: a compiled model sees one shape
    batches = list(images[:n].split(bs))

    rows = []
    for compiled in [False] if a.no_compile else [False, True]:
        for cl in (False, True):
            model = prepare_model(copy.deepcopy(base), channels_last=cl, torch_compile=compiled)
            t0 = time.perf_counter()
            predict_batch(model, batches[0], mean, std, 1)  # warm-up (and compile)
            warm = time.perf_counter() - t0
            for v in [int(x) for x in a.views.split(",")]:
                if v > 1:
                    predict_batch(model, batches[0], mean, std, v)
                times = []
                for _ in range(a.repeats):
                    t0 = time.perf_counter()
                    for b in batches:
                        predict_batch(model, b, mean, std, v)
                    times.append(n / (time.perf_counter() - t0))
                row = {
                    "compile": compiled,
                    "channels_last": cl,
                    "views": v,
                    **spread(times),
                    "warmup_s": round(warm, 1),
                }
                rows.append(row)
                print(
                    f"compile={compiled!s:5s} channels_last={cl!s:5s} views={v}: "
                    f"{row['median']:7.1f} images/s ({row['min']:.1f}-{row['max']:.1f}, "
                    f"n={row['n']}), warm-up {warm:.1f} s",
                    flush=True,
                )
    save(
        "inference",
        {
            "model": name,
            "image_size": size,
            "batch_size": bs,
            "images": n,
            "torch_threads": torch.get_num_threads(),
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
