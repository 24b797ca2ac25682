"""crop_mode patches (issue 12): the patch grid, flat skipping, the split by photo, whole eval photos of
mixed sizes read back through the shared reader, and config errors that name their key."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from components import config, dataset, images, preprocess, storage
from components.degradation import degrade
from components.preprocess import beam as preprocess_beam
from tests.conftest import run_cli
from tests.test_preprocess import record_buffer_sizes, run_job

PATCH, STRIDE = 64, 48
# name -> (height, width, kind). The names were chosen for their split hashes: with eval_count 2 the two
# eval photos are photo_odd and photo_wide1 (asserted below), so the flat photo is a TRAIN photo.
PHOTOS = {
    "photo_a.png": (200, 300, "texture"),      # 4 x 6 = 24 patches, capped to 12
    "photo_b.png": (160, 160, "texture"),      # 3 x 3 = 9
    "photo_half.png": (200, 300, "half"),      # left 150 columns flat: the 2 x 4 patches left of 112 skipped
    "photo_flat0.png": (200, 300, "flat"),     # all 24 skipped
    "photo_odd.png": (203, 301, "texture"),    # eval: 200 x 300 after the mod-crop, over max_eval_pixels
    "photo_wide1.png": (120, 400, "texture"),  # eval: whole
    "photo_tiny.png": (50, 80, "texture"),     # smaller than the patch: quarantined
}
EVAL = {"photo_odd.png", "photo_wide1.png"}
KEYS = dict(crop_mode="patches", patch_size=PATCH, patch_stride=STRIDE, max_patches_per_image=12,
            max_eval_pixels=50_000, eval_count=2)


def make_photo(h: int, w: int, kind: str, seed: int) -> np.ndarray:
    photo = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    if kind == "flat":
        photo[:] = (90, 140, 200)
    elif kind == "half":
        photo[:, :150] = (90, 140, 200)
    return photo


@pytest.fixture(scope="session")
def patch_photos(tmp_path_factory):
    d = tmp_path_factory.mktemp("patch-photos")
    for seed, (name, (h, w, kind)) in enumerate(sorted(PHOTOS.items())):
        Image.fromarray(make_photo(h, w, kind, seed)).save(d / name)
    return str(d)


@pytest.fixture(scope="session")
def patch_dataset(patch_photos, tmp_path_factory):
    info, uri = run_job(patch_photos, str(tmp_path_factory.mktemp("patch-art")), **KEYS)
    return info, uri


def photo(root: str, name: str) -> np.ndarray:
    return np.asarray(Image.open(os.path.join(root, name)).convert("RGB"))


def by_source(uri: str, split: str, root: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for ex in dataset.read_split(uri, split).as_numpy_iterator():
        out.setdefault(storage.relpath(ex["source"].decode(), root), []).append(ex)
    return out


# ----------------------------------------------------------------------------- pure functions

def test_patch_grid_counts_and_positions():
    # 200 rows: 0, 48, 96 by the stride, then 136 aligned to the bottom border; 300 columns: ... 192, 236.
    grid = images.patch_grid(200, 300, PATCH, STRIDE)
    assert len(grid) == 4 * 6
    assert sorted({t for t, _ in grid}) == [0, 48, 96, 136]
    assert sorted({left for _, left in grid}) == [0, 48, 96, 144, 192, 236]
    assert grid[:2] == [(0, 0), (0, 48)]  # row by row
    assert images.patch_grid(64 + 48, 64, PATCH, STRIDE) == [(0, 0), (48, 0)]  # the stride lands on the border
    assert images.patch_grid(64, 64, PATCH, STRIDE) == [(0, 0)]
    assert images.patch_grid(63, 500, PATCH, STRIDE) == []


def test_patch_detail_and_even_selection():
    assert images.patch_detail(np.full((64, 64, 3), 77, np.uint8)) == 0.0
    assert images.patch_detail(make_photo(64, 64, "texture", 0)) > 50
    assert images.select_evenly(24, 12) == [0, 2, 4, 6, 8, 10, 13, 15, 17, 19, 21, 23]
    assert images.select_evenly(5, None) == images.select_evenly(5, 9) == [0, 1, 2, 3, 4]
    assert images.select_evenly(5, 1) == [0]


def test_eval_region_mod_crops_and_caps_centered():
    assert images.eval_region(120, 400, 4, 50_000) == (0, 0, 120, 400)
    assert images.eval_region(203, 301, 4, 10**6) == (1, 0, 200, 300)
    # 200 x 300 = 60,000 > 50,000: both sides x 0.913, down to multiples of 4, centered in 203 x 301
    assert images.eval_region(203, 301, 4, 50_000) == (11, 14, 180, 272)


def test_center_ids_ignore_patch_keys_and_patch_ids_use_them():
    files = [preprocess_beam.InputFile("/x/a.png", "a.png", "0" * 32)]

    def dataset_id(**keys):
        cfg = config.Config()
        for k, v in keys.items():
            config.set_value(cfg, k, v)
        return preprocess_beam.dataset_id_for(files, cfg.preprocess)
    center = dataset_id()
    assert dataset_id(patch_stride=7, max_eval_pixels=5) == center
    patches = dataset_id(crop_mode="patches")
    assert patches != center
    assert dataset_id(crop_mode="patches", patch_stride=64) != patches
    assert dataset_id(crop_mode="patches", crop_size=64, resize_short_side=100) == patches  # unused there


def test_split_shapes_falls_back_to_shapes_for_old_datasets():
    old = {"shapes": {"hr": [128, 128, 3], "lr": [32, 32, 3]}}
    assert dataset.split_shapes(old, "eval") == dataset.split_shapes(old, "train") == old["shapes"]
    new = {**old, "eval_shapes": {"hr": [None, None, 3], "lr": [None, None, 3]}}
    assert dataset.split_shapes(new, "eval") == new["eval_shapes"]
    assert dataset.split_shapes(new, "train") == old["shapes"]
    with pytest.raises(dataset.DatasetError, match="unknown split"):
        dataset.split_shapes(new, "test")


@pytest.mark.parametrize("key,value,message", [
    ("crop_mode", "tiles", "crop_mode must be one of center, patches"),
    ("patch_stride", 0, "patch_stride must be > 0"),
    ("patch_stride", 65, "patch_stride must be > 0 and at most patch_size 64, got 65"),
    ("patch_size", 66, "patch_size must be a positive multiple of scale 4"),
    ("min_patch_detail", -1.0, "min_patch_detail must be >= 0"),
    ("max_patches_per_image", 0, "max_patches_per_image must be >= 1"),
    ("max_eval_pixels", 4000, "max_eval_pixels must be at least patch_size^2 = 4096"),
])
def test_bad_patch_config_names_the_key(key, value, message, patch_photos, tmp_path):
    cfg = config.Config(artifact_root=str(tmp_path), input=patch_photos)
    for k, v in {**KEYS, key: value}.items():
        config.set_value(cfg, k, v)
    with pytest.raises(preprocess.PreprocessError, match=message.replace("^", r"\^")):
        preprocess.run(cfg)


def test_bad_patch_flag_is_one_clear_line(patch_photos, tmp_path, capsys):
    out = run_cli(capsys, "preprocess", "--input", patch_photos, "--artifact-root", str(tmp_path),
                  "--crop-mode", "patches", "--patch-stride", "-3")
    assert out.returncode == 2 and "patch_stride must be > 0 and at most patch_size 192, got -3" in out.stderr
    assert "Traceback" not in out.stderr


# ----------------------------------------------------------------------------- the Beam job

def test_counts_flat_skipping_and_quarantine(patch_dataset, patch_photos):
    info, uri = patch_dataset
    assert info["crop_mode"] == "patches"
    # kept 12 (capped) + 9 + 12 (16 detailed, capped) + 0; flat: 8 (half) + 24 (flat); over the cap: 12 + 4
    assert (info["num_train"], info["skipped_flat"], info["skipped_over_cap"]) == (33, 32, 16)
    assert (info["num_train_photos"], info["num_eval"], info["num_rejected"]) == (4, 2, 1)
    assert info["rejected_by_reason"] == {"too_small": 1}
    rejected = [json.loads(line) for line in storage.read_text(storage.join(uri, "rejected.jsonl")).splitlines()]
    assert [storage.basename(r["source"]) for r in rejected] == ["photo_tiny.png"]
    assert "smaller than the 64x64 patch" in rejected[0]["details"]
    assert info["shapes"] == {"hr": [64, 64, 3], "lr": [16, 16, 3]}
    assert info["eval_shapes"] == dataset.split_shapes(info, "eval") == {"hr": [None, None, 3], "lr": [None, None, 3]}
    assert info["record_features"] == ["hr", "lr", "source", "patch_top", "patch_left"]
    assert info == dataset.load_info(uri)


def test_train_patches_are_the_photo_at_their_position(patch_dataset, patch_photos):
    info, uri = patch_dataset
    train = by_source(uri, "train", patch_photos)
    assert sorted(train) == ["photo_a.png", "photo_b.png", "photo_half.png"]  # the flat photo gave none
    for name, recs in train.items():
        full = photo(patch_photos, name)
        grid = images.patch_grid(*full.shape[:2], PATCH, STRIDE)
        detailed = [p for p in grid if images.patch_detail(full[p[0]:p[0] + PATCH, p[1]:p[1] + PATCH]) >= 1.0]
        expected = [detailed[i] for i in images.select_evenly(len(detailed), 12)]
        assert sorted((r["patch_top"], r["patch_left"]) for r in recs) == sorted(expected), name
        for r in recs:
            top, left = r["patch_top"], r["patch_left"]
            np.testing.assert_array_equal(r["hr"], full[top:top + PATCH, left:left + PATCH])
            np.testing.assert_array_equal(r["lr"], degrade(r["hr"]).numpy())
    # The analyzers saw exactly the train patches.
    pixels = np.concatenate([r["hr"].reshape(-1, 3) for recs in train.values() for r in recs]).astype(np.float64)
    np.testing.assert_allclose(info["statistics"]["hr_mean"], pixels.mean(0), atol=0.01)
    np.testing.assert_allclose(info["statistics"]["hr_max"], pixels.max(0))


def test_eval_photos_whole_with_mixed_sizes_and_no_leakage(patch_dataset, patch_photos):
    info, uri = patch_dataset
    train, evals = by_source(uri, "train", patch_photos), by_source(uri, "eval", patch_photos)
    assert set(evals) == EVAL and not set(train) & set(evals)
    assert preprocess_beam.eval_by_count(sorted(set(PHOTOS) - {"photo_tiny.png"}), 2) == EVAL
    assert dataset.read_split(uri, "eval").element_spec["hr"].shape.as_list() == [None, None, 3]
    expected = {"photo_odd.png": (11, 14, 180, 272), "photo_wide1.png": (0, 0, 120, 400)}
    for name, (top, left, h, w) in expected.items():
        (rec,) = evals[name]
        assert (rec["patch_top"], rec["patch_left"], *rec["hr"].shape) == (top, left, h, w, 3)
        np.testing.assert_array_equal(rec["hr"], photo(patch_photos, name)[top:top + h, left:left + w])
        assert rec["lr"].shape == (h // 4, w // 4, 3)
        np.testing.assert_array_equal(rec["lr"], degrade(rec["hr"]).numpy())


@pytest.mark.slow  # the fast tier keeps its twin in tests/test_preprocess.py
def test_only_flat_photos_is_one_clear_error(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    Image.fromarray(make_photo(100, 120, "flat", 0)).save(tmp_path / "in" / "sky.png")
    out = run_cli(capsys, "preprocess", "--input", str(tmp_path / "in"), "--artifact-root", str(tmp_path / "art"),
                  "--crop-mode", "patches", "--patch-size", "64", "--patch-stride", "64",
                  "--eval-fraction", "0")
    assert out.returncode == 2 and "no training patch: the 1 train photos gave 4 patches, all flat" in out.stderr
    assert "Traceback" not in out.stderr
    assert not list((tmp_path / "art").glob("datasets/*/dataset.json"))


@pytest.mark.slow  # the fast tier keeps its twin in tests/test_preprocess.py
def test_no_stage_boundary_holds_a_patch_or_a_photo(patch_photos, tmp_path, monkeypatch):
    """Issue 11's bound in patches mode: the runner's buffers between stages never receive even one
    patch's bytes (64 x 64 x 3); photos and patches stay inside fused stages and the spill."""
    received = record_buffer_sizes(monkeypatch)
    info, _ = run_job(patch_photos, str(tmp_path), **KEYS)
    assert info["num_train"] == 33
    assert len(received) > 5, "the runner's buffers were not seen: the instrumentation is stale"
    assert max(received.values()) < PATCH * PATCH * 3, sorted(received.values())[-3:]


