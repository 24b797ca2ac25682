"""Pull a pushed model version to a local folder, verifying the sha256 of every file.

    python jobs/pull_model.py --model-uri s3://bucket/srgan/models/srgan-x4 [--version 3|latest] --output DIR

DIR becomes the version folder (SavedModel + generator.keras + model.onnx + model.tflite + model.json;
versions pushed before the exports have no .onnx/.tflite). On a checksum mismatch nothing is left behind
and the exit code is 2. --runtime R also checks, before downloading, that the version carries R's file,
and after verifying, loads it with R and upscales one probe tile (onnxruntime/litert import no TensorFlow);
--runtime auto probes the runtime `jobs/upscale.py` would choose (the fastest the version carries) and names it.
Without --runtime nothing is loaded.

    python jobs/pull_model.py --watch --model-uri s3://bucket/srgan/models/srgan-x4 --output /models/srgan-x4

--watch keeps DIR in TF Serving's layout (DIR/<version>/) in step with LATEST, checking every
--poll-seconds, until SIGTERM/SIGINT: each new version is pulled and verified beside its final name and
renamed into place in one step; a version that fails verification is left out (and logged). DIR keeps the
--keep-local-versions highest versions (default 2; never the one LATEST names): give TF Serving the same
number (model_version_policy { latest { num_versions: K } }, README "Serving").
"""

import os
import sys

from components import cli, config

KEYS = ["model_uri", "version", "output", "force", "poll_seconds", "runtime", "keep_local_versions"]


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
        if args.runtime not in (None, "tensorflow", "auto"):
            raise config.ConfigError("--watch keeps a TF Serving folder (SavedModels): --runtime does not apply")
        from components.serving import follower
        follower.watch_folder(cfg.model_uri, cfg.output, cfg.serve.poll_seconds,
                              keep_versions=cfg.serve.keep_local_versions)
        return None

    from components import registry
    runtime = cfg.serve.runtime if args.runtime else None  # the flag, validated by the config
    if runtime not in (None, "tensorflow", "auto"):  # before downloading anything: one clear error
        from components import runtimes
        source = registry.resolve(cfg.model_uri, cfg.serve.version)
        runtimes.choose(runtime, registry.card(source), source)
    card = registry.pull(cfg.model_uri, cfg.output, cfg.serve.version, force=cfg.force)
    if runtime:
        from components.serving import follower
        loaded = follower.load_and_warm(cfg.output, card["version"], card, 16, runtime=runtime)
        print(f"{loaded.model.runtime} loaded it and upscaled a probe tile")
    print(f"pulled {card['name']} version {card['version']} (run {card['run_id']}, "
          f"{'blessed' if card.get('blessed') else 'NOT blessed'}) to {os.path.abspath(cfg.output)}; "
          f"{len(card['files'])} files verified")


def console_main():  # the console script (setup.py); `python jobs/<name>.py` runs the same
    return cli.run_console(main)


if __name__ == "__main__":
    sys.exit(console_main())
