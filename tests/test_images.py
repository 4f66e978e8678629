"""Image data: folders, CSV and DataFrames into tables, splits, the broken-file scan, tf.data."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import CLASS_COLOURS, assert_user_error, make_image_folder, write_image

from tlkit.data.images import (
    balanced_class_weight,
    decode_image,
    find_unreadable,
    load_image_data,
    make_dataset,
    read_image_table,
    read_recipe_table,
    split_table,
)
from tlkit.recipes import Augment, ImageRecipe

# Messages here are matched without regard to case.
assert_user_error_ci = functools.partial(assert_user_error, ignore_case=True)


def _recipe(data: object = None, **overrides: object) -> ImageRecipe:
    values = {"backbone": "tiny_cnn", "weights": "none", "val_fraction": 0.25,
              "test_fraction": 0.25, "seed": 0, **overrides}
    # Recipes hold data as text (they round-trip through YAML); tests make Paths.
    return ImageRecipe(data=str(data) if isinstance(data, Path) else data, **values)


def _batches(dataset: object) -> tuple[np.ndarray, np.ndarray]:
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in dataset], strict=True)
    return np.concatenate(images), np.concatenate(labels)


def _split_folders(root: Path, counts: dict[str, int]) -> Path:
    for split, n in counts.items():
        for name in ("red", "green"):
            for i in range(n):
                write_image(root / split / name / f"{split}{i}.png", CLASS_COLOURS[name], seed=i)
    return root


# --- sources ------------------------------------------------------------------------------

def test_folder_of_class_folders(image_folder: Path) -> None:
    table = read_image_table(image_folder)
    assert len(table) == 16
    assert table["label"].value_counts().to_dict() == {"green": 8, "red": 8}
    assert table["split"].isna().all()
    for path, label in zip(table["path"], table["label"], strict=True):
        assert Path(path).is_file() and Path(path).parent.name == label


def test_hidden_files_and_macos_debris_are_not_images(image_folder: Path) -> None:
    (image_folder / "red" / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (image_folder / "red" / ".DS_Store").write_bytes(b"junk")
    write_image(image_folder / "__MACOSX" / "red" / "1.png", (0, 0, 0))
    write_image(image_folder / "green" / ".thumbs" / "1.png", (0, 0, 0))
    table = read_image_table(image_folder)
    assert len(table) == 16
    assert set(table["label"]) == {"red", "green"}


@pytest.mark.parametrize("val_name", ["val", "validation"])
def test_train_val_test_folders_keep_their_split(tmp_path: Path, val_name: str) -> None:
    root = _split_folders(tmp_path / "data", {"train": 4, val_name: 2, "test": 3})
    data = load_image_data(_recipe(root))
    assert data.class_names == ["green", "red"]
    for _, row in data.table.iterrows():
        folder = Path(row["path"]).parent.parent.name
        given = "val" if folder == val_name else folder
        # the calibration split is carved out of the training images
        assert row["split"] == given or (given, row["split"]) == ("train", "calibration")
    assert data.split("test")["label"].value_counts().to_dict() == {"green": 3, "red": 3}


def test_train_and_test_folders_carve_val_out_of_train(tmp_path: Path) -> None:
    root = _split_folders(tmp_path / "data", {"train": 8, "test": 3})
    data = load_image_data(_recipe(root, val_fraction=0.25))
    val = data.split("val")
    assert all("/train/" in p for p in val["path"])
    assert val["label"].value_counts().to_dict() == {"green": 2, "red": 2}
    calibration = data.split("calibration")
    assert len(data.split("train")) + len(calibration) == 12
    assert all("/train/" in p for p in calibration["path"])
    test = data.split("test")
    assert len(test) == 6 and all("/test/" in p for p in test["path"])


def test_split_folders_next_to_class_folders_are_refused(tmp_path: Path) -> None:
    root = _split_folders(tmp_path / "data", {"train": 2, "test": 2})
    write_image(root / "blue" / "0.png", CLASS_COLOURS["blue"])
    assert_user_error_ci(lambda: read_image_table(root), "mixes split folders", "blue")


def test_csv_with_custom_columns_and_paths_relative_to_the_csv(
        image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [(f"images/{label}/{i}.png", label) for label in ("red", "green") for i in range(8)]
    rows[0] = (str(image_folder / "red" / "0.png"), "red")  # an absolute path stays as it is
    csv = tmp_path / "labels.csv"
    pd.DataFrame(rows, columns=["file", "category"]).to_csv(csv, index=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative paths must not depend on the working folder

    data = load_image_data(_recipe(str(csv), path_column="file", label_column="category"))
    assert sorted(data.table["path"]) == sorted(str(p) for p in image_folder.rglob("*.png"))
    assert all(Path(p).parent.name == label
               for p, label in zip(data.table["path"], data.table["label"], strict=True))
    assert data.class_names == ["green", "red"]


def test_csv_split_column_is_honoured(image_folder: Path, tmp_path: Path) -> None:
    paths = sorted(image_folder.rglob("*.png"))
    splits = ["train", "train", "train", "validation", "train", "test", "dev", "Train"] * 2
    frame = pd.DataFrame({"path": [str(p) for p in paths],
                          "label": [p.parent.name for p in paths], "split": splits})
    frame.to_csv(tmp_path / "data.csv", index=False)
    table = read_image_table(tmp_path / "data.csv")
    named = {"validation": "val", "dev": "val", "Train": "train"}
    assert table["split"].tolist() == [named.get(s, s) for s in splits]


def test_csv_with_unknown_split_value(image_folder: Path) -> None:
    paths = sorted(image_folder.rglob("*.png"))
    frame = pd.DataFrame({"path": [str(p) for p in paths],
                          "label": [p.parent.name for p in paths],
                          "split": ["train"] * 15 + ["holdout"]})
    assert_user_error_ci(lambda: read_image_table(frame), "unknown split value 'holdout'")


def test_dataframe_paths_relative_to_working_folder(image_folder: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(image_folder)
    frame = pd.DataFrame({"img": [f"{c}/{i}.png" for c in ("red", "green") for i in range(8)],
                          "y": ["red"] * 8 + ["green"] * 8})
    data = load_image_data(_recipe(None, path_column="img", label_column="y"), data=frame)
    assert len(data.table) == 16
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in data.table["path"])


def test_dataframe_with_repeated_index_and_partial_split(image_folder: Path) -> None:
    """Rows are matched by position, never by index label; rows with no split get one."""
    def part(label: str) -> pd.DataFrame:
        paths = sorted(str(p) for p in (image_folder / label).glob("*.png"))
        return pd.DataFrame({"path": paths, "label": label,
                             "split": ["test", "test"] + [None] * 6})

    frame = pd.concat([part("red"), part("green")])  # index 0..7 twice
    data = load_image_data(_recipe(None, val_fraction=1 / 3), data=frame)
    table = data.table
    assert sorted(table["path"]) == sorted(frame["path"])
    given_test = set(frame.loc[frame["split"] == "test", "path"])
    assert set(data.split("test")["path"]) == given_test
    assert data.split("val")["label"].value_counts().to_dict() == {"green": 2, "red": 2}
    assert len(data.split("train")) + len(data.split("calibration")) == 8


# --- splitting ----------------------------------------------------------------------------

def _unsplit(per_class: int = 20, classes: str = "abc") -> pd.DataFrame:
    labels = [c for c in classes for _ in range(per_class)]
    return pd.DataFrame({"path": [f"{c}{i}.png" for i, c in enumerate(labels)],
                         "label": labels, "split": None})


def test_stratified_split_is_seeded_and_proportional() -> None:
    first = split_table(_unsplit(), 0.25, 0.25, seed=7)
    again = split_table(_unsplit(), 0.25, 0.25, seed=7)
    other = split_table(_unsplit(), 0.25, 0.25, seed=8)
    assert first["split"].tolist() == again["split"].tolist()
    assert first["split"].tolist() != other["split"].tolist()
    for table in (first, other):
        counts = table.groupby(["label", "split"]).size().unstack()
        assert (counts["test"] == 5).all() and (counts["val"] == 5).all()
        assert (counts["train"] == 10).all()


def test_no_hold_out_keeps_everything_for_training() -> None:
    table = split_table(_unsplit(4), 0.0, 0.0, seed=0)
    assert (table["split"] == "train").all()


def test_split_needs_two_images_per_class() -> None:
    table = _unsplit(4)
    table = pd.concat([table, pd.DataFrame({"path": ["z.png"], "label": ["z"], "split": None})])
    assert_user_error_ci(lambda: split_table(table.reset_index(drop=True), 0.25, 0.25, seed=0),
                "class 'z'", "at least 2")


def test_no_val_or_test_images_is_refused_when_the_data_is_read(tmp_path: Path) -> None:
    """Val and test both empty trained the whole run, then failed with a ValueError."""
    root = make_image_folder(tmp_path / "d", per_class=4)
    assert_user_error(lambda: read_recipe_table(_recipe(root, val_fraction=0.0,
                                                        test_fraction=0.0)),
                      "val_fraction and test_fraction are both 0", "--set test_fraction=0.15")
    given = make_image_folder(tmp_path / "given" / "train", per_class=4).parent
    assert_user_error(lambda: read_recipe_table(_recipe(given, val_fraction=0.0)),
                      f"'{given}' gives only train images and val_fraction is 0")
    # One of the two is enough: the run is evaluated on it.
    for fractions in ({"val_fraction": 0.0}, {"test_fraction": 0.0}):
        assert len(read_recipe_table(_recipe(root, **fractions))) == 8


def test_a_split_that_cannot_be_made_is_refused_before_the_scan(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The scan of every image loads TensorFlow and decodes each file: a minute for a mistake
    the table alone shows."""
    root = make_image_folder(tmp_path / "d", per_class=1, classes=("red", "green", "blue"))
    monkeypatch.setattr("tlkit.data.images.find_unreadable", lambda paths: pytest.fail("scan"))
    assert_user_error(lambda: read_recipe_table(_recipe(root)), "class 'blue' has 1")


