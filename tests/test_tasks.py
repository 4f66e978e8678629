"""One task object per kind of run: the registry, the one decode path, the one scoring path.

A tiny image run and a tiny text run are trained with the real job code; each is then
loaded, evaluated, predicted, explained and exported through its task, and the numbers each
command reports must be the training-time ones (one pipeline from raw input to
probabilities).
"""

from __future__ import annotations

import base64
import json
import random
import re
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import assert_user_error, make_image_folder, write_image

ROOT = Path(__file__).resolve().parents[1]
# The modules after training: none may test the kind of run itself.
AFTER_TRAINING = ["predict.py", "evaluate.py", "export.py", "serve.py", "explain/run.py",
                  "evaluation/report.py", "evaluation/plots.py", "inspection/report.py"]
# (a NumPy dtype's ``.kind`` is another thing)
KIND_TEST = re.compile(r"kind\s*[!=]=|(?<!dtype)\.kind\s+in\b|run_kind\([^)]*\)\s*[!=]=")
WORDS = {"pos": ["great", "superb", "gripping"], "neg": ["awful", "dull", "tedious"]}
FILLER = ["the", "film", "was", "a", "story", "plot", "really", "quite"]


def make_image_run(root: Path) -> Path:
    from tlkit.recipes import ImageRecipe, Stage
    from tlkit.train.image import finetune

    data = make_image_folder(root / "images", per_class=8, classes=("red", "green", "blue"))
    recipe = ImageRecipe(backbone="tiny_cnn", data=str(data), weights="none", input_size=32,
                         batch_size=4, val_fraction=0.25, test_fraction=0.25,
                         early_stopping=None, augment=None, probe=False,
                         stages=[Stage(epochs=3, lr=0.03, train_from="all")])
    return finetune(recipe, out=root / "runs", name="colours").path


