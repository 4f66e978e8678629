"""Word-vector files in every format, written tiny in tmp_path."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from tlkit.errors import UserError
from tlkit.vectors import load_vectors

VECTORS = {
    "film": [0.5, -0.25, 1.0],
    "movie": [0.25, 0.75, -0.5],
    "the": [1.0, 2.0, 3.0],
    "Film": [9.0, 9.0, 9.0],
}
VOCAB = ["", "[UNK]", "film", "movie", "plot"]


def text_lines(header: bool) -> str:
    lines = [f"{len(VECTORS)} 3"] if header else []
    lines += [" ".join([w, *map(str, v)]) for w, v in VECTORS.items()]
    return "\n".join(lines) + "\n"


def write_bin(path: Path) -> None:
    # As word2vec.c writes it: header, then "<word> <float32 x dim>\n" per row.
    data = f"{len(VECTORS)} 3\n".encode()
    for word, vector in VECTORS.items():
        data += word.encode() + b" " + np.asarray(vector, "<f4").tobytes() + b"\n"
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as handle:
        handle.write(data)


def write(path: Path, header: bool) -> Path:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as handle:
        handle.write(text_lines(header))
    return path


@pytest.mark.parametrize("name, header", [
    ("vectors.txt", True),  # word2vec text
    ("glove.6B.3d.txt", False),
    ("wiki.en.vec", True),  # fastText
    ("glove.txt.gz", False),
    ("vectors.vec.gz", True),
])
def test_text_formats_load_the_vocabulary_rows(tmp_path, name, header) -> None:
    vectors = load_vectors(write(tmp_path / name, header), VOCAB)
    check(vectors)


@pytest.mark.parametrize("name", ["GoogleNews-tiny.bin", "GoogleNews-tiny.bin.gz"])
def test_word2vec_binary_loads_the_vocabulary_rows(tmp_path, name) -> None:
    write_bin(tmp_path / name)
    check(load_vectors(tmp_path / name, VOCAB, embedding_dim=3))


def check(vectors) -> None:
    matrix = vectors.matrix
    assert matrix.shape == (5, 3) and matrix.dtype == np.float32
    assert matrix[0].tolist() == [0, 0, 0]  # padding
    assert matrix[2].tolist() == VECTORS["film"]  # case matters: not "Film"
    assert matrix[3].tolist() == VECTORS["movie"]
    assert (vectors.found, vectors.words, vectors.coverage) == (2, 4, 0.5)
    found = np.array([VECTORS["film"], VECTORS["movie"]])
    assert vectors.scale == pytest.approx(np.sqrt(3 * found.var()))
    # "[UNK]" and "plot" are missing: uniform in [-a, a].
    assert np.all(np.abs(matrix[[1, 4]]) <= vectors.scale)
    assert np.any(matrix[[1, 4]] != 0)


def test_missing_words_are_seeded(tmp_path) -> None:
    path = write(tmp_path / "v.txt", True)
    first = load_vectors(path, VOCAB, seed=1).matrix
    assert np.array_equal(first, load_vectors(path, VOCAB, seed=1).matrix)
    assert not np.array_equal(first, load_vectors(path, VOCAB, seed=2).matrix)


def test_binary_rows_outside_the_vocabulary_are_skipped_unread(tmp_path, monkeypatch) -> None:
    write_bin(tmp_path / "v.bin")
    parsed = []
    frombuffer = np.frombuffer
    monkeypatch.setattr(np, "frombuffer", lambda data, **kw: parsed.append(data)
                        or frombuffer(data, **kw))
    load_vectors(tmp_path / "v.bin", ["", "movie"])
    assert len(parsed) == 1


def test_glove_tokens_with_spaces_are_read(tmp_path) -> None:
    path = tmp_path / "glove.840B.txt"
    path.write_text("film 1 2\n. . . 3 4\nmovie 5 6\n", encoding="utf-8")
    vectors = load_vectors(path, ["", ". . .", "movie"])
    assert vectors.matrix[1:].tolist() == [[3, 4], [5, 6]]


def test_missing_vectors_file_is_a_user_error(tmp_path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_vectors(tmp_path / "nope.txt", VOCAB)


def test_dimension_varying_between_lines_is_a_user_error(tmp_path) -> None:
    path = tmp_path / "broken.txt"
    path.write_text("film 1 2 3\nmovie 4 5\nplot 1 2 3\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"broken.txt, line 2: 2 values .* have 3"):
        load_vectors(path, VOCAB)
    path.write_text("2 3\nfilm 1 2 3\nmovie 4 5 6 7\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"line 3: 4 values"):
        load_vectors(path, VOCAB)


def test_dimension_disagreeing_with_embedding_dim_is_a_user_error(tmp_path) -> None:
    path = write(tmp_path / "v.txt", False)
    with pytest.raises(UserError, match=r"v.txt, line 1: .*3 dimensions.*--embedding-dim 3"):
        load_vectors(path, VOCAB, embedding_dim=300)
    write_bin(tmp_path / "v.bin")
    with pytest.raises(UserError, match=r"v.bin, line 1: .*3 dimensions"):
        load_vectors(tmp_path / "v.bin", VOCAB, embedding_dim=300)


def test_vectors_covering_none_of_the_vocabulary_warn_loudly(tmp_path, caplog) -> None:
    path = write(tmp_path / "v.txt", True)
    with pytest.warns(UserWarning, match="cover none of the 2 vocabulary words"):
        vectors = load_vectors(path, ["", "[UNK]", "zebra"])
    assert vectors.coverage == 0 and vectors.found == 0
    assert "cover none" in caplog.text
    assert np.all(np.abs(vectors.matrix[1:]) <= 0.25) and vectors.matrix[0].tolist() == [0] * 3


def test_truncated_binary_and_non_binary_are_user_errors(tmp_path) -> None:
    write_bin(tmp_path / "v.bin")
    data = (tmp_path / "v.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[:-20])
    with pytest.raises(UserError, match="truncated"):
        load_vectors(tmp_path / "cut.bin", ["", "the", "Film"])
    write(tmp_path / "text.bin", False)
    with pytest.raises(UserError, match="not a word2vec binary"):
        load_vectors(tmp_path / "text.bin", VOCAB)
