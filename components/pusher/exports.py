"""The pusher's exports beside the SavedModel: `model.onnx` (ONNX Runtime) and `model.tflite` (LiteRT), checked
pixel for pixel against the SavedModel before a version commits.

Both are converted from one graph, `portable(generator)`: the generator with its bicubic layer (tf.image.resize,
ResizeBicubic: no LiteRT builtin, and ONNX Resize's cubic differs in coefficient and border handling) replaced by
`PortableBicubic`, the same interpolation written as a fixed convolution + depth_to_space (builtin in both).
Each export is then run by its own runtime on the check photos and compared with the SavedModel's output,
tiled the same way: it passes when at least 99.9% of pixel values are at most 1 gray level apart and none
more than 2 (TOLERANCE). The figures and the converters' versions go into the model card's `exports`.
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np

from components import runtimes
from components.errors import UserError

log = logging.getLogger("push")
ONNX_OPSET = 17
TOLERANCE = runtimes.TOLERANCE  # gray levels; share of pixel values within 1 level (`auto` checks it too)
FORMATS = ("onnx", "tflite", "tflite_fp16")          # push.exports: which to write (the SavedModel always is)
CHECK_TILE, CHECK_OVERLAP = 128, 16                   # the check upscales as jobs/upscale.py does by default


class ExportError(UserError):
    """An export could not be written, or its pixels do not agree with the SavedModel's; names the format."""


def _keys_cubic_taps(scale: int, a: float = -0.5) -> np.ndarray:
    """[scale, 5]: the weights of input pixels k-2..k+2 for output pixel scale*k + p (half-pixel centres, Keys'
    cubic with a = -0.5): what TensorFlow's ResizeBicubic (half_pixel_centers=True) uses."""
    def w(t):
        t = abs(t)
        return ((a + 2) * t - (a + 3)) * t * t + 1 if t <= 1 else ((a * t - 5 * a) * t + 8 * a) * t - 4 * a \
            if t < 2 else 0.0
    taps = np.zeros((scale, 5))
    for p in range(scale):
        pos = (p + 0.5) / scale - 0.5
        f = int(np.floor(pos))
        for m in range(-1, 3):
            taps[p, f + m + 2] = w(m - (pos - f))
    return taps


def _portable_bicubic_layer():
    import keras
    import tensorflow as tf

    class PortableBicubic(keras.layers.Layer):
        """models.BicubicUpsample as builtin ops: a 5x5 convolution (one output channel per sub-pixel position
        and colour) + depth_to_space. Pixels outside the image get weight 0 and the rest are renormalised, as
        ResizeBicubic does: the convolution of a zero-padded image divided by that of a zero-padded ones."""

        def __init__(self, scale: int = 4, **kwargs):
            super().__init__(**kwargs)
            self.scale = scale

        def call(self, x):
            s, c = self.scale, x.shape[-1]
            taps = _keys_cubic_taps(s)
            k2 = np.einsum("pi,qj->ijpq", taps, taps).reshape(5, 5, s * s).astype(np.float32)
            kernel = np.zeros((5, 5, c, s * s * c), np.float32)
            for ch in range(c):
                kernel[:, :, ch, ch::c] = k2  # depth_to_space reads channel (i*s + j)*c + ch for sub-pixel (i, j)
            pad = [[0, 0], [2, 2], [2, 2], [0, 0]]
            y = tf.nn.depth_to_space(tf.nn.conv2d(tf.pad(x, pad), kernel, 1, "VALID"), s)
            ones = tf.pad(tf.ones_like(x[..., :1]), pad)
            return y / tf.nn.depth_to_space(tf.nn.conv2d(ones, k2[:, :, None, :], 1, "VALID"), s)

        def get_config(self):
            return {**super().get_config(), "scale": self.scale}

    return PortableBicubic


