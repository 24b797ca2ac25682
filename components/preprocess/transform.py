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


def _pixels(raw_bytes):
    """All pixels of a batch of raw images as [n, 3] float32, in batch order (one join: sizes may differ)."""
    return tf.reshape(tf.cast(tf.io.decode_raw(tf.strings.reduce_join(raw_bytes), tf.uint8), tf.float32), [-1, 3])


def make_preprocessing_fn(scale: int, positions: bool):
    import tensorflow_transform as tft

    def encode_one(args):
        """One instance at its own size -> (hr png, lr png, lr pixels flattened for the statistics)."""
        raw, height, width = args
        hr = tf.reshape(tf.io.decode_raw(raw, tf.uint8), tf.stack([height, width, 3]))
        lr = degrade(hr, scale)
        return tf.io.encode_png(hr), tf.io.encode_png(lr), tf.reshape(lr, [-1])

    def preprocessing_fn(inputs):
        hr_png, lr_png, lr_flat = tf.map_fn(
            encode_one, (inputs["hr_raw"], tf.cast(inputs["height"], tf.int32), tf.cast(inputs["width"], tf.int32)),
            fn_output_signature=(tf.string, tf.string, tf.RaggedTensorSpec([None], tf.uint8)))
        batch = tf.shape(inputs["hr_raw"])[0]
        # Per-channel pixel statistics over the whole split (0..255 units): the drift baseline.
        pixels = _pixels(inputs["hr_raw"])
        stats = {
            "hr_mean": tft.mean(pixels, reduce_instance_dims=False),
            "hr_std": tf.sqrt(tft.var(pixels, reduce_instance_dims=False)),
            "hr_min": tf.cast(tft.min(pixels, reduce_instance_dims=False), tf.float32),
            "hr_max": tf.cast(tft.max(pixels, reduce_instance_dims=False), tf.float32),
            "lr_mean": tft.mean(tf.reshape(tf.cast(lr_flat.flat_values, tf.float32), [-1, 3]),
                                reduce_instance_dims=False),
        }
        out = {"hr": hr_png, "lr": lr_png, "source": inputs["source"]}
        if positions:
            out.update({name: inputs[name] for name in POSITION_FEATURES})
        for name, value in stats.items():
            out[STATS_PREFIX + name] = tf.tile(tf.reshape(value, [1, 3]), [batch, 1])
        return out

    return preprocessing_fn
