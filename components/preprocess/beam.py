"""The preprocess component (examples+transform): raw images -> validated HR/LR TFRecord pairs, as a Beam job.

Flow: list inputs and predict their fingerprint (the dataset id; md5s from the listing on object
stores) -> skip if that dataset is committed -> Beam: match the input files, read + fingerprint +
decode + crop each one (rejects go to rejected.jsonl) -> tensorflow-transform (analyze the train
split, transform both) -> gzip TFRecord shards -> the id of what the job read must equal the
prediction -> dataset.json written last. The job graph holds the input URI, never the file list.
crop_mode `center` keeps one 128/32 crop per photo; `patches` cuts train photos into full-resolution
patches and keeps eval photos whole (see `CutPatches`).
"""

from __future__ import annotations

import datetime
import gzip
import hashlib
import json
import logging
import os
import shutil
import socket
import struct
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass

import apache_beam as beam
import numpy as np
from apache_beam import coders
from apache_beam.io import tfrecordio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.metrics import Metrics

from components import dataset, images, logs, provenance, storage
from components.config import Config, PreprocessConfig
from components.errors import UserError

log = logging.getLogger("preprocess")
FORMAT_VERSION = 1
# Pixels per tf.Transform batch: 100 crops of 128 px. Fixed: Beam's adaptive batching grows batches to
# 1,000 crops, and the analysis holds each batch as float32 pixels (1,000 x 128 x 128 x 3 x 4 bytes =
# 197 MB, a few copies). Larger images go in fewer per batch (an eval photo of 1 Mpx: one).
TFT_BATCH_PIXELS = 100 * 128 * 128
CROP_MODES = ("center", "patches")
# Config keys that change the records; num_shards does not (same records, other files). Center mode's
# list is the one its dataset ids were always made from; the patch keys enter only in patches mode.
FINGERPRINT_KEYS = ("crop_size", "scale", "resize_short_side", "eval_fraction", "eval_count", "image_extensions")
PATCH_FINGERPRINT_KEYS = ("crop_mode", "patch_size", "patch_stride", "min_patch_detail", "max_patches_per_image",
                          "max_eval_pixels", "scale", "eval_fraction", "eval_count", "image_extensions")


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


def check_crop_config(cfg: PreprocessConfig) -> None:
    """The keys of the chosen crop_mode only: patch keys do not bother a center-mode user, nor the reverse."""
    if cfg.scale <= 0:
        raise PreprocessError(f"scale must be > 0, got {cfg.scale}")
    if cfg.crop_mode not in CROP_MODES:
        raise PreprocessError(f"crop_mode must be one of {', '.join(CROP_MODES)}, got {cfg.crop_mode!r}")
    if cfg.crop_mode == "center":
        if cfg.crop_size % cfg.scale:
            raise PreprocessError(f"crop_size {cfg.crop_size} is not a multiple of scale {cfg.scale}")
        return
    if cfg.patch_size <= 0 or cfg.patch_size % cfg.scale:
        raise PreprocessError(f"patch_size must be a positive multiple of scale {cfg.scale}, got {cfg.patch_size}")
    if not 0 < cfg.patch_stride <= cfg.patch_size:  # a longer step would leave pixels no patch covers
        raise PreprocessError(f"patch_stride must be > 0 and at most patch_size {cfg.patch_size}, got {cfg.patch_stride}")
    if cfg.min_patch_detail < 0:
        raise PreprocessError(f"min_patch_detail must be >= 0, got {cfg.min_patch_detail}")
    if cfg.max_patches_per_image is not None and cfg.max_patches_per_image < 1:
        raise PreprocessError(f"max_patches_per_image must be >= 1 (or unset: no cap), got {cfg.max_patches_per_image}")
    if cfg.max_eval_pixels < cfg.patch_size ** 2:
        raise PreprocessError(f"max_eval_pixels must be at least patch_size^2 = {cfg.patch_size ** 2}, "
                              f"got {cfg.max_eval_pixels}")


def eval_rank(relpath: str) -> tuple:
    """Order of the eval_count choice: the lowest split hashes (ties by path) go to eval, so the set stays
    stable when other files come and go."""
    return split_hash(relpath), relpath


def eval_by_count(relpaths: list[str], count: int) -> set[str]:
    """The `count` paths the job puts in eval (it takes them with a bounded combiner on `eval_rank`)."""
    return set(sorted(relpaths, key=eval_rank)[:count])


def split_of(relpath: str, cfg: PreprocessConfig, eval_set: set[str] | None = None) -> str:
    if cfg.eval_count is not None:
        return "eval" if relpath in eval_set else "train"
    return "eval" if split_hash(relpath) < cfg.eval_fraction else "train"


