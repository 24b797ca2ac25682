"""Where the time of one distributed GAN step goes, float32 vs mixed_bfloat16. Prints one JSON object.

    python bench/profile_step.py [--precisions float32,mixed_bfloat16] [--batch 16] [--steps 3] [--small]
                                 [--onednn-verbose] [--logdir DIR]

The step is bench/train_step.py's `trainer_step_rate` step (MirroredStrategy(["/cpu:0"]), reference G and D,
VGG19 block5_conv4 with random weights, two Adam(1e-4), SRGANSteps.gan_step over a distributed dataset).
Per precision: 2 warm-up steps, `steps` steps timed without the profiler (wall), then `steps` steps under
tf.profiler; the trace (.xplane.pb) is parsed here. Every TF op execution is a leaf event on an executor
thread named "<node name>:<op type>" (no shapes on TF 2.21's host trace, whatever host_tracer_level), so:
- op types are summed into categories (convolution, dense_matmul, optimizer, cast, all_reduce,
  element_wise, input, other); `op_ms` is op-seconds: ops on the 2 inter-op threads overlap, so it can
  exceed wall time, and it leaves out Python/dispatch time between ops;
- convolution and dense shapes come from the step's graph: an event is matched to the layer scope of the
  forward Conv2D/MatMul it belongs to (its backprop ops carry the same scope under gradient_tape/).
--onednn-verbose reruns one step per precision in a child process with ONEDNN_VERBOSE=1 and sums the
primitives it executed (kind, implementation, ms; reorders are layout conversions).
--logdir keeps the traces for TensorBoard's trace viewer (deleted otherwise).
"""

from __future__ import annotations

import argparse
import collections
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from train_step import _batch, trainer_gan_step  # bench/train_step.py: run as a script, bench/ is on sys.path

OP_EVENT = re.compile(r"^(?P<name>[^:#\s]+):(?P<type>[A-Za-z_]\w*)$")  # not "ExecutorState::Process" etc.
# Graph plumbing, no arithmetic: kept apart so element_wise means work on tensor elements.
PLUMBING = {"ReadVariableOp", "AssignVariableOp", "Identity", "IdentityN", "NoOp", "Const", "Assert", "Reshape",
            "Shape", "ShapeN", "Pack", "Unpack", "Switch", "Merge", "If", "StatelessIf", "_Send", "_Recv",
            "StridedSlice", "Squeeze", "ExpandDims", "ConcatV2", "Fill", "ZerosLike", "OnesLike", "Range"}
MARK = "=== profile_step: measured step "


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def _xplane_pb2():
    for name in ("tensorflow.tsl.profiler.protobuf.xplane_pb2", "tsl.profiler.protobuf.xplane_pb2",
                 "tensorflow.core.profiler.protobuf.xplane_pb2"):
        try:
            return importlib.import_module(name)
        except ImportError:
            pass
    raise ImportError("no xplane_pb2 in this TensorFlow install")


def build_step(precision: str, batch_size: int, small: bool):
    """(one_step, graph) for train_step.trainer_step_rate's step; the caller resets the policy."""
    batch = {k: v[np.arange(batch_size) % len(v)] for k, v in _batch().items()}  # _batch makes 16
    s, it = trainer_gan_step(batch, precision, *(({"width": 16, "num_blocks": 2}, {"width": 16}) if small else ()))

    def one_step():
        _, applied = s.gan_step(next(it))
        bool(applied)  # waits for the step to finish

    one_step()  # traces the function
    return one_step, s.gan_step.get_concrete_function(next(it)).graph


def layer_shapes(graph) -> dict:
    """Layer scope ("vgg19_block5_conv4_1/block1_conv1_1") -> shape text, from the forward Conv2D/MatMul ops."""
    out = {}
    for op in graph.get_operations():
        if op.name.startswith("gradient_tape/") or op.type not in ("Conv2D", "MatMul"):
            continue
        x, w = (t.shape.as_list() for t in op.inputs[:2])
        text = "x".join(map(str, x)) + " * " + "x".join(map(str, w))
        if op.type == "Conv2D":
            text += f" stride {op.get_attr('strides')[1]}"
        out[op.name.rsplit("/", 1)[0]] = text
    return out


