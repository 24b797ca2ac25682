"""The pipeline with one config: preprocess -> train -> evaluate -> push. Scheduled retraining's entry point.

    python jobs/pipeline.py --config configs/quickstart.yaml             # built-in sample photos, ~10 min
    python jobs/pipeline.py --config configs/retrain.yaml --input s3://bucket/raw --artifact-root s3://bucket/srgan

Idempotent: the dataset id fingerprints the inputs and the default run id is derived from it
(`retrain-<dataset-id>`, plus `-from-v<N>` when warm-starting from version N), so a second run on
unchanged data skips every step. A NOT_BLESSED model is not pushed (exit code 0: the decision is
recorded, not an error). The summary goes to runs/<run-id>/pipeline.json.
"""

import dataclasses
import sys

from components import cli, config

KEYS = (["artifact_root", "input", "force", "run_id"]
        + [f.name for section in (config.PreprocessConfig, config.TrainConfig, config.EvaluateConfig,
                                  config.PushConfig, config.PipelineConfig, config.RealisticDegradation,
                                  config.MixedDegradation, config.RetentionConfig)
           for f in dataclasses.fields(section)])


def build_parser():
    return cli.parser(__doc__, KEYS)


def main(argv=None):
    args, beam_args = build_parser().parse_known_args(argv)
    cfg = config.from_args(args, KEYS)

    from components import pipeline, runs
    summary = pipeline.run(cfg, beam_args)
    print(f"pipeline: run {summary['run_id']} on dataset {summary['dataset_id']} in {summary['seconds']:.0f} s")
    for s in summary["steps"]:
        print(f"  {s['step']:<10} {s['status']}")
    print(summary["decision"])
    for reason in summary["reasons"]:
        print(f"  {reason}")
    for warning in summary["warnings"]:
        print(f"  WARNING: {warning}")
    if summary["pushed"]:
        print(f"model: {summary['pushed']['uri']} (LATEST = {summary['latest']})")
    print(f"metrics and comparison grids: {summary['eval']}/ (metrics.json, per_image.csv, grids/, loss_curve.png)")
    print(f"report: {summary['eval']}/{runs.REPORT_HTML}")


def console_main():  # the console script (setup.py); `python jobs/<name>.py` runs the same
    return cli.run_console(main)


if __name__ == "__main__":
    sys.exit(console_main())
