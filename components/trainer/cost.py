"""What a GAN step costs next to a pretraining step, predicted before the GAN phase has run one: the ETA
of a run's first phase covers the second too.

Timed, not counted: FLOPs predicted a GAN step at 16.7 pretraining steps for bench/gan.py's vgg16_one recipe
(32 x 8 generator, 64 px crops, VGG16 to block5_conv3), while the run measured 5.2 (48.1 vs 9.3 img/s): the
generator's small 16 px convolutions run far below the CPU's peak. Timed forward passes at the run's batch
shape predicted 8.9. The measured rate replaces the prediction once the GAN phase has steps."""

from __future__ import annotations

import time

import tensorflow as tf


def _forward_seconds(model, shape, repeats: int = 2) -> float:
    f = tf.function(lambda x: model(x, training=False))
    x = tf.zeros(shape)
    f(x)  # tracing
    started = time.perf_counter()
    for _ in range(repeats):
        f(x)
    return (time.perf_counter() - started) / repeats


def gan_to_pretrain_cost(generator, discriminator, vgg, batch: int, crop_size: int, scale: int) -> float:
    """A GAN step's time over a pretraining step's, from forward passes timed at the run's shapes.
    Backward = 2x forward where input and weight gradients are needed (G, D on SR), 1x where one is (D on HR:
    weights; VGG on SR: input); VGG on HR is forward only. A pretraining step is G forward + backward."""
    lr, hr = (batch, crop_size // scale, crop_size // scale, 3), (batch, crop_size, crop_size, 3)
    g = _forward_seconds(generator, lr)
    d = _forward_seconds(discriminator, hr)
    v = _forward_seconds(vgg, hr) if vgg is not None else 0.0
    return (3 * g + 5 * d + 3 * v) / max(3 * g, 1e-9)
