"""Kim (2014) CNN for sentence classification: rand, static, non-static and multichannel.

Two models share the same layers: ``build_textcnn`` takes token ids (the fast one to train,
fed by ``tlkit.data.text.text_dataset``) and ``build_string_model`` wraps it with the
tokenizer and vocabulary so the saved model takes raw strings. Training speed comes from
``SparseAdadelta``, which updates only the embedding rows a batch uses (and the other
weights with TensorFlow's fused Adadelta kernel), from batches padded to their own longest
sentence (the model's edge padding makes its outputs independent of how much padding a
batch has), and from ``training_model``, which fits the same layers through
``PooledConvolutions`` (the same numbers with less convolution work).

Example:
    >>> model = build_textcnn(vocab_size=100, num_classes=2, embedding_dim=8, seed=0)
    >>> compile_textcnn(model)
    >>> model.output_shape
    (None, 2)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tlkit.data.text import Vocabulary, get_tokenizer, standardize
from tlkit.errors import UserError
from tlkit.keras_internals import adadelta_accumulators, optimizer_variable_index
from tlkit.models.calibration import PROBABILITIES_LAYER, TEMPERATURE_LAYER, output_layers

VARIANTS = ("rand", "static", "non-static", "multichannel")


@dataclass(frozen=True)
class KimDefaults:
    """The paper's hyperparameters; recipes start from these.

    Example:
        >>> KIM.batch_size, KIM.learning_rate, KIM.filter_widths
        (50, 1.0, (3, 4, 5))
    """

    filter_widths: tuple[int, ...] = (3, 4, 5)
    feature_maps: int = 100
    activation: str = "relu"
    dropout: float = 0.5
    max_norm: float = 3.0  # l2 norm limit of each output unit's weights
    embedding_dim: int = 300
    # CNN-rand embeddings start U[-a, a]. Kim's code draws a = 0.25 (word2vec's spread); on
    # TREC that plateaus near 0.89 test accuracy here, while 0.05 (Keras's default) reaches
    # 0.91-0.92 in 10 epochs and stays there at 25 (seeds 1-3, this repository's benchmark).
    rand_scale: float = 0.05
    batch_size: int = 50
    epochs: int = 25
    optimizer: str = "adadelta"
    learning_rate: float = 1.0
    rho: float = 0.95
    epsilon: float = 1e-6
    dev_fraction: float = 0.1
    # Steps run per call from Python: fewer round trips, same updates.
    steps_per_execution: int = 16


KIM = KimDefaults()


@keras.saving.register_keras_serializable(package="tlkit")
class MaskedEmbedding(keras.layers.Embedding):
    """An Embedding whose padding id 0 always gives zeros, as Kim keeps that row at zero.

    Example:
        >>> MaskedEmbedding(10, 4)(np.array([[3, 0]]))[0, 1].numpy().tolist() == [0.0] * 4
        True
    """

    def call(self, inputs: Any) -> Any:
        # A sparse read of the table: reading all of it would make the optimizer's row
        # updates copy the whole table every step.
        outputs = tf.nn.embedding_lookup(_tf_variable(self.embeddings), inputs)
        keep = ops.cast(ops.not_equal(inputs, 0), self.compute_dtype)
        return ops.cast(outputs, self.compute_dtype) * ops.expand_dims(keep, -1)


@keras.saving.register_keras_serializable(package="tlkit")
class TextStandardization(keras.layers.Layer):
    """Raw strings -> space-separated tokens with a ``tlkit.data.text`` tokenizer.

    Example:
        >>> TextStandardization("kim")(tf.constant(["It's fine!"])).numpy()
        array([b"it 's fine !"], dtype=object)
    """

    def __init__(self, tokenizer: str = "kim", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        get_tokenizer(tokenizer)
        self.tokenizer = tokenizer
        self.supports_jit = False  # string ops have no XLA kernels

    def call(self, inputs: Any) -> Any:
        return standardize(inputs, self.tokenizer)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "tokenizer": self.tokenizer}


@keras.saving.register_keras_serializable(package="tlkit")
class SparseAdadelta(keras.optimizers.Adadelta):
    """Adadelta that updates only the embedding rows a batch used, with the dense result.

    An embedding's gradient arrives as ``tf.IndexedSlices`` (the rows looked up). Dense
    Adadelta would rewrite the whole table and both accumulators every step; for a row with
    zero gradient that step leaves the weights unchanged and multiplies both accumulators by
    ``rho``. So this keeps, per row, the step it was last updated, and when the row is next
    used first decays its accumulators by ``rho`` to the power of the steps missed: the same
    numbers as dense Adadelta at the cost of the batch's rows. Other gradients take the
    ordinary dense path.

    Example:
        >>> optimizer = SparseAdadelta(learning_rate=1.0, rho=0.95, epsilon=1e-6)
    """

    def build(self, var_list: list[Any]) -> None:
        if self.built:
            return
        super().build(var_list)
        self._last_steps = [
            self.add_variable(shape=(v.shape[0] if len(v.shape) else 1,), dtype="float32",
                              initializer="zeros", name="last_step")
            for v in var_list
        ]

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        # Gathers go to the tf.Variables themselves (a sparse read): reading a whole Keras
        # variable first would make the scatters below copy the full table.
        acc_grad, acc_delta = map(_tf_variable, adadelta_accumulators(self, variable))
        if not isinstance(gradient, tf.IndexedSlices):
            # TensorFlow's fused Adadelta kernel: Keras's formula in one pass over the
            # weights and accumulators rather than a dozen separate operations.
            dtype = variable.dtype
            tf.raw_ops.ResourceApplyAdadelta(
                var=_tf_variable(variable).handle, accum=acc_grad.handle,
                accum_update=acc_delta.handle, lr=tf.cast(learning_rate, dtype),
                rho=tf.cast(self.rho, dtype), epsilon=tf.cast(self.epsilon, dtype),
                grad=tf.cast(gradient, dtype))
            return
        last_step = _tf_variable(self._last_steps[optimizer_variable_index(self, variable)])
        rows, position = tf.unique(gradient.indices)
        # A row looked up several times in the batch gets the sum of its gradients.
        grad = tf.math.unsorted_segment_sum(tf.cast(gradient.values, variable.dtype), position,
                                            tf.shape(rows)[0])
        step = tf.cast(self.iterations + 1, "float32")
        missed = step - 1.0 - tf.gather(last_step, rows)
        decay = tf.expand_dims(tf.cast(tf.pow(self.rho, missed), variable.dtype), -1)
        new_acc_grad = (self.rho * decay * tf.gather(acc_grad, rows)
                        + (1 - self.rho) * tf.square(grad))
        old_acc_delta = decay * tf.gather(acc_delta, rows)
        delta = (-tf.sqrt(old_acc_delta + self.epsilon) / tf.sqrt(new_acc_grad + self.epsilon)
                 * grad)
        new_acc_delta = self.rho * old_acc_delta + (1 - self.rho) * tf.square(delta)
        acc_grad.scatter_update(tf.IndexedSlices(new_acc_grad, rows))
        acc_delta.scatter_update(tf.IndexedSlices(new_acc_delta, rows))
        last_step.scatter_update(tf.IndexedSlices(tf.fill(tf.shape(rows), step), rows))
        _tf_variable(variable).scatter_add(
            tf.IndexedSlices(tf.cast(learning_rate, variable.dtype) * delta, rows))


def _tf_variable(variable: Any) -> tf.Variable:
    return variable.value if isinstance(variable, keras.Variable) else variable


def kim_optimizer(learning_rate: float = KIM.learning_rate, rho: float = KIM.rho,
                  epsilon: float = KIM.epsilon) -> SparseAdadelta:
    """Kim's Adadelta (learning rate 1.0, rho 0.95, epsilon 1e-6), sparse for embeddings.

    Example:
        >>> kim_optimizer().rho
        0.95
    """
    return SparseAdadelta(learning_rate=learning_rate, rho=rho, epsilon=epsilon)


def build_textcnn(vocab_size: int, num_classes: int, variant: str = "rand", *,
                  embeddings: np.ndarray | None = None,
                  embedding_dim: int = KIM.embedding_dim,
                  filter_widths: Sequence[int] = KIM.filter_widths,
                  feature_maps: int = KIM.feature_maps, activation: str = KIM.activation,
                  dropout: float = KIM.dropout, max_norm: float | None = KIM.max_norm,
                  rand_scale: float = KIM.rand_scale, seed: int | None = None,
                  name: str = "textcnn", output_activation: str = "softmax") -> keras.Model:
    """Kim's CNN on token ids ``(batch, length)`` (0 = padding) -> class probabilities.

    Embeddings -> convolutions of each width in ``filter_widths`` with ``feature_maps``
    maps and ReLU -> max over time -> concatenation -> dropout -> Dense logits whose
    per-class weight vectors are kept within l2 norm ``max_norm`` -> temperature ->
    ``output_activation`` (``tlkit.models.calibration.output_layers``). ``variant``: ``rand``
    (random embeddings, trained), ``static`` (``embeddings`` frozen), ``non-static``
    (``embeddings`` fine-tuned) or ``multichannel`` (one frozen and one fine-tuned copy).

    For width-w filters each sentence gets w - 1 zero vectors before it and w after it. As
    with Kim's padding (the widest width - 1 on both sides), every filter sees every word at
    every offset; every filter also sees one all-padding window, so further padding (of a
    batch, or to the string model's fixed length) cannot change a max. Padding per width
    rather than to the widest saves the narrower filters' all-padding windows, which add
    nothing to a max (about 12% of the convolution work on TREC).

    Multichannel: the paper applies each filter to both channels and adds the results.
    Convolution is linear, so ``conv(static) + conv(tuned) = conv(static + tuned)`` (the bias
    added once): we add the two embedding channels and run one shared set of filters, the
    paper's model at the cost of one channel. (A Conv2D over two stacked channels would
    instead learn separate weights per channel, which is not sharing.)

    Example:
        >>> vectors = np.random.rand(50, 16).astype("float32")
        >>> build_textcnn(50, 3, "multichannel", embeddings=vectors).count_params() > 0
        True
    """
    embedding_dim = _checked_embedding_dim(vocab_size, num_classes, variant, embeddings,
                                           embedding_dim, filter_widths)
    ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    embedded = _embed(ids, vocab_size, variant, embeddings, embedding_dim,
                      keras.initializers.RandomUniform(-rand_scale, rand_scale,
                                                       seed=_offset(seed, 0)))
    features = _max_pooled_features(embedded, filter_widths, feature_maps, activation, seed)
    features = keras.layers.Dropout(dropout, seed=_offset(seed, 100), name="dropout")(features)
    constraint = None if max_norm is None else keras.constraints.MaxNorm(max_norm, axis=0)
    outputs = output_layers(
        features, num_classes, output_activation, name="output", kernel_constraint=constraint,
        kernel_initializer=keras.initializers.GlorotUniform(seed=_offset(seed, 101)))
    return keras.Model(ids, outputs, name=name)


def _offset(seed: int | None, offset: int) -> int | None:
    """One seed per initializer, all from the model's seed (None stays unseeded)."""
    return None if seed is None else seed + offset


