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
import os
import sys
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import BinaryIO

import numpy as np

from tlkit.choices import VECTOR_FORMATS as FORMATS
from tlkit.errors import UserError
from tlkit.progress import advance, phase

# Kim's scale for random vectors when there is nothing to match: U[-0.25, 0.25].
DEFAULT_SCALE = 0.25
# Vectors read between two counts into the progress phase (a count per row costs seconds
# over GoogleNews' three million rows).
_COUNT_EVERY = 50_000


@dataclass
class WordVectors:
    """An embedding matrix for a vocabulary (row i = token i) and how much the file covered.

    ``found`` counts vocabulary words (padding excluded) that had a vector; ``scale`` is the
    ``a`` of the U[-a, a] draw that filled the others.

    Example:
        >>> vectors = WordVectors(np.zeros((5, 3)), found=2, words=4, scale=0.25, path="v.txt")
        >>> vectors.coverage, vectors.dim
        (0.5, 3)
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
    binary = fmt == "word2vec-bin" or (fmt is None and _base_suffix(path) == ".bin")
    # announced only if it takes a while: a damaged file stays a one-line mistake
    with phase("vectors", unit="vector", detail=f"reading '{path}'", announce=False) as reading:
        dim, rows = _read(path, wanted, embedding_dim, fmt, binary)
        reading.result = f"{len(rows)} of the {len(wanted)} words wanted"
    matrix = np.zeros((len(vocabulary), dim), dtype="float32")
    for key, vector in rows.items():
        matrix[wanted[key]] = vector
    words = sum(len(ids) for ids in wanted.values())
    found = sum(len(wanted[key]) for key in rows)
    missing = [i for key, ids in wanted.items() if key not in rows for i in ids]
    if rows:
        variance = np.var(np.stack(list(rows.values())).astype("float64"))
        # Capped so that absurd (but finite) values cannot draw infinities in float32.
        scale = min(float(np.sqrt(3.0 * variance)), float(np.finfo("float32").max))
    else:
        scale = DEFAULT_SCALE
        message = (f"word vectors '{path}' cover none of the {words} vocabulary words; all "
                   "embeddings start random: check the file's language, case and tokenizer")
        # One line on stderr: a Python warning would add its source line.
        print(f"warning: {message}", file=sys.stderr, flush=True)
    rng = np.random.default_rng(seed)
    matrix[missing] = rng.uniform(-scale, scale, (len(missing), dim))
    return WordVectors(matrix, found, words, scale, str(path))


def _base_suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def _read(path: Path, wanted: dict[bytes, list[int]], embedding_dim: int | None,
          fmt: str | None, binary: bool) -> tuple[int, dict[bytes, np.ndarray]]:
    with path.open("rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    reader = _read_binary if binary else _read_text
    try:
        with gzip.open(path, "rb") if gzipped else path.open("rb") as stream:
            return reader(stream, path, wanted, embedding_dim, fmt)  # type: ignore[arg-type]
    except (OSError, EOFError, zlib.error) as error:
        if gzipped:
            raise UserError(f"'{path}' is damaged gzip data ({_reason(error)}); the download "
                            "may be incomplete: fetch the file again") from error
        raise UserError(f"cannot read vectors file '{path}': {_reason(error)}") from error


def _reason(error: BaseException) -> str:
    return " ".join((getattr(error, "strerror", None) or str(error) or
                     type(error).__name__).split())[:200]


def _show(data: bytes) -> str:
    """Bytes from the file, quoted in a one-line message."""
    text = data[:60].decode("utf-8", errors="replace")
    return "".join(c if c.isprintable() else "?" for c in text) + ("..." if len(data) > 60
                                                                    else "")


def _check_dim(dim: int, embedding_dim: int | None, path: Path, line: int) -> None:
    if embedding_dim is not None and dim != embedding_dim:
        raise UserError(f"{path}, line {line}: vectors have {dim} dimensions but the embedding "
                        f"dim is {embedding_dim}; set --embedding-dim {dim} or use other vectors")


def _header(line: bytes) -> tuple[int, int] | None:
    """The (words, dim) of a header line, which can be damaged (negative, zero dim)."""
    parts = line.split()
    if len(parts) != 2:
        return None
    try:
        return int(parts[0]), int(parts[1])
    except ValueError:
        return None


HEADER_FORM = "a header is '<number of words> <dimension>', such as '400000 300'"


def _bad_line_1(path: Path, line: bytes, what: str, fix: str) -> UserError:
    return UserError(f"{path}, line 1: '{_show(line)}' {what}; {HEADER_FORM}: {fix}")


def _first_line(line: bytes, after: bytes | None, path: Path, fmt: str | None
                ) -> tuple[int, bool]:
    """The dimension line 1 sets, and whether it is a header (True) or a vector row.

    ``after`` is the next non-empty line: a damaged header such as ``x 3`` also reads as a
    row of one value, and only the rows after it show that it is not one.
    """
    header = _header(line) if fmt != "glove" else None
    if header is not None:
        if header[0] < 0 or header[1] < 1:
            raise _bad_line_1(path, line, "is a header with a negative word count or a "
                              "dimension below 1", "fix that line or remove it")
        return header[1], True
    values = line.split(b" ")[1:]
    if values and all(_is_number(v) for v in values) and (
            len(values) > 1 or after is None or after.count(b" ") == 1):
        return len(values), False
    raise _bad_line_1(path, line, "is neither a header nor a vector row "
                      "('<word> <number> ... <number>') like the lines after it",
                      "fix that line or remove it")


def _non_empty_lines(stream: BinaryIO) -> Iterator[tuple[int, bytes]]:
    for number, raw in enumerate(stream, start=1):
        line = raw.rstrip()
        if line:
            yield number, line


def _read_text(stream: BinaryIO, path: Path, wanted: dict[bytes, list[int]],
               embedding_dim: int | None, fmt: str | None) -> tuple[int, dict[bytes, np.ndarray]]:
    lines = _non_empty_lines(stream)
    first = next(lines, None)
    if first is None:
        raise UserError(f"vectors file '{path}' is empty")
    second = next(lines, None)
    dim, is_header = _first_line(first[1], second and second[1], path, fmt)
    _check_dim(dim, embedding_dim, path, 1)
    source = "the header (line 1) says" if is_header else "earlier lines have"
    rows: dict[bytes, np.ndarray] = {}
    vectors = 0
    for number, line in chain([] if is_header else [first], [second] if second else [], lines):
        vectors += 1
        if vectors % _COUNT_EVERY == 0:
            advance(_COUNT_EVERY)
        fields = line.count(b" ")
        # GloVe 840B has a few tokens with spaces in them (". . ."): more fields than the dim
        # are fine when what follows the first field is not a number.
        if fields != dim and (fields < dim or _is_number(line.split(b" ", 2)[1])):
            raise UserError(f"{path}, line {number}: {fields} values where {source} {dim}; "
                            "every row needs as many, so the file (or its header) is damaged")
        # Slicing off the word is cheap; splitting the numbers is done for wanted rows only.
        word = line[: line.index(b" ")] if fields == dim else line.rsplit(b" ", dim)[0]
        if word in wanted and word not in rows:
            try:
                rows[word] = _float32(np.array(line.rsplit(b" ", dim)[1:], dtype="float64"))
            except ValueError as error:
                raise UserError(f"{path}, line {number}: a vector value is not a (finite) "
                                "number; the file is damaged") from error
    if not vectors:
        raise UserError(f"vectors file '{path}' has a header but no vectors")
    advance(vectors % _COUNT_EVERY)
    return dim, rows


def _float32(vector: np.ndarray) -> np.ndarray:
    # Parsed as float64 first, so that "1e39" is refused rather than cast to infinity.
    if not (np.abs(vector) <= np.finfo("float32").max).all():  # False for NaN too
        raise ValueError("not a finite float32")
    return vector.astype("float32")


def _is_number(field: bytes) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def _read_binary(stream: BinaryIO, path: Path, wanted: dict[bytes, list[int]],
                 embedding_dim: int | None, fmt: str | None) -> tuple[int, dict[bytes, np.ndarray]]:
    line = stream.readline(1024).rstrip(b"\r\n")
    header = _header(line)
    if header is None:
        raise _bad_line_1(path, line, "is not the header of a word2vec binary file",
                          "fix it, or name a text vectors file .txt or .vec")
    if header[0] < 1 or header[1] < 1:
        raise _bad_line_1(path, line, "is a header promising no vectors, or vectors of no "
                          "dimension", "fix it")
    count, dim = header
    _check_dim(dim, embedding_dim, path, 1)
    row_bytes = 4 * dim
    truncated = f"{path}: ends before the {count} vectors its header promises; the file is " \
                "truncated (or the header is wrong)"
    compressed = isinstance(stream, gzip.GzipFile)
    rows: dict[bytes, np.ndarray] = {}
    for number in range(1, count + 1):
        if number % _COUNT_EVERY == 0:
            advance(_COUNT_EVERY)
        word = _read_word(stream)
        if word is None:
            raise UserError(truncated)
        if word in wanted and word not in rows:
            data = _read_at_most(stream, row_bytes)
            if len(data) < row_bytes:
                raise UserError(truncated)
            vector = np.frombuffer(data, dtype="<f4")
            if not np.isfinite(vector).all():
                raise UserError(f"{path}: vector {number} ('{_show(word)}') holds a value that "
                                "is not a finite number; the file is damaged")
            rows[word] = vector.astype("float32")
        elif compressed:
            # gzip cannot jump: decompressing and dropping the row directly is about twice
            # as fast as GzipFile.seek, which does the same in smaller steps.
            if len(_read_at_most(stream, row_bytes)) < row_bytes:
                raise UserError(truncated)
        else:
            stream.seek(row_bytes, 1)  # unwanted rows are never read
    # A seek past the end is not an error by itself; the last row may have been one.
    if not compressed and stream.tell() > os.fstat(stream.fileno()).st_size:
        raise UserError(truncated)
    advance(count % _COUNT_EVERY)
    return dim, rows


def _read_at_most(stream: BinaryIO, size: int) -> bytes:
    # In pieces: a damaged header can promise rows of gigabytes that the file does not hold.
    if size <= _PIECE:
        return stream.read(size)
    pieces = []
    while size > 0 and (piece := stream.read(min(size, _PIECE))):
        pieces.append(piece)
        size -= len(piece)
    return b"".join(pieces)


_PIECE = 1 << 20


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
