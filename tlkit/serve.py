"""A small HTTP JSON endpoint for a finished run: ``POST /predict`` and ``GET /health``.

Standard library only (``http.server.ThreadingHTTPServer``). Each connection's thread reads
and checks its request; one worker thread owns the model and batches *across* requests: it
takes the oldest waiting request, then keeps collecting others for up to ``max_wait_ms`` or
until ``max_batch`` inputs, and runs them through the model in one call. A model call costs
about the same for one input as for dozens, and an endpoint's traffic is mostly many small
concurrent requests, so a few milliseconds of waiting buys a shared call; one thread owning
the model also keeps concurrent TensorFlow calls from fighting over the cores. A single
request is never split, so one large request is one call (predict batches it inside).

Request ``{"inputs": [...], "top_k": 2}``: image runs take base64-encoded image bytes (a
``data:image/...;base64,`` prefix is allowed), or image files under the folder the operator
allowed (``allow_paths``; off by default, so a caller cannot probe or read the server's
files); text runs take sentences. Response
``{"predictions": [{"labels": [...], "probabilities": [...]}, ...]}`` with the ``top_k`` most
probable classes first (default 1), or ``{"error": "..."}`` for an input that cannot be read.
``"coverage": 0.9`` (``"conformal_score": "aps"`` or ``"lac"``) and ``"abstain_below": 0.8``
mean what predict's options of those names mean: each answer gains ``"answer"`` (a label, or
``"unsure"``) and ``"candidates"`` (the classes in doubt).
The TF Serving / KServe v1 form works too: ``{"instances": ["text", {"b64": "..."}]}`` is
answered ``{"predictions": [[p0, p1, ...], ...]}``, every class's probability in the order of
``/health``'s ``classes``. Bad requests get a 4xx status and ``{"error": "..."}``; POSTs must
say ``Content-Type: application/json`` (a web page cannot send that without a CORS preflight)
and send their body within ``timeout`` seconds.

Example:
    >>> server = make_server("runs/trec", port=0)  # doctest: +SKIP
    >>> threading.Thread(target=server.serve_forever).start()  # doctest: +SKIP
    >>> server.url  # doctest: +SKIP
    'http://127.0.0.1:40215'
"""

from __future__ import annotations

import errno
import json
import queue
import re
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
from tlkit.choices import SERVE_READ_TIMEOUT as READ_TIMEOUT
from tlkit.errors import UserError
from tlkit.runs import Run, check_run_folder
from tlkit.tasks import task_of
from tlkit.tasks.base import check_uncertainty

MAX_INPUTS = 1024  # per request
MAX_BODY_BYTES = 64 * 2**20
REQUEST_FIELDS = ("inputs", "top_k", "coverage", "conformal_score", "abstain_below")
# A request's names for predict's --coverage, --conformal-score and --abstain-below
UNCERTAINTY_FIELDS = {"coverage": '"coverage"', "score": '"conformal_score"',
                      "below": '"abstain_below"'}
