"""The model registry: `models/<name>/<version>/` folders under the artifact root, and `LATEST`.

A version folder is a SavedModel (TF Serving layout: the version is the folder name) plus
`generator.keras` and `model.json`, the model card. `model.json` is the commit marker: it is written
last and holds the sha256 of every other file, so a version without it is not visible, and a copy
whose files do not match it is rejected. Version numbers are claimed with an atomic create of
`.claims/<n>` (O_EXCL locally, a conditional PUT on S3), so two pushers never get the same number.
`LATEST` holds the highest *blessed* committed version and is written after the version.
`.leases/<holder>.json` says which version a server (a serving replica) holds; it renews it every
LEASE_RENEW_SECONDS, and gc (components/gc.py) never deletes a version with a fresh lease.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import time
import uuid

from components import storage
from components.errors import UserError

log = logging.getLogger("registry")
MODEL_CARD = "model.json"
STRENGTH_BASE = "generator_strength0.keras"  # in a version with a strength pair: strength 0 (generator.keras: 1)
LATEST = "LATEST"
CLAIMS = ".claims"
LEASES = ".leases"
LEASE_RENEW_SECONDS = 300  # retention.lease_minutes (at least 15) leaves a holder several renewals to miss


class RegistryError(UserError):
    """A model or version is missing, incomplete, or its files do not match its model card."""


def model_root(artifact_root: str, name: str) -> str:
    if not name or "/" in name or name.startswith("."):
        raise RegistryError(f"model name {name!r}: use a plain folder name")
    return storage.join(artifact_root, "models", name)


def version_uri(root: str, version: int) -> str:
    return storage.join(root, str(int(version)))


def versions(root: str) -> list[int]:
    """Committed versions (their model card exists), ascending."""
    return [int(d) for d in sorted(storage.list_dirs(root), key=lambda d: int(d) if d.isdigit() else -1)
            if d.isdigit() and storage.exists(storage.join(root, d, MODEL_CARD))]


def latest(root: str) -> int | None:
    uri = storage.join(root, LATEST)
    if not storage.exists(uri):
        return None
    text = storage.read_text(uri).strip()
    if not text.isdigit():
        raise RegistryError(f"{uri}: expected a version number, found {text[:40]!r}")
    return int(text)


def card(version_folder: str) -> dict:
    uri = storage.join(version_folder, MODEL_CARD)
    if not storage.exists(uri):
        raise RegistryError(f"{version_folder}: no {MODEL_CARD} (not a committed model version)")
    return storage.read_json(uri)


def is_version_folder(uri: str) -> bool:
    return storage.exists(storage.join(uri, MODEL_CARD))


def resolve(model_uri: str, version: str | int | None = None) -> str:
    """The version folder a `--model-uri` (+ `--version N|latest`) names.

    `model_uri` is a version folder itself, or a `models/<name>` folder (then `version`, default latest).
    """
    if is_version_folder(model_uri):
        if version not in (None, "latest") and str(card(model_uri).get("version")) != str(version):
            raise RegistryError(f"{model_uri} is version {card(model_uri).get('version')}, not {version}")
        return model_uri
    if version in (None, "latest"):
        v = latest(model_uri)
        if v is None:
            found = versions(model_uri)
            hint = f" (unblessed versions there: {found})" if found else ""
            raise RegistryError(f"{model_uri}: no {LATEST} (no blessed model pushed yet){hint}")
    else:
        if not str(version).isdigit():
            raise RegistryError(f"version {version!r}: use a number or 'latest'")
        v = int(version)
    uri = version_uri(model_uri, v)
    if not is_version_folder(uri):
        raise RegistryError(f"{uri}: version {v} does not exist or is not committed")
    return uri


# ----------------------------------------------------------------------------- pushing

def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_hashes(local_dir: str) -> dict:
    """{relative path: sha256} of every file in a local version folder except the model card."""
    out = {}
    for base, _dirs, files in os.walk(local_dir):
        for name in files:
            rel = os.path.relpath(os.path.join(base, name), local_dir).replace(os.sep, "/")
            if rel != MODEL_CARD:
                out[rel] = sha256_file(os.path.join(base, name))
    return dict(sorted(out.items()))


def claim_version(root: str, owner: dict) -> int:
    """An unused version number, reserved atomically (one past every claimed or existing one)."""
    taken = [int(d) for d in storage.list_dirs(root) if d.isdigit()]
    claims_uri = storage.join(root, CLAIMS)
    taken += [int(storage.basename(f)) for f in (storage.list_files(claims_uri) if storage.exists(claims_uri) else [])
              if storage.basename(f).isdigit()]
    n = max(taken, default=0) + 1
    payload = json.dumps({**owner, "claim": uuid.uuid4().hex}).encode()
    for _ in range(1000):
        if storage.create_exclusive(storage.join(claims_uri, str(n)), payload):
            return n
        n += 1  # another pusher took it a moment ago
    raise RegistryError(f"{root}: could not claim a version number")


def commit_version(local_dir: str, root: str, version: int) -> str:
    """Publish a finished local version folder as `version`; the model card goes last.

    saved_model.pb goes just before it, after the variables, so a TF Serving that polls the folder
    never loads a graph whose variables are still uploading.
    """
    uri = version_uri(root, version)
    storage.publish_dir(local_dir, uri, MODEL_CARD, late=("saved_model.pb",))
    return uri


def _highest_blessed(root: str) -> int | None:
    return max((v for v in versions(root) if card(version_uri(root, v)).get("blessed")), default=None)


def update_latest(root: str) -> int | None:
    """Point LATEST at the highest committed blessed version; re-check after writing, so two pushers
    finishing together converge on the highest one."""
    best = _highest_blessed(root)
    for _ in range(10):
        if best is None:
            return None
        storage.write_text(storage.join(root, LATEST), f"{best}\n")
        now = _highest_blessed(root)
        if now == best:
            return best
        best = now
    return best


# ----------------------------------------------------------------------------- leases

def lease_holder() -> str:
    """A name for one server process: its lease file's name (unique: two replicas on one host differ)."""
    host = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def write_lease(model_uri: str, holder: str, version: int) -> str:
    """Record that `holder` serves `version` (in the models/<name> folder; a version folder's own parent, since
    nothing may be added to a committed version). gc takes the object's age as the lease's age."""
    root = model_uri
    if is_version_folder(model_uri):
        root = storage.normalize(model_uri).rstrip("/").rsplit("/", 1)[0]
    uri = storage.join(root, LEASES, f"{holder}.json")
    storage.write_json(uri, {"holder": holder, "version": int(version), "time": round(time.time(), 3)})
    return uri


