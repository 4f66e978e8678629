"""Devices, mixed precision, XLA and tf.distribute strategies, checked on this CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_user_error, make_image_folder, run_cli

from tlkit.recipes import ImageRecipe, Stage, TextCNNRecipe

ROOT = Path(__file__).resolve().parents[1]


def _image_recipe(data: Path, **changes: object) -> ImageRecipe:
    values = dict(backbone="tiny_cnn", data=str(data), weights="none", input_size=32,
                  batch_size=4, early_stopping=None, augment=None,
                  stages=[Stage(name="head", epochs=1, lr=0.01),
                          Stage(name="all", epochs=1, lr=0.01, train_from="all")])
    values.update(changes)
    return ImageRecipe(**values)


@pytest.mark.parametrize("changes", [{"mixed_precision": "float16"},
                                     {"mixed_precision": "bfloat16"},
                                     {"jit_compile": True}], ids=str)
def test_image_run_trains_and_saves_with_engine_settings(changes: dict, tmp_path: Path) -> None:
    import keras

    from tlkit.models.saved import load_run
    from tlkit.train.image import finetune

    data = make_image_folder(tmp_path / "img", per_class=6)
    run = finetune(_image_recipe(data, **changes), out=tmp_path / "runs", name="r")
    assert keras.config.dtype_policy().name == "float32"  # the global policy comes back
    assert run.metrics["devices"]["replicas"] == 1
    policy = changes.get("mixed_precision")
    assert run.metrics["devices"]["precision"] == (f"mixed_{policy}" if policy else "float32")
    loaded = load_run(run.path)
    assert loaded.model.predict(np.zeros((1, 32, 32, 3)), verbose=0).dtype == np.float32


@pytest.mark.parametrize("changes", [{"mixed_precision": "float16"},
                                     {"mixed_precision": "bfloat16"},
                                     {"jit_compile": True}], ids=str)
def test_text_run_trains_and_saves_with_engine_settings(changes: dict, tmp_path: Path) -> None:
    import pandas as pd

    from tlkit.train.text import train_textcnn

    rows = [{"text": f"{'good' if i % 2 else 'bad'} film {i % 5}", "label": str(i % 2)}
            for i in range(40)]
    pd.DataFrame(rows).to_csv(tmp_path / "t.csv", index=False)
    run = train_textcnn(TextCNNRecipe(data=str(tmp_path / "t.csv"), embedding_dim=8,
                                      feature_maps=4, epochs=2, batch_size=8, **changes),
                        out=tmp_path / "runs")
    policy = changes.get("mixed_precision")
    assert run.metrics["devices"]["precision"] == (f"mixed_{policy}" if policy else "float32")
    assert run.history["loss"].notna().all()
    probabilities = run.model.predict(np.array(["good film"], dtype=object), verbose=0)
    assert probabilities.dtype == np.float32


def test_engine_mistakes_are_one_line() -> None:
    from tlkit.devices import make_strategy, use_gpus

    assert_user_error(lambda: use_gpus("3"), "--gpus 3", "no GPU 3")
    assert_user_error(lambda: make_strategy("multiworker"), "TF_CONFIG")
    assert_user_error(lambda: ImageRecipe(strategy="horovod"), "strategy 'horovod'")
    assert_user_error(lambda: ImageRecipe(mixed_precision="fp8"), "mixed_precision 'fp8'")


def test_devices_command_lists_the_cpu() -> None:
    code, out, _ = run_cli(["devices"])
    assert code == 0 and "CPU" in out and "mixed_precision auto here" in out
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    assert "memory_gb" in out and f"{ram:.1f}" in out


MIRRORED = """
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from tlkit.recipes import ImageRecipe, Stage
from tlkit.train.image import finetune
data, out, strategy, train_from = sys.argv[1:5]
# train_from "head" trains on the feature cache, "all" end to end
recipe = ImageRecipe(backbone="tiny_cnn", data=data, weights="none", input_size=32,
                     batch_size=4, early_stopping=None, augment=None, strategy=strategy,
                     stages=[Stage(name=train_from, epochs=8, lr=0.01,
                                   train_from=None if train_from == "head" else train_from)])
run = finetune(recipe, out=out, name=f"{strategy}-{train_from}")
print(json.dumps({"val": run.metrics["val"]["accuracy"],
                  "replicas": run.metrics["devices"]["replicas"]}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("train_from", ["all", "head"])
def test_mirrored_over_two_logical_cpus_matches_one_device(train_from: str,
                                                           tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "img", per_class=12, classes=("red", "green", "blue"))
    results = {}
    for strategy in ("none", "mirrored"):
        done = subprocess.run([sys.executable, "-c", MIRRORED, str(data), str(tmp_path / "runs"),
                               strategy, train_from], capture_output=True, text=True, cwd=ROOT,
                              timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        results[strategy] = json.loads(done.stdout.strip().splitlines()[-1])
    assert results["none"]["replicas"] == 1 and results["mirrored"]["replicas"] == 2
    assert abs(results["none"]["val"] - results["mirrored"]["val"]) <= 0.15
    # a head on the random tiny backbone's frozen features separates the colours less well
    assert results["mirrored"]["val"] >= {"all": 0.8, "head": 0.5}[train_from]


def test_loading_a_run_model_turns_memory_growth_on_first(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import keras

    import tlkit.devices
    from tlkit.models.saved import load_keras_file

    inputs = keras.Input((3,))
    keras.Model(inputs, keras.layers.Dense(2)(inputs)).save(tmp_path / "m.keras")
    calls: list[object] = []
    monkeypatch.setattr(tlkit.devices, "use_gpus", calls.append)
    assert load_keras_file(tmp_path / "m.keras").output_shape == (None, 2)
    assert calls == [None]  # every GPU, before the model is placed on one
