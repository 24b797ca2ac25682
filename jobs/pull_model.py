"""Pull a pushed model version to a local folder, verifying the sha256 of every file.

    python jobs/pull_model.py --model-uri s3://bucket/srgan/models/srgan-x4 [--version 3|latest] --output DIR

DIR becomes the version folder (SavedModel + generator.keras + model.json). On a checksum mismatch
nothing is left behind and the exit code is 2.
"""

import os
import sys

from components import cli, config

KEYS = ["model_uri", "version", "output", "force"]


def build_parser():
    return cli.parser(__doc__, KEYS)


def main(argv=None):
    cfg = config.from_args(build_parser().parse_args(argv), KEYS)
    if not cfg.model_uri or not cfg.output:
        raise config.ConfigError("pass --model-uri (a models/<name> folder or a version folder) and --output DIR")

    from components import registry
    card = registry.pull(cfg.model_uri, cfg.output, cfg.serve.version, force=cfg.force)
    print(f"pulled {card['name']} version {card['version']} (run {card['run_id']}, "
          f"{'blessed' if card.get('blessed') else 'NOT blessed'}) to {os.path.abspath(cfg.output)}; "
          f"{len(card['files'])} files verified")


def console_main():  # the console script (setup.py); `python jobs/<name>.py` runs the same
    return cli.run_console(main)


if __name__ == "__main__":
    sys.exit(console_main())
