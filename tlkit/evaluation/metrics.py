"""Classification metrics from predicted probabilities, computed by scikit-learn.

Example:
    >>> import numpy as np
    >>> m = classification_metrics(np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.8]]), ["a", "b"])
    >>> m["accuracy"]
    1.0
"""

from __future__ import annotations

from typing import Any

import numpy as np


def classification_metrics(y_true: np.ndarray, probabilities: np.ndarray,
                           class_names: list[str]) -> dict[str, Any]:
    """Accuracy, log loss, macro F1, per-class precision/recall/F1/support, confusion matrix."""
    from sklearn.metrics import (
        accuracy_score,
        classification_report,
        confusion_matrix,
        f1_score,
        log_loss,
    )

    labels = list(range(len(class_names)))
    predicted = probabilities.argmax(axis=1)
    report = classification_report(y_true, predicted, labels=labels, target_names=class_names,
                                   output_dict=True, zero_division=0)
    per_class = {name: {key: float(value) for key, value in report[name].items()}
                 for name in class_names}
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, predicted)),
        "loss": float(log_loss(y_true, probabilities, labels=labels)),
        "macro_f1": float(f1_score(y_true, predicted, labels=labels, average="macro",
                                   zero_division=0)),
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(y_true, predicted, labels=labels).tolist(),
    }