INSTANCES_FIELDS = ("instances", "signature_name")  # TF Serving / KServe v1
SIGNATURE = "serving_default"  # the one signature served, as tlkit export names it
# TF Serving's and KServe v1's URL (any model name: one model is served) beside tlkit's own.
PREDICT_PATH = re.compile(r"/predict|/v1/models/[^/]+(/versions/\d+)?:predict")

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
class Request:
    """A checked ``/predict`` body: the inputs, ``top_k``, and which form it came in.

    ``form`` is ``"inputs"`` (tlkit's) or ``"instances"`` (TF Serving / KServe v1);
    ``encoded`` holds the positions sent as ``{"b64": ...}``, which are never paths.

    Example:
        >>> Request(["a fine film"], top_k=2).word
        'input'
    """

    inputs: list[str]
    top_k: int = 1
    form: str = "inputs"
    encoded: frozenset[int] = frozenset()
    uncertainty: Any = None  # a tlkit.tasks.base.Uncertainty: when to answer unsure

    @property
    def word(self) -> str:
        """What an error calls one input: ``input`` or ``instance``, as the request did."""
        return "instance" if self.form == "instances" else "input"


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

    Built unbound: ``make_server`` binds it and loads the run. ``allow_paths`` is the resolved
    folder image paths may come from (None: paths are off); ``read_timeout`` the seconds a
    client has to send its request.

    Example:
        >>> server = PredictionServer(("127.0.0.1", 8080), Batcher(lambda items: None))
        >>> server.url
        'http://127.0.0.1:8080'
        >>> server.server_close()  # stops the batcher too
    """

    daemon_threads = True
    run: Run

    def __init__(self, address: tuple[str, int], batcher: Batcher,
                 allow_paths: Path | None = None, read_timeout: float = READ_TIMEOUT) -> None:
        self.batcher = batcher
        self.uncertainties: dict[tuple[Any, ...], Any] = {}  # conformal thresholds, as asked
        self.allow_paths = allow_paths
        self.read_timeout = read_timeout
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
                max_batch: int = MAX_BATCH, max_wait_ms: float = MAX_WAIT_MS,
                allow_paths: str | Path | None = None, timeout: float = READ_TIMEOUT
                ) -> PredictionServer:
    """A server for a finished run, listening but not yet serving (call ``serve_forever``).

    The port is taken before the model loads, so a port in use fails at once; ``port=0``
    picks a free one (see ``url``). ``server_close`` stops the batcher too. Image paths in
    requests are refused unless ``allow_paths`` names the folder they may come from.

    Example:
        >>> server = make_server("runs/flowers", port=8080, allow_paths="photos")  # doctest: +SKIP
        >>> server.serve_forever()  # doctest: +SKIP
    """
    folder = check_run_folder(run)
    if max_batch < 1 or max_wait_ms < 0:
        raise UserError(f"--max-batch {max_batch} must be at least 1 and --max-wait-ms "
                        f"{max_wait_ms} at least 0")
    if not timeout > 0:
        raise UserError(f"--timeout {timeout:g} must be more than 0 seconds (how long a "
                        "client may take to send its request)")
    allowed = None if allow_paths is None else allowed_folder(allow_paths)
    from tlkit.predict import open_run, probabilities  # TensorFlow: only after the checks

    # The batcher calls the model only once requests come, after the run has loaded.
    server = PredictionServer((host, port), Batcher(
        lambda items: probabilities(server.run, items), max_batch, max_wait_ms),
        allowed, timeout)
    try:
        _bind(server, host, port)
        server.run = open_run(folder)
    except BaseException:
        server.server_close()
        raise
    return server


def allowed_folder(path: str | Path) -> Path:
    """The ``--allow-paths`` folder with its symlinks resolved, or a UserError if no folder.

    Example:
        >>> allowed_folder("/no/such/folder")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        tlkit.errors.UserError: --allow-paths '/no/such/folder' is not a folder; pass the ...
    """
    folder = Path(path)
    if not folder.is_dir():
        raise UserError(f"--allow-paths '{path}' is not a folder; pass the folder image paths "
                        "may come from")
    return folder.resolve()


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


def parse_request(body: bytes, class_count: int) -> Request:
    """The checked ``/predict`` body, either form, or a RequestError saying what is wrong.

    Example:
        >>> parse_request(b'{"inputs": ["How far is the moon ?"], "top_k": 2}', 6).inputs
        ['How far is the moon ?']
        >>> parse_request(b'{"instances": [{"b64": "aGk="}]}', 6).encoded
        frozenset({0})
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
    if "instances" in payload:
        return _parse_instances(payload)
    unknown = [key for key in payload if key not in REQUEST_FIELDS]
    if unknown:
        raise RequestError(400, f"unknown field '{unknown[0]}'; send "
                                '{"inputs": [...], "top_k": N}')
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or not inputs or not all(isinstance(x, str) for x in inputs):
        raise RequestError(400, '"inputs" must be a non-empty list of strings (image paths or '
                                "base64 images, or sentences)")
    _check_count(len(inputs))
    top_k = payload.get("top_k", 1)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= class_count:
        raise RequestError(400, f'"top_k" must be an integer from 1 to {class_count} (the '
                                "run's number of classes)")
    try:
        uncertainty = check_uncertainty(payload.get("coverage"), payload.get("abstain_below"),
                                        payload.get("conformal_score"), UNCERTAINTY_FIELDS)
    except UserError as error:
        raise RequestError(400, str(error)) from error
    return Request(inputs, top_k, uncertainty=uncertainty)


