"""Pretrained word vectors for one vocabulary, streamed from word2vec, GloVe or fastText files.

Only the rows of the vocabulary's words are ever turned into numbers: a 3.6 GB GoogleNews
file is read once, front to back, and needs memory for the embedding matrix alone (binary
files seek past unwanted rows). Words are compared as bytes in the file's encoding, so a file
with a few broken words still loads.

Example:
    >>> import os, tempfile
    >>> glove = os.path.join(tempfile.mkdtemp(), "tiny.glove.txt")
    >>> _ = open(glove, "w").write("film 0.1 0.2 0.3\\nplot 0.0 0.5 0.1\\n")
    >>> vectors = load_vectors(glove, ["", "[UNK]", "film", "movie"])
    >>> vectors.matrix.shape, vectors.found
    ((4, 3), 1)
"""

from __future__ import annotations

import gzip
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from tlkit.errors import UserError

log = logging.getLogger(__name__)

FORMATS = ("word2vec-bin", "word2vec-text", "glove", "fasttext")
# Kim's scale for random vectors when there is nothing to match: U[-0.25, 0.25].
DEFAULT_SCALE = 0.25


@dataclass
class WordVectors:
    """An embedding matrix for a vocabulary (row i = token i) and how much the file covered.

    ``found`` counts vocabulary words (padding excluded) that had a vector; ``scale`` is the
    ``a`` of the U[-a, a] draw that filled the others.
    """

    matrix: np.ndarray
    found: int
    words: int
    scale: float
    path: str

    @property
    def coverage(self) -> float:
        """Found / vocabulary words, 0 to 1."""
        return self.found / self.words if self.words else 0.0

    @property
    def dim(self) -> int:
        """Vector length."""
        return int(self.matrix.shape[1])