@pytest.mark.parametrize("url", ["http://example.com/red/0.jpg", "https://x.org/a b.png",
                                 "s3://bucket/red/1.jpg", "file:///tmp/a.png"])
def test_image_paths_that_are_urls_are_refused_and_shown_whole(tmp_path: Path, url: str
                                                                ) -> None:
    csv = tmp_path / "urls.csv"
    csv.write_text(f"path,label\n{url},red\nlocal.png,green\n")
    assert_user_error(lambda: read_image_table(csv), "1 of 2 image paths", f"are URLs, e.g. "
                      f"'{url}'; tlkit reads local files: download")


def test_an_image_csv_in_latin_1_is_read_with_the_encoding_its_error_names(
        image_folder: Path, tmp_path: Path) -> None:
    """The error said --encoding latin-1, which finetune did not have."""
    from conftest import run_cli

    csv = tmp_path / "latin.csv"
    rows = [f"{path},{'rouge' if path.parent.name == 'red' else 'vert clair'}é"
            for path in sorted(image_folder.rglob("*.png"))]
    csv.write_bytes(("path,label\n" + "\n".join(rows) + "\n").encode("latin-1"))
    assert_user_error(lambda: read_recipe_table(_recipe(csv)), "not utf-8",
                      "--encoding latin-1")
    table = read_recipe_table(_recipe(csv, encoding="latin-1"))
    assert sorted(set(table["label"])) == ["rougeé", "vert clairé"]
    # Through the CLI: the file is read, and the next check (no val or test images) answers.
    code, _, stderr = run_cli(["finetune", "--data", str(csv), "--encoding", "latin-1",
                               "--set", "val_fraction=0", "--set", "test_fraction=0",
                               "--out", str(tmp_path / "runs")])
    assert code == 2 and "val_fraction and test_fraction are both 0" in stderr, stderr


