"""evaluator: PSNR/SSIM against bicubic, comparison grids, loss curve, and the blessing decision."""

from components.evaluator.evaluate import EvaluateError, eval_split, rewrite_report, run

__all__ = ["EvaluateError", "eval_split", "rewrite_report", "run"]
