"""Export a finished run as a SavedModel, a TFLite or an ONNX file, checked against the run.

Each export takes what the run's ``model.keras`` takes: raw RGB 0-255 float images of the
recipe's size, or for text runs raw strings. TFLite's built-in operators and ONNX's standard
ones have no regex rewrites and no string splitting, so they cannot carry the tokenizer:
text runs exported to those formats take token ids (``int32``, ``(batch, max_length)``,
0 = padding, 1 = unknown), and the run's ``vocabulary.json`` is written beside the model.
``tlkit.data.text.Vocabulary.load(path).encode(tokenize(texts, vocab.tokenizer))`` makes
them. Every export then runs the run's test split (else its validation split) through both
models: the largest probability difference on a batch must stay within ``TOLERANCES``, or
nothing is written. Dynamic-range quantisation (int8 weights) reports instead how test
accuracy changes over the whole split. A multi-label run's exports have a second output,
``labels`` (int32 0/1 per class: ``probabilities >=`` the run's thresholds, inside the graph),
which must be exactly that on every input checked.

An export folder (default ``RUN/exports/FORMAT``, ``FORMAT-dynamic`` when quantised) holds::

    1/ (SavedModel, TF Serving's version folder) | model.tflite | model.onnx
    classes.json  export.json  [vocabulary.json]

Example:
    >>> f'{export_run("runs/trec", "onnx")["parity"]:.1e}'  # doctest: +SKIP
    '2.4e-07'
"""

from __future__ import annotations

import importlib
import logging
import shutil
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from tlkit.choices import EXPORT_FORMATS as FORMATS
from tlkit.choices import EXPORT_QUANTIZATIONS as QUANTIZATIONS
from tlkit.errors import UserError
from tlkit.files import replacing
from tlkit.predict import open_run
from tlkit.progress import phase
from tlkit.runs import (
    CLASSES_FILE,
    Run,
    check_run_folder,
    read_run,
    write_json,
)
from tlkit.tasks import task_of

# Largest allowed difference of any probability between the export and model.keras.
TOLERANCES = {"savedmodel": 1e-5, "tflite": 1e-3, "onnx": 1e-3}
# What each format needs beyond TensorFlow, and the tlkit extra that installs it.
CONVERTERS = {"onnx": ("tf2onnx", "onnxruntime")}
EXTRAS = {"onnx": "onnx"}
ONNX_OPSET = 15  # read by onnxruntime 1.10 and later
PARITY_BATCH = 64
EXPORTS_FOLDER = "exports"
EXPORT_FILE = "export.json"
SAVEDMODEL_VERSION = "1"
MODEL_FILES = {"tflite": "model.tflite", "onnx": "model.onnx"}
OUTPUT_NAME = "probabilities"
# A multi-label run's exports also answer its label sets: 1 where a probability reaches
# its class's threshold (chosen on val), computed inside the exported graph.
LABELS_NAME = "labels"


class ParityError(UserError):
    """The exported model's probabilities differ from the run's model beyond the tolerance.

    Example:
        >>> issubclass(ParityError, UserError)  # the CLI prints it as one "Error: ..." line
        True
    """