def test_same_seed_same_split_through_load(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "d", per_class=8, classes=("red", "green", "blue"))
    first = load_image_data(_recipe(root, seed=3)).table
    again = load_image_data(_recipe(root, seed=3)).table
    other = load_image_data(_recipe(root, seed=4)).table
    assert first.equals(again)
    assert not first["split"].equals(other["split"])


# --- decoding and tf.data -----------------------------------------------------------------

FORMATS = [(".jpg", "RGB"), (".jpg", "L"), (".png", "RGB"), (".png", "L"), (".png", "RGBA"),
           (".png", "P"), (".bmp", "RGB"), (".bmp", "L"), (".gif", "RGB"), (".gif", "L")]


def test_every_format_and_mode_decodes_to_rgb_float_0_255(tmp_path: Path) -> None:
    from PIL import Image

    paths = [str(write_image(tmp_path / f"{mode}{suffix}", (200, 60, 30), size=24, mode=mode))
             for suffix, mode in FORMATS]
    assert find_unreadable(paths) == []
    images, labels = _batches(make_dataset(paths, np.arange(len(paths)), 20, 64))
    assert images.shape == (len(paths), 20, 20, 3) and images.dtype == np.float32
    assert labels.tolist() == list(range(len(paths)))
    assert images.min() >= 0 and images.max() <= 255 and images.max() > 100
    for image, path, (suffix, mode) in zip(images, paths, FORMATS, strict=True):
        with Image.open(path) as source:
            reference = np.asarray(source.convert("RGB"), dtype="float32")
        np.testing.assert_allclose(image.mean((0, 1)), reference.mean((0, 1)), atol=4,
                                   err_msg=f"{suffix} {mode}")
        if mode == "L":
            assert np.abs(image[..., 0] - image[..., 2]).max() < 1, f"{suffix} grey"
        else:
            assert image[..., 0].mean() > image[..., 2].mean() + 100, f"{suffix} {mode} colour"


