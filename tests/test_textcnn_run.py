"""Text CNN runs end to end: train, cross-validate, evaluate, predict, through the CLI too."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import assert_user_error, run_cli

from tlkit.errors import UserError
from tlkit.evaluate import evaluate, read_labelled
from tlkit.predict import open_run, predict
from tlkit.recipes import TextCNNRecipe, load_recipe
from tlkit.runs import Run
from tlkit.train.text import check_text_run, read_recipe_tables, train_textcnn

GOOD = ["great", "wonderful", "superb", "gripping", "funny", "moving"]
BAD = ["awful", "boring", "dull", "clumsy", "tedious", "flat"]
FILLER = ["the", "film", "was", "a", "story", "plot", "really", "quite"]


def _sentences(n: int, seed: int) -> pd.DataFrame:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "pos" if i % 2 == 0 else "neg"
        words = rng.sample(FILLER, 4) + [rng.choice(GOOD if label == "pos" else BAD)]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return pd.DataFrame(rows)


@pytest.fixture
def text_files(tmp_path: Path) -> tuple[Path, Path]:
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    _sentences(120, seed=0).to_csv(train, index=False)
    frame = _sentences(30, seed=1)
    frame.loc[0, "text"] = "zyzzyva " + frame.loc[0, "text"]  # a word only the test set has
    frame.to_csv(test, index=False)
    return train, test


def _recipe(train: Path, test: Path | None = None, **changes) -> TextCNNRecipe:
    values = dict(data=str(train), test=str(test) if test else None, embedding_dim=16,
                  feature_maps=8, epochs=8, batch_size=10, seed=1)
    values.update(changes)
    return TextCNNRecipe(**values)


def test_train_writes_a_text_run_that_takes_raw_strings(text_files, tmp_path: Path) -> None:
    train, test = text_files
    run = train_textcnn(_recipe(train, test), out=tmp_path / "runs", name="t")
    folder = tmp_path / "runs" / "t"
    for name in ("recipe.yaml", "classes.json", "vocabulary.json", "model.keras",
                 "history.csv", "metrics.json", "checkpoints/best.weights.h5",
                 "predictions.csv", "report.html"):
        assert (folder / name).is_file(), name
    vocabulary = json.loads((folder / "vocabulary.json").read_text())
    assert "zyzzyva" not in vocabulary["tokens"]  # built from training texts only
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= 0.9
    assert set(metrics["test"]["per_class"]) == {"neg", "pos"}

    loaded = open_run(folder, kind="textcnn")
    table = pd.read_csv(test)
    probabilities = loaded.model.predict(np.array(table["text"], dtype=object), verbose=0)
    labels = table["label"].map({"neg": 0, "pos": 1}).to_numpy()
    assert float((probabilities.argmax(1) == labels).mean()) == pytest.approx(
        metrics["test"]["accuracy"])
    predictions = predict(loaded, ["a superb and gripping film", "dull tedious plot"], 2)
    assert list(predictions["label_1"]) == ["pos", "neg"]
    assert (predictions["prob_1"] >= predictions["prob_2"]).all()
    assert run.class_names == ["neg", "pos"]

    evaluation = evaluate(folder, test)
    assert evaluation["accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    for name in ("metrics.json", "predictions.csv", "report.html", "report.md", "report.json"):
        assert (folder / "reports" / "test" / name).is_file(), name


def test_cross_validation_reports_mean_and_folds(text_files, tmp_path: Path) -> None:
    train, _ = text_files
    run = train_textcnn(_recipe(train, cv=3, epochs=4), out=tmp_path / "runs", name="cv")
    folds = pd.read_csv(tmp_path / "runs" / "cv" / "folds.csv")
    held_out = pd.read_csv(tmp_path / "runs" / "cv" / "predictions.csv")
    assert len(held_out) == 120 and (tmp_path / "runs" / "cv" / "report.html").is_file()
    assert list(folds["fold"]) == [0, 1, 2]
    assert folds["test"].sum() == 120
    assert run.metrics["cv"]["accuracy_mean"] == pytest.approx(folds["test_accuracy"].mean())
    assert run.metrics["cv"]["accuracy_std"] == pytest.approx(folds["test_accuracy"].std())
    assert run.folds is not None and run.folds.equals(folds)
    assert list(run.history.columns[:2]) == ["epoch", "stage"]  # the last fold's epochs


def test_multichannel_variant_reads_vectors_and_reports_coverage(text_files,
                                                                 tmp_path: Path) -> None:
    train, test = text_files
    vectors = tmp_path / "vectors.txt"
    rng = np.random.default_rng(0)
    lines = [f"{w} " + " ".join(f"{v:.4f}" for v in rng.normal(size=16))
             for w in GOOD + BAD + ["the", "film"]]
    vectors.write_text("\n".join(lines) + "\n")
    run = train_textcnn(_recipe(train, test, variant="multichannel", vectors=str(vectors)),
                        out=tmp_path / "runs")
    coverage = run.metrics["vector_coverage"]
    assert coverage["found"] == 14 and coverage["words"] > 14


def test_vectors_are_required_for_pretrained_variants(text_files, tmp_path: Path) -> None:
    train, _ = text_files
    with pytest.raises(UserError, match="needs pretrained word vectors"):
        train_textcnn(_recipe(train, variant="static"), out=tmp_path / "runs")


def test_kim_recipes_load_with_the_papers_numbers() -> None:
    root = Path(__file__).parent.parent / "recipes"
    for variant in ("rand", "static", "non-static", "multichannel"):
        recipe = load_recipe(root / f"kim2014-cnn-{variant}.yaml")
        assert recipe.variant == variant
        assert (recipe.filter_widths, recipe.feature_maps, recipe.dropout, recipe.max_norm,
                recipe.batch_size) == ([3, 4, 5], 100, 0.5, 3.0, 50)


def test_cli_train_evaluate_predict(text_files, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    train, test = text_files
    runs = tmp_path / "runs"
    # The folder of train.csv and test.csv, as `tlkit datasets fetch` writes them.
    code, out, err = run_cli(["textcnn", "train", "--data", str(train.parent),
                           "--epochs", "6", "--batch-size", "10", "--embedding-dim", "16",
                           "--set", "feature_maps=8", "--out", str(runs), "--name", "c"], capsys)
    assert code == 0, err
    assert "test accuracy" in out
    code, out, _ = run_cli(["textcnn", "evaluate", str(runs / "c"), "--data", str(test)], capsys)
    assert code == 0 and out.startswith("accuracy ") and "report.html" in out
    # The folder is evaluated on its test table.
    code, folder_out, _ = run_cli(["evaluate", str(runs / "c"), "--data", str(train.parent),
                                   "--name", "folder"], capsys)
    assert code == 0 and folder_out.split()[:2] == out.split()[:2]
    lines = tmp_path / "in.txt"
    lines.write_text("superb gripping film\n\nboring dull plot\n")
    code, out, _ = run_cli(["textcnn", "predict", str(runs / "c"), "a wonderful story",
                         "--input", str(lines), "--top-k", "2",
                         "--output", str(tmp_path / "p.csv")], capsys)
    assert code == 0
    predictions = pd.read_csv(tmp_path / "p.csv")
    assert list(predictions.columns) == ["input", "label_1", "prob_1", "label_2", "prob_2",
                                         "error"]
    assert len(predictions) == 3


def test_a_folder_of_split_tables_gives_train_dev_and_test(tmp_path: Path) -> None:
    folder = tmp_path / "trec"
    folder.mkdir()
    _sentences(20, seed=0).to_csv(folder / "train.csv", index=False)
    _sentences(6, seed=1).to_csv(folder / "Dev.csv", index=False)
    _sentences(8, seed=2).to_csv(folder / "test.tsv", sep="\t", index=False)
    (folder / "labels.txt").write_text("pos\nneg\n")  # a note beside the tables, not a class
    tables = read_recipe_tables(TextCNNRecipe(data=str(folder)))
    assert {split: len(table) for split, table in tables.items()} == {
        "train": 20, "dev": 6, "test": 8}
    assert tables["test"]["text"].tolist() == _sentences(8, seed=2)["text"].tolist()
    assert_user_error(lambda: read_recipe_tables(TextCNNRecipe(
        data=str(folder), test=str(folder / "test.tsv"))), "already holds test.tsv",
        "leave out --test")
    assert_user_error(lambda: check_text_run(TextCNNRecipe(data=str(folder), cv=3),
                                             out=tmp_path / "runs"),
                      "--cv 3", "the dev and test data would go unused")
    (folder / "val.csv").write_text("text,label\na,b\n")
    assert_user_error(lambda: read_recipe_tables(TextCNNRecipe(data=str(folder))),
                      "two val tables", "keep one")
    (folder / "val.csv").unlink()
    (folder / "train.csv").unlink()
    assert_user_error(lambda: read_recipe_tables(TextCNNRecipe(data=str(folder))),
                      "no train table", "add train.csv")
    run = Run(tmp_path, "textcnn", TextCNNRecipe(), ["neg", "pos"], {})
    assert len(read_labelled(run, str(folder), {})) == 8  # evaluation reads the test table
    (folder / "test.tsv").unlink()
    assert_user_error(lambda: read_labelled(run, str(folder), {}), "no test table")


def test_cli_predict_on_an_image_run_is_a_clear_error(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "image-run"
    folder.mkdir()
    (folder / "recipe.yaml").write_text("kind: image\nbackbone: tiny_cnn\n")
    (folder / "model.keras").write_text("")
    (folder / "classes.json").write_text('["a", "b"]')
    code, _, err = run_cli(["textcnn", "predict", str(folder), "some text"], capsys)
    assert code == 2 and "image run, not a textcnn run" in err
    code, _, err = run_cli(["textcnn", "predict", str(tmp_path), "some text"], capsys)
    assert code == 2 and "not a finished tlkit run folder" in err


@pytest.mark.parametrize(("args", "words"), [
    (["--cv", "1"], "at least 2 folds"),
    (["--cv", "500"], "fewer than the folds"),
    (["--variant", "static"], "needs pretrained word vectors"),
    (["--test", "/no/such.csv"], "does not exist"),
    (["--set", "text_column=sentence"], "no column 'sentence'"),
])
def test_cli_train_user_errors(args: list[str], words: str, text_files, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    train, _ = text_files
    code, _, err = run_cli(["textcnn", "train", "--data", str(train), "--out",
                         str(tmp_path / "runs"), *args], capsys)
    assert code == 2, err
    assert words in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
