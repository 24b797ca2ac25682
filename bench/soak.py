"""The soak scenario of issue 28 at full length: versions pushed one after another onto one S3 root while a Ray
Serve service follows LATEST under load, the TF Serving sidecar mirrors it and gc runs between pushes. Prints
one JSON object (exit 1 when a rule broke: the `failures` list says which).

    python bench/soak.py --versions 30 [--rate 4] [--keep-dir DIR]

Starts its own SeaweedFS (127.0.0.1, stopped by pid). The scenario and its checks are tests/soak.py's, which
tests/test_soak.py runs at 8 versions.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--versions", type=int, default=30)
    p.add_argument("--rate", type=float, default=4.0, help="requests per second from the load client")
    p.add_argument("--keep-dir", help="keep the work folder (logs, caches) here instead of deleting it")
    args = p.parse_args(argv)

    from tests import soak
    from tests.conftest import SeaweedFS

    work = args.keep_dir or tempfile.mkdtemp(prefix="bench-soak-")
    os.makedirs(work, exist_ok=True)
    server = SeaweedFS(os.path.join(work, "seaweedfs"))
    server.start()
    try:
        os.environ.update(server.env())
        report = soak.run(server.make_bucket("soak") + "/srgan", os.path.join(work, "scenario"),
                          soak.Settings(versions=args.versions, rate=args.rate))
    finally:
        server.stop(keep_data=False)
        if not args.keep_dir:
            shutil.rmtree(work, ignore_errors=True)
    report["machine"] = {"cpus": os.cpu_count(), "load_average_at_end": os.getloadavg(),
                         "note": "2 cores shared with other jobs (a training benchmark) while measuring"}
    print(json.dumps(report, indent=2))
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
