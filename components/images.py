"""Decoding any image file into 8-bit RGB, and the training crop.

Bad input raises `ImageRejected` with a machine-readable reason; callers quarantine it.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps

# Reasons a file cannot become a training crop (the `reason` of a quarantine record).
EMPTY_FILE = "empty_file"
NOT_AN_IMAGE = "not_an_image"
CORRUPT = "truncated_or_corrupt"
TOO_SMALL = "too_small"
TOO_LARGE = "too_large"
READ_ERROR = "read_error"
REASONS = (EMPTY_FILE, NOT_AN_IMAGE, CORRUPT, TOO_SMALL, TOO_LARGE, READ_ERROR)


class ImageRejected(Exception):
    def __init__(self, reason: str, details: str):
        super().__init__(f"{reason}: {details}")
        self.reason = reason
        self.details = details


def _to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """High-bit-depth pixels -> 8 bit by scaling, not clipping (Pillow's convert clips I;16 at 255)."""
    if mode == "F":
        return np.clip(np.round(arr), 0, 255).astype(np.uint8)
    if arr.dtype == np.uint8:
        return arr
    # I;16 / I (16-bit PNG, TIFF): full 16-bit range -> 8-bit
    return np.clip(np.round(arr.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)


def decode_rgb(data: bytes, keep_alpha: bool = False) -> np.ndarray:
    """Any Pillow-readable image -> uint8 [H, W, 3] RGB (or [H, W, 4] RGBA if keep_alpha).

    Grayscale, CMYK, palette, 16-bit and alpha images are converted; alpha is composited over white
    unless kept. EXIF orientation is applied. GIFs and other animations give their first frame.
    """
    if not data:
        raise ImageRejected(EMPTY_FILE, "the file has 0 bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            fmt = img.format
            img.load()
    except Image.UnidentifiedImageError as exc:
        raise ImageRejected(NOT_AN_IMAGE, f"no image format recognised ({len(data)} bytes, "
                                          f"starting {data[:12]!r})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(TOO_LARGE, str(exc)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageRejected(CORRUPT, f"{type(exc).__name__}: {exc}") from None
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block is no reason to lose the pixels
        pass
    mode = img.mode
    try:
        if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
            gray = _to_uint8(np.asarray(img), mode)
            rgb = np.repeat(gray[..., None], 3, axis=-1)
            return np.concatenate([rgb, np.full_like(gray[..., None], 255)], -1) if keep_alpha else rgb
        has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info)
        if has_alpha:
            rgba = img.convert("RGBA")
            if keep_alpha:
                return np.asarray(rgba, dtype=np.uint8).copy()
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"), dtype=np.uint8).copy()
        rgb = np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, ValueError) as exc:
        raise ImageRejected(CORRUPT, f"cannot convert {fmt} mode {mode} to RGB: {exc}") from None
    if keep_alpha:
        return np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], -1)
    return rgb


def training_crop(rgb: np.ndarray, crop_size: int, resize_short_side: int) -> np.ndarray:
    """Center crop `crop_size` square, no resizing, unless the short side is over twice the crop:
    then the image is first resized (bicubic, antialiased) so its short side is `resize_short_side`."""
    h, w = rgb.shape[:2]
    short = min(h, w)
    if short < crop_size:
        raise ImageRejected(TOO_SMALL, f"{w}x{h} is smaller than the {crop_size}x{crop_size} crop")
    if short > 2 * crop_size:
        if resize_short_side < crop_size:
            raise ValueError(f"resize_short_side {resize_short_side} < crop_size {crop_size}")
        factor = resize_short_side / short
        new_w, new_h = max(crop_size, round(w * factor)), max(crop_size, round(h * factor))
        rgb = np.asarray(Image.fromarray(rgb).resize((new_w, new_h), Image.Resampling.BICUBIC, reducing_gap=None))
        h, w = new_h, new_w
    top, left = (h - crop_size) // 2, (w - crop_size) // 2
    return np.ascontiguousarray(rgb[top:top + crop_size, left:left + crop_size])


def encode_png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()
