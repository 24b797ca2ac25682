"""The SRGAN networks: pixel shuffle definition, shapes, reference sizes."""

import numpy as np
import pytest

from components import models


def periodic_shuffle(x, r):
    """Shi et al. 2016: PS(T)[x, y, c] = T[x // r, y // r, C * r * (y % r) + C * (x % r) + c] for HWC tensors
    with channel order (row offset, column offset, c) as TensorFlow's depth_to_space lays it out."""
    b, h, w, crr = x.shape
    c = crr // (r * r)
    out = np.empty((b, h * r, w * r, c), x.dtype)
    for i in range(h * r):
        for j in range(w * r):
            for k in range(c):
                out[:, i, j, k] = x[:, i // r, j // r, (i % r) * r * c + (j % r) * c + k]
    return out


@pytest.mark.parametrize("r,c", [(2, 3), (2, 64), (3, 2)])
def test_pixel_shuffle_is_the_periodic_shuffle(r, c):
    x = np.random.default_rng(r * c).normal(size=(2, 5, 7, c * r * r)).astype(np.float32)
    got = models.PixelShuffle(r)(x).numpy()
    np.testing.assert_array_equal(got, periodic_shuffle(x, r))


def test_generator_is_fully_convolutional_and_4x():
    g = models.build_generator(width=8, num_blocks=2)
    for h, w in [(8, 8), (13, 29), (32, 17)]:
        y = g(np.zeros((2, h, w, 3), np.float32)).numpy()
        assert y.shape == (2, 4 * h, 4 * w, 3)
        assert np.all(np.abs(y) <= 1.0)  # tanh output


def test_residual_generator_starts_near_bicubic():
    import tensorflow as tf

    g = models.build_generator(width=8, num_blocks=1, residual_over_bicubic=True)
    for v in g.get_layer("tail_conv").weights:
        v.assign(np.zeros(v.shape, np.float32))
    x = np.random.default_rng(0).uniform(-1, 1, (1, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(g(x).numpy(), tf.image.resize(x, [32, 32], "bicubic").numpy(), atol=1e-5)


def test_reference_sizes():
    g = models.build_generator()
    d = models.build_discriminator()
    assert len([l for l in g.layers if l.name.endswith("_add") and l.name.startswith("res")]) == 16
    convs = [l for l in d.layers if l.name.startswith("conv")]
    assert [l.filters for l in convs] == [64, 64, 128, 128, 256, 256, 512, 512]
    assert [l.strides[0] for l in convs] == [1, 2, 1, 2, 1, 2, 1, 2]
    assert not [l for l in d.layers if "bn" in l.name]  # BatchNorm is an option, off by default
    # Counted by hand from the paper's architecture (no BatchNorm, per-channel PReLU slopes):
    head = 9 * 9 * 3 * 64 + 64 + 64
    block = 2 * (3 * 3 * 64 * 64 + 64) + 64
    body = 3 * 3 * 64 * 64 + 64
    upsample = 3 * 3 * 64 * 256 + 256 + 64
    tail = 9 * 9 * 64 * 3 + 3
    assert g.count_params() == head + 16 * block + body + 2 * upsample + tail == 1_546_435
    assert d(np.zeros((1, 128, 128, 3), np.float32)).shape == (1, 1)


def test_range_conversions_roundtrip():
    x = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    np.testing.assert_array_equal(models.to_uint8(models.to_unit(x)).numpy(), x)
