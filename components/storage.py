"""One storage layer for every component: local paths, file://, s3:// and gs:// URIs.

TensorFlow can read and write only local paths and gs:// (tf.io.gfile has no s3), so this module
*stages*: remote inputs are downloaded into a local cache keyed by their content, outputs are
written to a local directory and then published, with a commit marker written last, so a reader
that waits for the marker never sees a half-written artifact.

s3:// talks to AWS or any S3-compatible server: endpoint from AWS_ENDPOINT_URL, credentials from
the usual AWS variables (or ~/.aws). gs:// goes through gcsfs when it is installed.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from typing import Iterator

from components.errors import UserError

REMOTE_SCHEMES = ("s3", "gs")


class StorageError(UserError):
    """A storage operation failed; the message names the URI and what went wrong."""


# ----------------------------------------------------------------------------- URI handling

def split_uri(uri: str) -> tuple[str, str]:
    """('local', '/abs/path') | ('s3', 'bucket/key') | ('gs', 'bucket/key')."""
    uri = os.fspath(uri)
    if "://" not in uri:
        return "local", os.path.abspath(os.path.expanduser(uri))
    scheme, rest = uri.split("://", 1)
    scheme = scheme.lower()
    if scheme == "file":
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


# ----------------------------------------------------------------------------- filesystems

def _filesystem(scheme: str):
    import fsspec

    if scheme == "local":
        return fsspec.filesystem("file")
    if scheme == "s3":
        try:
            import s3fs  # noqa: F401
        except ImportError as exc:  # pragma: no cover - s3fs is a pinned dependency
            raise StorageError("s3:// needs the s3fs package") from exc
        endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
        # No region in client_kwargs: it makes s3fs send a LocationConstraint that some servers reject.
        return fsspec.filesystem("s3", endpoint_url=endpoint or None, skip_instance_cache=False)
    if scheme == "gs":
        try:
            import gcsfs  # noqa: F401
        except ImportError as exc:
            raise StorageError("gs:// needs the gcsfs package: pip install gcsfs") from exc
        return fsspec.filesystem("gcs")
    raise StorageError(f"unsupported scheme {scheme}")


def _fs_path(uri: str):
    scheme, path = split_uri(uri)
    fs = _filesystem(scheme)
    if scheme != "local":
        fs.invalidate_cache()  # listings may be stale: another process may have committed since
    return scheme, fs, path


def _wrap(uri: str, action: str):
    """Context: turn low-level storage exceptions into one clear StorageError."""
    @contextlib.contextmanager
    def ctx():
        try:
            yield
        except StorageError:
            raise
        except FileNotFoundError as exc:
            raise StorageError(f"{uri}: not found ({action})") from exc
        except PermissionError as exc:
            raise StorageError(f"{uri}: permission denied ({action}): {exc}") from exc
        except Exception as exc:  # botocore/aiohttp errors have no common base worth naming
            raise StorageError(f"{uri}: {action} failed: {type(exc).__name__}: {exc}") from exc
    return ctx()


# ----------------------------------------------------------------------------- reads

def exists(uri: str) -> bool:
    scheme, fs, path = _fs_path(uri)
    with _wrap(uri, "exists"):
        return fs.exists(path)


def isdir(uri: str) -> bool:
    scheme, fs, path = _fs_path(uri)
    with _wrap(uri, "isdir"):
        return fs.isdir(path)


def read_bytes(uri: str) -> bytes:
    scheme, fs, path = _fs_path(uri)
    with _wrap(uri, "read"):
        with fs.open(path, "rb") as f:
            return f.read()


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def read_json(uri: str):
    text = read_text(uri)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise StorageError(f"{uri}: not valid JSON: {exc}") from exc


def list_files(uri: str, recursive: bool = True) -> list[str]:
    """Every file below a directory URI (sorted), or the files a glob pattern matches.

    A glob (`*`, `?`, `[`) matches like the shell, `**` across folders. A single file URI lists itself.
    """
    scheme, fs, path = _fs_path(uri)
    prefix = "" if scheme == "local" else f"{scheme}://"
    with _wrap(uri, "list"):
        if any(ch in path for ch in "*?["):
            found = [p for p in fs.glob(path) if not fs.isdir(p)]
        elif fs.isdir(path):
            if recursive:
                found = fs.find(path)
            else:
                found = [i["name"] for i in fs.ls(path, detail=True) if i["type"] == "file"]
        elif fs.exists(path):
            found = [path]
        else:
            raise StorageError(f"{uri}: no such file, folder or matching files")
    out = []
    for p in found:
        p = p if scheme == "local" else p.strip("/")
        out.append(prefix + p if scheme != "local" else os.path.abspath(p))
    return sorted(out)


def list_dirs(uri: str) -> list[str]:
    """Names of the folders directly inside a folder URI (sorted); [] when it does not exist."""
    scheme, fs, path = _fs_path(uri)
    with _wrap(uri, "list"):
        if not fs.exists(path) or not fs.isdir(path):
            return []
        return sorted(i["name"].rstrip("/").rsplit("/", 1)[-1] for i in fs.ls(path, detail=True)
                      if i["type"] == "directory")


def content_md5(uri: str) -> str:
    """Hex md5 of an object's bytes: the server's checksum when it has one (no download), else computed."""
    scheme, fs, path = _fs_path(uri)
    with _wrap(uri, "checksum"):
        if scheme == "s3":
            etag = str(fs.info(path).get("ETag", "")).strip('"')
            if len(etag) == 32 and "-" not in etag:  # single-part upload: the ETag is the md5
                return etag
        elif scheme == "gs":
            import base64
            md5 = fs.info(path).get("md5Hash")
            if md5:
                return base64.b64decode(md5).hex()
        h = hashlib.md5()
        with fs.open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()


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
    with _wrap(uri, "write"):
        if scheme == "local":
            _replace_local(path, lambda tmp: _write_synced(tmp, data))
        else:
            fs.pipe_file(path, data)


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def write_json(uri: str, obj) -> None:
    write_text(uri, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def create_exclusive(uri: str, data: bytes) -> bool:
    """Write `uri` only if it does not exist yet; True when this call created it.

    Atomic: local files use O_EXCL; s3:// uses a conditional PUT (`If-None-Match: *`, honoured by
    AWS S3 and SeaweedFS), so of two writers racing for one key exactly one wins. gs:// falls back
    to check-then-put (safe against sequential writers only).
    """
    scheme, fs, path = _fs_path(uri)
    with _wrap(uri, "create"):
        if scheme == "local":
            os.makedirs(os.path.dirname(path), exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return True
        if scheme == "s3":
            bucket, _, key = path.partition("/")
            try:
                fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
            except OSError as exc:
                # 412 PreconditionFailed (the key exists) or 409 (a concurrent conditional write won)
                if "pre-condition" in str(exc).lower() or "conflict" in str(exc).lower():
                    return False
                raise
            fs.invalidate_cache(path)
            return True
        if fs.exists(path):
            return False
        fs.pipe_file(path, data)
        return True


def delete(uri: str, recursive: bool = False) -> None:
    scheme, fs, path = _fs_path(uri)
    with _wrap(uri, "delete"):
        if fs.exists(path):
            fs.rm(path, recursive=recursive)


def download_file(uri: str, local_file: str) -> None:
    """Copy one file at `uri` to a local path (parents created)."""
    scheme, fs, path = _fs_path(uri)
    os.makedirs(os.path.dirname(os.path.abspath(local_file)), exist_ok=True)
    with _wrap(uri, "download"):
        if scheme == "local":
            shutil.copyfile(path, local_file)
        else:
            fs.get_file(path, local_file)


def upload_file(local_file: str, uri: str) -> None:
    scheme, fs, path = _fs_path(uri)
    with _wrap(uri, "upload"):
        if scheme == "local":
            _replace_local(path, lambda tmp: shutil.copyfile(local_file, tmp))
        else:
            fs.put_file(local_file, path)


def publish_dir(local_dir: str, uri: str, commit_marker: str, move: bool = False, late: tuple = ()) -> None:
    """Copy a finished local directory to `uri`, with `commit_marker` (a file inside it) copied last.

    Readers treat the artifact as present only once the marker exists. Stale files of an earlier,
    interrupted publish are removed first. `move` lets a local publish rename instead of copy.
    `late`: relative paths uploaded after all others (in that order), just before the marker.
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
    for root, _dirs, files in os.walk(local_dir):
        for name in sorted(files):
            src = os.path.join(root, name)
            rel = os.path.relpath(src, local_dir).replace(os.sep, "/")
            if rel != commit_marker and rel not in late:
                upload_file(src, join(uri, rel))
    for rel in late:
        if os.path.isfile(os.path.join(local_dir, rel)):
            upload_file(os.path.join(local_dir, rel), join(uri, rel))
    upload_file(marker_src, join(uri, commit_marker))


