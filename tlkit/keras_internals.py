"""Every use of Keras's (and TensorFlow's) private API in tlkit, in one place, each failing
closed.

Keras has no public way to ask which weights file a ``keras.applications`` constructor
loads, to walk a functional model's graph call by call, to build a model without allocating
its weights, or (in an optimizer subclass) to find a variable's slots; TensorFlow has none
to ask how much memory a GPU gives it. tlkit needs all five, so it reaches into Keras and
TensorFlow here and nowhere else. Each function checks that what it reaches
for still exists and raises ``KerasInternalsError`` (a one-line ``UserError`` naming the
Keras versions tlkit is tested with) rather than silently doing something else; each has a
test in ``tests/test_keras_internals.py``. The weights lookup in particular never falls
through to a download: if a constructor does not call the replaced ``get_file``, the network
stays closed and the lookup fails.

Example:
    >>> import keras
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="out")])
    >>> [call.layer.name for call in layer_calls(functional_graph(model))]
    ['out']
"""

from __future__ import annotations

import contextvars
import importlib
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tlkit.errors import UserError

# The Keras releases the test suite has passed on; pyproject.toml pins the same range.
KERAS_TESTED = ">=3.15,<3.16"
TENSORFLOW_TESTED = "2.21"


class KerasInternalsError(UserError):
    """This Keras no longer has a private part tlkit relies on; tlkit stopped instead of
    guessing. The message names the part and the Keras versions tlkit is tested with.

    Example:
        >>> optimizer_variable_index(object(), None)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        tlkit.keras_internals.KerasInternalsError: keras ... (object._get_variable_index); ...
    """


def _unsupported(what: str) -> KerasInternalsError:
    import keras

    return KerasInternalsError(
        f"keras {keras.__version__} {what}; tlkit relies on it and is tested with "
        f"keras{KERAS_TESTED}: pip install 'keras{KERAS_TESTED}'")


def _private(owner: Any, name: str, what: str) -> Any:
    """``owner.<name>``, or a KerasInternalsError saying that ``what`` is gone."""
    try:
        return getattr(owner, name)
    except AttributeError:
        raise _unsupported(f"has no {what} ({type(owner).__name__}.{name})") from None


# --- the weights file a keras.applications constructor asks for ---------------------------

_GET_FILE_MODULE = "keras.src.utils.file_utils"
# Python's own audit events for every way a download can start: refusing them in the
# constructor's thread closes the network whatever Keras calls, even a future get_file.
_NETWORK_EVENTS = frozenset({
    "urllib.Request", "http.client.connect", "socket.connect", "socket.getaddrinfo",
    "socket.gethostbyname", "socket.gethostbyname_ex", "socket.gethostbyaddr",
})
_refused_network: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "tlkit_refused_network", default=None)
_hook_lock = threading.Lock()
_hook_installed = False


class _NetworkRefused(RuntimeError):
    """Raised inside a download Keras started without going through the replaced get_file."""


def _refuse_network(event: str, args: tuple[Any, ...]) -> None:
    if event not in _NETWORK_EVENTS:
        return
    refused = _refused_network.get()
    if refused is not None:
        refused.append(f"{event} {args[0] if args else ''}"[:160])
        raise _NetworkRefused(f"tlkit refused {event} while reading Keras's weights request")


def _install_network_guard() -> None:
    """Add the audit hook once per process; it acts only where ``_refused_network`` is set."""
    global _hook_installed
    with _hook_lock:
        if not _hook_installed:
            sys.addaudithook(_refuse_network)
            _hook_installed = True


def _get_file_module() -> Any:
    import keras

    try:
        module = importlib.import_module(_GET_FILE_MODULE)
    except ImportError:
        raise _unsupported(f"has no module {_GET_FILE_MODULE}") from None
    if getattr(module, "get_file", None) is not keras.utils.get_file:
        raise _unsupported(f"no longer defines keras.utils.get_file in {_GET_FILE_MODULE}")
    return module


