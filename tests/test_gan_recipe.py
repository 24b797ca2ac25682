"""The GAN recipe's parts (issue 23), each against a hand computation: perceptual features (network, weights,
layers, before/after the activation, L1/MSE), RaGAN and feature-matching losses, the generator's EMA (its
formula, in the checkpoint, through a resume), spectral normalisation, ICNR, network interpolation, and the
config's errors naming their keys."""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from components import config, metrics, models
from components.trainer import losses
from tests.conftest import shared_data


def _vgg16_file():
    return shared_data("vgg16", "vgg16_imagenet_notop.weights.h5")


def _sigmoid_xent(label, logit):
    """-[y log s(x) + (1 - y) log(1 - s(x))], computed stably in numpy."""
    x = np.asarray(logit, np.float64)
    return np.maximum(x, 0) - x * label + np.log1p(np.exp(-np.abs(x)))


# ----------------------------------------------------------------------------- config

@pytest.mark.parametrize("key, value, words", [
    ("vgg_network", "resnet50", "vgg19, vgg16"),
    ("vgg_criterion", "huber", "mse, l1"),
    ("pixel_criterion", "l2", "mse, l1"),
    ("gan_loss", "wgan", "standard, ragan"),
    ("content_loss", "lpips", "feature_matching"),
    ("ema_decay", 1.5, "within [0, 1]"),
    ("vgg_before_activation", "yes", "true or false"),
    ("upsample_filter", "gaussian", "none, binomial"),
    ("upsample", "bicubic", "pixel_shuffle, nearest, bilinear"),
    ("tail_init", "ones", "glorot_uniform, zeros"),
])
def test_bad_values_of_the_new_keys_name_the_key(key, value, words):
    with pytest.raises(config.ConfigError) as err:
        config.from_dict({"train": {key: value}})
    assert repr(key) in str(err.value) and words in str(err.value)


def test_vgg_layers_presets_lists_and_errors():
    assert losses.parse_vgg_layers("srgan", "vgg19") == {"block5_conv4": 1.0}
    assert losses.parse_vgg_layers("srgan", "vgg16") == {"block5_conv3": 1.0}
    assert losses.parse_vgg_layers("realesrgan", "vgg19") == {
        "block1_conv2": 0.1, "block2_conv2": 0.1, "block3_conv4": 1.0, "block4_conv4": 1.0, "block5_conv4": 1.0}
    assert losses.parse_vgg_layers("block2_conv2:0.5, block3_conv3", "vgg16") == {"block2_conv2": 0.5, "block3_conv3": 1.0}
    for spec, network, words in [("block5_conv4", "vgg16", "not a convolution of vgg16"),
                                 ("block1_conv2:x", "vgg19", "must be a number"),
                                 ("block1_conv2:-1", "vgg19", "must be > 0"), (" ", "vgg19", "empty")]:
        with pytest.raises(losses.VggWeightsError) as err:
            losses.parse_vgg_layers(spec, network)
        assert "vgg_layers" in str(err.value) and words in str(err.value)


def test_a_weights_file_of_another_network_is_one_error_naming_key_and_file():
    VGG16_FILE = _vgg16_file()
    with pytest.raises(losses.VggWeightsError) as err:
        losses.resolve_vgg_weights(VGG16_FILE, "vgg19")
    msg = str(err.value)
    assert f"vgg_weights={VGG16_FILE}" in msg and "vgg_network=vgg19" in msg and "\n" not in msg
    assert losses.resolve_vgg_weights(VGG16_FILE, "vgg16") == VGG16_FILE


# ----------------------------------------------------------------------------- perceptual features

def test_imagenet_vgg16_feature_equals_a_hand_convolution_of_the_file():
    """block1_conv1 at one pixel, before and after the ReLU, computed from the .h5 arrays by hand: the
    file's first conv ([3, 3, 3, 64] + bias) over preprocess_input's BGR, mean-subtracted image."""
    import h5py

    VGG16_FILE = _vgg16_file()
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (1, 9, 9, 3)).astype(np.float32)
    with h5py.File(VGG16_FILE) as f:
        kernel, bias = f["layers/conv2d/vars/0"][()], f["layers/conv2d/vars/1"][()]
    bgr = img[..., ::-1] - np.array([103.939, 116.779, 123.68], np.float32)
    y, x = 4, 5
    want = np.einsum("hwc,hwco->o", bgr[0, y - 1:y + 2, x - 1:x + 2], kernel) + bias
    unit = img / 127.5 - 1.0
    for before in (True, False):
        vgg = losses.build_vgg_features(["block1_conv1"], VGG16_FILE, "vgg16", before_activation=before)
        got = losses._as_list(vgg(losses.vgg_input(unit)))[0].numpy()[0, y, x]
        np.testing.assert_allclose(got, want if before else np.maximum(want, 0), rtol=1e-4, atol=1e-3)
    assert (want < 0).any()  # the two differ: the check above could fail for either


