"""The whole loop on a real SeaweedFS S3 server: pipeline -> BLESSED -> push -> pull -> upscale; a worse
run is NOT_BLESSED and pushes nothing; two pushers at once; tampered files; the SavedModel in a
process where only TensorFlow exists. Plus the evaluator's blessing and drift rules on their own."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
import threading

import numpy as np
import pytest
from PIL import Image

from components import logs, pipeline, registry, sample_data, storage
from components.evaluator import evaluate
from tests.conftest import REPO, kill_processes_of, run_cli, shared_data

# Tiny models, a few steps: the pipeline's mechanics, not its quality (that is the quickstart's job).
TINY = ["--generator-width", "8", "--generator-blocks", "1", "--residual-over-bicubic",
        "--discriminator-width", "8", "--discriminator-depth", "2", "--discriminator-dense", "8",
        "--global-batch-size", "8", "--cpus-per-worker", "1", "--log-every-seconds", "2",
        "--content-loss", "pixel", "--model-name", "faces", "--eval-count", "8"]
GOOD = [*TINY, "--pretrain-steps", "40", "--pretrain-learning-rate", "0.001", "--gan-steps", "2",
        # a tiny model cannot promise a margin over bicubic in 40 steps; the rule itself is tested below
        "--bless-min-gain-db", "-0.5"]
# Deliberately worse: tanh output (starts far from bicubic) and 3 steps; no warm start.
WORSE = ["--generator-width", "8", "--generator-blocks", "1", "--no-residual-over-bicubic",
         "--discriminator-width", "8", "--discriminator-depth", "2", "--discriminator-dense", "8",
         "--global-batch-size", "8", "--cpus-per-worker", "1", "--content-loss", "pixel", "--model-name", "faces",
         "--eval-count", "8", "--pretrain-steps", "3", "--gan-steps", "0", "--bless-min-gain-db", "-0.5",
         "--run-id", "worse"]


def _env(tmp, s3=None):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update({"TF_CPP_MIN_LOG_LEVEL": "2", "SRGAN_RAY_TEMP_DIR": os.path.join("/tmp", f"ray-p{os.getpid()}"),
                "SRGAN_CACHE_DIR": os.path.join(str(tmp), "cache")})
    if s3 is not None:
        env.update(s3.env())
    return env


def job(name, *args, env, timeout=900):
    """A job in its own process, as users run it (its own local Ray unless env has RAY_ADDRESS)."""
    try:
        return subprocess.run([sys.executable, os.path.join(REPO, "jobs", name), *args], capture_output=True,
                              text=True, env=env, timeout=timeout)
    finally:
        if name == "pipeline.py" and "RAY_ADDRESS" not in env:
            kill_processes_of(env["SRGAN_RAY_TEMP_DIR"])


@pytest.fixture(scope="module")
def pushed(s3_server, tmp_path_factory, ray_cluster):
    """One pipeline run on S3 with the built-in sample: preprocess, train, evaluate, push (version 1).
    It starts its own local Ray, as the quickstart does; later pipeline runs join the shared cluster."""
    tmp = tmp_path_factory.mktemp("e2e")
    root = s3_server.make_bucket("e2e") + "/srgan"
    env = _env(tmp, s3_server)
    with ray_cluster.paused():
        out = job("pipeline.py", "--artifact-root", root, *GOOD, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    run_id = next(line.split()[2] for line in out.stdout.splitlines() if line.startswith("pipeline: run "))
    # read now: a later test (in random order) runs the pipeline again and rewrites pipeline.json
    summary = storage.read_json(f"{root}/runs/{run_id}/pipeline.json")
    return {"root": root, "run_id": run_id, "summary": summary, "env": env, "tmp": tmp, "stdout": out.stdout, "stderr": out.stderr,
            "models": root + "/models/faces", "cluster_env": lambda: {**env, **ray_cluster.env()}}


# One of our log lines, in any process: "HH:MM:SS <our logger> <LEVEL> ...", maybe behind Ray's
# "(RayTrainWorker pid=N)" prefix (coloured) for lines forwarded from a worker.
OUR_LINE = re.compile(r"^(\x1b\[\d+m)?(\([A-Za-z]+ pid=\d+(, ip=[\d.]+)?\)(\x1b\[0m)? )?\d\d:\d\d:\d\d "
                      rf"({'|'.join(logs.OURS)}) (DEBUG|INFO|WARNING|ERROR) ")


def test_a_pipeline_run_shows_our_lines_and_little_else(pushed):
    """Quiet by default: every stdout line is the job's own; stderr holds our loggers' lines and at most
    5 others; the decision is printed once."""
    others = [line for line in pushed["stderr"].splitlines() if line.strip() and not OUR_LINE.match(line)]
    assert len(others) <= 5, "\n".join(others)
    ours = [line for line in pushed["stderr"].splitlines() if OUR_LINE.match(line)]
    assert any(" trainer INFO step " in line and "img/s" in line for line in ours), ours  # worker progress shows
    assert any(line.startswith("pipeline: run ") for line in pushed["stdout"].splitlines())
    both = pushed["stdout"] + pushed["stderr"]
    assert both.count("BLESSED") == 1, both  # the decision, once


@pytest.mark.slow
def test_verbose_brings_library_lines_back(tmp_path):
    """--verbose: the noise filter is off, and a library's INFO line reaches the terminal."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    args = ["--input", sample_data.write_sample_images(), "--artifact-root", str(tmp_path), "--eval-count", "8"]
    quiet = job("preprocess.py", *args, env=env)
    loud = job("preprocess.py", *args, "--force", "--verbose", env=env)
    assert quiet.returncode == 0 and loud.returncode == 0, quiet.stderr[-2000:] + loud.stderr[-2000:]
    assert not any(logs.is_noise(line) for line in quiet.stderr.splitlines()), quiet.stderr
    assert any(logs.is_noise(line) for line in loud.stderr.splitlines()), loud.stderr  # e.g. Beam's runner line
    assert len(loud.stderr.splitlines()) > len(quiet.stderr.splitlines())


