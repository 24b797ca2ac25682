"""Every HR -> LR degradation, in pure TensorFlow so it runs inside the transform graph and tf.data.

`degrade` is the clean one: every component (the Beam job, the evaluator, benchmarks, tests) calls it
for clean LR; nothing else downsamples. Antialiased bicubic (Keys a=-0.5 stretched by the scale) is
what MATLAB's `imresize` does, the convention SR papers evaluate with; it is checked against a numpy
port of `imresize`. `realistic_degrade` is Real-ESRGAN's random second-order degradation (training
with `degradation: realistic`); `degrade_fixed` is one fixed draw of it per image (evaluation).
`degradation: mixed` gives each training example, by `mixed_choice`, the clean LR, `mild_degrade` (one
pass: Gaussian blur, resize, a little noise, light JPEG) or `realistic_degrade`.
"""

from __future__ import annotations

import functools
import math
import types

import tensorflow as tf

SCALE = 4


def degrade(hr, scale: int = SCALE) -> tf.Tensor:
    """uint8 [..., H, W, C] -> uint8 [..., H/scale, W/scale, C] (H, W must be multiples of `scale`)."""
    hr = tf.convert_to_tensor(hr)
    if hr.dtype != tf.uint8:
        raise TypeError(f"degrade expects uint8 pixels, got {hr.dtype.name}")
    shape = tf.shape(hr)
    h, w = shape[-3], shape[-2]
    static_h, static_w = hr.shape[-3], hr.shape[-2]
    if static_h is not None and static_w is not None and (static_h % scale or static_w % scale):
        raise ValueError(f"HR size {static_h}x{static_w} is not a multiple of the scale {scale}")
    lr = tf.image.resize(tf.cast(hr, tf.float32), [h // scale, w // scale], method="bicubic", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(lr), 0.0, 255.0), tf.uint8)


# ----------------------------------------------------------------------------- realistic (Real-ESRGAN)
#
# The second-order degradation model of Real-ESRGAN (Wang et al. 2021), written from BasicSR's
# degradations.py and realesrgan_model.py in TensorFlow ops so it runs inside a tf.data map on one
# unbatched image. Every random draw is stateless: the LR is a pure function of (HR, seed, params).

KERNEL_SIZE = 21                                  # every kernel lives on a 21x21 grid, as in Real-ESRGAN
KERNEL_SIZES = tuple(range(7, KERNEL_SIZE + 1, 2))  # the support actually drawn (the rest is zero)
KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
RESIZE_METHODS = ("area", "bilinear", "bicubic")
EVAL_SEED = 20210722                              # the fixed degradation every model is evaluated on
_SALT = 0x5EED_DE6  # folded into the caller's seed, so draws here never repeat the caller's other draws


def _uniform(seed, lo, hi):
    return tf.random.stateless_uniform([], seed, float(lo), float(hi)) if lo < hi else tf.constant(float(lo))


def _grid():
    ax = tf.range(-(KERNEL_SIZE // 2), KERNEL_SIZE // 2 + 1, dtype=tf.float32)
    return tf.meshgrid(ax, ax)  # x along columns, y along rows (BasicSR's mesh_grid)


def _support(size):
    """1 inside the centred size x size square of the grid, 0 outside: a smaller kernel zero-padded to 21."""
    xx, yy = _grid()
    half = tf.cast(size // 2, tf.float32)
    return tf.cast((tf.abs(xx) <= half) & (tf.abs(yy) <= half), tf.float32)


def shaped_kernel(kernel_type, size, sigma_x, sigma_y, theta, beta):
    """A 21x21 blur kernel (sum 1) of one of KERNEL_TYPES (an index tensor or int): Gaussian, generalized
    Gaussian exp(-q^beta / 2) or plateau 1 / (1 + q^beta), q the Mahalanobis distance squared of the
    rotated covariance diag(sigma_x^2, sigma_y^2); iso types use sigma_x alone, generalized and plateau
    types use beta; nonzero within the centred size x size square."""
    kernel_type = tf.convert_to_tensor(kernel_type, tf.int32)
    iso = kernel_type % 2 == 0
    sigma_y = tf.where(iso, sigma_x, sigma_y)
    theta = tf.where(iso, 0.0, theta)
    c, s = tf.cos(theta), tf.sin(theta)
    xx, yy = _grid()
    u, v = c * xx + s * yy, -s * xx + c * yy  # coordinates along the covariance's axes
    q = (u / sigma_x) ** 2 + (v / sigma_y) ** 2
    family = kernel_type // 2  # 0 Gaussian, 1 generalized, 2 plateau
    q_beta = tf.pow(q, tf.where(family == 0, 1.0, beta))
    k = tf.where(family == 2, 1.0 / (q_beta + 1.0), tf.exp(-0.5 * q_beta)) * _support(size)
    return k / tf.reduce_sum(k)


def sinc_kernel(cutoff, size):
    """A 21x21 circular low-pass (sinc) kernel, sum 1: cutoff J1(cutoff r) / (2 pi r), cutoff in radians
    (pi passes everything up to Nyquist); nonzero within the centred size x size square."""
    xx, yy = _grid()
    r = tf.sqrt(xx ** 2 + yy ** 2)
    safe_r = tf.where(r == 0, 1.0, r)
    k = tf.where(r == 0, cutoff ** 2 / (4 * math.pi),
                 cutoff * tf.math.special.bessel_j1(cutoff * safe_r) / (2 * math.pi * safe_r))
    k = k * _support(size)
    return k / tf.reduce_sum(k)


def _random_size(seed):
    return tf.gather(KERNEL_SIZES, tf.random.stateless_uniform([], seed, 0, len(KERNEL_SIZES), dtype=tf.int32))


def _random_beta(seed, beta_range):
    """Half the draws below 1, half above (BasicSR's rule), within beta_range."""
    lo, hi = beta_range
    mid = min(max(1.0, lo), hi)
    s = tf.random.experimental.stateless_split(seed, 3)
    return tf.where(tf.random.stateless_uniform([], s[0]) < 0.5, _uniform(s[1], lo, mid), _uniform(s[2], mid, hi))


def random_kernel(seed, kernel_prob, sinc_prob, sigma_range, betag_range, betap_range):
    """A random blur kernel as Real-ESRGAN draws one: size 7..21; with sinc_prob a sinc kernel (cutoff
    pi/3..pi below size 13, pi/5..pi above), else a KERNEL_TYPES kernel drawn by kernel_prob."""
    s = tf.random.experimental.stateless_split(seed, 9)
    size = _random_size(s[0])
    kernel_type = tf.random.stateless_categorical(tf.math.log([kernel_prob]), 1, s[1], dtype=tf.int32)[0, 0]
    beta = tf.where(kernel_type // 2 == 1, _random_beta(s[2], betag_range), _random_beta(s[3], betap_range))
    shaped = shaped_kernel(kernel_type, size, _uniform(s[4], *sigma_range), _uniform(s[5], *sigma_range),
                           _uniform(s[6], -math.pi, math.pi), beta)
    cutoff = tf.where(size < 13, _uniform(s[7], math.pi / 3, math.pi), _uniform(s[7], math.pi / 5, math.pi))
    return tf.where(tf.random.stateless_uniform([], s[8]) < sinc_prob, sinc_kernel(cutoff, size), shaped)


def _reflect_indices(n, pad):
    """Indices of a reflect padding by `pad` of a length-n axis, valid even when pad >= n (tf.pad's REFLECT
    is not): the axis is mirrored as often as needed."""
    period = tf.maximum(2 * (n - 1), 1)
    m = tf.math.floormod(tf.range(-pad, n + pad), period)
    return tf.where(m < n, m, period - m)


def blur(img, kernel):
    """float [H, W, C] filtered with a 2-D kernel (odd side), reflect-padded (cv2.filter2D / BasicSR's
    filter2D; the kernels here are point-symmetric, so correlation and convolution agree)."""
    k = kernel.shape[0]
    pad = k // 2
    shape = tf.shape(img)
    padded = tf.gather(tf.gather(img, _reflect_indices(shape[0], pad), axis=0), _reflect_indices(shape[1], pad), axis=1)
    # By FFT: a 21x21 kernel as a direct convolution ran at ~1.3 GFLOP/s on 2 cores (17 ms for a 128 crop,
    # most of the degradation's time); the transforms cost well under 1 ms. Correlation = product with
    # the conjugate spectrum; the kernel sits at the origin, so the first H x W outputs never wrap.
    x = tf.transpose(padded, [2, 0, 1])
    hw = tf.shape(x)[1:]
    kpad = tf.pad(tf.cast(kernel, img.dtype), [[0, hw[0] - k], [0, hw[1] - k]])
    spectrum = tf.signal.rfft2d(x, fft_length=hw) * tf.math.conj(tf.signal.rfft2d(kpad, fft_length=hw))
    out = tf.signal.irfft2d(spectrum, fft_length=hw)[:, :shape[0], :shape[1]]
    return tf.transpose(out, [1, 2, 0])


def _maybe_blur(img, kernel, apply):
    """blur when `apply` (a bool tensor); the image untouched otherwise (not a blur by a unit pulse:
    that costs the same as any blur)."""
    return tf.cond(apply, lambda: blur(img, kernel), lambda: img)


def resize(img, size, method_index):
    """img resized to `size` by RESIZE_METHODS[method_index] (no antialiasing, as torch's interpolate)."""
    branches = [lambda m=m: tf.image.resize(img, size, method=m) for m in RESIZE_METHODS]
    return tf.switch_case(method_index, branches)


def _random_method(seed):
    return tf.random.stateless_uniform([], seed, 0, len(RESIZE_METHODS), dtype=tf.int32)


def _random_resize_factor(seed, resize_prob, resize_range):
    """Up (1..max), down (min..1) or keep (1), chosen by resize_prob."""
    s = tf.random.experimental.stateless_split(seed, 3)
    choice = tf.random.stateless_categorical(tf.math.log([resize_prob]), 1, s[0], dtype=tf.int32)[0, 0]
    up = _uniform(s[1], 1.0, max(resize_range[1], 1.0))
    down = _uniform(s[2], min(resize_range[0], 1.0), 1.0)
    return tf.gather(tf.stack([up, down, 1.0]), choice)


def add_gaussian_noise(img, sigma, gray, seed):
    """img + N(0, sigma/255), clipped to [0, 1]; gray: one draw per pixel for all channels."""
    noise = tf.random.stateless_normal(tf.shape(img), seed) * (sigma / 255.0)
    noise = tf.where(gray, tf.broadcast_to(noise[..., :1], tf.shape(img)), noise)
    return tf.clip_by_value(img + noise, 0.0, 1.0)


def add_poisson_noise(img, scale, gray, seed):
    """Shot noise as BasicSR makes it: counts ~ Poisson(x * vals) with vals the distinct 8-bit levels of the
    image rounded up to a power of 2; the noise (counts / vals - x) times `scale`, added, clipped.
    gray: on the luma, one draw per pixel for all channels."""
    luma = tf.broadcast_to(tf.image.rgb_to_grayscale(img), tf.shape(img))
    x = tf.round(tf.clip_by_value(tf.where(gray, luma, img), 0.0, 1.0) * 255.0) / 255.0
    levels = tf.cast(tf.size(tf.unique(tf.reshape(x, [-1]))[0]), tf.float32)
    vals = tf.pow(2.0, tf.math.ceil(tf.math.log(levels) / math.log(2.0)))
    noise = tf.random.stateless_poisson(tf.shape(img), seed, x * vals, dtype=tf.float32) / vals - x
    noise = tf.where(gray, tf.broadcast_to(noise[..., :1], tf.shape(img)), noise)
    return tf.clip_by_value(img + noise * scale, 0.0, 1.0)


def _random_noise(img, seed, gaussian_prob, sigma_range, poisson_range, gray_prob):
    """Gaussian noise with gaussian_prob, else Poisson; gray with gray_prob."""
    s = tf.random.experimental.stateless_split(seed, 5)
    gray = tf.random.stateless_uniform([], s[0]) < gray_prob
    return tf.cond(tf.random.stateless_uniform([], s[1]) < gaussian_prob,
                   lambda: add_gaussian_noise(img, _uniform(s[2], *sigma_range), gray, s[3]),
                   lambda: add_poisson_noise(img, _uniform(s[2], *poisson_range), gray, s[4]))


def jpeg(img, quality):
    """float [H, W, 3] in [0, 1] through a JPEG encode/decode at an integer quality (1..100)."""
    # the accurate integer DCT is what cv2 and PIL decode with; the default fast one adds ~0.8 levels of error
    return tf.image.adjust_jpeg_quality(tf.clip_by_value(img, 0.0, 1.0), tf.cast(quality, tf.int32),
                                       dct_method="INTEGER_ACCURATE")


def _random_jpeg(img, seed, jpeg_range):
    return jpeg(img, tf.round(_uniform(seed, *jpeg_range)))


def _stage(img, seed, p, prefix: str, blur_prob, size):
    """One degradation pass: blur (with blur_prob), random resize (to `size` times the drawn factor),
    noise, JPEG. `prefix` picks the pass's keys of p ('' or 'second_')."""
    def key(name):
        return getattr(p, prefix + name)
    s = tf.random.experimental.stateless_split(seed, 6)
    kernel = random_kernel(s[0], key("kernel_prob"), key("sinc_prob"), key("blur_sigma"), key("betag_range"),
                           key("betap_range"))
    img = _maybe_blur(img, kernel, tf.random.stateless_uniform([], s[1]) < blur_prob)
    factor = _random_resize_factor(s[2], key("resize_prob"), key("resize_range"))
    new_size = tf.maximum(tf.cast(tf.cast(size, tf.float32) * factor, tf.int32), 1)  # floor, as torch
    img = resize(img, new_size, _random_method(s[3]))
    img = _random_noise(img, s[4], key("gaussian_noise_prob"), key("noise_range"), key("poisson_scale_range"),
                        key("gray_noise_prob"))
    return _random_jpeg(img, s[5], key("jpeg_range"))


def _checked_hr(hr, scale: int, name: str):
    """(float32 HR tensor, its static shape) after checking it is one [H, W, 3] image with sides multiple of scale."""
    hr = tf.convert_to_tensor(hr, tf.float32)
    static = hr.shape
    if static.rank != 3:
        raise ValueError(f"{name} expects one image [H, W, 3], got shape {static}")
    if static[0] is not None and static[1] is not None and (static[0] % scale or static[1] % scale):
        raise ValueError(f"HR size {static[0]}x{static[1]} is not a multiple of the scale {scale}")
    return hr, static


def _quantized_lr(lr, static, scale: int):
    """The LR rounded to 1/255 steps in [0, 1], with the static size the HR's implies."""
    lr = tf.clip_by_value(tf.round(lr * 255.0), 0.0, 255.0) / 255.0
    return tf.ensure_shape(lr, [None if d is None else d // scale for d in static[:2]] + [3])


def realistic_degrade(hr, seed, params, scale: int = SCALE) -> tf.Tensor:
    """Real-ESRGAN's second-order degradation of one image, in TensorFlow ops (graph- and tf.data-safe).

    hr: float32 [H, W, 3] in [0, 1], H and W multiples of `scale` (static or dynamic). seed: int [2], the
    stateless seed (the LR is a pure function of it). params: a config.RealisticDegradation. Returns
    float32 [H/scale, W/scale, 3] in [0, 1], rounded to 1/255 steps. Passes: blur, resize, noise, JPEG,
    twice (the second blur with second_blur_prob); then the resize to LR size followed by a sinc filter
    (with final_sinc_prob), and a JPEG, in random order.
    """
    hr, static = _checked_hr(hr, scale, "realistic_degrade")
    seed = tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), _SALT)
    s = tf.random.experimental.stateless_split(seed, 8)
    hw = tf.shape(hr)[:2]
    lr_size = hw // scale
    img = _stage(hr, s[0], params, "", 1.0, hw)
    img = _stage(img, s[1], params, "second_", params.second_blur_prob, lr_size)

    final_kernel = sinc_kernel(_uniform(s[3], math.pi / 3, math.pi), _random_size(s[4]))
    final_sinc = tf.random.stateless_uniform([], s[2]) < params.final_sinc_prob
    method = _random_method(s[5])

    def resize_and_sinc(x):
        return _maybe_blur(resize(x, lr_size, method), final_kernel, final_sinc)
    # Real-ESRGAN found the other orders (sinc + JPEG + resize) make twisted lines: only these two.
    lr = tf.cond(tf.random.stateless_uniform([], s[6]) < 0.5,
                 lambda: _random_jpeg(resize_and_sinc(img), s[7], params.second_jpeg_range),
                 lambda: resize_and_sinc(_random_jpeg(img, s[7], params.second_jpeg_range)))
    return _quantized_lr(lr, static, scale)


# ----------------------------------------------------------------------------- mixed (clean, mild, realistic)

MIX_CHOICES = ("clean", "mild", "realistic")  # `degradation: mixed`: the index mixed_choice draws
_MILD_SALT = 0x3117D  # the mild draws never repeat the realistic draws of the same seed


def mixed_choice(seed, mix_prob) -> tf.Tensor:
    """Which of MIX_CHOICES one example gets (an int32 index), drawn by the probabilities `mix_prob` from the
    stateless seed alone: a pure function of it, so a resumed run makes the same choices."""
    logits = tf.math.log([[float(p) for p in mix_prob]])  # a zero probability: -inf, never drawn
    return tf.random.stateless_categorical(logits, 1, seed, dtype=tf.int32)[0, 0]


def mild_degrade(hr, seed, params, scale: int = SCALE) -> tf.Tensor:
    """A single-pass mild degradation of one image, in TensorFlow ops (graph- and tf.data-safe): an isotropic
    Gaussian blur (sigma within mild_blur_sigma, with mild_blur_prob), the resize down by `scale` (area,
    bilinear or bicubic at random, no antialiasing), Gaussian colour noise (sigma within mild_noise_range,
    0..255 units), JPEG (quality within mild_jpeg_range).

    hr: float32 [H, W, 3] in [0, 1], H and W multiples of `scale`. seed: int [2] (the LR is a pure function
    of it). params: a config.MixedDegradation. Returns float32 [H/scale, W/scale, 3] in [0, 1], rounded to
    1/255 steps.
    """
    hr, static = _checked_hr(hr, scale, "mild_degrade")
    seed = tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), _MILD_SALT)
    s = tf.random.experimental.stateless_split(seed, 6)
    sigma = _uniform(s[0], *params.mild_blur_sigma)
    kernel = shaped_kernel(0, KERNEL_SIZE, sigma, sigma, 0.0, 1.0)
    img = _maybe_blur(hr, kernel, tf.random.stateless_uniform([], s[1]) < params.mild_blur_prob)
    img = resize(img, tf.shape(hr)[:2] // scale, _random_method(s[2]))
    img = add_gaussian_noise(img, _uniform(s[3], *params.mild_noise_range), tf.constant(False), s[4])
    lr = _random_jpeg(img, s[5], params.mild_jpeg_range)
    return _quantized_lr(lr, static, scale)


@functools.lru_cache(maxsize=4)
def _fixed_degrader(params_items: tuple, scale: int):
    """One traced function per (params, scale): tracing costs about a second, an image a few ms."""
    params = types.SimpleNamespace(**{k: list(v) if isinstance(v, tuple) else v for k, v in params_items})

    @tf.function(reduce_retracing=True)
    def run(hr_uint8, seed):
        lr = realistic_degrade(tf.cast(hr_uint8, tf.float32) / 255.0, seed, params, scale)
        return tf.cast(tf.round(lr * 255.0), tf.uint8)
    return run


def degrade_fixed(hr_uint8, index: int, params, scale: int = SCALE, seed: int = EVAL_SEED):
    """The evaluation's degraded LR of one image: uint8 [H, W, 3] -> uint8 numpy [H/scale, W/scale, 3],
    drawn with the stateless seed (seed, index), so every model is judged on the same LR of image `index`."""
    items = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in vars(params).items()))
    return _fixed_degrader(items, scale)(tf.convert_to_tensor(hr_uint8, tf.uint8),
                                         tf.constant([seed, index], tf.int64)).numpy()
