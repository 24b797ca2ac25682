"""Artifacts written by the version of 2026-11-24 (tests/fixtures/artifacts-2026-11-24: a tiny quickstart
run, its evaluation and push) stay readable by every component of this one."""

from __future__ import annotations

import os
import shutil

import pytest

from components import config, plots, registry, runs, storage

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "artifacts-2026-11-24")
RUN_ID = "retrain-ds-8ffdbd188f96d1e7"


@pytest.fixture
def root(tmp_path):
    dest = tmp_path / "artifacts"
    shutil.copytree(FIXTURE, dest)
    return str(dest)


def test_run_json_and_history_read_with_one_metric_name(root):
    record = runs.read_run(root, RUN_ID)
    assert record["status"] == "succeeded" and record["dataset_id"] == "ds-8ffdbd188f96d1e7"
    metrics = record["final_metrics"]
    # written as loss_g_content, d_accuracy_real: read with the names history.jsonl's train rows use
    assert {"loss/g_content", "loss/g_adv", "d/accuracy_real"} <= set(metrics) and metrics["step"] == 8
    assert not any(k.startswith(("loss_", "d_accuracy")) for k in metrics)
    history = runs.read_history(root, RUN_ID)
    checkpoints = [r for r in history if r["event"] == "checkpoint"]
    assert len(checkpoints) == 3 and all("loss/g_pixel" in r or "loss/g_content" in r for r in checkpoints)
    assert history[-1]["event"] == "done" and history[-1]["step"] == 8
    assert runs.measured_rates(history) == pytest.approx([16.602, 5.127, 5.543], abs=1e-3)
    assert runs.measured_rates(history, "gan") == pytest.approx([5.127, 5.543], abs=1e-3)
    # today's first progress line of a run has no measured rate yet: left out
    assert runs.measured_rates([*history, {"event": "train", "phase": "gan", "images_per_second": None}], "gan") == \
        pytest.approx([5.127, 5.543], abs=1e-3)
    png = plots.loss_curve(history)
    assert png is not None and png[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_decision_and_metrics_read_by_evaluator_and_pipeline(root):
    from components import evaluator

    verdict = runs.decision(runs.eval_uri(root, RUN_ID))
    assert verdict["decision"] == runs.BLESSED and len(verdict["reasons"]) == 2
    cfg = config.Config(artifact_root=root, run_id=RUN_ID)
    result = evaluator.run(cfg)  # committed: read back, not recomputed
    assert result["decision"] == "BLESSED" and result["eval_split"]["num_images"] == 8
    assert result["eval_split"]["psnr_rgb"] == pytest.approx(30.366, abs=1e-3)


def test_model_card_and_latest_read_by_registry_and_pusher(root):
    from components.pusher import push

    models_root = registry.model_root(root, "old-format")
    assert registry.latest(models_root) == 1 and registry.versions(models_root) == [1]
    card = registry.card(registry.version_uri(models_root, 1))
    assert card["run_id"] == RUN_ID and card["blessed"] and "generator.keras" in card["files"]
    # The pusher's "already pushed?" check finds the old card: the same run is not pushed twice.
    found = push._already_pushed(models_root, RUN_ID, card["files"]["generator.keras"], True)
    assert found is not None and found["version"] == 1
    pipeline_json = storage.read_json(storage.join(runs.run_uri(root, RUN_ID), runs.PIPELINE_JSON))
    assert [s["step"] for s in pipeline_json["steps"]] == ["preprocess", "train", "evaluate", "push"]


def test_a_model_name_keeps_its_blessing_rule(root, tmp_path):
    """version 1 of old-format was blessed by the PSNR rule (a card without `bless_rule`): a run judged by the
    perceptual rule is refused under that name, with a message that says what to do."""
    from components.pusher import push

    run = runs.run_uri(root, RUN_ID)
    record = storage.read_json(storage.join(run, runs.RUN_JSON))  # the fixture moved: point it at its new place
    record.update(final_generator=storage.join(run, runs.GENERATOR),
                  dataset_uri=storage.join(root, "datasets", record["dataset_id"]))
    storage.write_json(storage.join(run, runs.RUN_JSON), record)
    metrics_uri = storage.join(runs.eval_uri(root, RUN_ID), "metrics.json")
    storage.write_json(metrics_uri, {**storage.read_json(metrics_uri), "bless_rule": "perceptual"})
    cfg = config.Config(artifact_root=root, run_id=RUN_ID, force=True)
    cfg.push.model_name = "old-format"
    with pytest.raises(push.PushError, match="blessed by the psnr rule.*judged by the perceptual rule.*--bless-rule psnr"):
        push.run(cfg)
    assert registry.versions(registry.model_root(root, "old-format")) == [1]  # nothing claimed


def test_phase_thirds_summarise_a_metric_over_a_phase():
    rows = [{"event": "train", "phase": "pretrain", "d/accuracy_real": 9.0}]
    rows += [{"event": "train", "phase": "gan", "d/accuracy_real": v} for v in (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)]
    rows += [{"event": "checkpoint", "phase": "gan", "d/accuracy_real": 0.0}]  # not a train row: ignored
    out = runs.phase_thirds(rows, "gan", ("d/accuracy_real", "d/accuracy_fake"))
    assert set(out) == {"d/accuracy_real"}  # a key no row has is left out, not made up
    got = out["d/accuracy_real"]
    assert got["first_third"] == pytest.approx(0.55) and got["last_third"] == pytest.approx(0.95)
    assert (got["min"], got["max"]) == (0.5, 1.0)
