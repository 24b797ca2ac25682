"""Upscaling: tiles match the whole-image pass, files of every kind, the CLI's guarantees. No Ray here."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from components import models, sample_data, upscaler
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def generator_file(tmp_path_factory):
    """A small random generator (receptive field ~12 LR pixels), residual over bicubic like the shipped configs."""
    import keras

    keras.utils.set_random_seed(3)
    # Glorot sub-pixel convs (icnr=False): their untrained output has sharper tile seams, which the
    # no-context check below needs to see (ICNR's smoother start shows them at 4.4x the interior, not 5x)
    g = models.build_generator(width=8, num_blocks=2, residual_over_bicubic=True, icnr=False)
    path = str(tmp_path_factory.mktemp("gen") / "generator.keras")
    g.save(path)
    return path


@pytest.fixture(scope="module")
def model(generator_file):
    return upscaler.load(generator_file)


def _photo(h, w):
    return np.ascontiguousarray(sample_data.photo("astronaut")[40:40 + h, 60:60 + w])


def test_tiles_cover_the_image_once():
    boxes = list(upscaler.tiles(70, 45, 32, 8))
    cover = np.zeros((70, 45), int)
    for (t, l, b, r), (ct, cl, cb, cr) in boxes:
        cover[t:b, l:r] += 1
        assert ct <= t and cl <= l and cb >= b and cr >= r and ct >= 0 and cb <= 70 and cr <= 45
        assert t - ct <= 8 and b - cb >= -8
    assert (cover == 1).all() and len(boxes) == 3 * 2


def test_tiled_matches_untiled_away_from_seams(model):
    lr = _photo(96, 80)
    whole = model(lr[None])[0].astype(int)
    tiled = upscaler.upscale_array(model, lr, tile=32, overlap=16).astype(int)
    assert tiled.shape == (384, 320, 3) and whole.shape == tiled.shape
    # With context wider than the receptive field, seams vanish: within 1 gray level everywhere.
    assert np.abs(tiled - whole).max() <= 1
    # Without context the tile borders are visible: the check above can fail.
    no_context = upscaler.upscale_array(model, lr, tile=32, overlap=0).astype(int)
    seams = np.abs(no_context - whole)
    assert seams.max() > 8
    seam_cols = [32 * 4 - 1, 32 * 4, 64 * 4 - 1, 64 * 4]
    assert seams[:, seam_cols].mean() > 5 * seams[:, 40:90].mean()


def test_small_images_and_odd_sizes(model):
    for h, w in ((1, 1), (7, 5), (33, 17)):
        out = upscaler.upscale_array(model, _photo(h, w), tile=16, overlap=4)
        assert out.shape == (4 * h, 4 * w, 3) and out.dtype == np.uint8


def _encode(arr, fmt, mode=None, **kw):
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_files_of_every_kind(model, tmp_path):
    src = tmp_path / "in"
    os.makedirs(src / "sub")
    rgb = _photo(40, 52)
    (src / "photo.jpg").write_bytes(_encode(rgb, "JPEG", quality=95))
    rgba = np.concatenate([rgb, np.tile(np.linspace(0, 255, 52, dtype=np.uint8), (40, 1))[..., None]], -1)
    (src / "alpha.png").write_bytes(_encode(rgba, "PNG"))
    gray = rgb.mean(-1).astype(np.uint8)
    (src / "sub" / "gray.png").write_bytes(_encode(gray, "PNG"))
    gray16 = (gray.astype(np.uint16) * 257)
    Image.fromarray(gray16).save(src / "sub" / "deep.png")  # 16-bit grayscale
    (src / "anim.gif").write_bytes(_encode(rgb, "GIF"))
    (src / "broken.png").write_bytes(_encode(rgb, "PNG")[:300])  # cut short
    (src / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    rows = upscaler.upscale_files(model, [str(src)], str(out), tile=16, overlap=8)
    status = {os.path.relpath(r["input"], src): r["status"] for r in rows}
    assert status.pop("broken.png").startswith("skipped: truncated_or_corrupt")
    assert set(status.values()) == {"ok"} and len(status) == 5  # notes.txt is not an image file
    photo = Image.open(out / "photo.jpg")
    assert photo.format == "JPEG" and photo.size == (208, 160) and photo.mode == "RGB"
    alpha = Image.open(out / "alpha.png")
    assert alpha.mode == "RGBA" and alpha.size == (208, 160)
    a = np.asarray(alpha)[..., 3].astype(int)
    assert abs(a[:, 0].mean() - 0) < 3 and abs(a[:, -1].mean() - 255) < 3  # the alpha ramp survived, upscaled
    for name in ("sub/gray.png", "sub/deep.png"):
        img = Image.open(out / name)
        assert img.mode == "L" and img.size == (208, 160), name
    assert Image.open(out / "anim.png").size == (208, 160)  # GIF is written as PNG
    # SR output resembles its input: close to bicubic of the same image
    sr = np.asarray(Image.open(out / "sub" / "gray.png")).astype(float)
    bic = np.asarray(Image.fromarray(gray).resize((208, 160), Image.Resampling.BICUBIC)).astype(float)
    assert np.abs(sr - bic).mean() < 12
    # A second call keeps what is there
    again = upscaler.upscale_files(model, [str(src / "photo.jpg")], str(out), tile=16, overlap=8)
    assert again[0]["status"].startswith("exists")


def test_cli_never_overwrites_inputs_and_reports_bad_files(generator_file, tmp_path, capsys):
    src = tmp_path / "imgs"
    os.makedirs(src)
    (src / "a.png").write_bytes(_encode(_photo(20, 24), "PNG"))
    before = (src / "a.png").read_bytes()
    job = ["--model-uri", generator_file]
    inside = run_cli(capsys, "upscale", *job, str(src), "--output", str(src))
    assert inside.returncode == 2 and "inputs are never overwritten" in inside.stderr and "Traceback" not in inside.stderr
    assert (src / "a.png").read_bytes() == before and os.listdir(src) == ["a.png"]
    (src / "b.jpg").write_bytes(b"garbage")
    ok = run_cli(capsys, "upscale", *job, str(src), "--output", str(tmp_path / "o"), "--tile-size", "8")
    assert ok.returncode == 1, ok.stderr[-2000:]
    assert "a.png" in ok.stdout and ": ok" in ok.stdout and "skipped: not_an_image" in ok.stdout
    assert Image.open(tmp_path / "o" / "a.png").size == (96, 80)
    missing = run_cli(capsys, "upscale", *job, str(tmp_path / "nope.png"), "--output", str(tmp_path / "o2"))
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr
    not_a_model = run_cli(capsys, "upscale", "--model-uri", str(src), str(src), "--output", str(tmp_path / "o3"))
    assert not_a_model.returncode == 2 and "not a model" in not_a_model.stderr


def _file_pixels(path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)


def test_a_display_p3_jpeg_keeps_its_profile_and_exif_and_the_untagged_pixels(model, tmp_path):
    """Issue 27 item 5: the ICC profile is carried byte for byte, no colour is converted (the pixels are the
    untagged file's), and EXIF orientation is applied once, then reset to 1, sizes updated, other tags kept."""
    from PIL import ExifTags, ImageCms

    from components import images
    from tests.image_helpers import camera_exif, display_p3_icc, jpeg

    icc = display_p3_icc()
    p3 = ImageCms.ImageCmsProfile(io.BytesIO(icc))  # a real profile, and not sRGB: P3 green is not sRGB green
    to_srgb = ImageCms.buildTransform(p3, ImageCms.createProfile("sRGB"), "RGB", "RGB")
    assert ImageCms.applyTransform(Image.new("RGB", (1, 1), (40, 160, 40)), to_srgb).getpixel((0, 0)) != (40, 160, 40)
    rgb = _photo(40, 52)  # not square: an orientation applied 0 or 2 times shows in the output's size
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    (src / "plain.jpg").write_bytes(jpeg(rgb))
    (src / "p3.jpg").write_bytes(jpeg(rgb, icc_profile=icc, exif=camera_exif(1, 52, 40)))
    (src / "p3_rot6.jpg").write_bytes(jpeg(rgb, icc_profile=icc, exif=camera_exif(6, 52, 40)))
    Image.fromarray(rgb).save(src / "plain.png")
    Image.fromarray(rgb).save(src / "p3.png", icc_profile=icc, exif=camera_exif(6, 52, 40))
    # the tags change no pixel of the input: the untagged path is the same JPEG without them
    stored = images.decode((src / "plain.jpg").read_bytes())[0]
    assert np.array_equal(images.decode((src / "p3.jpg").read_bytes())[0], stored)
    rows = upscaler.upscale_files(model, [str(src)], str(out), tile=16, overlap=8)
    assert {r["status"] for r in rows} == {"ok"}

    assert "icc_profile" not in Image.open(out / "plain.jpg").info  # nothing invented for an untagged input
    assert Image.open(out / "p3.jpg").info["icc_profile"] == icc
    assert np.array_equal(_file_pixels(out / "p3.jpg"), _file_pixels(out / "plain.jpg"))

    # orientation 6: the pixels are turned once (90 degrees clockwise), as if the untagged file had been stored turned
    turned = np.ascontiguousarray(np.rot90(stored, k=-1))
    want = upscaler.upscale_decoded(model, (turned, None, False), "JPEG", 16, 8)
    rotated = Image.open(out / "p3_rot6.jpg")
    assert rotated.size == (160, 208) and rotated.info["icc_profile"] == icc
    assert np.array_equal(np.asarray(rotated), _file_pixels(io.BytesIO(want)))
    exif = rotated.getexif()
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    assert exif[ExifTags.Base.Orientation] == 1
    assert (exif[ExifTags.Base.Make], exif[ExifTags.Base.Model]) == ("TestCam", "P3 One")
    assert sub[ExifTags.Base.DateTimeOriginal] == "2026:01:02 03:04:05"
    assert (sub[ExifTags.Base.ExifImageWidth], sub[ExifTags.Base.ExifImageHeight]) == (160, 208)

    # PNG (orientation 6 too): the same, in its own chunks (iCCP, eXIf), and lossless
    png = Image.open(out / "p3.png")
    assert png.info["icc_profile"] == icc and png.getexif()[ExifTags.Base.Orientation] == 1
    assert png.getexif().get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.ExifImageWidth] == 160
    turned_png = np.ascontiguousarray(np.rot90(rgb, k=-1))
    assert np.array_equal(np.asarray(png), upscaler.upscale_array(model, turned_png, 16, 8))


