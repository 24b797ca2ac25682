"""The soak scenario of issue 28: weeks of scheduled retraining on one storage root, compressed into minutes.

One implementation for the slow test (tests/test_soak.py, 8 versions) and the bench (bench/soak.py, 30).
On an S3 root (SeaweedFS): a real Ray Serve service (`jobs/serve.py`, 2 replicas) follows LATEST under a steady
bounded load, the TF Serving sidecar (`jobs/pull_model.py --watch`) mirrors it, `jobs/gc.py --apply` runs after
every push, and a short process stages each new version through the bounded staging cache (what
`jobs/upscale.py` does first). Versions are pushed one after another, each a tiny generator with its own random
weights (so a response's pixels say which version made them), with a run of its own and, every 4 versions, a
new dataset. Some pushes are killed: the pushing process SIGKILLs itself at a fault point of the upload
(storage.set_fault_hook, the hook tests/test_storage_outages.py interrupts a push with). One version is tampered
(a file changed after its sha256 went into the card): the registry refuses it, the service keeps the one before.

Checked (each broken rule is a sentence in the report's `failures`; none is a pass):
- every request answered 200, with pixels equal to a local upscale of the version its header names (the
  version's SavedModel loaded in this process), and outputs of different versions told apart;
- per replica the versions never go down, and once every replica served v no response names less than v;
- at every sample (every 0.2 s) the serving cache and the watch folder hold at most keep_local versions (and
  bytes of keep_local copies; the serving cache one copy more per extra replica: replicas pulling the same new
  version at once each build their own) and the staging cache at most its bytes bound; every replica's RSS
  after the last switch is within 20% of its RSS after the fifth (the same replicas throughout);
- every object each gc deleted was eligible, by rules recomputed here from the pushes this scenario made
  and the listings before and after (never LATEST, a leased version, the newest keep_versions, a run or dataset a
  kept version or run names, the newest runs/datasets, a half push within grace), and gc's own report of
  what it deleted equals what left the bucket;
- after the last gc (past grace) the bucket holds exactly what the rules keep and nothing else (no orphans).
"""

from __future__ import annotations

import dataclasses
import datetime
import glob
import hashlib
import http.client
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import numpy as np

from tests.conftest import REPO, free_port, kill_processes_of

MODEL = "soak"
TILE, OVERLAP = 32, 8
VERSION_ENTRY = re.compile(r"^\.*(?:stale\.)?(\d+)(?:\.|$)")  # 3, .3.<id>, ..3.<id>.partial-<id>, .stale.3.<id>
DELETED = re.compile(r"^\s+deleted (\S+) \(")                  # jobs/gc.py --apply's line per item

# A push in a process of its own, killed (SIGKILL, no cleanup) once `after` objects of the version are uploaded.
KILLED_PUSH = r"""
import json, os, signal, sys
from components import registry, storage
root, local, run_id, after = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def hook(name, info):
    if name == "publish.uploaded" and info.get("index", 0) >= after:
        os.kill(os.getpid(), signal.SIGKILL)
storage.set_fault_hook(hook)
version = registry.claim_version(root, {"run_id": run_id})
print(version, flush=True)
path = os.path.join(local, registry.MODEL_CARD)
card = json.load(open(path))
json.dump({**card, "version": version}, open(path, "w"))
registry.commit_version(local, root, version)
registry.update_latest(root)
"""
# What a job does with a version first (upscaler.load -> storage.stage_in), without TensorFlow's start-up cost.
STAGE = ("import sys; from components import registry, storage; "
         "registry.verify(storage.stage_in(sys.argv[1]), registry.card(sys.argv[1]))")


@dataclasses.dataclass
class Settings:
    versions: int = 8             # good versions pushed (the first before the service starts)
    replicas: int = 2
    keep_local: int = 2           # serve.keep_local_versions: the serving cache and the watch folder
    keep_versions: int = 3        # retention.* for gc
    keep_runs: int = 3
    keep_datasets: int = 1
    grace_seconds: float = 3.0    # retention.grace_minutes = this / 60
    poll_seconds: float = 0.5
    rate: float = 4.0             # requests per second from the load client
    wait_seconds: float = 120.0   # for one switch (all replicas and the watch folder)

    def schedule(self) -> list[tuple[str, int]]:
        """After version 1: a killed push before every 4th version from the 3rd, the tampered one half-way."""
        events = []
        for i in range(2, self.versions + 1):
            if i % 4 == 3:
                events.append(("kill", i))
            if i == self.versions // 2 + 1:
                events.append(("tamper", i))
            events.append(("good", i))
        return events


class SoakError(Exception):
    pass


# Deadlines, pacing and the order of events use time.monotonic(): on this machine the wall clock was seen to
# jump minutes ahead (a paused VM) and time out every wait at once.


# ----------------------------------------------------------------------------- small helpers

