"""The learning-rate finder (Smith 2017, fastai's ``lr_find``): sweep the rate, watch the loss.

One stage of a recipe is built exactly as the image job builds it (model, data, what trains,
optimizer, loss; a head-only stage fits on the cached features), then trained from its
initial weights for ``steps`` steps while the rate grows exponentially from ``start`` to
``end``. The loss of each step is smoothed as fastai smooths it (an exponential moving
average, beta 0.98, with bias correction) and the sweep stops once the smoothed loss exceeds
4 times its minimum or is no longer finite. Nothing of a run is written: only
``lr_find.csv`` (rate, loss, smoothed loss per step) and ``lr_find.png`` (the curve).

The suggestion (``SUGGESTION_RULE``) is the minimum of the smoothed loss divided by 10. The
minimum itself is too high: the loss is about to blow up there, and the moving average lags
behind the raw loss, so its minimum sits later than the raw one. A tenth of it is a rate
where the loss still falls fast, one decade clear of where it stops falling; unlike the
steepest point of the smoothed curve, it does not move with a noisy batch early in the sweep.

Example:
    >>> rates = sweep_rates(1e-3, 10.0, 5)
    >>> [f"{rate:g}" for rate in rates]
    ['0.001', '0.01', '0.1', '1', '10']
    >>> suggest(rates, np.array([1.0, 0.9, 0.5, 0.2, 3.0]))  # minimum at 1, a tenth of it
    0.1
"""

from __future__ import annotations

import dataclasses
import io
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tlkit.errors import UserError
from tlkit.files import write_bytes, write_text
from tlkit.recipes import ImageRecipe, Stage

BETA = 0.98  # fastai's smoothing of the per-step loss
DIVERGED = 4.0  # the sweep stops once the smoothed loss exceeds this times its minimum
CSV_FILE, FIGURE_FILE = "lr_find.csv", "lr_find.png"
SUGGESTION_RULE = "minimum of the smoothed loss / 10"
DEFAULT_SWEEP = (1e-7, 10.0, 200)  # start, end, steps: fastai's range, Smith's few hundred steps


def check_sweep(recipe: ImageRecipe, stage: int, start: float, end: float, steps: int) -> None:
    """The sweep's own options and the stage index, checked before TensorFlow loads.

    Example:
        >>> check_sweep(ImageRecipe(), 0, 1e-7, 10.0, 200)
        >>> check_sweep(ImageRecipe(), 0, 1.0, 0.1, 200)
        Traceback (most recent call last):
        tlkit.errors.UserError: --end 0.1 must be above --start 1; the rate grows from start to end
    """
    if not (math.isfinite(start) and start > 0):
        raise UserError(f"--start {start:g} must be a rate above 0, e.g. 1e-7")
    if not (math.isfinite(end) and end > start):
        raise UserError(f"--end {end:g} must be above --start {start:g}; the rate grows from "
                        "start to end")
    if steps < 10:
        raise UserError(f"--steps {steps} is too few to see the loss turn; use 10 or more "
                        "(100 to 300 is usual)")
    n = len(recipe.stages)
    if not 0 <= stage < n:
        which = "pass --stage 0" if n == 1 else f"pass --stage 0 to {n - 1}"
        raise UserError(f"--stage {stage} is out of range: the recipe has {n} stage"
                        f"{'s' if n > 1 else ''}; {which}")


def sweep_rates(start: float, end: float, steps: int) -> np.ndarray:
    """``steps`` rates growing exponentially (evenly on a log scale) from start to end.

    Example:
        >>> sweep_rates(1e-4, 1.0, 3).tolist()
        [0.0001, 0.01, 1.0]
    """
    return start * (end / start) ** (np.arange(steps) / (steps - 1))


def smooth(losses: np.ndarray, beta: float = BETA) -> np.ndarray:
    """fastai's smoothed loss: an exponential moving average divided by ``1 - beta**k`` so its
    first values are not pulled towards 0.

    Example:
        >>> smooth(np.array([2.0, 2.0, 2.0])).round(6).tolist()
        [2.0, 2.0, 2.0]
    """
    average, smoothed = 0.0, np.empty(len(losses))
    for k, loss in enumerate(losses, start=1):
        average = beta * average + (1 - beta) * loss
        smoothed[k - 1] = average / (1 - beta**k)
    return smoothed


def suggest(rates: np.ndarray, smoothed: np.ndarray) -> float:
    """The suggested rate (``SUGGESTION_RULE``): where the smoothed loss is lowest, over 10.

    Example:
        >>> suggest(np.array([0.01, 0.1, 1.0]), np.array([2.0, 1.0, 9.0]))
        0.01
    """
    finite = np.where(np.isfinite(smoothed), smoothed, np.inf)
    return float(rates[int(np.argmin(finite))] / 10)