def sentences(n: int, seed: int) -> pd.DataFrame:
    """Sentences whose one deciding word gives the label (pos / neg)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "pos" if i % 2 == 0 else "neg"
        words = rng.sample(FILLER, 4) + [rng.choice(WORDS[label])]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return pd.DataFrame(rows)


def make_text_run(root: Path) -> Path:
    from tlkit.recipes import TextCNNRecipe
    from tlkit.train.text import train_textcnn

    sentences(80, seed=0).to_csv(root / "train.csv", index=False)
    sentences(20, seed=1).to_csv(root / "test.csv", index=False)
    recipe = TextCNNRecipe(data=str(root / "train.csv"), test=str(root / "test.csv"),
                           embedding_dim=16, feature_maps=8, epochs=3, batch_size=10, seed=1)
    return train_textcnn(recipe, out=root / "runs", name="words").path


@pytest.fixture(scope="module")
def image_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_run(tmp_path_factory.mktemp("tasks_image"))


@pytest.fixture(scope="module")
def text_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_text_run(tmp_path_factory.mktemp("tasks_text"))


def test_every_recipe_kind_has_a_task_and_tasks_load_no_tensorflow() -> None:
    check = ("import sys\nfrom tlkit.recipes import RECIPE_KINDS, ImageRecipe, TextCNNRecipe\n"
             "from tlkit.tasks import TASKS, task_of\n"
             "assert set(RECIPE_KINDS) <= set(TASKS), (RECIPE_KINDS, TASKS)\n"
             "assert task_of(ImageRecipe()).name == 'image'\n"
             "assert task_of(TextCNNRecipe()).name == 'textcnn'\n"
             "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_task_names_its_head_and_a_kind_no_task_knows_is_one_line() -> None:
    from tlkit.recipes import ImageRecipe, TextCNNRecipe
    from tlkit.tasks import TASKS, get_task, task_of

    for task in TASKS.values():
        head = (("sigmoid", "binary_crossentropy") if task.multi_label
                else ("softmax", "sparse_categorical_crossentropy"))
        assert (task.activation, task.loss) == head
        assert task.explain_methods and task.gallery and task.explainer
    assert task_of(ImageRecipe(labels="multi")) is get_task("image-multilabel")
    assert task_of(TextCNNRecipe(labels="multi")) is get_task("textcnn-multilabel")
    assert_user_error(lambda: get_task("audio"), "unknown kind of run 'audio'", "image, textcnn")


@pytest.mark.parametrize("module", AFTER_TRAINING)
def test_no_module_after_training_tests_the_kind_of_run(module: str) -> None:
    source = (ROOT / "tlkit" / module).read_text(encoding="utf-8")
    found = [line.strip() for line in source.splitlines() if KIND_TEST.search(line)]
    assert found == [], f"tlkit/{module} branches on the kind: {found}"


def test_one_decode_path_gives_the_same_pixels_everywhere(tmp_path: Path) -> None:
    """Training's stream, predict's batches, explain's loader and the export check's inputs
    decode a JPEG, a grey PNG and a GIF to the same float pixels."""
    from tlkit.backbones import build_tiny_cnn
    from tlkit.data.images import decode_once, make_dataset
    from tlkit.explain.run import load_image
    from tlkit.runs import Run
    from tlkit.tasks import get_task

    paths = [str(write_image(tmp_path / name, (200, 90, 40), size=45, mode=mode, seed=3))
             for name, mode in (("a.jpg", "RGB"), ("b.png", "L"), ("c.gif", "P"))]
    training = next(iter(make_dataset(paths, np.zeros(3), 32, batch_size=8)))[0].numpy()
    assert training.shape == (3, 32, 32, 3) and training.std() > 0
    (rows, predicted), = [(r, b.numpy()) for r, b in decode_once(paths, 32, 8)]
    explained = np.stack([load_image(path, (32, 32)) for path in paths])
    run = Run(tmp_path, "image", None, ["a", "b"], {},
              model=build_tiny_cnn(include_top=True, classes=2))
    (_, exported), = list(get_task("image").export_batches(run, paths, "images"))
    assert rows.tolist() == [0, 1, 2]
    for other in (predicted, explained, exported):
        np.testing.assert_array_equal(other, training)


def saved_predictions(run: Path, split: str) -> pd.DataFrame:
    table = pd.read_csv(run / "predictions.csv", keep_default_na=False)
    return table[table["split"] == split].reset_index(drop=True)


def probability_matrix(table: pd.DataFrame) -> np.ndarray:
    return table[[c for c in table.columns if re.fullmatch(r"p\d+", c)]].to_numpy(float)


def test_image_run_scores_the_same_through_every_command(image_run: Path,
                                                         tmp_path: Path) -> None:
    from tlkit.evaluate import evaluate
    from tlkit.explain.run import explain_run
    from tlkit.export import export_run
    from tlkit.predict import predict

    split = pd.read_csv(image_run / "split.csv")
    test = split[split["split"] == "test"][["path", "label"]]
    test.to_csv(tmp_path / "test.csv", index=False)
    trained = saved_predictions(image_run, "test")
    metrics = evaluate(image_run, str(tmp_path / "test.csv"), name="again")
    evaluated = pd.read_csv(image_run / "reports" / "again" / "predictions.csv")
    np.testing.assert_allclose(probability_matrix(evaluated), probability_matrix(trained),
                               atol=1e-6)
    saved = json.loads((image_run / "metrics.json").read_text())["test"]
    assert metrics["loss"] == pytest.approx(saved["loss"], abs=1e-6)
    table = predict(image_run, test["path"].tolist(), top_k=3)
    assert table["label_1"].tolist() == trained["predicted"].tolist()
    explained = explain_run(image_run, test["path"].tolist()[:2], out=tmp_path / "cams")
    assert explained["class"].tolist() == trained["predicted"].tolist()[:2]
    assert export_run(image_run, "savedmodel", out=tmp_path / "sm")["parity"] < 1e-5


def test_text_run_scores_the_same_through_every_command(text_run: Path, tmp_path: Path
                                                        ) -> None:
    from tlkit.evaluate import evaluate
    from tlkit.explain.run import explain_run
    from tlkit.export import export_run
    from tlkit.predict import predict

    trained = saved_predictions(text_run, "test")
    metrics = evaluate(text_run, str(text_run.parent.parent / "test.csv"), name="again")
    evaluated = pd.read_csv(text_run / "reports" / "again" / "predictions.csv")
    assert evaluated["input"].tolist() == trained["input"].tolist()
    np.testing.assert_allclose(probability_matrix(evaluated), probability_matrix(trained),
                               atol=1e-6)
    saved = json.loads((text_run / "metrics.json").read_text())["test"]
    assert metrics["loss"] == pytest.approx(saved["loss"], abs=1e-6)
    table = predict(text_run, trained["input"].tolist())
    assert table["label_1"].tolist() == trained["predicted"].tolist()
    explained = explain_run(text_run, trained["input"].tolist()[:2])
    assert set(explained.columns) >= {"ngram", "contribution"}
    assert export_run(text_run, "tflite", out=tmp_path / "lite")["parity"] < 1e-3


def test_export_of_a_run_whose_held_out_image_no_longer_decodes_is_one_line(
        tmp_path: Path) -> None:
    from tlkit.export import export_run

    run = make_image_run(tmp_path)
    split = pd.read_csv(run / "split.csv")
    Path(split[split["split"] == "test"]["path"].iloc[0]).write_bytes(b"not an image")
    assert_user_error(lambda: export_run(run, "savedmodel", out=tmp_path / "sm"),
                      "test input(s) of the run cannot be read any more")
    assert not (tmp_path / "sm").exists()


# Images whose colour channels each carry one label: red, green, blue above mid-grey.
CHANNELS = ["b", "g", "r"]  # class order (sorted names)
SETS = {"r": (220, 30, 30), "g|r": (220, 200, 30), "b": (30, 30, 220), "b|g": (30, 200, 220),
        "": (30, 30, 30), "b|g|r": (220, 200, 220)}


def channel_model() -> object:
    """A sigmoid head that reads each channel's mean: p(label) = sigmoid((mean - 128) / 20)."""
    import keras

    inputs = keras.Input((32, 32, 3), name="image")
    means = keras.layers.GlobalAveragePooling2D()(inputs)
    head = keras.layers.Dense(3, activation="sigmoid", name="predictions")
    model = keras.Model(inputs, head(means))
    rgb_to_classes = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], dtype="float32") / 20
    head.set_weights([rgb_to_classes, np.full(3, -128 / 20, dtype="float32")])
    return model


