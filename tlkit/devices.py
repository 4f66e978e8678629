"""Devices, precision and distribution: what a run trains on, chosen from recipe fields.

- ``describe_devices()``: what TensorFlow sees (``tlkit devices``, and every run's metrics).
- ``use_gpus("0,1")``: pick GPUs and turn on memory growth, before TensorFlow touches them.
  TensorFlow otherwise reserves almost the whole card for one process.
- ``precision_policy(setting)``: ``off``, ``float16``, ``bfloat16`` or ``auto`` (mixed
  float16 on GPUs of compute capability 7.x, mixed bfloat16 on 8.0 and newer, where it
  needs no loss scaling at the same speed; off on CPUs, where both were slower here).
- ``make_strategy(setting)``: ``none``, ``mirrored`` (the GPUs of one machine; ``auto``
  picks it when there are several), ``multiworker`` (machines listed in ``TF_CONFIG``).

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
from pathlib import Path
from typing import Any

import pandas as pd

from tlkit.errors import UserError
from tlkit.keras_internals import gpu_memory_limits

PRECISIONS = ("off", "auto", "float16", "bfloat16")
_CPU_NOTED: list[str] = []  # "no GPU" is said once per process
STRATEGIES = ("auto", "none", "mirrored", "multiworker")


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

    def __init__(self, strategy: Any, policy: str) -> None:
        self.strategy = strategy
        self.policy = policy
        self.chief, self.worker = worker_role()

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
        yield TrainingSetup(strategy, policy)


def worker_out(out: str | Path) -> Path:
    """The folder this process writes its run under: ``out`` for the chief, a hidden
    ``out/.worker-<i>`` for worker ``i`` (no TensorFlow needed, so checks can use it early).

    Example:
        >>> str(worker_out("runs"))
        'runs'
    """
    chief, index = worker_role()
    return Path(out) if chief else Path(out) / f".worker-{index}"


def worker_destination(setup: TrainingSetup, out: Any, name: str) -> tuple[Any, str]:
    """Where this process writes its run: the chief writes the run folder; another worker
    writes the same files (all replicas save together) into a hidden folder of its own,
    kept for its restarts and removed when the run ends.

    Example:
        >>> worker_destination(TrainingSetup(make_strategy("none"), "float32"), "runs", "r1")
        ('runs', 'r1')
    """
    if setup.chief:
        return out, name
    return worker_out(out), name


def discard_worker_run(path: Any, setup: TrainingSetup) -> None:
    """Remove a non-chief worker's copy of the run; the chief's folder is the run.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> discard_worker_run(folder / "r1", TrainingSetup(make_strategy("none"), "float32"))
        worker 0: done; the chief wrote the run folder
        >>> folder.exists()
        False
    """
    import shutil

    shutil.rmtree(Path(path).parent, ignore_errors=True)
    print(f"worker {setup.worker}: done; the chief wrote the run folder", flush=True)


# What a worker's collective ops raise when another worker dies: heartbeats stop (the
# coordination service names the task) or its socket closes, seconds after the death.
PEER_ERRORS = ("UnavailableError", "DeadlineExceededError", "AbortedError")


def peer_failure(error: BaseException, final: Path, command: str) -> str | None:
    """The one-line message of a multi-worker run whose peer stopped; None for any other error.

    The run cannot go on without its peer, but each worker's folder holds its per-epoch
    backups: keep it, and restart every worker with ``command --resume`` (the run's own
    path, the same on every worker), as Keras's fault-tolerance guide has a cluster do.

    Example:
        >>> peer_failure(ValueError("no"), Path("runs/r"), "tlkit finetune") is None
        True
    """
    import re

    from tlkit.runs import partial_path

    tf = sys.modules.get("tensorflow")
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    tasks = sum(len(addresses) for addresses in config.get("cluster", {}).values())
    if tf is None or tasks < 2 or type(error).__name__ not in PEER_ERRORS:
        return None
    if not isinstance(error, tf.errors.OpError):
        return None
    _, own = worker_role()
    peers = sorted({int(i) for i in re.findall(r"/job:\w+/(?:replica:\d+/)?task:(\d+)",
                                               str(error))} - {own})
    who = f"worker {', '.join(map(str, peers))}" if peers else "another worker"
    run = final.parent.parent / final.name if final.parent.name.startswith(".worker-") else final
    return (f"{who} of this multi-worker run stopped ({type(error).__name__}); worker {own} "
            f"keeps its unfinished run in {partial_path(final)}: restart "
            f"every worker with `{command} --resume {run}`")
