"""The storage layer on local paths, file://, a real S3 server (SeaweedFS), and gs:// URI handling."""

import os
import threading

import pytest

from components import storage


def test_uri_handling():
    assert storage.split_uri("s3://bucket/a/b/") == ("s3", "bucket/a/b")
    assert storage.split_uri("gs://bucket/x") == ("gs", "bucket/x")
    assert storage.split_uri("file:///tmp/x") == ("local", "/tmp/x")
    assert storage.split_uri("rel/dir")[1] == os.path.abspath("rel/dir")
    assert storage.join("gs://b/root/", "datasets", "ds-1") == "gs://b/root/datasets/ds-1"
    assert storage.join("/tmp/r", "a/", "/b") == "/tmp/r/a/b"
    assert storage.relpath("s3://b/in/x/y.png", "s3://b/in/") == "x/y.png"
    assert storage.basename("gs://b/models/m/") == "m"
    with pytest.raises(storage.StorageError, match="unsupported URI scheme 'ftp'"):
        storage.split_uri("ftp://host/x")
    with pytest.raises(storage.StorageError, match="needs a bucket"):
        storage.split_uri("s3://")
    with pytest.raises(storage.StorageError, match="not below"):
        storage.relpath("/a/b", "/c")


def test_gs_without_gcsfs_is_a_clear_error():
    # gcsfs is not pinned (its fsspec clashes with s3fs): gs:// I/O must say how to get it.
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        with pytest.raises(storage.StorageError, match="pip install gcsfs"):
            storage.exists("gs://bucket/x")
    else:
        pytest.fail("gcsfs is installed in the test environment; this test expects the pinned stack")


@pytest.mark.parametrize("scheme", ["local", "file"])
def test_local_roundtrip(tmp_path, scheme):
    root = str(tmp_path) if scheme == "local" else "file://" + str(tmp_path)
    _roundtrip(root)


def test_s3_roundtrip(s3_server):
    _roundtrip(s3_server.make_bucket("roundtrip") + "/prefix")


def _roundtrip(root):
    a = storage.join(root, "dir", "a.txt")
    assert not storage.exists(a)
    storage.write_text(a, "alpha")
    storage.write_json(storage.join(root, "dir", "sub", "b.json"), {"k": [1, 2]})
    storage.write_bytes(storage.join(root, "dir", "C.PNG"), b"\x89PNG")
    assert storage.exists(a) and storage.read_text(a) == "alpha"
    assert storage.read_json(storage.join(root, "dir", "sub", "b.json")) == {"k": [1, 2]}
    listed = storage.list_files(storage.join(root, "dir"))
    assert [storage.relpath(u, storage.join(root, "dir")) for u in listed] == ["C.PNG", "a.txt", "sub/b.json"]
    assert len(storage.list_files(storage.join(root, "dir"), recursive=False)) == 2
    assert [storage.basename(u) for u in storage.list_files(storage.join(root, "dir", "**", "*.json"))] == ["b.json"]
    assert storage.content_md5(a) == "2c1743a391305fbf367df8e4f069f9f9"  # md5("alpha")
    assert storage.create_exclusive(storage.join(root, "lock"), b"1") is True
    assert storage.create_exclusive(storage.join(root, "lock"), b"2") is False
    assert storage.read_bytes(storage.join(root, "lock")) == b"1"
    staged = storage.stage_in(storage.join(root, "dir"))
    assert os.path.isfile(os.path.join(staged, "sub", "b.json"))
    assert storage.stage_in(storage.join(root, "dir")) == staged  # cached by content
    storage.delete(storage.join(root, "dir"), recursive=True)
    assert not storage.exists(a)
    with pytest.raises(storage.StorageError, match="not found"):
        storage.read_bytes(a)
    with pytest.raises(storage.StorageError, match="no such file"):
        storage.list_files(storage.join(root, "missing"))