def plan_inputs(input_uri: str, cfg: PreprocessConfig) -> tuple[list[InputFile], list[str]]:
    """(image files with their checksums, files ignored for their extension), from one listing: on S3
    (single-part ETags) and GCS the listing carries each file's md5, so nothing is read; local files
    are hashed here. This is the launcher's prediction of the dataset id (to name the output and skip
    a committed dataset); the pipeline lists and reads the inputs itself and checks it."""
    extensions = cfg.extensions()
    try:
        listed = storage.list_files_info(input_uri)
    except storage.StorageError as exc:
        raise PreprocessError(str(exc)) from None
    root = _input_root(input_uri)
    wanted = sorted(u for u in listed if storage.matches_extension(u, extensions))
    ignored = sorted(u for u in listed if not storage.matches_extension(u, extensions))
    if not wanted:
        raise PreprocessError(f"{input_uri}: no image files found (extensions {', '.join(extensions)}; "
                              f"{len(ignored)} other files ignored)")
    rels = [storage.relpath(u, root) for u in wanted]
    out, start, last = [], time.time(), time.time()
    for i, (uri, rel) in enumerate(zip(wanted, rels), 1):
        out.append(InputFile(uri, rel, storage.content_md5(uri, listed[uri])))
        if time.time() - last > 10:
            last = time.time()
            rate = i / (last - start)
            log.info("fingerprinting inputs: %d/%d files, %.0f files/s, ETA %s", i, len(wanted), rate,
                     logs.eta((len(wanted) - i) / rate))
    return out, ignored


def dataset_id_for(files: list[InputFile], cfg: PreprocessConfig) -> str:
    """Fingerprint of the input bytes (md5 per relative path) and the record-shaping config only."""
    return dataset_id_of(((f.relpath, f.md5) for f in files), cfg)


def dataset_id_of(pairs, cfg: PreprocessConfig) -> str:
    """dataset_id_for from (relpath, md5) pairs: what the pipeline computes from the bytes it read."""
    payload = {
        "format_version": FORMAT_VERSION,
        "config": {k: getattr(cfg, k) for k in (PATCH_FINGERPRINT_KEYS if cfg.crop_mode == "patches"
                                                else FINGERPRINT_KEYS)},
        "files": sorted(pairs),
    }
    return "ds-" + hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- Beam transforms (worker side)

