"""The trainer on a real local Ray cluster (Ray Train V2): 1 vs 2 workers, stop/restart, a killed worker,
checkpoints on S3, and clear errors. Runs that kill processes start their own Ray (own temp dir) and stop
it; the others join one cluster shared by the test session."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from components import dataset, storage
from tests.conftest import REPO, kill_processes_of, onednn_requested, run_cli

TINY = ["--generator-width", "8", "--generator-blocks", "2", "--discriminator-width", "8",
        "--discriminator-dense", "16", "--vgg-weights", "none", "--vgg-layers", "block2_conv2",
        "--global-batch-size", "4", "--log-every-seconds", "2", "--cpus-per-worker", "1"]


def _env(tmp_path):
    ray_tmp = os.path.join("/tmp", f"ray-t{os.getpid()}-{abs(hash(str(tmp_path))) % 10**6}")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # always a fresh local cluster
    return {**env, "TF_CPP_MIN_LOG_LEVEL": "2", "SRGAN_RAY_TEMP_DIR": ray_tmp}, ray_tmp


def _kill_ray(ray_tmp: str) -> None:
    """Stop every process of the Ray cluster that used `ray_tmp`, by pid."""
    kill_processes_of(ray_tmp)


def train(root, dataset_id, run_id, *extra, tmp_path, timeout=600, background=False, cluster=None):
    """jobs/train.py in a subprocess: on its own new local Ray, or joining `cluster` (a RayCluster)."""
    env, ray_tmp = _env(tmp_path) if cluster is None else (cluster.env(), None)
    cmd = [sys.executable, os.path.join(REPO, "jobs", "train.py"), "--artifact-root", root,
           "--dataset-id", dataset_id, "--run-id", run_id, *TINY, *extra]
    log = open(os.path.join(str(tmp_path), f"{run_id}-{time.time():.0f}.log"), "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    if background:
        return proc, ray_tmp, log.name
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        if ray_tmp:
            _kill_ray(ray_tmp)
    out = open(log.name).read()
    assert proc.returncode == 0, out[-4000:]
    return out


def history(root, run_id):
    return [json.loads(line) for line in storage.read_text(storage.join(root, "runs", run_id, "history.jsonl")).splitlines()]


def generator_weights(root, run_id):
    import keras

    from components import models  # noqa: F401  (custom layers)
    model = keras.saving.load_model(storage.stage_in(storage.join(root, "runs", run_id, "generator.keras")),
                                    compile=False)
    return model.get_weights()


def generator_paths(root, run_id):
    """Variable paths of the final generator, in get_weights() order (checkpoint keys are by path)."""
    import keras

    from components import models  # noqa: F401  (custom layers)
    model = keras.saving.load_model(storage.stage_in(storage.join(root, "runs", run_id, "generator.keras")),
                                    compile=False)
    return [v.path for v in model.weights]


def _wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _committed_step(root, run_id) -> int:
    """The step of the latest checkpoint Ray Train has committed (a checkpoint folder can exist on
    storage before it is committed; a run killed then resumes from the one before). Local or S3."""
    uri = storage.join(root, "runs", run_id, "checkpoint_manager_snapshot.json")
    try:
        latest = storage.read_json(uri).get("latest_checkpoint_result") if storage.exists(uri) else None
    except (OSError, ValueError, storage.StorageError):  # mid-write
        return 0
    return latest["metrics"]["step"] if latest else 0


def _checkpoints(root, run_id):
    run = storage.join(root, "runs", run_id)
    names = {storage.relpath(f, run).split("/")[0] for f in storage.list_files(run)} if storage.exists(run) else set()
    return sorted(n for n in names if re.fullmatch(r"checkpoint_\d{8}", n))


@pytest.mark.slow
def test_two_workers_match_one_worker(tiny_dataset, tmp_path, ray_cluster):
    """Same global batch, fixed order, no augmentation: 2 workers (MultiWorkerMirroredStrategy) and
    1 worker end with the same weights, so the all-reduce and the global-batch averaging are right."""
    root, ds_id = tiny_dataset
    common = ["--pretrain-steps", "3", "--gan-steps", "3", "--steps-per-epoch", "3", "--shuffle-buffer", "0",
              "--no-augment", "--content-loss", "vgg"]
    out = train(root, ds_id, "one-worker", "--num-workers", "1", *common, tmp_path=tmp_path, cluster=ray_cluster)
    assert re.search(r"step \d+/6 (pretrain|gan) epoch \d+ \| .* img/s \| ETA", out), out[-3000:]  # progress line
    train(root, ds_id, "two-workers", "--num-workers", "2", *common, tmp_path=tmp_path, cluster=ray_cluster)
    one, two = generator_weights(root, "one-worker"), generator_weights(root, "two-workers")
    for a, b in zip(one, two):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # Not vacuous: the GAN steps moved the generator away from the end of pre-training (step 3).
    with np.load(os.path.join(root, "runs", "one-worker", "checkpoint_00000003", "state.npz")) as z:
        at_step3 = [z[f"generator/{path}"] for path in generator_paths(root, "one-worker")]
    assert any(np.abs(a - b).max() > 1e-4 for a, b in zip(one, at_step3))
    run = storage.read_json(storage.join(root, "runs", "two-workers", "run.json"))
    assert run["status"] == "succeeded" and run["final_metrics"]["world_size"] == 2
    assert run["final_metrics"]["step"] == 6 and run["final_metrics"]["phase"] == "gan"
    # the workers ran TensorFlow's oneDNN kernels (components/__init__.py turns them on before TF loads)
    assert run["precision"] == {"policy": "float32", "reason": "asked for", "onednn_kernels": onednn_requested()}
    rows = history(root, "one-worker")
    evals = [r for r in rows if r["event"] == "eval"]
    assert evals and all(np.isfinite(r["psnr_fixed_batch"]) for r in evals)
    assert os.path.isfile(os.path.join(root, "runs", "one-worker", "samples", "step-00000006.png"))
    events = [n for n in os.listdir(os.path.join(root, "runs", "one-worker", "logs")) if "tfevents" in n]
    assert events
    import tensorflow as tf  # TensorBoard's tags are the names history.jsonl uses: one name per metric

    tags = {v.tag for e in tf.compat.v1.train.summary_iterator(os.path.join(root, "runs", "one-worker", "logs", events[0]))
            for v in e.summary.value}
    # the last step's progress line (GAN losses, rate) and the evals are always written; pretrain lines only
    # when log_every_seconds passed during it
    assert {"loss/g_total", "images_per_second", "psnr_fixed_batch"} <= tags <= set().union(*rows), tags


@pytest.mark.slow
def test_stopped_run_on_s3_resumes_from_its_latest_checkpoint_there(tiny_dataset, s3_server, tmp_path, own_ray):
    """Everything on S3 (dataset, checkpoints, history, generator); the driver killed mid-run, the same run
    again: it resumes from the checkpoint it committed last on S3, not from scratch."""
    local_root, ds_id = tiny_dataset
    root = s3_server.make_bucket("stopped") + "/srgan"
    s3_server.client().put(os.path.join(local_root, "datasets", ds_id), f"stopped/srgan/datasets/{ds_id}",
                           recursive=True)
    args = ["--pretrain-steps", "60", "--gan-steps", "0", "--steps-per-epoch", "20", "--checkpoint-every-steps", "5",
            "--content-loss", "pixel"]
    proc, ray_tmp, log = train(root, ds_id, "stopped", *args, tmp_path=tmp_path, background=True)
    try:
        _wait_for(lambda: _committed_step(root, "stopped") >= 10, 300, "two committed checkpoints")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole driver process group, mid-run
        proc.wait()
        _kill_ray(ray_tmp)
    stopped_at = _committed_step(root, "stopped")
    assert 10 <= stopped_at < 60
    assert storage.exists(f"{root}/runs/stopped/checkpoint_{stopped_at:08d}/state.npz")
    train(root, ds_id, "stopped", *args, tmp_path=tmp_path)
    rows = history(root, "stopped")
    resumes = [r for r in rows if r["event"] == "resume"]
    # Continued from the checkpoint committed last (the snapshot we read may lag one commit behind),
    # not from scratch.
    assert len(resumes) == 1 and stopped_at <= resumes[0]["step"] <= stopped_at + 5 and resumes[0]["step"] % 5 == 0
    assert rows[-1]["event"] == "done" and rows[-1]["step"] == 60
    run = storage.read_json(storage.join(root, "runs", "stopped", "run.json"))
    assert run["attempts"] == 2 and run["status"] == "succeeded"
    assert storage.exists(f"{root}/runs/stopped/generator.keras")
    assert storage.exists(f"{root}/runs/stopped/checkpoint_00000060/state.json")
    assert len(_checkpoints(root, "stopped")) <= 3  # keep_checkpoints
    # A finished run extended (more pretraining steps): it resumes from its last checkpoint on S3, at 60.
    train(root, ds_id, "stopped", *[("65" if a == "60" else a) for a in args], tmp_path=tmp_path)
    rows = history(root, "stopped")
    resumes = [r for r in rows if r["event"] == "resume"]
    assert len(resumes) == 2 and resumes[1]["step"] == 60, resumes
    assert rows[-1]["event"] == "done" and rows[-1]["step"] == 65
    assert storage.read_json(storage.join(root, "runs", "stopped", "run.json"))["attempts"] == 3


@pytest.mark.slow
def test_killed_worker_is_restarted_and_resumes(tiny_dataset, tmp_path, own_ray):
    root, ds_id = tiny_dataset
    args = ["--num-workers", "2", "--pretrain-steps", "40", "--gan-steps", "4", "--steps-per-epoch", "8",
            "--checkpoint-every-steps", "4", "--content-loss", "pixel", "--max-failures", "2"]
    proc, ray_tmp, log = train(root, ds_id, "killed", *args, tmp_path=tmp_path, background=True)
    try:
        _wait_for(lambda: _committed_step(root, "killed") >= 4, 300, "a first committed checkpoint")
        killed_after = _committed_step(root, "killed")
        workers = [int(p) for p in os.listdir("/proc") if p.isdigit() and _is_train_worker(int(p), ray_tmp)]
        assert len(workers) == 2, workers
        os.kill(workers[-1], signal.SIGKILL)
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        _kill_ray(ray_tmp)
    out = open(log).read()
    assert proc.returncode == 0, out[-4000:]
    rows = history(root, "killed")
    resumes = [r for r in rows if r["event"] == "resume"]
    assert resumes, "the worker group was not restarted from a checkpoint"
    # Resumed from the checkpoint committed when the worker died (or the next one, committed while it died):
    # at most one checkpoint interval (4 steps, half an epoch) of work was lost.
    assert killed_after <= resumes[0]["step"] <= killed_after + 4
    assert rows[-1]["event"] == "done" and rows[-1]["step"] == 44
    assert all(np.isfinite(w).all() for w in generator_weights(root, "killed"))


def _is_train_worker(pid: int, ray_tmp: str) -> bool:
    try:
        cmd = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
        env = open(f"/proc/{pid}/environ", "rb").read().decode(errors="replace")
    except OSError:
        return False
    return "RayTrainWorker" in cmd and ray_tmp in env + cmd


@pytest.mark.parametrize("args,message", [
    (["--dataset-id", "ds-0000000000000000"], "no committed dataset there"),
    (["--dataset-id", "not-an-id"], "is not a dataset id"),
    (["--num-workers", "2", "--global-batch-size", "3"], "must be a positive multiple of the 2 replicas"),
    (["--precision", "fp8"], "precision 'fp8'"),
    (["--vgg-weights", "/nonexistent/vgg19.h5", "--gan-steps", "1"], "vgg_weights=/nonexistent/vgg19.h5"),
    (["--gan-steps", "two"], "invalid int value"),
    (["--run-id", "a/b"], "run id 'a/b'"),
])
def test_bad_flags_give_one_clear_error(tiny_dataset, args, message, capsys):
    root, ds_id = tiny_dataset
    base = ["--artifact-root", root, "--dataset-id", ds_id, "--pretrain-steps", "1", "--gan-steps", "0"]
    out = run_cli(capsys, "train", *base, *args)
    assert out.returncode == 2, out.stderr[-2000:]
    assert message in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    assert not os.path.exists(os.path.join(root, "runs", "a"))


@pytest.mark.slow
def test_ray_job_submit_to_a_running_cluster(tiny_dataset, ray_cluster):
    """`ray start --head` then `ray job submit -- python jobs/train.py ...`: the job joins that cluster."""
    root, ds_id = tiny_dataset
    env = ray_cluster.base_env()
    deadline = time.time() + 120
    while True:  # the head's job agent comes up a little after `ray start` returns
        out = subprocess.run(
            [os.path.join(ray_cluster.bin, "ray"), "job", "submit", "--address",
             f"http://127.0.0.1:{ray_cluster.dashboard}", "--",
             "python", os.path.join(REPO, "jobs", "train.py"), "--artifact-root", root, "--dataset-id", ds_id,
             "--run-id", "submitted", *TINY, "--pretrain-steps", "2", "--gan-steps", "0",
             "--content-loss", "pixel", "--precision", "auto"],
            capture_output=True, text=True, env=env, timeout=600, cwd=REPO)
        if "No available agent" not in out.stderr + out.stdout or time.time() > deadline:
            break
        time.sleep(3)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "run submitted: succeeded" in out.stdout
    run = storage.read_json(storage.join(root, "runs", "submitted", "run.json"))
    assert run["status"] == "succeeded" and run["final_metrics"]["step"] == 2
    # `auto` was decided on the worker, by this machine's CPU (no GPU here)
    from components.trainer.precision import choose, cpu_flags
    assert run["precision"]["policy"] == choose("auto", cpu_flags(), [])[0] and run["precision"]["reason"]


def test_warm_start_folder_without_a_generator_is_refused_before_training(tiny_dataset, capsys):
    root, ds_id = tiny_dataset  # the artifact root exists, but holds no generator.keras
    out = run_cli(capsys, "train", "--artifact-root", root, "--dataset-id", ds_id, "--pretrain-steps", "1",
                  "--gan-steps", "0", "--warm-start", root)
    assert out.returncode == 2 and f"warm_start {root}: no generator.keras there" in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr


def test_input_order_is_a_function_of_seed_epoch_and_position(tiny_dataset):
    """What resuming mid-epoch relies on: the same (seed, epoch) gives the same batches, and skip_steps
    drops exactly the first ones; another epoch is another order."""
    from components.trainer import input_fn

    root, ds_id = tiny_dataset
    uri = dataset.dataset_uri(root, ds_id)

    def batches(**kw):
        args = {"batch_size": 4, "epoch": 1, "seed": 3, "steps": 5, **kw}
        return [b["hr"].numpy() for b in input_fn.make_dataset(uri, **args)]
    full, resumed = batches(), batches(skip_steps=2)
    assert len(full) == 5 and len(resumed) == 3
    assert all(b.shape == (4, 128, 128, 3) and -1.0 <= b.min() and b.max() <= 1.0 for b in full)
    for a, b in zip(full[2:], resumed):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(full[0], batches()[0])
    assert not np.array_equal(full[0], batches(epoch=2)[0])
    halves = [batches(num_shards=2, shard_index=i, augment_images=False, shuffle_buffer=0) for i in (0, 1)]
    assert not np.array_equal(halves[0][0], halves[1][0])  # two workers read different records


def test_random_aligned_crop_takes_the_lr_crop_at_the_matching_position():
    """An LR made by taking every 4th HR pixel: the crops are aligned iff hr_crop[::4, ::4] == lr_crop."""
    import tensorflow as tf

    from components.trainer import input_fn

    yy, xx = np.meshgrid(np.arange(96), np.arange(160), indexing="ij")
    hr = np.stack([yy, xx, (yy + xx) % 256], -1).astype(np.uint8)
    ex = {"hr": tf.constant(hr), "lr": tf.constant(hr[::4, ::4])}
    corners = set()
    for i in range(20):
        seed = input_fn.element_seed(7, 0, i, input_fn.CROP_STREAM)
        out = input_fn.random_aligned_crop(ex, 32, 4, seed)
        assert out["hr"].shape == (32, 32, 3) and out["lr"].shape == (8, 8, 3)
        np.testing.assert_array_equal(out["hr"].numpy()[::4, ::4], out["lr"].numpy())
        corners.add((int(out["hr"][0, 0, 0]), int(out["hr"][0, 0, 1])))
        again = input_fn.random_aligned_crop(ex, 32, 4, input_fn.element_seed(7, 0, i, input_fn.CROP_STREAM))
        np.testing.assert_array_equal(out["hr"].numpy(), again["hr"].numpy())
    assert len(corners) > 10 and all(y % 4 == 0 and x % 4 == 0 for y, x in corners)  # on the scale grid
    assert max(y for y, _ in corners) <= 96 - 32 and max(x for _, x in corners) <= 160 - 32
    whole = input_fn.random_aligned_crop(ex, 96, 4, input_fn.element_seed(7, 0, 0, input_fn.CROP_STREAM))
    assert whole["hr"].shape == (96, 96, 3)


def test_training_crops_match_degrade_and_resume_exactly(tiny_dataset):
    """train_crop_size below the stored size: LR crop == degrade(HR crop) away from the border, the crop
    stream is a function of (seed, epoch, position) (resume skips exactly), another epoch other crops."""
    from components.degradation import degrade
    from components.models import to_uint8
    from components.trainer import input_fn

    root, ds_id = tiny_dataset
    uri = dataset.dataset_uri(root, ds_id)

    def batches(**kw):
        args = {"batch_size": 4, "epoch": 1, "seed": 3, "steps": 4, "crop_size": 64, "augment_images": False, **kw}
        return [(to_uint8(b["hr"]).numpy(), to_uint8(b["lr"]).numpy()) for b in input_fn.make_dataset(uri, **args)]
    full, resumed = batches(), batches(skip_steps=1)
    assert full[0][0].shape == (4, 64, 64, 3) and full[0][1].shape == (4, 16, 16, 3)
    for (hr, lr), (hr2, _) in zip(full[1:], resumed):
        np.testing.assert_array_equal(hr, hr2)
    for hr, lr in full:
        # bicubic's support is 4 LR pixels: away from a 2-pixel margin the crop's own LR is the stored LR's
        diff = np.abs(degrade(hr, 4).numpy().astype(int) - lr.astype(int))[:, 2:-2, 2:-2]
        assert diff.max() <= 1, diff.max()
    assert not np.array_equal(full[0][0], batches(epoch=2)[0][0])
    with pytest.raises(dataset.DatasetError, match="train_crop_size 66"):
        batches(crop_size=66)


def test_train_crop_size_larger_than_the_records_is_refused(tiny_dataset, capsys):
    root, ds_id = tiny_dataset
    out = run_cli(capsys, "train", "--artifact-root", root, "--dataset-id", ds_id, "--train-crop-size", "256")
    assert out.returncode == 2 and "train_crop_size 256 must be a positive multiple of the scale 4" in out.stderr
    assert "Traceback" not in out.stderr


def test_realistic_lr_is_made_on_the_fly_and_resumes_exactly(tiny_dataset):
    """degradation realistic: LR from each (cropped) HR by the second-order pipeline, not the stored LR; a
    function of (seed, epoch, position) like the crops, so a resumed run sees the same LR."""
    from components.degradation import degrade
    from components.models import to_uint8
    from components.trainer import input_fn

    root, ds_id = tiny_dataset
    uri = dataset.dataset_uri(root, ds_id)

    def batches(**kw):
        args = {"batch_size": 4, "epoch": 0, "seed": 5, "steps": 3, "crop_size": 64, "augment_images": True,
                "shuffle_buffer": 0, "degradation": "realistic", **kw}
        return [(to_uint8(b["hr"]).numpy(), to_uint8(b["lr"]).numpy()) for b in input_fn.make_dataset(uri, **args)]
    full, resumed = batches(), batches(skip_steps=1)
    assert full[0][0].shape == (4, 64, 64, 3) and full[0][1].shape == (4, 16, 16, 3)
    for (hr, lr), (hr2, lr2) in zip(full[1:], resumed):
        np.testing.assert_array_equal(hr, hr2)
        np.testing.assert_array_equal(lr, lr2)
    clean_gap = [np.abs(degrade(hr, 4).numpy().astype(int) - lr.astype(int)).mean() for hr, lr in full]
    assert max(clean_gap) > 2.0, clean_gap  # far from the clean bicubic LR: blur, noise, JPEG
    other_seed = batches(seed=6)
    assert not np.array_equal(full[0][1], other_seed[0][1])
