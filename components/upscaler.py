"""Using a trained generator: load it from any model URI, upscale arrays (tiled) and image files (which keep
their input's ICC profile and EXIF).

Shared by the evaluator (candidate and baseline models), the upscale command and the benchmarks.
A model is anything `load()` accepts: an exported version folder (its SavedModel is used: what users
pull), a `models/<name>` folder (LATEST, or `version`), a `generator.keras` file or a folder holding
one (a run folder). Every model is driven the same way: uint8 [b, h, w, 3] -> uint8 [b, 4h, 4w, 3].
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np

from components import images, runs, storage
from components.errors import UserError

log = logging.getLogger("upscale")
WRITABLE = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF",
            ".tiff": "TIFF"}


class UpscaleError(UserError):
    """The model or an input cannot be used; the message says which and why."""


class Upscaler:
    """A callable uint8 [b, h, w, 3] -> uint8 [b, 4h, 4w, 3], whatever the model was saved as."""

    def __init__(self, fn, source: str, kind: str, scale: int = 4, runtime: str = "tensorflow"):
        self.fn, self.source, self.kind, self.scale = fn, source, kind, scale
        self.runtime = runtime  # what runs it (components.runtimes): tensorflow, onnxruntime or litert

    def __call__(self, lr_uint8: np.ndarray) -> np.ndarray:
        lr_uint8 = np.asarray(lr_uint8)
        if lr_uint8.ndim != 4 or lr_uint8.shape[-1] != 3 or lr_uint8.dtype != np.uint8:
            raise ValueError(f"expected uint8 [b, h, w, 3], got {lr_uint8.dtype} {lr_uint8.shape}")
        return np.asarray(self.fn(lr_uint8))


def load(model_uri: str, version: str | int | None = None, strength: float | None = None,
         runtime: str = "tensorflow") -> Upscaler:
    """An Upscaler for a version folder, a models/<name> folder, a generator.keras or a run folder. `strength`
    (a version with a strength pair only): its two generators blended, strength * generator.keras +
    (1 - strength) * generator_strength0.keras. `runtime` (components.runtimes): tensorflow runs the SavedModel
    (or Keras); onnxruntime and litert run a version's model.onnx / model.tflite, without importing TensorFlow;
    auto (the jobs' default) lets `runtimes.choose` pick and logs its pick. The default here stays tensorflow:
    the evaluator and the push check compare against the SavedModel's exact pixels."""
    from components import registry, runtimes

    if registry.is_version_folder(model_uri) or storage.exists(storage.join(model_uri, registry.LATEST)) \
            or version is not None:
        folder = registry.resolve(model_uri, version)
        if strength is not None and runtime not in (runtimes.TENSORFLOW, runtimes.AUTO):
            raise UpscaleError(f"{folder}: --strength blends the version's two Keras generators, which only "
                               f"--runtime tensorflow can do (the exports hold the default strength)")
        card = registry.card(folder) if runtime != runtimes.TENSORFLOW else None
        chosen = _choose(runtime, card, folder, strength)  # auto with --strength: tensorflow
        if chosen != runtimes.TENSORFLOW:
            return _from_export(folder, chosen, card)
        local = storage.stage_in(folder)
        if strength is not None:
            return _at_strength(local, folder, strength)
        return _from_saved_model(local, folder)
    _choose(runtime, None, model_uri, strength)  # tensorflow, or one clear error for an explicit export runtime
    if strength is not None:
        raise UpscaleError(f"{model_uri}: --strength needs a pushed model version with a strength pair "
                           "(push.strength_base_run), not a single generator")
    if storage.exists(storage.join(model_uri, "saved_model.pb")):
        return _from_saved_model(storage.stage_in(model_uri), model_uri)
    keras_file = runs.find_generator(model_uri)
    if keras_file is None:
        raise UpscaleError(f"{model_uri}: not a model (no model.json, LATEST, saved_model.pb or generator.keras)")
    return _from_keras(keras_file)


def _choose(asked: str, card: dict | None, source: str, strength: float | None) -> str:
    from components import runtimes

    runtime, why = runtimes.choose(asked, card, source, strength)
    if asked == runtimes.AUTO:  # one line, so a user (or a replica's log) sees what runs the model
        log.info("%s: --runtime auto chose %s (%s)", source, runtime, why)
    return runtime


def _from_saved_model(local_dir: str, source: str) -> Upscaler:
    import tensorflow as tf

    serve = tf.saved_model.load(local_dir).signatures["serving_default"]
    return Upscaler(lambda x: serve(images=tf.constant(x))["sr"].numpy(), source, "saved_model")


def _from_export(folder: str, runtime: str, card: dict) -> Upscaler:
    """A version's model.onnx / model.tflite on its runtime; only that file and the card are staged."""
    from components import runtimes

    name = runtimes.export_entry(card, runtime, folder)["file"]
    local = storage.stage_in(folder, pattern=name)
    return Upscaler(runtimes.load_fn(local, card, runtime, folder), folder, runtime, card.get("scale") or 4,
                    runtime)


def _from_keras(keras_uri: str) -> Upscaler:
    import keras

    from components import models  # noqa: F401  (registers the custom layers load_model needs)

    generator = keras.saving.load_model(storage.stage_in(keras_uri), compile=False)
    return from_generator(generator, keras_uri)


def _at_strength(local_dir: str, source: str, strength: float) -> Upscaler:
    import keras

    from components import models, registry

    base = os.path.join(local_dir, registry.STRENGTH_BASE)
    if not os.path.exists(base):
        raise UpscaleError(f"{source}: this version has no strength pair (it was pushed without "
                           "push.strength_base_run): --strength cannot blend it; leave --strength out")
    generator = keras.saving.load_model(os.path.join(local_dir, runs.GENERATOR), compile=False)
    generator.set_weights(models.blend_weights(generator, keras.saving.load_model(base, compile=False), strength))
    return from_generator(generator, f"{source} at strength {strength:g}", "keras")


def from_generator(generator, source: str, kind: str = "keras") -> Upscaler:
    """An Upscaler for a Keras generator in memory (e.g. an interpolated one)."""
    import tensorflow as tf

    from components import models

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)], reduce_retracing=True)
    def run(x):
        return models.to_uint8(generator(models.to_unit(x), training=False))

    return Upscaler(lambda x: run(x).numpy(), source, kind)


