"""Where the preprocess job's time goes per image: each per-image operation timed alone, at the real sizes.

    python bench/preprocess_ops.py [--images 400] [--rounds 5] [--input DIR] [--output FILE.json]

Takes --images files spread evenly over ../shared/data/faces-dev (sorted; the same mix as
bench/preprocess_scale.py's copies: 9% are 1024 px CelebA-HQ photos, resized first), decodes and crops them
as the job does (128 px HR, 32 px LR), then times, in --rounds interleaved rounds (so that a variant and its
baseline see the same machine load), every operation the job does per image or per tf.Transform batch of
100: the decode, the spill, the tf.Example and Arrow conversions, tf.Transform's analysis and transform
graphs (the real ones, from a small job run first), the PNG encodes, the degradation and the statistics
inside them, the output tf.Example, the gzip of the records. Prints the median and minimum ms per image of
each, and the PNG / gzip sizes. Variants (PNG and gzip levels, the statistics before issue 26) are timed
next to the job's choice.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import zlib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
FACES = os.path.join(os.path.dirname(REPO), "shared", "data", "faces-dev")
BATCH = 100  # the job's tf.Transform batch for 128 px crops (beam.TFT_BATCH_PIXELS)


def load_crops(folder: str, n: int):
    from bench.preprocess_scale import source_images
    from components import images
    from components.config import PreprocessConfig

    cfg = PreprocessConfig()
    files, crops = [], []
    rels = source_images(folder)
    # spread evenly over the whole set (faces-dev's 1024 px photos are at its end); a few spare for rejects
    picked = [rels[i * len(rels) // (n + 10)] for i in range(n + 10)] if n + 10 < len(rels) else rels
    for rel in picked:
        data = open(os.path.join(folder, rel), "rb").read()
        try:
            crop = images.training_crop(images.decode_rgb(data), cfg.crop_size, cfg.resize_short_side)
        except images.ImageRejected:
            continue
        files.append((rel, data))
        crops.append(crop)
    keep = [i * len(files) // n for i in range(min(n, len(files)))]  # n, still spread evenly
    return cfg, [files[i] for i in keep], [crops[i] for i in keep]


def make_graphs(files, work: str) -> tuple[str, str]:
    """(transform_fn, analysis graph): the job run on the first 200 files (center mode, defaults), its work
    folder kept for the SavedModel tf.Transform runs in the analysis (the graph up to the analyzers' inputs)."""
    from components import config, preprocess
    from components.preprocess import beam as pbeam

    inp = os.path.join(work, "in")
    for rel, data in files[:200]:
        os.makedirs(os.path.dirname(os.path.join(inp, rel)), exist_ok=True)
        open(os.path.join(inp, rel), "wb").write(data)
    c = config.Config(artifact_root=os.path.join(work, "art"), input=inp)
    saved = tempfile.tempdir, pbeam._remove_work_dir
    tempfile.tempdir, pbeam._remove_work_dir = work, lambda _d: None
    try:
        info = preprocess.run(c, [])
    finally:
        tempfile.tempdir, pbeam._remove_work_dir = saved
    tfn = os.path.join(work, "art", "datasets", info["dataset_id"], "transform_fn")
    found = [d for d, _, names in os.walk(work) if "saved_model.pb" in names and "tftransform_tmp" in d]
    # tf.Transform's temporary SavedModels: the analysis graph outputs the analyzers' inputs, not "hr"
    analysis = [d for d in found if _outputs(d).isdisjoint({"hr", "lr"})]
    assert len(analysis) == 1, found
    return tfn, analysis[0]


def _outputs(saved_model_dir: str) -> set:
    from tensorflow_transform.saved import saved_transform_io_v2

    return set(saved_transform_io_v2.SavedModelLoader(saved_model_dir).structured_outputs)


def _pixels_before(raw_bytes):
    """All pixels of a batch as [n, 3] float32: what the statistics were computed from before issue 26."""
    import tensorflow as tf

    return tf.reshape(tf.cast(tf.io.decode_raw(tf.strings.reduce_join(raw_bytes), tf.uint8), tf.float32), [-1, 3])


def timer(fn, per: int):
    """ms per image of one call of fn covering `per` images."""
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000 / per


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--input", default=FACES)
    ap.add_argument("--output")
    args = ap.parse_args()

    import numpy as np
    import tensorflow as tf
    from apache_beam.io.tfrecordio import _TFRecordUtil
    from tensorflow_transform import impl_helper, tf_utils
    from tensorflow_transform.saved import saved_transform_io_v2
    from tensorflow_transform.tf_metadata import metadata_io, schema_utils
    from tfx_bsl.coders import example_coder
    from tfx_bsl.tfxio import tensor_adapter, tf_example_record

    from components import images
    from components.degradation import degrade
    from components.logs import setup_logging
    from components.preprocess import beam as pbeam
    from components.preprocess.transform import _moments, raw_feature_spec

    setup_logging()
    cfg, files, crops = load_crops(args.input, args.images)
    n = len(crops) - len(crops) % BATCH
    files, crops = files[:n], crops[:n]
    work = tempfile.mkdtemp(prefix="bench-preprocess-ops-")
    try:
        tfn, analysis_dir = make_graphs(files, work)
        srcs = [os.path.join("/data/in", rel) for rel, _ in files]
        raws = [pbeam.unpack_crop(pbeam.pack_crop((rel, s, c)))[1] for (rel, _), s, c in zip(files, srcs, crops)]
        batches = [list(range(i, i + BATCH)) for i in range(0, n, BATCH)]

        schema = schema_utils.schema_from_feature_spec(raw_feature_spec(positions=False))
        tfxio = tf_example_record.TFExampleBeamRecord(physical_format="inmem", telemetry_descriptors=["bench"],
                                                      schema=schema)
        adapter = tensor_adapter.TensorAdapter(tfxio.TensorAdapterConfig())
        decoder = example_coder.ExamplesToRecordBatchDecoder(schema.SerializeToString())
        serialized = [pbeam.serialize_raw(r) for r in raws]
        record_batches = [decoder.DecodeBatch([serialized[i] for i in b]) for b in batches]
        feeds = [adapter.ToBatchTensors(rb, produce_eager_tensors=True) for rb in record_batches]

        loader = saved_transform_io_v2.SavedModelLoader(tfn)
        loader.finalize(list(feeds[0]), set(loader.structured_outputs))
        analysis = saved_transform_io_v2.SavedModelLoader(analysis_dir)
        analysis.finalize(list(feeds[0]), set(analysis.structured_outputs))
        outputs = [loader.apply_transform_model(f) for f in feeds]
        tmeta = metadata_io.read_metadata(os.path.join(os.path.dirname(tfn), "transformed_metadata"))
        converter = impl_helper.make_tensor_to_arrow_converter(tmeta.schema)
        out_rbs = [converter.convert({k: v for k, v in o.items()}) for o in outputs]
        instances = [d for rb in out_rbs for d in impl_helper.record_batch_to_instance_dicts(rb, tmeta.schema)]
        records = [pbeam._to_example(d) for d in instances]
        hr = [tf.constant(c) for c in crops]
        lr = [degrade(h) for h in hr]

        def graph(png_level: int, parts: str):
            """The preprocessing_fn's per-image map_fn over a batch, with only `parts` of its work."""
            def one(a):
                raw, h, w = a
                x = tf.reshape(tf.io.decode_raw(raw, tf.uint8), tf.stack([h, w, 3]))
                lo = degrade(x, cfg.scale) if "d" in parts else x[::4, ::4]
                hp = tf.io.encode_png(x, compression=png_level) if "h" in parts else tf.constant(b"")
                lp = tf.io.encode_png(lo, compression=png_level) if "l" in parts else tf.constant(b"")
                return hp, lp, tf.reshape(lo, [-1])

            @tf.function
            def f(raw, h, w):
                return tf.map_fn(one, (raw, h, w), fn_output_signature=(
                    tf.string, tf.string, tf.RaggedTensorSpec([None], tf.uint8)))
            return f

        @tf.function
        def stats_before(raw, h, w):
            """The statistics' per-batch work before issue 26: every pixel as float32, tft's batch reductions
            for tft.mean, tft.var, tft.min, tft.max (the LR mean's, on 1/16 of the pixels, left out)."""
            pixels = _pixels_before(raw)
            return (tf_utils.reduce_batch_count_mean_and_var(pixels, False),
                    tf_utils.reduce_batch_count_mean_and_var(pixels, False),
                    tf_utils.reduce_batch_minus_min_and_max(pixels, False),
                    tf_utils.reduce_batch_minus_min_and_max(pixels, False))

        @tf.function
        def stats_now(raw, h, w):
            """The same statistics from per-image int64 moments (transform._moments), in the map_fn."""
            def one(a):
                x = tf.reshape(tf.io.decode_raw(a[0], tf.uint8), tf.stack([a[1], a[2], 3]))
                return _moments(x)
            m = tf.map_fn(one, (raw, h, w), fn_output_signature=tf.TensorSpec([4, 3], tf.int64))
            return tf.reduce_sum(m[:, :2], 0), tf.reduce_min(m[:, 2], 0), tf.reduce_max(m[:, 3], 0)

        graph_args = [(tf.constant([raws[i]["hr_raw"] for i in b]), tf.fill([BATCH], 128), tf.fill([BATCH], 128))
                      for b in batches]
        variants = {"map_fn only (decode_raw, reshape, stride-4 LR)": graph(-1, ""),
                    "+ degrade": graph(-1, "d"),
                    "+ degrade + HR png (level 6)": graph(-1, "dh"),
                    "+ degrade + HR png + LR png (level 6)": graph(-1, "dhl"),
                    "+ degrade + HR png + LR png (level 1)": graph(1, "dhl"),
                    "HR statistics over float32 pixels, tft's batch reductions (before)": stats_before,
                    "HR statistics from per-image int64 moments (now)": stats_now}
        for f in variants.values():
            f(*graph_args[0])  # trace

        def decode_crop(subset):
            return [images.training_crop(images.decode_rgb(d), cfg.crop_size, cfg.resize_short_side) for _, d in subset]

        # the photos whose short side is over twice the crop are resized before the crop (faces-dev: the 1024 px)
        resized = [f for f in files if min(images.decode_rgb(f[1]).shape[:2]) > 2 * cfg.crop_size]
        others = [f for f in files if f not in resized]

        def stream_gzip(level):
            c = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # Beam's gzip: wbits 31
            total = 0
            for r in records:
                buf = io.BytesIO()
                _TFRecordUtil.write_record(buf, r)
                total += len(c.compress(buf.getvalue()))
            return total + len(c.flush())

        ops = {
            "decode + crop (Pillow), the mix": (lambda: decode_crop(files), n),
            f"decode + crop, only the photos resized first ({len(resized)} of {n})": (
                lambda: decode_crop(resized), len(resized)),
            f"decode + crop, only the others ({n - len(resized)} of {n})": (
                lambda: decode_crop(others), n - len(resized)),
            "md5 of the file": (lambda: [hashlib.md5(d).hexdigest() for _, d in files], n),
            "pack + unpack a spill record": (lambda: [pbeam.unpack_crop(pbeam.pack_crop((r, s, c)))
                                                      for (r, _), s, c in zip(files, srcs, crops)], n),
            "spill TFRecord framing (crc32c)": (
                lambda: [_TFRecordUtil.write_record(io.BytesIO(), pbeam.pack_crop((r, s, c)))
                         for (r, _), s, c in zip(files, srcs, crops)], n),
            "serialize_raw (tf.Example of the crop)": (lambda: [pbeam.serialize_raw(r) for r in raws], n),
            "tfxio: serialized -> Arrow RecordBatch": (
                lambda: [decoder.DecodeBatch([serialized[i] for i in b]) for b in batches], n),
            "TensorAdapter: Arrow -> tensors": (
                lambda: [adapter.ToBatchTensors(rb, produce_eager_tensors=True) for rb in record_batches], n),
            "tf.Transform analysis graph (real, batch 100)": (
                lambda: [analysis.apply_transform_model(f) for f in feeds], n),
            "tf.Transform apply (real transform_fn, batch 100)": (
                lambda: [loader.apply_transform_model(f) for f in feeds], n),
            **{f"graph: {k}": (lambda f=f: [f(*a) for a in graph_args], n) for k, f in variants.items()},
            "PNG encode HR 128 alone (eager, level 6)": (lambda: [tf.io.encode_png(h) for h in hr], n),
            "PNG encode HR 128 alone (eager, level 1)": (lambda: [tf.io.encode_png(h, compression=1) for h in hr], n),
            "PNG encode LR 32 alone (eager, level 6)": (lambda: [tf.io.encode_png(x) for x in lr], n),
            "PNG encode LR 32 alone (eager, level 1)": (lambda: [tf.io.encode_png(x, compression=1) for x in lr], n),
            "degrade alone (eager, one image)": (lambda: [degrade(h) for h in hr], n),
            "degrade (tf.function, batch 100)": (None, n),
            "tensors -> Arrow (output)": (lambda: [converter.convert(dict(o)) for o in outputs], n),
            "Arrow -> instance dicts (output)": (
                lambda: [impl_helper.record_batch_to_instance_dicts(rb, tmeta.schema) for rb in out_rbs], n),
            "output tf.Example (make_example)": (lambda: [pbeam._to_example(d) for d in instances], n),
            "output TFRecord framing (crc32c)": (lambda: [_TFRecordUtil.write_record(io.BytesIO(), r)
                                                          for r in records], n),
            "gzip of the records (zlib level 6, Beam's)": (lambda: stream_gzip(6), n),
            "gzip of the records (zlib level 1)": (lambda: stream_gzip(1), n),
            "gzip of the records (zlib level 0: stored)": (lambda: stream_gzip(0), n),
        }
        batched_degrade = tf.function(lambda x: degrade(x, cfg.scale))
        hr_batches = [tf.stack([hr[i] for i in b]) for b in batches]
        batched_degrade(hr_batches[0])
        ops["degrade (tf.function, batch 100)"] = (lambda: [batched_degrade(x) for x in hr_batches], n)

        times = {k: [] for k in ops}
        for _ in range(args.rounds):
            for name, (fn, per) in ops.items():
                times[name].append(timer(fn, per))
        result = {"bench": "preprocess_ops", "images": n, "rounds": args.rounds, "load_avg_end": os.getloadavg(),
                  "ms_per_image_median": {k: round(statistics.median(v), 3) for k, v in times.items()},
                  "ms_per_image_min": {k: round(min(v), 3) for k, v in times.items()}}
        png = {lvl: ([len(tf.io.encode_png(h, compression=lvl).numpy()) for h in hr],
                     [len(tf.io.encode_png(x, compression=lvl).numpy()) for x in lr]) for lvl in (-1, 1)}
        result["bytes_per_image"] = {
            "hr_png_level6": round(float(np.mean(png[-1][0]))), "hr_png_level1": round(float(np.mean(png[1][0]))),
            "lr_png_level6": round(float(np.mean(png[-1][1]))), "lr_png_level1": round(float(np.mean(png[1][1]))),
            "record_uncompressed": round(float(np.mean([len(r) for r in records]))),
            "record_gzip6": round(stream_gzip(6) / n), "record_gzip1": round(stream_gzip(1) / n),
            "record_gzip0": round(stream_gzip(0) / n)}
        same = all(np.array_equal(tf.io.decode_png(tf.io.encode_png(h, compression=1)).numpy(), h.numpy()) for h in hr)
        result["png_level1_decodes_to_the_same_pixels"] = bool(same)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(result, indent=2)
    if args.output:
        open(args.output, "w").write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