@dataclass
class Sweep:
    """The rates tried, the loss at each (raw and smoothed), and the suggested rate.

    Example:
        >>> sweep = Sweep(np.array([0.1, 1.0]), np.array([1.0, 0.5]), np.array([1.0, 0.7]))
        >>> sweep.suggestion, sweep.turned
        (0.1, False)
    """

    rates: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray

    @property
    def suggestion(self) -> float:
        return suggest(self.rates, self.smoothed)

    @property
    def turned(self) -> bool:
        """Whether the smoothed loss rose again after its minimum (it ends above 1.2 times
        it, or not finite); else it still fell, or lay flat, at the end: the suggestion is
        only a bound."""
        last = float(self.smoothed[-1])
        return not math.isfinite(last) or last > 1.2 * float(np.nanmin(self.smoothed))

    def line(self) -> str:
        """The one line the command prints.

        Example:
            >>> Sweep(np.array([0.1, 1.0]), np.ones(2), np.array([1.0, 0.5])).line()[-30:]
            ': a bound, try a larger --end)'
        """
        note = "" if self.turned else "; the loss never turned up: a bound, try a larger --end"
        return (f"suggested lr: {self.suggestion:.3g} ({SUGGESTION_RULE}; {len(self.rates)} "
                f"steps, {self.rates[0]:.3g} to {self.rates[-1]:.3g}{note})")

    def table(self) -> pd.DataFrame:
        """One row per step: ``lr``, ``loss``, ``smoothed_loss``."""
        return pd.DataFrame({"step": np.arange(len(self.rates)), "lr": self.rates,
                             "loss": self.losses, "smoothed_loss": self.smoothed})


def diverged(smoothed: float, lowest: float) -> bool:
    """Whether the sweep should stop: the smoothed loss is not finite or 4x its minimum.

    Example:
        >>> diverged(4.5, 1.0), diverged(3.0, 1.0), diverged(float("nan"), 1.0)
        (True, False, True)
    """
    return not math.isfinite(smoothed) or smoothed > DIVERGED * lowest


def sweep_model(model: Any, train: Any, rates: np.ndarray,
                class_weight: dict[int, float] | None = None) -> Sweep:
    """Train a compiled ``model`` on ``train`` one step per rate, recording each step's loss.

    Example:
        >>> import keras, tensorflow as tf
        >>> model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        >>> model.compile(keras.optimizers.SGD(), "mse")
        >>> train = tf.data.Dataset.from_tensor_slices((np.ones((4, 1)), np.ones(4))).batch(2)
        >>> len(sweep_model(model, train, sweep_rates(1e-3, 1e-2, 10)).rates)
        10
    """
    callback = _rate_sweep(rates)
    model.fit(train.repeat(), steps_per_epoch=len(rates), epochs=1, verbose=0, shuffle=False,
              class_weight=class_weight, callbacks=[callback])
    losses = np.array(callback.losses)
    return Sweep(rates[:len(losses)], losses, smooth(losses))


def _rate_sweep(rates: np.ndarray) -> Any:
    """A Keras callback that sets each step's rate and keeps its loss, stopping on divergence."""
    import keras

    class RateSweep(keras.callbacks.Callback):
        def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
            self.losses: list[float] = []
            self.average, self.lowest = 0.0, math.inf

        def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            self.model.optimizer.learning_rate = float(rates[batch])
            # Keras logs the mean loss since the epoch began; reset, it is this step's loss
            self.model.reset_metrics()

        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            loss = float((logs or {})["loss"])
            self.losses.append(loss)
            self.average = BETA * self.average + (1 - BETA) * loss
            smoothed = self.average / (1 - BETA ** len(self.losses))
            self.lowest = min(self.lowest, smoothed)
            if diverged(smoothed, self.lowest):
                self.model.stop_training = True

    return RateSweep()


def lr_find(recipe: ImageRecipe, stage: int = 0, start: float = DEFAULT_SWEEP[0],
            end: float = DEFAULT_SWEEP[1], steps: int = DEFAULT_SWEEP[2],
            out: str | Path = ".", data: Any = None) -> Sweep:
    """Sweep stage ``stage`` of ``recipe`` and write ``lr_find.csv`` and ``lr_find.png`` into
    ``out``; return the sweep (``.suggestion``, ``.line()``).

    Example:
        >>> sweep = lr_find(ImageRecipe(data="datasets/shapes"), out="lr")  # doctest: +SKIP
        >>> sweep.suggestion, len(sweep.rates)  # doctest: +SKIP
        (1.0, 200)
    """
    from tlkit.devices import training_setup
    from tlkit.train.image import ImageJob, check_image_run

    check_sweep(recipe, stage, start, end, steps)
    if Path(out).exists() and not Path(out).is_dir():
        raise UserError(f"--out '{out}' is a file; pass a folder for {CSV_FILE} and "
                        f"{FIGURE_FILE}")
    with tempfile.TemporaryDirectory(prefix="tlkit-lr-find-") as scratch:
        # the checks of a run, into a scratch folder: the finder writes no run folder
        job = ImageJob(check_image_run(recipe, scratch, "lr-find", data), scratch)
        with training_setup(job.recipe) as setup:
            job.build(setup)
            sweep_stage = dataclasses.replace(job.recipe.stages[stage], lr=start)
            model, train, class_weight = _stage_model(job, setup, sweep_stage,
                                                      Path(recipe.cache_dir or scratch))
            sweep = sweep_model(model, train, sweep_rates(start, end, steps), class_weight)
    write_sweep(sweep, Path(out))
    return sweep


