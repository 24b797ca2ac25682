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