def trace_events(logdir: str):
    """(line name, node name, op type, duration ps) of every leaf op event in the host plane."""
    xplane_pb2 = _xplane_pb2()
    for root, _, files in os.walk(logdir):
        for f in files:
            if not f.endswith(".xplane.pb"):
                continue
            space = xplane_pb2.XSpace()
            with open(os.path.join(root, f), "rb") as fh:
                space.ParseFromString(fh.read())
            for plane in space.planes:
                if plane.name != "/host:CPU":
                    continue
                for line in plane.lines:
                    for ev in line.events:
                        name = plane.event_metadata[ev.metadata_id].name
                        m = OP_EVENT.match(name)
                        if m:
                            yield line.name, m["name"], m["type"], ev.duration_ps
                        elif name.startswith("EagerLocalExecute: ") and "__inference" not in name:
                            # eager ops outside the tf.function: next(it) on the Python thread
                            yield line.name, "eager", name.split(": ", 1)[1], ev.duration_ps


def category(line: str, name: str, op_type: str) -> str:
    # "_FusedConv2D" (Eigen), "_MklNativeFusedConv2D" (oneDNN, with TF_ENABLE_ONEDNN_OPTS=1) -> "FusedConv2D"
    base = re.sub(r"^_(MklNative|Mkl)?", "", op_type)
    if line.startswith("tf_data") or re.search(r"Iterator|Dataset", base):
        return "input"
    if re.search(r"Collective|Nccl|AllReduce", base) or re.search(r"all_?reduce|cross_?device", name, re.IGNORECASE):
        return "all_reduce"
    if "Conv2D" in base or base.startswith("DepthwiseConv"):
        return "convolution"
    if "MatMul" in base:
        return "dense_matmul"
    if base == "Cast":
        return "cast"
    # Keras 3 Adam is element-wise assign ops under ".../adam/update_N"; step.py runs apply_gradients in the
    # "then" branch of _finish's cond, so everything there is the update (iterations counter included).
    if re.search(r"adam|optimizer|apply_gradients", name, re.IGNORECASE) or name.startswith("cond/then/"):
        return "optimizer"
    return "other" if op_type in PLUMBING else "element_wise"


def breakdown(events, shapes: dict, steps: int) -> dict:
    per_ms = 1e-9 / steps  # ps -> ms per step
    total = sum(e[3] for e in events) or 1
    cats = collections.defaultdict(lambda: {"ps": 0, "n": 0, "types": collections.Counter()})
    by_shape = collections.defaultdict(lambda: {"ps": 0, "ops": collections.Counter(), "layers": set()})
    scopes = sorted(shapes, key=len, reverse=True)  # longest first: "conv1" must not claim "conv10"
    for line, name, op_type, ps in events:
        cat = category(line, name, op_type)
        c = cats[cat]
        c["ps"] += ps
        c["n"] += 1
        c["types"][op_type] += ps
        if cat in ("convolution", "dense_matmul"):
            bare = name.removeprefix("gradient_tape/")
            scope = next((s for s in scopes if bare.startswith(s + "/")), None)
            key = (cat, shapes.get(scope, "unmatched"))
            by_shape[key]["ps"] += ps
            by_shape[key]["ops"][op_type] += ps  # forward (fused or not), backprop input, backprop filter
            if scope:  # "discriminator_3/conv0_1" -> "discriminator/conv0": every call of a layer is one layer
                by_shape[key]["layers"].add("/".join(re.sub(r"_\d+$", "", p) for p in scope.split("/")))
    out = {"op_ms_per_step": round(total * per_ms, 2), "op_events_per_step": round(len(events) / steps),
           # any here: TF's oneDNN kernels ran (off by default on CPUs without AVX-512 VNNI/BF16 or AMX)
           "onednn_op_types": sorted({e[2] for e in events if e[2].startswith("_Mkl")}), "categories": {}}
    for cat, c in sorted(cats.items(), key=lambda kv: -kv[1]["ps"]):
        top = 10 if cat == "element_wise" else 5
        out["categories"][cat] = {"ms_per_step": round(c["ps"] * per_ms, 2), "share_of_op_time": round(c["ps"] / total, 4),
                                  "events_per_step": round(c["n"] / steps),
                                  "top_types_ms": {t: round(v * per_ms, 2) for t, v in c["types"].most_common(top)}}
    for cat in ("convolution", "dense_matmul"):
        rows = [{"shape": shape, "ms_per_step": round(v["ps"] * per_ms, 2), "layers": sorted(v["layers"]),
                 "ms_by_op": {op: round(ps * per_ms, 2) for op, ps in v["ops"].most_common()}}
                for (c, shape), v in by_shape.items() if c == cat]
        out[f"{cat}_by_shape"] = sorted(rows, key=lambda r: -r["ms_per_step"])
    return out


