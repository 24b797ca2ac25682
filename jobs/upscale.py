"""Upscale images x4 with a trained model; large images are tiled so memory stays bounded.

    python jobs/upscale.py --model-uri DIR_OR_URI INPUT [INPUT...] --output OUT [--tile-size 128]

--model-uri: a pulled or pushed version folder, a models/<name> folder (LATEST, or --version N), a
generator.keras or a run folder. --strength S (a version pushed with a strength pair) blends its two
generators: 0 the base (e.g. clean-trained), 1 the pushed run's (e.g. trained on degraded LR). Inputs are files or folders (recursively), any size and format
Pillow reads; alpha is upscaled separately, grayscale stays grayscale. Outputs go under OUT with the
input's name; inputs are never overwritten, existing outputs are kept unless --force.
--runtime auto|tensorflow|onnxruntime|litert: what runs the model; onnxruntime and litert run a pushed version's
model.onnx / model.tflite (checked against the SavedModel's pixels when pushed) and never import TensorFlow.
auto (the default) takes the fastest the model carries (components.runtimes.choose) and logs which: tensorflow
for versions pushed before the exports, generator.keras files, run folders and --strength.
"""

import sys

from components import cli, config

KEYS = ["model_uri", "version", "output", "force", "tile_size", "tile_overlap", "strength", "runtime"]


def build_parser():
    p = cli.parser(__doc__, KEYS)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders (local or URIs)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    cfg = config.from_args(args, KEYS)
    if not cfg.model_uri or not cfg.output:
        raise config.ConfigError("pass --model-uri and --output")

    from components import upscaler
    model = upscaler.load(cfg.model_uri, cfg.serve.version, cfg.serve.strength, cfg.serve.runtime)
    rows = upscaler.upscale_files(model, args.inputs, cfg.output, cfg.serve.tile_size, cfg.serve.tile_overlap,
                                  force=cfg.force)
    for row in rows:
        print(f"{row['input']} -> {row.get('output', '-')}: {row['status']}")
    failed = [r for r in rows if r["status"].startswith("skipped")]
    if failed:
        print(f"{len(failed)} of {len(rows)} inputs could not be read (see above)", file=sys.stderr)
        return 1
    return None


def console_main():  # the console script (setup.py); `python jobs/<name>.py` runs the same
    return cli.run_console(main)


if __name__ == "__main__":
    sys.exit(console_main())
