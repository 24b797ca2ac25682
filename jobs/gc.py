"""Garbage collection of one artifact root: old model versions, runs, datasets, half-pushed versions, temp files.

    python jobs/gc.py --artifact-root s3://bucket/srgan                 # dry run: what would go, why, how big
    python jobs/gc.py --artifact-root s3://bucket/srgan --apply         # delete it
    python jobs/gc.py --config configs/retrain.yaml --keep-versions 10 --apply

Kept: the newest --keep-versions versions of each model, LATEST, every version a serving replica holds a
lease on; the newest --keep-runs runs and --keep-datasets datasets, and every run and dataset a kept version
(or kept run) came from; anything claimed or written in the last --grace-minutes. The rules and the deletion
order (safe against a concurrent push and against being interrupted: run it again) are in components/gc.py.
"""

import dataclasses
import sys

from components import cli, config

KEYS = ["artifact_root", "storage_retries"] + [f.name for f in dataclasses.fields(config.RetentionConfig)
                                               if f.name != "run_after_pipeline"]


def build_parser():
    p = cli.parser(__doc__, KEYS)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", dest="apply", action="store_false", default=False,
                      help="show what would be deleted (the default)")
    mode.add_argument("--apply", dest="apply", action="store_true", help="delete it")
    return p


def what(item, root: str) -> str:
    """An item as a person reads it: its path below the root, folders with a trailing /."""
    from components import storage

    return storage.relpath(item.uri, root) + ("/" if item.kind not in ("lease", "temp") else "")


def table(items, root: str) -> list[str]:
    """Rows of what (below the root), size, why."""
    from components import gc

    rows = [(what(i, root), gc.human_bytes(i.bytes), i.why) for i in items]
    width = max([len(r[0]) for r in rows] + [4])
    return [f"  {'what':<{width}}  {'size':>9}  why"] + [f"  {w:<{width}}  {size:>9}  {why}" for w, size, why in rows]


def main(argv=None):
    args = build_parser().parse_args(argv)
    cfg = config.from_args(args, KEYS)

    from components import gc
    plan = gc.plan(cfg.artifact_root, cfg.retention)
    print(f"gc of {plan.root} ({'deleting' if args.apply else 'dry run: nothing is deleted; --apply deletes'})")
    if not plan.delete:
        print("nothing to delete")
    elif args.apply:
        done = gc.apply(plan, report=lambda i: print(f"  deleted {what(i, plan.root)} ({gc.human_bytes(i.bytes)}): "
                                                     f"{i.why}"))
        print(f"deleted {len(done)} items, {sum(len(i.files) for i in done)} objects, "
              f"{gc.human_bytes(sum(i.bytes for i in done))}")
    else:
        print("would delete:")
        print("\n".join(table(plan.delete, plan.root)))
        print(f"total: {len(plan.delete)} items, {plan.objects} objects, {gc.human_bytes(plan.bytes)}")
    if plan.keep and not args.apply:
        print("kept:")
        print("\n".join(table(plan.keep, plan.root)))
    elif plan.keep:
        print("kept: " + ", ".join(f"{kind} {n}" for kind in gc.KINDS
                                   if (n := sum(1 for i in plan.keep if i.kind == kind))))


def console_main():  # the console script (setup.py); `python jobs/<name>.py` runs the same
    return cli.run_console(main)


if __name__ == "__main__":
    sys.exit(console_main())
