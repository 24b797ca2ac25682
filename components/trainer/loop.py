"""What every Ray Train worker runs: build, restore, run each phase, checkpoint, publish outputs.

`train_loop_per_worker(config)` is the whole of it (`run_worker` with Ray Train's session):

    loop = WorkerLoop(config, session)  # config, rank, schedule (computed once by the launcher)
    loop.build()                # strategy, models, optimizers, the distributed steps
    loop.restore()              # the latest checkpoint, else a warm start, else step 0
    for phase in PHASES:
        loop.run_phase(phase)   # epochs of steps; progress lines; checkpoints
    loop.finish()               # rank 0: generator.keras and the last history rows

Checkpoints at every epoch end, every `checkpoint_every_steps`, at each phase end, and once when Ray
Train reports that a node of the run is being preempted (a spot reclaim, a drained Kubernetes node: what
SIGTERM means for a pod). Ray Train V2 runs this function in a thread, where no signal handler can be
installed, so preemption arrives through `ray.train.get_preemption_info()`, a barrier across workers:
every worker asks at the same steps, every `preemption_check_every_steps`.

Ray Train is reached only through a `RaySession` (rank, the checkpoint to resume from, reports, preemption
news), so the loop's parts also run in a plain process with another session (tests/test_loop.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, fields

from components import logs, runs
from components.trainer.schedule import PHASES, Schedule

log = logging.getLogger("trainer")
# Half of Kubernetes' default 30 s termination grace period: the notice a preempted pod gets.
PREEMPTION_CHECK_MAX_SECONDS = 15


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


def checkpoint_reason(step: int, schedule: Schedule, every_steps: int, preempted: bool) -> str | None:
    """Why the state after `step` steps is checkpointed, or None: phase_end, epoch_end, every_n_steps,
    preemption (in that order of precedence)."""
    if step in (schedule.pretrain_steps, schedule.total):
        return "phase_end"
    if step % schedule.steps_per_epoch == 0:
        return "epoch_end"
    if every_steps and step % every_steps == 0:
        return "every_n_steps"
    return "preemption" if preempted else None


class Progress:
    """Mean of each metric since the last progress line, the image rate of the current phase (excluding
    its first step: tracing, warm-up) and the ETA of the whole run: the steps left in this phase at its
    measured pace, the GAN steps after it at `gan_cost` x the pretraining pace until the GAN phase has
    its own measured pace (components/trainer/cost.py predicts gan_cost)."""

    def __init__(self, start_step: int, total: int, global_batch: int, pretrain_steps: int = 0,
                 gan_cost: float | None = None):
        self.total, self.batch, self.pretrain_steps, self.gan_cost = total, global_batch, pretrain_steps, gan_cost
        self.seconds_per_step: dict = {}  # phase -> measured
        self.last_line = time.time()
        self.start_phase(start_step, self.last_line)

    def start_phase(self, step: int, now: float | None = None) -> None:
        """At each phase's first step (and a resumed run's): the rate restarts, a new phase logs other losses."""
        self.phase_start, self.started, self.window = step, time.time() if now is None else now, {}

    def add(self, step: int, metrics: dict | None) -> None:
        """After each step; `metrics` None for a skipped (non-finite) step."""
        if step == self.phase_start + 1:
            self.started = time.time()
        for k, v in (metrics or {}).items():
            total, count = self.window.get(k, (0.0, 0))
            self.window[k] = (total + float(v), count + 1)

    def due(self, step: int, every_seconds: float) -> bool:
        return time.time() - self.last_line >= every_seconds or step == self.total

    def take(self, step: int) -> tuple[dict, float | None, float | None]:
        """(means, images/s, ETA seconds); starts a new window. Rate and ETA are None until a step after
        the phase's first has been timed (the first carries tracing: a rate from it alone would be noise)."""
        now = time.time()
        timed = step - self.phase_start - 1
        rate = timed * self.batch / max(now - self.started, 1e-9) if timed > 0 else None
        if rate:
            self.seconds_per_step["pretrain" if step <= self.pretrain_steps else "gan"] = self.batch / rate
        means = {k: total / count for k, (total, count) in self.window.items()}
        self.window, self.last_line = {}, now
        return means, rate, self.eta(step)

    def eta(self, step: int) -> float | None:
        """Seconds to the run's end after `step` steps; None while a phase still ahead has no pace."""
        pre_left = max(self.pretrain_steps - step, 0)
        gan_left = self.total - max(step, self.pretrain_steps)
        pre = self.seconds_per_step.get("pretrain")
        gan = self.seconds_per_step.get("gan") or (pre * self.gan_cost if pre and self.gan_cost else None)
        if (pre_left and pre is None) or (gan_left and gan is None):
            return None
        return pre_left * (pre or 0.0) + gan_left * (gan or 0.0)


