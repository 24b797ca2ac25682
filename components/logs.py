"""Logging for every process of the project (jobs, Ray workers, benches): our lines, not library noise.

Neutral on purpose: components import this, never `components.cli` (which imports the components).

Quiet by default, without hiding real errors: library loggers show warnings and errors (not INFO), and
the lines below, each known to be noise, are dropped by pattern, nothing else. TensorFlow's C++ core
and Ray's processes write to file descriptor 2 directly, so a job's stderr goes through a filter
(`filter_native_stderr`); Ray forwards its workers' output to the driver, so the driver's filter sees
theirs too. `--verbose` (SRGAN_VERBOSE=1) brings everything back.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import sys
import threading

_USER_TF_LOG_LEVEL = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
# Before TensorFlow is imported anywhere: its C++ INFO lines (oneDNN, CPU features) drown the progress.
# Not 3: that would hide TensorFlow's real errors too.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
VERBOSE_ENV = "SRGAN_VERBOSE"
# Our loggers: one per component, named after it. Their lines look the same in every process:
# "HH:MM:SS <name> <LEVEL> <message>" (what tests/test_pipeline.py counts as ours).
OURS = ("preprocess", "trainer", "evaluate", "push", "registry", "upscale", "pipeline", "storage", "serving", "gc")
LINE_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def _no_gpu_here() -> bool:
    """No NVIDIA device on this machine: CUDA's complaints are noise. Where a device exists they may be
    the reason a GPU goes unused, and stay."""
    return not os.path.exists("/dev/nvidia0") and not os.path.exists("/proc/driver/nvidia")


# Each pattern: one known line that tells the user nothing they can act on (seen on a quickstart run).
NOISE = [
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"This TensorFlow binary is optimized to use available CPU instructions",
    r"To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags",
    r"oneDNN custom operations are on\. You may see slightly different numerical results",
    r"meta_optimizer\.cc:\d+\] (remapper|layout) failed: ",  # grappler skipping an optimisation, not an error
    r"Token authentication is enabled for this Ray cluster",
    r"Actor with class name: 'PreemptionWatcher' .*has constructor arguments in the object store",
    r"You are (passing|outputting) instance dicts",  # tf.Transform's advice; the job is not the bottleneck
    r"Missing pipeline option \(runner\)\. Executing pipeline using the default runner",
    # Ray Train's INFO lines on every report; its logger is named by file path, so its log level misses them
    r"Reporting training result \d+: TrainingReport\(",
    r"Checkpoint successfully created at: Checkpoint\(",
    # the pusher's LiteRT export takes TF's older converter path on purpose (the suggested one gave wrong pixels,
    # components/pusher/exports.py), and the LiteRT interpreter announces its default CPU delegate
    r"Please consider providing the trackable_obj argument in the from_concrete_functions",
    r"Created TensorFlow Lite XNNPACK delegate for CPU",
    # Ray Train's placement-group cleaner looks its cluster up by address=None; with a second local Ray instance
    # on the machine (another job, a bench) that lookup raises in its monitor thread, every line of the
    # traceback forwarded to us. The run is unaffected (its placement group is removed when the job ends)
    r"\(PlacementGroupCleaner pid=\d+\)",
]
if _no_gpu_here():
    NOISE += [r"cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine",
              r"cuda_platform\.cc:\d+\] failed call to cuInit",
              r"cuda_executor\.cc:\d+\] .*(kernel driver does not appear to be running|CUDA_ERROR_NO_DEVICE)"]
_NOISE_RE = re.compile("|".join(f"(?:{p})" for p in NOISE))
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")


def eta(seconds: float | None) -> str:
    """An ETA as every progress line prints it: H:MM:SS, hours not wrapped at 24; "--" while unknown."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "--"
    s = int(round(max(seconds, 0.0)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def is_noise(line: str) -> bool:
    return bool(_NOISE_RE.search(_ANSI_RE.sub("", line)))


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def set_verbose() -> None:
    """Everything back: library INFO lines, TensorFlow's C++ INFO lines, Ray Train's own lines (the
    environment variable reaches Ray workers and child processes)."""
    os.environ[VERBOSE_ENV] = "1"
    if _USER_TF_LOG_LEVEL is None:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"


class _NoiseFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return verbose() or not is_noise(record.getMessage())


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record comes (pytest's capture, a redirect), not to the
    stream of the moment logging was set up."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def setup_logging(ray_worker: bool = False) -> None:
    """Our loggers (OURS) at SRGAN_LOG_LEVEL (INFO); every other logger at WARNING unless verbose; known
    noise dropped. In a Ray Train worker, whose root logger Ray has configured, ours get their own handler."""
    level = os.environ.get("SRGAN_LOG_LEVEL", "INFO").upper()
    root = logging.getLogger()
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter(LINE_FORMAT, datefmt="%H:%M:%S"))
    handler.addFilter(_NoiseFilter())
    if not ray_worker and not root.handlers:  # as basicConfig: logging configured by the caller (pytest) stays
        root.addHandler(handler)
    # Libraries log through the root logger's handlers (aiobotocore's "Found credentials", Beam's runner line):
    # their INFO lines are not for the user.
    root.setLevel(logging.INFO if verbose() else logging.WARNING)
    for name in OURS:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if ray_worker:
            if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
                logger.addHandler(handler)
            logger.propagate = False
    for name in ("apache_beam", "tensorflow", "absl", "ray"):  # loggers with a level of their own
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO if verbose() else max(logging.WARNING, logger.level))
    for existing in list(root.handlers):  # a handler a library added before us gets the same filter
        if not any(isinstance(f, _NoiseFilter) for f in existing.filters):
            existing.addFilter(_NoiseFilter())


_native_filter: dict = {}


def setup_console() -> None:
    """A script run from a terminal (the benches): our logging, and its stderr, its children's too, filtered
    of known noise. Jobs get the same through `cli.run_console`."""
    setup_logging()
    filter_native_stderr()


def filter_native_stderr() -> None:
    """Route this process's file descriptor 2 (and its children's) through a thread that drops the
    NOISE lines and passes every other line on. Once per process; nothing when verbose."""
    if verbose() or _native_filter:
        return
    try:
        sys.stderr.flush()
        original = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
    except OSError:  # no fd 2 to redirect (e.g. an embedded interpreter): stay unfiltered
        return

    def pump():
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            pending = b""
            while chunk := pipe.read(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                out = b"".join(line + b"\n" for line in lines if not is_noise(line.decode("utf-8", "replace")))
                if out:
                    os.write(original, out)
            if pending and not is_noise(pending.decode("utf-8", "replace")):
                os.write(original, pending)

    thread = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    thread.start()
    _native_filter.update(original=original, thread=thread)

    def restore():  # at exit: every line written so far reaches the terminal
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(original, 2)  # closes the pipe's last write end of this process: the pump sees EOF
        thread.join(timeout=2.0)  # children still holding the pipe keep it open: do not wait for them
    atexit.register(restore)