def read_lease(uri: str) -> int | None:
    """The version a lease file names; None when it is unreadable (then it protects nothing)."""
    try:
        return int(storage.read_json(uri)["version"])
    except (storage.StorageError, KeyError, TypeError, ValueError):
        return None


# ----------------------------------------------------------------------------- pulling

def verify(local_dir: str, model_card: dict) -> None:
    """Every file the card lists is there with its sha256, and no file is there that it does not list."""
    expected = model_card.get("files") or {}
    if not expected:
        raise RegistryError(f"{local_dir}: the model card lists no files")
    actual = file_hashes(local_dir)
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    wrong = sorted(k for k in set(expected) & set(actual) if expected[k] != actual[k])
    if missing or extra or wrong:
        parts = [f"{label}: {', '.join(names[:5])}" for label, names in
                 (("sha256 mismatch", wrong), ("missing", missing), ("not in the model card", extra)) if names]
        raise RegistryError("checksum verification failed (" + "; ".join(parts) + ")")


def pull(model_uri: str, output: str, version: str | int | None = None, force: bool = False) -> dict:
    """Download a version to the local folder `output` and verify it; on any mismatch nothing is left.

    Returns the model card. The copy is built beside `output` and renamed into place once verified.
    """
    source = resolve(model_uri, version)
    model_card = card(source)
    dest = os.path.abspath(output)
    if os.path.exists(dest) and os.listdir(dest):
        if not force:
            raise RegistryError(f"{output} exists and is not empty (use --force to replace it)")
    tmp = storage.mkdtemp_public(f".{os.path.basename(dest)}.partial-", os.path.dirname(dest))
    try:
        storage.download_dir(source, tmp)
        verify(tmp, model_card)
        if os.path.exists(dest):
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, RegistryError):
            raise RegistryError(f"pull of {source} failed, nothing kept: {exc}") from None
        raise
    log.info("pulled %s (version %s) to %s; %d files verified", source, model_card.get("version"), dest,
             len(model_card["files"]))
    return model_card
