"""Calibrated probabilities, conformal prediction sets and abstaining (docs/calibration.md).

A tiny text run trained on noisy labels for many epochs is over-confident; its temperature
is fitted on dev, set inside the saved model and carried by every export. Conformal sets are
checked on synthetic probabilities (coverage) and against MAPIE on the same probabilities.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import assert_user_error, make_image_folder, run_cli

from tlkit.evaluation.calibration import (
    conformal_quantile,
    conformity_scores,
    coverage_table,
    fit_temperature,
    prediction_sets,
    sets_for,
    thresholds_for,
)

WORDS = {"pos": ["great", "superb", "gripping", "moving"],
         "neg": ["awful", "dull", "tedious", "bland"]}
FILLER = ["the", "film", "was", "a", "story", "plot", "really", "quite", "it", "seemed"]


def noisy_sentences(n: int, seed: int, flip: float = 0.25) -> pd.DataFrame:
    """Sentences whose deciding word gives the label, a quarter of the labels flipped: a
    CNN that fits them all is over-confident on the rest."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "pos" if i % 2 == 0 else "neg"
        words = rng.sample(FILLER, 5) + [rng.choice(WORDS[label])]
        rng.shuffle(words)
        if rng.random() < flip:
            label = "neg" if label == "pos" else "pos"
        rows.append({"text": " ".join(words), "label": label})
    return pd.DataFrame(rows)


def train_text(root: Path, name: str, **fields: object) -> Path:
    from tlkit.recipes import TextCNNRecipe
    from tlkit.train.text import train_textcnn

    root.mkdir(parents=True, exist_ok=True)
    noisy_sentences(400, seed=0).to_csv(root / "train.csv", index=False)
    noisy_sentences(120, seed=1).to_csv(root / "test.csv", index=False)
    settings = {"embedding_dim": 16, "feature_maps": 16, "epochs": 12, "batch_size": 20,
                "dev_fraction": 0.2, "seed": 3, "lr": 2.0, "dropout": 0.0, "max_norm": None,
                **fields}
    recipe = TextCNNRecipe(data=str(root / "train.csv"), test=str(root / "test.csv"),
                           **settings)
    return train_textcnn(recipe, out=root / "runs", name=name).path


@pytest.fixture(scope="module")
def text_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_text(tmp_path_factory.mktemp("calibrated_text"), "noisy")


def test_an_over_confident_model_gets_a_temperature_that_lowers_its_val_nll(text_run: Path
                                                                            ) -> None:
    from tlkit.evaluation.calibration import nll
    from tlkit.models.calibration import set_temperature, temperature_of
    from tlkit.predict import open_run
    from tlkit.tasks import task_of

    run = open_run(text_run)
    task = task_of(run)
    val = pd.read_csv(text_run / "predictions.csv", keep_default_na=False).query("split == 'val'")
    targets = task.targets(val["label"], run.class_names)
    # deliberately over-confident: the same logits, six times larger
    dense = run.model.layers[-1].get_layer("output")
    dense.set_weights([weight * 6 for weight in dense.get_weights()])
    set_temperature(run.model, 1.0)
    before = nll(task.probabilities(run.model, val["input"].tolist())[0], targets)
    scaling = task.calibrate(run.model, {"val": (val["input"].tolist(), targets)})
    after = nll(task.probabilities(run.model, val["input"].tolist())[0], targets)
    assert scaling["temperature"] > 3 and float(temperature_of(run.model)) == scaling["temperature"]
    assert after < before - 0.1
    assert scaling["val"]["nll_before"] == pytest.approx(before, abs=1e-4)
    assert scaling["val"]["nll_after"] == pytest.approx(after, abs=1e-4)


def test_every_run_is_scaled_inside_its_saved_model(text_run: Path) -> None:
    from tlkit.models.calibration import temperature_of
    from tlkit.predict import open_run, probabilities

    metrics = json.loads((text_run / "metrics.json").read_text())
    scaling = metrics["temperature_scaling"]
    assert scaling["fitted_on"] == "val" and scaling["temperature"] != 1.0
    for split in ("val", "test", "calibration"):
        assert set(scaling[split]) >= {"ece_before", "ece_after", "nll_before", "nll_after"}
    assert scaling["val"]["nll_after"] <= scaling["val"]["nll_before"]  # T = 1 was a candidate
    run = open_run(text_run)
    assert float(temperature_of(run.model)) == pytest.approx(scaling["temperature"])
    predictions = pd.read_csv(text_run / "predictions.csv", keep_default_na=False)
    test = predictions[predictions["split"] == "test"]
    probs, _ = probabilities(run, test["input"].tolist())
    np.testing.assert_allclose(probs, test[["p0", "p1"]].to_numpy(float), atol=1e-6)
    assert metrics["test"]["loss"] == pytest.approx(scaling["test"]["nll_after"], abs=1e-4)


