"""Retention (components/gc.py, jobs/gc.py): exactly what is planned, deleted and kept on a fabricated artifact
root (real registry objects written through the registry's own functions, no training), an interrupted gc
finished by a rerun with nothing half-deleted ever visible, and the same on SeaweedFS S3."""

from __future__ import annotations

import json
import os
import time

import pytest

from components import config, dataset, gc, registry, runs, storage
from tests.conftest import run_cli

HOUR = 3600.0
DS = {k: "ds-" + k * 16 for k in "abcdef"}  # valid dataset ids: ds-aaaa..., ds-bbbb...


def _age(root: str, rel: str, hours: float) -> None:
    """Set every file below root/rel (local) to have been written `hours` ago."""
    path = os.path.join(root, rel)
    t = time.time() - hours * HOUR
    for base, _dirs, files in os.walk(path) if os.path.isdir(path) else [(os.path.dirname(path), [], [path])]:
        for name in files:
            os.utime(os.path.join(base, name), (t, t))


def make_dataset(root: str, ds_id: str, committed: bool = True) -> None:
    uri = dataset.dataset_uri(root, ds_id)
    storage.write_bytes(storage.join(uri, "train-00000-of-00001.tfrecord.gz"), os.urandom(3000))
    storage.write_bytes(storage.join(uri, "transform_fn", "saved_model.pb"), os.urandom(500))
    if committed:
        storage.write_json(storage.join(uri, dataset.MARKER), {"dataset_id": ds_id})


def make_run(root: str, run_id: str, ds_id: str | None, status: str = "succeeded") -> None:
    uri = runs.run_uri(root, run_id)
    storage.write_bytes(storage.join(uri, runs.GENERATOR), os.urandom(2000))
    storage.write_bytes(storage.join(uri, "checkpoint_000010", "state.npz"), os.urandom(4000))
    if ds_id is not None:  # None: a folder without run.json
        storage.write_json(storage.join(uri, runs.RUN_JSON), {"run_id": run_id, "dataset_id": ds_id, "status": status,
                                                              "dataset_uri": dataset.dataset_uri(root, ds_id)})


def version_files(local: str, run_id: str) -> None:
    """A version folder's files (a SavedModel's shape, random bytes)."""
    os.makedirs(os.path.join(local, "variables"))
    for rel, n in (("variables/variables.data-00000-of-00001", 5000), ("variables/variables.index", 200),
                   ("saved_model.pb", 1000), ("generator.keras", 2000)):
        with open(os.path.join(local, rel), "wb") as f:
            f.write(os.urandom(n))


def push(tmp_path, root: str, model: str, run_id: str, ds_id: str, blessed: bool = True) -> int:
    """What the pusher does after exporting: claim a number, publish the folder (card last), move LATEST."""
    mroot = registry.model_root(root, model)
    local = str(tmp_path / f"push-{model}-{run_id}")
    version_files(local, run_id)
    version = registry.claim_version(mroot, {"run_id": run_id})
    card = {"name": model, "version": version, "blessed": blessed, "run_id": run_id, "dataset_id": ds_id,
            "lineage": {"run": runs.run_uri(root, run_id), "dataset": dataset.dataset_uri(root, ds_id)},
            "files": registry.file_hashes(local)}
    storage.write_json(os.path.join(local, registry.MODEL_CARD), card)
    registry.commit_version(local, mroot, version)
    registry.update_latest(mroot)
    return version


def half_push(tmp_path, root: str, model: str, run_id: str, objects: int = 2) -> int:
    """A push killed after claiming its number and uploading `objects` files: no model card."""
    mroot = registry.model_root(root, model)
    version = registry.claim_version(mroot, {"run_id": run_id})
    local = str(tmp_path / f"half-{model}-{version}")
    version_files(local, run_id)
    rels = sorted(registry.file_hashes(local))[:objects]
    for rel in rels:
        storage.upload_file(os.path.join(local, rel), storage.join(registry.version_uri(mroot, version), rel))
    return version


def retention(**keys) -> config.RetentionConfig:
    cfg = config.Config()
    for k, v in {"keep_versions": 1, "keep_runs": 1, "keep_datasets": 1, **keys}.items():
        config.set_value(cfg, k, v)
    return cfg.retention


