"""Text data: readers, tokenizers, splits, vocabulary and batches, on tiny files in tmp_path."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tlkit.data.text import (
    DEFAULT_MAX_LENGTH,
    TOKENIZERS,
    Vocabulary,
    build_vocabulary,
    dev_split,
    kfold_splits,
    prepare_text_data,
    read_text_table,
    text_dataset,
    tokenize,
)
from tlkit.errors import UserError


def frame(texts: list[str], labels: list[object]) -> pd.DataFrame:
    return pd.DataFrame({"text": texts, "label": labels})


def corpus(per_class: int = 10) -> pd.DataFrame:
    texts, labels = [], []
    for i in range(per_class):
        texts += [f"a good film number {i}", f"a bad film number {i}", f"a dull play {i}"]
        labels += ["pos", "neg", "meh"]
    return frame(texts, labels)


# -------------------------------------------------------------------------------- tokenizers


def test_kim_tokenizer_follows_clean_str() -> None:
    tokens = tokenize(["It's what they've said: \"Isn't it (great)?!\"  We'd, we'll, you're."],
                      "kim")
    assert tokens == [["it", "'s", "what", "they", "'ve", "said", "is", "n't", "it", "(",
                       "great", ")", "?", "!", "we", "'d", ",", "we", "'ll", ",", "you",
                       "'re"]]


def test_kim_cased_keeps_case_and_lower_splits_words() -> None:
    assert tokenize(["What is NASA ?"], "kim-cased") == [["What", "is", "NASA", "?"]]
    assert tokenize(["Don't PANIC, 'café' crème-brûlée!"], "lower") == [
        ["don't", "panic", "café", "crème", "brûlée"]]


def test_unknown_tokenizer_is_a_user_error() -> None:
    with pytest.raises(UserError, match="choose one of: kim"):
        tokenize(["x"], "spacy")
    assert set(TOKENIZERS) == {"kim", "kim-cased", "lower"}


# ----------------------------------------------------------------------------------- readers


def test_read_csv_tsv_and_dataframe(tmp_path) -> None:
    (tmp_path / "d.csv").write_text('sentence,y\n"a, b",pos\nNA,neg\n', encoding="utf-8")
    table = read_text_table(tmp_path / "d.csv", text_column="sentence", label_column="y")
    assert table.to_dict("list") == {"text": ["a, b", "NA"], "label": ["pos", "neg"]}
    # In TSV files quotes belong to the text.
    (tmp_path / "d.tsv").write_text('text\tlabel\n"quoted\tstart\nplain\t2\n', encoding="utf-8")
    assert read_text_table(tmp_path / "d.tsv").text.tolist() == ['"quoted', "plain"]
    assert read_text_table(frame(["x", "y"], [1, 0])).label.tolist() == ["1", "0"]


def test_utf8_byte_order_mark_is_not_part_of_the_column_name(tmp_path) -> None:
    (tmp_path / "bom.csv").write_bytes("text,label\nhi,1\n".encode("utf-8-sig"))
    assert read_text_table(tmp_path / "bom.csv").text.tolist() == ["hi"]


def test_read_folder_of_class_files(tmp_path) -> None:
    (tmp_path / "pos.txt").write_text("good\ngreat\n", encoding="utf-8")
    (tmp_path / "neg.txt").write_text("bad\n", encoding="utf-8")
    table = read_text_table(tmp_path)
    assert sorted(zip(table.text, table.label, strict=True)) == [("bad", "neg"), ("good", "pos"),
                                                    ("great", "pos")]


def test_read_kim_layout_classes_from_suffix(tmp_path) -> None:
    (tmp_path / "rt-polarity.pos").write_text("good\n", encoding="utf-8")
    (tmp_path / "rt-polarity.neg").write_text("bad\nworse\n", encoding="utf-8")
    table = read_text_table([tmp_path / "rt-polarity.pos", tmp_path / "rt-polarity.neg"])
    assert table.label.tolist() == ["pos", "neg", "neg"]


def test_missing_file_is_a_user_error(tmp_path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        read_text_table(tmp_path / "nope.csv")
    with pytest.raises(UserError, match="does not exist"):
        read_text_table([tmp_path / "a.pos", tmp_path / "a.neg"])


def test_csv_without_the_named_columns_is_a_user_error(tmp_path) -> None:
    (tmp_path / "d.csv").write_text("sentence,label\nhi,1\n", encoding="utf-8")
    with pytest.raises(UserError, match="no column 'text'.*--text-column"):
        read_text_table(tmp_path / "d.csv")
    with pytest.raises(UserError, match="no column 'y'.*--label-column"):
        read_text_table(tmp_path / "d.csv", text_column="sentence", label_column="y")


def test_non_utf8_bytes_name_file_and_line(tmp_path) -> None:
    path = tmp_path / "subj.subjective"
    path.write_bytes(b"fine\nalso fine\ncaf\xe9 latin-1\n")
    other = tmp_path / "subj.objective"
    other.write_text("plain\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"subj.subjective, line 3: .*--encoding"):
        read_text_table([path, other])
    csv_path = tmp_path / "d.csv"
    csv_path.write_bytes(b"text,label\nok,1\nna\xefve,0\n")
    with pytest.raises(UserError, match=r"d.csv, line 3"):
        read_text_table(csv_path)
    assert read_text_table(csv_path, encoding="latin-1").text.tolist() == ["ok", "naïve"]
    # Byte 0x85 inside a latin-1 sentence (as in Kim's subj data) does not end the line.
    path.write_bytes(b"one\x85sentence\r\ntwo\n")
    assert read_text_table([path, other], encoding="latin-1").text.tolist() == [
        "one\x85sentence", "two", "plain"]


def test_single_kim_file_or_unknown_suffix_is_a_user_error(tmp_path) -> None:
    (tmp_path / "rt-polarity.pos").write_text("good\n", encoding="utf-8")
    with pytest.raises(UserError, match="pass all the class files"):
        read_text_table(tmp_path / "rt-polarity.pos")
    with pytest.raises(UserError, match="pass all the class files"):
        read_text_table([tmp_path / "rt-polarity.pos"])


# ------------------------------------------------------------------------ preparing, splits


def test_empty_texts_are_skipped_with_a_count(capsys) -> None:
    table = corpus()
    table.loc[len(table)] = ["", "pos"]
    table.loc[len(table)] = ["   ", "neg"]
    table.loc[len(table)] = ["é", "neg"]  # nothing is left of it after Kim's rules
    data = prepare_text_data(table, dev_fraction=0.0)
    assert capsys.readouterr().err == "warning: skipped 3 empty text(s) in training data\n"
    assert data.skipped == {"train": 3}
    assert len(data.splits["train"].labels) == len(table) - 3


def test_all_texts_empty_is_a_user_error() -> None:
    with pytest.raises(UserError, match="all 2 texts .* are empty after tokenising with 'kim'"):
        prepare_text_data(frame(["é", "—"], ["a", "b"]), dev_fraction=0.0)  # Kim keeps neither


@pytest.mark.parametrize(("train", "words"), [
    (frame(["", " \t "] * 3, ["a", "b"] * 3), "all 6 texts in training data are empty; check "
                                               "--text-column"),
    (frame(["good", "fine", ""], ["pos", "pos", "neg"]), "single label 'pos'"),
    (frame(["good", "fine", "bad"], ["pos", "pos", "neg"]), "class 'neg' has 1"),
])
def test_mistakes_that_need_no_tokens_are_found_before_tokenising(
        train: pd.DataFrame, words: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Blank texts, one label, a dev split that cannot be made: answered without TensorFlow,
    which tokenising loads."""
    def tokenising(*args: object) -> None:
        raise AssertionError("tokenised before the checks that need no tokens")

    monkeypatch.setattr("tlkit.data.text.tokenize", tokenising)
    with pytest.raises(UserError, match=words.replace("(", r"\(")):
        prepare_text_data(train)