def _checked_embedding_dim(vocab_size: int, num_classes: int, variant: str,
                           embeddings: np.ndarray | None, embedding_dim: int,
                           filter_widths: Sequence[int]) -> int:
    """Refuse arguments that do not make a model; the embedding size, from the vectors if any."""
    if variant not in VARIANTS:
        raise UserError(f"unknown variant '{variant}'; choose one of: {', '.join(VARIANTS)}")
    if variant == "rand" and embeddings is not None:
        raise UserError("variant 'rand' starts from random embeddings; drop the word vectors "
                        "or choose static, non-static or multichannel")
    if variant != "rand":
        if embeddings is None:
            raise UserError(f"variant '{variant}' needs pretrained word vectors; pass "
                            "--vectors or choose variant rand")
        if embeddings.ndim != 2 or embeddings.shape[0] != vocab_size:
            raise UserError(f"word-vector matrix has shape {embeddings.shape}, expected "
                            f"({vocab_size}, dim) for a vocabulary of {vocab_size}")
        embedding_dim = int(embeddings.shape[1])
    if not filter_widths or min(filter_widths) < 1:
        raise UserError(f"filter widths must be positive integers, got {list(filter_widths)}")
    if len(set(filter_widths)) != len(filter_widths):
        raise UserError(f"filter widths {list(filter_widths)} name a width twice; list each "
                        "width once and raise feature_maps for more filters of it")
    if num_classes < 2:
        raise UserError(f"a classifier needs at least 2 classes, got {num_classes}")
    return embedding_dim


