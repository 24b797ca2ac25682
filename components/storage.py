"""One storage layer for every component: local paths, file://, s3:// and gs:// URIs.

TensorFlow can read and write only local paths and gs:// (tf.io.gfile has no s3), so this module
*stages*: remote inputs are downloaded into a local cache keyed by their content, outputs are
written to a local directory and then published, with a commit marker written last, so a reader
that waits for the marker never sees a half-written artifact.

s3:// talks to AWS or any S3-compatible server: endpoint from AWS_ENDPOINT_URL, credentials from
the usual AWS variables (or ~/.aws). gs:// goes through gcsfs when it is installed.

Outages: every remote call is retried on transient failures (connection refused/reset, timeouts,
5xx, throttling) with exponential backoff, `storage_retries` times (config key; env
SRGAN_STORAGE_RETRIES, which child processes and Ray workers inherit), then fails with a
StorageError naming the URI. Ray Train's checkpoints use pyarrow's own S3 client with the same
budget as its retry strategy. Requests carry `srgan-pipeline/pid-<pid>` in their User-Agent, so a
server's access log attributes them to a process.

The staging cache is bounded ($SRGAN_CACHE_MAX_BYTES, least recently used out first). Entries in use are
marked with a shared flock (hold), which eviction (remove_unless_held) never breaks.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from typing import Callable, Iterable, Iterator

from components.errors import UserError

log = logging.getLogger("storage")
REMOTE_SCHEMES = ("s3", "gs")
RETRIES_ENV = "SRGAN_STORAGE_RETRIES"
CACHE_MAX_ENV = "SRGAN_CACHE_MAX_BYTES"  # the bound of the staging cache (cache_dir()/staged)
DEFAULT_CACHE_MAX_BYTES = 10 << 30     # 10 GiB
EVICTING = ".evicting-"                # what remove_unless_held is deleting: always safe to remove
DEFAULT_RETRIES = 6                    # waits 0.5+1+2+4+8+8 s: rides out a ~20 s outage
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 8.0  # seconds


class StorageError(UserError):
    """A storage operation failed; the message names the URI and what went wrong."""


# ----------------------------------------------------------------------------- URI handling

def split_uri(uri: str) -> tuple[str, str]:
    """('local', '/abs/path') | ('s3', 'bucket/key') | ('gs', 'bucket/key')."""
    from fsspec.core import split_protocol

    uri = os.fspath(uri)
    scheme, rest = split_protocol(uri)
    scheme = (scheme or "file").lower()
    if scheme == "file":
        if "://" not in uri:
            return "local", os.path.abspath(os.path.expanduser(uri))
        return "local", os.path.abspath(rest if rest.startswith("/") else "/" + rest)
    if scheme in REMOTE_SCHEMES:
        rest = rest.strip("/")
        if not rest or rest.startswith("/"):
            raise StorageError(f"{uri}: a {scheme}:// URI needs a bucket name")
        return scheme, rest
    raise StorageError(f"{uri}: unsupported URI scheme {scheme!r} (use a local path, file://, s3:// or gs://)")


def is_local(uri: str) -> bool:
    return split_uri(uri)[0] == "local"


def local_path(uri: str) -> str:
    scheme, path = split_uri(uri)
    if scheme != "local":
        raise StorageError(f"{uri}: not a local path")
    return path


def normalize(uri: str) -> str:
    """Canonical form: absolute local path, or scheme://bucket/key without trailing slash."""
    scheme, path = split_uri(uri)
    return path if scheme == "local" else f"{scheme}://{path}"


def join(uri: str, *parts: str) -> str:
    base = normalize(uri)
    for part in parts:
        part = str(part).strip("/")
        if part:
            base = base.rstrip("/") + "/" + part
    return base


def basename(uri: str) -> str:
    return normalize(uri).rstrip("/").rsplit("/", 1)[-1]


