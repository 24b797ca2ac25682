"""The upscaling service on Ray Serve: an application builder a RayService's serveConfigV2 names
(`import_path: components.serving.app:build_app`, `args:` = serve config keys), and its deployment.

Routes (the application owns route prefix `/`):
  POST /v1/upscale[?format=png|jpeg]  image bytes in (any format Pillow reads), the x4 image out
                                      (PNG by default); header X-Model-Version names the version used
  GET  /v1/model                      version, the runtime running it (and the runtime setting, e.g. auto),
                                      model card summary, last update attempt (this replica's)
  GET  /healthz                       200 once a model is loaded
Anything else is a 4xx with a JSON body {"error": reason, "detail": ...}; so is a bad image.

Inference is `components.upscaler.upscale_decoded`, the same code `jobs/upscale.py` runs, so the pixels
(and the ICC profile and EXIF the response carries over from the request's image) are the same (up to 1
gray level in rare pixels when a tile shares a batch with other requests' tiles:
the float summation order depends on its position in the batch); its model calls (chunks of equal-shape tiles) go through a `serve.batch` method, which
joins the tiles of concurrent requests into one model call when they share a shape and a version.
Each replica follows the registry on its own (components.serving.follower.ModelFollower, polled every
`poll_seconds` in a thread): replicas converge within one poll interval plus the pull + load time.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import threading

from components import config, upscaler
from components.config import ConfigError
from components.logs import setup_logging

log = logging.getLogger("serving")
APP_NAME = "srgan-upscaler"
# The config keys a builder takes (the same names as jobs/serve.py's flags and the YAML config).
APP_KEYS = ["model_uri", "version", "num_replicas", "max_ongoing_requests", "max_input_pixels",
            "max_body_bytes", "poll_seconds", "tile_size", "tile_overlap", "strength", "runtime", "keep_local_versions"]
# Tiles joined per model call across requests: at most BATCH_ITEMS chunks of up to 4 tiles
# (upscaler.upscale_array's batch), waiting at most BATCH_WAIT_S for others to arrive.
BATCH_ITEMS, BATCH_WAIT_S = 4, 0.005
FORMATS = {"png": ("PNG", "image/png"), "jpeg": ("JPEG", "image/jpeg"), "jpg": ("JPEG", "image/jpeg")}


class RequestError(Exception):
    """A request the service refuses: HTTP status, machine-readable reason, detail."""

    def __init__(self, status: int, reason: str, detail: str):
        super().__init__(detail)
        self.status, self.reason, self.detail = status, reason, detail


def settings(args: dict | config.Config | None) -> dict:
    """The serve settings from a builder's `args` (or a Config): known keys only, typed, env expanded."""
    if isinstance(args, config.Config):
        cfg = args
    else:
        cfg = config.Config()
        for key, value in (args or {}).items():
            if key not in APP_KEYS:
                raise ConfigError(f"unknown serve application argument {key!r} (known: {', '.join(APP_KEYS)})")
            config.set_value(cfg, key, value)
    out = {key: config.get_value(cfg, key) for key in APP_KEYS}
    if not out["model_uri"]:
        raise ConfigError("the serve application needs model_uri (a models/<name> folder or a version folder)")
    out["model_uri"] = os.path.expandvars(out["model_uri"])  # e.g. $ARTIFACT_ROOT/models/srgan-x4 on a cluster
    if "$" in out["model_uri"]:
        raise ConfigError(f"model_uri {out['model_uri']!r} names an environment variable that is not set")
    for key in ("num_replicas", "max_ongoing_requests", "max_input_pixels", "max_body_bytes", "tile_size"):
        if out[key] < 1:
            raise ConfigError(f"{key} must be >= 1 (got {out[key]})")
    if out["poll_seconds"] <= 0 or out["tile_overlap"] < 0:
        raise ConfigError("poll_seconds must be > 0 and tile_overlap >= 0")
    return out


def _json(status: int, body: dict, headers: dict | None = None):
    from starlette.responses import JSONResponse
    return JSONResponse(body, status_code=status, headers=headers)


def _decode(data: bytes, max_pixels: int):
    """An `images.decode_with_metadata` result, or a RequestError naming why not (413 when too large)."""
    from PIL import Image

    from components import images

    if not data:
        raise RequestError(400, images.EMPTY_FILE, "the request body is empty: send the image's bytes")
    try:
        with Image.open(io.BytesIO(data)) as img:  # reads the header only: refuse before decoding
            w, h = img.size
    except Exception:  # noqa: BLE001 - anything Pillow cannot even identify; decode_rgb says which
        w = h = 0
    if w * h > max_pixels:
        raise RequestError(413, images.TOO_LARGE, f"{w}x{h} = {w * h} pixels; this service takes at most "
                                                  f"{max_pixels} input pixels (max_input_pixels)")
    try:
        return images.decode_with_metadata(data)
    except images.ImageRejected as exc:
        raise RequestError(413 if exc.reason == images.TOO_LARGE else 400, exc.reason, exc.details) from None