# ----------------------------------------------------------------------------- arrays

def tiles(height: int, width: int, tile: int, overlap: int):
    """(core box, context box) per tile in LR pixels; boxes are (top, left, bottom, right).

    The cores cover the image without overlap; each context adds up to `overlap` pixels of real
    image around its core (not padding), so a tile sees what the whole-image pass would see nearby.
    """
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            core = (top, left, min(top + tile, height), min(left + tile, width))
            ctx = (max(0, top - overlap), max(0, left - overlap), min(height, core[2] + overlap),
                   min(width, core[3] + overlap))
            yield core, ctx


def upscale_array(model: Upscaler, rgb: np.ndarray, tile: int = 128, overlap: int = 16, batch: int = 4) -> np.ndarray:
    """uint8 [H, W, 3] -> uint8 [sH, sW, 3]. Images larger than one tile are cut into tiles with
    `overlap` LR pixels of context; tiles of equal shape run as one batch. Memory is bounded by
    `batch` tiles of (tile + 2 overlap)^2, plus the output image."""
    if tile < 1 or overlap < 0:
        raise UpscaleError(f"tile_size must be >= 1 and tile_overlap >= 0 (got {tile}, {overlap})")
    s = model.scale
    h, w = rgb.shape[:2]
    if h <= tile and w <= tile:
        return model(rgb[None])[0]
    out = np.empty((h * s, w * s, 3), np.uint8)
    groups: dict[tuple, list] = {}
    for core, ctx in tiles(h, w, tile, overlap):
        groups.setdefault((ctx[2] - ctx[0], ctx[3] - ctx[1]), []).append((core, ctx))
    for items in groups.values():
        for i in range(0, len(items), batch):
            chunk = items[i:i + batch]
            sr = model(np.stack([rgb[c[0]:c[2], c[1]:c[3]] for _core, c in chunk]))
            for (core, ctx), tile_sr in zip(chunk, sr):
                t, l = (core[0] - ctx[0]) * s, (core[1] - ctx[1]) * s
                out[core[0] * s:core[2] * s, core[1] * s:core[3] * s] = \
                    tile_sr[t:t + (core[2] - core[0]) * s, l:l + (core[3] - core[1]) * s]
    return out


