"""This trainer's GAN step against a PyTorch step doing the same work, on this machine. Prints one JSON object.

    python bench/torch_step.py [--steps 6] [--batch 16] [--skip-tf] [--precisions float32,bfloat16]
                               [--orders shared,sequential] [--layouts channels_last,contiguous] [--tf-onednn-off]

Needs the bench extra: pip install -e .[bench] (PyTorch, CPU).

The PyTorch models mirror components/models.py at the reference sizes (G: 64 wide, 16 residual blocks
without batch norm, PReLU per channel, tanh output; D: 8 convs, no batch norm, dense 1024) and VGG19 to
block5_conv4 (random, frozen weights: same FLOPs as ImageNet ones); LR 32x32, HR 128x128, Adam 1e-4.
Steps, each in its own subprocess (two frameworks' thread pools would compete for the cores):
- torch "shared": this trainer's order (components/trainer/step.py): ONE forward of D(fake) serves both
  updates; G's gradients through D, D's from the same graph, real images' VGG features without gradient.
- torch "sequential": BasicSR's SRGANModel order, for reference: G step with D frozen, then D on real and
  on sr.detach() (one more D forward per image: 6 D forwards' work instead of 5; same floor as "shared").
- float32, and bfloat16 autocast around the forwards (float32 master weights); channels_last and/or
  contiguous memory format.
- TensorFlow: bench/train_step.py's trainer_step_rate (float32, mixed_bfloat16) and conv_peak_gflops.
Each is reported as img/s and as a fraction of its framework's floor at that precision:
floor = conv peak (3x3, 64->64, batch 16, best of 128x128 and 32x32) / FLOPs per image of the shared
step (3 G + 5 D + 3 VGG forwards, counted from the layer shapes as bench/train_step.py counts them).
Where oneDNN has no bfloat16 kernels for the CPU (machine.torch_onednn_bf16 false, e.g. AVX2 only), torch
runs bfloat16 convolutions on a slow native path: those variants then take hours at batch 16.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TF_POLICY = {"float32": "float32", "bfloat16": "mixed_bfloat16"}
VGG19_TO_BLOCK5_CONV4 = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
                         512, 512, 512, 512)  # keras VGG19's 16 convs; block5_pool (after conv4) excluded


# ---------------------------------------------------------------- PyTorch models (worker side only)

def torch_models():
    import torch
    from torch import nn

    class ResBlock(nn.Module):
        def __init__(self, width):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(width, width, 3, padding=1), nn.Conv2d(width, width, 3, padding=1)
            self.act = nn.PReLU(width)  # one slope per channel: Keras PReLU(shared_axes=[1, 2])

        def forward(self, x):
            return x + self.conv2(self.act(self.conv1(x)))

    class Generator(nn.Module):
        def __init__(self, width=64, num_blocks=16, scale=4):
            super().__init__()
            self.head = nn.Sequential(nn.Conv2d(3, width, 9, padding=4), nn.PReLU(width))
            self.blocks = nn.Sequential(*[ResBlock(width) for _ in range(num_blocks)])
            self.body_conv = nn.Conv2d(width, width, 3, padding=1)
            # torch's PixelShuffle orders channels unlike tf.nn.depth_to_space: same work, weights permuted
            self.up = nn.Sequential(*[m for _ in range(int(math.log2(scale))) for m in (
                nn.Conv2d(width, width * 4, 3, padding=1), nn.PixelShuffle(2), nn.PReLU(width))])
            self.tail = nn.Conv2d(width, 3, 9, padding=4)

        def forward(self, x):
            x = skip = self.head(x)
            x = self.body_conv(self.blocks(x)) + skip
            return torch.tanh(self.tail(self.up(x)).float())  # Keras: the output layer is float32 under mixed

    class Discriminator(nn.Module):
        def __init__(self, hr_size=128, width=64, depth=8, dense=1024):
            super().__init__()
            layers, c_in, hw = [], 3, hr_size
            for i in range(depth):
                # padding=1 pads both sides where TF "same" at stride 2 pads bottom/right only: same sizes, same FLOPs
                layers += [nn.Conv2d(c_in, width * 2 ** (i // 2), 3, stride=1 + i % 2, padding=1), nn.LeakyReLU(0.2)]
                c_in, hw = width * 2 ** (i // 2), hw // (1 + i % 2)
            self.convs = nn.Sequential(*layers)
            self.dense = nn.Sequential(nn.Linear(c_in * hw * hw, dense), nn.LeakyReLU(0.2), nn.Linear(dense, 1))

        def forward(self, x):
            # Keras flattens NHWC: permute first (a free view under channels_last)
            return self.dense(self.convs(x).permute(0, 2, 3, 1).flatten(1))

    class VGGFeatures(nn.Module):
        def __init__(self):
            super().__init__()
            layers, c_in = [], 3
            for v in VGG19_TO_BLOCK5_CONV4:
                if v == "M":
                    layers.append(nn.MaxPool2d(2))
                else:
                    layers += [nn.Conv2d(c_in, v, 3, padding=1), nn.ReLU()]
                    c_in = v
            self.features = nn.Sequential(*layers)
            # keras vgg19.preprocess_input ("caffe"): 0..255, RGB -> BGR, ImageNet mean (BGR) subtracted
            self.register_buffer("mean", torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1))

        def forward(self, images_unit):
            return self.features((images_unit.float() + 1.0).mul(127.5).flip(1) - self.mean)

    vgg = VGGFeatures().eval().requires_grad_(False)
    return Generator(), Discriminator(), vgg


def torch_forward_flops(model, input_hw) -> float:
    """Multiply-adds x 2 of every Conv2d and Linear for one image: bench/train_step.forward_flops' formula."""
    import torch
    from torch import nn

    total = [0.0]

    def hook(module, _inputs, out):
        positions = out.shape[2] * out.shape[3] if isinstance(module, nn.Conv2d) else 1
        total[0] += 2.0 * module.weight.numel() * positions
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(torch.zeros(1, 3, *input_hw))
    for h in handles:
        h.remove()
    return total[0]


