"""Learning-rate schedules within a stage: closed forms, the optimizer's own step count,
per-block factors, resume, the recipe YAML, the history's ``lr`` column, and mistakes."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import assert_user_error, run_cli

from tlkit.recipes import ImageRecipe, Stage, dump_recipe, load_recipe_text
from tlkit.schedules import learning_rate

LR, T = 0.1, 100  # the stage's rate and steps in the closed forms below


def _cosine(k: float, steps: float, floor: float = 0.0) -> float:
    """Cosine decay ``k`` steps into ``steps``, from LR to ``floor * LR``."""
    return LR * ((1 - floor) * 0.5 * (1 + math.cos(math.pi * min(k, steps) / steps)) + floor)


CLOSED_FORMS = {
    # (schedule, warmup or None for the default): {step: rate}
    ("constant", None): {0: LR, 99: LR},
    ("constant", 0.1): {0: 0.0, 5: LR / 2, 10: LR, 99: LR},
    ("cosine", None): {0: 0.0, 2: LR * 2 / 5, 5: LR, 35: _cosine(30, 95), 100: 0.0,
                       150: 0.0},
    ("cosine", 0.0): {0: LR, 50: LR / 2, 100: 0.0},
    ("one-cycle", None): {0: LR / 25, 10: LR / 25 + (LR - LR / 25) * 10 / 25, 25: LR,
                          60: _cosine(35, 75, 1e-5), 100: LR * 1e-5},
    ("step", None): {0: LR, 49: LR, 50: LR * 0.1, 74: LR * 0.1, 75: LR * 0.01,
                     99: LR * 0.01},
}


@pytest.mark.parametrize(("schedule", "warmup"), list(CLOSED_FORMS),
                         ids=[f"{s}-warmup-{w}" for s, w in CLOSED_FORMS])
def test_each_schedule_is_its_closed_form(schedule: str, warmup: float | None) -> None:
    rate = learning_rate(schedule, LR, T, warmup)
    for step, expected in CLOSED_FORMS[schedule, warmup].items():
        value = float(rate(step)) if callable(rate) else rate
        assert value == pytest.approx(expected, rel=1e-5, abs=1e-9), (schedule, step)


def test_the_rate_follows_the_optimizers_iterations_and_scales_per_block() -> None:
    """Blocks at ``lr_decay`` factors move by the schedule's rate times their factor, at the
    step the optimizer counts (what a checkpoint restores), not a Python counter."""
    import keras

    from tlkit.train.stages import make_optimizer, schedule_rate

    top, low = keras.Variable(np.zeros(2, "float32"), name="top"), \
        keras.Variable(np.zeros(2, "float32"), name="low")
    stage = Stage(epochs=4, lr=LR, optimizer="sgd", schedule="step")
    optimizer = make_optimizer(stage, {low.path: 0.5})
    schedule_rate(optimizer, stage, steps_per_epoch=25)  # T = 100 steps
    optimizer.build([top, low])
    optimizer.iterations.assign(60)  # past the first drop: LR * 0.1
    assert float(optimizer.learning_rate) == pytest.approx(LR * 0.1)
    optimizer.apply_gradients([(np.ones(2, "float32"), top), (np.ones(2, "float32"), low)])
    # SGD's first step from zero velocity moves a variable by rate * gradient.
    assert top.numpy() == pytest.approx([-LR * 0.1] * 2)
    assert low.numpy() == pytest.approx([-LR * 0.1 * 0.5] * 2)
    assert int(optimizer.iterations) == 61


def _cosine_fit(folder: Path, stop_after: int | None = None) -> pd.DataFrame:
    """A 3-epoch cosine stage of 4 steps per epoch into ``folder``; with ``stop_after``, it is
    interrupted in that epoch's end (as Ctrl-C: the epoch is not logged nor backed up)."""
    import keras
    import tensorflow as tf

    import tlkit.train.fit as fit
    from tlkit.train.stages import make_optimizer

    folder.mkdir(exist_ok=True)
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(16, 3)).astype("float32")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    train = tf.data.Dataset.from_tensor_slices((x, x[:, :1])).batch(4)
    stage = Stage(epochs=3, lr=LR, optimizer="sgd", schedule="cosine", warmup=0.0)
    real = fit._rate_log

    class LogThenStop(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.log = real()

        def set_model(self, model: keras.Model) -> None:
            super().set_model(model)
            self.log.set_model(model)

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self.log.on_epoch_end(epoch, logs)
            if epoch == stop_after:
                raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fit, "_rate_log", LogThenStop)
        return fit.fit_stages(model, [stage], {"train": train}, folder, verbose=0,
                              prepare=lambda stage: model.compile(make_optimizer(stage), "mse"))


def test_history_logs_the_rate_and_a_resumed_stage_continues_its_schedule(
        tmp_path: Path) -> None:
    whole = _cosine_fit(tmp_path / "whole")
    expected = [LR * 0.5 * (1 + math.cos(math.pi * steps / 12)) for steps in (4, 8, 12)]
    assert whole["lr"].tolist() == pytest.approx(expected, abs=1e-7)

    with pytest.raises(KeyboardInterrupt):
        _cosine_fit(tmp_path / "cut", stop_after=1)
    assert pd.read_csv(tmp_path / "cut" / "history.csv")["epoch"].tolist() == [0]
    resumed = _cosine_fit(tmp_path / "cut")  # restores the optimizer after epoch 0: step 4
    assert resumed["lr"].tolist() == pytest.approx(expected, abs=1e-7)
    assert resumed["loss"].tolist() == pytest.approx(whole["loss"].tolist(), rel=1e-5)


