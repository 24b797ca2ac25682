"""The embedded default input: real photos that scikit-image ships, cut into tiles.

Used when a job gets no --input, so the README's first command needs no data and no network.
Several tiles per photo give the eval split enough images; tiles are larger than the crop, so
the training crop is a center crop of each tile, as for any other input.
"""

from __future__ import annotations

import os

import numpy as np

from components import images, storage

# Colour photographs shipped inside the scikit-image wheel (no download).
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "hubble_deep_field",
          "immunohistochemistry", "retina")
TILE = 160


def photo(name: str) -> np.ndarray:
    import skimage.data

    img = skimage.data.stereo_motorcycle()[0] if name == "motorcycle_left" else getattr(skimage.data, name)()
    return np.ascontiguousarray(img[..., :3].astype(np.uint8))


def tiles(img: np.ndarray, tile: int = TILE):
    h, w = img.shape[:2]
    for r in range(h // tile):
        for c in range(w // tile):
            yield r, c, img[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile]


def write_sample_images(folder: str | None = None) -> str:
    """Write the tiles as PNGs (deterministic bytes, so the dataset id is stable); returns the folder."""
    folder = folder or os.path.join(storage.cache_dir(), f"sample-images-{TILE}")
    done = os.path.join(folder, ".complete")
    if os.path.exists(done):
        return folder
    for name in PHOTOS:
        for r, c, t in tiles(photo(name)):
            storage.write_bytes(os.path.join(folder, name, f"{name}_r{r}_c{c}.png"), images.encode_png(t))
    with open(done, "w") as f:
        f.write("scikit-image sample photos, tiled\n")
    return folder
