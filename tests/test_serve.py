"""The HTTP endpoint on 127.0.0.1: predictions, batching across requests, bad requests, ports,
paths only under --allow-paths, content type and read timeouts, the TF Serving / KServe v1 form."""

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
import time
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
READ_TIMEOUT = 2  # the servers' own read timeout: small, so a stalled client is cut off fast

image_run = module_run(make_image_run, "serve_image")
text_run = module_run(make_text_run, "serve_text")


def _serving(run: Path, **options: Any) -> Iterator[PredictionServer]:
    server = make_server(run, "127.0.0.1", 0, timeout=READ_TIMEOUT, **options)
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
    yield from _serving(image_run)  # paths off: the default


@pytest.fixture(scope="module")
def allowed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder a server allows image paths from, with a red image in it."""
    folder = tmp_path_factory.mktemp("allowed")
    write_image(folder / "red.png", (220, 30, 30), size=40)
    return folder


@pytest.fixture(scope="module")
def paths_server(image_run: Path, allowed: Path) -> Iterator[PredictionServer]:
    yield from _serving(image_run, allow_paths=allowed)


def _request(url: str, body: bytes | None = None, content_type: str | None = "application/json"
             ) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": content_type} if content_type else {}
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET",
                                     headers=headers)
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


def test_images_as_base64_or_paths_with_errors_per_input(paths_server: PredictionServer,
                                                         allowed: Path, tmp_path: Path) -> None:
    red = allowed / "red.png"
    green = write_image(tmp_path / "green.jpg", (30, 200, 40), size=28)
    encoded = base64.b64encode(green.read_bytes()).decode()
    broken = base64.b64encode(b"not an image").decode()
    inputs = [str(red), encoded, f"data:image/jpeg;base64,{encoded}", broken, "/no/such.png",
              "", "red.png"]
    code, body = _predict(paths_server, {"inputs": inputs, "top_k": 2})
    assert code == 200
    red_row, green_row, data_url_row, broken_row, missing_row, empty_row, relative_row = \
        body["predictions"]
    assert red_row["labels"][0] == "red" and green_row["labels"][0] == "green"
    assert data_url_row == green_row and relative_row == red_row  # relative: to the folder
    # The position in the request names a bad input; the server's temporary files never show.
    assert broken_row["error"].startswith("input 3 is not a decodable image")
    assert "input-" not in broken_row["error"] and "tlkit-serve" not in broken_row["error"]
    assert missing_row["error"] == ("input 4 is neither an image file under the allowed "
                                    "folder nor base64 image data")
    assert empty_row["error"] == missing_row["error"].replace("input 4", "input 5")


def _first_answer(server: PredictionServer, item: str) -> tuple[int, dict[str, Any]]:
    return _predict(server, {"inputs": [item]})


def test_paths_are_off_by_default(image_server: PredictionServer, tmp_path: Path) -> None:
    red = write_image(tmp_path / "red.png", (220, 30, 30), size=40)
    answers = {item: _first_answer(image_server, item)
               for item in (str(red), str(tmp_path / "gone.png"))}
    assert len(set(map(json.dumps, answers.values()))) == 1, answers
    code, body = answers[str(red)]
    assert code == 200 and body["predictions"][0]["error"].startswith(
        "input 0 is not base64 image data (image paths are off on this server")


def test_paths_outside_the_allowed_folder_cannot_be_probed(paths_server: PredictionServer,
                                                          allowed: Path, tmp_path: Path) -> None:
    outside = write_image(tmp_path / "red.png", (220, 30, 30), size=40)
    link = allowed / "link.png"
    if not link.exists():
        link.symlink_to(outside)
    probes = [str(outside), str(tmp_path / "gone.png"), f"{allowed}/../{tmp_path.name}/red.png",
              str(link), "../" * 12 + str(outside), "/etc/passwd", "/etc/passwe",
              "/proc/self/environ", "/proc/self/environX", str(allowed / "gone.png"),
              str(allowed)]
    answers = {probe: _first_answer(paths_server, probe) for probe in probes}
    # One answer for all: whether a file exists outside the folder cannot be told apart.
    assert len(set(map(json.dumps, answers.values()))) == 1, answers
    code, body = _first_answer(paths_server, str(allowed / "red.png"))
    assert code == 200 and body["predictions"][0]["labels"] == ["red"]


def test_serve_options_are_checked_before_tensorflow(text_run: Path, tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("x")
    for given in (tmp_path / "missing", tmp_path / "file.txt"):
        assert_user_error(lambda given=given: make_server(text_run, port=0, allow_paths=given),
                          f"--allow-paths '{given}' is not a folder")
    assert_user_error(lambda: make_server(text_run, port=0, timeout=0),
                      "--timeout 0 must be more than 0 seconds")
    mistakes = [["--allow-paths", str(tmp_path / "missing")], ["--timeout", "0"]]
    script = ("import json, sys\nfrom tlkit.cli import main\n"
              "for args in json.loads(sys.argv[1]):\n"
              "    try:\n        main(['serve', sys.argv[2], '--port', '0', *args])\n"
              "    except SystemExit as exit_:\n        assert exit_.code == 2, exit_.code\n"
              "    assert 'tensorflow' not in sys.modules, args")
    done = subprocess.run([sys.executable, "-c", script, json.dumps(mistakes), str(text_run)],
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        f"Error: --allow-paths '{tmp_path / 'missing'}' is not a folder; pass the folder image "
        "paths may come from",
        "Error: --timeout 0 must be more than 0 seconds (how long a client may take to send its "
        "request)"]


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x"])
def test_posts_must_say_json(text_server: PredictionServer, content_type: str | None) -> None:
    # The types a web page may post to localhost without asking first (no CORS preflight).
    code, body = _request(f"{text_server.url}/predict", b'{"inputs": ["a superb film"]}',
                          content_type)
    assert code == 415 and "Content-Type: application/json" in body["error"]
    code, _ = _request(f"{text_server.url}/predict", b'{"inputs": ["a superb film"]}',
                       "Application/JSON; charset=utf-8")
    assert code == 200


def _raw(server: PredictionServer, request: bytes) -> bytes:
    """Send ``request`` on a socket as is; the answer, or what came before the server closed."""
    host, port = server.server_address[:2]
    with socket.create_connection((host, port), timeout=TIMEOUT) as connection:
        connection.sendall(request)
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _post_head(length: int | str) -> bytes:
    return (f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


def test_a_body_shorter_than_its_length_is_cut_off_in_time(text_server: PredictionServer) -> None:
    start = time.monotonic()
    answer = _raw(text_server, _post_head(1000) + b'{"inputs": ["a superb')
    took = time.monotonic() - start
    assert READ_TIMEOUT * 0.9 <= took < READ_TIMEOUT + 10, took
    assert answer.startswith(b"HTTP/1.0 408 ") and b"within 2 seconds" in answer, answer


@pytest.mark.parametrize(("length", "status"), [(64 * 2**20 + 1, b"413"), (-1, b"400"),
                                                ("ten", b"411")])
def test_bad_lengths_are_refused_at_once(text_server: PredictionServer, length: int | str,
                                         status: bytes) -> None:
    start = time.monotonic()
    answer = _raw(text_server, _post_head(length))
    assert answer.startswith(b"HTTP/1.0 " + status) and time.monotonic() - start < READ_TIMEOUT


def test_a_client_that_hangs_up_leaves_no_traceback(text_server: PredictionServer,
                                                    capfd: pytest.CaptureFixture[str]) -> None:
    for wait in (0, 0.1):  # before the server reads the request, and while it predicts
        host, port = text_server.server_address[:2]
        connection = socket.create_connection((host, port), timeout=TIMEOUT)
        connection.sendall(_post_head(29) + b'{"inputs": ["a superb film"]}')
        time.sleep(wait)
        # Linger 0: close with a reset, as a killed client or a dropped network does.
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        connection.close()
    time.sleep(1.5)  # the server's write to the closed socket happens after the batch wait
    assert _request(f"{text_server.url}/health")[0] == 200  # it goes on serving
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception occurred" not in err, err


def test_health_shows_no_filesystem_path(text_server: PredictionServer, text_run: Path) -> None:
    code, health = _request(f"{text_server.url}/health")
    assert code == 200 and health["run"] == text_run.name == "words"
    assert str(text_run.parent) not in json.dumps(health) and "/" not in json.dumps(health)


def _tf_serving_client(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """What a client written for TF Serving's REST API posts, byte for byte."""
    request = urllib.request.Request(url, data=json.dumps(body).encode("utf-8"),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read().decode("utf-8"))