def check_export(fmt: str, quantize: str | None = None) -> None:
    """Refuse an unknown format or quantisation (no imports: answers at once).

    Example:
        >>> check_export("savedmodel", "dynamic")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        tlkit.errors.UserError: --quantize dynamic applies to tflite and onnx; ...
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown export format '{fmt}'; choose one of: {', '.join(FORMATS)}")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise UserError(f"unknown quantisation '{quantize}'; choose one of: "
                        f"{', '.join(QUANTIZATIONS)}")
    if quantize and fmt == "savedmodel":
        raise UserError(f"--quantize {quantize} applies to tflite and onnx; a SavedModel keeps "
                        "float weights (drop --quantize or pick --format tflite)")


def check_converter(fmt: str) -> None:
    """Import what ``fmt`` needs beyond TensorFlow; if missing, name the extra to install.

    Example:
        >>> check_converter("tflite")  # part of TensorFlow
    """
    for module in CONVERTERS.get(fmt, ()):
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise UserError(f"{fmt} export needs the '{module}' package ({error}); install it "
                            f"with: pip install 'tlkit[{EXTRAS[fmt]}]'") from error


def export_destination(run_folder: Path, fmt: str, quantize: str | None = None,
                       out: str | Path | None = None) -> Path:
    """The export folder: ``out``, or ``RUN/exports/FORMAT[-QUANTIZE]``; it must not exist.

    Example:
        >>> export_destination(Path("runs/trec"), "tflite", "dynamic").as_posix()
        'runs/trec/exports/tflite-dynamic'
    """
    name = f"{fmt}-{quantize}" if quantize else fmt
    folder = Path(out).absolute() if out is not None else run_folder / EXPORTS_FOLDER / name
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise UserError(f"export folder '{folder}' exists already; delete it or pass another "
                        "--out")
    return folder


def export_run(run_path: str | Path, fmt: str, out: str | Path | None = None,
               quantize: str | None = None) -> dict[str, Any]:
    """Export a finished run as ``fmt`` (savedmodel, tflite, onnx) and check it against the run.

    ``quantize="dynamic"`` (tflite, onnx) stores int8 weights. Returns what was written and
    measured: ``path`` (the model file, or the SavedModel folder), ``size_bytes``, ``inputs``,
    ``parity`` (largest probability difference on up to ``PARITY_BATCH`` test inputs),
    ``tolerance`` and, when quantised, the test accuracy before and after. The same dict is
    saved as ``export.json`` in the export folder. A ParityError leaves nothing behind.

    Example:
        >>> result = export_run("runs/flowers", "tflite", quantize="dynamic")  # doctest: +SKIP
        >>> round(result["accuracy_change"], 4)  # doctest: +SKIP
        0.0042
    """
    check_export(fmt, quantize)
    folder = export_destination(check_run_folder(run_path), fmt, quantize, out)
    check_converter(fmt)  # imports TensorFlow (tf2onnx does): after the checks that need none
    run = read_run(run_path)
    reference = reference_inputs(run)  # before the model loads: a missing input fails fast
    run = open_run(run)
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Written beside its name and renamed into place (an empty folder given as --out is
    # replaced): a ParityError, Ctrl-C or a full disk leaves nothing behind.
    with replacing(folder) as partial:
        partial.mkdir()
        with phase("export", detail=f"{fmt} into {folder}"):
            result = _export(run, fmt, quantize, partial)
        with phase("parity check", detail=f"the export against model.keras on "
                                          f"{reference[2]} inputs"):
            result.update(_check(run, result, *reference))
        final_model = folder / Path(result["path"]).relative_to(partial)
        result.update(path=str(final_model), folder=str(folder), run=str(run.path))
        write_json(partial / EXPORT_FILE, result)
    return result


def reference_inputs(run: Run) -> tuple[list[str], list[str], str]:
    """Inputs and labels of the run's test split (else its validation split), and its name.

    The run's task names the file that lists them (image runs ``split.csv``, text runs the
    rows of ``predictions.csv``).

    Example:
        >>> import tempfile
        >>> run = Run(Path(tempfile.mkdtemp()), "textcnn", None, ["neg", "pos"], {})
        >>> rows = ["input,label,split", "fine,pos,val", "dull,neg,test"]
        >>> _ = (run.path / "predictions.csv").write_text("\\n".join(rows))
        >>> reference_inputs(run)
        (['dull'], ['neg'], 'test')
    """
    task = task_of(run)
    source = run.path / task.reference_file
    if not source.is_file():
        raise UserError(f"'{run.path}' has no {source.name}, so there are no held-out inputs "
                        "to check an export against; train the run again with this tlkit")
    from tlkit.data.tables import read_table, require_columns

    table = read_table(source)
    column = task.reference_column
    require_columns(table, {column: None, "split": None, "label": None}, f"'{source}'")
    for split in ("test", "val"):
        rows = table[table["split"] == split]
        if len(rows):
            break
    else:
        raise UserError(f"{source} has no test or val rows to check an export against")
    items = task.reference_items(run, rows[column].tolist(), split)
    return items, rows["label"].tolist(), split


def _export(run: Run, fmt: str, quantize: str | None, folder: Path) -> dict[str, Any]:
    """Write the model file(s) and the side files; the result's format-specific part."""
    model, spec, takes = exported_model(run, fmt)
    outputs = _named_outputs(model, task_of(run).thresholds(run))
    write_json(folder / CLASSES_FILE, run.class_names)
    result: dict[str, Any] = {"format": fmt, "quantize": quantize, "kind": run.kind,
                              "input_name": spec.name, "input_dtype": spec.dtype.name,
                              "input_shape": list(spec.shape), "output_name": OUTPUT_NAME,
                              "inputs": takes, "vocabulary": None}
    result.update(task_of(run).export_files(run, takes, folder))
    path = folder / (SAVEDMODEL_VERSION if fmt == "savedmodel" else MODEL_FILES[fmt])
    with _quiet_converters():
        if fmt == "savedmodel":
            _write_savedmodel(model, outputs, spec, path)
        elif fmt == "tflite":
            _write_tflite(model, outputs, spec, path, quantize, folder)
        else:
            _write_onnx(outputs, spec, path, quantize)
    result.update(path=str(path), size_bytes=_size(path))
    return result