def _embed(ids: Any, vocab_size: int, variant: str, embeddings: np.ndarray | None,
           embedding_dim: int, initializer: Any) -> Any:
    """The variant's embedding of ``ids``: one table, or multichannel's two tables added."""

    def embedding(layer_name: str, trainable: bool) -> Any:
        layer = MaskedEmbedding(vocab_size, embedding_dim, name=layer_name, trainable=trainable,
                                embeddings_initializer=initializer)
        output = layer(ids)
        if embeddings is not None:
            layer.embeddings.assign(embeddings.astype("float32"))
        return output

    if variant == "multichannel":
        return keras.layers.Add(name="channels")(
            [embedding("embedding_static", False), embedding("embedding", True)])
    return embedding("embedding", variant != "static")


def _max_pooled_features(embedded: Any, filter_widths: Sequence[int], feature_maps: int,
                         activation: str, seed: int | None) -> Any:
    """Edge padding, one convolution per width, max over time, concatenated."""
    pooled = []
    for i, width in enumerate(filter_widths):
        padded = keras.layers.ZeroPadding1D((width - 1, width), name=f"edge_padding_{width}")(
            embedded)
        conv = keras.layers.Conv1D(
            feature_maps, width, activation=activation, name=f"conv_{width}",
            kernel_initializer=keras.initializers.GlorotUniform(seed=_offset(seed, 1 + i)))(padded)
        pooled.append(keras.layers.GlobalMaxPooling1D(name=f"pool_{width}")(conv))
    return pooled[0] if len(pooled) == 1 else keras.layers.Concatenate(name="features")(pooled)


