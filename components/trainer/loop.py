"""`train_loop_per_worker`: what every Ray Train worker runs.

Phases share one global step counter: steps [0, P) pre-train the generator on pixel MSE (SRResNet),
steps [P, P+G) train generator and discriminator (SRGAN). Checkpoints at every epoch end, every
`checkpoint_every_steps`, at each phase end, and once when Ray Train reports that a node of the run is
being preempted (a spot reclaim, a drained Kubernetes node: what SIGTERM means for a pod). Ray Train V2
runs this function in a thread, where no signal handler can be installed, so preemption arrives through
`ray.train.get_preemption_info()` instead.
"""

from __future__ import annotations

import io
import json
import math
import logging
import os
import tempfile
import time
from dataclasses import fields

import numpy as np

log = logging.getLogger("trainer")


class TrainingDiverged(RuntimeError):
    """Non-finite steps kept coming back after restoring the last good state."""


class NonFiniteGuard:
    """Counts skipped (non-finite) steps: `max_in_row` in a row asks for a restore of the last good
    state; more than `max_restores` restores raises TrainingDiverged."""

    def __init__(self, max_in_row: int, max_restores: int, restores: int = 0):
        self.max_in_row, self.max_restores = max_in_row, max_restores
        self.in_row, self.restores = 0, restores

    def after_step(self, applied: bool, step: int) -> bool:
        """True when the caller must restore the last good state now."""
        if applied:
            self.in_row = 0
            return False
        self.in_row += 1
        if self.in_row < self.max_in_row:
            return False
        self.restores += 1
        if self.restores > self.max_restores:
            raise TrainingDiverged(
                f"{self.in_row} non-finite steps in a row after {self.restores - 1} restores of the last good "
                f"state: training diverged at step {step} (lower the learning rates?)")
        self.in_row = 0
        return True


def generator_learning_rate(cfg, phase: str, step: int, phase_start: int, phase_end: int) -> float:
    """The generator's learning rate at `step` (0-based, before the update): constant, or a cosine from
    the phase's rate down to 1% of it at the phase end."""
    base = cfg.pretrain_learning_rate if phase == "pretrain" else cfg.g_learning_rate
    if cfg.lr_decay != "cosine" or phase_end <= phase_start:
        return base
    t = min(max((step - phase_start) / (phase_end - phase_start), 0.0), 1.0)
    return base * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * t)))


def phase_lengths(cfg, steps_per_epoch: int) -> tuple[int, int]:
    pre = cfg.pretrain_steps if cfg.pretrain_steps is not None else cfg.pretrain_epochs * steps_per_epoch
    gan = cfg.gan_steps if cfg.gan_steps is not None else cfg.gan_epochs * steps_per_epoch
    return int(pre), int(gan)


def _strategy(world_size: int, gpus: int):
    import tensorflow as tf

    if world_size > 1:  # Ray Train's TensorflowConfig has set TF_CONFIG for every worker
        return tf.distribute.MultiWorkerMirroredStrategy()
    devices = [d.name.replace("/physical_device:", "/") for d in tf.config.list_physical_devices("GPU")][:max(gpus, 0)]
    return tf.distribute.MirroredStrategy(devices or ["/cpu:0"])


def _grid_png(lr_unit, sr_unit, hr_unit) -> bytes:
    """Rows of LR (nearest-upscaled) | SR | HR."""
    from PIL import Image

    from components.models import to_uint8
    import tensorflow as tf

    hr = to_uint8(hr_unit).numpy()
    sr = to_uint8(sr_unit).numpy()
    lr = to_uint8(tf.image.resize(lr_unit, hr.shape[1:3], method="nearest")).numpy()
    rows = [np.concatenate([a, b, c], axis=1) for a, b, c in zip(lr, sr, hr)]
    buf = io.BytesIO()
    Image.fromarray(np.concatenate(rows, axis=0)).save(buf, format="PNG")
    return buf.getvalue()


