"""The preprocess component (examples+transform): raw images -> validated 128/32 TFRecord pairs, as a Beam job.

Flow: list inputs and fingerprint them (the dataset id) -> skip if that dataset is committed ->
Beam: read + decode + crop each file (rejects go to rejected.jsonl) -> tensorflow-transform
(analyze the train split, transform both) -> gzip TFRecord shards -> dataset.json written last.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass

import apache_beam as beam
from apache_beam.metrics import Metrics

from components import dataset, images, provenance, storage
from components.config import Config, PreprocessConfig
from components.errors import UserError

log = logging.getLogger("preprocess")
FORMAT_VERSION = 1
# Config keys that change the records; num_shards does not (same records, other files).
FINGERPRINT_KEYS = ("crop_size", "scale", "resize_short_side", "eval_fraction", "eval_count", "image_extensions")


class PreprocessError(UserError):
    """The preprocessing job cannot run or its result fails a check; the message says why."""


@dataclass(frozen=True)
class InputFile:
    uri: str
    relpath: str   # below the input root: what the split hash and the fingerprint see
    md5: str


# ----------------------------------------------------------------------------- planning (launcher side)

def _input_root(input_uri: str) -> str:
    """The folder that relative paths are taken from: the input folder, a glob's fixed prefix, a file's folder."""
    norm = storage.normalize(input_uri)
    parts = norm.split("/")
    for i, part in enumerate(parts):
        if any(ch in part for ch in "*?["):
            return "/".join(parts[:i])
    return norm if storage.isdir(norm) else norm.rsplit("/", 1)[0]


def split_hash(relpath: str) -> float:
    """A deterministic number in [0, 1) per relative path."""
    return int(hashlib.sha256(relpath.encode("utf-8")).hexdigest()[:16], 16) / float(1 << 64)


def check_split_config(cfg: PreprocessConfig) -> None:
    if cfg.eval_count is not None and cfg.eval_count < 0:
        raise PreprocessError(f"eval_count must be >= 0, got {cfg.eval_count}")
    if not 0.0 <= cfg.eval_fraction < 1.0:
        raise PreprocessError(f"eval_fraction must be in [0, 1), got {cfg.eval_fraction}")


def eval_by_count(relpaths: list[str], count: int) -> set[str]:
    """The `count` paths with the lowest split hashes: stable when other files come and go."""
    return set(sorted(relpaths, key=lambda r: (split_hash(r), r))[:count])


def split_of(relpath: str, cfg: PreprocessConfig, eval_set: set[str] | None = None) -> str:
    if cfg.eval_count is not None:
        return "eval" if relpath in eval_set else "train"
    return "eval" if split_hash(relpath) < cfg.eval_fraction else "train"


def plan_inputs(input_uri: str, cfg: PreprocessConfig) -> tuple[list[InputFile], list[str]]:
    """(image files with their checksums, files ignored for their extension)."""
    extensions = [e.strip() for e in cfg.image_extensions.split(",") if e.strip()]
    try:
        listed = storage.list_files(input_uri)
    except storage.StorageError as exc:
        raise PreprocessError(str(exc)) from None
    root = _input_root(input_uri)
    wanted = [u for u in listed if storage.matches_extension(u, extensions)]
    ignored = [u for u in listed if u not in set(wanted)]
    if not wanted:
        raise PreprocessError(f"{input_uri}: no image files found (extensions {', '.join(extensions)}; "
                              f"{len(ignored)} other files ignored)")
    rels = [storage.relpath(u, root) for u in wanted]
    out, start, last = [], time.time(), time.time()
    for i, (uri, rel) in enumerate(zip(wanted, rels), 1):
        out.append(InputFile(uri, rel, storage.content_md5(uri)))
        if time.time() - last > 10:
            last = time.time()
            rate = i / (last - start)
            log.info("fingerprinting inputs: %d/%d files, %.0f files/s, ETA %.0f s", i, len(wanted), rate,
                     (len(wanted) - i) / rate)
    return out, ignored


def dataset_id_for(files: list[InputFile], cfg: PreprocessConfig) -> str:
    """Fingerprint of the input bytes (md5 per relative path) and the record-shaping config only."""
    payload = {
        "format_version": FORMAT_VERSION,
        "config": {k: getattr(cfg, k) for k in FINGERPRINT_KEYS},
        "files": sorted((f.relpath, f.md5) for f in files),
    }
    return "ds-" + hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- Beam transforms (worker side)

class DecodeAndCrop(beam.DoFn):
    """(uri, relpath) -> main output (relpath, raw example) or a 'rejected' JSON line."""

    REJECTED = "rejected"

    def __init__(self, crop_size: int, resize_short_side: int):
        self.crop_size = crop_size
        self.resize_short_side = resize_short_side
        self.accepted = Metrics.counter("preprocess", "accepted")
        self.rejected = {r: Metrics.counter("preprocess", f"rejected_{r}") for r in images.REASONS}

    def setup(self):
        self._count, self._start, self._last = 0, time.time(), time.time()

    def process(self, element):
        uri, relpath = element
        try:
            try:
                data = storage.read_bytes(uri)
            except storage.StorageError as exc:
                raise images.ImageRejected(images.READ_ERROR, str(exc)) from None
            crop = images.training_crop(images.decode_rgb(data), self.crop_size, self.resize_short_side)
        except images.ImageRejected as exc:
            self.rejected[exc.reason].inc()
            yield beam.pvalue.TaggedOutput(self.REJECTED, json.dumps(
                {"source": uri, "reason": exc.reason, "details": exc.details}, sort_keys=True))
            return
        self.accepted.inc()
        self._progress()
        yield relpath, {"hr_raw": crop.tobytes(), "source": uri.encode("utf-8")}

    def _progress(self):
        self._count += 1
        now = time.time()
        if now - self._last > 10:
            self._last = now
            logging.getLogger("preprocess").info(
                "worker %d: %d images decoded, %.1f img/s", os.getpid(), self._count,
                self._count / (now - self._start))


def _to_example(instance: dict) -> bytes:
    return dataset.make_example(instance["hr"], instance["lr"], instance["source"])


def _jsonl(lines: list[str]) -> str:
    return "".join(line + "\n" for line in sorted(lines))


def build_pipeline(p: beam.Pipeline, files: list[InputFile], cfg: PreprocessConfig,
                   out_dir: str, work_dir: str) -> None:
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

    from components.preprocess.transform import RAW_FEATURE_SPEC, make_preprocessing_fn

    raw_metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(RAW_FEATURE_SPEC))
    decoded = (
        p
        | "ListInputs" >> beam.Create([(f.uri, f.relpath) for f in files])
        | "Distribute" >> beam.Reshuffle()
        | "DecodeAndCrop" >> beam.ParDo(DecodeAndCrop(cfg.crop_size, cfg.resize_short_side)).with_outputs(
            DecodeAndCrop.REJECTED, main="accepted"))
    # The split is decided after validation, so eval_count counts accepted images.
    if cfg.eval_count is None:
        accepted = decoded.accepted | "AssignSplit" >> beam.Map(lambda kv: (split_of(kv[0], cfg), kv[1]))
    else:
        eval_set = (decoded.accepted | "AcceptedPaths" >> beam.Keys()
                    | "AllPaths" >> beam.combiners.ToList()
                    | "EvalSet" >> beam.Map(eval_by_count, cfg.eval_count))
        accepted = decoded.accepted | "AssignSplit" >> beam.Map(
            lambda kv, eval_set: (split_of(kv[0], cfg, eval_set), kv[1]),
            eval_set=beam.pvalue.AsSingleton(eval_set))
    raw = {split: (accepted | f"Select{split}" >> beam.Filter(lambda kv, s=split: kv[0] == s)
                   | f"Drop{split}Key" >> beam.Values())
           for split in dataset.SPLITS}

    with tft_beam.Context(temp_dir=os.path.join(work_dir, "tft"), force_tf_compat_v1=False):
        (train_data, _train_meta), transform_fn = (
            (raw["train"], raw_metadata)
            | "AnalyzeAndTransformTrain" >> tft_beam.AnalyzeAndTransformDataset(
                make_preprocessing_fn(cfg.crop_size, cfg.scale), output_record_batches=False))
        eval_data, _eval_meta = (
            ((raw["eval"], raw_metadata), transform_fn)
            | "TransformEval" >> tft_beam.TransformDataset(output_record_batches=False))
        _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(out_dir)

    for split, data in (("train", train_data), ("eval", eval_data)):
        _ = (data
             | f"Encode{split}" >> beam.Map(_to_example)
             | f"Write{split}" >> beam.io.WriteToTFRecord(
                 os.path.join(out_dir, split), file_name_suffix=".tfrecord.gz",
                 num_shards=cfg.num_shards, compression_type=beam.io.filesystem.CompressionTypes.GZIP))

    _ = (decoded[DecodeAndCrop.REJECTED]
         | "CollectRejected" >> beam.combiners.ToList()
         | "FormatRejected" >> beam.Map(_jsonl)
         | "WriteRejected" >> beam.io.WriteToText(os.path.join(out_dir, "rejected.jsonl"),
                                                  shard_name_template="", append_trailing_newlines=False))
    _ = (accepted
         | "SplitOf" >> beam.Keys()
         | "CountPerSplit" >> beam.combiners.Count.PerElement()
         | "CollectCounts" >> beam.combiners.ToList()
         | "FormatCounts" >> beam.Map(lambda kvs: json.dumps(dict(kvs), sort_keys=True))
         | "WriteCounts" >> beam.io.WriteToText(os.path.join(work_dir, "counts.json"), shard_name_template=""))


# ----------------------------------------------------------------------------- the job

def _statistics(out_dir: str, crop_size: int) -> dict:
    """Read the analyzers' results back out of the transform graph (they are constants in it)."""
    import numpy as np
    import tensorflow as tf
    import tensorflow_transform as tft

    from components.preprocess.transform import STATS_PREFIX

    tft_out = tft.TFTransformOutput(out_dir)
    dummy = {"hr_raw": tf.constant([bytes(crop_size * crop_size * 3)]), "source": tf.constant([b""])}
    outputs = tft_out.transform_raw_features(dummy, drop_unused_features=True)
    return {k[len(STATS_PREFIX):]: [round(float(v), 4) for v in np.asarray(outputs[k])[0]]
            for k in sorted(outputs) if k.startswith(STATS_PREFIX)}


