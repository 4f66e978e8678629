"""The optimizers a recipe can name: one row each, read by the trainer and the batch planner.

A row says which Keras class trains, the fixed arguments tlkit passes it, and how many
values it keeps per trained parameter (its slots), so that a memory plan counts exactly
the state that training will hold.

Example:
    >>> OPTIMIZERS["sgd"].slots  # tlkit's SGD runs with momentum 0.9: one velocity per value
    1
    >>> sorted(OPTIMIZERS)
    ['adadelta', 'adam', 'adamw', 'rmsprop', 'sgd']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class OptimizerRow:
    """One optimizer: ``keras.optimizers.<keras_class>(**fixed, learning_rate=...)``.

    Example:
        >>> import keras
        >>> row = OPTIMIZERS["sgd"]
        >>> getattr(keras.optimizers, row.keras_class)(**row.fixed, learning_rate=0.01).momentum
        0.9
    """

    keras_class: str
    slots: int
    fixed: dict[str, Any] = field(default_factory=dict)


OPTIMIZERS: dict[str, OptimizerRow] = {
    "adam": OptimizerRow("Adam", slots=2),
    "adamw": OptimizerRow("AdamW", slots=2),
    "sgd": OptimizerRow("SGD", slots=1, fixed={"momentum": 0.9}),
    "rmsprop": OptimizerRow("RMSprop", slots=1),
    "adadelta": OptimizerRow("Adadelta", slots=2),
}
