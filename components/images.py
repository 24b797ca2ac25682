"""Decoding any image file into 8-bit RGB, the training crop, and the patch grid; what an upscaled file keeps
of its input (ICC profile, EXIF) and the encoding that writes it.

Bad input raises `ImageRejected` with a machine-readable reason; callers quarantine it.
"""

from __future__ import annotations

import dataclasses
import io
import warnings

import numpy as np
from PIL import ExifTags, Image, ImageOps

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


def _open(data: bytes) -> tuple[Image.Image, list[str]]:
    """(the image, opened and loaded once; what Pillow warned of meanwhile), or ImageRejected naming why not.
    Pillow's warnings here concern metadata (e.g. a truncated EXIF block read at open): callers that carry
    metadata report them, none prints them."""
    if not data:
        raise ImageRejected(EMPTY_FILE, "the file has 0 bytes")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            img.load()
    except Image.UnidentifiedImageError:
        raise ImageRejected(NOT_AN_IMAGE, f"no image format recognised ({len(data)} bytes, "
                                          f"starting {data[:12]!r})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(TOO_LARGE, str(exc)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageRejected(CORRUPT, f"{type(exc).__name__}: {exc}") from None
    return img, [" ".join(str(w.message).split()) for w in caught]


def _arrays(img: Image.Image) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """An opened image -> what `decode` returns. The only place orientation is applied to pixels."""
    fmt = img.format
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a damaged EXIF block: `read_metadata` reports it
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


def decode(data: bytes) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """Any Pillow-readable image, opened once -> (rgb uint8 [H, W, 3], alpha uint8 [H, W] or None,
    was_grayscale).

    Grayscale, CMYK, palette and 16-bit images are converted (16-bit scaled, not clipped); EXIF
    orientation is applied; GIFs and other animations give their first frame.
    """
    return _arrays(_open(data)[0])


def decode_with_metadata(data: bytes) -> tuple[tuple[np.ndarray, np.ndarray | None, bool], Metadata]:
    """(`decode`'s result, `read_metadata`'s), the file opened once."""
    img, warned = _open(data)
    metadata = read_metadata(img)  # first: it reads the EXIF (Pillow caches it) with its warnings caught
    if warned:
        metadata = dataclasses.replace(metadata, dropped=(f"Pillow warned while reading it ({warned[0]}): "
                                                          "kept what could be read", *metadata.dropped))
    return _arrays(img), metadata


# ----------------------------------------------------------------------------- metadata an output keeps

# EXIF tags a TIFF input's getexif() lists that describe that file's own pixel layout (meaningless, or wrong,
# in another file), its ICC profile (carried on its own) and its XMP (not carried: it may hold an orientation
# of its own, which would then be applied twice)
_LAYOUT_TAGS = {ExifTags.Base[name] for name in (
    "NewSubfileType", "SubfileType", "BitsPerSample", "Compression", "PhotometricInterpretation",
    "FillOrder", "StripOffsets", "SamplesPerPixel", "RowsPerStrip", "StripByteCounts", "PlanarConfiguration",
    "Predictor", "ColorMap", "TileWidth", "TileLength", "TileOffsets", "TileByteCounts", "SubIFDs",
    "ExtraSamples", "SampleFormat", "JPEGTables", "JpegIFOffset", "JpegIFByteCount",
    "InterColorProfile", "XMLPacket")}
# The EXIF standard's limit (one JPEG APP1 segment); Pillow refuses a longer block for a JPEG
MAX_EXIF_BYTES = 65533
# ICC device classes a profile embedded in an image may have (not device links, abstract or named colours)
_IMAGE_PROFILE_CLASSES = (b"scnr", b"mntr", b"prtr", b"spac")
# Pillow writers that store an ICC profile and EXIF (its BMP writer stores neither)
KEEPS_METADATA = ("PNG", "JPEG", "WEBP", "TIFF")
ENCODE_OPTIONS = {"JPEG": {"quality": 95}, "WEBP": {"quality": 95}}


@dataclasses.dataclass(frozen=True)
class Metadata:
    """What an upscaled file keeps of its input: the ICC profile's bytes and the EXIF block (serialized; its
    orientation is the one `decode` applied to the pixels). `dropped`: what could not be kept, and why."""

    icc_profile: bytes | None = None
    exif: bytes | None = None
    dropped: tuple[str, ...] = ()


def _icc_problem(icc: bytes, space: bytes) -> str | None:
    """Why `icc` cannot tag pixels of colour space `space` (b"RGB " or b"GRAY"), or None."""
    if len(icc) < 132 or icc[36:40] != b"acsp" or int.from_bytes(icc[:4], "big") > len(icc):
        return f"not a valid ICC profile ({len(icc)} bytes)"
    if icc[12:16] not in _IMAGE_PROFILE_CLASSES:
        return f"a {icc[12:16].decode('latin-1')!r} profile is no image's profile"
    if icc[16:20] != space:
        # e.g. a CMYK JPEG's profile: `decode` made RGB of it, which that profile does not describe
        return (f"its colour space is {icc[16:20].decode('latin-1').strip()}, the pixels written are "
                f"{'grayscale' if space == b'GRAY' else 'RGB'}")
    try:
        from PIL import ImageCms
    except ImportError:  # Pillow without LittleCMS: the header checks above are all there is
        return None
    try:
        ImageCms.ImageCmsProfile(io.BytesIO(icc))
    except Exception as exc:  # noqa: BLE001 - LittleCMS's errors have no common type
        return f"LittleCMS cannot read it ({exc})"
    return None


def read_metadata(img: Image.Image) -> Metadata:
    """The ICC profile and EXIF of an opened image, as an upscaled copy of it should carry them: the profile
    as it is if it fits the pixels `decode` makes (RGB, or gray for grayscale inputs), the EXIF with Orientation 1
    (`decode` applies it to the pixels, once). What cannot be carried is left out and named in `dropped`."""
    dropped = []
    icc = img.info.get("icc_profile") or None
    if icc is not None:
        problem = _icc_problem(icc, b"GRAY" if img.mode in GRAY_MODES else b"RGB ")
        if problem:
            dropped.append(f"ICC profile left out: {problem}")
            icc = None
    exif = None
    try:
        with warnings.catch_warnings(record=True) as caught:  # e.g. "Truncated File Read": a note, not stderr
            warnings.simplefilter("always")
            tags = Image.Exif()
            tags.load(img.getexif().tobytes())  # a copy: the image's own is where `decode` reads the orientation
        dropped.extend(f"EXIF partly unreadable ({' '.join(str(w.message).split())}): kept what could be read"
                       for w in caught[:1])
        for tag in _LAYOUT_TAGS & set(tags):
            del tags[tag]
        if len(tags):
            tags[ExifTags.Base.Orientation] = 1
            exif = tags.tobytes()
    except Exception as exc:  # noqa: BLE001 - a broken EXIF block (Pillow raises many kinds) costs only itself
        dropped.append(f"EXIF left out: unreadable ({type(exc).__name__}: {exc})")
    if exif is not None and len(exif) > MAX_EXIF_BYTES:
        dropped.append(f"EXIF left out: {len(exif)} bytes, over the {MAX_EXIF_BYTES} the EXIF standard allows")
        exif = None
    return Metadata(icc, exif, tuple(dropped))


def _exif_for(exif: bytes, size: tuple[int, int]) -> bytes:
    """`exif` with the sizes it states (if any) set to `size` (width, height) of the file written."""
    tags = Image.Exif()
    tags.load(exif)
    sizes = ((tags, ExifTags.Base.ImageWidth, ExifTags.Base.ImageLength),
             (tags.get_ifd(ExifTags.IFD.Exif), ExifTags.Base.ExifImageWidth, ExifTags.Base.ExifImageHeight))
    for ifd, width_tag, height_tag in sizes:
        for tag, value in ((width_tag, size[0]), (height_tag, size[1])):
            if tag in ifd:
                ifd[tag] = value
    return tags.tobytes()


def encode(img: Image.Image, fmt: str, metadata: Metadata | None = None) -> bytes:
    """`img` as a `fmt` file (Pillow's name: PNG, JPEG, ...), with `metadata`'s ICC profile and EXIF where the
    format holds them. No colour is converted: the profile makes viewers read the output's values as they
    read the input's, and the model worked on those values."""
    options = dict(ENCODE_OPTIONS.get(fmt, {}))
    if metadata is not None and fmt in KEEPS_METADATA:
        if metadata.icc_profile:
            options["icc_profile"] = metadata.icc_profile
        if metadata.exif:
            options["exif"] = _exif_for(metadata.exif, img.size)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


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