def _request(port: int, method: str, path: str, body: bytes | None = None, timeout: float = 30):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _models(port: int, replicas: int, tries: int = 40) -> dict:
    """/v1/model of every replica, by replica name (requests land on any; ask until all answered, or fewer
    when one is not up yet)."""
    seen = {}
    for _ in range(tries):
        status, _h, body = _request(port, "GET", "/v1/model")
        if status == 200:
            state = json.loads(body)
            seen[state["replica"]] = state
        if len(seen) >= replicas:
            break
    return seen


def _same(got: bytes, want: bytes) -> bool:
    """Identical, or (a tile batched at another position: oneDNN sums in another order) at most 1 gray level
    in under 0.1% of the pixels."""
    from PIL import Image

    if got == want:
        return True
    a, b = (np.asarray(Image.open(io.BytesIO(x)).convert("RGB")).astype(int) for x in (got, want))
    return a.shape == b.shape and np.abs(a - b).max() <= 1 and (a != b).mean() < 1e-3


def _tree_bytes(path: str) -> int:
    total = 0
    for base, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(base, name)).st_size
            except OSError:
                pass
    if not os.path.isdir(path):
        try:
            total += os.lstat(path).st_size
        except OSError:
            pass
    return total


def _usage(path: str | None) -> tuple[int, set]:
    """(bytes, versions) of a cache or watch folder: every file counts; a folder named for a version (the
    version itself or a pull of it in progress) counts that version."""
    if not path:
        return 0, set()
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return 0, set()
    total, versions = 0, set()
    for name in names:
        full = os.path.join(path, name)
        total += _tree_bytes(full)
        m = VERSION_ENTRY.match(name)
        if m and os.path.isdir(full):
            versions.add(int(m.group(1)))
    return total, versions


