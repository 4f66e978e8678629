"""Devices, precision and distribution: what a run trains on, chosen from recipe fields.

- ``describe_devices()``: what TensorFlow sees (``tlkit devices``, and every run's metrics).
- ``use_gpus("0,1")``: pick GPUs and turn on memory growth, before TensorFlow touches them.
  TensorFlow otherwise reserves almost the whole card for one process.
- ``precision_policy(setting)``: ``off``, ``float16``, ``bfloat16`` or ``auto`` (mixed
  float16 on GPUs of compute capability 7.x, mixed bfloat16 on 8.0 and newer, where it
  needs no loss scaling at the same speed; off on CPUs, where both were slower here).
- ``make_strategy(setting)``: ``none``, ``mirrored`` (the GPUs of one machine; ``auto``
  picks it when there are several), ``multiworker`` (machines listed in ``TF_CONFIG``);
  ``worker_role()`` says which worker of ``TF_CONFIG`` this process is.

Where each worker writes its copy of a run, and what a lost peer means for it, is the
training layer's (``tlkit.train.workers``): this module knows nothing of run folders.

Example:
    >>> precision_policy("off") is None, precision_policy("float16")
    (True, 'mixed_float16')
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pandas as pd

from tlkit.choices import PRECISIONS, STRATEGIES
from tlkit.errors import UserError
from tlkit.keras_internals import gpu_memory_limits

_CPU_NOTED: list[str] = []  # "no GPU" is said once per process


def describe_devices() -> pd.DataFrame:
    """One row per device TensorFlow sees: name, type, memory, and for GPUs the model.

    ``memory_gb`` is the machine's RAM for the CPU and what TensorFlow may allocate on a GPU.

    Example:
        >>> describe_devices().loc[0, "type"]
        'CPU'
    """
    import tensorflow as tf

    rows = []
    gpu_memory = gpu_memory_limits() if tf.config.list_physical_devices("GPU") else {}
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for device in tf.config.list_logical_devices():
        row: dict[str, Any] = {"name": device.name, "type": device.device_type}
        row["memory_gb"] = round(gpu_memory.get(device.name, ram) / 1e9, 1)
        if device.device_type == "GPU":
            physical = tf.config.list_physical_devices("GPU")[int(device.name.split(":")[-1])]
            details = tf.config.experimental.get_device_details(physical)
            row["compute_capability"] = ".".join(map(str, details.get("compute_capability", ())))
            row["model"] = details.get("device_name", "")
        rows.append(row)
    return pd.DataFrame(rows)


def use_gpus(gpus: str | None, work: str = "running") -> None:
    """Make only ``gpus`` (e.g. ``"0,1"``; None: all) visible, each with memory growth on.

    With no GPU, the ``tlkit`` logger says once per process "no GPU: WORK on CPU".

    Example:
        >>> use_gpus("99")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        tlkit.errors.UserError: --gpus 99: no GPU 99; this machine has ...
    """
    import tensorflow as tf

    physical = tf.config.list_physical_devices("GPU")
    if gpus is not None:
        wanted = [part.strip() for part in gpus.split(",") if part.strip()]
        unknown = [g for g in wanted if not g.isdigit() or int(g) >= len(physical)]
        if unknown:
            have = ", ".join(map(str, range(len(physical)))) or "none"
            raise UserError(f"--gpus {gpus}: no GPU {unknown[0]}; this machine has "
                            f"{len(physical)} ({have})")
        physical = [physical[int(g)] for g in wanted]
        try:
            tf.config.set_visible_devices(physical, "GPU")
        except RuntimeError:  # already initialised by an earlier run in this process
            return
    if not physical and not _CPU_NOTED:
        _CPU_NOTED.append(work)
        # one line of tlkit's own where TensorFlow's start-up lines (hidden) read as failures;
        # the tlkit command shows it on stderr, a script if it configures logging
        logging.getLogger("tlkit").info("no GPU: %s on CPU", work)
    for device in physical:
        try:
            tf.config.experimental.set_memory_growth(device, True)
        except RuntimeError:  # already initialised by an earlier run in this process
            return


def progress_verbosity() -> int:
    """Keras's ``verbose`` for fit and predict: a progress bar on a terminal, else one line
    per epoch (logs and CI would fill with bar redraws), none when progress is quiet. Keras
    writes to stdout; its callers send that to stderr, so the terminal asked about is stderr's.

    Example:
        >>> progress_verbosity()  # a doctest's output is not a terminal
        2
    """
    from tlkit.progress import interactive, quiet

    return 0 if quiet() else 1 if interactive() else 2


def precision_policy(setting: str) -> str | None:
    """The Keras dtype policy for a recipe's ``mixed_precision`` setting (None: float32).

    Example:
        >>> precision_policy("bfloat16"), precision_policy("off")
        ('mixed_bfloat16', None)
    """
    if setting not in PRECISIONS:
        raise UserError(f"mixed_precision '{setting}' is not one of {', '.join(PRECISIONS)}")
    if setting == "off":
        return None
    if setting != "auto":
        return f"mixed_{setting}"
    capability = _best_gpu_capability()
    if capability is None or capability < (7, 0):
        return None
    return "mixed_bfloat16" if capability >= (8, 0) else "mixed_float16"


def _best_gpu_capability() -> tuple[int, int] | None:
    import tensorflow as tf

    found = [tf.config.experimental.get_device_details(d).get("compute_capability")
             for d in tf.config.list_physical_devices("GPU")]
    found = [tuple(c) for c in found if c]
    return min(found) if found else None


@contextmanager
def dtype_policy(setting: str) -> Iterator[str]:
    """Build and train under the policy of ``setting``; the global policy comes back after.

    Under a ``mixed_float16`` policy Keras wraps the optimizer in a ``LossScaleOptimizer``
    at compile time; output layers compute in float32.

    Example:
        >>> import keras
        >>> with dtype_policy("float16") as policy:
        ...     print(policy, keras.config.dtype_policy().compute_dtype)
        mixed_float16 float16
        >>> keras.config.dtype_policy().name
        'float32'
    """
    import keras

    policy = precision_policy(setting) or "float32"
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield policy
    finally:
        keras.config.set_dtype_policy(previous)


def make_strategy(setting: str) -> Any:
    """The ``tf.distribute`` strategy of a recipe's ``strategy`` field.

    Example:
        >>> make_strategy("none").num_replicas_in_sync
        1
    """
    import tensorflow as tf

    if setting not in STRATEGIES:
        raise UserError(f"strategy '{setting}' is not one of {', '.join(STRATEGIES)}")
    if setting == "multiworker":
        if not os.environ.get("TF_CONFIG"):
            raise UserError("strategy multiworker needs TF_CONFIG (the cluster and this "
                            "worker's index); see docs/distributed.md")
        return _keras_strategy(tf.distribute.MultiWorkerMirroredStrategy,
                               "MultiWorkerMirroredStrategy")
    gpus = tf.config.list_logical_devices("GPU")
    if setting == "mirrored" or (setting == "auto" and len(gpus) > 1):
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        if len(devices) < 2:
            print("warning: strategy mirrored with one device trains on that device alone",
                  file=sys.stderr, flush=True)
        return _keras_strategy(tf.distribute.MirroredStrategy, "MirroredStrategy", devices)
    return tf.distribute.get_strategy()


def _keras_strategy(base: Any, name: str, *args: Any) -> Any:
    """A ``base`` strategy (a ``tf.distribute`` class) whose ``reduce`` Keras 3 can use.

    Keras 3's ``fit`` calls ``reduce`` on a whole (x, y) batch, only to read its shapes
    when it builds the model: with a short batch split unevenly over replicas (2 + 1
    images) that fails on any strategy. Under MultiWorkerMirroredStrategy it also reduces
    scalar logs with ``axis=0``, which CollectiveAllReduce refuses, so stock ``fit`` fails
    before its first step (keras-team/keras#20585, tensorflow/tensorflow#72388).
    """
    import tensorflow as tf

    class KerasStrategy(base):  # type: ignore[misc,valid-type]
        def reduce(self, reduce_op: Any, value: Any, axis: int | None = None) -> Any:
            if tf.nest.is_nested(value):  # a batch, for its shapes: this replica's has them
                return tf.nest.map_structure(
                    lambda part: None if part is None
                    else self.experimental_local_results(part)[0], value)
            rank = self.experimental_local_results(value)[0].shape.rank
            return super().reduce(reduce_op, value, None if rank == 0 else axis)

    KerasStrategy.__name__ = KerasStrategy.__qualname__ = name  # what metrics.json records
    return KerasStrategy(*args)


def worker_role() -> tuple[bool, int]:
    """(is this process the chief, its worker index) from ``TF_CONFIG``; (True, 0) alone.

    Example:
        >>> worker_role()
        (True, 0)
    """
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task = config.get("task", {})
    kind, index = task.get("type", "chief"), int(task.get("index", 0))
    has_chief = "chief" in config.get("cluster", {})
    chief = kind == "chief" or (kind == "worker" and index == 0 and not has_chief)
    return chief, index


class TrainingSetup:
    """The strategy, precision and role of one training process (see ``training_setup``).

    Example:
        >>> setup = TrainingSetup(make_strategy("none"), "float32")
        >>> setup.replicas, setup.chief, setup.record()["precision"]
        (1, True, 'float32')
    """

    def __init__(self, strategy: Any, policy: str, seed: int = 0) -> None:
        self.strategy = strategy
        self.policy = policy
        self.seed = seed
        self.chief, self.worker = worker_role()

    def reseed(self) -> None:
        """Start Python's, NumPy's and TensorFlow's random sources again from the seed.

        Each fold of a cross-validation starts here, so it draws what it would draw alone
        and a run resumed at fold k matches the uninterrupted one.
        """
        import keras

        keras.utils.set_random_seed(self.seed)

    @property
    def replicas(self) -> int:
        """Replicas in sync: the global batch is the recipe's batch times this."""
        return int(self.strategy.num_replicas_in_sync)

    def record(self) -> dict[str, Any]:
        """What ``metrics.json`` says about where the run trained."""
        return {"strategy": type(self.strategy).__name__, "replicas": self.replicas,
                "precision": self.policy,
                "devices": describe_devices().to_dict(orient="records")}


@contextmanager
def training_setup(recipe: Any) -> Iterator[TrainingSetup]:
    """Seeds, determinism, GPUs, precision policy and strategy for one run, in that order.

    The strategy is made before any other TensorFlow work, as multi-worker training needs.

    Example:
        >>> from tlkit.recipes import ImageRecipe
        >>> with training_setup(ImageRecipe(strategy="none", deterministic=False)) as setup:
        ...     print(setup.replicas, setup.policy)
        1 float32
    """
    import keras

    from tlkit.seeds import deterministic_ops

    use_gpus(recipe.gpus, "training")
    strategy = make_strategy(recipe.strategy)
    keras.utils.set_random_seed(recipe.seed)
    if recipe.deterministic:
        deterministic_ops()
    with dtype_policy(recipe.mixed_precision) as policy:
        yield TrainingSetup(strategy, policy, recipe.seed)
