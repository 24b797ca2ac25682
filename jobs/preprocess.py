"""Examples+transform component: images -> <artifact-root>/datasets/<dataset-id>/ (Beam + tf.Transform).

    python jobs/preprocess.py --input DIR|GLOB|s3://...|gs://... --artifact-root URI [beam options]

Flags this script does not know (e.g. --runner, --direct_running_mode) go to Beam.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from components import cli, config  # noqa: E402

KEYS = ["artifact_root", "input", "force", "crop_size", "scale", "resize_short_side", "eval_fraction",
        "eval_count", "num_shards", "image_extensions"]


def build_parser():
    return cli.parser(__doc__, KEYS)


def main(argv=None):
    parser = build_parser()
    args, beam_args = parser.parse_known_args(argv)
    bad = [a for a in beam_args if not a.startswith("--")]
    if bad:
        parser.error(f"unexpected arguments: {' '.join(bad)}")
    cfg = config.from_args(args, KEYS)

    from components import examples
    info = examples.run(cfg, beam_args)
    from components.dataset import dataset_uri
    print(f"dataset {info['dataset_id']}: {info['num_train']} train, {info['num_eval']} eval, "
          f"{info['num_rejected']} rejected -> {dataset_uri(cfg.artifact_root, info['dataset_id'])}")


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
