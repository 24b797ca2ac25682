"""The object store going away: a SeaweedFS of these tests' own, stopped by its pid at named points of a
push, a pull, a checkpoint upload and a LATEST update, then restarted. Readers must never see a
half-written version, LATEST must never point to one, the error must name the URI, and the next attempt
after the server is back must complete."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import threading
import time

import pytest

from components import registry, storage
from tests.conftest import REPO, SeaweedFS

pytestmark = pytest.mark.slow  # a SeaweedFS of their own, stopped and restarted, retries with backoff

BUCKET = "outage"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = SeaweedFS(str(tmp_path_factory.mktemp("weed-outage")))
    s.start()
    try:
        yield s
    finally:
        s.stop(keep_data=False)


@pytest.fixture
def store(server, monkeypatch, tmp_path):
    """The server running, AWS_* pointing at it, a small retry budget (waits 0.5 + 1 s), no fault hook."""
    if server.proc is None or server.proc.poll() is not None:
        server.start()
    for k, v in server.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv(storage.RETRIES_ENV, "2")
    monkeypatch.setenv("SRGAN_CACHE_DIR", str(tmp_path / "cache"))
    server.make_bucket(BUCKET)
    yield server
    storage.set_fault_hook(None)
    if server.proc is None or server.proc.poll() is not None:
        server.start()


def stop_at(server, point: str, index: int = 1, uri_suffix: str = ""):
    """A fault hook that stops the server (SIGTERM to its process group, by pid) the first time `point`
    is reached with info['index'] >= index (and a URI ending in `uri_suffix`)."""
    fired = []

    def hook(name, info):
        if not fired and name == point and info.get("index", index) >= index and \
                str(info.get("uri", "")).endswith(uri_suffix):
            fired.append(dict(info))
            server.stop()
    storage.set_fault_hook(hook)
    return fired


def restart_after(server, seconds: float) -> threading.Thread:
    def later():
        time.sleep(seconds)
        server.start()
    t = threading.Thread(target=later)
    t.start()
    return t


def make_version(tmp_path, name: str, blessed: bool = True) -> str:
    """A local version folder (files of a SavedModel's shape, real bytes) with a model card listing their sha256."""
    d = tmp_path / name
    (d / "variables").mkdir(parents=True)
    rng = os.urandom
    (d / "variables" / "variables.data-00000-of-00001").write_bytes(rng(300_000))
    (d / "variables" / "variables.index").write_bytes(rng(2_000))
    (d / "fingerprint.pb").write_bytes(rng(60))
    (d / "saved_model.pb").write_bytes(rng(50_000))
    (d / "generator.keras").write_bytes(rng(120_000))
    (d / registry.MODEL_CARD).write_text(json.dumps({"name": "m", "blessed": blessed, "run_id": name,
                                                     "files": registry.file_hashes(str(d))}))
    return str(d)


def push(tmp_path, root: str, name: str, blessed: bool = True) -> int:
    """What the pusher does after exporting: claim a number, publish the folder (card last), move LATEST."""
    local = make_version(tmp_path, name, blessed)
    version = registry.claim_version(root, {"run_id": name})
    card = json.loads(open(os.path.join(local, registry.MODEL_CARD)).read())
    with open(os.path.join(local, registry.MODEL_CARD), "w") as f:
        json.dump({**card, "version": version}, f)
    registry.commit_version(local, root, version)
    registry.update_latest(root)
    return version


def test_push_interrupted_after_two_objects_leaves_nothing_visible(store, tmp_path):
    root = f"s3://{BUCKET}/push/models/m"
    assert push(tmp_path, root, "first") == 1
    fired = stop_at(store, "publish.uploaded", index=2)
    with pytest.raises(storage.StorageError) as err:
        push(tmp_path, root, "second")
    assert fired and fired[0]["index"] >= 2
    message = str(err.value)
    assert f"{root}/2" in message and "3 attempts" in message and "storage_retries=2" in message
    storage.set_fault_hook(None)
    store.start()
    # Some objects of version 2 are there, but not its card: readers do not see it, LATEST did not move.
    fs = store.client()
    partial = fs.find(f"{BUCKET}/push/models/m/2")
    assert partial and not any(p.endswith(registry.MODEL_CARD) for p in partial)
    assert registry.versions(root) == [1] and registry.latest(root) == 1
    assert registry.resolve(root) == f"{root}/1"
    # The next push after the server is back completes (number 2 stays claimed by the failed one).
    assert push(tmp_path, root, "third") == 3
    assert registry.versions(root) == [1, 3] and registry.latest(root) == 3
    card = registry.pull(root, str(tmp_path / "pulled"))
    assert card["run_id"] == "third"


def test_pull_interrupted_keeps_nothing_then_completes(store, tmp_path):
    root = f"s3://{BUCKET}/pull/models/m"
    push(tmp_path, root, "v")
    out = tmp_path / "out" / "model"
    fired = stop_at(store, "download.fetched", index=1)
    with pytest.raises(storage.StorageError, match=rf"{root}/1/[^ ]+: download failed after 3 attempts"):
        registry.pull(root, str(out))
    assert fired
    assert not out.exists() and os.listdir(out.parent) == []  # no partial folder left beside it
    storage.set_fault_hook(None)
    store.start()
    card = registry.pull(root, str(out))
    assert card["version"] == 1 and sorted(os.listdir(out)) == ["fingerprint.pb", "generator.keras", "model.json",
                                                              "saved_model.pb", "variables"]


def test_pull_rides_out_a_short_outage(store, tmp_path, monkeypatch, caplog):
    """Within the retry budget an outage is invisible to the caller, apart from the time and the warnings."""
    root = f"s3://{BUCKET}/short/models/m"
    push(tmp_path, root, "v")
    monkeypatch.setenv(storage.RETRIES_ENV, "6")  # waits 0.5, 1, 2, 4, 8, 8 s
    stop_at(store, "download.fetched", index=1)
    restarter = []

    def hook(name, info):  # stop at the first fetched file, restart 2 s later
        if not restarter and name == "download.fetched":
            store.stop()
            restarter.append(restart_after(store, 2.0))
    storage.set_fault_hook(hook)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="storage"):
        card = registry.pull(root, str(tmp_path / "out"))
    elapsed = time.monotonic() - started
    restarter[0].join()
    retries = [r for r in caplog.records if "retry" in r.getMessage()]
    assert card["version"] == 1 and retries
    assert all(f"{root}/1" in r.getMessage() for r in retries)
    print(f"\npull through a 2 s outage: {elapsed:.1f} s, {len(retries)} retries: "
          + "; ".join(r.getMessage().split("; ")[-1] for r in retries))