def test_decode_image_squares_any_shape_and_takes_the_first_gif_frame(tmp_path: Path) -> None:
    from PIL import Image

    wide = tmp_path / "wide.png"
    Image.fromarray(np.full((10, 40, 3), 90, "uint8")).save(wide)
    assert tuple(decode_image(str(wide), 16).shape) == (16, 16, 3)

    frames = [Image.new("RGB", (12, 12), colour) for colour in ((250, 0, 0), (0, 0, 250))]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100)
    first = decode_image(str(gif), 12).numpy()
    assert first.shape == (12, 12, 3)
    assert first[..., 0].mean() > 200 and first[..., 2].mean() < 50


def test_augmentation_changes_training_images_only(image_folder: Path) -> None:
    augment = Augment(flip=True, rotation=0.1, zoom=0.2, contrast=0.3)
    one = [str(image_folder / "red" / "0.png")]
    plain = decode_image(one[0], 24).numpy()[None]

    train = make_dataset(one, np.array([1]), 24, 1, training=True, augment=augment, seed=0)
    epoch1, epoch2 = _batches(train)[0], _batches(train)[0]
    assert epoch1.shape == plain.shape and epoch1.dtype == np.float32
    assert not np.allclose(epoch1, plain) and not np.allclose(epoch2, plain)
    assert not np.allclose(epoch1, epoch2)  # new random draws every epoch
    assert epoch1.min() >= 0 and epoch1.max() <= 255

    unaugmented = make_dataset(one, np.array([1]), 24, 1, training=True, augment=None)
    np.testing.assert_array_equal(_batches(unaugmented)[0], plain)

    paths = sorted(str(p) for p in image_folder.rglob("*.png"))
    val = make_dataset(paths, np.zeros(len(paths)), 24, 4, training=False, augment=augment)
    first, second = _batches(val)[0], _batches(val)[0]
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, np.stack([decode_image(p, 24).numpy() for p in paths]))


