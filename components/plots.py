"""Pictures for people: labelled comparison grids and the loss curve of a run."""

from __future__ import annotations

import io

import numpy as np

COLUMNS = ("LR (nearest)", "bicubic", "SR", "HR")


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # a Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def comparison_grid(rows: list[dict], scale: int = 4, sr_titles: tuple[str, ...] = ("SR",)) -> bytes:
    """PNG: one row per image, LR shown nearest-upscaled | bicubic | SR | HR, titled columns and each
    row's name and PSNR (RGB) of bicubic and SR. rows: {'name', 'lr', 'bicubic', 'sr', 'hr',
    'psnr_bicubic', 'psnr_sr'} with uint8 HWC arrays (bicubic/sr/hr the same size). Several models side by
    side: 'sr' and 'psnr_sr' are lists, one per title in `sr_titles`."""
    from PIL import Image, ImageDraw

    pad, header, caption = 4, 22, 18
    columns = (COLUMNS[0], COLUMNS[1], *sr_titles, COLUMNS[-1])
    cell_w = max(r["hr"].shape[1] for r in rows)
    cell_hs = [r["hr"].shape[0] for r in rows]
    width = pad + len(columns) * (cell_w + pad)
    height = header + sum(h + caption + pad for h in cell_hs)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = _font(14)
    for c, title in enumerate(columns):
        draw.text((pad + c * (cell_w + pad) + 2, 3), title, fill=(0, 0, 0), font=font)
    y = header
    for r, h in zip(rows, cell_hs):
        srs = r["sr"] if isinstance(r["sr"], (list, tuple)) else [r["sr"]]
        psnrs = r["psnr_sr"] if isinstance(r["psnr_sr"], (list, tuple)) else [r["psnr_sr"]]
        if len(srs) != len(sr_titles) or len(psnrs) != len(srs):
            raise ValueError(f"{r['name']}: {len(srs)} SR images and {len(psnrs)} PSNRs for {len(sr_titles)} titles")
        lr_big = np.repeat(np.repeat(r["lr"], scale, axis=0), scale, axis=1)
        for c, img in enumerate((lr_big, r["bicubic"], *srs, r["hr"])):
            canvas.paste(Image.fromarray(img[:h, :cell_w]), (pad + c * (cell_w + pad), y))
        y += h
        small = _font(12)
        name = str(r["name"]).rsplit("/", 1)[-1]
        while len(name) > 4 and draw.textlength(name, font=small) > cell_w - 4:
            name = "…" + name[2:]  # keep the end of the name: it is what tells images apart
        labels = {0: name, 1: f"{r['psnr_bicubic']:.2f} dB", **{2 + i: f"{p:.2f} dB" for i, p in enumerate(psnrs)}}
        for c, text in labels.items():
            draw.text((pad + c * (cell_w + pad) + 2, y + 2), text, fill=(0, 0, 0), font=small)
        y += caption + pad
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


def loss_curve(history: list[dict]) -> bytes | None:
    """PNG: training losses per step (one line per loss, phases shaded) and the fixed-batch PSNR
    against bicubic. None when the history has no training rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [h for h in history if h.get("event") == "train"]
    evals = [h for h in history if h.get("event") == "eval"]
    if not train:
        return None
    keys = sorted({k for h in train for k in h if k.startswith("loss/") and isinstance(h[k], (int, float))})
    accuracy = sorted({k for h in train for k in h if k.startswith("d/accuracy")})
    fig, axes = plt.subplots(1, 3 if accuracy else 2, figsize=(18 if accuracy else 12, 4.2))
    ax = axes[0]
    for k in keys:
        pts = [(h["step"], h[k]) for h in train if k in h and h[k] is not None and np.isfinite(h[k]) and h[k] > 0]
        if pts:
            ax.plot(*zip(*pts), label=k, linewidth=1.2)
    gan_steps = [h["step"] for h in train if h.get("phase") == "gan"]
    if gan_steps:
        ax.axvspan(min(gan_steps), max(h["step"] for h in train), color="0.92", label="GAN phase")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_title("training losses")
    ax.legend(fontsize=8)
    ax = axes[1]
    if evals:
        ax.plot([h["step"] for h in evals], [h["psnr_fixed_batch"] for h in evals], "o-", label="SR")
        ax.plot([h["step"] for h in evals], [h["psnr_bicubic_fixed_batch"] for h in evals], "--", label="bicubic")
        ax.legend(fontsize=8)
    ax.set_xlabel("step")
    ax.set_ylabel("PSNR (dB, RGB)")
    ax.set_title("PSNR on a fixed eval batch")
    if accuracy:  # GAN health: stuck at 1.0 (D wins) or 0.5 (D learns nothing) means trouble
        ax = axes[2]
        for k in accuracy:
            pts = [(h["step"], h[k]) for h in train if k in h]
            ax.plot(*zip(*pts), label=k.split("/", 1)[1], linewidth=1.2)
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("step")
        ax.set_title("discriminator accuracy (GAN phase)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()
