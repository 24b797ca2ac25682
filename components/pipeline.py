"""The pipeline: preprocess -> train -> evaluate -> push with one config (scheduled retraining's entry).

Idempotent: the dataset id fingerprints the inputs, the run id is derived from it (and from the model
a warm start begins at), and every step whose committed output exists is skipped. Before training it
compares the new dataset's statistics with those of the data behind the current model and records a
drift warning past `drift_threshold`. What it did goes to `runs/<run-id>/pipeline.json`.
"""

from __future__ import annotations

import copy
import datetime
import logging
import time

import numpy as np

from components import registry, runs, storage
from components.config import Config

log = logging.getLogger("pipeline")


def drift(new_stats: dict | None, old_stats: dict | None, threshold: float) -> dict:
    """Per-channel shift of the HR mean in units of the old data's std (and the std ratio)."""
    if not new_stats or not old_stats:
        return {"checked": False, "reason": "no statistics to compare (first model, or none recorded)"}
    new_mean, old_mean = np.asarray(new_stats["hr_mean"]), np.asarray(old_stats["hr_mean"])
    old_std = np.maximum(np.asarray(old_stats["hr_std"]), 1e-6)
    shift = np.abs(new_mean - old_mean) / old_std
    std_ratio = np.asarray(new_stats["hr_std"]) / old_std
    worst = float(shift.max())
    out = {"checked": True, "mean_shift_in_std": [round(float(v), 4) for v in shift],
           "std_ratio": [round(float(v), 4) for v in std_ratio], "max_mean_shift_in_std": round(worst, 4),
           "threshold": threshold, "drifted": worst > threshold}
    if out["drifted"]:
        out["warning"] = (f"data drift: a channel mean moved by {worst:.2f} std (threshold {threshold}) "
                          "from the data the current model was trained on")
    return out


