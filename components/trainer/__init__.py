"""trainer: SRGAN training on Ray Train (TensorflowTrainer), data-parallel over workers and devices."""

from components.trainer.launcher import TrainError, run

__all__ = ["TrainError", "run"]