def test_the_calibration_split_is_held_out_of_training_and_scored(text_run: Path) -> None:
    predictions = pd.read_csv(text_run / "predictions.csv", keep_default_na=False)
    counts = predictions["split"].value_counts().to_dict()
    # 400 texts: 20% dev (80), then 10% of the remaining 320 for calibration (32)
    assert counts == {"val": 80, "test": 120, "calibration": 32}
    calibration = set(predictions.query("split == 'calibration'")["input"])
    assert not calibration & set(predictions.query("split == 'val'")["input"])
    rows = json.loads((text_run / "metrics.json").read_text())["conformal"]["test"]
    assert {(row["score"], row["asked"]) for row in rows} == {
        (score, asked) for score in ("aps", "lac") for asked in (0.8, 0.9, 0.95)}


@pytest.mark.parametrize("fmt", ["savedmodel", "tflite", "onnx"])
def test_every_export_gives_the_calibrated_probabilities(text_run: Path, tmp_path: Path,
                                                         fmt: str) -> None:
    from tlkit.export import export_run

    if fmt == "onnx":
        pytest.importorskip("tf2onnx")
    result = export_run(text_run, fmt, out=tmp_path / fmt)
    # parity is measured against model.keras, whose temperature is not 1
    assert result["parity"] < 1e-5


def test_an_image_run_is_calibrated_inside_its_head_and_its_savedmodel(tmp_path: Path) -> None:
    from tlkit.export import export_run
    from tlkit.models.calibration import find_layer
    from tlkit.predict import open_run
    from tlkit.recipes import ImageRecipe, Stage
    from tlkit.train.image import finetune

    data = make_image_folder(tmp_path / "images", per_class=12, classes=("red", "green"))
    recipe = ImageRecipe(backbone="tiny_cnn", data=str(data), weights="none", input_size=32,
                         batch_size=4, val_fraction=0.25, test_fraction=0.25,
                         early_stopping=None, augment=None, probe=False,
                         stages=[Stage(epochs=2, lr=0.03, train_from="all")])
    run_path = finetune(recipe, out=tmp_path / "runs", name="colours").path
    metrics = json.loads((run_path / "metrics.json").read_text())
    run = open_run(run_path)
    layer = find_layer(run.model, "temperature")
    assert 1 / layer.scale == pytest.approx(metrics["temperature_scaling"]["temperature"])
    split = pd.read_csv(run_path / "split.csv")
    assert (split["split"] == "calibration").sum() == 2  # 10% of 12 training images, per class
    assert export_run(run_path, "savedmodel", out=tmp_path / "sm")["parity"] < 1e-5


def test_calibrate_false_keeps_the_model_as_trained(tmp_path: Path) -> None:
    from tlkit.models.calibration import temperature_of
    from tlkit.predict import open_run

    run_path = train_text(tmp_path, "plain", calibrate=False, calibration_fraction=0.0)
    metrics = json.loads((run_path / "metrics.json").read_text())
    assert "temperature_scaling" not in metrics and "conformal" not in metrics
    assert float(temperature_of(open_run(run_path).model)) == 1.0
    code, _, err = run_cli(["predict", str(run_path), "a dull film", "--coverage", "0.9"])
    assert code == 2 and "no calibration examples" in err and len(err.strip().splitlines()) == 1


def test_fit_temperature_recovers_the_temperature_that_made_the_labels() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4000, 4)) * 3
    labels = np.array([rng.choice(4, p=p) for p in np.exp(logits / 2.5)
                       / np.exp(logits / 2.5).sum(1, keepdims=True)])
    assert float(fit_temperature(logits, labels)) == pytest.approx(2.5, rel=0.1)
    multi = rng.normal(size=(4000, 3)) * 4
    truth = (rng.random((4000, 3)) < 1 / (1 + np.exp(-multi / np.array([1.0, 2.0, 4.0]))))
    np.testing.assert_allclose(fit_temperature(multi, truth.astype(int), True),
                               [1.0, 2.0, 4.0], rtol=0.15)


