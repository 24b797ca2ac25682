"""The dataset artifact: its layout, its record format, and the reader every consumer uses.

<artifact-root>/datasets/<dataset-id>/
    train-*.tfrecord.gz, eval-*.tfrecord.gz   tf.Example records: hr, lr (PNG bytes), source; crop_mode
                                              patches adds patch_top, patch_left (int64: the HR's place in
                                              the source photo)
    transform_fn/, transformed_metadata/      the tensorflow-transform graph and its output schema
    rejected.jsonl                            one line per input that could not become a crop
    dataset.json                              written last: the commit marker
"""

from __future__ import annotations

import os
import re

from components import storage
from components.errors import UserError

MARKER = "dataset.json"
SPLITS = ("train", "eval")
RECORD_FEATURES = ("hr", "lr", "source")   # what every record holds; the transform graph may compute more
POSITION_FEATURES = ("patch_top", "patch_left")  # patches mode only: dataset.json's record_features lists them
ENCODING = "png"
DATASET_ID_RE = re.compile(r"^ds-[0-9a-f]{16}$")


class DatasetError(UserError):
    """A dataset is missing, incomplete or unreadable."""


def dataset_uri(artifact_root: str, dataset_id: str) -> str:
    if not DATASET_ID_RE.match(dataset_id or ""):
        raise DatasetError(f"{dataset_id!r} is not a dataset id (expected ds- and 16 hex digits)")
    return storage.join(artifact_root, "datasets", dataset_id)


def load_info(uri: str) -> dict:
    """dataset.json of a committed dataset; a clear error when it is absent (missing or half-written)."""
    marker = storage.join(uri, MARKER)
    if not storage.exists(marker):
        raise DatasetError(f"{uri}: no committed dataset there ({MARKER} is missing)")
    return storage.read_json(marker)


def shard_pattern(split: str) -> str:
    return f"{split}-*.tfrecord.gz"


def make_example(hr_png: bytes, lr_png: bytes, source: str | bytes,
                 position: tuple[int, int] | None = None) -> bytes:
    """A record; `position` (top, left) only for patches-mode datasets (center records stay as they were)."""
    import tensorflow as tf

    if isinstance(source, str):
        source = source.encode("utf-8")

    def b(v):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))
    feature = {"hr": b(hr_png), "lr": b(lr_png), "source": b(source)}
    if position is not None:
        feature.update({name: tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))
                        for name, v in zip(POSITION_FEATURES, position)})
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def split_shapes(info: dict, split: str) -> dict:
    """{"hr": [H, W, 3], "lr": [h, w, 3]} of a split's records; None for a size that varies per record
    (eval photos of a patches dataset). Datasets without `eval_shapes` have one shape for both splits."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; expected one of {SPLITS}")
    return info.get(f"{split}_shapes") or info["shapes"]


def crop_size(info: dict, split: str, size: int | None) -> int | None:
    """The HR side a reader of `split` crops to (`train_crop_size`; none: the stored size), or a clear
    error: a crop must sit on the scale grid and fit inside the stored records."""
    stored, scale = split_shapes(info, split)["hr"][0], info["preprocess"]["scale"]
    if size is None:
        return stored
    if size <= 0 or size % scale or (stored is not None and size > stored):
        raise DatasetError(f"train_crop_size {size} must be a positive multiple of the scale {scale} and at most "
                           f"the dataset's stored HR size {stored} (its crop or patch size)")
    return size


# Per process: a committed dataset never changes (publish refuses to overwrite a committed one), so
# its info, parse spec and shard files are looked up once per run, not once per epoch.
_OPENED: dict[str, dict] = {}


def _opened(uri: str) -> dict:
    key = storage.normalize(uri)
    if key not in _OPENED:
        _OPENED[key] = {"info": load_info(uri), "spec": None, "files": {}}  # load_info refuses uncommitted ones
    return _OPENED[key]


def cached_info(uri: str) -> dict:
    """dataset.json of a committed dataset, read once per process (readers ask for it every epoch)."""
    return _opened(uri)["info"]


def feature_spec(uri: str) -> dict:
    """The record parse spec, from the transform output's transformed_feature_spec().

    Only `transformed_metadata/` is read for it (staged when remote), not the transform graph.
    """
    import tensorflow_transform as tft

    opened = _opened(uri)
    if opened["spec"] is None:
        if storage.is_local(uri):
            output_dir = storage.local_path(uri)
        else:
            metadata = storage.join(uri, tft.TFTransformOutput.TRANSFORMED_METADATA_DIR)
            output_dir = os.path.dirname(storage.stage_in(metadata))  # <key>/transformed_metadata/
        spec = tft.TFTransformOutput(output_dir).transformed_feature_spec()
        wanted = opened["info"].get("record_features", RECORD_FEATURES)
        missing = [k for k in wanted if k not in spec]
        if missing:
            raise DatasetError(f"{uri}: transform output lacks record features {missing}")
        opened["spec"] = {k: spec[k] for k in wanted}
    return opened["spec"]


def split_files(uri: str, split: str) -> list[str]:
    """Local (or gs://) paths of a split's shards, staged once per process when the dataset is on s3."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; expected one of {SPLITS}")
    opened = _opened(uri)
    if split not in opened["files"]:
        if storage.split_uri(uri)[0] == "s3":
            staged = storage.stage_in(uri, pattern=shard_pattern(split))
            names = sorted(os.listdir(staged)) if os.path.isdir(staged) else []
            files = [os.path.join(staged, n) for n in names]
        else:
            files = storage.list_files(uri, recursive=False)
        opened["files"][split] = sorted(f for f in files
                                        if re.fullmatch(rf"{split}-\d+-of-\d+\.tfrecord\.gz", storage.basename(f)))
    return opened["files"][split]


def read_split(uri: str, split: str, decode: bool = True):
    """tf.data.Dataset of {'hr': uint8 [H,W,3], 'lr': uint8 [h,w,3], 'source': string} (unbatched), plus
    'patch_top', 'patch_left' (int64) for patches datasets. H, W are None where records differ in size
    (`split_shapes`): such records cannot be batched as they are.

    Parsing uses the dataset's own transformed feature spec; `decode=False` keeps the PNG bytes.
    """
    import tensorflow as tf

    shapes = split_shapes(cached_info(uri), split)  # refuses uncommitted datasets
    files = split_files(uri, split)
    spec = feature_spec(uri)
    hr_shape, lr_shape = shapes["hr"], shapes["lr"]
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP") if files else \
        tf.data.Dataset.from_tensor_slices(tf.constant([], tf.string))

    def parse(serialized):
        ex = tf.io.parse_single_example(serialized, spec)
        if decode:
            ex["hr"] = tf.ensure_shape(tf.io.decode_png(ex["hr"], channels=3), hr_shape)
            ex["lr"] = tf.ensure_shape(tf.io.decode_png(ex["lr"], channels=3), lr_shape)
        return ex
    return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
