"""The pusher: exports a blessed run as the next version of `models/<name>/`.

A version folder (DESIGN.md): a SavedModel whose `serving_default` maps uint8 [b, h, w, 3] (any h, w)
to uint8 [b, 4h, 4w, 3] and loads with plain TensorFlow; `generator.keras` for warm starts;
`model.onnx` and `model.tflite` (+ `model_fp16.tflite`), the same contract for ONNX Runtime and LiteRT, each
checked against the SavedModel's pixels before the version commits (components.pusher.exports);
`model.json` (metrics, lineage, licence note, sha256 of every other file), written last. Version
numbers are claimed atomically, and LATEST moves only to blessed versions (see components.registry).
"""

from __future__ import annotations

import datetime
import logging
import os
import shutil
import tempfile

from components import dataset, provenance, registry, runs, storage
from components.pusher import exports
from components.config import Config, TrainConfig
from components.errors import UserError

log = logging.getLogger("push")
# what makes two generators blendable (strength pairs) and what a card records
ARCH_KEYS = ("generator_width", "generator_blocks", "residual_over_bicubic", "upsample_filter", "upsample")

SIGNATURE = {"name": "serving_default", "inputs": {"images": "uint8 [batch, height, width, 3]"},
             "outputs": {"sr": "uint8 [batch, 4*height, 4*width, 3]"}}


class PushError(UserError):
    """The run cannot be pushed (not evaluated, not blessed, no generator); the message says why."""


def export_saved_model(generator_keras: str, out_dir: str, strength_base: str | None = None,
                       strength: float = 1.0):
    """Write the generator as a SavedModel with a uint8 -> uint8 `serving_default` into `out_dir`; with a
    strength pair, the blend strength * generator + (1 - strength) * strength_base. Returns the Keras
    generator exported (the exports beside the SavedModel are converted from it)."""
    import keras
    import tensorflow as tf

    from components import models

    generator = keras.saving.load_model(generator_keras, compile=False)
    if strength_base is not None:
        generator.set_weights(models.blend_weights(
            generator, keras.saving.load_model(strength_base, compile=False), strength))
    archive = keras.export.ExportArchive()
    archive.track(generator)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    def serve(images):
        # The same [-1, 1] mapping and uint8 rounding as training and evaluation (components.models).
        return {"sr": models.to_uint8(generator(models.to_unit(images), training=False))}

    archive.add_endpoint("serving_default", serve)
    archive.write_out(out_dir, verbose=False)
    return generator


def architecture(train: dict) -> dict:
    """A run's generator architecture from its recorded train config; a key recorded before it existed has
    its default (the architecture every run had then)."""
    defaults = TrainConfig()
    return {k: train.get(k, getattr(defaults, k)) for k in ARCH_KEYS}


def _strength_base(cfg: Config) -> str:
    """The local generator.keras of push.strength_base_run, checked to blend with the pushed run's."""
    record = runs.read_run(cfg.artifact_root, cfg.push.strength_base_run)
    if record is None or record.get("status") != "succeeded" or not record.get("final_generator"):
        raise PushError(f"strength_base_run {cfg.push.strength_base_run}: no finished run of that id under "
                        f"{cfg.artifact_root}/runs")
    base = storage.stage_in(record["final_generator"])
    ours = runs.read_run(cfg.artifact_root, cfg.run_id)["config"]
    theirs = record["config"]
    if architecture(theirs) != architecture(ours):
        def arch(c):
            return ", ".join(f"{k} {v}" for k, v in architecture(c).items())
        raise PushError(f"strength_base_run {cfg.push.strength_base_run}: its generator ({arch(theirs)}) is not the "
                        f"architecture of run {cfg.run_id} ({arch(ours)}): a strength pair blends weights")
    return base


def _check_photos(dataset_uri: str, limit: int) -> list:
    """The LR of the dataset's eval split (what the evaluator scored), the first `limit` by name (0: all)."""
    from components import evaluator

    rows = sorted(evaluator.eval_split(dataset_uri), key=lambda r: r["name"])
    return [r["lr"] for r in (rows[:limit] if limit else rows)]


def _already_pushed(root: str, run_id: str, generator_sha: str, blessed: bool) -> dict | None:
    for v in reversed(registry.versions(root)):
        c = registry.card(registry.version_uri(root, v))
        if c.get("run_id") == run_id and c.get("files", {}).get("generator.keras") == generator_sha \
                and bool(c.get("blessed")) == blessed:
            return c
    return None