def test_metadata_that_cannot_be_kept_is_left_out_with_one_warning(model, tmp_path, caplog):
    """A broken or unfitting profile, a truncated EXIF block: the file is upscaled all the same (the untagged
    pixels), without what it cannot keep, and one warning per file says what was left out."""
    from tests.image_helpers import camera_exif, display_p3_icc, jpeg

    icc = display_p3_icc()
    cmyk = icc[:16] + b"CMYK" + icc[20:]  # what a CMYK JPEG carries: decode makes RGB, which it does not describe
    rgb = _photo(20, 24)
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    (src / "plain.jpg").write_bytes(jpeg(rgb))
    (src / "cut_icc.jpg").write_bytes(jpeg(rgb, icc_profile=icc[:300]))
    (src / "cmyk_icc.jpg").write_bytes(jpeg(rgb, icc_profile=cmyk))
    (src / "cut_exif.jpg").write_bytes(jpeg(rgb, icc_profile=icc, exif=camera_exif(1, 24, 20)[:60]))
    with caplog.at_level("WARNING", logger="upscale"):
        rows = upscaler.upscale_files(model, [str(src)], str(out), tile=16, overlap=8)
    assert {r["status"] for r in rows} == {"ok"}
    ours = [r.getMessage() for r in caplog.records if r.name == "upscale" and r.levelname == "WARNING"]
    warned = {os.path.basename(m.split(":")[0]): m for m in ours}
    assert len(ours) == len(warned) == 3 and "plain.jpg" not in warned  # one warning per file that lost something
    assert "ICC profile left out: not a valid ICC profile (300 bytes)" in warned["cut_icc.jpg"]
    assert "ICC profile left out: its colour space is CMYK, the pixels written are RGB" in warned["cmyk_icc.jpg"]
    assert "Truncated File Read" in warned["cut_exif.jpg"]
    plain = _file_pixels(out / "plain.jpg")
    for name in ("cut_icc.jpg", "cmyk_icc.jpg", "cut_exif.jpg"):
        assert np.array_equal(_file_pixels(out / name), plain), name
    assert "icc_profile" not in Image.open(out / "cut_icc.jpg").info
    assert "icc_profile" not in Image.open(out / "cmyk_icc.jpg").info
    assert Image.open(out / "cut_exif.jpg").info["icc_profile"] == icc  # the profile is kept: only the EXIF was bad
