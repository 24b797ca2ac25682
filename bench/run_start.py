"""What a training run costs before and around its steps: prints one JSON object.

    python bench/run_start.py [--checkouts DIR[,DIR...]] [--repeats 3]

Each repeat runs, for every checkout in turn (alternating, so neighbours see the same machine weather), a tiny
`jobs/train.py` (width 8, 10 pixel steps, 1 worker, its own local Ray) with PYTHONPATH at that checkout, on the
built-in sample preprocessed once. It reports the run's wall time and Ray Train's controller process (an actor
that never trains), sampled from /proc every 0.3 s: peak RSS and CPU seconds. Compare two versions with
`git worktree add /tmp/old <commit>` and `--checkouts /tmp/old,.`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--generator-width", "8", "--generator-blocks", "2", "--vgg-weights", "none", "--global-batch-size", "4",
        "--cpus-per-worker", "1", "--pretrain-steps", "10", "--gan-steps", "0", "--steps-per-epoch", "10",
        "--content-loss", "pixel"]


def _controller_usage() -> tuple[int, float] | None:
    """(RSS kB, CPU s) of Ray Train's controller process on this machine, if one runs."""
    tick = os.sysconf("SC_CLK_TCK")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"TrainController" not in f.read():
                    continue
            with open(f"/proc/{pid}/status") as f:
                rss = int(next(line for line in f if line.startswith("VmRSS")).split()[1])
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return rss, (int(fields[11]) + int(fields[12])) / tick
        except (OSError, StopIteration, IndexError, ValueError):  # gone meanwhile
            continue
    return None


def one_run(checkout: str, root: str, dataset_id: str, run_id: str) -> dict:
    cmd = [sys.executable, os.path.join(checkout, "jobs", "train.py"), "--artifact-root", root,
           "--dataset-id", dataset_id, "--run-id", run_id, *TINY]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # always a fresh local cluster
    env["PYTHONPATH"] = checkout
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak, cpu = 0, 0.0
    while proc.poll() is None:
        usage = _controller_usage()
        if usage:
            peak, cpu = max(peak, usage[0]), max(cpu, usage[1])
        time.sleep(0.3)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{checkout}: jobs/train.py failed:\n{proc.stderr.read()[-3000:]}")
    return {"wall_s": round(wall, 1), "controller_peak_rss_mb": round(peak / 1024), "controller_cpu_s": round(cpu, 2)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkouts", default=REPO, help="comma-separated source trees to compare (default: this one)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)

    from components import config, preprocess, sample_data
    from components.logs import setup_console
    from components.trainer.precision import speed_flags

    setup_console()
    checkouts = [os.path.abspath(c) for c in args.checkouts.split(",") if c]
    root = tempfile.mkdtemp(prefix="bench-run-start-")
    cfg = config.Config(artifact_root=root, input=sample_data.write_sample_images())
    cfg.preprocess.eval_count = 8
    dataset_id = preprocess.run(cfg, [])["dataset_id"]
    runs = {c: [] for c in checkouts}
    for rep in range(args.repeats):
        for c in checkouts:
            runs[c].append(one_run(c, root, dataset_id, f"start-{rep}-{checkouts.index(c)}"))
            print(f"repeat {rep + 1}/{args.repeats}, {c}: {runs[c][-1]}", file=sys.stderr, flush=True)
    summary = {c: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for c, rs in runs.items()}
    print(json.dumps({"machine": f"{platform.machine()}, {os.cpu_count()} cores, flags {speed_flags()}",
                      "runs": runs, "median": summary}, indent=2))


if __name__ == "__main__":
    main()