def relpath(uri: str, root: str) -> str:
    """Path of `uri` below `root`, with '/' separators."""
    uri, root = normalize(uri), normalize(root).rstrip("/")
    if uri == root:
        return ""
    if not uri.startswith(root + "/"):
        raise StorageError(f"{uri} is not below {root}")
    return uri[len(root) + 1:]


# ----------------------------------------------------------------------------- retries and fault points

def configure(retries: int | None = None) -> None:
    """Set the retry budget for this process and the processes it starts (they inherit the env)."""
    if retries is not None:
        if retries < 0:
            raise StorageError(f"storage_retries must be >= 0, got {retries}")
        os.environ[RETRIES_ENV] = str(int(retries))
        _FILESYSTEMS.clear()


def _env_whole_number(name: str, default: int, what: str) -> int:
    """A non-negative whole number from the environment variable `name`, else `default`."""
    value = os.environ.get(name, "")
    try:
        return max(0, int(value)) if value.strip() else default
    except ValueError:
        raise StorageError(f"{name}={value!r}: expected a whole number of {what}") from None


def retry_budget() -> int:
    return _env_whole_number(RETRIES_ENV, DEFAULT_RETRIES, "retries")


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number `attempt` (0-based)."""
    return min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** attempt)


_fault_hook: Callable[[str, dict], None] | None = None


def set_fault_hook(hook: Callable[[str, dict], None] | None):
    """Tests: call hook(name, info) at named points of multi-object operations; returns the previous hook.

    Points: 'publish.uploaded' (index = objects uploaded so far), 'download.fetched' (index),
    'write' (before a single-object write), 'gc.deleted' (index = objects components.gc has deleted so far).
    """
    global _fault_hook
    previous, _fault_hook = _fault_hook, hook
    return previous


def fault_point(name: str, **info) -> None:
    if _fault_hook is not None:
        _fault_hook(name, info)


_TRANSIENT_NAMES = {"EndpointConnectionError", "ConnectionClosedError", "ConnectTimeoutError", "ReadTimeoutError",
                    "ClientConnectorError", "ClientConnectionError", "ServerDisconnectedError", "ClientOSError",
                    "ClientPayloadError", "FSTimeoutError", "IncompleteRead", "ResponseStreamingError",
                    "HTTPClientError", "ProxyConnectionError"}
_TRANSIENT_CODES = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling",
                    "ThrottlingException", "RequestTimeTooSkewed"}


def _transient(exc: BaseException | None) -> bool:
    """Worth retrying: the server was unreachable, timed out, or answered 5xx / throttling."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (ConnectionError, TimeoutError)) or type(exc).__name__ in _TRANSIENT_NAMES:
            return True
        response = getattr(exc, "response", None)
        if isinstance(response, dict):
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            if status >= 500 or response.get("Error", {}).get("Code") in _TRANSIENT_CODES:
                return True
        exc = exc.__cause__ or exc.__context__
    return False


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


def _fail(uri: str, action: str, exc: BaseException) -> StorageError:
    if isinstance(exc, FileNotFoundError):
        return StorageError(f"{uri}: not found ({action})")
    if isinstance(exc, PermissionError):
        return StorageError(f"{uri}: permission denied ({action}): {exc}")
    return StorageError(f"{uri}: {action} failed: {_describe(exc)}")


