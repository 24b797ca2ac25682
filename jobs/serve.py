"""Serve x4 upscaling over HTTP on Ray Serve, following the registry's LATEST (or a pinned --version).

    python jobs/serve.py --model-uri s3://bucket/srgan/models/srgan-x4 [--host 127.0.0.1] [--port 8000]
    curl --data-binary @photo.jpg http://127.0.0.1:8000/v1/upscale -o photo_x4.png

Starts a local Ray (HTTP on --host, 127.0.0.1 unless told otherwise), or joins the cluster RAY_ADDRESS
names (`ray job submit -- python jobs/serve.py ...`; the cluster's Serve HTTP settings apply there).
Runs until SIGINT/SIGTERM, then removes the application (and stops the Ray it started).
--runtime auto (the default) runs each version on the fastest runtime it carries (components.runtimes.choose:
tensorflow for versions pushed before the exports); GET /v1/model names the one in use.
"""

import logging
import os
import signal
import sys
import threading

from components import cli, config

KEYS = ["model_uri", "version", "host", "port", "num_replicas", "max_ongoing_requests", "max_input_pixels",
        "max_body_bytes", "poll_seconds", "tile_size", "tile_overlap", "strength", "runtime", "keep_local_versions"]
log = logging.getLogger("serving")


def build_parser():
    return cli.parser(__doc__, KEYS)


def main(argv=None):
    cfg = config.from_args(build_parser().parse_args(argv), KEYS)
    if not cfg.model_uri:
        raise config.ConfigError("pass --model-uri (a models/<name> folder or a version folder)")

    from components import registry
    from components.serving import app as serving

    opts = serving.settings(cfg)
    folder = registry.resolve(opts["model_uri"], opts["version"])  # a clear error now, not in a replica
    if opts["runtime"] not in ("tensorflow", "auto"):  # the version must carry that runtime's export (model.json)
        from components import runtimes
        runtimes.choose(opts["runtime"], registry.card(folder), folder, opts["strength"])
    import ray
    from ray import serve

    on_cluster = bool(os.environ.get("RAY_ADDRESS"))
    if on_cluster:
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
    else:
        ray.init(num_cpus=max(os.cpu_count() or 1, cfg.serve.num_replicas), include_dashboard=False,
                 log_to_driver=True)  # replica logs (switches, failed versions) in this terminal
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # after ray.init, which installs handlers of its own
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": cfg.serve.host, "port": cfg.serve.port})
        serve.run(serving.build_app(cfg), name=serving.APP_NAME, route_prefix="/", blocking=False)
        where = f"http://{cfg.serve.host}:{cfg.serve.port}" if not on_cluster else "the cluster's Serve HTTP address"
        print(f"serving {folder} ({'pinned' if opts['version'] not in (None, 'latest') else 'following LATEST'}, "
              f"{cfg.serve.num_replicas} replica(s)) on {where}: POST /v1/upscale, GET /v1/model, GET /healthz",
              flush=True)
        while not stop.wait(1.0):
            pass
        log.info("stopping")
    finally:
        if on_cluster:
            serve.delete(serving.APP_NAME)
        else:
            serve.shutdown()
        ray.shutdown()
    print("stopped", flush=True)


def console_main():  # the console script (setup.py); `python jobs/<name>.py` runs the same
    return cli.run_console(main)


if __name__ == "__main__":
    sys.exit(console_main())
