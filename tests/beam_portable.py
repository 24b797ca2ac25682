"""Beam's portable runner path on this machine, for tests: a local job service and an EXTERNAL worker pool,
each its own process (own working directory), bound to 127.0.0.1 and stopped by pid."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

# worker_pool_main binds [::]: this starts the same servicer (workers as subprocesses) on 127.0.0.1.
WORKER_POOL = """
import sys, time, grpc
from apache_beam.portability.api import beam_fn_api_pb2_grpc
from apache_beam.runners.worker.worker_pool_main import BeamFnExternalWorkerPoolServicer
from apache_beam.utils import thread_pool_executor
server = grpc.server(thread_pool_executor.shared_unbounded_instance())
server.add_insecure_port("127.0.0.1:" + sys.argv[1])
beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(BeamFnExternalWorkerPoolServicer(use_process=True), server)
server.start()
print("worker pool up", flush=True)
while True:
    time.sleep(3600)
"""


class PortableBeam:
    def __init__(self, workdir: str, env: dict, job_port: int, pool_port: int):
        self.workdir, self.env = workdir, env
        self.job_endpoint, self.pool_endpoint = f"localhost:{job_port}", f"127.0.0.1:{pool_port}"
        self.job_port, self.pool_port = job_port, pool_port
        self.procs: list[subprocess.Popen] = []

    def start(self) -> None:
        bin_dir = os.path.dirname(sys.executable)  # the pool runs workers as `python -c ...`: the venv's
        env = {**self.env, "PATH": bin_dir + os.pathsep + self.env.get("PATH", "")}
        for name, cmd in (
                ("job-service", [sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main",
                                 "--port", str(self.job_port)]),
                ("worker-pool", [sys.executable, "-c", WORKER_POOL, str(self.pool_port)])):
            cwd = os.path.join(self.workdir, name)
            os.makedirs(cwd, exist_ok=True)
            log = open(os.path.join(cwd, "log.txt"), "w")
            self.procs.append(subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                               start_new_session=True))
        import socket
        deadline = time.time() + 60
        for port in (self.job_port, self.pool_port):
            while True:
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                if time.time() > deadline or any(p.poll() is not None for p in self.procs):
                    self.stop()
                    raise RuntimeError(f"portable Beam did not start; see logs under {self.workdir}")
                time.sleep(0.3)

    def beam_args(self) -> list[str]:
        return ["--runner=PortableRunner", f"--job_endpoint={self.job_endpoint}",
                "--environment_type=EXTERNAL", f"--environment_config={self.pool_endpoint}"]

    def stop(self) -> None:
        for proc in self.procs:  # each leads its own process group (start_new_session): it and its workers
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