class RunOutputs:
    """Rank 0's history.jsonl, TensorBoard logs and samples: written locally, then published to the run folder."""

    def __init__(self, run_uri: str):
        from components import storage

        self.storage, self.run_uri = storage, run_uri
        self.local = tempfile.mkdtemp(prefix="run-outputs-")
        self.history = os.path.join(self.local, runs.HISTORY)
        remote_history = storage.join(run_uri, runs.HISTORY)
        if storage.exists(remote_history):  # a resumed run continues its history
            with open(self.history, "wb") as f:
                f.write(storage.read_bytes(remote_history))
        from tensorboardX import SummaryWriter  # TensorBoard event files without the tensorboard package

        self.tb = SummaryWriter(os.path.join(self.local, "logs"), flush_secs=30)
        self.pending: set[str] = set()

    def append(self, row: dict) -> None:
        with open(self.history, "a") as f:
            f.write(json.dumps({**row, "time": time.time()}, sort_keys=True) + "\n")
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

    def upload(self, local_path: str, name: str) -> None:
        self.storage.upload_file(local_path, self.storage.join(self.run_uri, name))

    def publish(self) -> None:
        self.tb.flush()
        for root, _dirs, files in os.walk(os.path.join(self.local, "logs")):
            self.pending.update(os.path.join(root, n) for n in files)
        for path in sorted(self.pending):
            self.upload(path, os.path.relpath(path, self.local))
        self.pending.clear()


class RaySession:
    """The loop's one contact with Ray Train: who this worker is, the checkpoint to resume from, reports
    (a barrier: every worker reports each checkpoint; rank 0's carries the files) and preemption news."""

    def __init__(self):
        import ray.train

        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()

    @contextlib.contextmanager
    def latest_checkpoint(self):
        """The folder of the checkpoint to resume from, or None."""
        import ray.train

        restored = ray.train.get_checkpoint()
        if restored is None:
            yield None
            return
        with restored.as_directory() as d:
            yield d

    def report(self, metrics: dict, folder: str | None = None, name: str | None = None) -> None:
        import ray.train

        if folder is None:
            ray.train.report(metrics)
        else:
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder), checkpoint_dir_name=name)

    def preempted(self) -> bool:
        import ray.train

        return ray.train.get_preemption_info() is not None


