"""Nothing tlkit reads can run code: model files, recipes, vocabularies, class names, weights.

Each file format that could carry code gets a payload that would leave a marker file behind
if it ran (a control shows that it does, read the unsafe way), and tlkit's reader must refuse
it with a UserError, the marker never appearing. A scan of the package's source keeps
pickle and its relatives out of everything but the restricted ``.pth`` reader.
"""

from __future__ import annotations

import ast
import json
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from conftest import assert_user_error, run_cli

import tlkit
from tlkit.data.text import Vocabulary, build_vocabulary
from tlkit.lite0 import read_legacy_torch_state_dict
from tlkit.models.saved import load_keras_file, load_run
from tlkit.recipes import ImageRecipe, dump_recipe, load_recipe, load_recipe_text, resolve_recipe
from tlkit.runs import RunWriter

PACKAGE = Path(tlkit.__file__).parent
# The one module allowed to import pickle: its unpickler resolves tensor globals only.
RESTRICTED_UNPICKLER = PACKAGE / "lite0.py"


# ------------------------------------------------------------------------ .keras files


@pytest.fixture(scope="module")
def lambda_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A .keras file whose Lambda layer touches a marker file whenever it is rebuilt."""
    import keras

    folder = tmp_path_factory.mktemp("lambda")
    marker = folder / "ran"
    inputs = keras.Input((2,))
    # Written as a lambda, so Keras stores its Python bytecode in the file.
    touch = keras.layers.Lambda(lambda x, to: (__import__("pathlib").Path(to).touch(), x)[1],
                                arguments={"to": str(marker)})
    keras.Model(inputs, touch(inputs)).save(folder / "model.keras")
    marker.unlink()  # building the model ran it once, here, on purpose
    return folder / "model.keras", marker


def test_keras_file_with_python_code_is_one_user_error(lambda_model: tuple[Path, Path]) -> None:
    path, marker = lambda_model
    message = assert_user_error(lambda: load_keras_file(path), str(path), "Lambda")
    assert "safe_mode=False" not in message  # not a fix tlkit offers
    assert not marker.exists()


def test_the_lambda_runs_when_loaded_unsafely(lambda_model: tuple[Path, Path]) -> None:
    import keras

    path, marker = lambda_model
    keras.saving.load_model(path, safe_mode=False)
    assert marker.exists(), "the payload must be live for the tests above to mean anything"
    marker.unlink()


# ----------------------------------------------------------------------------- recipes


def _yaml_payload(marker: Path) -> str:
    return f"!!python/object/apply:os.system [\"touch {marker}\"]"


def test_the_yaml_payload_runs_when_loaded_unsafely(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    yaml.unsafe_load(f"seed: {_yaml_payload(marker)}")
    assert marker.exists(), "the payload must be live for the tests below to mean anything"


def _recipe_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _run_folder(tmp_path: Path, recipe_text: str) -> Path:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "recipe.yaml").write_text(recipe_text, encoding="utf-8")
    (folder / "classes.json").write_text('["a", "b"]', encoding="utf-8")
    (folder / "model.keras").write_bytes(b"")
    return folder


LOADERS: dict[str, Callable[[Path, str], object]] = {
    "recipe file": lambda tmp, text: load_recipe(_recipe_file(tmp, text)),
    "recipe text": lambda tmp, text: load_recipe_text(text),
    "run folder": lambda tmp, text: load_run(_run_folder(tmp, text), model=False),
}


@pytest.mark.parametrize("where", ["whole document", "one field"])
@pytest.mark.parametrize("loader", list(LOADERS))
def test_python_tags_in_recipes_are_refused_and_run_nothing(
        tmp_path: Path, loader: str, where: str) -> None:
    marker = tmp_path / "ran"
    payload = _yaml_payload(marker)
    text = payload if where == "whole document" else f"kind: image\nseed: {payload}\n"
    assert_user_error(lambda: LOADERS[loader](tmp_path, text))
    assert not marker.exists()


def test_python_tag_in_a_set_override_is_one_user_error(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    assert_user_error(lambda: resolve_recipe("image", overrides=[f"seed={_yaml_payload(marker)}"]),
                      "seed")
    assert not marker.exists()


def test_python_tag_recipe_through_the_cli_is_an_error_line(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = _recipe_file(tmp_path, f"kind: image\ndata: {_yaml_payload(marker)}\n")
    code, _, err = run_cli(["finetune", "--recipe", str(path), "--out", str(tmp_path)])
    assert code == 2 and err.startswith("Error: ") and err.count("\n") == 1, err
    assert not marker.exists()


def test_recipes_are_written_as_plain_yaml(tmp_path: Path) -> None:
    path = tmp_path / "recipe.yaml"
    dump_recipe(ImageRecipe(data="images"), path)
    assert "!!" not in path.read_text(encoding="utf-8")
    assert yaml.safe_load(path.read_text(encoding="utf-8"))["data"] == "images"


# ------------------------------------------------------------ vocabularies, class names


class _Touch:
    """Pickles as ``os.system("touch MARKER")``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        import os

        return os.system, (f"touch {self.marker}",)