@contextmanager
def keras_get_file_replaced(stand_in: Callable[..., str], what: str) -> Iterator[None]:
    """Inside the block, ``keras.applications`` constructors call ``stand_in`` for their files.

    ``stand_in`` takes ``keras.utils.get_file``'s arguments and returns a local path (or
    raises); it may itself call the public ``keras.utils.get_file`` to download. Everywhere
    else in the block the calling thread has no network. ``what`` says what the block builds
    (``"built vgg16 with ImageNet weights"``) for the error raised when Keras never called
    ``stand_in`` or tried to download around it; the module attribute is restored either way.

    Example:
        >>> with keras_get_file_replaced(lambda *a, **k: "/x.h5", "built nothing"):
        ...     pass  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        tlkit.keras_internals.KerasInternalsError: keras ... built nothing without ...
    """
    module = _get_file_module()
    _install_network_guard()
    original, calls, refused = module.get_file, [], []

    def replacement(*args: Any, **kwargs: Any) -> str:
        calls.append(None)
        allowed = _refused_network.set(None)
        try:
            return stand_in(*args, **kwargs)
        finally:
            _refused_network.reset(allowed)

    module.get_file = replacement
    guarded = _refused_network.set(refused)
    try:
        yield
    except Exception as error:
        if refused:  # Keras may have wrapped _NetworkRefused: the record decides
            raise _bypassed(what, refused) from error
        raise
    finally:
        _refused_network.reset(guarded)
        module.get_file = original
    if refused or not calls:
        raise _bypassed(what, refused)


def _bypassed(what: str, refused: list[str]) -> KerasInternalsError:
    tried = f"; it tried {refused[0]}, refused" if refused else ""
    return _unsupported(f"{what} without calling {_GET_FILE_MODULE}.get_file, where tlkit "
                        f"reads and checks weights files{tried}; nothing was downloaded")


# --- functional graphs (inspection) -------------------------------------------------------

def functional_graph(model: Any) -> Any | None:
    """The functional graph of a Functional model or a built Sequential; None otherwise
    (a subclassed model, an unbuilt Sequential, a plain layer).

    Example:
        >>> import keras
        >>> functional_graph(keras.layers.Dense(2)) is None
        True
    """
    import keras

    if isinstance(model, keras.Sequential):
        graph = _private(model, "_functional", "functional graph inside Sequential")
    elif any(cls.__name__ == "Functional" for cls in type(model).__mro__):
        graph = model
    else:
        return None
    if graph is not None:
        _private(graph, "_nodes_by_depth", "graph nodes by depth in functional models")
        _private(graph, "_operations", "operation order in functional models")
    return graph


@dataclass(frozen=True)
class LayerCall:
    """One call of a layer in a functional graph: the layer and its input and output tensors.

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3),
        ...                           keras.layers.Dense(2)])
        >>> calls = layer_calls(functional_graph(model))
        >>> calls[1].inputs[0] is calls[0].outputs[0], calls[1].outputs[0].shape
        (True, (None, 2))
    """

    layer: Any
    inputs: list[Any]
    outputs: list[Any]
    node: Any

    def output_specs(self, input_specs: list[Any]) -> list[Any]:
        """The call's output specs when ``input_specs`` replace its inputs (same order).

        Example:
            >>> import keras
            >>> model = keras.Sequential([keras.Input((None, 3)), keras.layers.Dense(2)])
            >>> call = layer_calls(functional_graph(model))[0]
            >>> call.output_specs([keras.KerasTensor((1, 7, 3))])[0].shape
            (1, 7, 2)
        """
        import keras

        arguments = _private(self.node, "arguments", "call arguments on graph nodes")
        fill_in = _private(arguments, "fill_in", "way to substitute a node's input tensors")
        args, kwargs = fill_in({id(x): spec for x, spec in
                                zip(self.inputs, input_specs, strict=True)})
        return keras.tree.flatten(self.layer.compute_output_spec(*args, **kwargs))


def layer_calls(graph: Any) -> list[LayerCall]:
    """Every layer call of ``graph`` (from ``functional_graph``) in execution order, inputs
    left out: by depth from the inputs, and in the graph's own order within one depth.

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="d")])
        >>> layer_calls(functional_graph(model))[0].outputs[0].shape
        (None, 2)
    """
    depths = _private(graph, "_nodes_by_depth", "graph nodes by depth in functional models")
    order = {id(op): i for i, op in enumerate(
        _private(graph, "_operations", "operation order in functional models"))}
    calls = []
    for depth in sorted(depths, reverse=True):
        for node in sorted(depths[depth], key=lambda n: order.get(id(n.operation), 0)):
            if not _private(node, "is_input", "input flag on graph nodes"):
                calls.append(LayerCall(node.operation, list(node.input_tensors),
                                       list(node.output_tensors), node))
    return calls


