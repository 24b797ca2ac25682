"""The evaluator: metrics against bicubic, comparison grids, the loss curve, and the blessing.

Evaluates a run's generator (or any model `components.upscaler.load` accepts) on the dataset's eval
split, on the same split down a severity ladder (`eval_rungs`, components/evaluator/ladder.py: `mild` and
`moderate` single camera-like passes written apart from the training sampler, and `harsh`, the fixed
realistic degradation that is the `degraded` section; one seeded draw per image and rung, so every model
sees the same LR) and, optionally, on a folder of full-size images degraded with the shared degradation
function. Blessing reads the clean split, and the rungs `bless_rungs` names. Compares with the model
`models/<name>/LATEST` points to, on the same data, and decides
BLESSED / NOT_BLESSED. Everything goes to `runs/<run-id>/eval/` (or `--output`), published with the
decision file last, so a reader that finds BLESSED or NOT_BLESSED finds everything else too: report.html
among it, the page for people (components/evaluator/report.py), which `rewrite_report` makes again from a
committed evaluation's files.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import hashlib
import io
import json
import logging
import math
import os
import time

import numpy as np

from components import dataset, metrics, plots, provenance, registry, runs, storage, upscaler
from components.config import Config
from components.degradation import EVAL_SEED, degrade, degrade_fixed
from components.errors import UserError
from components.evaluator import ladder, report
from components.runs import BLESSED, NOT_BLESSED

log = logging.getLogger("evaluate")
METRIC_KEYS = ("psnr_rgb", "psnr_y", "ssim_rgb", "ssim_y", "hf_ratio", "checkerboard", "colour_drift")
BLESS_RULES = ("psnr", "perceptual")
EVAL_TILE = 512  # LR tile for full-size images: bounds memory, big enough that Set5/Set14 are one tile
BATCH_LR_PIXELS = 16 * 64 * 64  # LR pixels upscaled in one batch (16 of the 128 px crops' 32 px LR with room)
ROWS_PER_GRID = 8


class EvaluateError(UserError):
    """Nothing to evaluate, or an input is missing; the message says what."""


# ----------------------------------------------------------------------------- data

def eval_split(dataset_uri: str) -> list[dict]:
    """[{'name', 'lr', 'hr'}] of the dataset's eval split (LR as the preprocessing made it)."""
    rows = []
    for ex in dataset.read_split(dataset_uri, "eval").as_numpy_iterator():
        rows.append({"name": ex["source"].decode(), "lr": ex["lr"], "hr": ex["hr"]})
    if not rows:
        raise EvaluateError(f"{dataset_uri}: the eval split is empty (raise eval_fraction or set eval_count)")
    return rows


def image_folder(uri: str, scale: int) -> list[dict]:
    """Full-size images of a folder: HR = modcrop(image), LR = degrade(HR) (the shared function)."""
    from components import images

    rows = []
    for f in storage.list_files(uri):
        if not storage.matches_extension(f, images.READABLE_EXTENSIONS):
            continue
        try:
            hr = metrics.modcrop(images.decode_rgb(storage.read_bytes(f)), scale)
        except images.ImageRejected as exc:
            log.warning("%s: skipped (%s)", f, exc)
            continue
        if min(hr.shape[:2]) < 4 * scale:
            log.warning("%s: skipped (%dx%d is too small)", f, hr.shape[1], hr.shape[0])
            continue
        rows.append({"name": storage.relpath(f, uri) if f != uri else storage.basename(f),
                     "lr": degrade(hr, scale).numpy(), "hr": hr})
    if not rows:
        raise EvaluateError(f"{uri}: no readable images to evaluate on")
    return rows


def degraded_split(rows: list[dict], params, scale: int) -> list[dict]:
    """The eval split's HR with LR from the fixed realistic degradation: each image drawn with the seed
    (EVAL_SEED, a hash of its name), so every model gets the same LR of an image, whatever the record order."""
    return [{"name": r["name"], "hr": r["hr"], "hr_niqe": r.get("hr_niqe"),
             "lr": degrade_fixed(r["hr"], _name_index(r["name"]), params, scale, EVAL_SEED)} for r in rows]


def _name_index(name: str) -> int:
    return int(hashlib.sha256(name.encode("utf-8")).hexdigest()[:15], 16)  # < 2**60: an int64 seed half


HARSH = "harsh"
RUNG_LABELS = {HARSH: "degraded"}  # per_image.csv's split and the grids' name: harsh keeps its pre-ladder name


