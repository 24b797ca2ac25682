"""The evaluation's severity ladder: the eval split under degradations of increasing severity.

Rungs, from the training distribution outwards:

- `clean`: the eval split as preprocessing stored it (LR = the shared `degrade()`); always scored.
- `mild`, `moderate`: one camera-like pass, written here on purpose apart from the training sampler
  (components/degradation.py), with other libraries (Pillow + numpy, not TensorFlow) and another
  pipeline: Gaussian blur (Pillow's `GaussianBlur`, sigma in HR pixels), bicubic downscale by the scale
  (Pillow's `resize`, which widens its filter when reducing: antialiased), Gaussian sensor noise (numpy,
  per channel, sigma in gray levels), then a JPEG encode/decode (Pillow, 4:2:0). A model trained with
  `degradation: realistic` has never seen these exact LRs, and one trained on clean LR has seen none.
- `harsh`: the fixed Real-ESRGAN draw (`degrade_fixed` of the training sampler's ranges, the evaluator's
  `degraded` section since before the ladder); the evaluator makes it, not this module.

Every draw is fixed per image: its numpy Generator is seeded by a hash of the rung's and the image's
names, so every model (the candidate, LATEST, a later run) is scored on the same LR, whatever the order
of the records. The drawn parameters are returned with the LR, for metrics.json.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io

import numpy as np
from PIL import Image, ImageFilter

RUNGS = ("clean", "mild", "moderate", "harsh")  # in order of severity
SCORED = RUNGS[1:]                                # the ones `eval_rungs` may name (clean is always scored)


@dataclasses.dataclass(frozen=True)
class CameraRung:
    """Ranges of one single-pass rung; each draw is uniform within its [min, max]."""
    blur_sigma: tuple[float, float]   # Gaussian blur sigma, HR pixels
    noise_sigma: tuple[float, float]  # Gaussian noise sigma, gray levels (0..255) of the LR
    jpeg_quality: tuple[int, int]     # Pillow JPEG quality, rounded to an integer

    def ranges(self) -> dict:
        return {k: list(v) for k, v in dataclasses.asdict(self).items()}


CAMERA_RUNGS = {
    "mild": CameraRung(blur_sigma=(0.6, 1.2), noise_sigma=(1.0, 5.0), jpeg_quality=(60, 90)),
    "moderate": CameraRung(blur_sigma=(1.2, 2.0), noise_sigma=(5.0, 12.0), jpeg_quality=(35, 60)),
}


def seed(rung: str, name: str) -> int:
    """The seed of image `name`'s draw on `rung`: 64 bits of sha256 over both names."""
    return int.from_bytes(hashlib.sha256(f"ladder/{rung}/{name}".encode("utf-8")).digest()[:8], "big")


def draw(rung: str, name: str) -> tuple[dict, np.random.Generator]:
    """The parameters of image `name` on `rung` (blur_sigma, noise_sigma, jpeg_quality) and the generator,
    positioned after them, that then draws the noise field."""
    spec = CAMERA_RUNGS[rung]
    rng = np.random.default_rng(seed(rung, name))
    params = {"blur_sigma": float(rng.uniform(*spec.blur_sigma)),
              "noise_sigma": float(rng.uniform(*spec.noise_sigma)),
              "jpeg_quality": int(round(rng.uniform(*spec.jpeg_quality)))}
    return params, rng


def camera_degrade(hr: np.ndarray, name: str, rung: str, scale: int = 4) -> tuple[np.ndarray, dict]:
    """uint8 HR [H, W, 3] (H, W multiples of `scale`) -> (uint8 LR [H/scale, W/scale, 3], the parameters
    drawn), a pure function of (HR, name, rung): blur, bicubic downscale, Gaussian noise, JPEG."""
    hr = np.asarray(hr)
    if hr.dtype != np.uint8 or hr.ndim != 3 or hr.shape[2] != 3:
        raise ValueError(f"camera_degrade expects uint8 [H, W, 3], got {hr.dtype} {hr.shape}")
    h, w = hr.shape[:2]
    if h % scale or w % scale:
        raise ValueError(f"HR size {h}x{w} is not a multiple of the scale {scale}")
    params, rng = draw(rung, name)
    img = Image.fromarray(hr, "RGB").filter(ImageFilter.GaussianBlur(params["blur_sigma"]))
    img = img.resize((w // scale, h // scale), Image.Resampling.BICUBIC)
    lr = np.asarray(img, dtype=np.float64) + rng.normal(0.0, params["noise_sigma"], (h // scale, w // scale, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(np.round(lr), 0, 255).astype(np.uint8), "RGB").save(
        buf, format="JPEG", quality=params["jpeg_quality"])
    buf.seek(0)
    with Image.open(buf) as decoded:
        return np.asarray(decoded.convert("RGB")), params


def camera_split(rows: list[dict], rung: str, scale: int) -> tuple[list[dict], dict]:
    """The eval split's HR with LR from `rung` ({'name', 'hr', 'hr_niqe', 'lr'} rows, HR shared with the
    clean rows), and the rung's parameters: its ranges, how the seeds are made, and each image's draw."""
    out, per_image = [], {}
    for r in rows:
        lr, params = camera_degrade(r["hr"], r["name"], rung, scale)
        out.append({"name": r["name"], "hr": r["hr"], "hr_niqe": r.get("hr_niqe"), "lr": lr})
        per_image[r["name"]] = params
    return out, {"ranges": CAMERA_RUNGS[rung].ranges(), "seed": f"sha256('ladder/{rung}/<image>')[:8]",
                 "pipeline": "Pillow GaussianBlur -> Pillow bicubic resize (reducing) -> numpy Gaussian noise "
                             "-> Pillow JPEG", "per_image": per_image}


def parse(value: str | None) -> list[str]:
    """Comma-separated rung names -> a list (empty entries dropped, order kept); no validation."""
    return [v.strip() for v in (value or "").split(",") if v.strip()]