# --- models built for their shapes only -----------------------------------------------------

_PENDING = "uninitialized_variables"  # Keras's global list of variables it will allocate


@contextmanager
def variables_left_unallocated() -> Iterator[None]:
    """Build models inside without allocating their weights, and keep them unallocated after.

    Keras defers the variables created in a ``StatelessScope`` and lists them as pending;
    leaving the scope with ``initialize_variables=False`` skips their allocation, and taking
    them off the pending list stops a later scope from allocating them. A probe variable
    checks each time that Keras still lists pending variables where this looks.

    Example:
        >>> import keras
        >>> with variables_left_unallocated():
        ...     layer = keras.layers.Dense(2)
        ...     layer.build((None, 3))
    """
    import keras

    try:
        global_state = importlib.import_module("keras.src.backend.common.global_state")
    except ImportError:
        raise _unsupported("has no module keras.src.backend.common.global_state") from None
    pending = list(global_state.get_global_attribute(_PENDING) or [])
    listed = False
    try:
        with keras.StatelessScope(initialize_variables=False):
            probe = keras.Variable("zeros", shape=(), name="tlkit_pending_probe")
            listed = any(v is probe for v in global_state.get_global_attribute(_PENDING) or [])
            yield
    finally:
        global_state.set_global_attribute(_PENDING, pending)
    if not listed:
        raise _unsupported(f"no longer lists deferred variables as global '{_PENDING}'")


# --- optimizer slots ------------------------------------------------------------------------

def optimizer_variable_index(optimizer: Any, variable: Any) -> int:
    """Position of ``variable`` in the list the optimizer was built with, as ``update_step``
    receives it (a backend variable: the Keras one's public ``path`` is not available there).

    Example:
        >>> import keras
        >>> optimizer, weight = keras.optimizers.SGD(), keras.Variable([1.0])
        >>> optimizer.build([weight])
        >>> optimizer_variable_index(optimizer, weight)
        0
    """
    index = _private(optimizer, "_get_variable_index", "variable index on optimizers")
    return index(variable)


def adadelta_accumulators(optimizer: Any, variable: Any) -> tuple[Any, Any]:
    """Adadelta's two slots for ``variable``: the running mean of squared gradients and of
    squared updates.

    Example:
        >>> import keras
        >>> optimizer, weight = keras.optimizers.Adadelta(), keras.Variable([1.0, 2.0])
        >>> optimizer.build([weight])
        >>> [tuple(slot.shape) for slot in adadelta_accumulators(optimizer, weight)]
        [(2,), (2,)]
    """
    index = optimizer_variable_index(optimizer, variable)
    grads = _private(optimizer, "_accumulated_grads", "Adadelta gradient accumulators")
    deltas = _private(optimizer, "_accumulated_delta_vars", "Adadelta update accumulators")
    return grads[index], deltas[index]


# --- GPU memory -----------------------------------------------------------------------------

def gpu_memory_limits() -> dict[str, int]:
    """Bytes TensorFlow may allocate on each GPU, by logical device name (``{}``: no GPU).

    Example:
        >>> import tensorflow as tf
        >>> len(gpu_memory_limits()) == len(tf.config.list_logical_devices("GPU"))
        True
    """
    # device_lib is what TensorFlow's own guides use for a GPU's size.
    try:
        from tensorflow.python.client import device_lib
    except ImportError:
        device_lib = None
    listing = _tensorflow_private(device_lib, "list_local_devices", "device_lib")
    return {device.name: device.memory_limit for device in listing()
            if device.device_type == "GPU"}


def _tensorflow_private(owner: Any, name: str, what: str) -> Any:
    """``owner.<name>``, or a KerasInternalsError saying that TensorFlow's ``what`` is gone."""
    found = getattr(owner, name, None)
    if found is None:
        import tensorflow as tf

        raise KerasInternalsError(
            f"tensorflow {tf.__version__} has no {what}.{name}, through which tlkit reads "
            f"GPU memory; tlkit is tested with tensorflow {TENSORFLOW_TESTED}")
    return found