def calibrated_sample(n: int, classes: int, rng: np.random.Generator
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and labels drawn from them: exchangeable, and calibrated."""
    probs = rng.dirichlet(np.full(classes, 0.5), size=n)
    labels = np.array([rng.choice(classes, p=p) for p in probs])
    return probs, labels


@pytest.mark.parametrize("score", ["aps", "lac"])
def test_conformal_sets_cover_as_promised_on_exchangeable_data(score: str) -> None:
    rng = np.random.default_rng(1)
    covered = []
    for _ in range(40):
        probs, labels = calibrated_sample(600, 5, rng)
        threshold = conformal_quantile(conformity_scores(probs[:300], labels[:300], score), 0.9)
        sets = prediction_sets(probs[300:], threshold, score)
        covered.append(sets[np.arange(300), labels[300:]].mean())
    # split conformal: E[coverage] >= 0.9 (for lac at most 0.9 + 1/(n+1); aps sets take in
    # the class that crosses the threshold whole, so they cover more)
    assert 0.885 <= np.mean(covered) <= (0.92 if score == "lac" else 0.97)


def test_multi_label_sets_cover_each_label() -> None:
    rng = np.random.default_rng(2)
    probs = rng.beta(0.5, 0.5, size=(4000, 3))
    truth = (rng.random((4000, 3)) < probs).astype(int)
    threshold = thresholds_for(probs[:2000], truth[:2000], 0.9, "lac", multi_label=True)
    sets = sets_for(probs[2000:], threshold, "lac", multi_label=True)
    held = np.take_along_axis(sets, truth[2000:][..., None], axis=2)[..., 0]
    assert threshold.shape == (3,)
    np.testing.assert_allclose(held.mean(axis=0), 0.9, atol=0.025)
    rows = coverage_table((probs[:2000], truth[:2000]), (probs[2000:], truth[2000:]), True)
    assert all(abs(row["coverage"] - row["asked"]) < 0.03 for row in rows)


def mapie_on(probs: np.ndarray, labels: np.ndarray, score: str, coverage: float) -> object:
    """MAPIE's split-conformal classifier calibrated on ``probs``, as the benchmark builds it
    (``benchmarks/calibration.py: mapie_on``)."""
    benchmarks = str(Path(__file__).parent.parent / "benchmarks")
    if benchmarks not in sys.path:
        sys.path.insert(0, benchmarks)
    from calibration import mapie_on as benchmark_mapie_on

    return benchmark_mapie_on(probs, labels, score, coverage)


@pytest.mark.parametrize("coverage", [0.8, 0.9, 0.95])
def test_lac_quantiles_and_sets_are_mapies(coverage: float) -> None:
    pytest.importorskip("mapie")
    rng = np.random.default_rng(3)
    probs, labels = calibrated_sample(500, 6, rng)
    test, _ = calibrated_sample(300, 6, rng)
    mapie = mapie_on(probs, labels, "lac", coverage)
    ours = conformal_quantile(conformity_scores(probs, labels, "lac"), coverage)
    sets = mapie.predict_set(test)[1][:, :, 0]
    theirs = mapie._mapie_classifier.conformity_score_function_.quantiles_[0]
    assert ours == pytest.approx(float(theirs), abs=1e-12)
    np.testing.assert_array_equal(prediction_sets(test, ours, "lac"), sets)


@pytest.mark.parametrize("coverage", [0.8, 0.9, 0.95])
def test_aps_quantiles_and_sets_are_mapies(coverage: float) -> None:
    pytest.importorskip("mapie")
    rng = np.random.default_rng(4)
    probs, labels = calibrated_sample(500, 6, rng)
    test, _ = calibrated_sample(300, 6, rng)
    mapie = mapie_on(probs, labels, "aps", coverage)  # random_state=0, as tlkit draws
    sets = mapie.predict_set(test)[1][:, :, 0]
    theirs = mapie._mapie_classifier.conformity_score_function_.quantiles_[0]
    ours = conformal_quantile(conformity_scores(probs, labels, "aps"), coverage)
    assert ours == pytest.approx(float(theirs), abs=1e-12)
    np.testing.assert_array_equal(prediction_sets(test, ours, "aps"), sets)


def test_predict_answers_unsure_with_the_candidates(text_run: Path) -> None:
    texts = ["a great moving film", "the plot was dull", "it seemed quite a story"]
    code, out, err = run_cli(["predict", str(text_run), *texts, "--coverage", "0.95"])
    assert code == 0, err
    table = pd.read_csv(__import__("io").StringIO(out), keep_default_na=False)
    assert list(table.columns) == ["input", "label_1", "prob_1", "answer", "candidates",
                                   "error"]
    unsure = table[table["answer"] == "unsure"]
    assert all(len(c.split("|")) != 1 for c in unsure["candidates"])
    sure = table[table["answer"] != "unsure"]
    assert (sure["answer"] == sure["label_1"]).all() and (sure["candidates"] == "").all()
    code, out, _ = run_cli(["predict", str(text_run), *texts, "--abstain-below", "1.0"])
    table = pd.read_csv(__import__("io").StringIO(out), keep_default_na=False)
    assert code == 0 and (table["answer"] == "unsure").all()
    assert (table["candidates"] == "neg|pos").sum() + (table["candidates"] == "pos|neg").sum() == 3


@pytest.mark.parametrize("args,words", [
    pytest.param(["--coverage", "1.5"], ["--coverage 1.5", "strictly between 0 and 1"],
                 id="coverage 1.5"),
    pytest.param(["--coverage", "0"], ["--coverage 0", "strictly between 0 and 1"],
                 id="coverage 0"),
    pytest.param(["--abstain-below", "-0.1"], ["--abstain-below -0.1", "in [0, 1]"],
                 id="abstain-below -0.1"),
])
def test_options_out_of_range_are_one_line_before_tensorflow(text_run: Path, args: list[str],
                                                             words: list[str]) -> None:
    code = ("import sys; from click.testing import CliRunner; from tlkit.cli import cli; "
            f"r = CliRunner().invoke(cli, {['predict', str(text_run), 'x', *args]!r}); "
            "print(r.exit_code, 'tensorflow' in sys.modules); print(r.stderr.strip())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    status, message = done.stdout.strip().split("\n", 1)
    assert status == "2 False"
    assert "\n" not in message and all(word in message for word in words), message


def test_serve_takes_coverage_and_abstain_below_per_request(text_run: Path) -> None:
    import threading

    from tlkit.serve import make_server

    server = make_server(text_run, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def post(body: dict[str, object]) -> tuple[int, dict[str, object]]:
        request = urllib.request.Request(f"{server.url}/predict", json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    try:
        status, body = post({"inputs": ["a great film", "the story"], "coverage": 0.9,
                             "conformal_score": "lac"})
        assert status == 200
        assert all({"labels", "probabilities", "answer", "candidates"} <= set(row)
                   for row in body["predictions"])
        status, body = post({"inputs": ["a great film"], "abstain_below": 1.0})
        assert status == 200 and body["predictions"][0]["answer"] == "unsure"
        status, plain = post({"inputs": ["a great film"]})
        assert "answer" not in plain["predictions"][0]
        status, body = post({"inputs": ["a great film"], "coverage": 2})
        assert status == 400 and '"coverage" 2' in body["error"]
    finally:
        server.shutdown()
        server.server_close()


def test_the_report_shows_both_diagrams_the_sets_and_the_risk_coverage(text_run: Path) -> None:
    report = (text_run / "report.md").read_text()
    for name in ("reliability_before.png", "reliability.png", "risk_coverage.png"):
        assert name in report and (text_run / name).is_file()
    assert "empirical coverage" in report and "mean set size" in report


def test_evaluate_reports_the_coverage_of_the_runs_sets(text_run: Path) -> None:
    from tlkit.evaluate import evaluate

    metrics = evaluate(text_run, str(text_run.parent.parent / "test.csv"), name="again")
    assert [(row["score"], row["asked"]) for row in metrics["conformal"]][:3] == [
        ("aps", 0.8), ("aps", 0.9), ("aps", 0.95)]


def test_a_calibration_fraction_out_of_range_is_one_line() -> None:
    from tlkit.recipes import TextCNNRecipe

    code, _, err = run_cli(["finetune", "--data", "datasets/shapes", "--set",
                            "calibration_fraction=0.7"])
    assert code == 2 and err.strip() == ("Error: calibration_fraction must be in [0, 0.5] (0: "
                                         "no prediction sets), got 0.7")
    assert_user_error(lambda: TextCNNRecipe(calibration_fraction=-0.1), "calibration_fraction")


def test_data_too_small_for_a_calibration_split_trains_without_one_and_says_so(
        capsys: pytest.CaptureFixture[str]) -> None:
    from tlkit.data.images import split_table

    frame = pd.DataFrame({"path": list("abcdefgh"), "label": list("xxxxxxxy"),
                          "split": ["test", "test"] + [None] * 6})
    table = split_table(frame, 0.0, 0.0, seed=0, calibration_fraction=0.1)
    assert "calibration" not in set(table["split"])
    err = capsys.readouterr().err
    assert err.startswith("warning: no calibration split, so no prediction sets (--coverage)")
    assert "calibration_fraction=0" in err and len(err.strip().splitlines()) == 1


def test_an_unknown_conformal_score_from_python_is_refused(text_run: Path) -> None:
    from tlkit.predict import predict

    assert_user_error(lambda: predict(text_run, ["a film"], coverage=0.9,
                                      conformal_score="raps"),
                      "--conformal-score raps: unknown score; choose one of: aps, lac")


def test_a_multi_label_run_gets_a_temperature_per_class_and_label_sets_in_doubt(
        tmp_path: Path) -> None:
    from tlkit.models.calibration import temperature_of
    from tlkit.predict import open_run, predict
    from tlkit.recipes import TextCNNRecipe
    from tlkit.train.text import train_textcnn

    rng = np.random.default_rng(0)
    rows = []
    for _ in range(240):
        labels = [label for label in ("rain", "sea", "sun") if rng.random() < 0.4]
        filler = " ".join(rng.choice(["the", "a", "day", "we", "saw"], size=3))
        rows.append({"text": " ".join([filler, *labels]), "label": "|".join(labels)})
    table = pd.DataFrame(rows)
    table[:200].to_csv(tmp_path / "train.csv", index=False)
    table[200:].to_csv(tmp_path / "test.csv", index=False)
    run_path = train_textcnn(TextCNNRecipe(
        data=str(tmp_path / "train.csv"), test=str(tmp_path / "test.csv"), labels="multi",
        embedding_dim=8, feature_maps=8, epochs=4, batch_size=10, dev_fraction=0.2),
        out=tmp_path / "runs", name="sets").path
    metrics = json.loads((run_path / "metrics.json").read_text())
    temperatures = metrics["temperature_scaling"]["temperature"]
    assert len(temperatures) == 3
    np.testing.assert_allclose(temperature_of(open_run(run_path).model), temperatures)
    assert {row["score"] for row in metrics["conformal"]["test"]} == {"lac"}
    # the report's calibration section: both diagrams of the label decisions and the sets
    report = (run_path / "report.md").read_text()
    calibration = report.split("## Calibration")[1].split("\n## ")[0]
    assert "reliability_before.png" in calibration and "reliability.png" in calibration
    assert "temperature (fitted on val by NLL)" in calibration and "lac" in calibration
    answers = predict(run_path, ["we saw sun", "the day"], coverage=0.95)
    assert list(answers.columns[-3:]) == ["answer", "candidates", "error"]
    for answer, candidates in zip(answers["answer"], answers["candidates"], strict=True):
        assert (answer == "unsure") == bool(candidates)


def test_logits_separated_perfectly_keep_temperature_one() -> None:
    # every val example right: the NLL only falls as T shrinks, so any fitted T would be the
    # bound (0.05) and saturate every probability
    logits = np.array([[4.0, 0.0, 1.0], [0.0, 3.0, 1.0], [1.0, 0.0, 6.0]])
    assert float(fit_temperature(logits, np.array([0, 1, 2]))) == 1.0
    sigmoid_logits = np.array([[2.0, -3.0], [-1.0, 4.0]])
    assert fit_temperature(sigmoid_logits, np.array([[1, 0], [0, 1]]), True).tolist() == [1, 1]


def test_a_two_class_run_makes_lac_sets_unless_asked_for_aps(text_run: Path) -> None:
    from tlkit.predict import open_run
    from tlkit.tasks import task_of
    from tlkit.tasks.base import check_uncertainty

    run = open_run(text_run, model=False)
    task = task_of(run)
    assert task.uncertainty(run, check_uncertainty(0.9, None, None)).score == "lac"
    assert task.uncertainty(run, check_uncertainty(0.9, None, "aps")).score == "aps"
