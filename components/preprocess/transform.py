"""The tensorflow-transform preprocessing_fn: HR images -> (hr, lr) records, plus dataset statistics.

Raw input per example: `hr_raw` (the image's uint8 bytes, height x width x 3), `height`, `width`,
`source`, and in patches mode `patch_top`, `patch_left` (where the HR sits in the source photo).
Sizes are per instance: center crops and train patches all have one size, eval photos in patches mode
each their own.
Output: `hr`, `lr` (PNG bytes; LR from the shared degradation function), `source`, the positions when
given, and the analyzer results `stats_*` (full-pass statistics of the training split, constant per
example). Only the record features are written to records; the stats go into dataset.json.
"""

from __future__ import annotations

import tensorflow as tf

from components.dataset import POSITION_FEATURES
from components.degradation import degrade

STATS_PREFIX = "stats_"
# zlib level of the record PNGs. 1, not libpng's default 6: on 128 px face crops 6 costs about 5 ms per HR
# image (most of the transform's time) for files 5% smaller; the decoded pixels are the same at any level
# (bench/preprocess_ops.py, BENCHMARKS.md "Throughput: where the time goes").
PNG_COMPRESSION = 1


def raw_feature_spec(positions: bool) -> dict:
    spec = {
        "hr_raw": tf.io.FixedLenFeature([], tf.string),
        "height": tf.io.FixedLenFeature([], tf.int64),
        "width": tf.io.FixedLenFeature([], tf.int64),
        "source": tf.io.FixedLenFeature([], tf.string),
    }
    if positions:
        spec.update({name: tf.io.FixedLenFeature([], tf.int64) for name in POSITION_FEATURES})
    return spec


def _moments(image):
    """uint8 [h, w, 3] -> int64 [4, 3]: per channel the sum, the sum of squares, the min and the max."""
    x = tf.cast(tf.reshape(image, [-1, 3]), tf.int64)
    return tf.stack([tf.reduce_sum(x, 0), tf.reduce_sum(x * x, 0), tf.reduce_min(x, 0), tf.reduce_max(x, 0)])


def _total(x):
    """The split's sum of an int64 tensor over its first axis, as float64: tf.Transform adds int64 (exact)."""
    import tensorflow_transform as tft

    return tf.cast(tft.sum(x, reduce_instance_dims=False), tf.float64)


def make_preprocessing_fn(scale: int, positions: bool):
    import tensorflow_transform as tft

    def encode_one(args):
        """One instance at its own size -> (hr png, lr png, hr moments, lr moments). Each pass computes only
        what it fetches: the analysis the moments, the transform the PNGs (TF prunes the loop's unused outputs)."""
        raw, height, width = args
        hr = tf.reshape(tf.io.decode_raw(raw, tf.uint8), tf.stack([height, width, 3]))
        lr = degrade(hr, scale)
        return (tf.io.encode_png(hr, compression=PNG_COMPRESSION), tf.io.encode_png(lr, compression=PNG_COMPRESSION),
                _moments(hr), _moments(lr))

    def preprocessing_fn(inputs):
        height, width = tf.cast(inputs["height"], tf.int32), tf.cast(inputs["width"], tf.int32)
        hr_png, lr_png, hr_moments, lr_moments = tf.map_fn(
            encode_one, (inputs["hr_raw"], height, width),
            fn_output_signature=(tf.string, tf.string, tf.TensorSpec([4, 3], tf.int64), tf.TensorSpec([4, 3], tf.int64)))
        batch = tf.shape(inputs["hr_raw"])[0]
        # Per-channel pixel statistics over the whole split (0..255 units): the drift baseline. From per-image
        # integer moments rather than every pixel as float32 (tft.mean/var over [pixels, 3] cost as much as the
        # PNG encodes, and their float32 batch sums made the result depend on the batching).
        hr_pixels = _total(tf.cast(inputs["height"] * inputs["width"], tf.int64))
        hr_mean = _total(hr_moments[:, 0]) / hr_pixels
        hr_var = _total(hr_moments[:, 1]) / hr_pixels - hr_mean * hr_mean  # population variance, as before
        stats = {
            "hr_mean": tf.cast(hr_mean, tf.float32),
            "hr_std": tf.cast(tf.sqrt(tf.maximum(hr_var, 0.0)), tf.float32),
            "hr_min": tf.cast(tft.min(hr_moments[:, 2], reduce_instance_dims=False), tf.float32),
            "hr_max": tf.cast(tft.max(hr_moments[:, 3], reduce_instance_dims=False), tf.float32),
            "lr_mean": tf.cast(_total(lr_moments[:, 0]) / (hr_pixels / (scale * scale)), tf.float32),
        }
        out = {"hr": hr_png, "lr": lr_png, "source": inputs["source"]}
        if positions:
            out.update({name: inputs[name] for name in POSITION_FEATURES})
        for name, value in stats.items():
            out[STATS_PREFIX + name] = tf.tile(tf.reshape(value, [1, 3]), [batch, 1])
        return out

    return preprocessing_fn
