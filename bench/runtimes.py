"""One model, three runtimes: the SavedModel on TensorFlow, model.onnx on ONNX Runtime, model.tflite on LiteRT.
Prints one JSON object.

    python bench/runtimes.py [--width 64] [--blocks 16] [--repeats 3] [--sizes 64,256]

The generator (random weights: speed does not depend on them; residual over bicubic, as the shipped configs)
is exported by the pusher's own functions (push.export_saved_model, exports.write_onnx / write_tflite). Each
runtime then runs in a process of its own (`--child`), as a user's would: start-up time is from the process's
spawn to its first 64x64 image out, peak RSS is that process's VmHWM, and throughput is the best of
`repeats` timed runs of one LR image per size (one untiled call, batch 1) after one untimed run. The pixels of
each runtime's largest output are compared with TensorFlow's (the pusher's tolerance: <= 1 level on >= 99.9%).

    python bench/runtimes.py --interleaved [--repeats 5]

adds `interleaved`: the three runtimes loaded in this one process and timed in turns (each round runs each once
on the same image, the order rotating), so on a machine shared with other jobs every runtime meets the same load;
per size the median seconds and the median of the per-round speed-ups over TensorFlow. The per-process figures
above run one runtime after another, minutes apart: a load that changes meanwhile skews their ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402


def _lr(size: int) -> np.ndarray:
    from components import sample_data

    photo = sample_data.photo("astronaut")
    return np.ascontiguousarray(photo[100:100 + size, 100:100 + size])


def child(runtime: str, folder: str, sizes: list[int], repeats: int, out_npy: str) -> dict:
    """Runs in its own process: load, first image, timed runs; the largest output saved for the comparison."""
    from components import runtimes, upscaler

    if runtime == "tensorflow":
        model = upscaler._from_saved_model(folder, folder)
    else:
        card = {"exports": {"onnx": {"file": "model.onnx"}, "tflite": {"file": "model.tflite"}}}
        model = upscaler.Upscaler(runtimes.load_fn(folder, card, runtime, folder), folder, runtime)
    model(_lr(64)[None])
    first = time.time()
    rows = {}
    for size in sizes:
        x = _lr(size)[None]
        model(x)  # untimed (a new shape: LiteRT re-allocates, TensorFlow may retrace)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            out = model(x)
            times.append(time.perf_counter() - t)
        best = min(times)
        rows[f"{size}->{4 * size}"] = {"img_per_s": round(1 / best, 3),
                                       "ms_per_mp_out": round(1000 * best / (16 * size * size / 1e6), 1),
                                       "seconds": [round(t, 3) for t in times]}
    np.save(out_npy, out[0])
    with open("/proc/self/status") as f:  # VmHWM: this program's peak (ru_maxrss keeps the forking parent's)
        hwm = next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:"))
    return {"first_image_at": first, "sizes": rows, "peak_rss_mb": round(hwm / 1024, 1),
            "tensorflow_imported": "tensorflow" in sys.modules}


def interleaved(folder: str, sizes: list[int], rounds: int) -> dict:
    """Every runtime in this process, timed in turns on the same input (see the docstring)."""
    import statistics

    from components import runtimes, upscaler

    card = {"exports": {"onnx": {"file": "model.onnx"}, "tflite": {"file": "model.tflite"}}}
    models = {"tensorflow": upscaler._from_saved_model(folder, folder)}
    for runtime in ("onnxruntime", "litert"):
        models[runtime] = upscaler.Upscaler(runtimes.load_fn(folder, card, runtime, folder), folder, runtime)
    names, rows = list(models), {"load_average_start": os.getloadavg()}
    for size in sizes:
        x = _lr(size)[None]
        for model in models.values():
            model(x)  # untimed: a new shape
        times: dict = {k: [] for k in names}
        for i in range(rounds):
            for k in names[i % 3:] + names[:i % 3]:
                t = time.perf_counter()
                models[k](x)
                times[k].append(time.perf_counter() - t)
        rows[f"{size}->{4 * size}"] = {
            "median_s": {k: round(statistics.median(v), 3) for k, v in times.items()},
            "speedup_vs_tensorflow": {k: round(statistics.median(a / b for a, b in zip(times["tensorflow"], v)), 2)
                                      for k, v in times.items() if k != "tensorflow"},
            "seconds": {k: [round(t, 3) for t in v] for k, v in times.items()}}
    rows["load_average_end"] = os.getloadavg()
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--blocks", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--sizes", default="64,256")
    p.add_argument("--interleaved", action="store_true", help="also time the runtimes in turns in one process")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args.folder, sizes, args.repeats, args.out)), flush=True)
        return

    import keras

    from components import models
    from components.pusher import exports, push

    work = tempfile.mkdtemp(prefix="bench-runtimes-")
    keras.utils.set_random_seed(0)
    g = models.build_generator(args.width, args.blocks, residual_over_bicubic=True)
    g.save(os.path.join(work, "generator.keras"))
    folder = os.path.join(work, "version")
    generator = push.export_saved_model(os.path.join(work, "generator.keras"), folder)
    serve = exports.serving_graph(generator)
    converters = {"onnx": exports.write_onnx(serve, os.path.join(folder, "model.onnx"))["converter"],
                  "tflite": exports.write_tflite(serve, os.path.join(folder, "model.tflite"))["converter"]}
    results, outputs = {}, {}
    for runtime in ("tensorflow", "onnxruntime", "litert"):
        npy = os.path.join(work, f"{runtime}.npy")
        spawned = time.time()
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", runtime, "--folder", folder,
                               "--out", npy, "--sizes", args.sizes, "--repeats", str(args.repeats)],
                              capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode or not line:
            results[runtime] = {"error": proc.stderr.strip().splitlines()[-1:] or proc.returncode}
            continue
        r = json.loads(line[0][7:])
        r["startup_to_first_image_s"] = round(r.pop("first_image_at") - spawned, 2)
        results[runtime] = r
        outputs[runtime] = np.load(npy)
    for runtime in ("onnxruntime", "litert"):
        if runtime in outputs and "tensorflow" in outputs:
            results[runtime]["vs_tensorflow"] = exports.agreement(
                [np.abs(outputs[runtime].astype(np.int16) - outputs["tensorflow"]).astype(np.uint8)])
    if args.interleaved:
        results["interleaved"] = interleaved(folder, sizes, args.repeats)
    with open("/proc/cpuinfo") as f:
        flags = next((ln.split(":", 1)[1].split() for ln in f if ln.startswith("flags")), [])
    print(json.dumps({"model": {"width": args.width, "blocks": args.blocks, "residual_over_bicubic": True},
                      "converters": converters, "cpus": os.cpu_count(), "load_average": os.getloadavg(),
                      "cpu_flags": [x for x in flags if x.startswith(("avx2", "avx512f", "avx512_bf16", "amx"))],
                      "results": results}, indent=1))


if __name__ == "__main__":
    main()