@keras.saving.register_keras_serializable(package="tlkit")
class PooledConvolutions(keras.layers.Layer):
    """Training's path through a Kim CNN's convolutions and max over time, on shared weights.

    It computes what the model's ``ZeroPadding1D -> Conv1D -> GlobalMaxPooling1D`` branches
    compute (concatenated, ReLU filters) as three matrix products over the sentence's own
    positions (``_offset_windows``), where the convolutions would run one narrow product per
    width over padded positions. The window that holds only padding gives each filter its
    bias, so ``relu(relu(max) + bias)`` stands for the max over it.

    Example:
        >>> model = build_textcnn(vocab_size=20, num_classes=2, embedding_dim=4, seed=0)
        >>> convolutions = [model.get_layer(f"conv_{width}") for width in (3, 4, 5)]
        >>> PooledConvolutions(convolutions)(np.zeros((2, 6, 4), "float32")).shape
        TensorShape([2, 300])
    """

    def __init__(self, convolutions: Sequence[keras.layers.Conv1D], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.convolutions = list(convolutions)
        # Narrowest first: each filter offset's block of columns is then a suffix of them.
        self._by_width = sorted(range(len(self.convolutions)),
                                key=lambda i: self.convolutions[i].kernel_size[0])
        self.built = True  # the weights are the convolutions'

    def call(self, embedded: Any) -> Any:
        ordered = [self.convolutions[i] for i in self._by_width]
        kernels = [ops.cast(conv.kernel, embedded.dtype) for conv in ordered]
        biases = ops.concatenate([ops.cast(conv.bias, embedded.dtype) for conv in ordered], 0)
        window_max = tf.reduce_max(_offset_windows(embedded, *kernels), axis=1)
        pooled = tf.nn.relu(tf.nn.relu(window_max) + biases)
        columns = dict(zip(self._by_width, tf.split(pooled, [conv.filters for conv in ordered],
                                                     axis=-1), strict=True))
        return ops.concatenate([columns[i] for i in range(len(columns))], axis=-1)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return (input_shape[0], sum(conv.filters for conv in self.convolutions))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "convolutions": [
            keras.saving.serialize_keras_object(conv) for conv in self.convolutions]}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PooledConvolutions:
        convolutions = [keras.saving.deserialize_keras_object(conv)
                        for conv in config.pop("convolutions")]
        return cls(convolutions, **config)