# ----------------------------------------------------------------------------- staging for TensorFlow

def cache_dir() -> str:
    return os.environ.get("SRGAN_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "srgan-pipeline")


def stage_in(uri: str) -> str:
    """A local path holding the file or directory at `uri` (the path itself when already local).

    Remote files land in a cache keyed by content (md5), so a repeated call downloads nothing.
    """
    if is_local(uri):
        path = local_path(uri)
        if not os.path.exists(path):
            raise StorageError(f"{uri}: not found")
        return path
    scheme, fs, path = _fs_path(uri)
    files = list_files(uri)
    single = len(files) == 1 and normalize(files[0]) == normalize(uri)
    key = hashlib.sha256(json.dumps([(relpath(f, uri) if not single else "", content_md5(f))
                                     for f in files]).encode()).hexdigest()[:24]
    target = os.path.join(cache_dir(), "staged", key, basename(uri))
    done = os.path.join(cache_dir(), "staged", key, ".complete")
    if not os.path.exists(done):
        tmp = tempfile.mkdtemp(prefix=".staging-", dir=_ensure(os.path.join(cache_dir(), "staged")))
        for f in files:
            dst = os.path.join(tmp, basename(uri)) if single else os.path.join(tmp, basename(uri), relpath(f, uri))
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            with _wrap(f, "download"):
                fs.get_file(split_uri(f)[1], dst)
        with open(os.path.join(tmp, ".complete"), "w") as fh:
            fh.write(uri)
        final = os.path.dirname(target)
        try:
            os.replace(tmp, final)
        except OSError:  # another process staged the same content first
            shutil.rmtree(tmp, ignore_errors=True)
    return target


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
    """(pyarrow.fs.FileSystem, path) for Ray Train's RunConfig(storage_filesystem=..., storage_path=...)."""
    import pyarrow.fs as pafs

    scheme, path = split_uri(uri)
    if scheme == "local":
        return pafs.LocalFileSystem(), path
    return pafs.PyFileSystem(pafs.FSSpecHandler(_filesystem(scheme))), path


def matches_extension(uri: str, extensions) -> bool:
    name = basename(uri).lower()
    return any(fnmatch.fnmatch(name, "*" + ext.lower()) for ext in extensions)
