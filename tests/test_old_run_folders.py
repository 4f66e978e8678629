"""Run folders made before the task refactor (main at 007538a) still work with today's code.

tests/fixtures/runs_007538a holds one image and one text run trained by that commit, with the
data they were trained on (tests/fixtures/make_old_runs.py remakes them). Each test copies the
fixture to tmp_path and works from inside it, as a user would from the folder they trained in:
the old recipe.yaml and split.csv store data paths relative to it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_cli

FIXTURE = Path(__file__).parent / "fixtures" / "runs_007538a"
# The labelled test data of each old run, as written below by _test_data.
TEST_DATA = {"image": "image_test.csv", "text": "data/text/test.csv"}


@pytest.fixture
def old_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the fixture, as the working folder; the image run's test split as a CSV."""
    folder = shutil.copytree(FIXTURE, tmp_path / "old")
    monkeypatch.chdir(folder)
    split = pd.read_csv(folder / "trained" / "image" / "split.csv")
    split[split["split"] == "test"][["path", "label"]].to_csv(TEST_DATA["image"], index=False)
    return folder


def _old_test_predictions(run: str) -> pd.DataFrame:
    """The old run's own test predictions: input, label, and one probability per class."""
    table = pd.read_csv(Path("trained") / run / "predictions.csv", keep_default_na=False)
    return table[table["split"] == "test"].reset_index(drop=True)


@pytest.mark.parametrize("run", ["image", "text"])
def test_an_old_run_loads(old_runs: Path, run: str) -> None:
    import tlkit
    from tlkit.tasks import task_of

    loaded = tlkit.load_run(Path("trained") / run)
    classes = json.loads((old_runs / "trained" / run / "classes.json").read_text())
    kind = {"image": "image", "text": "textcnn"}[run]
    # A recipe from before multi-label has no labels field: it is a single-label run.
    assert loaded.kind == kind and loaded.recipe.labels == "single"
    assert task_of(loaded).name == kind
    assert loaded.class_names == classes
    assert loaded.model.output_shape == (None, len(classes))


@pytest.mark.parametrize("run", ["image", "text"])
def test_an_old_run_evaluates_to_its_own_test_metrics(old_runs: Path, run: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["evaluate", f"trained/{run}", "--data", TEST_DATA[run],
                              "--name", "again"], capsys)
    assert code == 0, err
    assert out.startswith("accuracy ")
    report = old_runs / "trained" / run / "reports" / "again"
    then = json.loads((old_runs / "trained" / run / "metrics.json").read_text())["test"]
    now = json.loads((report / "metrics.json").read_text())
    assert now["n"] == then["n"]
    assert now["accuracy"] == pytest.approx(then["accuracy"], abs=1e-6)
    assert now["loss"] == pytest.approx(then["loss"], abs=1e-6)
    assert now["confusion_matrix"] == then["confusion_matrix"]
    # Example by example: the same probabilities as the old run wrote after training.
    old = _old_test_predictions(run)
    new = pd.read_csv(report / "predictions.csv", keep_default_na=False)
    assert list(new["input"]) == list(old["input"])
    columns = [c for c in old.columns if c.startswith("p") and c[1:].isdigit()]
    assert (new[columns] - old[columns]).abs().to_numpy().max() < 1e-6


