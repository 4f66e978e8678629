"""The optimizers a recipe can name: one row each, read by the trainer and the batch planner.

A row says which class trains (a Keras optimizer, or tlkit's own where ``module`` names
it), the fixed arguments tlkit passes it, and how many values it keeps per trained
parameter (its slots), so that a memory plan counts exactly the state that training will
hold. The text CNN trains with the ``kim-adadelta`` row: Kim's Adadelta (rho 0.95, epsilon
1e-6) that updates only the embedding rows a batch uses, with the dense numbers.

Example:
    >>> OPTIMIZERS["sgd"].slots  # tlkit's SGD runs with momentum 0.9: one velocity per value
    1
    >>> sorted(OPTIMIZERS)
    ['adadelta', 'adam', 'adamw', 'kim-adadelta', 'rmsprop', 'sgd']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class OptimizerRow:
    """One optimizer: ``<module>.<keras_class>(**fixed, learning_rate=...)``.

    Example:
        >>> import keras
        >>> row = OPTIMIZERS["sgd"]
        >>> getattr(keras.optimizers, row.keras_class)(**row.fixed, learning_rate=0.01).momentum
        0.9
    """

    keras_class: str
    slots: int
    fixed: dict[str, Any] = field(default_factory=dict)
    module: str = "keras.optimizers"  # where the class is; the trainer imports it there


OPTIMIZERS: dict[str, OptimizerRow] = {
    "adam": OptimizerRow("Adam", slots=2),
    "adamw": OptimizerRow("AdamW", slots=2),
    "sgd": OptimizerRow("SGD", slots=1, fixed={"momentum": 0.9}),
    "rmsprop": OptimizerRow("RMSprop", slots=1),
    "adadelta": OptimizerRow("Adadelta", slots=2),
    # Two accumulators per value (plus, per embedding row, the step it was last updated).
    "kim-adadelta": OptimizerRow("SparseAdadelta", slots=2, fixed={"rho": 0.95, "epsilon": 1e-6},
                                 module="tlkit.models.textcnn"),
}
