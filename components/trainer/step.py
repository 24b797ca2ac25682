"""The distributed training steps: `strategy.run` over per-replica batches, losses averaged over the
global batch, gradients of both models all-reduced in ONE collective, updates skipped when anything
is non-finite.

The optimizers apply the already-reduced gradients in cross-replica context, where Keras does no
all-reduce of its own: collectives inside a cond, one per optimizer, ran in different orders on
different replicas and failed (shape mismatch), and every replica must take the same branch anyway.
"""

from __future__ import annotations

import tensorflow as tf

from components import models
from components.trainer import losses

SUM = tf.distribute.ReduceOp.SUM


def _all_finite(values) -> tf.Tensor:
    checks = [tf.reduce_all(tf.math.is_finite(tf.cast(v, tf.float32))) for v in values if v is not None]
    return tf.reduce_all(tf.stack(checks))


class SRGANSteps:
    """Builds `pretrain_step(dist_batch)` and `gan_step(dist_batch)`; each returns (metrics, applied)."""

    def __init__(self, strategy, generator, discriminator, g_opt, d_opt, vgg, *, global_batch_size: int,
                 content_loss: str = "vgg", content_weight: float = 1.0, adversarial_weight: float = 1e-3,
                 pixel_weight: float = 0.0, loss_scale: float = 1.0, jit: bool = False,
                 vgg_layer_weights: list | None = None, vgg_criterion: str = "mse", gan_loss: str = "standard",
                 pixel_criterion: str = "mse", ema=None, ema_decay: float = 0.0):
        if content_loss not in losses.CONTENT_LOSSES:
            raise ValueError(f"content_loss must be one of {losses.CONTENT_LOSSES}, got {content_loss!r}")
        if content_loss.startswith("vgg") and vgg is None:
            raise ValueError(f"content_loss={content_loss!r} needs a VGG feature model")
        if gan_loss not in losses.GAN_LOSSES:
            raise ValueError(f"gan_loss must be one of {losses.GAN_LOSSES}, got {gan_loss!r}")
        if ema_decay and ema is None:
            raise ValueError("ema_decay > 0 needs the EMA generator")
        self.strategy, self.G, self.D, self.g_opt, self.d_opt, self.vgg = (
            strategy, generator, discriminator, g_opt, d_opt, vgg)
        # one forward pass of D gives its logits and (for feature matching) its activations
        self.D_features = models.discriminator_features(discriminator) if content_loss == "feature_matching" else None
        self.vgg_layer_weights = vgg_layer_weights or ([1.0] * len(vgg.outputs) if vgg is not None else [])
        self.vgg_criterion, self.gan_loss, self.pixel_criterion = vgg_criterion, gan_loss, pixel_criterion
        self.ema, self.ema_decay = ema, ema_decay
        with strategy.scope():  # slots made lazily inside the step's cond would break with 2+ replicas
            for opt, model in ((g_opt, generator), (d_opt, discriminator)):
                if not opt.built:
                    opt.build(model.trainable_variables)
        self.global_batch_size = global_batch_size
        self.content_loss, self.content_weight, self.adversarial_weight = content_loss, content_weight, adversarial_weight
        self.pixel_weight = pixel_weight
        # float16 needs loss scaling; halved on every non-finite step. 1.0 (a no-op) otherwise.
        self.loss_scale = tf.Variable(loss_scale, trainable=False, dtype=tf.float32, name="loss_scale")
        self.dynamic_scale = loss_scale != 1.0
        self.nonfinite_steps = tf.Variable(0, trainable=False, dtype=tf.int64, name="nonfinite_steps")
        self._pretrain_replica = tf.function(self._pretrain_replica_fn, jit_compile=jit) if jit else self._pretrain_replica_fn
        self._gan_replica = tf.function(self._gan_replica_fn, jit_compile=jit) if jit else self._gan_replica_fn
        self.pretrain_step = tf.function(self._pretrain_step)
        self.gan_step = tf.function(self._gan_step)

    # ------------------------------------------------------------------ per replica

    def _avg(self, per_example):
        return tf.nn.compute_average_loss(per_example, global_batch_size=self.global_batch_size)

    def _grads(self, tape, scaled_loss, variables):
        """Gradients of a loss that was multiplied by loss_scale inside the tape, unscaled."""
        return [g / self.loss_scale for g in tape.gradient(scaled_loss, variables)]

    @staticmethod
    def _all_reduce(grads):
        """Sum over every replica of every worker: per-replica losses were already divided by the global batch."""
        return tf.distribute.get_replica_context().all_reduce(SUM, grads)

    def _pretrain_replica_fn(self, lr, hr):
        with tf.GradientTape() as tape:
            sr = self.G(lr, training=True)
            loss = self._avg(losses.criterion(self.pixel_criterion, hr, sr))
            scaled = loss * self.loss_scale
        grads = self._all_reduce(self._grads(tape, scaled, self.G.trainable_variables))
        bad = 1.0 - tf.cast(tf.logical_and(tf.math.is_finite(loss), _all_finite(grads)), tf.float32)
        return grads, {"loss/g_pixel": loss}, bad

    def _content(self, hr, sr, d_real_features, d_fake_features):
        if self.content_loss == "vgg":
            return losses.perceptual(self.vgg, self.vgg_layer_weights, self.vgg_criterion, hr, sr)
        if self.content_loss == "vgg_normalized":
            return losses.normalized_vgg_mse(self.vgg, hr, sr)
        if self.content_loss == "feature_matching":
            return losses.feature_matching(d_real_features, d_fake_features)
        return losses.criterion(self.pixel_criterion, hr, sr)

    def _discriminate(self, images):
        """(logits, activations) of D; activations only for feature matching."""
        if self.D_features is None:
            return self.D(images, training=True), None
        *features, logits = self.D_features(images, training=True)
        return logits, features

    def _gan_replica_fn(self, lr, hr):
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            sr = self.G(lr, training=True)
            real, real_feats = self._discriminate(hr)
            fake, fake_feats = self._discriminate(sr)
            content = self._content(hr, sr, real_feats, fake_feats)
            adv = losses.generator_adversarial(self.gan_loss, real, fake)
            pixel = losses.criterion(self.pixel_criterion, hr, sr) if self.pixel_weight else tf.zeros_like(adv)
            d_real, d_fake = losses.discriminator_losses(self.gan_loss, real, fake)
            g_loss = self._avg(self.content_weight * content + self.adversarial_weight * adv + self.pixel_weight * pixel)
            d_loss = self._avg(d_real + d_fake)
            g_scaled, d_scaled = g_loss * self.loss_scale, d_loss * self.loss_scale
        n_g = len(self.G.trainable_variables)
        reduced = self._all_reduce(self._grads(g_tape, g_scaled, self.G.trainable_variables)
                                   + self._grads(d_tape, d_scaled, self.D.trainable_variables))
        g_grads, d_grads = reduced[:n_g], reduced[n_g:]
        ok = tf.logical_and(tf.math.is_finite(g_loss + d_loss), _all_finite(g_grads + d_grads))
        metrics = {
            "loss/g_content": self._avg(content),
            "loss/g_adv": self._avg(adv),
            "loss/g_total": g_loss,
            # each term as it enters g_total: a term that dwarfs the others shows in history and TensorBoard
            "loss/g_content_weighted": self._avg(self.content_weight * content),
            "loss/g_adv_weighted": self._avg(self.adversarial_weight * adv),
            "loss/g_pixel_weighted": self._avg(self.pixel_weight * pixel),
            "loss/d_real": self._avg(d_real),
            "loss/d_fake": self._avg(d_fake),
            "d/accuracy_real": self._avg(tf.cast(tf.reshape(real, [-1]) > 0, tf.float32)),
            "d/accuracy_fake": self._avg(tf.cast(tf.reshape(fake, [-1]) < 0, tf.float32)),
        }
        return (g_grads, d_grads), metrics, 1.0 - tf.cast(ok, tf.float32)

    def update_ema(self):
        """ema <- decay * ema + (1 - decay) * generator, every variable (PReLU slopes too), in cross-replica
        context after the generator's update."""
        d = self.ema_decay
        for e, g in zip(self.ema.weights, self.G.weights):
            e.assign(d * e + (1.0 - d) * tf.cast(g, e.dtype))

    # ------------------------------------------------------------------ cross replica

    def _finish(self, metrics, bad, apply_fn):
        n_bad = self.strategy.reduce(SUM, bad, axis=None)
        applied = tf.equal(n_bad, 0.0)

        def skip():
            self.nonfinite_steps.assign_add(1)
            if self.dynamic_scale:
                self.loss_scale.assign(self.loss_scale / 2.0)
            return tf.constant(False)

        def apply():
            apply_fn()
            return tf.constant(True)
        # The cond runs in cross-replica context: optimizers' merge_call may not sit in a replica-side cond.
        applied = tf.cond(applied, apply, skip)
        return {k: self.strategy.reduce(SUM, v, axis=None) for k, v in metrics.items()}, applied

    def _local(self, per_replica):
        """The reduced gradients are identical on every replica: take this worker's first copy."""
        return [self.strategy.experimental_local_results(g)[0] for g in per_replica]

    def _pretrain_step(self, batch):
        grads, metrics, bad = self.strategy.run(self._pretrain_replica, args=(batch["lr"], batch["hr"]))
        return self._finish(metrics, bad, lambda: self.g_opt.apply_gradients(
            zip(self._local(grads), self.G.trainable_variables)))

    def _gan_step(self, batch):
        (g_grads, d_grads), metrics, bad = self.strategy.run(self._gan_replica, args=(batch["lr"], batch["hr"]))

        def apply_both():
            self.g_opt.apply_gradients(zip(self._local(g_grads), self.G.trainable_variables))
            self.d_opt.apply_gradients(zip(self._local(d_grads), self.D.trainable_variables))
            models.spectral_norm_update(self.D)  # nothing without spectral normalisation
            if self.ema_decay:
                self.update_ema()
        return self._finish(metrics, bad, apply_both)
