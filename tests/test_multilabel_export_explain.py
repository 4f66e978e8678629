"""A multi-label run's exports carry its thresholds, and text explain shows its sigmoids.

Every export of a multi-label run has a second output, ``labels`` (int 0/1 per class,
``probabilities >= thresholds`` with the run's thresholds chosen on val), computed inside
the exported graph: each format is run here in its own runtime, without tlkit. Explaining
a multi-label text run shows the model's own sigmoid output for the label explained, not a
softmax over its logits.
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import assert_user_error
from test_tasks import write_channel_run

# Not 0.5 each, so an export that ignored the run's thresholds would answer other sets:
# green (mean 200: p 0.97) stays below 0.98, blue is called from 0.0074 (mean 30) upwards.
THRESHOLDS = [0.005, 0.98, 0.5]
HAS_ONNX = all(importlib.util.find_spec(m) for m in ("tf2onnx", "onnxruntime"))


@pytest.fixture(scope="module")
def multilabel_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """test_tasks' hand-made channel run (sigmoid per colour channel), other thresholds."""
    return write_channel_run(tmp_path_factory.mktemp("multilabel_export"), THRESHOLDS)


def held_out_images(run: Path) -> np.ndarray:
    from tlkit.data.images import decode_image

    split = pd.read_csv(run / "split.csv")
    paths = split[split["split"] == "test"]["path"]
    return np.stack([decode_image(p, 32).numpy() for p in paths])


def run_savedmodel(path: str, images: np.ndarray) -> dict[str, np.ndarray]:
    """TF Serving's call: the ``serving_default`` signature."""
    import tensorflow as tf

    signature = tf.saved_model.load(path).signatures["serving_default"]
    return {name: value.numpy() for name, value in signature(image=tf.constant(images)).items()}


def run_tflite(path: str, images: np.ndarray) -> dict[str, np.ndarray]:
    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TF 2.21 points to LiteRT, tf.lite still runs
        interpreter = tf.lite.Interpreter(model_path=path)
    return dict(interpreter.get_signature_runner("serving_default")(image=images))


def run_onnx(path: str, images: np.ndarray) -> dict[str, np.ndarray]:
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(names, {"image": images}), strict=True))


RUNTIMES = {"savedmodel": run_savedmodel, "tflite": run_tflite, "onnx": run_onnx}


@pytest.mark.parametrize("fmt", [
    "savedmodel", "tflite",
    pytest.param("onnx", marks=pytest.mark.skipif(
        not HAS_ONNX, reason="tf2onnx/onnxruntime missing: pip install -e '.[onnx]'"))])
def test_every_export_answers_the_label_sets_of_the_runs_thresholds(
        multilabel_run: Path, tmp_path: Path, fmt: str) -> None:
    from tlkit.evaluation.multilabel import apply_thresholds
    from tlkit.export import export_run

    result = export_run(multilabel_run, fmt, out=tmp_path / fmt)
    assert result["labels_output"] == "labels" and result["label_sets_differ"] == 0
    images = held_out_images(multilabel_run)
    answer = RUNTIMES[fmt](result["path"], images)
    assert sorted(answer) == ["labels", "probabilities"]
    probabilities, labels = answer["probabilities"], answer["labels"]
    assert labels.dtype == np.int32 and labels.shape == (len(images), 3)
    np.testing.assert_array_equal(labels, apply_thresholds(probabilities, THRESHOLDS))
    # The run's thresholds, not 0.5 each: green and blue are decided otherwise here.
    assert (labels != apply_thresholds(probabilities, [0.5] * 3)).any(axis=0).tolist() == \
        [True, True, False]
    saved = json.loads((tmp_path / fmt / "export.json").read_text())
    assert saved["thresholds"] == THRESHOLDS and saved["labels_output"] == "labels"


