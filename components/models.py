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


@keras.saving.register_keras_serializable(package="srgan")
class Resize2x(keras.layers.Layer):
    """x2 resize by `method` (nearest, bilinear) of an image of any size: Keras' UpSampling2D cannot resize
    bilinearly when height and width are unknown inside a tf.function (a serving signature)."""

    def __init__(self, method: str = "nearest", **kwargs):
        super().__init__(**kwargs)
        self.method = method

    def call(self, x):
        shape = tf.shape(x)
        return tf.cast(tf.image.resize(x, [shape[1] * 2, shape[2] * 2], method=self.method), x.dtype)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        return (b, None if h is None else 2 * h, None if w is None else 2 * w, c)

    def get_config(self):
        return {**super().get_config(), "method": self.method}


@keras.saving.register_keras_serializable(package="srgan")
class BinomialBlur(keras.layers.Layer):
    """A fixed [1, 2, 1] x [1, 2, 1] / 16 blur of each channel, edges mirrored. After a x2 pixel shuffle it
    zeroes the response at the period-2 frequencies, where the shuffle puts the image of the input's mean: the
    checkerboard of flat regions, whatever the sub-pixel filters learn (the fixed-hold remedy of Sugawara et al.
    2019, "Checkerboard artifacts free convolutional neural networks"; ICNR only starts there). Symmetric, so it
    moves nothing; the convolution after it can re-sharpen every frequency below the zeroed one."""

    def call(self, x):
        k = tf.constant([1.0, 2.0, 1.0]) / 4.0
        kernel = tf.tile((k[:, None] * k[None, :])[:, :, None, None], [1, 1, x.shape[-1], 1])
        x = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
        return tf.nn.depthwise_conv2d(x, tf.cast(kernel, x.dtype), [1, 1, 1, 1], "VALID")


