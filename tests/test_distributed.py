"""MultiWorkerMirroredStrategy with two `tlkit finetune` worker processes on 127.0.0.1.

Each worker gets its own TF_CONFIG (the same cluster, its own task index), as a cluster
manager would set it. A run trains to the end and only the chief leaves a run folder; when
one worker is killed mid-run the other stops with a one-line message, both keep their
folders, and both started again with ``--resume`` finish the run. Every wait is bounded and
every process is killed in ``finally``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_image_folder

ROOT = Path(__file__).resolve().parents[1]
RUN_TIMEOUT = 900  # seconds for a whole run; a loaded 2-core machine needs minutes
PEER_TIMEOUT = 240  # seconds for a survivor to notice that its peer died
NAME = "mw"


def free_ports(count: int) -> list[int]:
    """Ports the OS reports free: bound to port 0 together, so they are distinct."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def tf_config(ports: list[int], index: int) -> str:
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    return json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})


def finetune_args(data: Path, out: Path, epochs: int) -> list[str]:
    return ["finetune", "--backbone", "tiny_cnn", "--weights", "none", "--data", str(data),
            "--input-size", "32", "--batch-size", "4", "--schedule", "full",
            "--epochs", str(epochs), "--set", "strategy=multiworker", "--set", "probe=false",
            "--set", "augment=null", "--set", "early_stopping=null",
            "--out", str(out), "--name", NAME]


class Cluster:
    """The worker processes started by a test, each with its own log file."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.workers: list[subprocess.Popen[bytes]] = []
        self.log_files: list[Path] = []

    def start(self, args: list[str], label: str) -> list[subprocess.Popen[bytes]]:
        """One ``python -m tlkit ARGS`` per worker of a new two-worker cluster."""
        ports = free_ports(2)
        started = []
        for index in range(2):
            log = self.logs / f"{label}-worker{index}.log"
            env = {**os.environ, "TF_CONFIG": tf_config(ports, index),
                   "TF_CPP_MIN_LOG_LEVEL": "2"}
            with open(log, "wb") as sink:
                started.append(subprocess.Popen([sys.executable, "-m", "tlkit", *args],
                                                cwd=ROOT, env=env, stdout=sink,
                                                stderr=subprocess.STDOUT))
            self.log_files.append(log)
        self.workers += started
        return started

    def wait(self, workers: list[subprocess.Popen[bytes]], timeout: float) -> list[int]:
        """Exit codes of ``workers``; fails with their logs when ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        for worker in workers:
            try:
                worker.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                pytest.fail(f"workers still running after {timeout}s\n{self.tails()}")
        return [worker.returncode for worker in workers]

    def wait_for(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``condition`` until it holds; fail if a worker exits first or time runs out."""
        deadline = time.monotonic() + timeout
        while not condition():
            if any(worker.poll() is not None for worker in self.workers):
                pytest.fail(f"a worker exited before {what}\n{self.tails()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} after {timeout}s\n{self.tails()}")
            time.sleep(0.5)

    def kill_all(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait(timeout=30)

    def tails(self, chars: int = 3000) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-chars:]}"
                         for log in self.log_files if log.is_file())


@contextmanager
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    workers = Cluster(tmp_path)
    try:
        yield workers
    finally:
        workers.kill_all()


def latest_backup(partial: Path) -> str | None:
    latest = partial / "backup" / "latest"
    return latest.read_text().strip() if latest.is_file() else None


def test_each_worker_writes_under_its_own_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    from tlkit.devices import worker_role
    from tlkit.train.workers import worker_out

    monkeypatch.setenv("TF_CONFIG", tf_config([1, 2], 0))
    assert worker_role() == (True, 0) and worker_out("runs") == Path("runs")
    monkeypatch.setenv("TF_CONFIG", tf_config([1, 2], 1))
    assert worker_role() == (False, 1) and worker_out("runs") == Path("runs/.worker-1")


def test_a_lost_peer_is_one_line_naming_it_and_the_resume_command(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import tensorflow as tf

    from tlkit.train.workers import peer_failure

    monkeypatch.setenv("TF_CONFIG", tf_config([1, 2], 1))
    lost_chief = tf.errors.UnavailableError(None, None, (
        "Collective ops is aborted by: Socket closed\nAdditional GRPC error information from "
        "remote target /job:worker/replica:0/task:0 while calling RecvBuf"))
    message = peer_failure(lost_chief, Path("runs/.worker-1/mw"), "tlkit finetune")
    assert message == ("worker 0 of this multi-worker run stopped (UnavailableError); worker 1 "
                       "keeps its unfinished run in runs/.worker-1/.mw.partial: restart every "
                       "worker with `tlkit finetune --resume runs/mw`")
    assert peer_failure(ValueError("no"), Path("runs/mw"), "tlkit finetune") is None
    assert peer_failure(tf.errors.InvalidArgumentError(None, None, "shape"), Path("runs/mw"),
                        "tlkit finetune") is None
    monkeypatch.delenv("TF_CONFIG")  # one process alone has no peers to lose
    assert peer_failure(lost_chief, Path("runs/mw"), "tlkit finetune") is None


@pytest.mark.slow
def test_two_workers_train_to_the_end_and_only_the_chief_writes(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "images", per_class=6)
    out = tmp_path / "runs"
    with cluster(tmp_path) as workers:
        codes = workers.wait(workers.start(finetune_args(data, out, epochs=2), "run"),
                             RUN_TIMEOUT)
        assert codes == [0, 0], workers.tails()
        assert "worker 1: done; the chief wrote the run folder" in workers.tails()
    assert sorted(os.listdir(out)) == [NAME]  # no worker folder, no partial folder
    metrics = json.loads((out / NAME / "metrics.json").read_text())
    assert metrics["devices"]["strategy"] == "MultiWorkerMirroredStrategy"
    assert metrics["devices"]["replicas"] == 2
    assert pd.read_csv(out / NAME / "history.csv")["epoch"].tolist() == [0, 1]
    assert (out / NAME / "model.keras").is_file()


@pytest.mark.slow
def test_a_killed_worker_started_again_finishes_the_run(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "images", per_class=6)
    out = tmp_path / "runs"
    chief_partial, worker_partial = out / f".{NAME}.partial", out / ".worker-1" / f".{NAME}.partial"
    epochs = 8
    with cluster(tmp_path) as workers:
        chief, worker = workers.start(finetune_args(data, out, epochs), "first")
        workers.wait_for(lambda: latest_backup(chief_partial) is not None
                         and latest_backup(chief_partial) == latest_backup(worker_partial),
                         RUN_TIMEOUT, "epoch backup on both workers")
        killed_at = latest_backup(chief_partial)
        os.kill(worker.pid, signal.SIGKILL)
        assert workers.wait([chief], PEER_TIMEOUT) == [2], workers.tails()
        survivor = workers.log_files[0].read_text(errors="replace")
        assert "worker 1 of this multi-worker run stopped" in survivor, workers.tails()
        assert f"--resume {out / NAME}" in survivor
        assert killed_at == latest_backup(chief_partial) == latest_backup(worker_partial)

        resumed = workers.start(["finetune", "--resume", str(out / NAME)], "resumed")
        assert workers.wait(resumed, RUN_TIMEOUT) == [0, 0], workers.tails()
    assert sorted(os.listdir(out)) == [NAME]
    history = pd.read_csv(out / NAME / "history.csv")
    assert history["epoch"].tolist() == list(range(epochs))  # every epoch once
    first_resumed_epoch = int(killed_at.removeprefix("epoch-")) + 1
    assert f"Epoch {first_resumed_epoch}/{epochs}" in workers.log_files[2].read_text()
