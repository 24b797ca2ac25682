"""What every job in jobs/ shares: its parser, logging, and one clear error line (exit 2) instead of a traceback."""

from __future__ import annotations

import sys

from components.errors import UserError
from components.logs import setup_logging


def parser(description: str, keys: list[str]):
    """A job's argument parser: --config plus one flag per config key (see components.config)."""
    import argparse

    from components import config

    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    config.add_flags(p, keys)
    return p


def run_main(main, argv=None) -> int:
    """Call main(argv); user errors become `error: <message>` on stderr and exit code 2. A main that
    returns an int chooses the exit code (e.g. 1 for partial failure)."""
    setup_logging()
    try:
        code = main(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return code if isinstance(code, int) else 0
