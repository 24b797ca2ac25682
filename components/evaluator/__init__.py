"""evaluator: PSNR/SSIM against bicubic, comparison grids, loss curve, and the blessing decision."""

from components.evaluator.evaluate import EvaluateError, rewrite_report, run

__all__ = ["EvaluateError", "rewrite_report", "run"]
