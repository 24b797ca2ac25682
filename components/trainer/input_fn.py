"""The trainer's input path: records -> shard -> shuffle -> random aligned crop -> augment -> (realistic or
mixed LR from HR) -> scale to [-1, 1] -> batch -> prefetch.

Each epoch's order, crops, augmentation and degradations are a pure function of (seed, epoch, position),
so a run that resumes mid-epoch can skip exactly the batches it has already trained on.
"""

from __future__ import annotations

import tensorflow as tf

from components import dataset
from components.models import to_unit


def element_seed(seed: int, epoch: int, position, stream: int):
    """The stateless seed of one element's draws of one kind (`stream`: crop, augment, degrade), from
    (seed, epoch, position): a resumed run draws exactly what it would have."""
    base = tf.stack([tf.cast(seed * 100_003 + epoch, tf.int64), tf.cast(position, tf.int64)])
    return base if stream == AUGMENT_STREAM else tf.random.experimental.stateless_fold_in(base, stream)


AUGMENT_STREAM, CROP_STREAM, DEGRADE_STREAM = 0, 1, 2  # augment's seed predates the streams: the bare (seed, epoch, i)
MIX_STREAM = 3  # degradation mixed: which degradation an element gets (its draws are the DEGRADE_STREAM's)


def mixed_choice(seed: int, epoch: int, position, mix_prob) -> tf.Tensor:
    """`degradation: mixed`: the index into degradation.MIX_CHOICES (clean, mild, realistic) of the element at
    `position` of `epoch`: a pure function of (seed, epoch, position), so a resumed run makes the same choices."""
    from components.degradation import mixed_choice as draw

    return draw(element_seed(seed, epoch, position, MIX_STREAM), mix_prob)


