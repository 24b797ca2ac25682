"""Pusher component: a blessed run -> <artifact-root>/models/<model-name>/<version>/ (then LATEST).

    python jobs/push.py --run-id RUN [--model-name srgan-x4]
    python jobs/push.py --run-id RUN --push-unblessed   # loud; the version never becomes LATEST

A run that is NOT_BLESSED is refused (exit 2). Pushing the same run again does nothing.
The version carries model.onnx and model.tflite (+ model_fp16.tflite) beside its SavedModel, each checked
against the SavedModel's pixels on the eval split first (--exports onnx,tflite,tflite_fp16 picks them; an
export that fails or disagrees fails the push, naming the format, and nothing is published).
"""

import sys

from components import cli, config

KEYS = ["artifact_root", "run_id", "force", "model_name", "push_unblessed", "data_licence", "strength_base_run",
        "default_strength", "exports", "export_check_images"]


def build_parser():
    return cli.parser(__doc__, KEYS)


def main(argv=None):
    cfg = config.from_args(build_parser().parse_args(argv), KEYS)

    from components import pusher
    card = pusher.run(cfg)
    state = "already pushed as" if card.get("already_pushed") else "pushed as"
    print(f"run {cfg.run_id} {state} version {card['version']}: {card['uri']}"
          f" ({'blessed' if card['blessed'] else 'NOT blessed: LATEST unchanged'})")


def console_main():  # the console script (setup.py); `python jobs/<name>.py` runs the same
    return cli.run_console(main)


if __name__ == "__main__":
    sys.exit(console_main())
