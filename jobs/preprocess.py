"""Examples+transform component: images -> <artifact-root>/datasets/<dataset-id>/ (Beam + tf.Transform).

    python jobs/preprocess.py --input DIR|GLOB|s3://...|gs://... --artifact-root URI [beam options]

Flags this script does not know (e.g. --runner, --direct_running_mode) go to Beam.
"""

import sys

from components import cli, config

KEYS = ["artifact_root", "input", "force", "crop_size", "scale", "resize_short_side", "eval_fraction",
        "eval_count", "num_shards", "image_extensions", "crop_mode", "patch_size", "patch_stride",
        "min_patch_detail", "max_patches_per_image", "max_eval_pixels"]


def build_parser():
    return cli.parser(__doc__, KEYS)


def main(argv=None):
    parser = build_parser()
    args, beam_args = parser.parse_known_args(argv)
    bad = [a for a in beam_args if not a.startswith("--")]
    if bad:
        parser.error(f"unexpected arguments: {' '.join(bad)}")
    cfg = config.from_args(args, KEYS)

    from components import preprocess
    info = preprocess.run(cfg, beam_args)
    from components.dataset import dataset_uri
    print(f"dataset {info['dataset_id']}: {info['num_train']} train records, {info['num_eval']} eval, "
          f"{info['num_rejected']} rejected -> {dataset_uri(cfg.artifact_root, info['dataset_id'])}")


def console_main():  # the console script (setup.py); `python jobs/<name>.py` runs the same
    return cli.run_console(main)


if __name__ == "__main__":
    sys.exit(console_main())