def test_augmentations_are_drawn_independently(tmp_path: Path) -> None:
    """Whether an image is flipped must not predict how its contrast changes."""
    path = str(write_image(tmp_path / "grey.png", (128, 128, 128), size=16))
    copies = 64
    train = make_dataset([path] * copies, np.zeros(copies), 16, copies, training=True,
                         augment=Augment(flip=True, rotation=0, zoom=0, contrast=0.5), seed=5)
    images = _batches(train)[0][..., 0]
    plain = decode_image(path, 16).numpy()[..., 0]
    centred = [plain - plain.mean(), plain[:, ::-1] - plain.mean()]
    outputs = images - images.mean((1, 2), keepdims=True)
    flipped = np.array([abs((o * centred[1]).sum()) > abs((o * centred[0]).sum())
                        for o in outputs])
    factor = outputs.std((1, 2)) / plain.std()
    assert 0 < flipped.sum() < copies and factor.std() > 0.05
    assert abs(np.corrcoef(flipped, factor)[0, 1]) < 0.5


def test_training_stream_is_shuffled_and_keeps_labels_with_images(image_folder: Path) -> None:
    paths = sorted(str(p) for p in image_folder.rglob("*.png"))
    labels = np.array([Path(p).parent.name == "red" for p in paths], "int32")
    train = make_dataset(paths, labels, 16, 4, training=True, seed=1)
    images1, labels1 = _batches(train)
    images2, labels2 = _batches(train)
    assert sorted(labels1.tolist()) == sorted(labels.tolist())
    assert not np.array_equal(images1, images2), "the same order in every epoch"
    for images, got in ((images1, labels1), (images2, labels2)):
        is_red = images[..., 0].mean((1, 2)) > images[..., 1].mean((1, 2))
        assert is_red.astype("int32").tolist() == got.tolist()


def test_cache_keeps_decoded_images_and_still_reshuffles(image_folder: Path) -> None:
    paths = sorted(str(p) for p in image_folder.rglob("*.png"))
    labels = np.array([Path(p).parent.name == "red" for p in paths], "int32")
    train = make_dataset(paths, labels, 16, 16, training=True, cache=True, seed=2)
    val = make_dataset(paths, labels, 16, 16, cache=True)
    epoch1, labels1 = _batches(train)
    val1 = _batches(val)[0]
    for path in paths:  # from now on only the cache can produce the images
        os.remove(path)
    epoch2, labels2 = _batches(train)
    np.testing.assert_array_equal(_batches(val)[0], val1)
    assert not np.array_equal(epoch1, epoch2), "the cache replays one order every epoch"
    key = lambda images: np.sort(images.reshape(len(images), -1).sum(1))  # noqa: E731
    np.testing.assert_allclose(key(epoch1), key(epoch2), rtol=1e-6)
    is_red = epoch2[..., 0].mean((1, 2)) > epoch2[..., 1].mean((1, 2))
    assert is_red.astype("int32").tolist() == labels2.tolist()

    uncached = make_dataset(paths, labels, 16, 16)
    with pytest.raises(Exception, match="(?i)not found|no such file"):
        _batches(uncached)


def test_balanced_class_weights() -> None:
    labels = np.array([0] * 6 + [1] * 2 + [2] * 4)
    weights = balanced_class_weight(labels, 3)
    assert weights == pytest.approx({0: 12 / 18, 1: 12 / 6, 2: 12 / 12})
    counts = np.bincount(labels)
    assert len({round(weights[c] * counts[c], 9) for c in range(3)}) == 1


# --- bad input ----------------------------------------------------------------------------

def test_path_that_does_not_exist(tmp_path: Path) -> None:
    assert_user_error_ci(lambda: read_image_table(tmp_path / "nope"), "nope", "does not exist")


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    assert_user_error_ci(lambda: read_image_table(tmp_path / "photos"), "photos", "is empty",
                         "subfolder")


def test_images_without_class_folders(tmp_path: Path) -> None:
    write_image(tmp_path / "flat" / "a.png", (1, 2, 3))
    assert_user_error_ci(lambda: read_image_table(tmp_path / "flat"), "no class subfolders")


