"""Input rate with `degradation: realistic`: tf.data producing (HR 128 crop, realistic LR) pairs, against
what the training step consumes. Prints one JSON object.

    python bench/degradation.py [--batches 40] [--step-rate 3.33]

The records are stood in for by PNG-encoded 128x128 crops of real photos held in memory (reading and
parsing TFRecords is a small part of the input path: BENCHMARKS.md measured the whole clean path at
1,152 img/s). The pipeline is the trainer's shape: decode, a stateless flip, then
`realistic_degrade(hr, (seed*100003 + epoch, index))`, scale to [-1, 1], batch 16, prefetch; the clean
path beside it decodes the stored LR instead. The step rate is the float32 reference-size GAN step of
bench/train_step.py on a 2-core no-AMX machine (BENCHMARKS.md: 3.33 img/s); pass the rate measured on
your machine with --step-rate.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

BATCH = 16
CROP = 128
STEP_RATE_F32 = 3.33  # BENCHMARKS.md, bench/train_step.py: this trainer's float32 step, reference sizes


def _records(n: int = 64) -> list[tuple[bytes, bytes]]:
    """(HR PNG, clean LR PNG) of n random 128 crops from the bundled photos, as the records hold them."""
    import tensorflow as tf

    from components import sample_data
    from components.degradation import degrade

    rng = np.random.default_rng(0)
    photos = [sample_data.photo(name) for name in ("astronaut", "chelsea", "coffee")]
    out = []
    for i in range(n):
        p = photos[i % len(photos)]
        y, x = rng.integers(0, p.shape[0] - CROP), rng.integers(0, p.shape[1] - CROP)
        hr = p[y:y + CROP, x:x + CROP]
        out.append((tf.io.encode_png(hr).numpy(), tf.io.encode_png(degrade(hr)).numpy()))
    return out


def pairs(records, realistic: bool, params, seed: int = 0, epoch: int = 0):
    """The input path: batches of {'hr', 'lr'} in [-1, 1]."""
    import tensorflow as tf

    from components.degradation import realistic_degrade

    hr_png, lr_png = zip(*records)
    ds = tf.data.Dataset.from_tensor_slices((list(hr_png), list(lr_png))).repeat().enumerate()

    def make(i, pngs):
        example_seed = tf.stack([tf.constant(seed * 100_003 + epoch, tf.int64), i])
        hr = tf.image.stateless_random_flip_left_right(
            tf.image.convert_image_dtype(tf.io.decode_png(pngs[0], channels=3), tf.float32), example_seed)
        if realistic:
            lr = realistic_degrade(hr, example_seed, params, 4)
        else:
            lr = tf.image.stateless_random_flip_left_right(
                tf.image.convert_image_dtype(tf.io.decode_png(pngs[1], channels=3), tf.float32), example_seed)
        return {"hr": hr * 2.0 - 1.0, "lr": lr * 2.0 - 1.0}
    ds = ds.map(make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(BATCH, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def rate(ds, batches: int, warmup: int = 3) -> float:
    it = iter(ds)
    for _ in range(warmup):
        next(it)
    t = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * BATCH / (time.perf_counter() - t)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=40, help="timed batches of 16 per variant")
    parser.add_argument("--step-rate", type=float, default=STEP_RATE_F32,
                        help="images/s the training step consumes (float32, reference sizes)")
    args = parser.parse_args()

    import tensorflow as tf

    from components import config

    records = _records()
    params = config.RealisticDegradation()
    realistic = rate(pairs(records, True, params), args.batches)
    clean = rate(pairs(records, False, params), args.batches)
    print(json.dumps({
        "realistic_images_per_s": round(realistic, 1),
        "clean_images_per_s": round(clean, 1),
        "step_images_per_s": args.step_rate,
        "realistic_vs_step": round(realistic / args.step_rate, 1),
        "goal_vs_step": 10,
        "batches": args.batches, "batch": BATCH, "crop": CROP,
        "cpus": os.cpu_count(), "load_average": os.getloadavg(), "tensorflow": tf.__version__,
    }, indent=2))


if __name__ == "__main__":
    main()
