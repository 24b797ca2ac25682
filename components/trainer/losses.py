"""Per-example losses (shape [batch]); the step averages them over the GLOBAL batch."""

from __future__ import annotations

import os

import keras
import tensorflow as tf

VGG_NETWORKS = ("vgg19", "vgg16")
VGG_WEIGHTS_HELP = ("vgg_weights takes 'imagenet' (Keras cache, or a download where there is a network), a path or "
                    "URI to a no-top weights file of the network vgg_network names (.h5/.weights.h5), or 'none' "
                    "(RANDOM features: measured to make GAN images worse, see BENCHMARKS.md)")
# Layer presets, per network: the seed's single layer (SRGAN's VGG54) and Real-ESRGAN's weighted five
# (conv1_2 0.1, conv2_2 0.1, conv3_4 1, conv4_4 1, conv5_4 1; VGG16's last conv of a block is conv3).
VGG_LAYER_PRESETS = {
    "srgan": {"vgg19": {"block5_conv4": 1.0}, "vgg16": {"block5_conv3": 1.0}},
    "realesrgan": {n: {"block1_conv2": 0.1, "block2_conv2": 0.1, f"block3_conv{k}": 1.0, f"block4_conv{k}": 1.0,
                       f"block5_conv{k}": 1.0} for n, k in (("vgg19", 4), ("vgg16", 3))},
}
VGG_CONV_LAYERS = {
    "vgg19": [f"block{b}_conv{c}" for b, n in zip(range(1, 6), (2, 2, 4, 4, 4)) for c in range(1, n + 1)],
    "vgg16": [f"block{b}_conv{c}" for b, n in zip(range(1, 6), (2, 2, 3, 3, 3)) for c in range(1, n + 1)],
}


class VggWeightsError(ValueError):
    """The VGG weights asked for cannot be had, or do not fit the network."""


def parse_vgg_layers(spec: str, network: str) -> dict:
    """`vgg_layers` -> {layer: weight}: a preset (srgan, realesrgan), one layer name, or `name:weight,...`."""
    if network not in VGG_NETWORKS:
        raise VggWeightsError(f"vgg_network {network!r}: choose one of {', '.join(VGG_NETWORKS)}")
    spec = (spec or "").strip()
    if spec in VGG_LAYER_PRESETS:
        return dict(VGG_LAYER_PRESETS[spec][network])
    out = {}
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        name, _, weight = part.partition(":")
        name = name.strip()
        if name not in VGG_CONV_LAYERS[network]:
            raise VggWeightsError(f"vgg_layers {spec!r}: {name!r} is not a convolution of {network}; choose a preset "
                                  f"({', '.join(VGG_LAYER_PRESETS)}) or layers of {', '.join(VGG_CONV_LAYERS[network])}")
        try:
            w = float(weight) if weight else 1.0
        except ValueError:
            raise VggWeightsError(f"vgg_layers {spec!r}: the weight of {name} must be a number, got {weight!r}") from None
        if not w > 0:
            raise VggWeightsError(f"vgg_layers {spec!r}: the weight of {name} must be > 0, got {w}")
        out[name] = w
    if not out:
        raise VggWeightsError("vgg_layers is empty: name a preset or at least one layer")
    return out


def _vgg_base(network: str):
    return {"vgg19": keras.applications.VGG19, "vgg16": keras.applications.VGG16}[network]


