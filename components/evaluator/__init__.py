"""evaluator: PSNR/SSIM against bicubic, comparison grids, loss curve, and the blessing decision."""

from components.evaluator.evaluate import BLESSED, NOT_BLESSED, EvaluateError, decision, eval_uri, run

__all__ = ["BLESSED", "NOT_BLESSED", "EvaluateError", "decision", "eval_uri", "run"]