def rung_label(rung: str) -> str:
    """The rung's split name in per_image.csv and its grids' prefix (`degraded` for harsh, else the rung)."""
    return RUNG_LABELS.get(rung, rung)


def scored_rungs(ev) -> tuple[list[str], list[str]]:
    """(rungs to score besides clean, in order of severity; rungs the blessing checks) from `eval_rungs`
    (without harsh when `eval_degraded` is false) and `bless_rungs`. Errors name the key; raised before
    any model runs (a config built in code has not been through the config's own checks)."""
    wanted = {}
    for key in ("eval_rungs", "bless_rungs"):
        wanted[key] = ladder.parse(getattr(ev, key))
        bad = [r for r in wanted[key] if r not in ladder.SCORED]
        if bad:
            raise EvaluateError(f"{key}: {', '.join(map(repr, bad))} is not a rung; choose from "
                                f"{', '.join(ladder.SCORED)} (the clean eval split is always scored)")
    rungs = [r for r in ladder.SCORED if r in wanted["eval_rungs"] and (r != HARSH or ev.eval_degraded)]
    unscored = [r for r in wanted["bless_rungs"] if r not in rungs]
    if unscored:
        why = " (eval_degraded is false)" if HARSH in unscored and not ev.eval_degraded else ""
        raise EvaluateError(f"bless_rungs: {', '.join(unscored)} is not scored (eval_rungs {ev.eval_rungs!r}{why}): "
                            "the blessing can only check rungs that eval_rungs scores")
    return rungs, [r for r in ladder.SCORED if r in wanted["bless_rungs"]]


def rung_split(rows: list[dict], rung: str, realistic, scale: int) -> tuple[list[dict], dict]:
    """The eval split's rows on `rung` (HR shared, LR degraded) and the parameters that made them: harsh by
    the fixed realistic draw (`degraded_split`), the others by the ladder's single camera-like pass."""
    if rung == HARSH:
        return degraded_split(rows, realistic, scale), {"seed": EVAL_SEED,
                                                        "realistic_degradation": dataclasses.asdict(realistic)}
    return ladder.camera_split(rows, rung, scale)


# ----------------------------------------------------------------------------- metrics

