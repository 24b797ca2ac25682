"""Following the registry: which model version a server holds, and taking a newer one into use.

`ModelFollower` is what each Ray Serve replica (and nothing else) uses; `watch_folder` is the loop
behind `jobs/pull_model.py --watch` for TF Serving. Both only use the registry's public functions:
`registry.latest` to read LATEST, `registry.pull` to download a version and verify every sha256
against its model card (a copy that does not match is deleted, never used).

Rules a follower keeps:
- It serves LATEST, or the pinned version; a pinned follower never changes.
- It only ever moves up: a LATEST lower than the version held is logged and ignored.
- A version that fails to pull, verify, load or warm is never served: the current one stays, the
  failure is in `state()` and the log, and that LATEST is not tried again until LATEST changes.
- The switch is one reference assignment: a request that took the old `Loaded` finishes with it.
- Its cache, shared by the replicas of one node, keeps at most `keep_versions` versions on disk (prune_versions:
  room is made before a pull, the rest goes after a switch); a version a replica serves or is loading is held
  (storage.hold) and never removed by another's pruning.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import logging
import os
import shutil
import signal
import threading
import time
import uuid

import numpy as np

from components import registry, storage, upscaler
from components.errors import UserError

log = logging.getLogger("serving")


class ServingError(UserError):
    """The service cannot start or a model cannot be taken into use; the message says why."""


@dataclasses.dataclass(frozen=True)
class Loaded:
    """One version in memory: what a request uses from start to end (version header and pixels agree)."""
    version: int
    model: upscaler.Upscaler
    card: dict
    folder: str


def card_summary(card: dict) -> dict:
    metrics = card.get("metrics") or {}
    split = metrics.get("eval_split") or {}
    return {"name": card.get("name"), "version": card.get("version"), "blessed": card.get("blessed"),
            "created": card.get("created"), "run_id": card.get("run_id"), "dataset_id": card.get("dataset_id"),
            "scale": card.get("scale"), "decision": metrics.get("decision"),
            "eval_split": {k: split[k] for k in ("psnr_rgb", "bicubic_psnr_rgb", "gain_psnr_rgb", "ssim_rgb")
                           if k in split}}


def cache_root(model_uri: str) -> str:
    """The local folder pulled versions of `model_uri` are kept in (one per model URI)."""
    key = hashlib.sha256(storage.normalize(model_uri).encode()).hexdigest()[:16]
    return os.path.join(storage.cache_dir(), "serve", key)


def pull_verified(model_uri: str, version: int, cache: str) -> tuple[str, dict]:
    """(local version folder, model card): a verified local copy of `version`.

    A copy already in the cache is verified again against the registry's card before use. Each caller
    pulls into its own folder and renames it into place, so replicas on one node never collide.
    """
    source_card = registry.card(registry.resolve(model_uri, version))
    dest = os.path.join(cache, str(version))
    stale = False
    if os.path.isdir(dest):
        try:
            registry.verify(dest, source_card)
            return dest, source_card
        except registry.RegistryError as exc:
            log.warning("cached copy %s does not match the registry (%s): pulling again", dest, exc)
            stale = True
    own = os.path.join(cache, f".{version}.{uuid.uuid4().hex[:8]}")
    os.makedirs(cache, exist_ok=True)
    card = registry.pull(model_uri, own, version)
    if stale:
        # Moved aside, not deleted in place: another replica may have put a good copy there meanwhile and
        # be loading it, so only a copy that still fails verification is moved, and only by rename.
        try:
            registry.verify(dest, source_card)
            shutil.rmtree(own, ignore_errors=True)
            return dest, source_card
        except (registry.RegistryError, OSError):
            aside = os.path.join(cache, f".stale.{version}.{uuid.uuid4().hex[:8]}")
            with contextlib.suppress(OSError):
                os.replace(dest, aside)
                shutil.rmtree(aside, ignore_errors=True)
    try:
        os.replace(own, dest)  # fails (not empty) when another replica's copy is already in place
    except OSError:
        # Lost the race. Serve the copy in place if it verifies and drop ours (private: nobody else reads
        # it), so the cache keeps one copy per version; otherwise serve ours, which is verified too.
        try:
            registry.verify(dest, source_card)
        except (registry.RegistryError, OSError):
            return own, card
        shutil.rmtree(own, ignore_errors=True)
        return dest, source_card
    return dest, card


def load_and_warm(folder: str, version: int, card: dict, tile: int, strength: float | None = None,
                  runtime: str = "tensorflow") -> Loaded:
    """Load a verified local version folder with `runtime` and run it once on a tile-sized input (compiles the
    graph), checking the output shape, so the first real request does not pay for it or find it broken."""
    model = upscaler.load(folder, strength=strength, runtime=runtime)
    probe = np.full((1, min(tile, 16), min(tile, 16), 3), 128, np.uint8)
    out = model(probe)
    expected = (1, probe.shape[1] * model.scale, probe.shape[2] * model.scale, 3)
    if out.shape != expected or out.dtype != np.uint8:
        raise ServingError(f"version {version}: the model returned {out.dtype} {out.shape} for {probe.shape}, "
                           f"expected uint8 {expected}")
    return Loaded(version, model, card, folder)


def _version_of(name: str) -> int | None:
    """The version a name in a cache or watch folder belongs to: `3`, `3.lock`, and the hidden pulls
    `.3.<id>`, `..3.<id>.partial-<id>` (registry.pull's), `.stale.3.<id>`, `.3.partial-<id>`."""
    parts = name.lstrip(".").split(".")
    if parts[0] == "stale":
        parts = parts[1:]
    return int(parts[0]) if parts and parts[0].isdigit() else None


def remove_version(folder: str, version: int) -> bool:
    """Remove `version` from a cache or watch folder (its numbered folder and its hidden pulls) unless a
    process holds it (storage.hold); True when removed."""
    belongings = [os.path.join(folder, n) for n in os.listdir(folder)
                  if n.startswith(".") and not n.startswith(storage.EVICTING) and _version_of(n) == version]
    return storage.remove_unless_held(os.path.join(folder, str(version)), belongings)


def prune_versions(folder: str, keep: int, protect=()) -> list[int]:
    """Remove the versions of `folder` beyond the `keep` highest numbered folders, except `protect` and those
    a process holds; returns the versions removed. Hidden pulls of a version that never landed count too."""
    names = os.listdir(folder)
    kept = set(sorted((int(n) for n in names if n.isdigit()), reverse=True)[:keep]) | set(protect)
    removed = [v for v in sorted({_version_of(n) for n in names} - {None} - kept) if remove_version(folder, v)]
    for n in names:
        if n.startswith(storage.EVICTING):  # left by a removal that was killed mid-way
            storage.remove_path(os.path.join(folder, n))
    return removed


class ModelFollower:
    """Holds the version being served and moves to a newer LATEST when one is committed."""

    def __init__(self, model_uri: str, version: str | int | None = None, tile: int = 128,
                 cache: str | None = None, strength: float | None = None, runtime: str = "tensorflow",
                 keep_versions: int = 2):
        self.model_uri = model_uri
        self.pinned = None if version in (None, "latest") else int(registry.resolve(model_uri, version).rstrip("/")
                                                                      .rsplit("/", 1)[-1])
        self.tile, self.strength = tile, strength  # strength: every version is served at it (its strength pair)
        # every version runs on it (a version without that export is not taken into use); auto: each version on
        # the fastest runtime it carries (runtimes.choose), so one without exports still serves, on tensorflow
        self.runtime = runtime
        self.cache = cache or cache_root(model_uri)
        self.keep_versions = keep_versions  # on disk in the cache, whatever the replicas sharing it serve
        self._held: dict[int, int] = {}     # version -> storage.hold fd: the one served, the one being loaded
        self.current: Loaded | None = None
        self.failed: dict | None = None     # the last LATEST that could not be taken into use
        self.last_attempt: dict = {}        # the last poll that did something (loaded, switched, failed, ...)
        self.last_check: dict = {}          # the last poll, whatever it found
        self._lock = threading.Lock()        # one update at a time per replica
        self.lease = {"holder": registry.lease_holder(), "version": None, "renewed": 0.0}  # what gc must keep

    def _renew_lease(self) -> None:
        """Tell gc (components/gc.py) which version this replica holds: a lease in the registry, written on a
        switch and every registry.LEASE_RENEW_SECONDS. A failed write is logged; serving goes on."""
        cur = self.current
        if cur is None or (cur.version == self.lease["version"]
                           and time.time() - self.lease["renewed"] < registry.LEASE_RENEW_SECONDS):
            return
        try:
            registry.write_lease(self.model_uri, self.lease["holder"], cur.version)
            self.lease.update(version=cur.version, renewed=time.time())
        except Exception as exc:  # noqa: BLE001 - an unreachable store must not stop the service
            log.warning("could not renew the lease on version %s of %s: %s", cur.version, self.model_uri, exc)

    def state(self) -> dict:
        cur = self.current
        return {"model_uri": self.model_uri, "version": cur.version if cur else None,
                "pinned": self.pinned is not None, "runtime": cur.model.runtime if cur else None,
                "runtime_setting": self.runtime, "card": card_summary(cur.card) if cur else None,
                "last_update": dict(self.last_attempt), "last_check": dict(self.last_check), "failed": dict(self.failed) if self.failed else None}

    def _take(self, version: int) -> Loaded:
        """Pull, verify, load and warm `version`, held (storage.hold) from before the pull: no other replica's
        prune removes it meanwhile. A version that fails is let go and removed unless another replica holds it."""
        entry = os.path.join(self.cache, str(version))
        fresh = version not in self._held
        if fresh:
            self._held[version] = storage.hold(entry)
        try:
            # room first, so the cache never holds more than keep_versions (at 1: the served one and this one)
            prune_versions(self.cache, self.keep_versions - 1, protect=set(self._held))
            folder, card = pull_verified(self.model_uri, version, self.cache)
            if int(card.get("version", version)) != version:
                raise ServingError(f"version {version}: its model card says version {card.get('version')}")
            return load_and_warm(folder, version, card, self.tile, self.strength, self.runtime)
        except BaseException:
            if fresh:
                storage.release(self._held.pop(version))
                remove_version(self.cache, version)  # of no use on disk; kept if another replica holds it
            raise

    def _settle(self) -> None:
        """After a switch: let go of every version but the one served, then keep at most keep_versions on disk.
        The old `Loaded` is referenced by nothing here any more: it goes once its last request ends."""
        for v in [v for v in self._held if v != self.current.version]:
            storage.release(self._held.pop(v))
        gc.collect()  # TensorFlow's objects form reference cycles: freed now, not at Python's next full collection
        removed = prune_versions(self.cache, self.keep_versions, protect={self.current.version})
        if removed:
            log.info("removed versions %s from %s (keeping %d)", removed, self.cache, self.keep_versions)

    def _fallback(self, below: int) -> Loaded | None:
        """A replica that starts while LATEST is bad serves the highest blessed version below it that
        pulls, verifies and loads (what older replicas are still serving), and keeps LATEST as failed."""
        for v in sorted((v for v in registry.versions(self.model_uri) if v < below), reverse=True):
            try:
                if registry.card(registry.version_uri(self.model_uri, v)).get("blessed"):
                    return self._take(v)
            except Exception as exc:  # noqa: BLE001 - try the next one down
                log.warning("version %s cannot be served either: %s", v, exc)
        return None

    def check(self) -> dict:
        """One poll: read LATEST (or the pin), take a newer version into use. Never raises for a bad
        version; returns the attempt record that `state()` shows."""
        with self._lock:
            started = time.time()
            attempt = {"time": round(started, 3), "current": self.current.version if self.current else None}
            try:
                target = self.pinned if self.pinned is not None else registry.latest(self.model_uri)
                attempt["latest"] = target
                if target is None:
                    raise ServingError(f"{self.model_uri}: no {registry.LATEST} (no blessed model pushed yet)")
                current = self.current.version if self.current else None
                if current == target:
                    attempt["status"] = "unchanged"
                elif current is not None and target < current:
                    attempt["status"] = "ignored"
                    attempt["reason"] = f"LATEST {target} is older than the served version {current}"
                elif self.failed and self.failed.get("version") == target:
                    attempt["status"] = "skipped"
                    attempt["reason"] = f"version {target} failed before; retried when LATEST changes"
                else:
                    try:
                        loaded = self._take(target)
                    except Exception as exc:
                        if current is not None or self.pinned is not None:
                            raise
                        loaded = self._fallback(target)  # a fresh replica: the newest good version below
                        if loaded is None:
                            raise
                        attempt["fallback"] = loaded.version
                        attempt["error"] = f"{type(exc).__name__}: {exc}"
                    self.current = loaded  # the switch: one reference assignment
                    self.failed = None
                    self._settle()
                    attempt["status"] = "switched" if current is not None else "loaded"
                    if "fallback" in attempt:
                        attempt["status"] = "loaded_fallback"
                        self.failed = {"version": target, "time": attempt["time"], "error": attempt["error"]}
                        log.error("LATEST %s of %s cannot be served (%s); serving version %s, the newest below it "
                                  "that can", target, self.model_uri, attempt["error"], loaded.version)
                    log.info("serving version %s (was %s, LATEST %s); pulled, verified, loaded and warmed in %.1f s",
                             loaded.version, current, target, time.time() - started)
            except Exception as exc:  # noqa: BLE001 - a bad version must never take the service down
                attempt["status"] = "failed"
                attempt["error"] = f"{type(exc).__name__}: {exc}"
                if attempt.get("latest") is not None:
                    self.failed = {"version": attempt["latest"], "error": attempt["error"], "time": attempt["time"]}
                log.error("could not take version %s of %s into use; still serving %s: %s", attempt.get("latest"),
                          self.model_uri, self.current.version if self.current else None, attempt["error"])
            self._renew_lease()
            attempt["seconds"] = round(time.time() - started, 3)
            self.last_check = {k: attempt.get(k) for k in ("time", "latest", "status")}
            if attempt["status"] not in ("unchanged", "skipped"):
                self.last_attempt = attempt
            return attempt


# ----------------------------------------------------------------------------- TF Serving folder

def watch_folder(model_uri: str, base: str, poll_seconds: float, stop: threading.Event | None = None,
                 install_signals: bool = True, keep_versions: int = 2) -> None:
    """Keep `base` (TF Serving's model base path) in step with LATEST until SIGTERM/SIGINT or `stop`.

    Each new LATEST is pulled and verified by `registry.pull` into a hidden folder inside `base` and
    renamed to `<version>/` in one step (TF Serving ignores names that are not numbers), so TF Serving
    only ever sees complete, verified versions. A version that fails is logged and left out; it is
    tried again when LATEST changes. Then `base` keeps the `keep_versions` highest versions (never the
    one LATEST names): what TF Serving's `model_version_policy { latest { num_versions: K } }` serves.
    """
    stop = stop or threading.Event()
    if install_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    os.makedirs(base, exist_ok=True)
    failed = None
    log.info("watching %s/%s; versions go to %s every %.1f s", model_uri, registry.LATEST, base, poll_seconds)
    while not stop.is_set():
        latest = None
        try:
            latest = registry.latest(model_uri)
            present = {int(d) for d in os.listdir(base) if d.isdigit()}
            if latest is None:
                log.debug("no LATEST yet")
            elif latest in present or latest == failed:
                pass
            elif present and latest < max(present):
                log.warning("LATEST %s is older than version %s in %s: left as it is", latest, max(present), base)
            else:
                # room first, so `base` never holds more than keep_versions (at 1: the served one and this one)
                prune_versions(base, keep_versions - 1, protect={max(present)} if present else ())
                card = registry.pull(model_uri, os.path.join(base, str(latest)), latest)
                failed = None
                log.info("version %s is in %s (%d files verified)", latest, base, len(card["files"]))
        except Exception as exc:  # noqa: BLE001 - keep watching; the failure is logged
            failed = latest
            log.error("could not pull LATEST %s of %s (tried again when LATEST changes): %s", latest, model_uri, exc)
        try:
            removed = prune_versions(base, keep_versions, protect={latest} if latest is not None else ())
            if removed:
                log.info("removed versions %s from %s (keeping %d)", removed, base, keep_versions)
        except OSError as exc:
            log.error("could not remove old versions from %s: %s", base, exc)
        stop.wait(poll_seconds)
    log.info("stopped watching %s", model_uri)
