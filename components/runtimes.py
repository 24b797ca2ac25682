"""Running a pushed version's exports without TensorFlow: ONNX Runtime (`model.onnx`) and LiteRT (`model.tflite`).

A version folder (components.pusher) carries, besides its SavedModel, the same generator as `model.onnx` and
`model.tflite` (and `model_fp16.tflite` when float16 weights kept the pixels), each with the contract of
`serving_default`: uint8 [b, h, w, 3] (any h, w) -> uint8 [b, 4h, 4w, 3]. The model card's `exports` section
lists them, with the converters that made them and how closely their pixels agree with the SavedModel's.
This module imports neither TensorFlow nor Keras: `jobs/upscale.py --runtime onnxruntime` runs without them.
"""

from __future__ import annotations

import os
import threading

import numpy as np

from components.errors import UserError

TENSORFLOW, ONNXRUNTIME, LITERT = "tensorflow", "onnxruntime", "litert"
RUNTIMES = (TENSORFLOW, ONNXRUNTIME, LITERT)
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