class RunOutputs:
    """Rank 0's history.jsonl, TensorBoard logs and samples: written locally, then published to the run folder."""

    def __init__(self, run_uri: str):
        from components import storage

        self.storage, self.run_uri = storage, run_uri
        self.local = tempfile.mkdtemp(prefix="run-outputs-")
        self.history = os.path.join(self.local, "history.jsonl")
        remote_history = storage.join(run_uri, "history.jsonl")
        if storage.exists(remote_history):  # a resumed run continues its history
            with open(self.history, "wb") as f:
                f.write(storage.read_bytes(remote_history))
        from tensorboardX import SummaryWriter  # TensorBoard event files without the tensorboard package

        self.tb = SummaryWriter(os.path.join(self.local, "logs"), flush_secs=30)
        self.pending: set[str] = set()

    def append(self, row: dict) -> None:
        with open(self.history, "a") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")
        self.pending.add(self.history)

    def scalars(self, step: int, values: dict) -> None:
        for k, v in values.items():
            self.tb.add_scalar(k, float(v), step)

    def sample(self, step: int, png: bytes) -> None:
        path = os.path.join(self.local, "samples", f"step-{step:08d}.png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(png)
        self.pending.add(path)

    def publish(self) -> None:
        self.tb.flush()
        for root, _dirs, files in os.walk(os.path.join(self.local, "logs")):
            self.pending.update(os.path.join(root, n) for n in files)
        for path in sorted(self.pending):
            self.storage.upload_file(path, self.storage.join(self.run_uri, os.path.relpath(path, self.local)))
        self.pending.clear()


def train_loop_per_worker(config: dict) -> None:
    import keras
    import ray.train
    import tensorflow as tf

    from components import metrics as metrics_lib
    from components import models
    from components.config import TrainConfig
    from components.dataset import load_info
    from components.trainer import checkpoint, input_fn, losses
    from components.trainer.step import SRGANSteps

    from components.logs import setup_logging
    setup_logging()  # the worker's own process: our INFO lines, not absl's/TF's
    cfg = TrainConfig(**{f.name: config["train"][f.name] for f in fields(TrainConfig)})
    dataset_uri, run_uri = config["dataset_uri"], config["run_uri"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    tf.config.threading.set_intra_op_parallelism_threads(max(1, cfg.cpus_per_worker))
    tf.config.threading.set_inter_op_parallelism_threads(max(1, cfg.cpus_per_worker))
    if cfg.precision != "float32":
        keras.mixed_precision.set_global_policy(cfg.precision)
    keras.utils.set_random_seed(cfg.seed)

    strategy = _strategy(world, cfg.gpus_per_worker)
    replicas = strategy.num_replicas_in_sync
    global_batch = cfg.global_batch_size
    info = load_info(dataset_uri)
    steps_per_epoch = cfg.steps_per_epoch or max(1, info["num_train"] // global_batch)
    pre_steps, gan_steps = phase_lengths(cfg, steps_per_epoch)
    total = pre_steps + gan_steps
    hr_size = info["shapes"]["hr"][0]

    def adam(lr):
        return keras.optimizers.Adam(lr, beta_1=cfg.adam_beta1, beta_2=cfg.adam_beta2, epsilon=cfg.adam_epsilon)
    with strategy.scope():
        generator = models.build_generator(cfg.generator_width, cfg.generator_blocks, info["preprocess"]["scale"],
                                           cfg.residual_over_bicubic)
        discriminator = models.build_discriminator(hr_size, cfg.discriminator_width, cfg.discriminator_depth,
                                                   cfg.discriminator_batchnorm, cfg.discriminator_dense)
        g_opt, d_opt = adam(cfg.pretrain_learning_rate), adam(cfg.d_learning_rate)
        vgg = None
        if cfg.content_loss == "vgg" and gan_steps > 0:
            vgg = losses.build_vgg_features(cfg.vgg_layer, config.get("vgg_weights_resolved"))
    steps = SRGANSteps(strategy, generator, discriminator, g_opt, d_opt, vgg, global_batch_size=global_batch,
                       content_loss=cfg.content_loss if gan_steps > 0 else "pixel",  # no GAN phase: no VGG
                       content_weight=cfg.content_weight,
                       adversarial_weight=cfg.adversarial_weight,
                       loss_scale=2.0 ** 15 if cfg.precision == "mixed_float16" else 1.0, jit=cfg.jit)
    trackables = {"generator": generator, "discriminator": discriminator, "g_optimizer": g_opt,
                  "d_optimizer": d_opt, "counters": [steps.nonfinite_steps, steps.loss_scale]}

    step, restores, resumed_from = 0, 0, None
    restored = ray.train.get_checkpoint()
    if restored:
        with restored.as_directory() as d:
            arrays, meta = checkpoint.load(d)
        checkpoint.assign(trackables, arrays)
        step, restores, resumed_from = meta["step"], meta.get("restores", 0), meta["step"]
        log.info("rank %d: resumed from the checkpoint at step %d", rank, step)
    elif cfg.warm_start:
        used = checkpoint.load_generator_weights(cfg.warm_start, generator)
        log.info("rank %d: generator warm-started from %s", rank, used)

    outputs = RunOutputs(run_uri) if rank == 0 else None
    if outputs and resumed_from is not None:
        outputs.append({"event": "resume", "step": step, "time": time.time()})
    fixed = input_fn.fixed_batch(dataset_uri, 4)
    fixed_hr = models.to_uint8(fixed["hr"])
    scale = info["preprocess"]["scale"]

    def fixed_psnr(sr_uint8) -> float:  # whole image, no border crop: a training signal, not the evaluator's figure
        return float(tf.reduce_mean(metrics_lib.psnr(sr_uint8, fixed_hr, crop_border=0)))
    bicubic_psnr = fixed_psnr(metrics_lib.bicubic_upscale(models.to_uint8(fixed["lr"]), scale))

    preemption_saved = False

    last_good = checkpoint.snapshot(trackables)
    last_good_step = step
    guard = NonFiniteGuard(cfg.max_nonfinite_in_row, cfg.max_restores, restores)

    def report(reason: str, metrics: dict, final: bool = False):
        nonlocal last_good, last_good_step
        last_good, last_good_step = checkpoint.snapshot(trackables), step
        meta = {"step": step, "epoch": step // steps_per_epoch, "phase": phase_of(step - 1 if step else 0),
                "pretrain_steps": pre_steps, "gan_steps": gan_steps, "restores": guard.restores, "reason": reason,
                "nonfinite_steps": int(steps.nonfinite_steps.numpy()), "world_size": world, "final": final}
        payload = {**{k.replace("/", "_"): float(v) for k, v in metrics.items()}, **meta}
        if rank == 0:
            with tempfile.TemporaryDirectory() as d:
                checkpoint.save(d, last_good, meta)
                outputs.append({"event": "checkpoint", **payload, "time": time.time()})
                outputs.publish()
                ray.train.report(payload, checkpoint=ray.train.Checkpoint.from_directory(d),
                                 checkpoint_dir_name=f"checkpoint_{step:08d}")
        else:
            ray.train.report(payload)

    def phase_of(s: int) -> str:
        return "pretrain" if s < pre_steps else "gan"

    if rank == 0:
        log.info("training: %d replicas (%d workers), global batch %d, %d steps/epoch, pretrain %d + gan %d steps, "
                 "from step %d", replicas, world, global_batch, steps_per_epoch, pre_steps, gan_steps, step)
    window: dict = {}  # metric -> (sum, count) since the last progress line
    last_log = time.time()
    run_start, run_start_step = time.time(), step
    metrics: dict = {}
    while step < total:
        phase = phase_of(step)
        epoch, in_epoch = divmod(step, steps_per_epoch)
        phase_end = pre_steps if phase == "pretrain" else total
        phase_start = 0 if phase == "pretrain" else pre_steps
        g_opt.learning_rate.assign(generator_learning_rate(cfg, phase, step, phase_start, phase_end))
        train_step = steps.pretrain_step if phase == "pretrain" else steps.gan_step

        def dataset_fn(ictx, epoch=epoch, in_epoch=in_epoch):
            return input_fn.make_dataset(
                dataset_uri, batch_size=ictx.get_per_replica_batch_size(global_batch), epoch=epoch, seed=cfg.seed,
                steps=steps_per_epoch, skip_steps=in_epoch, num_shards=ictx.num_input_pipelines,
                shard_index=ictx.input_pipeline_id, shuffle_buffer=cfg.shuffle_buffer, augment_images=cfg.augment)
        for batch in strategy.distribute_datasets_from_function(dataset_fn):
            if cfg.lr_decay == "cosine":
                g_opt.learning_rate.assign(generator_learning_rate(cfg, phase, step, phase_start, phase_end))
            metrics, applied = train_step(batch)
            step += 1
            if step == run_start_step + 1:  # the rate excludes the first step (tracing, warm-up)
                run_start = time.time()
            if bool(applied):
                for k, v in metrics.items():
                    total_k, count_k = window.get(k, (0.0, 0))
                    window[k] = (total_k + float(v), count_k + 1)
            else:
                log.warning("rank %d: step %d had a non-finite loss or gradient: update skipped (%d in a row, %d in all)",
                            rank, step, guard.in_row + 1, int(steps.nonfinite_steps.numpy()))
            if guard.after_step(bool(applied), step):  # the same decision on every worker (applied is all-reduced)
                checkpoint.assign(trackables, last_good)
                log.warning("rank %d: restored the last good state (step %d), restore %d of %d",
                            rank, last_good_step, guard.restores, cfg.max_restores)
            now = time.time()
            if rank == 0 and (now - last_log >= cfg.log_every_seconds or step == total):
                rate = (step - run_start_step - 1) * global_batch / max(now - run_start, 1e-9)
                eta = (total - step) * global_batch / max(rate, 1e-9)
                means = {k: total_k / count_k for k, (total_k, count_k) in window.items()}
                outputs.scalars(step, {**means, "perf/images_per_second": rate})
                log.info("step %d/%d %s epoch %d | %s | %.1f img/s | ETA %s", step, total, phase, step // steps_per_epoch,
                         " ".join(f"{k} {v:.4g}" for k, v in sorted(means.items())), rate,
                         time.strftime("%H:%M:%S", time.gmtime(eta)))
                outputs.append({"event": "train", "step": step, "phase": phase, **means, "images_per_second": rate,
                                "time": now})
                window, last_log = {}, now
            epoch_end = step % steps_per_epoch == 0
            every_n = cfg.checkpoint_every_steps and step % cfg.checkpoint_every_steps == 0
            # A barrier across workers, like the step's all-reduce: every worker asks at every step.
            preempted = not preemption_saved and ray.train.get_preemption_info() is not None
            if preempted:
                log.warning("rank %d: a node of this run is being preempted: checkpointing at step %d", rank, step)
            if epoch_end or every_n or step == phase_end or preempted:
                preemption_saved = preemption_saved or preempted
                reason = ("phase_end" if step == phase_end else "epoch_end" if epoch_end
                          else "every_n_steps" if every_n else "preemption")
                if rank == 0 and (epoch_end or step == phase_end):
                    sr = generator(fixed["lr"], training=False)
                    psnr = fixed_psnr(models.to_uint8(sr))
                    outputs.scalars(step, {"eval/psnr_fixed_batch": psnr, "eval/psnr_bicubic_fixed_batch": bicubic_psnr})
                    outputs.append({"event": "eval", "step": step, "psnr_fixed_batch": psnr,
                                    "psnr_bicubic_fixed_batch": bicubic_psnr, "time": time.time()})
                    outputs.sample(step, _grid_png(fixed["lr"][:4], sr[:4], fixed["hr"][:4]))
                report(reason, metrics, final=step == total)
            if step == phase_end or step >= total:
                window = {}  # the next phase logs other losses
                break

    if rank == 0:
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "generator.keras")
            generator.save(path)
            outputs.storage.upload_file(path, outputs.storage.join(run_uri, "generator.keras"))
        outputs.append({"event": "done", "step": step, "nonfinite_steps": int(steps.nonfinite_steps.numpy()),
                        "time": time.time()})
        outputs.publish()
