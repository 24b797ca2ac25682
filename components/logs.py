"""Logging for every process of the project (jobs, Ray workers, benches): our lines, not library noise.

Neutral on purpose: components import this, never `components.cli` (which imports the components).
"""

from __future__ import annotations

import logging
import os
import sys

# Before TensorFlow is imported anywhere: its C++ INFO lines (oneDNN, CUDA probing) drown the progress.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def setup_logging() -> None:
    level = os.environ.get("SRGAN_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    # Beam and TF are chatty at INFO; our own loggers keep the level asked for.
    logging.getLogger().setLevel(level)  # basicConfig does nothing when a library configured logging first
    for noisy in ("apache_beam", "tensorflow", "absl"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger(noisy).level))
    # tf.Transform warns on every run that instance dicts are slower than Arrow batches; measured here
    # (bench/preprocess.py) the job is not the bottleneck, so the advice is noise.
    logging.getLogger("absl").addFilter(lambda record: "instance dicts" not in record.getMessage())