def test_latest_update_interrupted_never_points_to_an_incomplete_version(store, tmp_path):
    root = f"s3://{BUCKET}/latest/models/m"
    assert push(tmp_path, root, "one") == 1
    local = make_version(tmp_path, "two")
    version = registry.claim_version(root, {"run_id": "two"})
    registry.commit_version(local, root, version)
    stop_at(store, "write", uri_suffix="/LATEST")
    with pytest.raises(storage.StorageError, match=f"{root}/LATEST: write failed after 3 attempts"):
        registry.update_latest(root)
    storage.set_fault_hook(None)
    store.start()
    # The PUT of LATEST never happened: it still names version 1, which is complete.
    assert registry.latest(root) == 1 and registry.versions(root) == [1, 2]
    # The next run (the pusher finds the run already pushed and only moves LATEST) completes it.
    assert registry.update_latest(root) == 2 and registry.latest(root) == 2


def _checkpoint_dir(tmp_path):
    d = tmp_path / "checkpoint"
    d.mkdir()
    (d / "state.npz").write_bytes(os.urandom(400_000))
    (d / "state.json").write_text(json.dumps({"step": 4}))
    return d


def test_checkpoint_upload_uses_arrows_retry_strategy(store, tmp_path, monkeypatch):
    """Ray Train uploads a checkpoint with its own function through the pyarrow filesystem we hand it; that
    filesystem's retry strategy carries an upload through a short outage, and fails fast without a budget."""
    from ray.train.v2._internal.execution.storage import _upload_to_fs_path

    local = _checkpoint_dir(tmp_path)
    monkeypatch.setenv(storage.RETRIES_ENV, "6")
    fs, path = storage.pyarrow_filesystem(f"s3://{BUCKET}/ckpt/runs")
    attempts = storage.arrow_attempts()
    store.stop()
    restarter = restart_after(store, 2.0)
    started = time.monotonic()
    _upload_to_fs_path(str(local), fs, f"{path}/run/checkpoint_00000004")
    elapsed = time.monotonic() - started
    restarter.join()
    got = store.client().cat(f"{BUCKET}/ckpt/runs/run/checkpoint_00000004/state.npz")
    assert hashlib.sha256(got).digest() == hashlib.sha256((local / "state.npz").read_bytes()).digest()

    monkeypatch.setenv(storage.RETRIES_ENV, "0")
    fs0, _ = storage.pyarrow_filesystem(f"s3://{BUCKET}/ckpt/runs")
    store.stop()
    started0 = time.monotonic()
    with pytest.raises(OSError):
        _upload_to_fs_path(str(local), fs0, f"{path}/run/checkpoint_00000008")
    elapsed0 = time.monotonic() - started0
    store.start()
    # Ray Train records a checkpoint only after its upload returned: the failed one is not referenced, and
    # its folder, if any, holds no complete state (the upload never got through).
    assert not store.client().exists(f"{BUCKET}/ckpt/runs/run/checkpoint_00000008/state.json")
    print(f"\ncheckpoint upload through a 2 s outage: {elapsed:.1f} s ({attempts} attempts "
          f"allowed at storage_retries=6); with storage_retries=0 it failed in {elapsed0:.2f} s")


def test_job_with_the_store_down_exits_2_with_one_line_naming_the_uri(store, tmp_path):
    root = f"s3://{BUCKET}/job/models/m"
    push(tmp_path, root, "v")
    store.stop()
    env = {**os.environ, storage.RETRIES_ENV: "1"}
    proc = subprocess.run([sys.executable, os.path.join(REPO, "jobs", "pull_model.py"), "--model-uri", root,
                           "--output", str(tmp_path / "o")], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and root in errors[0] and "2 attempts" in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()
