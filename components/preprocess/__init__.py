"""The preprocess component (examples+transform): raw images -> dataset artifact (TFRecord pairs, transform graph, rejects)."""

from components.preprocess.beam import PreprocessError, run

__all__ = ["PreprocessError", "run"]
