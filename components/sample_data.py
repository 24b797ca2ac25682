"""The embedded default input: real photos that scikit-image ships, whole or cut into tiles.

Used when a job gets no --input, so the README's first command needs no data and no network.
`crop_mode: patches` (the quickstart) takes the photos whole: it cuts its own patches and keeps eval
photos whole. `center` keeps one crop per input, so there the photos are cut into tiles (several per
photo give the eval split enough images; a tile is larger than the crop, which is a center crop of it).
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


def write_sample_images(folder: str | None = None, whole: bool = False) -> str:
    """Write the tiles (or the whole photos) as PNGs (deterministic bytes, so the dataset id is stable);
    returns the folder."""
    folder = folder or os.path.join(storage.cache_dir(), "sample-photos" if whole else f"sample-images-{TILE}")
    done = os.path.join(folder, ".complete")
    if os.path.exists(done):
        return folder
    for name in PHOTOS:
        if whole:
            storage.write_bytes(os.path.join(folder, f"{name}.png"), images.encode_png(photo(name)))
            continue
        for r, c, t in tiles(photo(name)):
            storage.write_bytes(os.path.join(folder, name, f"{name}_r{r}_c{c}.png"), images.encode_png(t))
    with open(done, "w") as f:
        f.write(f"scikit-image sample photos, {'whole' if whole else 'tiled'}\n")
    return folder
