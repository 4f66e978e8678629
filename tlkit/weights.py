"""Where a backbone's weights come from: Keras's ImageNet cache, a file, or nothing.

``imagenet`` goes through Keras's own ``get_file`` (cache folder, file names, hashes), so a
file that Keras downloaded earlier, or one put in place by ``tlkit weights import``, is used
as is. Offline, a missing file fails within seconds with one line naming the file and the
import command, instead of a long network time-out and a traceback.

Example:
    >>> from tlkit.weights import build_weighted_backbone
    >>> backbone = build_weighted_backbone("tiny_cnn", 32, "none")
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import urllib.parse
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest import mock

from tlkit.backbones import Backbone, build_backbone, get_backbone
from tlkit.errors import UserError

if TYPE_CHECKING:
    from collections.abc import Iterator

    import keras

# A download that has not started within this many seconds is treated as "offline".
DOWNLOAD_TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class KerasWeightsFile:
    """The ImageNet weights file Keras fetches for a backbone: name, URL, hash, cache path."""

    fname: str
    origin: str
    file_hash: str | None
    cache_path: Path


class _Captured(Exception):
    """Raised by the stand-in for ``get_file`` to stop the constructor once it named its file."""

    def __init__(self, found: KerasWeightsFile) -> None:
        super().__init__("captured")
        self.found = found


def keras_cache_dir() -> Path:
    """Keras's model cache, as ``keras.utils.get_file`` resolves it (``$KERAS_HOME/models``)."""
    return _keras_base() / "models"


