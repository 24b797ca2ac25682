"""srgan-pipeline: TFX-style components for training x4 super-resolution (SRGAN) models at cluster scale.

Components (one subpackage each) meet only through artifacts under one --artifact-root and the
shared modules here: config, storage, degradation, images, dataset, provenance, logs, errors, cli.
"""

import os

# TensorFlow turns its oneDNN kernels on by itself only on CPUs with AVX-512 or AMX; on an AVX2-only CPU they
# made the float32 GAN step 1.8x faster (bench/torch_step.py --tf-onednn-off, BENCHMARKS.md). Set before any
# TensorFlow import of ours (Ray workers import this package first); a user's own setting wins.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
