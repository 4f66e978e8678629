"""Named datasets: fetched through Keras's get_file with their sha256, from a loopback
server or a file:// folder made here, and turned into text,label CSVs."""

from __future__ import annotations

import functools
import hashlib
import http.server
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from conftest import assert_user_error, run_cli

from tlkit.datasets import DATASETS, Dataset, RawFile, fetch_dataset

# Raw files in the three formats, as their sources write them.
RAW = {
    "data/sst.train": b"1 a gripping , funny film .\n\n0 dull and long .\n",
    "data/raw/Q.train": b"DESC:manner How did it \x96 end ?\nHUM:ind Who wrote Hamlet ?\n",
    "data/raw/sub.pos": b"a warm story\n",
    "data/raw/sub.neg": b"  a cold one  \n",
}


def _sha(path: str) -> str:
    return hashlib.sha256(RAW[path]).hexdigest()


def _row(**changes: object) -> Dataset:
    values = dict(name="tiny", description="three formats", citation="here", format="label-first",
                  splits={"train": (RawFile("data/sst.train", _sha("data/sst.train")),)},
                  train_command="tlkit textcnn train --data {folder}/train.csv",
                  labels=("negative", "positive"))
    values.update(changes)
    return Dataset(**values)  # type: ignore[arg-type]


@pytest.fixture()
def mirror(tmp_path: Path) -> Path:
    for path, data in RAW.items():
        (tmp_path / "mirror" / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "mirror" / path).write_bytes(data)
    return tmp_path / "mirror"


@pytest.fixture()
def server(mirror: Path) -> Iterator[str]:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(mirror))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


def test_each_format_becomes_text_label_rows_over_loopback_http(server: str,
                                                                tmp_path: Path) -> None:
    rows = [_row(),
            _row(name="q", format="coarse-label", labels=(), splits={
                "train": (RawFile("data/raw/Q.train", _sha("data/raw/Q.train"), "cp1252"),)}),
            _row(name="s", format="one-class-per-file", labels=(), splits={"all": (
                RawFile("data/raw/sub.pos", _sha("data/raw/sub.pos"), label="pos"),
                RawFile("data/raw/sub.neg", _sha("data/raw/sub.neg"), label="neg"))})]
    tables = {row.name: pd.read_csv(fetch_dataset(row, tmp_path / "data", server)
                                    / f"{next(iter(row.splits))}.csv", dtype=str)
              for row in rows}
    assert tables["tiny"].values.tolist() == [["a gripping , funny film .", "positive"],
                                              ["dull and long .", "negative"]]
    assert tables["q"].values.tolist() == [["How did it \u2013 end ?", "DESC"],
                                           ["Who wrote Hamlet ?", "HUM"]]
    assert tables["s"].values.tolist() == [["a warm story", "pos"], ["a cold one", "neg"]]
    assert (tmp_path / "data" / "tiny" / "raw" / "sst.train").read_bytes() == RAW["data/sst.train"]


def test_a_file_url_folder_is_a_mirror(mirror: Path, tmp_path: Path) -> None:
    folder = fetch_dataset(_row(), tmp_path / "data", mirror.as_uri())
    assert len(pd.read_csv(folder / "train.csv")) == 2


def test_a_changed_file_is_refused_and_leaves_nothing(server: str, tmp_path: Path) -> None:
    row = _row(splits={"train": (RawFile("data/sst.train", "0" * 64),)})
    assert_user_error(lambda: fetch_dataset(row, tmp_path / "data", server),
                      "does not have the sha256 tlkit expects")
    assert not (tmp_path / "data").exists() or not list((tmp_path / "data").iterdir())


def test_network_failure_and_an_existing_folder_are_one_line(server: str,
                                                             tmp_path: Path) -> None:
    assert_user_error(lambda: fetch_dataset(_row(), tmp_path / "a", "http://127.0.0.1:9/"),
                      "cannot download http://127.0.0.1:9/data/sst.train", "--source")
    fetch_dataset(_row(), tmp_path / "b", server)
    assert_user_error(lambda: fetch_dataset(_row(), tmp_path / "b", server), "already exists")
    (tmp_path / "file").write_text("not a folder")
    assert_user_error(lambda: fetch_dataset(_row(), tmp_path / "file", server),
                      "cannot write into", "choose another --out")


def test_every_row_names_files_at_a_pinned_commit_with_their_sha256() -> None:
    for row in DATASETS.values():
        assert re.search(r"/[0-9a-f]{40}/$", row.source), row.name
        assert "{folder}" in row.train_command
        for file in (file for files in row.splits.values() for file in files):
            assert re.fullmatch(r"[0-9a-f]{64}", file.sha256), file


def test_cli_lists_and_refuses_an_unknown_name() -> None:
    code, out, _ = run_cli(["datasets", "list"])
    assert code == 0 and all(name in out for name in DATASETS)
    code, _, err = run_cli(["datasets", "fetch", "imdb"])
    assert code == 2 and "'imdb' is not one of" in err


def test_a_row_with_an_unknown_format_is_refused_when_the_table_is_built() -> None:
    with pytest.raises(ValueError, match="format 'csv' is not one of"):
        _row(format="csv")
