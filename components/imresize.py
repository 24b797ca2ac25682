"""MATLAB's `imresize` (bicubic, antialiased when shrinking), in numpy: the reference the SR field's
numbers are computed with. `degrade()` is checked against it, and NIQE shrinks with it (as MATLAB and
BasicSR do)."""

from __future__ import annotations

import numpy as np


def _cubic(x):
    """MATLAB's bicubic kernel (Keys, a = -0.5)."""
    ax = np.abs(x)
    ax2, ax3 = ax ** 2, ax ** 3
    return ((1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
            + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))


def _contributions(in_len: int, out_len: int, scale: float):
    """Weights and indices as MATLAB's imresize `contributions` computes them (antialias when scale < 1)."""
    kernel_width = 4.0 / scale if scale < 1 else 4.0
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - kernel_width / 2)
    p = int(np.ceil(kernel_width)) + 2
    idx = left[:, None] + np.arange(p)[None, :]
    dist = u[:, None] - idx
    weights = scale * _cubic(scale * dist) if scale < 1 else _cubic(dist)
    weights /= weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])  # symmetric padding
    idx = mirror[np.mod(idx.astype(int) - 1, len(mirror))]
    keep = np.any(weights != 0, axis=0)
    return weights[:, keep], idx[:, keep]


def imresize(img: np.ndarray, scale: float) -> np.ndarray:
    """float64 `imresize(img, scale)` of an HxW or HxWxC array, no rounding (MATLAB on a double image)."""
    out = np.asarray(img, dtype=np.float64)
    for axis in (0, 1):  # MATLAB resizes the dimension with the smaller scale first; equal here
        in_len = out.shape[axis]
        out_len = int(np.ceil(in_len * scale))
        w, idx = _contributions(in_len, out_len, scale)
        moved = np.moveaxis(out, axis, 0)
        res = np.einsum("ok,ok...->o...", w, moved[idx])
        out = np.moveaxis(res, 0, axis)
    return out


def imresize_uint8(img: np.ndarray, scale: float) -> np.ndarray:
    """`imresize` of a uint8 image, rounded and clipped back to uint8 (MATLAB on a uint8 image)."""
    return np.clip(np.round(imresize(img, scale)), 0, 255).astype(np.uint8)