def test_schedule_and_warmup_round_trip_through_the_recipe_yaml() -> None:
    recipe = ImageRecipe(backbone="vgg16", data="x", stages=[
        Stage(name="head", epochs=2), Stage(name="ft", train_from="all", lr_decay=0.5,
                                            schedule="one-cycle", warmup=0.3)])
    assert load_recipe_text(dump_recipe(recipe)) == recipe
    changed = load_recipe_text("stages:\n- lr: 1e-3\n",
                               ["stages.0.schedule=cosine", "stages.0.warmup=0.1"])
    assert (changed.stages[0].schedule, changed.stages[0].warmup) == ("cosine", 0.1)
    assert (Stage().schedule, Stage().warmup) == ("constant", None)  # today's runs unchanged


SCHEDULE_ERRORS = [
    ("stages.0.schedule=linear", ["schedule 'linear' is not one of", "cosine", "one-cycle"]),
    ("stages.0.warmup=1.0", ["warmup is a fraction", "[0, 1)", "got 1.0"]),
    ("stages.0.warmup=-0.1", ["warmup is a fraction", "got -0.1"]),
    ("stages.0.warmup=many", ["warmup"]),
]


@pytest.mark.parametrize(("override", "words"), SCHEDULE_ERRORS,
                         ids=[o for o, _ in SCHEDULE_ERRORS])
def test_bad_schedule_values_are_one_line(override: str, words: list[str]) -> None:
    assert_user_error(lambda: load_recipe_text("stages:\n- lr: 1e-3\n", [override]), *words)


def test_step_schedule_refuses_a_warmup() -> None:
    assert_user_error(lambda: Stage(schedule="step", warmup=0.1),
                      "schedule 'step' has no warmup", "use cosine")


def test_cli_schedule_mistakes_exit_2_before_tensorflow(tmp_path: Path) -> None:
    code, stdout, stderr = run_cli(["finetune", "--data", str(tmp_path), "--out",
                                    str(tmp_path / "runs"), "--set", "stages.0.schedule=cosin"])
    assert code == 2 and stderr.startswith("Error: ") and len(stderr.splitlines()) == 1, stderr
    assert "schedule 'cosin'" in stderr and not (tmp_path / "runs").exists()
    script = ("import sys\nfrom tlkit.cli import main\ntry:\n"
              f"    main(['finetune', '--data', {str(tmp_path)!r}, '--set', "
              "'stages.0.warmup=2'])\nexcept SystemExit as e:\n    assert e.code == 2\n"
              "assert 'tensorflow' not in sys.modules\nprint('ok')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.strip().endswith("ok"), done.stderr[-2000:]


def test_a_tiny_image_run_with_a_cosine_stage_logs_a_falling_rate(image_folder: Path,
                                                                  tmp_path: Path) -> None:
    code, stdout, stderr = run_cli([
        "finetune", "--backbone", "tiny_cnn", "--weights", "none", "--data", str(image_folder),
        "--out", str(tmp_path / "runs"), "--name", "cos", "--epochs", "3",
        "--schedule", "feature-extraction",
        "--set", "input_size=32", "--set", "batch_size=4", "--set", "stages.0.schedule=cosine",
        "--set", "stages.0.lr=0.01"])
    assert code == 0, stdout + stderr
    history = pd.read_csv(tmp_path / "runs" / "cos" / "history.csv")
    rates = history["lr"].tolist()
    assert len(rates) == 3 and rates[0] > rates[1] > rates[2] == pytest.approx(0, abs=1e-9)
    assert rates[0] < 0.01


def test_a_scheduled_stage_training_the_backbone_logs_its_closed_form(image_folder: Path,
                                                                      tmp_path: Path) -> None:
    """A whole-backbone stage with per-block rates (not on cached features) follows its
    schedule over epochs x batches; a head stage before it keeps its constant rate."""
    from tlkit.train.image import finetune

    recipe = ImageRecipe(
        backbone="tiny_cnn", data=str(image_folder), weights="none", input_size=32,
        batch_size=4, val_fraction=0.25, test_fraction=0.25, early_stopping=None,
        stages=[Stage(name="head", epochs=1, lr=0.01),
                Stage(name="ft", epochs=3, lr=1e-3, train_from="all", lr_decay=0.5,
                      schedule="one-cycle")])
    run = finetune(recipe, out=tmp_path / "runs", name="oc")
    split = pd.read_csv(run.path / "split.csv")
    steps = math.ceil((split["split"] == "train").sum() / 4)
    rate = learning_rate("one-cycle", 1e-3, 3 * steps)
    history = pd.read_csv(run.path / "history.csv")
    assert history["lr"].tolist() == pytest.approx(
        [0.01] + [float(rate(steps * k)) for k in (1, 2, 3)], rel=1e-5)