@keras.saving.register_keras_serializable(package="srgan")
class ICNR(keras.initializers.Initializer):
    """ICNR (Aitken et al. 2017) for a convolution feeding a pixel shuffle of block `scale`: a kernel of
    C_out/scale^2 channels drawn by `base`, each repeated for every sub-pixel position, so that conv +
    shuffle starts as conv + nearest-neighbour upsampling: no checkerboard at initialisation."""

    def __init__(self, scale: int = 2, base="glorot_uniform"):
        self.scale, self.base = scale, keras.initializers.get(base)

    def __call__(self, shape, dtype=None):
        kh, kw, cin, cout = shape
        r2 = self.scale * self.scale
        if cout % r2:
            raise ValueError(f"ICNR: {cout} output channels are not a multiple of {r2}")
        sub = self.base((kh, kw, cin, cout // r2), dtype=dtype)
        # depth_to_space (DCR) reads channel (i*r + j) * C + c for sub-pixel (i, j): tile, do not repeat
        return tf.tile(sub, [1, 1, 1, r2])

    def get_config(self):
        return {"scale": self.scale, "base": keras.initializers.serialize(self.base)}


def _prelu(name):
    # Per-channel slopes shared over space: the layer works for any input size.
    return keras.layers.PReLU(shared_axes=[1, 2], name=name)


def build_generator(width: int = 64, num_blocks: int = 16, scale: int = 4,
                    residual_over_bicubic: bool = False, icnr: bool = False, upsample_filter: str = "none",
                    upsample: str = "pixel_shuffle", tail_init: str = "glorot_uniform",
                    name: str = "generator") -> keras.Model:
    """The SRGAN/SRResNet generator; fully convolutional (any input size, output `scale`x).

    Reference output: 9x9 conv -> tanh. With `residual_over_bicubic` the output is instead
    bicubic(x) + conv (no tanh), which starts at bicubic quality and learns faster on small budgets.
    `icnr`: the sub-pixel convolutions start from ICNR (no checkerboard at step 0); else Glorot uniform.
    `upsample_filter`: "binomial" puts a fixed BinomialBlur after each shuffle (no checkerboard in flat regions,
    at any step); "none": the seed's plain pixel shuffle.
    `upsample`: "pixel_shuffle" (the seed's: conv to 4x channels, then shuffle), "nearest" (ESRGAN's RRDBNet:
    nearest-neighbour x2, then conv) or "bilinear" (bilinear x2, then conv: resize-convolution, Odena et al.
    2016). The same FLOPs. Both resizes share one kernel over the four sub-pixel positions, so a flat input stays
    flat, and the convs and PReLUs after them cannot tell the positions apart: a sub-pixel pattern can only come
    from the resize's spectral images, which nearest passes (cos(w/2)) and bilinear suppresses (cos^2(w/2)),
    while the conv at the new resolution can still make every frequency up to its Nyquist (a blur after a
    shuffle cannot).
    `tail_init`: the last conv's initialiser; "zeros" makes a residual generator start exactly at bicubic.
    """
    if upsample_filter not in ("none", "binomial"):
        raise ValueError(f"upsample_filter must be none or binomial, got {upsample_filter!r}")
    if upsample not in ("pixel_shuffle", "nearest", "bilinear"):
        raise ValueError(f"upsample must be pixel_shuffle, nearest or bilinear, got {upsample!r}")
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
        if upsample != "pixel_shuffle":
            x = Resize2x(upsample, name=f"up{i}_{upsample}")(x)
            x = keras.layers.Conv2D(width, 3, padding="same", name=f"up{i}_conv")(x)
        else:
            x = keras.layers.Conv2D(width * 4, 3, padding="same", name=f"up{i}_conv",
                                    kernel_initializer=ICNR(2) if icnr else "glorot_uniform")(x)
            x = PixelShuffle(2, name=f"up{i}_shuffle")(x)
        x = _prelu(f"up{i}_prelu")(x)
        if upsample_filter == "binomial":  # after the PReLU: from here to the output the path is linear
            x = BinomialBlur(name=f"up{i}_blur")(x)
    x = keras.layers.Conv2D(3, 9, padding="same", name="tail_conv", kernel_initializer=tail_init)(x)
    if residual_over_bicubic:
        base = BicubicUpsample(scale, name="bicubic")(inputs)
        x = keras.layers.Add(name="residual_add")([base, keras.layers.Activation("linear", dtype="float32")(x)])
        outputs = keras.layers.Activation("linear", dtype="float32", name="sr")(x)
    else:
        outputs = keras.layers.Activation("tanh", dtype="float32", name="sr")(x)
    return keras.Model(inputs, outputs, name=name)


class _SpectralNorm:
    """Spectral normalisation (Miyato et al. 2018) of a layer's kernel: the forward pass uses W / sigma(W),
    sigma from one power-iteration vector `u` (not trained). `u` is advanced by `spectral_norm_update`,
    called once per applied step in cross-replica context: a variable assigned inside the replica's
    forward pass (Keras' SpectralNormalization wrapper) cannot be a mirrored variable."""

    def build(self, input_shape):  # the layer's own build (Conv2D, Dense), then u
        super().build(input_shape)
        out = self.kernel.shape[-1]
        self.sn_u = self.add_weight(name="sn_u", shape=(1, out), initializer=keras.initializers.RandomNormal(0, 1, seed=1),
                                    trainable=False)

    def _w_mat(self):
        return tf.reshape(tf.cast(self.kernel, tf.float32), [-1, self.kernel.shape[-1]])  # [in, out]

    def normalized_kernel(self):
        w = self._w_mat()
        u = tf.stop_gradient(tf.math.l2_normalize(tf.cast(self.sn_u, tf.float32), axis=1))
        v = tf.stop_gradient(tf.math.l2_normalize(tf.matmul(u, w, transpose_b=True), axis=1))  # [1, in]
        sigma = tf.squeeze(tf.matmul(tf.matmul(v, w), u, transpose_b=True))
        return tf.cast(tf.cast(self.kernel, tf.float32) / sigma, self.compute_dtype)

    def power_iteration(self):
        w = self._w_mat()
        v = tf.math.l2_normalize(tf.matmul(tf.cast(self.sn_u, tf.float32), w, transpose_b=True), axis=1)
        self.sn_u.assign(tf.math.l2_normalize(tf.matmul(v, w), axis=1))


@keras.saving.register_keras_serializable(package="srgan")
class SNConv2D(_SpectralNorm, keras.layers.Conv2D):
    def call(self, inputs):
        x = self.convolution_op(inputs, self.normalized_kernel())
        return x + tf.cast(self.bias, x.dtype) if self.use_bias else x


@keras.saving.register_keras_serializable(package="srgan")
class SNDense(_SpectralNorm, keras.layers.Dense):
    def call(self, inputs):
        x = tf.matmul(inputs, self.normalized_kernel())
        return x + tf.cast(self.bias, x.dtype) if self.use_bias else x


def spectral_norm_update(model: keras.Model) -> None:
    """One power iteration for every spectrally normalised layer of `model` (after each applied step)."""
    for layer in model.layers:
        if isinstance(layer, _SpectralNorm):
            layer.power_iteration()


def build_discriminator(hr_size: int = 128, width: int = 64, depth: int = 8, batchnorm: bool = False,
                        dense: int = 1024, spectral_norm: bool = False, name: str = "discriminator") -> keras.Model:
    """`depth` 3x3 convs (width doubling every 2 layers, stride 2 on every second) + dense + logit.
    `spectral_norm`: every conv and dense layer spectrally normalised (no batchnorm with it)."""
    if depth < 2 or depth % 2:
        raise ValueError(f"discriminator depth must be an even number >= 2, got {depth}")
    conv, fc = (SNConv2D, SNDense) if spectral_norm else (keras.layers.Conv2D, keras.layers.Dense)
    inputs = keras.Input((hr_size, hr_size, 3), name="image")
    x = inputs
    for i in range(depth):
        filters = width * 2 ** (i // 2)
        x = conv(filters, 3, strides=1 + i % 2, padding="same", name=f"conv{i}")(x)
        if batchnorm and i > 0 and not spectral_norm:
            x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.LeakyReLU(0.2, name=f"lrelu{i}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = fc(dense, name="dense")(x)
    x = keras.layers.LeakyReLU(0.2, name="dense_lrelu")(x)
    logits = fc(1, dtype="float32", name="logit")(x)
    return keras.Model(inputs, logits, name=name)


def discriminator_features(discriminator: keras.Model) -> keras.Model:
    """The same discriminator (shared layers) returning [activations after each conv block..., logit]:
    what feature matching compares (pix2pixHD; Salimans et al. 2016)."""
    feats = [l.output for l in discriminator.layers if l.name.startswith("lrelu")]
    return keras.Model(discriminator.input, [*feats, discriminator.output], name=f"{discriminator.name}_features")


def blend_weights(a: keras.Model, b: keras.Model, alpha: float) -> list:
    """Network interpolation (ESRGAN): alpha * a + (1 - alpha) * b, weight by weight, for two models of one
    architecture. alpha 1 gives a's weights exactly, 0 gives b's."""
    wa, wb = a.get_weights(), b.get_weights()
    if [w.shape for w in wa] != [w.shape for w in wb]:
        raise ValueError(f"{a.name} and {b.name} are not the same architecture: their weights cannot be blended")
    if alpha == 1.0:
        return wa
    if alpha == 0.0:
        return wb
    return [alpha * x + (1.0 - alpha) * y for x, y in zip(wa, wb)]


def to_unit(images_uint8):
    """uint8 [0, 255] -> float32 [-1, 1] (the models' range)."""
    return tf.cast(images_uint8, tf.float32) / 127.5 - 1.0


def to_uint8(images_unit):
    """float [-1, 1] -> uint8, rounded and clipped."""
    return tf.cast(tf.clip_by_value(tf.round((tf.cast(images_unit, tf.float32) + 1.0) * 127.5), 0, 255), tf.uint8)