def test_vocabulary_is_json_and_a_pickle_in_its_place_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "vocabulary.json"
    build_vocabulary([["a", "b"]], "kim").save(path)
    assert json.loads(path.read_text(encoding="utf-8"))["tokens"] == ["", "[UNK]", "a", "b"]
    marker = tmp_path / "ran"
    path.write_bytes(pickle.dumps(_Touch(marker), protocol=2))
    assert_user_error(lambda: Vocabulary.load(path), str(path), "not a tlkit vocabulary")
    assert not marker.exists()


def test_class_names_are_json(tmp_path: Path) -> None:
    writer = RunWriter(tmp_path, tmp_path)
    writer.write_classes(["007", "b\nc"])
    assert json.loads((tmp_path / "classes.json").read_text(encoding="utf-8")) == ["007", "b\nc"]


def test_a_pickle_in_place_of_class_names_is_refused(tmp_path: Path) -> None:
    folder = _run_folder(tmp_path, dump_recipe(ImageRecipe(data="images")))
    marker = tmp_path / "ran"
    (folder / "classes.json").write_bytes(pickle.dumps(_Touch(marker), protocol=2))
    try:
        assert_user_error(lambda: load_run(folder, model=False), "classes.json")
    finally:
        assert not marker.exists()


# ---------------------------------------------------------- no pickle in the package

BANNED_MODULES = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "joblib", "shelve",
                  "marshal"}
BANNED_CALLS = {("torch", "load"), ("pd", "read_pickle"), ("pandas", "read_pickle"),
                ("yaml", "load"), ("yaml", "unsafe_load"), ("yaml", "full_load"),
                ("yaml", "load_all"), ("yaml", "unsafe_load_all"),
                ("config", "enable_unsafe_deserialization")}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else "?"


