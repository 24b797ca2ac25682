"""Super-resolution metrics in the convention of SR papers, with TensorFlow's metric ops.

PSNR and SSIM on uint8 images (SR outputs are rounded to uint8 first), after cropping `crop_border`
pixels (= the scale) from every side, either on RGB or on the Y channel of ITU-R BT.601 studio-range
YCbCr (Y in [16, 235], as MATLAB's rgb2ycbcr). SSIM: Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03.
Every result says which convention produced it (`convention()`). NIQE (no reference) follows MATLAB and
BasicSR, with the published pristine model shipped in components/data/.
"""

from __future__ import annotations

import functools
import os
import warnings

import numpy as np
import tensorflow as tf
from scipy import ndimage, special

from components.degradation import degrade
from components.imresize import imresize


def modcrop(image: np.ndarray, scale: int) -> np.ndarray:
    """Crop H and W down to multiples of `scale` (the standard practice before making an LR image)."""
    h, w = image.shape[0] - image.shape[0] % scale, image.shape[1] - image.shape[1] % scale
    return image[:h, :w]


def rgb_to_y(images) -> tf.Tensor:
    """uint8 RGB [..., 3] -> float32 Y in [16, 235] (BT.601 studio range, not rounded)."""
    x = tf.cast(images, tf.float32) / 255.0
    return 16.0 + 65.481 * x[..., 0:1] + 128.553 * x[..., 1:2] + 24.966 * x[..., 2:3]


def _prepare(a, b, crop_border: int, y_channel: bool):
    a, b = tf.convert_to_tensor(a), tf.convert_to_tensor(b)
    if a.dtype != tf.uint8 or b.dtype != tf.uint8:
        raise TypeError("metrics take uint8 images: round SR outputs to uint8 first")
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    if crop_border:
        a = a[..., crop_border:-crop_border, crop_border:-crop_border, :]
        b = b[..., crop_border:-crop_border, crop_border:-crop_border, :]
    if y_channel:
        return rgb_to_y(a), rgb_to_y(b)
    return tf.cast(a, tf.float32), tf.cast(b, tf.float32)


def psnr(a, b, crop_border: int = 4, y_channel: bool = False) -> tf.Tensor:
    """dB, per image ([batch] for batched input, scalar for one image). Identical images give inf."""
    a, b = _prepare(a, b, crop_border, y_channel)
    return tf.image.psnr(a, b, max_val=255.0)


def ssim(a, b, crop_border: int = 4, y_channel: bool = False) -> tf.Tensor:
    """Mean SSIM per image (over channels for RGB)."""
    a, b = _prepare(a, b, crop_border, y_channel)
    return tf.image.ssim(a, b, max_val=255.0, filter_size=11, filter_sigma=1.5, k1=0.01, k2=0.03)


def high_frequency_ratio(sr, hr, crop_border: int = 4) -> float:
    """Sharpness: energy of the Laplacian of SR's Y channel over that of HR's (1.0 = as much fine detail
    as the original; bicubic is far below 1, a GAN aims back towards 1; above 1 is noise or ringing)."""
    a, b = _prepare(sr, hr, crop_border, True)
    kernel = tf.constant([[0, 1, 0], [1, -4, 1], [0, 1, 0]], tf.float32)[:, :, None, None]

    def energy(y):
        y = y[None] if y.shape.rank == 3 else y
        return tf.reduce_mean(tf.square(tf.nn.conv2d(y, kernel, 1, "VALID")))
    return float(energy(a) / tf.maximum(energy(b), 1e-12))


def _periodic_power(g: np.ndarray) -> np.ndarray:
    """|FFT|^2 of the periodic component of `g` (Moisan 2011, "Periodic plus smooth image decomposition"):
    the FFT treats the image as tiled, and the jump between opposite borders puts a cross of energy along
    both frequency axes, through the sub-pixel bins; on a photo it outweighs them (both SR and HR), so a
    ratio of those bins measured the borders, not the image. The smooth component carries that jump."""
    h, w = g.shape
    v = np.zeros_like(g)  # the border jumps: the Laplacian of the smooth component
    v[0, :] += g[-1, :] - g[0, :]
    v[-1, :] += g[0, :] - g[-1, :]
    v[:, 0] += g[:, -1] - g[:, 0]
    v[:, -1] += g[:, 0] - g[:, -1]
    den = 2 * np.cos(2 * np.pi * np.arange(h) / h)[:, None] + 2 * np.cos(2 * np.pi * np.arange(w) / w)[None, :] - 4
    den[0, 0] = 1.0
    smooth = np.fft.fft2(v) / den
    smooth[0, 0] = 0.0
    power = np.abs(np.fft.fft2(g) - smooth) ** 2
    power[0, 0] = 0.0  # DC: the mean, not a structure
    return power


