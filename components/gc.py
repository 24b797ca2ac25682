"""Retention: what may go from one artifact root, and deleting it so that nothing half-deleted is ever visible.

The rules (config section `retention:`; jobs/gc.py shows the plan, `--apply` carries it out):
- versions (`models/<name>/<n>/`): the newest `keep_versions` committed versions of each model stay, and so do
  the one LATEST names and every version a fresh lease names (`.leases/<holder>.json`, which each serving
  replica renews every few minutes for the version it holds: a lease older than `lease_minutes` protects
  nothing and is collected). Half-pushed versions (claimed, no model card) are collected once idle.
- runs (`runs/<id>/`): the newest `keep_runs` stay, plus every run a kept version's card names (run_id, lineage,
  strength base, interpolation ends) and every run still running (run.json says so and it wrote something in
  the last `stale_run_hours`). A run folder without run.json is collected once idle.
- datasets (`datasets/<id>/`): the newest `keep_datasets` stay, plus every dataset a kept version or a kept run
  names. A dataset folder without dataset.json (being written, or abandoned) is collected once idle.
- temporary files of interrupted writes (`.staging-*/`, `.publish-*/` folders, `*.tmp-<hex>` files) are
  collected once idle; so are claims of versions that are gone, except the highest (it keeps version
  numbers from ever being handed out twice).
- "idle" and the grace rule: nothing claimed or written in the last `grace_minutes` is ever touched (a push,
  a preprocess, a training run or another gc may be at work there). Ages are the listing's modification
  times: the object store's clock against this machine's, so the two should agree to within minutes.
"Newest" is by the latest write inside the folder.

Deletion order, so that an interrupted gc never leaves a visible-but-broken artifact and a rerun finishes
the job: each artifact's commit marker goes first (a version's model.json, a run's run.json, a dataset's
dataset.json): from then on readers do not see it, and a rerun finds it again as half-written and idle.
Then its other objects, then (versions) its claim. Versions go before runs and datasets (dependents
before what they depend on). Just before a version's card goes, LATEST and the leases are read again.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time

from components import dataset, registry, runs, storage
from components.config import RetentionConfig
from components.errors import UserError

log = logging.getLogger("gc")
DELETE_BATCH = 500  # objects per delete call after a marker (an S3 bulk delete takes up to 1000)
TEMP_PART = re.compile(r"^\.(staging|publish)-")   # storage.staged_output / publish_dir's local temp folders
TEMP_FILE = re.compile(r"\.tmp-[0-9a-f]{8}$")      # storage._replace_local's file beside its destination
KINDS = ("version", "lease", "temp", "run", "dataset")  # the order apply deletes in


class GcError(UserError):
    """The artifact root cannot be garbage collected as asked; the message says why."""


@dataclasses.dataclass
class Item:
    """One artifact (or temp folder, or lease) and what gc decided about it."""
    kind: str               # version | lease | temp | run | dataset
    uri: str                # the folder (or file)
    why: str
    files: list[str]        # its objects, in deletion order: the commit marker first
    bytes: int = 0
    model: str | None = None    # versions: the model root, and the number (re-checked before deleting)
    version: int | None = None


@dataclasses.dataclass
class Plan:
    root: str
    delete: list[Item]
    keep: list[Item]
    lease_seconds: float  # how long a lease protects its version (apply reads the leases again)

    @property
    def bytes(self) -> int:
        return sum(i.bytes for i in self.delete)

    @property
    def objects(self) -> int:
        return sum(len(i.files) for i in self.delete)


def _age(files: dict[str, dict], now: float) -> float:
    """Seconds since the newest of these objects was written; 0 (fresh: not touched) when a listing entry gives
    no time."""
    times = [storage.modified_time(info) for info in files.values()]
    times = [t for t in times if t is not None]
    return now - max(times) if len(times) == len(files) and times else 0.0


def _ago(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h" if seconds < 172800 \
        else f"{seconds / 86400:.1f} days"


def _size(files: dict[str, dict]) -> int:
    return sum(int(i.get("size") or i.get("Size") or 0) for i in files.values())


def _item(kind: str, uri: str, why: str, files: dict[str, dict], marker: str | None = None, last: str | None = None,
          **extra) -> Item:
    """An Item whose files are ordered: `marker` (a file name inside `uri`) first, `last` (a URI) last."""
    first = [u for u in files if marker and u == storage.join(uri, marker)]
    ordered = first + sorted(u for u in files if u not in first and u != last) + [u for u in files if u == last]
    return Item(kind, uri, why, ordered, _size(files), **extra)


def _names(card: dict, root: str) -> tuple[set[str], set[str]]:
    """(run ids, dataset ids) a model card names: its run_id and dataset_id, and every URI in it (lineage,
    strength base, interpolation ends) below this root's runs/ or datasets/."""
    run_ids = {card.get("run_id")} | {(card.get("strength") or {}).get("base_run")}
    dataset_ids = {card.get("dataset_id")}
    prefixes = {"runs": storage.join(root, "runs") + "/", "datasets": storage.join(root, "datasets") + "/"}

    def walk(value):
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str) and ("/runs/" in value or "/datasets/" in value):
            try:
                uri = storage.normalize(value)
            except storage.StorageError:
                return
            for kind, prefix in prefixes.items():
                if uri.startswith(prefix):
                    (run_ids if kind == "runs" else dataset_ids).add(uri[len(prefix):].split("/")[0])
    walk(card)
    return run_ids - {None}, dataset_ids - {None}


