"""The Ray Train backend of our runs: each worker gets TF_CONFIG (MultiWorkerMirroredStrategy's cluster spec).

It does what Ray's `TensorflowConfig` does, without importing TensorFlow where it runs. Ray's lives in
`ray.train.tensorflow`, whose package imports TensorFlow, so Ray Train's controller (an actor that never
trains) imported all of TensorFlow to unpickle it: seconds of CPU at every run's start, while the workers
import it too, and the memory of a TensorFlow process on the head node for the whole run.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass

import ray
from ray.train.backend import Backend, BackendConfig


def _worker_address() -> str:
    """host:port this worker's TensorFlow server will listen on (a free port of its node)."""
    ip = ray.util.get_node_ip_address()
    with socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _set_tf_config(addresses: list[str], index: int) -> None:
    os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}})
    os.environ["TF_USE_LEGACY_KERAS"] = "1"  # as Ray's TensorflowConfig sets it: workers behave as before


class _TFClusterBackend(Backend):
    def on_start(self, worker_group, backend_config) -> None:
        addresses = worker_group.execute(_worker_address)
        ray.get([worker_group.execute_single_async(i, _set_tf_config, addresses=addresses, index=i)
                 for i in range(len(worker_group))])


@dataclass
class TFClusterConfig(BackendConfig):
    @property
    def backend_cls(self):
        return _TFClusterBackend

    @property
    def framework(self):
        from ray.train.v2._internal.util import TrainingFramework  # Ray's run-state export labels the run with it

        return TrainingFramework.TENSORFLOW
