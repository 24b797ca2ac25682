"""trainer: SRGAN training on Ray Train (TensorflowTrainer), data-parallel over workers and devices."""

from components.trainer.launcher import TrainError, read_run, run, run_uri

__all__ = ["TrainError", "read_run", "run", "run_uri"]