def test_the_tf_serving_form_for_text(text_server: PredictionServer) -> None:
    texts = ["a superb film", "the dull plot"]
    code, body = _tf_serving_client(f"{text_server.url}/v1/models/words:predict", {
        "signature_name": "serving_default", "instances": texts})
    assert code == 200 and list(body) == ["predictions"]
    rows = body["predictions"]  # one list of probabilities per instance, in /health's order
    assert len(rows) == 2 and all(len(row) == 2 for row in rows)
    assert [int(np.argmax(row)) for row in rows] == [1, 0]  # pos, neg
    _, ours = _predict(text_server, {"inputs": texts, "top_k": 2})
    assert rows[0][1] == pytest.approx(ours["predictions"][0]["probabilities"][0], abs=1e-6)
    encoded = base64.b64encode(texts[0].encode()).decode()
    code, body = _tf_serving_client(f"{text_server.url}/v1/models/words/versions/1:predict",
                                    {"instances": [{"b64": encoded}]})
    assert code == 200 and body["predictions"][0] == pytest.approx(rows[0])


def test_the_tf_serving_form_for_images(image_server: PredictionServer, tmp_path: Path) -> None:
    green = base64.b64encode(write_image(tmp_path / "g.png", (30, 200, 40)).read_bytes()).decode()
    code, body = _tf_serving_client(f"{image_server.url}/predict",
                                    {"instances": [{"b64": green}, {"b64": green}]})
    assert code == 200 and len(body["predictions"]) == 2
    classes = _request(f"{image_server.url}/health")[1]["classes"]
    assert classes[int(np.argmax(body["predictions"][0]))] == "green"
    assert sum(body["predictions"][0]) == pytest.approx(1, abs=1e-5)
    broken = base64.b64encode(b"not an image").decode()
    code, body = _tf_serving_client(f"{image_server.url}/predict",
                                    {"instances": [{"b64": green}, {"b64": broken}]})
    assert code == 400 and body["error"].startswith("instance 1 is not a decodable image")
    assert "input-" not in body["error"] and "/" not in body["error"]


@pytest.mark.parametrize(("body", "words"), [
    ({"instances": []}, '"instances" must be a non-empty list'),
    ({"instances": [5]}, "instance 0 must be a string or {\"b64\": \"...\"}"),
    ({"instances": [{"b64": 5}]}, "instance 0 must be a string or {\"b64\": \"...\"}"),
    ({"instances": ["x"], "top_k": 2}, "unknown field 'top_k'"),
    ({"instances": ["x"], "signature_name": "other"}, "signature 'other'"),
    ({"instances": ["x"], "inputs": ["y"]}, "unknown field 'inputs'"),
    ({"instances": [{"b64": "!!"}]}, "instance 0 is not base64"),
    ({"instances": [" "]}, "instance 0: empty text"),
])
def test_bad_tf_serving_requests(text_server: PredictionServer, body: dict[str, Any],
                                 words: str) -> None:
    code, answer = _tf_serving_client(f"{text_server.url}/predict", body)
    assert code == 400 and words in answer["error"], answer

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
    assert _request(f"{text_server.url}/v1/models/a/b:predict", b"{}")[0] == 404
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
                                "0", "--timeout", "30"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
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
