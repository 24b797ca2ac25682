"""The trainer component's driver: checks inputs, writes run.json, launches Ray Train's data-parallel trainer.

Works as plain `python jobs/train.py` (starts a local Ray), under `ray job submit` and in a KubeRay
RayJob (both set RAY_ADDRESS, so `ray.init()` joins that cluster).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import re

from components import dataset, logs, provenance, runs, storage
from components.config import Config
from components.errors import UserError

log = logging.getLogger("trainer")
RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class TrainError(UserError):
    """The training run cannot start or did not finish; the message says why."""


def _check(cfg: Config) -> dict:
    t = cfg.train
    if not cfg.dataset_id:
        raise TrainError("no dataset given: pass --dataset-id (the id jobs/preprocess.py printed)")
    uri = dataset.dataset_uri(cfg.artifact_root, cfg.dataset_id)
    info = dataset.load_info(uri)
    if info["num_train"] < 1:
        raise TrainError(f"dataset {cfg.dataset_id} has no training examples")
    if cfg.run_id and not RUN_ID_RE.match(cfg.run_id):
        raise TrainError(f"run id {cfg.run_id!r}: use letters, digits, '.', '_' or '-' (at most 128)")
    if t.num_workers < 1 or t.cpus_per_worker < 1 or t.gpus_per_worker < 0:
        raise TrainError("num_workers and cpus_per_worker must be >= 1, gpus_per_worker >= 0")
    replicas = t.num_workers * max(1, t.gpus_per_worker)
    if t.global_batch_size < 1 or t.global_batch_size % replicas:
        raise TrainError(f"global_batch_size {t.global_batch_size} must be a positive multiple of the "
                         f"{replicas} replicas ({t.num_workers} workers x {max(1, t.gpus_per_worker)} devices)")
    from components.trainer.precision import PRECISIONS
    if t.precision not in PRECISIONS:
        raise TrainError(f"precision {t.precision!r}: choose one of {', '.join(PRECISIONS)}")
    if t.lr_decay not in ("constant", "cosine"):
        raise TrainError(f"lr_decay {t.lr_decay!r}: choose constant or cosine")
    from components.trainer.losses import CONTENT_LOSSES
    if t.content_loss not in CONTENT_LOSSES:
        raise TrainError(f"content_loss {t.content_loss!r}: choose one of {', '.join(CONTENT_LOSSES)}")
    for name in ("pretrain_steps", "gan_steps", "pretrain_epochs", "gan_epochs", "steps_per_epoch",
                 "preemption_check_every_steps"):
        value = getattr(t, name)
        if value is not None and value < 0:
            raise TrainError(f"{name} must be >= 0, got {value}")
    if not 0.0 <= t.ema_decay < 1.0:
        raise TrainError(f"ema_decay must be within [0, 1) (0: off), got {t.ema_decay}")
    dataset.crop_size(info, "train", t.train_crop_size)  # before any worker starts
    if t.warm_start:
        if runs.find_generator(t.warm_start) is None:
            raise TrainError(f"warm_start {t.warm_start}: no generator.keras there")
    return info


def degradation_record(cfg: Config) -> dict:
    """run.json's record of the degradation settings a run trains with: realistic_degradation (realistic and
    mixed), mixed_degradation (mixed); nothing for bicubic."""
    d = cfg.train.degradation
    return {**({"realistic_degradation": dataclasses.asdict(cfg.realistic_degradation)}
               if d in ("realistic", "mixed") else {}),
            **({"mixed_degradation": dataclasses.asdict(cfg.mixed_degradation)} if d == "mixed" else {})}


def run(cfg: Config) -> dict:
    """Train; returns the final run.json. A run id that has checkpoints resumes from the latest one."""
    info = _check(cfg)
    t = cfg.train
    run_id = cfg.run_id or f"{cfg.dataset_id}-{datetime.datetime.now(datetime.timezone.utc):%Y%m%d-%H%M%S}"
    out = runs.run_uri(cfg.artifact_root, run_id)
    from components.trainer.schedule import Schedule

    schedule = Schedule.from_config(t, info["num_train"])
    gan = schedule.gan_steps
    vgg_weights = None
    if t.content_loss.startswith("vgg") and gan > 0:
        from components.trainer.losses import VggWeightsError, parse_vgg_layers, resolve_vgg_weights
        try:  # before anything starts: a missing or misfit weights file is the user's to fix, not a worker crash
            parse_vgg_layers(t.vgg_layers, t.vgg_network)
            vgg_weights = resolve_vgg_weights(t.vgg_weights, t.vgg_network)
        except VggWeightsError as exc:
            raise TrainError(str(exc)) from None
        if vgg_weights is None:
            log.warning("vgg_weights: none: the perceptual loss compares RANDOM %s features. Measured here, that made "
                        "the GAN phase worse than its warm start (NIQE 7.14 -> 11.16, a checkerboard over every image; "
                        "BENCHMARKS.md). Give ImageNet weights (vgg_weights: imagenet or a file), or use content_loss: "
                        "feature_matching, which needs none", t.vgg_network)

    import ray
    import ray.train
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    from components.trainer.loop import train_loop_per_worker, worker_config
    from components.trainer.tf_cluster import TFClusterConfig

    run_json = storage.join(out, runs.RUN_JSON)
    previous = runs.read_run(cfg.artifact_root, run_id)
    record = {
        "run_id": run_id,
        "dataset_id": cfg.dataset_id,
        "dataset_uri": dataset.dataset_uri(cfg.artifact_root, cfg.dataset_id),
        "config": dataclasses.asdict(t),
        **degradation_record(cfg),
        "schedule": schedule.to_dict(),
        "vgg_features": ({"network": t.vgg_network, "weights": "random (untrained)" if vgg_weights is None else vgg_weights,
                          "layers": t.vgg_layers, "before_activation": t.vgg_before_activation,
                          "criterion": t.vgg_criterion} if t.content_loss.startswith("vgg") and gan > 0 else "unused"),
        "code_version": provenance.code_version(),
        "package_versions": provenance.package_versions(),
        "seeds": {"seed": t.seed},
        "status": "running",
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "attempts": (previous or {}).get("attempts", 0) + 1,
        "final_generator": None,
    }
    storage.write_json(run_json, record)
    log.info("run %s -> %s (%d workers x %d CPU / %d GPU)", run_id, out, t.num_workers, t.cpus_per_worker,
             t.gpus_per_worker)

    started_ray = False
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")  # set by `ray job submit` and KubeRay: join that cluster
        if not address:
            os.environ.pop("RAY_ADDRESS", None)  # Ray itself rejects an empty one
        # The dashboard serves the State API that Ray Train's placement-group cleaner polls (without it,
        # it logs a warning every few seconds); local only, on a free port.
        local = {} if address else {"include_dashboard": True, "dashboard_host": "127.0.0.1",
                                    "dashboard_port": _free_port(), "_temp_dir": os.environ.get("SRGAN_RAY_TEMP_DIR")}
        # Every actor of this job (Ray Train's controller too, which writes checkpoints through the storage
        # filesystem) gets the storage settings: a cluster's nodes may not have them. A `ray job submit`
        # driver has its runtime env from the submission already (merging could conflict).
        job_env = {} if os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") else {"runtime_env": {"env_vars": _forwarded_env()}}
        ray.init(address=address, logging_level=logging.WARNING, **local, **job_env)
        started_ray = True
    fs, path = storage.pyarrow_filesystem(runs.runs_root(cfg.artifact_root))
    trainer = DataParallelTrainer(  # Ray's TensorflowTrainer, but its controller does not import TensorFlow
        train_loop_per_worker,
        backend_config=TFClusterConfig(),
        train_loop_config=worker_config(t, schedule, record["dataset_uri"], out, vgg_weights, cfg.realistic_degradation,
                                        cfg.mixed_degradation),
        scaling_config=ScalingConfig(num_workers=t.num_workers, use_gpu=t.gpus_per_worker > 0,
                                     resources_per_worker={"CPU": t.cpus_per_worker,
                                                           **({"GPU": t.gpus_per_worker} if t.gpus_per_worker else {})}),
        run_config=RunConfig(name=run_id, storage_path=path, storage_filesystem=fs,
                             failure_config=FailureConfig(max_failures=t.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=t.keep_checkpoints),
                             # Ray Train's INFO lines (every report, every checkpoint path) only with --verbose
                             logging_config=LoggingConfig(log_level="INFO" if logs.verbose() else "WARNING"),
                             worker_runtime_env={"env_vars": _forwarded_env()}),
    )
    try:
        result = trainer.fit()
    except Exception as exc:  # noqa: BLE001 - recorded in run.json, then one clear line for the user
        record.update(status="failed", error=f"{type(exc).__name__}: {str(exc)[-2000:]}",
                      finished=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
        storage.write_json(run_json, record)
        raise TrainError(f"run {run_id} failed: {_root_cause(exc)} (details in {run_json})") from None
    finally:
        if started_ray:
            ray.shutdown()
    final = storage.join(out, runs.GENERATOR)
    final_metrics = dict(result.metrics or {})
    record.update(status="succeeded", final_generator=final if storage.exists(final) else None,
                  final_metrics=final_metrics,
                  # decided on the workers (`precision: auto` looks at their hardware, not the driver's)
                  precision={"policy": final_metrics.get("precision"), "reason": final_metrics.get("precision_reason"),
                             "onednn_kernels": final_metrics.get("onednn_kernels")},
                  latest_checkpoint=getattr(result.checkpoint, "path", None),
                  finished=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    storage.write_json(run_json, record)
    return record


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _forwarded_env() -> dict:
    """Storage settings the workers need (they may start with a different environment)."""
    keys = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
            "AWS_SESSION_TOKEN", "SRGAN_CACHE_DIR", "TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS", logs.VERBOSE_ENV,
            storage.RETRIES_ENV, storage.CACHE_MAX_ENV)
    return {k: os.environ[k] for k in keys if os.environ.get(k)}


def _root_cause(exc: BaseException) -> str:
    """The innermost error's one-line message (Ray wraps worker errors a few times)."""
    while exc.__cause__ is not None and exc.__cause__ is not exc:
        exc = exc.__cause__
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}"