class WorkerLoop:
    """One worker's training run; see the module docstring for the order of its parts."""

    def __init__(self, config: dict, session):
        from components.config import TrainConfig

        self.cfg = TrainConfig(**{f.name: config["train"][f.name] for f in fields(TrainConfig)})
        self.schedule = Schedule(**config["schedule"])
        self.dataset_uri, self.run_uri = config["dataset_uri"], config["run_uri"]
        self.vgg_weights = config.get("vgg_weights_resolved")
        from components.config import MixedDegradation, RealisticDegradation
        self.realistic = RealisticDegradation(**config["realistic_degradation"])
        self.mixed = MixedDegradation(**config.get("mixed_degradation", {}))
        self.session = session
        self.rank, self.world = self.session.rank, self.session.world
        self.step, self.metrics = 0, {}
        self.preemption_saved = self.warned_cadence = False
        self.progress_lines = 0

    # ------------------------------------------------------------------ build

    def build(self) -> None:
        import keras
        import tensorflow as tf

        from components import dataset, models
        from components.trainer import checkpoint, losses, precision
        from components.trainer.step import SRGANSteps

        cfg = self.cfg
        gpus = tf.config.list_physical_devices("GPU")[:max(cfg.gpus_per_worker, 0)]
        self.precision, self.precision_reason = precision.resolve(cfg.precision, gpus)
        self.onednn_kernels = precision.onednn_kernels()
        if self.precision != "float32":
            keras.mixed_precision.set_global_policy(self.precision)
        if self.rank == 0:
            log.info("precision %s: %s", self.precision, self.precision_reason)
        keras.utils.set_random_seed(cfg.seed)
        self.strategy = _strategy(self.world, cfg.gpus_per_worker)
        self.info = info = dataset.load_info(self.dataset_uri)
        self.scale = info["preprocess"]["scale"]
        self.crop_size = dataset.crop_size(info, "train", cfg.train_crop_size)
        gan = self.schedule.gan_steps > 0

        def adam(lr):
            return keras.optimizers.Adam(lr, beta_1=cfg.adam_beta1, beta_2=cfg.adam_beta2, epsilon=cfg.adam_epsilon)
        with self.strategy.scope():
            self.generator = models.build_generator(cfg.generator_width, cfg.generator_blocks, self.scale,
                                                    cfg.residual_over_bicubic, icnr=cfg.icnr_init,
                                                    upsample_filter=cfg.upsample_filter, upsample=cfg.upsample,
                                                    tail_init=cfg.tail_init)
            # the GAN phase's moving average of the generator: what the run publishes when it is on
            self.ema = (models.build_generator(cfg.generator_width, cfg.generator_blocks, self.scale,
                                               cfg.residual_over_bicubic, icnr=cfg.icnr_init,
                                               upsample_filter=cfg.upsample_filter, upsample=cfg.upsample,
                                               tail_init=cfg.tail_init, name="generator_ema")
                        if cfg.ema_decay and gan else None)
            discriminator = models.build_discriminator(self.crop_size, cfg.discriminator_width,
                                                       cfg.discriminator_depth, cfg.discriminator_batchnorm,
                                                       cfg.discriminator_dense, cfg.discriminator_spectral_norm)
            self.g_opt, d_opt = adam(cfg.pretrain_learning_rate), adam(cfg.d_learning_rate)
            vgg, layer_weights = None, None
            if cfg.content_loss.startswith("vgg") and gan:
                layers = losses.parse_vgg_layers(cfg.vgg_layers, cfg.vgg_network)
                vgg = losses.build_vgg_features(list(layers), self.vgg_weights, cfg.vgg_network,
                                                cfg.vgg_before_activation)
                layer_weights = list(layers.values())
        self.steps = SRGANSteps(self.strategy, self.generator, discriminator, self.g_opt, d_opt, vgg,
                                global_batch_size=cfg.global_batch_size,
                                content_loss=cfg.content_loss if gan else "pixel",  # no GAN phase: no VGG
                                content_weight=cfg.content_weight, adversarial_weight=cfg.adversarial_weight,
                                pixel_weight=cfg.pixel_weight,
                                loss_scale=2.0 ** 15 if self.precision == "mixed_float16" else 1.0, jit=cfg.jit,
                                vgg_layer_weights=layer_weights, vgg_criterion=cfg.vgg_criterion,
                                gan_loss=cfg.gan_loss, pixel_criterion=cfg.pixel_criterion,
                                ema=self.ema, ema_decay=cfg.ema_decay if self.ema is not None else 0.0)
        models_ = {"generator": self.generator, "discriminator": discriminator}
        if self.ema is not None:
            models_["generator_ema"] = self.ema
        self.state = checkpoint.TrainingState(
            models=models_,
            optimizers={"g_optimizer": (self.g_opt, self.generator), "d_optimizer": (d_opt, discriminator)},
            counters={"nonfinite_steps": self.steps.nonfinite_steps, "loss_scale": self.steps.loss_scale})

    @property
    def published(self):
        """The generator the run publishes and samples: the EMA copy when there is one."""
        return self.ema if self.ema is not None else self.generator

    # ------------------------------------------------------------------ restore

    def restore(self) -> None:
        """Resume from Ray Train's latest checkpoint, else warm-start the generator, else start at 0."""
        from components import metrics, models
        from components.trainer import checkpoint, input_fn

        restores, resumed = 0, False
        with self.session.latest_checkpoint() as d:
            arrays, meta = checkpoint.load(d, self.state) if d else (None, None)
        if arrays is not None:
            self.state.assign(arrays)
            self.step, restores, resumed = meta["step"], meta.get("restores", 0), True
            log.info("rank %d: resumed from the checkpoint at step %d", self.rank, self.step)
        elif self.cfg.warm_start:
            used = checkpoint.load_generator_weights(self.cfg.warm_start, self.generator)
            log.info("rank %d: generator warm-started from %s", self.rank, used)
        self.guard = NonFiniteGuard(self.cfg.max_nonfinite_in_row, self.cfg.max_restores, restores)
        self.last_good, self.last_good_step = self.state.snapshot(), self.step
        self.outputs = RunOutputs(self.run_uri) if self.rank == 0 else None
        if self.outputs and resumed:
            self.outputs.append({"event": "resume", "step": self.step})
        self.fixed = input_fn.fixed_batch(self.dataset_uri, 4, self.crop_size)
        self.fixed_hr = models.to_uint8(self.fixed["hr"]).numpy()
        self.fixed_lr = models.to_uint8(self.fixed["lr"]).numpy()
        self.fixed_bicubic = metrics.bicubic_upscale(self.fixed_lr, self.scale).numpy()
        self.bicubic_psnrs = self._fixed_psnrs(self.fixed_bicubic)
        self.progress = Progress(self.step, self.schedule.total, self.cfg.global_batch_size,
                                 self.schedule.pretrain_steps, self._gan_cost() if self.rank == 0 else None)
        if self.rank == 0:
            s = self.schedule
            log.info("training: %d replicas (%d workers), global batch %d, %d steps/epoch, pretrain %d + gan %d "
                     "steps, from step %d", self.strategy.num_replicas_in_sync, self.world, self.cfg.global_batch_size,
                     s.steps_per_epoch, s.pretrain_steps, s.gan_steps, self.step)

    def _gan_cost(self) -> float | None:
        """A GAN step's time over a pretraining step's, predicted when this run has both phases still ahead."""
        from components.trainer import cost

        s = self.schedule
        if not s.gan_steps or self.step >= s.pretrain_steps:
            return None
        per_replica = max(self.cfg.global_batch_size // self.strategy.num_replicas_in_sync, 1)
        return cost.gan_to_pretrain_cost(self.generator, self.steps.D, self.steps.vgg, per_replica,
                                         self.crop_size, self.scale)

    # ------------------------------------------------------------------ run

    def run_phase(self, phase: str) -> None:
        """Steps of `phase` from the current step to the phase end, one epoch's dataset at a time."""
        start, end = self.schedule.bounds(phase)
        train_step = self.steps.pretrain_step if phase == "pretrain" else self.steps.gan_step
        self.progress.start_phase(self.step)
        if phase == "gan" and self.step == start < end:
            self._gan_start()
        while self.step < end:
            self.g_opt.learning_rate.assign(self.schedule.learning_rate(self.cfg, self.step))
            for batch in self._epoch_batches():
                if self.cfg.lr_decay == "cosine":
                    self.g_opt.learning_rate.assign(self.schedule.learning_rate(self.cfg, self.step))
                self.metrics, applied = train_step(batch)
                self.step += 1
                self._after_step(phase, bool(applied))
                if self.step >= end:
                    break

    def _epoch_batches(self):
        """The distributed batches of the rest of the current epoch (resumes mid-epoch exactly)."""
        from components.trainer import input_fn

        cfg, per_epoch = self.cfg, self.schedule.steps_per_epoch
        epoch, in_epoch = divmod(self.step, per_epoch)

        def dataset_fn(ictx):
            return input_fn.make_dataset(
                self.dataset_uri, batch_size=ictx.get_per_replica_batch_size(cfg.global_batch_size), epoch=epoch,
                seed=cfg.seed, steps=per_epoch, skip_steps=in_epoch, num_shards=ictx.num_input_pipelines,
                shard_index=ictx.input_pipeline_id, shuffle_buffer=cfg.shuffle_buffer, augment_images=cfg.augment,
                crop_size=self.crop_size, degradation=cfg.degradation, realistic=self.realistic, mixed=self.mixed)
        return self.strategy.distribute_datasets_from_function(dataset_fn)

    def _after_step(self, phase: str, applied: bool) -> None:
        step, cfg = self.step, self.cfg
        self.progress.add(step, self.metrics if applied else None)
        if not applied:
            log.warning("rank %d: step %d had a non-finite loss or gradient: update skipped (%d in a row, %d in all)",
                        self.rank, step, self.guard.in_row + 1, int(self.steps.nonfinite_steps.numpy()))
        if self.guard.after_step(applied, step):  # the same decision on every worker (applied is all-reduced)
            self.state.assign(self.last_good)
            log.warning("rank %d: restored the last good state (step %d), restore %d of %d",
                        self.rank, self.last_good_step, self.guard.restores, cfg.max_restores)
        if self.rank == 0 and self.progress.due(step, cfg.log_every_seconds):
            self._progress_line(phase)
        reason = checkpoint_reason(step, self.schedule, cfg.checkpoint_every_steps, self._preempted())
        if reason:
            if self.rank == 0 and reason in ("phase_end", "epoch_end"):
                self._sample()
            self.checkpoint(reason)

    def _preempted(self) -> bool:
        """Ray Train's preemption news, asked every `preemption_check_every_steps` (a barrier: every worker
        asks at the same steps); True once."""
        every = self.cfg.preemption_check_every_steps
        if self.preemption_saved or not every or self.step % every:
            return False
        if not self.session.preempted():
            return False
        log.warning("rank %d: a node of this run is being preempted: checkpointing at step %d", self.rank, self.step)
        self.preemption_saved = True
        return True

    def _progress_line(self, phase: str) -> None:
        step = self.step
        means, rate, eta = self.progress.take(step)
        self.outputs.scalars(step, {**means, **({"images_per_second": rate} if rate is not None else {})})
        log.info("step %d/%d %s epoch %d | %s | %s img/s | ETA %s", step, self.schedule.total, phase,
                 step // self.schedule.steps_per_epoch, " ".join(f"{k} {v:.4g}" for k, v in sorted(means.items())),
                 "--" if rate is None else f"{rate:.1f}", logs.eta(eta))
        self.outputs.append({"event": "train", "step": step, "phase": phase, **means, "images_per_second": rate})
        every = self.cfg.preemption_check_every_steps
        self.progress_lines += 1  # the first line's rate still carries warm-up: judged from the second on
        between = every * self.cfg.global_batch_size / rate if rate else 0.0  # seconds between preemption checks
        if between > PREEMPTION_CHECK_MAX_SECONDS and self.progress_lines > 1 and not self.warned_cadence:
            self.warned_cadence = True
            log.warning("preemption is checked every %d steps, about %.0f s here: over %d s, a preempted node may be "
                        "gone before its checkpoint (lower preemption_check_every_steps)", every, between,
                        PREEMPTION_CHECK_MAX_SECONDS)

    def _fixed_psnrs(self, sr_uint8):
        """Per image of the fixed batch; whole image, no border crop: a training signal, not the evaluator's figure."""
        from components import metrics

        return metrics.psnr(sr_uint8, self.fixed_hr, crop_border=0).numpy()

    def _sample(self) -> None:
        """Rank 0, at epoch and phase ends: fixed-batch PSNR and a labelled LR | bicubic | SR | HR grid."""
        from components import models, plots

        sr = models.to_uint8(self.published(self.fixed["lr"], training=False)).numpy()
        psnrs = self._fixed_psnrs(sr)
        psnr, bicubic_psnr = float(psnrs.mean()), float(self.bicubic_psnrs.mean())
        self.outputs.scalars(self.step, {"psnr_fixed_batch": psnr, "psnr_bicubic_fixed_batch": bicubic_psnr})
        self.outputs.append({"event": "eval", "step": self.step, "psnr_fixed_batch": psnr,
                             "psnr_bicubic_fixed_batch": bicubic_psnr})
        rows = [{"name": f"fixed-{i}", "lr": lr, "bicubic": bic, "sr": s, "hr": hr, "psnr_bicubic": pb, "psnr_sr": ps}
                for i, (lr, bic, s, hr, pb, ps) in enumerate(zip(self.fixed_lr, self.fixed_bicubic, sr, self.fixed_hr,
                                                                 self.bicubic_psnrs, psnrs))]
        self.outputs.sample(self.step, plots.comparison_grid(rows, self.scale))

    # ------------------------------------------------------------------ checkpoint and publish

    def checkpoint(self, reason: str) -> None:
        """Every worker reports (Ray Train's barrier); rank 0 writes the state and publishes its outputs."""
        from components.trainer import checkpoint

        step, s = self.step, self.schedule
        self.last_good, self.last_good_step = self.state.snapshot(), step
        meta = {"step": step, "epoch": step // s.steps_per_epoch, "phase": s.phase_of(max(step - 1, 0)),
                "pretrain_steps": s.pretrain_steps, "gan_steps": s.gan_steps, "restores": self.guard.restores,
                "reason": reason, "nonfinite_steps": int(self.steps.nonfinite_steps.numpy()),
                "world_size": self.world, "final": step == s.total,
                "precision": self.precision, "precision_reason": self.precision_reason,
                "onednn_kernels": self.onednn_kernels}
        payload = {**{k: float(v) for k, v in self.metrics.items()}, **meta}
        if self.rank != 0:
            self.session.report(payload)
            return
        with tempfile.TemporaryDirectory() as d:
            checkpoint.save(d, self.last_good, meta)
            self.outputs.append({"event": "checkpoint", **payload})
            self.outputs.publish()
            self.session.report(payload, d, f"checkpoint_{step:08d}")

    def _gan_start(self) -> None:
        """At the GAN phase's first step: the EMA starts from the generator, and rank 0 keeps the
        PSNR-oriented generator (`generator_psnr.keras`: the warm start or the pretraining's result), which
        network interpolation blends with the GAN's and the evaluator compares with."""
        if self.ema is not None:
            for e, g in zip(self.ema.weights, self.generator.weights):
                e.assign(g)
        if self.rank == 0:
            self._save_generator(self.generator, runs.GENERATOR_PSNR)

    def _save_generator(self, model, name: str) -> None:
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, name)
            model.save(path)
            self.outputs.upload(path, name)

    def finish(self) -> None:
        """Rank 0: the final generator.keras (the EMA copy when there is one) and the 'done' row."""
        if self.rank != 0:
            return
        self._save_generator(self.published, runs.GENERATOR)
        self.outputs.append({"event": "done", "step": self.step, "nonfinite_steps": int(self.steps.nonfinite_steps.numpy())})
        self.outputs.publish()


