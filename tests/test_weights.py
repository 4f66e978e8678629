"""Weights: Keras's ImageNet cache, offline failures, files for the wrong architecture, import.

Nothing here reaches the internet: Keras's weight URLs are pointed at loopback addresses,
and a guard fails any test that tries another host.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_user_error

from tlkit import weights as tlkit_weights
from tlkit.weights import build_weighted_backbone, expected_weights_file, import_weights

CLOSED_PORT = "http://127.0.0.1:9/"  # the discard port: nothing listens, connecting fails at once
M3_FILE = "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"
M3_KEY = "small_224_1.0_float"  # mobilenet_v3.WEIGHTS_HASHES key of MobileNetV3Small


@pytest.fixture(autouse=True)
def keras_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh Keras cache per test: tlkit reads $KERAS_HOME at each call and hands the folder
    to Keras's get_file, so the variable is enough. Keras is imported first: at import it
    writes keras.json into the home it sees."""
    import keras  # noqa: F401

    home = tmp_path / "keras_home"
    home.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


@pytest.fixture(autouse=True)
def no_internet(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Refuse (and report) any name look-up or download of a host that is not loopback.

    Downloads from the reserved ``.example`` domain may start: their look-up is still refused
    here, or answered by a test's own stand-in.
    """
    from keras.src.utils import file_utils

    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                 "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    attempts: list[str] = []
    real_getaddrinfo, real_urlretrieve = socket.getaddrinfo, file_utils.urlretrieve

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in ("127.0.0.1", "localhost"):
            attempts.append(str(host))
            raise OSError(f"test guard: no look-up of {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    def urlretrieve(url: str, *args: Any, **kwargs: Any) -> Any:
        if not url.startswith(("http://127.0.0.1:", "http://weights.example/", "file://")):
            attempts.append(url)
            raise OSError(f"test guard: no download of {url}")
        return real_urlretrieve(url, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(file_utils, "urlretrieve", urlretrieve)
    yield attempts
    assert attempts == [], f"a test tried to reach the internet: {attempts}"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Weights files of MobileNetV3Small (32 px) and tiny_cnn, in Keras 3 and legacy .h5 form.

    Keras's own ImageNet files are legacy .h5 files, loaded layer by layer in order.
    """
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    from tlkit.backbones import build_backbone

    folder = tmp_path_factory.mktemp("weights")
    found: dict[str, Any] = {}
    for name in ("mobilenetv3small", "tiny_cnn"):
        model = build_backbone(name, 32)
        for variable in model.weights:  # not the initial values, so a load is visible
            variable.assign(np.random.default_rng(1).normal(size=variable.shape) * 0.1)
        short = "m3" if name == "mobilenetv3small" else "tiny"
        model.save_weights(folder / f"{short}.weights.h5")
        with h5py.File(folder / f"{short}_legacy.h5", "w") as handle:
            legacy_h5_format.save_weights_to_hdf5_group(handle, model)
        found[short] = folder / f"{short}.weights.h5"
        found[f"{short}_legacy"] = folder / f"{short}_legacy.h5"
        found[f"{short}_values"] = [w.numpy() for w in model.weights]
    return found


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _point_m3_at(monkeypatch: pytest.MonkeyPatch, base: str, no_top_hash: Any = "keep") -> None:
    """Send MobileNetV3's downloads to ``base``; optionally replace its no-top file hash."""
    from keras.src.applications import mobilenet_v3

    monkeypatch.setattr(mobilenet_v3, "BASE_WEIGHT_PATH", base)
    if no_top_hash != "keep":
        top_hash = mobilenet_v3.WEIGHTS_HASHES[M3_KEY][0]
        monkeypatch.setitem(mobilenet_v3.WEIGHTS_HASHES, M3_KEY, (top_hash, no_top_hash))


def _files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def _assert_same_weights(model: Any, values: list[np.ndarray]) -> None:
    assert len(model.weights) == len(values)
    for variable, value in zip(model.weights, values, strict=True):
        np.testing.assert_array_equal(variable.numpy(), value, err_msg=variable.path)


# --- which file Keras expects -------------------------------------------------------------

def test_expected_file_for_vgg16_comes_from_keras_without_downloading(keras_home: Path) -> None:
    expected = expected_weights_file("vgg16", 32)
    assert expected.fname == "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert expected.file_hash == "6d6bbae143d832006294945121d1f1fc"
    assert expected.origin == ("https://storage.googleapis.com/tensorflow/keras-applications/"
                               f"vgg16/{expected.fname}")
    assert expected.cache_path == keras_home / "models" / expected.fname
    assert _files_in(keras_home) == []


def test_expected_file_for_mobilenetv2_depends_on_input_size(keras_home: Path) -> None:
    expected = expected_weights_file("mobilenetv2", 96)
    assert expected.fname == "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5"
    assert expected.file_hash is None  # Keras checks no hash for this family
    assert expected.origin.endswith("/mobilenet_v2/" + expected.fname)
    assert expected.cache_path == keras_home / "models" / expected.fname
    assert _files_in(keras_home) == []


def test_backbones_without_an_imagenet_file() -> None:
    assert_user_error(lambda: expected_weights_file("tiny_cnn"), "tiny_cnn", "no ImageNet weights")
    assert_user_error(lambda: expected_weights_file("efficientnet_lite0"), "Python package")
    assert_user_error(lambda: expected_weights_file("vgg61"), "unknown backbone 'vgg61'", "vgg16")


def test_cache_dir_is_keras_home_read_at_each_call(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "new" / "home"))
    assert tlkit_weights.keras_cache_dir() == tmp_path / "new" / "home" / "models"
    assert (tmp_path / "new" / "home").is_dir()  # created, as Keras creates its home
    monkeypatch.delenv("KERAS_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    (tmp_path / "user").mkdir()
    assert tlkit_weights.keras_cache_dir() == tmp_path / "user" / ".keras" / "models"


def test_cache_dir_follows_keras_fallback_for_a_home_that_cannot_be_created(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests run as root, which may write anywhere: a file in the way is what cannot be made.
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "file" / ".keras"))
    assert tlkit_weights.keras_cache_dir() == Path("/tmp/.keras/models")
    monkeypatch.delenv("KERAS_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "file"))
    assert tlkit_weights.keras_cache_dir() == Path("/tmp/.keras/models")


def test_cache_dir_agrees_with_keras_own_rule(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Keras decides its home when its config module runs; run a fresh copy of it here."""
    import importlib.util

    from keras.src.backend import config

    def keras_home_now() -> Path:
        spec = importlib.util.spec_from_file_location("keras_config_copy", config.__file__)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return Path(os.path.expanduser(module.keras_home()))

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    assert tlkit_weights.keras_cache_dir() == keras_home_now() / "models"
    monkeypatch.delenv("KERAS_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    (tmp_path / "user").mkdir()
    assert tlkit_weights.keras_cache_dir() == keras_home_now() / "models"


def test_keras_falls_back_to_tmp_for_a_folder_it_cannot_create(tmp_path: Path) -> None:
    """The fallback tlkit copies, observed in Keras's get_file (a local file, no network)."""
    import keras

    source = tmp_path / "source.bin"
    source.write_bytes(b"weights")
    (tmp_path / "file").write_text("not a folder")
    fname = f"tlkit-test-{os.getpid()}-{time.monotonic_ns()}.bin"
    path = Path(keras.utils.get_file(fname, origin=source.as_uri(), cache_subdir="models",
                                     cache_dir=str(tmp_path / "file" / ".keras")))
    try:
        assert path == Path("/tmp/.keras/models") / fname
    finally:
        path.unlink(missing_ok=True)


# --- imagenet through Keras's cache -------------------------------------------------------

def test_imagenet_offline_fails_fast_naming_the_file_and_the_import_command(
        keras_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _point_m3_at(monkeypatch, CLOSED_PORT)
    start = time.monotonic()
    message = assert_user_error(
        lambda: build_weighted_backbone("mobilenetv3small", 32, "imagenet"),
        "not in Keras's cache", str(keras_home / "models" / M3_FILE), CLOSED_PORT + M3_FILE,
        f"tlkit weights import {M3_FILE} --backbone mobilenetv3small")
    assert time.monotonic() - start < 15, message
    assert _files_in(keras_home) == []


def test_imagenet_fails_fast_when_name_lookup_hangs(
        keras_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A socket time-out does not bound DNS; an unanswered look-up must not stall the run."""
    release = threading.Event()
    guarded = socket.getaddrinfo

    def hanging(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "weights.example":
            release.wait(30)
            raise OSError("released")
        return guarded(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    monkeypatch.setattr(tlkit_weights, "DOWNLOAD_TIMEOUT_SECONDS", 0.5)
    _point_m3_at(monkeypatch, "http://weights.example/")
    start = time.monotonic()
    try:
        assert_user_error(lambda: build_weighted_backbone("mobilenetv3small", 32, "imagenet"),
                        "no answer for weights.example", "tlkit weights import")
        assert time.monotonic() - start < 15
    finally:
        release.set()


@contextmanager
def loopback_server(body: bytes) -> Iterator[tuple[str, list[str]]]:
    """A local HTTP server answering every GET with ``body``: its URL and the paths asked."""
    requested: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            requested.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", requested
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def wrong_file_server() -> Iterator[tuple[str, list[str]]]:
    """A loopback server that answers every GET with bytes that are not the weights."""
    with loopback_server(b"<html>a captive portal, not an HDF5 file</html>" * 20) as served:
        yield served


def test_download_rejected_by_keras_checksum(wrong_file_server: tuple[str, list[str]],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    base, requested = wrong_file_server
    _point_m3_at(monkeypatch, base)
    assert_user_error(lambda: build_weighted_backbone("mobilenetv3small", 32, "imagenet"),
                    "failed Keras's checksum", "hash does not match", base + M3_FILE,
                    f"tlkit weights import {M3_FILE} --backbone mobilenetv3small")
    assert requested == [f"/{M3_FILE}"]


def test_cached_imagenet_file_that_does_not_fit(keras_home: Path, files: dict[str, Any],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A damaged or foreign file in the cache that Keras accepts but cannot load."""
    _point_m3_at(monkeypatch, CLOSED_PORT, no_top_hash=_md5(files["tiny_legacy"]))
    cached = keras_home / "models" / M3_FILE
    cached.parent.mkdir()
    cached.write_bytes(files["tiny_legacy"].read_bytes())
    assert_user_error(lambda: build_weighted_backbone("mobilenetv3small", 32, "imagenet"),
                    f"{cached} does not fit mobilenetv3small", "Layer count mismatch",
                    "delete it", "tlkit weights import")


# --- weights from a file ------------------------------------------------------------------

def test_weights_file_of_the_same_architecture_loads(files: dict[str, Any], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    model = build_weighted_backbone("tiny_cnn", 32, str(files["tiny"]))
    _assert_same_weights(model, files["tiny_values"])
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "mine.weights.h5").write_bytes(files["tiny"].read_bytes())
    _assert_same_weights(build_weighted_backbone("tiny_cnn", 48, "~/mine.weights.h5"),
                         files["tiny_values"])


def test_none_means_random_weights_in_any_case() -> None:
    assert build_weighted_backbone("tiny_cnn", 32, "None").name == "tiny_cnn"


@pytest.mark.parametrize(("backbone", "file", "detail"), [
    ("mobilenetv3small", "tiny", "could not be loaded"),  # Keras 3 file, other model
    ("tiny_cnn", "m3_legacy", "Layer count mismatch"),  # Keras's legacy layout, other model
])
def test_weights_file_for_another_architecture(files: dict[str, Any], backbone: str, file: str,
                                               detail: str) -> None:
    assert_user_error(lambda: build_weighted_backbone(backbone, 32, str(files[file])),
                    str(files[file]), f"does not fit backbone {backbone}", detail)


def test_weights_path_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.weights.h5"
    assert_user_error(lambda: build_weighted_backbone("tiny_cnn", 32, str(missing)),
                    str(missing), "does not exist", "imagenet, none")


def test_weights_file_in_a_foreign_format(tmp_path: Path) -> None:
    torch_file = tmp_path / "resnet50.pth"
    torch_file.write_bytes(b"PK\x03\x04 not keras")
    assert_user_error(lambda: build_weighted_backbone("tiny_cnn", 32, str(torch_file)),
                    "not a Keras weights file", ".weights.h5")


# --- tlkit weights import -----------------------------------------------------------------

def test_import_refuses_a_file_with_the_wrong_hash(keras_home: Path,
                                                   files: dict[str, Any]) -> None:
    assert_user_error(lambda: import_weights(files["m3_legacy"], "mobilenetv3small", 32),
                    str(files["m3_legacy"]), "hash differs", "d3e8ec802a04aa4fc771ee12a9a9b836")
    assert _files_in(keras_home) == []


def test_import_puts_the_file_where_keras_loads_it_offline(
        keras_home: Path, files: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    source = files["m3_legacy"]
    _point_m3_at(monkeypatch, CLOSED_PORT, no_top_hash=_md5(source))
    target = import_weights(source, "mobilenetv3small", 32)
    assert target == keras_home / "models" / M3_FILE
    assert target.read_bytes() == source.read_bytes()
    assert _files_in(keras_home) == [M3_FILE]  # no partial file left behind
    # Keras itself now finds the file, checks its hash and loads it, without the network.
    model = build_weighted_backbone("mobilenetv3small", 32, "imagenet")
    _assert_same_weights(model, files["m3_values"])


def test_import_checks_sha256_too(keras_home: Path, files: dict[str, Any],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    source = files["m3_legacy"]
    sha256 = hashlib.sha256(source.read_bytes()).hexdigest()
    _point_m3_at(monkeypatch, CLOSED_PORT, no_top_hash=sha256)
    assert import_weights(source, "mobilenetv3small", 32).read_bytes() == source.read_bytes()
    _point_m3_at(monkeypatch, CLOSED_PORT, no_top_hash="0" * 64)
    assert_user_error(lambda: import_weights(source, "mobilenetv3small", 32), "hash differs")


def test_import_refuses_a_file_that_does_not_fit(keras_home: Path, files: dict[str, Any],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    source = files["tiny_legacy"]
    _point_m3_at(monkeypatch, CLOSED_PORT, no_top_hash=_md5(source))  # the hash passes
    assert_user_error(lambda: import_weights(source, "mobilenetv3small", 32), str(source),
                    "does not fit backbone mobilenetv3small")
    assert _files_in(keras_home) == []


def test_import_checks_the_file_as_keras_will_load_it(keras_home: Path, files: dict[str, Any],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """With no hash to compare (MobileNet, MobileNetV2), loading is the only check. A Keras 3
    '.weights.h5' file loads under its own name but not as Keras's legacy '..._no_top.h5'."""
    _point_m3_at(monkeypatch, CLOSED_PORT, no_top_hash=None)
    assert_user_error(lambda: import_weights(files["m3"], "mobilenetv3small", 32),
                    str(files["m3"]), "does not fit backbone mobilenetv3small")
    assert _files_in(keras_home) == []


def test_import_is_atomic(keras_home: Path, files: dict[str, Any],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    source = files["m3_legacy"]
    _point_m3_at(monkeypatch, CLOSED_PORT, no_top_hash=_md5(source))

    def copy_half_then_fail(src: Any, dst: Any) -> None:
        Path(dst).write_bytes(Path(src).read_bytes()[:1000])
        raise OSError("disk full")

    monkeypatch.setattr(tlkit_weights.shutil, "copyfile", copy_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        import_weights(source, "mobilenetv3small", 32)
    assert _files_in(keras_home) == []


def test_import_of_a_missing_file(tmp_path: Path) -> None:
    assert_user_error(lambda: import_weights(tmp_path / "gone.h5", "vgg16"), "gone.h5",
                    "does not exist")
