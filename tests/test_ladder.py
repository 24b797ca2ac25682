"""The evaluation's severity ladder (components/evaluator/ladder.py and the evaluator's rungs): fixed draws per
image, a code path apart from the training sampler, severities in order on real photos, config errors that
name their key, the blessing on rungs, and the rung sections of an in-process evaluation. No training."""

from __future__ import annotations

import ast
import csv
import io
import json
import logging

import numpy as np
import pytest

from components import config, metrics, sample_data, upscaler
from components.degradation import EVAL_SEED, degrade, degrade_fixed
from components.evaluator import evaluate, ladder

CAMERA = ("mild", "moderate")


def crop(name: str, y: int, x: int, side: int = 128) -> np.ndarray:
    return np.ascontiguousarray(sample_data.photo(name)[y:y + side, x:x + side])


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    """Real photo crops (scikit-image), two per photo, away from flat borders."""
    out = {}
    for name in ("astronaut", "coffee", "chelsea"):
        p = sample_data.photo(name)
        h, w = p.shape[:2]
        for i in range(2):
            y, x = (h // 2 - 128 + 64 * i) // 4 * 4, (w // 2 - 128 - 64 * i) // 4 * 4
            out[f"{name}-{i}"] = np.ascontiguousarray(p[y:y + 256, x:x + 256])
    return out


# ----------------------------------------------------------------------------- fixed draws

@pytest.mark.parametrize("rung", CAMERA)
def test_a_rung_draws_the_same_lr_for_a_name_and_another_for_another(rung):
    hr = crop("astronaut", 100, 150)
    lr, params = ladder.camera_degrade(hr, "faces/0001.jpg", rung)
    again, params_again = ladder.camera_degrade(hr.copy(), "faces/0001.jpg", rung)
    assert lr.dtype == np.uint8 and lr.shape == (32, 32, 3)
    assert lr.tobytes() == again.tobytes() and params == params_again  # same name: identical bytes
    other, other_params = ladder.camera_degrade(hr, "faces/0002.jpg", rung)
    assert not np.array_equal(lr, other) and other_params != params  # another name: another draw
    spec = ladder.CAMERA_RUNGS[rung]
    for p in (params, other_params):
        assert spec.blur_sigma[0] <= p["blur_sigma"] <= spec.blur_sigma[1]
        assert spec.noise_sigma[0] <= p["noise_sigma"] <= spec.noise_sigma[1]
        assert spec.jpeg_quality[0] <= p["jpeg_quality"] <= spec.jpeg_quality[1] and isinstance(p["jpeg_quality"], int)
    # the rung is part of the seed: the other camera rung of the same image is another draw
    assert ladder.seed(rung, "faces/0001.jpg") != ladder.seed(next(r for r in CAMERA if r != rung), "faces/0001.jpg")


def test_the_draws_cover_each_range():
    """Over many names the draws spread over each rung's range (not one fixed value, not out of range)."""
    for rung, spec in ladder.CAMERA_RUNGS.items():
        draws = [ladder.draw(rung, f"img{i}")[0] for i in range(200)]
        for key, (lo, hi) in dataclass_ranges(spec).items():
            values = [d[key] for d in draws]
            assert lo <= min(values) < lo + 0.2 * (hi - lo) and hi - 0.2 * (hi - lo) < max(values) <= hi, (rung, key)


def dataclass_ranges(spec) -> dict:
    return {k: tuple(v) for k, v in spec.ranges().items()}


def test_every_rung_of_the_evaluator_is_fixed_per_image():
    """rung_split (what the evaluator scores) for every rung: the same rows in another order give each image
    the same LR; two images never share a draw."""
    hr = crop("coffee", 100, 150, 64)
    rows = [{"name": n, "hr": hr, "lr": degrade(hr).numpy()} for n in ("a.png", "b.png", "c.png")]
    realistic = config.Config().realistic_degradation
    for rung in ladder.SCORED:
        first, params = evaluate.rung_split(rows, rung, realistic, 4)
        again, _ = evaluate.rung_split(rows[::-1], rung, realistic, 4)
        by_name = {r["name"]: r["lr"] for r in again}
        assert all(r["lr"].tobytes() == by_name[r["name"]].tobytes() for r in first), rung
        assert not np.array_equal(first[0]["lr"], first[1]["lr"]), rung  # same HR, other names: other LRs
        if rung == "harsh":
            assert params["seed"] == EVAL_SEED and "realistic_degradation" in params
        else:
            assert set(params["per_image"]) == {"a.png", "b.png", "c.png"}
            assert params["per_image"]["a.png"] == ladder.draw(rung, "a.png")[0]


# ----------------------------------------------------------------------------- apart from the training sampler

def test_the_ladder_does_not_use_the_training_sampler():
    """ladder.py imports neither components.degradation nor TensorFlow (its own code path: Pillow + numpy)."""
    tree = ast.parse(open(ladder.__file__).read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported |= {node.module or ""} | {f"{node.module}.{a.name}" for a in node.names}
    assert {"numpy", "PIL.Image", "PIL.ImageFilter"} <= imported, imported
    assert not any(m.startswith(("components", "tensorflow")) for m in imported), imported
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | \
            {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert not names & {"realistic_degrade", "degrade_fixed", "degrade", "random_kernel"}, names


def test_mild_lr_is_neither_the_clean_nor_the_training_samplers():
    hr = crop("chelsea", 120, 140)
    mild, _ = ladder.camera_degrade(hr, "cat", "mild")
    clean = degrade(hr).numpy()
    harsh = degrade_fixed(hr, evaluate._name_index("cat"), config.Config().realistic_degradation, 4, EVAL_SEED)
    assert mild.shape == clean.shape == harsh.shape
    for other in (clean, harsh):
        assert np.mean(np.abs(mild.astype(float) - other.astype(float))) > 1.0


# ----------------------------------------------------------------------------- severities in order

def test_bicubic_psnr_falls_down_the_ladder_on_real_photos(photos):
    """Mean bicubic PSNR (RGB) over the crops: clean > mild > moderate > harsh; mild is between clean and
    harsh on every crop."""
    rows = [{"name": n, "hr": hr, "lr": degrade(hr).numpy()} for n, hr in photos.items()]
    realistic = config.Config().realistic_degradation
    psnr = {"clean": [metrics.all_metrics(metrics.bicubic_upscale(r["lr"]).numpy(), r["hr"])["psnr_rgb"] for r in rows]}
    for rung in ladder.SCORED:
        psnr[rung] = [metrics.all_metrics(metrics.bicubic_upscale(r["lr"]).numpy(), r["hr"])["psnr_rgb"]
                      for r in evaluate.rung_split(rows, rung, realistic, 4)[0]]
    means = {k: float(np.mean(v)) for k, v in psnr.items()}
    logging.getLogger("test").info("bicubic PSNR per rung: %s", means)
    assert means["clean"] > means["mild"] + 0.5 > means["moderate"] + 0.5 > means["harsh"] + 1.0, means
    for clean, mild, harsh in zip(psnr["clean"], psnr["mild"], psnr["harsh"]):
        assert clean > mild > harsh, psnr


# ----------------------------------------------------------------------------- config

@pytest.mark.parametrize("key,value,bad", [
    ("eval_rungs", "mild,severe", "'severe'"),
    ("eval_rungs", "clean", "'clean'"),   # always scored; not a rung to name
    ("bless_rungs", "mild, Harsh", "'Harsh'"),
])
def test_bad_rung_names_are_config_errors_naming_the_key(key, value, bad):
    with pytest.raises(config.ConfigError, match=rf"config key '{key}' must be comma-separated names from "
                                                 rf"mild, moderate, harsh, got {bad}"):
        config.from_dict({"evaluate": {key: value}})


def test_rung_keys_and_the_harsh_switch():
    cfg = config.from_dict({"evaluate": {"eval_rungs": "harsh, mild", "bless_rungs": "mild"}})
    assert evaluate.scored_rungs(cfg.evaluate) == (["mild", "harsh"], ["mild"])  # in order of severity
    assert evaluate.scored_rungs(config.Config().evaluate) == (["mild", "moderate", "harsh"], [])  # the defaults
    assert config.EVAL_RUNGS == ladder.SCORED
    cfg.evaluate.eval_degraded = False  # the key from before the ladder still turns harsh off
    assert evaluate.scored_rungs(cfg.evaluate) == (["mild"], ["mild"])
    assert evaluate.scored_rungs(config.from_dict({"evaluate": {"eval_rungs": ""}}).evaluate) == ([], [])


@pytest.mark.parametrize("keys,message", [
    (dict(eval_rungs="mild,extreme"), "eval_rungs: 'extreme' is not a rung"),  # a config made in code
    (dict(bless_rungs="clean"), "bless_rungs: 'clean' is not a rung"),
    (dict(eval_rungs="mild", bless_rungs="moderate"), "bless_rungs: moderate is not scored"),
    (dict(eval_degraded=False, bless_rungs="harsh"), "bless_rungs: harsh is not scored (eval_rungs 'mild,moderate,"
                                                     "harsh' (eval_degraded is false)"),
])
def test_bad_rungs_stop_the_evaluator_before_any_model_runs(keys, message, tmp_path, monkeypatch):
    def no_model(*_a, **_k):
        raise AssertionError("a model was loaded")
    monkeypatch.setattr(evaluate.upscaler, "load", no_model)
    monkeypatch.setattr(evaluate, "eval_split", no_model)
    cfg = config.Config(artifact_root=str(tmp_path), model_uri="stub", dataset_id="ds-x", output=str(tmp_path / "o"),
                        evaluate=config.EvaluateConfig(**keys))
    with pytest.raises(evaluate.EvaluateError) as err:
        evaluate.run(cfg)
    assert message in str(err.value)


def test_bad_rung_flag_is_one_clear_line(capsys):
    from tests.conftest import run_cli

    out = run_cli(capsys, "evaluate", "--model-uri", "x", "--output", "y", "--eval-rungs", "mild,awful")
    assert out.returncode == 2 and "eval_rungs" in out.stderr and "'awful'" in out.stderr
    assert "Traceback" not in out.stderr


# ----------------------------------------------------------------------------- the blessing on rungs

def _means(psnr, bicubic):
    return {"psnr_rgb": psnr, "ssim_rgb": 0.8, "bicubic_psnr_rgb": bicubic, "gain_psnr_rgb": psnr - bicubic}


def test_bless_on_rungs_fails_a_rung_below_bicubic_and_names_it():
    clean = _means(30.5, 30.0)  # fine on clean: +0.5 dB
    rungs = {"mild": _means(25.0, 25.3), "moderate": _means(24.0, 23.9)}  # 0.3 dB under bicubic on mild
    ok, reasons = evaluate.bless(clean, None, None, min_gain_db=0.2, tolerance_db=0.1)
    assert ok, reasons
    ok, reasons = evaluate.bless_on_rungs(rungs, None, None, ["mild", "moderate"], tolerance_db=0.1)
    assert not ok
    assert [r.split(":")[0] for r in reasons] == ["FAIL", "pass"]
    assert reasons[0].startswith("FAIL: mild rung: PSNR (RGB) 25.000 dB is -0.300 dB over bicubic (25.300 dB)")
    ok, reasons = evaluate.bless_on_rungs(rungs, None, None, ["moderate"], tolerance_db=0.1)
    assert ok and len(reasons) == 1 and "moderate rung" in reasons[0]
    # the perceptual rule's bound: up to bless_max_psnr_drop_db below bicubic
    assert evaluate.bless_on_rungs(rungs, None, None, ["mild"], 2.0, below_bicubic_db=2.0)[0]


def test_bless_on_rungs_compares_with_the_current_model_per_rung():
    rungs = {"mild": _means(26.0, 25.3)}
    ok, reasons = evaluate.bless_on_rungs(rungs, {"mild": _means(26.05, 25.3)}, 3, ["mild"], tolerance_db=0.1)
    assert ok and "mild rung: PSNR (RGB) -0.050 dB vs the current model (version 3, 26.050 dB" in reasons[1], reasons
    ok, reasons = evaluate.bless_on_rungs(rungs, {"mild": _means(26.5, 25.3)}, 3, ["mild"], tolerance_db=0.1)
    assert not ok and reasons[1].startswith("FAIL: mild rung") and "version 3" in reasons[1]
    ok, reasons = evaluate.bless_on_rungs({"mild": _means(float("nan"), 25.3)}, None, None, ["mild"], 0.1)
    assert not ok and "not finite" in reasons[0]


# ----------------------------------------------------------------------------- in-process evaluation

@pytest.fixture
def stub_eval(tmp_path, monkeypatch):
    """evaluate.run on a stand-in eval split (three real 64 px crops) and a stand-in model: no dataset, no
    training. The model gives bicubic plus 0.5 dB of help where it knows the LR (the clean split's) and
    bicubic plus noise elsewhere, so it is fine on clean and worse than bicubic on every rung."""
    photo = sample_data.photo("astronaut")
    hrs = [np.ascontiguousarray(photo[y:y + 64, x:x + 64]) for y, x in ((80, 160), (200, 180), (300, 60))]
    clean = [degrade(hr).numpy() for hr in hrs]
    monkeypatch.setattr(evaluate, "eval_split", lambda _uri: [{"name": f"p{i}", "hr": hr, "lr": lr}
                                                              for i, (hr, lr) in enumerate(zip(hrs, clean))])
    known = {lr.tobytes(): hr for lr, hr in zip(clean, hrs)}
    seen = []

    def model(lr):
        seen.append(lr.copy())
        out = []
        for x in lr:
            bic = metrics.bicubic_upscale(x).numpy().astype(float)
            if x.tobytes() in known:  # towards HR: better than bicubic
                bic = bic + 0.1 * (known[x.tobytes()] - bic)
            else:
                bic = bic + np.random.default_rng(0).normal(0, 6, bic.shape)
            out.append(np.clip(np.round(bic), 0, 255).astype(np.uint8))
        return np.stack(out)
    monkeypatch.setattr(evaluate.upscaler, "load", lambda uri, version=None: upscaler.Upscaler(model, uri, "stub"))

    def run(out, **keys):
        cfg = config.Config(artifact_root=str(tmp_path / "root"), model_uri="stub", dataset_id="ds-" + "0" * 16,
                            output=str(tmp_path / out))
        for k, v in keys.items():
            config.set_value(cfg, k, v)
        return evaluate.run(cfg)
    return run, seen, tmp_path


def test_every_rung_is_a_section_rows_grids_and_a_log_line(stub_eval, caplog):
    run, seen, tmp = stub_eval
    with caplog.at_level(logging.INFO, logger="evaluate"):
        result = run("a", bless_min_gain_db=-1.0)
    assert list(result["rungs"]) == ["mild", "moderate", "harsh"] and result["decision"] == "BLESSED"
    for rung, section in result["rungs"].items():
        assert section["num_images"] == 3 and section["psnr_rgb"] < section["bicubic_psnr_rgb"], rung
        assert section["bicubic_psnr_rgb"] < result["eval_split"]["bicubic_psnr_rgb"], rung
        assert sum(m.startswith(f"{rung} rung") for m in caplog.messages) == 1, caplog.messages  # one line per rung
        assert (tmp / "a" / "grids" / f"{evaluate.rung_label(rung)}-000.png").exists()
    mild = result["rungs"]["mild"]["parameters"]
    assert mild["ranges"] == {"blur_sigma": [0.6, 1.2], "noise_sigma": [1.0, 5.0], "jpeg_quality": [60, 90]}
    assert mild["per_image"]["p1"] == ladder.draw("mild", "p1")[0]
    # the harsh rung is the `degraded` section as before the ladder (benches and the job read it)
    d = result["degraded"]
    assert d["seed"] == EVAL_SEED and d["realistic_degradation"]["jpeg_range"] == [30.0, 95.0]
    assert d["psnr_rgb"] == result["rungs"]["harsh"]["psnr_rgb"] and result["rungs"]["harsh"]["csv_split"] == "degraded"
    on_disk = json.loads((tmp / "a" / "metrics.json").read_text())
    assert on_disk["rungs"]["moderate"]["parameters"]["per_image"]["p2"]["jpeg_quality"] >= 35
    rows = list(csv.DictReader(io.StringIO((tmp / "a" / "per_image.csv").read_text())))
    assert [r["split"] for r in rows] == ["eval"] * 3 + ["mild"] * 3 + ["moderate"] * 3 + ["degraded"] * 3
    # every model is scored on the same LR: the model saw each rung's LR, and a second run sees it again
    assert len(seen) == 4 and np.array_equal(seen[1][0], ladder.camera_degrade(evaluate.eval_split("")[0]["hr"], "p0",
                                                                                 "mild", 4)[0])
    run("b", bless_min_gain_db=-1.0)
    assert all(np.array_equal(x, y) for x, y in zip(seen[:4], seen[4:]))
    only = run("c", eval_rungs="moderate", eval_degraded=False, bless_min_gain_db=-1.0)
    assert list(only["rungs"]) == ["moderate"] and only["degraded"] is None
    assert not (tmp / "c" / "grids" / "mild-000.png").exists() and not (tmp / "c" / "grids" / "degraded-000.png").exists()
    assert run("d", eval_rungs="", bless_min_gain_db=-1.0)["rungs"] is None


def test_bless_rungs_turns_a_model_worse_than_bicubic_on_a_rung_down(stub_eval):
    run, _seen, tmp = stub_eval
    fine = run("clean-only", bless_min_gain_db=0.1)
    assert fine["decision"] == "BLESSED" and fine["eval_split"]["gain_psnr_rgb"] > 0.1, fine["reasons"]
    judged = run("with-mild", bless_min_gain_db=0.1, bless_rungs="mild")
    assert judged["decision"] == "NOT_BLESSED" and judged["thresholds"]["bless_rungs"] == ["mild"]
    assert judged["reasons"][0].startswith("pass: PSNR (RGB)")  # the clean split still passes
    assert any(r.startswith("FAIL: mild rung: PSNR (RGB)") and "over bicubic" in r for r in judged["reasons"])
    verdict = json.loads((tmp / "with-mild" / "NOT_BLESSED").read_text())
    assert verdict["reasons"] == judged["reasons"]
