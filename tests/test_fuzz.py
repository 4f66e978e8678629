"""Property tests (hypothesis) over every reader of user files.

Random bytes and random tables in random encodings, random word-vector headers and rows,
random image folders with broken files and symbolic links: each reader either returns a
valid result or raises one ``UserError`` of one line; nothing else ever escapes. Each
property runs a few derandomized examples in the default run (``-m "not slow"``) and many
random ones in the slow run. Known inputs (``KNOWN``: good ones, and bad ones that once
crashed a reader) go through the same checks, each reader call held to what it must do: a
reader that refused a good input, or accepted a bad one, fails ``test_known_inputs``.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import write_image
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tlkit.data.images import (
    check_images,
    find_unreadable,
    images_in,
    read_image_table,
    split_table,
)
from tlkit.data.text import (
    TextData,
    Vocabulary,
    kfold_splits,
    prepare_text_data,
    read_text_table,
)
from tlkit.errors import UserError
from tlkit.predict import gather_inputs
from tlkit.recipes import ImageRecipe
from tlkit.vectors import FORMATS, WordVectors, load_vectors

FAST_EXAMPLES = 25
# A longer soak: TLKIT_FUZZ_EXAMPLES=5000 python -m pytest tests/test_fuzz.py -m slow
SLOW_EXAMPLES = int(os.environ.get("TLKIT_FUZZ_EXAMPLES", "500"))
_COMMON = {"deadline": None, "database": None,
           "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.filter_too_much]}
# The default run replays the same examples every time (a CI failure reproduces); the
# slow run draws new ones.
FAST = settings(max_examples=FAST_EXAMPLES, derandomize=True, **_COMMON)
SLOW = settings(max_examples=SLOW_EXAMPLES, **_COMMON)


def fuzz(check: Callable[..., None], *strategies: st.SearchStrategy
         ) -> tuple[Callable, Callable]:
    """A fast and a slow (``@pytest.mark.slow``) test of ``check`` over ``strategies``."""
    fast, slow = (profile(given(*strategies)(check)) for profile in (FAST, SLOW))
    return fast, pytest.mark.slow(slow)


RAISES = UserError  # the reader must refuse the input with a one-line UserError
RETURNS = "returns"  # the reader must return; the check's own assertions judge the result
# While a known input runs: reader -> what each of its calls must do, in call order (RAISES,
# RETURNS, or the result's ``summary``). Empty while fuzzing, when either outcome is fine.
EXPECTED: dict[str, list[Any]] = {}


@contextmanager
def expecting(outcomes: dict[str, list[Any]]) -> Iterator[None]:
    """Hold every ``outcome()`` call to ``outcomes``; each expected call must happen."""
    EXPECTED.update({reader: list(calls) for reader, calls in outcomes.items()})
    try:
        yield
        left = {reader: calls for reader, calls in EXPECTED.items() if calls}
        assert not left, f"these reader calls never happened: {left}"
    finally:
        EXPECTED.clear()


def summary(result: Any) -> Any:
    """A reader's result as plain lists, to compare with a known input's expectation."""
    if isinstance(result, pd.DataFrame):
        return result.values.tolist()
    if isinstance(result, TextData):
        return result.class_names
    if isinstance(result, Vocabulary):
        return result.tokens
    if isinstance(result, WordVectors):
        return result.matrix.tolist()
    if isinstance(result, list) and result and isinstance(result[0], tuple):  # k folds
        return [[part.tolist() for part in fold] for fold in result]
    return result


def outcome(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``call``'s result, or None when it raised a UserError (which must be one line).

    Fuzzing, either is fine; a known input (``expecting``) says which it must be.
    """
    reader, fuzzing, expected = call.__qualname__, not EXPECTED, None
    if not fuzzing:
        assert EXPECTED.get(reader), f"{reader} was called more often than expected"
        expected = EXPECTED[reader].pop(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = call(*args, **kwargs)
    except UserError as error:
        message = str(error)
        assert message.strip() and "\n" not in message and "\r" not in message, repr(message)
        assert expected is None or expected is RAISES, f"{reader} refused a good input: {message}"
        if fuzzing:  # event() counts hypothesis's examples; it exists only inside them
            event(f"{reader}: UserError")
        return None
    assert expected is not RAISES, f"{reader} accepted a bad input: {summary(result)!r}"
    if expected is not None and expected is not RETURNS:
        assert summary(result) == expected, reader
    if fuzzing:
        event(f"{reader}: returned")
    return result


@contextmanager
def folder() -> Iterator[Path]:
    # Not tmp_path: hypothesis runs many examples inside one test call.
    with tempfile.TemporaryDirectory(prefix="tlkit-fuzz-") as name:
        yield Path(name)


# ------------------------------------------------------------------ tables and line files

ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "utf-32", "latin-1", "cp1252", "shift_jis", "ascii"]
READ_ENCODINGS = [*ENCODINGS, "no-such-codec", "rot13"]
# Characters that break naive CSV and line readers.
TRICKY = list('ab ,;\t|"\'\\\n\r\x00\x85\u2028\ufeff\u00a0é€😀1')
cells = st.one_of(st.sampled_from(["pos", "neg", "good film", "", " ", "1", "01", "text"]),
                  st.text(alphabet=TRICKY, max_size=10), st.text(max_size=6))
