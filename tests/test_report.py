"""The evaluation's report page, eval/report.html (components/evaluator/report.py).

The renderer alone (no browser, no training): escaping, every metric with its exact value, the decision and
its reasons. `jobs/evaluate.py --report-only`: a committed evaluation's page written again, no evaluation is
one clear line and nothing written. And in a real browser (headless Chromium driven by Selenium, file://) the
pages of a real tiny run: one BLESSED and pushed, then one NOT_BLESSED with LATEST to compare with.
"""

from __future__ import annotations

import csv
import dataclasses
import html.parser
import json
import math
import os
import pathlib
import shutil
import urllib.parse

import pytest

from components import config, runs, storage
from components.evaluator import report
from tests.conftest import run_cli

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "artifacts-2026-11-24")
OLD_RUN = "retrain-ds-8ffdbd188f96d1e7"
ODD_NAME = "<img src=x onerror=alert(1)>.png"  # an image name is user input: it must show as text, never as HTML


# ----------------------------------------------------------------------------- reading a page back

def resolve(doc, pointer: str):
    """metrics.json's value at a JSON Pointer (RFC 6901)."""
    for part in pointer.split("/")[1:]:
        part = part.replace("~1", "/").replace("~0", "~")
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b and type(a) is type(b)


def shown_matches(text: str, value) -> bool:
    """The cell's text is the value, rounded to the decimals it shows."""
    if value is None:
        return text == "undefined"
    if isinstance(value, float) and not math.isfinite(value):
        return text == str(value)
    decimals = len(text.split(".")[1]) if "." in text else 0
    return abs(float(text) - value) <= 0.5 * 10 ** -decimals + 1e-12


def metric_pointers(m: dict) -> set[str]:
    """Where every number of metrics.json that the tables must show is, found without the renderer's code:
    each split's means (and LATEST's on the same images), the perceptual rule's inputs, the interpolation
    curve, the thresholds. `degraded` repeats `rungs.harsh` when both are there; a baseline's bicubic is the
    candidate's (the same images), and its gain over it follows."""
    def esc(k):
        return str(k).replace("~", "~0").replace("/", "~1")
    sections = [("eval_split",)] + [("rungs", r) for r in (m.get("rungs") or {})]
    sections += [("eval_images", n) for n in (m.get("eval_images") or {})]
    if m.get("degraded") and "harsh" not in (m.get("rungs") or {}):
        sections.append(("degraded",))
    if m.get("baseline"):
        sections += [("baseline", *s) for s in sections]
    if m.get("perceptual"):
        sections += [("perceptual", side) for side in ("candidate", "baseline") if m["perceptual"].get(side)]
    out = set()
    for s in sections:
        means = m
        for p in s:
            means = (means or {}).get(p)
        for k, v in (means or {}).items():
            derived = "baseline" in s and k.startswith(("bicubic_", "gain_")) and k.split("_", 1)[1] in means
            if (v is None or isinstance(v, (int, float)) and not isinstance(v, bool)) and k != "seed" and not derived:
                out.add("".join("/" + esc(p) for p in (*s, k)))
    for i, point in enumerate(((m.get("interpolation") or {}).get("curve")) or []):
        out |= {f"/interpolation/curve/{i}/{k}" for k, v in point.items() if not isinstance(v, bool)}
    out |= {f"/thresholds/{k}" for k in (m.get("thresholds") or {})}
    return out


