"""Word-vector files in every format, written tiny in tmp_path."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_user_error

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


def test_vectors_covering_none_of_the_vocabulary_warn_loudly(tmp_path, capsys,
                                                            monkeypatch) -> None:
    monkeypatch.setenv("TLKIT_QUIET", "1")  # the warning alone, without the progress lines
    path = write(tmp_path / "v.txt", True)
    vectors = load_vectors(path, ["", "[UNK]", "zebra"])
    warning = capsys.readouterr().err
    assert warning.startswith(f"warning: word vectors '{path}' cover none of the 2 vocabulary "
                              "words") and warning.count("\n") == 1
    assert vectors.coverage == 0 and vectors.found == 0
    assert np.all(np.abs(vectors.matrix[1:]) <= 0.25) and vectors.matrix[0].tolist() == [0] * 3


def test_truncated_binary_and_non_binary_are_user_errors(tmp_path) -> None:
    write_bin(tmp_path / "v.bin")
    data = (tmp_path / "v.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[:-20])
    with pytest.raises(UserError, match="truncated"):
        load_vectors(tmp_path / "cut.bin", ["", "the", "Film"])
    write(tmp_path / "text.bin", False)
    with pytest.raises(UserError, match="not the header of a word2vec binary file"):
        load_vectors(tmp_path / "text.bin", VOCAB)


@pytest.mark.parametrize("header", ["3 x", "x 3", "-3 300", "3 0", "3 -2"])
@pytest.mark.parametrize("embedding_dim", [None, 3, 300])
def test_bad_header_is_one_error_naming_file_line_and_the_header_form(
        tmp_path, header, embedding_dim) -> None:
    # Once, "3 x" read as a vector row of one value: the message said --embedding-dim 1,
    # and with that set, the next line failed with a second, different error.
    path = tmp_path / "vectors.txt"
    path.write_text(header + "\n" + text_lines(False), encoding="utf-8")
    message = assert_user_error(lambda: load_vectors(path, VOCAB, embedding_dim),
                                f"{path}, line 1: '{header}'",
                                "a header is '<number of words> <dimension>', such as "
                                "'400000 300'", "fix that line or remove it")
    assert "--embedding-dim" not in message


def test_header_disagreeing_with_the_rows_names_the_header(tmp_path) -> None:
    path = tmp_path / "vectors.vec"
    path.write_text("4 300\n" + text_lines(False), encoding="utf-8")
    assert_user_error(lambda: load_vectors(path, VOCAB), f"{path}, line 2: 3 values where the "
                      "header (line 1) says 300", "(or its header) is damaged")


def test_bad_binary_header_names_the_line_and_the_header_form(tmp_path) -> None:
    path = tmp_path / "vectors.bin"
    path.write_bytes(b"3 x\nfilm " + np.zeros(3, "<f4").tobytes() + b"\n")
    assert_user_error(lambda: load_vectors(path, VOCAB), f"{path}, line 1: '3 x' is not the "
                      "header of a word2vec binary file", "'400000 300'")
    path.write_bytes(b"0 3\n")
    assert_user_error(lambda: load_vectors(path, VOCAB), "line 1: '0 3'", "promising no vectors")


def test_header_without_vectors_and_empty_files(tmp_path) -> None:
    path = tmp_path / "v.txt"
    path.write_text("3 300\n\n", encoding="utf-8")
    assert_user_error(lambda: load_vectors(path, VOCAB, 300), "has a header but no vectors")
    path.write_text("", encoding="utf-8")
    assert_user_error(lambda: load_vectors(path, VOCAB), "is empty")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e39"])
def test_values_that_are_not_finite_numbers_are_a_user_error(tmp_path, value) -> None:
    path = tmp_path / "v.txt"
    path.write_text(f"film 1 {value} 2\nmovie 1 2 3\n", encoding="utf-8")
    assert_user_error(lambda: load_vectors(path, VOCAB), "line 1: a vector value is not a "
                      "(finite) number")
    if value == "1e39":
        return  # no such float32 to write in a binary file
    data = b"2 3\nfilm " + np.array([1, float(value), 2], "<f4").tobytes() + b"\n"
    (tmp_path / "v.bin").write_bytes(data)
    assert_user_error(lambda: load_vectors(tmp_path / "v.bin", VOCAB), "vector 1 ('film')",
                      "not a finite number")


def test_huge_finite_values_still_give_a_finite_matrix(tmp_path) -> None:
    path = tmp_path / "v.txt"
    path.write_text("film 3e38 -3e38\nmovie -3e38 3e38\n", encoding="utf-8")
    assert np.isfinite(load_vectors(path, VOCAB).matrix).all()


@pytest.mark.parametrize("content", [b"\x1f\x8b", b"\x1f\x8b\x08\x00garbage", b"truncated"],
                         ids=["magic-only", "garbage", "cut"])
def test_damaged_gzip_is_a_user_error(tmp_path, content) -> None:
    path = tmp_path / "vectors.txt.gz"
    if content == b"truncated":
        content = gzip.compress(text_lines(True).encode())[:-12]
    path.write_bytes(content)
    assert_user_error(lambda: load_vectors(path, VOCAB), f"'{path}' is damaged gzip data",
                      "fetch the file again")


def test_binary_whose_header_promises_more_rows_than_it_holds(tmp_path) -> None:
    # The last, unwanted row is skipped by seeking: past the end is still noticed.
    write_bin(tmp_path / "v.bin")
    data = (tmp_path / "v.bin").read_bytes().replace(b"4 3\n", b"4 30\n", 1)
    (tmp_path / "v.bin").write_bytes(data)
    assert_user_error(lambda: load_vectors(tmp_path / "v.bin", ["", "zebra"]), "truncated")
    (tmp_path / "big.bin").write_bytes(b"1 1000000000\nfilm \x00\x00")
    assert_user_error(lambda: load_vectors(tmp_path / "big.bin", ["", "film"]), "truncated")
