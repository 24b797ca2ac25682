"""Full training state as plain arrays: both models, both optimizers, step and counters.

Saved as `state.npz` + `state.json` in a directory that Ray Train persists (local, s3://, gs://). Plain
arrays (read from the first replica; mirrored variables are identical) need no collective ops, so
only rank 0 writes, and any worker count can restore them.
"""

from __future__ import annotations

import json
import os

import numpy as np

STATE_ARRAYS = "state.npz"
STATE_META = "state.json"


class CheckpointMismatch(RuntimeError):
    """A checkpoint does not fit the models/optimizers of this run's config."""


def _groups(trackables: dict) -> dict:
    out = {}
    for name, obj in trackables.items():
        out[name] = list(obj.variables) if hasattr(obj, "variables") else list(obj)
    return out


def snapshot(trackables: dict) -> dict:
    """{'generator/0': array, ...} of every variable of the given models/optimizers."""
    return {f"{name}/{i}": np.asarray(v.numpy())
            for name, variables in _groups(trackables).items() for i, v in enumerate(variables)}


def assign(trackables: dict, arrays: dict) -> None:
    for name, variables in _groups(trackables).items():
        saved = sorted((k for k in arrays if k.startswith(name + "/")), key=lambda k: int(k.rsplit("/", 1)[1]))
        if len(saved) != len(variables):
            raise CheckpointMismatch(f"checkpoint has {len(saved)} {name} variables, this run has {len(variables)}: "
                                     "was it written with another model config?")
        for key, var in zip(saved, variables):
            value = arrays[key]
            if tuple(value.shape) != tuple(var.shape):
                raise CheckpointMismatch(f"{key}: checkpoint shape {value.shape} != {tuple(var.shape)}")
            var.assign(value)


def save(directory: str, arrays: dict, meta: dict) -> None:
    os.makedirs(directory, exist_ok=True)
    np.savez(os.path.join(directory, STATE_ARRAYS), **arrays)
    with open(os.path.join(directory, STATE_META), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)


def load(directory: str) -> tuple[dict, dict]:
    with np.load(os.path.join(directory, STATE_ARRAYS)) as z:
        arrays = {k: z[k] for k in z.files}
    with open(os.path.join(directory, STATE_META)) as f:
        return arrays, json.load(f)


def find_generator(uri: str) -> str | None:
    """The `generator.keras` a warm-start URI names: the file itself, or one inside the folder
    (an exported model version or a run folder). None when there is none."""
    from components import storage

    candidate = uri if uri.endswith(".keras") else storage.join(uri, "generator.keras")
    return candidate if storage.exists(candidate) else None


def load_generator_weights(uri: str, generator) -> str:
    """Warm start: weights from the generator.keras that `uri` names (see find_generator). Returns it."""
    import keras

    from components import models, storage  # noqa: F401  (registers the custom layers)

    candidate = find_generator(uri)
    if candidate is None:
        raise FileNotFoundError(f"warm_start {uri}: no generator.keras there")
    source = keras.saving.load_model(storage.stage_in(candidate), compile=False)
    try:
        generator.set_weights(source.get_weights())
    except ValueError as exc:
        raise CheckpointMismatch(f"warm_start {candidate}: weights do not fit this generator "
                                 f"config: {exc}") from None
    return candidate
