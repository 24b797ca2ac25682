"""Network interpolation (ESRGAN, Wang et al. 2018): blend the GAN generator with the PSNR-oriented one it
started from, `alpha * GAN + (1 - alpha) * PSNR`, weight by weight, and choose the alpha on the
perception-distortion curve (Blau & Michaeli 2018): the most natural (lowest NIQE) blend whose PSNR is at
most `max_psnr_drop_db` below the PSNR-oriented generator's (alpha 0), and whose sub-pixel artefacts stay under a
cap when one is set (a GAN lowers NIQE fastest by a periodic pattern, which NIQE does not see as unnatural)."""

from __future__ import annotations

import logging

from components import models, runs, storage

log = logging.getLogger("evaluate")


def load_generator(uri: str):
    import keras

    return keras.saving.load_model(storage.stage_in(uri), compile=False)


def blend(gan, psnr, alpha: float):
    """A new generator of gan's architecture holding alpha * gan + (1 - alpha) * psnr."""
    import keras

    out = keras.models.clone_model(gan)
    out.set_weights(models.blend_weights(gan, psnr, alpha))
    return out


def psnr_generator_of(artifact_root: str, run_id: str | None, base: str | None) -> str | None:
    """The PSNR-oriented end of the blend: `base` when given, else the run's generator_psnr.keras (what its
    GAN phase started from), else None (a run without a GAN phase has nothing to blend)."""
    if base:
        found = runs.find_generator(base) if not base.endswith(".keras") else base
        return found
    if not run_id:
        return None
    uri = storage.join(runs.run_uri(artifact_root, run_id), runs.GENERATOR_PSNR)
    return uri if storage.exists(uri) else None


def choose(curve: list[dict], max_psnr_drop_db: float, max_checkerboard: float = 0.0) -> dict:
    """The chosen point of `curve` ([{'alpha', 'psnr_rgb', 'niqe', 'checkerboard'}], alpha 0 among them): the
    lowest NIQE whose PSNR drop from alpha 0 is within `max_psnr_drop_db` and, with `max_checkerboard` > 0,
    whose checkerboard measure is at most that; alpha 0 itself when no point qualifies."""
    base = next(p for p in curve if p["alpha"] == 0.0)
    allowed = [p for p in curve if base["psnr_rgb"] - p["psnr_rgb"] <= max_psnr_drop_db and p["niqe"] is not None
               and (not max_checkerboard or (p.get("checkerboard") or 0.0) <= max_checkerboard)]
    if not allowed:
        return base
    return min(allowed, key=lambda p: (p["niqe"], -p["alpha"]))
