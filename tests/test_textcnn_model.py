"""The Kim CNN: variants, padding invariance, sparse Adadelta, string model round trip."""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from tlkit.data.text import prepare_text_data, text_dataset, tokenize
from tlkit.errors import UserError
from tlkit.models.textcnn import (
    KIM,
    MaskedEmbedding,
    SparseAdadelta,
    TextStandardization,
    build_string_model,
    build_textcnn,
    compile_textcnn,
    kim_optimizer,
    training_model,
)

TINY = {"embedding_dim": 6, "feature_maps": 4}


def test_kim_defaults() -> None:
    assert (KIM.filter_widths, KIM.feature_maps, KIM.dropout, KIM.max_norm) == ((3, 4, 5), 100,
                                                                                0.5, 3.0)
    assert (KIM.batch_size, KIM.learning_rate, KIM.rho, KIM.epsilon) == (50, 1.0, 0.95, 1e-6)
    optimizer = kim_optimizer()
    assert isinstance(optimizer, keras.optimizers.Adadelta) and optimizer.rho == 0.95
    model = build_textcnn(30, 2, seed=0)
    conv = model.get_layer("conv_5")
    assert (conv.filters, conv.kernel_size, conv.activation.__name__) == (100, (5,), "relu")
    assert model.get_layer("embedding").output_dim == 300
    assert model.get_layer("dropout").rate == 0.5
    assert model.get_layer("output").kernel_constraint.max_value == 3.0


def test_variants_freeze_the_right_embeddings_and_share_filters() -> None:
    vectors = np.random.default_rng(0).normal(size=(20, 6)).astype("float32")
    static = build_textcnn(20, 3, "static", embeddings=vectors, **TINY)
    assert not static.get_layer("embedding").trainable
    np.testing.assert_array_equal(static.get_layer("embedding").embeddings.numpy(), vectors)
    assert build_textcnn(20, 3, "non-static", embeddings=vectors, **TINY).get_layer(
        "embedding").trainable
    multi = build_textcnn(20, 3, "multichannel", embeddings=vectors, **TINY)
    assert not multi.get_layer("embedding_static").trainable
    assert multi.get_layer("embedding").trainable
    assert sum(isinstance(layer, keras.layers.Conv1D) for layer in multi.layers) == 3
    rand = build_textcnn(20, 3, "rand", **TINY)
    assert len(multi.trainable_weights) == len(rand.trainable_weights)


@pytest.mark.parametrize("kwargs, message", [
    ({"variant": "dynamic"}, "unknown variant 'dynamic'"),
    ({"variant": "static"}, "needs pretrained word vectors"),
    ({"variant": "rand", "embeddings": np.zeros((20, 6))}, "drop the word vectors"),
    ({"variant": "non-static", "embeddings": np.zeros((19, 6))}, r"expected \(20, dim\)"),
])
def test_bad_model_arguments_are_user_errors(kwargs, message) -> None:
    with pytest.raises(UserError, match=message):
        build_textcnn(20, 3, **kwargs)


def test_padding_embeds_to_zero_and_never_changes_the_output() -> None:
    assert MaskedEmbedding(5, 3)(np.array([[0]])).numpy().tolist() == [[[0, 0, 0]]]
    model = build_textcnn(20, 3, seed=1, **TINY)
    ids = np.array([[4, 7, 2, 0, 0], [5, 9, 11, 12, 3]], dtype="int32")
    short = model.predict(ids[:1, :3], verbose=0)
    padded = model.predict(np.pad(ids, ((0, 0), (0, 30))), verbose=0)
    np.testing.assert_allclose(padded[0], short[0], rtol=1e-6)
    np.testing.assert_allclose(padded[1], model.predict(ids[1:], verbose=0)[0], rtol=1e-6)