def _keras_base() -> Path:
    from keras.src.backend import config

    base = os.path.expanduser(config.keras_home())
    if not os.access(base, os.W_OK):  # get_file's own fallback, for read-only or absent homes
        base = os.path.join("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir(), ".keras")
    return Path(base)


def _requested_file(args: tuple[Any, ...], kwargs: dict[str, Any]) -> KerasWeightsFile:
    """The file a keras.applications constructor asks ``get_file`` for, and its cache path."""
    call = {**kwargs, **dict(zip(("fname", "origin"), args, strict=False))}
    origin = call["origin"]
    fname = call.get("fname") or os.path.basename(urllib.parse.urlsplit(origin).path)
    cache = _keras_base() / call.get("cache_subdir", "datasets")
    return KerasWeightsFile(fname, origin, call.get("file_hash"), cache / fname)


def _check_has_imagenet_file(row: Backbone) -> None:
    if not row.has_imagenet:
        raise UserError(f"backbone '{row.name}' has no ImageNet weights; use --weights none")
    if row.offline_weights:
        raise UserError(f"backbone '{row.name}' ships its ImageNet weights in a Python package; "
                        "there is no file to import")


def expected_weights_file(name: str, input_size: int | None = None) -> KerasWeightsFile:
    """Ask Keras which ImageNet file (no top) it would load for ``name``, without downloading.

    The keras.applications constructors call ``keras.src.utils.file_utils.get_file`` with the
    file name, URL and hash; intercepting that call reads them from Keras itself instead of
    copying Keras's tables into tlkit.

    Example:
        >>> expected_weights_file("vgg16").fname
        'vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5'
    """
    from keras.src.utils import file_utils

    row = get_backbone(name)
    _check_has_imagenet_file(row)

    def capture(*args: Any, **kwargs: Any) -> str:
        raise _Captured(_requested_file(args, kwargs))

    try:
        with mock.patch.object(file_utils, "get_file", capture):
            build_backbone(row.name, input_size or row.default_size, weights="imagenet")
    except _Captured as captured:
        return captured.found
    raise RuntimeError(  # pragma: no cover - would mean Keras loads weights without get_file
        f"Keras built {row.name} with ImageNet weights without a download")


@contextmanager
def _download_timeout(seconds: float) -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _resolve_in_time(origin: str, seconds: float) -> None:
    """Raise OSError unless the host a download of ``origin`` connects to resolves in time.

    A socket time-out does not bound name resolution, and with no network but a configured
    DNS server ``getaddrinfo`` can hang for tens of seconds before Keras even starts.
    """
    parts = urllib.parse.urlsplit(origin)
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and host and not urllib.request.proxy_bypass(host):
        proxied = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxied.hostname, proxied.port or 80
    if not host:
        return
    outcome: list[BaseException | None] = []

    def resolve() -> None:
        try:
            socket.getaddrinfo(host, port)
            outcome.append(None)
        except OSError as error:
            outcome.append(error)

    thread = threading.Thread(target=resolve, daemon=True)
    thread.start()
    thread.join(seconds)
    if not outcome:
        raise OSError(f"no answer for {host} within {seconds:g} s (offline?)")
    if outcome[0] is not None:
        raise outcome[0]


def build_weighted_backbone(name: str, input_size: int, weights: str) -> keras.Model:
    """Build the backbone ``name`` with ``weights``: ``"imagenet"``, ``"none"`` or a file path.

    Errors a user can fix (offline with no cached file, a download that fails Keras's
    checksum, a file for another architecture, a missing file) are one-line UserErrors
    naming the file and what to do.

    Example:
        >>> build_weighted_backbone("tiny_cnn", 32, "none").name
        'tiny_cnn'
    """
    row = get_backbone(name)
    if weights.lower() == "none":
        return build_backbone(row.name, input_size, weights=None)
    if weights.lower() != "imagenet":
        return _build_from_file(row.name, input_size, Path(weights).expanduser())
    if row.offline_weights:
        return build_backbone(row.name, input_size, weights="imagenet")
    _check_has_imagenet_file(row)
    return _build_imagenet(row, input_size)


def _build_imagenet(row: Backbone, input_size: int) -> keras.Model:
    """Keras's own constructor and ``get_file``, watched so that failures say what to do."""
    from keras.src.utils import file_utils

    real_get_file = file_utils.get_file
    requested: list[KerasWeightsFile] = []
    fetched: list[str] = []

    def get_file(*args: Any, **kwargs: Any) -> str:
        wanted = _requested_file(args, kwargs)
        requested.append(wanted)
        if not wanted.cache_path.is_file():
            _resolve_in_time(wanted.origin, DOWNLOAD_TIMEOUT_SECONDS)
        path = real_get_file(*args, **kwargs)
        fetched.append(path)
        return path

    try:
        with _download_timeout(DOWNLOAD_TIMEOUT_SECONDS), \
                mock.patch.object(file_utils, "get_file", get_file):
            return build_backbone(row.name, input_size, weights="imagenet")
    except UserError:
        raise
    except Exception as error:  # get_file raises plain Exception for network failures
        if not requested:  # failed before Keras asked for its weights: not a weights problem
            raise
        wanted = requested[0]
        hint = (f"download {wanted.origin} elsewhere and run: tlkit weights import "
                f"{wanted.fname} --backbone {row.name}")
        if fetched:  # the file arrived (or was cached) but Keras could not load it
            raise UserError(
                f"the ImageNet weights file {fetched[0]} does not fit {row.name} "
                f"({_first_line(error)}); delete it, then {hint}") from error
        if "hash does not match" in str(error):  # get_file's check of a finished download
            raise UserError(
                f"the ImageNet weights for {row.name} downloaded from {wanted.origin} failed "
                f"Keras's checksum ({_first_line(error)}); {hint}") from error
        raise UserError(
            f"ImageNet weights for {row.name} are not in Keras's cache ({wanted.cache_path}) "
            f"and could not be downloaded ({_first_line(error)}); {hint}") from error


def _build_from_file(name: str, input_size: int, path: Path) -> keras.Model:
    if not path.is_file():
        raise UserError(f"weights file '{path}' does not exist; pass imagenet, none or a path "
                        "to a weights file")
    if not path.name.endswith((".h5", ".hdf5", ".keras")):
        raise UserError(f"weights file '{path}' is not a Keras weights file (.weights.h5, .h5 "
                        "or .keras)")
    model = build_backbone(name, input_size, weights=None)
    try:
        model.load_weights(str(path))
    except Exception as error:  # Keras raises ValueError, KeyError or OSError for misfits
        raise UserError(_does_not_fit(path, name, error)) from error
    return model


def _does_not_fit(path: Path, name: str, error: BaseException) -> str:
    return (f"weights file '{path}' does not fit backbone {name} ({_first_line(error)}); use a "
            f"no-top weights file made for {name}")


def import_weights(path: str | os.PathLike, backbone: str, input_size: int | None = None
                   ) -> Path:
    """Check a downloaded ImageNet weights file and put it where Keras looks for it.

    The file must have the hash Keras expects (Keras would otherwise download it again) and
    must load into the architecture the way Keras loads it from its cache: Keras's own
    constructor is run with ``get_file`` answering with this file, under Keras's file name
    (Keras picks its loader by name). Nothing is written unless both hold. ``input_size``
    matters only for families with one file per size (MobileNet, MobileNetV2).

    Example:
        >>> import_weights("~/Downloads/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        ...                "vgg16")  # doctest: +SKIP
    """
    from keras.src.utils import file_utils

    source = Path(path).expanduser()
    if not source.is_file():
        raise UserError(f"weights file '{source}' does not exist")
    row = get_backbone(backbone)
    _check_has_imagenet_file(row)
    requested: list[KerasWeightsFile] = []
    with tempfile.TemporaryDirectory() as scratch:

        def get_file(*args: Any, **kwargs: Any) -> str:
            wanted = _requested_file(args, kwargs)
            requested.append(wanted)
            if wanted.file_hash and not file_utils.validate_file(str(source), wanted.file_hash):
                raise UserError(f"'{source}' is not the file Keras uses for {row.name}: its hash "
                                f"differs from {wanted.file_hash}; download {wanted.origin}")
            alias = Path(scratch) / wanted.fname
            try:
                alias.symlink_to(source.resolve())
            except OSError:  # no symlinks (some Windows set-ups): check a copy instead
                shutil.copyfile(source, alias)
            return str(alias)

        try:
            with mock.patch.object(file_utils, "get_file", get_file):
                build_backbone(row.name, input_size or row.default_size, weights="imagenet")
        except UserError:
            raise
        except Exception as error:  # Keras raises ValueError, KeyError or OSError for misfits
            if not requested:
                raise
            raise UserError(_does_not_fit(source, row.name, error)) from error
    target = requested[0].cache_path
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part",
                                       dir=target.parent)
    os.close(handle)
    try:
        shutil.copyfile(source, partial)
        os.replace(partial, target)  # atomic: Keras never sees half a file
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return target


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0].strip()[:200]
