"""The GAN phase, judged on full-size photos (issues 14 and 23): an ablation of GAN recipes at one budget, all
from the same SRResNet warm start. Prints one JSON object (a row per recipe) and writes a markdown table.

    # the warm start: faces-fast SRResNet on full-resolution CelebA-HQ patches, clean (bicubic) LR
    python bench/gan.py warmstart --artifact-root /tmp/srgan-recipes --steps 1500
    # the rows, each GAN_STEPS steps from that warm start, then evaluated with network interpolation
    python bench/gan.py ablation --artifact-root /tmp/srgan-recipes --gan-steps 250 \
        --recipes random_vgg19,vgg16_one,vgg16_multi,offline,best
    # the same with a fixed blur after each pixel shuffle (upsample_filter: binomial), warm start and GAN alike
    python bench/gan.py warmstart --steps 1500 --upsample-filter binomial
    python bench/gan.py ablation --steps 1500 --upsample-filter binomial --gan-steps 1800 --recipes vgg16_one
    # ESRGAN's nearest-neighbour + conv upsampling instead of the pixel shuffle
    python bench/gan.py warmstart --steps 1500 --upsample nearest

Data: the 100 CelebA-HQ 1024 photos of ../shared/data/faces-dev, `crop_mode: patches` (192 px patches of the
90 train photos at full resolution, 64 px random crops per step), `eval_count: 10` (10 photos never trained
on, evaluated WHOLE: LR 256 -> SR 1024). Judged also on Set14. NIQE as BasicSR; PSNR/SSIM RGB, border 4;
the checkerboard measure (SR's energy at the sub-pixel periods over HR's) and colour drift.
The GAN phase trains with the warm start's degradation (bicubic). Every recipe is evaluated with network
interpolation (alphas 0..1) and the evaluator's perceptual rule against the warm start as LATEST-like baseline.
Recipes (RECIPES below): random_vgg19 = the setting BENCHMARKS measured before (random VGG19 features);
vgg16_one = ImageNet VGG16 block5_conv3 before the ReLU, L1; vgg16_multi = ImageNet VGG16, Real-ESRGAN's five
layers, L1; offline = discriminator feature matching (no ImageNet weights); best = vgg16_multi + RaGAN +
EMA 0.999 + spectral norm + Adam betas 0.9/0.99 (BasicSR's). Perceptual weights are normalised so the weighted
term is about 1 for bicubic on faces (Keras' caffe-style VGG features are ~50-500 in L1, BasicSR's torch-style ~1).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(HERE), "shared", "data")
VGG16 = os.path.join(SHARED, "vgg16", "vgg16_imagenet_notop.weights.h5")
WARM = {"generator_width": 32, "generator_blocks": 8, "residual_over_bicubic": True, "pretrain_learning_rate": 5e-4,
        "lr_decay": "cosine", "global_batch_size": 16, "steps_per_epoch": 200, "train_crop_size": 64}
# what every row shares (Real-ESRGAN's balance: pixel L1 1.0 on [0, 1] images = 0.5 on our [-1, 1] ones, the
# perceptual term about 1, adversarial 0.1), then each row's own keys
COMMON = {"pixel_weight": 0.5, "pixel_criterion": "l1", "adversarial_weight": 0.1, "g_learning_rate": 1e-4,
          "d_learning_rate": 1e-4, "lr_decay": "constant", "discriminator_width": 64, "discriminator_depth": 8,
          "discriminator_dense": 1024, "gan_loss": "standard", "ema_decay": 0.0, "discriminator_spectral_norm": False,
          "adam_beta1": 0.9, "adam_beta2": 0.999}
RECIPES = {
    "random_vgg19": {"content_loss": "vgg_normalized", "vgg_network": "vgg19", "vgg_weights": "none",
                     "vgg_layers": "srgan", "content_weight": 1.0, "pixel_weight": 1e-2, "pixel_criterion": "mse",
                     "adversarial_weight": 5e-3},
    "vgg16_one": {"content_loss": "vgg", "vgg_network": "vgg16", "vgg_weights": VGG16, "vgg_layers": "srgan",
                  "vgg_before_activation": True, "vgg_criterion": "l1", "content_weight": 0.023},
    "vgg16_multi": {"content_loss": "vgg", "vgg_network": "vgg16", "vgg_weights": VGG16, "vgg_layers": "realesrgan",
                    "vgg_before_activation": True, "vgg_criterion": "l1", "content_weight": 0.002},
    "offline": {"content_loss": "feature_matching", "content_weight": 1.0},
}
RECIPES["best"] = {**RECIPES["vgg16_multi"], "gan_loss": "ragan", "ema_decay": 0.999,
                   "discriminator_spectral_norm": True, "adam_beta2": 0.99}
ALPHAS = [0.0, 0.3, 0.5, 0.65, 0.8, 1.0]
KEEP = ("num_images", "psnr_rgb", "bicubic_psnr_rgb", "ssim_rgb", "niqe", "bicubic_niqe", "hr_niqe", "niqe_images",
        "checkerboard", "bicubic_checkerboard", "colour_drift")


def _config(args):
    from components import preprocess
    from components.config import Config

    cfg = Config(artifact_root=args.artifact_root, input=os.path.join(SHARED, "faces-dev", "celebahq_1024"))
    cfg.preprocess.crop_mode, cfg.preprocess.eval_count = "patches", 10
    cfg.dataset_id = preprocess.run(cfg, [])["dataset_id"]
    ev = cfg.evaluate
    ev.eval_images = os.path.join(SHARED, "benchmarks", "Set14")
    ev.eval_rungs = ""  # the question is the GAN on clean input, on full-size photos
    ev.eval_degraded = False
    ev.bless_rule, ev.interpolation_alphas = "perceptual", ALPHAS
    ev.bless_max_checkerboard = args.max_checkerboard  # the issue's goal: at most 1.1 x the HR photos'
    cfg.push.model_name = "faces-x4-gan-bench"  # never pushed: judged against bicubic and the warm start
    # the first ablation's warm start had ICNR on (a pixel-shuffle initialiser: nearest has nothing to start)
    icnr = args.upsample_filter == "none" and args.upsample == "pixel_shuffle" and not args.no_icnr
    arch = {"upsample_filter": args.upsample_filter, "upsample": args.upsample, "icnr_init": icnr,
            "tail_init": args.tail_init}
    for k, v in {**WARM, **arch}.items():
        setattr(cfg.train, k, v)
    cfg.train.cpus_per_worker = args.cpus
    return cfg


def _means(result: dict) -> dict:
    out = {"eval_photos": {k: result["eval_split"].get(k) for k in KEEP}}
    for folder, means in (result.get("eval_images") or {}).items():
        out[os.path.basename(folder.rstrip("/"))] = {k: means.get(k) for k in KEEP}
    out["perceptual"] = result["perceptual"]["candidate"]
    return out


def _arch(args) -> str:
    """The run ids' architecture tag; none for the first ablation's (ICNR on, no filter)."""
    return ("" if args.upsample_filter == "none" else f"-{args.upsample_filter}") + ("-icnr0" if args.no_icnr else "") \
        + ("" if args.upsample == "pixel_shuffle" else f"-{args.upsample}") + ("-tail0" if args.tail_init == "zeros" else "")


def _warm_id(args, cfg) -> str:
    return f"gan-warm-{args.steps}{_arch(args)}-{cfg.dataset_id}"


def warmstart(args, cfg) -> dict:
    from components import evaluator, trainer

    t = cfg.train
    t.pretrain_steps, t.gan_steps, cfg.run_id = args.steps, 0, _warm_id(args, cfg)
    started = time.time()
    trainer.run(cfg)
    cfg.evaluate.interpolation_alphas = []
    result = evaluator.run(cfg)
    return {"run_id": cfg.run_id, "seconds": round(time.time() - started, 1), **_means(result)}


def ablation(args, cfg) -> dict:
    from components import evaluator, runs, trainer

    warm_id = _warm_id(args, cfg)
    warm = runs.read_run(args.artifact_root, warm_id)
    if warm is None or warm.get("status") != "succeeded":
        sys.exit(f"bench/gan.py: run {warm_id} is not finished: run `bench/gan.py warmstart --steps {args.steps}` first")
    rows = {}
    for name in args.recipes.split(","):
        t = cfg.train
        settings = {**COMMON, **RECIPES[name], **({"adversarial_weight": args.adversarial_weight}
                                                   if args.adversarial_weight is not None else {})}
        for k, v in settings.items():
            setattr(t, k, v)
        t.pretrain_steps, t.gan_steps = 0, args.gan_steps
        t.warm_start = runs.run_uri(args.artifact_root, warm_id)
        t.preemption_check_every_steps = 0  # a bench on one machine: no preemption barrier
        adv = "" if args.adversarial_weight is None else f"-adv{args.adversarial_weight:g}"
        cfg.run_id = f"gan-{name}-{args.gan_steps}-from-{args.steps}{_arch(args)}{adv}"
        started = time.time()
        trainer.run(cfg)
        train_seconds = time.time() - started
        history = runs.read_history(args.artifact_root, cfg.run_id)
        rates = runs.measured_rates(history, "gan")
        started = time.time()
        result = evaluator.run(cfg)
        interp = result.get("interpolation") or {}
        rows[name] = {"run_id": cfg.run_id, "settings": settings,
                      "train_seconds_incl_ray_start": round(train_seconds, 1), "eval_seconds": round(time.time() - started, 1),
                      "gan_images_per_second": round(rates[-1], 2) if rates else None,
                      "decision": result["decision"], "reasons": result["reasons"],
                      "alpha": interp.get("chosen_alpha"), "curve": interp.get("curve"),
                      "d_accuracy": runs.phase_thirds(history, "gan", ("d/accuracy_real", "d/accuracy_fake")),
                      **_means(result)}
        print(json.dumps({name: {"alpha": rows[name]["alpha"], "decision": result["decision"],
                                 "perceptual": rows[name]["perceptual"]}}), file=sys.stderr, flush=True)
    return rows


def table(report: dict) -> str:
    lines = ["| recipe | alpha | NIQE pooled | eval photos PSNR / SSIM / NIQE | Set14 PSNR / SSIM / NIQE | checkerboard (HR = 1) | "
             "GAN img/s | train s | verdict vs warm start |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in report["rows"].items():
        e, s = r["eval_photos"], r.get("Set14", {})
        lines.append(f"| {name} | {r['alpha']} | {r['perceptual']['niqe']:.3f} | {e['psnr_rgb']:.2f} / {e['ssim_rgb']:.3f} / "
                     f"{e['niqe']:.3f} | {s.get('psnr_rgb', 0):.2f} / {s.get('ssim_rgb', 0):.3f} / {s.get('niqe') or 0:.3f} | "
                     f"{e.get('checkerboard') or 0:.3f} | {r['gan_images_per_second']} | {r['train_seconds_incl_ray_start']} | "
                     f"{r['decision']} |")
    return "\n".join(lines)


def main(argv=None):
    from components.trainer.precision import speed_flags

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("warmstart", "ablation"))
    p.add_argument("--artifact-root", default="/tmp/srgan-recipes")
    p.add_argument("--steps", type=int, default=1500, help="the warm start's SRResNet steps")
    p.add_argument("--gan-steps", type=int, default=250)
    p.add_argument("--recipes", default=",".join(RECIPES))
    p.add_argument("--upsample-filter", default="none", choices=("none", "binomial"),
                   help="the generator's upsample_filter, warm start and GAN rows alike")
    p.add_argument("--upsample", default="pixel_shuffle", choices=("pixel_shuffle", "nearest", "bilinear"),
                   help="the generator's upsample (a resize + conv for nearest, bilinear), warm start and GAN alike")
    p.add_argument("--tail-init", default="glorot_uniform", choices=("glorot_uniform", "zeros"),
                   help="the generator's last conv's initialiser (zeros: the warm start starts at bicubic)")
    p.add_argument("--no-icnr", action="store_true", help="with --upsample-filter none: Glorot sub-pixel convs "
                   "(ICNR is on for that filter by default, as the first ablation ran)")
    p.add_argument("--adversarial-weight", type=float, default=None,
                   help="every row's adversarial_weight (default: the rows' own, 0.1 for the VGG16 rows)")
    p.add_argument("--max-checkerboard", type=float, default=1.1,
                   help="evaluate.bless_max_checkerboard for the rows' judgement (0: no cap, as the first ablations)")
    p.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    args = p.parse_args(argv)

    from components.logs import setup_console

    setup_console()
    cfg = _config(args)
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, flags {speed_flags()}", "what": args.what,
              "dataset_id": cfg.dataset_id, "warm_start_steps": args.steps,
              "upsample_filter": args.upsample_filter, "upsample": args.upsample, "icnr_init": cfg.train.icnr_init,
              "tail_init": args.tail_init}
    if args.what == "warmstart":
        report["warm_start"] = warmstart(args, cfg)
    else:
        report.update(gan_steps=args.gan_steps, alphas=ALPHAS, rows=ablation(args, cfg))
        report["table"] = table(report)
    print(json.dumps(report, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