@pytest.mark.parametrize("remote", [False, True])
def test_staged_output_commits_marker_last(tmp_path, remote, request):
    root = request.getfixturevalue("s3_server").make_bucket("staged") if remote else str(tmp_path)
    dest = storage.join(root, "artifact")
    with storage.staged_output(dest, "DONE") as d:
        with open(os.path.join(d, "data.bin"), "wb") as f:
            f.write(b"x" * 1000)
        assert not storage.exists(storage.join(dest, "DONE"))  # nothing visible before the body finishes
        open(os.path.join(d, "DONE"), "w").write("ok")
    assert storage.read_bytes(storage.join(dest, "data.bin")) == b"x" * 1000
    assert storage.read_text(storage.join(dest, "DONE")) == "ok"
    # A committed artifact is never overwritten in place.
    with pytest.raises(storage.StorageError, match="already committed"):
        with storage.staged_output(dest, "DONE") as d:
            open(os.path.join(d, "DONE"), "w").write("again")
    # A failed body publishes nothing.
    dest2 = storage.join(root, "failed")
    with pytest.raises(ZeroDivisionError):
        with storage.staged_output(dest2, "DONE") as d:
            open(os.path.join(d, "DONE"), "w").write("ok")
            1 / 0
    assert not storage.exists(storage.join(dest2, "DONE"))


def test_local_write_is_atomic_for_concurrent_readers(tmp_path):
    """Readers see either the old or the new content, never a partial file."""
    path = str(tmp_path / "f.bin")
    storage.write_bytes(path, b"a" * 2_000_000)
    seen, stop = set(), threading.Event()

    def reader():
        while not stop.is_set():
            seen.add(len(storage.read_bytes(path)))
    t = threading.Thread(target=reader)
    t.start()
    for i in range(20):
        storage.write_bytes(path, (b"a" if i % 2 else b"b") * 2_000_000)
    stop.set()
    t.join()
    assert seen == {2_000_000}
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n]


def test_pyarrow_filesystem_for_s3(s3_server):
    import pyarrow.fs as pafs

    bucket = s3_server.make_bucket("arrow")
    fs, path = storage.pyarrow_filesystem(bucket + "/runs")
    assert path == "arrow/runs"
    with fs.open_output_stream(path + "/x.txt") as f:
        f.write(b"from-arrow")
    assert storage.read_text(bucket + "/runs/x.txt") == "from-arrow"
    assert isinstance(storage.pyarrow_filesystem("/tmp")[0], pafs.LocalFileSystem)


