"""The soak scenario (tests/soak.py) at 8 versions on SeaweedFS S3: a real Ray Serve service under load, the
TF Serving sidecar, gc between pushes, two killed pushes and a tampered one. bench/soak.py runs 30."""

from __future__ import annotations

import json

import pytest

from tests import soak


@pytest.mark.slow
def test_weeks_of_retraining_in_minutes(s3_server, tmp_path):
    report = soak.run(s3_server.make_bucket("soak") + "/srgan", str(tmp_path), soak.Settings(versions=8))
    print(json.dumps({k: v for k, v in report.items() if k not in ("settings", "failures")}))
    assert report["failures"] == [], "\n".join(report["failures"])
    assert report["requests"] > 0 and report["gc"]["deleted_items"]["version"] > 0
