"""A SeaweedFS of a test's own, with its S3 audit log: every request the server handled, as a record.

SeaweedFS sends its audit log (`-s3.auditLogConfig`) to a fluentd "forward" endpoint as msgpack; the
receiver below is that endpoint (on 127.0.0.1). Each record names the operation (REST.GET.OBJECT,
REST.HEAD.OBJECT, REST.PUT.OBJECT, ...; a LIST is a GET with an empty key), the object key, the status
and the User-Agent, where components.storage puts `srgan-pipeline/pid-<pid>`: so counts are per process.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from collections import Counter

import msgpack

from tests.conftest import SeaweedFS

PID_RE = re.compile(r"srgan-pipeline/pid-(\d+)")


class AuditLog:
    def __init__(self):
        self.records: list[dict] = []
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn):
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        with conn:
            while True:
                try:
                    data = conn.recv(1 << 16)
                except OSError:
                    return
                if not data:
                    return
                unpacker.feed(data)
                for msg in unpacker:
                    self._add(msg)

    def _add(self, msg):
        # Message mode [tag, time, record, opt]; Forward mode [tag, [[time, record], ...], opt]
        if isinstance(msg, list) and len(msg) >= 2:
            if isinstance(msg[1], list):
                recs = [e[1] for e in msg[1] if isinstance(e, list) and len(e) > 1]
            elif len(msg) >= 3 and isinstance(msg[2], dict):
                recs = [msg[2]]
            else:
                recs = []
            with self._lock:
                self.records.extend(r for r in recs if isinstance(r, dict))

    def close(self):
        self._sock.close()

    def settle(self, quiet: float = 1.0, timeout: float = 15.0) -> list[dict]:
        """The records, once no new one has arrived for `quiet` seconds."""
        deadline, last, since = time.time() + timeout, -1, time.time()
        while time.time() < deadline:
            n = len(self.records)
            if n != last:
                last, since = n, time.time()
            elif time.time() - since >= quiet:
                break
            time.sleep(0.1)
        with self._lock:
            return list(self.records)

    def mark(self) -> int:
        return len(self.settle())

    @staticmethod
    def pid(record) -> int | None:
        m = PID_RE.search(record.get("user_agent") or "")
        return int(m.group(1)) if m else None

    def by_pid(self, since: int = 0) -> dict[int, list[dict]]:
        out: dict[int, list[dict]] = {}
        for r in self.settle()[since:]:
            pid = self.pid(r)
            if pid is not None:
                out.setdefault(pid, []).append(r)
        return out


def kind(record) -> str:
    """GET | LIST | HEAD | PUT | DELETE | ... (a bucket-level GET is a LIST)."""
    op = record.get("operation", "")
    if op == "REST.GET.OBJECT" and not record.get("key"):
        return "LIST"
    return op.split(".")[1] if op.count(".") >= 2 else op


def counts(records, prefix: str = "") -> Counter:
    """Requests per kind, for keys below `prefix` (LISTs, which carry no key, always count)."""
    return Counter(kind(r) for r in records if kind(r) == "LIST" or (r.get("key") or "").startswith(prefix))


def gets_per_key(records) -> Counter:
    return Counter(r["key"] for r in records if kind(r) == "GET" and r.get("status") == 200)


def audited_seaweed(workdir: str) -> tuple[SeaweedFS, AuditLog]:
    """A stopped SeaweedFS of its own (start() it) whose audit log goes to the returned AuditLog."""
    audit = AuditLog()
    os.makedirs(workdir, exist_ok=True)
    cfg = os.path.join(workdir, "audit.json")
    with open(cfg, "w") as f:
        json.dump({"fluent_host": "127.0.0.1", "fluent_port": audit.port}, f)
    return SeaweedFS(workdir, extra_args=(f"-s3.auditLogConfig={cfg}",)), audit