def _pipeline_options(beam_args: list[str]):
    """Beam options from the flags the job itself does not define; a flag Beam does not know is an error."""
    from apache_beam.options.pipeline_options import PipelineOptions

    beam_log = logging.getLogger("apache_beam.options.pipeline_options")
    level = beam_log.level
    beam_log.setLevel(logging.ERROR)  # its own "Discarding unparseable args" warning would say it twice
    try:
        options = PipelineOptions(list(beam_args))
        unknown = set(options.get_all_options(retain_unknown_options=True)) - set(options.get_all_options())
    finally:
        beam_log.setLevel(level)
    if unknown:
        flags = sorted({a.split("=")[0] for a in beam_args
                        if a.startswith("--") and a[2:].split("=")[0].replace("-", "_") in unknown})
        raise PreprocessError(f"unknown flag {', '.join(flags) or sorted(unknown)}: "
                              "neither a preprocess flag nor a Beam pipeline option")
    return options


def run(cfg: Config, beam_args: list[str] | None = None) -> dict:
    """Run the component; returns dataset.json's content. Skips work already committed."""
    input_uri = cfg.input
    if not input_uri:
        from components import sample_data
        input_uri = sample_data.write_sample_images()
        log.info("no --input given: using the built-in sample (scikit-image photos, tiled) at %s", input_uri)
    pcfg = cfg.preprocess
    if pcfg.crop_size % pcfg.scale:
        raise PreprocessError(f"crop_size {pcfg.crop_size} is not a multiple of scale {pcfg.scale}")
    check_split_config(pcfg)
    files, ignored = plan_inputs(input_uri, pcfg)
    dataset_id = dataset_id_for(files, pcfg)
    out_uri = dataset.dataset_uri(cfg.artifact_root, dataset_id)
    log.info("%d image files (%d ignored for their extension) -> %s", len(files), len(ignored), out_uri)
    if storage.exists(storage.join(out_uri, dataset.MARKER)):
        if not cfg.force:
            log.info("dataset %s is already committed: nothing to do (--force redoes it)", dataset_id)
            return {**dataset.load_info(out_uri), "skipped": True}
        storage.delete(out_uri, recursive=True)

    options = _pipeline_options(beam_args or [])
    work_dir = tempfile.mkdtemp(prefix="preprocess-work-")
    start = time.time()
    try:
        with storage.staged_output(out_uri, dataset.MARKER) as out_dir:
            pipeline = beam.Pipeline(options=options)
            build_pipeline(pipeline, files, pcfg, out_dir, work_dir)
            result = pipeline.run()
            result.wait_until_finish()
            counts = json.loads(open(os.path.join(work_dir, "counts.json")).read() or "{}")
            rejected = [json.loads(line) for line in open(os.path.join(out_dir, "rejected.jsonl")) if line.strip()]
            num_train, num_eval = counts.get("train", 0), counts.get("eval", 0)
            if num_train + num_eval + len(rejected) != len(files):
                raise PreprocessError(f"inputs lost: {len(files)} read but {num_train} train + {num_eval} eval "
                                      f"+ {len(rejected)} rejected")
            if num_train == 0:
                raise PreprocessError(f"no training image was accepted ({num_eval} went to eval, {len(rejected)} "
                                      f"rejected; first rejections below)\n" + _jsonl([json.dumps(r) for r in rejected[:10]]))
            shards = {s: sorted(n for n in os.listdir(out_dir) if n.startswith(s + "-")) for s in dataset.SPLITS}
            info = {
                "dataset_id": dataset_id,
                "format_version": FORMAT_VERSION,
                "input": storage.normalize(input_uri),
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "num_train": num_train,
                "num_eval": num_eval,
                "num_rejected": len(rejected),
                "num_files_read": len(files),
                "num_ignored_files": len(ignored),
                "rejected_by_reason": _count_by(rejected, "reason"),
                "shapes": {"hr": [pcfg.crop_size] * 2 + [3],
                           "lr": [pcfg.crop_size // pcfg.scale] * 2 + [3]},
                "encoding": dataset.ENCODING,
                "record_features": list(dataset.RECORD_FEATURES),
                "statistics": {"split": "train", "units": "pixel values 0-255, per RGB channel",
                               **_statistics(out_dir, pcfg.crop_size)},
                "preprocess": asdict(pcfg),
                "shards": shards,
                "runner": options.get_all_options().get("runner") or "DirectRunner",
                "seconds": round(time.time() - start, 1),
                "code_version": provenance.code_version(),
                "package_versions": provenance.package_versions(),
            }
            with open(os.path.join(out_dir, dataset.MARKER), "w") as f:
                json.dump(info, f, indent=2, sort_keys=True)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    log.info("dataset %s: %d train, %d eval, %d rejected in %.1f s", dataset_id, num_train, num_eval,
             len(rejected), time.time() - start)
    return info


def _count_by(rows: list[dict], key: str) -> dict:
    out: dict = {}
    for r in rows:
        out[r[key]] = out.get(r[key], 0) + 1
    return dict(sorted(out.items()))
