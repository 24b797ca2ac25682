"""The trainer's input path: records -> shard -> shuffle -> augment -> scale to [-1, 1] -> batch -> prefetch.

Each epoch's order and augmentation are a pure function of (seed, epoch, position), so a run that
resumes mid-epoch can skip exactly the batches it has already trained on.
"""

from __future__ import annotations

import tensorflow as tf

from components import dataset
from components.models import to_unit


def augment(example, seed):
    """Random left-right flip and small colour jitter, the same draw applied to HR and LR."""
    hr = tf.image.convert_image_dtype(example["hr"], tf.float32)
    lr = tf.image.convert_image_dtype(example["lr"], tf.float32)
    seeds = tf.random.experimental.stateless_split(seed, 5)

    def both(fn):
        return fn(hr), fn(lr)
    hr, lr = both(lambda x: tf.image.stateless_random_flip_left_right(x, seeds[0]))
    hr, lr = both(lambda x: tf.image.stateless_random_brightness(x, 0.05, seeds[1]))
    hr, lr = both(lambda x: tf.image.stateless_random_contrast(x, 0.9, 1.1, seeds[2]))
    hr, lr = both(lambda x: tf.image.stateless_random_saturation(x, 0.9, 1.1, seeds[3]))
    hr, lr = both(lambda x: tf.image.stateless_random_hue(x, 0.02, seeds[4]))
    return {"hr": tf.clip_by_value(hr, 0.0, 1.0) * 2.0 - 1.0, "lr": tf.clip_by_value(lr, 0.0, 1.0) * 2.0 - 1.0}


def make_dataset(dataset_uri: str, *, batch_size: int, epoch: int, seed: int, steps: int,
                 skip_steps: int = 0, num_shards: int = 1, shard_index: int = 0,
                 shuffle_buffer: int = 1024, augment_images: bool = True, split: str = "train"):
    """`steps` batches of `batch_size` for this input pipeline (one shard of the split), minus `skip_steps`."""
    ds = dataset.read_split(dataset_uri, split, decode=False)
    if num_shards > 1:
        ds = ds.shard(num_shards, shard_index)
    if shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=seed * 100_003 + epoch, reshuffle_each_iteration=False)
    ds = ds.repeat()  # a shard smaller than steps x batch wraps around; every worker runs the same steps

    def decode(ex):
        return {"hr": tf.io.decode_png(ex["hr"], channels=3), "lr": tf.io.decode_png(ex["lr"], channels=3)}
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    if augment_images:
        ds = ds.enumerate().map(
            lambda i, ex: augment(ex, tf.stack([tf.cast(seed * 100_003 + epoch, tf.int64), i])),
            num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(lambda ex: {"hr": to_unit(ex["hr"]), "lr": to_unit(ex["lr"])},
                    num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=True).take(steps).skip(skip_steps)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF  # sharded above
    options.deterministic = True
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def fixed_batch(dataset_uri: str, n: int = 8):
    """The first `n` eval images (or train, if eval is empty), unaugmented: for samples and eval PSNR."""
    for split in ("eval", "train"):
        batch = next(iter(dataset.read_split(dataset_uri, split).take(n).batch(n)), None)
        if batch is not None:
            return {"hr": to_unit(batch["hr"]), "lr": to_unit(batch["lr"])}
    raise dataset.DatasetError(f"{dataset_uri}: no images to sample")
