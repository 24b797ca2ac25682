"""Training speed, all measured in one run on one machine. Prints one JSON object.

    python bench/train_step.py [--steps 6] [--ray-steps 8] [--ray-repeats 3] [--skip-ray | --only-ray]

1. "The reference tutorial's step" (DESIGN.md): batch 16, float32, eager GradientTape, no tf.function,
   VGG19 called separately on real and generated images, reference model sizes, two Adams, 1:1.
2. This trainer's distributed GAN step (components/trainer/step.py) in one worker, same models and
   batch: float32, and mixed_bfloat16. Ratio to (1): `speedup_vs_eager_baseline`.
3. The input path alone (read, parse, decode, augment, batch 16) in images/s.
4. 1 worker x 2 CPUs vs 2 workers x 1 CPU of Ray Train on this host (the real launcher, reference sizes,
   GAN phase), alternating, median ratio over --ray-repeats pairs.

VGG weights are random here (no ImageNet weights offline): the FLOPs are the same.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import components  # noqa: E402,F401 - first: its TF_ENABLE_ONEDNN_OPTS must be set before TensorFlow loads

import numpy as np

BATCH = 16


def _batch(seed=0):
    from components import models, sample_data
    from components.degradation import degrade

    photo = sample_data.photo("astronaut")
    rng = np.random.default_rng(seed)
    crops = np.stack([photo[y:y + 128, x:x + 128] for y, x in rng.integers(0, 512 - 128, size=(BATCH, 2))])
    return {"hr": models.to_unit(crops).numpy(), "lr": models.to_unit(degrade(crops)).numpy()}


def reference_eager_step_rate(batch, steps: int) -> float:
    """The baseline exactly as DESIGN.md defines it."""
    import keras
    import tensorflow as tf

    from components import models
    from components.trainer import losses

    keras.mixed_precision.set_global_policy("float32")
    g, d = models.build_generator(), models.build_discriminator()
    vgg = losses.build_vgg_features("block5_conv4", None)
    g_opt, d_opt = keras.optimizers.Adam(1e-4), keras.optimizers.Adam(1e-4)
    bce = keras.losses.BinaryCrossentropy(from_logits=True)
    lr, hr = tf.constant(batch["lr"]), tf.constant(batch["hr"])

    def step():
        with tf.GradientTape() as gt, tf.GradientTape() as dt:
            sr = g(lr, training=True)
            real, fake = d(hr, training=True), d(sr, training=True)
            content = tf.reduce_mean(tf.square(vgg(losses.vgg_input(hr)) - vgg(losses.vgg_input(sr))))
            g_loss = content + 1e-3 * bce(tf.ones_like(fake), fake)
            d_loss = bce(tf.ones_like(real), real) + bce(tf.zeros_like(fake), fake)
        g_opt.apply_gradients(zip(gt.gradient(g_loss, g.trainable_variables), g.trainable_variables))
        d_opt.apply_gradients(zip(dt.gradient(d_loss, d.trainable_variables), d.trainable_variables))
    step()  # warm-up: variable creation, kernel selection
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * BATCH / (time.perf_counter() - t)


def trainer_gan_step(batch, precision: str, generator_kw: dict | None = None, discriminator_kw: dict | None = None):
    """(SRGANSteps, iterator over `batch` repeated): this trainer's distributed GAN step in a one-device
    MirroredStrategy, models (reference sizes unless the *_kw say otherwise), VGG and Adams built under
    `precision`. The caller resets the Keras policy."""
    import keras
    import tensorflow as tf

    from components import models
    from components.trainer import losses
    from components.trainer.step import SRGANSteps

    keras.mixed_precision.set_global_policy(precision)  # before building: layers take their dtypes from it
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        g, d = models.build_generator(**(generator_kw or {})), models.build_discriminator(**(discriminator_kw or {}))
        vgg = losses.build_vgg_features("block5_conv4", None)
        g_opt, d_opt = keras.optimizers.Adam(1e-4), keras.optimizers.Adam(1e-4)
    s = SRGANSteps(strategy, g, d, g_opt, d_opt, vgg, global_batch_size=len(batch["hr"]), content_loss="vgg")
    return s, iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(batch).repeat()))


def trainer_step_rate(batch, steps: int, precision: str, content_fn=None) -> float:
    import keras

    from components.trainer import losses

    original = losses.vgg_mse
    if content_fn is not None:
        losses.vgg_mse = content_fn
    try:
        s, it = trainer_gan_step(batch, precision)
        _, applied = s.gan_step(next(it))  # warm-up: tracing
        float(applied)
        t = time.perf_counter()
        for _ in range(steps):
            _, applied = s.gan_step(next(it))
        bool(applied)
        return steps * len(batch["hr"]) / (time.perf_counter() - t)
    finally:
        losses.vgg_mse = original
        keras.mixed_precision.set_global_policy("float32")


def concat_vgg_mse(vgg, hr, sr):
    """The previous content loss, for comparison: one VGG pass over [hr; sr], backward through both halves."""
    import tensorflow as tf

    from components.trainer import losses
    n = tf.shape(hr)[0]
    feats = tf.cast(vgg(losses.vgg_input(tf.concat([hr, sr], axis=0)), training=False), tf.float32)
    return tf.reduce_mean(tf.square(feats[:n] - feats[n:]), axis=[1, 2, 3])


def forward_flops(model, input_hw) -> float:
    """Multiply-adds x 2 of every Conv2D and Dense layer for one image of `input_hw`."""
    import keras
    import numpy as np
    import tensorflow as tf

    shape_model = keras.Model(model.inputs, [l.output for l in model.layers
                                             if isinstance(l, (keras.layers.Conv2D, keras.layers.Dense))])
    total = 0.0
    outputs = shape_model(tf.zeros((1, *input_hw, 3)))
    layers = [l for l in model.layers if isinstance(l, (keras.layers.Conv2D, keras.layers.Dense))]
    for layer, out in zip(layers, outputs if isinstance(outputs, list) else [outputs]):
        kernel = layer.kernel.shape
        positions = np.prod(out.shape[1:-1]) if isinstance(layer, keras.layers.Conv2D) else 1
        total += 2.0 * float(np.prod(kernel)) * float(positions)
    return total


def gan_step_flops_per_sample() -> dict:
    """FLOPs of one GAN step per training image, from the layer shapes (convs and dense only).
    Backward = 2x forward where both input and weight gradients are needed (G, D on fake), 1x where
    only one is (D on real: weights; VGG on fake: input); VGG on real is forward only."""
    from components import models
    from components.trainer import losses

    g = forward_flops(models.build_generator(), (32, 32))
    d = forward_flops(models.build_discriminator(), (128, 128))
    v = forward_flops(losses.build_vgg_features("block5_conv4", None), (128, 128))
    total = 3 * g + (3 * d + 2 * d) + (2 * v + v)  # G fwd+bwd; D fake fwd+bwd(in+w), real fwd+bwd(w); VGG 2 fwd + 1 bwd
    return {"generator_forward": g, "discriminator_forward": d, "vgg_forward": v, "gan_step_per_sample": total}


def all_reduce_bytes() -> dict:
    """What one GAN step all-reduces: every trainable variable of G and D once, as float32."""
    from components import models

    g, d = models.build_generator().count_params(), models.build_discriminator().count_params()
    return {"generator_params": g, "discriminator_params": d, "bytes_per_step_float32": 4 * (g + d)}


def conv_peak_gflops(dtype: str, repeats: int = 20) -> float:
    """The convolution rate this CPU reaches at `dtype`: 3x3, 64 -> 64 channels, batch 16 at 128x128
    (VGG block 1) and 32x32 (the generator's body); the best of 3 trials of each."""
    import tensorflow as tf

    best = 0.0
    for hw in (128, 32):
        x = tf.random.normal((16, hw, hw, 64), dtype=tf.float32)
        w = tf.random.normal((3, 3, 64, 64), dtype=tf.float32) * 0.05
        x, w = tf.cast(x, dtype), tf.cast(w, dtype)
        conv = tf.function(lambda a, b: tf.nn.conv2d(a, b, 1, "SAME"))
        conv(x, w).numpy()
        reps = repeats * (16 if hw == 32 else 1)
        for _trial in range(3):
            t = time.perf_counter()
            for _ in range(reps):
                y = conv(x, w)
            y.numpy()
            flops = 2.0 * 9 * 64 * 64 * 16 * hw * hw * reps
            best = max(best, flops / (time.perf_counter() - t) / 1e9)
    return best


def input_rate(dataset_uri: str, batches: int) -> float:
    from components.trainer import input_fn

    ds = input_fn.make_dataset(dataset_uri, batch_size=BATCH, epoch=0, seed=0, steps=batches + 5)
    it = iter(ds)
    for _ in range(5):
        next(it)
    t = time.perf_counter()
    n = sum(1 for _ in it)
    return n * BATCH / (time.perf_counter() - t)


def ray_rates(root: str, dataset_id: str, steps: int, repeats: int = 1) -> dict:
    """The real launcher with 1 worker x 2 CPUs and 2 workers x 1 CPU, alternating, `repeats` times each;
    img/s from the runs' own progress records. The ratio is taken per pair (runs next to each other see
    the same machine weather); median and spread over the pairs."""
    from components import config, runs, trainer

    rates = {1: [], 2: []}
    walls = {1: [], 2: []}
    for rep in range(repeats):
        for workers in (1, 2):
            cfg = config.Config(artifact_root=root, dataset_id=dataset_id, run_id=f"bench-{workers}w-{rep}")
            t = cfg.train
            t.num_workers, t.cpus_per_worker, t.global_batch_size = workers, 2 // workers, BATCH
            t.pretrain_steps, t.gan_steps, t.steps_per_epoch = 0, steps, steps
            t.vgg_weights, t.log_every_seconds, t.augment = "none", 1e9, True  # one progress row, at the end
            start = time.perf_counter()
            trainer.run(cfg)
            walls[workers].append(round(time.perf_counter() - start, 1))
            rates[workers].append(round(runs.measured_rates(runs.read_history(root, cfg.run_id))[-1], 2))
            print(f"ray run {rep + 1}/{repeats}, {workers} worker(s): {rates[workers][-1]} img/s", file=sys.stderr)
    ratios = sorted(round(b / a, 3) for a, b in zip(rates[1], rates[2]))
    return {"1_worker_x_2_cpus": {"images_per_s": rates[1], "wall_seconds_incl_startup": walls[1]},
            "2_workers_x_1_cpu": {"images_per_s": rates[2], "wall_seconds_incl_startup": walls[2]},
            "two_vs_one_per_pair": ratios, "two_vs_one_median": float(np.median(ratios)),
            "two_vs_one_spread": [ratios[0], ratios[-1]]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per step variant")
    parser.add_argument("--ray-steps", type=int, default=8)
    parser.add_argument("--ray-repeats", type=int, default=3, help="pairs of 1- and 2-worker runs (median reported)")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--only-ray", action="store_true", help="just the Ray comparison")
    args = parser.parse_args()
    from components import config, preprocess, sample_data
    from components.dataset import dataset_uri
    from components.logs import setup_console
    setup_console()

    work = tempfile.mkdtemp(prefix="bench-train-")
    try:
        if args.only_ray:
            info = preprocess.run(config.Config(artifact_root=work, input=sample_data.write_sample_images()), [])
            print(json.dumps({"bench": "train_step (Ray only)", "batch": BATCH, "cpus": os.cpu_count(),
                              "ray": ray_rates(work, info["dataset_id"], args.ray_steps, args.ray_repeats)}, indent=2))
            return
        batch = _batch()
        eager = reference_eager_step_rate(batch, args.steps)
        f32_concat = trainer_step_rate(batch, args.steps, "float32", content_fn=concat_vgg_mse)
        f32 = trainer_step_rate(batch, args.steps, "float32")
        bf16 = trainer_step_rate(batch, args.steps, "mixed_bfloat16")
        flops = gan_step_flops_per_sample()
        peak = {"float32": conv_peak_gflops("float32"), "bfloat16": conv_peak_gflops("bfloat16")}
        floor = {k: peak[k] * 1e9 / flops["gan_step_per_sample"] for k in peak}
        cfg = config.Config(artifact_root=work, input=sample_data.write_sample_images())
        info = preprocess.run(cfg, [])
        result = {
            "bench": "train_step", "batch": BATCH, "model": "reference sizes (G 64x16 blocks, D 8 convs, dense 1024)",
            "vgg": "block5_conv4, random weights (same FLOPs as ImageNet weights)",
            "cpus": os.cpu_count(),
            "reference_eager_step": {"images_per_s": round(eager, 2)},
            "trainer_step_float32_one_vgg_pass_over_hr_and_sr": {"images_per_s": round(f32_concat, 2),
                                                                 "speedup_vs_eager_baseline": round(f32_concat / eager, 2)},
            "trainer_step_float32": {"images_per_s": round(f32, 2), "speedup_vs_eager_baseline": round(f32 / eager, 2),
                                     "fraction_of_float32_floor": round(f32 / floor["float32"], 3)},
            "trainer_step_mixed_bfloat16": {"images_per_s": round(bf16, 2),
                                            "speedup_vs_eager_baseline": round(bf16 / eager, 2),
                                            "fraction_of_bfloat16_floor": round(bf16 / floor["bfloat16"], 3)},
            "flops": {"gan_step_gflop_per_sample": round(flops["gan_step_per_sample"] / 1e9, 2),
                      **{f"{k}_gflop": round(v / 1e9, 3) for k, v in flops.items() if k != "gan_step_per_sample"},
                      "conv_peak_gflops": {k: round(v, 1) for k, v in peak.items()},
                      "floor_images_per_s": {k: round(v, 2) for k, v in floor.items()}},
            "speedup_vs_eager_baseline": round(max(f32, bf16) / eager, 2),
            "input_path": {"images_per_s": round(input_rate(dataset_uri(work, info["dataset_id"]), 40), 1)},
            "all_reduce": all_reduce_bytes(),
        }
        result["input_path"]["vs_fastest_step"] = round(result["input_path"]["images_per_s"] / max(f32, bf16), 1)
        if not args.skip_ray:
            result["ray"] = ray_rates(work, info["dataset_id"], args.ray_steps, args.ray_repeats)
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
