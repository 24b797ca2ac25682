"""Per-example losses (shape [batch]); the step averages them over the GLOBAL batch."""

from __future__ import annotations

import os

import keras
import tensorflow as tf

VGG_WEIGHTS_HELP = ("--vgg-weights takes 'imagenet' (Keras cache, or a download where there is a "
                    "network), a path to a VGG19 no-top .h5/.weights.h5 file, or 'none' (random features)")


class VggWeightsError(ValueError):
    """The VGG weights asked for cannot be had."""


def pixel_mse(hr, sr):
    return tf.reduce_mean(tf.square(tf.cast(hr, tf.float32) - tf.cast(sr, tf.float32)), axis=[1, 2, 3])


def resolve_vgg_weights(spec: str):
    """'none' -> None, 'imagenet' -> 'imagenet' (checked loadable), path/URI -> local path (checked)."""
    if spec in (None, "", "none"):
        return None
    if spec == "imagenet":
        try:
            keras.applications.VGG19(include_top=False, weights="imagenet")
        except Exception as exc:
            raise VggWeightsError(f"vgg_weights=imagenet: the ImageNet weights could not be loaded from the "
                                  f"Keras cache or downloaded ({type(exc).__name__}: {str(exc)[:160]}). "
                                  + VGG_WEIGHTS_HELP) from None
        return "imagenet"
    from components import storage
    try:
        path = storage.stage_in(spec)
    except storage.StorageError as exc:
        raise VggWeightsError(f"vgg_weights={spec}: {exc}. " + VGG_WEIGHTS_HELP) from None
    if not os.path.isfile(path):
        raise VggWeightsError(f"vgg_weights={spec}: not a file. " + VGG_WEIGHTS_HELP)
    return path


def build_vgg_features(layer: str = "block5_conv4", weights=None) -> keras.Model:
    """VGG19 up to `layer`, frozen. `weights` as returned by resolve_vgg_weights."""
    vgg = keras.applications.VGG19(include_top=False, weights=weights if weights == "imagenet" else None,
                                   input_shape=(None, None, 3))
    if weights not in (None, "imagenet"):
        vgg.load_weights(weights)
    try:
        out = vgg.get_layer(layer).output
    except ValueError:
        names = [l.name for l in vgg.layers if "conv" in l.name]
        raise VggWeightsError(f"vgg_layer={layer!r} is not a VGG19 layer; choose one of {names}") from None
    model = keras.Model(vgg.input, out, name=f"vgg19_{layer}")
    model.trainable = False
    return model


def vgg_input(images_unit):
    """[-1, 1] RGB -> what VGG19 was trained on: [0, 255] through vgg19.preprocess_input (BGR, mean-centred)."""
    return keras.applications.vgg19.preprocess_input((tf.cast(images_unit, tf.float32) + 1.0) * 127.5)


def vgg_mse(vgg: keras.Model, hr, sr):
    """Feature MSE. The real images' features are constants: computed outside the gradient, so the
    backward pass runs through VGG for the generated half only (one pass over [hr; sr] would
    back-propagate through both halves and throw one away: 25% more VGG FLOPs, measured slower)."""
    real = tf.stop_gradient(tf.cast(vgg(vgg_input(hr), training=False), tf.float32))
    fake = tf.cast(vgg(vgg_input(sr), training=False), tf.float32)
    return tf.reduce_mean(tf.square(real - fake), axis=[1, 2, 3])


def normalized_vgg_mse(vgg: keras.Model, hr, sr, eps: float = 1e-10):
    """Feature MSE after scaling each position's feature vector to unit length (as LPIPS does): its scale
    (at most 4) does not depend on the backbone's weights, so random, ImageNet or any other features give
    a content term of one magnitude beside the adversarial one."""
    def unit(f):
        f = tf.cast(f, tf.float32)
        return f / (tf.sqrt(tf.reduce_sum(tf.square(f), axis=-1, keepdims=True)) + eps)
    real = tf.stop_gradient(unit(vgg(vgg_input(hr), training=False)))
    fake = unit(vgg(vgg_input(sr), training=False))
    return tf.reduce_mean(tf.reduce_sum(tf.square(real - fake), axis=-1), axis=[1, 2])


CONTENT_LOSSES = ("vgg", "vgg_normalized", "pixel")


def bce_logits(labels_value: float, logits):
    logits = tf.reshape(tf.cast(logits, tf.float32), [-1])
    return tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.fill(tf.shape(logits), labels_value), logits=logits)