# Labels repeat, so that many tables get through to training data (two or more classes).
labels = st.one_of(st.sampled_from(["pos", "neg", " neg ", "1", "01", "a\nb", "\r", ""]), cells)
headers = st.sampled_from([["text", "label"]] * 4 + [["label", "text", "extra"], ["text"]]) | \
    st.lists(cells, max_size=4)
SEPARATORS = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".txt": ",", ".CSV": ","}


@st.composite
def encoded_text(draw: st.DrawFn, text: str) -> tuple[bytes, str]:
    """``text`` in a random encoding, maybe after a BOM; and the encoding."""
    if draw(st.booleans()):
        text = "\ufeff" + text
    encoding = draw(st.sampled_from(ENCODINGS))
    return text.encode(encoding, errors="replace"), encoding


@st.composite
def table_file(draw: st.DrawFn) -> tuple[str, bytes, str]:
    """(suffix, bytes, encoding to read with) of a CSV-ish file, mostly well-formed.

    Each part goes wrong now and then: the separator, quoting, header, row lengths, newline
    style, BOM, the encoding written versus the one read; or the file is random bytes.
    """
    suffix = draw(st.sampled_from([".csv", ".csv", ".tsv", ".tab", ".txt", ".CSV"]))
    kind = draw(st.sampled_from(["table"] * 8 + ["bytes", "empty"]))
    if kind != "table":
        content = b"" if kind == "empty" else draw(st.binary(max_size=300))
        return suffix, content, draw(st.sampled_from(READ_ENCODINGS))
    separator = draw(st.sampled_from([SEPARATORS[suffix]] * 3 + [",", "\t", ";", "|"]))
    quote = draw(st.booleans())
    header = draw(headers)
    two = st.tuples(cells, labels).map(list)
    row = draw(st.sampled_from([two, two, two, st.lists(cells, max_size=4)]))
    rows = [header, *draw(st.lists(row, min_size=draw(st.sampled_from([0, 2, 4])),
                                   max_size=10))]

    def cell(value: str) -> str:
        return '"' + value.replace('"', '""') + '"' if quote else value

    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = newline.join(separator.join(map(cell, row)) for row in rows)
    if draw(st.booleans()):
        text += newline
    content, encoding = draw(encoded_text(text))
    if draw(st.integers(0, 3)) == 0:  # read with the wrong encoding, a quarter of the time
        encoding = draw(st.sampled_from(READ_ENCODINGS))
    return suffix, content, encoding


def check_table_file(file: tuple[str, bytes, str]) -> None:
    """CSV/TSV/line files as training data, image lists and prediction inputs."""
    suffix, content, encoding = file
    with folder() as root:
        path = root / f"data{suffix}"
        path.write_bytes(content)
        table = outcome(read_text_table, path, encoding=encoding)
        if table is not None:
            check_text_table(table)
            check_text_data(table)
        images = outcome(read_image_table, path)
        assert images is None or set(images.columns) == {"path", "label", "split"}
        for kind in ("textcnn", "image"):  # prediction inputs of either kind of run
            recipe = SimpleNamespace(text_column="text", path_column="label")
            run = SimpleNamespace(kind=kind, recipe=recipe)
            inputs = outcome(gather_inputs, run, [], input_file=path, encoding=encoding)
            assert inputs is None or (inputs and all(isinstance(s, str) for s in inputs))