def test_storage_retries_config_key_sets_the_budget_for_this_process_and_its_children(tmp_path, monkeypatch):
    import argparse
    import subprocess
    import sys

    from components import config

    monkeypatch.setenv(storage.RETRIES_ENV, "")  # restored after the test
    assert storage.retry_budget() == storage.DEFAULT_RETRIES
    (tmp_path / "c.yaml").write_text("storage_retries: 3\n")
    config.from_args(argparse.Namespace(config=str(tmp_path / "c.yaml")), [])
    assert storage.retry_budget() == 3 and storage.arrow_attempts() == 4
    child = subprocess.run([sys.executable, "-c", "from components import storage; print(storage.retry_budget())"],
                           capture_output=True, text=True, check=True)
    assert child.stdout.strip() == "3"
    assert [storage.backoff(i) for i in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    with pytest.raises(storage.StorageError, match="storage_retries must be >= 0"):
        storage.configure(retries=-1)


def test_missing_objects_are_not_retried(s3_server, monkeypatch, caplog):
    """Only transient failures are retried: a 404 is answered at once, without warnings."""
    import logging

    monkeypatch.setenv(storage.RETRIES_ENV, "6")
    uri = s3_server.make_bucket("noretry") + "/missing.json"
    with caplog.at_level(logging.WARNING, logger="storage"):
        with pytest.raises(storage.StorageError, match="missing.json: not found"):
            storage.read_bytes(uri)
    assert not caplog.records  # every retry logs a warning naming the URI: none means no retry


def test_staging_cache_evicts_least_recently_used_never_in_use(s3_server, tmp_path):
    """SRGAN_CACHE_MAX_BYTES bounds $SRGAN_CACHE_DIR/staged: each stage_in runs in a process of its own (as jobs
    do), and the one that downloads evicts least recently used entries until the cache fits, never the entry it
    just fetched nor one another process (alive, holding it) uses."""
    import subprocess
    import sys

    root = s3_server.make_bucket("lru") + "/objects"
    for name in "abcde":
        storage.write_bytes(f"{root}/{name}.bin", name.encode() * 1000)  # an entry: 1000 bytes + its marker
    staged = tmp_path / "cache" / "staged"
    env = {**os.environ, "SRGAN_CACHE_DIR": str(tmp_path / "cache")}
    script = ("import sys; from components import storage; print(storage.stage_in(sys.argv[1]), flush=True); "
              "sys.argv[2:] and sys.stdin.read()")

    def stage(name, bound=2500, hold=False):
        """stage_in in another process; with hold, that process keeps using the entry until its stdin closes."""
        cmd = [sys.executable, "-c", script, f"{root}/{name}.bin"] + (["hold"] if hold else [])
        proc = subprocess.Popen(cmd, env={**env, storage.CACHE_MAX_ENV: str(bound)}, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        path = proc.stdout.readline().strip()
        assert os.path.isfile(path), proc.communicate()[1][-2000:]
        if hold:
            return proc, path
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        return err

    def cached():
        names = sorted(n for key in os.listdir(staged) if (staged / key).is_dir()
                       for n in os.listdir(staged / key) if n != ".complete")
        assert [n for n in os.listdir(staged) if n.startswith(".")] == []  # no downloads or removals left behind
        return names, sum(f.stat().st_size for f in staged.rglob("*") if f.is_file())

    stage("a")
    stage("b")
    stage("a")  # a hit: now the most recently used
    stage("c")
    names, size = cached()
    assert names == ["a.bin", "c.bin"] and size <= 2500  # b was the least recently used
    holder, held = stage("a", hold=True)
    try:
        stage("c")  # now a is the least recently used, but in use
        stage("d")
        assert cached()[0] == ["a.bin", "d.bin"]  # c went instead
        err = stage("e", bound=500)  # in use (a) and just fetched (e) stay even over the bound
        assert cached()[0] == ["a.bin", "e.bin"] and "over SRGAN_CACHE_MAX_BYTES=500: the rest is in use" in err
        assert open(held, "rb").read() == b"a" * 1000
    finally:
        holder.stdin.close()
        assert holder.wait(60) == 0
    stage("b", bound=500)
    names, size = cached()
    assert names == ["b.bin"] and 1000 < size < 1100  # only what was just fetched, though over the bound


def test_staging_makes_room_before_downloading(s3_server, tmp_path, monkeypatch):
    """The bound holds while a new entry downloads too: the least recently used entries go first (as the serving
    cache and the --watch folder make room before a pull), not only after the download."""
    import subprocess
    import sys

    root = s3_server.make_bucket("lru-first") + "/objects"
    for name in "abc":
        storage.write_bytes(f"{root}/{name}.bin", name.encode() * 1000)
    monkeypatch.setenv("SRGAN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv(storage.CACHE_MAX_ENV, "2500")  # two entries of 1000 bytes + marker
    for name in "ab":  # staged by processes that have ended: nothing holds them
        subprocess.run([sys.executable, "-c", "import sys; from components import storage; "
                        "storage.stage_in(sys.argv[1])", f"{root}/{name}.bin"], check=True, env=dict(os.environ))
    staged = tmp_path / "cache" / "staged"
    during = []

    def hook(point, info):
        if point == "download.fetched":
            during.append(sum(f.stat().st_size for f in staged.rglob("*") if f.is_file()))
    previous = storage.set_fault_hook(hook)
    try:
        storage.stage_in(f"{root}/c.bin")
    finally:
        storage.set_fault_hook(previous)
    assert during and max(during) <= 2500, during  # a went before c arrived (a + b + c would be ~3100)
    assert sorted(p.name for p in staged.glob("*/*.bin")) == ["b.bin", "c.bin"]