def build_local(tmp_path) -> str:
    """The scenario every local test starts from (ages in hours; grace 1 h, leases 1 h, stale runs 24 h):

    model m: versions 1-6 from runs r1-r6 (6 unblessed, so LATEST is 5), a fresh lease on 2, an expired lease on 3,
    7 half-pushed 5 h ago, 8 claimed a moment ago (a push in progress, one object uploaded).
    runs: r1-r6 (r1, r2 on ds-a; r3, r4 on ds-b; r5, r6 on ds-c), live (running, wrote 2 h ago, on ds-d), dead
    (running, nothing for 30 h), nojson (no run.json). datasets: ds-a..ds-d, ds-e (the newest, unreferenced),
    ds-f (no dataset.json, 3 h idle), ds-fresh: no dataset.json, being written. temp: an old .staging- folder, a
    fresh one, an old .tmp- file.
    """
    root = str(tmp_path / "art")
    for i, k in enumerate("abcde"):
        make_dataset(root, DS[k])
        _age(root, f"datasets/{DS[k]}", 200 - 10 * i)
    make_dataset(root, DS["f"], committed=False)
    _age(root, f"datasets/{DS['f']}", 3)
    make_dataset(root, "ds-" + "0" * 16, committed=False)  # fresh, being written
    for i, ds in enumerate("aabbcc", 1):
        make_run(root, f"r{i}", DS[ds])
        push(tmp_path, root, "m", f"r{i}", DS[ds], blessed=i != 6)
        _age(root, f"runs/r{i}", 100 - i)
        _age(root, f"models/m/{i}", 100 - i)
        _age(root, f"models/m/.claims/{i}", 100 - i)
    make_run(root, "live", DS["d"], status="running")
    _age(root, "runs/live", 2)
    make_run(root, "dead", DS["d"], status="running")
    _age(root, "runs/dead", 30)
    make_run(root, "nojson", None)
    _age(root, "runs/nojson", 50)
    mroot = registry.model_root(root, "m")
    registry.write_lease(mroot, "replica-a", 2)
    registry.write_lease(mroot, "replica-old", 3)
    _age(root, "models/m/.leases/replica-old.json", 2)
    assert half_push(tmp_path, root, "m", "r6") == 7
    _age(root, "models/m/7", 5)
    _age(root, "models/m/.claims/7", 5)
    assert half_push(tmp_path, root, "m", "r6", objects=1) == 8
    storage.write_bytes(storage.join(root, "datasets", ".staging-old", "train-0.tfrecord.gz"), b"x" * 100)
    _age(root, "datasets/.staging-old", 4)
    storage.write_bytes(storage.join(root, "datasets", ".staging-new", "train-0.tfrecord.gz"), b"x" * 100)
    storage.write_bytes(storage.join(root, "runs", "r5", "run.json.tmp-0123abcd"), b"{")
    _age(root, "runs/r5/run.json.tmp-0123abcd", 2)
    return root


EXPECTED_DELETE = ["models/m/1", "models/m/3", "models/m/4", "models/m/7", "models/m/.leases/replica-old.json",
                   "datasets/.staging-old", "runs/r5/run.json.tmp-0123abcd", "runs/dead", "runs/nojson", "runs/r1",
                   "runs/r3", "runs/r4", f"datasets/{DS['b']}", f"datasets/{DS['f']}"]
EXPECTED_KEEP = {"models/m/2", "models/m/5", "models/m/6", "models/m/8", "datasets/.staging-new", "runs/live",
                 "runs/r2", "runs/r5", "runs/r6", f"datasets/{DS['a']}", f"datasets/{DS['c']}", f"datasets/{DS['d']}",
                 f"datasets/{DS['e']}", "datasets/ds-" + "0" * 16}


def rels(items, root):
    return [storage.relpath(i.uri, storage.normalize(root)) for i in items]


def all_files(root: str) -> set[str]:
    return {storage.relpath(u, storage.normalize(root)) for u in storage.list_files(root)}


def test_plan_deletes_exactly_what_the_rules_say(tmp_path):
    root = build_local(tmp_path)
    plan = gc.plan(root, retention())
    assert sorted(rels(plan.delete, root)) == sorted(EXPECTED_DELETE)
    assert set(rels(plan.keep, root)) == EXPECTED_KEEP
    why = {storage.relpath(i.uri, plan.root): i.why for i in plan.delete + plan.keep}
    assert why["models/m/5"] == "LATEST" and why["models/m/2"].startswith("leased by replica-a")
    assert why["models/m/6"].startswith("newest 1") and why["models/m/8"].startswith("being pushed")
    assert why["models/m/7"].startswith("half-pushed: claimed, no model card")
    assert "running" in why["runs/live"] and why["runs/r2"] == "named by a kept version"
    assert why[f"datasets/{DS['d']}"] == "named by a kept version or run"
    assert why["models/m/.leases/replica-old.json"].startswith("lease expired")
    # a version's card goes first and its claim last; 7 is not the highest claim, so it goes too
    v1 = next(i for i in plan.delete if i.uri.endswith("/models/m/1"))
    assert v1.files[0].endswith("/1/model.json") and v1.files[-1].endswith("/.claims/1")
    v7 = next(i for i in plan.delete if i.uri.endswith("/models/m/7"))
    assert v7.files[-1].endswith("/.claims/7") and not any(f.endswith("model.json") for f in v7.files)
    run = next(i for i in plan.delete if i.uri.endswith("/runs/r1"))
    assert run.files[0].endswith("/r1/run.json") and run.bytes == sum(
        os.path.getsize(f) for f in run.files)
    # versions go before runs and datasets
    kinds = [i.kind for i in plan.delete]
    assert kinds == sorted(kinds, key=gc.KINDS.index)


