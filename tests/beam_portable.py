"""Beam's portable runner path on this machine, for tests: a local job service and an EXTERNAL worker pool,
each its own process (own working directory), bound to 127.0.0.1 and stopped by pid."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

# Beam's local job service (the LocalJobServicer that `local_job_service_main` serves), with one change: its
# job runs the FnApiRunner with the job's --direct_num_workers. As shipped (Beam 2.77) it never reads it:
# BeamJob._invoke_runner (local_job_service.py:312-316) calls FnApiRunner.run_via_runner_api directly, and only
# FnApiRunner.run_pipeline (fn_runner.py:159-164) sets _num_workers from the options, which otherwise stays 1
# (fn_runner.py:121): one worker handler per environment, i.e. one StartWorker request to the pool
# (worker_handlers.py:931-946). With N, the runner asks the pool for N workers and splits each stage's input
# between them (fn_runner.py:1409-1470, ParallelBundleManager). --sdk_worker_parallelism is read by Flink and
# Spark job servers only (nothing in the Python SDK reads it).
JOB_SERVICE = """
import logging, multiprocessing, sys, time
from apache_beam.options.pipeline_options import DirectOptions
from apache_beam.portability.api import beam_job_api_pb2
from apache_beam.runners.portability import local_job_service
from apache_beam.runners.portability.fn_api_runner import fn_runner

class BeamJob(local_job_service.BeamJob):
    def _invoke_runner(self):  # as Beam's, plus what FnApiRunner.run_pipeline does with direct_num_workers
        self.set_state(beam_job_api_pb2.JobState.RUNNING)
        options = self.pipeline_options()
        runner = fn_runner.FnApiRunner(provision_info=self._provision_info)
        workers = int(options.view_as(DirectOptions).direct_num_workers)  # options come as strings
        runner._num_workers = multiprocessing.cpu_count() if workers == 0 else workers
        return runner.run_via_runner_api(self._pipeline_proto, options)

logging.basicConfig(level=logging.INFO)
servicer = local_job_service.LocalJobServicer(beam_job_type=BeamJob)
print("job service up on port", servicer.start_grpc_server(int(sys.argv[1])), flush=True)
while True:
    time.sleep(3600)
"""

# worker_pool_main binds [::]: this starts the same servicer (each worker a subprocess) on 127.0.0.1.
WORKER_POOL = """
import logging, sys, time, grpc
from apache_beam.portability.api import beam_fn_api_pb2_grpc
from apache_beam.runners.worker.worker_pool_main import BeamFnExternalWorkerPoolServicer
from apache_beam.utils import thread_pool_executor
logging.basicConfig(level=logging.INFO)
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
        for name, script, port in (("job-service", JOB_SERVICE, self.job_port),
                                   ("worker-pool", WORKER_POOL, self.pool_port)):
            cwd = os.path.join(self.workdir, name)
            os.makedirs(cwd, exist_ok=True)
            log = open(os.path.join(cwd, "log.txt"), "w")
            self.procs.append(subprocess.Popen([sys.executable, "-c", script, str(port)], cwd=cwd, env=env,
                                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
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

    def beam_args(self, workers: int = 1) -> list[str]:
        return ["--runner=PortableRunner", f"--job_endpoint={self.job_endpoint}",
                "--environment_type=EXTERNAL", f"--environment_config={self.pool_endpoint}",
                f"--direct_num_workers={workers}"]

    def pool_log(self) -> str:
        with open(os.path.join(self.workdir, "worker-pool", "log.txt")) as f:
            return f.read()

    def workers_started(self) -> set[str]:
        """The worker ids the job service asked the pool for (the pool logs each StartWorker's command)."""
        return set(re.findall(r"Starting worker with command .*?worker_id=\\?\"([^\"\\]+)", self.pool_log()))

    def stage_counts(self, stage: str) -> dict[int, int]:
        """Per worker process (pid), the elements it processed in a stage, from the job's own progress lines
        (`<stage> [pid N]: [done, ]K[ of T] images`, logged by each worker to its stderr, i.e. the pool's log):
        the last (largest) count per pid."""
        counts: dict[int, int] = {}
        for pid, n in re.findall(rf"{re.escape(stage)} \[pid (\d+)\]: (?:done, )?([\d,]+)(?: of [\d,]+)? images",
                                 self.pool_log()):
            counts[int(pid)] = max(counts.get(int(pid), 0), int(n.replace(",", "")))
        return counts

    def stop(self) -> None:
        for proc in self.procs:  # each leads its own process group (start_new_session): it and its workers
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