def _parse_instances(payload: dict[str, Any]) -> Request:
    """The TF Serving / KServe v1 row form: each instance a string or ``{"b64": "..."}``."""
    unknown = [key for key in payload if key not in INSTANCES_FIELDS]
    if unknown:
        raise RequestError(400, f"unknown field '{unknown[0]}'; send "
                                '{"instances": [...]} or {"inputs": [...], "top_k": N}')
    signature = payload.get("signature_name", SIGNATURE)
    if signature != SIGNATURE:
        raise RequestError(400, f"no signature '{signature}' here; this server has only "
                                f"'{SIGNATURE}'")
    instances = payload["instances"]
    if not isinstance(instances, list) or not instances:
        raise RequestError(400, '"instances" must be a non-empty list of strings or '
                                '{"b64": "..."} objects')
    _check_count(len(instances))
    inputs, encoded = [], set()
    for i, instance in enumerate(instances):
        if isinstance(instance, dict) and list(instance) == ["b64"]:
            instance = instance["b64"]
            encoded.add(i)
        if not isinstance(instance, str):
            raise RequestError(400, f'instance {i} must be a string or {{"b64": "..."}} (the '
                                    "raw sentence or image file bytes, not a tensor)")
        inputs.append(instance)
    return Request(inputs, form="instances", encoded=frozenset(encoded))


def _check_count(count: int) -> None:
    if count > MAX_INPUTS:
        raise RequestError(413, f"{count} inputs in one request; send at most {MAX_INPUTS}")


def predict_request(server: PredictionServer, request: Request) -> list[Any]:
    """One request's answer rows, through the server's batcher, in the request's own form.

    tlkit's form gets the top-k labels or an error per input; the TF Serving form gets every
    class's probability per instance, and a RequestError (400) if any instance fails, as TF
    Serving answers.

    Example:
        >>> batcher = Batcher(lambda x: (np.tile([0.25, 0.75], (len(x), 1)), [None] * len(x)))
        >>> server = PredictionServer(("127.0.0.1", 0), batcher)
        >>> server.run = Run(Path("runs/sst2"), "textcnn", None, ["neg", "pos"], {})
        >>> predict_request(server, Request(["a fine film"], top_k=2))
        [{'labels': ['pos', 'neg'], 'probabilities': [0.75, 0.25]}]
        >>> predict_request(server, Request(["a fine film"], form="instances"))
        [[0.25, 0.75]]
        >>> server.server_close()
    """
    uncertainty = _uncertainty(server, request.uncertainty)  # a run without sets: no model call
    probs, errors = _predictions(server, request)
    if request.form == "inputs":
        task = task_of(server.run)
        rows = task.answer_rows(probs, errors, server.run.class_names, request.top_k,
                                task.thresholds(server.run))
        if uncertainty is not None:
            for row, (answer, candidates) in zip(
                    rows, task.answers(probs, errors, server.run.class_names, uncertainty),
                    strict=True):
                row.update({} if "error" in row else {"answer": answer,
                                                      "candidates": candidates})
        return rows
    for i, error in enumerate(errors):
        if error is not None:
            word = f"instance {i}"
            raise RequestError(400, error if error.startswith(f"{word} ") else f"{word}: {error}")
    return probs.astype(float).tolist()


def _uncertainty(server: PredictionServer, asked: Any) -> Any:
    """The request's ``Uncertainty`` with its conformal threshold (made once per coverage and
    score); a run without calibration examples is a 400."""
    if asked is None:
        return None
    key = (asked.coverage, asked.score, asked.below)
    if key not in server.uncertainties:
        try:
            server.uncertainties[key] = task_of(server.run).uncertainty(server.run, asked)
        except UserError as error:
            said = str(error).replace("--coverage", '"coverage"')
            raise RequestError(400, said.replace("--abstain-below", '"abstain_below"')) from error
    return server.uncertainties[key]


def _predictions(server: PredictionServer, request: Request
                 ) -> tuple[np.ndarray, list[str | None]]:
    """Each input's probabilities (NaN where it failed) and its error or None.

    The run's task turns the request into items (image runs write base64 images into a
    temporary folder) and words the errors of items its pipeline could not read.
    """
    task = task_of(server.run)
    with tempfile.TemporaryDirectory(prefix="tlkit-serve-") as folder:
        items, errors = task.request_inputs(request, Path(folder), server.allow_paths)
        sent = [error is None for error in errors]
        probs, errors = _submit(server, items, errors)
    return probs, [task.request_error(request, i, item, error) if sent[i] and error else error
                   for i, (item, error) in enumerate(zip(items, errors, strict=True))]


