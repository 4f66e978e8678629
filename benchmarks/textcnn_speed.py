"""tlkit's CNN-rand against a plain-Keras Kim CNN: same data, same epochs, same process.

The reference is written the way the Keras examples write it: ids padded to one fixed length,
Embedding 300-d, Conv1D widths 3/4/5 x 100 with GlobalMaxPooling1D per branch, Concatenate,
Dropout 0.5, Dense with MaxNorm(3), Adadelta (1.0, 0.95, 1e-6), batch 50, ``model.fit`` on
NumPy arrays, compiled with Keras's defaults. tlkit's model is ``build_textcnn`` trained as
tlkit trains it: ``SparseAdadelta`` (same numbers as Adadelta, touching only the batch's
embedding rows), length-sorted batches cut to their longest sentence, Kim's edge padding,
several steps per call. Both models see the same token ids (tlkit's tokenizer and
training-split vocabulary). Their epochs alternate, with the order swapped every epoch, so
load from other processes on the machine falls on both alike. An epoch is timed inside
``fit`` (from its first step to its end), so the time ``fit`` takes to set up and tear down
(one call per epoch here, one per run in use) is not counted: dropping an autotuned tf.data
iterator at the end of ``fit`` waits up to 5 s for the autotuner, which would be charged to
every epoch here instead of once per run. Sentences per second are reported over all
epochs, without the first (which includes tracing), and as the median epoch (least moved by
bursts of load); CPU seconds per epoch count this process's work alone. Test accuracy is
measured after every epoch, outside the timing.

Usage:
    python benchmarks/textcnn_speed.py --data /path/to/trec   # train.csv and test.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def reference_model(vocab_size: int, length: int, num_classes: int, seed: int) -> Any:
    """The Kim CNN as a Keras example would write it."""
    import keras

    keras.utils.set_random_seed(seed)
    ids = keras.Input(shape=(length,), dtype="int32")
    embedded = keras.layers.Embedding(vocab_size, 300)(ids)
    branches = [keras.layers.GlobalMaxPooling1D()(
        keras.layers.Conv1D(100, width, activation="relu")(embedded)) for width in (3, 4, 5)]
    features = keras.layers.Dropout(0.5)(keras.layers.Concatenate()(branches))
    outputs = keras.layers.Dense(num_classes, activation="softmax",
                                 kernel_constraint=keras.constraints.MaxNorm(3))(features)
    model = keras.Model(ids, outputs)
    model.compile(optimizer=keras.optimizers.Adadelta(learning_rate=1.0, rho=0.95,
                                                      epsilon=1e-6),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def epoch_timer() -> Any:
    """A callback keeping the last epoch's wall and CPU seconds (``.wall``, ``.cpu``)."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self.started = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self.wall = time.perf_counter() - self.started[0]
            self.cpu = time.process_time() - self.started[1]

    return EpochTimer()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder with train.csv and test.csv")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--tokenizer", default="kim-cased",
                        help="tlkit tokenizer (kim-cased is Kim's choice for TREC)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    import keras
    import numpy as np
    import tensorflow as tf

    from tlkit.data.text import prepare_text_data, read_text_table, text_dataset
    from tlkit.models.textcnn import KIM, build_textcnn, compile_textcnn, training_model

    folder = Path(args.data)
    read = {name: read_text_table(folder / f"{name}.csv", args.text_column, args.label_column)
            for name in ("train", "test")}
    data = prepare_text_data(read["train"], read["test"], tokenizer=args.tokenizer,
                             dev_fraction=0.0, seed=args.seed)
    train, test = data.splits["train"], data.splits["test"]
    vocab_size, classes = len(data.vocabulary), len(data.class_names)

    reference = reference_model(vocab_size, data.vocabulary.max_length, classes, args.seed)
    # What tlkit fits: the built model's layers on its training path (training_model).
    tlkit_model = training_model(build_textcnn(vocab_size, classes, "rand", seed=args.seed))
    compile_textcnn(tlkit_model)
    train_stream = text_dataset(train, batch_size=KIM.batch_size, shuffle=True, seed=args.seed)
    test_stream = text_dataset(test, batch_size=500)

    timer = epoch_timer()
    runs = {
        "plain-keras": (lambda: reference.fit(train.ids, train.labels, batch_size=KIM.batch_size,
                                              epochs=1, verbose=0, callbacks=[timer]),
                        lambda: reference.evaluate(test.ids, test.labels, batch_size=500,
                                                   verbose=0)[1]),
        "tlkit": (lambda: tlkit_model.fit(train_stream, epochs=1, shuffle=False, verbose=0,
                                          callbacks=[timer]),
                  lambda: tlkit_model.evaluate(test_stream, verbose=0)[1]),
    }
    rows = []
    for epoch in range(1, args.epochs + 1):
        order = list(runs) if epoch % 2 else list(runs)[::-1]
        for name in order:
            fit, evaluate = runs[name]
            started = time.perf_counter()
            fit()
            rows.append({"model": name, "epoch": epoch, "seconds": round(timer.wall, 3),
                         "fit_seconds": round(time.perf_counter() - started, 3),
                         "cpu_seconds": round(timer.cpu, 3),
                         "sentences_per_second": round(len(train.labels) / timer.wall, 1),
                         "test_accuracy": round(float(evaluate()), 4)})
            print(f"epoch {epoch:2d}  {name:12s} {rows[-1]['sentences_per_second']:8.0f} "
                  f"sentences/s  test accuracy {rows[-1]['test_accuracy']:.3f}", flush=True)

    summary = {}
    for name in runs:
        mine = [r for r in rows if r["model"] == name]
        later = mine[1:] or mine
        summary[name] = {
            "sentences_per_second": round(len(train.labels) * len(mine)
                                          / sum(r["seconds"] for r in mine), 1),
            "sentences_per_second_after_epoch_1": round(
                len(train.labels) * len(later) / sum(r["seconds"] for r in later), 1),
            # The median epoch is the least moved by other processes' bursts of load.
            "sentences_per_second_median_epoch": float(np.median(
                [r["sentences_per_second"] for r in later])),
            "cpu_seconds_per_epoch": round(sum(r["cpu_seconds"] for r in mine) / len(mine), 2),
            "cpu_seconds_median_epoch": float(np.median([r["cpu_seconds"] for r in later])),
            "test_accuracy": mine[-1]["test_accuracy"],
        }
    ratio = {key: round(summary["tlkit"][key] / summary["plain-keras"][key], 2)
             for key in ("sentences_per_second", "sentences_per_second_after_epoch_1",
                         "sentences_per_second_median_epoch")}
    for key in ("cpu_seconds_per_epoch", "cpu_seconds_median_epoch"):
        ratio[key] = round(summary["plain-keras"][key] / summary["tlkit"][key], 2)

    print(f"\n{folder.name}: {len(train.labels)} training sentences, {len(test.labels)} test, "
          f"vocabulary {vocab_size}, max length {data.vocabulary.max_length}, "
          f"{args.epochs} epochs, batch {KIM.batch_size}")
    header = (f"{'model':12s} {'sent/s':>9s} {'sent/s ep2+':>12s} {'median ep2+':>12s} "
              f"{'cpu s/epoch':>12s} {'test acc':>9s}")
    print(header)
    print("-" * len(header))
    for name, s in summary.items():
        print(f"{name:12s} {s['sentences_per_second']:9.0f} "
              f"{s['sentences_per_second_after_epoch_1']:12.0f} "
              f"{s['sentences_per_second_median_epoch']:12.0f} "
              f"{s['cpu_seconds_per_epoch']:12.2f} {s['test_accuracy']:9.3f}")
    print(f"{'ratio':12s} {ratio['sentences_per_second']:8.2f}x "
          f"{ratio['sentences_per_second_after_epoch_1']:11.2f}x "
          f"{ratio['sentences_per_second_median_epoch']:11.2f}x "
          f"{ratio['cpu_seconds_per_epoch']:11.2f}x  (cpu: plain-keras / tlkit)")

    result = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None
                                                         else sys.argv[1:])]),
        "dataset": folder.name, "epochs": args.epochs, "seed": args.seed,
        "tokenizer": args.tokenizer, "train_sentences": len(train.labels),
        "test_sentences": len(test.labels), "vocabulary": vocab_size,
        "max_length": data.vocabulary.max_length,
        "reference_jit_compile": bool(reference.jit_compile),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "tensorflow": tf.__version__, "keras": keras.__version__},
        "summary": summary, "ratio": ratio,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"textcnn_speed_{folder.name}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    with stem.with_suffix(".csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"\nwrote {stem}.json and {stem}.csv")
    return result


if __name__ == "__main__":
    main()
