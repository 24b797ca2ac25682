"""The one configuration type: a YAML file, overridden by flags of the same names.

A YAML key `crop_size` (in any section) is the flag `--crop-size`. Field names are unique across
sections, so a flag always names exactly one key. Unknown keys, wrong types and values outside a
key's declared bounds (field metadata: choices, subsets, probabilities, [min, max] ranges) are errors that
name the key, never silently ignored. A list key is a YAML list, or comma-separated on a flag
(`--blur-sigma 0.2,3`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

import yaml

from components.errors import UserError


class ConfigError(UserError, ValueError):
    """A configuration value is missing, unknown or of the wrong type."""


@dataclass
class PreprocessConfig:
    crop_size: int = 128            # HR crop, center, no resizing (the reference method)
    scale: int = 4                  # LR = degrade(HR) with this factor
    resize_short_side: int = 178    # images whose short side > 2 x crop_size are first resized to this
    eval_fraction: float = 0.1      # share of inputs (by a hash of their relative path) in the eval split
    eval_count: Optional[int] = None  # if set: exactly the N inputs with the lowest hashes go to eval
    num_shards: int = 0             # TFRecord shards per split; 0 lets the runner decide
    image_extensions: str = ".jpg,.jpeg,.png,.webp,.bmp,.gif"  # case-insensitive
    # center: the one crop above per photo (the reference). patches: every TRAIN photo at full resolution
    # (resize_short_side and crop_size unused) is cut into patch_size squares; EVAL photos are stored whole.
    crop_mode: str = "center"
    patch_size: int = 192           # larger than the trainer's 128 crop, so its random crops have room
    patch_stride: int = 96          # half the patch, as BasicSR's sub-images (480 at 240)
    min_patch_detail: float = 1.0   # mean |gray-level gradient| (0-255 units) below which a patch is flat: skipped
    max_patches_per_image: Optional[int] = None  # if set: at most this many per photo, evenly spaced
    max_eval_pixels: int = 1048576  # eval photo larger than this (width x height): center-cropped to fit

    def extensions(self) -> list[str]:
        """`image_extensions` as a list: the file endings the preprocess component reads."""
        return [e.strip() for e in self.image_extensions.split(",") if e.strip()]


@dataclass
class TrainConfig:
    # cluster shape (Ray Train)
    num_workers: int = 1
    gpus_per_worker: int = 0
    cpus_per_worker: int = 1
    # schedule: a phase runs `*_steps` steps, or `*_epochs` epochs when steps is unset
    global_batch_size: int = 16       # per-replica batch = global / replicas; losses averaged over global
    steps_per_epoch: int = 0          # 0: num_train // global_batch_size
    pretrain_epochs: int = 1          # SRResNet phase: generator on pixel MSE
    pretrain_steps: Optional[int] = None
    gan_epochs: int = 1               # SRGAN phase: generator + discriminator, 1:1 updates
    gan_steps: Optional[int] = None
    # models (defaults: the reference sizes)
    generator_width: int = 64
    generator_blocks: int = 16
    residual_over_bicubic: bool = False   # output = bicubic(LR) + learned residual (no tanh)
    discriminator_width: int = 64
    discriminator_depth: int = 8
    discriminator_dense: int = 1024
    discriminator_batchnorm: bool = False
    warm_start: Optional[str] = None  # generator.keras, an exported model folder, or a run's folder
    # losses and optimizers
    content_loss: str = field(default="vgg", metadata={"choices": ("vgg", "vgg_normalized", "pixel", "feature_matching")})
    #   GAN phase content loss: vgg (perceptual: the vgg_* keys) | vgg_normalized (unit features, as LPIPS) | pixel |
    #   feature_matching (L1 between the discriminator's activations on real and generated: needs no ImageNet weights)
    vgg_network: str = field(default="vgg19", metadata={"choices": ("vgg19", "vgg16")})
    vgg_layers: str = "srgan"         # srgan (block5's last conv) | realesrgan (5 layers, weighted) | name[:weight],...
    vgg_weights: str = "imagenet"     # imagenet | path/URI of vgg_network's no-top weights | none (random: warned)
    vgg_before_activation: bool = False  # features before the ReLU (ESRGAN) instead of after (SRGAN)
    vgg_criterion: str = field(default="mse", metadata={"choices": ("mse", "l1")})
    content_weight: float = 1.0
    gan_loss: str = field(default="standard", metadata={"choices": ("standard", "ragan")})
    #   standard: SRGAN's D(x) cross-entropy; ragan: ESRGAN's relativistic average GAN
    adversarial_weight: float = 1e-3
    pixel_weight: float = 0.0         # GAN phase: a pixel term beside the content term (ESRGAN: 1e-2 L1)
    pixel_criterion: str = field(default="mse", metadata={"choices": ("mse", "l1")})  # pretraining and the pixel term
    ema_decay: float = field(default=0.0, metadata={"prob": True})
    #   GAN phase: an exponential moving average of the generator (Real-ESRGAN: 0.999), started from the generator
    #   at the phase's start; it is what the run publishes (generator.keras) and it is in every checkpoint. 0: off
    discriminator_spectral_norm: bool = False  # spectral normalisation of every D layer (replaces batchnorm)
    icnr_init: bool = False           # sub-pixel convolutions start from ICNR (no checkerboard at step 0); off by
    #                                   default: a 40-step tiny pipeline run fell 0.78 dB below bicubic with it on
    upsample_filter: str = field(default="none", metadata={"choices": ("none", "binomial")})
    #   binomial: a fixed [1,2,1]^2 blur after each pixel shuffle (models.BinomialBlur): no sub-pixel checkerboard
    #   in flat regions at any step, where ICNR only starts without one. Part of the architecture (warm starts,
    #   strength pairs and interpolation need the same value)
    upsample: str = field(default="pixel_shuffle", metadata={"choices": ("pixel_shuffle", "nearest", "bilinear")})
    #   nearest: ESRGAN's nearest-neighbour x2 + conv instead of the seed's sub-pixel conv; bilinear: bilinear x2 +
    #   conv (models.build_generator says why); part of the architecture like upsample_filter
    tail_init: str = field(default="zeros", metadata={"choices": ("glorot_uniform", "zeros")})
    #   the generator's last conv; zeros: a residual generator starts exactly at bicubic. glorot_uniform (the seed's)
    #   starts it at bicubic + a large random residual, which on soft photos the first steps removed by killing
    #   the PReLUs (BENCHMARKS, issue 23); the quickstart: +0.894 dB over bicubic with zeros, +0.632 with Glorot
    pretrain_learning_rate: float = 1e-4
    g_learning_rate: float = 1e-4
    lr_decay: str = "constant"        # constant | cosine (generator lr decays to 1% over each phase)
    d_learning_rate: float = 1e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    # execution
    precision: str = "float32"        # float32 | mixed_bfloat16 | mixed_float16 | auto (each worker's best)
    jit: bool = False                 # XLA; measured slower on CPU (STACK.md)
    seed: int = 0
    degradation: str = field(default="bicubic", metadata={"choices": ("bicubic", "realistic", "mixed")})
    #   bicubic: the stored LR (clean). realistic: LR made from HR on the fly by the second-order
    #   pipeline of Real-ESRGAN (components.degradation.realistic_degrade; ranges in realistic_degradation:).
    #   mixed: per example, the clean LR, a mild one-pass degradation or the realistic one (mixed_degradation:)
    shuffle_buffer: int = 1024        # 0: no shuffling (deterministic order)
    augment: bool = True              # flip + small colour jitter, identical on HR and LR
    train_crop_size: Optional[int] = None  # HR side of a training step's crop (a random aligned crop of each
    #                                        stored record per step); none: the stored size. Models are built for it
    # checkpoints and safety
    checkpoint_every_steps: int = 0   # besides every epoch end; 0: epoch ends only
    preemption_check_every_steps: int = 10  # ask Ray Train for preemption news (a barrier) every N steps; 0: never
    keep_checkpoints: int = 3
    max_failures: int = 3             # worker failures Ray Train recovers from (restart + resume)
    max_nonfinite_in_row: int = 5     # then the last good checkpoint is restored
    max_restores: int = 3             # then the run stops with an error
    log_every_seconds: float = 10.0


def _range(*default, lo=-math.inf, hi=math.inf, open_lo=False):
    """A [min, max] key: min <= max, both within [lo, hi] (or (lo, hi] when open_lo)."""
    return field(default_factory=lambda: list(default), metadata={"range": (lo, hi, open_lo)})


def _probs(*default):
    """Probabilities of mutually exclusive choices: len(default) entries in [0, 1] that sum to 1."""
    return field(default_factory=lambda: list(default), metadata={"probs": len(default)})


def _prob(default):
    return field(default=default, metadata={"prob": True})


@dataclass
class RealisticDegradation:
    """Ranges and probabilities of the realistic (second-order) degradation; defaults are Real-ESRGAN's
    published x4plus settings (options/train_realesrgan_x4plus.yml). Every [a, b] draws uniformly
    within; noise sigma is in 0..255 units. The second pass uses the `second_` keys."""
    kernel_prob: list[float] = _probs(0.45, 0.25, 0.12, 0.03, 0.12, 0.03)  # iso, aniso, generalized
    #                               iso, generalized aniso, plateau iso, plateau aniso (21x21, sizes 7..21)
    sinc_prob: float = _prob(0.1)   # a sinc (ringing) kernel instead of the kernels above
    blur_sigma: list[float] = _range(0.2, 3.0, lo=0.0, open_lo=True)
    betag_range: list[float] = _range(0.5, 4.0, lo=0.0, open_lo=True)   # generalized Gaussian shape
    betap_range: list[float] = _range(1.0, 2.0, lo=0.0, open_lo=True)   # plateau shape
    resize_prob: list[float] = _probs(0.2, 0.7, 0.1)                     # up, down, keep
    resize_range: list[float] = _range(0.15, 1.5, lo=0.0, open_lo=True)
    gaussian_noise_prob: float = _prob(0.5)                              # else Poisson noise
    noise_range: list[float] = _range(1.0, 30.0, lo=0.0)
    poisson_scale_range: list[float] = _range(0.05, 3.0, lo=0.0)
    gray_noise_prob: float = _prob(0.4)
    jpeg_range: list[float] = _range(30.0, 95.0, lo=1.0, hi=100.0)
    second_blur_prob: float = _prob(0.8)
    second_kernel_prob: list[float] = _probs(0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    second_sinc_prob: float = _prob(0.1)
    second_blur_sigma: list[float] = _range(0.2, 1.5, lo=0.0, open_lo=True)
    second_betag_range: list[float] = _range(0.5, 4.0, lo=0.0, open_lo=True)
    second_betap_range: list[float] = _range(1.0, 2.0, lo=0.0, open_lo=True)
    second_resize_prob: list[float] = _probs(0.3, 0.4, 0.3)
    second_resize_range: list[float] = _range(0.3, 1.2, lo=0.0, open_lo=True)
    second_gaussian_noise_prob: float = _prob(0.5)
    second_noise_range: list[float] = _range(1.0, 25.0, lo=0.0)
    second_poisson_scale_range: list[float] = _range(0.05, 2.5, lo=0.0)
    second_gray_noise_prob: float = _prob(0.4)
    second_jpeg_range: list[float] = _range(30.0, 95.0, lo=1.0, hi=100.0)
    final_sinc_prob: float = _prob(0.8)  # the sinc filter of the final resize to LR size


@dataclass
class MixedDegradation:
    """`degradation: mixed`: each training example's LR is, drawn per example from (seed, epoch, position),
    the clean LR, a mild one-pass degradation (components.degradation.mild_degrade: the `mild_` keys) or
    the realistic one (realistic_degradation:). Noise sigma in 0..255 units."""
    mix_prob: list[float] = _probs(0.15, 0.6, 0.25)  # clean, mild, realistic: measured best of three mixes (BENCHMARKS)
    mild_blur_prob: float = _prob(1.0)                                      # else no blur before the resize
    mild_blur_sigma: list[float] = _range(0.5, 1.5, lo=0.0, open_lo=True)  # isotropic Gaussian, HR pixels
    mild_noise_range: list[float] = _range(0.0, 5.0, lo=0.0)               # Gaussian, per channel
    mild_jpeg_range: list[float] = _range(60.0, 95.0, lo=1.0, hi=100.0)


EVAL_RUNGS = ("mild", "moderate", "harsh")  # the evaluator's rungs besides clean (components/evaluator/ladder.py)


@dataclass
class EvaluateConfig:
    eval_images: Optional[str] = None  # also evaluate on these folders / URIs (comma-separated) of full-size images
    eval_batch_size: int = 16
    grid_images: int = 16             # eval images shown in the comparison grids (8 per grid PNG)
    eval_degraded: bool = True        # also evaluate on the eval split under a fixed realistic degradation
    #                                   (realistic_degradation: ranges; the same LR for every model): the `harsh`
    #                                   rung of eval_rungs; false removes it from the rungs
    eval_rungs: str = field(default="mild,moderate,harsh", metadata={"subset": EVAL_RUNGS})
    #   the severity ladder (components/evaluator/ladder.py), comma-separated; the clean eval split is always
    #   scored. mild, moderate: one camera-like pass (blur, bicubic, noise, JPEG); harsh: the realistic draw above
    bless_rungs: Optional[str] = field(default=None, metadata={"subset": EVAL_RUNGS})
    #   rungs (of those scored) the blessing also checks: PSNR not below bicubic and at most bless_tolerance_db
    #   below LATEST on each (perceptual rule: at most bless_max_psnr_drop_db below either). none: clean only
    # blessing, on the dataset's eval split, PSNR (RGB) in dB
    bless_min_gain_db: float = 0.2    # must beat bicubic by at least this much
    bless_tolerance_db: float = 0.1   # may be at most this much worse than the model LATEST points to
    # psnr: the two keys above. perceptual (GAN models): mean NIQE on full-size images (--eval-images) better
    # than LATEST's (or bicubic's) by at least bless_min_niqe_gain, PSNR at most bless_max_psnr_drop_db lower
    bless_rule: str = "psnr"
    bless_min_niqe_gain: float = 0.1
    bless_max_psnr_drop_db: float = 2.0  # SRGAN vs SRResNet on Set5 in the paper: 2.65 dB lower, far more natural
    bless_max_checkerboard: float = field(default=0.0, metadata={"within": (0.0, 1e9)})  # perceptual rule: the
    #   mean checkerboard measure (HR photos = 1) at most this, for the blessing and the interpolation's choice;
    #   0: no cap. NIQE rewards a sub-pixel pattern as if it were texture; the cap refuses the pattern
    # network interpolation (ESRGAN): score alpha * GAN + (1 - alpha) * PSNR-oriented generator for each alpha, keep
    # the lowest NIQE whose PSNR is at most bless_max_psnr_drop_db below alpha 0's; that blend is judged and pushed
    interpolation_alphas: list[float] = field(default_factory=list, metadata={"within": (0.0, 1.0)})
    interpolation_base: Optional[str] = None  # the PSNR-oriented generator; none: the run's generator_psnr.keras


@dataclass
class PushConfig:
    model_name: str = "srgan-x4"      # models/<model_name>/<version>/ under the artifact root
    push_unblessed: bool = False      # export a run that was NOT blessed (loud; never moves LATEST)
    # a degradation-strength knob: the version also carries this run's generator (same architecture; e.g. one
    # trained on clean LR) as strength 0, the pushed run's as strength 1; users blend the two at any strength
    strength_base_run: Optional[str] = None
    default_strength: float = field(default=1.0, metadata={"within": (0.0, 1.0)})  # what serving_default exports
    data_licence: str = ("Derived from the training images named in lineage.dataset; their licence applies "
                         "(CelebA: non-commercial research purposes only).")
    # besides the SavedModel (always written): model.onnx (onnx), model.tflite (tflite) and model_fp16.tflite
    # (tflite_fp16: kept only where its pixels agree), each checked against the SavedModel before the push commits
    exports: str = field(default="onnx,tflite,tflite_fp16", metadata={"subset": ("onnx", "tflite", "tflite_fp16")})
    export_check_images: int = field(default=64, metadata={"within": (0, 1_000_000)})  # eval-split images (first by name) the exports are checked on; 0: all


@dataclass
class PipelineConfig:
    warm_start_latest: bool = False   # start training from the generator models/<name>/LATEST points to
    drift_threshold: float = 0.25     # warn when a channel mean moved by more than this many stds


@dataclass
class ServeConfig:
    version: Optional[str] = None     # pull/upscale: a version number or "latest" (default)
    tile_size: int = 128              # upscale: LR tile side; bounds memory on large images
    tile_overlap: int = 16            # upscale: LR context pixels around each tile (hides seams)
    runtime: str = field(default="auto", metadata={"choices": ("auto", "tensorflow", "onnxruntime", "litert")})
    #   upscale/serve/pull: what runs the model: the SavedModel (tensorflow), model.onnx (onnxruntime) or model.tflite
    #   (litert); the last two need a version pushed with that export. auto: the fastest of them the model carries
    #   (components.runtimes.choose; tensorflow for older versions, generator.keras files and run folders)
    strength: Optional[float] = field(default=None, metadata={"within": (0.0, 1.0)})
    #   upscale/serve: blend a version's strength pair (push's strength_base_run) at this strength: 0 its base
    #   (e.g. clean-trained), 1 the pushed run's; none: the version's SavedModel (its default_strength)
    # the service (jobs/serve.py, components/serving) and `jobs/pull_model.py --watch`
    poll_seconds: float = 10.0        # how often LATEST is checked
    keep_local_versions: int = field(default=2, metadata={"within": (1, 1_000_000)})  # versions kept on local disk:
    #   each node's serving cache ($SRGAN_CACHE_DIR/serve/) and the --watch folder (the one served, loading or
    #   LATEST is never removed); the registry's own retention is retention.keep_versions
    host: str = "127.0.0.1"           # jobs/serve.py: HTTP address (a local Ray only; a cluster keeps its own)
    port: int = 8000
    num_replicas: int = 1             # Ray Serve replicas; each follows LATEST on its own
    max_ongoing_requests: int = 8     # per replica; more wait in Ray Serve's queue
    max_input_pixels: int = 1048576   # width x height of an input image (1024x1024 -> 4096x4096 out); 413 above
    max_body_bytes: int = 33554432    # request body (32 MiB); 413 above


@dataclass
class RetentionConfig:
    """What `jobs/gc.py` (components/gc.py) keeps under the artifact root; everything else there may go."""
    keep_versions: int = field(default=5, metadata={"within": (1, 1_000_000)})  # newest committed versions per model
    #   (besides LATEST and every version a serving replica holds a fresh lease on)
    keep_runs: int = field(default=10, metadata={"within": (0, 1_000_000)})     # newest runs, besides those a kept
    #   version's lineage names and those still running
    keep_datasets: int = field(default=5, metadata={"within": (0, 1_000_000)})  # newest datasets, besides those a kept
    #   version or kept run names
    grace_minutes: float = field(default=60.0, metadata={"within": (0.0, 1e6)})  # nothing claimed or written this
    #   recently is touched (a push, preprocess or gc at work); also how long a half-pushed version waits
    lease_minutes: float = field(default=60.0, metadata={"within": (15.0, 1e6)})  # a serving replica's lease on the
    #   version it holds (renewed every 5 min) protects that version this long after its last renewal
    stale_run_hours: float = field(default=24.0, metadata={"within": (0.0, 1e6)})  # a run whose run.json says
    #   running and that wrote nothing for this long is taken as killed (no longer protected as running)
    run_after_pipeline: bool = False  # jobs/pipeline.py runs gc (--apply) as its last step


@dataclass
class Config:
    artifact_root: str = "./artifacts"
    input: Optional[str] = None       # raw images: folder, glob, s3:// or gs:// URI
    dataset_id: Optional[str] = None
    run_id: Optional[str] = None
    model_uri: Optional[str] = None
    output: Optional[str] = None
    force: bool = False               # redo work whose output already exists
    storage_retries: Optional[int] = None  # retries of a failed storage request (backoff 0.5 s doubling to 8 s);
    #                                        none: $SRGAN_STORAGE_RETRIES, else 6 (components.storage)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    realistic_degradation: RealisticDegradation = field(default_factory=RealisticDegradation)
    mixed_degradation: MixedDegradation = field(default_factory=MixedDegradation)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    push: PushConfig = field(default_factory=PushConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)


def _sections(cls) -> list[tuple[Optional[str], type]]:
    """(section name or None for the top level, dataclass) for every level of the config."""
    out = [(None, cls)]
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.default_factory if f.default_factory is not dataclasses.MISSING else None):
            out.append((f.name, f.default_factory))
    return out


def _scalar_fields():
    """name -> (section, Field) for every scalar key; asserts names are unique."""
    out = {}
    for section, cls in _sections(Config):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                continue
            assert f.name not in out, f"config key {f.name} appears twice"
            out[f.name] = (section, f, hints[f.name])
    return out


def _base_type(tp):
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) is typing.Union and args else tp


def _coerce(name: str, tp, value: Any):
    if value is None:
        if typing.get_origin(tp) is typing.Union and type(None) in typing.get_args(tp):
            return None
        raise ConfigError(f"config key {name!r} may not be empty")
    base = _base_type(tp)
    if base is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key {name!r} must be true or false, got {value!r}")
    if base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key {name!r} must be an integer, got {value!r}")
        return value
    if base is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {name!r} must be a number, got {value!r}")
        return float(value)
    if base is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"config key {name!r} must be a string, got {value!r}")
        return str(value)
    if typing.get_origin(base) is list and typing.get_args(base) == (float,):
        return _number_list(name, value)
    raise ConfigError(f"config key {name!r} has an unsupported type {tp}")


def _number_list(name: str, value: Any) -> list[float]:
    """A YAML list of numbers, or (as flags give it) the numbers comma-separated in one string."""
    if isinstance(value, str):
        try:
            return [float(v) for v in value.split(",")]
        except ValueError:
            raise ConfigError(f"config key {name!r} must be comma-separated numbers, got {value!r}") from None
    if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
        raise ConfigError(f"config key {name!r} must be a list of numbers, got {value!r}")
    return [float(v) for v in value]


def _check(name: str, meta, value: Any) -> None:
    """The constraints a field's metadata declares (choices, comma-separated subsets of choices, probabilities,
    [min, max] ranges)."""
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(f"config key {name!r} must be one of {', '.join(meta['choices'])}, got {value!r}")
    bad = [v.strip() for v in value.split(",") if v.strip() not in meta["subset"] + ("",)] if "subset" in meta else []
    if bad:
        raise ConfigError(f"config key {name!r} must be comma-separated names from {', '.join(meta['subset'])}, "
                          f"got {', '.join(map(repr, bad))}")
    if isinstance(value, (list, float)) and not all(math.isfinite(v) for v in (value if isinstance(value, list) else [value])):
        raise ConfigError(f"config key {name!r} must be finite numbers, got {value}")  # nan passes every comparison
    if "within" in meta:  # a number, or every number of a list
        lo, hi = meta["within"]
        if any(not lo <= v <= hi for v in (value if isinstance(value, list) else [value])):
            raise ConfigError(f"config key {name!r} must lie within [{lo:g}, {hi:g}], got {value}")
    if "prob" in meta and not 0.0 <= value <= 1.0:
        raise ConfigError(f"config key {name!r} is a probability: it must be within [0, 1], got {value}")
    if "probs" in meta:
        n = meta["probs"]
        if len(value) != n or any(not 0.0 <= v <= 1.0 for v in value) or abs(sum(value) - 1.0) > 1e-3:
            raise ConfigError(f"config key {name!r} must be {n} probabilities within [0, 1] summing to 1, "
                              f"got {value}")
    if "range" in meta:
        lo, hi, open_lo = meta["range"]
        if len(value) != 2 or value[0] > value[1]:
            raise ConfigError(f"config key {name!r} must be [min, max] with min <= max, got {value}")
        if value[0] < lo or (open_lo and value[0] == lo) or value[1] > hi:
            bounds = f"{'(' if open_lo else '['}{lo:g}, {hi:g}]"
            raise ConfigError(f"config key {name!r} must lie within {bounds}, got {value}")


def from_dict(data: dict | None) -> Config:
    data = dict(data or {})
    fields = _scalar_fields()
    cfg = Config()
    sections = {name for name, _ in _sections(Config) if name}
    for key, value in data.items():
        if key in sections:
            if not isinstance(value, dict):
                raise ConfigError(f"config section {key!r} must be a mapping")
            for sub_key, sub_value in value.items():
                if sub_key not in fields or fields[sub_key][0] != key:
                    raise ConfigError(f"unknown config key {key}.{sub_key}")
                set_value(cfg, sub_key, sub_value)
        elif key in fields and fields[key][0] is None:
            set_value(cfg, key, value)
        else:
            raise ConfigError(f"unknown config key {key!r}")
    return cfg


def set_value(cfg: Config, name: str, value: Any) -> None:
    fields = _scalar_fields()
    if name not in fields:
        raise ConfigError(f"unknown config key {name!r}")
    section, f, tp = fields[name]
    target = cfg if section is None else getattr(cfg, section)
    value = _coerce(name, tp, value)
    if value is not None:
        _check(name, f.metadata, value)
    setattr(target, name, value)


def get_value(cfg: Config, name: str) -> Any:
    section, _f, _tp = _scalar_fields()[name]
    return getattr(cfg if section is None else getattr(cfg, section), name)


def load(path: str | None) -> Config:
    if not path:
        return Config()
    from components import storage

    try:
        data = yaml.safe_load(storage.read_text(path))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a mapping of keys")
    return from_dict(data)


def add_flags(parser: argparse.ArgumentParser, keys: list[str]) -> None:
    """Add `--config` and one flag per config key in `keys` (flag = key with '-' for '_')."""
    parser.add_argument("--config", help="YAML config file; flags override its keys")
    fields = _scalar_fields()
    for name in keys:
        _section, f, tp = fields[name]
        flag = "--" + name.replace("_", "-")
        base = _base_type(tp)
        default = f.default if f.default is not dataclasses.MISSING else \
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if base is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None,
                                help=f"(config key {name}, default {default})")
        elif typing.get_origin(base) is list:  # comma-separated numbers, parsed by _coerce
            parser.add_argument(flag, dest=name, default=None, metavar="MIN,MAX" if "range" in f.metadata else "P,..",
                                help=f"(config key {name}, default {','.join(f'{v:g}' for v in default)})")
        else:
            parser.add_argument(flag, dest=name, type=base, default=None, metavar=name.upper(),
                                help=f"(config key {name}, default {default})")


def from_args(args: argparse.Namespace, keys: list[str]) -> Config:
    """The YAML named by --config, then every flag that was given."""
    cfg = load(getattr(args, "config", None))
    for name in keys:
        value = getattr(args, name, None)
        if value is not None:
            set_value(cfg, name, value)
    if cfg.storage_retries is not None:
        from components import storage

        storage.configure(retries=cfg.storage_retries)  # also for the processes this job starts (env)
    return cfg