def _submit(server: PredictionServer, items: list[str], errors: list[str | None]
            ) -> tuple[np.ndarray, list[str | None]]:
    """Predict the items that have no error yet; the others keep theirs and a NaN row."""
    probs = np.full((len(items), len(server.run.class_names)), np.nan, dtype="float32")
    errors = list(errors)
    ready = [i for i, error in enumerate(errors) if error is None]
    if ready:
        got, got_errors = server.batcher.submit([items[i] for i in ready]).result()
        probs[ready] = got
        for i, error in zip(ready, got_errors, strict=True):
            errors[i] = error
    return probs, errors


class _Handler(BaseHTTPRequestHandler):
    server: PredictionServer
    server_version = "tlkit-serve"

    def setup(self) -> None:
        # Every read of the socket waits at most this long, so a stalled client frees its thread.
        self.timeout = self.server.read_timeout
        super().setup()

    def handle(self) -> None:
        try:
            super().handle()
        except ConnectionError:  # the client hung up (BrokenPipe, ConnectionReset): one line
            self.log_message("the client closed the connection before its answer")

    def do_GET(self) -> None:
        if self.path.split("?")[0] != "/health":
            self._send(404, {"error": "not found; use GET /health or POST /predict"})
            return
        run, batcher = self.server.run, self.server.batcher
        # The run's name, not its path: the server's folders are no caller's business.
        task = task_of(run)
        # A multi-label run answers label sets, decided by these thresholds.
        labels = ({"labels": "multi", "thresholds": task.thresholds(run).tolist()}
                  if task.multi_label else {"labels": "single"})
        self._send(200, {"status": "ok", "run": run.path.name, "kind": run.kind, **labels,
                         "classes": run.class_names, "max_batch": batcher.max_batch,
                         "model_calls": batcher.calls, "inputs_predicted": batcher.inputs})

    def do_POST(self) -> None:
        try:
            if not PREDICT_PATH.fullmatch(self.path.split("?")[0]):
                raise RequestError(404, "not found; use POST /predict or GET /health")
            body = self._body()
            self._require_json()
            request = parse_request(body, len(self.server.run.class_names))
            predictions = predict_request(self.server, request)
        except RequestError as error:
            self._send(error.status, {"error": str(error)})
            return
        except ConnectionError:
            raise
        except Exception as error:  # a failure of one request must not stop the server
            self._send(500, {"error": f"prediction failed: {type(error).__name__}: {error}"})
            return
        self._send(200, {"predictions": predictions})

    def _require_json(self) -> None:
        # text/plain, form and multipart bodies are what a web page may post to this server
        # without a CORS preflight: refusing them keeps other sites' pages from calling it.
        media = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if media != "application/json":
            raise RequestError(415, "send the body with Content-Type: application/json (it came "
                                    f"as {media or 'no Content-Type'})")

    def _body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError as error:
            raise RequestError(411, "send a Content-Length header") from error
        if length < 0:
            raise RequestError(400, f"Content-Length {length} is negative")
        if length > MAX_BODY_BYTES:
            raise RequestError(413, f"body of {length} bytes; send at most {MAX_BODY_BYTES}")
        return self._read(length)

    def _read(self, length: int) -> bytes:
        """``length`` bytes, all within the read timeout: a trickle of bytes does not extend it."""
        limit = self.server.read_timeout
        deadline = time.monotonic() + limit
        chunks: list[bytes] = []
        missing = length
        try:
            while missing:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                self.connection.settimeout(left)
                chunk = self.rfile.read1(missing)
                if not chunk:
                    raise ConnectionResetError("the body ended before its Content-Length")
                chunks.append(chunk)
                missing -= len(chunk)
        except TimeoutError as error:
            self.close_connection = True
            raise RequestError(408, f"the body did not arrive within {limit:g} seconds "
                                    f"({length - missing} of {length} bytes came)") from error
        finally:
            self.connection.settimeout(limit)
        return b"".join(chunks)

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
