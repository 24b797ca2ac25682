"""One config type: YAML in, flags of the same names override, bad keys and types are clear errors."""

import argparse

import pytest

from components import config


def _parse(argv, keys=("artifact_root", "crop_size", "eval_fraction", "force", "eval_count")):
    parser = argparse.ArgumentParser()
    config.add_flags(parser, list(keys))
    return config.from_args(parser.parse_args(argv), list(keys))


def test_defaults_are_the_reference_recipe():
    cfg = config.Config()
    assert cfg.preprocess.crop_size == 128 and cfg.preprocess.scale == 4
    assert cfg.preprocess.resize_short_side == 178


def test_yaml_then_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("artifact_root: s3://b/root\npreprocess:\n  crop_size: 96\n  eval_fraction: 0.2\n")
    cfg = _parse(["--config", str(path), "--eval-fraction", "0.5", "--force"])
    assert cfg.artifact_root == "s3://b/root"
    assert cfg.preprocess.crop_size == 96          # from YAML
    assert cfg.preprocess.eval_fraction == 0.5     # flag wins
    assert cfg.force is True
    assert cfg.preprocess.eval_count is None
    assert _parse(["--eval-count", "3"]).preprocess.eval_count == 3


@pytest.mark.parametrize("text,message", [
    ("crop_sise: 3\n", "unknown config key 'crop_sise'"),
    ("preprocess:\n  crop_sise: 3\n", "unknown config key preprocess.crop_sise"),
    ("preprocess:\n  crop_size: big\n", "'crop_size' must be an integer"),
    ("preprocess:\n  crop_size: 1.5\n", "'crop_size' must be an integer"),
    ("force: 'yes'\n", "'force' must be true or false"),
    ("preprocess: 3\n", "section 'preprocess' must be a mapping"),
    ("- a\n- b\n", "must be a mapping"),
    ("a: [\n", "not valid YAML"),
    ("retention:\n  keep_versions: 0\n", "'keep_versions' must lie within [1,"),
    ("retention:\n  keep_runs: -1\n", "'keep_runs' must lie within [0,"),
    ("retention:\n  keep_datasets: two\n", "'keep_datasets' must be an integer"),
    ("retention:\n  grace_minutes: -5\n", "'grace_minutes' must lie within [0,"),
    ("retention:\n  lease_minutes: 1\n", "'lease_minutes' must lie within [15,"),
    ("retention:\n  stale_run_hours: .nan\n", "'stale_run_hours' must be finite"),
    ("retention:\n  run_after_pipeline: 'yes'\n", "'run_after_pipeline' must be true or false"),
    ("retention:\n  keep_all: true\n", "unknown config key retention.keep_all"),
])
def test_bad_yaml_is_a_clear_error(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(config.ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        config.load(str(path))


def test_every_key_is_unique_and_settable():
    fields = config._scalar_fields()
    assert "crop_size" in fields and "artifact_root" in fields
    cfg = config.Config()
    config.set_value(cfg, "num_shards", 4)
    assert config.get_value(cfg, "num_shards") == 4 == cfg.preprocess.num_shards


def test_shipped_configs_load():
    import glob
    import os

    from tests.conftest import REPO
    files = sorted(glob.glob(os.path.join(REPO, "configs", "*.yaml")))
    assert len(files) >= 3
    for path in files:
        cfg = config.load(path)
        assert cfg.train.global_batch_size >= 1, path
    assert config.load(os.path.join(REPO, "configs", "retrain.yaml")).pipeline.warm_start_latest is True
    assert config.load(os.path.join(REPO, "configs", "quickstart.yaml")).pipeline.warm_start_latest is False
