"""Running a pushed version's exports without TensorFlow: ONNX Runtime (`model.onnx`) and LiteRT (`model.tflite`).

A version folder (components.pusher) carries, besides its SavedModel, the same generator as `model.onnx` and
`model.tflite` (and `model_fp16.tflite` when float16 weights kept the pixels), each with the contract of
`serving_default`: uint8 [b, h, w, 3] (any h, w) -> uint8 [b, 4h, 4w, 3]. The model card's `exports` section
lists them, with the converters that made them and how closely their pixels agree with the SavedModel's.
This module imports neither TensorFlow nor Keras: `jobs/upscale.py --runtime onnxruntime` runs without them.

`choose` decides which runtime a model runs on: the one asked for, or for `auto` (the default of `--runtime`)
the first of PREFERENCE that is installed and that the model carries a verified file for.
"""

from __future__ import annotations

import importlib.util
import os
import threading

import numpy as np

from components.errors import UserError

TENSORFLOW, ONNXRUNTIME, LITERT, AUTO = "tensorflow", "onnxruntime", "litert", "auto"
RUNTIMES = (TENSORFLOW, ONNXRUNTIME, LITERT)
CHOICES = (AUTO,) + RUNTIMES  # what --runtime (config key serve.runtime) takes
# What `auto` tries, fastest first: bench/runtimes.py --interleaved on 2 CPU cores (BENCHMARKS.md, "One model,
# three runtimes"): per pixel LiteRT ran at 0.87-0.95x and ONNX Runtime at 0.67-0.87x of TensorFlow (oneDNN); the
# exports only start sooner. So `auto` is TensorFlow wherever it is installed; the exports' order serves machines
# without it. Re-measure in turns before reordering: per-process runs minutes apart on a shared machine mislead.
PREFERENCE = (TENSORFLOW, LITERT, ONNXRUNTIME)
# The push check's tolerance (issue 27): an export whose card figures miss it is never chosen by `auto`
TOLERANCE = {"max_diff": 2, "min_within_1": 0.999}   # gray levels; share of pixel values within 1 level
_MODULE = {TENSORFLOW: "tensorflow", ONNXRUNTIME: "onnxruntime", LITERT: "ai_edge_litert"}
# runtime -> the model card's `exports` key of the file it runs (the SavedModel is not an export: it is always there)
EXPORT_OF = {ONNXRUNTIME: "onnx", LITERT: "tflite"}
FILES = {"onnx": "model.onnx", "tflite": "model.tflite", "tflite_fp16": "model_fp16.tflite"}


class RuntimeChoiceError(UserError):
    """A runtime was asked for that the model does not carry (or that is not installed)."""


