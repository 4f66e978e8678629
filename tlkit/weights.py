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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest import mock

from tlkit.backbones import build_backbone, get_backbone
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

    def __init__(self, kwargs: dict[str, Any]) -> None:
        super().__init__("captured")
        self.kwargs = kwargs


def keras_cache_dir() -> Path:
    """Keras's model cache, as ``keras.utils.get_file`` resolves it (``$KERAS_HOME/models``)."""
    from keras.src.backend import config

    base = os.path.expanduser(config.keras_home())
    if not os.access(base, os.W_OK) and os.path.isdir(base):
        base = os.path.join("/tmp", ".keras")  # get_file's own fallback for read-only homes
    return Path(base) / "models"


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
    if not row.has_imagenet:
        raise UserError(f"backbone '{row.name}' has no ImageNet weights; use --weights none")
    if row.offline_weights:
        raise UserError(f"backbone '{row.name}' ships its ImageNet weights in a Python package; "
                        "there is no file to import")

    def capture(*args: Any, **kwargs: Any) -> str:
        names = ("fname", "origin")
        kwargs.update(zip(names, args, strict=False))
        raise _Captured(kwargs)

    try:
        with mock.patch.object(file_utils, "get_file", capture):
            build_backbone(row.name, input_size or row.default_size, weights="imagenet")
    except _Captured as captured:
        found = captured.kwargs
    else:  # pragma: no cover - would mean Keras loads weights without get_file
        raise RuntimeError(f"Keras built {row.name} with ImageNet weights without a download")
    fname = found.get("fname") or os.path.basename(found["origin"])
    return KerasWeightsFile(fname, found["origin"], found.get("file_hash"),
                            keras_cache_dir() / fname)


@contextmanager
def _download_timeout(seconds: float) -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def build_weighted_backbone(name: str, input_size: int, weights: str) -> keras.Model:
    """Build the backbone ``name`` with ``weights``: ``"imagenet"``, ``"none"`` or a file path.

    Errors a user can fix (offline with no cached file, a file for another architecture, a
    missing file) are UserErrors naming the file and what to do.

    Example:
        >>> build_weighted_backbone("tiny_cnn", 32, "none").name
        'tiny_cnn'
    """
    row = get_backbone(name)
    if weights == "none":
        return build_backbone(row.name, input_size, weights=None)
    if weights == "imagenet":
        if row.offline_weights:
            return build_backbone(row.name, input_size, weights="imagenet")
        expected = expected_weights_file(row.name, input_size)
        try:
            with _download_timeout(DOWNLOAD_TIMEOUT_SECONDS):
                return build_backbone(row.name, input_size, weights="imagenet")
        except Exception as error:  # get_file raises plain Exception for network failures
            raise UserError(
                f"ImageNet weights for {row.name} are not in Keras's cache ({expected.cache_path}) "
                f"and could not be downloaded ({_first_line(error)}); download {expected.origin} "
                f"elsewhere and run: tlkit weights import {expected.fname} --backbone {row.name}"
            ) from error
    return _build_from_file(row.name, input_size, Path(weights))


def _build_from_file(name: str, input_size: int, path: Path) -> keras.Model:
    if not path.is_file():
        raise UserError(f"weights file '{path}' does not exist; pass imagenet, none or a path "
                        "to a weights file")
    model = build_backbone(name, input_size, weights=None)
    try:
        model.load_weights(str(path))
    except Exception as error:  # Keras raises ValueError, KeyError or OSError for misfits
        raise UserError(f"weights file '{path}' does not fit backbone {name} "
                        f"({_first_line(error)}); use a no-top weights file made for {name}"
                        ) from error
    return model


def import_weights(path: str | os.PathLike, backbone: str, input_size: int | None = None
                   ) -> Path:
    """Check a downloaded ImageNet weights file and put it where Keras looks for it.

    The file must have the hash Keras expects (Keras would otherwise download it again) and
    must load into the architecture. Nothing is written unless both hold. ``input_size``
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
    size = input_size or row.default_size
    expected = expected_weights_file(row.name, size)
    if expected.file_hash and not file_utils.validate_file(str(source), expected.file_hash):
        raise UserError(f"'{source}' is not the file Keras uses for {row.name}: its hash differs "
                        f"from {expected.file_hash}; download {expected.origin}")
    _build_from_file(row.name, size, source)
    expected.cache_path.parent.mkdir(parents=True, exist_ok=True)
    partial = expected.cache_path.with_name(expected.cache_path.name + ".part")
    shutil.copyfile(source, partial)
    os.replace(partial, expected.cache_path)  # atomic: Keras never sees half a file
    return expected.cache_path


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:200]
