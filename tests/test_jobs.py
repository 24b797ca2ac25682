"""Every job's command line, in this process: bad or missing input is one clear line and exit 2, never a
traceback; the console scripts are installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import run_cli


@pytest.mark.parametrize("job,args,message", [
    ("evaluate", [], "nothing to evaluate: pass --run-id"),
    ("evaluate", ["--model-uri", "/nonexistent/model"], "needs --output"),
    ("evaluate", ["--run-id", "never-trained"], "run never-trained: no run.json"),
    ("push", [], "pass --run-id"),
    ("push", ["--run-id", "never-trained"], "run never-trained: no run.json"),
    ("pull_model", ["--output", "x"], "pass --model-uri"),
    ("pull_model", ["--model-uri", "/nonexistent/models/m", "--output", "x"], "no LATEST"),
    ("upscale", ["--model-uri", "/nonexistent/model", "a.png", "--output", "o"], "/nonexistent/model: not a model"),
    ("train", [], "no dataset given: pass --dataset-id"),
    ("pipeline", ["--input", "/nonexistent/images"], "no such file, folder or matching files"),
    ("preprocess", ["--eval-count", "two"], "invalid int value"),
    ("train", ["--config", "/nonexistent/config.yaml"], "/nonexistent/config.yaml"),
    ("gc", ["--keep-versions", "0"], "'keep_versions' must lie within"),
])
def test_bad_input_is_one_clear_line(tmp_path, capsys, job, args, message):
    os.chdir(tmp_path)
    root = [] if job in ("pull_model", "upscale") else ["--artifact-root", str(tmp_path / "art")]
    out = run_cli(capsys, job, *root, *args)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""


def test_console_scripts_are_installed():
    bin_dir = os.path.dirname(sys.executable)
    for name in ("preprocess", "train", "evaluate", "push", "pipeline", "pull-model", "upscale", "serve", "gc"):
        assert shutil.which(f"srgan-{name}", path=bin_dir), f"srgan-{name} is not installed next to {sys.executable}"
    out = subprocess.run([os.path.join(bin_dir, "srgan-train"), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "--dataset-id" in out.stdout and "--verbose" in out.stdout, out.stderr[-2000:]