def run(cfg: Config, beam_args: list[str] | None = None) -> dict:
    """Run every step (skipping committed ones); returns the summary written to pipeline.json."""
    from components import evaluator, preprocess, pusher, trainer

    cfg = copy.deepcopy(cfg)
    steps, started = [], time.time()

    def step(name: str, status: str, t0: float, **details):
        steps.append({"step": name, "status": status, "seconds": round(time.time() - t0, 1), **details})
        log.info("pipeline: %s %s (%.0f s)", name, status, time.time() - t0)  # details: pipeline.json

    n = 5 if cfg.retention.run_after_pipeline else 4  # gc is the last step when configured
    p = cfg.preprocess
    crops = (f"patches of {p.patch_size} px" if p.crop_mode == "patches" else f"{p.crop_size} px centre crops")
    log.info("pipeline [1/%d] preprocess: %s -> HR/LR TFRecords (%s, x%d) under %s/datasets", n,
             cfg.input or "the built-in sample photos", crops,
             p.scale, cfg.artifact_root)
    t0 = time.time()
    info = preprocess.run(cfg, beam_args)
    cfg.dataset_id = info["dataset_id"]
    step("preprocess", "skipped (committed)" if info.get("skipped") else "ran", t0, dataset_id=cfg.dataset_id,
         num_train=info["num_train"], num_eval=info["num_eval"], num_rejected=info.get("num_rejected"))

    root = registry.model_root(cfg.artifact_root, cfg.push.model_name)
    current = registry.latest(root)
    current_card = registry.card(registry.version_uri(root, current)) if current is not None else None
    drift_report = drift(info.get("statistics"), (current_card or {}).get("lineage", {}).get("dataset_statistics"),
                         cfg.pipeline.drift_threshold)
    if drift_report.get("warning"):
        log.warning("%s", drift_report["warning"])

    suffix = ""
    if cfg.pipeline.warm_start_latest and not cfg.train.warm_start:
        if current is None:
            log.info("warm_start_latest: no model pushed yet; training from scratch")
        else:
            cfg.train.warm_start = registry.version_uri(root, current)
            suffix = f"-from-v{current}"
    cfg.run_id = cfg.run_id or f"retrain-{cfg.dataset_id}{suffix}"

    t = cfg.train
    log.info("pipeline [2/%d] train: run %s: %s pretraining + %s GAN steps, batch %d, %s, %d worker(s) x %d CPU%s",
             n, cfg.run_id, t.pretrain_steps if t.pretrain_steps is not None else f"{t.pretrain_epochs} epochs of",
             t.gan_steps if t.gan_steps is not None else f"{t.gan_epochs} epochs of", t.global_batch_size,
             f"{t.train_crop_size} px crops" if t.train_crop_size else "whole records", t.num_workers,
             t.cpus_per_worker, f", from {t.warm_start}" if t.warm_start else "")
    t0 = time.time()
    previous = runs.read_run(cfg.artifact_root, cfg.run_id)
    if previous and previous.get("status") == "succeeded" and not cfg.force:
        step("train", "skipped (run finished)", t0, run_id=cfg.run_id)
    else:
        record = trainer.run(cfg)
        step("train", "ran", t0, run_id=cfg.run_id, warm_start=cfg.train.warm_start,
             final_metrics={k: v for k, v in (record.get("final_metrics") or {}).items() if isinstance(v, (int, float))})

    e = cfg.evaluate
    eval_folder = runs.eval_uri(cfg.artifact_root, cfg.run_id)
    log.info("pipeline [3/%d] evaluate: the eval split%s%s vs bicubic and LATEST, rule %s -> %s", n,
             f", rungs {e.eval_rungs}" if e.eval_rungs else "", f", {e.eval_images}" if e.eval_images else "",
             e.bless_rule, eval_folder)
    t0 = time.time()
    already = runs.decision(eval_folder) is not None and not cfg.force
    result = evaluator.run(cfg)
    step("evaluate", "skipped (committed)" if already else "ran", t0, decision=result["decision"],
         psnr_rgb=result["eval_split"]["psnr_rgb"], bicubic_psnr_rgb=result["eval_split"]["bicubic_psnr_rgb"],
         reasons=result["reasons"])

    t0 = time.time()
    pushed = None
    log.info("pipeline [4/%d] push: %s", n, f"{cfg.push.model_name} -> {root}" if result["decision"] == runs.BLESSED
             else "nothing (NOT_BLESSED)")
    if result["decision"] == runs.BLESSED:
        card = pusher.run(cfg)
        pushed = {"version": card["version"], "uri": card["uri"]}
        step("push", "skipped (already pushed)" if card.get("already_pushed") else "ran", t0, **pushed)
    else:
        step("push", "skipped (NOT_BLESSED)", t0)

    if cfg.retention.run_after_pipeline:
        from components import gc

        r = cfg.retention
        log.info("pipeline [5/5] gc: keep %d versions per model, %d runs, %d datasets (and their lineage) under %s",
                 r.keep_versions, r.keep_runs, r.keep_datasets, cfg.artifact_root)
        t0 = time.time()
        done = gc.apply(gc.plan(cfg.artifact_root, r))
        step("gc", f"deleted {len(done)} items ({gc.human_bytes(sum(i.bytes for i in done))})" if done
             else "nothing to delete", t0, deleted=[{"uri": i.uri, "why": i.why, "bytes": i.bytes} for i in done])

    summary = {
        "run_id": cfg.run_id,
        "dataset_id": cfg.dataset_id,
        "steps": steps,
        "decision": result["decision"],
        "reasons": result["reasons"],
        "eval": eval_folder,
        "pushed": pushed,
        "latest": registry.latest(root),
        "previous_latest": current,
        "drift": drift_report,
        "warnings": [w for w in [drift_report.get("warning")] if w],
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.time() - started, 1),
    }
    storage.write_json(storage.join(runs.run_uri(cfg.artifact_root, cfg.run_id), runs.PIPELINE_JSON), summary)
    return summary
