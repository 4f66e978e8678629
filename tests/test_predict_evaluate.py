"""Predict and evaluate with finished image runs (text runs: tests/test_textcnn_run.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import CLASS_COLOURS, assert_user_error, make_image_folder, run_cli, write_image

from tlkit.evaluate import evaluate
from tlkit.predict import predict
from tlkit.recipes import ImageRecipe, Stage


@pytest.fixture(scope="module")
def image_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tlkit.train.image import finetune

    root = tmp_path_factory.mktemp("image_run")
    data = make_image_folder(root / "img", per_class=10, classes=("red", "green", "blue"))
    recipe = ImageRecipe(backbone="tiny_cnn", data=str(data), weights="none", input_size=32,
                         batch_size=8, early_stopping=None, augment=None,
                         stages=[Stage(epochs=12, lr=0.03, train_from="all")])
    return finetune(recipe, out=root / "runs", name="colours").path


def test_predict_files_folders_and_csv_with_an_undecodable_image(image_run: Path,
                                                                 tmp_path: Path) -> None:
    red = write_image(tmp_path / "new" / "red.png", (220, 30, 30), size=40)
    blue = write_image(tmp_path / "new" / "sub" / "blue.jpg", (30, 40, 220), size=28)
    broken = tmp_path / "new" / "broken.png"
    broken.write_bytes(b"not an image")
    listing = tmp_path / "list.csv"
    pd.DataFrame({"path": ["new/red.png"]}).to_csv(listing, index=False)
    table = predict(image_run, [str(red), str(tmp_path / "new"), str(listing)], top_k=3)
    assert len(table) == 5  # red, then the folder's broken/red/blue, then the CSV's red
    assert list(table.columns) == ["input", "label_1", "prob_1", "label_2", "prob_2",
                                   "label_3", "prob_3", "error"]
    by_input = table.set_index("input")
    assert by_input.loc[str(blue), "label_1"] == "blue"
    assert (table[table["input"] == str(red)]["label_1"] == "red").all()
    assert by_input.loc[str(broken), "error"] != "" and by_input.loc[str(broken), "label_1"] == ""
    good = table[table["error"] == ""]
    np.testing.assert_allclose(good[["prob_1", "prob_2", "prob_3"]].sum(axis=1), 1, atol=2e-4)


def test_broken_images_get_one_line_each_and_good_ones_are_not_scanned_first(
        image_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tlkit.data.images

    folder = tmp_path / "mixed"
    good = [write_image(folder / f"{i}.png", (30, 40, 220), seed=i) for i in range(40)]
    truncated = write_image(folder / "truncated.jpg", (220, 30, 30), size=64)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    (folder / "notes.jpg").write_text("not an image")
    (folder / "gone.png").symlink_to(tmp_path / "nowhere.png")
    asked = []
    reason = tlkit.data.images.unreadable_reason
    monkeypatch.setattr(tlkit.data.images, "unreadable_reason",
                        lambda path: asked.append(Path(path).name) or reason(path))
    by_name = predict(image_run, [str(folder)])
    by_name.index = by_name["input"].map(lambda path: Path(path).name)
    # Images are decoded once, for the model; only the files that failed are read again.
    assert sorted(asked) == ["gone.png", "notes.jpg", "truncated.jpg"]
    assert "truncated" in by_name.loc["truncated.jpg", "error"]
    assert "broken symbolic link" in by_name.loc["gone.png", "error"]
    assert by_name.loc["notes.jpg", "error"] != ""
    assert (by_name.loc[[p.name for p in good], "error"] == "").all()
    assert (by_name.loc[[p.name for p in good], "label_1"] == "blue").all()


def blended_images(folder: Path) -> pd.DataFrame:
    """Images of two class colours mixed, labelled by the larger share: the model is unsure of
    them, so its probabilities are far from 0 and 1 and their differences show."""
    rows = []
    for i, (first, second) in enumerate([("red", "green"), ("green", "blue"), ("blue", "red")]):
        for share in (0.55, 0.65, 0.8):
            colour = share * np.array(CLASS_COLOURS[first]) + (1 - share) * np.array(
                CLASS_COLOURS[second])
            path = write_image(folder / f"{first}-{share}.png", tuple(colour.astype(int)),
                               seed=i)
            rows.append({"path": str(path), "label": first})
    return pd.DataFrame(rows)


def test_predict_and_evaluate_give_the_models_own_probabilities(image_run: Path,
                                                                 tmp_path: Path) -> None:
    """The run's test images and blends: predict's probabilities are model.keras's own, and
    evaluate's numbers are those of these probabilities (and of training's, on the test)."""
    from sklearn.metrics import log_loss

    from tlkit.data.images import decode_image
    from tlkit.models.saved import load_keras_file

    split = pd.read_csv(image_run / "split.csv")
    test_rows = split.loc[split["split"] == "test", ["path", "label"]]
    images = pd.concat([test_rows, blended_images(tmp_path / "blends")], ignore_index=True)
    classes = json.loads((image_run / "classes.json").read_text())
    model = load_keras_file(image_run / "model.keras")
    expected = model.predict(np.stack([decode_image(p, 32).numpy() for p in images["path"]]),
                             verbose=0)
    assert (expected.max(axis=1) < 0.99).any()  # not all 0 or 1: a comparison that can fail

    table = predict(image_run, images["path"].tolist(), top_k=len(classes))
    predicted = np.zeros_like(expected)
    for k in range(1, len(classes) + 1):
        columns = table[f"label_{k}"].map(classes.index).to_numpy()
        predicted[np.arange(len(table)), columns] = table[f"prob_{k}"]
    np.testing.assert_allclose(predicted, expected, atol=6e-5)  # predict rounds to 4 decimals

    images.to_csv(tmp_path / "images.csv", index=False)
    metrics = evaluate(image_run, tmp_path / "images.csv", name="again")
    truth = images["label"].map(classes.index).to_numpy()
    assert metrics["n"] == len(images)
    assert metrics["accuracy"] == pytest.approx(float((expected.argmax(1) == truth).mean()))
    assert metrics["loss"] == pytest.approx(log_loss(truth, expected, labels=range(3)),
                                            rel=1e-5)
    report = image_run / "reports" / "again"
    for name in ("metrics.json", "predictions.csv", "report.html"):
        assert (report / name).is_file()
    written = pd.read_csv(report / "predictions.csv")
    assert written["input"].tolist() == images["path"].tolist()
    probabilities = ["p0", "p1", "p2"]
    np.testing.assert_allclose(written[probabilities], expected, atol=1e-6)
    # The test images: the probabilities training wrote for them.
    trained = pd.read_csv(image_run / "predictions.csv").set_index("input")
    np.testing.assert_allclose(trained.loc[test_rows["path"], probabilities],
                               expected[:len(test_rows)], atol=1e-6)


def test_unknown_classes_are_named_or_ignored(image_run: Path, tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "eval", per_class=3, classes=("red", "green"))
    write_image(data / "purple" / "0.png", (150, 0, 150))
    write_image(data / "purple" / "1.png", (150, 0, 150), seed=1)
    assert_user_error(lambda: evaluate(image_run, data), "'purple' (2)", "--ignore-unknown")
    metrics = evaluate(image_run, data, ignore_unknown=True)
    assert metrics["n"] == 6 and metrics["unknown_labels"] == {"purple": 2}


@pytest.mark.parametrize(("args", "words"), [
    (["predict", "{run}", "a gripping film"], ["not an image file", "image run"]),
    (["predict", "{run}", "{image}", "--top-k", "4"], ["--top-k 4", "between 1 and 3"]),
    (["predict", "{run}"], ["no inputs given"]),
    (["predict", "{tmp}", "{image}"], ["not a finished tlkit run folder"]),
    (["predict", "{tmp}/.colours.partial", "{image}"], ["unfinished run"]),
    (["predict", "{run}", "{image}", "--output", "/no/such/dir/p.csv"], ["cannot write"]),
    (["evaluate", "{run}", "--data", "{tmp}/none"], ["does not exist"]),
    (["evaluate", "{run}", "--data", "{tmp}", "--data", "{tmp}"],
     ["2 --data were given", "one folder or CSV/TSV"]),
    (["textcnn", "predict", "{run}", "words"], ["image run, not a textcnn run"]),
])
def test_bad_input_is_one_line(image_run: Path, tmp_path: Path, args: list[str],
                               words: list[str]) -> None:
    image = write_image(tmp_path / "one.png", (220, 30, 30))
    (tmp_path / ".colours.partial").mkdir()
    filled = [a.format(run=image_run, image=image, tmp=tmp_path) for a in args]
    code, _, err = run_cli(filled)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    for word in words:
        assert word in err, err


def test_text_run_refuses_images(tmp_path: Path) -> None:
    from tlkit.predict import gather_inputs
    from tlkit.recipes import TextCNNRecipe
    from tlkit.runs import Run

    image = write_image(tmp_path / "x.jpg", (1, 2, 3))
    run = Run(tmp_path, "textcnn", TextCNNRecipe(), ["a", "b"], {})
    assert_user_error(lambda: gather_inputs(run, [str(image)]), "image file", "text run")


def test_data_with_named_splits_is_evaluated_on_its_test_split(tmp_path: Path) -> None:
    from tlkit.evaluate import read_labelled
    from tlkit.runs import Run

    run = Run(tmp_path, "image", ImageRecipe(), ["green", "red"], {})
    make_image_folder(tmp_path / "splits" / "train", per_class=3)
    make_image_folder(tmp_path / "splits" / "test", per_class=2)
    rows = read_labelled(run, str(tmp_path / "splits"), {})
    assert len(rows) == 4 and all("/test/" in path for path in rows["input"])
    assert len(read_labelled(run, str(tmp_path / "splits" / "train"), {})) == 6  # no splits
    make_image_folder(tmp_path / "no-test" / "train", per_class=2)
    make_image_folder(tmp_path / "no-test" / "val", per_class=2)
    assert_user_error(lambda: read_labelled(run, str(tmp_path / "no-test"), {}),
                      "names its splits (train, val) but has no test images")
