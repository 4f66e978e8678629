"""Explaining a Kim (2014) text CNN: which n-grams won its max-pools, and token saliency.

Kim's CNN is linear after the max-over-time pooling: a class's logit is the Dense bias plus,
for every filter, its pooled activation times that filter's weight for the class (dropout is
off at inference). A filter's pooled activation is the value at one window of the sentence,
the n-gram that won the pooling, so each n-gram's contribution to the logit is exact, not an
approximation: the contributions of all filters plus the bias give back the logit.

A filter whose winning window holds only padding responds the same to every sentence, like
the bias; such windows appear in ``filter_ngrams`` with an empty n-gram and are left out of
the per-sentence and per-class rankings. Tokens are shown as the model saw them: a word the
vocabulary lacks is ``[UNK]``.

All functions take a string-in text model (``build_string_model``, a text run's
``model.keras``), a loaded run, or a run folder.

Example:
    >>> table = top_ngrams("runs/trec", ["How far is the moon ?"], top=3)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from tlkit.errors import UserError
from tlkit.explain.saliency import class_indices

BATCH_SIZE = 256


@dataclass
class KimParts:
    """A string-in Kim CNN taken apart: tokenizer layers, a probe model and the Dense layer.

    ``probe`` maps token ids to (embedded sentence, each convolution's activations, pooled
    features, the model's own outputs); ``convolutions`` holds (name, width, left padding)
    in the order their pooled features are concatenated.

    Example:
        >>> from tlkit.data.text import build_vocabulary
        >>> from tlkit.models.textcnn import build_string_model, build_textcnn
        >>> vocab = build_vocabulary([["a", "fine", "film"]], "kim")
        >>> parts = kim_parts(build_string_model(build_textcnn(len(vocab), 2, filter_widths=(2, 3),
        ...                                                    feature_maps=4), vocab))
        >>> parts.convolutions, parts.kernel.shape  # 2 widths x 4 maps -> 2 classes
        ([('conv_2', 2, 1), ('conv_3', 3, 2)], (8, 2))
    """

    standardize: Any
    vectorize: Any
    vocabulary: list[str]
    probe: Any
    convolutions: list[tuple[str, int, int]]
    kernel: np.ndarray
    bias: np.ndarray
    class_names: list[str]


def kim_parts(run_or_model: Any, class_names: Sequence[str] | None = None) -> KimParts:
    """Take a text run (folder or loaded) or a string-in Kim CNN apart for explanation.

    Example:
        >>> from tlkit.backbones import build_tiny_cnn
        >>> kim_parts(build_tiny_cnn(include_top=True))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        tlkit.errors.UserError: model 'tiny_cnn' is not a tlkit text CNN taking strings; ...
    """
    import keras

    from tlkit.models.calibration import TEMPERATURE_LAYER, find_layer
    from tlkit.models.textcnn import TextStandardization

    model, names = _model_and_classes(run_or_model, class_names)
    layers = {type(layer): layer for layer in model.layers}
    ids_models = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if (TextStandardization not in layers or keras.layers.TextVectorization not in layers
            or len(ids_models) != 1):
        raise UserError(f"model '{model.name}' is not a tlkit text CNN taking strings; "
                        "pass a text run folder")
    ids_model = ids_models[0]
    convolutions = [layer for layer in ids_model.layers if isinstance(layer, keras.layers.Conv1D)]
    pads = {id(layer.output): layer for layer in ids_model.layers
            if isinstance(layer, keras.layers.ZeroPadding1D)}
    first = pads.get(id(convolutions[0].input), convolutions[0])
    # the logits' Dense: the last layer, or before the temperature and softmax of newer heads
    dense = ids_model.get_layer("output")
    # The model's own outputs too: its probabilities are whatever its head computes (softmax
    # over classes, or a sigmoid per label for a multi-label run), never recomputed here.
    probe = keras.Model(ids_model.inputs[0], [first.input, *[conv.output for conv in convolutions],
                                              dense.input, ids_model.outputs[0]])
    # In the calibrated model's units: its temperature divides the logits (1 when none)
    scaling = find_layer(ids_model, TEMPERATURE_LAYER)
    scale = np.asarray(1.0 if scaling is None else scaling.scale, "float64")
    kernel, bias = (np.asarray(w, "float64") * scale for w in dense.get_weights())
    return KimParts(
        standardize=layers[TextStandardization], vectorize=layers[keras.layers.TextVectorization],
        vocabulary=[str(token) for token in
                    layers[keras.layers.TextVectorization].get_vocabulary()],
        probe=probe,
        convolutions=[(conv.name, conv.kernel_size[0],
                       pads[id(conv.input)].padding[0] if id(conv.input) in pads else 0)
                      for conv in convolutions],
        kernel=kernel, bias=bias,
        class_names=names or [str(i) for i in range(kernel.shape[1])])


def _model_and_classes(run_or_model: Any, class_names: Sequence[str] | None
                       ) -> tuple[Any, list[str] | None]:
    """A run folder, a loaded run (``.model``, ``.class_names``) or a bare model."""
    from pathlib import Path

    if isinstance(run_or_model, str | Path):
        from tlkit.models.saved import load_run

        run_or_model = load_run(run_or_model)
    if hasattr(run_or_model, "class_names") and hasattr(run_or_model, "model"):
        return run_or_model.model, list(class_names or run_or_model.class_names)
    return run_or_model, list(class_names) if class_names else None


@dataclass
class _Batch:
    """One batch of sentences through the probe."""

    tokens: list[list[str]]
    ids: np.ndarray
    embedded: np.ndarray
    activations: list[np.ndarray]
    logits: np.ndarray
    probabilities: np.ndarray  # the model's own outputs
    classes: np.ndarray


def _run_batch(parts: KimParts, texts: Sequence[str],
               class_index: int | Sequence[int] | None) -> _Batch:
    import tensorflow as tf

    ids = parts.vectorize(parts.standardize(tf.constant(list(texts), dtype=tf.string))).numpy()
    embedded, *activations, features, outputs = (np.asarray(a) for a in
                                                  parts.probe(ids, training=False))
    pooled = np.concatenate([a.max(axis=1) for a in activations], axis=1)
    if not np.allclose(pooled, features, atol=1e-5):
        raise UserError("the text model's pooled features are not its convolutions' maxima "
                        "in order; it is not a Kim CNN as tlkit builds it")
    logits = features.astype("float64") @ parts.kernel + parts.bias
    tokens = [[parts.vocabulary[i] for i in row if i != 0] for row in ids]
    return _Batch(tokens, ids, embedded, activations, logits, outputs,
                  class_indices(logits, class_index))


def _batches(parts: KimParts, texts: Sequence[str], class_index: int | Sequence[int] | None
             ) -> Any:
    """(offset, batch) over ``texts`` in slices of BATCH_SIZE."""
    texts = list(texts)
    if not texts:
        raise UserError("no texts to explain")
    per_text = None if class_index is None or np.ndim(class_index) == 0 else \
        np.asarray(class_index)
    for start in range(0, len(texts), BATCH_SIZE):
        chosen = class_index if per_text is None else per_text[start:start + BATCH_SIZE]
        yield start, _run_batch(parts, texts[start:start + BATCH_SIZE], chosen)


def _winners(parts: KimParts, batch: _Batch, offset: int) -> pd.DataFrame:
    """One row per (sentence, filter that fired): the winning window and its contribution."""
    frames = []
    row_of_feature = 0
    for (name, width, left), maps in zip(parts.convolutions, batch.activations, strict=True):
        value, position = maps.max(axis=1), maps.argmax(axis=1)
        sentence, filt = np.nonzero(value > 0)
        start = position[sentence, filt] - left
        weights = parts.kernel[row_of_feature + filt, batch.classes[sentence]]
        frames.append(pd.DataFrame({
            "sentence": offset + sentence, "filter": [f"{name}:{f}" for f in filt],
            "width": width, "start": start,
            "ngram": [" ".join(batch.tokens[s][max(b, 0):b + width])
                      for s, b in zip(sentence, start, strict=True)],
            "activation": value[sentence, filt], "contribution": value[sentence, filt] * weights}))
        row_of_feature += maps.shape[2]
    return pd.concat(frames, ignore_index=True)


def filter_ngrams(run_or_model: Any, texts: Sequence[str],
                  class_index: int | Sequence[int] | None = None,
                  class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Every filter that fires on each text: its winning n-gram and contribution to a logit.

    Columns: ``sentence`` (position in ``texts``), ``class`` (explained: the predicted one,
    or ``class_index``), ``filter`` (``conv_3:17``), ``width``, ``start`` (token position of
    the window, negative where it starts in the left padding), ``ngram`` (the window's
    tokens, empty for padding only), ``activation`` and ``contribution`` (activation times
    the filter's weight for the class). Per sentence, contributions plus the bias sum to the
    class's logit.

    Example:
        >>> from tlkit.data.text import build_vocabulary
        >>> from tlkit.models.textcnn import build_string_model, build_textcnn
        >>> vocab = build_vocabulary([["a", "fine", "film"]], "kim")
        >>> model = build_string_model(build_textcnn(len(vocab), 2, embedding_dim=8,
        ...                                          feature_maps=4, seed=0), vocab)
        >>> list(filter_ngrams(model, ["a fine film"]).columns)
        ['sentence', 'class', 'filter', 'width', 'start', 'ngram', 'activation', 'contribution']
    """
    parts = kim_parts(run_or_model, class_names)
    frames = []
    for offset, batch in _batches(parts, texts, class_index):
        table = _winners(parts, batch, offset)
        table.insert(1, "class", [parts.class_names[c] for c in
                                  batch.classes[table["sentence"] - offset]])
        frames.append(table)
    return pd.concat(frames, ignore_index=True)


def explain_sentences(run_or_model: Any, texts: Sequence[str], top: int = 5,
                      class_index: int | Sequence[int] | None = None,
                      class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """The ``top`` n-grams per text by their summed contribution to the explained class.

    Columns: ``sentence``, ``text``, ``class``, ``probability``, ``rank``, ``ngram``,
    ``contribution`` (summed over the filters it won) and ``filters`` (how many it won).

    Example:
        >>> from tlkit.data.text import build_vocabulary
        >>> from tlkit.models.textcnn import build_string_model, build_textcnn
        >>> vocab = build_vocabulary([["a", "fine", "film"]], "kim")
        >>> model = build_string_model(build_textcnn(len(vocab), 2, embedding_dim=8,
        ...                                          feature_maps=4, seed=0), vocab)
        >>> table = explain_sentences(model, ["a fine film"], top=2, class_index=1)
        >>> table[["text", "class", "rank"]].values.tolist()
        [['a fine film', '1', 1], ['a fine film', '1', 2]]
    """
    parts = kim_parts(run_or_model, class_names)
    frames = []
    for offset, batch in _batches(parts, texts, class_index):
        won = _winners(parts, batch, offset)
        won = won[won["ngram"] != ""]
        summed = (won.groupby(["sentence", "ngram"], as_index=False)
                  .agg(contribution=("contribution", "sum"), filters=("filter", "size"))
                  .sort_values(["sentence", "contribution"], ascending=[True, False]))
        summed = summed.groupby("sentence").head(top)
        local = summed["sentence"] - offset
        summed.insert(1, "text", [texts[s] for s in summed["sentence"]])
        summed.insert(2, "class", [parts.class_names[c] for c in batch.classes[local]])
        summed.insert(3, "probability", batch.probabilities[local, batch.classes[local]])
        summed.insert(4, "rank", summed.groupby("sentence").cumcount() + 1)
        frames.append(summed)
    return pd.concat(frames, ignore_index=True)


def top_ngrams(run_or_model: Any, texts: Sequence[str], top: int = 10,
               class_names: Sequence[str] | None = None, thresholds: Any = None
               ) -> pd.DataFrame:
    """Over a dataset, the ``top`` n-grams per predicted class by summed contribution.

    Each text counts toward the class the model predicts for it; with ``thresholds`` (one
    per class; a multi-label run's own, read from the run when not given) toward every label
    of its predicted set (``probabilities >= thresholds``), with its contributions to that
    label's logit. Columns: ``class``, ``rank``, ``ngram``, ``contribution`` (summed over
    texts and filters), ``texts`` (how many texts it won a filter in) and ``mean``
    (contribution per such text).

    Example:
        >>> from tlkit.data.text import build_vocabulary
        >>> from tlkit.models.textcnn import build_string_model, build_textcnn
        >>> vocab = build_vocabulary([["a", "fine", "film"]], "kim")
        >>> model = build_string_model(build_textcnn(len(vocab), 2, embedding_dim=8,
        ...                                          feature_maps=4, seed=0), vocab)
        >>> list(top_ngrams(model, ["a fine film", "a dull film"], top=1).columns)
        ['class', 'rank', 'ngram', 'contribution', 'texts', 'mean']
    """
    limits = _run_thresholds(run_or_model) if thresholds is None else thresholds
    parts = kim_parts(run_or_model, class_names)
    per_text = []
    for offset, batch in _batches(parts, texts, None):
        won = _counted_winners(parts, batch, offset, limits)
        won = won[won["ngram"] != ""]
        per_text.append(won.groupby(["class", "ngram", "sentence"], as_index=False)
                        ["contribution"].sum())
    table = (pd.concat(per_text).groupby(["class", "ngram"], as_index=False)
             .agg(contribution=("contribution", "sum"), texts=("sentence", "size")))
    table["mean"] = table["contribution"] / table["texts"]
    table = table.sort_values(["class", "contribution"], ascending=[True, False])
    table = table.groupby("class").head(top).reset_index(drop=True)
    table.insert(1, "rank", table.groupby("class").cumcount() + 1)
    table["class"] = [parts.class_names[c] for c in table["class"]]
    return table


def _run_thresholds(run_or_model: Any) -> np.ndarray | None:
    """A multi-label run's thresholds (None for a single-label run or a bare model)."""
    from pathlib import Path

    if isinstance(run_or_model, str | Path):
        from tlkit.runs import read_run

        run_or_model = read_run(run_or_model)
    if not hasattr(run_or_model, "kind") or not hasattr(run_or_model, "metrics"):
        return None
    from tlkit.tasks import task_of

    return task_of(run_or_model).thresholds(run_or_model)


def _counted_winners(parts: KimParts, batch: _Batch, offset: int, limits: Any
                     ) -> pd.DataFrame:
    """``_winners`` with a ``class`` column: each text's predicted class, or with ``limits``
    one block per label for the texts whose predicted set holds it."""
    if limits is None:
        won = _winners(parts, batch, offset)
        won.insert(1, "class", batch.classes[won["sentence"] - offset])
        return won
    from tlkit.evaluation.multilabel import apply_thresholds

    chosen = apply_thresholds(batch.probabilities, limits)
    frames = []
    for label in range(chosen.shape[1]):
        labelled = replace(batch, classes=np.full(len(batch.ids), label))
        won = _winners(parts, labelled, offset)
        won = won[chosen[won["sentence"] - offset, label] == 1]
        won.insert(1, "class", label)
        frames.append(won)
    return pd.concat(frames, ignore_index=True)


def token_saliency(run_or_model: Any, texts: Sequence[str],
                   class_index: int | Sequence[int] | None = None,
                   class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Gradient x embedding per token: the l2 norm of their product, summing to 1 per text.

    Columns: ``sentence``, ``text``, ``class``, ``probability``, ``position``, ``token``,
    ``saliency``. A second view beside the n-grams: it spreads credit over every token the
    winning windows touch, weighted by how much the logit moves with each one.

    Example:
        >>> from tlkit.data.text import build_vocabulary
        >>> from tlkit.models.textcnn import build_string_model, build_textcnn
        >>> vocab = build_vocabulary([["a", "fine", "film"]], "kim")
        >>> model = build_string_model(build_textcnn(len(vocab), 2, embedding_dim=8,
        ...                                          feature_maps=4, seed=0), vocab)
        >>> table = token_saliency(model, ["a great film"])  # "great" is not in the vocabulary
        >>> table["token"].tolist(), round(float(table["saliency"].sum()), 6)
        (['a', '[UNK]', 'film'], 1.0)
    """
    parts = kim_parts(run_or_model, class_names)
    rows = []
    for offset, batch in _batches(parts, texts, class_index):
        gradients = _embedding_gradients(parts, batch)
        norms = np.linalg.norm(gradients * batch.embedded, axis=-1)
        for i, tokens in enumerate(batch.tokens):
            weights = norms[i, :len(tokens)]
            weights = weights / weights.sum() if weights.sum() > 0 else \
                np.full(len(tokens), 1.0 / max(len(tokens), 1))
            chosen = batch.classes[i]
            rows += [{"sentence": offset + i, "text": texts[offset + i],
                      "class": parts.class_names[chosen],
                      "probability": batch.probabilities[i, chosen], "position": position,
                      "token": token, "saliency": float(weight)}
                     for position, (token, weight) in enumerate(zip(tokens, weights,
                                                                    strict=True))]
    return pd.DataFrame(rows)


def _embedding_gradients(parts: KimParts, batch: _Batch) -> np.ndarray:
    """d logit(class) / d embedded tokens, ``(n, length, dim)``."""
    import tensorflow as tf

    with tf.GradientTape() as tape:
        embedded, *_, features, _ = parts.probe(batch.ids, training=False)
        logits = tf.matmul(tf.cast(features, "float64"), parts.kernel) + parts.bias
        chosen = tf.gather(logits, tf.constant(batch.classes, "int32"), axis=1, batch_dims=1)
    return tape.gradient(chosen, embedded).numpy()