def check_text_table(table: pd.DataFrame) -> None:
    assert list(table.columns) == ["text", "label"]
    assert all(isinstance(v, str) for v in table["text"])
    assert all(isinstance(v, str) and v == v.strip() for v in table["label"])


def check_text_data(table: pd.DataFrame, dev_fraction: float = 0.0) -> None:
    data = outcome(prepare_text_data, table, dev_fraction=dev_fraction)
    if data is None:
        return
    assert len(data.class_names) >= 2
    vocabulary = data.vocabulary
    assert vocabulary.tokens[:2] == ["", "[UNK]"] and vocabulary.max_length >= 1
    for split in data.splits.values():
        assert split.ids.shape == (len(split.texts), vocabulary.max_length)
        assert split.ids.min() >= 0 and split.ids.max() < len(vocabulary)
        assert split.labels.min() >= 0 and split.labels.max() < len(data.class_names)
        assert (split.lengths >= 1).all()


test_table_files, test_table_files_many = fuzz(check_table_file, table_file())


@st.composite
def line_files(draw: st.DrawFn) -> list[tuple[str, bytes]]:
    """One to three class files: sentences one per line in some encoding, or random bytes."""
    names = draw(st.lists(st.sampled_from(["pos", "neg", "obj", "Pos", "a b", ""]),
                          min_size=1, max_size=3))
    files = []
    for name in names:
        if draw(st.booleans()):
            newline = draw(st.sampled_from(["\n", "\r\n"]))
            content, _ = draw(encoded_text(newline.join(draw(st.lists(cells, max_size=5)))))
        else:
            content = draw(st.binary(max_size=100))
        files.append((name, content))
    return files


def check_line_files(files: list[tuple[str, bytes]], kim_layout: bool, encoding: str,
                     dev_fraction: float) -> None:
    """A folder of <class>.txt files, or Kim's rt-polarity.<class> files."""
    with folder() as root:
        paths = []
        for i, (name, content) in enumerate(files):
            # Distinct files even when names repeat: repeated class names are the reader's
            # problem to report, not a file clash here.
            path = root / (f"{i}/rt.{name}" if kim_layout else f"{i}/{name}.txt")
            path.parent.mkdir()
            path.write_bytes(content)
            paths.append(path)
        if not kim_layout:
            for path in paths:
                path.rename(root / path.name)  # the last of a repeated name wins
            source: Any = root
        else:
            source = paths
        table = outcome(read_text_table, source, encoding=encoding)
        if table is not None:
            check_text_table(table)
            check_text_data(table, dev_fraction)


test_line_files, test_line_files_many = fuzz(
    check_line_files, line_files(), st.booleans(), st.sampled_from(["utf-8"] * 3 + READ_ENCODINGS),
    st.sampled_from([0.0, 0.1, 0.5]))


frame_values = st.one_of(labels, st.none(), st.integers(-3, 3), st.floats())
split_values = st.sampled_from(["", "train", "val", "test", "Valid", "tr\nain", " ", None])


def check_frames(rows: list[tuple[Any, Any, Any]], dev_fraction: float, folds: int) -> None:
    """DataFrames from Python: any cell types, labels with line breaks, odd split values."""
    frame = pd.DataFrame(rows, columns=["text", "label", "split"], dtype=object)
    table = outcome(read_text_table, frame)
    if table is not None:
        check_text_table(table)
        check_text_data(table, dev_fraction)
        folded = outcome(kfold_splits, table["label"].tolist(), folds)
        assert folded is None or sorted(np.concatenate([test for _, test in folded]).tolist()) \
            == list(range(len(table)))
    with folder() as root:
        image = write_image(root / "one.png", (0, 200, 0), size=8)
        images = outcome(read_image_table, frame.assign(path=str(image)))
    if images is not None:
        split = outcome(split_table, images, 0.2, 0.2, 0)
        assert split is None or set(split["split"]) <= {"train", "val", "test"}


