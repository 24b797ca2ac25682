"""Checkpoints keyed by role + variable path + slot: reordered variables restore right, missing or extra
keys are errors naming them, and the positional format of before 2026-11-25 still restores."""

from __future__ import annotations

import logging
import os

import keras
import numpy as np
import pytest

from components import models
from components.trainer import checkpoint

FIXTURE_RUN = os.path.join(os.path.dirname(__file__), "fixtures", "artifacts-2026-11-24", "runs",
                           "retrain-ds-8ffdbd188f96d1e7")


def _state(reverse_optimizer_slots=False, generator_width=8, disc_width=8, hr=32, depth=2, dense=16):
    """Models + Adams with slots; `reverse_optimizer_slots` builds the optimizers' slots in the other order
    (what a Keras upgrade or another build order would do)."""
    g = models.build_generator(generator_width, 1)
    d = models.build_discriminator(hr, disc_width, depth, dense=dense)
    opts = {}
    for role, model in (("g_optimizer", g), ("d_optimizer", d)):
        opt = keras.optimizers.Adam(1e-3)
        variables = list(model.trainable_variables)
        opt.build(variables[::-1] if reverse_optimizer_slots else variables)
        opts[role] = (opt, model)
    counter = keras.Variable(0, dtype="int64", name="nonfinite_steps")
    return checkpoint.TrainingState(models={"generator": g, "discriminator": d}, optimizers=opts,
                                    counters={"nonfinite_steps": counter})


def _randomize(state, seed=0):
    rng = np.random.default_rng(seed)
    for key, var in state.variables().items():
        if key.endswith("/iteration") or key.startswith("counters/"):
            var.assign(np.asarray(rng.integers(1, 100), dtype=var.dtype))
        else:
            var.assign(rng.normal(size=var.shape).astype(var.dtype))


def test_keys_name_role_variable_path_and_slot():
    keys = set(_state().variables())
    assert "generator/head_conv/kernel" in keys and "discriminator/logit/bias" in keys
    assert {"g_optimizer/head_conv/kernel/momentum", "g_optimizer/head_conv/kernel/velocity",
            "g_optimizer/iteration", "g_optimizer/learning_rate", "counters/nonfinite_steps"} <= keys
    assert not any("adam" in k for k in keys)  # Keras's generated optimizer names are in no key


def test_reordered_slots_restore_to_the_right_variables(tmp_path):
    source = _state()
    _randomize(source)
    saved = source.snapshot()
    checkpoint.save(str(tmp_path), saved, {"step": 7})
    target = _state(reverse_optimizer_slots=True)
    # Not vacuous: by position, the same-shaped slots of the two states differ in order.
    src_vars, dst_vars = list(source.optimizers["g_optimizer"][0].variables), list(target.optimizers["g_optimizer"][0].variables)
    src_names = [v.name for v in src_vars]
    dst_names = [v.name for v in dst_vars]
    assert src_names != dst_names and sorted(src_names) == sorted(dst_names)
    arrays, meta = checkpoint.load(str(tmp_path), target)
    target.assign(arrays)
    assert meta == {"step": 7}
    restored = target.snapshot()
    for key in saved:
        np.testing.assert_array_equal(restored[key], saved[key], err_msg=key)


def test_missing_and_extra_keys_are_named():
    state = _state()
    arrays = state.snapshot()
    missing = dict(arrays)
    del missing["g_optimizer/res0_conv1/kernel/velocity"]
    with pytest.raises(checkpoint.CheckpointMismatch, match="missing g_optimizer/res0_conv1/kernel/velocity"):
        state.assign(missing)
    extra = {**arrays, "generator/res9_conv1/kernel": np.zeros((3, 3, 8, 8), np.float32)}
    with pytest.raises(checkpoint.CheckpointMismatch, match="not in this run generator/res9_conv1/kernel"):
        state.assign(extra)
    other = _state(generator_width=16).snapshot()  # same keys, other shapes
    with pytest.raises(checkpoint.CheckpointMismatch, match="generator/head_conv/kernel: checkpoint shape"):
        state.assign(other)


def test_a_checkpoint_of_the_positional_format_restores_with_a_warning(caplog):
    """A real checkpoint written by the code of 2026-11-24 (tiny quickstart run: generator 8x1, discriminator
    width 4, depth 8, dense 8): restored by position, it holds the run's final generator."""
    import json

    cfg = json.load(open(os.path.join(FIXTURE_RUN, "run.json")))["config"]
    g = models.build_generator(cfg["generator_width"], cfg["generator_blocks"], 4, cfg["residual_over_bicubic"])
    d = models.build_discriminator(128, cfg["discriminator_width"], cfg["discriminator_depth"], dense=cfg["discriminator_dense"])
    opts = {}
    for role, model in (("g_optimizer", g), ("d_optimizer", d)):
        opt = keras.optimizers.Adam(1e-4)
        opt.build(model.trainable_variables)
        opts[role] = (opt, model)
    state = checkpoint.TrainingState(
        models={"generator": g, "discriminator": d}, optimizers=opts,
        counters={"nonfinite_steps": keras.Variable(0, dtype="int64"), "loss_scale": keras.Variable(1.0)})
    with caplog.at_level(logging.WARNING, logger="trainer"):
        arrays, meta = checkpoint.load(os.path.join(FIXTURE_RUN, "checkpoint_00000008"), state)
    assert "positional format" in caplog.text
    state.assign(arrays)
    assert meta["step"] == 8 and int(opts["g_optimizer"][0].iterations.numpy()) == 8
    final = keras.saving.load_model(os.path.join(FIXTURE_RUN, "generator.keras"), compile=False)
    for a, b in zip(final.get_weights(), g.get_weights()):
        np.testing.assert_array_equal(a, b)
    # The wrong model config for that checkpoint: a clear error that says how to proceed.
    wrong = _state()
    with pytest.raises(checkpoint.CheckpointMismatch, match="cannot be restored here.*warm_start"):
        checkpoint.load(os.path.join(FIXTURE_RUN, "checkpoint_00000008"), wrong)