def profile(precision: str, args, logdir: str) -> dict:
    import keras
    import tensorflow as tf

    try:
        log(f"[{precision}] building and tracing the step")
        one_step, graph = build_step(precision, args.batch, args.small)
        one_step()  # second warm-up step: kernel selection, oneDNN primitive caches
        t = time.perf_counter()
        for _ in range(args.steps):
            one_step()
        wall = (time.perf_counter() - t) / args.steps
        log(f"[{precision}] untraced {wall * 1e3:.0f} ms/step; tracing {args.steps} steps")
        options = tf.profiler.experimental.ProfilerOptions(host_tracer_level=2, python_tracer_level=0, device_tracer_level=0)
        tf.profiler.experimental.start(logdir, options=options)
        t = time.perf_counter()
        for _ in range(args.steps):
            one_step()
        traced = (time.perf_counter() - t) / args.steps
        tf.profiler.experimental.stop()
        result = breakdown(list(trace_events(logdir)), layer_shapes(graph), args.steps)
        return {"wall_ms_per_step_untraced": round(wall * 1e3, 1), "wall_ms_per_step_traced": round(traced * 1e3, 1),
                "op_seconds_over_wall": round(result["op_ms_per_step"] / (traced * 1e3), 3), **result}
    finally:
        keras.mixed_precision.set_global_policy("float32")
        keras.backend.clear_session()


def onednn_child(precision: str, args):
    """Runs in the child: warm up, then one step between markers on stdout (oneDNN also prints there)."""
    one_step, _ = build_step(precision, args.batch, args.small)
    one_step()
    print(MARK + "begin", flush=True)
    one_step()
    print(MARK + "end", flush=True)