def _rss(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class Sampler(threading.Thread):
    """Disk use of each cache and every replica's RSS, every `every` seconds until stopped."""

    def __init__(self, folders: dict, every: float = 0.2):
        super().__init__(daemon=True)
        self.folders = folders   # name -> path, or a callable giving it (the serving cache's name is a hash)
        self.pids: set[int] = set()
        self.every, self.stop = every, threading.Event()
        self.disk = {name: [] for name in folders}   # name -> [(time, bytes, versions)]
        self.rss_max: dict[int, int] = {}

    def run(self):
        while not self.stop.is_set():
            now = time.monotonic()
            for name, where in self.folders.items():
                total, versions = _usage(where() if callable(where) else where)
                self.disk[name].append((now, total, sorted(versions)))
            for pid in list(self.pids):
                rss = _rss(pid)
                if rss:
                    self.rss_max[pid] = max(rss, self.rss_max.get(pid, 0))
            self.stop.wait(self.every)


class LoadClient(threading.Thread):
    """One client at a fixed rate; stops by itself after `max_requests` or `max_seconds`, or when told."""

    def __init__(self, port: int, data: bytes, rate: float, max_seconds: float):
        super().__init__(daemon=True)
        self.port, self.data, self.rate, self.max_seconds = port, data, rate, max_seconds
        self.max_requests = int(rate * max_seconds)
        self.stop = threading.Event()
        self.responses: list[tuple] = []   # (sent, status, version, replica, body digest or error)
        self.bodies: dict[str, bytes] = {}

    def run(self):
        t0 = time.monotonic()
        for i in range(self.max_requests):
            delay = t0 + i / self.rate - time.monotonic()
            if self.stop.wait(max(0.0, delay)) or time.monotonic() - t0 > self.max_seconds:
                return
            sent = time.monotonic()
            try:
                status, headers, body = _request(self.port, "POST", "/v1/upscale", self.data)
                key = hashlib.sha256(body).hexdigest()
                self.bodies.setdefault(key, body)
                self.responses.append((sent, status, headers.get("x-model-version"), headers.get("x-replica"), key))
            except Exception as exc:  # noqa: BLE001 - a failed request, counted
                self.responses.append((sent, None, None, None, repr(exc)))


# ----------------------------------------------------------------------------- the scenario

class Soak:
    def __init__(self, bucket_root: str, workdir: str, settings: Settings):
        from components import storage

        self.s = settings
        self.root = storage.normalize(bucket_root)
        self.mroot = storage.join(self.root, "models", MODEL)
        self.M = f"models/{MODEL}"
        self.work = workdir
        os.makedirs(workdir, exist_ok=True)
        self.cache = os.path.join(workdir, "cache")          # the node's $SRGAN_CACHE_DIR
        self.watch_dir = os.path.join(workdir, "tfs", MODEL)
        self.ray_tmp = None  # made short on start: Ray's socket paths must stay under 108 bytes
        self.env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        self.env.update(SRGAN_CACHE_DIR=self.cache, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
        self.failures: list[str] = []
        self.pushed: dict[int, dict] = {}       # version -> {"run", "dataset", "kind", "files"}
        self.killed_at: dict[int, float] = {}   # half-pushed version -> when its pusher died
        self.run_dataset: dict[str, str] = {}   # run id -> dataset id, in creation order
        self.datasets: list[str] = []           # in creation order
        self.expected: dict[int, bytes] = {}
        self.settled_at: dict[int, float] = {}
        self.rss_at_switch: list[dict] = []     # after each switch: {pid: rss}
        self.gc_runs: list[dict] = []
        self.timeline: dict[str, list[float]] = {}  # seconds: "start" (push 1 to the service settled), per event kind
        self.vbytes: dict[int, int] = {}
        self.procs: dict[str, subprocess.Popen] = {}
        self.stager: subprocess.Popen | None = None
        self.sampler = self.client = None
        self.pids: set[int] = set()
        self.port = free_port()

    # ---- artifacts, as scheduled retraining writes them

    def _dataset(self) -> str:
        from components import dataset, storage

        ds = f"ds-{len(self.datasets) + 1:016x}"
        uri = dataset.dataset_uri(self.root, ds)
        storage.write_bytes(storage.join(uri, "train-00000-of-00001.tfrecord.gz"), os.urandom(2000))
        storage.write_json(storage.join(uri, dataset.MARKER), {"dataset_id": ds})
        self.datasets.append(ds)
        return ds

    def _run(self, run_id: str, keras_file: str) -> None:
        from components import dataset, runs, storage

        ds = self.datasets[-1]
        uri = runs.run_uri(self.root, run_id)
        storage.upload_file(keras_file, storage.join(uri, runs.GENERATOR))
        storage.write_json(storage.join(uri, runs.RUN_JSON), {
            "run_id": run_id, "dataset_id": ds, "dataset_uri": dataset.dataset_uri(self.root, ds),
            "status": "succeeded", "final_generator": storage.join(uri, runs.GENERATOR)})
        self.run_dataset[run_id] = ds

    def _export(self, seed: int, run_id: str, staging: str) -> str:
        """A version folder (SavedModel + generator.keras + card without a number) of a tiny generator with its
        own random weights, after writing its run (and every 4th time a new dataset) to the store."""
        import keras

        from components import dataset, models, registry, runs, storage
        from components.pusher.push import SIGNATURE, export_saved_model

        keras.utils.set_random_seed(seed)
        g = models.build_generator(width=8, num_blocks=2, residual_over_bicubic=True)
        keras_file = os.path.join(staging, "generator.keras")
        g.save(keras_file)
        local = os.path.join(staging, "version")
        export_saved_model(keras_file, local)
        shutil.copyfile(keras_file, os.path.join(local, "generator.keras"))
        if not self.datasets or len(self.run_dataset) % 4 == 0:
            self._dataset()
        self._run(run_id, keras_file)
        ds = self.datasets[-1]
        storage.write_json(os.path.join(local, registry.MODEL_CARD), {
            "format_version": 1, "name": MODEL, "blessed": True, "run_id": run_id, "dataset_id": ds, "scale": 4,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "signature": SIGNATURE, "metrics": {"decision": "BLESSED"},
            "lineage": {"run": runs.run_uri(self.root, run_id), "dataset": dataset.dataset_uri(self.root, ds)},
            "files": registry.file_hashes(local)})
        return local

    def push(self, i: int, kind: str) -> int:
        """kind good | tamper | kill; returns the version number it claimed."""
        from components import registry, storage

        seed = {"good": 1000, "tamper": 5000, "kill": 6000}[kind] + i
        run_id = f"{kind}-{i:03d}"
        staging = tempfile.mkdtemp(prefix="soak-push-", dir=self.work)
        try:
            local = self._export(seed, run_id, staging)
            card_path = os.path.join(local, registry.MODEL_CARD)
            card = storage.read_json(card_path)
            if kind == "kill":
                # odd kills: after the first object; even ones: every object but the card
                after = 1 if len(self.killed_at) % 2 == 0 else len(card["files"])
                out = subprocess.run([sys.executable, "-c", KILLED_PUSH, self.mroot, local, run_id, str(after)],
                                     env=self.env, capture_output=True, text=True, timeout=120, cwd=REPO)
                if out.returncode != -signal.SIGKILL or not out.stdout.strip().isdigit():
                    raise SoakError(f"the killed push did not die at its fault point: rc {out.returncode}, "
                                    f"{out.stderr[-1500:]}")
                version = int(out.stdout.split()[0])
                self.killed_at[version] = time.time()
                return version
            if kind == "tamper":
                with open(os.path.join(local, "variables", "variables.data-00000-of-00001"), "ab") as f:
                    f.write(b"\0tampered")
            version = registry.claim_version(self.mroot, {"run_id": run_id})
            storage.write_json(card_path, {**card, "version": version})
            registry.commit_version(local, self.mroot, version)
            registry.update_latest(self.mroot)
            self.pushed[version] = {"run": run_id, "dataset": card["dataset_id"], "kind": kind,
                                    "files": set(card["files"]) | {registry.MODEL_CARD}}
            self.vbytes[version] = _tree_bytes(local)
            if kind == "good":
                self.expected[version] = self._local_upscale(local)
            return version
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _local_upscale(self, local: str) -> bytes:
        """What the service must answer for this version: jobs/upscale.py's code on the folder just pushed."""
        from components import images, upscaler

        model = upscaler.load(local)
        return upscaler.upscale_decoded(model, images.decode(self.data), "PNG", TILE, OVERLAP)

    # ---- processes

    def start(self) -> None:
        from PIL import Image

        from components import sample_data

        crop = np.ascontiguousarray(sample_data.photo("coffee")[100:124, 200:224])  # 24x24: one tile
        buf = io.BytesIO()
        Image.fromarray(crop).save(buf, format="PNG")
        self.data = buf.getvalue()
        v1 = self.push(1, "good")
        # the staging cache: room for two versions (jobs stage the newest; LRU eviction takes the rest)
        self.stage_bound = int(2.5 * self.vbytes[v1])
        self.env["SRGAN_CACHE_MAX_BYTES"] = str(self.stage_bound)
        self.ray_tmp = tempfile.mkdtemp(prefix="soak-ray-", dir="/tmp")
        py, jobs = sys.executable, os.path.join(REPO, "jobs")
        self.procs["serve"] = subprocess.Popen(
            [py, os.path.join(jobs, "serve.py"), "--model-uri", self.mroot, "--port", str(self.port),
             "--num-replicas", str(self.s.replicas), "--poll-seconds", str(self.s.poll_seconds),
             "--tile-size", str(TILE), "--tile-overlap", str(OVERLAP), "--max-ongoing-requests", "4",
             "--keep-local-versions", str(self.s.keep_local)],
            stdout=open(os.path.join(self.work, "serve.log"), "w"), stderr=subprocess.STDOUT,
            env={**self.env, "RAY_TMPDIR": self.ray_tmp}, cwd=self.work)
        self.procs["watch"] = subprocess.Popen(
            [py, os.path.join(jobs, "pull_model.py"), "--watch", "--model-uri", self.mroot, "--output",
             self.watch_dir, "--poll-seconds", str(self.s.poll_seconds), "--keep-local-versions",
             str(self.s.keep_local)],
            stdout=open(os.path.join(self.work, "watch.log"), "w"), stderr=subprocess.STDOUT, env=self.env,
            cwd=self.work)
        self.sampler = Sampler({
            "serving_cache": lambda: next(iter(glob.glob(os.path.join(self.cache, "serve", "*"))), None),
            "watch_folder": self.watch_dir,
            "staging_cache": os.path.join(self.cache, "staged")})
        self.sampler.start()
        deadline = time.monotonic() + 300
        while True:
            self._alive()
            if time.monotonic() > deadline:
                raise SoakError("the service did not answer /healthz within 300 s")
            try:
                if _request(self.port, "GET", "/healthz", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(1)
        self.wait_switch(v1, first=True)
        self.client = LoadClient(self.port, self.data, self.s.rate,
                                 max_seconds=120 + 40 * len(self.s.schedule()))
        self.client.start()

    def _alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                log = open(os.path.join(self.work, f"{name}.log")).read()[-3000:]
                raise SoakError(f"{name} exited with {proc.returncode}: {log}")

    def _stage(self, version: int) -> None:
        """Stage the new version through the bounded staging cache in a short process (one at a time)."""
        from components import registry

        self._join_stager()
        self.stager = subprocess.Popen([sys.executable, "-c", STAGE, registry.version_uri(self.mroot, version)],
                                       env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                       cwd=REPO)

    def _join_stager(self) -> None:
        if self.stager is not None:
            _out, err = self.stager.communicate(timeout=120)
            if self.stager.returncode != 0 or "over SRGAN_CACHE_MAX_BYTES" in err:
                self.failures.append(f"staging a version failed or overflowed: {err[-800:]}")
            self.stager = None

    def _leases(self) -> list[int]:
        """The versions the leases name (one per replica; all fresh here: lease_minutes is 60)."""
        from components import registry, storage

        folder = storage.join(self.mroot, registry.LEASES)
        found = [registry.read_lease(u) for u in storage.list_files(folder)] if storage.exists(folder) else []
        return [v for v in found if v is not None]

    def wait_switch(self, version: int, first: bool = False) -> None:
        """Every replica serves `version` and holds a lease on it, and the watch folder has it."""
        deadline = time.monotonic() + self.s.wait_seconds
        while True:
            self._alive()
            states = _models(self.port, self.s.replicas)
            if len(states) == self.s.replicas and {s["version"] for s in states.values()} == {version} and \
                    self._leases().count(version) == self.s.replicas and \
                    os.path.isdir(os.path.join(self.watch_dir, str(version))):
                break
            if time.monotonic() > deadline:
                raise SoakError(f"no switch to version {version} within {self.s.wait_seconds} s: "
                                f"{ {r: (s['version'], s['failed']) for r, s in states.items()} }, leases "
                                f"{self._leases()}, watch folder {_usage(self.watch_dir)[1]}")
            time.sleep(0.2)
        self.settled_at[version] = time.monotonic()
        pids = {s["pid"] for s in states.values()}
        if first:
            self.pids = pids
            self.sampler.pids = pids
        elif pids != self.pids:
            self.failures.append(f"replica processes changed at version {version}: {self.pids} -> {pids}")

    def wait_refused(self, version: int, good: int) -> None:
        """The tampered version: every replica tried it, failed, and still serves `good`; the watch logged it."""
        deadline = time.monotonic() + self.s.wait_seconds
        while True:
            self._alive()
            states = _models(self.port, self.s.replicas)
            watch_log = open(os.path.join(self.work, "watch.log")).read()
            if len(states) == self.s.replicas and \
                    all((s["failed"] or {}).get("version") == version for s in states.values()) and \
                    f"could not pull LATEST {version}" in watch_log:
                break
            if time.monotonic() > deadline:
                raise SoakError(f"the tampered version {version} was not refused everywhere: {states}")
            time.sleep(0.2)
        for s in states.values():
            if s["version"] != good or "sha256 mismatch" not in s["failed"]["error"]:
                self.failures.append(f"tampered version {version}: a replica serves {s['version']} "
                                     f"({s['failed']['error'][:200]})")

    # ---- gc and the rules it must keep

    def listing(self) -> dict[str, int]:
        from components import storage

        return {storage.relpath(u, self.root): int(i.get("size") or i.get("Size") or 0)
                for u, i in storage.list_files_info(self.root).items()}

    def gc(self) -> None:
        from components import registry

        before = self.listing()
        latest, leased = registry.latest(self.mroot), set(self._leases())
        started = time.time()  # wall clock, as gc's ages (the store's LastModified against it)
        t = time.monotonic()
        out = subprocess.run(
            [sys.executable, os.path.join(REPO, "jobs", "gc.py"), "--artifact-root", self.root, "--apply",
             "--keep-versions", str(self.s.keep_versions), "--keep-runs", str(self.s.keep_runs),
             "--keep-datasets", str(self.s.keep_datasets), "--grace-minutes", str(self.s.grace_seconds / 60)],
            env=self.env, capture_output=True, text=True, timeout=300, cwd=REPO)
        seconds = time.monotonic() - t
        if out.returncode != 0:
            raise SoakError(f"jobs/gc.py exited {out.returncode}: {out.stderr[-2000:]}")
        after = self.listing()
        deleted = set(before) - set(after)
        for problem in self.ineligible(before, after, deleted, latest, leased, started):
            self.failures.append(f"gc #{len(self.gc_runs) + 1}: {problem}")
        reported = {m.group(1) for m in map(DELETED.match, out.stdout.splitlines()) if m}
        if reported != self.items(deleted):
            self.failures.append(f"gc #{len(self.gc_runs) + 1} reported {sorted(reported)} but deleted "
                                 f"{sorted(self.items(deleted))}")
        self.gc_runs.append({"seconds": round(seconds, 2), "items": sorted(reported), "objects": len(deleted),
                             "bytes": sum(before[r] for r in deleted)})

    def items(self, rels) -> set[str]:
        """Objects grouped as gc names its items: a version folder (with its claim), a run, a dataset, a lease."""
        out = set()
        for rel in rels:
            parts = rel.split("/")
            if rel.startswith(self.M + "/") and parts[2] == ".claims":
                out.add(f"{self.M}/{parts[3]}/")
            elif rel.startswith(self.M + "/") and parts[2].isdigit():
                out.add(f"{self.M}/{parts[2]}/")
            elif parts[0] in ("runs", "datasets") and len(parts) > 2:
                out.add(f"{parts[0]}/{parts[1]}/")
            else:
                out.add(rel)
        return out

    def _committed(self, listing) -> set[int]:
        return {int(r.split("/")[2]) for r in listing
                if r.startswith(self.M + "/") and r.endswith("/model.json") and r.split("/")[2].isdigit()}

    def _marked(self, listing, kind: str, marker: str) -> set[str]:
        return {r.split("/")[1] for r in listing if r.startswith(kind + "/") and r.endswith("/" + marker)
                and r.count("/") == 2}

    def _needed(self, versions: set[int], runs_left: set[str], runs_all: set[str], datasets_all: set[str]):
        """(runs, datasets) the rules keep: the newest keep_runs/keep_datasets (creation order; each is written
        once), those a kept version names, and the datasets of kept runs."""
        order = list(self.run_dataset)
        runs_needed = {r for r in order if r in runs_all}
        runs_needed = set(sorted(runs_needed, key=order.index)[-self.s.keep_runs:] if self.s.keep_runs else []) | \
            {self.pushed[v]["run"] for v in versions if v in self.pushed}
        ds_all = [d for d in self.datasets if d in datasets_all]
        datasets_needed = set(ds_all[-self.s.keep_datasets:] if self.s.keep_datasets else []) | \
            {self.pushed[v]["dataset"] for v in versions if v in self.pushed} | \
            {self.run_dataset[r] for r in runs_left if r in self.run_dataset}
        return runs_needed, datasets_needed

    def ineligible(self, before, after, deleted, latest, leased, started) -> list[str]:
        """Deleted objects that no rule allowed to go, recomputed from this scenario's own records."""
        from components import dataset, runs

        committed, left = self._committed(before), self._committed(after)
        newest = set(sorted(committed)[-self.s.keep_versions:])
        claims = {int(r.split("/")[3]) for r in before if r.startswith(f"{self.M}/.claims/")}
        runs_before = self._marked(before, "runs", runs.RUN_JSON)
        runs_left = self._marked(after, "runs", runs.RUN_JSON)
        runs_needed, datasets_needed = self._needed(left, runs_left, runs_before,
                                                    self._marked(before, "datasets", dataset.MARKER))
        bad = []
        for rel in sorted(deleted):
            parts = rel.split("/")
            if rel.startswith(self.M + "/"):
                if parts[2] == ".claims":
                    n = int(parts[3])
                    if n in left or n == max(claims, default=None):
                        bad.append(f"{rel}: the claim of a kept version, or the highest claim")
                elif parts[2].isdigit():
                    v = int(parts[2])
                    if v in committed and (v == latest or v in leased or v in newest):
                        bad.append(f"{rel}: version {v} is LATEST, leased or among the newest {self.s.keep_versions}")
                    # S3's LastModified has whole seconds: an object may look up to 1 s older than it is
                    elif v not in committed and \
                            started - self.killed_at.get(v, float("inf")) < self.s.grace_seconds - 1.0:
                        bad.append(f"{rel}: version {v} has no card but is no half push older than grace")
                    if any(r.startswith(f"{self.M}/{v}/") for r in after):
                        bad.append(f"{rel}: version {v} only partly deleted")
                else:
                    bad.append(f"{rel}: LATEST or a fresh lease")
            elif parts[0] == "runs" and parts[1] in runs_needed:
                bad.append(f"{rel}: run {parts[1]} is needed (newest {self.s.keep_runs} or named by a kept version)")
            elif parts[0] == "datasets" and parts[1] in datasets_needed:
                bad.append(f"{rel}: dataset {parts[1]} is needed")
            elif parts[0] not in ("runs", "datasets"):
                bad.append(f"{rel}: not gc's to delete")
            if parts[0] in ("runs", "datasets") and any(r.startswith(f"{parts[0]}/{parts[1]}/") for r in after):
                bad.append(f"{rel}: {parts[0]} {parts[1]} only partly deleted")
        return bad

    def orphans(self) -> tuple[list[str], dict]:
        """After the last gc: objects no kept version, run, dataset, claim, lease or LATEST accounts for, and
        whether what is kept is exactly what the rules keep."""
        from components import dataset, registry, runs, storage

        final = self.listing()
        latest, leased = registry.latest(self.mroot), set(self._leases())
        committed = self._committed(final)
        runs_left = self._marked(final, "runs", runs.RUN_JSON)
        datasets_left = self._marked(final, "datasets", dataset.MARKER)
        claims = {int(r.split("/")[3]) for r in final if r.startswith(f"{self.M}/.claims/")}
        orphans = []
        for rel in sorted(final):
            parts = rel.split("/")
            if rel.startswith(self.M + "/"):
                ok = rel == f"{self.M}/LATEST" or parts[2] == ".leases" or \
                    (parts[2] == ".claims" and int(parts[3]) in committed | {max(claims)}) or \
                    (parts[2].isdigit() and int(parts[2]) in self.pushed and int(parts[2]) in committed
                     and "/".join(parts[3:]) in self.pushed[int(parts[2])]["files"])
            elif parts[0] == "runs":
                ok = parts[1] in runs_left
            elif parts[0] == "datasets":
                ok = parts[1] in datasets_left
            else:
                ok = False
            if not ok:
                orphans.append(rel)
        for v in committed & set(self.pushed):
            missing = {f"{self.M}/{v}/{f}" for f in self.pushed[v]["files"]} - set(final)
            orphans += [f"(missing) {m}" for m in sorted(missing)]
        # folder entries (SeaweedFS keeps one when its last object goes) of nothing kept
        dirs = {f"{self.M}/{d}" for d in storage.list_dirs(self.mroot)} | \
            {f"runs/{d}" for d in storage.list_dirs(storage.join(self.root, "runs"))} | \
            {f"datasets/{d}" for d in storage.list_dirs(storage.join(self.root, "datasets"))}
        kept_dirs = {f"{self.M}/.claims", f"{self.M}/.leases"} | {f"{self.M}/{v}" for v in committed} | \
            {f"runs/{r}" for r in runs_left} | {f"datasets/{d}" for d in datasets_left}
        orphans += [f"(folder) {d}" for d in sorted(dirs - kept_dirs)]
        # exactly what the rules keep: nothing more (a leak) and nothing less
        all_committed = set(self.pushed)
        want_versions = set(sorted(all_committed)[-self.s.keep_versions:]) | {latest} | leased
        want_runs, want_datasets = self._needed(want_versions, runs_left, set(self.run_dataset), set(self.datasets))
        kept = {"versions": sorted(committed), "runs": sorted(runs_left), "datasets": sorted(datasets_left),
                "latest": latest, "leased": sorted(v for v in leased if v is not None)}
        for what, got, want in (("versions", committed, want_versions), ("runs", runs_left, want_runs),
                                ("datasets", datasets_left, want_datasets)):
            if got != want:
                self.failures.append(f"after the last gc the {what} kept are {sorted(got)}, the rules keep "
                                     f"{sorted(want)}")
        return orphans, kept

    # ---- the whole thing

    def scenario(self) -> None:
        from components import registry

        t = time.monotonic()
        self.start()
        self.timeline["start"] = [time.monotonic() - t]
        good = 1
        for kind, i in self.s.schedule():
            self._alive()
            t = time.monotonic()
            version = self.push(i, kind)
            if kind == "good":
                self._stage(version)
                self.wait_switch(version)
                good = version
            elif kind == "tamper":
                try:
                    registry.pull(self.mroot, os.path.join(self.work, f"refused-{version}"), version)
                    self.failures.append(f"the registry let the tampered version {version} be pulled")
                except registry.RegistryError:
                    pass
                self.wait_refused(version, good)
            elif version in registry.versions(self.mroot) or registry.latest(self.mroot) != good:
                self.failures.append(f"the killed push {version} is visible or moved LATEST")
            self.gc()
            if kind == "good":  # after the switch and its gc: the old model had time to go
                self.rss_at_switch.append({pid: _rss(pid) for pid in self.pids})
            self.timeline.setdefault(kind, []).append(time.monotonic() - t)
        self._join_stager()
        # the TF Serving folder ends with the newest keep_local good versions, complete and verified
        want = sorted(self.expected)[-self.s.keep_local:]
        in_folder = sorted(int(n) for n in os.listdir(self.watch_dir) if n.isdigit())
        if in_folder != want:
            self.failures.append(f"the watch folder holds versions {in_folder}, expected {want}")
        for v in set(in_folder) & set(want):
            registry.verify(os.path.join(self.watch_dir, str(v)), registry.card(registry.version_uri(self.mroot, v)))
        # the last gc, once everything is past grace: nothing but what the rules keep may remain
        time.sleep(self.s.grace_seconds + 1.5)
        self.gc()

    def stop(self) -> dict:
        """Stop everything this scenario started (by pid; Ray by its temp dir); returns exit codes."""
        codes = {}
        if self.client:
            self.client.stop.set()
            self.client.join(60)
        if self.sampler:
            self.sampler.stop.set()
            self.sampler.join(30)
        if self.stager is not None and self.stager.poll() is None:
            self.stager.kill()
            self.stager.wait()
        for name in ("watch", "serve"):
            proc = self.procs.get(name)
            if proc is None:
                continue
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(90)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            codes[name] = proc.returncode
        if self.ray_tmp:
            kill_processes_of(self.ray_tmp)  # anything of the service's Ray that SIGTERM left
            shutil.rmtree(self.ray_tmp, ignore_errors=True)
        return codes


def run(bucket_root: str, workdir: str, settings: Settings | None = None) -> dict:
    """Run the scenario on `bucket_root` (an empty s3:// prefix; AWS_* in the environment point at the store),
    with its files under `workdir`; returns the report (figures and `failures`)."""
    from components.trainer.precision import speed_flags

    settings = settings or Settings()
    t0 = time.monotonic()
    soak = Soak(bucket_root, workdir, settings)
    orphans, kept = None, None
    try:
        soak.scenario()
        orphans, kept = soak.orphans()
    except Exception as exc:  # noqa: BLE001 - reported with what was measured so far
        soak.failures.append(f"aborted: {exc!r}\n{traceback.format_exc()[-3000:]}")
    finally:
        codes = soak.stop()
    for name, rc in codes.items():
        if rc != 0:
            soak.failures.append(f"{name} exited {rc} on SIGTERM (log: {os.path.join(workdir, name + '.log')})")
    report = summarize(soak, orphans, kept)
    report["wall_seconds"] = round(time.monotonic() - t0, 1)
    report["cpu_flags"] = speed_flags()
    report["failures"] = soak.failures
    return report


def summarize(soak: Soak, orphans, kept) -> dict:
    """The figures, and every broken rule added to soak.failures."""
    s, fail = soak.s, soak.failures.append
    responses = soak.client.responses if soak.client else []
    failed = [r for r in responses if r[1] != 200]
    if failed:
        fail(f"{len(failed)} failed requests, e.g. {failed[:3]}")
    mismatched = []
    for sent, status, version, replica, key in responses:
        if status == 200 and not (version and version.isdigit() and int(version) in soak.expected
                                  and _same(soak.client.bodies[key], soak.expected[int(version)])):
            mismatched.append((round(sent, 2), version, replica))
    if mismatched:
        fail(f"{len(mismatched)} responses whose pixels are not those of the version their header names: "
             f"{mismatched[:5]}")
    good = sorted(soak.expected)
    for a, b in zip(good, good[1:]):
        if _same(soak.expected[a], soak.expected[b]):
            fail(f"versions {a} and {b} give the same pixels: the check could not tell them apart")
    ok = [(r[0], int(r[2]), r[3]) for r in responses if r[1] == 200 and r[2] and r[2].isdigit()]
    for replica in {r[2] for r in ok}:
        seq = [v for _t, v, rep in ok if rep == replica]
        if seq != sorted(seq):
            fail(f"replica {replica} went down a version: {seq}")
    for v, at in soak.settled_at.items():
        older = [(round(t, 2), got) for t, got, _rep in ok if t > at and got < v]
        if older:
            fail(f"after every replica served {v}, responses named older versions: {older[:5]}")
    inversions = sum(1 for (_a, x, _r), (_b, y, _q) in zip(ok, ok[1:]) if y < x)
    unseen = sorted(set(good) - {v for _t, v, _r in ok} - {good[0]})
    if soak.client and unseen:
        fail(f"versions never seen by the client (was the load running?): {unseen}")

    vmax = max(soak.vbytes.values(), default=0)
    # (bytes, versions) at every sample. The serving cache: replicas that pull the same new version at once
    # each build a private copy (pull_verified), so bytes may reach one copy more per extra replica.
    bounds = {"serving_cache": ((s.keep_local + s.replicas - 1) * vmax, s.keep_local),
              "watch_folder": (s.keep_local * vmax, s.keep_local),
              "staging_cache": (getattr(soak, "stage_bound", 0), None)}
    disk = {}
    for name, series in (soak.sampler.disk.items() if soak.sampler else []):
        byte_bound, version_bound = bounds[name]
        over = [(round(t, 2), b, v) for t, b, v in series
                if b > byte_bound or (version_bound is not None and len(v) > version_bound)]
        if over:
            fail(f"{name} over its bound ({byte_bound} bytes, {version_bound} versions) in {len(over)} of "
                 f"{len(series)} samples, e.g. {over[:3]}")
        disk[name] = {"max_bytes": max((b for _t, b, _v in series), default=0), "bound_bytes": byte_bound,
                      "samples": len(series)}
        if version_bound is not None:
            disk[name].update(max_versions=max((len(v) for _t, _b, v in series), default=0),
                              bound_versions=version_bound)
    rss = {}
    if len(soak.rss_at_switch) >= 5:
        fifth, last = soak.rss_at_switch[4], soak.rss_at_switch[-1]
        for pid in soak.pids:
            a, b = fifth.get(pid), last.get(pid)
            ratio = b / a if a and b else None
            rss[str(pid)] = {"after_switch_5_mb": round((a or 0) / 2**20, 1),
                             f"after_switch_{len(soak.rss_at_switch)}_mb": round((b or 0) / 2**20, 1),
                             "ratio": round(ratio, 3) if ratio else None,
                             "max_mb": round(soak.sampler.rss_max.get(pid, 0) / 2**20, 1)}
            if ratio is None or abs(ratio - 1) > 0.2:
                fail(f"replica {pid}: RSS after the last switch is {ratio} x its RSS after the fifth")
    elif soak.rss_at_switch or not soak.failures:
        fail(f"only {len(soak.rss_at_switch)} switches measured: the RSS rule needs 5")
    if orphans:
        fail(f"{len(orphans)} orphaned objects after the last gc: {orphans[:10]}")
    kinds = {"version": 0, "run": 0, "dataset": 0, "lease": 0}
    for g in soak.gc_runs:
        for item in g["items"]:
            kind = "lease" if "/.leases/" in item else "version" if item.startswith("models/") \
                else item.split("/")[0][:-1]  # runs/x/ -> run
            kinds[kind] = kinds.get(kind, 0) + 1
    schedule = s.schedule()
    return {
        "versions": s.versions, "pushes": {"good": s.versions, "killed": sum(k == "kill" for k, _ in schedule),
                                           "tampered": sum(k == "tamper" for k, _ in schedule)},
        "settings": dataclasses.asdict(s),
        "requests": len(responses), "failed_requests": len(failed), "pixel_mismatches": len(mismatched),
        "request_rate_per_s": s.rate, "versions_seen": sorted({v for _t, v, _r in ok}),
        "client_order_inversions_between_replicas": inversions,
        "disk": disk, "version_bytes": vmax, "replica_rss": rss,
        "switches": len(soak.rss_at_switch),
        "gc": {"runs": len(soak.gc_runs), "deleted_items": kinds,
               "deleted_objects": sum(g["objects"] for g in soak.gc_runs),
               "deleted_bytes": sum(g["bytes"] for g in soak.gc_runs),
               "seconds_max": max((g["seconds"] for g in soak.gc_runs), default=None)},
        "seconds": {k: {"mean": round(sum(v) / len(v), 1), "max": round(max(v), 1), "n": len(v)}
                    for k, v in soak.timeline.items()},
        "orphans": orphans, "kept_after_last_gc": kept, "workdir": soak.work}
