"""SR metrics against an independent implementation (scikit-image) and the published bicubic figures."""

import os

import numpy as np
import pytest
from PIL import Image

from components import metrics, sample_data
from components.degradation import degrade
from tests.conftest import shared_data


def _pair(name="astronaut"):
    hr = metrics.modcrop(sample_data.photo(name), 4)
    sr = metrics.bicubic_upscale(degrade(hr)).numpy()
    return sr, hr


def _y_numpy(img):
    x = img.astype(np.float64) / 255.0
    return 16.0 + 65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea"])
def test_psnr_and_ssim_match_scikit_image(name):
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    sr, hr = _pair(name)
    c = 4
    a, b = sr[c:-c, c:-c].astype(np.float64), hr[c:-c, c:-c].astype(np.float64)
    ours = metrics.all_metrics(sr, hr, crop_border=c)
    assert ours["psnr_rgb"] == pytest.approx(peak_signal_noise_ratio(b, a, data_range=255), abs=1e-3)
    assert ours["psnr_y"] == pytest.approx(peak_signal_noise_ratio(_y_numpy(b), _y_numpy(a), data_range=255), abs=1e-3)
    kw = dict(data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert ours["ssim_y"] == pytest.approx(structural_similarity(_y_numpy(b), _y_numpy(a), **kw), abs=2e-3)
    assert ours["ssim_rgb"] == pytest.approx(structural_similarity(b, a, channel_axis=-1, **kw), abs=2e-3)
    assert 15 < ours["psnr_rgb"] < 40 and 0.3 < ours["ssim_y"] < 1.0  # a real degradation, not a no-op


def test_identity_and_errors():
    hr = metrics.modcrop(sample_data.photo("astronaut"), 4)
    assert np.isinf(float(metrics.psnr(hr, hr)))
    assert float(metrics.ssim(hr, hr)) == pytest.approx(1.0)
    with pytest.raises(TypeError, match="uint8"):
        metrics.psnr(hr.astype(np.float32), hr.astype(np.float32))
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.psnr(hr, hr[:-4])


@pytest.mark.parametrize("name,count,expected", [("Set5", 5, 28.43),
                                                 pytest.param("Set14", 14, 26.09, marks=pytest.mark.slow)])
def test_bicubic_baselines_match_the_published_figures(name, count, expected):
    """Bicubic x4, Y channel, border 4: Set5 28.43 dB (the SRGAN paper), Set14 26.09 (../shared/STACK.md)."""
    folder = shared_data("benchmarks", name)
    scores = [metrics.bicubic_baseline(np.asarray(Image.open(os.path.join(folder, n)).convert("RGB")))["psnr_y"]
              for n in sorted(os.listdir(folder)) if n.endswith(".png")]
    assert len(scores) == count  # Set14 has a grayscale image and four sizes that need a modcrop
    assert np.mean(scores) == pytest.approx(expected, abs=0.02)


def test_high_frequency_ratio_orders_blur_original_and_noise():
    hr = metrics.modcrop(sample_data.photo("astronaut"), 4)
    sr = metrics.bicubic_upscale(degrade(hr)).numpy()
    assert metrics.high_frequency_ratio(hr, hr) == pytest.approx(1.0)
    blurred = metrics.high_frequency_ratio(sr, hr)
    noise = np.random.default_rng(0).normal(0, 12, hr.shape)
    noisy = metrics.high_frequency_ratio(np.clip(hr + noise, 0, 255).astype(np.uint8), hr)
    assert 0.005 < blurred < 0.2 and noisy > 1.5  # x4 bicubic keeps ~2% of the Laplacian energy


def test_niqe_reproduces_basicsr_on_the_reference_images():
    """30 images (Set5/Set14 and JPEG'd and bicubic-blurred copies) with NIQE as BasicSR 1.4.2 computes it."""
    import json

    table = json.load(open(shared_data("iqa", "niqe-reference", "reference.json")))
    assert len(table) == 30
    base = os.path.dirname(shared_data("iqa"))
    for row in table:
        img = np.asarray(Image.open(os.path.join(base, row["file"])).convert("RGB"))
        got = metrics.niqe(img)
        assert got is not None and abs(got - row["niqe_basicsr"]) <= 0.05, (row["file"], got, row["niqe_basicsr"])
    # and it orders what it should: a JPEG at quality 10 is less natural than its source
    by_file = {r["file"]: r for r in table}
    baby = np.asarray(Image.open(os.path.join(base, "benchmarks/Set5/baby.png")).convert("RGB"))
    assert metrics.niqe(baby) < by_file["iqa/niqe-reference/Set5_baby_jpeg10.png"]["niqe_basicsr"]


def test_niqe_is_undefined_below_two_blocks_a_side():
    rng = np.random.default_rng(0)
    assert metrics.niqe(rng.integers(0, 256, (191, 400, 3), dtype=np.uint8)) is None
    assert metrics.niqe(rng.integers(0, 256, (400, 191), dtype=np.uint8)) is None
    assert metrics.niqe(rng.integers(0, 256, (200, 200, 3), dtype=np.uint8), crop_border=5) is None  # 190 after the crop
    value = metrics.niqe(rng.integers(0, 256, (192, 192, 3), dtype=np.uint8))
    assert value is not None and np.isfinite(value)


def test_niqe_drops_flat_blocks_quietly_and_is_undefined_for_a_flat_image():
    """Flat blocks give NaN features (no negative MSCN value): dropped as BasicSR drops them, with no
    RuntimeWarning on the terminal; an image with no textured block has no NIQE (None, not NaN)."""
    import warnings

    photo = metrics.modcrop(sample_data.photo("astronaut"), 4)[:384, :384]
    half_flat = photo.copy()
    half_flat[:, :192] = 128
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        value = metrics.niqe(half_flat)
        assert value is not None and np.isfinite(value) and value != metrics.niqe(photo)
        assert metrics.niqe(np.full((384, 384, 3), 77, np.uint8)) is None


def _with_pattern(img, tile):
    """`img` plus `tile` (gray levels, [p, p]) repeated over the whole image on every channel, clipped."""
    reps = (img.shape[0] // tile.shape[0] + 1, img.shape[1] // tile.shape[1] + 1)
    pattern = np.tile(tile, reps)[:img.shape[0], :img.shape[1], None]
    return np.clip(img + pattern, 0, 255).astype(np.uint8)


def _sharpened(img):
    from PIL import ImageFilter

    return np.asarray(Image.fromarray(img).filter(ImageFilter.UnsharpMask(radius=2, percent=150, threshold=0)))


def test_checkerboard_flags_a_subpixel_pattern_not_blur_or_sharpening():
    sr, hr = _pair("astronaut")
    assert metrics.checkerboard(hr, hr) == pytest.approx(1.0)
    # bicubic is blurred: far less energy at the 2 and 4 px periods than the photo (measured 0.014)
    bicubic = metrics.checkerboard(sr, hr)
    assert 0 < bicubic < 0.1
    # what a pixel shuffle leaves: a fixed offset per sub-pixel position, here +-3 gray levels (measured 1550)
    tile = np.random.default_rng(0).choice([-3.0, 3.0], (4, 4))
    assert metrics.checkerboard(_with_pattern(hr, tile), hr) > 100
    assert metrics.checkerboard(_with_pattern(sr, tile), hr) > 100  # on bicubic too
    # a 2x2-pixel checker of 1 gray level (period 4; measured 184): weak but far from any photo's figure
    checker = np.kron([[1.0, -1.0], [-1.0, 1.0]], np.ones((2, 2)))
    assert metrics.checkerboard(_with_pattern(hr, checker), hr) > 30
    # broadband sharpening also adds energy at those periods, but an order of magnitude less (measured 3.1)
    assert 1.5 < metrics.checkerboard(_sharpened(hr), hr) < 10


def test_checkerboard_crops_odd_sides_to_whole_periods():
    """Sides that are not multiples of 4 after the border crop: the pattern's bins stay exact."""
    hr = sample_data.photo("astronaut")[:203, :311]
    tile = np.random.default_rng(1).choice([-2.0, 2.0], (4, 4))
    assert metrics.checkerboard(_with_pattern(hr, tile), hr) > 100
    assert metrics.checkerboard(hr, hr) == pytest.approx(1.0)


def test_a_fresh_icnr_or_binomial_generator_scores_like_bicubic_and_glorot_does_not():
    """A freshly built generator (residual over bicubic) on a real photo, its random tail scaled by 0.01 so the
    output stays within [0, 255] (clipping a wild output would itself put energy at every frequency): ICNR's
    sub-pixel convolutions start as nearest-neighbour upsampling, whose spectrum is zero at the sub-pixel
    periods, so it scores like bicubic; Glorot's give each sub-pixel position its own filter, a checkerboard.
    Measured (astronaut 256 px, 32 x 8, seeds 0/1/2): ICNR 0.0066/0.0053/0.0141, bicubic 0.0094,
    Glorot 0.12/0.26/0.21; Glorot with upsample_filter binomial 0.0093/0.0115/0.0072 (the fixed blur zeroes
    what the sub-pixel filters' differences put at the periods, whatever they are)."""
    import keras

    from components import models

    hr = metrics.modcrop(sample_data.photo("astronaut")[:256, :256], 4)
    lr = degrade(hr).numpy()
    bicubic = metrics.checkerboard(metrics.bicubic_upscale(lr).numpy(), hr)

    def fresh(icnr, seed, upsample_filter="none"):
        keras.utils.set_random_seed(seed)
        g = models.build_generator(width=32, num_blocks=8, residual_over_bicubic=True, icnr=icnr,
                                   upsample_filter=upsample_filter)
        tail = g.get_layer("tail_conv")
        tail.set_weights([w * 0.01 for w in tail.get_weights()])
        return metrics.checkerboard(models.to_uint8(g(models.to_unit(lr[None]), training=False))[0].numpy(), hr)

    for seed in (0, 1):
        icnr, glorot = fresh(True, seed), fresh(False, seed)
        assert icnr < 2 * bicubic and glorot > 8 * bicubic, (seed, icnr, glorot, bicubic)
        assert fresh(False, seed, "binomial") < 2 * bicubic


def test_colour_drift_sees_a_tint_not_sharpening():
    hr = metrics.modcrop(sample_data.photo("astronaut"), 4)
    assert metrics.colour_drift(hr, hr) == 0.0
    tinted = np.clip(hr.astype(np.int16) + [12, 0, -8], 0, 255).astype(np.uint8)
    # the tint's length is sqrt(12^2 + 8^2) = 14.4 gray levels; clipping on the black and white areas takes
    # a little off (measured 13.7)
    assert 12.5 < metrics.colour_drift(tinted, hr) < 14.5
    sr, _ = _pair("astronaut")
    assert metrics.colour_drift(sr, hr) < 0.5  # bicubic keeps the colours (measured 0.17)
    # sharpening changes detail, not the regions' colour (measured 0.43). Chelsea, not the astronaut: 11% of
    # the astronaut's pixels are saturated, where sharpening clips: a real one-sided shift (2.2 there)
    cat = metrics.modcrop(sample_data.photo("chelsea"), 4)
    assert metrics.colour_drift(_sharpened(cat), cat) < 1.0


def test_all_metrics_reports_the_artefact_measures():
    sr, hr = _pair("chelsea")
    m = metrics.all_metrics(sr, hr, crop_border=4)
    assert m["checkerboard"] == pytest.approx(metrics.checkerboard(sr, hr, 4, 4))
    assert m["colour_drift"] == pytest.approx(metrics.colour_drift(sr, hr, 4))
    assert 0 < m["checkerboard"] < 0.1 and 0 < m["colour_drift"] < 0.5
