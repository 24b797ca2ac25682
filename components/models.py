"""SRGAN generator and discriminator (Ledig et al. 2017), Keras 3. Shared by trainer, evaluator, pusher.

Images enter and leave the generator in [-1, 1]. Widths, block counts and depth are arguments so
tests can build tiny models; the defaults are the reference sizes.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="srgan")
class PixelShuffle(keras.layers.Layer):
    """Sub-pixel convolution's periodic shuffle: [B, H, W, C*r*r] -> [B, H*r, W*r, C]."""

    def __init__(self, block_size: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.block_size = block_size

    def call(self, x):
        return tf.nn.depth_to_space(x, self.block_size)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        r = self.block_size
        return (b, None if h is None else h * r, None if w is None else w * r, c // (r * r))

    def get_config(self):
        return {**super().get_config(), "block_size": self.block_size}


@keras.saving.register_keras_serializable(package="srgan")
class BicubicUpsample(keras.layers.Layer):
    """x`scale` bicubic upsampling (used when the generator learns a residual over bicubic)."""

    def __init__(self, scale: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def call(self, x):
        shape = tf.shape(x)
        return tf.image.resize(x, [shape[1] * self.scale, shape[2] * self.scale], method="bicubic")

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


def _prelu(name):
    # Per-channel slopes shared over space: the layer works for any input size.
    return keras.layers.PReLU(shared_axes=[1, 2], name=name)


def build_generator(width: int = 64, num_blocks: int = 16, scale: int = 4,
                    residual_over_bicubic: bool = False, name: str = "generator") -> keras.Model:
    """The SRGAN/SRResNet generator; fully convolutional (any input size, output `scale`x).

    Reference output: 9x9 conv -> tanh. With `residual_over_bicubic` the output is instead
    bicubic(x) + conv (no tanh), which starts at bicubic quality and learns faster on small budgets.
    """
    if scale < 2 or scale & (scale - 1):
        raise ValueError(f"scale must be a power of two, got {scale}")
    inputs = keras.Input((None, None, 3), name="lr")
    x = keras.layers.Conv2D(width, 9, padding="same", name="head_conv")(inputs)
    x = skip = _prelu("head_prelu")(x)
    for i in range(num_blocks):
        y = keras.layers.Conv2D(width, 3, padding="same", name=f"res{i}_conv1")(x)
        y = _prelu(f"res{i}_prelu")(y)
        y = keras.layers.Conv2D(width, 3, padding="same", name=f"res{i}_conv2")(y)
        x = keras.layers.Add(name=f"res{i}_add")([x, y])
    x = keras.layers.Conv2D(width, 3, padding="same", name="body_conv")(x)
    x = keras.layers.Add(name="long_skip")([x, skip])
    for i in range(int(math.log2(scale))):
        x = keras.layers.Conv2D(width * 4, 3, padding="same", name=f"up{i}_conv")(x)
        x = PixelShuffle(2, name=f"up{i}_shuffle")(x)
        x = _prelu(f"up{i}_prelu")(x)
    x = keras.layers.Conv2D(3, 9, padding="same", name="tail_conv")(x)
    if residual_over_bicubic:
        base = BicubicUpsample(scale, name="bicubic")(inputs)
        x = keras.layers.Add(name="residual_add")([base, keras.layers.Activation("linear", dtype="float32")(x)])
        outputs = keras.layers.Activation("linear", dtype="float32", name="sr")(x)
    else:
        outputs = keras.layers.Activation("tanh", dtype="float32", name="sr")(x)
    return keras.Model(inputs, outputs, name=name)


def build_discriminator(hr_size: int = 128, width: int = 64, depth: int = 8, batchnorm: bool = False,
                        dense: int = 1024, name: str = "discriminator") -> keras.Model:
    """`depth` 3x3 convs (width doubling every 2 layers, stride 2 on every second) + dense + logit."""
    if depth < 2 or depth % 2:
        raise ValueError(f"discriminator depth must be an even number >= 2, got {depth}")
    inputs = keras.Input((hr_size, hr_size, 3), name="image")
    x = inputs
    for i in range(depth):
        filters = width * 2 ** (i // 2)
        x = keras.layers.Conv2D(filters, 3, strides=1 + i % 2, padding="same", name=f"conv{i}")(x)
        if batchnorm and i > 0:
            x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.LeakyReLU(0.2, name=f"lrelu{i}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(dense, name="dense")(x)
    x = keras.layers.LeakyReLU(0.2, name="dense_lrelu")(x)
    logits = keras.layers.Dense(1, dtype="float32", name="logit")(x)
    return keras.Model(inputs, logits, name=name)


def to_unit(images_uint8):
    """uint8 [0, 255] -> float32 [-1, 1] (the models' range)."""
    return tf.cast(images_uint8, tf.float32) / 127.5 - 1.0


def to_uint8(images_unit):
    """float [-1, 1] -> uint8, rounded and clipped."""
    return tf.cast(tf.clip_by_value(tf.round((tf.cast(images_unit, tf.float32) + 1.0) * 127.5), 0, 255), tf.uint8)
