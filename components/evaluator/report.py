"""The evaluation's report page, `eval/report.html`: one self-contained HTML file for people.

It works opened as a local file and served from object storage alike: inline CSS, no JavaScript, no fonts or
anything else from a network; the pictures are the eval folder's own PNGs, linked by relative paths (the
loss curve is the evaluator's `loss_curve.png`, in the same folder). A Content-Security-Policy forbids
everything else, so a name that slipped through unescaped still could not run.

What it shows comes from the evaluation's files alone: the decision and its reasons (metrics.json, which the
BLESSED / NOT_BLESSED file repeats), every numeric metric of every split scored (the tables are built from the
keys metrics.json holds: a metric added later appears by itself), per_image.csv's rows, every PNG. Each metric
cell carries `data-key` (a JSON Pointer, RFC 6901, into metrics.json) and `data-value` (the value as JSON, so
a float is its shortest round-trip repr): a reader or a test compares the page with metrics.json exactly.
"""

from __future__ import annotations

import html
import json
import math
import urllib.parse

from components.evaluator.ladder import SCORED
from components.runs import LOSS_CURVE_PNG

FIRST = ("psnr_rgb", "psnr_y", "ssim_rgb", "ssim_y", "niqe")  # shown first; the other metrics follow by name
COUNTS = ("num_images", "niqe_images")  # counts, not metrics: shown last
NOT_METRICS = ("seed",)  # numbers of a section that describe it (the degraded section's seed), not a score
LABELS = {"psnr_rgb": "PSNR (RGB), dB", "psnr_y": "PSNR (Y), dB", "ssim_rgb": "SSIM (RGB)", "ssim_y": "SSIM (Y)",
          "niqe": "NIQE (lower is more natural)", "hr_niqe": "NIQE of HR", "hf_ratio": "high-frequency ratio",
          "checkerboard": "checkerboard", "colour_drift": "colour drift", "num_images": "images",
          "niqe_images": "images with NIQE defined", "alpha": "alpha (GAN share)"}

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1400px;
padding:1em 1.5em;color:#1d1d1f;background:#fff}
h1{font-size:1.6em;margin:.2em 0}h2{font-size:1.25em;margin:1.6em 0 .5em;border-bottom:1px solid #ddd}
h3{font-size:1.05em;margin:1.2em 0 .3em}
.decision{display:inline-block;font-weight:700;font-size:1.4em;padding:.2em .7em;border-radius:.3em;color:#fff}
.decision.BLESSED{background:#1a7f37}.decision.NOT_BLESSED{background:#c62828}
ul.reasons{padding-left:1.2em}li.reason{margin:.2em 0;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.92em}
li.fail{color:#b71c1c;font-weight:600}li.pass{color:#1b5e20}
dl.about{display:grid;grid-template-columns:max-content 1fr;gap:.15em 1em}dt{color:#555}dd{margin:0}
table{border-collapse:collapse;margin:.3em 0 1em;font-size:.92em}
th,td{border:1px solid #ddd;padding:.2em .55em}th{background:#f4f4f6;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums;font-family:ui-monospace,Menlo,Consolas,monospace}
td.none{color:#999;text-align:center}tr.chosen td{background:#fff8d6}
code{font-size:.88em;color:#555}.scroll{overflow-x:auto}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #ddd}
figcaption{color:#555;font-size:.9em}.note{color:#555}details{margin:-.5em 0 1em}
"""


def render(metrics: dict, per_image: list[dict], pngs: list[str]) -> str:
    """The page (HTML text) for an evaluation: `metrics` as metrics.json holds it (with 'decision' and
    'reasons'), `per_image` per_image.csv's rows (column -> text), `pngs` the PNGs of the eval folder as
    paths relative to it ('grids/eval-000.png', 'loss_curve.png'). Every value from them is HTML-escaped."""
    decision = str(metrics.get("decision"))
    who = metrics.get("run_id") and f"run {metrics['run_id']}" or f"model {metrics.get('model')}"
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             # nothing but this file, its inline style and the images beside it (data: for the empty icon)
             """<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src 'self' data:; """
             """style-src 'unsafe-inline'">""",
             '<link rel="icon" href="data:,">',  # no request for /favicon.ico (a 404 where it is served)
             f"<title>{_e(decision)}: evaluation of {_e(who)}</title>", f"<style>{CSS}</style></head><body>",
             f"<h1>Evaluation of {_e(who)}</h1>",
             *_decision(decision, metrics.get("reasons") or []), *_tables(metrics),
             *_interpolation(metrics.get("interpolation")), *_per_image(per_image), *_pictures(metrics, pngs),
             *_about(metrics), "</body></html>", ""]
    return "\n".join(parts)


# ----------------------------------------------------------------------------- pieces

def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _pointer(*path) -> str:
    """A JSON Pointer (RFC 6901) to metrics.json's value at `path`."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _fmt(key: str, v) -> str:
    if v is None:
        return "undefined"
    if isinstance(v, int):
        return str(v)
    if not math.isfinite(v):
        return str(v)
    return f"{v:.3f}" if "psnr" in key or key == "alpha" else f"{v:.4f}"


def _cell(key: str, v, *path) -> str:
    """A metric's cell: its value formatted, and where it is in metrics.json with the exact value."""
    cls = "none" if v is None else "num"
    return (f'<td class="{cls}" data-key="{_e(_pointer(*path))}" data-value="{_e(json.dumps(v))}">'
            f"{_e(_fmt(key, v))}</td>")


def _span(v, shown, *path) -> str:
    """A value outside the tables, with where it is in metrics.json and its exact value, like a cell."""
    return f'<span data-key="{_e(_pointer(*path))}" data-value="{_e(json.dumps(v))}">{_e(shown)}</span>'


def _decision(decision: str, reasons: list) -> list[str]:
    items = []
    for r in reasons:
        r = str(r)
        # "pass: ..." / "FAIL: ..."; the others say why no check could run (e.g. metrics not finite): failing
        #  reasons when the decision is NOT_BLESSED
        kind = "pass" if r.startswith("pass") else "fail" if r.startswith("FAIL") or decision != "BLESSED" else "note"
        items.append(f'<li class="reason {kind}">{_e(r)}</li>')
    return ['<section id="decision"><h2>Decision</h2>',
            f'<p><span class="decision {_e(decision)}" data-decision="{_e(decision)}">{_e(decision)}</span></p>',
            '<ul class="reasons">', *items, "</ul></section>"]


def _about(m: dict) -> list[str]:
    rows = [(k, _e(m[k])) for k in ("run_id", "model", "model_kind", "dataset_id", "bless_rule", "created",
                                    "code_version") if m.get(k) is not None]
    if m.get("seconds") is not None:
        rows.append(("seconds", _span(m["seconds"], m["seconds"], "seconds")))
    base = m.get("baseline")
    rows.append(("compared with", _e(f"LATEST: version {base.get('version')} ({base.get('model')})") if base
                 else "no LATEST model (none pushed yet): bicubic only"))
    for k, v in sorted((m.get("thresholds") or {}).items()):
        rows.append((k, _span(v, ", ".join(map(str, v)) or "none" if isinstance(v, list) else v, "thresholds", k)))
    for k, v in sorted((m.get("convention") or {}).items()):
        rows.append((f"convention: {k}", _e(v)))
    return ['<section id="about"><h2>What was evaluated</h2><dl class="about">',
            *[f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in rows], "</dl></section>"]


def _sections(m: dict) -> list[tuple[str, tuple, dict, tuple | None]]:
    """(title, path in metrics.json, the means, path of LATEST's means on the same images or None) of every
    split scored, in the order shown."""
    out = [("eval split", ("eval_split",), m.get("eval_split"), ("baseline", "eval_split"))]
    rungs = m.get("rungs") or {}
    for rung, means in _by_severity(rungs):
        label = means.get("csv_split", rung) if isinstance(means, dict) else rung
        title = f"{rung} rung" + (f" (per_image.csv and grids: {label})" if label != rung else "")
        out.append((title, ("rungs", rung), means, ("baseline", "rungs", rung)))
    if m.get("degraded") and "harsh" not in rungs:  # evaluations before the ladder: the degraded split alone
        out.append(("degraded eval split", ("degraded",), m["degraded"], ("baseline", "degraded")))
    for name, means in (m.get("eval_images") or {}).items():
        uri = means.get("uri") if isinstance(means, dict) else None
        out.append((f"images: {name}" + (f" ({uri})" if uri else ""), ("eval_images", name), means,
                    ("baseline", "eval_images", name)))
    if m.get("perceptual"):
        out.append(("what the perceptual rule reads (NIQE pooled over every image where it is defined)",
                    ("perceptual", "candidate"), m["perceptual"].get("candidate"), ("perceptual", "baseline")))
    return [s for s in out if isinstance(s[2], dict)]


def _by_severity(rungs: dict) -> list[tuple]:
    """The rungs' items mildest first (metrics.json has them by name); a rung the ladder does not know, last."""
    return sorted(rungs.items(), key=lambda kv: (SCORED.index(kv[0]) if kv[0] in SCORED else len(SCORED), kv[0]))


def _lookup(m: dict, path: tuple):
    for p in path:
        if not isinstance(m, dict):
            return None
        m = m.get(p)
    return m


def _metric_keys(means: dict) -> list[str]:
    keys = [k for k, v in means.items() if (_is_number(v) or v is None) and k not in NOT_METRICS
            and not (k.startswith(("bicubic_", "gain_")) and k.split("_", 1)[1] in means)]
    return sorted(keys, key=lambda k: (k in COUNTS, FIRST.index(k) if k in FIRST else len(FIRST), k))


def _tables(m: dict) -> list[str]:
    has_baseline = bool(m.get("baseline"))
    out = ['<section id="metrics"><h2>Metrics: candidate vs bicubic'
           + (" vs LATEST" if has_baseline else "") + " (means over the images)</h2>"]
    for title, path, means, base_path in _sections(m):
        base = _lookup(m, base_path) if base_path else None
        show_base = has_baseline or (path[0] == "perceptual" and isinstance(base, dict))
        head = ["metric", "candidate", "bicubic", "gain over bicubic"]
        if show_base:
            head.append("LATEST" if path[0] != "perceptual" else "baseline the rule compares with")
        rows = []
        for k in _metric_keys(means):
            cells = [f"<th>{_e(LABELS.get(k, k))} <code>{_e(k)}</code></th>", _cell(k, means[k], *path, k)]
            for prefix in ("bicubic_", "gain_"):
                other = prefix + k
                cells.append(_cell(k, means[other], *path, other) if other in means else '<td class="none">-</td>')
            if show_base:
                cells.append(_cell(k, base[k], *base_path, k) if isinstance(base, dict) and k in base
                             else '<td class="none">-</td>')
            rows.append("<tr>" + "".join(cells) + "</tr>")
        params = means.get("parameters") if isinstance(means.get("parameters"), dict) else None
        if path == ("degraded",):
            params = {k: means[k] for k in ("seed", "realistic_degradation") if k in means}
        out += [f'<h3>{_e(title)}</h3><div class="scroll"><table class="metrics" data-section="{_e(_pointer(*path))}">',
                "<thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr></thead><tbody>", *rows,
                "</tbody></table></div>"]
        if params:
            out.append(f'<details class="note"><summary>how its LR was made</summary><code>'
                       f"{_e(json.dumps(params, sort_keys=True))}</code></details>")
    out.append("</section>")
    return out


def _interpolation(interp) -> list[str]:
    if not isinstance(interp, dict) or not interp.get("curve"):
        return []
    curve = interp["curve"]
    keys = ["alpha"] + _metric_keys({k: v for k, v in curve[0].items() if k != "alpha"})
    rows = []
    for i, point in enumerate(curve):
        chosen = point.get("alpha") == interp.get("chosen_alpha")
        rows.append(("<tr class=\"chosen\">" if chosen else "<tr>")
                    + "".join(_cell(k, point.get(k), "interpolation", "curve", i, k) for k in keys)
                    + f"<td>{'chosen' if chosen else ''}</td></tr>")
    return ['<section id="interpolation"><h2>Network interpolation: alpha x GAN + (1 - alpha) x PSNR-oriented</h2>',
            f'<p class="note">GAN: <code>{_e(interp.get("gan_generator"))}</code>; PSNR-oriented: '
            f'<code>{_e(interp.get("psnr_generator"))}</code>; the chosen blend is what was judged (and is '
            "pushed).</p>",
            '<div class="scroll"><table class="metrics" data-section="/interpolation/curve"><thead><tr>'
            + "".join(f"<th>{_e(LABELS.get(k, k))} <code>{_e(k)}</code></th>" for k in keys) + "<th></th></tr></thead>",
            "<tbody>", *rows, "</tbody></table></div></section>"]


def _per_image(rows: list[dict]) -> list[str]:
    if not rows:
        return ['<section id="per-image"><h2>Per image</h2><p class="note">no per_image.csv</p></section>']
    columns = list(rows[0])
    body = []
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c)
            numeric = c not in ("split", "image") and v not in (None, "", "undefined")
            cells.append(f'<td class="{"num" if numeric else "none" if v == "undefined" else "text"}">{_e(v)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return ['<section id="per-image"><h2>Per image <span class="note">(per_image.csv; SR, bicubic and '
            'SR minus bicubic of each metric)</span></h2>',
            '<div class="scroll"><table id="per-image-table"><thead><tr>'
            + "".join(f"<th>{_e(c)}</th>" for c in columns) + "</tr></thead><tbody>",
            *body, "</tbody></table></div></section>"]


def _src(rel: str) -> str:
    """A relative URL of a file in the eval folder: each path segment percent-encoded, then HTML-escaped."""
    return _e("/".join(urllib.parse.quote(p) for p in rel.split("/")))


def _grid_order(m: dict):
    """Grids in the order of the tables: the eval split, the rungs, then the folders (by name)."""
    labels = ["eval"] + [(v.get("csv_split", k) if isinstance(v, dict) else k)
                         for k, v in _by_severity(m.get("rungs") or {})]
    if m.get("degraded") and "degraded" not in labels:
        labels.append("degraded")

    def key(rel: str):
        name = rel.rsplit("/", 1)[-1]
        ranks = [i for i, label in enumerate(labels) if name.startswith(label + "-")]
        return (ranks[0] if ranks else len(labels), rel)
    return key


def _pictures(m: dict, pngs: list[str]) -> list[str]:
    grids = sorted((p for p in pngs if p != LOSS_CURVE_PNG), key=_grid_order(m))
    out = ['<section id="grids"><h2>Comparison grids <span class="note">(LR nearest | bicubic | SR | HR; full-size '
           'images also get zoomed crops below their row)</span></h2>']
    if not grids:
        out.append('<p class="note">no grids</p>')
    for rel in grids:
        out.append(f'<figure><a href="{_src(rel)}"><img src="{_src(rel)}" alt="{_e(rel)}"></a>'
                   f"<figcaption>{_e(rel)}</figcaption></figure>")
    out += ["</section>", '<section id="loss-curve"><h2>Loss curve</h2>']
    if LOSS_CURVE_PNG in pngs:
        out.append(f'<figure><img src="{_src(LOSS_CURVE_PNG)}" alt="loss curve"><figcaption>{_e(LOSS_CURVE_PNG)}'
                   "</figcaption></figure>")
    else:
        out.append('<p class="note">no loss curve (evaluated without a run, or the run has no history)</p>')
    out.append("</section>")
    return out