def _call(uri: str, action: str, fn, *args, **kwargs):
    """fn(*args, **kwargs), retried with backoff on transient failures; any failure -> StorageError."""
    budget = retry_budget()
    started = time.monotonic()
    for attempt in range(budget + 1):
        try:
            return fn(*args, **kwargs)
        except StorageError:
            raise
        except Exception as exc:  # botocore/aiohttp errors have no common base worth naming
            if not _transient(exc):
                raise _fail(uri, action, exc) from exc
            if attempt == budget:
                endpoint = _endpoint() if split_uri(uri)[0] == "s3" else None
                raise StorageError(
                    f"{uri}: {action} failed after {attempt + 1} attempts over {time.monotonic() - started:.1f} s "
                    f"({_describe(exc)}); is the object store{' at ' + endpoint if endpoint else ''} reachable? "
                    f"(storage_retries={budget})") from exc
            wait = backoff(attempt)
            log.warning("%s: %s failed (%s); retry %d/%d in %.1f s", uri, action, _describe(exc),
                        attempt + 1, budget, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


# ----------------------------------------------------------------------------- filesystems

_FILESYSTEMS: dict = {}


def _endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3") or None


def _filesystem(scheme: str):
    """One filesystem object per process and scheme. Remote listings are never cached (another process
    may commit at any time), so nothing needs invalidating."""
    key = (scheme, os.getpid(), _endpoint())
    fs = _FILESYSTEMS.get(key)
    if fs is not None:
        return fs
    import fsspec

    if scheme == "local":
        fs = fsspec.filesystem("file")
    elif scheme == "s3":
        try:
            import s3fs
        except ImportError as exc:  # pragma: no cover - s3fs is a pinned dependency
            raise StorageError("s3:// needs the s3fs package") from exc
        # No region in client_kwargs: it makes s3fs send a LocationConstraint that some servers reject.
        # Retries: _call is the one retry layer (botocore's and s3fs's own would multiply the budget).
        fs = s3fs.S3FileSystem(
            endpoint_url=_endpoint(), skip_instance_cache=True, use_listings_cache=False,
            config_kwargs={"user_agent_extra": f"srgan-pipeline/pid-{os.getpid()}", "connect_timeout": 10,
                           "read_timeout": 120, "retries": {"total_max_attempts": 1}})
        fs.retries = 1
    elif scheme == "gs":
        try:
            import gcsfs  # noqa: F401
        except ImportError as exc:
            raise StorageError("gs:// needs the gcsfs package: pip install gcsfs") from exc
        fs = fsspec.filesystem("gcs")
    else:
        raise StorageError(f"unsupported scheme {scheme}")
    _FILESYSTEMS[key] = fs
    return fs


def _fs_path(uri: str):
    scheme, path = split_uri(uri)
    return scheme, _filesystem(scheme), path


def _to_uri(scheme: str, path: str) -> str:
    return os.path.abspath(path) if scheme == "local" else f"{scheme}://{path.strip('/')}"


# ----------------------------------------------------------------------------- reads

def exists(uri: str) -> bool:
    scheme, fs, path = _fs_path(uri)
    return _call(uri, "exists", fs.exists, path)


def isdir(uri: str) -> bool:
    scheme, fs, path = _fs_path(uri)
    return _call(uri, "isdir", fs.isdir, path)


def read_bytes(uri: str) -> bytes:
    scheme, fs, path = _fs_path(uri)
    return _call(uri, "read", fs.cat_file, path)


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def read_json(uri: str):
    text = read_text(uri)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise StorageError(f"{uri}: not valid JSON: {exc}") from exc


def _find(uri: str) -> dict:
    """{path: info} of every file below a folder (one LIST on object stores), or of the file itself."""
    scheme, fs, path = _fs_path(uri)
    found = _call(uri, "list", fs.find, path, detail=True)
    return {p: i for p, i in found.items() if i.get("type", "file") != "directory"}


def list_files(uri: str, recursive: bool = True) -> list[str]:
    """Every file below a directory URI (sorted), or the files a glob pattern matches.

    A glob (`*`, `?`, `[`) matches like the shell, `**` across folders. A single file URI lists itself.
    """
    return sorted(list_files_info(uri, recursive))


def list_files_info(uri: str, recursive: bool = True) -> dict[str, dict]:
    """list_files with what the listing says of each file, {uri: info} (size; on object stores the
    checksum too, which `content_md5(uri, info)` uses): no request per file."""
    scheme, fs, path = _fs_path(uri)
    if any(ch in path for ch in "*?["):
        found = {p: i for p, i in _call(uri, "list", fs.glob, path, detail=True).items()
                 if i.get("type") != "directory"}
    elif recursive:
        found = _find(uri)
    else:
        found = {i["name"]: i for i in _call(uri, "list", fs.ls, path, detail=True) if i["type"] == "file"} \
            if _call(uri, "list", fs.isdir, path) else _find(uri)
    if not found:
        raise StorageError(f"{uri}: no such file, folder or matching files")
    return {_to_uri(scheme, p): i for p, i in found.items()}


def modified_time(info: dict) -> float | None:
    """When an object was last written (epoch seconds), from its listing entry: the local mtime, or the object
    store's LastModified (the server's clock). None when the entry does not say."""
    import datetime

    for key in ("mtime", "LastModified", "updated"):
        value = info.get(key)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                value = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
        if isinstance(value, datetime.datetime):
            return (value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)).timestamp()
    return None