@pytest.mark.slow
def test_multiprocessing_runner_gives_the_same_patches(patch_dataset, patch_photos, tmp_path):
    info, uri = patch_dataset
    mp_info, mp_uri = run_job(patch_photos, str(tmp_path), beam_args=[
        "--direct_running_mode=multi_processing", "--direct_num_workers=2"], **KEYS)
    assert mp_info["dataset_id"] == info["dataset_id"]
    keys = ("num_train", "num_train_photos", "num_eval", "skipped_flat", "skipped_over_cap")
    assert {k: mp_info[k] for k in keys} == {k: info[k] for k in keys}
    for split in dataset.SPLITS:
        def digest(u):
            return sorted((ex["source"], ex["patch_top"], ex["patch_left"], ex["hr"], ex["lr"])
                          for ex in dataset.read_split(u, split, decode=False).as_numpy_iterator())
        assert digest(mp_uri) == digest(uri), split


def test_evaluator_scores_whole_eval_photos_of_mixed_sizes(patch_dataset, tmp_path):
    """A real (tiny, untrained) generator evaluated on the patches dataset: each whole eval photo is
    upscaled at its own size, clean and down the severity ladder, and scored against its HR; the grids show them."""
    import csv

    from components import evaluator, models

    info, uri = patch_dataset
    generator = models.build_generator(8, 1, 4, residual_over_bicubic=True)
    model_file = str(tmp_path / "generator.keras")
    generator.save(model_file)
    root = os.path.dirname(os.path.dirname(uri))
    cfg = config.Config(artifact_root=root, model_uri=model_file, dataset_id=info["dataset_id"],
                        output=str(tmp_path / "eval"))
    result = evaluator.run(cfg)
    sizes = {ex["source"].decode(): ex["hr"].shape for ex in dataset.read_split(uri, "eval").as_numpy_iterator()}
    assert len(sizes) == info["num_eval"] == 2 and len(set(sizes.values())) == 2  # two photos, two sizes
    assert result["eval_split"]["num_images"] == 2 and result["degraded"]["num_images"] == 2
    # residual over bicubic with (near-)zero init: close to bicubic, far from the degraded input's figures
    assert abs(result["eval_split"]["gain_psnr_rgb"]) < 1.0
    assert result["degraded"]["psnr_rgb"] < result["eval_split"]["psnr_rgb"]
    with open(tmp_path / "eval" / "per_image.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["split"] for r in rows) == sorted(["eval", "mild", "moderate", "degraded"] * 2)
    assert all(result["rungs"][rung]["num_images"] == 2 for rung in ("mild", "moderate", "harsh"))
    assert all(float(r["psnr_rgb"]) > 5 for r in rows)
    assert (tmp_path / "eval" / "grids" / "eval-000.png").exists()
