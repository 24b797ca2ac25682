"""Tagged test images: a Display P3 ICC profile built here (no profile ships on the test machines) and JPEGs
carrying it with EXIF."""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import ExifTags, Image

# Display P3's primaries adapted to the D50 PCS (the colorants of Apple's "Display P3" profile) and D50 white
P3_COLORANTS = {"rXYZ": (0.5151, 0.2412, -0.0011), "gXYZ": (0.2920, 0.6922, 0.0419), "bXYZ": (0.1571, 0.0666, 0.7841)}
D50 = (0.9642, 1.0, 0.8249)


def _s15(values) -> bytes:
    return b"".join(struct.pack(">i", round(v * 65536)) for v in values)


def display_p3_icc() -> bytes:
    """An ICC v2 display profile: Display P3 primaries, the sRGB transfer curve (1024 samples), D50 white."""
    x = np.linspace(0, 1, 1024)
    srgb_trc = np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)
    desc_text = b"Display P3 (test)\0"
    tags = {
        "desc": (b"desc\0\0\0\0" + struct.pack(">I", len(desc_text)) + desc_text
                 + b"\0" * 8 + b"\0" * 3 + b"\0" * 67),  # no Unicode, no ScriptCode description
        "cprt": b"text\0\0\0\0No copyright, test data\0",
        "wtpt": b"XYZ \0\0\0\0" + _s15(D50),
        **{sig: b"XYZ \0\0\0\0" + _s15(xyz) for sig, xyz in P3_COLORANTS.items()},
        "rTRC": b"curv\0\0\0\0" + struct.pack(">I", 1024) + np.round(srgb_trc * 65535).astype(">u2").tobytes(),
    }
    tags["gTRC"] = tags["bTRC"] = tags["rTRC"]
    offset = 128 + 4 + 12 * len(tags)
    table, data = struct.pack(">I", len(tags)), b""
    for sig, body in tags.items():
        table += sig.encode() + struct.pack(">II", offset + len(data), len(body))
        data += body + b"\0" * (-len(body) % 4)  # tags start on 4-byte boundaries
    size = offset + len(data)
    header = (struct.pack(">I", size) + b"\0\0\0\0" + bytes([2, 0x10, 0, 0]) + b"mntrRGB XYZ "
              + struct.pack(">6H", 2026, 1, 1, 0, 0, 0) + b"acsp" + b"\0" * 24 + struct.pack(">I", 0)
              + _s15(D50) + b"\0" * 48)
    assert len(header) == 128
    return header + table + data


def camera_exif(orientation: int, width: int, height: int) -> bytes:
    """EXIF as a camera writes it: Make, Model, DateTimeOriginal, Orientation and the stored pixel sizes."""
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "TestCam"
    exif[ExifTags.Base.Model] = "P3 One"
    exif[ExifTags.Base.Orientation] = orientation
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    sub[ExifTags.Base.DateTimeOriginal] = "2026:01:02 03:04:05"
    sub[ExifTags.Base.ExifImageWidth], sub[ExifTags.Base.ExifImageHeight] = width, height
    return exif.tobytes()


def jpeg(rgb: np.ndarray, **tags) -> bytes:
    """`rgb` as a quality-92 JPEG with `tags` (icc_profile=, exif=); the same pixels with or without them."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=92, **tags)
    return buf.getvalue()
