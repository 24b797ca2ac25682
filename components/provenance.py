"""What produced an artifact: code version and package versions, recorded in dataset.json / run.json."""

from __future__ import annotations

import functools
import os
import subprocess
from importlib import metadata

KEY_PACKAGES = ("tensorflow", "keras", "apache-beam", "tensorflow-transform", "ray", "numpy", "pillow")


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """`git describe` of the checkout this code runs from (with -dirty), else the installed version."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "-C", here, "describe", "--always", "--dirty", "--abbrev=12"],
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return "git:" + out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return "pkg:" + metadata.version("srgan-pipeline")
    except metadata.PackageNotFoundError:
        return "unknown"


def package_versions() -> dict:
    out = {}
    for name in KEY_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out