test_data_frames, test_data_frames_many = fuzz(
    check_frames, st.lists(st.tuples(st.one_of(cells, st.none()), frame_values, split_values),
                           max_size=12),
    st.sampled_from([0.0, 0.1, 0.5]), st.integers(1, 4))


def check_vocabulary_file(content: bytes) -> None:
    """A run's vocabulary.json, damaged or replaced (by a pickle, say)."""
    with folder() as root:
        path = root / "vocabulary.json"
        path.write_bytes(content)
        vocabulary = outcome(Vocabulary.load, path)
    if vocabulary is not None:
        assert vocabulary.tokens[:2] == ["", "[UNK]"] and vocabulary.max_length >= 1
        assert vocabulary.encode([["a", "b"]]).shape == (1, vocabulary.max_length)


vocabulary_json = st.fixed_dictionaries({
    "tokens": st.one_of(st.just(["", "[UNK]", "a"]), st.integers(),
                        st.lists(st.one_of(st.sampled_from(["", "[UNK]"]), st.text(TRICKY),
                                           st.integers()), max_size=4)),
    "tokenizer": st.sampled_from(["kim", "lower", "ki\nm", 3, None]),
    "max_length": st.sampled_from([1, 3, 400, 0, -1, "x", "3", 2.5, None])}).map(
        lambda data: json.dumps(data).encode())
test_vocabulary_files, test_vocabulary_files_many = fuzz(
    check_vocabulary_file,
    st.one_of(vocabulary_json, st.binary(max_size=100), st.just(pickle.dumps({"tokens": []}))))


# ------------------------------------------------------------------------- word vectors

VOCABULARY = ["", "[UNK]", "film", "movie", "the", "é"]
bad_headers = st.one_of(
    st.sampled_from(["3 x", "-3 300", "3 -2", "3 0", "0 3", "x 3", "3", "3 3 3", ""]),
    st.tuples(st.integers(-2, 6), st.integers(-2, 6)).map(lambda t: f"{t[0]} {t[1]}"),
    st.text(alphabet=TRICKY, max_size=8))
numbers = st.floats(width=32, allow_nan=False, allow_infinity=False).map(str)
bad_numbers = st.sampled_from(["nan", "inf", "1e39", "x", "", "0x1", "1_0", "-"])


@st.composite
def vector_file(draw: st.DrawFn) -> tuple[str, bytes]:
    """A word-vector file: text or binary rows under a header, mostly sound, maybe damaged."""
    name = draw(st.sampled_from(["v.txt", "v.vec", "glove.txt", "v.bin", "v.txt.gz",
                                 "v.bin.gz"]))
    dim = draw(st.sampled_from([1, 2, 3, 4, 0]))
    word = st.sampled_from(VOCABULARY[2:] + ["Film", "a b"])
    words = draw(st.lists(st.sampled_from([word] * 3 + [st.text(alphabet=TRICKY, max_size=5)])
                          .flatmap(lambda strategy: strategy), max_size=5))
    header = draw(st.sampled_from(["none", "right", "right", "bad"]))
    data = {"none": "", "right": f"{len(words)} {dim}\n",
            "bad": draw(bad_headers) + "\n"}[header].encode()
    binary = ".bin" in name
    for word in words:
        n = max(dim + draw(st.sampled_from([0] * 8 + [-1, 1])), 0)
        if binary:
            values = draw(st.lists(st.floats(width=32), min_size=n, max_size=n))
            data += word.encode() + b" " + np.asarray(values, "<f4").tobytes() + b"\n"
        else:
            value = draw(st.sampled_from([numbers] * 19 + [bad_numbers]))
            values = draw(st.lists(value, min_size=n, max_size=n))
            data += " ".join([word, *values]).encode() + b"\n"
    if name.endswith(".gz"):
        data = gzip.compress(data)
    kind = draw(st.sampled_from(["whole"] * 5 + ["cut", "random", "gzip-garbage"]))
    if kind == "cut":
        data = data[: draw(st.integers(0, len(data)))]
    elif kind == "random":
        data = draw(st.binary(max_size=200))
    elif kind == "gzip-garbage":
        data = b"\x1f\x8b" + draw(st.binary(max_size=60))
    return name, data