def tile_count(height: int, width: int, tile: int) -> int:
    if height <= tile and width <= tile:
        return 1
    return -(-height // tile) * -(-width // tile)


# ----------------------------------------------------------------------------- files

def upscale_decoded(model: Upscaler, decoded: tuple, out_format: str, tile: int, overlap: int,
                    metadata: images.Metadata | None = None) -> bytes:
    """An `images.decode` result in, one encoded image (4x) out; alpha upscaled separately (bicubic),
    grayscale stays grayscale; `metadata` (`images.decode_with_metadata`'s) is written into it."""
    from PIL import Image

    rgb, alpha, gray = decoded
    sr = upscale_array(model, rgb, tile, overlap)
    if gray:
        img = Image.fromarray(np.round(sr.astype(np.float32).mean(-1)).astype(np.uint8), "L")
    else:
        img = Image.fromarray(sr, "RGB")
    if alpha is not None:
        a = Image.fromarray(alpha, "L").resize(img.size, Image.Resampling.BICUBIC)
        img = Image.merge("LA" if gray else "RGBA", [*img.split(), a])
    return images.encode(img, out_format, metadata)


def output_name(rel: str, has_alpha: bool) -> tuple[str, str]:
    """(output relative path, Pillow format): same format where Pillow writes it and it can hold the
    pixels, else PNG."""
    stem, ext = os.path.splitext(rel)
    ext = ext.lower()
    fmt = WRITABLE.get(ext)
    if fmt is None or (has_alpha and fmt in ("JPEG", "BMP")):
        return stem + ".png", "PNG"
    return stem + ext, fmt


def plan_files(inputs: list[str], output: str, extensions) -> list[tuple[str, str]]:
    """(input URI, output relative path) for files and folders (recursively) given as inputs."""
    plan = []
    for given in inputs:
        if storage.isdir(given):
            for f in storage.list_files(given):
                if storage.matches_extension(f, extensions):
                    plan.append((f, storage.join(storage.basename(given), storage.relpath(f, given))
                                 if len(inputs) > 1 else storage.relpath(f, given)))
        elif storage.exists(given):
            plan.append((given, storage.basename(given)))
        else:
            raise UpscaleError(f"{given}: no such file or folder")
    if not plan:
        raise UpscaleError("no images found in the inputs")
    out_root = storage.normalize(output).rstrip("/")
    for f, _rel in plan:
        if storage.normalize(f) == out_root or storage.normalize(f).startswith(out_root + "/"):
            raise UpscaleError(f"{f} is inside the output folder {output}: choose another --output "
                               "(inputs are never overwritten)")
    return plan


def upscale_files(model: Upscaler, inputs: list[str], output: str, tile: int = 128, overlap: int = 16,
                  extensions=images.READABLE_EXTENSIONS,
                  force: bool = False) -> list[dict]:
    """Upscale every image in `inputs` into the folder `output`. Unreadable files are reported and
    skipped (never a traceback); existing outputs are kept unless `force`. Each output keeps its input's ICC
    profile and EXIF (`images.read_metadata`). Returns one row per input."""
    from tqdm import tqdm

    plan = plan_files(inputs, output, extensions)
    rows = []
    started = time.time()
    with tqdm(total=len(plan), unit="img", desc="upscale", dynamic_ncols=True) as bar:
        for src, rel in plan:
            row = {"input": src}
            try:
                decoded, metadata = images.decode_with_metadata(storage.read_bytes(src))
                out_rel, fmt = output_name(rel, decoded[1] is not None)
                dest = storage.join(output, out_rel)
                row["output"] = dest
                if storage.exists(dest) and not force:
                    row["status"] = "exists (kept; --force replaces it)"
                else:
                    if metadata.dropped:  # the pixels are fine; say once what the file could not keep
                        log.warning("%s: %s", src, "; ".join(metadata.dropped))
                    storage.write_bytes(dest, upscale_decoded(model, decoded, fmt, tile, overlap, metadata))
                    row["status"] = "ok"
            except images.ImageRejected as exc:
                row["status"] = f"skipped: {exc.reason}: {exc.details}"
                log.warning("%s: %s", src, row["status"])
            rows.append(row)
            bar.update(1)
    log.info("upscaled %d of %d images in %.1f s -> %s", sum(r["status"] == "ok" for r in rows), len(rows),
             time.time() - started, output)
    return rows
