"""Test-time augmentation (``--tta``) of evaluate and predict: the views, the averages, the
records, and the refusal for text runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import assert_user_error, run_cli

SIDE = 32
CLASSES = ["red", "blue"]


def half_image(path: Path, left: tuple[int, int, int], right: tuple[int, int, int]) -> Path:
    """A SIDE x SIDE PNG: one colour on the left half, another on the right."""
    from PIL import Image

    pixels = np.zeros((SIDE, SIDE, 3), "uint8")
    pixels[:, :SIDE // 2], pixels[:, SIDE // 2:] = left, right
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def colour_model(crop: tuple[int, int] | None, activation: str = "softmax") -> object:
    """Mean colour -> 2 classes (red vs blue). ``crop`` (left, right) columns cut off first:
    (0, 16) reads only the left half, (16, 0) only the right; None reads the whole image,
    which makes the model flip-invariant."""
    import keras

    inputs = keras.Input((SIDE, SIDE, 3))
    x = inputs if crop is None else keras.layers.Cropping2D(((0, 0), crop))(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(2, activation=activation)
    outputs = dense(x)
    dense.set_weights([np.array([[0.02, -0.02], [0.0, 0.0], [-0.02, 0.02]], "float32"),
                       np.zeros(2, "float32")])
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    root = tmp_path_factory.mktemp("halves")
    return [str(half_image(root / "red" / "0.png", (220, 30, 30), (30, 40, 220))),
            str(half_image(root / "blue" / "1.png", (30, 40, 220), (200, 60, 60))),
            str(half_image(root / "red" / "2.png", (180, 90, 40), (90, 90, 90)))]


def answers(model: object, paths: list[str]) -> np.ndarray:
    """The model's own probabilities of the decoded images (no TTA, no pipeline)."""
    from tlkit.data.images import decode_image

    batch = np.stack([decode_image(p, SIDE).numpy() for p in paths])
    return np.asarray(model.predict(batch, verbose=0))  # type: ignore[attr-defined]


def test_views_are_the_image_its_flip_and_the_corner_and_centre_crops() -> None:
    import tensorflow as tf

    from tlkit.tasks.image import tta_views

    # Channel 0 holds each pixel's column, channel 1 its row: a view shows where it came from.
    rows, columns = np.meshgrid(np.arange(SIDE), np.arange(SIDE), indexing="ij")
    image = np.stack([columns, rows, np.zeros_like(rows)], axis=-1).astype("float32")
    batch = tf.constant(np.stack([image, image[::-1]]))
    flip = list(tta_views(batch, "flip"))
    assert len(flip) == 2
    np.testing.assert_array_equal(flip[0], batch)
    np.testing.assert_array_equal(flip[1], np.asarray(batch)[:, :, ::-1])
    views = list(tta_views(batch, "flip-crops"))
    assert len(views) == 7
    np.testing.assert_array_equal(views[1], flip[1])
    crop, margin = 29, 3  # 90% of 32, rounded
    for view, (top, left) in zip(views[2:], [(0, 0), (0, margin), (margin, 0),
                                            (margin, margin), (1, 1)], strict=True):
        first = np.asarray(view)[0]
        assert first.shape == (SIDE, SIDE, 3)
        for channel, start in ((0, left), (1, top)):
            seen = first[..., channel]
            assert seen.min() == pytest.approx(start, abs=0.1)
            assert seen.max() == pytest.approx(start + crop - 1, abs=0.1)


def test_a_flip_invariant_model_gives_the_same_probabilities(images: list[str]) -> None:
    from tlkit.tasks import get_task

    model = colour_model(None)
    task = get_task("image")
    plain, errors = task.probabilities(model, images)
    flipped, _ = task.probabilities(model, images, tta="flip")
    assert errors == [None] * 3
    np.testing.assert_allclose(flipped, plain, atol=1e-6)


@pytest.mark.parametrize(("kind", "activation"), [("image", "softmax"),
                                                  ("image-multilabel", "sigmoid")])
def test_a_model_reading_the_left_half_averages_both_halves(images: list[str], kind: str,
                                                            activation: str) -> None:
    from tlkit.tasks import get_task

    left, right = colour_model((0, 16), activation), colour_model((16, 0), activation)
    expected = (answers(left, images) + answers(right, images)) / 2
    task = get_task(kind)
    plain, _ = task.probabilities(left, images)
    averaged, _ = task.probabilities(left, images, tta="flip")
    assert np.abs(plain - expected).max() > 0.1  # the halves disagree: the test can fail
    np.testing.assert_allclose(plain, answers(left, images), atol=1e-6)
    np.testing.assert_allclose(averaged, expected, atol=1e-6)


def image_run(folder: Path, model: object) -> Path:
    """A run folder written by hand around ``model`` (everything evaluate and predict read)."""
    from tlkit.recipes import ImageRecipe, dump_recipe

    folder.mkdir(parents=True)
    dump_recipe(ImageRecipe(backbone="tiny_cnn", weights="none", input_size=SIDE),
                folder / "recipe.yaml")
    (folder / "classes.json").write_text(json.dumps(CLASSES))
    model.save(folder / "model.keras")  # type: ignore[attr-defined]
    return folder