def super_resolve(model: upscaler.Upscaler, rows: list[dict], batch: int) -> list[np.ndarray]:
    """SR of every row's LR: equal-shaped small LRs in batches (at most BATCH_LR_PIXELS together), the
    others one by one (tiled when large): whole eval photos of one size must not go in as one batch."""
    out: list = [None] * len(rows)
    shapes: dict = {}
    for i, r in enumerate(rows):
        shapes.setdefault(r["lr"].shape, []).append(i)
    for shape, idx in shapes.items():
        per_batch = min(batch, BATCH_LR_PIXELS // (shape[0] * shape[1]))  # per shape: a large one must not
        if len(idx) == 1 or per_batch <= 1:                                 # shrink the batches of the next
            for i in idx:
                out[i] = upscaler.upscale_array(model, rows[i]["lr"], tile=EVAL_TILE, overlap=16)
            continue
        for s in range(0, len(idx), per_batch):
            chunk = idx[s:s + per_batch]
            for i, sr in zip(chunk, model(np.stack([rows[i]["lr"] for i in chunk]))):
                out[i] = sr
    return out


def with_bicubic(rows: list[dict], scale: int) -> list[dict]:
    """Adds each row's bicubic upscale and its metrics, once: every model evaluated on the rows and
    the grids compare with them."""
    for r in rows:
        r["bicubic"] = metrics.bicubic_upscale(r["lr"], scale).numpy()
        r["bicubic_metrics"] = metrics.all_metrics(r["bicubic"], r["hr"], crop_border=scale)
        r["bicubic_metrics"]["niqe"] = metrics.niqe(r["bicubic"], crop_border=scale)
        if r.get("hr_niqe") is None:  # the degraded rows share their HR with the clean ones
            r["hr_niqe"] = metrics.niqe(r["hr"], crop_border=scale)
    return rows


def score(rows: list[dict], sr: list[np.ndarray], scale: int) -> list[dict]:
    """Per image: the metrics of SR and of bicubic (rows from `with_bicubic`), and SR minus bicubic; NIQE
    of SR, bicubic and HR, None where it is undefined (a side under 192 px)."""
    per_image = []
    for r, s in zip(rows, sr):
        m_sr = {**metrics.all_metrics(s, r["hr"], crop_border=scale), "niqe": metrics.niqe(s, crop_border=scale)}
        m_bic = r["bicubic_metrics"]
        row = {"image": r["name"]}
        for k in (*METRIC_KEYS, "niqe"):
            row[k] = m_sr[k]
            row[f"bicubic_{k}"] = m_bic[k]
            row[f"gain_{k}"] = None if m_sr[k] is None else m_sr[k] - m_bic[k]
        row["hr_niqe"] = r["hr_niqe"]
        per_image.append(row)
    return per_image


def summarize(per_image: list[dict]) -> dict:
    """Means over the images; a NIQE mean over the images where it is defined (`niqe_images` of them),
    None where it is defined for none."""
    keys = [k for k in per_image[0] if k != "image"]
    out = {"num_images": len(per_image), "niqe_images": sum(r["niqe"] is not None for r in per_image)}
    for k in keys:
        values = [r[k] for r in per_image if r[k] is not None]
        out[k] = float(np.mean(values)) if values else None
    return out


def bless(candidate: dict, baseline: dict | None, baseline_version: int | None, min_gain_db: float,
          tolerance_db: float) -> tuple[bool, list[str]]:
    """TFX-style blessing on the eval split's mean PSNR (RGB): beats bicubic by `min_gain_db`, and is
    not worse than the current model (LATEST) by more than `tolerance_db`."""
    values = [candidate["psnr_rgb"], candidate["ssim_rgb"]]
    if not all(math.isfinite(v) for v in values):
        return False, [f"metrics are not finite: psnr_rgb {values[0]}, ssim_rgb {values[1]}"]
    return _psnr_checks("", candidate, baseline, baseline_version, min_gain_db, tolerance_db,
                        "pass: no model has been pushed yet (no LATEST): nothing to compare with")


def _psnr_checks(label: str, c: dict, baseline: dict | None, baseline_version: int | None, min_gain_db: float,
                 tolerance_db: float, no_baseline: str | None = None) -> tuple[bool, list[str]]:
    """Mean PSNR (RGB) over bicubic by at least `min_gain_db`, and at most `tolerance_db` below the current
    model's (when there is one); `label` prefixes the reasons (a rung's name)."""
    gain = c["psnr_rgb"] - c["bicubic_psnr_rgb"]
    ok = gain >= min_gain_db
    reasons = [f"{'pass' if ok else 'FAIL'}: {label}PSNR (RGB) {c['psnr_rgb']:.3f} dB is {gain:+.3f} dB "
               f"over bicubic ({c['bicubic_psnr_rgb']:.3f} dB); required >= {min_gain_db:+.3f} dB"]
    if baseline is None:
        reasons += [no_baseline] if no_baseline else []
        return ok, reasons
    delta = c["psnr_rgb"] - baseline["psnr_rgb"]
    passed = delta >= -tolerance_db
    reasons.append(f"{'pass' if passed else 'FAIL'}: {label}PSNR (RGB) {delta:+.3f} dB vs the current model "
                   f"(version {baseline_version}, {baseline['psnr_rgb']:.3f} dB on the same images); "
                   f"allowed down to -{tolerance_db:.3f} dB")
    return ok and passed, reasons


def bless_on_rungs(candidate: dict, baseline: dict | None, baseline_version: int | None, names: list[str],
                   tolerance_db: float, below_bicubic_db: float = 0.0) -> tuple[bool, list[str]]:
    """The blessing's check on the rungs `bless_rungs` names ({rung: means} of the candidate and of LATEST):
    on each, mean PSNR (RGB) at most `below_bicubic_db` below bicubic's (0: not below bicubic) and at most
    `tolerance_db` below the current model's on the same LR."""
    reasons, ok = [], True
    for rung in names:
        c = candidate[rung]
        if not math.isfinite(c["psnr_rgb"]):
            ok = False
            reasons.append(f"FAIL: {rung} rung: PSNR (RGB) is not finite ({c['psnr_rgb']})")
            continue
        passed, why = _psnr_checks(f"{rung} rung: ", c, baseline[rung] if baseline is not None else None,
                                   baseline_version, -below_bicubic_db, tolerance_db)
        ok &= passed
        reasons += why
    return ok, reasons


def bless_perceptual(candidate: dict, baseline: dict | None, baseline_version: int | None, min_niqe_gain: float,
                     max_psnr_drop_db: float, baseline_name: str | None = None,
                     max_checkerboard: float = 0.0) -> tuple[bool, list[str]]:
    """The rule for GAN models: mean NIQE (full-size images) better than the current model's (LATEST; with
    none, bicubic's) by at least `min_niqe_gain`, and mean PSNR (RGB, eval split) at most `max_psnr_drop_db`
    below it; with `max_checkerboard` > 0 also a mean checkerboard measure (HR = 1) at most that.
    `candidate`/`baseline`: {'psnr_rgb', 'bicubic_psnr_rgb', 'niqe', 'bicubic_niqe', 'niqe_images',
    'checkerboard'}; `baseline_name` names a baseline that is not a registry version (e.g. a warm start)."""
    if candidate.get("niqe") is None or not candidate.get("niqe_images"):
        return False, ["FAIL: NIQE is undefined for every eval image (it needs sides of at least "
                       f"{metrics.NIQE_MIN_SIDE} px): the perceptual rule cannot judge; evaluate on full-size "
                       "images (--eval-images)"]
    if not math.isfinite(candidate["psnr_rgb"]) or not math.isfinite(candidate["niqe"]):
        return False, [f"metrics are not finite: psnr_rgb {candidate['psnr_rgb']}, niqe {candidate['niqe']}"]
    if baseline is None:
        what, ref_niqe, ref_psnr = "bicubic (no model pushed yet)", candidate["bicubic_niqe"], candidate["bicubic_psnr_rgb"]
    else:
        what = baseline_name or f"the current model (version {baseline_version})"
        ref_niqe, ref_psnr = baseline["niqe"], baseline["psnr_rgb"]
    gain, drop = ref_niqe - candidate["niqe"], ref_psnr - candidate["psnr_rgb"]
    niqe_ok, psnr_ok = gain >= min_niqe_gain, drop <= max_psnr_drop_db
    reasons = [
        f"{'pass' if niqe_ok else 'FAIL'}: NIQE {candidate['niqe']:.3f} vs {ref_niqe:.3f} of {what} on the same "
        f"{candidate['niqe_images']} full-size images: {gain:+.3f} better; required >= {min_niqe_gain:+.3f}",
        f"{'pass' if psnr_ok else 'FAIL'}: PSNR (RGB) {candidate['psnr_rgb']:.3f} dB vs {ref_psnr:.3f} dB of {what}: "
        f"{drop:.3f} dB lower; allowed up to {max_psnr_drop_db:.3f} dB"]
    if not max_checkerboard:
        return niqe_ok and psnr_ok, reasons
    board = candidate.get("checkerboard")
    board_ok = board is not None and math.isfinite(board) and board <= max_checkerboard
    return niqe_ok and psnr_ok and board_ok, reasons + [
        f"{'pass' if board_ok else 'FAIL'}: checkerboard measure {board if board is None else f'{board:.3f}'} x the "
        f"HR photos' (mean over the full-size images); allowed up to {max_checkerboard:.3f}"]


def _perceptual_summary(split: dict, scored: list) -> dict:
    """What the perceptual rule reads: PSNR from the eval split, NIQE and the checkerboard measure pooled over
    every image where NIQE is defined (the eval split's whole photos of a patches dataset, the --eval-images
    folders; not the crops)."""
    pooled = summarize([row for scores in scored for row in scores])
    full_size = [row["checkerboard"] for scores in scored for row in scores if row["niqe"] is not None]
    return {"psnr_rgb": split["psnr_rgb"], "bicubic_psnr_rgb": split["bicubic_psnr_rgb"],
            "niqe": pooled.get("niqe"), "bicubic_niqe": pooled.get("bicubic_niqe"),
            "hr_niqe": pooled.get("hr_niqe"), "niqe_images": pooled.get("niqe_images", 0),
            "checkerboard": float(np.mean(full_size)) if full_size else None}  # the images NIQE pools


# ----------------------------------------------------------------------------- outputs

def _csv(per_image: list[dict], split: str) -> str:
    buf = io.StringIO()
    fields = ["split", *per_image[0].keys()]
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in per_image:
        w.writerow({"split": split, **{k: (f"{v:.6f}" if isinstance(v, float) else "undefined" if v is None else v)
                                       for k, v in r.items()}})
    return buf.getvalue()


def _grids(rows, sr, per_image, limit: int, scale: int) -> list[bytes]:
    """Comparison grid PNGs for the first `limit` images, ROWS_PER_GRID rows each (one per image
    when sizes differ, as in Set5)."""
    items = []
    for r, s, p in list(zip(rows, sr, per_image))[:limit]:
        items.append({"name": r["name"], "lr": r["lr"], "hr": r["hr"], "sr": s, "bicubic": r["bicubic"],
                      "psnr_bicubic": p["bicubic_psnr_rgb"], "psnr_sr": p["psnr_rgb"]})
    same_size = len({i["hr"].shape for i in items}) == 1
    step = ROWS_PER_GRID if same_size else 1
    return [plots.comparison_grid(items[i:i + step], scale) for i in range(0, len(items), step)]


def _report_html(metrics_json: dict, csv_text: str, folder: str) -> str:
    """report.html of an eval folder: metrics.json's content, per_image.csv's text, the PNGs in `folder`
    (linked relative to it)."""
    pngs = [storage.relpath(f, folder) for f in storage.list_files(folder) if storage.matches_extension(f, (".png",))]
    return report.render(metrics_json, list(csv.DictReader(io.StringIO(csv_text))), sorted(pngs))


def rewrite_report(cfg: Config) -> str:
    """Write report.html of a committed evaluation again, from its files (the evaluation is not run again);
    returns its URI. The eval folder of --run-id, or --output. One object, written whole (readers see the old
    page or the new one); nothing is written when there is no committed evaluation."""
    if not (cfg.run_id or cfg.output):
        raise EvaluateError("nothing to report on: pass --run-id (a run with a committed evaluation) or --output "
                            "(an eval folder)")
    out = cfg.output or runs.eval_uri(cfg.artifact_root, cfg.run_id)
    verdict = runs.decision(out)
    if verdict is None:
        how = f"jobs/evaluate.py --run-id {cfg.run_id}" if cfg.run_id else "jobs/evaluate.py"
        raise EvaluateError(f"{out}: no committed evaluation there (no {BLESSED} or {NOT_BLESSED} file): "
                            f"nothing to report; evaluate first ({how})")
    csv_uri = storage.join(out, "per_image.csv")
    page = _report_html({**runs.read_metrics(out), **verdict},  # the decision as its file states it
                        storage.read_text(csv_uri) if storage.exists(csv_uri) else "", out)
    uri = storage.join(out, runs.REPORT_HTML)
    storage.write_text(uri, page)
    return uri


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


# ----------------------------------------------------------------------------- the component

INTERPOLATED = "generator_interpolated.keras"  # in the eval folder: the blend the evaluator chose, which is pushed


def _curve_point(model, rows: list[dict], folder_rows: list, batch: int, scale: int) -> dict:
    """What the perceptual rule reads, and only that (a curve has several points): mean PSNR (RGB) on the eval
    split; NIQE and the checkerboard measure pooled over the full-size images (eval split and folders)."""
    psnrs, niqes, boards = [], [], []
    for i, (r_rows, sr) in enumerate([(rows, super_resolve(model, rows, batch))]
                                     + [(f, super_resolve(model, f, 1)) for _u, f in folder_rows]):
        for r, s in zip(r_rows, sr):
            if i == 0:
                psnrs.append(float(metrics.psnr(s, r["hr"], crop_border=scale)))
            n = metrics.niqe(s, crop_border=scale)
            if n is not None:  # the full-size images, as _perceptual_summary pools them
                niqes.append(n)
                boards.append(metrics.checkerboard(s, r["hr"], crop_border=scale, scale=scale))
    return {"psnr_rgb": float(np.mean(psnrs)), "niqe": float(np.mean(niqes)) if niqes else None,
            "niqe_images": len(niqes), "checkerboard": float(np.mean(boards)) if boards else None}


def _interpolate(cfg: Config, model, rows: list[dict], folder_rows: list, out: str) -> dict | None:
    """Network interpolation and the warm-start comparison, for a Keras generator whose run has a PSNR-oriented
    generator (or `interpolation_base`): the perception-distortion curve over {0} + `interpolation_alphas`
    (PSNR on the eval split, NIQE pooled over the full-size images) and the chosen alpha with its generator
    ('keras'; None when alpha 1, the GAN itself, is chosen or no alphas were asked), plus 'psnr_point' (alpha 0:
    what the perceptual rule compares with). None when there is nothing to blend or compare."""
    from components.evaluator import interpolation

    ev, scale = cfg.evaluate, cfg.preprocess.scale
    if not (ev.interpolation_alphas or ev.bless_rule == "perceptual") or model.kind != "keras":
        return None
    psnr_uri = interpolation.psnr_generator_of(cfg.artifact_root, cfg.run_id, ev.interpolation_base)
    if psnr_uri is None:
        if ev.interpolation_alphas:
            log.warning("interpolation_alphas: no PSNR-oriented generator to blend with (the run has no %s; set "
                        "interpolation_base): the generator is judged as it is", runs.GENERATOR_PSNR)
        return None
    gan = interpolation.load_generator(model.source)
    psnr = interpolation.load_generator(psnr_uri)
    curve, blends = [], {}
    for alpha in sorted({0.0, *ev.interpolation_alphas}):
        blended = interpolation.blend(gan, psnr, alpha)
        up = upscaler.from_generator(blended, f"alpha {alpha:g}")
        point = {"alpha": alpha, **_curve_point(up, rows, folder_rows, ev.eval_batch_size, scale)}
        curve.append(point)
        blends[alpha] = blended
        log.info("interpolation alpha %.2f: PSNR (RGB) %.3f dB, NIQE %s", alpha, point["psnr_rgb"],
                 "undefined" if point["niqe"] is None else f"{point['niqe']:.3f}")
    result = {"psnr_generator": psnr_uri, "gan_generator": model.source, "psnr_point": curve[0]}
    if ev.interpolation_alphas:
        chosen = interpolation.choose(curve, ev.bless_max_psnr_drop_db, ev.bless_max_checkerboard)["alpha"]
        result.update(alphas=sorted(ev.interpolation_alphas), curve=curve, chosen_alpha=chosen,
                      generator=storage.join(out, INTERPOLATED),
                      keras=blends[chosen])
        log.info("interpolation: alpha %.2f chosen (lowest NIQE within %.2f dB of alpha 0's PSNR%s)", chosen,
                 ev.bless_max_psnr_drop_db, f", checkerboard <= {ev.bless_max_checkerboard:g}"
                 if ev.bless_max_checkerboard else "")
    return result


def _target(cfg: Config) -> tuple[str, str, str]:
    """(model URI, dataset id, output URI) for what the config asks to evaluate."""
    if cfg.run_id:
        record = runs.read_run(cfg.artifact_root, cfg.run_id)
        if record is None:
            raise EvaluateError(f"run {cfg.run_id}: no run.json under {cfg.artifact_root}/runs (train it first)")
        if record.get("status") != "succeeded" or not record.get("final_generator"):
            raise EvaluateError(f"run {cfg.run_id} has status {record.get('status')!r} and no final generator: "
                                "only finished runs are evaluated")
        model = cfg.model_uri or record["final_generator"]
        return model, cfg.dataset_id or record["dataset_id"], cfg.output or runs.eval_uri(cfg.artifact_root, cfg.run_id)
    if cfg.model_uri:
        if not cfg.output:
            raise EvaluateError("evaluating --model-uri without --run-id needs --output (where the results go)")
        dataset_id = cfg.dataset_id
        if not dataset_id and registry.is_version_folder(cfg.model_uri):
            dataset_id = registry.card(cfg.model_uri).get("dataset_id")
        if not dataset_id:
            raise EvaluateError("no dataset to evaluate on: pass --dataset-id")
        return cfg.model_uri, dataset_id, cfg.output
    raise EvaluateError("nothing to evaluate: pass --run-id (a trained run) or --model-uri")


def run(cfg: Config) -> dict:
    """Evaluate; returns metrics.json's content (with 'decision'). A committed eval is reused unless force."""
    model_uri, dataset_id, out = _target(cfg)
    ev, scale = cfg.evaluate, cfg.preprocess.scale
    if ev.bless_rule not in BLESS_RULES:  # before any model runs
        raise EvaluateError(f"bless_rule {ev.bless_rule!r}: choose one of {', '.join(BLESS_RULES)}")
    rung_names, bless_names = scored_rungs(ev)  # before any model runs too
    existing = runs.decision(out)
    if existing and not cfg.force:
        log.info("%s: already evaluated (%s); --force re-evaluates", out, existing["decision"])
        return runs.read_metrics(out)
    started = time.time()
    dataset_uri = dataset.dataset_uri(cfg.artifact_root, dataset_id)
    rows = with_bicubic(eval_split(dataset_uri), scale)
    try:
        model = upscaler.load(model_uri)
    except registry.RegistryError as exc:
        raise EvaluateError(str(exc)) from None
    folder_rows = [(uri, with_bicubic(image_folder(uri, scale), scale))
                   for uri in [u.strip() for u in (ev.eval_images or "").split(",") if u.strip()]]
    interp = _interpolate(cfg, model, rows, folder_rows, out)
    interp_keras = interp.pop("keras", None) if interp else None
    if interp_keras is not None:  # the chosen blend is what is judged (and pushed)
        model = upscaler.from_generator(interp_keras, f"{model.source} interpolated (alpha {interp['chosen_alpha']:g})")
    log.info("evaluating %s on %d eval images of dataset %s", model.source, len(rows), dataset_id)
    sr = super_resolve(model, rows, ev.eval_batch_size)
    per_image = score(rows, sr, scale)
    summary = summarize(per_image)

    rungs = {}  # rung -> (rows, sr, scores, parameters): the eval split down the severity ladder
    for rung in rung_names:
        r_rows, params = rung_split(rows, rung, cfg.realistic_degradation, scale)
        r_rows = with_bicubic(r_rows, scale)
        r_sr = super_resolve(model, r_rows, ev.eval_batch_size)
        rungs[rung] = (r_rows, r_sr, score(r_rows, r_sr, scale), params)
        means = summarize(rungs[rung][2])
        log.info("%s rung%s: PSNR (RGB) %.3f dB vs bicubic %.3f dB (%+.3f)", rung,
                 " (the degraded eval split)" if rung == HARSH else "", means["psnr_rgb"], means["bicubic_psnr_rgb"],
                 means["gain_psnr_rgb"])

    folders = []  # (name, rows, sr, scores) per --eval-images folder
    for uri, f_rows in folder_rows:
        folder_sr = super_resolve(model, f_rows, 1)
        folders.append((uri, f_rows, folder_sr, score(f_rows, folder_sr, scale)))
        means = summarize(folders[-1][3])
        log.info("%s: PSNR (RGB) %.3f dB vs bicubic %.3f dB; NIQE %s", uri, means["psnr_rgb"],
                 means["bicubic_psnr_rgb"], "undefined" if means["niqe"] is None else f"{means['niqe']:.3f}")

    root = registry.model_root(cfg.artifact_root, cfg.push.model_name)
    baseline_version, baseline, baseline_scored, baseline_rungs = registry.latest(root), None, [], None
    if baseline_version is not None:
        baseline_model = upscaler.load(root, baseline_version)
        baseline_scored = [score(rows, super_resolve(baseline_model, rows, ev.eval_batch_size), scale)]
        baseline = summarize(baseline_scored[0])
        baseline_rungs = {rung: summarize(score(r_rows, super_resolve(baseline_model, r_rows, ev.eval_batch_size), scale))
                          for rung, (r_rows, _sr, _p, _params) in rungs.items()}
        baseline_scored += [score(f_rows, super_resolve(baseline_model, f_rows, 1), scale) for _u, f_rows, _s, _p in folders]
        log.info("current model (version %d): PSNR %.3f dB on the same images", baseline_version, baseline["psnr_rgb"])
    perceptual = {"candidate": _perceptual_summary(summary, [per_image] + [f[3] for f in folders]),
                  "baseline": _perceptual_summary(baseline, baseline_scored) if baseline else None}
    if ev.bless_rule == "perceptual":
        ok, reasons = bless_perceptual(perceptual["candidate"], perceptual["baseline"], baseline_version,
                                       ev.bless_min_niqe_gain, ev.bless_max_psnr_drop_db,
                                       max_checkerboard=ev.bless_max_checkerboard)
    else:
        ok, reasons = bless(summary, baseline, baseline_version, ev.bless_min_gain_db, ev.bless_tolerance_db)
    if ev.bless_rule == "perceptual" and interp:  # a GAN must also be more natural than what it started from
        warm_ok, warm_reasons = bless_perceptual(
            perceptual["candidate"], interp["psnr_point"], None, ev.bless_min_niqe_gain, ev.bless_max_psnr_drop_db,
            baseline_name="its warm start (the PSNR-oriented generator the GAN phase began from)")
        ok, reasons = ok and warm_ok, reasons + warm_reasons
    rung_means = {rung: summarize(scores) for rung, (_r, _s, scores, _p) in rungs.items()}
    if bless_names:  # on each rung named: the PSNR rule's bounds (not below bicubic, within the tolerance of
        #              LATEST), or the perceptual rule's (at most bless_max_psnr_drop_db below either)
        if ev.bless_rule == "perceptual":
            tolerance, below_bicubic = ev.bless_max_psnr_drop_db, ev.bless_max_psnr_drop_db
        else:
            tolerance, below_bicubic = ev.bless_tolerance_db, 0.0
        rung_ok, rung_reasons = bless_on_rungs(rung_means, baseline_rungs, baseline_version, bless_names,
                                               tolerance, below_bicubic)
        ok, reasons = ok and rung_ok, reasons + rung_reasons

    result = {
        "decision": BLESSED if ok else NOT_BLESSED,
        "reasons": reasons,
        "model": model.source,
        "model_kind": model.kind,
        "run_id": cfg.run_id,
        "dataset_id": dataset_id,
        "eval_split": summary,
        "rungs": {rung: {**rung_means[rung], "csv_split": rung_label(rung), "parameters": rungs[rung][3]}
                  for rung in rungs} or None,
        "degraded": {**rung_means[HARSH], **rungs[HARSH][3]} if HARSH in rungs else None,  # the harsh rung
        "eval_images": {storage.basename(uri): {"uri": uri, **summarize(scores)} for uri, _r, _s, scores in folders}
        or None,
        "baseline": {"model": f"{root}/{baseline_version}", "version": baseline_version, "eval_split": baseline,
                     "rungs": baseline_rungs or None, "degraded": (baseline_rungs or {}).get(HARSH),
                     "eval_images": {storage.basename(f[0]): summarize(p) for f, p in zip(folders, baseline_scored[1:])}
                     or None}
        if baseline else None,
        "interpolation": {k: v for k, v in interp.items() if k != "psnr_point"} if interp and interp.get("alphas")
        else None,
        "bless_rule": ev.bless_rule,
        "perceptual": perceptual,  # the numbers the perceptual rule reads (reported whichever rule decided)
        "thresholds": {"bless_min_gain_db": ev.bless_min_gain_db, "bless_tolerance_db": ev.bless_tolerance_db,
                       "bless_min_niqe_gain": ev.bless_min_niqe_gain, "bless_max_psnr_drop_db": ev.bless_max_psnr_drop_db,
                       "bless_rungs": bless_names},
        "convention": metrics.convention(scale),
        "code_version": provenance.code_version(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.time() - started, 1),
    }
    if existing:  # --force: replace the committed evaluation
        storage.delete(out, recursive=True)
    with storage.staged_output(out, result["decision"]) as d:
        def put(rel: str, data: bytes | str):
            path = os.path.join(d, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data.encode() if isinstance(data, str) else data)
        csv_text = _csv(per_image, "eval")
        for rung, (_r, _s, scores, _p) in rungs.items():
            csv_text += _csv(scores, rung_label(rung)).split("\n", 1)[1]
        for uri, _rows, _sr, scores in folders:
            csv_text += _csv(scores, f"images:{storage.basename(uri)}").split("\n", 1)[1]
        put("per_image.csv", csv_text)
        for i, png in enumerate(_grids(rows, sr, per_image, ev.grid_images, scale)):
            put(f"grids/eval-{i:03d}.png", png)
        for rung, (r_rows, r_sr, scores, _p) in rungs.items():
            for i, png in enumerate(_grids(r_rows, r_sr, scores, ev.grid_images, scale)):
                put(f"grids/{rung_label(rung)}-{i:03d}.png", png)
        for uri, folder_rows, folder_sr, scores in folders:
            for r, png in zip(folder_rows, _grids(folder_rows, folder_sr, scores, ev.grid_images, scale)):
                put(f"grids/{_safe(storage.basename(uri))}-{_safe(os.path.splitext(r['name'])[0])}.png", png)
        curve = plots.loss_curve(runs.read_history(cfg.artifact_root, cfg.run_id)) if cfg.run_id else None
        if curve:
            put(runs.LOSS_CURVE_PNG, curve)
        if result["interpolation"]:
            interp_keras.save(os.path.join(d, INTERPOLATED))
        metrics_text = json.dumps(result, indent=2, sort_keys=True) + "\n"
        put(runs.REPORT_HTML, _report_html(json.loads(metrics_text), csv_text, d))  # exactly what metrics.json says
        put(runs.METRICS_JSON, metrics_text)
        put(result["decision"], json.dumps({"decision": result["decision"], "reasons": reasons}, indent=2) + "\n")
    log.debug("%s: %s", result["decision"], "; ".join(reasons))  # the jobs print the decision, once
    log.info("PSNR (RGB) %.3f dB vs bicubic %.3f dB (%+.3f); metrics and grids in %s", summary["psnr_rgb"],
             summary["bicubic_psnr_rgb"], summary["gain_psnr_rgb"], out)
    log.info("report: %s", storage.join(out, runs.REPORT_HTML))
    return result