def test_class_folder_with_no_images(image_folder: Path) -> None:
    (image_folder / "blue").mkdir()
    (image_folder / "blue" / "notes.txt").write_text("not an image")
    assert_user_error_ci(lambda: read_image_table(image_folder), "blue", "has no images")


def test_single_class(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "one", per_class=3, classes=("red",))
    assert_user_error_ci(lambda: read_image_table(root), "single class", "red")
    frame = pd.DataFrame({"path": [str(p) for p in root.rglob("*.png")], "label": "red"})
    assert_user_error_ci(lambda: read_image_table(frame), "DataFrame", "single class")


@pytest.mark.parametrize(("columns", "path_column", "label_column", "missing"), [
    (["path", "class"], "path", "label", "label"),
    (["file", "label"], "filename", "label", "filename"),
])
def test_csv_without_the_named_columns(image_folder: Path, tmp_path: Path, columns: list[str],
                                       path_column: str, label_column: str,
                                       missing: str) -> None:
    csv = tmp_path / "bad.csv"
    pd.DataFrame([[str(image_folder / "red" / "0.png"), "red"]], columns=columns).to_csv(
        csv, index=False)
    assert_user_error_ci(lambda: read_image_table(csv, path_column, label_column),
                f"no column '{missing}'", *columns)


def test_csv_whose_paths_do_not_exist(tmp_path: Path) -> None:
    csv = tmp_path / "labels.csv"
    pd.DataFrame({"path": ["a/1.png", "b/2.png"], "label": ["a", "b"]}).to_csv(csv, index=False)
    assert_user_error_ci(lambda: read_image_table(csv), "2 of 2", "do not exist",
                str(tmp_path / "a" / "1.png"))


def test_csv_with_missing_labels(image_folder: Path) -> None:
    frame = pd.DataFrame({"path": [str(p) for p in sorted(image_folder.rglob("*.png"))],
                          "label": ["red"] * 8 + ["green"] * 7 + [None]})
    assert_user_error_ci(lambda: read_image_table(frame), "1 row(s) with no label", "data row 16")


def _broken_files(folder: Path) -> dict[str, Path]:
    """A zero-byte image, a truncated JPEG and a text file named .jpg, among good images."""
    zero = folder / "red" / "zero.png"
    zero.write_bytes(b"")
    truncated = write_image(folder / "green" / "truncated.jpg", (30, 200, 40), size=64)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    text = folder / "red" / "notes.jpg"
    text.write_text("these are my notes, not a picture\n")
    return {"zero": zero, "truncated": truncated, "text": text}


