"""A small HTTP JSON endpoint for a finished run: ``POST /predict`` and ``GET /health``.

Standard library only (``http.server.ThreadingHTTPServer``). Each connection's thread reads
and checks its request; one worker thread owns the model and batches *across* requests: it
takes the oldest waiting request, then keeps collecting others for up to ``max_wait_ms`` or
until ``max_batch`` inputs, and runs them through the model in one call. A model call costs
about the same for one input as for dozens, and an endpoint's traffic is mostly many small
concurrent requests, so a few milliseconds of waiting buys a shared call; one thread owning
the model also keeps concurrent TensorFlow calls from fighting over the cores. A single
request is never split, so one large request is one call (predict batches it inside).

Request ``{"inputs": [...], "top_k": 2}``: image runs take image files on the server's disk
or base64-encoded image bytes (a ``data:image/...;base64,`` prefix is allowed); text runs
take sentences. Response ``{"predictions": [{"labels": [...], "probabilities": [...]}, ...]}``
with the ``top_k`` most probable classes first (default 1), or ``{"error": "..."}`` for an
input that cannot be read. Bad requests get status 400 (413 when too large) and an error.

Example:
    >>> server = make_server("runs/trec", port=0)  # doctest: +SKIP
    >>> threading.Thread(target=server.serve_forever).start()  # doctest: +SKIP
    >>> server.url  # doctest: +SKIP
    'http://127.0.0.1:40215'
"""

from __future__ import annotations

import base64
import binascii
import errno
import json
import queue
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from tlkit.choices import SERVE_MAX_BATCH as MAX_BATCH
from tlkit.choices import SERVE_MAX_WAIT_MS as MAX_WAIT_MS
from tlkit.errors import UserError
from tlkit.runs import Run, check_run_folder

MAX_INPUTS = 1024  # per request
MAX_BODY_BYTES = 64 * 2**20
REQUEST_FIELDS = ("inputs", "top_k")

Predictor = Callable[[list[str]], tuple[np.ndarray, list[str | None]]]