def test_apply_deletes_exactly_the_plan_and_the_registry_still_works(tmp_path):
    root = build_local(tmp_path)
    before = all_files(root)
    plan = gc.plan(root, retention())
    planned = {storage.relpath(f, plan.root) for i in plan.delete for f in i.files}
    done = gc.apply(plan)
    assert rels(done, root) == rels(plan.delete, root)
    assert all_files(root) == before - planned
    mroot = registry.model_root(root, "m")
    assert registry.versions(mroot) == [2, 5, 6] and registry.latest(mroot) == 5
    for v in (2, 5, 6):
        assert registry.pull(mroot, str(tmp_path / f"pulled-{v}"), v)["version"] == v
    # no empty folders left where artifacts were; the highest claim (8, in progress) and kept claims stay
    for rel in ("models/m/1", "models/m/7", "runs/r1", "datasets/.staging-old", f"datasets/{DS['b']}"):
        assert not os.path.exists(os.path.join(root, rel)), rel
    claims = sorted(int(storage.basename(f)) for f in storage.list_files(storage.join(mroot, registry.CLAIMS)))
    assert claims == [2, 5, 6, 8]
    # the next push still gets a new number, never one handed out before
    make_run(root, "r9", DS["c"])
    assert push(tmp_path, root, "m", "r9", DS["c"]) == 9
    # a second gc: 9 is now LATEST and the newest, so 5 and 6 go (with r5; r6 is the run push 8 is pushing)
    again = gc.plan(root, retention())
    assert rels(again.delete, root) == ["models/m/5", "models/m/6", "runs/r5"]


@pytest.mark.parametrize("fail_after", [1, 2, 4, 7, 12, 20, 30])
def test_interrupted_gc_then_rerun_leaves_nothing_half_deleted(tmp_path, monkeypatch, fail_after):
    """The delete fails after k objects (as if the process was killed); at that moment every version the
    registry lists still pulls and verifies; a rerun finishes the job with the same end state."""
    root = build_local(tmp_path)
    expected = all_files(root) - {storage.relpath(f, storage.normalize(root))
                                  for i in gc.plan(root, retention()).delete for f in i.files}
    monkeypatch.setattr(gc, "DELETE_BATCH", 1)

    class Killed(Exception):
        pass

    def hook(name, info):
        if name == "gc.deleted" and info["index"] >= fail_after:
            raise Killed(info["uri"])
    previous = storage.set_fault_hook(hook)
    try:
        with pytest.raises(Killed):
            gc.apply(gc.plan(root, retention()))
    finally:
        storage.set_fault_hook(previous)
    mroot = registry.model_root(root, "m")
    visible = registry.versions(mroot)
    assert {2, 5, 6} <= set(visible) and registry.latest(mroot) == 5
    for v in visible:  # nothing half-deleted is visible: every listed version pulls and verifies
        registry.pull(mroot, str(tmp_path / f"mid-{v}"), v)
    rerun = gc.plan(root, retention())
    assert not {"models/m/2", "models/m/5", "models/m/6", "runs/r2", "runs/r5"} & set(rels(rerun.delete, root))
    gc.apply(rerun)
    assert all_files(root) == expected
    assert registry.versions(mroot) == [2, 5, 6]


def pushed_runs(tmp_path, root: str, n: int) -> None:
    """Dataset a, runs r1..rn made from it, each pushed as a version of model m."""
    make_dataset(root, DS["a"])
    for i in range(1, n + 1):
        make_run(root, f"r{i}", DS["a"])
        push(tmp_path, root, "m", f"r{i}", DS["a"])