def test_pipeline_blesses_pushes_and_reports(pushed):
    root, run_id = pushed["root"], pushed["run_id"]
    eval_dir = f"{root}/runs/{run_id}/eval"
    files = {storage.relpath(f, eval_dir) for f in storage.list_files(eval_dir)}
    assert {"BLESSED", "metrics.json", "per_image.csv", "loss_curve.png", "grids/eval-000.png"} <= files
    assert "NOT_BLESSED" not in files
    m = storage.read_json(f"{eval_dir}/metrics.json")
    assert m["decision"] == "BLESSED" and m["eval_split"]["num_images"] == 8 and m["baseline"] is None
    assert 20 < m["eval_split"]["bicubic_psnr_rgb"] < 45 and abs(m["eval_split"]["gain_psnr_rgb"]) < 3
    rows = storage.read_text(f"{eval_dir}/per_image.csv").splitlines()
    assert len(rows) == 1 + 8 * 4 and rows[0].startswith("split,image,psnr_rgb,bicubic_psnr_rgb,gain_psnr_rgb")
    # the severity ladder too (the harsh rung keeps its split name, degraded)
    assert [r.split(",")[0] for r in rows[1:]] == ["eval"] * 8 + ["mild"] * 8 + ["moderate"] * 8 + ["degraded"] * 8
    assert sorted(m["rungs"]) == ["harsh", "mild", "moderate"] and m["degraded"]["num_images"] == 8  # JSON: keys sorted
    grid = Image.open(storage.stage_in(f"{eval_dir}/grids/eval-000.png"))
    assert grid.size[0] == 4 + 4 * (128 + 4) and grid.size[1] > 8 * 128
    assert registry.versions(pushed["models"]) == [1] and registry.latest(pushed["models"]) == 1
    card = registry.card(pushed["models"] + "/1")
    assert card["run_id"] == run_id and card["blessed"] and card["version"] == 1
    assert {"saved_model.pb", "generator.keras", "fingerprint.pb"} <= set(card["files"])
    assert any(k.startswith("variables/") for k in card["files"]) and "licence" in card["data_licence"]
    assert card["lineage"]["dataset_statistics"]["hr_mean"] and card["metrics"]["eval_split"]["psnr_rgb"] > 0
    summary = pushed["summary"]
    assert [s["status"] for s in summary["steps"]] == ["ran"] * 4
    assert summary["pushed"]["version"] == 1 and summary["drift"]["checked"] is False
    assert "metrics and comparison grids:" in pushed["stdout"]


