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
    ("degradation", "fancy", "'degradation' must be one of bicubic, realistic"),
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