def check_vectors(file: tuple[str, bytes], fmt: str | None, embedding_dim: int | None) -> None:
    name, content = file
    with folder() as root:
        path = root / name
        path.write_bytes(content)
        vectors = outcome(load_vectors, path, VOCABULARY, embedding_dim, fmt)
    if vectors is None:
        return
    assert vectors.matrix.shape == (len(VOCABULARY), vectors.dim) and vectors.dim >= 1
    assert vectors.matrix.dtype == np.float32 and np.isfinite(vectors.matrix).all()
    assert embedding_dim is None or vectors.dim == embedding_dim
    assert 0 <= vectors.found <= vectors.words == len(VOCABULARY) - 1
    assert not vectors.matrix[0].any()  # padding


test_vector_files, test_vector_files_many = fuzz(
    check_vectors, vector_file(), st.sampled_from([None] * 6 + list(FORMATS)),
    st.sampled_from([None] * 6 + [0, 1, 2, 3, 4]))


# ------------------------------------------------------------------------------- images

ENTRY_KINDS = ["random", "text", "zero", "truncated-png", "truncated-jpeg", "dangling",
               "loop", "self-loop", "good"]
# Broken for certain; a truncated PNG or JPEG may still decode, depending on the cut.
ALWAYS_BROKEN = {"random", "text", "zero", "dangling", "loop", "self-loop"}
entries = st.lists(st.tuples(st.sampled_from(["a", "b"]), st.sampled_from(ENTRY_KINDS),
                             st.sampled_from([".jpg", ".jpeg", ".png", ".gif", ".bmp", ".PNG"]),
                             st.binary(max_size=120), st.floats(0, 1)), max_size=6)


@cache
def encoded_image(fmt: str) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype="uint8")).save(buffer, fmt)
    return buffer.getvalue()


def _write_entry(path: Path, kind: str, noise: bytes, cut: float) -> None:
    if kind in ("truncated-png", "truncated-jpeg"):
        data = encoded_image(kind.split("-")[1].upper())
        path.write_bytes(data[: int(cut * (len(data) - 1))])
    elif kind == "dangling":
        path.symlink_to(path.parent / "no-such-image.png")
    elif kind == "loop":
        partner = path.with_name("partner-" + path.name)
        path.symlink_to(partner.name)
        partner.symlink_to(path.name)
    elif kind == "self-loop":
        path.symlink_to(path.name)
    elif kind == "good":
        write_image(path.with_suffix(".png"), (200, 0, 0), size=8)
        path.with_suffix(".png").rename(path)  # PNG bytes whatever the suffix, as users do
    else:
        path.write_bytes({"random": noise, "text": b"not a picture\n", "zero": b""}[kind])


def check_image_folder(extra: list[tuple[str, str, str, bytes, float]], strict: bool) -> None:
    """Two good images per class plus broken files: each broken one is skipped with a reason."""
    with folder() as root:
        for label in ("a", "b"):
            for i in range(2):
                write_image(root / label / f"good{i}.png", (0, 0, 200), size=8, seed=i)
        kinds: dict[str, str] = {}
        for i, (label, kind, suffix, noise, cut) in enumerate(extra):
            path = root / label / f"x{i}{suffix}"
            _write_entry(path, kind, noise, cut)
            kinds[str(path)] = kind
            if kind == "loop":
                kinds[str(path.with_name("partner-" + path.name))] = kind
        table = read_image_table(root)
        assert set(table["path"]) == {str(p) for p in images_in(root)}
        assert set(kinds) <= set(table["path"]), "every image name is in the table or skipped"
        # Some val images: a split with nothing to evaluate on is refused, broken files or not.
        recipe = ImageRecipe(data=str(root), strict=strict, val_fraction=0.1, test_fraction=0.0)
        data = outcome(check_images, recipe, table)
    broken = {p for p, kind in kinds.items() if kind in ALWAYS_BROKEN}
    if data is None:
        assert strict and any(kind != "good" for kind in kinds.values())
        return
    skipped = dict(data.skipped)
    assert not (strict and skipped), "strict refuses broken files, it does not skip them"
    assert broken <= set(skipped)
    assert not {p for p, kind in kinds.items() if kind == "good"} & set(skipped)
    assert all(reason and "\n" not in reason for reason in skipped.values())
    assert set(data.table["path"]) | set(skipped) == set(table["path"])
    assert not set(data.table["path"]) & set(skipped)


