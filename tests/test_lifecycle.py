"""One job lifecycle for every kind (tlkit.train.job), and the run folder it writes."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_image_folder

import tlkit.runs
from tlkit.errors import UserError
from tlkit.recipes import ImageRecipe, Stage, TextCNNRecipe
from tlkit.runs import RunKept, new_run_folder, partial_path

ROOT = Path(__file__).resolve().parents[1]


def test_cross_validation_wraps_an_image_job_too(tmp_path: Path) -> None:
    from tlkit.train.image import ImageJob, check_image_run
    from tlkit.train.job import cross_validate

    data = make_image_folder(tmp_path / "images", per_class=6)
    recipe = ImageRecipe(backbone="tiny_cnn", data=str(data), weights="none", input_size=32,
                         batch_size=4, augment=None, probe=False, early_stopping=None,
                         calibration_fraction=0.0,  # every image in a fold's train/val/test
                         stages=[Stage(name="all", epochs=1, lr=0.01, train_from="all")])
    out = tmp_path / "runs"
    run = cross_validate(ImageJob(check_image_run(recipe, out, "cv"), out), folds=2)
    folder = out / "cv"
    folds = pd.read_csv(folder / "folds.csv")
    assert folds["fold"].tolist() == [0, 1] and (folds["test"] == 6).all()
    assert (folds["train"] + folds["val"] + folds["test"] == 12).all()
    # every image once, predicted by the fold model that held it out
    held_out = pd.read_csv(folder / "predictions.csv")
    assert sorted(held_out["input"]) == sorted(str(p) for p in data.glob("*/*.png"))
    assert set(held_out["split"]) == {"test"}
    assert [p.name for p in sorted((folder / "folds").iterdir())] == ["0", "1"]
    assert all((folder / "folds" / k / "history.csv").is_file() for k in ("0", "1"))
    assert run.metrics["cv"]["folds"] == 2 and run.folds is not None
    assert (folder / "model.keras").is_file() and (folder / "split.csv").is_file()


def test_the_text_job_takes_its_optimizer_from_the_table(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import tlkit.train.stages as stages
    from tlkit.models.textcnn import SparseAdadelta, kim_optimizer
    from tlkit.train.text import train_textcnn

    built = stages.make_optimizer(Stage(optimizer="kim-adadelta", lr=0.5))
    assert type(built) is SparseAdadelta  # the embedding's sparse update, as Kim's
    kim = kim_optimizer(learning_rate=0.5).get_config()
    assert {**built.get_config(), "name": kim["name"]} == kim

    asked: list[str] = []
    make = stages.make_optimizer
    monkeypatch.setattr(stages, "make_optimizer",
                        lambda stage, *rest: asked.append(stage.optimizer) or make(stage, *rest))
    rows = [{"text": f"{'good' if i % 2 else 'bad'} film {i % 5}", "label": str(i % 2)}
            for i in range(30)]
    pd.DataFrame(rows).to_csv(tmp_path / "t.csv", index=False)
    train_textcnn(TextCNNRecipe(data=str(tmp_path / "t.csv"), embedding_dim=8, feature_maps=4,
                                epochs=1, batch_size=8), out=tmp_path / "runs", name="t")
    assert asked == ["kim-adadelta"]


def test_a_kept_failure_keeps_the_unfinished_run_as_it_is(tmp_path: Path) -> None:
    with pytest.raises(RunKept, match="^worker 1 stopped; restart it$"), \
            new_run_folder(tmp_path, "kept") as writer:
        writer.write_classes(["a", "b"])
        raise RunKept("worker 1 stopped; restart it")
    assert (partial_path(tmp_path / "kept") / "classes.json").is_file()
    with pytest.raises(UserError), new_run_folder(tmp_path, "gone"):
        raise UserError("bad data")  # a new run with no epoch in it: nothing to keep
    assert not partial_path(tmp_path / "gone").exists()


def test_a_lost_peer_becomes_one_line_that_keeps_the_run(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    import tensorflow as tf

    from tlkit.train.workers import peer_failures

    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["a:1", "b:2"]}, '
                                    '"task": {"type": "worker", "index": 0}}')
    lost = tf.errors.UnavailableError(None, None, "from /job:worker/replica:0/task:1")
    with pytest.raises(RunKept, match="^worker 1 of this multi-worker run stopped"), \
            peer_failures(Path("runs/mw"), "tlkit finetune"):
        raise lost


def test_every_run_file_name_is_defined_once() -> None:
    names = {value for key, value in vars(tlkit.runs).items()
             if key.endswith(("_FILE", "_BEST")) and isinstance(value, str)}
    assert {"metrics.json", "history.csv", "split.csv", "vocabulary.json", "predictions.csv",
            "classes.json", "model.keras"} <= names
    found = []
    for path in sorted((ROOT / "tlkit").rglob("*.py")):
        if path == ROOT / "tlkit" / "runs.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert found == [], "import the name from tlkit.runs instead"


# ------------------------------------------------------------------------------ multi-label

CHANNELS = ("red", "green", "blue")


def _channel_images(tmp_path: Path, per_set: int = 4) -> Path:
    """Images whose colour channels each carry one label: red|blue is magenta, none black."""
    from conftest import write_image

    rows = []
    sets = [(), ("red",), ("green",), ("blue",), ("red", "green"), ("red", "blue"),
            ("green", "blue"), ("red", "green", "blue")]
    for k, labels in enumerate(sets):
        colour = tuple(220 if name in labels else 30 for name in CHANNELS)
        for i in range(per_set):
            path = write_image(tmp_path / "img" / f"{k}-{i}.png", colour, seed=10 * k + i)
            rows.append({"path": str(path), "label": "|".join(labels)})
    pd.DataFrame(rows).to_csv(tmp_path / "images.csv", index=False)
    return tmp_path / "images.csv"


def test_a_multi_label_image_run_trains_sigmoid_bce_and_keeps_val_thresholds(
        tmp_path: Path) -> None:
    import keras

    from tlkit.evaluation.multilabel import choose_thresholds
    from tlkit.tasks import get_task
    from tlkit.train.image import finetune

    recipe = ImageRecipe(backbone="tiny_cnn", data=str(_channel_images(tmp_path)),
                         labels="multi", weights="none", input_size=32, batch_size=8,
                         augment=None, early_stopping=None, class_weight="balanced",
                         val_fraction=0.25, test_fraction=0.25, monitor="val_loss",
                         stages=[Stage(name="all", epochs=8, lr=0.01, train_from="all")])
    run = finetune(recipe, out=tmp_path / "runs", name="ml")
    assert run.model.layers[-1].get_layer("probabilities").get_config()["activation"] == "sigmoid"
    history = pd.read_csv(run.path / "history.csv")
    assert history["loss"].iloc[-1] < history["loss"].iloc[0]  # the weighted BCE went down
    # The thresholds are each class's best F1 on val, for the saved model's val probabilities.
    split = pd.read_csv(run.path / "split.csv", keep_default_na=False)
    val = split[split["split"] == "val"]
    saved = keras.saving.load_model(run.path / "model.keras")
    task = get_task("image-multilabel")
    probabilities, _ = task.probabilities(saved, val["path"].tolist())
    expected = choose_thresholds(task.targets(val["label"], run.class_names), probabilities)
    assert run.metrics["val"]["thresholds"] == pytest.approx(expected.tolist(), abs=1e-6)
    assert not np.allclose(probabilities.sum(axis=1), 1.0)  # a sigmoid per class
    assert run.metrics["test"]["micro_f1"] >= 0.6, run.metrics["test"]


def test_a_multi_label_head_trains_on_cached_features_with_its_probe(tmp_path: Path) -> None:
    """The default recipe's path: a frozen backbone, the head on cached features, a probe.

    Label sets must keep their width through the feature cache's stream (they were cut to
    one id, a rank error) and the probe is one-vs-rest, scored by mAP.
    """
    from tlkit.train.image import finetune

    recipe = ImageRecipe(backbone="tiny_cnn", data=str(_channel_images(tmp_path)),
                         labels="multi", weights="none", input_size=32, batch_size=8,
                         augment=None, early_stopping=None, val_fraction=0.25,
                         test_fraction=0.25, stages=[Stage(name="head", epochs=3, lr=0.01)])
    assert recipe.feature_cache and recipe.stages[0].train_from is None
    run = finetune(recipe, out=tmp_path / "runs", name="cached")
    assert len(run.metrics["val"]["thresholds"]) == len(CHANNELS)
    assert 0.0 <= run.metrics["test"]["average_precision"]["macro"] <= 1.0
    assert run.metrics["probe"]["metric"] == "mAP"  # the probe is one-vs-rest


def test_balanced_weights_for_label_sets_weigh_each_side_of_each_label() -> None:
    from tlkit.tasks import get_task
    from tlkit.train.heads import balanced_weights, head_loss

    targets = np.array([[1, 0], [0, 0], [0, 0], [0, 1]])
    class_weight, label_weights = balanced_weights(get_task("image-multilabel"), targets, 2)
    assert class_weight is None  # Keras's class_weight takes one id per example
    loss = head_loss(get_task("image-multilabel"), label_weights)
    p = np.full((1, 2), 0.5, dtype="float32")
    rare = float(loss(np.array([[1.0, 0.0]]), p)[0])  # label 0 present (1 in 4): weight 2
    common = float(loss(np.array([[0.0, 0.0]]), p)[0])  # both absent (3 in 4): 2/3 each
    assert rare / common == pytest.approx((2.0 + 2 / 3) / (2 / 3 + 2 / 3))


def test_a_multi_label_text_run_has_a_sigmoid_head_and_val_thresholds(tmp_path: Path) -> None:
    from tlkit.train.text import train_textcnn

    words = {"sun": "sun", "sea": "sea", "rain": "rain"}
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(90):
        labels = [label for label in words if rng.random() < 0.4]
        filler = " ".join(rng.choice(["the", "a", "day", "we", "saw"], size=3))
        rows.append({"text": " ".join([filler, *(words[label] for label in labels)]),
                     "label": "|".join(labels)})
    pd.DataFrame(rows).to_csv(tmp_path / "t.csv", index=False)
    run = train_textcnn(TextCNNRecipe(data=str(tmp_path / "t.csv"), labels="multi",
                                      embedding_dim=8, feature_maps=8, epochs=6, batch_size=10,
                                      test=None, dev_fraction=0.3),
                        out=tmp_path / "runs", name="tml")
    assert run.class_names == ["rain", "sea", "sun"]
    probabilities = run.model.predict(np.array(["sun sea", "the day"], dtype=object), verbose=0)
    assert probabilities.shape == (2, 3) and not np.allclose(probabilities.sum(axis=1), 1.0)
    assert len(run.metrics["val"]["thresholds"]) == 3
    assert {"subset_accuracy", "micro_f1", "hamming_loss"} <= set(run.metrics["val"])


def test_checking_a_destination_another_worker_makes_at_once_is_not_an_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The workers of a multi-worker run check `runs/` and `runs/.worker-1/` at the same time:
    # a folder made by the other between "missing" and mkdir, and kept by it, is theirs.
    from tlkit.runs import check_destination

    out = tmp_path / "runs"
    mkdir = Path.mkdir

    def other_worker_first(self: Path, *args: object, **kwargs: object) -> None:
        if self == out and not out.exists():
            mkdir(out)
            mkdir(out / ".mw.partial")  # ... and starts its run in it
        mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", other_worker_first)
    assert check_destination(out / ".worker-1", "mw") == out / ".worker-1" / "mw"
    assert (out / ".mw.partial").is_dir() and not (out / ".worker-1").exists()
