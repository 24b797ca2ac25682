"""What the data recipe buys, at a fixed step budget: prints one JSON object.

    python bench/recipes.py degradation --artifact-root /tmp/srgan-recipes [--steps 1200] [--crop 64]
    python bench/recipes.py patches --artifact-root /tmp/srgan-recipes [--steps 1200]
    python bench/recipes.py ladder --artifact-root /tmp/srgan-recipes --steps 2000 --crop 64

ladder (issue 24): ../shared/data/faces-dev centre crops; bicubic vs realistic vs `degradation: mixed` at two
  mixes (MIXES) vs the bicubic- and realistic-trained pair blended at strengths 0.25/0.5/0.75 (weights:
  strength * realistic + (1 - strength) * bicubic), one step budget; every model on every rung of the evaluator's
  severity ladder (clean; mild and moderate: camera-like passes written apart from the training sampler; harsh:
  the fixed Real-ESRGAN draw). Writes a table and <artifact root>/recipes/ladder-<steps>-c<crop>.png (clean PSNR
  against mild PSNR, and against harsh).

degradation (issue 13): ../shared/data/faces-dev, centre crops; the same SRResNet recipe trained with
  `degradation: bicubic` (the stored clean LR) and `degradation: realistic` (Real-ESRGAN's second-order
  pipeline on the fly); both evaluated on the clean eval split and on the same split under the evaluator's
  fixed realistic degradation (grids/degraded-*.png of each eval folder show the same degraded faces;
  <artifact root>/recipes/degradation-<steps>[-c<crop>].png shows both models side by side on them).
patches (issue 12): the 100 CelebA-HQ 1024 photos of faces-dev; `crop_mode: center` (each photo shrunk to
  178 px, one 128 crop) vs `crop_mode: patches` (192 px patches at stride 96 at full resolution, the defaults;
  a random 128 crop of one per record and step); both evaluated on the patches dataset's eval photos at FULL size
  (LR 256 -> SR 1024); the eval photos are the same in both datasets (split by a hash of the path).
The recipe is configs/faces-fast.yaml's generator (32 wide x 8 blocks, residual over bicubic, Adam 5e-4,
cosine decay), pre-training only (PSNR-oriented): the comparison is about the data, not the GAN.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(HERE), "shared", "data")
RECIPE = {"generator_width": 32, "generator_blocks": 8, "residual_over_bicubic": True,
          "pretrain_learning_rate": 5e-4, "lr_decay": "cosine", "global_batch_size": 16, "steps_per_epoch": 200}
MIXES = {"mixed-a": [0.3, 0.4, 0.3], "mixed-b": [0.2, 0.3, 0.5], "mixed-c": [0.15, 0.6, 0.25]}  # clean, mild, realistic
STRENGTHS = (0.25, 0.5, 0.75)
RUNGS = ("clean", "mild", "moderate", "harsh")
KEEP = ("num_images", "psnr_rgb", "bicubic_psnr_rgb", "gain_psnr_rgb", "ssim_rgb", "bicubic_ssim_rgb",
        "gain_ssim_rgb", "niqe", "bicubic_niqe", "hr_niqe", "niqe_images")


def _train_and_evaluate(cfg, run_id: str, eval_dataset_id: str | None = None) -> dict:
    from components import evaluator, runs, trainer

    cfg.run_id = run_id
    started = time.time()
    trainer.run(cfg)
    seconds = time.time() - started
    saved = cfg.dataset_id
    cfg.dataset_id = eval_dataset_id or saved
    try:
        result = evaluator.run(cfg)
    finally:
        cfg.dataset_id = saved
    out = {"run_id": run_id, "train_seconds_incl_ray_start": round(seconds, 1),
           "clean": {k: result["eval_split"].get(k) for k in KEEP}}
    if result.get("degraded"):
        out["degraded"] = {k: result["degraded"].get(k) for k in KEEP}
    out["eval_folder"] = runs.eval_uri(cfg.artifact_root, run_id)
    return out


def _side_by_side(cfg, run_ids: dict, name: str, limit: int = 8) -> str:
    """One PNG of the first `limit` eval faces under the evaluator's fixed degradation: degraded LR | bicubic |
    the SR of each run | HR, with PSNRs; written under <artifact root>/recipes/. Returns its URI."""
    from components import dataset, metrics, plots, runs, storage, upscaler
    from components.evaluator import evaluate

    scale = cfg.preprocess.scale
    rows = evaluate.eval_split(dataset.dataset_uri(cfg.artifact_root, cfg.dataset_id))[:limit]
    rows = evaluate.with_bicubic(evaluate.degraded_split(rows, cfg.realistic_degradation, scale), scale)
    srs = [evaluate.super_resolve(upscaler.load(runs.read_run(cfg.artifact_root, rid)["final_generator"]), rows, limit)
           for rid in run_ids.values()]
    items = [{**{k: r[k] for k in ("name", "lr", "hr", "bicubic")}, "psnr_bicubic": r["bicubic_metrics"]["psnr_rgb"],
              "sr": [sr[i] for sr in srs],
              "psnr_sr": [metrics.all_metrics(sr[i], r["hr"], crop_border=scale)["psnr_rgb"] for sr in srs]}
             for i, r in enumerate(rows)]
    uri = storage.join(cfg.artifact_root, "recipes", f"{name}.png")
    storage.write_bytes(uri, plots.comparison_grid(items, scale, sr_titles=tuple(f"{k}-trained" for k in run_ids)))
    return uri


def _rung_psnrs(result: dict) -> dict:
    out = {"clean": result["eval_split"]["psnr_rgb"]}
    out.update({r: m["psnr_rgb"] for r, m in (result.get("rungs") or {}).items()})
    return out


def _ladder(cfg, args) -> dict:
    """Train (or reuse) bicubic, realistic and the mixes; blend the first two; score all on every rung."""
    import keras

    from components import evaluator, preprocess, runs, storage
    from components.evaluator import interpolation

    cfg.input = os.path.join(SHARED, "faces-dev")
    cfg.dataset_id = preprocess.run(cfg, [])["dataset_id"]
    cfg.train.train_crop_size = args.crop
    cfg.evaluate.eval_rungs = "mild,moderate,harsh"
    crop = f"-c{args.crop}" if args.crop else ""
    rows, results = {}, {}
    mixes = {m: MIXES[m] for m in args.mixes.split(",")}
    for name in ("bicubic", "realistic", *mixes):
        cfg.train.degradation = "mixed" if name in mixes else name
        if name in mixes:
            cfg.mixed_degradation.mix_prob = mixes[name]
        run_id = f"recipe-{name}-{args.steps}{crop}-{cfg.dataset_id}"
        cfg.run_id = run_id
        started = time.time()
        from components import trainer
        trainer.run(cfg)  # a finished run of this id is resumed at its end: nothing retrained
        seconds = time.time() - started
        result = evaluator.run(cfg)
        results[name] = result
        rows[name] = {"run_id": run_id, "train_seconds_incl_ray_start": round(seconds, 1), **_rung_psnrs(result)}
        print(json.dumps({name: rows[name]}), file=sys.stderr, flush=True)
    cfg.run_id = None
    bicubic_g = interpolation.load_generator(results["bicubic"]["model"])
    realistic_g = interpolation.load_generator(results["realistic"]["model"])
    for strength in STRENGTHS:
        name = f"blend-{strength:g}"
        path = os.path.join(args.artifact_root, "recipes", f"ladder-{name}-{args.steps}{crop}.keras")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        interpolation.blend(realistic_g, bicubic_g, strength).save(path)
        cfg.model_uri, cfg.output = path, os.path.join(args.artifact_root, "recipes", f"ladder-{name}-{args.steps}{crop}-eval")
        cfg.force = True
        rows[name] = {"strength": strength, **_rung_psnrs(evaluator.run(cfg))}
        cfg.model_uri = cfg.output = None
        cfg.force = False
    bicubic_psnr = {"clean": results["bicubic"]["eval_split"]["bicubic_psnr_rgb"],
                    **{r: m["bicubic_psnr_rgb"] for r, m in results["bicubic"]["rungs"].items()}}
    base = rows["bicubic"]
    for r in rows.values():
        r["vs_bicubic_trained"] = {k: round(r[k] - base[k], 3) for k in RUNGS}
        r["vs_realistic_harsh"] = round(r["harsh"] - rows["realistic"]["harsh"], 3)
        r["meets_goal"] = (r["vs_bicubic_trained"]["mild"] >= 0.5 and r["vs_bicubic_trained"]["clean"] >= -1.0
                           and r["vs_realistic_harsh"] >= -0.3)
    png = storage.join(cfg.artifact_root, "recipes", f"ladder-{args.steps}{crop}.png")
    storage.write_bytes(png, _ladder_plot(rows, bicubic_psnr))
    lines = ["| model | clean | mild | moderate | harsh | mild vs bicubic-trained | harsh vs realistic | goal |",
             "|---|---|---|---|---|---|---|---|",
             "| bicubic interpolation | " + " | ".join(f"{bicubic_psnr[k]:.3f}" for k in RUNGS) + " | | | |"]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{r[k]:.3f}" for k in RUNGS)
                     + f" | {r['vs_bicubic_trained']['mild']:+.3f} | {r['vs_realistic_harsh']:+.3f} | "
                       f"{'yes' if r['meets_goal'] else 'no'} |")
    return {"dataset_id": cfg.dataset_id, "train_crop_size": args.crop, "mixes": mixes, "strengths": STRENGTHS,
            "bicubic_interpolation": bicubic_psnr, "rows": rows, "plot": png, "table": "\n".join(lines)}


def _ladder_plot(rows: dict, bicubic_psnr: dict) -> bytes:
    """Two panels: clean PSNR (x) against mild PSNR, and against harsh PSNR (y); one point per model."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, rung in zip(axes, ("mild", "harsh")):
        for name, r in rows.items():
            ax.scatter(r["clean"], r[rung], marker="s" if name.startswith("blend") else "o")
            label = name if name.startswith("blend") else f"{name}-trained"
            ax.annotate(label, (r["clean"], r[rung]), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.scatter(bicubic_psnr["clean"], bicubic_psnr[rung], marker="x", color="k")
        ax.annotate("bicubic interpolation", (bicubic_psnr["clean"], bicubic_psnr[rung]), textcoords="offset points", xytext=(4, -10), fontsize=8)
        ax.set_xlabel("clean PSNR (dB)")
        ax.set_ylabel(f"{rung} PSNR (dB)")
        ax.set_title(f"clean vs {rung} (up and right is better)")
        ax.grid(alpha=0.3)
    from components.plots import figure_png

    return figure_png(fig, dpi=110)


def main(argv=None):
    from components.trainer.precision import speed_flags

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("compare", choices=("degradation", "patches", "ladder"))
    p.add_argument("--artifact-root", default="/tmp/srgan-recipes")
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--crop", type=int, default=None,
                   help="degradation: train on random aligned HR crops of this side (train_crop_size; default: the "
                        "stored 128): a 64 crop holds a quarter of the pixels, so more steps fit in the same time")
    p.add_argument("--mixes", default=",".join(MIXES), help="ladder: which of MIXES to train")
    p.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    args = p.parse_args(argv)

    from components import preprocess
    from components.config import Config
    from components.logs import setup_console

    setup_console()
    cfg = Config(artifact_root=args.artifact_root)
    t = cfg.train
    for k, v in RECIPE.items():
        setattr(t, k, v)
    t.cpus_per_worker, t.pretrain_steps, t.gan_steps = args.cpus, args.steps, 0
    cfg.evaluate.bless_min_gain_db = 0.0
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, flags {speed_flags()}",
              "compare": args.compare, "steps": args.steps, "recipe": RECIPE, "runs": {}}
    if args.compare == "ladder":
        report.update(_ladder(cfg, args))
    elif args.compare == "degradation":
        cfg.input = os.path.join(SHARED, "faces-dev")
        info = preprocess.run(cfg, [])
        cfg.dataset_id = info["dataset_id"]
        report.update(dataset_id=cfg.dataset_id, num_train=info["num_train"], num_eval=info["num_eval"])
        t.train_crop_size = args.crop
        report["train_crop_size"] = args.crop
        crop = f"-c{args.crop}" if args.crop else ""
        for mode in ("bicubic", "realistic"):
            t.degradation = mode
            report["runs"][mode] = _train_and_evaluate(cfg, f"recipe-{mode}-{args.steps}{crop}-{cfg.dataset_id}")
            print(json.dumps({mode: report["runs"][mode]["degraded"]["psnr_rgb"]}), file=sys.stderr)
        runs_ = report["runs"]
        report["side_by_side_png"] = _side_by_side(cfg, {m: r["run_id"] for m, r in runs_.items()},
                                                   f"degradation-{args.steps}{crop}")
        report["realistic_minus_bicubic_db"] = {
            split: round(runs_["realistic"][split]["psnr_rgb"] - runs_["bicubic"][split]["psnr_rgb"], 3)
            for split in ("clean", "degraded")}
    else:
        cfg.input = os.path.join(SHARED, "faces-dev", "celebahq_1024")
        cfg.preprocess.eval_count = 10
        cfg.evaluate.eval_degraded = False  # clean full-size photos are the question here (and 4x the pixels)
        datasets = {}
        for mode in ("patches", "center"):
            cfg.preprocess.crop_mode = mode
            datasets[mode] = preprocess.run(cfg, [])
        report["datasets"] = {m: {k: i.get(k) for k in ("dataset_id", "num_train", "num_train_photos", "num_eval",
                                                        "skipped_flat", "seconds")} for m, i in datasets.items()}
        full_size = datasets["patches"]["dataset_id"]
        for mode in ("center", "patches"):
            cfg.dataset_id = datasets[mode]["dataset_id"]
            t.train_crop_size = 128
            report["runs"][mode] = _train_and_evaluate(cfg, f"recipe-{mode}-{args.steps}-{cfg.dataset_id}",
                                                        eval_dataset_id=full_size)
            print(json.dumps({mode: report["runs"][mode]["clean"]["gain_psnr_rgb"]}), file=sys.stderr)
        report["patches_minus_center_gain_db"] = round(report["runs"]["patches"]["clean"]["gain_psnr_rgb"]
                                                       - report["runs"]["center"]["clean"]["gain_psnr_rgb"], 3)
    print(json.dumps(report, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
