"""Decoding any image file into 8-bit RGB, the training crop, and the patch grid.

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
# What the upscaler and the evaluator's --eval-images read (case-insensitive). The preprocess component's
# `image_extensions` key keeps its own default: it is part of every dataset id.
READABLE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


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


GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def decode(data: bytes) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """Any Pillow-readable image, opened once -> (rgb uint8 [H, W, 3], alpha uint8 [H, W] or None,
    was_grayscale).

    Grayscale, CMYK, palette and 16-bit images are converted (16-bit scaled, not clipped); EXIF
    orientation is applied; GIFs and other animations give their first frame.
    """
    if not data:
        raise ImageRejected(EMPTY_FILE, "the file has 0 bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            fmt = img.format
            img.load()
    except Image.UnidentifiedImageError:
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
    gray = mode in GRAY_MODES
    try:
        if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
            return np.repeat(_to_uint8(np.asarray(img), mode)[..., None], 3, axis=-1), None, gray
        if mode in ALPHA_MODES or (mode == "P" and "transparency" in img.info):
            rgba = np.asarray(img.convert("RGBA"), dtype=np.uint8)
            return np.ascontiguousarray(rgba[..., :3]), np.ascontiguousarray(rgba[..., 3]), gray
        return np.asarray(img.convert("RGB"), dtype=np.uint8).copy(), None, gray
    except (OSError, ValueError) as exc:
        raise ImageRejected(CORRUPT, f"cannot convert {fmt} mode {mode} to RGB: {exc}") from None


def decode_rgb(data: bytes) -> np.ndarray:
    """Any Pillow-readable image -> uint8 [H, W, 3] RGB; alpha is composited over white (see `decode`)."""
    rgb, alpha, _gray = decode(data)
    if alpha is None:
        return rgb
    rgba = Image.fromarray(np.concatenate([rgb, alpha[..., None]], -1), "RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"), dtype=np.uint8).copy()


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


def _starts(length: int, size: int, stride: int) -> list[int]:
    """Patch starts along one axis: every `stride` from 0, plus one aligned to the far border when the
    stride does not land there (so every pixel is covered); none when `length < size`."""
    if length < size:
        return []
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


def patch_grid(h: int, w: int, size: int, stride: int) -> list[tuple[int, int]]:
    """(top, left) of every `size` square patch of an h x w image, row by row. Starts go every `stride`
    pixels; the last row and column of patches are aligned to the bottom and right borders, so they may
    overlap their neighbours by more than the others do. Empty when the image is smaller than `size`."""
    return [(top, left) for top in _starts(h, size, stride) for left in _starts(w, size, stride)]


def patch_detail(patch: np.ndarray) -> float:
    """Mean absolute gray-level gradient (0-255 units): about 0 on sky or a studio backdrop, 5-30 on texture."""
    gray = patch.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return float((np.abs(np.diff(gray, axis=0)).mean() + np.abs(np.diff(gray, axis=1)).mean()) / 2)


def select_evenly(n: int, k: int | None) -> list[int]:
    """Indices of at most `k` of `n` items, evenly spaced and always the same for the same (n, k)."""
    if k is None or n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / max(k - 1, 1)) for i in range(k)})


def check_min_side(rgb: np.ndarray, size: int) -> None:
    h, w = rgb.shape[:2]
    if min(h, w) < size:
        raise ImageRejected(TOO_SMALL, f"{w}x{h} is smaller than the {size}x{size} patch")


def eval_region(h: int, w: int, scale: int, max_pixels: int) -> tuple[int, int, int, int]:
    """(top, left, height, width) of what an eval photo keeps: the whole photo with each side cut down to a
    multiple of `scale`; if that is over `max_pixels`, both sides shrink by the same factor (to multiples of
    `scale`), i.e. the largest centered crop of the photo's aspect ratio that fits. Centered in both cases."""
    th, tw = h - h % scale, w - w % scale
    if th * tw > max_pixels:
        factor = (max_pixels / (th * tw)) ** 0.5
        th = max(scale, int(th * factor) // scale * scale)
        tw = max(scale, int(tw * factor) // scale * scale)
    return (h - th) // 2, (w - tw) // 2, th, tw


def encode_png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()
