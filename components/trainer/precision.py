"""`precision: auto`: the best precision the hardware a worker runs on offers, decided on the worker (the
driver may run on a head node without that hardware).

mixed_bfloat16 where it pays: a CPU with AMX-BF16 (~5x float32 convolutions, STACK.md) or a GPU of compute
capability >= 8.0 (Ampere and later); mixed_float16 on older GPUs (tensor cores from 7.0; float16 needs
loss scaling, which the step does); float32 otherwise (a CPU without AMX runs bfloat16 at ~0.55x float32).
"""

from __future__ import annotations

PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")


def choose(requested: str, cpu_flags: set[str], gpu_capabilities: list[tuple[int, int]]) -> tuple[str, str]:
    """(Keras policy, why) for what was asked and what the worker has. `gpu_capabilities`: (major, minor)
    of each GPU this worker uses; empty on a CPU worker."""
    if requested != "auto":
        return requested, "asked for"
    if gpu_capabilities:
        lowest = min(gpu_capabilities)
        if lowest >= (8, 0):
            return "mixed_bfloat16", f"GPU compute capability {lowest[0]}.{lowest[1]} (>= 8.0: bfloat16 tensor cores)"
        if lowest >= (7, 0):
            return "mixed_float16", f"GPU compute capability {lowest[0]}.{lowest[1]} (7.x: float16 tensor cores)"
        return "float32", f"GPU compute capability {lowest[0]}.{lowest[1]} (< 7.0: no tensor cores)"
    if "amx_bf16" in cpu_flags:
        return "mixed_bfloat16", "CPU with AMX-BF16 (amx_bf16 in /proc/cpuinfo)"
    return "float32", "CPU without AMX-BF16 (bfloat16 is slower than float32 there)"


def cpu_flags(path: str = "/proc/cpuinfo") -> set[str]:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def speed_flags() -> list[str]:
    """The CPU flags every speed figure names (bfloat16 is ~5x faster with AMX, slower without)."""
    flags = cpu_flags()
    return [f for f in SPEED_FLAGS if f in flags]


def onednn_kernels() -> bool | None:
    """Whether this process's TensorFlow runs its oneDNN CPU kernels (TF_ENABLE_ONEDNN_OPTS, read once
    when TensorFlow loads; components/__init__.py turns them on). None if this TensorFlow cannot say."""
    try:
        from tensorflow.python.util import _pywrap_util_port
        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return None


def resolve(requested: str, gpus: list) -> tuple[str, str]:
    """`choose` with this worker's facts; `gpus`: the tf.config physical GPU devices the worker uses."""
    import tensorflow as tf

    capabilities = []
    for gpu in gpus:
        cc = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        if cc:
            capabilities.append(tuple(cc))
    return choose(requested, cpu_flags(), capabilities)