def onednn_summary(stdout: str) -> dict:
    """Sums "onednn_verbose,[v1,]primitive,exec,cpu,<kind>,<impl>,<prop>,<descs>,...,<ms>" lines of the step."""
    body = stdout.split(MARK + "begin", 1)[-1].split(MARK + "end", 1)[0]
    version = next((l.split(",")[-1] for l in stdout.splitlines() if "oneDNN v" in l), None)
    kinds = collections.defaultdict(lambda: {"count": 0, "ms": 0.0, "impls": collections.Counter(),
                                             "src_types": collections.Counter()})
    conv_prop, reorders = collections.Counter(), collections.Counter()
    for line in body.splitlines():
        f = line.strip().split(",")
        if not f[0].startswith("onednn_verbose") or "exec" not in f:
            continue
        i = f.index("exec")
        kind, impl, prop, ms = f[i + 2], f[i + 3], f[i + 4], float(f[-1])
        k = kinds[kind]
        k["count"] += 1
        k["ms"] += ms
        k["impls"][impl or "-"] += 1  # gemm_api has none
        src = re.match(r"src[_:](\w+)", f[i + 5])
        k["src_types"][src[1] if src else "?"] += 1
        if kind == "convolution":
            conv_prop[prop] += ms
        if kind == "reorder":
            reorders[f[i + 5]] += ms  # "src:f32::blocked:abcd::f0 dst:f32::blocked:Acdb8a::f0": the layouts
    out = {"onednn_version": version,
           "primitives": {k: {"count": v["count"], "ms": round(v["ms"], 2), "impls": dict(v["impls"].most_common()),
                              "src_types": dict(v["src_types"].most_common())}
                          for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]["ms"])},
           "convolution_ms_by_prop_kind": {k: round(v, 2) for k, v in conv_prop.most_common()},
           "top_reorders_ms": {k: round(v, 2) for k, v in reorders.most_common(5)}}
    if "convolution" not in kinds:
        out["note"] = ("no convolution primitive: TF's oneDNN kernels were off (TF_ENABLE_ONEDNN_OPTS unset on a CPU "
                       "without AVX-512 VNNI/BF16 or AMX, or =0; bfloat16 needs AVX-512). Convolutions ran in Eigen; "
                       "gemm_api lines are the sgemm blocks Eigen's float32 contractions hand to oneDNN.")
    return out


def onednn_verbose(precision: str, args) -> dict:
    log(f"[{precision}] one step with ONEDNN_VERBOSE=1 in a child process")
    cmd = [sys.executable, os.path.abspath(__file__), "--onednn-child", precision, "--batch", str(args.batch)]
    cmd += ["--small"] if args.small else []
    env = {**os.environ, "ONEDNN_VERBOSE": "1"}  # read by oneDNN when TF loads it: hence a fresh process
    run = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True)  # stderr goes in the error
    if run.returncode:
        raise RuntimeError(f"oneDNN verbose child failed ({run.returncode}):\n{run.stderr[-3000:]}")
    return onednn_summary(run.stdout)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--precisions", default="float32,mixed_bfloat16")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=3, help="steps timed untraced, then steps traced")
    p.add_argument("--small", action="store_true", help="tiny models (G 16 wide x 2 blocks, D 16 wide): smoke test")
    p.add_argument("--onednn-verbose", action="store_true")
    p.add_argument("--logdir", help="keep the traces here (TensorBoard profile plugin / trace viewer)")
    p.add_argument("--onednn-child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.onednn_child:
        return onednn_child(args.onednn_child, args)

    import tensorflow as tf

    from components.trainer.precision import speed_flags

    precisions = [x.strip() for x in args.precisions.split(",") if x.strip()]
    root = args.logdir or tempfile.mkdtemp(prefix="bench-profile-")
    try:
        result = {
            "bench": "profile_step", "batch": args.batch, "steps_traced": args.steps,
            "model": ("small (G 16x2 blocks, D 16 wide)" if args.small else "reference sizes (G 64x16 blocks, D 8 convs, dense 1024)")
                     + ", VGG19 block5_conv4 random weights",
            "cpus": os.cpu_count(), "cpu_flags": speed_flags(), "tensorflow": tf.__version__,
            "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset (TF default)"),
            "notes": "op_ms = op-seconds summed over threads (ops overlap on 2 inter-op threads; Python and "
                     "dispatch time between ops are not in it). One replica: the all-reduce is a local no-op, "
                     "collectives appear only with 2+ workers. Shapes: forward input * kernel, from the graph.",
            "precisions": {prec: profile(prec, args, os.path.join(root, prec)) for prec in precisions},
        }
        if args.onednn_verbose:
            result["onednn_verbose_one_step"] = {prec: onednn_verbose(prec, args) for prec in precisions}
        print(json.dumps(result, indent=2))
    finally:
        if not args.logdir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
