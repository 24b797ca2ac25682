"""Pushing tiny model versions straight into a registry (no training run): what the serving tests need."""

from __future__ import annotations

import datetime
import os
import shutil
import tempfile

from components import models, registry, storage
from components.pusher.push import SIGNATURE, export_saved_model


def push_version(root: str, seed: int, blessed: bool = True, tamper: str | None = None,
                 break_graph: bool = False) -> int:
    """Push a random tiny generator (width 8, 2 blocks) as the next version of `root`; moves LATEST
    when blessed. `tamper`: a file changed after its sha256 went into the card (a corrupted upload);
    `break_graph`: saved_model.pb replaced by junk that the card does list (passes sha256, fails to load)."""
    import keras

    keras.utils.set_random_seed(seed)
    g = models.build_generator(width=8, num_blocks=2, residual_over_bicubic=True)
    staging = tempfile.mkdtemp(prefix="push-test-")
    try:
        keras_file = os.path.join(staging, "generator.keras")
        g.save(keras_file)
        local = os.path.join(staging, "version")
        export_saved_model(keras_file, local)
        shutil.copyfile(keras_file, os.path.join(local, "generator.keras"))
        if break_graph:
            with open(os.path.join(local, "saved_model.pb"), "wb") as f:
                f.write(b"not a graph")
        version = registry.claim_version(root, {"run_id": f"test-{seed}"})
        card = {"format_version": 1, "name": storage.basename(root), "version": version, "blessed": blessed,
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "run_id": f"test-{seed}", "dataset_id": "ds-test", "scale": 4, "signature": SIGNATURE,
                "metrics": {"decision": "BLESSED" if blessed else "NOT_BLESSED"},
                "files": registry.file_hashes(local)}
        if tamper:
            with open(os.path.join(local, tamper), "ab") as f:
                f.write(b"\0tampered")
        storage.write_json(os.path.join(local, registry.MODEL_CARD), card)
        registry.commit_version(local, root, version)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if blessed:
        registry.update_latest(root)
    return version


def copy_version(root: str, source: int) -> int:
    """Commit version `source`'s files again as the next version of `root` (its card says the new number) and
    move LATEST: a new version without an export's cost, for tests that switch many times."""
    version = registry.claim_version(root, {"run_id": f"copy-of-{source}"})
    staging = tempfile.mkdtemp(prefix="copy-test-")
    try:
        local = os.path.join(staging, "version")
        storage.download_dir(registry.version_uri(root, source), local)
        card = storage.read_json(os.path.join(local, registry.MODEL_CARD))
        storage.write_json(os.path.join(local, registry.MODEL_CARD), {**card, "version": version})
        registry.commit_version(local, root, version)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    registry.update_latest(root)
    return version
