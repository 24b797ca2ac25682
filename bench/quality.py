"""SR quality on real faces within a fixed step budget, from scratch. Prints one JSON object.

    python bench/quality.py --artifact-root /tmp/srgan-quality [--recipe fast|reference]
                            [--pretrain-steps 3000] [--gan-steps 60] [--content-loss vgg|pixel]

1. Preprocess ../shared/data/faces-dev (1,120 CelebA-family photos; eval split 10% by path hash).
2. Pre-train the generator (SRResNet phase) for --pretrain-steps, then evaluate it on the eval split and
   on Set5 + Set14 (PSNR/SSIM RGB and Y, bicubic alongside, sharpness = high-frequency energy SR / HR).
3. GAN phase: warm-start from (2), --gan-steps generator + discriminator steps, evaluate the same way;
   discriminator accuracy over the phase from the run's history (collapse check), non-finite steps.
4. Push both generators through the pusher (models/faces-x4-<recipe>-srresnet and -srgan) if blessed.

Recipes (batch 16; the discriminator has the reference size in both):
  reference: generator 64 wide x 16 blocks, tanh output, Adam 1e-4 constant (the tutorial as written)
  fast:      (= configs/faces-fast.yaml) generator 32 wide x 8 blocks (about 3.5x fewer FLOPs per step, so more steps in the same
             time), residual over bicubic (starts at bicubic quality), Adam 5e-4 with cosine decay to 1%
ImageNet VGG weights cannot be downloaded here: the GAN's VGG content loss uses random features
(`--vgg-weights none`) unless --vgg-weights names a weights file; the report says which.
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
RECIPES = {
    "reference": {"generator_width": 64, "generator_blocks": 16, "residual_over_bicubic": False,
                  "pretrain_learning_rate": 1e-4, "lr_decay": "constant"},
    "fast": {"generator_width": 32, "generator_blocks": 8, "residual_over_bicubic": True,
             "pretrain_learning_rate": 5e-4, "lr_decay": "cosine"},
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifact-root", default="/tmp/srgan-quality")
    p.add_argument("--faces", default=os.path.join(SHARED, "faces-dev"))
    p.add_argument("--benchmarks", default=os.path.join(SHARED, "benchmarks"))
    p.add_argument("--recipe", choices=sorted(RECIPES), default="fast")
    p.add_argument("--pretrain-steps", type=int, default=3000)
    p.add_argument("--gan-steps", type=int, default=60)
    p.add_argument("--content-loss", choices=("vgg", "pixel"), default="vgg")
    p.add_argument("--vgg-weights", default="none")
    p.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    args = p.parse_args(argv)

    from components.logs import setup_console
    from components import evaluator, preprocess, pusher, runs, trainer
    from components.config import Config

    setup_console()
    cfg = Config(artifact_root=args.artifact_root, input=args.faces)
    info = preprocess.run(cfg, [])
    cfg.dataset_id = info["dataset_id"]
    t = cfg.train
    t.cpus_per_worker, t.global_batch_size, t.steps_per_epoch = args.cpus, 16, 200
    t.content_loss, t.vgg_weights = args.content_loss, args.vgg_weights
    for k, v in RECIPES[args.recipe].items():
        setattr(t, k, v)
    cfg.evaluate.eval_images = ",".join(os.path.join(args.benchmarks, s) for s in ("Set5", "Set14"))
    cfg.evaluate.bless_min_gain_db = 0.0
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "recipe": args.recipe,
              "recipe_settings": RECIPES[args.recipe], "dataset_id": cfg.dataset_id,
              "num_train": info["num_train"], "num_eval": info["num_eval"], "phases": {}}

    base = f"quality-{args.recipe}-{cfg.dataset_id}"
    phases = [("srresnet", args.pretrain_steps, 0, None),
              ("srgan", 0, args.gan_steps, f"{base}-srresnet")]
    for name, pre, gan, warm_from in phases:
        if pre + gan == 0:
            continue
        cfg.run_id = f"{base}-{name}"
        cfg.push.model_name = f"faces-x4-{args.recipe}-{name}"  # blessing compares with this model's LATEST
        t.pretrain_steps, t.gan_steps = pre, gan
        t.warm_start = runs.run_uri(args.artifact_root, warm_from) if warm_from else None
        started = time.time()
        record = trainer.run(cfg)
        seconds = time.time() - started
        result = evaluator.run(cfg)
        pushed = pusher.run(cfg) if result["decision"] == runs.BLESSED else None
        history = runs.read_history(args.artifact_root, cfg.run_id)
        rates = runs.measured_rates(history)
        report["phases"][name] = {
            "run_id": cfg.run_id, "steps": pre + gan, "seconds_incl_ray_start": round(seconds, 1),
            "images_per_second": round(rates[-1], 2) if rates else None,
            "vgg_features": record.get("vgg_features"),
            "eval_split": result["eval_split"], "eval_images": result["eval_images"],
            "decision": result["decision"], "pushed": pushed and pushed["uri"],
            "nonfinite_steps": record.get("final_metrics", {}).get("nonfinite_steps"),
            "d_accuracy": runs.phase_thirds(history, "gan", ("d/accuracy_real", "d/accuracy_fake")),
            "eval_folder": runs.eval_uri(args.artifact_root, cfg.run_id),
        }
        print(json.dumps({name: {k: report["phases"][name][k] for k in ("steps", "seconds_incl_ray_start")},
                          "psnr_gain": result["eval_split"]["gain_psnr_rgb"]}), file=sys.stderr)
    print(json.dumps(report, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
