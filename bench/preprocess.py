"""Throughput of the preprocessing Beam job vs a bare single-process Pillow loop, in one run.

    python bench/preprocess.py [--input DIR] [--limit N] [--modes in_memory,multi_processing]

Both sides decode, crop, degrade (the shared `degrade`), PNG-encode and write gzip TFRecords for
the same files. The Beam job's time is end to end (listing + fingerprinting + pipeline + commit),
as a user sees it. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from components.logs import setup_console
from components import config, dataset, preprocess, images, sample_data, storage

FACES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                     "shared", "data", "faces-dev")


def bare_loop(files: list[str], out_dir: str, crop: int, resize_short_side: int) -> int:
    import tensorflow as tf

    from components.degradation import degrade

    n = 0
    with tf.io.TFRecordWriter(os.path.join(out_dir, "bare.tfrecord.gz"), options="GZIP") as writer:
        for path in files:
            try:
                hr = images.training_crop(images.decode_rgb(storage.read_bytes(path)), crop, resize_short_side)
            except images.ImageRejected:
                continue
            lr = degrade(hr).numpy()
            writer.write(dataset.make_example(images.encode_png(hr), images.encode_png(lr), path))
            n += 1
    return n


def main():
    from components.trainer.precision import speed_flags

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", default=FACES if os.path.isdir(FACES) else None,
                        help="image folder (default: ../shared/data/faces-dev, else the built-in sample)")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N files (0: all)")
    parser.add_argument("--modes", default="in_memory,multi_processing")
    args = parser.parse_args()
    setup_console()

    source = args.input or sample_data.write_sample_images()
    work = tempfile.mkdtemp(prefix="bench-preprocess-")
    try:
        files = [f for f in storage.list_files(source) if storage.matches_extension(f, config.PreprocessConfig().extensions())]
        if args.limit:
            files = files[:args.limit]
        inp = os.path.join(work, "input")
        for f in files:  # a flat folder of links, so both sides see exactly these files
            os.makedirs(os.path.dirname(os.path.join(inp, storage.relpath(f, source))), exist_ok=True)
            os.symlink(f, os.path.join(inp, storage.relpath(f, source)))
        cfg = config.Config()

        # Warm both sides up outside the timed regions: imports and the first TF call are one-off costs.
        import tensorflow_transform  # noqa: F401

        from components.degradation import degrade
        degrade(images.training_crop(images.decode_rgb(storage.read_bytes(files[0])), 128, 178))
        os.makedirs(os.path.join(work, "bare"))
        t = time.perf_counter()
        accepted = bare_loop(files, os.path.join(work, "bare"), cfg.preprocess.crop_size,
                             cfg.preprocess.resize_short_side)
        bare_s = time.perf_counter() - t
        result = {
            "bench": "preprocess", "input": source, "num_files": len(files), "num_accepted": accepted,
            "machine": {"cpus": os.cpu_count(), "cpu_flags": speed_flags(), "python": platform.python_version()},
            "bare_loop": {"seconds": round(bare_s, 2), "images_per_s": round(len(files) / bare_s, 1)},
        }
        for mode in [m for m in args.modes.split(",") if m]:
            beam_args = [f"--direct_running_mode={mode}"]
            if mode == "multi_processing":
                beam_args.append(f"--direct_num_workers={os.cpu_count()}")
            run_cfg = config.Config(artifact_root=os.path.join(work, f"art-{mode}"), input=inp)
            t = time.perf_counter()
            info = preprocess.run(run_cfg, beam_args)
            secs = time.perf_counter() - t
            result[f"beam_{mode}"] = {
                "seconds": round(secs, 2), "images_per_s": round(len(files) / secs, 1),
                "ratio_vs_bare_loop": round(bare_s / secs, 3),
                "num_train": info["num_train"], "num_eval": info["num_eval"], "num_rejected": info["num_rejected"]}
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
