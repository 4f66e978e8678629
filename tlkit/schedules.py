"""Learning-rate schedules within a stage: one row per name, the rate as a function of the step.

A stage's ``schedule`` names a row; its ``warmup`` (a fraction of the stage's steps, None
for the row's default) ramps the rate linearly up to the stage's ``lr`` first. The stage's
steps are its epochs times the batches in one epoch, and the step is the optimizer's own
iteration count, which a resumed run restores with the optimizer, so the schedule goes on
where it stopped. The rules, for a stage of T steps at rate ``lr`` with W warmup steps:

- ``constant``: ``lr`` (after a warmup from 0 when W > 0); the default, warmup 0.
- ``cosine``: linear warmup from 0 over W steps (default 5% of T), then cosine decay from
  ``lr`` to 0 over the other T - W (Keras ``CosineDecay``).
- ``one-cycle``: Smith's one cycle as fastai's ``fit_one_cycle`` sets it: from ``lr / 25``
  up to ``lr`` over W steps (default 25% of T; linear, as Smith's paper), then cosine
  annealing to ``lr / 1e5`` (Keras ``CosineDecay``; momentum is not cycled).
- ``step``: ``lr``, times 0.1 from step T/2 on and 0.01 from step 3T/4 on (Keras
  ``PiecewiseConstantDecay``); no warmup.

Each builder imports Keras only when called, so recipes check names before TensorFlow loads.

Example:
    >>> list(LR_SCHEDULES), LR_SCHEDULES["cosine"].warmup
    (['constant', 'cosine', 'one-cycle', 'step'], 0.05)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ONE_CYCLE_START = 25.0  # fastai's div: the cycle starts at lr / 25
ONE_CYCLE_END = 1e5  # fastai's div_final: it ends at lr / 1e5
STEP_DROPS = ((0.5, 0.1), (0.75, 0.01))  # (fraction of the stage's steps, factor from there)


def _cosine(lr: float, total: int, warmup: int, start: float, floor: float) -> Any:
    """Keras's cosine decay (to ``floor * lr``) after a linear warmup from ``start``."""
    import keras

    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=start, decay_steps=max(total - warmup, 1), alpha=floor,
        warmup_target=lr, warmup_steps=warmup)


def _constant(lr: float, total: int, warmup: int) -> Any:
    # alpha 1: the cosine "decays" to lr itself, so only the warmup remains.
    return lr if warmup == 0 else _cosine(lr, total, warmup, 0.0, 1.0)


def _step(lr: float, total: int, warmup: int) -> Any:
    import keras

    # PiecewiseConstantDecay keeps values[i] while step <= boundaries[i]: drop after s - 1.
    boundaries = [max(round(fraction * total) - 1, 0) for fraction, _ in STEP_DROPS]
    return keras.optimizers.schedules.PiecewiseConstantDecay(
        boundaries, [lr] + [lr * factor for _, factor in STEP_DROPS])


@dataclass(frozen=True)
class ScheduleRow:
    """One schedule: its default warmup fraction and ``build(lr, total_steps, warmup_steps)``.

    Example:
        >>> LR_SCHEDULES["constant"].build(0.01, 100, 0)
        0.01
    """

    description: str
    warmup: float  # the warmup fraction when the stage leaves it None
    build: Callable[[float, int, int], Any]
    takes_warmup: bool = True


LR_SCHEDULES: dict[str, ScheduleRow] = {
    "constant": ScheduleRow("the stage's lr throughout", 0.0, _constant),
    "cosine": ScheduleRow("linear warmup, then cosine decay to 0", 0.05,
                          lambda lr, total, warmup: _cosine(lr, total, warmup, 0.0, 0.0)),
    "one-cycle": ScheduleRow(
        "Smith's one cycle: lr/25 up to lr, then cosine down to lr/1e5", 0.25,
        lambda lr, total, warmup: _cosine(lr, total, warmup, lr / ONE_CYCLE_START,
                                          1 / ONE_CYCLE_END)),
    "step": ScheduleRow("lr, x0.1 at half the stage, x0.01 at three quarters", 0.0, _step,
                        takes_warmup=False),
}


def learning_rate(schedule: str, lr: float, total_steps: int, warmup: float | None = None
                  ) -> Any:
    """The rate to give a Keras optimizer: ``lr`` itself, or a Keras LearningRateSchedule.

    ``warmup`` is a fraction of ``total_steps`` (None: the row's default).

    Example:
        >>> rate = learning_rate("cosine", 0.1, total_steps=100)
        >>> [round(float(rate(step)), 4) for step in (0, 5, 100)]  # warmup: 5% of 100 steps
        [0.0, 0.1, 0.0]
    """
    row = LR_SCHEDULES[schedule]
    fraction = row.warmup if warmup is None else warmup
    return row.build(lr, total_steps, round(fraction * total_steps))