def _group(listing: dict[str, dict], root: str) -> tuple[dict, dict, dict, dict]:
    """Split the root's objects: (temp {folder-or-file: files}, models {name: {part: files}},
    runs {id: files}, datasets {id: files}). Anything else under the root is left alone."""
    temp, models, run_dirs, dataset_dirs = {}, {}, {}, {}
    for uri, info in listing.items():
        parts = storage.relpath(uri, root).split("/")
        cut = next((k for k, p in enumerate(parts) if TEMP_PART.match(p)), None)
        if cut is not None or TEMP_FILE.search(parts[-1]):
            key = storage.join(root, *parts[:cut + 1]) if cut is not None else uri
            temp.setdefault(key, {})[uri] = info
        elif parts[0] == "models" and len(parts) >= 3:
            models.setdefault(parts[1], {}).setdefault(parts[2], {})[uri] = info
        elif parts[0] == "runs" and len(parts) >= 3:
            run_dirs.setdefault(parts[1], {})[uri] = info
        elif parts[0] == "datasets" and len(parts) >= 3 and dataset.DATASET_ID_RE.match(parts[1]):
            dataset_dirs.setdefault(parts[1], {})[uri] = info
    return temp, models, run_dirs, dataset_dirs


def _plan_model(name: str, parts: dict, root: str, cfg: RetentionConfig, now: float, grace: float,
                delete: list, keep: list) -> tuple[set, set]:
    """One model's versions, claims and leases; returns the (run ids, dataset ids) its kept versions need."""
    model = storage.join(root, "models", name)
    claims = {storage.basename(u): (u, i) for u, i in parts.get(registry.CLAIMS, {}).items()
              if storage.basename(u).isdigit()}
    numbers = {int(p) for p in parts if p.isdigit()} | {int(c) for c in claims}
    watermark = max(numbers, default=None)  # its claim stays: numbers must never be handed out twice
    committed = sorted(n for n in numbers if storage.join(model, str(n), registry.MODEL_CARD) in parts.get(str(n), {}))
    latest = registry.latest(model)
    leased = {}
    for uri, info in parts.get(registry.LEASES, {}).items():
        age = _age({uri: info}, now)
        if age >= cfg.lease_minutes * 60:
            delete.append(_item("lease", uri, f"lease expired (last renewed {_ago(age)} ago)", {uri: info}))
        elif (version := registry.read_lease(uri)) is not None:
            leased.setdefault(version, []).append(storage.basename(uri).removesuffix(".json"))
    newest = set(committed[-cfg.keep_versions:])
    run_ids, dataset_ids = set(), set()
    for n in sorted(numbers):
        folder = storage.join(model, str(n))
        files = dict(parts.get(str(n), {}))
        claim = claims.get(str(n))
        if claim and n != watermark:
            files[claim[0]] = claim[1]
        age = _age({**files, **({claim[0]: claim[1]} if claim else {})}, now)
        extra = {"model": model, "version": n}
        if n in committed:
            reasons = (["LATEST"] if n == latest else []) + \
                      ([f"leased by {', '.join(sorted(leased[n]))}"] if n in leased else []) + \
                      ([f"newest {cfg.keep_versions}"] if n in newest else []) + \
                      ([f"written {_ago(age)} ago (grace)"] if age < grace else [])
            if reasons:
                keep.append(_item("version", folder, "; ".join(reasons), files, registry.MODEL_CARD, **extra))
                card = registry.card(folder)
                r, d = _names(card, root)
                run_ids |= r
                dataset_ids |= d
            else:
                delete.append(_item("version", folder, f"older than the newest {cfg.keep_versions} (keep_versions), "
                                    "not LATEST, no lease", files, registry.MODEL_CARD,
                                    claim[0] if claim and n != watermark else None, **extra))
        elif age < grace:
            keep.append(_item("version", folder, f"being pushed (claimed or written {_ago(age)} ago)", files, **extra))
            if claim:  # its card will name this run: keep it (the claim says which)
                payload = _read_claim(claim[0])
                run_ids |= {payload.get("run_id")} - {None}
        elif files:
            delete.append(_item("version", folder, f"half-pushed: claimed, no model card, idle {_ago(age)}", files,
                                last=claim[0] if claim and n != watermark else None, **extra))
    return run_ids, dataset_ids