def test_evaluate_records_tta_in_metrics_and_report(images: list[str], tmp_path: Path) -> None:
    left, right = colour_model((0, 16)), colour_model((16, 0))
    run = image_run(tmp_path / "run", left)
    data = str(Path(images[0]).parent.parent)
    code, out, err = run_cli(["evaluate", str(run), "--data", data, "--name", "tta",
                              "--tta", "flip"])
    assert code == 0, err
    assert "with --tta flip" in out
    code, _, err = run_cli(["evaluate", str(run), "--data", data, "--name", "plain"])
    assert code == 0, err
    tta, plain = run / "reports" / "tta", run / "reports" / "plain"
    assert json.loads((tta / "metrics.json").read_text())["tta"] == "flip"
    assert json.loads((plain / "metrics.json").read_text())["tta"] is None
    assert "test-time augmentation" in (tta / "report.md").read_text()
    assert "test-time augmentation" not in (plain / "report.md").read_text()
    averaged, single = (pd.read_csv(folder / "predictions.csv") for folder in (tta, plain))
    assert list(averaged.columns) == list(single.columns)
    order = averaged["input"].tolist()
    expected = (answers(left, order) + answers(right, order)) / 2
    np.testing.assert_allclose(averaged[["p0", "p1"]], expected, atol=1e-5)
    np.testing.assert_allclose(single[["p0", "p1"]], answers(left, order), atol=1e-5)


def test_predict_takes_tta_and_keeps_its_table(images: list[str], tmp_path: Path) -> None:
    left, right = colour_model((0, 16)), colour_model((16, 0))
    run = image_run(tmp_path / "run", left)
    tables = {}
    for level in (None, "flip", "flip-crops"):
        option = ["--tta", level] if level else []
        code, out, err = run_cli(["predict", str(run), *images, "--top-k", "2", *option])
        assert code == 0, err
        tables[level] = pd.read_csv(pd.io.common.StringIO(out))
    assert all(list(t.columns) == list(tables[None].columns) for t in tables.values())
    expected = (answers(left, images) + answers(right, images)) / 2
    red = np.where(tables["flip"]["label_1"] == "red", tables["flip"]["prob_1"],
                   tables["flip"]["prob_2"])
    np.testing.assert_allclose(red, expected[:, 0], atol=6e-5)  # the table rounds to 4 places
    assert not np.allclose(tables["flip-crops"]["prob_1"], tables[None]["prob_1"], atol=1e-3)
    np.testing.assert_allclose(tables["flip-crops"][["prob_1", "prob_2"]].sum(axis=1), 1,
                               atol=2e-4)


def text_run(folder: Path) -> Path:
    """A text run folder written by hand; its model.keras is no model (never loaded)."""
    from tlkit.recipes import TextCNNRecipe, dump_recipe

    folder.mkdir(parents=True)
    dump_recipe(TextCNNRecipe(data="train.csv"), folder / "recipe.yaml")
    (folder / "classes.json").write_text(json.dumps(["neg", "pos"]))
    (folder / "model.keras").write_bytes(b"not a model")
    return folder


@pytest.mark.parametrize("command", [["evaluate", "RUN", "--data", "DATA"],
                                     ["predict", "RUN", "a fine film"],
                                     ["textcnn", "predict", "RUN", "a fine film"]],
                         ids=["evaluate", "predict", "textcnn predict"])
def test_tta_on_a_text_run_is_one_line(tmp_path: Path, command: list[str]) -> None:
    run = text_run(tmp_path / "text")
    data = tmp_path / "test.csv"
    pd.DataFrame({"text": ["a fine film"], "label": ["pos"]}).to_csv(data, index=False)
    names = {"RUN": str(run), "DATA": str(data)}
    code, _, err = run_cli([names.get(word, word) for word in command] + ["--tta", "flip"])
    assert code == 2, err
    assert err.strip().splitlines() == [
        "Error: --tta flip: test-time augmentation is for image runs; this is a textcnn run, "
        "so leave --tta out"]


def test_tta_mistakes_are_answered_before_tensorflow(tmp_path: Path) -> None:
    run = text_run(tmp_path / "text")
    script = ("import sys\nfrom tlkit.errors import UserError\nfrom tlkit.predict import predict\n"
              f"try:\n    predict({str(run)!r}, ['a fine film'], tta='flip')\n"
              "except UserError as error:\n    print(error)\n"
              "print('tensorflow' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True)
    assert done.stdout.splitlines()[-1] == "False", done.stdout
    assert "test-time augmentation is for image runs" in done.stdout


def test_an_unknown_level_from_python_is_refused(images: list[str], tmp_path: Path) -> None:
    from tlkit.evaluate import evaluate

    run = image_run(tmp_path / "run", colour_model(None))
    assert_user_error(lambda: evaluate(run, str(Path(images[0]).parent.parent), tta="rotate"),
                      "--tta rotate", "flip, flip-crops")
