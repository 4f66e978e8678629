"""Exports of tiny image and text runs: each format, its parity check, its inputs, bad input."""

from __future__ import annotations

import json
import random
import sys
import warnings
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import assert_user_error, make_image_folder, run_cli

import tlkit.export as export_module
from tlkit.export import ParityError, export_run

WORDS = {"pos": ["great", "superb", "gripping"], "neg": ["awful", "dull", "tedious"]}
FILLER = ["the", "film", "was", "a", "story", "plot", "really", "quite"]


def make_image_run(root: Path) -> Path:
    """A tiny_cnn run on two colour classes (a few seconds)."""
    from tlkit.recipes import ImageRecipe, Stage
    from tlkit.train.image import finetune

    data = make_image_folder(root / "images", per_class=8)
    recipe = ImageRecipe(backbone="tiny_cnn", data=str(data), weights="none", input_size=32,
                         batch_size=4, val_fraction=0.25, test_fraction=0.25,
                         early_stopping=None, augment=None, probe=False,
                         stages=[Stage(epochs=4, lr=0.03, train_from="all")])
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
    """A small Kim CNN on ``sentences`` with a test file (a few seconds)."""
    from tlkit.recipes import TextCNNRecipe
    from tlkit.train.text import train_textcnn

    root.mkdir(parents=True, exist_ok=True)
    sentences(120, seed=0).to_csv(root / "train.csv", index=False)
    sentences(30, seed=1).to_csv(root / "test.csv", index=False)
    recipe = TextCNNRecipe(data=str(root / "train.csv"), test=str(root / "test.csv"),
                           embedding_dim=16, feature_maps=8, epochs=6, batch_size=10, seed=1)
    return train_textcnn(recipe, out=root / "runs", name="words").path


def module_run(make: Callable[[Path], Path], name: str) -> Any:
    """A module fixture that trains one run with ``make`` in a fresh folder ``name``."""

    @pytest.fixture(scope="module")
    def fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
        return make(tmp_path_factory.mktemp(name))

    return fixture


image_run = module_run(make_image_run, "export_image")
text_run = module_run(make_text_run, "export_text")


# Each format run by its own runtime, not by tlkit.export.load_exported (which the export's
# own parity check uses, so a fault there would hide in both).
PROBABILITIES = "probabilities"


def run_savedmodel(path: str, name: str, inputs: np.ndarray) -> np.ndarray:
    """TF Serving's call: the ``serving_default`` signature, named input and output."""
    import tensorflow as tf

    signature = tf.saved_model.load(path).signatures["serving_default"]
    return signature(**{name: tf.constant(inputs)})[PROBABILITIES].numpy()


