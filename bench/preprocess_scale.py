"""How the preprocessing job scales: input images vs wall time vs peak memory, one fresh job per size.

    python bench/preprocess_scale.py [--sizes 1000,4000,16000,64000] [--input DIR] [--output FILE.json]
                                     [--tmp-dir DIR] [-- beam options, e.g. --direct_running_mode=multi_processing]

For each size N, the input is N copies of the images in --input (default ../shared/data/faces-dev),
taken in order and cycled, each under a distinct name (c<k>/<original relative path>), in a temporary
folder that is removed afterwards (with the artifact root). `jobs/preprocess.py` runs as a child
process with its defaults; its memory is sampled from /proc every 0.2 s: the peak of the sum of the
RSS of the job and all its descendants (multi-processing workers included), and the kernel's
high-water mark of the largest single process (wait4's ru_maxrss). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

from components.config import PreprocessConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FACES = os.path.join(os.path.dirname(REPO), "shared", "data", "faces-dev")
EXTENSIONS = tuple(PreprocessConfig().extensions())  # what the job reads


def source_images(folder: str) -> list[str]:
    out = []
    for d, _, names in os.walk(folder):
        out += [os.path.relpath(os.path.join(d, n), folder) for n in names if n.lower().endswith(EXTENSIONS)]
    return sorted(out)


def make_input(src: str, rels: list[str], n: int, dest: str) -> None:
    """n files: copy k of the source set lands in dest/c<k>/..., so every name is distinct."""
    for i in range(n):
        k, j = divmod(i, len(rels))
        target = os.path.join(dest, f"c{k:04d}", rels[j])
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(os.path.join(src, rels[j]), target)


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(pid))
    return kids


def tree_rss(root: int) -> int:
    """Sum of VmRSS (bytes) of a process and all its descendants."""
    kids, todo, total = _children(), [root], 0
    while todo:
        pid = todo.pop()
        todo += kids.get(pid, [])
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            pass
    return total


def run_job(inp: str, root: str, beam_args: list[str], log_path: str) -> dict:
    cmd = [sys.executable, os.path.join(REPO, "jobs", "preprocess.py"), "--input", inp, "--artifact-root", root,
           *beam_args]
    peak, samples, trace, last_trace = 0, 0, [], -1.0
    with open(log_path, "w") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            rss = tree_rss(proc.pid)
            peak = max(peak, rss)
            samples += 1
            now = time.perf_counter() - start
            if now - last_trace >= 5:  # the RSS over time, to match with the job's stage logs
                trace.append([round(now, 1), time.strftime("%H:%M:%S"), round(rss / 1e9, 3)])
                last_trace = now
            time.sleep(0.2)
        seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        tail = open(log_path).read()[-3000:]
        raise SystemExit(f"job failed (exit {code}) on {inp}:\n{tail}")
    return {"seconds": round(seconds, 1), "peak_rss_tree_gb": round(peak / 1e9, 3),
            "peak_rss_main_gb": round(usage.ru_maxrss * 1024 / 1e9, 3), "rss_samples": samples,
            "rss_trace_every_5s": trace}


def cpu_flags() -> dict:
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return {}
    flags = text.split("\nflags", 1)[1].split("\n", 1)[0].split() if "\nflags" in text else []
    model = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")]
    return {"model": model[0] if model else None,
            "amx": sorted(f for f in flags if f.startswith("amx")),
            "avx512": sorted(f for f in flags if f.startswith("avx512"))}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,4000,16000,64000")
    parser.add_argument("--input", default=FACES, help="folder of images to copy (default ../shared/data/faces-dev)")
    parser.add_argument("--output", help="also write the JSON here")
    parser.add_argument("--tmp-dir", default=None, help="where the temporary inputs and artifacts go")
    parser.add_argument("--keep-logs", help="copy each job's log into this folder")
    args, beam_args = parser.parse_known_args()
    if not os.path.isdir(args.input):
        raise SystemExit(f"{args.input}: no such folder (pass --input)")
    rels = source_images(args.input)
    result = {"bench": "preprocess_scale", "input": args.input, "source_images": len(rels),
              "beam_args": beam_args, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "machine": {"cpus": os.cpu_count(), "cpu": cpu_flags(), "python": platform.python_version(),
                          "load_avg_at_start": os.getloadavg()},
              "runs": []}
    for n in [int(s) for s in args.sizes.split(",") if s]:
        work = tempfile.mkdtemp(prefix="bench-preprocess-scale-", dir=args.tmp_dir)
        try:
            t = time.perf_counter()
            make_input(args.input, rels, n, os.path.join(work, "input"))
            copy_s = time.perf_counter() - t
            load = os.getloadavg()
            run = run_job(os.path.join(work, "input"), os.path.join(work, "art"), beam_args,
                          os.path.join(work, "job.log"))
            infos = [os.path.join(work, "art", "datasets", d, "dataset.json")
                     for d in os.listdir(os.path.join(work, "art", "datasets"))]
            info = json.load(open(infos[0]))
            run.update({"images": n, "images_per_s": round(n / run["seconds"], 1), "copy_seconds": round(copy_s, 1),
                        "load_avg_before": [round(x, 2) for x in load],
                        "num_train": info["num_train"], "num_eval": info["num_eval"],
                        "num_rejected": info["num_rejected"], "dataset_id": info["dataset_id"]})
            if args.keep_logs:
                os.makedirs(args.keep_logs, exist_ok=True)
                shutil.copy(os.path.join(work, "job.log"), os.path.join(args.keep_logs, f"job-{n}.log"))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        result["runs"].append(run)
        print(json.dumps({k: v for k, v in run.items() if k != "rss_trace_every_5s"}), file=sys.stderr, flush=True)
    text = json.dumps(result, indent=2)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