def test_nothing_within_grace_is_touched(tmp_path):
    """Right after a burst of pushes (everything fresh) only what is old may go: here nothing."""
    root = str(tmp_path / "art")
    pushed_runs(tmp_path, root, 4)
    half_push(tmp_path, root, "m", "r4")
    storage.write_bytes(storage.join(root, "runs", ".staging-x", "f"), b"1")
    plan = gc.plan(root, retention())
    assert rels(plan.delete, root) == []
    # an hour later (grace 60 min) the same root: the old versions, runs, the half push and the temp go
    later = gc.plan(root, retention(), now=time.time() + 1.5 * HOUR)
    assert sorted(rels(later.delete, root)) == ["models/m/1", "models/m/2", "models/m/3", "models/m/5",
                                                "runs/.staging-x", "runs/r1", "runs/r2", "runs/r3"]


def test_a_lease_written_by_the_follower_protects_its_version(tmp_path):
    """A pinned serving replica's lease (ModelFollower renews it) keeps an old version; once the lease expires,
    gc collects the version and the lease."""
    from components.serving.follower import ModelFollower

    root = str(tmp_path / "art")
    pushed_runs(tmp_path, root, 3)
    mroot = registry.model_root(root, "m")
    follower = ModelFollower(mroot, version=1, cache=str(tmp_path / "cache"))
    follower.current = type("Held", (), {"version": 1})()  # as if version 1 were loaded (no TensorFlow here)
    follower._renew_lease()
    [lease] = storage.list_files(storage.join(mroot, registry.LEASES))
    assert registry.read_lease(lease) == 1
    later = time.time() + 2 * HOUR  # past grace: only the lease (fresh for 3 h) keeps 1
    plan = gc.plan(root, retention(lease_minutes=180), now=later)
    assert "models/m/1" not in rels(plan.delete, root) and "models/m/2" in rels(plan.delete, root)
    expired = gc.plan(root, retention(lease_minutes=180), now=later + 2 * HOUR)
    assert {"models/m/1", storage.relpath(lease, plan.root)} <= set(rels(expired.delete, root))


def test_a_version_that_became_latest_after_the_plan_is_kept(tmp_path):
    root = str(tmp_path / "art")
    pushed_runs(tmp_path, root, 3)
    plan = gc.plan(root, retention(), now=time.time() + 2 * HOUR)
    assert rels(plan.delete, root)[:2] == ["models/m/1", "models/m/2"]
    storage.write_text(storage.join(registry.model_root(root, "m"), registry.LATEST), "2\n")  # as if LATEST moved
    done = gc.apply(plan)
    assert "models/m/2" not in rels(done, root) and registry.versions(registry.model_root(root, "m")) == [2, 3]


def test_dry_run_deletes_nothing_and_prints_a_table(tmp_path, capsys):
    root = build_local(tmp_path)
    before = all_files(root)
    out = run_cli(capsys, "gc", "--artifact-root", root, "--keep-versions", "1", "--keep-runs", "1",
                  "--keep-datasets", "1")
    assert out.returncode == 0, out.stderr
    assert all_files(root) == before
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"gc of {root} (dry run")
    row = next(line for line in lines if line.strip().startswith("models/m/7/"))
    assert "half-pushed: claimed, no model card" in row and " KB" in row
    assert any(line.startswith("total: 14 items") for line in lines)
    assert any(line.strip().startswith("models/m/5/") and line.rstrip().endswith("LATEST") for line in lines)
    applied = run_cli(capsys, "gc", "--artifact-root", root, "--keep-versions", "1", "--keep-runs", "1",
                      "--keep-datasets", "1", "--apply")
    assert applied.returncode == 0, applied.stderr
    assert "deleted 14 items" in applied.stdout and registry.versions(registry.model_root(root, "m")) == [2, 5, 6]


def test_bad_input_is_one_clear_line(tmp_path, capsys):
    out = run_cli(capsys, "gc", "--artifact-root", str(tmp_path), "--keep-versions", "0")
    assert out.returncode == 2 and "'keep_versions' must lie within" in out.stderr and "Traceback" not in out.stderr
    out = run_cli(capsys, "gc", "--artifact-root", str(tmp_path / "missing"))
    assert out.returncode == 2 and "no artifact root there" in out.stderr and "Traceback" not in out.stderr
    os.makedirs(tmp_path / "empty")
    out = run_cli(capsys, "gc", "--artifact-root", str(tmp_path / "empty"))
    assert out.returncode == 0 and "nothing to delete" in out.stdout