def list_dirs(uri: str) -> list[str]:
    """Names of the folders directly inside a folder URI (sorted); [] when it does not exist."""
    scheme, fs, path = _fs_path(uri)

    def dirs():
        try:
            entries = fs.ls(path, detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [i["name"].rstrip("/").rsplit("/", 1)[-1] for i in entries if i["type"] == "directory"]
    return sorted(_call(uri, "list", dirs))


def _server_md5(scheme: str, info: dict) -> str | None:
    """The md5 an object store reports for an object, when it has one (from a LIST or HEAD, no download)."""
    if scheme == "s3":
        etag = str(info.get("ETag", "")).strip('"')
        if len(etag) == 32 and "-" not in etag:  # single-part upload: the ETag is the md5
            return etag
    elif scheme == "gs" and info.get("md5Hash"):
        import base64
        return base64.b64decode(info["md5Hash"]).hex()
    return None


def content_md5(uri: str, info: dict | None = None) -> str:
    """Hex md5 of an object's bytes: the server's checksum when it has one (from `info`, a listing's
    entry, else a HEAD; no download), else computed."""
    scheme, fs, path = _fs_path(uri)
    if scheme != "local":
        md5 = (info and _server_md5(scheme, info)) or _server_md5(scheme, _call(uri, "checksum", fs.info, path))
        if md5:
            return md5

    def compute():
        h = hashlib.md5()
        with fs.open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    return _call(uri, "checksum", compute)


# ----------------------------------------------------------------------------- writes

def _replace_local(path: str, fill) -> None:
    """Write a local file beside its destination with fill(tmp_path), then rename: readers see old or new."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        fill(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _write_synced(tmp: str, data: bytes) -> None:
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_bytes(uri: str, data: bytes) -> None:
    """Atomic for readers: local files are written beside and renamed; an object PUT is atomic."""
    scheme, fs, path = _fs_path(uri)
    fault_point("write", uri=uri)
    if scheme == "local":
        _call(uri, "write", _replace_local, path, lambda tmp: _write_synced(tmp, data))
    else:
        _call(uri, "write", fs.pipe_file, path, data)


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def write_json(uri: str, obj) -> None:
    write_text(uri, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def create_exclusive(uri: str, data: bytes) -> bool:
    """Write `uri` only if it does not exist yet; True when this call created it.

    Kept by hand (fsspec has no atomic create): local files use O_EXCL; s3:// uses a conditional PUT
    (`If-None-Match: *`, honoured by AWS S3 and SeaweedFS), so of two writers racing for one key
    exactly one wins. gs:// falls back to check-then-put (safe against sequential writers only).
    A retried conditional PUT whose first attempt did land reads back as "exists": the payload then
    tells whether it was ours.
    """
    scheme, fs, path = _fs_path(uri)
    if scheme == "local":
        def create():
            os.makedirs(os.path.dirname(path), exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return True
        return _call(uri, "create", create)
    if scheme == "s3":
        bucket, _, key = path.partition("/")

        def create():
            try:
                fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
            except FileExistsError:
                return False
            except OSError as exc:
                # 412 PreconditionFailed (the key exists) or 409 (a concurrent conditional write won)
                if "pre-condition" in str(exc).lower() or "conflict" in str(exc).lower():
                    return False
                raise
            return True
        created = _call(uri, "create", create)
        if not created and _call(uri, "read", fs.cat_file, path) == data:
            return True  # our own earlier attempt landed before its answer was lost
        return created

    def check_then_put():
        if fs.exists(path):
            return False
        fs.pipe_file(path, data)
        return True
    return _call(uri, "create", check_then_put)


def delete(uri: str, recursive: bool = False) -> None:
    scheme, fs, path = _fs_path(uri)

    def rm():
        if fs.exists(path):
            fs.rm(path, recursive=recursive)
    _call(uri, "delete", rm)


def delete_files(uris: list[str]) -> None:
    """Delete these files (of one scheme; ones already gone are fine): one bulk request per 1000 on object
    stores, so a big folder costs a few requests rather than one per object. Empty local folders stay."""
    if not uris:
        return
    scheme, fs, _ = _fs_path(uris[0])
    paths = [_fs_path(u)[2] for u in uris]
    if scheme == "local":
        def remove(p):
            with contextlib.suppress(FileNotFoundError):
                os.remove(p)
        for uri, path in zip(uris, paths):
            _call(uri, "delete", remove, path)
        return
    _call(uris[0], "delete", fs.rm, paths)


def prune_empty_dirs(uri: str) -> None:
    """Remove the empty folders at and below a folder (after its files were deleted). SeaweedFS keeps a folder
    entry when its last object goes (a listing would show it for ever): a DELETE of "<folder>/" removes it when
    empty and does nothing otherwise, as on AWS S3, where no such key exists."""
    scheme, fs, path = _fs_path(uri)
    if scheme == "local":
        for base, _dirs, _files in os.walk(path, topdown=False):
            with contextlib.suppress(OSError):  # not empty (a file written meanwhile stays) or already gone
                os.rmdir(base)
    elif scheme == "s3":
        bucket = path.partition("/")[0]

        def below(p: str) -> list[str]:  # folders first-deepest; a flat (recursive) listing shows no empty ones
            try:
                entries = fs.ls(p, detail=True)
            except FileNotFoundError:
                return []
            return [d for i in entries if i["type"] == "directory" for d in below(i["name"]) + [i["name"]]]
        for d in _call(uri, "list", below, path) + [path]:
            _call(uri, "delete", fs.call_s3, "delete_object", Bucket=bucket, Key=d.partition("/")[2].rstrip("/") + "/")


def download_file(uri: str, local_file: str) -> None:
    """Copy one file at `uri` to a local path (parents created)."""
    scheme, fs, path = _fs_path(uri)
    os.makedirs(os.path.dirname(os.path.abspath(local_file)), exist_ok=True)
    if scheme == "local":
        _call(uri, "download", shutil.copyfile, path, local_file)
    else:
        _call(uri, "download", fs.get_file, path, local_file)


def upload_file(local_file: str, uri: str) -> None:
    scheme, fs, path = _fs_path(uri)
    if scheme == "local":
        _call(uri, "upload", _replace_local, path, lambda tmp: shutil.copyfile(local_file, tmp))
    else:
        _call(uri, "upload", fs.put_file, local_file, path)


def _counting(point: str, uri: str):
    """An fsspec callback that calls fault_point(point) after each file of a batch copy."""
    from fsspec.callbacks import Callback

    return Callback(hooks={"fault": lambda size, value, **_: fault_point(point, uri=uri, index=value, total=size)})


def download_dir(uri: str, local_dir: str) -> list[str]:
    """Copy every file below the folder `uri` into `local_dir`: one LIST, then one GET per file, each
    retried on its own (an outage mid-way costs one file, not the whole copy). Returns the relative paths."""
    scheme, fs, path = _fs_path(uri)
    rels = []
    for index, p in enumerate(sorted(_find(uri)), 1):
        src = _to_uri(scheme, p)
        rel = relpath(src, uri)
        download_file(src, os.path.join(local_dir, rel))
        rels.append(rel)
        fault_point("download.fetched", uri=uri, index=index)
    return rels


def publish_dir(local_dir: str, uri: str, commit_marker: str, move: bool = False, late: tuple = ()) -> None:
    """Copy a finished local directory to `uri`, with `commit_marker` (a file inside it) copied last.

    Readers treat the artifact as present only once the marker exists. Stale files of an earlier,
    interrupted publish are removed first. `move` lets a local publish rename instead of copy.
    `late`: relative paths uploaded after all others (in that order), just before the marker.
    An outage mid-way leaves files without the marker: invisible to readers, removed by the next publish.
    """
    marker_src = os.path.join(local_dir, commit_marker)
    if not os.path.isfile(marker_src):
        raise StorageError(f"{local_dir}: commit marker {commit_marker} is missing")
    scheme, fs, dest = _fs_path(uri)
    if exists(join(uri, commit_marker)):
        raise StorageError(f"{uri}: already committed; refusing to overwrite")
    if exists(uri):
        delete(uri, recursive=True)
    if scheme == "local":
        # Same filesystem: build the whole tree beside it, then one rename makes it visible.
        parent = os.path.dirname(dest.rstrip("/"))
        os.makedirs(parent, exist_ok=True)
        if move and os.stat(local_dir).st_dev == os.stat(parent).st_dev:
            os.replace(local_dir, dest)
            return
        tmp = tempfile.mkdtemp(prefix=".publish-", dir=parent)
        shutil.rmtree(tmp)
        shutil.copytree(local_dir, tmp)
        os.replace(tmp, dest)
        return
    rels = sorted(os.path.relpath(os.path.join(root, name), local_dir).replace(os.sep, "/")
                  for root, _dirs, files in os.walk(local_dir) for name in files)
    bulk = [r for r in rels if r != commit_marker and r not in late]
    # fsspec's batch put uploads the bulk concurrently; a retry re-puts all of it (idempotent)
    _call(uri, "upload", lambda: fs.put([os.path.join(local_dir, r) for r in bulk], [f"{dest}/{r}" for r in bulk],
                                        callback=_counting("publish.uploaded", uri)))
    done = len(bulk)
    for rel in [r for r in late if r in rels] + [commit_marker]:
        upload_file(os.path.join(local_dir, rel), join(uri, rel))
        done += 1
        fault_point("publish.uploaded", uri=uri, index=done, total=len(rels))


# ----------------------------------------------------------------------------- cache entries in use

def hold(entry: str) -> int:
    """Mark the cache entry `entry` (a path) as in use by this process until release(fd) or the process ends:
    a shared flock on `<entry>.lock`, which remove_unless_held respects. Waits only while an evictor is
    removing the entry; the entry may not exist (yet, or any more) when this returns: look after taking it."""
    lock = entry + ".lock"
    os.makedirs(os.path.dirname(lock), exist_ok=True)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        fcntl.flock(fd, fcntl.LOCK_SH)
        if _same_file(fd, lock):
            return fd
        os.close(fd)  # an evictor unlinked the lock file while we waited: take the new one


def release(fd: int) -> None:
    os.close(fd)  # drops the flock


def remove_unless_held(entry: str, belongings: Iterable[str] = ()) -> bool:
    """Delete the cache entry `entry` and `belongings` (other paths of it) unless a process holds it
    (hold()); True when removed. Both are renamed aside under the exclusive lock, so a reader that takes
    the lock next finds the entry whole or absent, never half deleted."""
    lock = entry + ".lock"
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except FileNotFoundError:  # its folder is gone
        return False
    doomed = []
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # in use
        if not _same_file(fd, lock):
            return False  # another evictor removed it meanwhile
        for path in [entry, *belongings]:
            aside = os.path.join(os.path.dirname(path), f"{EVICTING}{uuid.uuid4().hex[:8]}")
            with contextlib.suppress(FileNotFoundError):
                os.replace(path, aside)
                doomed.append(aside)
        os.unlink(lock)
    finally:
        os.close(fd)
    for path in doomed:
        remove_path(path)
    return True


def _same_file(fd: int, path: str) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def remove_path(path: str) -> None:
    """Delete a file or a folder tree; nothing when it is gone."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


# ----------------------------------------------------------------------------- staging for TensorFlow

def cache_dir() -> str:
    return os.environ.get("SRGAN_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "srgan-pipeline")


def cache_max_bytes() -> int:
    """The staging cache's bound ($SRGAN_CACHE_MAX_BYTES, else 10 GiB)."""
    return _env_whole_number(CACHE_MAX_ENV, DEFAULT_CACHE_MAX_BYTES, "bytes")


_STAGED_HELD: dict[str, int] = {}  # staged entries this process has used: held until it exits (TensorFlow
#                                    reads them lazily, e.g. a dataset's shards every epoch)


def stage_in(uri: str, pattern: str | None = None) -> str:
    """A local path holding the file or directory at `uri` (the path itself when already local).

    Remote content is found with one LIST (a file: LIST + HEAD) and lands in a cache keyed by the
    server's checksums (ETag/md5) and relative paths, so a repeated call - in this run or a later one,
    in any process on this machine - downloads nothing. `pattern` (fnmatch on the path relative to
    `uri`) stages only the files of a folder that will be read.
    Kept by hand rather than fsspec's filecache: that one keys by path (a rewritten object with the same
    name is served stale) and hands out single files, while TensorFlow needs whole folders under their names.
    The cache is bounded (evict_staged): an entry stays held by the process that staged or used it until
    that process ends, so it is never deleted under a reader.
    """
    if is_local(uri):
        path = local_path(uri)
        if not os.path.exists(path):
            raise StorageError(f"{uri}: not found")
        return path
    scheme, fs, path = _fs_path(uri)
    entries = _find(uri)
    if not entries:
        raise StorageError(f"{uri}: not found (nothing to stage)")
    single = list(entries) == [path]
    files = []
    for p, info in sorted(entries.items()):
        rel = "" if single else p[len(path) + 1:]
        if pattern is None or fnmatch.fnmatch(rel, pattern):
            tag = _server_md5(scheme, info) or str(info.get("ETag") or info.get("etag") or "")
            if not tag:
                tag = content_md5(_to_uri(scheme, p))
            files.append((p, rel, tag, info.get("size")))
    key = hashlib.sha256(json.dumps([(rel, tag, size) for _p, rel, tag, size in files]).encode()).hexdigest()[:24]
    name = basename(uri)
    entry = os.path.join(cache_dir(), "staged", key)
    target = os.path.join(entry, name)
    held = _STAGED_HELD.get(entry)
    if held is None or not _same_file(held, entry + ".lock"):  # not yet, or the cache was deleted under us
        if held is not None:
            release(held)
        _STAGED_HELD[entry] = hold(entry)
    marker = os.path.join(entry, ".complete")
    if os.path.exists(marker):
        with contextlib.suppress(OSError):
            os.utime(marker)  # its last use: what the least-recently-used eviction orders by
        return target
    # room first, as the serving cache does: otherwise the cache holds one entry too many until the eviction below
    evict_staged(keep=entry, incoming=sum(int(size or 0) for *_rest, size in files))
    tmp = tempfile.mkdtemp(prefix=".staging-", dir=_ensure(os.path.join(cache_dir(), "staged")))
    try:
        dsts = [os.path.join(tmp, name) if single else os.path.join(tmp, name, rel) for _p, rel, _t, _s in files]
        for d in dsts:
            os.makedirs(os.path.dirname(d), exist_ok=True)
        if files:
            _call(uri, "download", lambda: fs.get([p for p, *_ in files], dsts,
                                                  callback=_counting("download.fetched", uri)))
        with open(os.path.join(tmp, ".complete"), "w") as fh:
            fh.write(uri)
        try:
            os.replace(tmp, entry)
        except OSError:  # another process staged the same content first
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    evict_staged(keep=entry)
    return target


def evict_staged(keep: str, incoming: int = 0) -> list[str]:
    """Delete the least recently used entries of the staging cache until it holds at most
    cache_max_bytes() - `incoming` (the bytes about to be downloaded); never `keep` (the entry just fetched)
    nor an entry a process holds. Returns the entries removed; warns (after a download) when what is in use
    alone exceeds the bound."""
    root = os.path.join(cache_dir(), "staged")
    if not os.path.isdir(root):
        return []
    entries = []
    for name in os.listdir(root):
        path = os.path.join(root, name)
        if name.startswith(EVICTING):
            remove_path(path)  # left by an evictor that was killed mid-way
        elif not name.startswith(".") and os.path.isdir(path):  # not .staging-* (downloads in progress), *.lock
            entries.append((_last_used(path), path, _tree_bytes(path)))
    bound = cache_max_bytes() - incoming
    total = sum(size for _t, _p, size in entries)
    removed = []
    for _used, path, size in sorted(entries):
        if total <= bound:
            break
        if path != keep and remove_unless_held(path):
            total -= size
            removed.append(path)
    if total > bound and not incoming:
        log.warning("the staging cache %s holds %d bytes, over %s=%d: the rest is in use", root, total,
                    CACHE_MAX_ENV, bound)
    return removed


def _last_used(entry: str) -> float:
    for path in (os.path.join(entry, ".complete"), entry):
        with contextlib.suppress(OSError):
            return os.stat(path).st_mtime
    return 0.0


def _tree_bytes(path: str) -> int:
    total = 0
    for base, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(base, name)).st_size
    return total


def mkdtemp_public(prefix: str, parent: str) -> str:
    """A new temp folder in `parent` that is to become visible to others (published or renamed into
    place): mkdtemp makes it private (0700); this gives it the permissions the umask allows."""
    tmp = tempfile.mkdtemp(prefix=prefix, dir=_ensure(parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    return tmp


def _ensure(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    return path


@contextlib.contextmanager
def staged_output(uri: str, commit_marker: str) -> Iterator[str]:
    """Yield a local directory to write an artifact into; on success publish it to `uri`.

    The body must write `commit_marker` into the directory; it is published last.
    """
    if is_local(uri):
        parent = os.path.dirname(local_path(uri).rstrip("/"))
    else:
        parent = os.path.join(cache_dir(), "outgoing")
    tmp = mkdtemp_public(".staging-", parent)
    try:
        yield tmp
        publish_dir(tmp, uri, commit_marker, move=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def pyarrow_filesystem(uri: str):
    """(pyarrow.fs.FileSystem, path) for Ray Train's RunConfig(storage_filesystem=..., storage_path=...).

    s3:// gets pyarrow's own S3 client with its retry strategy set from the same budget (Ray Train
    uploads checkpoints through it; wrapping it would hide what it retries): see arrow_attempts.
    """
    import pyarrow.fs as pafs

    scheme, path = split_uri(uri)
    if scheme == "local":
        return pafs.LocalFileSystem(), path
    if scheme == "s3":
        from urllib.parse import urlsplit

        endpoint = _endpoint()
        region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
        options = {}
        if endpoint:
            parts = urlsplit(endpoint)
            options.update(endpoint_override=parts.netloc, scheme=parts.scheme or "https")
            region = region or "us-east-1"
        elif not region:
            region = _call(uri, "locate bucket", pafs.resolve_s3_region, path.split("/", 1)[0])
        return pafs.S3FileSystem(region=region, connect_timeout=10, request_timeout=120,
                                 retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=arrow_attempts()),
                                 **options), path
    return pafs.PyFileSystem(pafs.FSSpecHandler(_filesystem(scheme))), path


def arrow_attempts() -> int:
    """Attempts for pyarrow's S3 retry strategy: 1 + the retry budget. Its AWS standard backoff grows
    faster than _call's (measured against a closed port: 4 attempts fail after 2.1 s, 7 after 42 s), so the
    same budget rides out at least as long an outage for checkpoints as for the rest."""
    return 1 + retry_budget()


def matches_extension(uri: str, extensions) -> bool:
    name = basename(uri).lower()
    return any(fnmatch.fnmatch(name, "*" + ext.lower()) for ext in extensions)