def test_layer_weighted_loss_equals_a_hand_computation():
    keras.utils.set_random_seed(0)
    vgg = losses.build_vgg_features(["block1_conv2", "block2_conv2"], None, "vgg19", before_activation=True)
    rng = np.random.default_rng(0)
    hr = rng.uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    sr = rng.uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    f_hr = [t.numpy() for t in vgg(losses.vgg_input(hr))]
    f_sr = [t.numpy() for t in vgg(losses.vgg_input(sr))]
    assert f_hr[0].shape == (2, 16, 16, 64) and f_hr[1].shape == (2, 8, 8, 128)
    for crit, fn in (("l1", np.abs), ("mse", np.square)):
        want = 0.1 * fn(f_sr[0] - f_hr[0]).mean(axis=(1, 2, 3)) + 1.0 * fn(f_sr[1] - f_hr[1]).mean(axis=(1, 2, 3))
        got = losses.perceptual(vgg, [0.1, 1.0], crit, hr, sr).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4)
    # before the activation there are negative features; after it there are none
    after = losses.build_vgg_features(["block1_conv2"], None, "vgg19", before_activation=False)
    assert (f_hr[0] < 0).any() and (losses._as_list(after(losses.vgg_input(hr)))[0].numpy() >= 0).all()


# ----------------------------------------------------------------------------- adversarial losses

def test_ragan_and_standard_losses_equal_hand_computations():
    real = np.array([1.5, -0.3, 0.8, 2.0], np.float32)
    fake = np.array([-1.0, 0.4, -0.2, 0.1], np.float32)
    rm, fm = real.mean(), fake.mean()
    g = losses.generator_adversarial("ragan", real, fake).numpy()
    np.testing.assert_allclose(g, 0.5 * (_sigmoid_xent(0, real - fm) + _sigmoid_xent(1, fake - rm)), rtol=1e-5)
    d_real, d_fake = (t.numpy() for t in losses.discriminator_losses("ragan", real, fake))
    np.testing.assert_allclose(d_real, 0.5 * _sigmoid_xent(1, real - fm), rtol=1e-5)
    np.testing.assert_allclose(d_fake, 0.5 * _sigmoid_xent(0, fake - rm), rtol=1e-5)
    np.testing.assert_allclose(losses.generator_adversarial("standard", real, fake).numpy(), _sigmoid_xent(1, fake), rtol=1e-5)
    d_real, d_fake = (t.numpy() for t in losses.discriminator_losses("standard", real, fake))
    np.testing.assert_allclose(d_real, _sigmoid_xent(1, real), rtol=1e-5)
    np.testing.assert_allclose(d_fake, _sigmoid_xent(0, fake), rtol=1e-5)


def test_ragan_generator_loss_does_not_train_the_discriminator_through_real_logits():
    real, fake = tf.Variable([[0.5], [1.0]]), tf.Variable([[0.0], [-1.0]])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(losses.generator_adversarial("ragan", real, fake))
    g_real, g_fake = tape.gradient(loss, [real, fake])
    assert g_real is None and np.abs(g_fake.numpy()).sum() > 0


def test_feature_matching_equals_a_hand_computation():
    rng = np.random.default_rng(1)
    real = [rng.normal(size=(2, 4, 4, 3)).astype(np.float32), rng.normal(size=(2, 2, 2, 5)).astype(np.float32)]
    fake = [rng.normal(size=(2, 4, 4, 3)).astype(np.float32), rng.normal(size=(2, 2, 2, 5)).astype(np.float32)]
    want = (np.abs(fake[0] - real[0]).mean(axis=(1, 2, 3)) + np.abs(fake[1] - real[1]).mean(axis=(1, 2, 3))) / 2
    np.testing.assert_allclose(losses.feature_matching(real, fake).numpy(), want, rtol=1e-5)


# ----------------------------------------------------------------------------- the step's parts