def portable(generator):
    """The same generator (same weights) with BicubicUpsample replaced by PortableBicubic."""
    import keras

    from components import models

    layer_cls = _portable_bicubic_layer()

    def clone(layer):
        if isinstance(layer, models.BicubicUpsample):
            return layer_cls(layer.scale, name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    out = keras.models.clone_model(generator, clone_function=clone)
    out.set_weights(generator.get_weights())
    return out


def serving_graph(generator):
    """The graph every export is converted from: uint8 images -> uint8 SR of `portable(generator)`."""
    import tensorflow as tf

    from components import models

    model = portable(generator)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    def serve(images):
        return models.to_uint8(model(models.to_unit(images), training=False))

    return serve


def write_onnx(serve, path: str) -> dict:
    """`serve` (serving_graph's) as model.onnx."""
    import tf2onnx

    import onnx

    proto, _ = tf2onnx.convert.from_function(serve, input_signature=serve.input_signature, opset=ONNX_OPSET)
    old = proto.graph.output[0].name  # tf2onnx names it after the graph's Identity op: give it the signature's name
    for node in proto.graph.node:
        node.output[:] = ["sr" if o == old else o for o in node.output]
    proto.graph.output[0].name = "sr"
    onnx.save(proto, path)
    return {"file": runtimes.FILES["onnx"], "converter": f"tf2onnx {tf2onnx.__version__}", "opset": ONNX_OPSET,
            "runtime": f"onnxruntime {_version('onnxruntime')}", "input": "images uint8 [batch, height, width, 3]",
            "output": "sr uint8 [batch, 4*height, 4*width, 3]"}


def write_tflite(serve, path: str, float16: bool = False) -> dict:
    """`serve` (serving_graph's) as model.tflite, float32 or with float16 weights."""
    import tensorflow as tf

    # Without trackable_obj (TF warns it is deprecated): passed the model, TF 2.21's converter wrote a model.tflite
    # whose pixels were up to 255 levels off (measured; the pixel check caught it)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no Flex ops: plain LiteRT runs it
    if float16:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    data = converter.convert()
    with open(path, "wb") as f:
        f.write(data)
    return {"file": runtimes.FILES["tflite_fp16" if float16 else "tflite"],
            "converter": f"tf.lite.TFLiteConverter (tensorflow {tf.__version__})",
            "weights": "float16" if float16 else "float32", "runtime": f"ai-edge-litert {_version('ai-edge-litert')}",
            "input": "uint8 [batch, height, width, 3] (resize_tensor_input for each shape)",
            "output": "uint8 [batch, 4*height, 4*width, 3]"}


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def agreement(diffs: list[np.ndarray]) -> dict:
    """Figures of |export - SavedModel| over every pixel value (uint8 differences, all photos together)."""
    n = sum(d.size for d in diffs)
    within = sum(int((d <= 1).sum()) for d in diffs)
    return {"values": n, "identical": round(sum(int((d == 0).sum()) for d in diffs) / n, 6),
            "within_1": round(within / n, 6), "max_diff": int(max(int(d.max()) for d in diffs)),
            "mean_abs_diff": round(sum(float(d.sum(dtype=np.float64)) for d in diffs) / n, 6)}


def passes(figures: dict) -> bool:
    return figures["max_diff"] <= TOLERANCE["max_diff"] and figures["within_1"] >= TOLERANCE["min_within_1"]


def write_and_check(generator, local_dir: str, formats: list[str], photos: list[np.ndarray]) -> dict:
    """Write the asked exports into `local_dir` (beside its SavedModel) and check each against the SavedModel
    on `photos` (uint8 [h, w, 3] LR images). Returns the model card's `exports`; raises ExportError naming the
    format when one cannot be written or run, or disagrees (tflite_fp16 is dropped instead, with a note)."""
    from components import upscaler

    if not formats:
        return {"saved_model": {"file": "saved_model.pb", "runtime": "tensorflow"}}
    if not photos:
        raise ExportError("no photos to check the exports on (the dataset's eval split is empty)")
    reference = upscaler.load(local_dir)  # the SavedModel just written: what the exports must reproduce
    want = [upscaler.upscale_array(reference, p, CHECK_TILE, CHECK_OVERLAP) for p in photos]
    check_set = {"photos": len(photos), "lr_pixels": int(sum(p.shape[0] * p.shape[1] for p in photos)),
                 "tile_size": CHECK_TILE, "tile_overlap": CHECK_OVERLAP, "tolerance": TOLERANCE}
    out: dict = {"saved_model": {"file": "saved_model.pb", "runtime": "tensorflow"}, "check": check_set}
    serve = serving_graph(generator)  # one graph for every format
    for fmt in formats:
        path = os.path.join(local_dir, runtimes.FILES[fmt])
        started = time.time()
        try:
            meta = write_onnx(serve, path) if fmt == "onnx" else write_tflite(serve, path, fmt == "tflite_fp16")
        except Exception as exc:  # noqa: BLE001 - any converter failure fails the push, naming the format
            raise ExportError(f"export {fmt} ({runtimes.FILES[fmt]}) failed: {type(exc).__name__}: "
                              f"{str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}") from None
        meta["seconds_to_convert"] = round(time.time() - started, 2)
        figures = check_file(path, fmt, photos, want)
        meta["agreement"] = figures
        if not passes(figures):
            if fmt == "tflite_fp16":
                os.remove(path)
                out[fmt] = {"file": None, "dropped": f"float16 weights moved pixels beyond the tolerance: {figures}"}
                log.warning("export tflite_fp16 left out: %s", out[fmt]["dropped"])
                continue
            raise ExportError(f"export {fmt} ({runtimes.FILES[fmt]}) does not reproduce the SavedModel's pixels on "
                              f"the {len(photos)} check photos: {figures['within_1']:.4%} of values within 1 gray "
                              f"level (need >= {TOLERANCE['min_within_1']:.1%}), at most {figures['max_diff']} apart "
                              f"(need <= {TOLERANCE['max_diff']})")
        log.info("export %s: %s; %.4f%% of values within 1 level, max %d", fmt, runtimes.FILES[fmt],
                 100 * figures["within_1"], figures["max_diff"])
        out[fmt] = meta
    return out


def check_file(path: str, fmt: str, photos: list[np.ndarray], want: list[np.ndarray]) -> dict:
    """Run the export file by its runtime on `photos`, compare with `want`; ExportError if it cannot run."""
    from components import upscaler

    runtime = runtimes.ONNXRUNTIME if fmt == "onnx" else runtimes.LITERT
    try:
        fn = runtimes.file_fn(path, runtime)
        model = upscaler.Upscaler(fn, path, runtime)
        got = [upscaler.upscale_array(model, p, CHECK_TILE, CHECK_OVERLAP) for p in photos]
    except Exception as exc:  # noqa: BLE001 - a truncated or corrupt file: the format is named
        raise ExportError(f"export {fmt} ({runtimes.FILES[fmt]}) cannot be run by {runtime}: "
                          f"{type(exc).__name__}: {str(exc)[:300]}") from None
    bad = [(g.shape, w.shape) for g, w in zip(got, want) if g.shape != w.shape or g.dtype != np.uint8]
    if bad:
        raise ExportError(f"export {fmt} ({runtimes.FILES[fmt]}) returned the wrong shape or type: {bad[0]}")
    return agreement([np.abs(g.astype(np.int16) - w.astype(np.int16)).astype(np.uint8) for g, w in zip(got, want)])
