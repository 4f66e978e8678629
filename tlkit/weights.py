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

import contextlib
import hashlib
import inspect
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

from tlkit.backbones import Backbone, build_backbone, get_backbone
from tlkit.errors import UserError
from tlkit.keras_internals import keras_get_file_replaced

if TYPE_CHECKING:
    from collections.abc import Iterator

    import keras

# A download that has not started within this many seconds is treated as "offline".
DOWNLOAD_TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class KerasWeightsFile:
    """The ImageNet weights file Keras fetches for a backbone: name, URL, hash, cache path.

    Example:
        >>> found = expected_weights_file("vgg16")  # read from Keras, nothing downloaded
        >>> found.cache_path == keras_cache_dir() / found.fname, len(found.file_hash)  # md5
        (True, 32)
    """

    fname: str
    origin: str
    file_hash: str | None
    cache_path: Path


class _Captured(Exception):
    """Raised by the stand-in for ``get_file`` to stop the constructor once it named its file."""


def keras_cache_dir() -> Path:
    """Keras's model cache, ``<Keras home>/models``, where ImageNet weights files are kept.

    The home is Keras's: ``$KERAS_HOME``, else ``~/.keras`` (``/tmp/.keras`` when ``~`` is
    not writable), created if missing; a home that still cannot be written falls back to
    ``/tmp/.keras``, as ``keras.utils.get_file`` does. Keras reads the environment once, at
    import; tlkit reads it at each call and passes the folder to ``get_file``, so the two
    never disagree.

    Example:
        >>> keras_cache_dir().name
        'models'
    """
    return _keras_home() / "models"


def _keras_home() -> Path:
    if "KERAS_HOME" in os.environ:
        home = os.environ["KERAS_HOME"]
    else:
        user = os.path.expanduser("~")
        home = os.path.join(user if os.access(user, os.W_OK) else "/tmp", ".keras")
    home = os.path.expanduser(home)
    with contextlib.suppress(OSError):  # Keras creates its home at import, if it can
        os.makedirs(home, exist_ok=True)
    if not os.access(home, os.W_OK):
        home = os.path.join("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir(), ".keras")
    return Path(home)


def _get_file_call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> inspect.BoundArguments:
    """A call of ``keras.utils.get_file`` bound to its public signature, Keras's home made
    explicit so that Keras stores the file where tlkit looks for it."""
    import keras

    call = inspect.signature(keras.utils.get_file).bind(*args, **kwargs)
    if call.arguments.get("cache_dir") is None:
        call.arguments["cache_dir"] = str(_keras_home())
    return call


def _requested_file(call: inspect.BoundArguments) -> KerasWeightsFile:
    """The file a keras.applications constructor asks ``get_file`` for, and its cache path."""
    origin = call.arguments["origin"]
    fname = call.arguments.get("fname") or os.path.basename(urllib.parse.urlsplit(origin).path)
    cache = Path(call.arguments["cache_dir"]) / call.arguments.get("cache_subdir", "datasets")
    return KerasWeightsFile(fname, origin, call.arguments.get("file_hash"), cache / fname)


def _has_hash(path: Path, call: inspect.BoundArguments) -> bool:
    """Whether ``path`` has the hash the call names, by get_file's documented rule: a
    64-digit hash is sha256 and a shorter one md5, unless ``hash_algorithm`` says which."""
    expected = call.arguments["file_hash"]
    algorithm = call.arguments.get("hash_algorithm", "auto")
    if algorithm == "auto":
        algorithm = "sha256" if len(expected) == 64 else "md5"
    digest = hashlib.new(algorithm)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest() == expected


def _check_has_imagenet_file(row: Backbone) -> None:
    if not row.has_imagenet:
        raise UserError(f"backbone '{row.name}' has no ImageNet weights; use --weights none")
    if row.offline_weights:
        raise UserError(f"backbone '{row.name}' ships its ImageNet weights in a Python package; "
                        "there is no file to import")


def expected_weights_file(name: str, input_size: int | None = None) -> KerasWeightsFile:
    """Ask Keras which ImageNet file (no top) it would load for ``name``, without downloading.

    The keras.applications constructors call Keras's ``get_file`` with the file name, URL and
    hash; a stand-in for that call (``tlkit.keras_internals``) reads them from Keras itself
    instead of copying Keras's tables into tlkit, then stops the constructor.

    Example:
        >>> expected_weights_file("vgg16").fname
        'vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5'
    """
    row = get_backbone(name)
    _check_has_imagenet_file(row)
    found: list[KerasWeightsFile] = []

    def capture(*args: Any, **kwargs: Any) -> str:
        found.append(_requested_file(_get_file_call(args, kwargs)))
        raise _Captured  # the file is named: nothing needs loading

    with contextlib.suppress(_Captured), \
            keras_get_file_replaced(capture, f"built {row.name} with ImageNet weights"):
        build_backbone(row.name, input_size or row.default_size, weights="imagenet")
    return found[0]


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
    import keras

    requested: list[KerasWeightsFile] = []
    fetched: list[str] = []

    def get_file(*args: Any, **kwargs: Any) -> str:
        call = _get_file_call(args, kwargs)
        wanted = _requested_file(call)
        requested.append(wanted)
        if not wanted.cache_path.is_file():
            _resolve_in_time(wanted.origin, DOWNLOAD_TIMEOUT_SECONDS)
        path = keras.utils.get_file(*call.args, **call.kwargs)
        fetched.append(path)
        return path

    try:
        with _download_timeout(DOWNLOAD_TIMEOUT_SECONDS), \
                keras_get_file_replaced(get_file, f"built {row.name} with ImageNet weights"):
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
    source = Path(path).expanduser()
    if not source.is_file():
        raise UserError(f"weights file '{source}' does not exist")
    row = get_backbone(backbone)
    _check_has_imagenet_file(row)
    requested: list[KerasWeightsFile] = []
    with tempfile.TemporaryDirectory() as scratch:

        def get_file(*args: Any, **kwargs: Any) -> str:
            call = _get_file_call(args, kwargs)
            wanted = _requested_file(call)
            requested.append(wanted)
            if wanted.file_hash and not _has_hash(source, call):
                raise UserError(f"'{source}' is not the file Keras uses for {row.name}: its hash "
                                f"differs from {wanted.file_hash}; download {wanted.origin}")
            alias = Path(scratch) / wanted.fname
            try:
                alias.symlink_to(source.resolve())
            except OSError:  # no symlinks (some Windows set-ups): check a copy instead
                shutil.copyfile(source, alias)
            return str(alias)

        try:
            with keras_get_file_replaced(get_file, f"built {row.name} with ImageNet weights"):
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