def test_thresholds_in_float32_decide_as_the_float64_ones() -> None:
    from tlkit.evaluation.multilabel import apply_thresholds
    from tlkit.export import float32_limits

    wanted = np.array([0.1, 0.3, 1 / 3, 0.7])  # none is a float32
    limits = float32_limits(wanted)
    probabilities = np.stack([np.nextafter(limits, np.float32(0)), limits]).astype("float32")
    np.testing.assert_array_equal(apply_thresholds(probabilities, wanted),
                                  (probabilities >= limits).astype(int))
    assert apply_thresholds(probabilities, wanted).tolist() == [[0] * 4, [1] * 4]


def test_an_export_whose_labels_are_not_its_probabilities_at_the_thresholds_is_refused(
        multilabel_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tlkit.export

    monkeypatch.setattr(tlkit.export, "float32_limits",
                        lambda thresholds: np.zeros(len(thresholds), "float32"))
    assert_user_error(lambda: tlkit.export.export_run(multilabel_run, "savedmodel",
                                                      out=tmp_path / "sm"),
                      "answers label sets that are not its probabilities at the run's "
                      "thresholds")
    assert not (tmp_path / "sm").exists()


WEATHER = ["rain", "sea", "sun"]
# The untrained model's sigmoids sit at 0.48-0.51: at 0.49 the four days get 3, 1, 1, 1 labels.
DAYS = pd.DataFrame({"input": ["sun over the sea", "rain all day", "a grey day", "sun and rain"],
                     "label": ["sea|sun", "rain", "", "rain|sun"], "split": "test"})


@pytest.fixture(scope="module")
def text_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A multi-label Kim CNN run made by hand (sigmoid head, untrained weights: its outputs
    sit near 0.5 each, far from a softmax over three labels)."""
    from tlkit.data.text import build_vocabulary, tokenize
    from tlkit.models.textcnn import build_string_model, build_textcnn
    from tlkit.recipes import TextCNNRecipe
    from tlkit.runs import new_run_folder

    vocabulary = build_vocabulary(tokenize(DAYS["input"].tolist(), "kim"), "kim")
    model = build_string_model(build_textcnn(len(vocabulary), 3, embedding_dim=8,
                                             filter_widths=(2, 3), feature_maps=4, seed=0,
                                             output_activation="sigmoid"), vocabulary)
    root = tmp_path_factory.mktemp("multilabel_text")
    # Each label's threshold lies midway between its two lowest outputs over the four texts,
    # so three texts get each label and some text two, whatever the untrained weights.
    outputs = np.sort(np.asarray(model([np.array(DAYS["input"].tolist(), dtype=object)])), 0)
    thresholds = ((outputs[0] + outputs[1]) / 2).tolist()
    with new_run_folder(root / "runs", "weather", "textcnn") as writer:
        writer.write_recipe(TextCNNRecipe(labels="multi"))
        writer.write_classes(WEATHER)
        writer.write_vocabulary(vocabulary)
        writer.write_table("predictions.csv", DAYS)
        writer.write_json("metrics.json", {"val": {"thresholds": thresholds}})
        writer.save_model(model)
    return writer.final


def text_thresholds(run: Path) -> list[float]:
    """The thresholds the hand-made text run keeps in its metrics.json."""
    return json.loads((run / "metrics.json").read_text())["val"]["thresholds"]


def own_outputs(run: Path, texts: list[str]) -> np.ndarray:
    from tlkit.models.saved import load_keras_file

    return np.asarray(load_keras_file(run / "model.keras")([np.array(texts, dtype=object)]))


@pytest.mark.parametrize("method", ["ngrams", "saliency"])
def test_text_explain_of_a_label_shows_the_models_own_sigmoid(text_run: Path,
                                                              method: str) -> None:
    from tlkit.explain.run import explain_run

    texts = DAYS["input"].tolist()[:2]
    expected = own_outputs(text_run, texts)
    for label in WEATHER:  # --class picks the label
        table = explain_run(text_run, texts, method=method, class_name=label)
        assert set(table["class"]) == {label}
        shown = table.groupby("sentence")["probability"].first().to_numpy()
        np.testing.assert_allclose(shown, expected[:, WEATHER.index(label)], atol=1e-5)
    # Untrained sigmoids sit near 0.5 each: a softmax over three labels would be near 1/3.
    assert (np.abs(expected - 0.5) < 0.1).all()


def test_text_export_answers_label_sets_for_token_ids(text_run: Path, tmp_path: Path) -> None:
    from tlkit.data.text import Vocabulary, tokenize
    from tlkit.evaluation.multilabel import apply_thresholds
    from tlkit.export import export_run

    result = export_run(text_run, "tflite", out=tmp_path / "lite")
    vocabulary = Vocabulary.load(tmp_path / "lite" / "vocabulary.json")
    ids = vocabulary.encode(tokenize(DAYS["input"].tolist(), vocabulary.tokenizer))
    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=result["path"])
    answer = interpreter.get_signature_runner("serving_default")(token_ids=ids)
    np.testing.assert_allclose(answer["probabilities"], own_outputs(text_run, DAYS["input"]
                                                                    .tolist()), atol=1e-3)
    expected = apply_thresholds(answer["probabilities"], text_thresholds(text_run))
    np.testing.assert_array_equal(answer["labels"], expected)


def confident_label_model() -> Any:
    """A sigmoid head sure of label 0 where red is bright: p = sigmoid(10 * mean(relu(r -
    128))), 1.0 exactly in float32 for a half-red image, so its gradient is 0."""
    import keras

    inputs = keras.Input((32, 32, 3))
    red = keras.layers.Conv2D(1, 1, activation="relu")
    head = keras.layers.Dense(2, activation="sigmoid")
    model = keras.Model(inputs, head(keras.layers.GlobalAveragePooling2D()(red(inputs))))
    red.set_weights([np.array([1, 0, 0], "float32").reshape(1, 1, 3, 1), np.array([-128.0],
                                                                                   "float32")])
    head.set_weights([np.array([[10.0, -10.0]], "float32"), np.zeros(2, "float32")])
    return model


@pytest.mark.parametrize("method", ["saliency", "smoothgrad"])
def test_image_maps_of_a_sure_sigmoid_label_score_its_logit(method: str) -> None:
    from tlkit.explain import saliency as maps

    image = np.zeros((1, 32, 32, 3), "float32")
    image[:, :, :16, 0] = 255.0  # the left half is bright red: only it moves the logit
    model = confident_label_model()
    assert float(model(image)[0, 0]) == 1.0  # saturated: the sigmoid's gradient is 0
    heatmap = getattr(maps, method)(model, image, 0)
    assert heatmap[0, :, :16].sum() > 0.9  # was uniform (0.5 on each half)


def test_top_ngrams_of_a_multi_label_run_count_each_text_toward_every_label_of_its_set(
        text_run: Path) -> None:
    """With ``--data``, a text counts toward each label the model gives it (at the run's
    thresholds) with that label's contributions, as if explained once per label."""
    from tlkit.explain.run import explain_run
    from tlkit.explain.text import explain_sentences

    texts = DAYS["input"].tolist()
    sets = own_outputs(text_run, texts) >= text_thresholds(text_run)
    assert (sets.sum(axis=1) >= 2).any()  # some text has two labels: one class each was wrong
    data = text_run.parent / "days.csv"
    DAYS.rename(columns={"input": "text"}).to_csv(data, index=False)
    table = explain_run(text_run, [], data=data, top=100)
    for i, label in enumerate(WEATHER):
        chosen = [text for text, kept in zip(texts, sets[:, i], strict=True) if kept]
        got = table[table["class"] == label].set_index("ngram")
        if not chosen:
            assert got.empty
            continue
        each = explain_sentences(text_run, chosen, top=100, class_index=i)
        expected = each.groupby("ngram").agg(contribution=("contribution", "sum"),
                                             texts=("sentence", "size"))
        assert sorted(got.index) == sorted(expected.index), label
        np.testing.assert_allclose(got.loc[expected.index, "contribution"],
                                   expected["contribution"], atol=1e-6)
        assert got.loc[expected.index, "texts"].tolist() == expected["texts"].tolist()
