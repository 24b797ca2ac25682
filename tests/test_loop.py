"""The training loop's parts run alone, in this process, with a session that keeps checkpoints in a folder
instead of Ray Train: build, restore, a phase, checkpoints (preemption, epoch end, phase end), resume, finish.
(`run_worker` chains the same parts; the Ray tests in test_train.py run it through Ray Train.) And the
backend that gives Ray Train's workers their TF_CONFIG."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np

from components import dataset, runs
from components.config import RealisticDegradation, TrainConfig
from components.trainer.loop import WorkerLoop, worker_config
from components.trainer.schedule import Schedule
from tests.conftest import REPO


class FolderSession:
    """What RaySession gives the loop, kept in a folder: one worker, reports recorded, the newest
    checkpoint folder to resume from, and preemption news on demand."""

    def __init__(self, folder: str, preempt_at_ask: int | None = None):
        self.rank, self.world, self.folder, self.preempt_at_ask = 0, 1, folder, preempt_at_ask
        self.reports, self.preemption_asks = [], 0
        os.makedirs(folder, exist_ok=True)

    @contextlib.contextmanager
    def latest_checkpoint(self):
        names = sorted(os.listdir(self.folder))
        yield os.path.join(self.folder, names[-1]) if names else None

    def report(self, metrics, folder=None, name=None):
        self.reports.append((metrics["step"], metrics["reason"], name))
        if folder:
            shutil.copytree(folder, os.path.join(self.folder, name))

    def preempted(self):
        self.preemption_asks += 1
        return self.preemption_asks == self.preempt_at_ask


def _config(root, dataset_id, run_uri):
    t = TrainConfig(generator_width=8, generator_blocks=2, discriminator_width=8, discriminator_dense=16,
                    vgg_weights="none", content_loss="pixel", global_batch_size=4, cpus_per_worker=1,
                    log_every_seconds=1e9, checkpoint_every_steps=0, preemption_check_every_steps=2,
                    pretrain_steps=6, gan_steps=2, steps_per_epoch=5)
    schedule = Schedule.from_config(t, num_train=1)  # steps_per_epoch is given: the record count does not matter
    assert schedule == Schedule(steps_per_epoch=5, pretrain_steps=6, gan_steps=2)
    return worker_config(t, schedule, dataset.dataset_uri(root, dataset_id), run_uri, None, RealisticDegradation())


def test_the_loop_parts_run_alone_then_resume_and_finish(tiny_dataset, tmp_path):
    root, dataset_id = tiny_dataset
    run_uri = str(tmp_path / "run")
    config = _config(root, dataset_id, run_uri)
    session = FolderSession(str(tmp_path / "checkpoints"), preempt_at_ask=2)

    first = WorkerLoop(config, session)
    first.build()
    first.restore()
    assert first.step == 0 and first.strategy.num_replicas_in_sync == 1
    before = [w.copy() for w in first.generator.get_weights()]
    first.run_phase("pretrain")
    assert first.step == 6
    assert any(np.abs(a - b).max() > 0 for a, b in zip(before, first.generator.get_weights()))
    # Preemption news asked every 2 steps (2: none, 4: news), not every step, and not once it was saved;
    # then the epoch end (5) and the phase end (6).
    assert session.preemption_asks == 2
    assert session.reports == [(4, "preemption", "checkpoint_00000004"), (5, "epoch_end", "checkpoint_00000005"),
                               (6, "phase_end", "checkpoint_00000006")]
    trained = first.generator.get_weights()

    # A new worker (a restarted run) resumes from the newest checkpoint: the same weights, at step 6.
    second = WorkerLoop(config, session)
    second.build()
    second.restore()
    assert second.step == 6
    for a, b in zip(trained, second.generator.get_weights()):
        np.testing.assert_array_equal(a, b)
    second.run_phase("pretrain")  # nothing left of it
    assert second.step == 6
    second.run_phase("gan")
    second.finish()
    assert second.step == 8 and session.reports[-1] == (8, "phase_end", "checkpoint_00000008")
    history = runs.parse_history(open(os.path.join(run_uri, runs.HISTORY)).read())
    assert [r["step"] for r in history if r["event"] == "resume"] == [6]
    assert history[-1]["event"] == "done" and history[-1]["step"] == 8
    assert os.path.isfile(os.path.join(run_uri, runs.GENERATOR))


def test_ray_trains_controller_gets_our_backend_without_tensorflow():
    """Ray Train's controller unpickles the backend config: ours must not pull TensorFlow into that process
    (Ray's TensorflowConfig did, through its package), and it gives each worker the TF_CONFIG of the cluster."""
    code = """if True:
        import json, os, pickle, sys
        from components.trainer import tf_cluster
        config = pickle.loads(pickle.dumps(tf_cluster.TFClusterConfig()))
        tf_cluster._set_tf_config(["10.0.0.1:1234", "10.0.0.2:5678"], 1)
        print(json.dumps({"backend": config.backend_cls.__name__, "framework": str(config.framework),
                          "tensorflow_loaded": "tensorflow" in sys.modules, "tf_config": json.loads(os.environ["TF_CONFIG"]),
                          "address": tf_cluster._worker_address()}))
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["backend"] == "_TFClusterBackend" and "TENSORFLOW" in got["framework"]
    assert got["tensorflow_loaded"] is False
    assert got["tf_config"] == {"cluster": {"worker": ["10.0.0.1:1234", "10.0.0.2:5678"]},
                                "task": {"type": "worker", "index": 1}}
    host, port = got["address"].rsplit(":", 1)
    assert host and 0 < int(port) < 65536


def test_the_generator_ema_is_checkpointed_resumed_and_published(tiny_dataset, tmp_path):
    """ema_decay > 0: the EMA starts from the generator at the GAN phase's start (kept as generator_psnr.keras),
    is in every checkpoint, comes back on resume, and is what generator.keras holds."""
    import keras

    from components import models

    root, dataset_id = tiny_dataset
    run_uri = str(tmp_path / "run")
    config = _config(root, dataset_id, run_uri)
    config["train"]["ema_decay"] = 0.5
    session = FolderSession(str(tmp_path / "checkpoints"))
    first = WorkerLoop(config, session)
    first.build()
    first.restore()
    first.run_phase("pretrain")
    at_gan_start = first.generator.get_weights()
    first.run_phase("gan")  # steps 7, 8: the phase end checkpoints at 8
    ema = first.ema.get_weights()
    assert any(np.abs(e - g).max() > 0 for e, g in zip(ema, first.generator.get_weights()))
    assert any(np.abs(e - g).max() > 0 for e, g in zip(ema, at_gan_start))
    psnr = keras.saving.load_model(os.path.join(run_uri, runs.GENERATOR_PSNR), compile=False)
    for a, b in zip(psnr.get_weights(), at_gan_start):
        np.testing.assert_array_equal(a, b)

    second = WorkerLoop(config, session)
    second.build()
    second.restore()
    assert second.step == 8
    for a, b in zip(second.ema.get_weights(), ema):
        np.testing.assert_array_equal(a, b)
    second.finish()
    published = keras.saving.load_model(os.path.join(run_uri, runs.GENERATOR), compile=False)
    for a, b in zip(published.get_weights(), ema):
        np.testing.assert_array_equal(a, b)
    assert isinstance(models.blend_weights(published, psnr, 0.5), list)