def _steps(**kwargs):
    from components.trainer.step import SRGANSteps

    keras.utils.set_random_seed(0)
    strategy = tf.distribute.get_strategy()
    g = models.build_generator(8, 2, residual_over_bicubic=True)
    d = models.build_discriminator(32, 8, 2, dense=16, spectral_norm=kwargs.pop("spectral_norm", False))
    ema = models.build_generator(8, 2, residual_over_bicubic=True, name="generator_ema") if kwargs.get("ema_decay") else None
    if ema is not None:
        ema.set_weights(g.get_weights())
    return SRGANSteps(strategy, g, d, keras.optimizers.Adam(1e-3), keras.optimizers.Adam(1e-3), None,
                      global_batch_size=4, ema=ema, **kwargs)


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    hr = rng.uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
    return {"hr": hr, "lr": tf.image.resize(hr, [8, 8], "area").numpy()}


def test_ema_update_equals_its_formula():
    steps = _steps(content_loss="pixel", ema_decay=0.9)
    ema0 = [w.copy() for w in steps.ema.get_weights()]
    steps.G.set_weights([w + 0.01 for w in steps.G.get_weights()])  # the EMA now lags the generator
    _, applied = steps.gan_step(_batch())
    assert bool(applied)
    g1 = steps.G.get_weights()
    for e0, g, e1 in zip(ema0, g1, steps.ema.get_weights()):
        np.testing.assert_allclose(e1, 0.9 * e0 + 0.1 * g, rtol=1e-5, atol=1e-7)
    assert any(np.abs(e1 - g).max() > 1e-4 for e1, g in zip(steps.ema.get_weights(), g1))


@pytest.mark.parametrize("content_loss, gan_loss, sn", [("feature_matching", "ragan", True),
                                                         ("pixel", "ragan", False)])
def test_gan_step_with_the_new_parts_is_finite_and_updates_both(content_loss, gan_loss, sn):
    steps = _steps(content_loss=content_loss, gan_loss=gan_loss, spectral_norm=sn, pixel_weight=1e-2,
                   pixel_criterion="l1")
    g0, d0 = steps.G.get_weights(), steps.D.get_weights()
    metrics, applied = steps.gan_step(_batch())
    assert bool(applied) and all(np.isfinite(float(v)) for v in metrics.values())
    assert float(metrics["loss/g_content"]) > 0
    assert any(np.abs(a - b).max() > 0 for a, b in zip(g0, steps.G.get_weights()))
    assert any(np.abs(a - b).max() > 0 for a, b in zip(d0, steps.D.get_weights()))
    if sn:  # the power iteration advanced u (a non-trainable weight)
        u = [l.sn_u.numpy() for l in steps.D.layers if isinstance(l, models.SNConv2D)]
        assert u and all(abs(np.linalg.norm(x) - 1) < 1e-4 for x in u)


def test_spectral_norm_bounds_each_layer_to_unit_norm():
    keras.utils.set_random_seed(0)  # the power iteration's convergence depends on the kernels' spectral gap
    d = models.build_discriminator(32, 8, 2, dense=16, spectral_norm=True)
    d(tf.zeros([1, 32, 32, 3]))
    for _ in range(300):
        models.spectral_norm_update(d)
    for layer in d.layers:
        if isinstance(layer, (models.SNConv2D, models.SNDense)):
            w = layer.normalized_kernel().numpy().reshape(-1, layer.kernel.shape[-1])
            assert abs(np.linalg.svd(w, compute_uv=False)[0] - 1.0) < 1e-3, layer.name


def test_icnr_makes_the_subpixel_conv_a_nearest_neighbour_upsampling():
    g = models.build_generator(8, 2, icnr=True)
    conv = g.get_layer("up0_conv")
    x = tf.random.normal([1, 5, 6, 8], seed=1)
    y = tf.nn.depth_to_space(conv(x), 2).numpy()
    for dy in (0, 1):
        for dx in (0, 1):
            np.testing.assert_allclose(y[:, dy::2, dx::2], y[:, ::2, ::2], atol=1e-6)
    glorot = models.build_generator(8, 2, icnr=False)
    y = tf.nn.depth_to_space(glorot.get_layer("up0_conv")(x), 2).numpy()
    assert np.abs(y[:, 1::2, 1::2] - y[:, ::2, ::2]).max() > 1e-2