def export_entry(card: dict, runtime: str, source: str) -> dict:
    """The card's `exports` entry `runtime` runs, or one clear error naming what the version has."""
    if runtime not in EXPORT_OF:
        raise RuntimeChoiceError(f"runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    exports = card.get("exports") or {}
    entry = exports.get(EXPORT_OF[runtime])
    if not entry:
        has = ", ".join([TENSORFLOW] + [r for r, k in EXPORT_OF.items() if exports.get(k)])
        why = "it was pushed before exports existed" if not exports else "it was pushed with that export turned off"
        raise RuntimeChoiceError(f"{source} (version {card.get('version')}) has no {FILES[EXPORT_OF[runtime]]} "
                                 f"({why}): it runs with --runtime {has}")
    return entry


def verified(card: dict, runtime: str) -> bool:
    """Whether the version's card lists `runtime`'s file as checked: its sha256 among the card's files (verified
    on pull) and its pixel figures within TOLERANCE."""
    entry = (card.get("exports") or {}).get(EXPORT_OF.get(runtime, ""))
    if not entry or not entry.get("file") or entry["file"] not in (card.get("files") or {}):
        return False
    figures = entry.get("agreement") or {}
    return figures.get("max_diff", 99) <= TOLERANCE["max_diff"] and \
        figures.get("within_1", 0) >= TOLERANCE["min_within_1"]


def installed(runtime: str) -> bool:
    """Whether `runtime`'s package can be imported (looked up, not imported: no start-up cost)."""
    return importlib.util.find_spec(_MODULE[runtime]) is not None


def choose(asked: str, card: dict | None, source: str, strength: float | None = None) -> tuple[str, str]:
    """(runtime, why) for running `source`: a pushed version (its `card`) or, with card None, a generator.keras,
    run folder or bare SavedModel. An explicit runtime is returned as asked, or refused with one clear error when
    the model has no file for it. `auto` never fails: the first of PREFERENCE that is installed and, for an export,
    has a verified file (`verified`); TensorFlow for anything else, and for --strength (it blends Keras generators)."""
    if asked not in CHOICES:
        raise RuntimeChoiceError(f"--runtime {asked!r}: choose one of {', '.join(CHOICES)}")
    if asked == TENSORFLOW:
        return TENSORFLOW, "asked for"
    if card is None:
        if asked != AUTO:
            raise RuntimeChoiceError(f"{source}: --runtime {asked} runs a pushed model version's export (model.json "
                                     f"lists it); this is not a version folder: use --runtime tensorflow")
        return TENSORFLOW, "not a pushed version: no exports"
    if asked != AUTO:
        export_entry(card, asked, source)
        return asked, "asked for"
    if strength is not None:
        return TENSORFLOW, "--strength blends the version's Keras generators"
    skipped = []
    for runtime in PREFERENCE:
        file = "saved_model.pb" if runtime == TENSORFLOW else FILES[EXPORT_OF[runtime]]
        if runtime != TENSORFLOW and not verified(card, runtime):
            skipped.append(f"no verified {file}" if card.get("exports") else f"no {file}: pushed before exports")
        elif not installed(runtime):
            skipped.append(f"{_MODULE[runtime]} not installed")
        else:
            return runtime, "; ".join([f"{file}, in the order {' > '.join(PREFERENCE)} of bench/runtimes.py"]
                                      + skipped)
    return TENSORFLOW, "; ".join(skipped)  # nothing runnable: TensorFlow's own import error will say so


def onnx_fn(path: str):
    """A callable uint8 [b, h, w, 3] -> uint8 [b, 4h, 4w, 3] running `model.onnx` on ONNX Runtime's CPU provider."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise RuntimeChoiceError("--runtime onnxruntime: the onnxruntime package is not installed "
                                 "(pip install -e . installs it)") from None
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - a file that is not a model: say which
        raise RuntimeChoiceError(f"{path}: ONNX Runtime cannot load it ({type(exc).__name__}: {str(exc)[:200]})") \
            from None
    name, out = session.get_inputs()[0].name, session.get_outputs()[0].name

    def run(x):
        return session.run([out], {name: np.ascontiguousarray(x)})[0]

    return run


def litert_fn(path: str):
    """The same for `model.tflite` on the LiteRT interpreter (ai-edge-litert). Inputs of a new shape resize the
    interpreter's tensors (a re-allocation); calls are serialised (an interpreter is not thread-safe)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise RuntimeChoiceError("--runtime litert: the ai-edge-litert package is not installed "
                                 "(pip install -e . installs it)") from None
    try:
        interp = Interpreter(model_path=path, num_threads=os.cpu_count() or 1)
    except Exception as exc:  # noqa: BLE001
        raise RuntimeChoiceError(f"{path}: LiteRT cannot load it ({type(exc).__name__}: {str(exc)[:200]})") from None
    inp, out = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]
    lock = threading.Lock()
    shape = [None]

    def run(x):
        x = np.ascontiguousarray(x)
        with lock:
            if shape[0] != x.shape:
                interp.resize_tensor_input(inp, list(x.shape), strict=False)
                interp.allocate_tensors()
                shape[0] = x.shape
            interp.set_tensor(inp, x)
            interp.invoke()
            return interp.get_tensor(out).copy()

    return run


def load_fn(local_dir: str, card: dict, runtime: str, source: str, export: str | None = None):
    """The callable for `runtime` from a local version folder; `export` picks a variant (e.g. tflite_fp16)."""
    entry = export_entry(card, runtime, source)
    key = export or EXPORT_OF[runtime]
    path = os.path.join(local_dir, (card["exports"].get(key) or entry)["file"])
    if not os.path.exists(path):
        raise RuntimeChoiceError(f"{source}: {os.path.basename(path)} is listed in the model card but not there")
    return file_fn(path, runtime)


def file_fn(path: str, runtime: str):
    """The callable of an export file on `runtime` (onnxruntime or litert)."""
    return onnx_fn(path) if runtime == ONNXRUNTIME else litert_fn(path)