def resolve_vgg_weights(spec: str, network: str = "vgg19"):
    """'none' -> None, 'imagenet' -> 'imagenet' (checked loadable), path/URI -> local path, checked to load
    into `network` here, before any worker starts (a file of another network is one error naming both)."""
    if network not in VGG_NETWORKS:
        raise VggWeightsError(f"vgg_network {network!r}: choose one of {', '.join(VGG_NETWORKS)}")
    if spec in (None, "", "none"):
        return None
    if spec == "imagenet":
        try:
            _vgg_base(network)(include_top=False, weights="imagenet")
        except Exception as exc:
            raise VggWeightsError(f"vgg_weights=imagenet: the ImageNet {network} weights could not be loaded from "
                                  f"the Keras cache or downloaded ({type(exc).__name__}: {str(exc)[:160]}). "
                                  + VGG_WEIGHTS_HELP) from None
        return "imagenet"
    from components import storage
    try:
        path = storage.stage_in(spec)
    except storage.StorageError as exc:
        raise VggWeightsError(f"vgg_weights={spec}: {exc}. " + VGG_WEIGHTS_HELP) from None
    if not os.path.isfile(path):
        raise VggWeightsError(f"vgg_weights={spec}: not a file. " + VGG_WEIGHTS_HELP)
    try:
        _vgg_base(network)(include_top=False, weights=None, input_shape=(None, None, 3)).load_weights(path)
    except Exception as exc:
        raise VggWeightsError(f"vgg_weights={spec} does not fit vgg_network={network} ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200]}): give a no-top weights file of {network}, or set "
                              "vgg_network to the network the file holds") from None
    return path


def build_vgg_features(layers, weights=None, network: str = "vgg19", before_activation: bool = False) -> keras.Model:
    """A frozen VGG (up to the deepest layer asked for) returning the features of `layers` (a list of
    conv layer names, in network order): after the ReLU (SRGAN), or before it (ESRGAN: the pre-activation
    features are denser and keep brightness information). `weights` as resolve_vgg_weights returns."""
    if isinstance(layers, str):
        layers = [layers]
    vgg = _vgg_base(network)(include_top=False, weights=weights if weights == "imagenet" else None,
                             input_shape=(None, None, 3))
    if weights not in (None, "imagenet"):
        vgg.load_weights(weights)
    unknown = [l for l in layers if l not in VGG_CONV_LAYERS[network]]
    if unknown:
        raise VggWeightsError(f"vgg_layers: {unknown[0]!r} is not a convolution of {network}; choose among "
                              f"{', '.join(VGG_CONV_LAYERS[network])}")
    order = VGG_CONV_LAYERS[network]
    last = max(order.index(l) for l in layers)
    inputs = keras.Input((None, None, 3), name="vgg_input")
    x, outputs = inputs, {}
    for layer in vgg.layers[1:]:
        if isinstance(layer, keras.layers.Conv2D):
            # the same kernel without its ReLU, so the pre-activation tensor exists in the graph
            conv = keras.layers.Conv2D(layer.filters, layer.kernel_size, padding=layer.padding, name=layer.name)
            pre = conv(x)
            conv.set_weights(layer.get_weights())
            x = keras.layers.ReLU(name=f"{layer.name}_relu")(pre)
            if layer.name in layers:
                outputs[layer.name] = pre if before_activation else x
            if order.index(layer.name) == last:
                break
        else:
            x = layer(x)
    model = keras.Model(inputs, [outputs[l] for l in layers], name=f"{network}_features")
    model.trainable = False
    return model


def vgg_input(images_unit):
    """[-1, 1] RGB -> what VGG was trained on: [0, 255] through preprocess_input (BGR, mean-centred; the same
    for VGG16 and VGG19)."""
    return keras.applications.vgg19.preprocess_input((tf.cast(images_unit, tf.float32) + 1.0) * 127.5)


CRITERIA = ("mse", "l1")


def criterion(name: str, a, b):
    """Per example: the mean over every other axis of (a - b)^2 (mse) or |a - b| (l1)."""
    d = tf.cast(a, tf.float32) - tf.cast(b, tf.float32)
    e = tf.square(d) if name == "mse" else tf.abs(d)
    return tf.reduce_mean(e, axis=list(range(1, len(e.shape))))


