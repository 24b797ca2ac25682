"""The training loop's policies on their own (no Ray): the schedule, when to checkpoint, progress lines."""

from __future__ import annotations

import os

import pytest

from components import logs
from components.config import TrainConfig
from components.trainer.loop import Progress, checkpoint_reason
from components.trainer.schedule import Schedule
from tests.conftest import onednn_requested


def test_schedule_from_steps_or_epochs():
    cfg = TrainConfig(global_batch_size=16, pretrain_epochs=2, gan_steps=5)
    s = Schedule.from_config(cfg, num_train=100)  # 100 // 16 = 6 steps an epoch
    assert (s.steps_per_epoch, s.pretrain_steps, s.gan_steps, s.total) == (6, 12, 5, 17)
    assert [s.phase_of(i) for i in (0, 11, 12, 16)] == ["pretrain", "pretrain", "gan", "gan"]
    assert s.bounds("pretrain") == (0, 12) and s.bounds("gan") == (12, 17)
    assert Schedule.from_config(TrainConfig(global_batch_size=16, steps_per_epoch=3, pretrain_steps=0, gan_epochs=1),
                                num_train=5) == Schedule(3, 0, 3)
    assert Schedule.from_config(TrainConfig(global_batch_size=64), num_train=10).steps_per_epoch == 1  # never 0
    assert Schedule(**s.to_dict()) == s  # what the launcher hands the workers


def test_checkpoint_reasons_in_order_of_precedence():
    s = Schedule(steps_per_epoch=4, pretrain_steps=6, gan_steps=6)
    reasons = {step: checkpoint_reason(step, s, every_steps=3, preempted=False) for step in range(1, 13)}
    assert reasons == {1: None, 2: None, 3: "every_n_steps", 4: "epoch_end", 5: None, 6: "phase_end",
                       7: None, 8: "epoch_end", 9: "every_n_steps", 10: None, 11: None, 12: "phase_end"}
    assert checkpoint_reason(5, s, every_steps=0, preempted=True) == "preemption"
    assert checkpoint_reason(4, s, every_steps=0, preempted=True) == "epoch_end"  # one checkpoint serves both


def test_progress_means_rate_and_eta(monkeypatch):
    clock = iter([100.0, 101.0, 111.0, 111.0, 111.0])
    monkeypatch.setattr("components.trainer.loop.time.time", lambda: next(clock))
    p = Progress(start_step=0, total=30, global_batch=16)  # t=100
    p.add(1, {"loss/g_pixel": 4.0})  # t=101: the rate starts after the first step (tracing, warm-up)
    p.add(2, None)                   # a skipped step adds no loss
    p.add(11, {"loss/g_pixel": 2.0})
    means, rate, eta = p.take(11)    # t=111: 10 steps x 16 images in 10 s
    assert means == {"loss/g_pixel": pytest.approx(3.0)}
    assert rate == pytest.approx(16.0) and eta == pytest.approx(19 * 16 / 16.0)
    assert p.take(11)[0] == {}       # a new window


def test_eta_covers_both_phases_from_the_predicted_then_the_measured_gan_pace(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("components.trainer.loop.time.time", lambda: now[0])
    p = Progress(start_step=0, total=30, global_batch=4, pretrain_steps=20, gan_cost=3.0)
    p.add(1, {"loss/g_pixel": 1.0})
    now[0] = 101.0
    p.add(1, None)                      # the clock starts after the first step
    now[0] = 111.0
    _, rate, eta = p.take(11)           # 10 pretraining steps in 10 s: 1 s/step
    assert rate == pytest.approx(4.0)
    assert eta == pytest.approx(9 * 1.0 + 10 * 3.0)  # 9 pretraining steps left, 10 GAN steps at 3x
    p.start_phase(20)                   # the GAN phase: its rate starts over
    now[0] = 120.0
    p.add(21, {"loss/g_total": 2.0})
    assert p.take(21)[1] is None and p.take(21)[2] == pytest.approx(9 * 3.0)  # still the prediction
    now[0] = 130.0
    _, rate, eta = p.take(25)           # 4 GAN steps in 10 s: 2.5 s/step measured replaces 3.0
    assert rate == pytest.approx(1.6) and eta == pytest.approx(5 * 2.5)
    unknown = Progress(start_step=0, total=30, global_batch=4, pretrain_steps=20, gan_cost=None)
    unknown.add(1, None)
    now[0] = 131.0
    assert unknown.take(3)[1] is not None and unknown.take(3)[2] is None  # a GAN phase ahead, no pace: "--"


def test_gan_cost_is_predicted_above_one_and_grows_with_vgg():
    from components import models
    from components.trainer import cost, losses

    g, d = models.build_generator(8, 2, 4, True), models.build_discriminator(32, 8, 4, dense=16)
    bare = cost.gan_to_pretrain_cost(g, d, None, 2, 32, 4)
    vgg = losses.build_vgg_features(["block2_conv2"], None, "vgg16")
    assert 1.0 < bare < cost.gan_to_pretrain_cost(g, d, vgg, 2, 32, 4)


def test_first_progress_line_has_no_rate_or_eta_and_etas_do_not_wrap(monkeypatch):
    clock = iter([100.0, 160.0, 160.0])
    monkeypatch.setattr("components.trainer.loop.time.time", lambda: next(clock))
    p = Progress(start_step=10, total=60, global_batch=4)
    p.add(11, {"loss/g_pixel": 1.0})  # a resumed run's first step: tracing only, nothing timed yet
    means, rate, eta = p.take(11)
    assert means == {"loss/g_pixel": 1.0} and rate is None and eta is None  # was "0.0 img/s | ETA 12:26:40"
    assert [logs.eta(s) for s in (None, float("inf"), 0, 59.6, 3605, 30 * 3600 + 61)] == [
        "--", "--", "0:00:00", "0:01:00", "1:00:05", "30:01:01"]  # hours do not wrap at a day


def test_precision_auto_picks_what_the_hardware_offers(tmp_path):
    from components.trainer.precision import choose, cpu_flags

    assert choose("auto", {"avx2", "amx_bf16", "amx_tile"}, []) == ("mixed_bfloat16", "CPU with AMX-BF16 (amx_bf16 in /proc/cpuinfo)")
    assert choose("auto", {"avx2", "avx512_bf16"}, [])[0] == "float32"  # no AMX: bfloat16 is slower there
    assert choose("auto", set(), [(8, 0), (9, 0)])[0] == "mixed_bfloat16"
    assert choose("auto", {"amx_bf16"}, [(7, 5)]) == ("mixed_float16", "GPU compute capability 7.5 (7.x: float16 tensor cores)")
    assert choose("auto", set(), [(8, 6), (6, 1)])[0] == "float32"  # the weakest GPU decides
    assert choose("mixed_float16", {"amx_bf16"}, []) == ("mixed_float16", "asked for")
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 amx_bf16 amx_tile\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(str(info)) == {"fpu", "avx2", "amx_bf16", "amx_tile"}
    assert cpu_flags(str(tmp_path / "missing")) == set()


def test_onednn_kernels_follow_the_setting_made_before_tensorflow_loads():
    """components/__init__.py sets TF_ENABLE_ONEDNN_OPTS (unless the user did) before TensorFlow loads;
    conftest imports it first, as every job does: TensorFlow reports what the setting says."""
    from components.trainer import precision

    assert os.environ.get("TF_ENABLE_ONEDNN_OPTS") is not None
    assert precision.onednn_kernels() is onednn_requested()