def run(cfg: Config) -> dict:
    """Push the run `cfg.run_id`; returns the model card (with 'uri'). Idempotent per run + generator."""

    if not cfg.run_id:
        raise PushError("pass --run-id: the run to push")
    run_folder = runs.run_uri(cfg.artifact_root, cfg.run_id)
    record = runs.read_run(cfg.artifact_root, cfg.run_id)
    if record is None:
        raise PushError(f"run {cfg.run_id}: no run.json under {cfg.artifact_root}/runs")
    generator_uri = record.get("final_generator")
    if record.get("status") != "succeeded" or not generator_uri:
        raise PushError(f"run {cfg.run_id} has status {record.get('status')!r}: only finished runs are pushed")
    eval_folder = runs.eval_uri(cfg.artifact_root, cfg.run_id)
    verdict = runs.decision(eval_folder)
    if verdict is None:
        raise PushError(f"run {cfg.run_id} has not been evaluated: run jobs/evaluate.py --run-id {cfg.run_id} first")
    blessed = verdict["decision"] == runs.BLESSED
    if not blessed and not cfg.push.push_unblessed:
        raise PushError(f"run {cfg.run_id} is NOT_BLESSED, nothing pushed ({'; '.join(verdict['reasons'])}). "
                        "--push-unblessed exports it anyway, as a version LATEST never points to")
    if not blessed:
        for line in ("!" * 78, f"FORCED PUSH of run {cfg.run_id}, which the evaluator did NOT bless:",
                     *verdict["reasons"], "The version is marked blessed=false; LATEST will not point to it.",
                     "!" * 78):
            log.warning(line)

    eval_metrics = runs.read_metrics(eval_folder)
    interpolation = eval_metrics.get("interpolation")
    if interpolation:  # the evaluator judged a blend of the GAN and PSNR generators: that blend is what ships
        generator_uri = interpolation["generator"]
    root = registry.model_root(cfg.artifact_root, cfg.push.model_name)
    local_generator = storage.stage_in(generator_uri)
    generator_sha = registry.sha256_file(local_generator)
    previous = None if cfg.force else _already_pushed(root, cfg.run_id, generator_sha, blessed)
    if previous:
        uri = registry.version_uri(root, previous["version"])
        log.info("run %s is already version %s (%s); nothing to do", cfg.run_id, previous["version"], uri)
        if blessed:
            registry.update_latest(root)
        return {**previous, "uri": uri, "already_pushed": True}

    rule = eval_metrics.get("bless_rule", "psnr")  # metrics.json before 2026-11-25: always the PSNR rule
    known = registry.versions(root)
    if known:  # a model name keeps the rule its versions were blessed by
        kept = registry.card(registry.version_uri(root, known[-1])).get("bless_rule", "psnr")
        if kept != rule:
            raise PushError(f"model {cfg.push.model_name} is blessed by the {kept} rule (its model cards say so); run "
                            f"{cfg.run_id} was judged by the {rule} rule: push it under another --model-name, or "
                            f"evaluate it again with --bless-rule {kept}")
    dataset_info = dataset.load_info(record["dataset_uri"])
    staging = tempfile.mkdtemp(prefix="push-")
    try:
        local = os.path.join(staging, "version")
        base = _strength_base(cfg) if cfg.push.strength_base_run else None
        generator = export_saved_model(local_generator, local, base, cfg.push.default_strength)
        # ONNX and LiteRT beside the SavedModel, each checked against it before anything is claimed or published
        formats = [f.strip() for f in cfg.push.exports.split(",") if f.strip()]
        photos = _check_photos(record["dataset_uri"], cfg.push.export_check_images) if formats else []
        exported = exports.write_and_check(generator, local, formats, photos)
        shutil.copyfile(local_generator, os.path.join(local, "generator.keras"))
        if base:
            shutil.copyfile(base, os.path.join(local, registry.STRENGTH_BASE))
        version = registry.claim_version(root, {"run_id": cfg.run_id})
        train = record.get("config", {})
        card = {
            "format_version": 1,
            "name": cfg.push.model_name,
            "version": version,
            "blessed": blessed,
            "forced": not blessed,
            "bless_rule": rule,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "run_id": cfg.run_id,
            "dataset_id": record["dataset_id"],
            "scale": dataset_info["preprocess"]["scale"],
            "signature": SIGNATURE,
            # model.onnx / model.tflite: converters, runtimes and pixel agreement with the SavedModel (exports.py)
            "exports": exported,
            "generator": architecture(train),
            # a degradation-strength knob: generator.keras is strength 1, generator_strength0.keras strength 0
            "strength": {"base_run": cfg.push.strength_base_run, "default": cfg.push.default_strength,
                         "file": registry.STRENGTH_BASE} if base else None,
            # alpha * GAN + (1 - alpha) * PSNR-oriented generator, as the evaluator chose it; None: the run's own
            "interpolation": {k: interpolation.get(k) for k in ("chosen_alpha", "gan_generator", "psnr_generator")}
            if interpolation else None,
            "metrics": {"decision": verdict["decision"], "reasons": verdict["reasons"],
                        "eval_split": eval_metrics.get("eval_split"), "eval_images": eval_metrics.get("eval_images"),
                        "baseline": eval_metrics.get("baseline"), "convention": eval_metrics.get("convention"),
                        "perceptual": eval_metrics.get("perceptual"),
                        # the evaluation's page for people, relative to lineage.run (evaluations before it have none)
                        "report": f"{runs.EVAL}/{runs.REPORT_HTML}"
                        if storage.exists(storage.join(eval_folder, runs.REPORT_HTML)) else None},
            "lineage": {
                "run": run_folder, "dataset": record["dataset_uri"], "dataset_input": dataset_info.get("input"),
                "dataset_statistics": dataset_info.get("statistics"), "warm_start": train.get("warm_start"),
                "vgg_features": record.get("vgg_features"), "schedule": record.get("schedule"),
                "training_code_version": record.get("code_version"), "push_code_version": provenance.code_version(),
                "package_versions": record.get("package_versions"),
            },
            "data_licence": cfg.push.data_licence,
            "files": registry.file_hashes(local),
        }
        storage.write_json(os.path.join(local, registry.MODEL_CARD), card)
        uri = registry.commit_version(local, root, version)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    latest = registry.update_latest(root) if blessed else registry.latest(root)
    log.info("pushed run %s as %s (version %d, %s); LATEST -> %s", cfg.run_id, uri, version,
             "blessed" if blessed else "NOT blessed", latest)
    return {**card, "uri": uri, "latest": latest}
