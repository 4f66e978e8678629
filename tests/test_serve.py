"""The HTTP endpoint on 127.0.0.1: predictions, batching across requests, bad requests, ports."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_user_error, run_cli, write_image
from test_export import make_image_run, make_text_run, module_run

from tlkit.serve import Batcher, PredictionServer, make_server

TIMEOUT = 60  # seconds per request: generous for a loaded CI machine, but bounded

image_run = module_run(make_image_run, "serve_image")
text_run = module_run(make_text_run, "serve_text")


def _serving(run: Path, **options: Any) -> Iterator[PredictionServer]:
    server = make_server(run, "127.0.0.1", 0, **options)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)


@pytest.fixture(scope="module")
def text_server(text_run: Path) -> Iterator[PredictionServer]:
    # A long wait window, so that concurrent requests surely share a model call.
    yield from _serving(text_run, max_wait_ms=300)


@pytest.fixture(scope="module")
def image_server(image_run: Path) -> Iterator[PredictionServer]:
    yield from _serving(image_run)


def _request(url: str, body: bytes | None = None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _predict(server: PredictionServer, payload: Any) -> tuple[int, dict[str, Any]]:
    return _request(f"{server.url}/predict", json.dumps(payload).encode())


def test_text_predictions_with_top_k_and_health(text_server: PredictionServer) -> None:
    code, health = _request(f"{text_server.url}/health")
    assert code == 200 and health["status"] == "ok" and health["kind"] == "textcnn"
    assert health["classes"] == ["neg", "pos"]
    code, body = _predict(text_server, {"inputs": ["a superb film", "the dull plot", " "],
                                        "top_k": 2})
    assert code == 200
    first, second, empty = body["predictions"]
    assert first["labels"] == ["pos", "neg"] and second["labels"] == ["neg", "pos"]
    assert first["probabilities"][0] >= first["probabilities"][1]
    assert sum(first["probabilities"]) == pytest.approx(1, abs=1e-5)
    assert empty == {"error": "empty text: nothing to classify"}
    code, body = _predict(text_server, {"inputs": ["a gripping story"]})
    assert code == 200 and len(body["predictions"][0]["labels"]) == 1  # top_k defaults to 1


def test_concurrent_requests_share_model_calls(text_server: PredictionServer) -> None:
    _, before = _request(f"{text_server.url}/health")
    texts = [f"the film was {word}" for word in ("great", "awful", "superb", "dull") * 3]
    with ThreadPoolExecutor(len(texts)) as pool:
        answers = list(pool.map(lambda text: _predict(text_server, {"inputs": [text]}), texts))
    assert all(code == 200 for code, _ in answers)
    labels = [body["predictions"][0]["labels"][0] for _, body in answers]
    assert labels == ["pos", "neg", "pos", "neg"] * 3  # each answer went to its own request
    _, after = _request(f"{text_server.url}/health")
    assert after["inputs_predicted"] - before["inputs_predicted"] == len(texts)
    assert after["model_calls"] - before["model_calls"] < len(texts)


def test_images_as_base64_or_paths_with_errors_per_input(image_server: PredictionServer,
                                                         tmp_path: Path) -> None:
    red = write_image(tmp_path / "red.png", (220, 30, 30), size=40)
    green = write_image(tmp_path / "green.jpg", (30, 200, 40), size=28)
    encoded = base64.b64encode(green.read_bytes()).decode()
    broken = base64.b64encode(b"not an image").decode()
    inputs = [str(red), encoded, f"data:image/jpeg;base64,{encoded}", broken, "/no/such.png",
              ""]
    code, body = _predict(image_server, {"inputs": inputs, "top_k": 2})
    assert code == 200
    red_row, green_row, data_url_row, broken_row, missing_row, empty_row = body["predictions"]
    assert red_row["labels"][0] == "red" and green_row["labels"][0] == "green"
    assert data_url_row == green_row
    assert "error" in broken_row and "tlkit-serve" not in broken_row["error"]
    assert missing_row == empty_row == {
        "error": "neither an image file on the server nor base64 image data"}


@pytest.mark.parametrize(("body", "status", "words"), [
    (b"{not json", 400, "not JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (b'{"input": ["x"]}', 400, "unknown field 'input'"),
    (b'{"inputs": []}', 400, "non-empty list of strings"),
    (b'{"inputs": [1]}', 400, "non-empty list of strings"),
    (b'{"inputs": ["x"], "top_k": 3}', 400, "from 1 to 2"),
    (b'{"inputs": ["x"], "top_k": true}', 400, "from 1 to 2"),
])
def test_bad_requests_get_a_status_and_one_line(text_server: PredictionServer, body: bytes,
                                                status: int, words: str) -> None:
    code, answer = _request(f"{text_server.url}/predict", body)
    assert code == status and words in answer["error"] and "\n" not in answer["error"]


def test_unknown_routes_and_too_many_inputs(text_server: PredictionServer) -> None:
    assert _request(f"{text_server.url}/nope")[0] == 404
    assert _request(f"{text_server.url}/health", b"{}")[0] == 404
    code, answer = _predict(text_server, {"inputs": ["x"] * 1025})
    assert code == 413 and "at most 1024" in answer["error"]


def test_a_port_in_use_is_one_line(text_run: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert_user_error(lambda: make_server(text_run, "127.0.0.1", port),
                          f"port {port} on 127.0.0.1 is in use", "--port")
        code, _, err = run_cli(["serve", str(text_run), "--port", str(port)])
    assert code == 2 and err == f"Error: port {port} on 127.0.0.1 is in use; pass another " \
                                "--port (or stop the program listening there)\n"


def test_unfinished_runs_and_bad_hosts_are_refused(tmp_path: Path, text_run: Path) -> None:
    partial = tmp_path / ".run.partial"
    partial.mkdir()
    assert_user_error(lambda: make_server(partial, port=0), "unfinished run")
    assert_user_error(lambda: make_server(text_run, "no-such-host.invalid", 0),
                      "cannot listen on host 'no-such-host.invalid'")


def test_the_batcher_splits_results_and_survives_a_failure() -> None:
    calls: list[list[str]] = []

    def predict(items: list[str]) -> tuple[np.ndarray, list[str | None]]:
        calls.append(items)
        if "boom" in items:
            raise RuntimeError("model failed")
        return np.array([[float(len(item))] for item in items]), [None] * len(items)

    batcher = Batcher(predict, max_batch=10, max_wait_ms=200)
    try:
        futures = [batcher.submit(["a", "bb"]), batcher.submit(["ccc"])]
        assert [f.result(TIMEOUT)[0].ravel().tolist() for f in futures] == [[1, 2], [3]]
        assert calls == [["a", "bb", "ccc"]]
        with pytest.raises(RuntimeError, match="model failed"):
            batcher.submit(["boom"]).result(TIMEOUT)
        assert batcher.submit(["dddd"]).result(TIMEOUT)[0].tolist() == [[4.0]]
    finally:
        batcher.close()
    assert batcher.calls == 2 and batcher.inputs == 4


def test_the_cli_serves_until_stopped(text_run: Path) -> None:
    # A real process, as a user runs it.
    code = "import sys; from tlkit.cli import main; main(sys.argv[1:])"
    process = subprocess.Popen([sys.executable, "-c", code, "serve", str(text_run), "--port",
                                "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        line = process.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith(f"serving {text_run} (textcnn) on http://127.0.0.1:"), line
        base = re.search(r" on (http://127\.0\.0\.1:\d+): ", line).group(1)  # type: ignore
        status, body = _request(f"{base}/predict", b'{"inputs": ["a superb film"]}')
        assert status == 200 and body["predictions"][0]["labels"] == ["pos"]
        process.send_signal(signal.SIGTERM)  # as docker stop and Kubernetes do
        out, _ = process.communicate(timeout=TIMEOUT)
        assert process.returncode == 0 and "stopped" in out
    finally:
        process.kill()
        process.wait(TIMEOUT)