def perceptual(vgg: keras.Model, weights: list, crit: str, hr, sr):
    """Layer-weighted feature loss (BasicSR's PerceptualLoss): sum_l w_l * criterion(f_l(sr), f_l(hr)).
    The real images' features are constants: only the generated half back-propagates through VGG."""
    real = [tf.stop_gradient(f) for f in _as_list(vgg(vgg_input(hr), training=False))]
    fake = _as_list(vgg(vgg_input(sr), training=False))
    return tf.add_n([w * criterion(crit, f, r) for w, f, r in zip(weights, fake, real)])


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def vgg_mse(vgg: keras.Model, hr, sr):
    """Feature MSE. The real images' features are constants: computed outside the gradient, so the
    backward pass runs through VGG for the generated half only (one pass over [hr; sr] would
    back-propagate through both halves and throw one away: 25% more VGG FLOPs, measured slower)."""
    return perceptual(vgg, [1.0] * len(vgg.outputs), "mse", hr, sr)


def normalized_vgg_mse(vgg: keras.Model, hr, sr, eps: float = 1e-10):
    """Feature MSE after scaling each position's feature vector to unit length (as LPIPS does): its scale
    (at most 4) does not depend on the backbone's weights, so random, ImageNet or any other features give
    a content term of one magnitude beside the adversarial one."""
    def unit(f):
        f = tf.cast(f, tf.float32)
        return f / (tf.sqrt(tf.reduce_sum(tf.square(f), axis=-1, keepdims=True)) + eps)
    real = [tf.stop_gradient(unit(f)) for f in _as_list(vgg(vgg_input(hr), training=False))]
    fake = [unit(f) for f in _as_list(vgg(vgg_input(sr), training=False))]
    return tf.add_n([tf.reduce_mean(tf.reduce_sum(tf.square(r - f), axis=-1), axis=[1, 2]) for r, f in zip(real, fake)])


CONTENT_LOSSES = ("vgg", "vgg_normalized", "pixel", "feature_matching")
GAN_LOSSES = ("standard", "ragan")


def bce_logits(labels_value: float, logits):
    logits = tf.reshape(tf.cast(logits, tf.float32), [-1])
    return tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.fill(tf.shape(logits), labels_value), logits=logits)


def generator_adversarial(gan_loss: str, real_logits, fake_logits):
    """Per example. standard (SRGAN): -log D(fake). ragan (ESRGAN's relativistic average GAN): the
    generated image should look more real than the average real one, and the real less real than the
    average generated one; D's real logits are constants here. Batch means are over this replica's batch."""
    if gan_loss == "standard":
        return bce_logits(1.0, fake_logits)
    real = tf.stop_gradient(tf.reshape(tf.cast(real_logits, tf.float32), [-1]))
    fake = tf.reshape(tf.cast(fake_logits, tf.float32), [-1])
    return 0.5 * (bce_logits(0.0, real - tf.reduce_mean(fake)) + bce_logits(1.0, fake - tf.reduce_mean(real)))


def discriminator_losses(gan_loss: str, real_logits, fake_logits):
    """Per example (real term, fake term). standard: real->1, fake->0. ragan: the real more real than the
    average fake and the fake less real than the average real, each halved (BasicSR's ESRGAN)."""
    if gan_loss == "standard":
        return bce_logits(1.0, real_logits), bce_logits(0.0, fake_logits)
    real = tf.reshape(tf.cast(real_logits, tf.float32), [-1])
    fake = tf.reshape(tf.cast(fake_logits, tf.float32), [-1])
    return (0.5 * bce_logits(1.0, real - tf.reduce_mean(fake)),
            0.5 * bce_logits(0.0, fake - tf.reduce_mean(real)))


def feature_matching(real_features, fake_features):
    """Per example: the mean over D's layers of the L1 distance between its activations on the real and the
    generated image (pix2pixHD). Real activations are constants: the generator matches them."""
    terms = [criterion("l1", f, tf.stop_gradient(r)) for r, f in zip(real_features, fake_features)]
    return tf.add_n(terms) / len(terms)
