"""Preprocessing throughput of crop_mode patches vs center, and of patches vs a bare loop, in one run.

    python bench/preprocess_patches.py [--input DIR] [--limit N] [--patch-size 192] [--patch-stride 96]

Default input: the 100 CelebA-HQ 1024x1024 photos of ../shared/data/faces-dev. The Beam jobs (DirectRunner,
in_memory) are timed end to end (listing + fingerprinting + pipeline + commit), as a user sees them, with
the defaults of every other key. The bare loops are one Python process, no Beam: `bare_cut` decodes each
photo and cuts its patches (grid + flat check + cap, the same functions the job uses); `bare_full` also
degrades, PNG-encodes and writes every patch to a gzip TFRecord, i.e. the job's work per record without
its eval photos and statistics. The bare loops cut every photo, the job its train photos only: compare
rates, not counts. Prints one JSON object.
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
from components import config, dataset, images, preprocess, storage

HQ = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                  "shared", "data", "faces-dev", "celebahq_1024")


def cut_patches(path: str, pcfg) -> list:
    """One photo -> its kept patches, as the job's CutPatches keeps them for a train photo."""
    rgb = images.decode_rgb(storage.read_bytes(path))
    size = pcfg.patch_size
    grid = images.patch_grid(*rgb.shape[:2], size, pcfg.patch_stride)
    detailed = [(t, l) for t, l in grid if images.patch_detail(rgb[t:t + size, l:l + size]) >= pcfg.min_patch_detail]
    return [rgb[t:t + size, l:l + size] for t, l in
            (detailed[i] for i in images.select_evenly(len(detailed), pcfg.max_patches_per_image))]


def bare_cut(files: list[str], pcfg) -> int:
    return sum(len(cut_patches(f, pcfg)) for f in files)


def bare_full(files: list[str], pcfg, out_path: str) -> int:
    import tensorflow as tf

    from components.degradation import degrade

    n = 0
    with tf.io.TFRecordWriter(out_path, options="GZIP") as writer:
        for path in files:
            for hr in cut_patches(path, pcfg):
                lr = degrade(hr, pcfg.scale).numpy()
                writer.write(dataset.make_example(images.encode_png(hr), images.encode_png(lr), path))
                n += 1
    return n


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main():
    from components.trainer.precision import speed_flags

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", default=HQ, help="photo folder (default: ../shared/data/faces-dev/celebahq_1024)")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N photos (0: all)")
    parser.add_argument("--patch-size", type=int, default=config.PreprocessConfig.patch_size)
    parser.add_argument("--patch-stride", type=int, default=config.PreprocessConfig.patch_stride)
    args = parser.parse_args()
    if not os.path.isdir(args.input):
        raise SystemExit(f"{args.input}: no such folder (give --input)")
    setup_console()

    work = tempfile.mkdtemp(prefix="bench-patches-")
    try:
        files = sorted(f for f in storage.list_files(args.input)
                       if storage.matches_extension(f, config.PreprocessConfig().extensions()))[:args.limit or None]
        inp = os.path.join(work, "input")
        os.makedirs(inp)
        for f in files:  # a folder of links, so every side sees exactly these files
            os.symlink(f, os.path.join(inp, os.path.basename(f)))
        keys = {"patch_size": args.patch_size, "patch_stride": args.patch_stride}
        pcfg = config.Config().preprocess
        for k, v in keys.items():
            setattr(pcfg, k, v)

        import tensorflow_transform  # noqa: F401  (imports and the first TF call: one-off costs, not timed)

        from components.degradation import degrade
        degrade(cut_patches(files[0], pcfg)[0])

        result = {"bench": "preprocess_patches", "input": args.input, "num_photos": len(files),
                  "patch_size": args.patch_size, "patch_stride": args.patch_stride,
                  "min_patch_detail": pcfg.min_patch_detail,
                  "machine": {"cpus": os.cpu_count(), "cpu_flags": speed_flags(), "python": platform.python_version(),
                              "load_average_at_start": list(os.getloadavg())}}
        n, secs = timed(lambda: bare_cut(files, pcfg))
        result["bare_cut"] = {"seconds": round(secs, 2), "patches": n, "patches_per_s": round(n / secs, 1)}
        n, secs = timed(lambda: bare_full(files, pcfg, os.path.join(work, "bare.tfrecord.gz")))
        result["bare_full"] = {"seconds": round(secs, 2), "patches": n, "patches_per_s": round(n / secs, 1)}

        for mode, mode_keys in (("center", {}), ("patches", {"crop_mode": "patches", **keys})):
            run_cfg = config.Config(artifact_root=os.path.join(work, f"art-{mode}"), input=inp)
            for k, v in mode_keys.items():
                config.set_value(run_cfg, k, v)
            info, secs = timed(lambda: preprocess.run(run_cfg, ["--direct_running_mode=in_memory"]))
            records = info["num_train"] + info["num_eval"]
            result[f"beam_{mode}"] = {
                "seconds": round(secs, 2), "records_per_s": round(records / secs, 1),
                "photos_per_s": round(len(files) / secs, 2), "num_train": info["num_train"],
                "num_eval": info["num_eval"], "num_rejected": info["num_rejected"],
                **{k: info[k] for k in ("num_train_photos", "skipped_flat", "skipped_over_cap") if k in info}}
        beam_patches = result["beam_patches"]
        beam_patches["train_patches_per_s"] = round(beam_patches["num_train"] / beam_patches["seconds"], 1)
        beam_patches["vs_bare_full"] = round(beam_patches["train_patches_per_s"]
                                             / result["bare_full"]["patches_per_s"], 3)
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
