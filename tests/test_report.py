"""Reports from a fake run folder made in tmp_path: every section, images embedded as PNG,
rendered by headless Chromium; what is missing is said and the rest still renders."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import CLASS_COLOURS, assert_user_error, write_image
from PIL import Image

from tlkit.evaluation.metrics import classification_metrics, predictions_table
from tlkit.evaluation.report import SECTIONS, build_run_report
from tlkit.recipes import ImageRecipe, TextCNNRecipe, dump_recipe
from tlkit.runs import write_json

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
# Runs on the load event (data-URI images are decoded by then) and leaves its findings on
# <body>, which --dump-dom prints.
IMAGE_CHECK = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const broken = images.filter(i => !i.complete || i.naturalWidth === 0).length;
  const empty = Array.from(document.querySelectorAll("section"))
    .filter(s => s.offsetHeight === 0).map(s => s.id);
  document.body.setAttribute("data-images", images.length);
  document.body.setAttribute("data-broken-images", broken);
  document.body.setAttribute("data-empty-sections", empty.join(","));
  document.body.setAttribute("data-height", document.documentElement.scrollHeight);
});
</script>"""


def make_run(root: Path, kind: str = "image", history: bool = True) -> Path:
    """A finished run's files as training leaves them, with tiny images as inputs."""
    names = list(CLASS_COLOURS)
    run = root / "run"
    run.mkdir(parents=True)
    (run / "model.keras").write_bytes(b"")  # never loaded by the report
    dump_recipe(ImageRecipe() if kind == "image" else TextCNNRecipe(), run / "recipe.yaml")
    write_json(run / "classes.json", names)
    rng = np.random.default_rng(0)
    tables, metrics = [], {}
    for split, n in (("val", 12), ("test", 18)):
        labels = np.arange(n) % len(names)
        probabilities = rng.dirichlet(np.ones(len(names)), n)
        probabilities[np.arange(n), labels] += 0.4
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        if kind == "image":
            inputs = [str(write_image(root / "images" / f"{split}{i}.png",
                                      CLASS_COLOURS[names[label]], seed=i))
                      for i, label in enumerate(labels)]
        else:
            inputs = [f"sentence {i} with <b>markup</b> & an ampersand" for i in range(n)]
        tables.append(predictions_table(inputs, labels, probabilities, names, split))
        metrics[split] = classification_metrics(labels, probabilities, names)
    pd.concat(tables).to_csv(run / "predictions.csv", index=False)
    write_json(run / "metrics.json", {**metrics, "train_seconds": 12.5,
                                      "probe": {"test": {"accuracy": 0.99}}})
    if history:
        pd.DataFrame({"epoch": range(6), "stage": ["head"] * 3 + ["block4"] * 3,
                      "accuracy": np.linspace(0.4, 0.9, 6), "loss": np.linspace(1.2, 0.3, 6),
                      "val_accuracy": np.linspace(0.4, 0.8, 6),
                      "val_loss": np.linspace(1.3, 0.6, 6)}).to_csv(run / "history.csv",
                                                                     index=False)
    return run


def embedded_pngs(page: str) -> list[bytes]:
    """Every <img> source, which must be a base64 PNG data URI; returns the decoded bytes."""
    sources = re.findall(r"<img [^>]*src=\"([^\"]*)\"", page)
    assert len(sources) == page.count("<img ")
    pngs = []
    for source in sources:
        assert source.startswith("data:image/png;base64,"), source[:40]
        data = base64.b64decode(source.split(",", 1)[1], validate=True)
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "PNG" and min(image.size) > 50
        pngs.append(data)
    return pngs


def assert_self_contained(page: str) -> None:
    assert "<link" not in page and "<script" not in page and "@import" not in page
    assert not re.search(r"(src|href)=\"(?!data:|#)", page), "a resource outside the file"


def chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=180, check=True)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run "
                    "installs it); report.html cannot be rendered without a browser")
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    report = build_run_report(run)
    assert report == run / "report.html"
    page = report.read_text(encoding="utf-8")
    assert_self_contained(page)
    for key in SECTIONS:
        assert f'<section id="{key}">' in page
    # confusion, ROC/PR, reliability, risk-coverage, curves, gallery
    assert len(embedded_pngs(page)) == 6
    assert "Nothing is missing" in page
    assert "is below its linear probe" in page  # the fake probe (0.99) beats the run

    checked = tmp_path / "checked.html"
    checked.write_text(page.replace("</body>", IMAGE_CHECK + "</body>"), encoding="utf-8")
    dom = chromium(["--dump-dom", "--window-size=1280,4000", checked.as_uri()],
                   tmp_path / "profile").stdout
    assert 'data-images="6"' in dom and 'data-broken-images="0"' in dom, dom[-500:]
    assert 'data-empty-sections=""' in dom
    for title in SECTIONS.values():
        assert f"<h2>{title}</h2>" in dom

    # The whole page in one screenshot: at least 4000 pixels, more if the page is longer.
    height = max(4000, int(re.search(r'data-height="(\d+)"', dom).group(1)))
    shot = tmp_path / "shot.png"
    chromium([f"--screenshot={shot}", f"--window-size=1280,{height}", report.as_uri()],
             tmp_path / "profile")
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("L"))
    assert pixels.shape == (height, 1280)
    assert pixels.std() > 10, "the screenshot is blank"
    print(f"screenshot: {shot}")


