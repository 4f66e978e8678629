"""Randomness indexed by epoch: every random choice of epoch ``e`` is a function of (seed, e).

Data order, augmentation draws and dropout masks then depend only on the run's seed and the
epoch number, never on how many epochs this process has already run. Two runs with one
seed match epoch for epoch, and a run resumed at epoch ``e`` draws what the uninterrupted
run drew there.

Example:
    >>> clock = EpochClock(seed=42)
    >>> first = clock.rng("order").permutation(5).tolist()
    >>> clock.epoch = 3
    >>> clock.rng("order").permutation(5).tolist() == first
    False
    >>> clock.epoch = 0
    >>> clock.rng("order").permutation(5).tolist() == first
    True
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

SEED_STATE_SUFFIX = "seed_generator_state"


@dataclass
class EpochClock:
    """The epoch a run is in, set by ``epoch_seeds`` and read by its data pipelines.

    Example:
        >>> EpochClock(seed=42, epoch=3).entropy("order")  # seed, the stream's CRC-32, epoch
        [42, 4113142680, 3]
    """

    seed: int
    epoch: int = 0

    def entropy(self, stream: str) -> list[int]:
        """Seed material for one named stream of this epoch."""
        return [self.seed, zlib.crc32(stream.encode()), self.epoch]

    def rng(self, stream: str) -> np.random.Generator:
        """A NumPy generator for one named stream of this epoch."""
        return np.random.default_rng(self.entropy(stream))


def seed_states(variables: list[Any]) -> list[Any]:
    """The state variables of Keras seed generators (dropout, random augmentation layers).

    Keras keeps each generator's state in a variable whose path ends in
    ``seed_generator_state``; it is not part of saved weights.

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.BatchNormalization(),
        ...                           keras.layers.Dropout(0.5)])
        >>> len(model.non_trainable_variables), len(seed_states(model.non_trainable_variables))
        (3, 1)
    """
    return [v for v in variables if v.path.endswith(SEED_STATE_SUFFIX)]


def reseed(states: list[Any], clock: EpochClock, stream: str) -> None:
    """Set each generator's state from (seed, stream, its index, epoch).

    Example:
        >>> import keras
        >>> states = seed_states(keras.layers.Dropout(0.5).non_trainable_variables)
        >>> reseed(states, EpochClock(seed=1, epoch=2), "model")
        >>> states[0].numpy().tolist()
        [3803337159, 0]
    """
    for index, state in enumerate(states):
        words = np.random.SeedSequence([*clock.entropy(stream), index]).generate_state(2)
        state.assign(np.array([words[0], 0], dtype=state.dtype))


def epoch_seeds(clock: EpochClock) -> Any:
    """A callback that moves ``clock`` to each epoch and reseeds the fitted model's dropout.

    Example:
        >>> import keras
        >>> callback = epoch_seeds(clock := EpochClock(seed=1))
        >>> callback.set_model(keras.Sequential([keras.Input((2,)), keras.layers.Dropout(0.5)]))
        >>> callback.on_epoch_begin(4)
        >>> clock.epoch
        4
    """
    import keras

    class EpochSeeds(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            clock.epoch = epoch
            reseed(seed_states(self.model.non_trainable_variables), clock, "model")

    return EpochSeeds()


def deterministic_ops() -> None:
    """Ask TensorFlow for deterministic kernels and tf.data ordering (CPU; GPU where it can).

    It holds for the rest of the process; a random source that cannot be replayed is refused.

    Example:
        >>> import tensorflow as tf
        >>> deterministic_ops()
        >>> tf.random.Generator.from_non_deterministic_state()
        Traceback (most recent call last):
        RuntimeError: "from_non_deterministic_state" cannot be called when determinism is enabled.
    """
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