def _process_id() -> str:
    """This process, across machines: where a DoFn was built (the launcher) vs where it runs."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _worker_logging(launcher: str | None) -> None:
    """In a worker process (not the `launcher` that built the DoFn), give the progress logger its own stderr
    handler at INFO: what a worker's root logger does with INFO lines is the runner's business. Beam's
    multi-processing workers forward it to the runner, which drops them; in an EXTERNAL worker pool one of
    two SDK harnesses had a root StreamHandler at WARNING (as logging.basicConfig leaves it), which swallowed
    them there while the other worker printed. In the launcher itself (in-memory or multi-threading runner)
    the caller's logging setup decides."""
    if launcher == _process_id():
        return
    logger = logging.getLogger("preprocess")
    if not any(getattr(h, "_srgan_progress", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s", "%H:%M:%S"))
        handler._srgan_progress = True
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


class Progress:
    """Count, rate and ETA of one stage in one worker process, logged every `every` seconds and at the end
    of each bundle. `total` is the whole job's count for the stage; with several workers each one sees
    only its share, so its ETA is an upper bound."""

    def __init__(self, stage: str, launcher: str | None = None, every: float = 10.0):
        _worker_logging(launcher)
        self.stage, self.every = stage, every
        self.count, self.start, self.last, self.logged, self.done = 0, None, 0.0, 0, False

    def tick(self, total: int | None = None) -> None:
        now = time.time()
        if self.start is None:
            self.start = self.last = now
        self.count += 1
        if now - self.last >= self.every:
            self.log(total, now)

    def log(self, total: int | None = None, now: float | None = None, final: bool = False) -> None:
        now = now or time.time()
        if self.start is None or (self.done if final else self.count == self.logged):
            return
        self.last, self.logged, self.done = now, self.count, self.done or final
        rate = self.count / max(now - self.start, 1e-6)
        of = f" of {total:,}" if total else ""
        eta = f", ETA {logs.eta(max(total - self.count, 0) / rate)}" if total and rate and not final else ""
        logging.getLogger("preprocess").info("%s [pid %d]: %s%s images%s, %.1f img/s%s", self.stage, os.getpid(),
                                             "done, " if final else "", f"{self.count:,}", of, rate, eta)


class MatchInputs(beam.DoFn):
    """The input URI (folder, glob or file) -> (uri, relpath) of each image file below it; the other files
    go to 'ignored'. Beam's own fileio.MatchFiles would do for local paths and gs://, but s3:// would need
    apache-beam[aws] (boto3), whose botocore pins clash with s3fs's: the job lists and reads through the
    storage module (fsspec: local, s3fs, gcsfs), in the workers, as it always read."""

    IGNORED = "ignored"

    def __init__(self, root: str, extensions: tuple[str, ...]):
        self.root, self.extensions = root, tuple(extensions)

    def process(self, input_uri):
        for uri in storage.list_files(input_uri):
            if storage.matches_extension(uri, self.extensions):
                yield uri, storage.relpath(uri, self.root)
            else:
                yield beam.pvalue.TaggedOutput(self.IGNORED, uri)


class DecodeAndCrop(beam.DoFn):
    """(uri, relpath) -> main output (relpath, uri, pixels) or a 'rejected' JSON line, and for every file
    its 'fingerprint' (relpath, md5 of the bytes read; None when it could not be read). The pixels are
    the center crop, or in patches mode the whole photo (cut later, once its split is known)."""

    REJECTED = "rejected"
    FINGERPRINT = "fingerprint"

    def __init__(self, cfg: PreprocessConfig, total: int = 0):
        self.cfg = cfg
        self.total = total  # the launcher's count of input files: progress only
        self.launcher = _process_id()
        self.accepted = Metrics.counter("preprocess", "accepted")
        self.rejected = {r: Metrics.counter("preprocess", f"rejected_{r}") for r in images.REASONS}

    def setup(self):
        self._progress = Progress("decode", self.launcher)

    def process(self, element):
        uri, relpath = element
        self._progress.tick(self.total)
        try:
            try:
                data = storage.read_bytes(uri)
            except storage.StorageError as exc:
                yield beam.pvalue.TaggedOutput(self.FINGERPRINT, (relpath, None))
                raise images.ImageRejected(images.READ_ERROR, str(exc)) from None
            yield beam.pvalue.TaggedOutput(self.FINGERPRINT, (relpath, hashlib.md5(data).hexdigest()))
            crop = self._cut(images.decode_rgb(data))
        except images.ImageRejected as exc:
            self.rejected[exc.reason].inc()
            yield beam.pvalue.TaggedOutput(self.REJECTED, json.dumps(
                {"source": uri, "reason": exc.reason, "details": exc.details}, sort_keys=True))
            return
        self.accepted.inc()
        yield relpath, uri, crop

    def _cut(self, rgb):
        if self.cfg.crop_mode == "patches":
            images.check_min_side(rgb, self.cfg.patch_size)
            return rgb
        return images.training_crop(rgb, self.cfg.crop_size, self.cfg.resize_short_side)

    def finish_bundle(self):
        self._progress.log(self.total, final=self._progress.count >= self.total)


_SHARED_PROGRESS: dict[tuple[str, str], Progress] = {}


class CountProgress(beam.DoFn):
    """Passes elements through, logging the stage's progress; `counts` (a side input) gives the total.

    Instances with the same (stage, run) in one process share one counter: the train and eval transforms
    run interleaved in one stage, so they report together."""

    def __init__(self, stage: str, splits: tuple[str, ...], run: str):
        self.stage, self.splits, self.run = stage, splits, run
        self.launcher = _process_id()

    def setup(self):
        self._progress = _SHARED_PROGRESS.setdefault((self.stage, self.run), Progress(self.stage, self.launcher))
        self._total = None

    def process(self, element, counts):
        self._total = sum(counts.get(s, 0) for s in self.splits)
        self._progress.tick(self._total)
        yield element

    def finish_bundle(self):
        if self._total is not None:
            self._progress.log(self._total, final=self._progress.count >= self._total)


_SPILL_HEADER = struct.Struct("<IIII")  # relpath length, uri length, height, width


def pack_crop(element) -> bytes:
    """(relpath, uri, uint8 [h, w, 3]) -> one spill record: the header, the two strings, the pixels."""
    relpath, uri, pixels = element
    rel, src = relpath.encode("utf-8"), uri.encode("utf-8")
    return _SPILL_HEADER.pack(len(rel), len(src), *pixels.shape[:2]) + rel + src + pixels.tobytes()


def unpack_crop(record: bytes) -> tuple[str, dict]:
    """A spill record -> (relpath, the raw example the preprocessing_fn takes)."""
    n_rel, n_src, height, width = _SPILL_HEADER.unpack_from(record)
    start = _SPILL_HEADER.size
    rel = record[start:start + n_rel].decode("utf-8")
    src = record[start + n_rel:start + n_rel + n_src]
    return rel, {"hr_raw": record[start + n_rel + n_src:], "height": height, "width": width, "source": src}


def serialize_raw(raw: dict) -> bytes:
    """A raw example (raw_feature_spec: bytes and ints) as a serialized tf.Example, in a new message each time."""
    import tensorflow as tf

    def feature(value):
        if isinstance(value, bytes):
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
    return tf.train.Example(features=tf.train.Features(
        feature={name: feature(value) for name, value in raw.items()})).SerializeToString()


# zlib level of the dataset's gzip TFRecord shards: 0 (stored blocks). The records are PNG bytes, which do not
# compress: Beam's GZIP (always level 6) saved 0.2% of the size for about 0.8 ms per record, level 1 the same
# time. Stored gzip keeps the files what every reader expects (*.tfrecord.gz, GZIP).
RECORD_GZIP_LEVEL = 0


class _ClosingGzipFile(gzip.GzipFile):
    """A gzip stream over a file it owns: closing it closes the file too (GzipFile leaves a given file open)."""

    def __init__(self, raw, level: int):
        super().__init__(fileobj=raw, mode="wb", compresslevel=level, mtime=0)
        self._raw = raw

    def close(self):
        try:
            super().close()
        finally:
            self._raw.close()


class GzipTFRecordSink(tfrecordio._TFRecordSink):
    """Beam's TFRecord sink (same shard names and record framing), gzip at RECORD_GZIP_LEVEL."""

    def __init__(self, file_path_prefix: str, num_shards: int, level: int = RECORD_GZIP_LEVEL):
        super().__init__(file_path_prefix, coders.BytesCoder(), ".tfrecord.gz", num_shards, None,
                         CompressionTypes.UNCOMPRESSED)
        self.level = level

    def open(self, temp_path):
        return _ClosingGzipFile(super().open(temp_path), self.level)


def _to_example(instance: dict) -> bytes:
    position = tuple(int(instance[k]) for k in dataset.POSITION_FEATURES) if "patch_top" in instance else None
    return dataset.make_example(instance["hr"], instance["lr"], instance["source"], position)


def _batch_size(pixels_per_image: int) -> int:
    return max(1, TFT_BATCH_PIXELS // pixels_per_image)


def _jsonl(lines: list[str]) -> str:
    return "".join(line + "\n" for line in sorted(lines))


class AssignSplit(beam.DoFn):
    """(relpath, raw) -> (split, raw); with eval_count the eval set (at most eval_count paths) is a side input."""

    def __init__(self, cfg: PreprocessConfig):
        self.cfg = cfg

    def process(self, element, eval_paths=None):
        if eval_paths is not None and not isinstance(eval_paths, set):
            eval_paths = set(eval_paths)
        yield split_of(element[0], self.cfg, eval_paths), element[1]


class CutPatches(beam.DoFn):
    """Patches mode, after the split: (split, raw photo) -> (split, raw example) per record.

    A train photo gives its `patch_grid` patches (edges: the last row and column aligned to the border)
    minus the flat ones (`min_patch_detail`), at most `max_patches_per_image` of them, evenly spaced; its
    tally (kept, flat, over the cap) goes to the 'tally' output. An eval photo gives one record: the photo
    whole, or its centered `eval_region` (sides cut to multiples of the scale, within max_eval_pixels).
    Each record carries its top-left position in the photo.
    """

    TALLY = "tally"

    def __init__(self, cfg: PreprocessConfig):
        self.cfg = cfg

    def process(self, element):
        split, raw = element
        photo = np.frombuffer(raw["hr_raw"], np.uint8).reshape(raw["height"], raw["width"], 3)
        if split == "eval":
            top, left, h, w = images.eval_region(*photo.shape[:2], self.cfg.scale, self.cfg.max_eval_pixels)
            yield split, _raw_region(photo, raw["source"], top, left, h, w)
            return
        size = self.cfg.patch_size
        grid = images.patch_grid(*photo.shape[:2], size, self.cfg.patch_stride)
        detailed = [(t, l) for t, l in grid
                    if images.patch_detail(photo[t:t + size, l:l + size]) >= self.cfg.min_patch_detail]
        kept = [detailed[i] for i in images.select_evenly(len(detailed), self.cfg.max_patches_per_image)]
        for top, left in kept:
            yield split, _raw_region(photo, raw["source"], top, left, size, size)
        yield beam.pvalue.TaggedOutput(self.TALLY, (len(kept), len(grid) - len(detailed), len(detailed) - len(kept)))


def _raw_region(photo, source: bytes, top: int, left: int, h: int, w: int) -> dict:
    return {"hr_raw": np.ascontiguousarray(photo[top:top + h, left:left + w]).tobytes(), "height": h, "width": w,
            "source": source, "patch_top": top, "patch_left": left}


PATCH_TALLY = ("kept", "skipped_flat", "skipped_over_cap")


def _inputs_read(pairs: list, cfg: PreprocessConfig, num_ignored: int) -> str:
    unreadable = sorted(rel for rel, md5 in pairs if md5 is None)
    return json.dumps({"dataset_id": dataset_id_of(pairs, cfg), "num_files_read": len(pairs) - len(unreadable),
                       "num_ignored_files": num_ignored, "unreadable": unreadable[:10],
                       "num_unreadable": len(unreadable)}, sort_keys=True)


def _add_tallies(tallies) -> tuple[int, int, int]:
    total = (0, 0, 0)
    for tally in tallies:
        total = tuple(a + b for a, b in zip(total, tally))
    return total


def build_pipeline(p: beam.Pipeline, input_uri: str, num_files: int, cfg: PreprocessConfig,
                   out_dir: str, work_dir: str) -> None:
    """Three passes, so that no stage boundary holds the images themselves (see BENCHMARKS.md, issue 11):

    1. match the files of `input_uri` (in a worker), read + fingerprint + decode + crop each file once;
       accepted crops go to spill files in `work_dir` (uncompressed TFRecords, ~crop^2 x 3 bytes each),
       rejects to rejected.jsonl, accepted paths to the split counts, (relpath, md5) of every file read
       to inputs.json (the dataset id of what was read);
    2. read the spill back -> the train split -> tf.Transform's analysis (combiners: bounded state);
    3. read the spill again -> TransformDataset (train and eval) with the transform_fn as side input ->
       encode -> gzip TFRecord shards.
    tf.Transform needs the analysis result before it can transform, so a one-pass pipeline makes the
    runner keep every decoded crop between the two (the DirectRunner keeps it in memory). Here what
    crosses a stage boundary is file lists, paths, counts and the eval set (at most eval_count paths).
    The graph itself holds `input_uri` and `num_files` (progress only), so its size does not grow with
    the inputs (Dataflow caps a job graph at 10 MB; the embedded list was tens of MB at CelebA's size).

    In patches mode the spill holds each accepted photo whole (decoded, at full resolution: its own
    pixel count x 3 bytes, less than its overlapping patches would take), because with eval_count the
    split is known only once every file is validated. Passes 2 and 3 each cut the photos they read back
    (`CutPatches`: numpy slicing, cheap next to decoding), so still only one photo's pixels at a time is
    held outside tf.Transform's batches; pass 3's tally gives the patch counts.
    """
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import schema_utils
    from tfx_bsl.tfxio import tf_example_record

    from components.preprocess.transform import make_preprocessing_fn, raw_feature_spec

    patches = cfg.crop_mode == "patches"
    # tf.Transform is fed Arrow record batches decoded from serialized tf.Examples we make, not instance
    # dicts: for instance dicts it encodes every element into one cached tf.train.Example, and with the
    # upb protobuf runtime the replaced bytes stay in that message's arena until the end of the job, i.e.
    # every crop (49 KB) stays in memory, once for the analysis and once for the transform.
    tfxio = tf_example_record.TFExampleBeamRecord(
        physical_format="inmem", telemetry_descriptors=["srgan-preprocess"],
        schema=schema_utils.schema_from_feature_spec(raw_feature_spec(positions=patches)))
    adapter_config = tfxio.TensorAdapterConfig()
    train_pixels = cfg.patch_size ** 2 if patches else cfg.crop_size ** 2
    batch_sizes = {"train": _batch_size(train_pixels),
                   "eval": _batch_size(cfg.max_eval_pixels if patches else train_pixels)}

    def as_record_batches(pcoll, label: str, split: str):
        return (pcoll | f"{label}Serialize" >> beam.Map(serialize_raw)
                | f"{label}RecordBatches" >> tfxio.BeamSource(batch_size=batch_sizes[split]))
    run = uuid.uuid4().hex  # progress counters are per job run
    matched = (p
               | "InputUri" >> beam.Create([input_uri])
               | "MatchInputs" >> beam.ParDo(MatchInputs(_input_root(input_uri), cfg.extensions()))
               .with_outputs(MatchInputs.IGNORED, main="files"))
    decoded = (
        matched.files
        | "Distribute" >> beam.Reshuffle()
        | "DecodeAndCrop" >> beam.ParDo(DecodeAndCrop(cfg, num_files))
        .with_outputs(DecodeAndCrop.REJECTED, DecodeAndCrop.FINGERPRINT, main="accepted"))
    # The dataset id of what the job read: (relpath, md5) of every file, ~70 bytes each, gathered in one
    # place to be sorted (the id is a hash of the sorted list; 14 MB at CelebA's 202,599 files).
    num_ignored = matched[MatchInputs.IGNORED] | "CountIgnored" >> beam.combiners.Count.Globally()
    _ = (decoded[DecodeAndCrop.FINGERPRINT]
         | "CollectFingerprints" >> beam.combiners.ToList()
         | "DatasetIdOfWhatWasRead" >> beam.Map(_inputs_read, cfg, beam.pvalue.AsSingleton(num_ignored))
         | "WriteInputsRead" >> beam.io.WriteToText(os.path.join(work_dir, "inputs.json"), shard_name_template=""))
    spill_files = (
        decoded.accepted
        | "PackCrops" >> beam.Map(pack_crop)
        | "SpillCrops" >> beam.io.WriteToTFRecord(os.path.join(work_dir, "spill", "crops"), file_name_suffix=".tfrecord",
                                                  compression_type=beam.io.filesystem.CompressionTypes.UNCOMPRESSED))

    # The split is decided after validation, so eval_count counts accepted images. The eval set is the
    # eval_count accepted paths with the lowest split hashes: a bounded combiner, not a list of all paths.
    accepted_paths = decoded.accepted | "AcceptedPaths" >> beam.Map(lambda e: e[0])
    if cfg.eval_count is None:
        eval_side = {}
    else:
        eval_paths = (accepted_paths
                      | "EvalSet" >> beam.combiners.Top.Smallest(cfg.eval_count, key=eval_rank))
        eval_side = {"eval_paths": beam.pvalue.AsSingleton(eval_paths)}
    counts = (accepted_paths
              | "PathAsKey" >> beam.Map(lambda r: (r, None))
              | "SplitOfPath" >> beam.ParDo(AssignSplit(cfg), **eval_side)
              | "SplitOf" >> beam.Keys()
              | "CountPerSplit" >> beam.combiners.Count.PerElement()
              | "CollectCounts" >> beam.combiners.ToDict())
    counts_side = beam.pvalue.AsSingleton(counts)

    def read_back(label: str):
        """The accepted crops (photos in patches mode), read again from the spill: (split, raw example)."""
        return (spill_files
                | f"{label}ReadSpill" >> beam.io.ReadAllFromTFRecord(
                    compression_type=beam.io.filesystem.CompressionTypes.UNCOMPRESSED)
                | f"{label}Unpack" >> beam.Map(unpack_crop)
                | f"{label}Split" >> beam.ParDo(AssignSplit(cfg), **eval_side))

    def cut(pcoll, label: str):
        """Patches mode: (split, photo) -> (split, record); the tally goes to the second value."""
        out = pcoll | f"{label}Cut" >> beam.ParDo(CutPatches(cfg)).with_outputs(CutPatches.TALLY, main="records")
        return out.records, out[CutPatches.TALLY]

    def select(pcoll, label: str, split: str):
        return (pcoll | f"{label}Select{split}" >> beam.Filter(lambda kv, s=split: kv[0] == s)
                | f"{label}Drop{split}Key" >> beam.Values())

    analyze_input = (read_back("Analyze")
                     | "AnalyzeTrainOnly" >> beam.Filter(lambda kv: kv[0] == "train")
                     | "AnalyzeProgress" >> beam.ParDo(CountProgress("analyze", ("train",), run), counts_side))
    to_transform = (read_back("Transform")
                    | "TransformProgress" >> beam.ParDo(CountProgress("transform+write", dataset.SPLITS, run),
                                                       counts_side))
    if patches:
        analyze_input, _ = cut(analyze_input, "Analyze")
        to_transform, tally = cut(to_transform, "Transform")
        _ = (tally
             | "AddTallies" >> beam.CombineGlobally(_add_tallies)
             | "FormatTally" >> beam.Map(lambda t: json.dumps(dict(zip(PATCH_TALLY, t)), sort_keys=True))
             | "WriteTally" >> beam.io.WriteToText(os.path.join(work_dir, "patches.json"), shard_name_template=""))
    raw = {split: select(to_transform, "Transform", split) for split in dataset.SPLITS}

    with tft_beam.Context(temp_dir=os.path.join(work_dir, "tft"), force_tf_compat_v1=False):
        transform_fn = ((as_record_batches(analyze_input | "AnalyzeDropKey" >> beam.Values(), "Analyze", "train"),
                         adapter_config)
                        | "AnalyzeTrain" >> tft_beam.AnalyzeDataset(make_preprocessing_fn(cfg.scale, patches)))
        transformed = {
            split: (((as_record_batches(raw[split], f"Transform{split}", split), adapter_config), transform_fn)
                    | f"Transform{split.capitalize()}" >> tft_beam.TransformDataset(output_record_batches=False))[0]
            for split in dataset.SPLITS}
        _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(out_dir)

    for split, data in transformed.items():
        _ = (data
             | f"Encode{split}" >> beam.Map(_to_example)
             | f"Write{split}" >> beam.io.Write(GzipTFRecordSink(os.path.join(out_dir, split), cfg.num_shards)))

    # Rejects are gathered to write one sorted file: the list grows with the rejects, not with the inputs.
    _ = (decoded[DecodeAndCrop.REJECTED]
         | "CollectRejected" >> beam.combiners.ToList()
         | "FormatRejected" >> beam.Map(_jsonl)
         | "WriteRejected" >> beam.io.WriteToText(os.path.join(out_dir, "rejected.jsonl"),
                                                  shard_name_template="", append_trailing_newlines=False))
    _ = (counts
         | "FormatCounts" >> beam.Map(lambda c: json.dumps(c, sort_keys=True))
         | "WriteCounts" >> beam.io.WriteToText(os.path.join(work_dir, "counts.json"), shard_name_template=""))


# ----------------------------------------------------------------------------- the job

def _statistics(out_dir: str, cfg: PreprocessConfig) -> dict:
    """Read the analyzers' results back out of the transform graph (they are constants in it)."""
    import tensorflow as tf
    import tensorflow_transform as tft

    from components.preprocess.transform import STATS_PREFIX, raw_feature_spec

    tft_out = tft.TFTransformOutput(out_dir)
    side = cfg.scale  # the smallest image the graph takes: one LR pixel
    dummy = {name: tf.constant([0], tf.int64) for name in raw_feature_spec(cfg.crop_mode == "patches")}
    dummy.update(hr_raw=tf.constant([bytes(side * side * 3)]), height=tf.constant([side], tf.int64),
                 width=tf.constant([side], tf.int64), source=tf.constant([b""]))
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
        whole = cfg.preprocess.crop_mode == "patches"  # center keeps one crop per input: it gets tiles
        input_uri = sample_data.write_sample_images(whole=whole)
        log.info("no --input given: using the built-in sample (scikit-image photos, %s) at %s",
                 "whole" if whole else "tiled", input_uri)
    pcfg = cfg.preprocess
    check_crop_config(pcfg)
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
    runner, runner_info = local_runner(options)
    work_dir = _work_dir(options, dataset_id)
    start = time.time()
    try:
        with storage.staged_output(out_uri, dataset.MARKER) as out_dir:
            pipeline = beam.Pipeline(runner=runner, options=options)
            job_out = _job_output_dir(options, work_dir, out_dir)
            build_pipeline(pipeline, input_uri, len(files), pcfg, job_out, work_dir)
            log.info("beam job on %s: match + decode %d files -> spill -> analyze (train) -> transform + write; "
                     "spill and temporary files in %s", runner_info["runner"], len(files), work_dir)
            result = pipeline.run()
            result.wait_until_finish()
            if job_out != out_dir:
                _copy_job_output(job_out, out_dir)
            read = _check_inputs_read(json.loads(_read_work_file(work_dir, "inputs.json")), dataset_id, len(files))
            counts = json.loads(_read_work_file(work_dir, "counts.json") or "{}")
            num_rejected, by_reason, first_rejected = _read_rejected(os.path.join(out_dir, "rejected.jsonl"))
            num_train_photos, num_eval = counts.get("train", 0), counts.get("eval", 0)
            if num_train_photos + num_eval + num_rejected != read["num_files_read"]:
                raise PreprocessError(f"inputs lost: {read['num_files_read']} read but {num_train_photos} train + "
                                      f"{num_eval} eval + {num_rejected} rejected")
            if num_train_photos == 0:
                raise PreprocessError(f"no training image was accepted ({num_eval} went to eval, {num_rejected} "
                                      f"rejected; first rejections below)\n" + "".join(first_rejected))
            patch_counts = _patch_counts(pcfg, work_dir, num_train_photos)
            num_train = patch_counts.pop("kept")
            shards = {s: sorted(n for n in os.listdir(out_dir) if n.startswith(s + "-")) for s in dataset.SPLITS}
            info = {
                "dataset_id": dataset_id,
                "format_version": FORMAT_VERSION,
                "input": storage.normalize(input_uri),
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "crop_mode": pcfg.crop_mode,
                "num_train": num_train,
                "num_train_photos": num_train_photos,
                "num_eval": num_eval,
                **patch_counts,
                "num_rejected": num_rejected,
                "num_files_read": read["num_files_read"],
                "num_ignored_files": read["num_ignored_files"],
                "rejected_by_reason": by_reason,
                **_record_layout(pcfg),
                "encoding": dataset.ENCODING,
                "statistics": {"split": "train", "units": "pixel values 0-255, per RGB channel",
                               **_statistics(out_dir, pcfg)},
                "preprocess": asdict(pcfg),
                "shards": shards,
                **runner_info,
                "seconds": round(time.time() - start, 1),
                "code_version": provenance.code_version(),
                "package_versions": provenance.package_versions(),
            }
            with open(os.path.join(out_dir, dataset.MARKER), "w") as f:
                json.dump(info, f, indent=2, sort_keys=True)
    finally:
        _remove_work_dir(work_dir)
    log.info("dataset %s: %d train, %d eval, %d rejected in %.1f s", dataset_id, num_train, num_eval,
             num_rejected, time.time() - start)
    return info


def local_runner(options) -> tuple:
    """(the runner to give beam.Pipeline, what dataset.json records of it).

    No --runner (or --runner FnApiRunner): Beam's FnApiRunner, in this process or in
    --direct_num_workers processes/threads as --direct_running_mode says: the runner every measurement
    here was made on. Not Beam's default DirectRunner, which since 2.6x first tries PrismRunner, a Go
    binary downloaded from GitHub at first use (direct_runner.py, _PrismRunnerSupportVisitor), and
    falls back when that fails: the same command would run on another runner on a connected machine.
    Any other --runner (PrismRunner, DirectRunner, PortableRunner, DataflowRunner, FlinkRunner...) is
    Beam's, as asked: (None, ...) lets beam.Pipeline create it from the options."""
    from apache_beam.options.pipeline_options import DirectOptions, PortableOptions, StandardOptions

    name = options.view_as(StandardOptions).runner
    if name is None or name.rsplit(".", 1)[-1] in ("FnApiRunner", "fnapirunner"):
        from apache_beam.portability.api import beam_provision_api_pb2
        from apache_beam.runners.portability.fn_api_runner import fn_runner
        from apache_beam.runners.portability.portable_runner import JobServiceHandle

        direct = options.view_as(DirectOptions)
        # As DirectRunner builds it: the workers get the pipeline options (e.g. for their filesystems).
        provision = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(
            pipeline_options=JobServiceHandle.encode_pipeline_options(options.get_all_options())))
        workers = direct.direct_num_workers
        return fn_runner.FnApiRunner(provision_info=provision), {
            "runner": "FnApiRunner", "runner_options": {
                "direct_running_mode": direct.direct_running_mode,
                "direct_num_workers": os.cpu_count() if workers == 0 else workers}}
    portable = options.view_as(PortableOptions)
    recorded = {"environment_type": portable.environment_type, "job_endpoint": portable.job_endpoint}
    return None, {"runner": name, "runner_options": {k: v for k, v in recorded.items() if v}}


def _check_inputs_read(read: dict, predicted_id: str, num_listed: int) -> dict:
    """The dataset id of the bytes the job read must be the one its output was named by (from the
    launcher's listing): otherwise files changed, came or went while it ran, or could not be read."""
    if read["num_unreadable"]:
        raise PreprocessError(f"{read['num_unreadable']} input files could not be read (their reasons are in "
                              f"rejected.jsonl), e.g. {', '.join(read['unreadable'])}: the dataset id would not "
                              "be a fingerprint of the data; fix the storage and rerun")
    if read["dataset_id"] != predicted_id:
        raise PreprocessError(f"the inputs changed while the job ran: listed {num_listed} files (dataset "
                              f"{predicted_id}), read {read['num_files_read']} ({read['dataset_id']}); rerun")
    return read


def _patch_counts(cfg: PreprocessConfig, work_dir: str, num_train_photos: int) -> dict:
    """{"kept": train records, and in patches mode skipped_flat, skipped_over_cap}; a train photo in
    center mode is one record. No train record at all is an error."""
    if cfg.crop_mode != "patches":
        return {"kept": num_train_photos}
    tally = json.loads(_read_work_file(work_dir, "patches.json"))
    if tally["kept"] == 0:
        raise PreprocessError(f"no training patch: the {num_train_photos} train photos gave "
                              f"{tally['skipped_flat']} patches, all flat (below min_patch_detail "
                              f"{cfg.min_patch_detail})")
    return tally


def _record_layout(cfg: PreprocessConfig) -> dict:
    """dataset.json's `shapes` (of train records), `eval_shapes` (patches mode: each photo its own size)
    and `record_features`."""
    side = cfg.patch_size if cfg.crop_mode == "patches" else cfg.crop_size
    layout = {"shapes": {"hr": [side, side, 3], "lr": [side // cfg.scale] * 2 + [3]},
              "record_features": list(dataset.RECORD_FEATURES)}
    if cfg.crop_mode == "patches":
        layout["eval_shapes"] = {"hr": [None, None, 3], "lr": [None, None, 3]}
        layout["record_features"] += list(dataset.POSITION_FEATURES)
    return layout


def _work_dir(options, dataset_id: str) -> str:
    """Where the spill (every accepted crop, uncompressed: ~49 KB per 128 px crop; in patches mode every
    accepted photo, 3 bytes per pixel) and tf.Transform's
    temporary files go. Beam's --temp_location when given (a cluster runner's workers must all reach it,
    e.g. gs://...), else a local temporary folder (DirectRunner, both modes)."""
    from apache_beam.options.pipeline_options import GoogleCloudOptions

    temp_location = options.view_as(GoogleCloudOptions).temp_location
    if temp_location:
        from apache_beam.io.filesystems import FileSystems
        return FileSystems.join(temp_location, f"preprocess-{dataset_id}-{uuid.uuid4().hex[:8]}")
    return tempfile.mkdtemp(prefix="preprocess-work-")


def _job_output_dir(options, work_dir: str, out_dir: str) -> str:
    """Where the workers write the dataset's files: the launcher's local staging folder `out_dir` when
    there is no --temp_location (a local runner: the workers share this machine's disk), else
    <work_dir>/out under --temp_location, which a cluster runner's workers all reach (gs://... on
    Dataflow); the launcher copies it into the staging folder afterwards (_copy_job_output)."""
    from apache_beam.options.pipeline_options import GoogleCloudOptions

    if not options.view_as(GoogleCloudOptions).temp_location:
        return out_dir
    from apache_beam.io.filesystems import FileSystems
    return FileSystems.join(work_dir, "out")


def _copy_job_output(job_out: str, out_dir: str) -> None:
    """Every file below `job_out` (a Beam filesystem path) into the local folder `out_dir`, byte for byte."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    prefix = job_out.rstrip("/") + "/"
    for meta in FileSystems.match([prefix + "**"])[0].metadata_list:
        dest = os.path.join(out_dir, meta.path[len(prefix):])
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with FileSystems.open(meta.path, compression_type=CompressionTypes.UNCOMPRESSED) as src, \
                open(dest, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)


def _read_work_file(work_dir: str, name: str) -> str:
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(FileSystems.join(work_dir, name)) as f:
        return f.read().decode("utf-8")


def _remove_work_dir(work_dir: str) -> None:
    from apache_beam.io.filesystems import FileSystems

    if os.path.isdir(work_dir):
        shutil.rmtree(work_dir, ignore_errors=True)
        return
    try:
        if FileSystems.exists(work_dir):
            FileSystems.delete([work_dir])
    except Exception as exc:  # noqa: BLE001 - cleanup must not hide the job's own result or error
        log.warning("could not remove the temporary folder %s: %s", work_dir, exc)


def _read_rejected(path: str, keep: int = 10) -> tuple[int, dict, list[str]]:
    """(number of rejects, count per reason, the first `keep` lines), reading the file line by line."""
    n, by_reason, first = 0, {}, []
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            n += 1
            reason = json.loads(line)["reason"]
            by_reason[reason] = by_reason.get(reason, 0) + 1
            if len(first) < keep:
                first.append(line)
    return n, dict(sorted(by_reason.items())), first