def _listing(uri: str) -> dict[str, dict]:
    """{uri: info} of every object below a folder; {} when there is none (a failed listing still raises)."""
    try:
        return storage.list_files_info(uri)
    except storage.StorageError as exc:
        if "no such file" in str(exc):
            return {}
        raise


def _read_claim(uri: str) -> dict:
    try:
        payload = storage.read_json(uri)
    except storage.StorageError:
        return {}
    return payload if isinstance(payload, dict) else {}


def plan(artifact_root: str, cfg: RetentionConfig, now: float | None = None) -> Plan:
    """What gc would delete under `artifact_root` and why (and what it keeps, and why). Reads only: one
    listing of the root, LATEST, leases and claims of pushes in progress, the cards of kept versions and
    the run.json of every run. `now` (epoch seconds) is for tests."""
    root = storage.normalize(artifact_root)
    now = time.time() if now is None else now
    grace = cfg.grace_minutes * 60
    if not storage.exists(root):
        raise GcError(f"{artifact_root}: no artifact root there (nothing to collect)")
    temp, models, run_dirs, dataset_dirs = _group(_listing(root), root)
    delete, keep = [], []

    for uri, files in sorted(temp.items()):
        age = _age(files, now)
        (keep if age < grace else delete).append(_item(
            "temp", uri, f"temporary files of a write in progress, written {_ago(age)} ago (grace)" if age < grace
            else f"temporary files of an interrupted write, idle {_ago(age)}", files))

    needed_runs, needed_datasets = set(), set()
    for name, parts in sorted(models.items()):
        r, d = _plan_model(name, parts, root, cfg, now, grace, delete, keep)
        needed_runs |= r
        needed_datasets |= d

    kept_runs = _plan_folders(
        "run", run_dirs, runs.runs_root(root), runs.RUN_JSON, cfg.keep_runs, "keep_runs", needed_runs, now, grace,
        delete, keep, running=lambda ident: _running(ident, run_dirs, now, cfg.stale_run_hours * 3600))
    for run_id in kept_runs:  # a kept run needs its dataset (to evaluate or push it, or to resume it)
        record = runs.read_run(root, run_id)
        needed_datasets |= {(record or {}).get("dataset_id")} - {None}
    _plan_folders("dataset", dataset_dirs, storage.join(root, "datasets"), dataset.MARKER, cfg.keep_datasets,
                  "keep_datasets", needed_datasets, now, grace, delete, keep)
    delete.sort(key=lambda i: (KINDS.index(i.kind), i.uri if i.version is None else f"{i.model}/{i.version:012d}"))
    return Plan(root, delete, keep, cfg.lease_minutes * 60)


