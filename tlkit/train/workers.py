"""Multi-worker training and the run folder: where each worker writes, and a lost peer.

Every worker of a ``MultiWorkerMirroredStrategy`` run saves the same files (all replicas
save together); the chief writes the run folder, each other worker a hidden copy of its
own under ``out/.worker-<i>``, kept for its restarts and removed when the run ends. When a
peer dies mid-run the survivors' collective ops fail: ``peer_failures`` turns that into one
line that keeps the unfinished run (``RunKept``) and names the command that resumes it.

This is the training layer's knowledge: the run folder (``tlkit.runs``) and the devices
(``tlkit.devices``) below it know nothing of workers' folders.

Example:
    >>> str(worker_out("runs"))  # no TF_CONFIG: this process is the chief
    'runs'
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tlkit.devices import TrainingSetup, worker_role
from tlkit.runs import RunKept, partial_path
from tlkit.runs import unfinished_run as unfinished_run_under

# What a worker's collective ops raise when another worker dies: heartbeats stop (the
# coordination service names the task) or its socket closes, seconds after the death.
PEER_ERRORS = ("UnavailableError", "DeadlineExceededError", "AbortedError")


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
        >>> from tlkit.devices import make_strategy
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
        >>> from tlkit.devices import make_strategy
        >>> folder = Path(tempfile.mkdtemp())
        >>> discard_worker_run(folder / "r1", TrainingSetup(make_strategy("none"), "float32"))
        worker 0: done; the chief wrote the run folder
        >>> folder.exists()
        False
    """
    shutil.rmtree(Path(path).parent, ignore_errors=True)
    print(f"worker {setup.worker}: done; the chief wrote the run folder", flush=True)


def peer_failure(error: BaseException, final: Path, command: str) -> str | None:
    """The one-line message of a multi-worker run whose peer stopped; None for any other error.

    The run cannot go on without its peer, but each worker's folder holds its per-epoch
    backups: keep it, and restart every worker with ``command --resume`` (the run's own
    path, the same on every worker), as Keras's fault-tolerance guide has a cluster do.

    Example:
        >>> peer_failure(ValueError("no"), Path("runs/r"), "tlkit finetune") is None
        True
    """
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


@contextmanager
def peer_failures(final: Path, command: str) -> Iterator[None]:
    """Raise a lost peer of a multi-worker run as ``RunKept``: one line, the run kept.

    The run cannot go on without its peer, but this worker's folder holds its per-epoch
    backups; any other error passes through unchanged.

    Example:
        >>> with peer_failures(Path("runs/r"), "tlkit finetune"):
        ...     raise ValueError("not a peer's")
        Traceback (most recent call last):
        ValueError: not a peer's
    """
    try:
        yield
    except Exception as error:
        lost = peer_failure(error, final, command)
        if lost is None:
            raise
        raise RunKept(lost) from error


def unfinished_run(path: str | Path, kind: str) -> tuple[Any, Path, str]:
    """(recipe, out, name) of the unfinished run at ``path`` for ``--resume``: this
    process's own copy of it (a non-chief worker resumes the one under its hidden folder).

    Example:
        >>> unfinished_run("runs/none-such", "image")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        tlkit.errors.UserError: there is no unfinished run 'none-such' in 'runs' to resume ...
    """
    return unfinished_run_under(path, kind, worker_out(Path(path).parent))
