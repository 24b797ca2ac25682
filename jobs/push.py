"""Pusher component: a blessed run -> <artifact-root>/models/<model-name>/<version>/ (then LATEST).

    python jobs/push.py --run-id RUN [--model-name srgan-x4]
    python jobs/push.py --run-id RUN --push-unblessed   # loud; the version never becomes LATEST

A run that is NOT_BLESSED is refused (exit 2). Pushing the same run again does nothing.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from components import cli, config  # noqa: E402

KEYS = ["artifact_root", "run_id", "force", "model_name", "push_unblessed", "data_licence"]


def build_parser():
    return cli.parser(__doc__, KEYS)


def main(argv=None):
    cfg = config.from_args(build_parser().parse_args(argv), KEYS)

    from components import pusher
    card = pusher.run(cfg)
    state = "already pushed as" if card.get("already_pushed") else "pushed as"
    print(f"run {cfg.run_id} {state} version {card['version']}: {card['uri']}"
          f" ({'blessed' if card['blessed'] else 'NOT blessed: LATEST unchanged'})")


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
