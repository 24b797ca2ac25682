"""Super-resolution metrics in the convention of SR papers, with TensorFlow's metric ops.

PSNR and SSIM on uint8 images (SR outputs are rounded to uint8 first), after cropping `crop_border`
pixels (= the scale) from every side, either on RGB or on the Y channel of ITU-R BT.601 studio-range
YCbCr (Y in [16, 235], as MATLAB's rgb2ycbcr). SSIM: Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03.
Every result says which convention produced it (`convention()`).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from components.degradation import degrade


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


def bicubic_upscale(lr, scale: int = 4) -> tf.Tensor:
    """The baseline every SR result is compared with: bicubic x`scale`, rounded to uint8."""
    lr = tf.convert_to_tensor(lr)
    size = tf.shape(lr)[-3:-1] * scale
    up = tf.image.resize(tf.cast(lr, tf.float32), size, method="bicubic")
    return tf.cast(tf.clip_by_value(tf.round(up), 0, 255), tf.uint8)


def all_metrics(sr, hr, crop_border: int = 4) -> dict:
    """{'psnr_rgb', 'psnr_y', 'ssim_rgb', 'ssim_y', 'hf_ratio'} as floats, for one image pair (uint8 HWC)."""
    return {
        "psnr_rgb": float(psnr(sr, hr, crop_border, False)),
        "psnr_y": float(psnr(sr, hr, crop_border, True)),
        "ssim_rgb": float(ssim(sr, hr, crop_border, False)),
        "ssim_y": float(ssim(sr, hr, crop_border, True)),
        "hf_ratio": high_frequency_ratio(sr, hr, crop_border),
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
