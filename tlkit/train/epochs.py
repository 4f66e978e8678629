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
    """The epoch a run is in, set by ``epoch_seeds`` and read by its data pipelines."""

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
    """
    return [v for v in variables if v.path.endswith(SEED_STATE_SUFFIX)]


def reseed(states: list[Any], clock: EpochClock, stream: str) -> None:
    """Set each generator's state from (seed, stream, its index, epoch)."""
    for index, state in enumerate(states):
        words = np.random.SeedSequence([*clock.entropy(stream), index]).generate_state(2)
        state.assign(np.array([words[0], 0], dtype=state.dtype))


def epoch_seeds(clock: EpochClock) -> Any:
    """A callback that moves ``clock`` to each epoch and reseeds the fitted model's dropout."""
    import keras

    class EpochSeeds(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            clock.epoch = epoch
            reseed(seed_states(self.model.non_trainable_variables), clock, "model")

    return EpochSeeds()


def deterministic_ops() -> None:
    """Ask TensorFlow for deterministic kernels and tf.data ordering (CPU; GPU where it can)."""
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
