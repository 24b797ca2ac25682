"""The pipeline with one config: preprocess -> train. The entry point for scheduled retraining.

    python jobs/pipeline.py --input s3://bucket/raw --artifact-root s3://bucket/srgan [train flags] [beam flags]

Idempotent: the dataset id is a fingerprint of the inputs, and the default run id is derived from it
(`retrain-<dataset-id>`), so a second run on unchanged data finds the dataset committed and the run
finished, and does no work. Evaluation, blessing and pushing join this pipeline with the evaluator and
pusher components (not built yet).
"""

import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from components import cli, config  # noqa: E402

KEYS = (["artifact_root", "input", "force", "run_id"]
        + [f.name for f in dataclasses.fields(config.PreprocessConfig)]
        + [f.name for f in dataclasses.fields(config.TrainConfig)])


def build_parser():
    return cli.parser(__doc__, KEYS)


def main(argv=None):
    args, beam_args = build_parser().parse_known_args(argv)
    cfg = config.from_args(args, KEYS)

    from components import examples, trainer
    info = examples.run(cfg, beam_args)
    cfg.dataset_id = info["dataset_id"]
    cfg.run_id = cfg.run_id or f"retrain-{info['dataset_id']}"
    record = trainer.run(cfg)
    print(f"pipeline: dataset {cfg.dataset_id} ({info['num_train']} train, {info['num_eval']} eval) -> "
          f"run {record['run_id']}: {record['status']}; generator: {record['final_generator']}")


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