test_image_folders, test_image_folders_many = fuzz(check_image_folder, entries, st.booleans())


def check_unreadable_scan(files: list[tuple[str, bytes]]) -> None:
    """``find_unreadable`` on random bytes named as images: a one-line reason for each."""
    with folder() as root:
        paths = []
        for i, (suffix, content) in enumerate(files):
            paths.append(str(root / f"{i}{suffix}"))
            Path(paths[-1]).write_bytes(content)
        paths.append(str(root / "missing.png"))
        os.symlink(root / "nowhere.jpg", root / "dangling.jpg")
        paths.append(str(root / "dangling.jpg"))
        found = dict(find_unreadable(paths))
    assert set(found) == set(paths)
    assert all(reason and "\n" not in reason for reason in found.values())


test_unreadable_scan, test_unreadable_scan_many = fuzz(
    check_unreadable_scan,
    st.lists(st.tuples(st.sampled_from([".jpg", ".png", ".gif", ".bmp"]),
                       st.binary(max_size=200)), max_size=5))


# ------------------------------------------------------------------------- known inputs

GOOD_TABLE = "\ufefftext,label\ngood film,pos\nbad film,neg\n".encode()
FRAME_ROWS = [("good film", "pos", "train"), ("bad film", "neg", "train"), ("fine", "pos", ""),
              ("dull", "neg", "test"), ("great", "pos", "val"), ("awful", "neg", "")]
LINES = [("pos", b"a gripping film\ngreat plot"), ("neg", "dull\r\nawful story \u00e9".encode())]
VECTORS = "5 2\n[UNK] 0 1\nfilm 1 2\nmovie -1 0.5\nthe 3 4\n\u00e9 0.25 -2\n".encode()
UNREADABLE_TEXT = ("a", "text", ".jpg", b"", 0.0)  # a text file named as an image