def _build_deployment():
    from ray import serve

    @serve.deployment
    class SRGANUpscaler:
        def __init__(self, opts: dict):
            from components.serving.follower import ModelFollower, ServingError

            setup_logging()
            self.opts = opts
            self._stop = threading.Event()
            self._loop = None
            # Two pools, so a request thread waiting for its batch can never hold the thread the model
            # call needs: one thread per concurrent request (decode, tiling, encode) and one for the model.
            from concurrent.futures import ThreadPoolExecutor
            self._request_pool = ThreadPoolExecutor(opts["max_ongoing_requests"], thread_name_prefix="request")
            self._model_pool = ThreadPoolExecutor(1, thread_name_prefix="model")
            self.batching = {"chunks": 0, "model_calls": 0}  # chunks of tiles in, model calls out
            self.follower = ModelFollower(opts["model_uri"], opts["version"], opts["tile_size"],
                                          strength=opts["strength"], runtime=opts["runtime"],
                                          keep_versions=opts["keep_local_versions"])
            first = self.follower.check()
            if self.follower.current is None:
                raise ServingError(f"no model to serve from {opts['model_uri']}: {first.get('error')}")
            try:
                self.replica = serve.get_replica_context().replica_id.unique_id
            except Exception:  # noqa: BLE001 - only a label for logs and headers
                self.replica = str(os.getpid())
            if self.follower.pinned is None:
                threading.Thread(target=self._poll, name="follow-latest", daemon=True).start()

        def _poll(self):
            while not self._stop.wait(self.opts["poll_seconds"]):
                self.follower.check()

        def __del__(self):
            self._stop.set()

        def check_health(self):
            if self.follower.current is None:
                raise RuntimeError("no model loaded")

        @serve.batch(max_batch_size=BATCH_ITEMS, batch_wait_timeout_s=BATCH_WAIT_S)
        async def _infer(self, items: list) -> list:
            """items: (Loaded, uint8 [k, h, w, 3]); one model call per (version, tile shape)."""
            import numpy as np

            groups: dict = {}
            for i, (loaded, tiles) in enumerate(items):
                groups.setdefault((id(loaded), tiles.shape[1:]), []).append(i)
            out = [None] * len(items)
            self.batching["chunks"] += len(items)
            self.batching["model_calls"] += len(groups)
            for idx in groups.values():
                model = items[idx[0]][0].model
                joined = np.concatenate([items[i][1] for i in idx])
                sr = await asyncio.get_running_loop().run_in_executor(self._model_pool, model, joined)
                start = 0
                for i in idx:
                    k = len(items[i][1])
                    out[i] = sr[start:start + k]
                    start += k
            return out

        def _batched_model(self, loaded):
            """An Upscaler whose calls (from a worker thread) go through the batcher on the replica's loop."""
            loop = self._loop

            def run(tiles):
                return asyncio.run_coroutine_threadsafe(self._infer((loaded, tiles)), loop).result()

            return upscaler.Upscaler(run, loaded.folder, "batched", loaded.model.scale)

        async def __call__(self, request):
            self._loop = self._loop or asyncio.get_running_loop()
            path, method = request.url.path.rstrip("/") or "/", request.method
            routes = {"/v1/upscale": "POST", "/v1/model": "GET", "/healthz": "GET"}
            try:
                if path not in routes:
                    raise RequestError(404, "not_found", f"no route {path}; routes: "
                                       + ", ".join(f"{m} {p}" for p, m in routes.items()))
                if method != routes[path] and not (method == "HEAD" and routes[path] == "GET"):
                    raise RequestError(405, "method_not_allowed", f"{path} takes {routes[path]}, not {method}")
                if path == "/healthz":
                    cur = self.follower.current
                    return _json(200, {"status": "ok", "version": cur.version if cur else None})
                if path == "/v1/model":
                    return _json(200, {**self.follower.state(), "replica": self.replica, "pid": os.getpid(),
                                       "batching": dict(self.batching)})
                return await self._upscale(request)
            except RequestError as exc:
                return _json(exc.status, {"error": exc.reason, "detail": exc.detail})
            except Exception as exc:  # noqa: BLE001 - a bug answers 500, the replica keeps serving
                log.exception("request failed")
                return _json(500, {"error": "internal", "detail": f"{type(exc).__name__}: {exc}"})

        async def _read_body(self, request) -> bytes:
            limit = self.opts["max_body_bytes"]
            declared = request.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > limit:
                raise RequestError(413, "body_too_large", f"{declared} bytes; at most {limit} (max_body_bytes)")
            chunks, size = [], 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise RequestError(413, "body_too_large", f"over {limit} bytes (max_body_bytes)")
                chunks.append(chunk)
            return b"".join(chunks)

        async def _upscale(self, request):
            from starlette.responses import Response

            asked = request.query_params.get("format", "png").lower()
            if asked not in FORMATS:
                raise RequestError(400, "bad_format", f"format={asked!r}; use png or jpeg")
            data = await self._read_body(request)
            loaded = self.follower.current  # this request's version, from start to end
            loop = asyncio.get_running_loop()
            decoded, metadata = await loop.run_in_executor(self._request_pool, _decode, data,
                                                           self.opts["max_input_pixels"])
            if metadata.dropped:  # the client's file, not the service's health: not a warning
                log.info("request image: %s", "; ".join(metadata.dropped))
            fmt, media = FORMATS[asked]
            if decoded[1] is not None and fmt == "JPEG":  # JPEG cannot hold alpha: PNG, as jobs/upscale.py does
                fmt, media = FORMATS["png"]
            body = await loop.run_in_executor(self._request_pool, upscaler.upscale_decoded,
                                              self._batched_model(loaded), decoded, fmt, self.opts["tile_size"],
                                              self.opts["tile_overlap"], metadata)
            return Response(body, media_type=media, headers={
                "X-Model-Version": str(loaded.version), "X-Model-Name": str(loaded.card.get("name")),
                "X-Replica": self.replica})

    return SRGANUpscaler


def build_app(args: dict | config.Config | None = None):
    """The Ray Serve application (what serveConfigV2's import_path names); `args` are serve config keys."""
    opts = settings(args)
    return _build_deployment().options(
        num_replicas=opts["num_replicas"], max_ongoing_requests=opts["max_ongoing_requests"],
        health_check_period_s=10, graceful_shutdown_timeout_s=30).bind(opts)
