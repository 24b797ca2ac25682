"""Evaluator component: a run's generator (or a model) on the dataset's eval split -> runs/<run-id>/eval/.

    python jobs/evaluate.py --run-id RUN [--eval-images ../shared/data/benchmarks/Set5]
    python jobs/evaluate.py --model-uri artifacts/models/srgan-x4 --dataset-id ds-... --output DIR
    python jobs/evaluate.py --run-id RUN --report-only     # report.html again, from the committed files

Also evaluates on the eval split down a severity ladder (--eval-rungs, default mild,moderate,harsh; harsh is
the fixed realistic degradation, --no-eval-degraded: not); --bless-rungs mild: the blessing checks it too.
Writes metrics.json, per_image.csv, grids/*.png, loss_curve.png, report.html (one page with all of them, to open
in a browser) and BLESSED or NOT_BLESSED (the decision and its reasons; written last). Exit code 0 either
way: the decision is data, not an error.
"""

import dataclasses
import sys

from components import cli, config

KEYS = (["artifact_root", "run_id", "dataset_id", "model_uri", "output", "force", "model_name", "scale"]
        + [f.name for section in (config.EvaluateConfig, config.RealisticDegradation)
           for f in dataclasses.fields(section)])


def build_parser():
    p = cli.parser(__doc__, KEYS)
    p.add_argument("--report-only", action="store_true",
                   help="write report.html of the committed evaluation (of --run-id, or the eval folder --output) "
                        "again from its files, without evaluating; an error when there is none")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    cfg = config.from_args(args, KEYS)

    from components import evaluator, runs, storage
    if args.report_only:
        print(f"report: {evaluator.rewrite_report(cfg)}")
        return
    result = evaluator.run(cfg)
    split = result["eval_split"]
    print(f"{result['decision']}: PSNR (RGB) {split['psnr_rgb']:.3f} dB, bicubic {split['bicubic_psnr_rgb']:.3f} dB "
          f"({split['gain_psnr_rgb']:+.3f} dB) on {split['num_images']} eval images")
    # the severity ladder; evaluations committed before it have the degraded (harsh) section alone, or nothing
    for rung, d in (result.get("rungs") or ({"harsh": result["degraded"]} if result.get("degraded") else {})).items():
        print(f"{rung} rung{' (the degraded eval split)' if rung == 'harsh' else ''}: PSNR (RGB) {d['psnr_rgb']:.3f} dB, "
              f"bicubic {d['bicubic_psnr_rgb']:.3f} dB ({d['gain_psnr_rgb']:+.3f} dB)")
    for reason in result["reasons"]:
        print(f"  {reason}")
    out = cfg.output or runs.eval_uri(cfg.artifact_root, cfg.run_id)
    print(f"metrics and comparison grids: {out}")
    page = storage.join(out, runs.REPORT_HTML)
    print(f"report: {page}" if storage.exists(page) else  # an evaluation committed before reports were written
          f"report: none yet (evaluated before reports existed): --report-only writes {page}")


def console_main():  # the console script (setup.py); `python jobs/<name>.py` runs the same
    return cli.run_console(main)


if __name__ == "__main__":
    sys.exit(console_main())
