"""What a head trains with, from the run's task: its loss (weighted per label when asked)
and the metric its monitor reads.

A single-label head is softmax + sparse categorical cross-entropy, and ``balanced`` class
weights go to Keras's ``class_weight`` (one id per example). A multi-label head is a sigmoid
per class + binary cross-entropy; Keras's ``class_weight`` cannot weigh a label set, so
balanced weights are applied inside the loss, per label and per side (present or absent).

Example:
    >>> from tlkit.tasks import get_task
    >>> type(head_loss(get_task("image"))).__name__
    'SparseCategoricalCrossentropy'
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def head_loss(task: Any, label_weights: np.ndarray | None = None,
              soft_targets: bool = False) -> Any:
    """The loss of ``task``'s head; with ``label_weights`` (labels x [absent, present], a
    multi-label task), binary cross-entropy weighted per label. ``soft_targets`` (one-hot,
    smoothed or mixed targets, from ``soft_label_stream``) turn a single-label head's sparse
    cross-entropy into the categorical one, which takes them.

    Example:
        >>> from tlkit.tasks import get_task
        >>> type(head_loss(get_task("textcnn-multilabel"))).__name__
        'BinaryCrossentropy'
        >>> type(head_loss(get_task("image"), soft_targets=True)).__name__
        'CategoricalCrossentropy'
    """
    import keras

    if label_weights is not None:
        return weighted_binary_crossentropy(label_weights)
    if soft_targets and not task.multi_label:
        return keras.losses.CategoricalCrossentropy()
    # the task names its loss as Keras's function does; the class of that name computes it
    return getattr(keras.losses, task.loss.title().replace("_", ""))()


def head_metrics(task: Any) -> list[Any]:
    """The metric a stage reports as ``accuracy`` (what ``monitor: val_accuracy`` reads):
    the top class's for one label, each label's decision at 0.5 for a label set.

    Example:
        >>> from tlkit.tasks import get_task
        >>> head_metrics(get_task("image")), head_metrics(get_task("image-multilabel"))[0].name
        (['accuracy'], 'accuracy')
    """
    import keras

    if task.multi_label:
        return [keras.metrics.BinaryAccuracy(name="accuracy")]
    return ["accuracy"]


def balanced_weights(task: Any, targets: np.ndarray, classes: int
                     ) -> tuple[dict[int, float] | None, np.ndarray | None]:
    """scikit-learn's ``balanced`` weights of the training targets: (Keras ``class_weight``,
    None) for one label per example, (None, per-label loss weights) for label sets.

    Example:
        >>> from tlkit.tasks import get_task
        >>> balanced_weights(get_task("image"), np.array([0, 0, 0, 1]), 2)[0]
        {0: 0.6666666666666666, 1: 2.0}
        >>> balanced_weights(get_task("image-multilabel"), np.array([[1, 0], [0, 0]]), 2)[1]
        array([[1. , 1. ],
               [0.5, 1. ]], dtype=float32)
    """
    if task.multi_label:
        from tlkit.data.labels import balanced_label_weights

        return None, balanced_label_weights(targets)
    from tlkit.data.images import balanced_class_weight

    return balanced_class_weight(targets, classes), None


def weighted_binary_crossentropy(weights: np.ndarray) -> Callable[[Any, Any], Any]:
    """Binary cross-entropy whose term for label j weighs ``weights[j, 1]`` where the label is
    present and ``weights[j, 0]`` where it is absent, averaged over the labels.

    Example:
        >>> loss = weighted_binary_crossentropy(np.array([[1.0, 3.0]], dtype="float32"))
        >>> present, absent = (loss(np.array([[y]]), np.array([[0.5]]))[0] for y in (1.0, 0.0))
        >>> round(float(present / absent), 4)
        3.0
    """
    import keras

    absent = np.asarray(weights[:, 0], dtype="float32")
    present = np.asarray(weights[:, 1], dtype="float32")

    def weighted_bce(y_true: Any, y_pred: Any) -> Any:
        y_true = keras.ops.cast(y_true, y_pred.dtype)
        per_label = keras.ops.binary_crossentropy(y_true, y_pred)
        weight = y_true * present + (1.0 - y_true) * absent
        return keras.ops.mean(per_label * weight, axis=-1)

    return weighted_bce