def _strategy(world_size: int, gpus: int):
    import tensorflow as tf

    if world_size > 1:  # tf_cluster.TFClusterConfig has set TF_CONFIG for every worker
        return tf.distribute.MultiWorkerMirroredStrategy()
    devices = [d.name.replace("/physical_device:", "/") for d in tf.config.list_physical_devices("GPU")][:max(gpus, 0)]
    return tf.distribute.MirroredStrategy(devices or ["/cpu:0"])


def worker_config(train, schedule: Schedule, dataset_uri: str, run_uri: str, vgg_weights, realistic,
                  mixed=None) -> dict:
    """What the launcher hands every worker (plain values: Ray pickles it), in the shape WorkerLoop reads.
    `train` a TrainConfig, `realistic` a RealisticDegradation, `mixed` a MixedDegradation (none: the defaults),
    `vgg_weights` as losses.resolve_vgg_weights gives."""
    from components.config import MixedDegradation

    return {"train": asdict(train), "dataset_uri": dataset_uri, "run_uri": run_uri, "schedule": schedule.to_dict(),
            "vgg_weights_resolved": vgg_weights, "realistic_degradation": asdict(realistic),
            "mixed_degradation": asdict(mixed or MixedDegradation())}


def train_loop_per_worker(config: dict) -> None:
    """Ray Train's entry point (one argument, as Ray Train requires)."""
    import tensorflow as tf

    from components.logs import setup_logging

    # The worker's own process: our lines in our format (not absl's/TF's), and TensorFlow's thread pools
    # sized to the worker's CPUs before TensorFlow starts (run_worker in another process leaves them alone).
    setup_logging(ray_worker=True)
    cpus = max(1, int(config["train"]["cpus_per_worker"]))
    tf.config.threading.set_intra_op_parallelism_threads(cpus)
    tf.config.threading.set_inter_op_parallelism_threads(cpus)
    run_worker(config, RaySession())


def run_worker(config: dict, session) -> None:
    loop = WorkerLoop(config, session)
    loop.build()
    loop.restore()
    for phase in PHASES:
        loop.run_phase(phase)
    loop.finish()
