"""trainer: SRGAN training on Ray Train (each worker given its TF_CONFIG), data-parallel over workers and devices."""

from components.trainer.launcher import TrainError, run

__all__ = ["TrainError", "run"]
