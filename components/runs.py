"""The run artifact, `<artifact-root>/runs/<run-id>/`: the one module that knows its layout and reads it.

    run.json        the trainer's record (config, dataset id, status, final generator, final metrics)
    history.jsonl   one JSON row per event (train progress, eval, checkpoint, resume, done)
    generator.keras the final generator (warm starts, the pusher)
    logs/, samples/ TensorBoard events and fixed-batch grids (rank 0)
    eval/           the evaluator's folder: metrics.json, per_image.csv, grids/, loss_curve.png, report.html (the page
                    for people), and BLESSED | NOT_BLESSED last
    pipeline.json   what jobs/pipeline.py did for this run

Readers accept every format that has been written: before 2026-11-25, run.json and the checkpoint rows of
history.jsonl named metrics with "_" (`loss_g_pixel`); they are read with the one name the train rows and
TensorBoard use (`loss/g_pixel`).
"""

from __future__ import annotations

import json

from components import storage

RUN_JSON, HISTORY, GENERATOR, PIPELINE_JSON, EVAL = "run.json", "history.jsonl", "generator.keras", "pipeline.json", "eval"
GENERATOR_PSNR = "generator_psnr.keras"  # the generator at the GAN phase's start (PSNR-oriented): interpolation's other end
METRICS_JSON = "metrics.json"  # in an eval folder, with per_image.csv, grids/ and the decision
LOSS_CURVE_PNG = "loss_curve.png"  # in an eval folder too
REPORT_HTML = "report.html"  # in an eval folder: the page for people (components/evaluator/report.py)
BLESSED, NOT_BLESSED = "BLESSED", "NOT_BLESSED"
METRIC_GROUPS = ("loss", "d")  # metric names are "<group>/<name>"


def runs_root(artifact_root: str) -> str:
    return storage.join(artifact_root, "runs")


def run_uri(artifact_root: str, run_id: str) -> str:
    return storage.join(runs_root(artifact_root), run_id)


def eval_uri(artifact_root: str, run_id: str) -> str:
    return storage.join(run_uri(artifact_root, run_id), EVAL)


def metric_name(key: str) -> str:
    """The one name of a metric: `loss_g_pixel` (run.json before 2026-11-25) -> `loss/g_pixel`."""
    for group in METRIC_GROUPS:
        if key.startswith(group + "_") and "/" not in key:
            return group + "/" + key[len(group) + 1:]
    return key


def read_run(artifact_root: str, run_id: str) -> dict | None:
    """A run's run.json, or None when the run has none."""
    uri = storage.join(run_uri(artifact_root, run_id), RUN_JSON)
    if not storage.exists(uri):
        return None
    record = storage.read_json(uri)
    if isinstance(record.get("final_metrics"), dict):
        record["final_metrics"] = {metric_name(k): v for k, v in record["final_metrics"].items()}
    return record


def parse_history(text: str) -> list[dict]:
    """history.jsonl rows; a line cut by a crash mid-write is skipped, the rest kept."""
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            rows.append({metric_name(k): v for k, v in row.items()})
    return rows


def read_history(artifact_root: str, run_id: str) -> list[dict]:
    """A run's history.jsonl rows ([] when it has none)."""
    uri = storage.join(run_uri(artifact_root, run_id), HISTORY)
    return parse_history(storage.read_text(uri)) if storage.exists(uri) else []


def decision(eval_folder: str) -> dict | None:
    """The committed decision of an eval folder ({'decision': ..., 'reasons': [...]}), or None."""
    for name in (BLESSED, NOT_BLESSED):
        uri = storage.join(eval_folder, name)
        if storage.exists(uri):
            return storage.read_json(uri)
    return None


def read_metrics(eval_folder: str) -> dict:
    """An eval folder's metrics.json (the evaluator's result, 'decision' included)."""
    return storage.read_json(storage.join(eval_folder, METRICS_JSON))


def find_generator(uri: str) -> str | None:
    """The `generator.keras` a URI names: the file itself, or one inside the folder (a run folder or an
    exported model version). None when there is none."""
    candidate = uri if uri.endswith(".keras") else storage.join(uri, GENERATOR)
    return candidate if storage.exists(candidate) else None


def measured_rates(history: list[dict], phase: str | None = None) -> list[float]:
    """images/s of the train rows of history.jsonl (of one phase, if given), in order; rows written before any
    step was timed (a run's first line) carry None and are left out."""
    return [h["images_per_second"] for h in history if h.get("event") == "train"
            and (phase is None or h.get("phase") == phase) and h.get("images_per_second") is not None]


def phase_thirds(history: list[dict], phase: str, keys: tuple[str, ...]) -> dict:
    """{key: {first_third, last_third, min, max}} over a phase's train rows of history.jsonl: how a metric
    moved over the phase (e.g. the discriminator's accuracy: a collapse shows as 1.0 in the last third)."""
    rows = [h for h in history if h.get("event") == "train" and h.get("phase") == phase]
    out = {}
    for key in keys:
        vals = [h[key] for h in rows if key in h]
        if vals:
            third = max(1, len(vals) // 3)
            out[key] = {"first_third": sum(vals[:third]) / third, "last_third": sum(vals[-third:]) / third,
                        "min": min(vals), "max": max(vals)}
    return out