def torch_info() -> dict:
    import torch

    g, d, vgg = torch_models()
    gf, df, vf = (torch_forward_flops(m, hw) for m, hw in ((g, (32, 32)), (d, (128, 128)), (vgg, (128, 128))))
    try:  # False: no oneDNN bfloat16 kernels for this CPU, and torch runs bf16 convs on its slow native path
        onednn_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        onednn_bf16 = None
    return {"version": torch.__version__, "threads": torch.get_num_threads(), "onednn_bf16": onednn_bf16,
            "params": {"generator": sum(p.numel() for p in g.parameters()),
                       "discriminator": sum(p.numel() for p in d.parameters()),
                       "vgg": sum(p.numel() for p in vgg.parameters())},
            "gflop_per_image": {"generator_forward": gf / 1e9, "discriminator_forward": df / 1e9,
                                "vgg_forward": vf / 1e9,
                                "shared": (3 * gf + 5 * df + 3 * vf) / 1e9,       # = gan_step_flops_per_sample
                                "sequential": (3 * gf + 6 * df + 3 * vf) / 1e9}}  # D(fake) run twice: +1 D fwd


def torch_step_rate(order: str, precision: str, layout: str, batch: int, steps: int) -> float:
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    g, d, vgg = (m.to(memory_format=fmt) for m in torch_models())
    g_params, d_params = list(g.parameters()), list(d.parameters())
    g_opt, d_opt = (torch.optim.Adam(p, lr=1e-4, eps=1e-7) for p in (g_params, d_params))  # Keras Adam's epsilon
    hr = (torch.rand(batch, 3, 128, 128) * 2 - 1).contiguous(memory_format=fmt)
    lr = F.avg_pool2d(hr, 4).contiguous(memory_format=fmt)
    autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16")  # noqa: E731

    def bce(logits, label):
        logits = logits.float()
        return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, label))

    def content(sr):
        with torch.no_grad():  # the trainer's stop_gradient on the real images' features
            real = vgg(hr).float()
        return F.mse_loss(vgg(sr).float(), real)

    def shared():
        with autocast():
            sr = g(lr)
            real, fake = d(hr), d(sr)
            g_loss = content(sr) + 1e-3 * bce(fake, 1.0)
            d_loss = bce(real, 1.0) + bce(fake, 0.0)
        # Two gradient passes over one graph, as the trainer's two tapes: G's through D(fake) to the
        # input only, D's to D's weights only (nothing of d_loss reaches G).
        g_grads = torch.autograd.grad(g_loss, g_params, retain_graph=True)
        d_grads = torch.autograd.grad(d_loss, d_params)
        for params, grads, opt in ((g_params, g_grads, g_opt), (d_params, d_grads, d_opt)):
            for p, grad in zip(params, grads):
                p.grad = grad
            opt.step()

    def sequential():  # BasicSR SRGANModel.optimize_parameters
        d.requires_grad_(False)
        g_opt.zero_grad(set_to_none=True)
        with autocast():
            sr = g(lr)
            g_loss = content(sr) + 1e-3 * bce(d(sr), 1.0)
        g_loss.backward()
        g_opt.step()
        d.requires_grad_(True)
        d_opt.zero_grad(set_to_none=True)
        with autocast():
            d_real = bce(d(hr), 1.0)
        d_real.backward()
        with autocast():
            d_fake = bce(d(sr.detach()), 0.0)
        d_fake.backward()
        d_opt.step()

    step = shared if order == "shared" else sequential
    step()  # warm-up (one, as bench/train_step.py): oneDNN primitive creation, Adam state
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - t)


