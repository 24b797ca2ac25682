"""Upscale speed: a 512x512 photo -> 2048x2048, tiled vs one untiled forward pass. Prints one JSON object.

    python bench/upscale.py [--size 512] [--tile-size 128] [--tile-overlap 16] [--repeats 2]

The model is the reference-size generator (64 wide, 16 blocks; random weights: speed does not depend on
them), exported by the pusher and loaded as users load it (the SavedModel's serving_default). Both paths
run once untimed first (graph warm-up), then `repeats` times; the fastest run counts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np


def best_of(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--tile-size", type=int, default=128)
    p.add_argument("--tile-overlap", type=int, default=16)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)

    import keras

    from components import models, pusher, sample_data, upscaler

    with tempfile.TemporaryDirectory() as d:
        keras.utils.set_random_seed(0)
        g = models.build_generator(residual_over_bicubic=True)
        g.save(os.path.join(d, "generator.keras"))
        pusher.export_saved_model(os.path.join(d, "generator.keras"), os.path.join(d, "version"))
        model = upscaler.load(os.path.join(d, "version"))
        photo = sample_data.photo("astronaut")  # 512x512
        lr = np.ascontiguousarray(np.tile(photo, (2, 2, 1))[:args.size, :args.size])
        untiled_s, whole = best_of(lambda: model(lr[None])[0], args.repeats)
        tiled_s, tiled = best_of(lambda: upscaler.upscale_array(model, lr, args.tile_size, args.tile_overlap),
                                 args.repeats)
    diff = np.abs(whole.astype(int) - tiled.astype(int))
    print(json.dumps({
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "input": [args.size, args.size, 3], "output": list(whole.shape),
        "tile_size": args.tile_size, "tile_overlap": args.tile_overlap,
        "tiles": upscaler.tile_count(args.size, args.size, args.tile_size),
        "untiled_seconds": round(untiled_s, 2), "tiled_seconds": round(tiled_s, 2),
        "tiled_over_untiled": round(tiled_s / untiled_s, 3),
        "max_abs_diff_gray_levels": int(diff.max()), "pixels_differing": float((diff > 0).mean()),
    }, indent=2))


if __name__ == "__main__":
    main()
