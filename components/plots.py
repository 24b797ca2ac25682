"""Pictures for people: labelled comparison grids and the loss curve of a run."""

from __future__ import annotations

import io

import numpy as np

COLUMNS = ("LR (nearest)", "bicubic", "SR", "HR")
ZOOM_MIN_SIDE = 192  # px (HR): a row this big on both sides (a full-size photo, not a 128 px eval crop) gets
#                      zoomed crops below it: at the whole-image size a checkerboard or a texture is invisible
ZOOM_FACTOR = 2      # nearest-neighbour enlargement of the crops
ZOOM_COLOURS = ((255, 190, 0), (0, 170, 255))  # region A's and B's rectangles and caption marks


def zoom_regions(hr: np.ndarray, scale: int = 4) -> list[tuple[str, int, int, int]]:
    """[(label, top, left, size)] of the regions a full-size row zooms into (none under ZOOM_MIN_SIDE):
    A, the HR's window of most gradient energy (the texture and edges where artefacts show), and B, the
    centre, unless it overlaps A by more than half. Windows of 128 px (96 under 256 px), at multiples of
    `scale` so that the LR crop is whole LR pixels; the first maximum wins: deterministic."""
    h, w = hr.shape[:2]
    if min(h, w) < ZOOM_MIN_SIDE:
        return []
    size = 128 if min(h, w) >= 256 else 96
    g = hr.astype(np.float64).mean(axis=-1) if hr.ndim == 3 else hr.astype(np.float64)
    energy = np.zeros((h, w))
    energy[:, 1:] += np.diff(g, axis=1) ** 2
    energy[1:, :] += np.diff(g, axis=0) ** 2
    integral = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    tops, lefts = np.arange(0, h - size + 1, scale), np.arange(0, w - size + 1, scale)
    box = (integral[tops[:, None] + size, lefts[None, :] + size] - integral[tops[:, None], lefts[None, :] + size]
           - integral[tops[:, None] + size, lefts[None, :]] + integral[tops[:, None], lefts[None, :]])
    i, j = np.unravel_index(np.argmax(box), box.shape)
    regions = [("A", int(tops[i]), int(lefts[j]), size)]
    ct, cl = (h - size) // 2 // scale * scale, (w - size) // 2 // scale * scale
    overlap = max(0, size - abs(ct - tops[i])) * max(0, size - abs(cl - lefts[j]))
    if overlap <= size * size // 2:
        regions.append(("B", ct, cl, size))
    return regions


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
    side: 'sr' and 'psnr_sr' are lists, one per title in `sr_titles`.
    A full-size row (both sides >= ZOOM_MIN_SIDE) also gets, below it, one row per `zoom_regions` region:
    that region of every column enlarged ZOOM_FACTOR times (nearest neighbour), the region outlined on
    the whole images (just outside it) and captioned."""
    from PIL import Image, ImageDraw

    pad, header, caption = 4, 22, 18
    columns = (COLUMNS[0], COLUMNS[1], *sr_titles, COLUMNS[-1])
    cell_w = max(r["hr"].shape[1] for r in rows)
    cell_hs = [r["hr"].shape[0] for r in rows]
    zooms = [zoom_regions(r["hr"], scale) for r in rows]
    width = pad + len(columns) * (cell_w + pad)
    height = header + sum(h + caption + pad + sum(z[3] * ZOOM_FACTOR + caption + pad for z in zs)
                          for h, zs in zip(cell_hs, zooms))
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = _font(14)
    for c, title in enumerate(columns):
        draw.text((pad + c * (cell_w + pad) + 2, 3), title, fill=(0, 0, 0), font=font)
    y = header
    for r, h, regions in zip(rows, cell_hs, zooms):
        srs = r["sr"] if isinstance(r["sr"], (list, tuple)) else [r["sr"]]
        psnrs = r["psnr_sr"] if isinstance(r["psnr_sr"], (list, tuple)) else [r["psnr_sr"]]
        if len(srs) != len(sr_titles) or len(psnrs) != len(srs):
            raise ValueError(f"{r['name']}: {len(srs)} SR images and {len(psnrs)} PSNRs for {len(sr_titles)} titles")
        lr_big = np.repeat(np.repeat(r["lr"], scale, axis=0), scale, axis=1)
        images = (lr_big, r["bicubic"], *srs, r["hr"])
        for c, img in enumerate(images):
            canvas.paste(Image.fromarray(img[:h, :cell_w]), (pad + c * (cell_w + pad), y))
        for (_label, top, left, size), colour in zip(regions, ZOOM_COLOURS):
            for c in range(len(images)):  # 2 px just outside the region: the region's own pixels stay as they are
                x0, y0 = pad + c * (cell_w + pad) + left, y + top
                draw.rectangle((x0 - 2, y0 - 2, x0 + size + 1, y0 + size + 1), outline=colour, width=2)
        y += h
        small = _font(12)
        name = str(r["name"]).rsplit("/", 1)[-1]
        while len(name) > 4 and draw.textlength(name, font=small) > cell_w - 4:
            name = "…" + name[2:]  # keep the end of the name: it is what tells images apart
        labels = {0: name, 1: f"{r['psnr_bicubic']:.2f} dB", **{2 + i: f"{p:.2f} dB" for i, p in enumerate(psnrs)}}
        for c, text in labels.items():
            draw.text((pad + c * (cell_w + pad) + 2, y + 2), text, fill=(0, 0, 0), font=small)
        y += caption + pad
        for (label, top, left, size), colour in zip(regions, ZOOM_COLOURS):
            for c, img in enumerate(images):
                crop = np.repeat(np.repeat(img[top:top + size, left:left + size], ZOOM_FACTOR, 0), ZOOM_FACTOR, 1)
                canvas.paste(Image.fromarray(crop), (pad + c * (cell_w + pad), y))
            y += size * ZOOM_FACTOR
            what = "most detail" if label == "A" else "centre"
            draw.rectangle((pad + 2, y + 4, pad + 11, y + 13), fill=colour)
            draw.text((pad + 15, y + 2), f"{label}: {what}, {size} px at x {left}, y {top}; x{ZOOM_FACTOR} nearest",
                      fill=(0, 0, 0), font=small)
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
    return figure_png(fig, dpi=100)


def figure_png(fig, dpi: int = 100) -> bytes:
    """A matplotlib figure as PNG bytes (tight layout), closed after."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()