def test_binomial_blur_zeroes_the_period_2_pattern_keeps_flat_and_survives_save(tmp_path):
    blur = models.BinomialBlur()
    checker = np.indices((8, 10)).sum(axis=0) % 2 * 2.0 - 1.0  # +-1 every other pixel: all energy at period 2
    stripes = np.tile([1.0, -1.0], 5)[None, :].repeat(8, axis=0)  # period 2 along x only
    for pattern in (checker, stripes):
        y = blur(tf.constant(pattern[None, :, :, None] + 3.0, tf.float32)).numpy()[0, 1:-1, 1:-1, 0]  # inside
        np.testing.assert_allclose(y, 3.0, atol=1e-6)
    ramp = tf.reshape(tf.range(80, dtype=tf.float32), [1, 8, 10, 1])  # linear: a symmetric blur keeps it
    np.testing.assert_allclose(blur(ramp).numpy()[0, 1:-1, 1:-1], ramp.numpy()[0, 1:-1, 1:-1], atol=1e-4)
    g = models.build_generator(8, 2, upsample_filter="binomial")
    assert [layer.name for layer in g.layers if isinstance(layer, models.BinomialBlur)] == ["up0_blur", "up1_blur"]
    g.save(tmp_path / "g.keras")
    x = tf.random.uniform([1, 6, 7, 3], -1, 1, seed=2)
    np.testing.assert_allclose(keras.models.load_model(tmp_path / "g.keras")(x), g(x), atol=1e-6)
    with pytest.raises(ValueError, match="upsample_filter"):
        models.build_generator(8, 2, upsample_filter="box")


def test_resize_upsampling_keeps_a_flat_input_flat_at_any_weights_and_survives_save(tmp_path):
    """A random pixel-shuffle generator turns a flat input into a period-2 pattern (its four sub-pixel filters
    differ); a resize + conv cannot: one kernel for all four positions."""
    flat = tf.fill([1, 48, 48, 3], 0.3)
    for upsample, flat_out in (("nearest", True), ("bilinear", True), ("pixel_shuffle", False)):
        keras.utils.set_random_seed(4)
        g = models.build_generator(8, 2, upsample=upsample)
        y = g(flat).numpy()[0, 80:-80, 80:-80]  # away from the zero-padded borders (LR receptive field < 20)
        spread = float(np.ptp(y, axis=(0, 1)).max())
        assert (spread < 1e-5) == flat_out, (upsample, spread)
    for upsample in ("nearest", "bilinear"):
        g = models.build_generator(8, 2, residual_over_bicubic=True, upsample=upsample)
        assert [layer.name for layer in g.layers if isinstance(layer, models.PixelShuffle)] == []
        g.save(tmp_path / "g.keras")
        x = tf.random.uniform([1, 6, 7, 3], -1, 1, seed=2)
        assert g(x).shape == (1, 24, 28, 3)
        np.testing.assert_allclose(keras.models.load_model(tmp_path / "g.keras")(x), g(x), atol=1e-6)
        # any size inside a tf.function, as the upscaler and the serving signature call it
        run = tf.function(lambda t: g(t, training=False), input_signature=[tf.TensorSpec([None, None, None, 3])])
        assert run(tf.zeros([1, 5, 9, 3])).shape == (1, 20, 36, 3)
    with pytest.raises(ValueError, match="upsample"):
        models.build_generator(8, 2, upsample="bicubic")


def test_interpolation_at_alpha_0_and_1_reproduces_the_two_generators_exactly():
    a, b = models.build_generator(8, 2, name="a"), models.build_generator(8, 2, name="b")
    wa, wb = a.get_weights(), b.get_weights()
    for alpha, want in ((1.0, wa), (0.0, wb)):
        for x, y in zip(models.blend_weights(a, b, alpha), want):
            np.testing.assert_array_equal(x, y)
    for x, y, z in zip(models.blend_weights(a, b, 0.25), wa, wb):
        np.testing.assert_allclose(x, 0.25 * y + 0.75 * z, rtol=1e-6)
    with pytest.raises(ValueError, match="not the same architecture"):
        models.blend_weights(a, models.build_generator(16, 2), 0.5)


# ----------------------------------------------------------------------------- the evaluator's interpolation