class Page(html.parser.HTMLParser):
    """The elements of a page: (tag, attributes, text inside), and the text of the whole page."""

    def __init__(self, text: str):
        super().__init__()
        self.elements, self._open, self.text = [], [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        el = (tag, dict(attrs), [])
        self.elements.append(el)
        if tag not in ("img", "meta", "link", "br"):
            self._open.append(el)

    def handle_endtag(self, tag):
        while self._open:
            if self._open.pop()[0] == tag:
                break

    def handle_data(self, data):
        self.text.append(data)
        for el in self._open:
            el[2].append(data)

    def with_attr(self, name):
        return [(tag, attrs, "".join(text)) for tag, attrs, text in self.elements if name in attrs]


def check_numbers(cells: list[tuple[str, str, str]], metrics: dict) -> None:
    """Every data-key cell holds metrics.json's exact value and shows it; every number that must be shown is."""
    assert cells
    for key, value, text in cells:
        assert same(json.loads(value), resolve(metrics, key)), (key, value)
        if key.startswith("/thresholds/bless_rungs"):
            continue
        assert shown_matches(text.strip(), resolve(metrics, key)), (key, text, resolve(metrics, key))
    missing = metric_pointers(metrics) - {k for k, _v, _t in cells}
    assert not missing, sorted(missing)


# ----------------------------------------------------------------------------- the renderer alone

def _means(base: float, **extra) -> dict:
    m = {"num_images": 2, "niqe_images": 0, "psnr_rgb": base + 0.123456789, "bicubic_psnr_rgb": base,
         "gain_psnr_rgb": 0.123456789, "ssim_rgb": 0.91, "bicubic_ssim_rgb": 0.9, "gain_ssim_rgb": 0.01,
         "niqe": None, "bicubic_niqe": None, "gain_niqe": None, "hr_niqe": None,
         # a metric added later: the tables show it without the renderer knowing it
         "sharpness_index": 1 / 3, "bicubic_sharpness_index": 0.25, "gain_sharpness_index": 1 / 12}
    return {**m, **extra}


def _metrics(decision="NOT_BLESSED") -> dict:
    harsh = _means(24.0, csv_split="degraded", parameters={"seed": 7})
    return {
        "decision": decision, "run_id": "r<1>", "model": "/runs/r<1>/generator.keras", "model_kind": "keras",
        "dataset_id": "ds-1", "bless_rule": "psnr", "seconds": 1.5, "created": "2026-12-01T00:00:00+00:00",
        "reasons": ["FAIL: PSNR (RGB) 30.123 dB is +0.123 dB over bicubic (30.000 dB); required >= +99.000 dB",
                    "pass: PSNR (RGB) +0.001 dB vs the current model (version 3, 30.122 dB on the same images)"],
        "eval_split": _means(30.0, nan_metric=float("nan")),
        "rungs": {"mild": _means(28.0, csv_split="mild", parameters={"sigma": [0.5, 1.0]}), "harsh": harsh},
        "degraded": {**{k: v for k, v in harsh.items() if k not in ("csv_split", "parameters")}, "seed": 7},
        "eval_images": {"Set<5>/x": {"uri": "/data/Set<5>", **_means(29.0, niqe=5.5, bicubic_niqe=6.5,
                                                                     gain_niqe=-1.0, niqe_images=1)}},
        "baseline": {"model": "/models/m/3", "version": 3, "eval_split": _means(30.0), "rungs": {"mild": _means(28.0)},
                     "degraded": None, "eval_images": {"Set<5>/x": _means(29.5)}},
        "interpolation": {"alphas": [0.5, 1.0], "chosen_alpha": 0.5, "gan_generator": "g", "psnr_generator": "p",
                          "curve": [{"alpha": a, "psnr_rgb": 30 - a, "niqe": 6 - a, "niqe_images": 1}
                                    for a in (0.0, 0.5, 1.0)]},
        "perceptual": {"candidate": {"psnr_rgb": 30.1, "bicubic_psnr_rgb": 30.0, "niqe": 5.5, "bicubic_niqe": 6.5,
                                     "hr_niqe": 4.0, "niqe_images": 1},
                       "baseline": {"psnr_rgb": 30.0, "bicubic_psnr_rgb": 30.0, "niqe": 5.0, "bicubic_niqe": 6.5,
                                    "hr_niqe": 4.0, "niqe_images": 1}},
        "thresholds": {"bless_min_gain_db": 99.0, "bless_tolerance_db": 0.1, "bless_rungs": ["mild"]},
        "convention": {"crop_border": 4, "y_channel": "<BT.601>"},
    }


def test_the_renderer_escapes_names_and_shows_every_value_exactly():
    metrics = _metrics()
    rows = [{"split": "eval", "image": "<script>.png", "psnr_rgb": "30.123457", "niqe": "undefined"},
            {"split": "images:Set<5>", "image": "a&b\".png", "psnr_rgb": "29.000000", "niqe": "5.500000"}]
    pngs = ["grids/eval-000.png", "grids/mild-000.png", "grids/a #b.png", "loss_curve.png"]
    text = report.render(metrics, rows, pngs)
    page = Page(text)

    assert "<script" not in text and "&lt;script&gt;.png" in text  # a name shows as text, never as markup
    assert "a&amp;b&quot;.png" in text and "<BT.601>" not in text and "&lt;BT.601&gt;" in text
    assert {tag for tag, *_ in page.elements} <= {"html", "head", "meta", "link", "title", "style", "body", "h1",
                                                  "h2", "h3", "section", "p", "span", "ul", "li", "div", "table",
                                                  "thead", "tbody", "tr", "th", "td", "code", "figure", "a", "img",
                                                  "figcaption", "dl", "dt", "dd", "details", "summary"}
    assert not any(k.startswith("on") for _tag, attrs, _text in page.elements for k in attrs)

    check_numbers([(a["data-key"], a["data-value"], t) for _tag, a, t in page.with_attr("data-key")], metrics)
    assert 'data-key="/eval_split/sharpness_index"' in text and 'data-key="/eval_split/nan_metric"' in text
    assert 'data-key="/eval_images/Set&lt;5&gt;~1x/psnr_rgb"' in text  # JSON Pointer: "/" in a name is ~1

    [(_tag, attrs, shown)] = page.with_attr("data-decision")
    assert attrs["data-decision"] == shown == "NOT_BLESSED"
    reasons = [(a["class"], "".join(t)) for tag, a, t in page.elements if tag == "li"]
    assert reasons == [("reason fail", metrics["reasons"][0]), ("reason pass", metrics["reasons"][1])]
    assert "LATEST" in text and "version 3" in text
    unjudged = Page(report.render({**metrics, "reasons": ["metrics are not finite: psnr_rgb nan"]}, [], []))
    assert [a["class"] for tag, a, _t in unjudged.elements if tag == "li"] == ["reason fail"]

    srcs = [a["src"] for tag, a, _t in page.elements if tag == "img"]
    assert srcs == ["grids/eval-000.png", "grids/mild-000.png", "grids/a%20%23b.png", "loss_curve.png"]
    cells = ["".join(t) for tag, _a, t in page.elements if tag == "td"]
    assert "<script>.png" in cells and 'a&b".png' in cells and "30.123457" in cells  # per_image.csv's rows


def test_a_page_without_baseline_grids_or_rows_says_so():
    metrics = {**_metrics("BLESSED"), "baseline": None, "rungs": None, "interpolation": None, "eval_images": None,
               "perceptual": None}
    text = report.render(metrics, [], [])
    page = Page(text)
    check_numbers([(a["data-key"], a["data-value"], t) for _tag, a, t in page.with_attr("data-key")], metrics)
    assert "/degraded/psnr_rgb" in {a["data-key"] for _tag, a, _t in page.with_attr("data-key")}  # before the ladder
    assert "LATEST</th>" not in text and "no LATEST model" in text
    assert "no grids" in text and "no loss curve" in text and "no per_image.csv" in text


# ----------------------------------------------------------------------------- --report-only

@pytest.fixture
def old_root(tmp_path):
    dest = tmp_path / "artifacts"
    shutil.copytree(FIXTURE, dest)
    return str(dest)


def _tree(folder: str) -> dict:
    return {os.path.relpath(os.path.join(top, f), folder): os.stat(os.path.join(top, f)).st_mtime_ns
            for top, _dirs, files in os.walk(folder) for f in files}


def test_report_only_writes_the_page_of_a_committed_evaluation(old_root, capsys):
    """An evaluation committed before reports existed (metrics.json of 2026-11-24, no per_image.csv, no grids)."""
    eval_folder = runs.eval_uri(old_root, OLD_RUN)
    before = _tree(eval_folder)
    out = run_cli(capsys, "evaluate", "--artifact-root", old_root, "--run-id", OLD_RUN, "--report-only")
    assert out.returncode == 0, out.stderr
    page_uri = storage.join(eval_folder, runs.REPORT_HTML)
    assert out.stdout.strip() == f"report: {page_uri}"
    assert _tree(eval_folder).keys() - before.keys() == {runs.REPORT_HTML}
    assert all(_tree(eval_folder)[k] == v for k, v in before.items())  # nothing else touched
    text = storage.read_text(page_uri)
    assert 'data-decision="BLESSED"' in text
    assert 'data-key="/eval_split/psnr_rgb" data-value="30.36622381210327">30.366<' in text


def test_report_only_on_s3_links_the_pictures_beside_it(old_root, s3_server, capsys):
    """An eval folder in object storage (SeaweedFS S3): the page is written there, with relative links to the
    folder's PNGs (the grid of an image whose name needs percent-encoding too)."""
    from PIL import Image

    local = runs.eval_uri(old_root, OLD_RUN)
    Image.new("RGB", (8, 8)).save(os.path.join(local, runs.LOSS_CURVE_PNG))
    os.makedirs(os.path.join(local, "grids"))
    Image.new("RGB", (8, 8)).save(os.path.join(local, "grids", "photos-a b#1.png"))
    eval_uri = s3_server.make_bucket("report") + "/runs/r/eval"
    for top, _dirs, files in os.walk(local):
        for path in [os.path.join(top, f) for f in files]:
            storage.upload_file(path, storage.join(eval_uri, os.path.relpath(path, local)))
    out = run_cli(capsys, "evaluate", "--output", eval_uri, "--report-only")
    assert out.returncode == 0 and out.stdout == f"report: {eval_uri}/{runs.REPORT_HTML}\n", out.stdout + out.stderr
    page = Page(storage.read_text(f"{eval_uri}/{runs.REPORT_HTML}"))
    assert [a["src"] for tag, a, _t in page.elements if tag == "img"] == ["grids/photos-a%20b%231.png",
                                                                          runs.LOSS_CURVE_PNG]
    [(_tag, attrs, _text)] = page.with_attr("data-decision")
    assert attrs["data-decision"] == runs.decision(eval_uri)["decision"] == "BLESSED"


@pytest.mark.parametrize("where", ["run", "output"])
def test_report_only_without_an_evaluation_is_one_clear_line_and_writes_nothing(old_root, tmp_path, capsys, where):
    run_folder = runs.run_uri(old_root, OLD_RUN)
    shutil.rmtree(os.path.join(run_folder, runs.EVAL))  # a finished run, never evaluated
    before = _tree(old_root)
    args = ["--run-id", OLD_RUN] if where == "run" else ["--output", str(tmp_path / "no-eval")]
    out = run_cli(capsys, "evaluate", "--artifact-root", old_root, *args, "--report-only")
    assert out.returncode == 2 and out.stdout == "", (out.stdout, out.stderr)
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert "no committed evaluation there" in out.stderr and "evaluate first" in out.stderr, out.stderr
    assert _tree(old_root) == before and not (tmp_path / "no-eval").exists()


# ----------------------------------------------------------------------------- in a browser

def browser_or_skip() -> tuple[str, str]:
    """(chromium, chromedriver) paths and selenium importable; missing: a failure in CI, a skip elsewhere."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    try:
        import selenium  # noqa: F401
        missing = []
    except ImportError:
        missing = ["the selenium package (pip install -e '.[dev]')"]
    missing += [what for path, what in ((chromium, "chromium"), (driver, "chromedriver (Debian: chromium-driver)"))
                if not path]
    if missing:
        message = f"the report's browser test needs {', '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(f"{message}, and CI must run every test (.ci/run installs them)")
        pytest.skip(f"{message}: apt-get install chromium chromium-driver")
    return chromium, driver


def _tiny_run(root: str, dataset_id: str, run_id: str, checkpoints: str) -> None:
    """A real run, trained in this process by the loop's parts (as tests/test_loop.py runs them, no Ray): 12
    pretraining steps and 2 GAN steps of a width-8 generator, then the run.json the launcher writes on success."""
    from components import dataset
    from components.config import RealisticDegradation, TrainConfig
    from components.trainer.loop import WorkerLoop, worker_config
    from components.trainer.schedule import Schedule
    from tests.test_loop import FolderSession

    t = TrainConfig(generator_width=8, generator_blocks=1, residual_over_bicubic=True, discriminator_width=8,
                    discriminator_depth=2, discriminator_dense=8, vgg_weights="none", content_loss="pixel",
                    global_batch_size=4, log_every_seconds=0, pretrain_steps=12, gan_steps=2, steps_per_epoch=100,
                    pretrain_learning_rate=1e-3)
    schedule = Schedule.from_config(t, num_train=1)
    run_uri = runs.run_uri(root, run_id)
    loop = WorkerLoop(worker_config(t, schedule, dataset.dataset_uri(root, dataset_id), run_uri, None,
                                    RealisticDegradation()), FolderSession(checkpoints))
    loop.build()
    loop.restore()
    loop.run_phase("pretrain")
    loop.run_phase("gan")
    loop.finish()
    storage.write_json(storage.join(run_uri, runs.RUN_JSON), {
        "run_id": run_id, "dataset_id": dataset_id, "dataset_uri": dataset.dataset_uri(root, dataset_id),
        "config": dataclasses.asdict(t), "schedule": schedule.to_dict(), "status": "succeeded",
        "final_generator": storage.join(run_uri, runs.GENERATOR)})


@pytest.fixture(scope="module")
def reports(request, tmp_path_factory):
    """Two evaluations of one real tiny run, on its eval split, the ladder's rungs and a folder with one
    full-size photo whose name is markup: the first BLESSED (a threshold any model meets) and pushed, the
    second NOT_BLESSED (a gain of 99 dB over bicubic is asked) with the pushed version as LATEST."""
    from PIL import Image

    from components import dataset, evaluator, registry, sample_data
    from components.pusher import push

    tools = browser_or_skip()  # before any training: a machine without a browser skips (or fails) at once
    src_root, dataset_id = request.getfixturevalue("tiny_dataset")
    tmp = tmp_path_factory.mktemp("report")
    root = str(tmp / "root")
    os.makedirs(os.path.join(root, "datasets"))
    os.symlink(dataset.dataset_uri(src_root, dataset_id), os.path.join(root, "datasets", dataset_id))
    os.makedirs(tmp / "photos")
    Image.fromarray(sample_data.photo("astronaut")[40:248, 150:358]).save(tmp / "photos" / ODD_NAME)
    _tiny_run(root, dataset_id, "tiny", str(tmp / "checkpoints"))

    def evaluate(output=None, **keys):
        cfg = config.Config(artifact_root=root, run_id="tiny", output=output)
        cfg.push.model_name = "report"
        for k, v in keys.items():
            config.set_value(cfg, k, v)
        evaluator.run(cfg)
        return output or runs.eval_uri(root, "tiny")

    blessed = evaluate(bless_min_gain_db=-50.0, eval_images=str(tmp / "photos"))
    cfg = config.Config(artifact_root=root, run_id="tiny")
    cfg.push.model_name = "report"
    card = push.run(cfg)
    assert registry.latest(registry.model_root(root, "report")) == 1
    not_blessed = evaluate(str(tmp / "not-blessed"), bless_min_gain_db=99.0)
    return {"tools": tools, "root": root, "blessed": blessed, "not_blessed": not_blessed, "card": card}


@pytest.fixture(scope="module")
def browser(reports):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, chromedriver = reports["tools"]
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900",
                "--disable-extensions", "--no-first-run"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)  # a given driver: nothing fetched
    try:
        yield driver
    finally:
        driver.quit()


def open_page(driver, eval_folder: str) -> dict:
    """Open eval_folder/report.html from a file:// URL; what the browser made of it."""
    driver.get(pathlib.Path(eval_folder, runs.REPORT_HTML).as_uri())
    state = driver.execute_script("""
        const text = el => el.textContent;
        return {
          images: Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth]),
          links: Array.from(document.querySelectorAll('[href]')).map(a => a.getAttribute('href')),
          cells: Array.from(document.querySelectorAll('[data-key]')).map(
                   c => [c.dataset.key, c.dataset.value, text(c)]),
          decision: Array.from(document.querySelectorAll('[data-decision]')).map(d => [d.dataset.decision, text(d)]),
          reasons: Array.from(document.querySelectorAll('li.reason')).map(li => [li.className, text(li)]),
          rows: Array.from(document.querySelectorAll('#per-image-table tbody tr')).map(
                  tr => Array.from(tr.cells).map(text)),
          scripts: document.scripts.length,
        };""")
    state["console"] = driver.get_log("browser")
    return state


def check_page(state: dict, eval_folder: str) -> tuple[dict, dict]:
    """The checks every report passes; returns (metrics.json, the decision file)."""
    metrics = runs.read_metrics(eval_folder)
    verdict = runs.decision(eval_folder)
    assert [e for e in state["console"] if e["level"] == "SEVERE"] == [], state["console"]
    assert state["scripts"] == 0
    # every picture loads, by a relative path, and every PNG the evaluator wrote is shown
    assert state["images"] and all(done and width > 0 for _src, done, width in state["images"]), state["images"]
    for link in [src for src, *_ in state["images"]] + state["links"]:
        parsed = urllib.parse.urlsplit(link)
        assert link == "data:," or not (parsed.scheme or parsed.netloc or link.startswith(("/", ".."))), link
    pngs = {storage.relpath(f, eval_folder) for f in storage.list_files(eval_folder) if f.endswith(".png")}
    assert {urllib.parse.unquote(src) for src, *_ in state["images"]} == pngs
    assert runs.LOSS_CURVE_PNG in pngs and any(p.startswith("grids/") for p in pngs)
    # the numbers are metrics.json's; the decision is the file's, with each of its reasons
    check_numbers(state["cells"], metrics)
    assert state["decision"] == [[verdict["decision"], verdict["decision"]]]
    assert storage.exists(storage.join(eval_folder, verdict["decision"]))
    assert [text for _cls, text in state["reasons"]] == verdict["reasons"]
    # per_image.csv's rows, names as they are
    with open(os.path.join(eval_folder, "per_image.csv"), newline="") as f:
        csv_rows = list(csv.reader(f))[1:]
    assert [r[:2] for r in state["rows"]] == [r[:2] for r in csv_rows]
    return metrics, verdict


def save_screenshot(driver, path: str) -> None:
    """The whole page, 1280 px wide."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 1280, "height": min(height, 16000), "deviceScaleFactor": 1, "mobile": False})
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "wb") as f:
            f.write(driver.get_screenshot_as_png())
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


@pytest.mark.slow  # trains a tiny run (in this process, no Ray), evaluates it twice and pushes it once
def test_the_report_of_a_real_run_in_a_browser(reports, browser, capsys):
    from PIL import Image

    state = open_page(browser, reports["blessed"])
    metrics, verdict = check_page(state, reports["blessed"])
    assert verdict["decision"] == "BLESSED" and metrics["baseline"] is None
    assert {"mild", "moderate", "harsh"} <= set(metrics["rungs"]) and metrics["eval_images"]
    assert any(cell == ODD_NAME for row in state["rows"] for cell in row)  # shown as the name it is
    assert reports["card"]["metrics"]["report"] == f"{runs.EVAL}/{runs.REPORT_HTML}"  # the model card names it

    shot = os.environ.get("SRGAN_REPORT_SCREENSHOT")
    if shot:
        page = os.environ.get("SRGAN_REPORT_PAGE")  # another run's eval folder (the README's: the quickstart's)
        if page:
            check_page(open_page(browser, page), page)
        save_screenshot(browser, shot)
        with Image.open(shot) as png:
            assert png.format == "PNG" and png.size[0] == 1280 and png.size[1] > 900, (png.format, png.size)

    state = open_page(browser, reports["not_blessed"])
    metrics, verdict = check_page(state, reports["not_blessed"])
    assert verdict["decision"] == "NOT_BLESSED" and metrics["baseline"]["version"] == 1
    failing = [text for cls, text in state["reasons"] if "fail" in cls.split()]
    assert failing and all(text.startswith("FAIL:") for text in failing)
    assert any("required >= +99.000 dB" in text for text in failing), failing
    assert any(key.startswith("/baseline/rungs/") for key, _v, _t in state["cells"])  # LATEST, on every rung

    # the job names the page; --report-only writes the same page again from the committed files
    page = storage.join(reports["blessed"], runs.REPORT_HTML)
    out = run_cli(capsys, "evaluate", "--artifact-root", reports["root"], "--run-id", "tiny")  # committed: reused
    assert out.returncode == 0 and f"report: {page}" in out.stdout.splitlines(), out.stdout + out.stderr
    written = storage.read_bytes(page)
    os.remove(page)
    out = run_cli(capsys, "evaluate", "--artifact-root", reports["root"], "--run-id", "tiny", "--report-only")
    assert out.returncode == 0 and out.stdout == f"report: {page}\n", out.stdout + out.stderr
    assert storage.read_bytes(page) == written
