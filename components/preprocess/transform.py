"""The tensorflow-transform preprocessing_fn: HR crop -> (hr, lr) records, plus dataset statistics.

Raw input per example: `hr_raw` (the crop's uint8 bytes, crop x crop x 3) and `source`.
Output: `hr`, `lr` (PNG bytes; LR from the shared degradation function), `source`, and the
analyzer results `stats_*` (full-pass statistics of the training split, constant per example).
Only RECORD_FEATURES are written to records; the stats go into dataset.json.
"""

from __future__ import annotations

import tensorflow as tf

from components.degradation import degrade

RAW_FEATURE_SPEC = {
    "hr_raw": tf.io.FixedLenFeature([], tf.string),
    "source": tf.io.FixedLenFeature([], tf.string),
}
STATS_PREFIX = "stats_"


def make_preprocessing_fn(crop_size: int, scale: int):
    import tensorflow_transform as tft

    def preprocessing_fn(inputs):
        hr = tf.reshape(tf.io.decode_raw(inputs["hr_raw"], tf.uint8), [-1, crop_size, crop_size, 3])
        lr = degrade(hr, scale)
        batch = tf.shape(hr)[0]
        # Per-channel pixel statistics over the whole split (0..255 units): the drift baseline.
        pixels = tf.reshape(tf.cast(hr, tf.float32), [-1, 3])
        stats = {
            "hr_mean": tft.mean(pixels, reduce_instance_dims=False),
            "hr_std": tf.sqrt(tft.var(pixels, reduce_instance_dims=False)),
            "hr_min": tf.cast(tft.min(pixels, reduce_instance_dims=False), tf.float32),
            "hr_max": tf.cast(tft.max(pixels, reduce_instance_dims=False), tf.float32),
            "lr_mean": tft.mean(tf.reshape(tf.cast(lr, tf.float32), [-1, 3]), reduce_instance_dims=False),
        }

        def png(images):
            return tf.map_fn(tf.io.encode_png, images, fn_output_signature=tf.string)
        out = {"hr": png(hr), "lr": png(lr), "source": inputs["source"]}
        for name, value in stats.items():
            out[STATS_PREFIX + name] = tf.tile(tf.reshape(value, [1, 3]), [batch, 1])
        return out

    return preprocessing_fn