def test_pipeline_runs_gc_last_when_configured(tmp_path, monkeypatch):
    """The pipeline's gc step, with its four steps stubbed (they have their own tests): off by default, and
    when on it runs last and records what it deleted."""
    from components import evaluator, pipeline, preprocess, pusher, trainer

    root = build_local(tmp_path)
    monkeypatch.setattr(preprocess, "run", lambda cfg, args=None: {"dataset_id": DS["e"], "num_train": 1,
                                                                   "num_eval": 1, "skipped": True})
    monkeypatch.setattr(trainer, "run", lambda cfg: {})
    monkeypatch.setattr(evaluator, "run", lambda cfg: {"decision": runs.NOT_BLESSED, "reasons": ["stub"],
                                                       "eval_split": {"psnr_rgb": 1, "bicubic_psnr_rgb": 1}})
    monkeypatch.setattr(pusher, "run", lambda cfg: pytest.fail("not blessed: no push"))
    cfg = config.Config(artifact_root=root, run_id="r6")
    cfg.push.model_name = "m"
    before = all_files(root)
    summary = pipeline.run(cfg)
    assert [s["step"] for s in summary["steps"]] == ["preprocess", "train", "evaluate", "push"]
    assert before <= all_files(root)
    for k, v in {"run_after_pipeline": True, "keep_versions": 1, "keep_runs": 1, "keep_datasets": 1}.items():
        config.set_value(cfg, k, v)
    summary = pipeline.run(cfg)
    assert summary["steps"][-1]["step"] == "gc"
    assert sorted(storage.relpath(d["uri"], storage.normalize(root)) for d in summary["steps"][-1]["deleted"]) == \
        sorted(EXPECTED_DELETE)
    assert registry.versions(registry.model_root(root, "m")) == [2, 5, 6]


def test_s3_root_plan_apply_interrupted_and_rerun(s3_server, tmp_path, monkeypatch):
    """The same rules on SeaweedFS S3 (ages from the store's LastModified; `now` moved forward instead of
    back-dating objects): an interruption right after the first model card, a rerun, no orphans left."""
    monkeypatch.setenv("SRGAN_CACHE_DIR", str(tmp_path / "cache"))
    root = s3_server.make_bucket("retention") + "/art"
    make_dataset(root, DS["a"])
    make_dataset(root, DS["b"])
    for i in range(1, 5):
        make_run(root, f"r{i}", DS["a"] if i < 3 else DS["b"])
        push(tmp_path, root, "m", f"r{i}", DS["a"] if i < 3 else DS["b"], blessed=i != 4)
    assert half_push(tmp_path, root, "m", "r4") == 5
    make_run(root, "nojson", None)
    mroot = registry.model_root(root, "m")
    assert registry.latest(mroot) == 3
    registry.write_lease(mroot, "replica-a", 1)
    before = all_files(root)
    later = time.time() + 2 * HOUR  # everything is past grace; the lease (180 min) is still fresh
    cfg = retention(lease_minutes=180, keep_runs=0, keep_datasets=0)  # 0: S3's 1 s timestamps would tie
    plan = gc.plan(root, cfg, now=later)
    assert rels(plan.delete, root) == ["models/m/2", "models/m/5", "runs/nojson", "runs/r2"]
    assert all_files(root) == before  # planning deletes nothing
    expected = before - {storage.relpath(f, plan.root) for i in plan.delete for f in i.files}
    assert "models/m/.claims/5" in expected  # the highest claim stays

    def hook(name, info):
        if name == "gc.deleted" and info["index"] >= 1:
            raise RuntimeError("killed")
    previous = storage.set_fault_hook(hook)
    try:
        with pytest.raises(RuntimeError):
            gc.apply(plan)
    finally:
        storage.set_fault_hook(previous)
    assert registry.versions(mroot) == [1, 3, 4]  # 2's card went first: it is invisible, not broken
    for v in (1, 3, 4):
        registry.pull(mroot, str(tmp_path / f"mid-{v}"), v)
    rerun = gc.plan(root, cfg, now=later)
    assert rels(rerun.delete, root)[0] == "models/m/2" and "half-pushed" in rerun.delete[0].why
    gc.apply(rerun)
    assert all_files(root) == expected
    assert registry.versions(mroot) == [1, 3, 4] and registry.latest(mroot) == 3
    # no folder entries left behind either (SeaweedFS keeps one when its last object goes)
    assert storage.list_dirs(mroot) == [".claims", ".leases", "1", "3", "4"]
    assert "r2" not in storage.list_dirs(runs.runs_root(root))
    assert gc.plan(root, cfg, now=later).delete == []
    # the next push gets 6: numbers are never handed out twice
    make_run(root, "r6", DS["a"])
    assert push(tmp_path, root, "m", "r6", DS["a"]) == 6
    json.dumps([i.why for i in rerun.delete])  # reasons are plain strings (pipeline.json records them)