def torch_conv_peak_gflops(precision: str, repeats: int) -> float:
    """bench/train_step.conv_peak_gflops in PyTorch: NHWC (channels_last) like TF's, inputs cast beforehand."""
    import torch
    import torch.nn.functional as F

    dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
    best = 0.0
    with torch.no_grad():
        for hw in (128, 32):
            x = torch.randn(16, 64, hw, hw).to(dtype).contiguous(memory_format=torch.channels_last)
            w = (torch.randn(64, 64, 3, 3) * 0.05).to(dtype).contiguous(memory_format=torch.channels_last)
            F.conv2d(x, w, padding=1)
            reps = repeats * (16 if hw == 32 else 1)
            for _trial in range(3):
                t = time.perf_counter()
                for _ in range(reps):
                    F.conv2d(x, w, padding=1)
                best = max(best, 2.0 * 9 * 64 * 64 * 16 * hw * hw * reps / (time.perf_counter() - t) / 1e9)
    return best


# ---------------------------------------------------------------- TensorFlow (worker side only)

def tf_worker(kind: str, precision: str, args) -> dict:
    import train_step  # bench/train_step.py (a script's folder is on sys.path): the functions its own report uses

    train_step.BATCH = args.batch  # read at call time by _batch and trainer_step_rate
    if kind == "tf-info":
        import tensorflow as tf

        from components import models
        from components.trainer import losses
        flops = train_step.gan_step_flops_per_sample()
        return {"version": tf.__version__,
                "params": {"generator": models.build_generator().count_params(),
                           "discriminator": models.build_discriminator().count_params(),
                           "vgg": losses.build_vgg_features("block5_conv4", None).count_params()},
                "gflop_per_image": {k.replace("gan_step_per_sample", "shared"): v / 1e9 for k, v in flops.items()}}
    if kind == "tf-peak":
        return {"gflops": train_step.conv_peak_gflops(precision, args.peak_repeats)}
    return {"images_per_s": train_step.trainer_step_rate(train_step._batch(), args.steps, TF_POLICY[precision])}


def worker(variant: str, args) -> dict:
    kind, *rest = variant.split(":")
    if kind.startswith("tf-"):
        return tf_worker(kind, rest[0] if rest else "float32", args)
    import torch
    torch.set_num_threads(os.cpu_count())
    if kind == "torch-info":
        return torch_info()
    if kind == "torch-peak":
        return {"gflops": torch_conv_peak_gflops(rest[0], args.peak_repeats)}
    order, precision, layout = rest
    return {"images_per_s": torch_step_rate(order, precision, layout, args.batch, args.steps)}


# ---------------------------------------------------------------- driver

