"""What every job in jobs/ shares: its parser, logging, and one clear error line (exit 2) instead of a traceback."""

from __future__ import annotations

import sys

from components import logs
from components.errors import UserError


def parser(description: str, keys: list[str]):
    """A job's argument parser: --config plus one flag per config key (see components.config)."""
    import argparse

    from components import config

    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    config.add_flags(p, keys)
    p.add_argument("--verbose", action="store_true",
                   help="show every library line too (TensorFlow, Ray, Beam); by default known noise is filtered")
    return p


def run_main(main, argv=None) -> int:
    """Call main(argv); user errors become `error: <message>` on stderr and exit code 2. A main that
    returns an int chooses the exit code (e.g. 1 for partial failure)."""
    logs.setup_logging()
    try:
        code = main(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return code if isinstance(code, int) else 0


def run_console(main) -> int:
    """A job run from the command line (console script or `python jobs/<name>.py`): --verbose is honoured
    before anything is imported, the process's stderr is filtered for known noise, then `run_main`."""
    if "--verbose" in sys.argv[1:]:
        logs.set_verbose()
    logs.filter_native_stderr()
    return run_main(main)