def exported_model(run: Run, fmt: str) -> tuple[Any, Any, str]:
    """The Keras model to export, its input signature and what it takes (the run's task's).

    ``takes`` is ``images``, ``text`` or ``token_ids``: a text run's string model for a
    SavedModel, its inner token-id model for the formats that cannot carry the tokenizer.

    Example:
        >>> from tlkit.backbones import build_tiny_cnn
        >>> run = Run(Path("runs/shapes"), "image", None, ["circle", "square"], {},
        ...           model=build_tiny_cnn(include_top=True, classes=2))
        >>> exported_model(run, "onnx")[1:]
        (TensorSpec(shape=(None, 32, 32, 3), dtype=tf.float32, name='image'), 'images')
    """
    return task_of(run).exported_model(run, fmt)


def _named_outputs(model: Any, thresholds: np.ndarray | None
                   ) -> Callable[[Any], dict[str, Any]]:
    """The exported function: ``probabilities``, and with ``thresholds`` (a multi-label run)
    ``labels``, int32 0/1 per class, ``probabilities >= thresholds`` in stock TF operators
    (GreaterEqual, Cast) that TF Serving, TFLite's built-ins and ONNX all run."""
    import tensorflow as tf

    limits = None if thresholds is None else float32_limits(thresholds)

    def outputs(inputs: Any) -> dict[str, Any]:
        probabilities = model(inputs, training=False)
        if limits is None:
            return {OUTPUT_NAME: probabilities}
        # A constant made inside the traced function: one made outside is a captured input
        # that tf2onnx would turn into a second input of the ONNX graph.
        reached = tf.greater_equal(tf.cast(probabilities, tf.float32), tf.constant(limits))
        return {OUTPUT_NAME: probabilities, LABELS_NAME: tf.cast(reached, tf.int32)}

    return outputs


def float32_limits(thresholds: Any) -> np.ndarray:
    """The thresholds as float32 that decide float32 probabilities exactly as the float64
    thresholds do: the smallest float32 at or above each (a midpoint chosen on val is rarely
    a float32, and rounding it down would call a probability just below it positive).

    Example:
        >>> t = float32_limits([0.3, 0.5])
        >>> t.dtype.name, bool(np.float32(0.3) >= 0.3) == bool(np.float32(0.3) >= t[0])
        ('float32', True)
    """
    wanted = np.asarray(thresholds, dtype="float64").reshape(-1)
    limits = wanted.astype("float32")
    below = limits.astype("float64") < wanted
    return np.where(below, np.nextafter(limits, np.float32(np.inf)), limits).astype("float32")


def _serving_archive(model: Any, outputs: Callable[[Any], dict[str, Any]], spec: Any) -> Any:
    """A Keras ExportArchive whose one endpoint (``serving_default``) names its outputs."""
    import keras

    archive = keras.export.ExportArchive()
    # The endpoint tracks the variables it uses. Tracking the whole model would store every
    # weight twice (track() copies them into new variables); only weightless layers are
    # tracked, for the lookup tables (TextVectorization) that the endpoint needs too.
    for layer in model.layers:
        if not layer.weights:
            archive.track(layer)
    archive.add_endpoint(name="serve", fn=outputs, input_signature=[spec])
    return archive


def _write_savedmodel(model: Any, outputs: Callable[[Any], dict[str, Any]], spec: Any,
                      path: Path) -> None:
    _serving_archive(model, outputs, spec).write_out(str(path), verbose=False)


def _write_tflite(model: Any, outputs: Callable[[Any], dict[str, Any]], spec: Any, path: Path,
                  quantize: str | None, workdir: Path) -> None:
    """Convert through a SavedModel: TFLite's converter reads that most reliably."""
    import tensorflow as tf

    staging = workdir / "savedmodel.tmp"
    _write_savedmodel(model, outputs, spec, staging)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(staging))
    if quantize == "dynamic":
        # No representative dataset: weights become int8, activations stay float.
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    path.write_bytes(converter.convert())
    shutil.rmtree(staging)


def _write_onnx(outputs: Callable[[Any], dict[str, Any]], spec: Any, path: Path,
                quantize: str | None) -> None:
    """tf2onnx on a traced function (Keras's own ONNX export calls it too, but names the
    output ``Identity:0``); onnxruntime's dynamic quantisation for int8 weights."""
    import tensorflow as tf
    import tf2onnx

    function = tf.function(outputs, input_signature=[spec])
    float_path = path.with_suffix(".float.onnx") if quantize else path
    tf2onnx.convert.from_function(function, input_signature=[spec], opset=ONNX_OPSET,
                                  output_path=str(float_path))
    if quantize == "dynamic":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(float_path), str(path), weight_type=QuantType.QInt8)
        float_path.unlink()


