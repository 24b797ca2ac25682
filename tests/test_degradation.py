"""The shared degradation against an independent numpy port of MATLAB's imresize (bicubic, antialiased)."""

import math
import re

import numpy as np
import pytest

from components import sample_data
from components.degradation import degrade
from components.imresize import imresize_uint8 as matlab_imresize


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee"])
def test_degrade_matches_matlab_imresize_away_from_border(name):
    img = sample_data.photo(name)
    h, w = (img.shape[0] // 4) * 4, (img.shape[1] // 4) * 4
    img = img[:h, :w]
    ours = degrade(img).numpy().astype(int)
    ref = matlab_imresize(img, 0.25).astype(int)
    assert ours.shape == ref.shape == (h // 4, w // 4, 3)
    inner = np.abs(ours - ref)[2:-2, 2:-2]
    assert inner.max() <= 1, f"max difference {inner.max()} gray levels away from the border"
    # Not vacuous: the images do change a lot under degradation, and most pixels agree exactly.
    assert (inner == 0).mean() > 0.9


def test_reference_port_is_not_plain_subsampling():
    """Guards the test itself: the port must differ from naive decimation on a real photo."""
    img = sample_data.photo("astronaut")
    assert np.abs(matlab_imresize(img, 0.25).astype(int) - img[1::4, 1::4].astype(int)).mean() > 2


def test_degrade_batched_and_dtype():
    batch = np.stack([sample_data.photo("astronaut")[:128, :128], sample_data.photo("coffee")[:128, :128]])
    lr = degrade(batch).numpy()
    assert lr.shape == (2, 32, 32, 3) and lr.dtype == np.uint8
    np.testing.assert_array_equal(lr[1], degrade(batch[1]).numpy())
    const = np.full((16, 16, 3), 77, np.uint8)
    np.testing.assert_array_equal(degrade(const).numpy(), np.full((4, 4, 3), 77, np.uint8))


def test_degrade_rejects_bad_input():
    with pytest.raises(TypeError, match="uint8"):
        degrade(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="multiple of the scale"):
        degrade(np.zeros((10, 8, 3), np.uint8))


# ----------------------------------------------------------------------------- realistic degradation

import tensorflow as tf  # noqa: E402

from components import config  # noqa: E402
from components import degradation  # noqa: E402

PARAMS = config.RealisticDegradation()


def _delta(size=41):
    img = np.zeros((size, size, 3), np.float32)
    img[size // 2, size // 2] = 1.0
    return img


@pytest.mark.parametrize("kernel", [
    lambda: degradation.shaped_kernel(1, 21, 3.0, 1.0, 0.6, 1.0),           # anisotropic Gaussian, rotated
    lambda: degradation.shaped_kernel(3, 15, 2.5, 0.8, -1.1, 0.6),          # generalized anisotropic
    lambda: degradation.shaped_kernel(4, 11, 1.5, 1.5, 0.0, 2.0),           # plateau isotropic
    lambda: degradation.sinc_kernel(math.pi / 4, 13),
], ids=["aniso", "generalized_aniso", "plateau_iso", "sinc"])
def test_blur_of_a_delta_is_the_kernel(kernel):
    k = kernel().numpy()
    assert k.shape == (21, 21) and k.sum() == pytest.approx(1.0, abs=1e-5)
    out = degradation.blur(tf.constant(_delta()), tf.constant(k)).numpy()
    for c in range(3):
        np.testing.assert_allclose(out[10:31, 10:31, c], k, atol=1e-6)
    outside = out.copy()
    outside[10:31, 10:31] = 0
    assert np.abs(outside).max() < 1e-7  # nothing outside the kernel's footprint


def test_kernels_have_the_drawn_size_and_shape():
    k = degradation.shaped_kernel(1, 9, 3.0, 1.0, 0.6, 1.0).numpy()
    assert (k[:6] == 0).all() and (k[:, :6] == 0).all() and (k[6:15, 6:15] > 0).all()
    assert not np.allclose(k, k.T)  # anisotropic and rotated: the delta test above is not vacuous
    iso = degradation.shaped_kernel(0, 21, 2.0, 0.5, 1.0, 1.0).numpy()  # iso ignores sigma_y and theta
    np.testing.assert_allclose(iso, iso.T, atol=1e-7)
    xs = np.arange(-10, 11)
    ref = np.exp(-(xs[None] ** 2 + xs[:, None] ** 2) / (2 * 2.0 ** 2))
    np.testing.assert_allclose(iso, ref / ref.sum(), atol=1e-7)


def test_blur_pads_by_reflection_even_past_a_tiny_image():
    img = tf.random.stateless_uniform([3, 5, 3], [0, 1])
    out = degradation.blur(img, degradation.shaped_kernel(0, 21, 3.0, 3.0, 0.0, 1.0))
    assert out.shape == (3, 5, 3) and np.isfinite(out.numpy()).all()
    pulse = np.zeros((21, 21), np.float32)
    pulse[10, 10] = 1
    np.testing.assert_allclose(degradation.blur(img, tf.constant(pulse)).numpy(), img.numpy(), atol=1e-6)


def test_jpeg_at_quality_100_is_nearly_identity():
    hr = sample_data.photo("astronaut")[100:228, 150:278].astype(np.float32) / 255
    gray = np.repeat(hr.mean(-1, keepdims=True), 3, -1)  # no chroma: 4:2:0 subsampling loses nothing
    err = np.abs(degradation.jpeg(tf.constant(gray), 100).numpy() - gray) * 255
    assert err.mean() < 0.6 and err.max() <= 4, (err.mean(), err.max())
    err = np.abs(degradation.jpeg(tf.constant(hr), 100).numpy() - hr) * 255
    assert err.mean() < 1.3, err.mean()  # colour: chroma subsampling, as cv2 and PIL (1.13 levels here)
    low = np.abs(degradation.jpeg(tf.constant(hr), 10).numpy() - hr) * 255
    assert low.mean() > 3 * err.mean()


def test_noise_with_sigma_or_scale_0_is_identity():
    img = tf.constant(sample_data.photo("coffee")[:64, :64].astype(np.float32) / 255)
    mid = tf.fill([64, 64, 3], 0.5)  # far from the clipping bounds
    for gray in (False, True):
        np.testing.assert_array_equal(degradation.add_gaussian_noise(img, 0.0, gray, [1, 2]).numpy(), img.numpy())
        np.testing.assert_array_equal(degradation.add_poisson_noise(img, 0.0, gray, [1, 2]).numpy(), img.numpy())
    gray = degradation.add_gaussian_noise(mid, 10.0, True, [1, 2]).numpy() - 0.5
    assert np.array_equal(gray[..., 0], gray[..., 2]) and gray.std() * 255 == pytest.approx(10, rel=0.1)
    colour = degradation.add_gaussian_noise(mid, 10.0, False, [1, 2]).numpy() - 0.5
    assert not np.allclose(colour[..., 0], colour[..., 2])


@pytest.mark.parametrize("static", [True, False])
def test_shapes_dtypes_and_range(static):
    hr = tf.constant(sample_data.photo("chelsea")[:96, :128].astype(np.float32) / 255)
    if static:
        lr = degradation.realistic_degrade(hr, tf.constant([3, 4], tf.int64), PARAMS, 4)
        assert lr.shape == (24, 32, 3)
    else:
        fn = tf.function(lambda x, s: degradation.realistic_degrade(x, s, PARAMS, 4),
                         input_signature=[tf.TensorSpec([None, None, 3], tf.float32), tf.TensorSpec([2], tf.int32)])
        assert fn.get_concrete_function().structured_outputs.shape.as_list() == [None, None, 3]
        lr = fn(hr, tf.constant([3, 4], tf.int32))
        assert lr.shape == (24, 32, 3)
    v = lr.numpy()
    assert lr.dtype == tf.float32 and v.min() >= 0 and v.max() <= 1
    np.testing.assert_allclose(v * 255, np.round(v * 255), atol=1e-4)  # 1/255 steps


def test_same_seed_same_lr_other_seed_other_lr():
    hr = tf.constant(sample_data.photo("astronaut")[:64, :64].astype(np.float32) / 255)
    a, b, c = (degradation.realistic_degrade(hr, tf.constant(s, tf.int64), PARAMS).numpy()
               for s in ([7, 1], [7, 1], [7, 2]))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 1 / 255
    fixed = degradation.degrade_fixed(sample_data.photo("astronaut")[:64, :64], 5, PARAMS)
    assert fixed.dtype == np.uint8 and fixed.shape == (16, 16, 3)
    np.testing.assert_array_equal(fixed, degradation.degrade_fixed(sample_data.photo("astronaut")[:64, :64], 5, PARAMS))


def test_runs_inside_a_tf_data_map_and_is_deterministic():
    crops = np.stack([sample_data.photo("astronaut")[i * 32:i * 32 + 64, :64] for i in range(4)])

    def pipeline():
        ds = tf.data.Dataset.from_tensor_slices(crops).enumerate()
        ds = ds.map(lambda i, hr: degradation.realistic_degrade(tf.cast(hr, tf.float32) / 255, tf.stack([tf.constant(9, tf.int64), i]),
                                                                 PARAMS, 4), num_parallel_calls=2, deterministic=True)
        return np.stack(list(ds.as_numpy_iterator()))
    first, again = pipeline(), pipeline()
    assert first.shape == (4, 16, 16, 3)
    np.testing.assert_array_equal(first, again)


@pytest.mark.parametrize("key,value,message", [
    ("blur_sigma", [3.0, 0.2], "'blur_sigma' must be [min, max] with min <= max"),
    ("second_blur_sigma", [-0.5, 1.0], "'second_blur_sigma' must lie within (0, inf]"),
    ("jpeg_range", [0, 95], "'jpeg_range' must lie within [1, 100]"),
    ("second_jpeg_range", [30, 101], "'second_jpeg_range' must lie within [1, 100]"),
    ("gray_noise_prob", 1.5, "'gray_noise_prob' is a probability"),
    ("blur_sigma", "nan,3", "'blur_sigma' must be finite numbers"),
    ("resize_range", [0.15, float("inf")], "'resize_range' must be finite numbers"),
    ("resize_prob", [0.5, 0.7, -0.2], "'resize_prob' must be 3 probabilities"),
    ("kernel_prob", [0.5, 0.5], "'kernel_prob' must be 6 probabilities"),
    ("noise_range", [1.0], "'noise_range' must be [min, max]"),
    ("noise_range", "1,x", "'noise_range' must be comma-separated numbers"),
    ("noise_range", [1, "x"], "'noise_range' must be a list of numbers"),
    ("noise_range", 3, "'noise_range' must be a list of numbers"),
    ("degradation", "fancy", "'degradation' must be one of bicubic, realistic, mixed"),
    ("mix_prob", [0.5, 0.6, 0.1], "'mix_prob' must be 3 probabilities within [0, 1] summing to 1"),
    ("mix_prob", [0.5, 0.5], "'mix_prob' must be 3 probabilities"),
    ("mix_prob", [1.2, -0.1, -0.1], "'mix_prob' must be 3 probabilities"),
    ("mild_blur_sigma", [0.0, 1.5], "'mild_blur_sigma' must lie within (0, inf]"),
    ("mild_blur_sigma", [1.5, 0.5], "'mild_blur_sigma' must be [min, max] with min <= max"),
    ("mild_noise_range", [-1, 5], "'mild_noise_range' must lie within [0, inf]"),
    ("mild_noise_range", "0,nan", "'mild_noise_range' must be finite numbers"),
    ("mild_jpeg_range", [60, 101], "'mild_jpeg_range' must lie within [1, 100]"),
    ("mild_jpeg_range", [0, 95], "'mild_jpeg_range' must lie within [1, 100]"),
    ("mild_blur_prob", 1.5, "'mild_blur_prob' is a probability"),
])
def test_bad_degradation_config_names_the_key(key, value, message):
    with pytest.raises(config.ConfigError, match=re.escape(message)):
        config.set_value(config.Config(), key, value)


def test_degradation_config_from_yaml_and_flags(tmp_path):
    import argparse

    path = tmp_path / "c.yaml"
    path.write_text("train:\n  degradation: realistic\nrealistic_degradation:\n  blur_sigma: [0.5, 2]\n"
                    "  second_jpeg_range: [50, 90]\n")
    keys = ["degradation", "blur_sigma", "noise_range"]
    parser = argparse.ArgumentParser()
    config.add_flags(parser, keys)
    cfg = config.from_args(parser.parse_args(["--config", str(path), "--noise-range", "0,5"]), keys)
    r = cfg.realistic_degradation
    assert cfg.train.degradation == "realistic"
    assert r.blur_sigma == [0.5, 2.0] and r.second_jpeg_range == [50.0, 90.0] and r.noise_range == [0.0, 5.0]
    assert config.Config().realistic_degradation.resize_range == [0.15, 1.5]  # Real-ESRGAN's default
    path.write_text("realistic_degradation:\n  blur_sigmaa: [0.5, 2]\n")
    with pytest.raises(config.ConfigError, match="unknown config key realistic_degradation.blur_sigmaa"):
        config.load(str(path))


# ----------------------------------------------------------------------------- mixed degradation

MIXED = config.MixedDegradation()


def test_mixed_config_from_yaml_and_flags(tmp_path):
    import argparse
    import importlib

    path = tmp_path / "c.yaml"
    path.write_text("train:\n  degradation: mixed\nmixed_degradation:\n  mix_prob: [0.2, 0.5, 0.3]\n"
                    "  mild_jpeg_range: [70, 90]\nrealistic_degradation:\n  second_jpeg_range: [50, 90]\n")
    keys = ["degradation", "mix_prob", "mild_noise_range"]
    parser = argparse.ArgumentParser()
    config.add_flags(parser, keys)
    cfg = config.from_args(parser.parse_args(["--config", str(path), "--mild-noise-range", "1,3"]), keys)
    m = cfg.mixed_degradation
    assert cfg.train.degradation == "mixed" and m.mix_prob == [0.2, 0.5, 0.3] and m.mild_jpeg_range == [70.0, 90.0]
    assert m.mild_noise_range == [1.0, 3.0] and cfg.realistic_degradation.second_jpeg_range == [50.0, 90.0]
    assert (MIXED.mix_prob, MIXED.mild_blur_sigma, MIXED.mild_noise_range, MIXED.mild_jpeg_range, MIXED.mild_blur_prob) \
        == ([0.15, 0.6, 0.25], [0.5, 1.5], [0.0, 5.0], [60.0, 95.0], 1.0)
    path.write_text("mixed_degradation:\n  mix_probs: [0.2, 0.5, 0.3]\n")
    with pytest.raises(config.ConfigError, match="unknown config key mixed_degradation.mix_probs"):
        config.load(str(path))
    path.write_text("mixed_degradation:\n  mix_prob: [0.2, 0.5, 0.5]\n")
    with pytest.raises(config.ConfigError, match="'mix_prob' must be 3 probabilities"):
        config.load(str(path))
    for job in ("train", "pipeline"):  # the jobs take the section's keys as flags
        args = importlib.import_module(f"srgan_jobs.{job}").build_parser().parse_known_args(
            ["--mix-prob", "0,1,0", "--mild-blur-sigma", "1,2"])[0]
        assert args.mix_prob == "0,1,0" and args.mild_blur_sigma == "1,2", job


def _choices(seed, epoch, mix_prob, n=600):
    from components.trainer import input_fn

    ds = tf.data.Dataset.range(n).map(lambda i: input_fn.mixed_choice(seed, epoch, i, mix_prob))
    return np.fromiter(ds.as_numpy_iterator(), np.int64, n)


@pytest.mark.parametrize("mix_prob", [[0.3, 0.4, 0.3], [0.1, 0.2, 0.7]])
def test_mixed_shares_stay_within_binomial_bounds(mix_prob):
    """600 draws by the function the input pipeline uses: each share within 4 standard deviations of its
    probability (the second set tells a draw that ignores mix_prob from one that follows it)."""
    n = 600
    choices = _choices(11, 0, mix_prob, n)
    assert set(np.unique(choices)) <= {0, 1, 2}
    for k, p in enumerate(mix_prob):
        share, sd = (choices == k).mean(), math.sqrt(p * (1 - p) / n)
        assert abs(share - p) <= 4 * sd, (degradation.MIX_CHOICES[k], share, p)
    np.testing.assert_array_equal(choices, _choices(11, 0, mix_prob, n))  # a pure function of (seed, epoch, i)
    assert not np.array_equal(choices, _choices(11, 1, mix_prob, n))     # another epoch draws again
    assert not np.array_equal(choices, _choices(12, 0, mix_prob, n))


def test_mixed_zero_probabilities_are_never_drawn():
    for mix_prob, only in (([1, 0, 0], {0}), ([0, 1, 0], {1}), ([0, 0, 1], {2}), ([0.5, 0, 0.5], {0, 2})):
        assert set(np.unique(_choices(3, 0, mix_prob, 200))) == only, mix_prob


def test_mild_degrade_shapes_determinism_and_strength():
    hr = tf.constant(sample_data.photo("astronaut")[:96, :128].astype(np.float32) / 255)
    lr = degradation.mild_degrade(hr, tf.constant([3, 4], tf.int64), MIXED, 4)
    v = lr.numpy()
    assert lr.shape == (24, 32, 3) and lr.dtype == tf.float32 and v.min() >= 0 and v.max() <= 1
    np.testing.assert_allclose(v * 255, np.round(v * 255), atol=1e-4)  # 1/255 steps
    np.testing.assert_array_equal(v, degradation.mild_degrade(hr, tf.constant([3, 4], tf.int64), MIXED, 4).numpy())
    assert not np.array_equal(v, degradation.mild_degrade(hr, tf.constant([3, 5], tf.int64), MIXED, 4).numpy())
    fn = tf.function(lambda x, s: degradation.mild_degrade(x, s, MIXED, 4),
                     input_signature=[tf.TensorSpec([None, None, 3], tf.float32), tf.TensorSpec([2], tf.int64)])
    assert fn.get_concrete_function().structured_outputs.shape.as_list() == [None, None, 3]
    with pytest.raises(ValueError, match="multiple of the scale"):
        degradation.mild_degrade(hr[:94], [1, 2], MIXED, 4)

    clean = degrade(tf.cast(hr * 255, tf.uint8)).numpy().astype(float)

    def psnr_vs_clean(params, n=8):
        mse = [np.mean((degradation.mild_degrade(hr, tf.constant([7, k], tf.int64), params, 4).numpy() * 255
                        - clean) ** 2) for k in range(n)]
        return 10 * np.log10(255 ** 2 / np.mean(mse))
    harsh = config.MixedDegradation(mild_blur_sigma=[2.5, 3.0], mild_noise_range=[15, 20], mild_jpeg_range=[10, 20])
    assert psnr_vs_clean(MIXED) > psnr_vs_clean(harsh) + 3  # the ranges are what is drawn from


def _mixed_batches(uri, **kw):
    from components.models import to_uint8
    from components.trainer import input_fn

    args = {"batch_size": 4, "epoch": 0, "seed": 5, "steps": 4, "crop_size": 64, "augment_images": True,
            "shuffle_buffer": 0, "degradation": "mixed", **kw}
    return [(to_uint8(b["hr"]).numpy(), to_uint8(b["lr"]).numpy()) for b in input_fn.make_dataset(uri, **args)]


def _psnr(a, b):
    mse = ((a.astype(float) - b.astype(float)) ** 2).reshape(len(a), -1).mean(1)
    return 10 * np.log10(255 ** 2 / np.maximum(mse, 1e-10))


def test_make_dataset_mixed_shapes_dtypes_and_resume(tiny_dataset):
    from components import dataset
    from components.trainer import input_fn

    uri = dataset.dataset_uri(*tiny_dataset)
    for crop, lr_side in ((64, 16), (None, 32)):  # a random aligned crop; the stored 128 records
        batches = list(input_fn.make_dataset(uri, batch_size=4, epoch=0, seed=5, steps=2, crop_size=crop,
                                             degradation="mixed", augment_images=crop is None))
        assert len(batches) == 2
        for b in batches:
            assert b["hr"].shape == (4, 4 * lr_side, 4 * lr_side, 3) and b["lr"].shape == (4, lr_side, lr_side, 3)
            assert b["hr"].dtype == b["lr"].dtype == tf.float32
            assert -1.0 <= float(tf.reduce_min(b["lr"])) and float(tf.reduce_max(b["lr"])) <= 1.0
    full, again, resumed = _mixed_batches(uri), _mixed_batches(uri), _mixed_batches(uri, skip_steps=1)
    for (hr, lr), (hr2, lr2) in zip(full, again):  # the same seed: the same bytes
        np.testing.assert_array_equal(hr, hr2)
        np.testing.assert_array_equal(lr, lr2)
    for (hr, lr), (hr2, lr2) in zip(full[1:], resumed):  # a resumed run sees the same choices and LR
        np.testing.assert_array_equal(hr, hr2)
        np.testing.assert_array_equal(lr, lr2)
    assert not np.array_equal(np.stack([lr for _, lr in full]), np.stack([lr for _, lr in _mixed_batches(uri, seed=6)]))


def test_make_dataset_mixed_is_clean_mild_or_realistic_as_drawn(tiny_dataset):
    """Each element's LR is bicubic's (the stored LR, cropped and augmented the same way), the mild one or
    realistic's, as mixed_choice(seed, epoch, position) says; mix_prob [1, 0, 0] and [0, 0, 1] are exactly
    bicubic and realistic; [0, 1, 0] is milder than realistic and not clean."""
    from components import dataset
    from components.trainer import input_fn

    uri = dataset.dataset_uri(*tiny_dataset)
    kw = {"steps": 8}

    def lrs(**more):
        return np.concatenate([lr for _, lr in _mixed_batches(uri, **kw, **more)])
    clean, realistic = lrs(degradation="bicubic"), lrs(degradation="realistic")
    np.testing.assert_array_equal(lrs(mixed=config.MixedDegradation(mix_prob=[1.0, 0.0, 0.0])), clean)
    np.testing.assert_array_equal(lrs(mixed=config.MixedDegradation(mix_prob=[0.0, 0.0, 1.0])), realistic)
    mild = lrs(mixed=config.MixedDegradation(mix_prob=[0.0, 1.0, 0.0]))
    assert not any(np.array_equal(a, b) for a, b in zip(mild, clean))
    assert not any(np.array_equal(a, b) for a, b in zip(mild, realistic))
    # Measured on this dataset (32 crops of 64): mild 34.5 dB from clean on average, realistic 24.9 dB.
    mild_db, realistic_db = _psnr(mild, clean).mean(), _psnr(realistic, clean).mean()
    assert 30.0 < mild_db < 40.0 and realistic_db < mild_db - 5.0, (mild_db, realistic_db)

    mixed = lrs()  # the default shares, element by element against what the draw says
    drawn = _choices(5, 0, MIXED.mix_prob, len(mixed))
    got = np.array([0 if np.array_equal(m, c) else 2 if np.array_equal(m, r) else 1
                    for m, c, r in zip(mixed, clean, realistic)])
    np.testing.assert_array_equal(got, drawn)
    assert set(drawn) == {0, 1, 2}  # all three occur: the comparison is not vacuous
    np.testing.assert_array_equal(mixed[drawn == 1], mild[drawn == 1])


def test_mixed_settings_reach_workers_and_run_json():
    import types

    from components.trainer.launcher import degradation_record
    from components.trainer.loop import WorkerLoop, worker_config
    from components.trainer.schedule import Schedule

    cfg = config.Config()
    cfg.mixed_degradation.mix_prob = [0.1, 0.1, 0.8]
    assert degradation_record(cfg) == {}
    cfg.train.degradation = "realistic"
    assert list(degradation_record(cfg)) == ["realistic_degradation"]
    cfg.train.degradation = "mixed"
    record = degradation_record(cfg)
    assert record["mixed_degradation"]["mix_prob"] == [0.1, 0.1, 0.8]
    assert record["realistic_degradation"]["jpeg_range"] == [30.0, 95.0]  # mixed uses the realistic ranges too
    wc = worker_config(cfg.train, Schedule(steps_per_epoch=5, pretrain_steps=5, gan_steps=0), "d", "r", None,
                       cfg.realistic_degradation, cfg.mixed_degradation)
    loop = WorkerLoop(wc, types.SimpleNamespace(rank=0, world=1))
    assert loop.mixed == cfg.mixed_degradation and loop.cfg.degradation == "mixed"
