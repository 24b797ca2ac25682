"""Pictures for people: the comparison grid's layout, one model or several side by side."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from components import plots


def _row(name, seed, models=1):
    rng = np.random.default_rng(seed)

    def img(side):
        return rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    srs = [img(32) for _ in range(models)]
    return {"name": name, "lr": img(8), "bicubic": img(32), "hr": img(32), "psnr_bicubic": 20.0,
            "sr": srs if models > 1 else srs[0], "psnr_sr": [21.0 + i for i in range(models)] if models > 1 else 21.0}


def test_grid_places_each_picture_in_its_column():
    rows = [_row("a.png", 0, models=2), _row("b.png", 1, models=2)]
    grid = np.asarray(Image.open(io.BytesIO(plots.comparison_grid(rows, 4, sr_titles=("bicubic-trained", "realistic")))))
    pad, header, caption, cell = 4, 22, 18, 32
    assert grid.shape == (header + 2 * (cell + caption + pad), pad + 5 * (cell + pad), 3)  # LR, bicubic, 2 SR, HR
    y = header
    for c, expected in enumerate((np.repeat(np.repeat(rows[0]["lr"], 4, 0), 4, 1), rows[0]["bicubic"],
                                  *rows[0]["sr"], rows[0]["hr"])):
        x = pad + c * (cell + pad)
        np.testing.assert_array_equal(grid[y:y + cell, x:x + cell], expected)
    second_row = header + cell + caption + pad
    np.testing.assert_array_equal(grid[second_row:second_row + cell, pad + 3 * (cell + pad):][:, :cell], rows[1]["sr"][1])
    one = np.asarray(Image.open(io.BytesIO(plots.comparison_grid([_row("c.png", 2)], 4))))
    assert one.shape[1] == pad + 4 * (cell + pad)  # the evaluator's and the trainer's grids: one SR column
    with pytest.raises(ValueError, match="2 SR images and 2 PSNRs for 1 titles"):
        plots.comparison_grid(rows, 4)


def test_full_size_rows_get_zoomed_crops_of_the_most_detailed_region_and_the_centre():
    rng = np.random.default_rng(5)
    h, w, top, left = 288, 320, 136, 40
    hr = np.full((h, w, 3), 120, np.uint8)
    hr[top:top + 128, left:left + 128] = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)  # the only detail
    row = {"name": "photo.png", "lr": rng.integers(0, 256, (h // 4, w // 4, 3), dtype=np.uint8), "hr": hr,
           "bicubic": rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "psnr_bicubic": 20.0,
           "sr": rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "psnr_sr": 21.0}
    # A: the textured window, found exactly; B: the centre ((288-128)/2, (320-128)/2), not overlapping A by half
    assert plots.zoom_regions(hr, 4) == [("A", top, left, 128), ("B", 80, 96, 128)]
    grid = np.asarray(Image.open(io.BytesIO(plots.comparison_grid([row], 4))))
    pad, header, caption, zoomed = 4, 22, 18, 256  # 128 px regions, nearest x2
    assert grid.shape == (header + (h + caption + pad) + 2 * (zoomed + caption + pad), pad + 4 * (w + pad), 3)

    def cell(y, c, side):
        x = pad + c * (w + pad)
        return grid[y:y + side, x:x + side]

    def big(img, t, l):  # the 128 px region at (t, l), nearest-neighbour x2
        return np.repeat(np.repeat(img[t:t + 128, l:l + 128], 2, 0), 2, 1)

    zoom_a, zoom_b = header + h + caption + pad, header + h + caption + pad + zoomed + caption + pad
    np.testing.assert_array_equal(cell(zoom_a, 2, zoomed), big(row["sr"], top, left))  # SR column, region A
    np.testing.assert_array_equal(cell(zoom_b, 2, zoomed), big(row["sr"], 80, 96))     # SR column, region B
    np.testing.assert_array_equal(cell(zoom_a, 3, zoomed), big(hr, top, left))
    np.testing.assert_array_equal(cell(zoom_b, 1, zoomed), big(row["bicubic"], 80, 96))
    # the LR column: its 32 px of LR under region A, each pixel 4 (scale) x 2 (zoom) = 8 px wide
    lr_a = row["lr"][top // 4:top // 4 + 32, left // 4:left // 4 + 32]
    np.testing.assert_array_equal(cell(zoom_a, 0, zoomed), np.repeat(np.repeat(lr_a, 8, 0), 8, 1))
    # the regions are outlined on the whole images, 2 px just outside them, in their colours
    x_sr = pad + 2 * (w + pad)
    assert tuple(grid[header + top - 1, x_sr + left + 60]) == plots.ZOOM_COLOURS[0]
    assert tuple(grid[header + top + 60, x_sr + left - 2]) == plots.ZOOM_COLOURS[0]
    assert tuple(grid[header + 80 + 128, x_sr + 96 + 100]) == plots.ZOOM_COLOURS[1]
    np.testing.assert_array_equal(grid[header:header + top - 2, x_sr:x_sr + 70], row["sr"][:top - 2, :70])  # untouched


def test_small_rows_get_no_zoom():
    """The eval split's 128 px crops: the whole image is already at 1:1, the grid stays as it was."""
    rng = np.random.default_rng(6)
    img = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    assert plots.zoom_regions(img) == []
    row = {"name": "crop.png", "lr": img[::4, ::4], "hr": img, "bicubic": img, "sr": img, "psnr_bicubic": 20.0,
           "psnr_sr": 21.0}
    grid = Image.open(io.BytesIO(plots.comparison_grid([row], 4)))
    assert grid.size == (4 + 4 * (128 + 4), 22 + 128 + 18 + 4)