@contextmanager
def _quiet_converters() -> Iterator[None]:
    """Silence the converters' Python log warnings (unserialisable table collections,
    onnxruntime's pre-processing advice): they are about internals and safe to ignore."""
    loggers = [logging.getLogger(), *map(logging.getLogger, ("tensorflow", "tf2onnx"))]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def load_exported(fmt: str, path: str | Path, input_name: str
                  ) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """A function ``inputs -> {output name: array}`` (``probabilities``, and ``labels`` for a
    multi-label run) running an exported model in its own runtime.

    Example:
        >>> run_export = load_exported("onnx", "runs/trec/exports/onnx/model.onnx",
        ...                            "token_ids")  # doctest: +SKIP
    """
    if fmt == "savedmodel":
        import tensorflow as tf

        signature = tf.saved_model.load(str(path)).signatures["serving_default"]
        return lambda x: {name: value.numpy() for name, value in
                          signature(**{input_name: tf.constant(x)}).items()}
    if fmt == "tflite":
        import tensorflow as tf

        with warnings.catch_warnings():
            # TensorFlow 2.21 still ships this interpreter; it points to LiteRT's successor.
            warnings.simplefilter("ignore")
            interpreter = tf.lite.Interpreter(model_path=str(path))
        runner = interpreter.get_signature_runner()
        return lambda x: dict(runner(**{input_name: x}))
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return lambda x: dict(zip(names, session.run(names, {input_name: x}), strict=True))


def _check(run: Run, result: dict[str, Any], items: list[str], labels: list[str], split: str
           ) -> dict[str, Any]:
    """Parity (and, when quantised, accuracy on the whole split) of the export vs the run."""
    fmt, quantize = result["format"], result["quantize"]
    exported = load_exported(fmt, result["path"], result["input_name"])
    shown = items if quantize else items[:PARITY_BATCH]
    task = task_of(run)
    thresholds = task.thresholds(run)
    # model.keras's side goes through the task's one pipeline, as predict and evaluate do;
    # the export gets the same inputs in the form it takes.
    expected_all, errors = task.probabilities(run.model, shown)
    got_all = np.full_like(expected_all, np.nan)
    got_labels = np.zeros(expected_all.shape, dtype=int)
    for rows, inputs in task.export_batches(run, shown, result["inputs"]):
        answer = exported(inputs)
        got_all[rows] = np.asarray(answer[OUTPUT_NAME])
        got_labels[rows] = np.asarray(answer.get(LABELS_NAME, 0))
    failed = [item for item, error in zip(shown, errors, strict=True) if error]
    if failed:
        raise UserError(f"{len(failed)} {split} input(s) of the run cannot be read any more "
                        f"(first: '{failed[0]}'); the export check needs them as they were")
    batch = min(len(shown), PARITY_BATCH)
    parity = float(np.abs(expected_all[:batch] - got_all[:batch]).max())
    checked = {"parity": parity, "parity_split": split, "parity_examples": batch,
               "tolerance": None if quantize else TOLERANCES[fmt]}
    if thresholds is not None:
        checked.update(_check_labels(run, fmt, (expected_all, got_all, got_labels), thresholds,
                                     split))
    if quantize:
        return {**checked, **task.agreement(labels, expected_all, got_all, run.class_names,
                                            thresholds)}
    if parity > TOLERANCES[fmt]:
        raise ParityError(f"{fmt} export of '{run.path}' differs from model.keras by "
                          f"{parity:.2e} (limit {TOLERANCES[fmt]:.0e}) on {batch} {split} "
                          "inputs; nothing was written")
    return checked


def _check_labels(run: Run, fmt: str, outputs: tuple[np.ndarray, np.ndarray, np.ndarray],
                  thresholds: np.ndarray, split: str) -> dict[str, Any]:
    """The export's ``labels`` must be its own probabilities at the run's thresholds (the
    ``>=`` of ``apply_thresholds``) on every input checked. Also counted: label sets that
    differ from model.keras's (a probability within the tolerance of a threshold may)."""
    from tlkit.evaluation.multilabel import apply_thresholds

    expected, got, labels = outputs
    wrong = int((labels != apply_thresholds(got, thresholds)).any(axis=1).sum())
    if wrong:
        raise ParityError(f"{fmt} export of '{run.path}' answers label sets that are not its "
                          f"probabilities at the run's thresholds on {wrong} of {len(labels)} "
                          f"{split} inputs; nothing was written")
    differ = int((labels != apply_thresholds(expected, thresholds)).any(axis=1).sum())
    return {"labels_output": LABELS_NAME, "label_sets_differ": differ}