def test_broken_files_are_listed_in_one_warning_and_skipped(
        image_folder: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLKIT_QUIET", "1")  # the warning alone, without progress lines
    broken = _broken_files(image_folder)
    data = load_image_data(_recipe(image_folder))
    messages = capsys.readouterr().err.splitlines()
    assert len(messages) == 1
    assert messages[0].startswith("warning: skipping 3 unreadable image(s)")
    assert all(str(path) in messages[0] for path in broken.values())
    assert "truncated" in messages[0]  # the reason, not only the path
    assert {p for p, _ in data.skipped} == {str(p) for p in broken.values()}
    assert len(data.table) == 16
    assert not set(data.table["path"]) & {str(p) for p in broken.values()}


def test_broken_files_with_strict_are_an_error(
        image_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = _broken_files(image_folder)
    message = assert_user_error_ci(lambda: load_image_data(_recipe(image_folder, strict=True)),
                                   "3 unreadable image(s)", "--strict")
    assert all(str(path) in message for path in broken.values())
    assert "unreadable" not in capsys.readouterr().err  # an error, not a warning


def _links(folder: Path) -> dict[str, Path]:
    """A dangling link, two links pointing at each other and one pointing at itself."""
    dangling = folder / "red" / "moved.jpg"
    dangling.symlink_to(folder / "red" / "no-longer-here.jpg")
    loop_a, loop_b = folder / "green" / "a.png", folder / "green" / "b.png"
    loop_a.symlink_to(loop_b)
    loop_b.symlink_to(loop_a)
    itself = folder / "red" / "itself.gif"
    itself.symlink_to(itself)
    return {"dangling": dangling, "loop_a": loop_a, "loop_b": loop_b, "itself": itself}


def test_dangling_symlinks_and_loops_are_skipped_with_a_reason(
        image_folder: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLKIT_QUIET", "1")  # the warning alone, without progress lines
    links = _links(image_folder)
    good = image_folder / "red" / "linked.png"
    good.symlink_to(image_folder / "red" / "0.png")  # a working link is an image like any
    data = load_image_data(_recipe(image_folder))
    reasons = dict(data.skipped)
    assert set(reasons) == {str(p) for p in links.values()}
    assert reasons[str(links["dangling"])] == (
        f"broken symbolic link: its target '{image_folder}/red/no-longer-here.jpg' does not exist")
    for name in ("loop_a", "loop_b", "itself"):
        assert reasons[str(links[name])].startswith("symbolic link loop")
    assert str(good) in set(data.table["path"]) and len(data.table) == 17
    warning = capsys.readouterr().err
    assert warning.startswith("warning: skipping 4 unreadable image(s)")
    assert warning.count("\n") == 1


def test_dangling_symlinks_and_loops_with_strict_are_an_error(image_folder: Path) -> None:
    links = _links(image_folder)
    message = assert_user_error_ci(lambda: load_image_data(_recipe(image_folder, strict=True)),
                                   "4 unreadable image(s)", "broken symbolic link",
                                   "symbolic link loop", "--strict")
    assert all(str(path) in message for path in links.values())


def test_images_pillow_reads_but_tensorflow_cannot_are_found_by_the_scan(
        image_folder: Path) -> None:
    from PIL import Image

    tiff = image_folder / "red" / "really_a_tiff.jpg"
    Image.new("RGB", (8, 8), (200, 0, 0)).save(tiff, format="TIFF")
    one_bit = image_folder / "green" / "one_bit.bmp"
    Image.new("1", (8, 8), 1).save(one_bit)
    found = dict(find_unreadable([str(tiff), str(one_bit), str(image_folder / "red" / "0.png")]))
    assert set(found) == {str(tiff), str(one_bit)}
    assert "TIFF" in found[str(tiff)] and "TensorFlow cannot decode" in found[str(one_bit)]


def test_class_whose_images_are_all_unreadable(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "d", per_class=4, classes=("red", "green", "blue"))
    for path in (root / "blue").iterdir():
        path.write_bytes(b"")
    assert_user_error_ci(lambda: load_image_data(_recipe(root)), "class 'blue'", "no readable")


def test_every_row_in_the_test_split_is_a_user_error(image_folder: Path) -> None:
    # Found by tests/test_fuzz.py: val was carved out of no training rows (min() of nothing).
    table = read_image_table(image_folder).assign(split="test")
    assert_user_error_ci(lambda: split_table(table, 0.25, 0.0, seed=0),
                         "no image is in the train split")


def test_images_in_formats_tensorflow_cannot_read_are_skipped_with_one_warning(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = make_image_folder(tmp_path / "data", per_class=3)
    write_image(folder / "red" / "extra.webp", (220, 30, 30))  # WebP is read
    write_image(folder / "green" / "scan.TIFF", (30, 220, 30))
    (folder / "red" / "photo.heic").write_bytes(b"not read")
    (folder / "green" / ".hidden.tif").write_bytes(b"")  # hidden files stay unmentioned
    table = read_image_table(folder)
    assert len(table) == 7 and table["path"].str.endswith("extra.webp").any()
    assert not table["path"].str.lower().str.endswith((".heic", ".tiff")).any()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "skipping 2 image file(s)" in err
    assert "(.heic: 1, .tiff: 1)" in err and "convert them to .jpg or .png" in err
