"""pusher: exports blessed runs as versioned models (SavedModel + generator.keras + model card)."""

from components.pusher.push import PushError, export_saved_model, run

__all__ = ["PushError", "export_saved_model", "run"]
