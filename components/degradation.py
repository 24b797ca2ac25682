"""The one HR -> LR degradation, in pure TensorFlow so it runs inside the transform graph.

Every component (the Beam job, the evaluator, benchmarks, tests) calls `degrade`; nothing else
downsamples. Antialiased bicubic (Keys a=-0.5 stretched by the scale) is what MATLAB's `imresize`
does, the convention SR papers evaluate with; it is checked against a numpy port of `imresize`.
"""

from __future__ import annotations

import tensorflow as tf

SCALE = 4


def degrade(hr, scale: int = SCALE) -> tf.Tensor:
    """uint8 [..., H, W, C] -> uint8 [..., H/scale, W/scale, C] (H, W must be multiples of `scale`)."""
    hr = tf.convert_to_tensor(hr)
    if hr.dtype != tf.uint8:
        raise TypeError(f"degrade expects uint8 pixels, got {hr.dtype.name}")
    shape = tf.shape(hr)
    h, w = shape[-3], shape[-2]
    static_h, static_w = hr.shape[-3], hr.shape[-2]
    if static_h is not None and static_w is not None and (static_h % scale or static_w % scale):
        raise ValueError(f"HR size {static_h}x{static_w} is not a multiple of the scale {scale}")
    lr = tf.image.resize(tf.cast(hr, tf.float32), [h // scale, w // scale], method="bicubic", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(lr), 0.0, 255.0), tf.uint8)