def _keyword(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def unsafe_loading(tree: ast.AST) -> list[str]:
    """What in ``tree`` could load code: pickle-family imports and calls, unsafe loaders."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names
                      if a.name.split(".")[0] in BANNED_MODULES]
        elif isinstance(node, ast.ImportFrom) and \
                (node.module or "").split(".")[0] in BANNED_MODULES:
            found.append(f"from {node.module} import ...")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name = _dotted(node.func)
            owner = name.split(".")[-2] if "." in name else ""
            if (owner, node.func.attr) in BANNED_CALLS or owner in BANNED_MODULES:
                found.append(f"{name}()")
            pickle_flag = _keyword(node, "allow_pickle")
            if node.func.attr == "load" and pickle_flag is not None and not (
                    isinstance(pickle_flag, ast.Constant) and pickle_flag.value is False):
                found.append(f"{name}(allow_pickle=...)")
            safe = _keyword(node, "safe_mode")
            if node.func.attr == "load_model" and not (
                    isinstance(safe, ast.Constant) and safe.value is True):
                found.append(f"{name}() without safe_mode=True")
    return found


def test_the_scan_finds_what_it_looks_for() -> None:
    code = ("import pickle\nfrom joblib import load\nimport numpy as np\nimport torch\n"
            "np.load('x', allow_pickle=True)\ntorch.load('x')\nyaml.load(text)\n"
            "keras.saving.load_model('m')\nkeras.saving.load_model('m', safe_mode=False)\n"
            "keras.config.enable_unsafe_deserialization()\npickle.loads(b'')\n"
            "np.load('x', mmap_mode='r')\nyaml.safe_load(t)\n"
            "keras.saving.load_model('m', safe_mode=True)\n")
    assert unsafe_loading(ast.parse(code)) == [
        "import pickle", "from joblib import ...", "np.load(allow_pickle=...)", "torch.load()",
        "yaml.load()", "keras.saving.load_model() without safe_mode=True",
        "keras.saving.load_model() without safe_mode=True",
        "keras.config.enable_unsafe_deserialization()", "pickle.loads()"]


def test_no_pickle_or_unsafe_loader_anywhere_in_the_package() -> None:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        problems = unsafe_loading(ast.parse(path.read_text(encoding="utf-8")))
        if path == RESTRICTED_UNPICKLER:
            problems = [p for p in problems
                        if p not in ("import pickle", "pickle.UnpicklingError()")]
        if problems:
            found[str(path.relative_to(PACKAGE.parent))] = problems
    assert found == {}
    calls = [node for path in PACKAGE.rglob("*.py")
             for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
             if isinstance(node, ast.Call) and _dotted(node.func).endswith("load_model")]
    assert calls, "the .keras loader is found by the scan (and passes safe_mode=True)"


def test_the_one_unpickler_resolves_only_what_it_allows() -> None:
    import tlkit.lite0 as lite0

    unpicklers = [value for value in vars(lite0).values()
                  if isinstance(value, type) and issubclass(value, pickle.Unpickler)]
    assert unpicklers, "lite0 reads .pth files through a pickle.Unpickler subclass"
    for unpickler in unpicklers:
        assert "find_class" in vars(unpickler), f"{unpickler.__name__} must override find_class"
    tree = ast.parse(RESTRICTED_UNPICKLER.read_text(encoding="utf-8"))
    calls = {_dotted(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    assert not calls & {"pickle.load", "pickle.loads", "pickle.Unpickler"}, \
        "only the restricted subclass unpickles"


# ---------------------------------------------------------------- the .pth reader

# The pickles a legacy torch.save file starts with: magic number, protocol, system info.
MAGIC_AND_PROTOCOL = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + \
    pickle.dumps(1001, protocol=2)
LEGACY_HEADER = MAGIC_AND_PROTOCOL + pickle.dumps(
    {"protocol_version": 1001, "little_endian": True, "type_sizes": {"long": 4}}, protocol=2)


def _payloads(marker: Path) -> dict[str, bytes]:
    """Pickles (protocol 0 opcodes, written out) that create ``marker`` when unpickled."""
    path = str(marker).encode()
    return {
        "os.system": b"cos\nsystem\n(Vtouch " + path + b"\ntR.",
        "builtins.open": b"cbuiltins\nopen\n(V" + path + b"\nVw\ntR.",
        "builtins.exec": b"cbuiltins\nexec\n(Vopen(" + repr(str(marker)).encode() +
                         b", 'w').close()\ntR.",
        "pathlib.Path.touch": b"cbuiltins\ngetattr\n(cpathlib\nPath\n(V" + path +
                              b"\ntRVtouch\ntR)R.",
    }


@pytest.mark.parametrize("payload", list(_payloads(Path("x"))))
def test_the_pth_payloads_run_when_unpickled_unsafely(tmp_path: Path, payload: str) -> None:
    marker = tmp_path / "ran"
    pickle.loads(_payloads(marker)[payload])
    assert marker.exists(), "the payload must be live for the tests below to mean anything"


@pytest.mark.parametrize("where", ["first pickle", "system info", "state dict value",
                                   "state dict key list"])
@pytest.mark.parametrize("payload", list(_payloads(Path("x"))))
def test_pth_reader_refuses_code_and_writes_no_file(tmp_path: Path, payload: str,
                                                    where: str) -> None:
    marker = tmp_path / "ran"
    code = _payloads(marker)[payload]
    data = {
        "first pickle": code,
        "system info": MAGIC_AND_PROTOCOL + code,
        # {"weight": <payload>}: a dict whose one value is the payload.
        "state dict value": LEGACY_HEADER + b"}(Vweight\n" + code[:-1] + b"u.",
        "state dict key list": LEGACY_HEADER + pickle.dumps({"w": 1}, protocol=2) + code,
    }[where]
    path = tmp_path / "weights.pth"
    path.write_bytes(data)
    message = assert_user_error(lambda: read_legacy_torch_state_dict(path), str(path))
    assert not marker.exists()
    if where in ("first pickle", "state dict value"):
        assert "refusing to load global" in message


def test_pth_reader_refuses_values_that_are_not_tensors(tmp_path: Path) -> None:
    path = tmp_path / "weights.pth"
    path.write_bytes(LEGACY_HEADER + pickle.dumps({"weight": [1.0, 2.0]}, protocol=2) +
                     pickle.dumps([], protocol=2))
    assert_user_error(lambda: read_legacy_torch_state_dict(path), "is not a tensor")
