"""Frozen-feature cache: the key, reuse, augmented views, and a head trained on the cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_user_error, make_image_folder

from tlkit.backbones import build_backbone, get_backbone
from tlkit.data.images import make_dataset, read_image_table
from tlkit.models.image import build_classifier
from tlkit.recipes import Augment
from tlkit.train.cache import (
    FeatureCache,
    build_feature_cache,
    head_dataset,
    split_classifier,
)

ROW = get_backbone("tiny_cnn")
KEY = {"backbone": "tiny_cnn", "preprocess": ROW.preprocess}


def _classifier(dropout: float = 0.0):
    import keras

    keras.utils.set_random_seed(0)
    return build_classifier(ROW, build_backbone("tiny_cnn", 32), num_classes=3, dropout=dropout)


def _images(tmp_path: Path, per_class: int = 4) -> tuple[list[str], np.ndarray]:
    classes = ("red", "green", "blue")
    table = read_image_table(make_image_folder(tmp_path / "img", per_class, classes))
    labels = table["label"].map({c: i for i, c in enumerate(classes)}).to_numpy("int32")
    return table["path"].tolist(), labels


def _full_predictions(model, paths: list[str]) -> np.ndarray:
    return model.predict(make_dataset(paths, np.zeros(len(paths)), 32, 5), verbose=0)


def test_split_classifier_shares_the_classifier_layers() -> None:
    model = _classifier()
    feature_model, head = split_classifier(model)
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    through_parts = head.predict(feature_model.predict(images, verbose=0), verbose=0)
    np.testing.assert_allclose(through_parts, model.predict(images, verbose=0), atol=1e-6)
    dense = model.get_layer("head").get_layer("predictions")
    assert {id(w) for w in head.trainable_weights} == {id(w) for w in dense.trainable_weights}


def test_a_model_that_is_not_a_chain_is_refused() -> None:
    import keras

    inputs = keras.Input((4,))
    branch = keras.layers.Add()([keras.layers.Dense(4)(inputs), inputs])
    head_in = keras.Input((4,))
    head = keras.Model(head_in, keras.layers.Dense(2)(head_in), name="head")
    with pytest.raises(ValueError, match="not a chain"):
        split_classifier(keras.Model(inputs, head(branch)))


def test_cache_holds_the_feature_model_outputs_and_is_reused(tmp_path: Path) -> None:
    paths, _ = _images(tmp_path)
    feature_model, _ = split_classifier(_classifier())
    first = build_feature_cache(feature_model, paths, 5, tmp_path / "cache", KEY)
    assert not first.reused and isinstance(first.features, np.memmap)
    expected = feature_model.predict(make_dataset(paths, np.zeros(len(paths)), 32, 5), verbose=0)
    np.testing.assert_allclose(first.features, expected, atol=1e-6)
    modified = first.path.stat().st_mtime_ns
    second = build_feature_cache(feature_model, paths, 5, tmp_path / "cache", KEY)
    assert second.reused and second.path == first.path
    assert second.path.stat().st_mtime_ns == modified
    manifest = json.loads(first.path.with_suffix(".json").read_text())
    assert manifest["key"]["backbone"] == "tiny_cnn" and manifest["n_images"] == len(paths)


def test_a_changed_file_or_weight_or_key_part_recomputes(tmp_path: Path) -> None:
    paths, _ = _images(tmp_path)
    feature_model, _ = split_classifier(_classifier())
    cache_dir = tmp_path / "cache"
    first = build_feature_cache(feature_model, paths, 5, cache_dir, KEY)
    stat = os.stat(paths[0])
    os.utime(paths[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    touched = build_feature_cache(feature_model, paths, 5, cache_dir, KEY)
    assert not touched.reused and touched.path != first.path
    other_preprocess = build_feature_cache(feature_model, paths, 5, cache_dir,
                                           {**KEY, "preprocess": "torch"})
    assert not other_preprocess.reused
    conv = feature_model.get_layer("tiny_cnn").get_layer("block3_conv")
    conv.kernel.assign(conv.kernel.numpy() * 1.01)
    retrained = build_feature_cache(feature_model, paths, 5, cache_dir, KEY)
    assert not retrained.reused and retrained.path != touched.path
    assert not np.allclose(retrained.features, touched.features)


def test_augmented_views_are_independent_draws_and_seeded(tmp_path: Path) -> None:
    paths, _ = _images(tmp_path)
    feature_model, _ = split_classifier(_classifier())
    augment = Augment(flip=True, rotation=0.1, zoom=0.2, contrast=0.2)
    cache = build_feature_cache(feature_model, paths, 5, tmp_path / "a", KEY, augment=augment,
                                views=3, seed=7)
    assert cache.features.shape == (3 * len(paths), 32) and cache.views == 3
    assert not np.allclose(cache.view(0), cache.view(1))
    again = build_feature_cache(feature_model, paths, 5, tmp_path / "b", KEY, augment=augment,
                                views=3, seed=7)
    np.testing.assert_allclose(again.features, cache.features, atol=1e-6)
    reseeded = build_feature_cache(feature_model, paths, 5, tmp_path / "b", KEY,
                                   augment=augment, views=3, seed=8)
    assert reseeded.path != again.path and not np.allclose(reseeded.features, cache.features)


def test_views_need_augmentation_and_must_be_positive(tmp_path: Path) -> None:
    feature_model, _ = split_classifier(_classifier())
    assert_user_error(lambda: build_feature_cache(feature_model, ["x.png"], 5, tmp_path, KEY,
                                                  views=2), "augment_views: 2", "augment")
    assert_user_error(lambda: build_feature_cache(feature_model, ["x.png"], 5, tmp_path, KEY,
                                                  augment=Augment(), views=0), "at least 1")


def _synthetic_cache(tmp_path: Path, n_images: int, views: int) -> FeatureCache:
    # Row r holds the value r, so a batch shows which rows it was read from.
    path = tmp_path / "rows.npy"
    np.save(path, np.arange(n_images * views, dtype="float32")[:, None])
    return FeatureCache(path, np.load(path, mmap_mode="r"),
                        {"views": views, "n_images": n_images}, reused=True)


def _epoch(dataset) -> tuple[np.ndarray, np.ndarray]:
    rows, labels = zip(*[(x.numpy()[:, 0], y.numpy()) for x, y in dataset], strict=True)
    return np.concatenate(rows).astype(int), np.concatenate(labels)


def test_head_dataset_draws_one_view_per_image_each_epoch(tmp_path: Path) -> None:
    cache = _synthetic_cache(tmp_path, n_images=10, views=4)
    labels = np.arange(10) % 3
    dataset = head_dataset(cache, labels, 4, shuffle=True, seed=1)
    epochs = [_epoch(dataset) for _ in range(3)]
    for rows, batch_labels in epochs:
        assert sorted(rows % 10) == list(range(10))  # every image once
        np.testing.assert_array_equal(batch_labels, labels[rows % 10])
    assert len({tuple(sorted(rows)) for rows, _ in epochs}) > 1  # views change between epochs
    again, _ = _epoch(head_dataset(cache, labels, 4, shuffle=True, seed=1))
    np.testing.assert_array_equal(again, epochs[0][0])  # seeded
    every, _ = _epoch(head_dataset(cache, labels, 4, all_views=True))
    assert sorted(every) == list(range(40))


def test_with_a_clock_each_epoch_reads_what_that_epoch_read_before(tmp_path: Path) -> None:
    from tlkit.seeds import EpochClock

    cache = _synthetic_cache(tmp_path, n_images=10, views=4)
    labels = np.zeros(10)
    clock = EpochClock(seed=3)
    dataset = head_dataset(cache, labels, 4, shuffle=True, clock=clock)
    epochs = []
    for epoch in range(3):
        clock.epoch = epoch
        epochs.append(_epoch(dataset)[0])
    assert len({tuple(rows) for rows in epochs}) == 3
    clock.epoch = 2  # a run resumed at epoch 2, in a fresh pipeline
    resumed, _ = _epoch(head_dataset(cache, labels, 4, shuffle=True, clock=clock))
    np.testing.assert_array_equal(resumed, epochs[2])


def test_head_trained_on_the_cache_is_the_full_models_head(tmp_path: Path) -> None:
    import keras

    paths, labels = _images(tmp_path, per_class=6)
    train, val = slice(None, None, 2), slice(1, None, 2)
    model = _classifier(dropout=0.2)
    feature_model, head = split_classifier(model)
    caches = {name: build_feature_cache(feature_model, paths[rows], 4, tmp_path / "cache", KEY)
              for name, rows in (("train", train), ("val", val))}
    head.compile(optimizer=keras.optimizers.Adam(0.01),
                 loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = head.fit(head_dataset(caches["train"], labels[train], 4, shuffle=True),
                       validation_data=head_dataset(caches["val"], labels[val], 4),
                       epochs=4, shuffle=False, verbose=0)
    model.save(tmp_path / "model.keras")
    saved = keras.saving.load_model(tmp_path / "model.keras")
    full = _full_predictions(saved, paths[val])
    np.testing.assert_allclose(full, head.predict(caches["val"].features, verbose=0), atol=1e-5)
    accuracy = float(np.mean(full.argmax(axis=1) == labels[val]))
    assert accuracy == pytest.approx(history.history["val_accuracy"][-1])
