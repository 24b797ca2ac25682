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