def random_aligned_crop(example, crop_size: int, scale: int, seed):
    """An HR crop of `crop_size` at a random position on the scale grid, and the LR crop (if the example has
    one) at the matching position, so LR crop == degrade(HR crop) away from the borders."""
    hr = example["hr"]
    lr_crop = crop_size // scale
    seeds = tf.random.experimental.stateless_split(seed, 2)
    y = tf.random.stateless_uniform([], seeds[0], 0, tf.shape(hr)[0] // scale - lr_crop + 1, tf.int32)
    x = tf.random.stateless_uniform([], seeds[1], 0, tf.shape(hr)[1] // scale - lr_crop + 1, tf.int32)
    out = {**example, "hr": tf.ensure_shape(hr[y * scale:y * scale + crop_size, x * scale:x * scale + crop_size],
                                            [crop_size, crop_size, 3])}
    if "lr" in example:
        out["lr"] = tf.ensure_shape(example["lr"][y:y + lr_crop, x:x + lr_crop], [lr_crop, lr_crop, 3])
    return out


def center_aligned_crop(example, crop_size: int, scale: int):
    """The centre crop on the scale grid (the fixed sample batch of whole eval photos)."""
    hr, lr = example["hr"], example["lr"]
    lr_crop = crop_size // scale
    y, x = (tf.shape(lr)[0] - lr_crop) // 2, (tf.shape(lr)[1] - lr_crop) // 2
    return {"hr": tf.ensure_shape(hr[y * scale:y * scale + crop_size, x * scale:x * scale + crop_size],
                                  [crop_size, crop_size, 3]),
            "lr": tf.ensure_shape(lr[y:y + lr_crop, x:x + lr_crop], [lr_crop, lr_crop, 3])}


def augment(images: dict, seed) -> dict:
    """Random left-right flip and small colour jitter, the same draw applied to every image (float [0, 1])."""
    seeds = tf.random.experimental.stateless_split(seed, 5)

    def each(fn):
        return {k: fn(v) for k, v in images.items()}
    images = each(lambda x: tf.image.stateless_random_flip_left_right(x, seeds[0]))
    images = each(lambda x: tf.image.stateless_random_brightness(x, 0.05, seeds[1]))
    images = each(lambda x: tf.image.stateless_random_contrast(x, 0.9, 1.1, seeds[2]))
    images = each(lambda x: tf.image.stateless_random_saturation(x, 0.9, 1.1, seeds[3]))
    images = each(lambda x: tf.image.stateless_random_hue(x, 0.02, seeds[4]))
    return {k: tf.clip_by_value(v, 0.0, 1.0) for k, v in images.items()}


def make_dataset(dataset_uri: str, *, batch_size: int, epoch: int, seed: int, steps: int,
                 skip_steps: int = 0, num_shards: int = 1, shard_index: int = 0,
                 shuffle_buffer: int = 1024, augment_images: bool = True, split: str = "train",
                 crop_size: int | None = None, degradation: str = "bicubic", realistic=None, mixed=None):
    """`steps` batches of `batch_size` for this input pipeline (one shard of the split), minus `skip_steps`.

    `crop_size` (HR pixels; none: the stored size) below the stored HR size takes a random aligned crop
    of each record per step. `degradation` realistic makes each LR from the (cropped, augmented) HR with
    `realistic` (a config.RealisticDegradation; default: Real-ESRGAN's settings); the stored LR is not read.
    `degradation` mixed gives each element, by `mixed_choice` and `mixed` (a config.MixedDegradation), the
    stored LR (cropped and augmented as bicubic's), `mild_degrade` or `realistic_degrade` of its HR; the
    degraded ones draw from the same seed as realistic's, so a realistic element's LR is realistic's."""
    from components.config import MixedDegradation, RealisticDegradation
    from components.degradation import mild_degrade, realistic_degrade

    info = dataset.cached_info(dataset_uri)
    scale = info["preprocess"]["scale"]
    stored = dataset.split_shapes(info, split)["hr"][0]
    crop_size = dataset.crop_size(info, split, crop_size)
    on_the_fly, mix = degradation == "realistic", degradation == "mixed"
    realistic = realistic or RealisticDegradation()
    mixed = mixed or MixedDegradation()
    ds = dataset.read_split(dataset_uri, split, decode=False)
    if num_shards > 1:
        ds = ds.shard(num_shards, shard_index)
    if shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=seed * 100_003 + epoch, reshuffle_each_iteration=False)
    ds = ds.repeat()  # a shard smaller than steps x batch wraps around; every worker runs the same steps

    def decode(ex):
        out = {"hr": tf.io.decode_png(ex["hr"], channels=3)}
        if not on_the_fly:
            out["lr"] = tf.io.decode_png(ex["lr"], channels=3)
        return out

    def prepare(i, ex):
        i = i * num_shards + shard_index  # the position in the whole epoch: workers draw differently
        if crop_size != stored:
            ex = random_aligned_crop(ex, crop_size, scale, element_seed(seed, epoch, i, CROP_STREAM))
        if not augment_images and not on_the_fly and not mix:
            return {"hr": to_unit(ex["hr"]), "lr": to_unit(ex["lr"])}
        images = {k: tf.image.convert_image_dtype(v, tf.float32) for k, v in ex.items()}
        if augment_images:
            images = augment(images, element_seed(seed, epoch, i, AUGMENT_STREAM))
        if on_the_fly:
            images["lr"] = realistic_degrade(images["hr"], element_seed(seed, epoch, i, DEGRADE_STREAM), realistic, scale)
        elif mix:
            hr, clean, degrade_seed = images["hr"], images["lr"], element_seed(seed, epoch, i, DEGRADE_STREAM)
            images["lr"] = tf.switch_case(mixed_choice(seed, epoch, i, mixed.mix_prob), [  # only the drawn one runs
                lambda: clean,
                lambda: tf.ensure_shape(mild_degrade(hr, degrade_seed, mixed, scale), clean.shape),
                lambda: tf.ensure_shape(realistic_degrade(hr, degrade_seed, realistic, scale), clean.shape)])
        return {k: v * 2.0 - 1.0 for k, v in images.items()}
    # Skipped before any decoding: a run resumed late in an epoch does not prepare what it trained on.
    ds = ds.enumerate().take(steps * batch_size).skip(skip_steps * batch_size)
    ds = ds.map(lambda i, ex: prepare(i, decode(ex)), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF  # sharded above
    options.deterministic = True
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def fixed_batch(dataset_uri: str, n: int = 8, crop_size: int | None = None):
    """The first `n` eval images (or train, if eval is empty), unaugmented, centre-cropped to `crop_size`
    (none: the train records' size; whole eval photos differ in size): for samples and eval PSNR."""
    info = dataset.cached_info(dataset_uri)
    crop_size = crop_size or info["shapes"]["hr"][0]
    for split in ("eval", "train"):
        ds = (dataset.read_split(dataset_uri, split)  # an eval photo shrunk under max_eval_pixels may be smaller
              .filter(lambda ex: tf.reduce_min(tf.shape(ex["hr"])[:2]) >= crop_size)
              .map(lambda ex: center_aligned_crop(ex, crop_size, info["preprocess"]["scale"])))
        batch = next(iter(ds.take(n).batch(n)), None)
        if batch is not None:
            return {"hr": to_unit(batch["hr"]), "lr": to_unit(batch["lr"])}
    raise dataset.DatasetError(f"{dataset_uri}: no images to sample")