@tf.custom_gradient
def _offset_windows(embedded: tf.Tensor, *kernels: tf.Tensor) -> tuple[tf.Tensor, Any]:
    """Every filter's windows (without bias) in one frame padded by the widest width - 1.

    ``kernels`` come narrowest first. One product of the embeddings with every kernel row
    (offset j of each filter at least j + 1 wide) gives each position's contribution to
    each window; a window is the sum of its offsets' contributions, shifted into place.
    Narrower filters get extra windows that hold only padding (value 0), which the
    caller's ``relu(max)`` covers anyway. Both gradients are single products too, over real
    positions only.
    """
    widest = max(kernel.shape[0] for kernel in kernels)
    # (offset, kernel index) of each block of columns, offset-major.
    rows = [(j, i) for j in range(widest) for i, k in enumerate(kernels) if k.shape[0] > j]
    block_sizes = [sum(kernels[i].shape[2] for o, i in rows if o == j) for j in range(widest)]
    stacked = tf.concat([kernels[i][j] for j, i in rows], axis=-1)
    depth, total = embedded.shape[-1], block_sizes[0]
    flat = tf.reshape(embedded, [-1, depth])
    batch, length = tf.shape(embedded)[0], tf.shape(embedded)[1]
    contributions = tf.reshape(tf.matmul(flat, stacked), [batch, length, stacked.shape[-1]])
    windows = tf.add_n([
        tf.pad(block, [[0, 0], [widest - 1 - j, j], [total - size, 0]])
        for j, (block, size) in enumerate(zip(
            tf.split(contributions, block_sizes, axis=-1), block_sizes, strict=True))])

    def gradient(upstream: tf.Tensor) -> tuple[tf.Tensor, ...]:
        # A position's share of each window it sits in, at the offset it sits at.
        shares = tf.reshape(tf.concat([
            upstream[:, widest - 1 - j:widest - 1 - j + length, total - size:]
            for j, size in enumerate(block_sizes)], axis=-1), [-1, stacked.shape[-1]])
        d_embedded = tf.reshape(tf.matmul(shares, stacked, transpose_b=True), tf.shape(embedded))
        d_rows = dict(zip(rows, tf.split(tf.matmul(flat, shares, transpose_a=True),
                                         [kernels[i].shape[2] for j, i in rows], axis=-1),
                          strict=True))
        return (d_embedded, *[tf.stack([d_rows[(j, i)] for j in range(k.shape[0])])
                              for i, k in enumerate(kernels)])

    return windows, gradient


