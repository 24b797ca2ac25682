"""A GAN phase long enough to judge (issue 14): warm start from an SRResNet, N GAN steps, NIQE and PSNR
before and after, and the perceptual rule's verdict. Prints one JSON object.

    python bench/recipes.py degradation --artifact-root /tmp/srgan-recipes --steps 500   # the SRResNet
    python bench/gan.py --artifact-root /tmp/srgan-recipes \
        --warm-start recipe-realistic-500-ds-0b11523e770967e1 --gan-steps 600

Training data: the warm start's dataset (faces-dev centre crops, 128 px), LR made on the fly by
`degradation: realistic` (the warm start's own). Losses (ESRGAN's weighting): VGG19 block5_conv4 features
normalised per position (`content_loss: vgg_normalized`; RANDOM features, `vgg_weights: none`: ImageNet
weights cannot be downloaded here) x 1, pixel MSE x 1e-2, adversarial x 5e-3; Adam 1e-4 for G and D; the
reference discriminator (64 wide, depth 8, dense 1024).
Judged on full-size images, where NIQE is defined: the CelebA-HQ photos (1024 px) whose centre crops are in
the dataset's eval split (never trained on), and Set14; PSNR on the eval split (clean and degraded) too.
"Before" is the warm start's generator on the same images. The perceptual rule (`bless_perceptual`) is
asked twice: against bicubic (the evaluator's own decision: no model of this name is pushed) and against
the SRResNet (as if it were LATEST).
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
GAN = {"content_loss": "vgg_normalized", "vgg_weights": "none", "content_weight": 1.0, "pixel_weight": 1e-2,
       "adversarial_weight": 5e-3, "g_learning_rate": 1e-4, "d_learning_rate": 1e-4, "lr_decay": "constant",
       "discriminator_width": 64, "discriminator_depth": 8, "discriminator_dense": 1024}
KEEP = ("num_images", "psnr_rgb", "bicubic_psnr_rgb", "gain_psnr_rgb", "ssim_rgb", "niqe", "bicubic_niqe",
        "hr_niqe", "niqe_images")



def _full_size_folder(dataset_uri: str, dest: str) -> tuple[str, int]:
    """A folder of links to the CelebA-HQ photos whose crops are in the eval split (unseen in training)."""
    from components import dataset

    # names only: the PNGs stay undecoded
    names = sorted(n for n in (ex["source"].decode() for ex in dataset.read_split(dataset_uri, "eval", decode=False)
                               .as_numpy_iterator()) if "/celebahq_1024/" in n)
    os.makedirs(dest, exist_ok=True)
    for n in names:
        link = os.path.join(dest, os.path.basename(n))
        if not os.path.lexists(link):
            os.symlink(n, link)
    return dest, len(names)


def _summary(result: dict) -> dict:
    out = {"eval_split": {k: result["eval_split"].get(k) for k in KEEP},
           "perceptual": result["perceptual"]["candidate"]}
    if result.get("degraded"):
        out["degraded"] = {k: result["degraded"].get(k) for k in KEEP}
    for folder, means in (result.get("eval_images") or {}).items():
        out[os.path.basename(folder.rstrip("/"))] = {k: means.get(k) for k in KEEP}
    return out


def main(argv=None):
    from components.trainer.precision import speed_flags

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifact-root", default="/tmp/srgan-recipes")
    p.add_argument("--warm-start", required=True, help="run id of a finished SRResNet run under the artifact root")
    p.add_argument("--gan-steps", type=int, default=600)
    p.add_argument("--benchmarks", default=os.path.join(SHARED, "benchmarks"))
    p.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    args = p.parse_args(argv)

    from components import dataset, evaluator, runs, trainer
    from components.config import from_dict
    from components.evaluator.evaluate import bless_perceptual
    from components.logs import setup_console

    setup_console()
    warm = runs.read_run(args.artifact_root, args.warm_start)
    if warm is None or warm.get("status") != "succeeded":
        sys.exit(f"bench/gan.py: {args.warm_start}: no finished run under {args.artifact_root}/runs "
                 "(train it first: see this script's help)")
    # the warm start's recipe and degradation ranges, then the GAN settings over them
    cfg = from_dict({"train": warm["config"], "realistic_degradation": warm["realistic_degradation"]})
    cfg.artifact_root, cfg.dataset_id = args.artifact_root, warm["dataset_id"]
    t = cfg.train
    t.cpus_per_worker, t.pretrain_steps, t.gan_steps = args.cpus, 0, args.gan_steps
    t.preemption_check_every_steps = 1  # a GAN step takes ~15 s here: check at every one (the notice is 15 s)
    t.warm_start = runs.run_uri(args.artifact_root, args.warm_start)
    for k, v in GAN.items():
        setattr(t, k, v)
    folder, n_photos = _full_size_folder(dataset.dataset_uri(args.artifact_root, cfg.dataset_id),
                                         os.path.join(args.artifact_root, "bench-gan", "celebahq-eval"))
    ev = cfg.evaluate
    ev.eval_images = ",".join([folder, os.path.join(args.benchmarks, "Set14")])
    ev.bless_rule, cfg.push.model_name = "perceptual", "faces-x4-gan-bench"  # never pushed: judged vs bicubic
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, flags {speed_flags()}",
              "warm_start": args.warm_start, "dataset_id": cfg.dataset_id, "gan_steps": args.gan_steps,
              "gan_settings": GAN, "degradation": t.degradation, "celebahq_eval_photos": n_photos}

    started = time.time()
    cfg.model_uri, cfg.output = warm["final_generator"], os.path.join(args.artifact_root, "bench-gan", "before")
    before = evaluator.run(cfg)
    report["before"] = _summary(before)
    report["before"]["eval_folder"], report["before"]["seconds"] = cfg.output, round(time.time() - started, 1)
    print(json.dumps({"before": report["before"]["perceptual"]}), file=sys.stderr)

    cfg.model_uri, cfg.output = None, None
    cfg.run_id = f"bench-gan-{args.gan_steps}-{args.warm_start}"
    started = time.time()
    record = trainer.run(cfg)
    report["train_seconds_incl_ray_start"] = round(time.time() - started, 1)
    history = runs.read_history(args.artifact_root, cfg.run_id)
    rates = runs.measured_rates(history, "gan")
    report["images_per_second"] = round(rates[-1], 3) if rates else None
    report["d_accuracy"] = runs.phase_thirds(history, "gan", ("d/accuracy_real", "d/accuracy_fake"))
    report["nonfinite_steps"] = record.get("final_metrics", {}).get("nonfinite_steps")
    report["g_terms_weighted"] = runs.phase_thirds(  # each term as it enters the total: does one dwarf the rest?
        history, "gan", ("loss/g_content_weighted", "loss/g_pixel_weighted", "loss/g_adv_weighted"))

    started = time.time()
    after = evaluator.run(cfg)
    report["after"] = _summary(after)
    report["after"]["eval_folder"] = runs.eval_uri(args.artifact_root, cfg.run_id)
    report["after"]["seconds"] = round(time.time() - started, 1)
    report["verdict_vs_bicubic"] = {"decision": after["decision"], "reasons": after["reasons"]}
    ok, reasons = bless_perceptual(after["perceptual"]["candidate"], before["perceptual"]["candidate"], None,
                                   ev.bless_min_niqe_gain, ev.bless_max_psnr_drop_db, baseline_name="the warm start")
    report["verdict_vs_srresnet"] = {"blessed": ok, "reasons": reasons}
    print(json.dumps(report, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
