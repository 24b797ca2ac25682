"""Issue 26: the preprocess job's runner is named and fetches nothing; its job graph holds the input URI, not
the file list; (slow) the portable runner path with external workers on S3 gives the in-process dataset."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest

from components import config, dataset, storage
from components.preprocess import beam as preprocess_beam
from tests.test_preprocess import bad_corpus, corpus_dataset  # noqa: F401 - fixtures

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextlib.contextmanager
def proxy_trap():
    """A TCP listener on 127.0.0.1 to use as every HTTP(S) proxy: yields (env, the first bytes of each
    connection it received). urllib (Beam's Prism download), requests and botocore all honour these
    variables, so any attempt to fetch from the internet lands here instead."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    url = f"http://127.0.0.1:{server.getsockname()[1]}"
    seen, stop = [], threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    seen.append(conn.recv(200))
                except OSError:
                    seen.append(b"")
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    env = {k: url for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")}
    try:
        yield env, seen
    finally:
        stop.set()
        thread.join(5)
        server.close()


def _isolated_env(home: str, proxies: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy",) and not k.startswith("AWS_")}
    return {**env, **proxies, "HOME": home, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": REPO}


def test_default_run_names_its_runner_and_fetches_nothing(photos_dir, tmp_path):
    """No --runner: the job runs on the FnApiRunner, records it, and tries no download. Beam's own default
    (DirectRunner) does try one: shown first with a two-element pipeline in the same trap, so the trap is
    known to catch what it is there for (on this machine the download fails and Beam falls back, which
    is why only the trap, not the result, tells the two apart)."""
    home, root = tmp_path / "home", tmp_path / "art"
    home.mkdir()
    prism_cache = home / ".apache_beam" / "cache" / "prism"
    with proxy_trap() as (proxies, seen):
        control = subprocess.run(
            [sys.executable, "-c", "import apache_beam as beam\n"
             "with beam.Pipeline() as p: _ = p | beam.Create([1, 2]) | beam.Map(str)"],
            env=_isolated_env(str(home), proxies), capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
        assert control.returncode == 0, control.stderr[-2000:]
        assert any(b"github.com" in s for s in seen), (seen, control.stderr[-2000:])
        assert prism_cache.exists()
        storage.delete(str(home / ".apache_beam"), recursive=True)
        seen.clear()

        out = subprocess.run([sys.executable, os.path.join(REPO, "jobs", "preprocess.py"), "--input", photos_dir,
                              "--artifact-root", str(root), "--eval-count", "1"],
                             env=_isolated_env(str(home), proxies), capture_output=True, text=True, timeout=600,
                             cwd=str(tmp_path))
        assert out.returncode == 0, out.stderr[-3000:]
        assert seen == [], seen
    assert not (home / ".apache_beam").exists(), list((home / ".apache_beam").rglob("*"))
    info = json.loads((root / "datasets").joinpath(os.listdir(root / "datasets")[0], dataset.MARKER).read_text())
    assert info["runner"] == "FnApiRunner"
    assert info["runner_options"] == {"direct_running_mode": "in_memory", "direct_num_workers": 1}
    assert (info["num_train"], info["num_eval"], info["num_files_read"]) == (3, 1, 4)


def test_a_runner_asked_for_is_the_runner_used():
    """--runner X goes to Beam as asked (Prism included); only no --runner (or FnApiRunner) is ours."""
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    options = preprocess_beam._pipeline_options(["--runner=PrismRunner"])
    runner, recorded = preprocess_beam.local_runner(options)
    assert runner is None and recorded == {"runner": "PrismRunner", "runner_options": {}}
    options = preprocess_beam._pipeline_options(["--runner=PortableRunner", "--job_endpoint=localhost:1",
                                                 "--environment_type=EXTERNAL"])
    _, recorded = preprocess_beam.local_runner(options)
    assert recorded["runner_options"] == {"environment_type": "EXTERNAL", "job_endpoint": "localhost:1"}
    runner, recorded = preprocess_beam.local_runner(preprocess_beam._pipeline_options(
        ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]))
    assert isinstance(runner, fn_runner.FnApiRunner)
    assert recorded == {"runner": "FnApiRunner",
                        "runner_options": {"direct_running_mode": "multi_processing", "direct_num_workers": 2}}


def _graph_bytes(input_dir: str, tmp) -> bytes:
    """The serialized job graph the preprocess job builds for a folder (planned as the job plans it; not run)."""
    import apache_beam as beam

    cfg = config.Config(artifact_root=str(tmp / "art"), input=input_dir).preprocess
    files, _ = preprocess_beam.plan_inputs(input_dir, cfg)
    pipeline = beam.Pipeline(options=preprocess_beam._pipeline_options([]))
    preprocess_beam.build_pipeline(pipeline, input_dir, len(files), cfg, str(tmp / "out"), str(tmp / "work"))
    return pipeline.to_runner_api().SerializeToString()


def test_job_graph_does_not_grow_with_the_inputs(tmp_path):
    """100 vs 10,000 input files: the same graph size (the inputs are listed and read by the pipeline).
    With the file list embedded (beam.Create of (uri, relpath) pairs, as before) the graph grew by 56 KB
    for these 9,900 more paths (measured: 25.6 KB -> 82.0 KB for a Create of 100 -> 10,000 pairs)."""
    sizes = {}
    for n in (100, 10_000):
        d = tmp_path / ("in-small" if n == 100 else "in-large")  # same length: paths are in the graph
        for i in range(n):
            sub = d / f"part{i // 1000:02d}"
            sub.mkdir(parents=True, exist_ok=True)
            (sub / f"image_{i:05d}.png").write_bytes(b"")
        sizes[n] = len(_graph_bytes(str(d), tmp_path / ("job-small" if n == 100 else "job-large")))
    # Equal but for noise: every transform's payload is a compressed pickle, some holding a random id
    # (temp folder names), so each graph differs from the next by ~150 bytes (of 830 KB) at any input size.
    assert abs(sizes[10_000] - sizes[100]) < 2048, sizes


@pytest.mark.slow
def test_portable_runner_with_external_workers_on_s3(s3_server, bad_corpus, corpus_dataset, tmp_path):
    """Issue 26 item 3: the job submitted to Beam's local job service, its work done by an EXTERNAL worker
    pool (other processes, other working directory) that shares only storage with the launcher: input and
    artifacts on SeaweedFS S3, temporary files and the job's output under --temp_location. Same records,
    rejects, statistics and dataset id as the in-process run; no temporary file left."""
    from tests.beam_portable import PortableBeam
    from tests.conftest import free_port
    from tests.test_preprocess import REFERENCE_INFO_KEYS, all_records, run_job

    info, uri, _, _ = corpus_dataset
    bucket = s3_server.make_bucket("portable")
    s3_server.client().put(bad_corpus, "portable/raw", recursive=True)
    beam_tmp = tmp_path / "beam-temp"
    beam_tmp.mkdir()
    portable = PortableBeam(str(tmp_path / "services"), dict(os.environ), free_port(), free_port())
    portable.start()
    try:
        p_info, p_uri = run_job(bucket + "/raw", bucket + "/artifacts", eval_count=3,
                                beam_args=[*portable.beam_args(), f"--temp_location={beam_tmp}"])
    finally:
        portable.stop()
    assert p_info["runner"] == "PortableRunner"
    assert p_info["runner_options"]["environment_type"] == "EXTERNAL"
    for key in REFERENCE_INFO_KEYS:
        if key != "statistics":
            assert p_info[key] == info[key], key
    for name, values in info["statistics"].items():
        if name not in ("split", "units"):
            np.testing.assert_allclose(p_info["statistics"][name], values, rtol=2.5e-4, err_msg=name)
    mine = {storage.relpath(s, bad_corpus): v[2:] for s, v in all_records(uri).items()}
    theirs = {storage.relpath(s, bucket + "/raw"): v[2:] for s, v in all_records(p_uri).items()}
    assert theirs == mine
    rejected = storage.read_text(storage.join(p_uri, "rejected.jsonl")).replace(bucket + "/raw", "<in>")
    assert rejected == storage.read_text(storage.join(uri, "rejected.jsonl")).replace(bad_corpus, "<in>")
    assert os.listdir(beam_tmp) == []
