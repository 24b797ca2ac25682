"""The distributed step without Ray: learning, both models updating, non-finite skips, global-batch averaging."""

import numpy as np
import pytest
import tensorflow as tf

import keras

from components import models
from components.trainer import losses
from components.trainer.step import SRGANSteps

# Two logical CPU devices (tests/conftest.py makes them before TensorFlow starts), so MirroredStrategy
# has 2 replicas in one process.
DEVICES = [d.name for d in tf.config.list_logical_devices("CPU")]
assert len(DEVICES) == 2, f"expected 2 logical CPU devices, got {DEVICES}: was TensorFlow initialised before conftest?"


def _batch(n=4, hr=32, seed=0):
    from components import sample_data
    photo = sample_data.photo("astronaut")
    rng = np.random.default_rng(seed)
    crops = []
    for _ in range(n):
        y, x = rng.integers(0, 512 - hr, size=2)
        crops.append(photo[y:y + hr, x:x + hr])
    hr_u8 = np.stack(crops)
    from components.degradation import degrade
    return {"hr": models.to_unit(hr_u8).numpy(), "lr": models.to_unit(degrade(hr_u8)).numpy()}


_STRATEGIES = {}


def _strategy(devices):
    """One strategy per device set and process: two over the same devices reuse collective keys and clash."""
    key = tuple(devices)
    if key not in _STRATEGIES:
        _STRATEGIES[key] = tf.distribute.MirroredStrategy(devices)
    return _STRATEGIES[key]


def _setup(devices, content_loss="pixel", seed=0, global_batch=4):
    keras.utils.set_random_seed(seed)
    strategy = _strategy(devices)
    with strategy.scope():
        # Glorot-initialised sub-pixel convs, as when this bound was set: with ICNR's init one weight of 2,304 lands
        # 2e-4 apart (Adam's first steps amplify summation-order noise); the reduction, not the init, is tested
        g = models.build_generator(8, 2, icnr=False)
        d = models.build_discriminator(32, 8, 2, dense=16)
        g_opt, d_opt = keras.optimizers.Adam(1e-3), keras.optimizers.Adam(1e-3)
        vgg = losses.build_vgg_features("block2_conv2", None) if content_loss == "vgg" else None
    steps = SRGANSteps(strategy, g, d, g_opt, d_opt, vgg, global_batch_size=global_batch, content_loss=content_loss)
    return strategy, steps


def _state(steps, counters=True):
    from components.trainer import checkpoint

    return checkpoint.TrainingState(models={"generator": steps.G, "discriminator": steps.D},
                                    optimizers={"g_optimizer": (steps.g_opt, steps.G), "d_optimizer": (steps.d_opt, steps.D)},
                                    counters={"nonfinite_steps": steps.nonfinite_steps} if counters else {})


def _dist(strategy, batch, repeat=1):
    return strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(batch).repeat(repeat))


def test_pretraining_reduces_pixel_mse():
    strategy, steps = _setup(DEVICES[:1])
    batch = _batch()
    first = last = None
    for b in _dist(strategy, batch, 40):
        metrics, applied = steps.pretrain_step(b)
        assert bool(applied)
        loss = float(metrics["loss/g_pixel"])
        assert np.isfinite(loss)
        first = loss if first is None else first
        last = loss
    assert last < 0.5 * first, (first, last)


@pytest.mark.parametrize("content_loss", ["vgg", "pixel"])
def test_gan_step_updates_both_models_with_finite_losses(content_loss):
    strategy, steps = _setup(DEVICES[:1], content_loss)
    g0 = [v.numpy().copy() for v in steps.G.trainable_variables]
    d0 = [v.numpy().copy() for v in steps.D.trainable_variables]
    for b in _dist(strategy, _batch()):
        metrics, applied = steps.gan_step(b)
    assert bool(applied)
    expected = {"loss/g_content", "loss/g_adv", "loss/g_total", "loss/d_real", "loss/d_fake",
                "d/accuracy_real", "d/accuracy_fake",
                "loss/g_content_weighted", "loss/g_adv_weighted", "loss/g_pixel_weighted"}
    assert set(metrics) == expected
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert abs(float(metrics["loss/d_real"]) - np.log(2)) < 0.5  # an untrained D is near chance
    assert all(not np.array_equal(a, b.numpy()) for a, b in zip(g0, steps.G.trainable_variables) if a.size > 1)
    assert all(not np.array_equal(a, b.numpy()) for a, b in zip(d0, steps.D.trainable_variables) if a.size > 1)