def write_channel_run(root: Path, thresholds: list[float]) -> Path:
    """An image run folder with labels: multi, the channel model and ``thresholds``; its
    images (two per label set, val and test) are also listed in ``root/labelled.csv``."""
    from tlkit.recipes import ImageRecipe
    from tlkit.runs import new_run_folder

    rows = [{"path": str(write_image(root / "img" / f"{i}-{k}.png", colour, size=32, seed=k)),
             "label": labels, "split": "test" if k % 2 else "val"}
            for i, (labels, colour) in enumerate(SETS.items()) for k in range(2)]
    with new_run_folder(root / "runs", "channels", "image") as writer:
        writer.write_recipe(ImageRecipe(backbone="tiny_cnn", input_size=32, labels="multi"))
        writer.write_classes(CHANNELS)
        writer.write_table("split.csv", pd.DataFrame(rows))
        writer.write_json("metrics.json", {"val": {"thresholds": thresholds}})
        writer.save_model(channel_model())
    pd.DataFrame(rows).to_csv(root / "labelled.csv", index=False)
    return writer.final


@pytest.fixture(scope="module")
def multilabel_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An image run folder with labels: multi, its model made by hand (no training)."""
    return write_channel_run(tmp_path_factory.mktemp("tasks_multilabel"), [0.5, 0.5, 0.5])


def test_multi_label_image_run_predicts_evaluates_serves_and_exports_label_sets(
        multilabel_run: Path, tmp_path: Path) -> None:
    from tlkit.evaluate import evaluate
    from tlkit.export import export_run
    from tlkit.models.saved import load_run
    from tlkit.predict import predict
    from tlkit.serve import Request, make_server, predict_request
    from tlkit.tasks import task_of

    assert task_of(load_run(multilabel_run, model=False)).name == "image-multilabel"
    labelled = pd.read_csv(multilabel_run.parent.parent / "labelled.csv", keep_default_na=False)
    table = predict(multilabel_run, labelled["path"].tolist())
    assert table["labels"].tolist() == labelled["label"].tolist()
    assert list(table.columns) == ["input", "labels", "prob_b", "prob_g", "prob_r", "error"]

    metrics = evaluate(multilabel_run, str(multilabel_run.parent.parent / "labelled.csv"))
    assert metrics["subset_accuracy"] == 1.0 and metrics["average_precision"]["macro"] == 1.0
    report = Path(metrics["report"]).read_text()
    assert "Per-label confusion" in report and "Precision-recall" in report

    server = make_server(multilabel_run, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        image = base64.b64encode(Path(labelled["path"].iloc[2]).read_bytes()).decode()
        answer = predict_request(server, Request([image]))
        with urllib.request.urlopen(f"{server.url}/health", timeout=30) as response:
            health = json.loads(response.read())
    finally:
        server.shutdown()
        server.server_close()
    assert health["labels"] == "multi" and health["thresholds"] == [0.5, 0.5, 0.5]
    assert answer[0]["labels"] in (["r", "g"], ["g", "r"]) and len(answer[0]["probabilities"]) == 2

    result = export_run(multilabel_run, "savedmodel", out=tmp_path / "sm")
    saved = json.loads((tmp_path / "sm" / "export.json").read_text())
    assert saved["thresholds"] == [0.5, 0.5, 0.5] and saved["labels"] == "multi"
    assert result["parity"] < 1e-5


def test_multi_label_evaluation_uses_the_runs_thresholds(multilabel_run: Path) -> None:
    from tlkit.models.saved import load_run
    from tlkit.tasks import task_of

    run = load_run(multilabel_run, model=False)
    task = task_of(run)
    np.testing.assert_array_equal(task.thresholds(run), [0.5, 0.5, 0.5])
    run.metrics["val"]["thresholds"] = [0.5, 0.5, 0.999]  # r is never reached now
    rows = task.answer_rows(np.array([[0.1, 0.9, 0.99]]), [None], CHANNELS, 1,
                            task.thresholds(run))
    assert rows == [{"labels": ["g"], "probabilities": [0.9]}]


def test_explaining_a_multi_label_image_shows_the_sigmoid_probability(multilabel_run: Path,
                                                                      tmp_path: Path) -> None:
    from tlkit.explain.run import explain_run
    from tlkit.predict import predict

    path = pd.read_csv(multilabel_run / "split.csv")["path"].iloc[2]  # red and green
    table = explain_run(multilabel_run, [path], method="saliency", class_name="g",
                        out=tmp_path)
    expected = predict(multilabel_run, [path])["prob_g"].iloc[0]
    assert table["class"].tolist() == ["g"]
    assert table["probability"].iloc[0] == pytest.approx(expected, abs=1e-4)  # not a softmax


def word_model() -> object:
    """A sigmoid head on raw strings: each of the words ``rain, sea, sun`` carries its label."""
    import keras

    texts = keras.Input((), dtype="string", name="text")
    words = keras.layers.TextVectorization(vocabulary=["rain", "sea", "sun"],
                                           output_mode="multi_hot")(texts)
    head = keras.layers.Dense(3, activation="sigmoid", name="output")
    model = keras.Model(texts, head(words[:, 1:]))  # column 0 counts unknown words
    head.set_weights([np.eye(3, dtype="float32") * 8, np.full(3, -4, dtype="float32")])
    return model


def test_multi_label_text_run_predicts_and_evaluates_label_sets(tmp_path: Path) -> None:
    from tlkit.evaluate import evaluate
    from tlkit.predict import predict
    from tlkit.recipes import TextCNNRecipe
    from tlkit.runs import new_run_folder

    with new_run_folder(tmp_path / "runs", "weather", "textcnn") as writer:
        writer.write_recipe(TextCNNRecipe(labels="multi"))
        writer.write_classes(["rain", "sea", "sun"])
        writer.write_json("metrics.json", {"val": {"thresholds": [0.5, 0.5, 0.5]}})
        writer.save_model(word_model())
    table = pd.DataFrame({"text": ["sun over the sea", "rain", "a grey day", "sun and rain"],
                          "label": ["sea|sun", "rain", "", "rain|sun"]})
    table.to_csv(tmp_path / "days.csv", index=False)
    answers = predict(writer.final, table["text"].tolist())
    assert answers["labels"].tolist() == table["label"].tolist()
    metrics = evaluate(writer.final, str(tmp_path / "days.csv"))
    assert metrics["subset_accuracy"] == 1.0 and metrics["label_cardinality"]["true"] == 1.25


def test_cli_evaluate_of_a_multi_label_run_prints_its_numbers(multilabel_run: Path) -> None:
    from conftest import run_cli

    labelled = multilabel_run.parent.parent / "labelled.csv"
    code, out, err = run_cli(["evaluate", str(multilabel_run), "--data", str(labelled),
                              "--name", "cli"])
    assert code == 0, err
    assert out.startswith("mAP 1.0000, micro F1 1.0000, subset accuracy 1.0000 on 6 examples")


def test_a_multi_label_image_run_trained_from_the_cli_goes_through_every_command(
        tmp_path: Path) -> None:
    """Trained with ``--multi-label`` (no hand-made model): the training summary, predict,
    evaluate, explain per label and export all answer in label sets."""
    from conftest import run_cli

    rows = [{"path": str(write_image(tmp_path / "img" / f"{i}-{k}.png", colour, size=32,
                                     seed=k)), "label": labels}
            for i, (labels, colour) in enumerate(SETS.items()) for k in range(6)]
    pd.DataFrame(rows).to_csv(tmp_path / "data.csv", index=False)
    code, out, err = run_cli(["finetune", "--data", str(tmp_path / "data.csv"), "--multi-label",
                              "--backbone", "tiny_cnn", "--weights", "none", "--epochs", "2",
                              "--out", str(tmp_path / "runs"), "--name", "ml"])
    assert code == 0, err
    assert "val mAP" in out and "test mAP" in out
    run = tmp_path / "runs" / "ml"
    assert json.loads((run / "metrics.json").read_text())["val"]["thresholds"]
    code, out, err = run_cli(["predict", str(run), rows[0]["path"]])
    assert code == 0 and out.startswith("input,labels,prob_b,prob_g,prob_r,error"), err
    code, out, err = run_cli(["evaluate", str(run), "--data", str(tmp_path / "data.csv")])
    assert code == 0 and out.startswith("mAP "), err
    code, out, err = run_cli(["explain", str(run), rows[0]["path"], "--class", "g",
                              "--out", str(tmp_path / "cams")])
    assert code == 0, err
    code, out, err = run_cli(["export", str(run), "--format", "savedmodel",
                              "--out", str(tmp_path / "sm")])
    assert code == 0, err
    assert json.loads((tmp_path / "sm" / "export.json").read_text())["labels"] == "multi"
