"""The learning-rate finder: a known answer on a quadratic, the command's files and errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_image_folder, run_cli

from tlkit.train.lr_find import DIVERGED, Sweep, smooth, suggest, sweep_rates

ROOT = Path(__file__).resolve().parents[1]


def test_smoothing_is_fastais_bias_corrected_average() -> None:
    losses = np.array([3.0, 1.0, 2.0])
    average, expected = 0.0, []
    for k, loss in enumerate(losses, start=1):
        average = 0.98 * average + 0.02 * loss
        expected.append(average / (1 - 0.98**k))
    assert np.allclose(smooth(losses), expected)
    assert smooth(losses)[0] == 3.0  # bias-corrected: the first value is the first loss


def test_suggestion_is_a_tenth_of_the_smoothed_minimum_ignoring_nan() -> None:
    rates = sweep_rates(1e-4, 1.0, 5)
    assert suggest(rates, np.array([2.0, 1.5, 0.5, 1.0, np.nan])) == pytest.approx(1e-3)


def _quadratic_sweep(seed: int) -> tuple[object, float, int]:
    """Least squares with plain SGD on the full batch: the loss is a quadratic whose largest
    curvature L is known, and gradient descent diverges for every rate above 2 / L."""
    import keras
    import tensorflow as tf

    from tlkit.train.lr_find import sweep_model

    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(256, 4)) * [1.0, 0.5, 0.3, 0.1]).astype("float32")
    y = x @ rng.normal(size=(4, 1)).astype("float32")
    curvature = float(np.linalg.eigvalsh(2 * x.T @ x / len(x)).max())  # Hessian of the mse
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, use_bias=False)])
    model.compile(keras.optimizers.SGD(), "mse")
    steps = 200
    sweep = sweep_model(model, tf.data.Dataset.from_tensor_slices((x, y)).batch(len(x)),
                        sweep_rates(1e-6, 100.0, steps))
    return sweep, 2 / curvature, steps


@pytest.mark.parametrize("seed", [0, 1])
def test_suggested_rate_is_below_where_gradient_descent_diverges(seed: int) -> None:
    sweep, diverges_above, steps = _quadratic_sweep(seed)
    # the sweep stopped once the loss blew up, and only after the rate passed 2 / L
    assert len(sweep.rates) < steps
    assert sweep.rates[-1] > diverges_above
    assert sweep.smoothed[-1] > DIVERGED * np.nanmin(sweep.smoothed)
    # the suggestion is a rate that trains: below divergence, not a vanishing one
    assert 1e-5 < sweep.suggestion < diverges_above
    assert sweep.suggestion > diverges_above / 30
    assert sweep.turned and "never turned up" not in sweep.line()


def test_a_sweep_whose_loss_still_falls_at_the_end_says_its_rate_is_a_bound() -> None:
    rates = sweep_rates(1e-6, 1.0, 100)
    falling = Sweep(rates, np.linspace(2, 1, 100), smooth(np.linspace(2, 1, 100)))
    assert not falling.turned and "never turned up" in falling.line()
    assert falling.suggestion == pytest.approx(0.1)


def test_each_step_records_its_own_loss_not_the_running_mean() -> None:
    import keras
    import tensorflow as tf

    from tlkit.train.lr_find import sweep_model

    # two batches: one the zero model fits exactly (loss 0), one it misses by 1 (loss 1); at
    # rates this small the weights barely move, so the steps' losses alternate 1, 0, 1, 0
    x, y = np.ones((2, 1), "float32"), np.array([[1.0], [0.0]], "float32")
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False,
                                                                    kernel_initializer="zeros")])
    model.compile(keras.optimizers.SGD(), "mse")
    sweep = sweep_model(model, tf.data.Dataset.from_tensor_slices((x, y)).batch(1),
                        sweep_rates(1e-9, 1e-8, 10))
    assert np.allclose(sweep.losses, [1, 0] * 5, atol=1e-6)


def test_cli_writes_the_csv_and_figure_and_prints_one_line(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "images", per_class=6)
    out = tmp_path / "lr"
    code, stdout, stderr = run_cli(["lr-find", "--data", str(data), "--backbone", "tiny_cnn",
                                    "--weights", "none", "--steps", "20", "--start", "1e-4",
                                    "--end", "1", "--out", str(out)])
    assert code == 0, stderr
    assert stdout.startswith("suggested lr: ") and len(stdout.strip().splitlines()) == 1
    assert sorted(path.name for path in out.iterdir()) == ["lr_find.csv", "lr_find.png"]
    table = pd.read_csv(out / "lr_find.csv")
    assert list(table.columns) == ["step", "lr", "loss", "smoothed_loss"]
    assert 2 <= len(table) <= 20 and table["lr"].iloc[0] == pytest.approx(1e-4)
    assert table["lr"].is_monotonic_increasing
    assert (out / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    suggested = float(stdout.split()[2])
    assert suggested == pytest.approx(table["lr"][table["smoothed_loss"].idxmin()] / 10,
                                      rel=1e-2)
    assert not list(tmp_path.glob("runs*"))  # no run folder anywhere


ERRORS = [
    (["--start", "0"], "--start 0 must be a rate above 0"),
    (["--start", "1", "--end", "0.1"], "--end 0.1 must be above --start 1"),
    (["--steps", "3"], "--steps 3 is too few"),
    (["--schedule", "feature-extraction", "--stage", "1"],
     "--stage 1 is out of range: the recipe has 1 stage; pass --stage 0"),
    (["--schedule", "two-stage", "--stage", "2"],
     "--stage 2 is out of range: the recipe has 2 stages; pass --stage 0 to 1"),
    (["--set", "stages.0.lr=fast"], "stage 'head': lr must be a number or auto, got 'fast'"),
    (["--out", "{file}"], "--out '"),
]


@pytest.mark.parametrize(("args", "message"), ERRORS, ids=[" ".join(a) for a, _ in ERRORS])
def test_sweep_mistakes_are_one_line_before_tensorflow(args: list[str], message: str,
                                                        tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "images", per_class=2)
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    args = [arg.replace("{file}", str(tmp_path / "notes.txt")) for arg in args]
    argv = ["lr-find", "--data", str(data), "--out", str(tmp_path / "lr"), *args]
    script = ("import sys\nfrom tlkit.cli import main\ntry:\n"
              f"    main({json.dumps(argv)})\nexcept SystemExit as exit_:\n"
              "    print(exit_.code, 'tensorflow' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.stdout.strip() == "2 False", done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {message}"), done.stderr
    assert not (tmp_path / "lr").exists()


def test_lr_auto_sweeps_the_stage_before_it_trains_and_records_the_rate(tmp_path: Path) -> None:
    import tlkit
    from tlkit.recipes import ImageRecipe, Stage

    data = make_image_folder(tmp_path / "images", per_class=6)
    recipe = ImageRecipe(backbone="tiny_cnn", weights="none", data=str(data), probe=False,
                         stages=[Stage(name="head", epochs=1, lr="auto")])
    run = tlkit.finetune(recipe, out=tmp_path / "runs", name="auto")
    metrics = json.loads((tmp_path / "runs" / "auto" / "metrics.json").read_text())
    (found,) = metrics["lr_found"]
    assert found["stage"] == "head" and found["rule"] == "minimum of the smoothed loss / 10"
    assert 1e-8 < found["lr"] <= 1.0 and found["steps"] <= 200
    assert run.recipe.stages[0].lr == found["lr"]  # the stage trained at the rate it chose
    assert "lr: auto" in (tmp_path / "runs" / "auto" / "recipe.yaml").read_text()
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["auto"]