def test_evaluator_interpolates_chooses_an_alpha_and_compares_with_the_warm_start(tmp_path, monkeypatch):
    """A GAN generator and its PSNR-oriented warm start (files): the evaluator scores the blend at each alpha,
    keeps the lowest NIQE within bless_max_psnr_drop_db of alpha 0's PSNR, judges and saves that blend, and the
    perceptual rule also compares the candidate with the warm start."""
    from PIL import Image

    from components import sample_data
    from components.degradation import degrade
    from components.evaluator import evaluate, interpolation

    photo = sample_data.photo("astronaut")
    hrs = [photo[y:y + 64, x:x + 64] for y, x in ((80, 160), (200, 180))]
    monkeypatch.setattr(evaluate, "eval_split", lambda _uri: [{"name": f"p{i}", "hr": hr, "lr": degrade(hr).numpy()}
                                                              for i, hr in enumerate(hrs)])
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(photo[:256, 128:384]).save(folder / "astronaut.png")  # NIQE needs >= 192 px
    keras.utils.set_random_seed(5)
    psnr = models.build_generator(8, 2, residual_over_bicubic=True, name="psnr")
    psnr.set_weights([np.zeros_like(w) if i >= len(psnr.weights) - 2 else w for i, w in enumerate(psnr.get_weights())])
    gan = models.build_generator(8, 2, residual_over_bicubic=True, name="gan")  # random tail: a noisy residual
    psnr_file, gan_file = str(tmp_path / "psnr.keras"), str(tmp_path / "gan.keras")
    psnr.save(psnr_file)
    gan.save(gan_file)

    cfg = config.Config(artifact_root=str(tmp_path / "root"), model_uri=gan_file, dataset_id="ds-" + "0" * 16,
                        output=str(tmp_path / "eval"))
    for k, v in {"interpolation_alphas": "0.5,1", "interpolation_base": psnr_file, "bless_rule": "perceptual",
                 "eval_images": str(folder), "eval_rungs": "", "bless_max_psnr_drop_db": 3.0}.items():
        config.set_value(cfg, k, v)
    result = evaluate.run(cfg)
    interp = result["interpolation"]
    assert [p["alpha"] for p in interp["curve"]] == [0.0, 0.5, 1.0] and interp["alphas"] == [0.5, 1.0]
    base = interp["curve"][0]
    bicubic = np.mean([float(metrics.psnr(metrics.bicubic_upscale(degrade(hr)).numpy(), hr)) for hr in hrs])
    assert abs(base["psnr_rgb"] - bicubic) < 0.05  # alpha 0 is the warm start: bicubic here
    assert base["niqe_images"] == 1 and all(p["niqe"] > 0 for p in interp["curve"])
    allowed = [p for p in interp["curve"] if base["psnr_rgb"] - p["psnr_rgb"] <= 3.0]
    assert interp["chosen_alpha"] == min(allowed, key=lambda p: (p["niqe"], -p["alpha"]))["alpha"]
    assert interp["psnr_generator"] == psnr_file and interp["gan_generator"] == gan_file
    saved = keras.saving.load_model(os.path.join(str(tmp_path / "eval"), evaluate.INTERPOLATED), compile=False)
    for a, b in zip(saved.get_weights(), models.blend_weights(gan, psnr, interp["chosen_alpha"])):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    chosen = next(p for p in interp["curve"] if p["alpha"] == interp["chosen_alpha"])
    assert abs(result["eval_split"]["psnr_rgb"] - chosen["psnr_rgb"]) < 1e-6  # the blend is what was judged
    assert any("its warm start" in r for r in result["reasons"])
    if interp["chosen_alpha"] == 0.0:  # the warm start itself is no more natural than itself: refused
        assert result["decision"] == "NOT_BLESSED"
    assert interpolation.choose([{"alpha": 0.0, "psnr_rgb": 30.0, "niqe": 7.0}, {"alpha": 1.0, "psnr_rgb": 27.0, "niqe": 5.0},
                                 {"alpha": 0.6, "psnr_rgb": 29.0, "niqe": 6.0}], 2.0)["alpha"] == 0.6
    curve = [{"alpha": 0.0, "psnr_rgb": 30.0, "niqe": 7.0, "checkerboard": 0.5},
             {"alpha": 0.5, "psnr_rgb": 29.8, "niqe": 6.5, "checkerboard": 1.0},
             {"alpha": 0.8, "psnr_rgb": 29.5, "niqe": 6.0, "checkerboard": 3.0},
             {"alpha": 1.0, "psnr_rgb": 29.0, "niqe": 6.2, "checkerboard": 9.0}]
    assert interpolation.choose(curve, 2.0)["alpha"] == 0.8  # no cap: the lowest NIQE
    assert interpolation.choose(curve, 2.0, max_checkerboard=1.1)["alpha"] == 0.5
    assert interpolation.choose(curve, 2.0, max_checkerboard=0.4)["alpha"] == 0.0  # none qualifies: alpha 0