def test_no_texts_at_all_is_a_user_error_that_says_so(tmp_path) -> None:
    with pytest.raises(UserError, match="^training data has no texts"):
        prepare_text_data(frame([], []))
    (tmp_path / "rt.pos").write_text("")
    (tmp_path / "rt.neg").write_text("")
    table = read_text_table([tmp_path / "rt.pos", tmp_path / "rt.neg"])
    with pytest.raises(UserError, match="^training data has no texts"):
        prepare_text_data(table)


def test_single_label_is_a_user_error() -> None:
    with pytest.raises(UserError, match="single label 'only'"):
        prepare_text_data(frame(["a b", "c d"], ["only", "only"]))


def test_label_in_test_never_seen_in_training_is_a_user_error() -> None:
    test = frame(["a good film", "so so"], ["pos", "mixed"])
    with pytest.raises(UserError, match="never seen in training: 'mixed'"):
        prepare_text_data(corpus(), test, names={"test": "test.csv"})


def test_dev_split_is_stratified_seeded_and_vocabulary_comes_from_train_only() -> None:
    test = frame(["an unseen testword"], ["pos"])
    data = prepare_text_data(corpus(), test, seed=3)
    train, dev = data.splits["train"], data.splits["dev"]
    assert len(dev.labels) == 3 and sorted(dev.labels.tolist()) == [0, 1, 2]
    assert len(train.labels) == 27
    assert prepare_text_data(corpus(), test, seed=3).splits["dev"].texts == dev.texts
    assert data.vocabulary == build_vocabulary(train.tokens, "kim")
    assert data.splits["test"].ids[0].tolist()[:4] == [1, 1, 1, 0]
    given_dev = frame(["a devword film"], ["pos"])
    data = prepare_text_data(corpus(), test, given_dev)
    assert len(data.splits["train"].labels) == 30
    assert "devword" not in data.vocabulary.tokens


