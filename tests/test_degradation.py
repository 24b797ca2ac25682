"""The shared degradation against an independent numpy port of MATLAB's imresize (bicubic, antialiased)."""

import numpy as np
import pytest

from components import sample_data
from components.degradation import degrade
from components.imresize import imresize_uint8 as matlab_imresize


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee"])
def test_degrade_matches_matlab_imresize_away_from_border(name):
    img = sample_data.photo(name)
    h, w = (img.shape[0] // 4) * 4, (img.shape[1] // 4) * 4
    img = img[:h, :w]
    ours = degrade(img).numpy().astype(int)
    ref = matlab_imresize(img, 0.25).astype(int)
    assert ours.shape == ref.shape == (h // 4, w // 4, 3)
    inner = np.abs(ours - ref)[2:-2, 2:-2]
    assert inner.max() <= 1, f"max difference {inner.max()} gray levels away from the border"
    # Not vacuous: the images do change a lot under degradation, and most pixels agree exactly.
    assert (inner == 0).mean() > 0.9


def test_reference_port_is_not_plain_subsampling():
    """Guards the test itself: the port must differ from naive decimation on a real photo."""
    img = sample_data.photo("astronaut")
    assert np.abs(matlab_imresize(img, 0.25).astype(int) - img[1::4, 1::4].astype(int)).mean() > 2


def test_degrade_batched_and_dtype():
    batch = np.stack([sample_data.photo("astronaut")[:128, :128], sample_data.photo("coffee")[:128, :128]])
    lr = degrade(batch).numpy()
    assert lr.shape == (2, 32, 32, 3) and lr.dtype == np.uint8
    np.testing.assert_array_equal(lr[1], degrade(batch[1]).numpy())
    const = np.full((16, 16, 3), 77, np.uint8)
    np.testing.assert_array_equal(degrade(const).numpy(), np.full((4, 4, 3), 77, np.uint8))


def test_degrade_rejects_bad_input():
    with pytest.raises(TypeError, match="uint8"):
        degrade(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="multiple of the scale"):
        degrade(np.zeros((10, 8, 3), np.uint8))
