"""Pull a pushed model version to a local folder, verifying the sha256 of every file.

    python jobs/pull_model.py --model-uri s3://bucket/srgan/models/srgan-x4 [--version 3|latest] --output DIR

DIR becomes the version folder (SavedModel + generator.keras + model.json). On a checksum mismatch
nothing is left behind and the exit code is 2.

    python jobs/pull_model.py --watch --model-uri s3://bucket/srgan/models/srgan-x4 --output /models/srgan-x4

--watch keeps DIR in TF Serving's layout (DIR/<version>/) in step with LATEST, checking every
--poll-seconds, until SIGTERM/SIGINT: each new version is pulled and verified beside its final name and
renamed into place in one step; a version that fails verification is left out (and logged).
"""

import os
import sys

from components import cli, config

KEYS = ["model_uri", "version", "output", "force", "poll_seconds"]


def build_parser():
    p = cli.parser(__doc__, KEYS)
    p.add_argument("--watch", action="store_true", help="keep --output (a TF Serving model base path) in step "
                   "with LATEST until stopped")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    cfg = config.from_args(args, KEYS)
    if not cfg.model_uri or not cfg.output:
        raise config.ConfigError("pass --model-uri (a models/<name> folder or a version folder) and --output DIR")
    if args.watch:
        if cfg.serve.version not in (None, "latest"):
            raise config.ConfigError("--watch follows LATEST; it takes no --version")
        from components.serving import follower
        follower.watch_folder(cfg.model_uri, cfg.output, cfg.serve.poll_seconds)
        return None

    from components import registry
    card = registry.pull(cfg.model_uri, cfg.output, cfg.serve.version, force=cfg.force)
    print(f"pulled {card['name']} version {card['version']} (run {card['run_id']}, "
          f"{'blessed' if card.get('blessed') else 'NOT blessed'}) to {os.path.abspath(cfg.output)}; "
          f"{len(card['files'])} files verified")


def console_main():  # the console script (setup.py); `python jobs/<name>.py` runs the same
    return cli.run_console(main)


if __name__ == "__main__":
    sys.exit(console_main())
