"""examples+transform: raw images -> dataset artifact (TFRecord pairs, transform graph, rejects)."""

from components.examples.pipeline import PreprocessError, run

__all__ = ["PreprocessError", "run"]