def test_report_files_hold_the_same_numbers(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    out = run / "reports" / "new-data"
    build_run_report(run, out, split="val")
    numbers = json.loads((out / "report.json").read_text())
    saved = json.loads((run / "metrics.json").read_text())
    assert numbers["metrics"]["accuracy"] == pytest.approx(saved["val"]["accuracy"])
    assert numbers["metrics"]["confusion_matrix"] == saved["val"]["confusion_matrix"]
    assert numbers["extra"]["test accuracy"] == saved["test"]["accuracy"]
    assert numbers["probe_accuracy"] is None  # the probe was measured on test only
    markdown = (out / "report.md").read_text()
    for name in numbers["figures"]:
        assert f"]({name})" in markdown and (out / name).read_bytes()[:4] == b"\x89PNG"
    for title in SECTIONS.values():
        assert f"## {title}" in markdown
    assert f"| accuracy | {saved['val']['accuracy']:.4f} |" in markdown


def test_report_without_history_says_so_and_renders_the_rest(tmp_path: Path) -> None:
    run = make_run(tmp_path, history=False)
    page = build_run_report(run).read_text(encoding="utf-8")
    missing = page.split('<section id="missing">')[1]
    assert "training curves: no training history (history.csv)" in missing
    assert len(embedded_pngs(page)) == 5  # and the risk-coverage curve
    assert json.loads((run / "report.json").read_text())["missing"] == [
        "training curves: no training history (history.csv)"]


def test_text_report_lists_sentences_escaped(tmp_path: Path) -> None:
    run = make_run(tmp_path, kind="textcnn")
    page = build_run_report(run).read_text(encoding="utf-8")
    top = page.split('<section id="top-losses">')[1].split("</section>")[0]
    assert "with &lt;b&gt;markup&lt;/b&gt; &amp; an ampersand" in top and "<b>" not in top
    # the gallery is a table of sentences; the calibration section has a risk-coverage curve
    assert len(embedded_pngs(page)) == 5


def test_old_metrics_without_predictions_still_report(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    (run / "predictions.csv").unlink()
    old = json.loads((run / "metrics.json").read_text())
    for split in ("val", "test"):
        old[split] = {key: old[split][key] for key in
                      ("n", "accuracy", "loss", "macro_f1", "per_class", "confusion_matrix")}
    write_json(run / "metrics.json", old)
    page = build_run_report(run).read_text(encoding="utf-8")
    missing = page.split('<section id="missing">')[1]
    for what in ("ROC and precision-recall", "reliability diagram", "top losses"):
        assert what in missing
    assert len(embedded_pngs(page)) == 2  # confusion matrix and training curves


def test_unknown_labels_are_named_and_counted(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    table = pd.read_csv(run / "predictions.csv")
    table.loc[table.index[-3:], "label"] = ["zebra", "zebra", "yak"]
    table.loc[table.index[-3:], "loss"] = np.nan
    table.to_csv(run / "predictions.csv", index=False)
    build_run_report(run)
    numbers = json.loads((run / "report.json").read_text())
    assert numbers["unknown_labels"] == {"zebra": 2, "yak": 1}
    assert numbers["metrics"]["n"] == 15
    assert "3 examples have labels the model never saw" in (run / "report.md").read_text()


def test_bad_run_folders_are_user_errors(tmp_path: Path) -> None:
    assert_user_error(lambda: build_run_report(tmp_path), "is not a finished tlkit run folder")
    run = make_run(tmp_path)
    (run / "classes.json").unlink()
    assert_user_error(lambda: build_run_report(run), "classes.json")
    run = make_run(tmp_path / "other")
    assert_user_error(lambda: build_run_report(run, split="train"), "no rows of split 'train'")


def test_the_report_says_what_each_stage_gained_on_val(tmp_path: Path) -> None:
    from tlkit.recipes import Stage
    from tlkit.train.fit import stage_outcomes

    run = make_run(tmp_path)
    history = pd.read_csv(run / "history.csv")
    history.loc[5, "val_loss"] = 1.5  # the last fine-tuning epoch: worse than the head's best
    history.to_csv(run / "history.csv", index=False)
    stages = [Stage(), Stage(name="block4", keep="last")]
    metrics = json.loads((run / "metrics.json").read_text())
    write_json(run / "metrics.json", {**metrics, "stages": stage_outcomes(history, stages)})
    markdown = (build_run_report(run).parent / "report.md").read_text()
    rows = [line for line in markdown.splitlines() if line.startswith(("| head", "| block4"))]
    assert rows == ["| head | 3 | best (epoch 3) | 1.02 | 0.56 |  | kept |",
                    "| block4 | 3 | last (epoch 6) | 1.5 | 0.8 | -0.4800 |  |"]
