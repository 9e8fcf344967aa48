"""Benchmark 1: image-cache build speed on the real HAM10000 (200x150 JPEG).

images/s for plain resize to 128 and 224 px and for each preprocessing method, with 1 and
2 worker threads; each configuration is built ``--repeats`` times into a fresh folder
and the median is reported. Target: plain resize >= 400 images/s on 2 cores.

    .venv/bin/python benchmarks/bench_cache.py                 # all 10,015 images
    .venv/bin/python benchmarks/bench_cache.py --n 500 --repeats 1   # quick check (CI)
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from common import SHARED_DATA, repeat, save, spread

from skinhelpers.data.cache import build_cache
from skinhelpers.data.manifest import load_manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=0, help="images (0: all)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", default="128,224")
    ap.add_argument("--preprocess", default="none,clahe,shades_of_gray,hair_removal")
    ap.add_argument("--workers", default="1,2")
    a = ap.parse_args()
    df = load_manifest("ham10000", SHARED_DATA / "ham10000")
    df = df.drop_duplicates("sha1").reset_index(drop=True)
    if a.n:
        attrs = dict(df.attrs)
        df = df.iloc[: a.n].reset_index(drop=True)
        df.attrs = attrs
    rows = []
    sizes = [int(s) for s in a.sizes.split(",")]
    for size in sizes:
        for pre in a.preprocess.split(","):
            if pre != "none" and size != min(sizes):
                continue  # preprocessing costs: at the smallest size only
            for w in [int(x) for x in a.workers.split(",")]:

                def build():
                    tmp = Path(tempfile.mkdtemp(prefix="bench-cache-"))
                    try:
                        build_cache(df, size, pre, cache_dir=tmp, workers=w, show_progress=False)
                    finally:
                        shutil.rmtree(tmp, ignore_errors=True)

                times = repeat(build, a.repeats)
                ips = [len(df) / t for t in times]
                s = spread(ips)
                rows.append(
                    {
                        "size": size,
                        "preprocess": pre,
                        "workers": w,
                        "images": len(df),
                        "images_per_s": s,
                    }
                )
                print(
                    f"{size:4d}px {pre:15s} workers={w}: median {s['median']:7.1f} img/s "
                    f"(min {s['min']:.1f}, max {s['max']:.1f}, n={s['n']})",
                    flush=True,
                )
    save("cache", {"rows": rows})


if __name__ == "__main__":
    main()