def test_second_pipeline_run_skips_every_step(pushed):
    out = job("pipeline.py", "--artifact-root", pushed["root"], *GOOD, env=pushed["cluster_env"]())
    assert out.returncode == 0, out.stderr[-3000:]
    summary = storage.read_json(f"{pushed['root']}/runs/{pushed['run_id']}/pipeline.json")
    assert [s["status"] for s in summary["steps"]] == ["skipped (committed)", "skipped (run finished)",
                                                        "skipped (committed)", "skipped (already pushed)"]
    assert registry.versions(pushed["models"]) == [1]
    # the same data as the current model's: statistics compared, no drift
    assert summary["drift"]["checked"] and not summary["drift"]["drifted"]


def test_pull_verifies_and_upscales_an_unseen_size(pushed, tmp_path):
    env = pushed["env"]
    dest = tmp_path / "pulled"
    out = job("pull_model.py", "--model-uri", pushed["models"], "--version", "latest", "--output", str(dest), env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    card = json.loads((dest / "model.json").read_text())
    assert card["version"] == 1 and "files verified" in out.stdout
    assert registry.file_hashes(str(dest)) == card["files"]
    img = sample_data.photo("chelsea")[:75, :101]  # 101x75: never a training size (32x32 crops)
    Image.fromarray(img).save(tmp_path / "cat.png")
    up = job("upscale.py", "--model-uri", str(dest), str(tmp_path / "cat.png"), "--output", str(tmp_path / "up"),
             "--tile-size", "40", env=env)
    assert up.returncode == 0, up.stderr[-3000:]
    sr = np.asarray(Image.open(tmp_path / "up" / "cat.png"))
    assert sr.shape == (300, 404, 3) and sr.dtype == np.uint8 and 20 < sr.mean() < 235 and sr.std() > 10
    bicubic = np.asarray(Image.fromarray(img).resize((404, 300), Image.Resampling.BICUBIC)).astype(float)
    assert np.abs(sr - bicubic).mean() < 10  # an upscaled cat, not noise


def test_saved_model_runs_with_tensorflow_only(pushed, tmp_path):
    """The pulled SavedModel in a process without this project: `python -S` skips site (and so the
    editable install), then only the site-packages folder is added back for TensorFlow."""
    dest = tmp_path / "m"
    registry.pull(pushed["models"], str(dest))
    script = (
        "import sys; sys.path.append(sys.argv[2])\n"
        "try:\n    import components\n    print('PROJECT IMPORTABLE')\nexcept ImportError:\n    pass\n"
        "import numpy as np, tensorflow as tf\n"
        "f = tf.saved_model.load(sys.argv[1]).signatures['serving_default']\n"
        "x = np.random.default_rng(0).integers(0, 256, (2, 13, 21, 3), dtype=np.uint8)\n"
        "y = f(images=tf.constant(x))['sr'].numpy()\n"
        "np.save(sys.argv[3], y); print('OK', y.shape, y.dtype)\n")
    out = subprocess.run([sys.executable, "-S", "-c", script, str(dest), sysconfig.get_paths()["purelib"],
                          str(tmp_path / "y.npy")], capture_output=True, text=True, cwd=str(tmp_path), timeout=300,
                         env={"PATH": os.environ["PATH"], "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "PROJECT IMPORTABLE" not in out.stdout and "OK (2, 52, 84, 3) uint8" in out.stdout
    # the same numbers as the project's own loader gives
    from components import upscaler
    x = np.random.default_rng(0).integers(0, 256, (2, 13, 21, 3), dtype=np.uint8)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), upscaler.load(str(dest))(x))


def test_evaluate_a_pushed_model_on_benchmark_folders(pushed, tmp_path):
    """--model-uri + --eval-images (two folders): the bicubic column reproduces the published Set5 figure."""
    set5, set14 = shared_data("benchmarks", "Set5"), shared_data("benchmarks", "Set14")
    out_dir = tmp_path / "eval"
    out = job("evaluate.py", "--artifact-root", pushed["root"], "--model-uri", pushed["models"] + "/1",
              "--model-name", "faces", "--eval-images", f"{set5},{set14}", "--output", str(out_dir), env=pushed["env"])
    assert out.returncode == 0, out.stderr[-3000:]
    m = json.loads((out_dir / "metrics.json").read_text())
    assert m["eval_split"]["num_images"] == 8 and m["model_kind"] == "saved_model"
    assert m["eval_images"]["Set5"]["num_images"] == 5 and m["eval_images"]["Set14"]["num_images"] == 14
    assert m["eval_images"]["Set5"]["bicubic_psnr_y"] == pytest.approx(28.43, abs=0.01)  # the SRGAN paper's
    assert m["eval_images"]["Set14"]["bicubic_psnr_y"] == pytest.approx(26.09, abs=0.01)
    assert 0 < m["eval_images"]["Set5"]["bicubic_hf_ratio"] < 0.2  # bicubic loses most fine detail
    assert len((out_dir / "per_image.csv").read_text().splitlines()) == 1 + 8 * 4 + 5 + 14  # eval, 3 rungs, folders
    grids = sorted(os.listdir(out_dir / "grids"))
    assert "Set5-baby.png" in grids and "Set14-bridge.png" in grids and "eval-000.png" in grids
    assert Image.open(out_dir / "grids" / "Set5-baby.png").size[0] == 4 + 4 * (512 + 4)
    # NIQE where it is defined: full-size images yes, the 128 px eval crops no ("undefined", never a number)
    assert m["eval_images"]["Set5"]["niqe_images"] == 5 and m["eval_split"]["niqe"] is None
    assert m["eval_images"]["Set5"]["hr_niqe"] < m["eval_images"]["Set5"]["bicubic_niqe"]  # HR is more natural
    assert m["bless_rule"] == "psnr" and m["perceptual"]["candidate"]["niqe_images"] == 19
    assert "undefined" in (out_dir / "per_image.csv").read_text().splitlines()[1]
    # The perceptual rule decides on NIQE (full-size images) and PSNR, against LATEST (version 1 here)
    out = job("evaluate.py", "--artifact-root", pushed["root"], "--model-uri", pushed["models"] + "/1",
              "--model-name", "faces", "--eval-images", set5, "--bless-rule", "perceptual",
              "--output", str(tmp_path / "perceptual"), env=pushed["env"])
    assert out.returncode == 0, out.stderr[-3000:]
    p = json.loads((tmp_path / "perceptual" / "metrics.json").read_text())
    assert p["bless_rule"] == "perceptual" and p["baseline"]["version"] == 1
    assert any(r.startswith(("pass: NIQE", "FAIL: NIQE")) and "current model (version 1)" in r for r in p["reasons"])


def test_worse_run_is_not_blessed_and_pushes_nothing(pushed, capsys):
    out = job("pipeline.py", "--artifact-root", pushed["root"], *WORSE, env=pushed["cluster_env"]())
    assert out.returncode == 0, out.stderr[-3000:]
    root = pushed["root"]
    assert storage.exists(f"{root}/runs/worse/eval/NOT_BLESSED") and not storage.exists(f"{root}/runs/worse/eval/BLESSED")
    verdict = storage.read_json(f"{root}/runs/worse/eval/NOT_BLESSED")
    assert any(r.startswith("FAIL") and "current model (version 1" in r for r in verdict["reasons"]), verdict
    summary = storage.read_json(f"{root}/runs/worse/pipeline.json")
    assert summary["steps"][-1]["status"] == "skipped (NOT_BLESSED)" and summary["pushed"] is None
    assert registry.latest(pushed["models"]) == 1 and 2 not in registry.versions(pushed["models"])
    refused = run_cli(capsys, "push", "--artifact-root", root, "--run-id", "worse", "--model-name", "faces")
    assert refused.returncode == 2 and "NOT_BLESSED, nothing pushed" in refused.stderr
    assert "Traceback" not in refused.stderr
    claims_before = storage.list_files(pushed["models"] + "/.claims")
    assert len(claims_before) == len(registry.versions(pushed["models"]))  # a refused push claims nothing


def test_two_pushers_at_once_get_distinct_versions(pushed):
    """Two processes push the same blessed run (--force makes each a new version) at the same moment, under
    a model name of their own (the other tests expect `faces` at version 1, in any order)."""
    models = pushed["root"] + "/models/faces-concurrent"
    args = ["--artifact-root", pushed["root"], "--run-id", pushed["run_id"], "--model-name", "faces-concurrent",
            "--force"]
    before = set(registry.versions(models))
    procs = [subprocess.Popen([sys.executable, os.path.join(REPO, "jobs", "push.py"), *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=pushed["env"]) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    new = sorted(set(registry.versions(models)) - before)
    assert len(new) == 2, new
    reported = sorted(int(o[0].split("version ")[1].split(":")[0]) for o in outs)
    assert reported == new
    assert registry.latest(models) == max(new)
    for v in new:
        card = registry.card(f"{models}/{v}")
        assert card["version"] == v and card["blessed"]
        local = registry.pull(models, str(pushed["tmp"] / f"v{v}"), version=v)  # complete and intact
        assert local["files"] == card["files"]


def test_tampered_version_fails_to_pull_and_leaves_nothing(pushed, tmp_path, capsys):
    source = pushed["models"] + "/1"
    victim = next(f for f in storage.list_files(source) if "/variables/" in f and f.endswith(".index"))
    original = storage.read_bytes(victim)
    storage.write_bytes(victim, original[:-1] + bytes([original[-1] ^ 1]))
    try:
        dest = tmp_path / "pulled"
        out = run_cli(capsys, "pull_model", "--model-uri", pushed["models"], "--version", "1", "--output", str(dest))
        assert out.returncode == 2 and "sha256 mismatch: variables/variables.index" in out.stderr
        assert "nothing kept" in out.stderr and "Traceback" not in out.stderr
        assert os.listdir(tmp_path) == []  # no output folder, no partial copy
    finally:
        storage.write_bytes(victim, original)


def test_pull_of_missing_versions_is_a_clear_error(pushed, tmp_path, capsys):
    out = run_cli(capsys, "pull_model", "--model-uri", pushed["models"], "--version", "99", "--output",
                  str(tmp_path / "x"))
    assert out.returncode == 2 and "version 99 does not exist" in out.stderr
    out = run_cli(capsys, "pull_model", "--model-uri", pushed["root"] + "/models/nobody", "--output",
                  str(tmp_path / "x"))
    assert out.returncode == 2 and "no LATEST" in out.stderr and not os.path.exists(tmp_path / "x")


# ----------------------------------------------------------------------------- rules, no servers

def _summary(psnr, bicubic):
    return {"psnr_rgb": psnr, "ssim_rgb": 0.8, "bicubic_psnr_rgb": bicubic, "gain_psnr_rgb": psnr - bicubic}


@pytest.mark.parametrize("psnr,baseline,expected", [
    (30.5, None, True),       # +0.5 over bicubic, no model yet
    (30.1, None, False),      # below the margin
    (30.5, 30.55, True),      # 0.05 worse than the current model: within tolerance
    (30.5, 30.7, False),      # 0.2 worse: not blessed
    (float("nan"), None, False),
])
def test_blessing_rule(psnr, baseline, expected):
    ok, reasons = evaluate.bless(_summary(psnr, 30.0), None if baseline is None else {"psnr_rgb": baseline},
                                 None if baseline is None else 4, min_gain_db=0.3, tolerance_db=0.1)
    assert ok is expected, reasons
    assert (any(r.startswith("FAIL") or "not finite" in r for r in reasons)) is (not expected)


def _perceptual(psnr, niqe, bicubic_psnr=30.0, bicubic_niqe=7.0, images=5):
    return {"psnr_rgb": psnr, "bicubic_psnr_rgb": bicubic_psnr, "niqe": niqe, "bicubic_niqe": bicubic_niqe,
            "niqe_images": images if niqe is not None else 0}


@pytest.mark.parametrize("candidate,baseline,expected,says", [
    (_perceptual(29.0, 5.0), None, True, "of bicubic (no model pushed yet)"),          # natural, 1 dB under bicubic
    (_perceptual(27.5, 5.0), None, False, "FAIL: PSNR"),                               # 2.5 dB under bicubic
    (_perceptual(29.0, 6.95), None, False, "FAIL: NIQE"),                              # barely better than bicubic
    (_perceptual(29.0, 5.0), _perceptual(30.5, 5.5), True, "current model (version 4)"),
    (_perceptual(29.0, 5.45), _perceptual(30.5, 5.5), False, "FAIL: NIQE"),            # 0.05 better: too little
    (_perceptual(28.0, 4.0), _perceptual(30.5, 5.5), False, "FAIL: PSNR"),             # 2.5 dB under LATEST
    (_perceptual(29.0, None), None, False, "NIQE is undefined for every eval image"),  # only 128 px crops
])
def test_perceptual_blessing_rule(candidate, baseline, expected, says):
    ok, reasons = evaluate.bless_perceptual(candidate, baseline, None if baseline is None else 4,
                                            min_niqe_gain=0.1, max_psnr_drop_db=2.0)
    assert ok is expected, reasons
    assert any(says in r for r in reasons), reasons
    assert any(r.startswith("FAIL") for r in reasons) is (not expected)


def test_perceptual_rule_with_a_checkerboard_cap():
    natural = _perceptual(29.0, 5.0)
    for board, expected in ((1.05, True), (1.2, False), (None, False)):
        ok, reasons = evaluate.bless_perceptual({**natural, "checkerboard": board}, None, None, min_niqe_gain=0.1,
                                                max_psnr_drop_db=2.0, max_checkerboard=1.1)
        assert ok is expected and len(reasons) == 3, reasons
        assert reasons[-1].startswith("pass" if expected else "FAIL") and "allowed up to 1.100" in reasons[-1]
    ok, reasons = evaluate.bless_perceptual({**natural, "checkerboard": 500.0}, None, None, min_niqe_gain=0.1,
                                            max_psnr_drop_db=2.0)  # no cap: not judged, not mentioned
    assert ok and len(reasons) == 2 and not any("checkerboard" in r for r in reasons)


def test_perceptual_rule_names_a_baseline_outside_the_registry():
    ok, reasons = evaluate.bless_perceptual(_perceptual(29.0, 5.0), _perceptual(30.5, 5.5), None, min_niqe_gain=0.1,
                                            max_psnr_drop_db=2.0, baseline_name="the warm start")
    assert ok and all("of the warm start" in r for r in reasons) and not any("version" in r for r in reasons), reasons


def test_niqe_summaries_skip_undefined_images():
    rows = [{"image": "a", "niqe": 4.0, "psnr_rgb": 30.0}, {"image": "b", "niqe": None, "psnr_rgb": 32.0},
            {"image": "c", "niqe": 6.0, "psnr_rgb": 31.0}]
    means = evaluate.summarize(rows)
    assert means["niqe"] == pytest.approx(5.0) and means["niqe_images"] == 2 and means["psnr_rgb"] == pytest.approx(31.0)
    assert evaluate.summarize(rows[1:2])["niqe"] is None  # never a made-up value
    assert "undefined" in evaluate._csv(rows, "eval").splitlines()[2]


def test_drift_is_measured_in_stds():
    old = {"hr_mean": [100.0, 100.0, 100.0], "hr_std": [50.0, 50.0, 50.0]}
    same = pipeline.drift(old, old, 0.25)
    assert same["checked"] and not same["drifted"] and same["max_mean_shift_in_std"] == 0
    moved = pipeline.drift({"hr_mean": [100.0, 120.0, 100.0], "hr_std": [50.0, 60.0, 50.0]}, old, 0.25)
    assert moved["drifted"] and moved["max_mean_shift_in_std"] == pytest.approx(0.4) and "drift" in moved["warning"]
    assert moved["std_ratio"][1] == pytest.approx(1.2)
    assert pipeline.drift(old, None, 0.25)["checked"] is False


def test_evaluator_metrics_match_an_independent_computation():
    """score() on a real photo pair against PSNR computed here with numpy (border 4, RGB and BT.601 Y)."""
    from components.degradation import degrade

    hr = sample_data.photo("astronaut")[100:228, 150:278]
    lr = degrade(hr, 4).numpy()
    sr = np.asarray(Image.fromarray(lr).resize((128, 128), Image.Resampling.LANCZOS))
    (row,) = evaluate.score(evaluate.with_bicubic([{"name": "a", "lr": lr, "hr": hr}], 4), [sr], 4)

    def psnr(a, b):
        mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
        return 10 * np.log10(255.0 ** 2 / mse)

    def y(img):
        x = img.astype(np.float64) / 255
        return 16 + 65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]

    c = slice(4, -4)
    assert row["psnr_rgb"] == pytest.approx(psnr(sr[c, c], hr[c, c]), abs=1e-3)
    assert row["psnr_y"] == pytest.approx(psnr(y(sr)[c, c], y(hr)[c, c]), abs=1e-3)
    from skimage.metrics import structural_similarity
    ssim_y = structural_similarity(y(sr)[c, c], y(hr)[c, c], data_range=255, gaussian_weights=True, sigma=1.5,
                                   use_sample_covariance=False)
    assert row["ssim_y"] == pytest.approx(ssim_y, abs=2e-3)
    assert row["gain_psnr_rgb"] == pytest.approx(row["psnr_rgb"] - row["bicubic_psnr_rgb"])


def test_concurrent_claims_never_collide(s3_server, tmp_path):
    """The version-claim primitive itself, hammered by threads on local disk and on S3."""
    for root in (str(tmp_path / "models" / "m"), s3_server.make_bucket("claims") + "/models/m"):
        got, errors = [], []

        def claim():
            try:
                for _ in range(8):
                    got.append(registry.claim_version(root, {"by": threading.get_ident()}))
            except Exception as exc:  # noqa: BLE001 - surfaced by the assert below
                errors.append(exc)

        threads = [threading.Thread(target=claim) for _ in range(4)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert not errors and sorted(got) == list(range(1, 33)), (root, sorted(got))


def test_degraded_evaluation_is_fixed_and_reported(tmp_path, monkeypatch):
    """The `degraded` evaluation (the ladder's harsh rung) on a stand-in eval split and model (no dataset, no
    training: fast): the same LR on every run, its own section in metrics.json, rows in per_image.csv, grids;
    off by a key. The other rungs: tests/test_ladder.py."""
    from components import config, upscaler
    from components.degradation import degrade

    photo = sample_data.photo("astronaut")
    hrs = [photo[y:y + 64, x:x + 64] for y, x in ((80, 160), (200, 180), (300, 60))]
    monkeypatch.setattr(evaluate, "eval_split", lambda _uri: [{"name": f"p{i}", "hr": hr, "lr": degrade(hr).numpy()}
                                                              for i, hr in enumerate(hrs)])
    seen = []  # every LR batch the model is asked to upscale

    def nearest(lr):
        seen.append(lr.copy())
        return lr.repeat(4, axis=1).repeat(4, axis=2)
    monkeypatch.setattr(evaluate.upscaler, "load", lambda uri, version=None: upscaler.Upscaler(nearest, uri, "stub"))

    def evaluate_once(out, **keys):
        cfg = config.Config(artifact_root=str(tmp_path / "root"), model_uri="stub", dataset_id="ds-" + "0" * 16,
                            output=str(tmp_path / out))
        for k, v in keys.items():
            config.set_value(cfg, k, v)
        return evaluate.run(cfg)

    result = evaluate_once("a")
    d = result["degraded"]
    assert d["num_images"] == 3 and d["seed"] == evaluate.EVAL_SEED
    assert d["realistic_degradation"]["jpeg_range"] == [30.0, 95.0]
    assert d["psnr_rgb"] < result["eval_split"]["psnr_rgb"] - 1.0  # the degradation is not a no-op
    assert list(result["rungs"]) == ["mild", "moderate", "harsh"] and len(seen) == 4  # clean, then the ladder
    degraded_lr = seen[3]
    assert degraded_lr.shape == (3, 16, 16, 3) and not any(np.array_equal(degraded_lr, x) for x in seen[:3])
    rows = (tmp_path / "a" / "per_image.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["eval"] * 3 + ["mild"] * 3 + ["moderate"] * 3 + ["degraded"] * 3
    assert (tmp_path / "a" / "grids" / "degraded-000.png").exists()

    evaluate_once("b")
    np.testing.assert_array_equal(seen[7], degraded_lr)  # another evaluation sees the same degraded LR

    off = evaluate_once("c", eval_degraded=False)
    assert off["degraded"] is None and list(off["rungs"]) == ["mild", "moderate"]
    assert len(seen) == 8 + 3 and not (tmp_path / "c" / "grids" / "degraded-000.png").exists()