def test_sparse_adadelta_matches_dense_adadelta() -> None:
    rng = np.random.default_rng(0)
    table = rng.normal(size=(12, 4)).astype("float32")
    sparse_var, dense_var = keras.Variable(table), keras.Variable(table)
    sparse, dense = SparseAdadelta(1.0, 0.9, 1e-6), keras.optimizers.Adadelta(1.0, 0.9, 1e-6)
    sparse.build([sparse_var])
    dense.build([dense_var])
    # Rows 0-5 only, with repeats, so some rows skip steps and others add up.
    for rows in ([0, 1, 1], [2, 3], [0, 4, 0, 5], [3], [1, 2, 5, 5]):
        values = rng.normal(size=(len(rows), 4)).astype("float32")
        slices = tf.IndexedSlices(tf.constant(values), tf.constant(rows), tf.constant([12, 4]))
        sparse.apply_gradients([(slices, sparse_var)])
        dense.apply_gradients([(tf.convert_to_tensor(slices), dense_var)])
    np.testing.assert_allclose(sparse_var.numpy(), dense_var.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(sparse_var.numpy()[6:], table[6:])


def test_sparse_adadelta_dense_weights_match_keras_adadelta() -> None:
    rng = np.random.default_rng(1)
    start = rng.normal(size=(3, 5)).astype("float32")
    ours, theirs = keras.Variable(start), keras.Variable(start)
    sparse, dense = SparseAdadelta(1.0, 0.95, 1e-6), keras.optimizers.Adadelta(1.0, 0.95, 1e-6)
    for _ in range(4):
        gradient = tf.constant(rng.normal(size=(3, 5)).astype("float32"))
        sparse.apply_gradients([(gradient, ours)])
        dense.apply_gradients([(gradient, theirs)])
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(("variant", "widths"), [
    ("rand", (3, 4, 5)), ("multichannel", (3, 4, 5)),
    ("rand", (4, 1, 2)),  # unsorted, and a width of one
])
def test_training_model_computes_the_model_and_its_gradients(variant, widths) -> None:
    vectors = np.random.default_rng(2).normal(size=(20, 6)).astype("float32")
    model = build_textcnn(20, 3, variant, embeddings=None if variant == "rand" else vectors,
                          filter_widths=widths, seed=3, **TINY)
    fitted = training_model(model)
    assert {id(v) for v in fitted.trainable_variables} == {
        id(v) for v in model.trainable_variables}
    # One short sentence in a padded batch, one filling it, one of a single token.
    ids = tf.constant([[4, 7, 2, 0, 0, 0], [5, 9, 11, 12, 3, 8], [6, 0, 0, 0, 0, 0]])
    labels = tf.constant([0, 2, 1])
    gradients = []
    for net in (model, fitted):
        with tf.GradientTape() as tape:
            probabilities = net(ids, training=False)
            loss = keras.losses.sparse_categorical_crossentropy(labels, probabilities)
        gradients.append([tf.convert_to_tensor(g).numpy() for g in
                          tape.gradient(loss, model.trainable_variables)])
        np.testing.assert_allclose(probabilities, model(ids, training=False), rtol=1e-5)
    for ours, keras_graph in zip(gradients[1], gradients[0], strict=True):
        np.testing.assert_allclose(ours, keras_graph, rtol=1e-4, atol=1e-6)
    empty = np.zeros((2, 0), "int32")  # sentences without tokens: each filter's bias alone
    np.testing.assert_allclose(fitted(empty), model(empty), rtol=1e-5)


def test_training_model_keeps_other_activations_on_the_keras_graph() -> None:
    model = build_textcnn(20, 2, activation="tanh", **TINY)
    assert training_model(model) is model


def texts_frame() -> pd.DataFrame:
    good = ["a great film", "great acting , great plot", "loved it", "a fine great story"]
    bad = ["a dull film", "dull acting and a dull plot", "hated it", "awful , dull story"]
    return pd.DataFrame({"text": (good + bad) * 5, "label": (["pos"] * 4 + ["neg"] * 4) * 5})


def test_training_learns_a_toy_task_and_keeps_max_norm() -> None:
    data = prepare_text_data(texts_frame(), dev_fraction=0.0)
    model = build_textcnn(len(data.vocabulary), 2, seed=0, **TINY)
    compile_textcnn(model, steps_per_execution=2)
    train = data.splits["train"]
    history = model.fit(text_dataset(train, batch_size=8, shuffle=True, seed=0), epochs=15,
                        shuffle=False, verbose=0)  # the stream shuffles itself
    assert history.history["loss"][-1] < history.history["loss"][0] / 2
    kernel = model.get_layer("output").kernel.numpy()
    assert np.all(np.linalg.norm(kernel, axis=0) <= 3.0 + 1e-5)
    assert model.evaluate(text_dataset(train, batch_size=8), verbose=0)[1] == 1.0


def test_string_model_tokenizes_like_training_and_saves(tmp_path) -> None:
    data = prepare_text_data(texts_frame(), dev_fraction=0.0, tokenizer="kim")
    raw = ["A GREAT film!", "It's dull, (dull)?", "never seen words"]
    standardized = TextStandardization("kim")(tf.constant(raw)).numpy()
    assert [s.decode().split() for s in standardized] == tokenize(raw, "kim")
    model = build_textcnn(len(data.vocabulary), 2, seed=0, **TINY)
    strings = build_string_model(model, data.vocabulary)
    ids = data.vocabulary.encode(tokenize(raw, "kim"))
    expected = model.predict(ids, verbose=0)
    np.testing.assert_allclose(strings.predict(tf.constant(raw), verbose=0), expected,
                               rtol=1e-6)
    strings.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(loaded.predict(tf.constant(raw), verbose=0), expected,
                               rtol=1e-6)