def _running(run_id: str, run_dirs: dict, now: float, stale: float) -> str | None:
    """"running" when run.json says so and the run wrote something within `stale` seconds; a note when it
    says so but wrote nothing for longer (killed without a chance to record it); else None."""
    uri = next(u for u in run_dirs[run_id] if u.endswith("/" + runs.RUN_JSON))
    try:
        if storage.read_json(uri).get("status") != "running":
            return None
    except (storage.StorageError, AttributeError):
        return None
    age = _age(run_dirs[run_id], now)
    return "running" if age < stale else f"says running but wrote nothing for {_ago(age)} (stale_run_hours): killed"


def _plan_folders(kind: str, folders: dict, parent: str, marker: str, keep_n: int, key: str, needed: set,
                  now: float, grace: float, delete: list, keep: list, running=None) -> list[str]:
    """Runs or datasets: committed ones (their marker exists) ranked newest first by their latest write;
    returns the ids kept."""
    committed, kept = [], []
    for ident, files in folders.items():
        uri = storage.join(parent, ident)
        age = _age(files, now)
        if storage.join(uri, marker) in files:
            committed.append((age, ident))
        elif age < grace:
            keep.append(_item(kind, uri, f"no {marker} yet, written {_ago(age)} ago (grace)", files))
            kept.append(ident)
        else:
            delete.append(_item(kind, uri, f"no {marker} (never finished, or a gc was interrupted), idle {_ago(age)}",
                                files, marker))
    named = f"named by a kept version{' or run' if kind == 'dataset' else ''}"
    for rank, (age, ident) in enumerate(sorted(committed)):
        uri, files = storage.join(parent, ident), folders[ident]
        state = running(ident) if running else None
        reasons = ([f"newest {keep_n}"] if rank < keep_n else []) + ([named] if ident in needed else []) + \
                  (["running"] if state == "running" else []) + \
                  ([f"written {_ago(age)} ago (grace)"] if age < grace else [])
        if reasons:
            keep.append(_item(kind, uri, "; ".join(reasons), files, marker))
            kept.append(ident)
        else:
            delete.append(_item(kind, uri, f"older than the newest {keep_n} ({key}), not {named}, idle {_ago(age)}"
                                + (f"; {state}" if state else ""), files, marker))
    return kept


def _still_collectable(item: Item, lease_seconds: float, checked: dict) -> bool:
    """Just before a version's card goes: LATEST and the fresh leases again (a push or a replica may have
    moved since the plan). Read once per model per apply."""
    if item.model not in checked:
        lease_dir = storage.join(item.model, registry.LEASES)
        now = time.time()
        leases = {registry.read_lease(u) for u, info in _listing(lease_dir).items()
                  if _age({u: info}, now) < lease_seconds}
        checked[item.model] = {registry.latest(item.model)} | leases
    return item.version not in checked[item.model]


def apply(p: Plan, report=None) -> list[Item]:
    """Delete what the plan lists, in its order (each item's marker first); returns the items deleted.
    `report(item)` is called after each one. Safe to interrupt: a rerun of plan + apply finishes the job."""
    done, deleted, checked = [], 0, {}
    for item in p.delete:
        if item.kind == "version" and not _still_collectable(item, p.lease_seconds, checked):
            log.warning("%s: now LATEST or leased (changed since the plan): kept", item.uri)
            continue
        first = 1 if item.kind in ("version", "run", "dataset") else 0
        for batch in [item.files[:first]] + [item.files[k:k + DELETE_BATCH] for k in range(first, len(item.files),
                                                                                              DELETE_BATCH)]:
            if batch:
                storage.delete_files(batch)
                deleted += len(batch)
                storage.fault_point("gc.deleted", uri=batch[-1], index=deleted)
        storage.prune_empty_dirs(item.uri)
        done.append(item)
        if report:
            report(item)
    return done


def human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"