KNOWN = [
    # Tables: the text reader, the image reader, then predict's inputs of a text and an image run.
    pytest.param(check_table_file, ((".csv", GOOD_TABLE, "utf-8"),), {
        "read_text_table": [[["good film", "pos"], ["bad film", "neg"]]],
        "prepare_text_data": [["neg", "pos"]], "read_image_table": [RAISES],  # no path column
        "gather_inputs": [["good film", "bad film"], RETURNS]}, id="csv with a BOM"),
    pytest.param(check_table_file, ((".tsv", 'text\tlabel\n"a\tpos\nb"\tneg\nc\tneg\n'.encode(
        "utf-16"), "utf-16"),), {  # TSV cells are not quoted: a quote is text
        "read_text_table": [[['"a', "pos"], ['b"', "neg"], ["c", "neg"]]],
        "prepare_text_data": [["neg", "pos"]], "read_image_table": [RAISES],
        "gather_inputs": [['"a', 'b"', "c"], RETURNS]}, id="utf-16 tsv with quotes"),
    pytest.param(check_table_file, ((".csv", b"text,label\n", "utf-8"),), {
        "read_text_table": [RAISES], "read_image_table": [RAISES],
        "gather_inputs": [RAISES, RAISES]}, id="header only"),
    pytest.param(check_table_file, ((".csv", "text,label\ncaf\u00e9,pos\n".encode("latin-1"),
                                     "utf-8"),), {
        "read_text_table": [RAISES], "read_image_table": [RAISES],
        "gather_inputs": [RAISES, RAISES]}, id="latin-1 read as utf-8"),
    pytest.param(check_table_file, ((".csv", b'"\r"\n"pos"', "utf-8"),), {
        "read_text_table": [RAISES], "read_image_table": [RAISES],
        "gather_inputs": [RAISES, RAISES]}, id="a column named CR"),  # broke the one-line message
    # Class files: <class>.txt in a folder, and Kim's rt-polarity.<class> pair.
    pytest.param(check_line_files, (LINES, False, "utf-8", 0.0), {
        "read_text_table": [[["dull", "neg"], ["awful story \u00e9", "neg"],
                             ["a gripping film", "pos"], ["great plot", "pos"]]],
        "prepare_text_data": [["neg", "pos"]]}, id="class files"),
    pytest.param(check_line_files, (LINES, True, "utf-8", 0.0), {
        "read_text_table": [[["a gripping film", "pos"], ["great plot", "pos"], ["dull", "neg"],
                             ["awful story \u00e9", "neg"]]],
        "prepare_text_data": [["neg", "pos"]]}, id="kim files"),
    # DataFrames: text table, its data and folds; then as an image table and its split.
    pytest.param(check_frames, (FRAME_ROWS, 0.0, 2), {
        "read_text_table": [[[text, label] for text, label, _ in FRAME_ROWS]],
        "prepare_text_data": [["neg", "pos"]],
        "kfold_splits": [[[[1, 3, 4], [0, 2, 5]], [[0, 2, 5], [1, 3, 4]]]],
        "read_image_table": [RETURNS], "split_table": [RETURNS]}, id="frame"),
    pytest.param(check_frames, ([("good film", "a\nb", ""), ("bad film", "a\nb", "")], 0.0, 2), {
        "read_text_table": [[["good film", "a\nb"], ["bad film", "a\nb"]]],
        "prepare_text_data": [RAISES],  # one class; its name once broke the one-line message
        "kfold_splits": [[[[0], [1]], [[1], [0]]]], "read_image_table": [RAISES]},
        id="one label with a line break"),
    pytest.param(check_frames, ([], 0.0, 2), {
        "read_text_table": [[]], "prepare_text_data": [RAISES],
        "kfold_splits": [RAISES],  # min() of nothing escaped
        "read_image_table": [RAISES]}, id="no rows"),
    pytest.param(check_frames, ([(None, "pos", "test"), (None, 0, "test")], 0.0, 2), {
        "read_text_table": [[["", "pos"], ["", "0"]]], "prepare_text_data": [RAISES],
        "kfold_splits": [RAISES], "read_image_table": [RETURNS],
        "split_table": [RAISES]}, id="only test rows"),
    # A run's vocabulary.json.
    pytest.param(check_vocabulary_file, (json.dumps(
        {"tokens": ["", "[UNK]", "film"], "tokenizer": "kim", "max_length": 3}).encode(),), {
        "Vocabulary.load": [["", "[UNK]", "film"]]}, id="vocabulary"),
    pytest.param(check_vocabulary_file, (pickle.dumps({"tokens": []}),), {
        "Vocabulary.load": [RAISES]}, id="vocabulary pickle"),  # UnicodeDecodeError escaped
    pytest.param(check_vocabulary_file, (
        b'{"tokens": ["", "[UNK]"], "tokenizer": "kim", "max_length": "x"}',), {
        "Vocabulary.load": [RAISES]}, id="vocabulary max_length x"),
    # Word vectors for VOCABULARY: padding zeros, every other word from the file.
    pytest.param(check_vectors, (("v.vec", VECTORS), None, None), {
        "load_vectors": [[[0, 0], [0, 1], [1, 2], [-1, 0.5], [3, 4], [0.25, -2]]]},
        id="vectors"),
    pytest.param(check_vectors, (("v.txt", gzip.compress(VECTORS)), "word2vec-text", 2), {
        "load_vectors": [[[0, 0], [0, 1], [1, 2], [-1, 0.5], [3, 4], [0.25, -2]]]},
        id="gzipped vectors"),
    pytest.param(check_vectors, (("v.txt", VECTORS), None, 3), {
        "load_vectors": [RAISES]}, id="vectors of another size"),
    pytest.param(check_vectors, (("v.txt", b"\x1f\x8b"), None, None), {
        "load_vectors": [RAISES]}, id="gzip magic only"),  # EOFError escaped
    # Image folders with an unreadable file: skipped, or refused when strict.
    pytest.param(check_image_folder, ([UNREADABLE_TEXT], False), {"check_images": [RETURNS]},
                 id="unreadable image skipped"),
    pytest.param(check_image_folder, ([UNREADABLE_TEXT], True), {"check_images": [RAISES]},
                 id="unreadable image strict"),
]


@pytest.mark.parametrize(("check", "args", "outcomes"), KNOWN)
def test_known_inputs(check: Callable[..., None], args: tuple[Any, ...],
                      outcomes: dict[str, list[Any]]) -> None:
    with expecting(outcomes):
        check(*args)
