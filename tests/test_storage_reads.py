"""Read each byte once: what a training input path asks of a real S3 server (SeaweedFS), counted by the
server itself (its audit log), per process (the User-Agent carries the pid)."""

from __future__ import annotations

import os
import shutil

import pytest

from components import config, dataset, preprocess, sample_data, storage
from tests.s3_audit import audited_seaweed, counts, gets_per_key, kind

EPOCHS, STEPS, BATCH = 3, 2, 4


@pytest.fixture(scope="module")
def sharded_dataset(tmp_path_factory):
    """The built-in sample preprocessed into 3 shards per split."""
    root = str(tmp_path_factory.mktemp("reads-root"))
    cfg = config.Config(artifact_root=root, input=sample_data.write_sample_images())
    cfg.preprocess.eval_count = 8
    cfg.preprocess.num_shards = 3
    info = preprocess.run(cfg, [])
    return root, info["dataset_id"]


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    server, audit = audited_seaweed(str(tmp_path_factory.mktemp("weed-reads")))
    server.start()
    try:
        yield server, audit
    finally:
        server.stop(keep_data=False)
        audit.close()


@pytest.fixture
def on_s3(sharded_dataset, audited, monkeypatch, tmp_path):
    root, ds_id = sharded_dataset
    server, audit = audited
    for k, v in server.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("SRGAN_CACHE_DIR", str(tmp_path / "cache"))
    server.make_bucket("reads")
    client = server.client()
    prefix = f"reads/srgan/datasets/{ds_id}"
    if not client.exists(prefix + "/dataset.json"):
        client.put(os.path.join(root, "datasets", ds_id), prefix, recursive=True)
    sizes = {p.split("/", 1)[1]: i["size"] for p, i in client.find(prefix, detail=True).items()}
    return f"s3://{prefix}", prefix.split("/", 1)[1], sizes, audit


def _train_input(uri, epochs):
    """What the trainer's loop does on one worker: the fixed sample batch, then one input pipeline per epoch."""
    from components.trainer import input_fn

    dataset._OPENED.clear()  # a new run (a new worker process)
    input_fn.fixed_batch(uri, 4)
    seen = 0
    for epoch in range(epochs):
        for batch in input_fn.make_dataset(uri, batch_size=BATCH, epoch=epoch, seed=0, steps=STEPS):
            seen += int(batch["hr"].shape[0])
    return seen


@pytest.mark.slow  # 25 s (a SeaweedFS with an audit log, a 3-shard dataset): the full suite runs it
def test_each_shard_is_fetched_once_per_run_and_reused_by_the_next(on_s3):
    uri, key_prefix, sizes, audit = on_s3
    me = os.getpid()
    shards = sorted(k for k in sizes if k.endswith(".tfrecord.gz"))
    assert len(shards) == 6, shards  # 3 train + 3 eval

    def run(epochs):
        mark = audit.mark()
        assert _train_input(uri, epochs) == epochs * STEPS * BATCH
        return audit.by_pid(mark).get(me, [])

    one = run(1)
    shutil.rmtree(storage.cache_dir())
    three = run(EPOCHS)
    # Every shard, and both transform metadata files, fetched exactly once by this process in the 3-epoch run.
    gets = gets_per_key(three)
    assert {k: gets[k] for k in shards} == {k: 1 for k in shards}
    metadata = sorted(k for k in sizes if "/transformed_metadata/" in k)
    assert metadata and all(gets[k] == 1 for k in metadata)
    # Nothing else of the dataset (the transform graph, rejected.jsonl) is read.
    assert not [k for k in gets if k.startswith(key_prefix) and k not in shards + metadata
                and not k.endswith("/dataset.json")]
    assert gets[f"{key_prefix}/dataset.json"] == 1
    # No per-epoch work: 3 epochs make exactly the requests 1 epoch makes.
    assert counts(three) == counts(one), (counts(one), counts(three))
    got_bytes = sum(sizes[k] * n for k, n in gets.items() if k in sizes)
    assert got_bytes == sum(sizes[k] for k in shards + metadata + [f"{key_prefix}/dataset.json"])

    # A later run on the same dataset (same machine cache) downloads no shard and no metadata again.
    again = run(EPOCHS)
    assert not [k for k in gets_per_key(again) if k in shards or k in metadata]
    lists = sum(1 for r in three if kind(r) == "LIST")
    print(f"\nper process, {EPOCHS} epochs: {dict(counts(three))}, {got_bytes} bytes downloaded, "
          f"{len(shards)} shards; next run: {dict(counts(again))}; LIST {lists}")


@pytest.mark.slow  # starts its own Ray cluster (two workers reading from S3): ~90 s
def test_ray_workers_fetch_each_shard_at_most_once_in_a_3_epoch_run(on_s3, tmp_path):
    """The real trainer: 2 Ray Train workers, 3 epochs, dataset and checkpoints on S3. Per worker process
    (User-Agent pid), no shard or metadata object is fetched twice; together they fetch each at least once
    (the machine's cache is shared, so the second worker may find a shard already staged)."""
    from tests.test_train import _kill_ray, train

    uri, key_prefix, sizes, audit = on_s3
    root, ds_id = uri.split("/datasets/")
    mark = audit.mark()
    proc, ray_tmp, log = train(root, ds_id, "reads", "--num-workers", "2", "--pretrain-steps", str(EPOCHS * STEPS),
                               "--gan-steps", "0", "--steps-per-epoch", str(STEPS), "--content-loss", "pixel",
                               tmp_path=tmp_path, background=True)
    try:
        assert proc.wait(timeout=600) == 0, open(log).read()[-4000:]
    finally:
        _kill_ray(ray_tmp)
    per_pid = audit.by_pid(mark)
    shards = sorted(k for k in sizes if k.endswith(".tfrecord.gz"))
    metadata = sorted(k for k in sizes if "/transformed_metadata/" in k)
    workers = {pid: recs for pid, recs in per_pid.items()
               if pid != proc.pid and any(r.get("key") == f"{key_prefix}/dataset.json" for r in recs)}
    assert len(workers) == 2, {pid: len(r) for pid, r in per_pid.items()}
    total = {k: 0 for k in shards + metadata}
    lines = []
    for pid, recs in sorted(workers.items()):
        gets = gets_per_key(recs)
        assert all(gets[k] <= 1 for k in shards + metadata), gets
        for k in total:
            total[k] += gets[k]
        fetched = sum(sizes[k] * n for k, n in gets.items() if k in sizes)
        dataset_requests = counts([r for r in recs if kind(r) != "LIST"], key_prefix)
        lines.append(f"worker pid {pid}: dataset {dict(dataset_requests)}, {fetched} bytes; "
                     f"all requests {dict(counts(recs))}")
    assert all(1 <= n <= 2 for n in total.values()), total
    print("\n" + "\n".join(lines))
