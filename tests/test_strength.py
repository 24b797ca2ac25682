"""The degradation-strength knob (issue 24): a version pushed with a strength pair carries two generators of
one architecture; upscaling at strength 0 and 1 reproduces each exactly, between them blends the weights; the
SavedModel holds the default strength; a version without a pair, or a pair of two architectures, is one clear
error. Runs are made by hand (finished, blessed), no training: the edit loop's tier."""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest

from components import config, dataset, models, registry, upscaler
from tests.conftest import finished_run


def _sr(g, lr):
    return models.to_uint8(g(models.to_unit(lr[None]), training=False)).numpy()[0]


def test_a_strength_pair_blends_two_generators_and_reproduces_each_end(tiny_dataset, tmp_path):
    from components.pusher import push

    src_root, dataset_id = tiny_dataset
    root = str(tmp_path / "root")
    os.makedirs(os.path.join(root, "datasets"))
    os.symlink(dataset.dataset_uri(src_root, dataset_id), os.path.join(root, "datasets", dataset_id))
    clean = finished_run(root, dataset_id, "clean", seed=1)
    robust = finished_run(root, dataset_id, "robust", seed=2)
    cfg = config.Config(artifact_root=root, run_id="robust")
    cfg.push.model_name, cfg.push.strength_base_run, cfg.push.default_strength = "pair", "clean", 0.25
    card = push.run(cfg)
    assert card["strength"] == {"base_run": "clean", "default": 0.25, "file": registry.STRENGTH_BASE}
    assert registry.STRENGTH_BASE in card["files"]  # verified on pull like every other file
    model_root = registry.model_root(root, "pair")

    lr = np.random.default_rng(0).integers(0, 256, (12, 10, 3)).astype(np.uint8)
    for strength, want in ((0.0, _sr(clean, lr)), (1.0, _sr(robust, lr))):
        got = upscaler.load(model_root, strength=strength)(lr[None])[0]
        np.testing.assert_array_equal(got, want)
    half = keras.models.clone_model(robust)
    half.set_weights(models.blend_weights(robust, clean, 0.5))
    np.testing.assert_array_equal(upscaler.load(model_root, strength=0.5)(lr[None])[0], _sr(half, lr))
    assert np.abs(_sr(clean, lr).astype(int) - _sr(robust, lr)).max() > 2  # the ends differ: the checks could fail
    default = keras.models.clone_model(robust)
    default.set_weights(models.blend_weights(robust, clean, 0.25))
    saved = upscaler.load(model_root)(lr[None])[0]  # the SavedModel: the default strength
    assert np.abs(saved.astype(int) - _sr(default, lr)).max() <= 1

    # the service serves every version at its configured strength
    from components.serving import app, follower
    assert app.settings({"model_uri": model_root, "strength": 0.0})["strength"] == 0.0
    loaded = follower.load_and_warm(registry.resolve(model_root, 1), 1, card, 16, strength=0.0)
    np.testing.assert_array_equal(loaded.model(lr[None])[0], _sr(clean, lr))

    # a version without a pair, and a pair of two architectures: one clear error each
    cfg2 = config.Config(artifact_root=root, run_id="clean")
    cfg2.push.model_name = "single"
    push.run(cfg2)
    with pytest.raises(upscaler.UpscaleError, match="no strength pair"):
        upscaler.load(registry.model_root(root, "single"), strength=0.5)
    finished_run(root, dataset_id, "wide", seed=3, width=16)
    cfg3 = config.Config(artifact_root=root, run_id="robust", force=True)
    cfg3.push.model_name, cfg3.push.strength_base_run = "pair", "wide"
    with pytest.raises(push.PushError, match="strength_base_run wide.*not the architecture"):
        push.run(cfg3)
    assert registry.versions(model_root) == [1]


@pytest.mark.parametrize("key, value", [("strength", 1.5), ("default_strength", -0.1)])
def test_strength_keys_outside_zero_one_name_the_key(key, value):
    with pytest.raises(config.ConfigError, match=f"'{key}' must lie within \\[0, 1\\]"):
        config.set_value(config.Config(), key, value)
