"""Temperature scaling and conformal prediction sets on flowers12 and the Kim (2014) sets.

Each set is trained once with tlkit's defaults (images: the default recipe; text: Kim's
CNN-rand recipe; Subj, CR and MPQA on one stratified 90/10 train/test split of all.csv
instead of 10-fold CV). From the run folder it reports: the temperature, ECE and NLL on test
before and after scaling (metrics.json ``temperature_scaling``); for LAC and APS at coverage
0.8/0.9/0.95, the empirical coverage and mean set size on test of tlkit's sets calibrated on
the run's calibration split, next to MAPIE's ``SplitConformalClassifier`` on the same
probabilities (MAPIE has no APS for two classes: empty there); and the largest
difference between each export's probabilities and the calibrated model.keras's.

    nice -n 5 python benchmarks/calibration.py --data ../shared/data
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tlkit.evaluation.calibration import REPORTED_COVERAGES, coverage_table
from tlkit.export import export_run
from tlkit.predict import open_run
from tlkit.recipes import ImageRecipe, load_recipe
from tlkit.tasks import task_of
from tlkit.train.image import finetune
from tlkit.train.text import train_textcnn

sys.path.insert(0, str(Path(__file__).parent))  # the sibling benchmarks, reused as modules
from kim2014_accuracy import RECIPE, overrides_for  # noqa: E402

KIM_SETS = ("sst2", "trec", "subj", "cr", "mpqa")
FORMATS = ("savedmodel", "tflite", "onnx")


def text_overrides(name: str, root: Path, work: Path) -> list[str]:
    """Kim's files for SST-2 and TREC; one seeded stratified 90/10 split of all.csv else."""
    from sklearn.model_selection import train_test_split

    if name in ("sst2", "trec"):  # their own files, as the paper's table runs them
        return overrides_for(name, root)
    table = pd.read_csv(root / name / "all.csv")
    train, test = train_test_split(table, test_size=0.1, random_state=42,
                                   stratify=table["label"])
    train.to_csv(work / f"{name}-train.csv", index=False)
    test.to_csv(work / f"{name}-test.csv", index=False)
    return [f"data={work / f'{name}-train.csv'}", f"test={work / f'{name}-test.csv'}"]


def mapie_on(probs: np.ndarray, labels: np.ndarray, score: str,
             coverage: float | list[float]) -> Any:
    """MAPIE's split-conformal classifier calibrated on ``probs`` (an estimator whose
    predict_proba is its input), at one coverage or several; tests/test_calibration.py
    checks tlkit's sets against it."""
    from mapie.classification import SplitConformalClassifier
    from sklearn.base import BaseEstimator, ClassifierMixin

    class Given(ClassifierMixin, BaseEstimator):
        def fit(self, x: np.ndarray, y: np.ndarray) -> Given:
            self.classes_ = np.arange(x.shape[1])
            return self

        def predict_proba(self, x: np.ndarray) -> np.ndarray:
            return x

        def predict(self, x: np.ndarray) -> np.ndarray:
            return x.argmax(axis=1)

    return SplitConformalClassifier(Given().fit(probs, labels), confidence_level=coverage,
                                    conformity_score=score, prefit=True,
                                    random_state=0).conformalize(probs, labels)


def mapie_rows(calibration: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]
               ) -> dict[tuple[str, float], tuple[float, float]]:
    """MAPIE's coverage and mean set size on ``test`` (probabilities, labels) per score and
    coverage, calibrated on ``calibration``."""
    found = {}
    for score in ("aps", "lac"):
        try:
            sets = mapie_on(*calibration, score, list(REPORTED_COVERAGES)).predict_set(
                test[0])[1]
        except ValueError:  # MAPIE refuses aps for two classes ("the only valid score is lac")
            found.update({(score, asked): (np.nan, np.nan) for asked in REPORTED_COVERAGES})
            continue
        for k, asked in enumerate(REPORTED_COVERAGES):
            held = sets[np.arange(len(test[1])), test[1], k]
            found[(score, asked)] = (float(held.mean()), float(sets[:, :, k].sum(axis=1).mean()))
    return found


def measure(run_path: Path, dataset: str, seconds: float) -> list[dict[str, Any]]:
    """The table's rows for one trained run."""
    run = open_run(run_path)
    task = task_of(run)
    table = task.read_predictions(run_path / "predictions.csv")
    calibration, test = (table[table["split"] == split] for split in ("calibration", "test"))
    cal_y, cal_p, _ = task.prediction_arrays(calibration, run.class_names)
    test_y, test_p, _ = task.prediction_arrays(test, run.class_names)
    ours = coverage_table((cal_p, cal_y), (test_p, test_y))
    theirs = mapie_rows((cal_p, cal_y), (test_p, test_y))
    scaling = run.metrics["temperature_scaling"]
    parity = {}
    with tempfile.TemporaryDirectory() as folder:
        for fmt in FORMATS:
            parity[f"parity_{fmt}"] = export_run(run_path, fmt, out=Path(folder) / fmt)["parity"]
    common = {"dataset": dataset, "classes": len(run.class_names), "test": len(test_y),
              "calibration": len(cal_y), "train_seconds": round(seconds, 1),
              "temperature": round(float(scaling["temperature"]), 4),
              **{f"test_{key}": round(scaling["test"][key], 4)
                 for key in ("ece_before", "ece_after", "nll_before", "nll_after")},
              "test_accuracy": round(run.metrics["test"]["accuracy"], 4), **parity}
    return [{**common, "score": row["score"], "asked": row["asked"],
             "coverage": round(row["coverage"], 4), "mean_size": round(row["mean_size"], 3),
             "mapie_coverage": round(theirs[(row["score"], row["asked"])][0], 4),
             "mapie_mean_size": round(theirs[(row["score"], row["asked"])][1], 3)}
            for row in ours]


def train(name: str, data: Path, work: Path) -> tuple[Path, float]:
    start = time.perf_counter()
    if name == "flowers12":
        recipe = ImageRecipe(data=str(data / "images" / "oxford_flowers12"))
        path = finetune(recipe, out=work / "runs", name=name).path
    else:
        recipe = load_recipe(RECIPE, text_overrides(name, data / "text", work))
        path = train_textcnn(recipe, out=work / "runs", name=name).path
    return path, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path,
                        help="folder holding images/oxford_flowers12 and text/sst2 ...")
    parser.add_argument("--only", nargs="*", default=["flowers12", *KIM_SETS])
    parser.add_argument("--results", default="benchmarks/results/calibration.csv")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tlkit-calibration-"))
    results = Path(args.results)
    for name in args.only:
        path, seconds = train(name, args.data, work)
        rows = pd.DataFrame(measure(path, name, seconds))
        if results.is_file():  # this invocation's sets replace their old rows
            kept = pd.read_csv(results)
            rows = pd.concat([kept[kept["dataset"] != name], rows], ignore_index=True)
        results.parent.mkdir(parents=True, exist_ok=True)
        rows.to_csv(results, index=False)
        print(rows[rows["dataset"] == name].to_string(index=False), flush=True)


if __name__ == "__main__":
    main()