def run_tflite(path: str, name: str, inputs: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TF 2.21 points to LiteRT, tf.lite still runs
        interpreter = tf.lite.Interpreter(model_path=path)
    runner = interpreter.get_signature_runner("serving_default")
    assert list(runner.get_input_details()) == [name]
    return runner(**{name: inputs})[PROBABILITIES]


def run_onnx(path: str, name: str, inputs: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [name]
    assert [o.name for o in session.get_outputs()] == [PROBABILITIES]
    return session.run([PROBABILITIES], {name: inputs})[0]


RUNTIMES = {"savedmodel": run_savedmodel, "tflite": run_tflite, "onnx": run_onnx}


@cache
def keras_model(run: Path) -> Any:
    """The run's model.keras, loaded once per run (each load costs about a second)."""
    from tlkit.models.saved import load_keras_file

    return load_keras_file(run / "model.keras")


@cache
def held_out(run: Path) -> tuple[np.ndarray, list[str]]:
    """The run's test inputs (decoded images, or raw strings) and labels: what parity reads.
    (Cached: callers must not change the array.)"""
    if (run / "split.csv").is_file():
        from tlkit.data.images import decode_image

        split = pd.read_csv(run / "split.csv")
        rows = split[split["split"] == "test"]
        return (np.stack([decode_image(str(run / p), 32).numpy() for p in rows["path"]]),
                rows["label"].tolist())
    table = pd.read_csv(run / "predictions.csv", keep_default_na=False)
    rows = table[table["split"] == "test"]
    return np.array(rows["input"].tolist(), dtype=object), rows["label"].tolist()


def token_ids(run: Path, texts: np.ndarray) -> np.ndarray:
    from tlkit.data.text import Vocabulary, tokenize

    vocabulary = Vocabulary.load(run / "vocabulary.json")
    return vocabulary.encode(tokenize([str(t) for t in texts], vocabulary.tokenizer))


def assert_runs_like_keras(result: dict[str, Any], run: Path, name: str, atol: float
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Run the export in its own runtime on the run's test inputs; its probabilities must be
    within ``atol`` of model.keras, and the parity it reported must be the difference measured
    here. Returns (keras, exported) probabilities."""
    inputs, _ = held_out(run)
    expected = keras_model(run).predict(inputs, verbose=0)
    given = token_ids(run, inputs) if name == "token_ids" else inputs
    got = np.asarray(RUNTIMES[result["format"]](result["path"], name, given))
    assert got.shape == expected.shape == (len(inputs), 2)
    np.testing.assert_allclose(got.sum(axis=1), 1, atol=1e-3)
    np.testing.assert_allclose(got, expected, atol=atol)
    assert result["parity_examples"] == len(inputs) and result["parity_split"] == "test"
    # The same inputs in the same runtimes: the reported number is the measured one.
    assert result["parity"] == pytest.approx(float(np.abs(got - expected).max()),
                                             rel=1e-3, abs=1e-9)
    return expected, got


def assert_accuracy_change(result: dict[str, Any], run: Path, expected: np.ndarray,
                           got: np.ndarray) -> None:
    """A quantised export's accuracy numbers are those of the probabilities measured here."""
    _, labels = held_out(run)
    classes = json.loads((Path(result["folder"]) / "classes.json").read_text())
    ids = np.array([classes.index(label) for label in labels])
    keras_accuracy = float((expected.argmax(1) == ids).mean())
    exported_accuracy = float((got.argmax(1) == ids).mean())
    assert result["accuracy_examples"] == len(ids)
    assert result["accuracy_keras"] == pytest.approx(keras_accuracy)
    assert result["accuracy_exported"] == pytest.approx(exported_accuracy)
    assert result["accuracy_change"] == pytest.approx(exported_accuracy - keras_accuracy)
    assert result["label_agreement"] == pytest.approx(
        float((expected.argmax(1) == got.argmax(1)).mean()))


def test_image_savedmodel_takes_raw_images_and_matches(image_run: Path, tmp_path: Path) -> None:
    result = export_run(image_run, "savedmodel", out=tmp_path / "sm")
    folder = tmp_path / "sm"
    assert result["path"] == str(folder / "1") and (folder / "1" / "saved_model.pb").is_file()
    assert json.loads((folder / "classes.json").read_text()) == ["green", "red"]
    assert json.loads((folder / "export.json").read_text()) == result
    assert result["size_bytes"] == sum(p.stat().st_size for p in (folder / "1").rglob("*")
                                       if p.is_file())
    assert result["parity_examples"] == 4 and result["inputs"] == "images"
    assert result["parity"] <= result["tolerance"] == 1e-5
    assert not list(tmp_path.glob(".*partial"))
    assert_runs_like_keras(result, image_run, "image", atol=1e-5)


def test_text_savedmodel_takes_raw_strings(text_run: Path) -> None:
    result = export_run(text_run, "savedmodel")
    assert Path(result["folder"]) == text_run / "exports" / "savedmodel"
    assert result["inputs"] == "text" and result["input_shape"] == [None]
    assert result["vocabulary"] is None and result["parity"] <= 1e-5
    assert result["parity_examples"] == 30
    assert_runs_like_keras(result, text_run, "text", atol=1e-5)
    texts = np.array(["a superb film", "a dull plot"], dtype=object)
    probabilities = run_savedmodel(result["path"], "text", texts)
    assert probabilities.argmax(1).tolist() == [1, 0]  # classes: neg, pos


def test_text_tflite_through_the_cli_takes_token_ids_with_the_vocabulary_beside(
        text_run: Path, tmp_path: Path) -> None:
    code, out, _ = run_cli(["export", str(text_run), "--format", "tflite",
                            "--out", str(tmp_path / "lite")])
    assert code == 0, out
    assert "exported tflite:" in out and "token ids from vocabulary.json" in out
    assert "limit 1e-03" in out
    result = json.loads((tmp_path / "lite" / "export.json").read_text())
    assert result["inputs"] == "token_ids" and result["parity"] <= 1e-3
    assert result["tokenizer"]["name"] == "kim" and result["tokenizer"]["rules"]
    assert (tmp_path / "lite" / "vocabulary.json").read_bytes() == \
        (text_run / "vocabulary.json").read_bytes()
    assert_runs_like_keras(result, text_run, "token_ids", atol=1e-3)

    # Words outside the vocabulary (1) and padding (0) run the same as in model.keras.
    texts = np.array(["a gripping story", "the tedious plot was quite dull", "zyzzyva"],
                     dtype=object)
    ids = token_ids(tmp_path / "lite", texts)
    assert result["input_shape"] == [None, ids.shape[1]] and ids[2, 0] == 1
    expected = keras_model(text_run).predict(texts, verbose=0)
    np.testing.assert_allclose(run_tflite(result["path"], "token_ids", ids), expected,
                               atol=1e-3)


def test_dynamic_quantisation_reports_the_test_accuracy_change(image_run: Path) -> None:
    result = export_run(image_run, "tflite", quantize="dynamic")
    assert Path(result["folder"]).name == "tflite-dynamic"
    assert result["tolerance"] is None
    # int8 weights move probabilities by about 3e-4 here; allow 1e-2.
    keras_probabilities, lite = assert_runs_like_keras(result, image_run, "image", atol=1e-2)
    assert_accuracy_change(result, image_run, keras_probabilities, lite)
    metrics = json.loads((image_run / "metrics.json").read_text())
    assert result["accuracy_keras"] == pytest.approx(metrics["test"]["accuracy"])


@pytest.mark.parametrize("quantize", [None, "dynamic"])
def test_onnx_image_and_text_exports(image_run: Path, text_run: Path, tmp_path: Path,
                                     quantize: str | None) -> None:
    pytest.importorskip("tf2onnx")
    pytest.importorskip("onnxruntime")
    image = export_run(image_run, "onnx", out=tmp_path / "image", quantize=quantize)
    text = export_run(text_run, "onnx", out=tmp_path / "text", quantize=quantize)
    # Float weights: TOLERANCES["onnx"]; int8 weights move probabilities by under 1e-3 on
    # these runs: allow 1e-2.
    atol = 1e-3 if quantize is None else 1e-2
    for result, run, name in ((image, image_run, "image"), (text, text_run, "token_ids")):
        expected, got = assert_runs_like_keras(result, run, name, atol=atol)
        assert ("accuracy_change" in result) == (quantize is not None)
        if quantize:
            assert_accuracy_change(result, run, expected, got)
    assert (tmp_path / "text" / "vocabulary.json").is_file()
    assert not (tmp_path / "image" / "vocabulary.json").exists()
    assert sorted(p.name for p in (tmp_path / "image").iterdir()) == [
        "classes.json", "export.json", "model.onnx"]


def test_a_parity_failure_leaves_nothing(image_run: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(export_module.TOLERANCES, "savedmodel", -1.0)
    message = assert_user_error(lambda: export_run(image_run, "savedmodel",
                                                   out=tmp_path / "bad"),
                                "savedmodel export", "differs from model.keras",
                                "nothing was written")
    assert "limit" in message
    assert not (tmp_path / "bad").exists() and not list(tmp_path.glob(".*"))
    with pytest.raises(ParityError):
        export_run(image_run, "savedmodel", out=tmp_path / "bad")


def test_unfinished_runs_are_refused_at_once(tmp_path: Path) -> None:
    partial = tmp_path / ".run.partial"
    partial.mkdir()
    assert_user_error(lambda: export_run(partial, "savedmodel"), "unfinished run")
    (tmp_path / "nomodel").mkdir()
    (tmp_path / "nomodel" / "recipe.yaml").write_text("kind: image\n")
    assert_user_error(lambda: export_run(tmp_path / "nomodel", "tflite"), "model.keras")


def test_a_missing_converter_names_the_extra(text_run: Path, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # import tf2onnx -> ImportError
    assert_user_error(lambda: export_run(text_run, "onnx"), "onnx export needs the 'tf2onnx'",
                      "pip install 'tlkit[onnx]'")


def test_bad_format_quantisation_and_destination(image_run: Path, tmp_path: Path) -> None:
    code, out, err = run_cli(["export", str(image_run), "--format", "pb"])
    assert code == 2 and "Invalid value for '--format'" in err and "savedmodel" in err
    assert_user_error(lambda: export_run(image_run, "pb"), "unknown export format 'pb'")
    assert_user_error(lambda: export_run(image_run, "savedmodel", quantize="dynamic"),
                      "--quantize dynamic applies to tflite and onnx")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "file").write_text("x")
    code, out, err = run_cli(["export", str(image_run), "--format", "tflite", "--out",
                              str(taken)])
    assert code == 2 and err.strip().startswith("Error: export folder") and "exists" in err
    assert len(err.strip().splitlines()) == 1


def test_moved_test_images_are_named(image_run: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(image_run, copy, ignore=shutil.ignore_patterns("exports"))
    split = pd.read_csv(copy / "split.csv")
    split["path"] = split["path"].str.replace(str(image_run.parent.parent), "/gone", regex=False)
    split.to_csv(copy / "split.csv", index=False)
    assert_user_error(lambda: export_run(copy, "savedmodel"), "test image(s) of the run are "
                      "gone", "/gone/")


def test_cli_is_light_and_answers_run_mistakes_without_tensorflow(tmp_path: Path) -> None:
    import subprocess

    (tmp_path / ".run.partial").mkdir()
    code = ("import sys; from click.testing import CliRunner; "
            "from tlkit.cli import cli; "
            "import tlkit.cli.serve; "
            "result = CliRunner().invoke(cli, sys.argv[1:]); "
            "print(result.exit_code, any(m.startswith(('tensorflow', 'keras')) "
            "for m in sys.modules))")
    answer = subprocess.run([sys.executable, "-c", code, "export", str(tmp_path / ".run.partial"),
                             "--format", "onnx"], capture_output=True, text=True, check=True)
    assert answer.stdout.strip() == "2 False", answer.stderr
