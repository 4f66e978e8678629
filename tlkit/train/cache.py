"""Frozen-backbone features computed once per image, kept on disk, and a head trained on them.

A stage that trains only the head (backbone frozen, BatchNorm in inference mode) gives every
image the same backbone features in every epoch, so running the backbone each epoch is wasted
work. ``split_classifier`` cuts the classifier into the frozen part and the head (sharing the
classifier's layers, so training the head trains the classifier), ``build_feature_cache``
runs the frozen part once and writes a ``.npy`` file, and ``head_dataset`` streams it back
from a memory map for ``head.fit``.

Layout on disk, in ``cache_dir``: ``<key>.npy`` (float32, ``views * n_images`` rows,
view-major: row ``v * n_images + i`` is view v of image i) and ``<key>.json`` (the manifest:
the key's parts and how the file was made). The key is a hash of everything the features
depend on: the caller's parts (backbone, preprocessing, ...), every weight of the frozen
part, the input size, the augmentation and its views, and the files with sizes and mtimes.

Example:
    >>> feature_model, head = split_classifier(model)  # doctest: +SKIP
    >>> train = build_feature_cache(feature_model, paths, 32, "cache",
    ...                             {"backbone": "vgg16"})  # doctest: +SKIP
    >>> head.fit(head_dataset(train, labels, 32, shuffle=True), epochs=10)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tlkit.errors import UserError
from tlkit.progress import Phase, phase, say

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

    from tlkit.recipes import Augment
    from tlkit.seeds import EpochClock

# Bumped when the file layout or the meaning of a key part changes, so old files are not reused.
CACHE_FORMAT = 1
_POOLING_CLASSES = ("GlobalAveragePooling2D", "GlobalMaxPooling2D")


@dataclass
class FeatureCache:
    """Features of one list of images: a read-only memory map and the manifest beside it.

    Example:
        >>> cache = FeatureCache(Path("c.npy"), np.arange(12.0).reshape(6, 2),
        ...                      {"views": 2, "n_images": 3}, reused=False)
        >>> cache.view(1).tolist()  # view 1 of each of the 3 images
        [[6.0, 7.0], [8.0, 9.0], [10.0, 11.0]]
    """

    path: Path
    features: np.ndarray
    manifest: dict[str, Any]
    reused: bool

    @property
    def views(self) -> int:
        """Rows per image (augmented views; 1 without augmentation)."""
        return int(self.manifest["views"])

    @property
    def n_images(self) -> int:
        """Number of images (the file list's length)."""
        return int(self.manifest["n_images"])

    def view(self, index: int) -> np.ndarray:
        """The rows of one view, one per image in file order (a slice of the memory map)."""
        return self.features[index * self.n_images:(index + 1) * self.n_images]


def split_classifier(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """(feature model, head) of a ``build_classifier`` model; both share its layers.

    The feature model runs input -> preprocessing -> backbone, plus the head's leading
    global pooling: pooling has no weights, and pooled features are 49 times smaller than a
    7x7 map on disk. The head is the rest of the classifier's head; fitting it updates the
    classifier's own weights, so the saved classifier predicts what head training measured.

    Example:
        >>> from tlkit.backbones import build_backbone, get_backbone
        >>> from tlkit.models.image import build_classifier
        >>> model = build_classifier(get_backbone("tiny_cnn"), build_backbone("tiny_cnn"), 3)
        >>> features, head = split_classifier(model)
        >>> features.output_shape, head.output_shape
        ((None, 32), (None, 3))
    """
    import keras

    head = model.get_layer("head")
    for part in (model, head):
        if not _is_chain(part):
            raise ValueError(f"model '{part.name}' is not a chain of layers; the feature cache "
                             "needs build_classifier's layout (preprocessing, backbone, head)")
    inputs = keras.Input(shape=model.input_shape[1:], name=model.layers[0].name)
    x = inputs
    for layer in model.layers[1:model.layers.index(head)]:
        x = layer(x)
    head_layers = head.layers[1:]
    pooled = 0
    while pooled < len(head_layers) and type(head_layers[pooled]).__name__ in _POOLING_CLASSES:
        x = head_layers[pooled](x)
        pooled += 1
    feature_model = keras.Model(inputs, x, name="frozen_features")
    if not pooled:
        return feature_model, head
    head_input = keras.Input(shape=x.shape[1:], name="pooled_features")
    y = head_input
    for layer in head_layers[pooled:]:
        y = layer(y)
    return feature_model, keras.Model(head_input, y, name="head_on_features")


def _is_chain(model: keras.Model) -> bool:
    """True when each layer's one input is the previous layer's output (read from the config)."""
    layers = model.get_config()["layers"]
    for previous, layer in zip(layers, layers[1:], strict=False):
        nodes = layer["inbound_nodes"]
        inputs = nodes[0]["args"] if len(nodes) == 1 else []
        if len(inputs) != 1 or not isinstance(inputs[0], dict):
            return False
        if inputs[0].get("config", {}).get("keras_history", [None])[0] != previous["name"]:
            return False
    return True


def weights_fingerprint(model: keras.Model) -> str:
    """A hash of every weight's shape and bytes (names left out: Keras numbers them per process).

    All weights, not a sample: a fine-tuned stage may change only the top block or only
    BatchNorm statistics, and hashing is cheap next to one forward pass over the images
    (VGG16's 56 MB of weights hash in 0.3 s, EfficientNet-Lite0's in 0.1 s).

    Example:
        >>> import keras
        >>> len(weights_fingerprint(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])))
        32
    """
    digest = hashlib.blake2b(digest_size=16)
    for variable in model.weights:
        array = np.ascontiguousarray(variable.numpy())
        digest.update(f"{array.dtype.str}{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def files_fingerprint(paths: list[str]) -> str:
    """A hash of the file list in order, with each file's size and modification time.

    Example:
        >>> len(files_fingerprint([]))
        32
    """
    digest = hashlib.blake2b(digest_size=16)
    for path in paths:
        stat = os.stat(path)
        digest.update(f"{os.path.abspath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def cache_key(feature_model: keras.Model, paths: list[str], key_parts: dict[str, Any],
              augment: Augment | None, views: int, seed: int, batch_size: int
              ) -> dict[str, Any]:
    """Everything the cached features depend on, as a JSON-safe dict (hashed into the name).

    The seed and batch size matter only with augmentation: they fix which random draw each
    image gets; without it the features do not depend on them.

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.GlobalMaxPooling2D()])
        >>> key = cache_key(model, [], {"backbone": "tiny_cnn"}, None, 1, seed=0, batch_size=32)
        >>> key["backbone"], key["input_shape"], key["feature_shape"], "seed" in key
        ('tiny_cnn', [8, 8, 3], [3], False)
    """
    key: dict[str, Any] = {"format": CACHE_FORMAT, **key_parts,
                           "weights": weights_fingerprint(feature_model),
                           "input_shape": list(feature_model.input_shape[1:]),
                           "feature_shape": list(feature_model.output_shape[1:]),
                           "augment": dataclasses.asdict(augment) if augment else None,
                           "views": views, "n_images": len(paths),
                           "files": files_fingerprint(paths)}
    if augment:
        key.update(seed=seed, batch_size=batch_size)
    return key


def build_feature_cache(feature_model: keras.Model, paths: list[str], batch_size: int,
                        cache_dir: str | Path, key_parts: dict[str, Any], *,
                        augment: Augment | None = None, views: int = 1, seed: int = 0,
                        name: str = "cache") -> FeatureCache:
    """Features of ``paths`` through ``feature_model``, read from ``cache_dir`` or computed once.

    Computing them is the progress phase ``name`` (images done, rate, ETA; its time is
    recorded as ``cache``); finding them made already is one line.

    With ``augment``, each of ``views`` passes draws the augmentation layers afresh (seeded),
    giving ``views`` rows per image; without it ``views`` must be 1. Batches are appended to
    the file as they come, so memory does not grow with the number of images; the finished
    file is renamed into place and then the manifest written, so a killed run leaves no file
    that a later run would take as complete.

    Example:
        >>> import keras, tempfile
        >>> paths = [f"{tempfile.mkdtemp()}/image.png" for _ in range(3)]
        >>> for path in paths: keras.utils.save_img(path, np.zeros((8, 8, 3)))
        >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.GlobalMaxPooling2D()])
        >>> cache = build_feature_cache(model, paths, 2, tempfile.mkdtemp(), {"backbone": "demo"})
        >>> cache.features.shape, cache.reused
        ((3, 3), False)
    """
    if views < 1:
        raise UserError(f"augment_views must be at least 1 (got {views})")
    if views > 1 and not augment:
        raise UserError(f"augment_views: {views} needs augmentation; turn augment on or set "
                        "augment_views: 1")
    if not paths:
        raise ValueError("no image paths to cache")
    key = cache_key(feature_model, paths, key_parts, augment, views, seed, batch_size)
    file_name = hashlib.blake2b(json.dumps(key, sort_keys=True).encode(),
                                digest_size=8).hexdigest()
    folder = Path(cache_dir)
    npy_path, manifest_path = folder / f"{file_name}.npy", folder / f"{file_name}.json"
    if manifest_path.is_file() and npy_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("key") == key:
            say(f"{name}: {len(paths)} images' features already made ({npy_path.name})")
            return FeatureCache(npy_path, np.load(npy_path, mmap_mode="r"), manifest, True)
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    partial = folder / f"{file_name}.npy.partial-{os.getpid()}"
    try:
        with phase(name, views * len(paths), unit="image", record="cache",
                   detail="features of the frozen backbone") as step:
            _write_features(partial, feature_model, paths, batch_size, augment, views, seed,
                            step)
        os.replace(partial, npy_path)
    finally:
        partial.unlink(missing_ok=True)
    manifest = {"key": key, "views": views, "n_images": len(paths),
                "build_seconds": round(time.perf_counter() - start, 2)}
    manifest_partial = manifest_path.with_suffix(f".json.partial-{os.getpid()}")
    manifest_partial.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(manifest_partial, manifest_path)
    return FeatureCache(npy_path, np.load(npy_path, mmap_mode="r"), manifest, False)


def _write_features(path: Path, feature_model: keras.Model, paths: list[str], batch_size: int,
                    augment: Augment | None, views: int, seed: int, step: Phase) -> None:
    """Append each batch's features to a .npy file (header first, shape known in advance).

    Plain appends rather than filling an ``open_memmap``: the dirty pages of a memory map
    count in the process's resident memory until written back, so filling one makes peak
    memory grow with the number of images; appended bytes sit in the OS's page cache only.
    """
    from tlkit.data.images import augmentation_layers, make_dataset

    size = feature_model.input_shape[1]
    shape = (views * len(paths), *feature_model.output_shape[1:])
    layers = augmentation_layers(augment, seed) if augment else []
    images = make_dataset(paths, np.zeros(len(paths), "int32"), size, batch_size)
    written = 0
    with open(path, "wb") as file:
        np.lib.format.write_array_header_1_0(
            file, {"descr": "<f4", "fortran_order": False, "shape": shape})
        for _ in range(views):
            # The layers' seed generators advance with every call, so each pass is a new draw.
            for batch, _labels in images:
                for layer in layers:
                    batch = layer(batch, training=True)
                features = np.asarray(feature_model.predict_on_batch(batch), "<f4")
                file.write(features.tobytes())
                written += len(features)
                step.advance(len(features))
    if written != shape[0]:
        raise RuntimeError(f"wrote {written} feature rows, expected {shape[0]}")


def head_dataset(cache: FeatureCache, labels: np.ndarray, batch_size: int, *,
                 shuffle: bool = False, seed: int = 0, all_views: bool = False,
                 clock: EpochClock | None = None) -> tf.data.Dataset:
    """(features, label) batches read from the cache's memory map, for ``head.fit``.

    Each epoch (each new iterator, which ``fit`` makes per epoch) draws one view per image
    at random, seeded by ``seed`` and the epoch number, so K views act like K-fold
    augmentation without making an epoch K times longer; ``all_views=True`` yields every view
    instead. Rows are read in sorted order within a batch, which keeps a memory map larger
    than RAM reading forward. With a ``clock`` the epoch number comes from it, so a resumed
    run draws what the uninterrupted one drew.

    Example:
        >>> cache = FeatureCache(Path("c.npy"), np.eye(3, dtype="float32"),
        ...                      {"views": 1, "n_images": 3}, reused=False)
        >>> [labels.numpy().tolist() for _, labels in head_dataset(cache, [0, 1, 2], 2)]
        [[0, 1], [2]]
        >>> [y.shape.as_list() for _, y in head_dataset(cache, np.eye(3, dtype=int), 2)]
        [[2, 3], [1, 3]]
    """
    import tensorflow as tf

    labels = np.asarray(labels, "int32")
    if len(labels) != cache.n_images:
        raise ValueError(f"{len(labels)} labels for a cache of {cache.n_images} images")
    n_rows = cache.n_images * (cache.views if all_views else 1)
    epochs = iter(range(1 << 62))

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        rng = clock.rng("features") if clock else np.random.default_rng([seed, next(epochs)])
        rows = _epoch_rows(cache.n_images, cache.views, all_views, rng)
        if shuffle:
            rows = rng.permutation(rows)
        for start in range(0, n_rows, batch_size):
            chosen = np.sort(rows[start:start + batch_size])
            yield np.asarray(cache.features[chosen]), labels[chosen % cache.n_images]

    spec = (tf.TensorSpec((None, *cache.features.shape[1:]), tf.float32),
            tf.TensorSpec((None, *labels.shape[1:]), tf.int32))  # ids, or label-set rows
    dataset = tf.data.Dataset.from_generator(batches, output_signature=spec)
    # A known length lets Keras show progress and stops it warning that the input ran out.
    steps = -(-n_rows // batch_size)
    return dataset.apply(tf.data.experimental.assert_cardinality(steps)).prefetch(2)


def _epoch_rows(n_images: int, views: int, all_views: bool, rng: np.random.Generator
                ) -> np.ndarray:
    """Cache rows for one epoch: one (random) view per image, or all of them."""
    if all_views or views == 1:
        return np.arange(n_images * (views if all_views else 1))
    return rng.integers(views, size=n_images) * n_images + np.arange(n_images)