def test_dev_split_too_small_for_stratification_is_a_user_error() -> None:
    with pytest.raises(UserError, match="class 'b' has 1"):
        dev_split(["a"] * 20 + ["b"])


def test_kfold_is_stratified_and_covers_every_row_once() -> None:
    labels = ["a"] * 6 + ["b"] * 4
    folds = kfold_splits(labels, folds=2, seed=0)
    tested = np.sort(np.concatenate([test for _, test in folds]))
    assert tested.tolist() == list(range(10))
    for train, test in folds:
        assert sorted(labels[i] for i in test) == ["a", "a", "a", "b", "b"]
        assert not set(train) & set(test)


def test_cv_1_is_a_user_error() -> None:
    with pytest.raises(UserError, match="at least 2 folds"):
        kfold_splits(["a", "b"] * 5, folds=1)


def test_more_folds_than_examples_of_a_class_is_a_user_error() -> None:
    with pytest.raises(UserError, match="class 'b' has only 3.*--cv 3"):
        kfold_splits(["a"] * 20 + ["b"] * 3, folds=10)


# ---------------------------------------------------------------------- vocabulary, batches


def test_vocabulary_order_max_length_and_json_round_trip(tmp_path) -> None:
    vocab = build_vocabulary([["b", "a", "b"], ["c"]], "kim")
    assert vocab.tokens == ["", "[UNK]", "b", "a", "c"] and vocab.max_length == 3
    assert vocab.encode([["a", "zz", "b", "c"]]).tolist() == [[3, 1, 2]]
    short = build_vocabulary([["b", "a", "b"]], "kim", max_length=2, max_size=3)
    assert short.tokens == ["", "[UNK]", "b"] and short.max_length == 2
    vocab.save(tmp_path / "vocabulary.json")
    assert json.loads((tmp_path / "vocabulary.json").read_text())["tokenizer"] == "kim"
    assert Vocabulary.load(tmp_path / "vocabulary.json") == vocab
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(UserError, match="not a tlkit vocabulary"):
        Vocabulary.load(tmp_path / "bad.json")


def test_default_max_length_caps_a_runaway_text_with_one_warning(capsys) -> None:
    table = corpus()
    table.loc[len(table)] = [" ".join(["word"] * 20_000), "pos"]  # a whole file on one line
    data = prepare_text_data(table, dev_fraction=0.0)
    assert data.vocabulary.max_length == DEFAULT_MAX_LENGTH == 400
    assert data.splits["train"].ids.shape == (len(table), 400)
    assert capsys.readouterr().err == (
        "warning: cut 1 of 31 text(s) in training data to 400 tokens, the default max_length "
        "(the longest has 20000); to choose another cap, set max_length "
        "(--set max_length=N)\n")


def test_default_max_length_is_the_longest_text_below_the_cap(capsys) -> None:
    data = prepare_text_data(corpus(), dev_fraction=0.0)
    assert data.vocabulary.max_length == 5 and capsys.readouterr().err == ""
    table = corpus()
    table.loc[len(table)] = [" ".join(["word"] * 500), "pos"]
    data = prepare_text_data(table, dev_fraction=0.0, max_length=600)  # chosen: no warning
    assert data.vocabulary.max_length == 600 and capsys.readouterr().err == ""


def test_training_batches_cover_each_text_once_and_are_cut_to_their_longest() -> None:
    texts = [" ".join(["w"] * n) for n in range(1, 41)]
    data = prepare_text_data(frame(texts, ["a", "b"] * 20), dev_fraction=0.0)
    train = data.splits["train"]
    seen = []
    for ids, labels in text_dataset(train, batch_size=4, shuffle=True, seed=1, sort_window=3):
        lengths = (ids.numpy() != 0).sum(axis=1)
        assert ids.shape[1] == lengths.max()
        seen += lengths.tolist()
        assert labels.shape[0] == ids.shape[0]
    assert sorted(seen) == list(range(1, 41))
    ordered = np.concatenate([y.numpy() for _, y in text_dataset(train, batch_size=7)])
    assert ordered.tolist() == train.labels.tolist()


def test_text_streams_run_without_the_autotuner() -> None:
    # Dropping an autotuned iterator waits for the autotuner's next wake-up (up to 5 s),
    # and Keras drops one at the end of every fit and evaluation.
    from tlkit.seeds import EpochClock

    data = prepare_text_data(frame(["a b", "c d e", "f"] * 4, ["a", "b", "a"] * 4),
                             dev_fraction=0.0)
    train = data.splits["train"]
    for stream in (text_dataset(train), text_dataset(train, shuffle=True),
                   text_dataset(train, shuffle=True, clock=EpochClock(0))):
        assert stream.options().autotune.enabled is False
        assert sum(int(labels.shape[0]) for _, labels in stream) == 12