class RequestError(Exception):
    """A request the server refuses: an HTTP status and a one-line reason.

    Example:
        >>> error = RequestError(413, "1025 inputs in one request; send at most 1024")
        >>> error.status, str(error)
        (413, '1025 inputs in one request; send at most 1024')
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class _Job:
    items: list[str]
    future: Future = field(default_factory=Future)


class Batcher:
    """Runs ``predict`` on one thread, joining requests that arrive within ``max_wait_ms``.

    ``submit(items)`` returns a Future of ``(probabilities, errors)`` for those items;
    ``calls`` and ``inputs`` count model calls and inputs predicted.

    Example:
        >>> batcher = Batcher(lambda items: (np.ones((len(items), 2)), [None] * len(items)))
        >>> probs, errors = batcher.submit(["a", "b"]).result()
        >>> probs.shape, batcher.calls
        ((2, 2), 1)
        >>> batcher.close()
    """

    def __init__(self, predict: Predictor, max_batch: int = MAX_BATCH,
                 max_wait_ms: float = MAX_WAIT_MS) -> None:
        self.predict = predict
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.calls = 0
        self.inputs = 0
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="tlkit-batcher", daemon=True)
        self._thread.start()

    def submit(self, items: Sequence[str]) -> Future:
        """Queue ``items`` for the next model call."""
        job = _Job(list(items))
        self._queue.put(job)
        return job.future

    def close(self) -> None:
        """Finish the queued work and stop the worker thread."""
        self._queue.put(None)
        self._thread.join()

    def _loop(self) -> None:
        while (job := self._queue.get()) is not None:
            jobs, stop = self._collect(job)
            self._run(jobs)
            if stop:
                return

    def _collect(self, first: _Job) -> tuple[list[_Job], bool]:
        """``first`` plus the jobs that arrive before the deadline or the batch is full."""
        jobs, count = [first], len(first.items)
        deadline = time.monotonic() + self.max_wait
        while count < self.max_batch:
            try:
                job = self._queue.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            jobs.append(job)
            count += len(job.items)
        return jobs, False

    def _run(self, jobs: list[_Job]) -> None:
        items = [item for job in jobs for item in job.items]
        try:
            probs, errors = self.predict(items)
        except Exception as error:  # the requests waiting on it report it; the server goes on
            for job in jobs:
                job.future.set_exception(error)
            return
        self.calls += 1
        self.inputs += len(items)
        start = 0
        for job in jobs:
            end = start + len(job.items)
            job.future.set_result((probs[start:end], errors[start:end]))
            start = end


class PredictionServer(ThreadingHTTPServer):
    """The HTTP server of one run (``run``, ``batcher``); ``url`` is where it listens.

    Built unbound: ``make_server`` binds it and loads the run.

    Example:
        >>> server = PredictionServer(("127.0.0.1", 8080), Batcher(lambda items: None))
        >>> server.url
        'http://127.0.0.1:8080'
        >>> server.server_close()  # stops the batcher too
    """

    daemon_threads = True
    run: Run

    def __init__(self, address: tuple[str, int], batcher: Batcher) -> None:
        self.batcher = batcher
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler, bind_and_activate=False)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def server_close(self) -> None:
        super().server_close()
        self.batcher.close()


def make_server(run: str | Path, host: str = "127.0.0.1", port: int = 8080,
                max_batch: int = MAX_BATCH, max_wait_ms: float = MAX_WAIT_MS
                ) -> PredictionServer:
    """A server for a finished run, listening but not yet serving (call ``serve_forever``).

    The port is taken before the model loads, so a port in use fails at once; ``port=0``
    picks a free one (see ``url``). ``server_close`` stops the batcher too.

    Example:
        >>> server = make_server("runs/flowers", port=8080)  # doctest: +SKIP
        >>> server.serve_forever()  # doctest: +SKIP
    """
    from tlkit.predict import open_run, probabilities

    folder = check_run_folder(run)
    if max_batch < 1 or max_wait_ms < 0:
        raise UserError(f"--max-batch {max_batch} must be at least 1 and --max-wait-ms "
                        f"{max_wait_ms} at least 0")
    # The batcher calls the model only once requests come, after the run has loaded.
    server = PredictionServer((host, port), Batcher(
        lambda items: probabilities(server.run, items), max_batch, max_wait_ms))
    try:
        _bind(server, host, port)
        server.run = open_run(folder)
    except BaseException:
        server.server_close()
        raise
    return server


def _bind(server: PredictionServer, host: str, port: int) -> None:
    """Bind and listen; an address this machine cannot take becomes one UserError line."""
    try:
        server.server_bind()
        server.server_activate()
    except socket.gaierror as error:
        raise UserError(f"cannot listen on host '{host}' ({error.strerror}); pass --host an "
                        "address of this machine, e.g. 127.0.0.1") from error
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise UserError(f"port {port} on {host} is in use; pass another --port (or stop "
                            "the program listening there)") from error
        if error.errno == errno.EACCES:
            raise UserError(f"no permission to listen on port {port} (ports below 1024 need "
                            "root); pass --port 1024 or above") from error
        raise UserError(f"cannot listen on {host}:{port} ({error.strerror}); pass --host an "
                        "address of this machine, e.g. 127.0.0.1") from error


def parse_request(body: bytes, class_count: int) -> tuple[list[str], int]:
    """The inputs and ``top_k`` of a ``/predict`` body, or a RequestError saying what is wrong.

    Example:
        >>> parse_request(b'{"inputs": ["How far is the moon ?"], "top_k": 2}', 6)
        (['How far is the moon ?'], 2)
        >>> parse_request(b'{"input": ["x"]}', 6)
        Traceback (most recent call last):
        tlkit.serve.RequestError: unknown field 'input'; send {"inputs": [...], "top_k": N}
    """
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RequestError(400, f"the body is not JSON ({error})") from error
    if not isinstance(payload, dict):
        raise RequestError(400, 'send a JSON object: {"inputs": [...], "top_k": N}')
    unknown = [key for key in payload if key not in REQUEST_FIELDS]
    if unknown:
        raise RequestError(400, f"unknown field '{unknown[0]}'; send "
                                '{"inputs": [...], "top_k": N}')
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or not inputs or not all(isinstance(x, str) for x in inputs):
        raise RequestError(400, '"inputs" must be a non-empty list of strings (image paths or '
                                "base64 images, or sentences)")
    if len(inputs) > MAX_INPUTS:
        raise RequestError(413, f"{len(inputs)} inputs in one request; send at most "
                                f"{MAX_INPUTS}")
    top_k = payload.get("top_k", 1)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= class_count:
        raise RequestError(400, f'"top_k" must be an integer from 1 to {class_count} (the '
                                "run's number of classes)")
    return inputs, top_k


def top_k_rows(probs: np.ndarray, errors: Sequence[str | None], class_names: Sequence[str],
               top_k: int) -> list[dict[str, Any]]:
    """One response row per input: its top-k labels and probabilities, or its error.

    Example:
        >>> top_k_rows(np.array([[0.25, 0.75]]), [None], ["neg", "pos"], 2)
        [{'labels': ['pos', 'neg'], 'probabilities': [0.75, 0.25]}]
    """
    rows: list[dict[str, Any]] = []
    for row, error in zip(probs, errors, strict=True):
        if error is not None:
            rows.append({"error": error})
            continue
        order = np.argsort(-row, kind="stable")[:top_k]
        rows.append({"labels": [class_names[i] for i in order],
                     "probabilities": [round(float(row[i]), 6) for i in order]})
    return rows


def predict_request(server: PredictionServer, inputs: list[str], top_k: int
                    ) -> list[dict[str, Any]]:
    """Run one request's inputs through the server's batcher; image inputs become files.

    Example:
        >>> batcher = Batcher(lambda x: (np.tile([0.3, 0.7], (len(x), 1)), [None] * len(x)))
        >>> server = PredictionServer(("127.0.0.1", 0), batcher)
        >>> server.run = Run(Path("runs/sst2"), "textcnn", None, ["neg", "pos"], {})
        >>> predict_request(server, ["a fine film"], top_k=2)
        [{'labels': ['pos', 'neg'], 'probabilities': [0.7, 0.3]}]
        >>> server.server_close()
    """
    run, batcher = server.run, server.batcher
    if run.kind != "image":
        probs, errors = batcher.submit(inputs).result()
        return top_k_rows(probs, errors, run.class_names, top_k)
    with tempfile.TemporaryDirectory(prefix="tlkit-serve-") as folder:
        paths, errors = _image_files(inputs, Path(folder))
        readable = [i for i, error in enumerate(errors) if error is None]
        probs = np.full((len(inputs), len(run.class_names)), np.nan, dtype="float32")
        if readable:
            got, got_errors = batcher.submit([paths[i] for i in readable]).result()
            probs[readable] = got
            for i, error in zip(readable, got_errors, strict=True):
                errors[i] = error.replace(f"{folder}/", "") if error else None
    return top_k_rows(probs, errors, run.class_names, top_k)


def _image_files(inputs: list[str], folder: Path) -> tuple[list[str], list[str | None]]:
    """A path per input (base64 data written to ``folder/input-N``) and an error or None."""
    paths: list[str] = []
    errors: list[str | None] = []
    for i, item in enumerate(inputs):
        if len(item) < 4096 and Path(item).is_file():
            paths.append(item)
            errors.append(None)
            continue
        data = item.split(";base64,", 1)[1] if item.startswith("data:") else item
        try:
            content = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            content = b""
        if not content:
            paths.append("")
            errors.append("neither an image file on the server nor base64 image data")
            continue
        path = folder / f"input-{i}"
        path.write_bytes(content)
        paths.append(str(path))
        errors.append(None)
    return paths, errors


class _Handler(BaseHTTPRequestHandler):
    server: PredictionServer
    server_version = "tlkit-serve"

    def do_GET(self) -> None:
        if self.path.split("?")[0] != "/health":
            self._send(404, {"error": "not found; use GET /health or POST /predict"})
            return
        run, batcher = self.server.run, self.server.batcher
        self._send(200, {"status": "ok", "run": str(run.path), "kind": run.kind,
                         "classes": run.class_names, "max_batch": batcher.max_batch,
                         "model_calls": batcher.calls, "inputs_predicted": batcher.inputs})

    def do_POST(self) -> None:
        try:
            if self.path.split("?")[0] != "/predict":
                raise RequestError(404, "not found; use POST /predict or GET /health")
            inputs, top_k = parse_request(self._body(), len(self.server.run.class_names))
            predictions = predict_request(self.server, inputs, top_k)
        except RequestError as error:
            self._send(error.status, {"error": str(error)})
            return
        except Exception as error:  # a failure of one request must not stop the server
            self._send(500, {"error": f"prediction failed: {type(error).__name__}: {error}"})
            return
        self._send(200, {"predictions": predictions})

    def _body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError as error:
            raise RequestError(411, "send a Content-Length header") from error
        if length > MAX_BODY_BYTES:
            raise RequestError(413, f"body of {length} bytes; send at most {MAX_BODY_BYTES}")
        return self.rfile.read(length)

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