@pytest.mark.slow
def test_non_finite_step_is_skipped_and_counted():
    strategy, steps = _setup(DEVICES[:2])
    batch = _batch()
    batch["lr"][3, 0, 0, 0] = np.nan  # lands in the second replica only
    g0 = [v.numpy().copy() for v in steps.G.trainable_variables]
    opt_iters = int(steps.g_opt.iterations.numpy())
    for b in _dist(strategy, batch):
        _, applied = steps.gan_step(b)
    assert not bool(applied)
    assert int(steps.nonfinite_steps.numpy()) == 1
    assert int(steps.g_opt.iterations.numpy()) == opt_iters  # the optimizer did not step either
    assert all(np.array_equal(a, b.numpy()) for a, b in zip(g0, steps.G.trainable_variables))
    for b in _dist(strategy, _batch()):  # and the next clean step trains again
        _, applied = steps.gan_step(b)
    assert bool(applied) and int(steps.nonfinite_steps.numpy()) == 1


@pytest.mark.slow
def test_two_replicas_match_one_with_the_same_global_batch():
    """Per-replica losses averaged over the GLOBAL batch + all-reduce = the single-replica gradient."""
    batch = _batch(n=4)
    results = []
    for devices in (DEVICES[:1], DEVICES[:2]):
        strategy, steps = _setup(devices, "vgg", seed=7)
        for b in _dist(strategy, batch, 3):
            steps.pretrain_step(b)
        for b in _dist(strategy, batch, 3):
            steps.gan_step(b)
        results.append([v.numpy() for v in steps.G.trainable_variables + steps.D.trainable_variables])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_steps_are_finite_and_learn(precision):
    keras.mixed_precision.set_global_policy(precision)
    try:
        strategy = _strategy(DEVICES[:1])
        keras.utils.set_random_seed(0)
        with strategy.scope():
            g, d = models.build_generator(8, 2), models.build_discriminator(32, 8, 2, dense=16)
            g_opt, d_opt = keras.optimizers.Adam(1e-3), keras.optimizers.Adam(1e-3)
        steps = SRGANSteps(strategy, g, d, g_opt, d_opt, None, global_batch_size=4, content_loss="pixel",
                           loss_scale=2.0 ** 15 if precision == "mixed_float16" else 1.0)
        assert g.get_layer("head_conv").compute_dtype == precision.split("_")[1]
        assert g.output.dtype == "float32"  # losses are computed in float32
        losses_seen = []
        for b in _dist(strategy, _batch(), 25):
            metrics, applied = steps.pretrain_step(b)
            losses_seen.append(float(metrics["loss/g_pixel"]))
        assert all(np.isfinite(losses_seen)) and losses_seen[-1] < losses_seen[0]
        for b in _dist(strategy, _batch()):
            metrics, applied = steps.gan_step(b)
        assert all(np.isfinite(float(v)) for v in metrics.values())
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_warm_start_loads_generator_weights(tmp_path):
    from components.trainer import checkpoint

    source = models.build_generator(8, 2)
    path = str(tmp_path / "generator.keras")
    source.save(path)
    target = models.build_generator(8, 2)
    assert checkpoint.load_generator_weights(str(tmp_path), target) == path  # a folder holding one
    for a, b in zip(source.get_weights(), target.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(checkpoint.CheckpointMismatch, match="do not fit"):
        checkpoint.load_generator_weights(path, models.build_generator(16, 2))
    with pytest.raises(FileNotFoundError, match="no generator.keras"):
        checkpoint.load_generator_weights(str(tmp_path / "nowhere"), target)


def test_checkpoint_state_roundtrip(tmp_path):
    from components.trainer import checkpoint

    strategy, steps = _setup(DEVICES[:1])
    for b in _dist(strategy, _batch(), 2):
        steps.gan_step(b)
    trackables = _state(steps)
    saved = trackables.snapshot()
    checkpoint.save(str(tmp_path), saved, {"step": 2})
    for b in _dist(strategy, _batch(seed=1), 2):
        steps.gan_step(b)  # move away
    arrays, meta = checkpoint.load(str(tmp_path), trackables)
    trackables.assign(arrays)
    assert meta == {"step": 2}
    now = trackables.snapshot()
    assert now.keys() == saved.keys() and int(steps.g_opt.iterations.numpy()) == 2
    for k in saved:
        np.testing.assert_array_equal(now[k], saved[k], err_msg=k)


def test_repeated_non_finite_steps_restore_the_last_good_state_then_stop():
    from components.trainer.loop import NonFiniteGuard, TrainingDiverged

    strategy, steps = _setup(DEVICES[:1])
    trackables = _state(steps, counters=False)
    for b in _dist(strategy, _batch(), 2):
        steps.gan_step(b)
    last_good = trackables.snapshot()
    poisoned = _batch()
    poisoned["hr"][:] = np.inf  # every step from here on is non-finite
    guard = NonFiniteGuard(max_in_row=3, max_restores=1)
    decisions = []
    for i, b in enumerate(_dist(strategy, poisoned, 3)):
        _, applied = steps.gan_step(b)
        decisions.append(guard.after_step(bool(applied), i))
    assert decisions == [False, False, True] and guard.restores == 1
    trackables.assign(last_good)
    now = trackables.snapshot()
    assert all(np.array_equal(now[k], last_good[k]) for k in last_good)
    assert int(steps.nonfinite_steps.numpy()) == 3
    # A finite step resets the count; a second run of 3 bad steps is one restore too many.
    assert guard.after_step(True, 3) is False and guard.in_row == 0
    guard.after_step(False, 4)
    guard.after_step(False, 5)
    with pytest.raises(TrainingDiverged, match="diverged at step 6"):
        guard.after_step(False, 6)


def test_cosine_learning_rate_schedule_per_phase():
    from components.config import TrainConfig
    from components.trainer.schedule import Schedule

    cfg = TrainConfig(lr_decay="cosine", pretrain_learning_rate=5e-4, g_learning_rate=1e-4)
    schedule = Schedule(steps_per_epoch=10, pretrain_steps=100, gan_steps=50)
    pre = [schedule.learning_rate(cfg, s, "pretrain") for s in range(101)]
    assert pre[0] == pytest.approx(5e-4) and pre[50] == pytest.approx(5e-4 * 0.505) and pre[100] == pytest.approx(5e-6)
    assert all(a >= b for a, b in zip(pre, pre[1:]))  # never increases within a phase
    assert schedule.learning_rate(cfg, 100) == pytest.approx(1e-4)  # each phase starts over
    cfg.lr_decay = "constant"
    assert {schedule.learning_rate(cfg, s) for s in (0, 60, 99)} == {5e-4}


def test_normalized_content_loss_does_not_scale_with_the_backbone():
    """Scaling VGG's last layer by 10 scales its features by 10 (ReLU is positively homogeneous): the plain
    feature MSE grows 100x, the normalized one stays; so does its place beside the adversarial term."""
    vgg = losses.build_vgg_features("block2_conv2", None)
    batch = _batch()
    hr, sr = batch["hr"], np.clip(batch["hr"] + np.random.default_rng(1).normal(0, 0.1, batch["hr"].shape), -1, 1)
    plain, norm = losses.vgg_mse(vgg, hr, sr).numpy(), losses.normalized_vgg_mse(vgg, hr, sr).numpy()
    last = vgg.get_layer("block2_conv2")
    kernel, bias = last.get_weights()
    last.set_weights([kernel * 10, bias * 10])
    plain10, norm10 = losses.vgg_mse(vgg, hr, sr).numpy(), losses.normalized_vgg_mse(vgg, hr, sr).numpy()
    np.testing.assert_allclose(plain10, plain * 100, rtol=1e-3)
    np.testing.assert_allclose(norm10, norm, rtol=1e-4)
    assert (norm > 0).all() and (norm <= 4).all()


def test_weighted_terms_add_up_to_the_generator_loss():
    strategy, steps = _setup(DEVICES[:1])
    steps.pixel_weight = 0.01  # a pixel term beside the content term (ESRGAN's recipe)
    metrics, applied = steps.gan_step(next(iter(_dist(strategy, _batch()))))
    assert bool(applied)
    total = sum(float(metrics[f"loss/g_{k}_weighted"]) for k in ("content", "adv", "pixel"))
    assert total == pytest.approx(float(metrics["loss/g_total"]), rel=1e-5)
    assert float(metrics["loss/g_pixel_weighted"]) > 0
