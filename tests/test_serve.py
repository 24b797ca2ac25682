"""The live service: a real Ray Serve (jobs/serve.py, 2 replicas, HTTP on 127.0.0.1) answering real HTTP
clients while versions are pushed; the follower's rules without Ray; `pull_model.py --watch` on real S3.

One Ray Serve instance serves the whole module (started once, stopped with SIGTERM by the last test;
every Ray process is killed by its temp dir afterwards in any case). Models are tiny random generators.
"""

from __future__ import annotations

import glob
import http.client
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import weakref

import numpy as np
import pytest
from PIL import ExifTags, Image

from components import images, registry, sample_data, upscaler
from tests.conftest import REPO, free_port, kill_processes_of, run_cli
from tests.serving_helpers import copy_version, push_version

TILE, OVERLAP = 32, 8
MAX_PIXELS, MAX_BODY = 200 * 200, 2_000_000


def _png(arr, mode=None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format="PNG")
    return buf.getvalue()


def _pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert(img.mode))


class Client:
    """A plain HTTP/1.1 client on 127.0.0.1 (one connection per request: no shared state between calls)."""

    def __init__(self, port: int):
        self.port = port

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                timeout: float = 60):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def json(self, method: str, path: str, body: bytes | None = None):
        status, headers, data = self.request(method, path, body)
        assert headers.get("content-type", "").startswith("application/json"), (status, headers, data[:200])
        return status, json.loads(data)

    def models(self, replicas: int = 2, tries: int = 40) -> dict:
        """/v1/model of every replica (requests land on either; ask until both answered)."""
        seen = {}
        for _ in range(tries):
            status, body = self.json("GET", "/v1/model")
            assert status == 200
            seen[body["replica"]] = body
            if len(seen) >= replicas:
                break
        return seen


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    root = str(tmp / "models" / "tiny")
    v1 = push_version(root, seed=1)
    port = free_port()
    ray_tmp = str(tmp / "ray")
    os.makedirs(ray_tmp)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a local Ray of its own
    env.update(RAY_TMPDIR=ray_tmp, SRGAN_CACHE_DIR=str(tmp / "cache"))
    log = open(tmp / "serve.log", "w")
    proc = subprocess.Popen(
        [sys.executable, os.path.join(REPO, "jobs", "serve.py"), "--model-uri", root, "--port", str(port),
         "--num-replicas", "2", "--poll-seconds", "0.5", "--tile-size", str(TILE), "--tile-overlap", str(OVERLAP),
         "--max-input-pixels", str(MAX_PIXELS), "--max-body-bytes", str(MAX_BODY), "--max-ongoing-requests", "8",
         "--keep-local-versions", "2"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(tmp))
    client = Client(port)
    try:
        deadline = time.time() + 240
        while True:
            assert proc.poll() is None, open(tmp / "serve.log").read()[-3000:]
            assert time.time() < deadline, "the service did not come up in 240 s"
            try:
                if client.request("GET", "/healthz", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(1)
        yield {"root": root, "client": client, "proc": proc, "log": tmp / "serve.log", "tmp": tmp, "v1": v1}
        # SIGTERM stops the service cleanly: checked here, after every test of the module used it (they
        # run in a random order), so a failure shows as an error at teardown.
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(90) == 0, open(tmp / "serve.log").read()[-3000:]
        assert "stopped" in open(tmp / "serve.log").read()
        with pytest.raises(OSError):
            client.request("GET", "/healthz", timeout=5)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                pass
        kill_processes_of(ray_tmp)
        log.close()


def _settled(service, timeout: float = 120) -> int:
    """The version every replica serves once they have followed LATEST: tests run in any order, and those
    that push leave LATEST on a good newer version."""
    client, latest = service["client"], registry.latest(service["root"])
    deadline = time.time() + timeout
    while {s["version"] for s in client.models().values()} != {latest}:
        assert time.time() < deadline, f"replicas did not settle on LATEST {latest}: {client.models()}"
        time.sleep(0.5)
    return latest


def _wait_cached(service, want: set, timeout: float = 30):
    """The replicas' shared disk cache ($SRGAN_CACHE_DIR/serve/<model>/) holds exactly the versions `want`
    (keep_local_versions 2) once the last replica's switch has pruned it."""
    (cache,) = glob.glob(str(service["tmp"] / "cache" / "serve" / "*"))
    deadline = time.time() + timeout
    while (on_disk := {int(n) for n in os.listdir(cache) if n.isdigit()}) != want:
        assert time.time() < deadline, f"versions on disk: {sorted(on_disk)}, expected {sorted(want)}"
        time.sleep(0.2)


def _same_up_to_batching(got: bytes, want: bytes) -> bool:
    """Identical, except that a tile's float sums may run in another order when the batcher puts it at another
    position of a larger batch (oneDNN's kernels): then at most 1 gray level in under 0.1% of the pixels."""
    if got == want:
        return True
    a, b = _pixels(got).astype(int), _pixels(want).astype(int)
    return a.shape == b.shape and np.abs(a - b).max() <= 1 and (a != b).mean() < 1e-3


def _expected(root: str, version: int, data: bytes, fmt: str = "PNG") -> bytes:
    """What the service must answer: upscale_decoded (jobs/upscale.py's code) on that version, in-process."""
    model = upscaler.load(root, version)
    return upscaler.upscale_decoded(model, images.decode(data), fmt, TILE, OVERLAP)


def test_output_equals_jobs_upscale(service, tmp_path):
    """Same model, same images, same tiling: the service's pixels are jobs/upscale.py's (RGB tiled, RGBA,
    grayscale); ?format=jpeg gives the very bytes jobs/upscale.py writes for a .jpg, and both keep a Display P3
    JPEG's ICC profile and EXIF (orientation applied once, then 1)."""
    from tests.image_helpers import camera_exif, display_p3_icc, jpeg

    photo = sample_data.photo("astronaut")
    rgb = np.ascontiguousarray(photo[30:100, 40:130])                 # 70x90: 3x3 tiles of 32
    rgba = np.dstack([photo[:40, :36], np.linspace(0, 255, 40 * 36).reshape(40, 36).astype(np.uint8)])
    gray = np.ascontiguousarray(photo[100:150, 100:140].mean(-1).astype(np.uint8))
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "rgb.png").write_bytes(_png(rgb))
    (inputs / "rgba.png").write_bytes(_png(rgba, "RGBA"))
    (inputs / "gray.png").write_bytes(_png(gray, "L"))
    Image.fromarray(rgb).save(inputs / "rgb.jpg", quality=92)
    icc = display_p3_icc()
    (inputs / "p3.jpg").write_bytes(jpeg(rgb, icc_profile=icc, exif=camera_exif(6, 90, 70)))
    version = _settled(service)
    out = subprocess.run([sys.executable, os.path.join(REPO, "jobs", "upscale.py"), "--model-uri", service["root"],
                          "--version", str(version), "--tile-size", str(TILE), "--tile-overlap", str(OVERLAP),
                          str(inputs), "--output", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    client = service["client"]
    for name, shape, mode in (("rgb.png", (280, 360, 3), "RGB"), ("rgba.png", (160, 144, 4), "RGBA"),
                              ("gray.png", (200, 160), "L")):
        status, headers, body = client.request("POST", "/v1/upscale", (inputs / name).read_bytes())
        assert status == 200 and headers["content-type"] == "image/png" and headers["x-model-version"] == str(version), name
        got, want = _pixels(body), _pixels((tmp_path / "out" / name).read_bytes())
        assert Image.open(io.BytesIO(body)).mode == mode and got.shape == shape
        assert np.array_equal(got, want), f"{name}: {np.abs(got.astype(int) - want).max()} gray levels off"
    status, headers, body = client.request("POST", "/v1/upscale?format=jpeg", (inputs / "rgb.jpg").read_bytes())
    assert status == 200 and headers["content-type"] == "image/jpeg"
    assert body == (tmp_path / "out" / "rgb.jpg").read_bytes()
    status, headers, body = client.request("POST", "/v1/upscale?format=jpeg", (inputs / "p3.jpg").read_bytes())
    assert status == 200 and body == (tmp_path / "out" / "p3.jpg").read_bytes()
    status, headers, body = client.request("POST", "/v1/upscale", (inputs / "p3.jpg").read_bytes())
    with Image.open(io.BytesIO(body)) as png:
        # stored 90 wide and 70 high, orientation 6: turned once, 70 wide and 90 high, x4
        assert status == 200 and png.format == "PNG" and png.size == (280, 360)
        assert png.info["icc_profile"] == icc and png.getexif()[ExifTags.Base.Orientation] == 1
    # alpha cannot go into a JPEG: PNG, as jobs/upscale.py does
    status, headers, _ = client.request("POST", "/v1/upscale?format=jpeg", (inputs / "rgba.png").read_bytes())
    assert status == 200 and headers["content-type"] == "image/png"


def test_model_endpoint_and_health(service):
    client = service["client"]
    version = _settled(service)
    status, body = client.json("GET", "/healthz")
    assert status == 200 and body == {"status": "ok", "version": version}
    run_id = registry.card(registry.version_uri(service["root"], version))["run_id"]
    for replica, state in service["client"].models().items():
        assert state["version"] == version and state["pinned"] is False and state["model_uri"] == service["root"]
        assert state["card"]["name"] == "tiny" and state["card"]["run_id"] == run_id
        assert state["last_update"]["status"] in ("loaded", "switched") and state["failed"] is None
    assert len(client.models()) == 2  # two replicas answer


def test_bad_requests_get_4xx_and_the_service_stays_up(service):
    client = service["client"]
    good = _png(np.ascontiguousarray(sample_data.photo("chelsea")[:20, :20]))
    big = _png(np.zeros((210, 210, 3), np.uint8))           # small file, 44100 pixels > MAX_PIXELS
    cases = [
        ("POST", "/v1/upscale", b"", 400, "empty_file"),
        ("POST", "/v1/upscale", b"this is not an image", 400, "not_an_image"),
        ("POST", "/v1/upscale", good[: len(good) // 2], 400, "truncated_or_corrupt"),
        ("POST", "/v1/upscale", b"\0" * (MAX_BODY + 1), 413, "body_too_large"),
        ("POST", "/v1/upscale", big, 413, "too_large"),
        ("POST", "/v1/upscale?format=gif", good, 400, "bad_format"),
        ("GET", "/v1/upscale", None, 405, "method_not_allowed"),
        ("DELETE", "/v1/model", None, 405, "method_not_allowed"),
        ("POST", "/v2/upscale", good, 404, "not_found"),
        ("GET", "/", None, 404, "not_found"),
    ]
    for method, path, body, want_status, want_reason in cases:
        status, answer = client.json(method, path, body)
        assert (status, answer["error"]) == (want_status, want_reason), (method, path, answer)
        assert answer["detail"]
        assert client.request("GET", "/healthz")[0] == 200
    status, headers, body = client.request("POST", "/v1/upscale", good)
    assert status == 200 and _pixels(body).shape == (80, 80, 3)
    assert len(client.models()) == 2  # no replica was lost


def test_more_concurrent_requests_than_threads(service):
    """16 requests at once (8 per replica, each of 9 tiles): request threads wait for batches, and the model
    call they wait for must still get a thread (Python's default pool has cpu_count + 4 threads: with it,
    this deadlocked). Tiles of concurrent requests share model calls here, so pixels may differ from the
    unbatched result by the float summation order: at most 1 gray level, in under 0.1% of the pixels."""
    client = service["client"]
    data = _png(np.ascontiguousarray(sample_data.photo("rocket")[:70, :90]))
    want = _expected(service["root"], _settled(service), data)
    answers = []

    def run():
        answers.append(client.request("POST", "/v1/upscale", data, timeout=120))

    threads = [threading.Thread(target=run) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)
    assert [a[0] for a in answers] == [200] * 16
    diffs = [np.abs(_pixels(a[2]).astype(int) - _pixels(want)) for a in answers]
    assert all(_same_up_to_batching(a[2], want) for a in answers), \
        [(int(d.max()), int((d > 0).sum())) for d in diffs]
    print(json.dumps({"identical": sum(a[2] == want for a in answers), "of": 16,
                      "max_diff": max(int(d.max()) for d in diffs), "pixels_differing": sum(int((d > 0).sum()) for d in diffs)}))


def test_a_push_under_load_switches_with_no_failed_request(service):
    """4 clients x 100 requests; version 2 is pushed while they run. Every request succeeds, each response's
    pixels are those of the version its header names, and no replica goes back to version 1 after 2."""
    root, client = service["root"], service["client"]
    data = _png(np.ascontiguousarray(sample_data.photo("coffee")[100:140, 200:240]))  # 40x40: 4 tiles
    v1 = _settled(service)  # version 1 unless another test pushed before this one
    expected = {v1: _expected(root, v1, data)}
    results: list[list] = [[] for _ in range(4)]
    started = threading.Event()

    def run(i):
        deadline = time.time() + 240
        for _ in range(100):
            if time.time() > deadline:
                break
            try:
                status, headers, body = client.request("POST", "/v1/upscale", data)
                results[i].append((status, headers.get("x-model-version"), headers.get("x-replica"), body))
            except Exception as exc:  # noqa: BLE001 - counted as a failed request
                results[i].append((None, None, None, repr(exc).encode()))
            if sum(map(len, results)) >= 40:
                started.set()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    assert started.wait(240)
    v2 = push_version(root, seed=2)
    expected[v2] = _expected(root, v2, data)
    for t in threads:
        t.join(300)
    flat = [r for rs in results for r in rs]
    assert len(flat) == 400
    failed = [(s, b[:200]) for s, _v, _r, b in flat if s != 200]
    assert failed == [], failed[:5]
    assert expected[v1] != expected[v2]
    other = {v1: v2, v2: v1}
    for status, version, replica, body in flat:
        assert _same_up_to_batching(body, expected[int(version)]), f"response says version {version}; its pixels differ"
        assert not _same_up_to_batching(body, expected[other[int(version)]])
    counts = {v: sum(1 for r in flat if r[1] == str(v)) for v in (v1, v2)}
    assert counts[v1] > 0 and counts[v2] > 0, counts
    for rs in results:  # per client (sequential requests) and replica: versions never go down
        for replica in {r[2] for r in rs}:
            seq = [int(r[1]) for r in rs if r[2] == replica]
            assert seq == sorted(seq), (replica, seq)
    deadline = time.time() + 60
    while {s["version"] for s in client.models().values()} != {v2}:
        assert time.time() < deadline, "replicas did not converge on the new version"
        time.sleep(0.5)
    batching = [s["batching"] for s in client.models().values()]
    assert sum(b["chunks"] for b in batching) > sum(b["model_calls"] for b in batching) > 0, batching
    _wait_cached(service, {v1, v2})
    print(json.dumps({"responses": counts, "batching": batching}))


def _wait_failed(client, version, timeout=90):
    deadline = time.time() + timeout
    while True:
        states = client.models()
        if len(states) == 2 and all((s["failed"] or {}).get("version") == version for s in states.values()):
            return states
        assert time.time() < deadline, states
        time.sleep(0.5)


def test_a_tampered_or_broken_version_is_never_served(service):
    root, client = service["root"], service["client"]
    good = _settled(service)
    data = _png(np.ascontiguousarray(sample_data.photo("astronaut")[:24, :24]))
    want = _expected(root, good, data)
    tampered = push_version(root, seed=3, tamper="variables/variables.data-00000-of-00001")
    assert registry.latest(root) == tampered
    states = _wait_failed(client, tampered)
    for s in states.values():
        assert s["version"] == good and "sha256 mismatch: variables/variables.data" in s["failed"]["error"]
        assert s["last_update"]["status"] == "failed"
    for _ in range(10):
        status, headers, body = client.request("POST", "/v1/upscale", data)
        assert (status, headers["x-model-version"], body) == (200, str(good), want)
    broken = push_version(root, seed=4, break_graph=True)     # passes sha256, cannot load
    states = _wait_failed(client, broken)
    assert all(s["version"] == good and "sha256" not in s["failed"]["error"] for s in states.values()), states
    assert "could not take version %d" % tampered in open(service["log"]).read()  # and it is in the logs
    fixed = push_version(root, seed=5)                          # the next LATEST change is tried again
    deadline = time.time() + 90
    while {s["version"] for s in client.models().values()} != {fixed}:
        assert time.time() < deadline
        time.sleep(0.5)
    status, headers, body = client.request("POST", "/v1/upscale", data)
    assert (status, headers["x-model-version"], body) == (200, str(fixed), _expected(root, fixed, data))
    _wait_cached(service, {good, fixed})  # the broken version was removed from disk, the tampered one never landed


# ----------------------------------------------------------------------------- the follower, without Ray

@pytest.fixture(scope="module")
def registry3(tmp_path_factory):
    """models/f with versions 1, 2 (good, blessed) and 3 (tampered), LATEST -> 3."""
    root = str(tmp_path_factory.mktemp("follow") / "models" / "f")
    for seed in (11, 12):
        push_version(root, seed)
    push_version(root, 13, tamper="generator.keras")
    return root


def test_follower_rules(registry3, tmp_path):
    from components.serving.follower import ModelFollower

    root = registry3
    # a fresh follower while LATEST (3) is tampered: serves 2, the newest good one, and says why
    f = ModelFollower(root, cache=str(tmp_path / "c1"))
    first = f.check()
    assert f.current.version == 2 and first["status"] == "loaded_fallback" and f.failed["version"] == 3
    assert f.check()["status"] == "skipped"  # not retried until LATEST changes
    # LATEST moving down is ignored: a follower never goes back
    open(os.path.join(root, "LATEST"), "w").write("1\n")
    assert f.check()["status"] == "ignored" and f.current.version == 2
    # a pinned follower stays put
    pinned = ModelFollower(root, version=1, cache=str(tmp_path / "c2"))
    pinned.check()
    open(os.path.join(root, "LATEST"), "w").write("2\n")
    assert pinned.check()["status"] == "unchanged" and pinned.current.version == 1 and pinned.state()["pinned"]
    # a cached copy that was altered on disk is pulled again, never used
    with open(os.path.join(f.current.folder, "generator.keras"), "ab") as fh:
        fh.write(b"x")
    g = ModelFollower(root, cache=str(tmp_path / "c1"))
    assert g.check()["status"] == "loaded" and g.current.version == 2
    registry.verify(g.current.folder, registry.card(registry.version_uri(root, 2)))
    open(os.path.join(root, "LATEST"), "w").write("3\n")


def test_two_replicas_pulling_one_version_at_once_share_one_complete_copy(registry3, tmp_path, monkeypatch):
    """Replica B finds no cached copy, and while it pulls, replica A pulls the same version and puts it in
    place. B must not remove A's copy (A may be loading it): B serves A's copy, verified, and drops its own
    private pull, so the cache holds one whole copy. If the copy in place does not verify, B serves its own."""
    from components.serving import follower

    real_pull = registry.pull
    card = registry.card(registry.version_uri(registry3, 2))

    def racing(cache, replica_a):
        order = []

        def pull_with_a_racing_replica(uri, dest, version):
            pulled = real_pull(uri, dest, version)
            if not order:  # B's pull: replica A acts meanwhile (its own pull is the second call)
                order.append("A")
                order.append(replica_a(uri, version))
            return pulled
        monkeypatch.setattr(registry, "pull", pull_with_a_racing_replica)
        b_folder, b_card = follower.pull_verified(registry3, 2, cache)
        return order[1], b_folder, b_card

    cache = str(tmp_path / "shared-cache")
    a_folder, b_folder, b_card = racing(cache, lambda uri, v: follower.pull_verified(uri, v, cache)[0])
    assert a_folder == b_folder == os.path.join(cache, "2") and b_card == card
    registry.verify(a_folder, card)
    assert os.path.exists(os.path.join(a_folder, "saved_model.pb"))
    assert os.listdir(cache) == ["2"]  # B's own pull is gone, nothing hidden left behind

    def a_leaves_a_broken_copy(uri, version):
        broken = os.path.join(tmp_path / "other-cache", str(version))
        os.makedirs(broken)
        open(os.path.join(broken, "saved_model.pb"), "wb").write(b"not a model")
        return broken
    cache = str(tmp_path / "other-cache")
    _, b_folder, _ = racing(cache, a_leaves_a_broken_copy)
    assert b_folder != os.path.join(cache, "2") and os.path.dirname(b_folder) == cache  # its own copy
    registry.verify(b_folder, card)


def _holder(entry: str) -> subprocess.Popen:
    """Another process (a replica of the same node) holding a cache entry (storage.hold) until its stdin closes."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from components import storage; "
                             f"storage.hold({entry!r}); print('held', flush=True); sys.stdin.read()"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stdout.readline() == "held\n"
    return proc


def test_a_replica_keeps_k_versions_on_disk_and_lets_the_old_model_go(tmp_path):
    """keep_versions 2: after every switch the cache holds the 2 newest versions and nothing else but a version
    another replica of the node (a real process) holds, until it lets go; the old model is referenced by nothing
    (RSS flat over the switches)."""
    from components.serving.follower import ModelFollower

    root, cache = str(tmp_path / "models" / "k"), str(tmp_path / "cache")
    push_version(root, seed=31)
    f = ModelFollower(root, cache=cache, tile=16, keep_versions=2)
    f.check()
    holder = _holder(os.path.join(cache, "1"))
    rss = []
    try:
        for i in range(8):
            if i == 5:  # the other replica moves on: version 1 goes at the next switch
                holder.stdin.close()
                assert holder.wait(30) == 0
            v = copy_version(root, 1)
            old = weakref.ref(f.current)
            assert f.check()["status"] == "switched" and f.current.version == v
            assert old() is None, "the old version is still referenced after the switch"
            on_disk = sorted(int(n) for n in os.listdir(cache) if n.isdigit())
            assert on_disk == sorted(({1} if i < 5 else set()) | {v - 1, v}), (i, on_disk)
            assert [n for n in os.listdir(cache) if n.startswith(".")] == []  # no pulls or removals left behind
            registry.verify(os.path.join(cache, str(v)), registry.card(registry.version_uri(root, v)))
            rss.append(int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
    finally:
        if holder.poll() is None:
            holder.kill()
    # measured: +0.3 MB over 5 switches; +6 MB a switch when the old model's reference cycles wait for Python's gc
    assert rss[-1] - rss[2] < 15 << 20, [round(r / 2**20, 1) for r in rss]


def test_app_arguments_are_config_keys(monkeypatch):
    from components.config import ConfigError
    from components.serving import app

    monkeypatch.setenv("SRGAN_TEST_ROOT", "s3://b/srgan")
    opts = app.settings({"model_uri": "$SRGAN_TEST_ROOT/models/x", "num_replicas": 3, "poll_seconds": 2})
    assert opts["model_uri"] == "s3://b/srgan/models/x" and opts["num_replicas"] == 3 and opts["poll_seconds"] == 2.0
    for bad, msg in (({"model_uri": "x", "replicas": 2}, "unknown serve application argument 'replicas'"),
                     ({"model_uri": "x", "num_replicas": "two"}, "must be an integer"),
                     ({"model_uri": "x", "max_body_bytes": 0}, "max_body_bytes must be >= 1"),
                     ({"model_uri": "x", "keep_local_versions": 0}, "'keep_local_versions' must lie within"),
                     ({"model_uri": "$NOT_SET_ANYWHERE/m"}, "environment variable that is not set"),
                     ({}, "needs model_uri")):
        with pytest.raises(ConfigError, match=msg):
            app.settings(bad)


# ----------------------------------------------------------------------------- pull_model.py --watch on S3

@pytest.mark.slow
def test_watch_keeps_a_tf_serving_folder_in_step(s3_server, tmp_path):
    root = s3_server.make_bucket("watch") + "/srgan/models/w"
    base = tmp_path / "tfs" / "w"
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "jobs", "pull_model.py"), "--watch", "--model-uri",
                             root, "--output", str(base), "--poll-seconds", "0.3"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ))
    incomplete = []

    def wait_for(predicate, timeout=120):
        deadline = time.time() + timeout
        while not predicate():
            assert proc.poll() is None, proc.stdout.read()
            assert time.time() < deadline
            if base.exists():  # whenever a <version>/ is visible, it is complete (renamed in one step)
                for d in os.listdir(base):
                    if d.isdigit() and not (base / d / "model.json").exists():
                        incomplete.append(d)
            time.sleep(0.05)

    try:
        v1 = push_version(root, seed=21)
        wait_for(lambda: (base / str(v1)).exists())
        registry.verify(str(base / str(v1)), registry.card(f"{root}/{v1}"))
        bad = push_version(root, seed=22, tamper="saved_model.pb")
        time.sleep(3)  # ten polls
        v3 = push_version(root, seed=23)
        wait_for(lambda: (base / str(v3)).exists())
        registry.verify(str(base / str(v3)), registry.card(f"{root}/{v3}"))
        assert sorted(os.listdir(base)) == [str(v1), str(v3)]  # the tampered one never appeared; no leftovers
        assert incomplete == []
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
    output = proc.stdout.read()
    assert rc == 0, output[-2000:]
    assert f"could not pull LATEST {bad}" in output and "sha256 mismatch: saved_model.pb" in output


def test_watch_folder_keeps_k_versions(tmp_path):
    """K=2 and K+3 versions pushed one after another: the TF Serving folder never holds more than 2 numbered
    folders (sampled all along), each complete when visible, and ends with the 2 newest, verified."""
    from components.serving import follower

    root, base = str(tmp_path / "models" / "w"), tmp_path / "tfs" / "w"
    first = push_version(root, seed=41)
    stop = threading.Event()
    watcher = threading.Thread(target=follower.watch_folder, args=(root, str(base), 0.05, stop, False, 2))
    watcher.start()
    counts, incomplete = [], []

    def sample():
        while not stop.is_set():
            names = [n for n in (os.listdir(base) if base.exists() else []) if n.isdigit()]
            counts.append(len(names))
            incomplete.extend(n for n in names if not (base / n / "model.json").exists() and (base / n).exists())
    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        versions = [first]
        for _ in range(4):
            versions.append(copy_version(root, first))
            deadline = time.time() + 60
            while not (base / str(versions[-1])).exists():
                assert time.time() < deadline and watcher.is_alive()
                time.sleep(0.05)
        time.sleep(0.3)  # a few more polls: nothing else moves
    finally:
        stop.set()
        watcher.join(30)
        sampler.join(30)
    assert sorted(os.listdir(base), key=int) == [str(v) for v in versions[-2:]]  # no lock or hidden leftovers
    for v in versions[-2:]:
        registry.verify(str(base / str(v)), registry.card(registry.version_uri(root, v)))
    assert max(counts) == 2 and incomplete == [], (max(counts), incomplete)


def test_clear_errors_before_anything_starts(tmp_path, capsys, monkeypatch):
    """No model yet, or a --watch given a version: one line, exit 2, and no Ray was started for it (in this
    process, as the user's shell would see it)."""
    import ray

    def no_ray(*args, **kwargs):  # a regression must fail here, not start Ray and serve forever in pytest
        raise AssertionError("the job started Ray before checking its input")
    monkeypatch.setattr(ray, "init", no_ray)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    empty = str(tmp_path / "models" / "none")
    out = run_cli(capsys, "serve", "--model-uri", empty)
    assert out.returncode == 2 and out.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "no LATEST" in out.stderr and "Traceback" not in out.stderr
    assert not os.path.exists(tmp_path / "ray") and not ("ray" in sys.modules and sys.modules["ray"].is_initialized())
    out = run_cli(capsys, "pull_model", "--watch", "--model-uri", empty, "--output", str(tmp_path / "tfs"), "--version", "3")
    assert out.returncode == 2 and "--watch follows LATEST; it takes no --version" in out.stderr