def training_model(model: keras.Model) -> keras.Model:
    """The model to fit: ``model``'s layers and weights, with ``PooledConvolutions``.

    Training it trains ``model`` (the weights are shared); ``model`` stays the one to save,
    explain and export. Filters other than ReLU keep ``model`` itself.

    Example:
        >>> model = build_textcnn(vocab_size=20, num_classes=2, embedding_dim=4, seed=0)
        >>> ids = np.array([[3, 4, 5, 0]])
        >>> np.allclose(training_model(model)(ids), model(ids))
        True
    """
    convolutions = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv1D)]
    if any(getattr(conv.activation, "__name__", "") != "relu" for conv in convolutions):
        return model
    ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    names = {layer.name for layer in model.layers}
    if "channels" in names:  # multichannel: the frozen and tuned tables, added
        embedded = model.get_layer("channels")(
            [model.get_layer("embedding_static")(ids), model.get_layer("embedding")(ids)])
    else:
        embedded = model.get_layer("embedding")(ids)
    features = PooledConvolutions(convolutions, name="pooled_convolutions")(embedded)
    outputs = model.get_layer("output")(model.get_layer("dropout")(features))
    if names >= {TEMPERATURE_LAYER, PROBABILITIES_LAYER}:  # older models end in the Dense
        outputs = model.get_layer(PROBABILITIES_LAYER)(model.get_layer(TEMPERATURE_LAYER)(outputs))
    return keras.Model(ids, outputs, name=f"{model.name}_training")


def compile_textcnn(model: keras.Model, optimizer: keras.optimizers.Optimizer | None = None,
                    steps_per_execution: int = KIM.steps_per_execution,
                    loss: Any = "sparse_categorical_crossentropy",
                    metrics: list[Any] | None = None) -> None:
    """Compile for training on ids with Kim's optimizer (``kim_optimizer()`` by default);
    ``loss`` and ``metrics`` (default ``["accuracy"]``) are the head's.

    XLA stays off: on this repository's 2-core CPU a jit-compiled training step took about
    twice as long as TensorFlow's own kernels even at one fixed length (XLA's CPU
    convolutions are slower than oneDNN's), and batches vary in length, so XLA would also
    compile anew for every length (docs/textcnn_speed.md).

    Example:
        >>> model = build_textcnn(vocab_size=100, num_classes=2, embedding_dim=8)
        >>> compile_textcnn(model, kim_optimizer(learning_rate=0.5))
        >>> model.optimizer.learning_rate.numpy().item()
        0.5
    """
    model.compile(optimizer=optimizer or kim_optimizer(),
                  loss=loss, metrics=metrics or ["accuracy"],
                  jit_compile=False, steps_per_execution=steps_per_execution)


def build_string_model(model: keras.Model, vocabulary: Vocabulary,
                       name: str = "textcnn_strings") -> keras.Model:
    """Wrap an id model so it takes raw strings: tokenizer and vocabulary inside, for saving.

    Uses the same tokenizer rules as training (``TextStandardization``) and a
    ``TextVectorization`` layer holding the vocabulary; texts are cut to the vocabulary's
    ``max_length``. Loading the saved model needs ``import tlkit.models.textcnn``.

    Example:
        >>> import pandas as pd
        >>> from tlkit.data.text import prepare_text_data
        >>> texts = pd.DataFrame({"text": ["a funny film", "a dull film"] * 4,
        ...                       "label": ["pos", "neg"] * 4})
        >>> data = prepare_text_data(texts, dev_fraction=0.0)
        >>> model = build_textcnn(len(data.vocabulary), 2, embedding_dim=8, seed=0)
        >>> strings = build_string_model(model, data.vocabulary)
        >>> strings.predict(tf.constant(["a gripping , funny film"]), verbose=0).shape
        (1, 2)
    """
    texts = keras.Input(shape=(), dtype="string", name="text")
    tokens = TextStandardization(vocabulary.tokenizer, name="standardize")(texts)
    ids = keras.layers.TextVectorization(
        standardize=None, split="whitespace", vocabulary=vocabulary.tokens[2:],
        output_mode="int", output_sequence_length=vocabulary.max_length,
        name="vectorize")(tokens)
    return keras.Model(texts, model(ids), name=name)
