"""The upscaling service's speed and memory, next to calling the model in-process. Prints one JSON object.

    python bench/serve.py [--sizes 64,256] [--concurrency 1,4,16] [--requests 16] [--replicas 1]

Pushes the reference-size generator (64 wide, 16 blocks; random weights: speed does not depend on them)
into a temporary registry, starts `jobs/serve.py` on it (a local Ray of its own, HTTP on 127.0.0.1),
and sends real HTTP requests from threads (PNG in, PNG out):
- memory first: the replica's peak RSS (VmHWM) after start-up, after one 512x512 -> 2048x2048 request,
  and after 4 such requests at once;
- then per input size and concurrency: requests/s, p50 and p99 latency (p99 of a few dozen requests is
  close to their maximum), after 2 untimed warm-up requests;
- in-process, on the same images and the same tiling: `upscale_decoded` (decode + tiled model + PNG
  encode: what a request does minus HTTP, Ray Serve and batching) and the bare SavedModel call.
The service/in-process ratios are measured within one run, so the machine's speed cancels out.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import http.client

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_flags() -> dict:
    flags, name = set(), "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
                if line.startswith("model name") and name == "?":
                    name = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return {"cpu": name, "cores": os.cpu_count(), "amx": sorted(f for f in flags if f.startswith("amx")),
            "avx512": sorted(f for f in flags if f.startswith("avx512")), "avx2": "avx2" in flags,
            "load_average_at_start": os.getloadavg()}


def push_reference_model(root: str) -> str:
    """The reference-size generator as version 1 of `root` (what the pusher writes, without a run)."""
    import keras

    from components import models, registry, storage
    from components.pusher.push import SIGNATURE, export_saved_model

    keras.utils.set_random_seed(0)
    staging = tempfile.mkdtemp(prefix="bench-serve-")
    try:
        keras_file = os.path.join(staging, "generator.keras")
        models.build_generator(residual_over_bicubic=True).save(keras_file)
        local = os.path.join(staging, "version")
        export_saved_model(keras_file, local)
        shutil.copyfile(keras_file, os.path.join(local, "generator.keras"))
        version = registry.claim_version(root, {"run_id": "bench"})
        storage.write_json(os.path.join(local, registry.MODEL_CARD), {
            "name": "bench", "version": version, "blessed": True, "run_id": "bench", "scale": 4,
            "signature": SIGNATURE, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "files": registry.file_hashes(local)})
        registry.commit_version(local, root, version)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    registry.update_latest(root)
    return registry.version_uri(root, version)


def post(port: int, data: bytes) -> tuple[int, float, bytes]:
    t = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request("POST", "/v1/upscale", body=data)
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, time.perf_counter() - t, body
    finally:
        conn.close()


def get_json(port: int, path: str) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path)
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def load(port: int, data: bytes, concurrency: int, total: int) -> dict:
    """`total` requests from `concurrency` threads; every answer must be 200."""
    latencies, statuses, lock = [], [], threading.Lock()
    per = [total // concurrency + (1 if i < total % concurrency else 0) for i in range(concurrency)]

    def run(n):
        for _ in range(n):
            status, seconds, _ = post(port, data)
            with lock:
                latencies.append(seconds)
                statuses.append(status)

    threads = [threading.Thread(target=run, args=(n,)) for n in per]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    lat = sorted(latencies)
    return {"concurrency": concurrency, "requests": total, "failed": sum(s != 200 for s in statuses),
            "requests_per_second": round(total / wall, 3), "p50_ms": round(1000 * statistics.median(lat), 1),
            "p99_ms": round(1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], 1)}


def peak_rss_mb(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmHWM", "VmRSS")):
                out[line.split(":")[0]] = round(int(line.split()[1]) / 1024, 1)
    return out


def png(arr) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="64,256")
    p.add_argument("--concurrency", default="1,4,16")
    p.add_argument("--requests", type=int, default=16, help="per (size, concurrency); at least the concurrency")
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--tile-size", type=int, default=128)
    p.add_argument("--tile-overlap", type=int, default=16)
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    levels = [int(c) for c in args.concurrency.split(",")]

    from components import images as images_lib
    from components import sample_data, upscaler

    report = {"machine": {**cpu_flags(), "platform": platform.platform(),
                          "note": "2 cores shared with other engineers' work while measuring"},
              "model": "reference generator (64 wide, 16 blocks), random weights, SavedModel",
              "tile_size": args.tile_size, "tile_overlap": args.tile_overlap, "replicas": args.replicas}
    photo = np.tile(sample_data.photo("astronaut"), (2, 2, 1))
    images = {s: png(np.ascontiguousarray(photo[:s, :s])) for s in sizes + [512]}
    tmp = tempfile.mkdtemp(prefix="bench-serve-")
    proc = None
    try:
        root = os.path.join(tmp, "models", "bench")
        folder = push_reference_model(root)
        # in-process, the same work per image
        model = upscaler.load(folder)
        inproc = {}
        for s in sizes:
            decoded = images_lib.decode(images[s])
            n = max(3, args.requests // (4 if s > 128 else 1))
            timings, bare = [], []
            upscaler.upscale_decoded(model, decoded, "PNG", args.tile_size, args.tile_overlap)  # warm-up
            for _ in range(n):
                t = time.perf_counter()
                upscaler.upscale_decoded(model, decoded, "PNG", args.tile_size, args.tile_overlap)
                timings.append(time.perf_counter() - t)
            lr = decoded[0][None]
            model(lr)
            for _ in range(n):
                t = time.perf_counter()
                model(lr)
                bare.append(time.perf_counter() - t)
            inproc[s] = {"requests": n, "upscale_decoded_p50_ms": round(1000 * statistics.median(timings), 1),
                         "upscale_decoded_per_second": round(1 / statistics.mean(timings), 3),
                         "bare_saved_model_p50_ms": round(1000 * statistics.median(bare), 1)}
        del model

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        ray_tmp = os.path.join(tmp, "ray")
        os.makedirs(ray_tmp)
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env.update(RAY_TMPDIR=ray_tmp, SRGAN_CACHE_DIR=os.path.join(tmp, "cache"))
        log = open(os.path.join(tmp, "serve.log"), "w")
        t = time.perf_counter()
        proc = subprocess.Popen([sys.executable, os.path.join(REPO, "jobs", "serve.py"), "--model-uri", root,
                                 "--port", str(port), "--num-replicas", str(args.replicas),
                                 "--max-ongoing-requests", str(max(levels)), "--tile-size", str(args.tile_size),
                                 "--tile-overlap", str(args.tile_overlap)],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"jobs/serve.py exited: see {log.name}")
            try:
                if get_json(port, "/healthz").get("status") == "ok":
                    break
            except (OSError, ValueError):  # not listening yet, or Serve's own "not ready" answer
                pass
            time.sleep(1)
        report["start_seconds"] = round(time.perf_counter() - t, 1)
        pid = get_json(port, "/v1/model")["pid"]

        memory = {"after_start": peak_rss_mb(pid)}
        status, seconds, body = post(port, images[512])
        assert status == 200, body[:300]
        memory["after_one_512_to_2048"] = {**peak_rss_mb(pid), "seconds": round(seconds, 2)}
        memory["after_4_concurrent_512_to_2048"] = {**peak_rss_mb(pid), **load(port, images[512], 4, 4)}
        report["replica_memory_mb"] = memory if args.replicas == 1 else {"note": "measured with --replicas 1 only"}

        service = {}
        for s in sizes:
            for _ in range(2):
                post(port, images[s])  # warm-up (graph for this tile shape)
            service[s] = []
            for c in levels:
                total = max(c, args.requests // (4 if s > 128 else 1) * (2 if c > 4 else 1))
                service[s].append(load(port, images[s], c, total))
        report["results"] = {}
        for s in sizes:
            base = inproc[s]
            one = next((r for r in service[s] if r["concurrency"] == 1), service[s][0])
            report["results"][f"{s}x{s}->{4 * s}x{4 * s}"] = {
                "in_process": base, "service": service[s],
                "service_p50_over_in_process_p50_at_concurrency_1":
                    round(one["p50_ms"] / base["upscale_decoded_p50_ms"], 3),
                "service_best_rps_over_in_process_rps":
                    round(max(r["requests_per_second"] for r in service[s]) / base["upscale_decoded_per_second"], 3)}
        report["machine"]["load_average_at_end"] = os.getloadavg()
    finally:
        if proc and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