@pytest.mark.parametrize("run", ["image", "text"])
def test_an_old_run_predicts_its_own_probabilities(old_runs: Path, run: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    classes = json.loads((old_runs / "trained" / run / "classes.json").read_text())
    column = {"image": "path", "text": "text"}[run]
    code, _, err = run_cli(["predict", f"trained/{run}", "--input", TEST_DATA[run], "--column",
                            column, "--top-k", str(len(classes)), "--output", "preds.csv"], capsys)
    assert code == 0, err
    new = pd.read_csv("preds.csv", keep_default_na=False)
    old = _old_test_predictions(run)
    assert list(new["input"]) == list(old["input"]) and not new["error"].astype(bool).any()
    for k in range(1, len(classes) + 1):
        # predict prints four decimals; the old table holds each class's probability as p<id>.
        then = [old.loc[i, f"p{classes.index(label)}"] for i, label in enumerate(new[f"label_{k}"])]
        assert (new[f"prob_{k}"] - then).abs().max() <= 5e-5 + 1e-7
    assert list(new["label_1"]) == list(old["predicted"])


def test_an_old_image_run_explains_with_gradcam(old_runs: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["explain", "trained/image", "data/images/red/4.png",
                              "--method", "gradcam", "--out", "why"], capsys)
    assert code == 0, err
    assert "4.gradcam.png" in out
    assert (old_runs / "why" / "4.gradcam.png").stat().st_size > 0
    assert (old_runs / "why" / "4.gradcam.npy").exists()


def test_an_old_text_run_explains_with_ngrams(old_runs: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["explain", "trained/text", "a great story"], capsys)
    assert code == 0, err
    assert "'a great story' -> " in out and "great story" in out
    code, out, err = run_cli(["explain", "trained/text", "--data", TEST_DATA["text"], "--top", "2",
                              "--out", "why"], capsys)
    assert code == 0, err
    table = pd.read_csv(old_runs / "why" / "top_ngrams.csv")
    assert set(table["class"]) == {"neg", "pos"} and len(table) == 4


@pytest.mark.parametrize("run", ["image", "text"])
@pytest.mark.parametrize("form", ["savedmodel", "tflite"])
def test_an_old_run_exports_and_passes_its_parity_check(old_runs: Path, run: str, form: str,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    code, out, err = run_cli(["export", f"trained/{run}", "--format", form, "--out", "exported"],
                             capsys)
    assert code == 0, err
    manifest = json.loads((old_runs / "exported" / "export.json").read_text())
    # The parity check ran on the old run's whole test split, found through its split.csv.
    n_test = len(_old_test_predictions(run))
    assert manifest["parity_split"] == "test" and manifest["parity_examples"] == n_test
    assert manifest["parity"] <= manifest["tolerance"]
    assert f"parity with model.keras on {n_test} test inputs" in out


@pytest.mark.parametrize("run", ["image", "text"])
def test_an_old_run_rebuilds_its_report(old_runs: Path, run: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    folder = old_runs / "trained" / run
    assert not (folder / "report.html").exists()  # the fixture keeps no report
    code, out, err = run_cli(["report", f"trained/{run}"], capsys)
    assert code == 0, err
    assert out.strip() == f"report: trained/{run}/report.html"
    html = (folder / "report.html").read_text()
    assert all(name in html for name in json.loads((folder / "classes.json").read_text()))
    assert json.loads((folder / "report.json").read_text())
    assert (folder / "confusion_matrix.png").exists()


@pytest.mark.parametrize("run", ["image", "text"])
def test_an_old_run_serves_its_own_probabilities(old_runs: Path, run: str) -> None:
    import threading
    import urllib.request

    from tlkit.serve import make_server

    classes = json.loads((old_runs / "trained" / run / "classes.json").read_text())
    old = _old_test_predictions(run)
    allowed = {"image": old_runs / "data" / "images", "text": None}[run]
    inputs = [str(old_runs / item) if allowed else item for item in old["input"]]
    server = make_server(f"trained/{run}", port=0, allow_paths=allowed)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        body = json.dumps({"inputs": inputs, "top_k": len(classes)}).encode()
        request = urllib.request.Request(f"{server.url}/predict", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            answers = json.loads(response.read())["predictions"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(60)
    assert len(answers) == len(old)
    for i, answer in enumerate(answers):
        then = [old.loc[i, f"p{classes.index(label)}"] for label in answer["labels"]]
        assert answer["probabilities"] == pytest.approx(then, abs=1e-6)


def test_old_runs_are_listed_as_finished(old_runs: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    code, out, err = run_cli(["runs", "trained"], capsys)
    assert code == 0, err
    rows = [line.split() for line in out.strip().splitlines()[1:]]
    assert [row[:3] for row in rows] == [["image", "finished", "image"],
                                         ["text", "finished", "textcnn"]]
