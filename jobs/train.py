"""Trainer component: <artifact-root>/datasets/<dataset-id> -> <artifact-root>/runs/<run-id>/ (Ray Train).

    python jobs/train.py --dataset-id ds-... [--run-id NAME] [--num-workers 2] [--gpus-per-worker 1] ...
    ray job submit -- python jobs/train.py --dataset-id ds-... --artifact-root s3://bucket/srgan

The same --run-id again resumes from its latest checkpoint.
"""

import dataclasses
import sys

from components import cli, config

KEYS = ["artifact_root", "dataset_id", "run_id"] + [
    f.name for section in (config.TrainConfig, config.RealisticDegradation, config.MixedDegradation)
    for f in dataclasses.fields(section)]


def build_parser():
    return cli.parser(__doc__, KEYS)


def main(argv=None):
    parser = build_parser()
    cfg = config.from_args(parser.parse_args(argv), KEYS)

    from components import trainer
    record = trainer.run(cfg)
    print(f"run {record['run_id']}: {record['status']}; generator: {record['final_generator']}")


def console_main():  # the console script (setup.py); `python jobs/<name>.py` runs the same
    return cli.run_console(main)


if __name__ == "__main__":
    sys.exit(console_main())