def find_stage_rate(job: Any, setup: Any, stage: Stage, cache_dir: Path) -> dict[str, Any]:
    """``lr: auto``: sweep ``stage`` from the model's weights now (the stage's starting
    point), put them back, and set the stage's rate to the suggestion; what it chose, for
    ``metrics.json``.

    The job's recipe is the one its run folder holds (written with ``auto``), so a resumed
    run sweeps again from the same starting weights rather than reading a stale rate.

    Example:
        >>> find_stage_rate(job, setup, Stage(lr="auto"), folder / "cache")  # doctest: +SKIP
        {'stage': 'head', 'lr': 0.0031, 'rule': 'minimum of the smoothed loss / 10', ...}
    """
    weights = job.model.get_weights()
    start, end, steps = DEFAULT_SWEEP
    model, train, class_weight = _stage_model(job, setup, dataclasses.replace(stage, lr=start),
                                              cache_dir)
    sweep = sweep_model(model, train, sweep_rates(start, end, steps), class_weight)
    job.model.set_weights(weights)  # the sweep's training is thrown away
    stage.lr = sweep.suggestion
    print(f"stage '{stage.name}': lr auto, {sweep.line()}", flush=True)
    return {"stage": stage.name, "lr": sweep.suggestion, "rule": SUGGESTION_RULE,
            "steps": len(sweep.rates), "swept": [start, float(sweep.rates[-1])]}


def _stage_model(job: Any, setup: Any, stage: Stage, cache_dir: Path
                 ) -> tuple[Any, Any, dict[int, float] | None]:
    """(compiled model, train stream, class weights) of ``stage``, as the image job fits
    it: what trains, its optimizer at the stage's (constant) rate, the head's loss; a
    head-only stage fits the head on the cached features in ``cache_dir``."""
    from tlkit.train.heads import balanced_weights, head_loss, head_metrics
    from tlkit.train.image import FrozenFeatures
    from tlkit.train.stages import compile_for_stage, prepare_stage

    recipe, images = job.recipe, job.images
    class_weight, label_weights = (
        balanced_weights(job.task, images.targets(images.split("train")),
                         len(images.class_names))
        if recipe.class_weight == "balanced" else (None, None))
    plan = prepare_stage(job.backbone, job.row, stage, recipe.batchnorm_policy,
                         recipe.batchnorm_momentum)
    cached = plan.backbone_frozen and recipe.feature_cache
    features = (FrozenFeatures(recipe, job.row, job.model, images, cache_dir, job.clock,
                               setup.strategy) if cached else None)
    model = features.head if features else job.model
    with setup.strategy.scope():
        compile_for_stage(model, stage, plan, head_loss(job.task, label_weights),
                          head_metrics(job.task))
    train = features.stage_fit().train if features else job.datasets["train"]
    return model, train, class_weight


def write_sweep(sweep: Sweep, out: Path) -> None:
    """``lr_find.csv`` and ``lr_find.png`` into ``out``, each written beside its name first.

    Example:
        >>> out = Path(tempfile.mkdtemp())
        >>> write_sweep(Sweep(sweep_rates(1e-3, 1.0, 4), np.ones(4), np.ones(4)), out)
        >>> sorted(path.name for path in out.iterdir())
        ['lr_find.csv', 'lr_find.png']
    """
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / CSV_FILE, sweep.table().to_csv(index=False))
    image = io.BytesIO()
    sweep_figure(sweep).savefig(image, format="png", dpi=120)
    write_bytes(out / FIGURE_FILE, image.getvalue())


def sweep_figure(sweep: Sweep) -> Any:
    """Loss (raw, faint; smoothed, bold) against the rate on a log axis, the suggestion marked.

    Example:
        >>> sweep_figure(Sweep(np.array([0.1, 1.0]), np.ones(2), np.ones(2))).axes[0].get_xscale()
        'log'
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.4), layout="constrained")
    axes = figure.subplots()
    axes.plot(sweep.rates, sweep.losses, color="tab:blue", alpha=0.3, label="loss per step")
    axes.plot(sweep.rates, sweep.smoothed, color="tab:blue", label="smoothed (EMA 0.98)")
    axes.axvline(sweep.suggestion, color="tab:red", linestyle="--",
                 label=f"suggested {sweep.suggestion:.3g}")
    finite = sweep.smoothed[np.isfinite(sweep.smoothed)]
    if len(finite):  # the last steps blow up: keep the part that matters in view
        low = float(np.nanmin(np.concatenate([finite, sweep.losses[np.isfinite(sweep.losses)]])))
        first = float(finite[0])
        axes.set_ylim(low - 0.1 * abs(first - low), max(first, low) * 1.5 + 1e-12)
    axes.set(xscale="log", xlabel="learning rate", ylabel="training loss",
             title=f"Learning-rate sweep: {SUGGESTION_RULE}")
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=8)
    return figure