def subpixel_fraction(image, crop_border: int = 4, scale: int = 4) -> float:
    """The share of an image's (BT.601 Y, mean removed) spectral energy at the sub-pixel periods: the
    frequency bins at multiples of side/`scale` on each axis (periods `scale`, ..., 2 px along x and/or y;
    all of a pattern that repeats every `scale` px lies there), DC excluded. The sides are cropped to
    multiples of `scale` so those bins are exact."""
    y, _ = _prepare(image, image, crop_border, True)
    g = y.numpy()[..., 0].astype(np.float64)
    h, w = g.shape[0] - g.shape[0] % scale, g.shape[1] - g.shape[1] % scale
    if h < scale or w < scale:
        raise ValueError(f"{g.shape[1]}x{g.shape[0]} after the border crop: too small for period {scale}")
    g = g[:h, :w] - g[:h, :w].mean()
    power = _periodic_power(g)
    total = power.sum()
    return float(power[::h // scale, ::w // scale].sum() / total) if total > 0 else 0.0


def checkerboard(sr, hr, crop_border: int = 4, scale: int = 4) -> float:
    """Sub-pixel artefacts (a pixel shuffle's checkerboard): SR's `subpixel_fraction` over HR's. 1.0 = as
    much energy at the periods 2 and `scale` px as the original photo; bicubic, blurred, is far below 1
    (0.02 on the astronaut); a pattern repeating every 4 px of a few gray levels gives hundreds or more.
    Broadband texture counts too (as in `hf_ratio`): read it beside hf_ratio. HR's share is floored at
    1e-12 (a flat HR)."""
    return subpixel_fraction(sr, crop_border, scale) / max(subpixel_fraction(hr, crop_border, scale), 1e-12)


COLOUR_SIGMA = 16.0  # px (HR): the low-pass that keeps regions' colour; at 8 px, edges still leaked ~1 gray
#                     level of a sharpened photo into the drift, at 16 px ~0.4 (chelsea)


def colour_drift(sr, hr, crop_border: int = 4, sigma: float = COLOUR_SIGMA) -> float:
    """Low-frequency colour shift, in gray levels (0-255): both images' RGB blurred by a Gaussian of
    `sigma` px, then the mean over pixels of the Euclidean RGB distance. A uniform tint (dr, dg, db)
    gives about its length sqrt(dr^2 + dg^2 + db^2); detail (sharpening, noise, texture) averages out."""
    a, b = _prepare(sr, hr, crop_border, False)
    f = 4 if min(a.shape[:2]) >= 16 else 1  # 4x4 area means first: the same low-pass, ~60x faster on big photos

    def low(x):
        x = x.numpy().astype(np.float64)
        h, w = x.shape[0] // f * f, x.shape[1] // f * f
        x = x[:h, :w].reshape(h // f, f, w // f, f, x.shape[-1]).mean(axis=(1, 3))
        return ndimage.gaussian_filter(x, (sigma / f, sigma / f, 0), mode="reflect")
    return float(np.mean(np.sqrt(np.sum(np.square(low(a) - low(b)), axis=-1))))


def bicubic_upscale(lr, scale: int = 4) -> tf.Tensor:
    """The baseline every SR result is compared with: bicubic x`scale`, rounded to uint8."""
    lr = tf.convert_to_tensor(lr)
    size = tf.shape(lr)[-3:-1] * scale
    up = tf.image.resize(tf.cast(lr, tf.float32), size, method="bicubic")
    return tf.cast(tf.clip_by_value(tf.round(up), 0, 255), tf.uint8)


def all_metrics(sr, hr, crop_border: int = 4, scale: int | None = None) -> dict:
    """{'psnr_rgb', 'psnr_y', 'ssim_rgb', 'ssim_y', 'hf_ratio', 'checkerboard', 'colour_drift'} as floats,
    for one image pair (uint8 HWC). `scale` (the checkerboard's period) defaults to crop_border (= the
    scale, by the convention) or 4."""
    return {
        "psnr_rgb": float(psnr(sr, hr, crop_border, False)),
        "psnr_y": float(psnr(sr, hr, crop_border, True)),
        "ssim_rgb": float(ssim(sr, hr, crop_border, False)),
        "ssim_y": float(ssim(sr, hr, crop_border, True)),
        "hf_ratio": high_frequency_ratio(sr, hr, crop_border),
        "checkerboard": checkerboard(sr, hr, crop_border, scale or crop_border or 4),
        "colour_drift": colour_drift(sr, hr, crop_border),
    }


def bicubic_baseline(hr: np.ndarray, scale: int = 4) -> dict:
    """Metrics of bicubic x`scale` on an HR image: modcrop, the shared degradation, bicubic up."""
    hr = modcrop(hr, scale)
    return all_metrics(bicubic_upscale(degrade(hr, scale), scale), hr, crop_border=scale)


def convention(scale: int = 4) -> dict:
    return {"crop_border": scale, "y_channel": "ITU-R BT.601 studio range (16-235), not rounded",
            "rounding": "SR output rounded to uint8 before the metrics",
            "ssim": "Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03 (tf.image.ssim)",
            "psnr_max_val": 255}


# ----------------------------------------------------------------------------- NIQE

NIQE_BLOCK = 96            # px: NIQE's patch; features come from blocks at two scales
NIQE_MIN_SIDE = 2 * NIQE_BLOCK  # smaller images: NIQE is undefined (None), never a made-up value
_NIQE_MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "niqe_pris_params.npz")
_AGGD_GAMMA = np.arange(0.2, 10.001, 0.001)
_AGGD_R = (special.gamma(2 / _AGGD_GAMMA) ** 2 / (special.gamma(1 / _AGGD_GAMMA) * special.gamma(3 / _AGGD_GAMMA)))


@functools.lru_cache(maxsize=1)
def _niqe_model() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mu, cov, gaussian window) of the pristine model: read once per process, not once per image."""
    with np.load(_NIQE_MODEL) as model:
        return model["mu_pris_param"], model["cov_pris_param"], model["gaussian_window"]


def _aggd(x: np.ndarray) -> tuple[float, float, float]:
    """(shape, left scale, right scale) of an asymmetric generalized Gaussian, by moment matching on the
    same grid of shapes as MATLAB's and BasicSR's NIQE."""
    x = x.ravel()
    left, right = np.sqrt(np.mean(x[x < 0] ** 2)), np.sqrt(np.mean(x[x > 0] ** 2))
    gamma_hat = left / right
    r_hat = np.mean(np.abs(x)) ** 2 / np.mean(x ** 2)
    r_norm = r_hat * (gamma_hat ** 3 + 1) * (gamma_hat + 1) / (gamma_hat ** 2 + 1) ** 2
    alpha = _AGGD_GAMMA[np.argmin((_AGGD_R - r_norm) ** 2)]
    factor = np.sqrt(special.gamma(1 / alpha) / special.gamma(3 / alpha))
    return alpha, left * factor, right * factor


def _niqe_features(block: np.ndarray) -> list[float]:
    alpha, beta_l, beta_r = _aggd(block)
    feats = [alpha, (beta_l + beta_r) / 2]
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):  # products with the 4 neighbours
        alpha, beta_l, beta_r = _aggd(block * np.roll(block, shift, axis=(0, 1)))
        mean = (beta_r - beta_l) * special.gamma(2 / alpha) / special.gamma(1 / alpha)
        feats += [alpha, mean, beta_l, beta_r]
    return feats


def _niqe_scales(img: np.ndarray, rows: int, cols: int, window: np.ndarray) -> np.ndarray:
    """Features of every block at full and half size: (blocks, 36)."""
    per_scale = []
    for scale in (1, 2):
        mu = ndimage.convolve(img, window, mode="nearest")
        sigma = np.sqrt(np.abs(ndimage.convolve(np.square(img), window, mode="nearest") - np.square(mu)))
        normalized = (img - mu) / (sigma + 1)
        size = NIQE_BLOCK // scale
        per_scale.append(np.array([_niqe_features(normalized[r * size:(r + 1) * size, c * size:(c + 1) * size])
                                   for c in range(cols) for r in range(rows)]))
        if scale == 1:
            img = imresize(img / 255.0, 0.5).astype(np.float32) * 255.0
    return np.concatenate(per_scale, axis=1)


def niqe(image: np.ndarray, crop_border: int = 0) -> float | None:
    """NIQE (Mittal et al. 2013; lower is more natural) of a uint8 RGB or gray image, as BasicSR computes it
    (and MATLAB before it): BT.601 Y rounded, 96 px blocks at full and half size (MATLAB imresize), the
    published pristine model. In float32 as BasicSR: the shape fit is sensitive to it (float64 moved one
    JPEG'd Set5 image by 0.5). None where it is undefined: a side under 192 px (after `crop_border`)."""
    img = np.asarray(image)
    if min(img.shape[:2]) - 2 * crop_border < NIQE_MIN_SIDE:  # before any work: most eval crops are 128 px
        return None
    if img.ndim == 3:  # Y in [16, 235]; BasicSR's arithmetic (float32 in, float64 dot, /255 * 255)
        img = (np.dot(img.astype(np.float32) / 255.0, [65.481, 128.553, 24.966]) + 16.0) / 255.0 * 255.0
    img = img.astype(np.float32)
    if crop_border:
        img = img[crop_border:-crop_border, crop_border:-crop_border]
    img = img.round()
    h, w = img.shape
    mu_pris, cov_pris, window = _niqe_model()
    rows, cols = h // NIQE_BLOCK, w // NIQE_BLOCK
    img = img[:rows * NIQE_BLOCK, :cols * NIQE_BLOCK]
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        # a flat block (no negative or no positive MSCN value) gives NaN features: dropped below, as BasicSR
        warnings.simplefilter("ignore", RuntimeWarning)
        feats = _niqe_scales(img, rows, cols, window)
    valid = feats[~np.isnan(feats).any(axis=1)]
    if len(valid) < 2:  # (nearly) flat everywhere: no statistics to compare with the pristine model
        return None
    mu_dist = np.nanmean(feats, axis=0)
    cov_dist = np.cov(valid, rowvar=False)
    diff = mu_pris - mu_dist
    quality = diff @ np.linalg.pinv((cov_pris + cov_dist) / 2) @ diff.T
    return float(np.sqrt(np.squeeze(quality)))