def run_variant(variant: str, args, env: dict | None = None) -> dict:
    """One variant in a fresh interpreter (with `env` added); its last stdout line is its JSON result."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", variant, "--steps", str(args.steps),
           "--batch", str(args.batch), "--peak-repeats", str(args.peak_repeats)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        print(f"variant {variant}: FAILED\n{proc.stderr[-2000:]}", file=sys.stderr)
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    shown = (f"{result['images_per_s']:.2f} img/s" if "images_per_s" in result
             else f"{result['gflops']:.1f} GFLOP/s" if "gflops" in result else "done")
    print(f"variant {variant}: {shown} ({time.perf_counter() - t:.0f} s)", file=sys.stderr)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per step variant (after one warm-up)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--skip-tf", action="store_true", help="PyTorch variants only")
    parser.add_argument("--precisions", default="float32,bfloat16")
    parser.add_argument("--orders", default="shared,sequential")
    parser.add_argument("--layouts", default="channels_last,contiguous", help="PyTorch memory formats to try")
    parser.add_argument("--peak-repeats", type=int, default=20, help="conv peak: convolutions per trial at 128x128")
    parser.add_argument("--tf-onednn-off", action="store_true",
                        help="also the TF float32 step and peak with TF_ENABLE_ONEDNN_OPTS=0 (this project turns "
                             "TensorFlow's oneDNN kernels on; TensorFlow alone does so only on AVX-512 / AMX CPUs)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args)))
        return

    from components.trainer.precision import speed_flags  # no TensorFlow import
    precisions, orders, layouts = (s.split(",") for s in (args.precisions, args.orders, args.layouts))
    frameworks = ["torch"] + ([] if args.skip_tf else ["tf"])
    info = {fw: run_variant(f"{fw}-info", args) for fw in frameworks}
    if "error" in info["torch"]:
        sys.exit(f"PyTorch failed ({info['torch']['error']}); it is the bench extra: pip install -e .[bench]")
    if "bfloat16" in precisions and info["torch"].get("onednn_bf16") is False:
        print("note: no oneDNN bfloat16 kernels for this CPU: torch's bfloat16 variants run its native fallback "
              "(slow; --precisions float32 skips them)", file=sys.stderr)
    peak = {fw: {p: run_variant(f"{fw}-peak:{p}", args).get("gflops") for p in precisions} for fw in frameworks}
    flops = info["torch"]["gflop_per_image"]["shared"]
    floor = {fw: {p: v and v / flops for p, v in peaks.items()} for fw, peaks in peak.items()}

    def rated(result, fw, p):
        rate = result.get("images_per_s")
        return {**result, "images_per_s": rate and round(rate, 2),
                "fraction_of_floor": rate and floor[fw][p] and round(rate / floor[fw][p], 3)}

    torch_steps = {o: {p: {l: rated(run_variant(f"torch-step:{o}:{p}:{l}", args), "torch", p) for l in layouts}
                       for p in precisions} for o in orders}
    for per_layout in (x for per_p in torch_steps.values() for x in per_p.values()):
        ok = {l: r["images_per_s"] for l, r in per_layout.items() if r.get("images_per_s")}
        per_layout["best_layout"] = max(ok, key=ok.get) if ok else None
    result = {
        "bench": "torch_step", "batch": args.batch, "timed_steps": args.steps,
        "machine": {"cpus": os.cpu_count(), "cpu_flags": speed_flags(),
                    "torch_onednn_bf16": info["torch"].get("onednn_bf16")},
        "versions": {fw: info[fw].get("version") for fw in frameworks},
        "params": {fw: info[fw].get("params") for fw in frameworks},
        "gflop_per_image": {fw: {k: round(v, 3) for k, v in info[fw].get("gflop_per_image", {}).items()}
                            for fw in frameworks},
        "conv_peak_gflops": {fw: {p: v and round(v, 1) for p, v in peaks.items()} for fw, peaks in peak.items()},
        "floor_images_per_s": {fw: {p: v and round(v, 2) for p, v in fl.items()} for fw, fl in floor.items()},
        "torch": torch_steps,
    }
    if "tf" in frameworks:
        result["params_match"] = info["tf"].get("params") == info["torch"].get("params")
        tf_steps = {p: rated(run_variant(f"tf-step:{p}", args), "tf", p) for p in precisions}
        result["tf"] = {"shared": {p: {**r, "keras_policy": TF_POLICY[p]} for p, r in tf_steps.items()}}
        if args.tf_onednn_off and "float32" in precisions:
            off = {"TF_ENABLE_ONEDNN_OPTS": "0"}
            peak_0 = run_variant("tf-peak:float32", args, off).get("gflops")
            step_0 = run_variant("tf-step:float32", args, off).get("images_per_s")
            result["tf_onednn_off_float32"] = {
                "conv_peak_gflops": peak_0 and round(peak_0, 1), "images_per_s": step_0 and round(step_0, 2),
                "fraction_of_own_floor": step_0 and peak_0 and round(step_0 / (peak_0 / flops), 3),
                "on_vs_off": step_0 and tf_steps["float32"].get("images_per_s")
                and round(tf_steps["float32"]["images_per_s"] / step_0, 3)}
        if "shared" in orders:  # torch at its faster layout, same order and precision
            result["tf_vs_torch_shared"] = {}
            for p in precisions:
                tf_r, t = tf_steps[p], torch_steps["shared"][p]
                t_r = t.get(t["best_layout"], {})
                result["tf_vs_torch_shared"][p] = {
                    "images_per_s_ratio": tf_r.get("images_per_s") and t_r.get("images_per_s")
                    and round(tf_r["images_per_s"] / t_r["images_per_s"], 3),
                    "fraction_of_floor": {"tf": tf_r.get("fraction_of_floor"), "torch": t_r.get("fraction_of_floor")}}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
