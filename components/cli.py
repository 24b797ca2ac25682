"""What every job in jobs/ shares: logging, and one clear error line (exit 2) instead of a traceback."""

from __future__ import annotations

import logging
import os
import sys

# Before TensorFlow is imported anywhere: its C++ INFO lines (oneDNN, CUDA probing) drown the progress.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

def user_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean "the user asked for something that cannot be done"; anything else is a bug
    and keeps its traceback."""
    from components.config import ConfigError
    from components.dataset import DatasetError
    from components.storage import StorageError
    from components.examples.pipeline import PreprocessError
    from components.trainer.launcher import TrainError
    from components.evaluator.evaluate import EvaluateError
    from components.pusher.push import PushError
    from components.registry import RegistryError
    from components.upscaler import UpscaleError
    return (ConfigError, DatasetError, StorageError, PreprocessError, TrainError, EvaluateError, PushError,
            RegistryError, UpscaleError)


def parser(description: str, keys: list[str]):
    """A job's argument parser: --config plus one flag per config key (see components.config)."""
    import argparse

    from components import config

    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    config.add_flags(p, keys)
    return p


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


def run_main(main, argv=None) -> int:
    """Call main(argv); user errors become `error: <message>` on stderr and exit code 2. A main that
    returns an int chooses the exit code (e.g. 1 for partial failure)."""
    setup_logging()
    try:
        code = main(argv)
    except user_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return code if isinstance(code, int) else 0
