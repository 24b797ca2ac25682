"""srgan-pipeline: TFX-style components for training x4 super-resolution (SRGAN) models at cluster scale.

Components (one subpackage each) meet only through artifacts under one --artifact-root and the
shared modules here: config, storage, degradation, images, dataset, provenance, logs, errors, cli.
"""