def load_vectors(path: str | Path, vocabulary: Sequence[str], embedding_dim: int | None = None,
                 fmt: str | None = None, seed: int = 42) -> WordVectors:
    """Read the vectors of ``vocabulary``'s words from a word-vector file.

    ``fmt`` is one of ``FORMATS``; None guesses it from the file (``.bin`` is word2vec binary,
    a first line of two integers is a word2vec/fastText header, otherwise GloVe). ``.gz``
    files are read compressed. The empty (padding) token gets zeros; words the file lacks get
    U[-a, a] with ``a`` chosen so their variance matches the found vectors' (seeded).

    Example:
        >>> load_vectors("GoogleNews-vectors-negative300.bin.gz", ["", "[UNK]", "film"],
        ...              300).found  # doctest: +SKIP
        1
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"vectors file '{path}' does not exist; check --vectors")
    if fmt is not None and fmt not in FORMATS:
        raise UserError(f"unknown vectors format '{fmt}'; choose one of: {', '.join(FORMATS)}")
    wanted: dict[bytes, list[int]] = {}
    for i, word in enumerate(vocabulary):
        if word:
            wanted.setdefault(word.encode("utf-8"), []).append(i)
    with _open(path) as stream:
        binary = fmt == "word2vec-bin" or (fmt is None and _base_suffix(path) == ".bin")
        reader = _read_binary if binary else _read_text
        dim, rows = reader(stream, path, wanted, embedding_dim, fmt)
    matrix = np.zeros((len(vocabulary), dim), dtype="float32")
    for key, vector in rows.items():
        matrix[wanted[key]] = vector
    words = sum(len(ids) for ids in wanted.values())
    found = sum(len(wanted[key]) for key in rows)
    missing = [i for key, ids in wanted.items() if key not in rows for i in ids]
    if rows:
        scale = float(np.sqrt(3.0 * np.var(np.stack(list(rows.values())))))
    else:
        scale = DEFAULT_SCALE
        message = (f"word vectors '{path}' cover none of the {words} vocabulary words; all "
                   "embeddings start random: check the file's language, case and tokenizer")
        log.warning(message)
        warnings.warn(message, stacklevel=2)
    rng = np.random.default_rng(seed)
    matrix[missing] = rng.uniform(-scale, scale, (len(missing), dim))
    return WordVectors(matrix, found, words, scale, str(path))


def _base_suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def _open(path: Path) -> BinaryIO:
    with path.open("rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else path.open("rb")  # type: ignore[return-value]


def _check_dim(dim: int, embedding_dim: int | None, path: Path, line: int) -> None:
    if dim < 1:
        raise UserError(f"{path}, line {line}: no vector values; is this a word-vector file?")
    if embedding_dim is not None and dim != embedding_dim:
        raise UserError(f"{path}, line {line}: vectors have {dim} dimensions but the embedding "
                        f"dim is {embedding_dim}; set --embedding-dim {dim} or use other vectors")


def _header(line: bytes) -> tuple[int, int] | None:
    parts = line.split()
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        return int(parts[0]), int(parts[1])
    return None


def _read_text(stream: BinaryIO, path: Path, wanted: dict[bytes, list[int]],
               embedding_dim: int | None, fmt: str | None) -> tuple[int, dict[bytes, np.ndarray]]:
    rows: dict[bytes, np.ndarray] = {}
    dim = 0
    first = True
    for number, raw in enumerate(stream, start=1):
        line = raw.rstrip()
        if not line:
            continue
        if first:
            first = False
            header = _header(line) if fmt != "glove" else None
            if header is not None:
                dim = header[1]
                _check_dim(dim, embedding_dim, path, number)
                continue
            dim = line.count(b" ")
            _check_dim(dim, embedding_dim, path, number)
        fields = line.count(b" ")
        # GloVe 840B has a few tokens with spaces in them (". . ."): more fields than the dim
        # are fine when what follows the first field is not a number.
        if fields != dim and (fields < dim or _is_number(line.split(b" ", 2)[1])):
            raise UserError(f"{path}, line {number}: {fields} values where earlier lines "
                            f"have {dim}; the file's dimension varies, so it is damaged")
        # Slicing off the word is cheap; splitting the numbers is done for wanted rows only.
        word = line[: line.index(b" ")] if fields == dim else line.rsplit(b" ", dim)[0]
        if word in wanted and word not in rows:
            try:
                rows[word] = np.array(line.rsplit(b" ", dim)[1:], dtype="float32")
            except ValueError as error:
                raise UserError(f"{path}, line {number}: a vector value is not a number") \
                    from error
    if first:
        raise UserError(f"vectors file '{path}' is empty")
    return dim, rows


def _is_number(field: bytes) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def _read_binary(stream: BinaryIO, path: Path, wanted: dict[bytes, list[int]],
                 embedding_dim: int | None, fmt: str | None) -> tuple[int, dict[bytes, np.ndarray]]:
    header = _header(stream.readline())
    if header is None:
        raise UserError(f"{path}, line 1: no '<words> <dim>' header, so it is not a word2vec "
                        "binary file; for text vectors name the file .txt or .vec")
    count, dim = header
    _check_dim(dim, embedding_dim, path, 1)
    row_bytes = 4 * dim
    compressed = isinstance(stream, gzip.GzipFile)
    rows: dict[bytes, np.ndarray] = {}
    for number in range(2, count + 2):
        word = _read_word(stream)
        if word is None:
            raise UserError(f"{path}: ends after {number - 2} of the {count} vectors its "
                            "header promises; the file is truncated")
        if word in wanted and word not in rows:
            data = stream.read(row_bytes)
            if len(data) < row_bytes:
                raise UserError(f"{path}: vector {number - 1} ('{word.decode(errors='replace')}')"
                                " is cut short; the file is truncated")
            rows[word] = np.frombuffer(data, dtype="<f4").astype("float32")
        elif compressed:
            # gzip cannot jump: decompressing and dropping the row directly is about twice
            # as fast as GzipFile.seek, which does the same in smaller steps.
            stream.read(row_bytes)
        else:
            stream.seek(row_bytes, 1)  # unwanted rows are never read
    return dim, rows


def _read_word(stream: BinaryIO) -> bytes | None:
    # A word runs to the next space; word2vec writes a newline after each vector, which
    # therefore starts the next word and is dropped, as the C reader's %s does.
    chunks = []
    while True:
        buffered = stream.peek(1)[:256]  # type: ignore[attr-defined]
        if not buffered:
            return None
        end = buffered.find(b" ")
        if end >= 0:
            chunks.append(stream.read(end + 1)[:-1])
            return b"".join(chunks).lstrip(b"\n")
        chunks.append(stream.read(len(buffered)))
