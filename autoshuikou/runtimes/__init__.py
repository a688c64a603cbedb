"""Runtimes that deploy the compressed model: one module each, registered here by name.

Each runtime (see :class:`Runtime`) owns its artifact: export, int8 build, loading,
running and counting. Adding one (OpenVINO, TensorRT) is one module and one
:func:`register_runtime` line; the registry-parametrized tests then cover it.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path

from autoshuikou.errors import UserError
from autoshuikou.runtimes._base import Int8Format, Runner, Runtime, TensorInfo

__all__ = [
    "DEFAULT_RUNTIME",
    "Int8Format",
    "Runner",
    "Runtime",
    "TensorInfo",
    "get_runtime",
    "register_origin",
    "register_runtime",
    "runtime_names",
    "runtime_origin",
]

DEFAULT_RUNTIME = "onnxruntime"

# name -> factory. Factories import their library when called: ONNX models are run in a
# child process that never loads PyTorch (the memory probe).
_RUNTIMES: dict[str, Callable[[], Runtime]] = {}


def register_runtime(name: str, factory: Callable[[], Runtime]) -> None:
    """Make ``name`` a choice of ``--runtime``; ``factory`` builds the runtime when used."""
    _RUNTIMES[name] = factory


def runtime_names() -> tuple[str, ...]:
    return tuple(_RUNTIMES)


def get_runtime(name: str) -> Runtime:
    if name not in _RUNTIMES:
        raise UserError(
            f"unknown runtime {name!r}",
            f"use --runtime with one of: {', '.join(_RUNTIMES)} (default {DEFAULT_RUNTIME})",
        )
    return _RUNTIMES[name]()


def runtime_origin(name: str) -> list[str]:
    """Where ``name``'s factory is defined: its module, its name there and the folder the
    module is imported from. A child process (the memory probe) registers it from these."""
    factory = _RUNTIMES[name]
    module = sys.modules[factory.__module__]
    file = Path(module.__file__ or "")
    depth = factory.__module__.count(".") + (file.name == "__init__.py")
    return [factory.__module__, factory.__qualname__, str(file.parents[depth])]


def register_origin(name: str, origin: list[str]) -> None:
    """Register ``name`` from :func:`runtime_origin`, unless it is registered already."""
    if name in _RUNTIMES:
        return
    module, qualname, root = origin
    if root not in sys.path:
        sys.path.append(root)
    factory = importlib.import_module(module)
    for part in qualname.split("."):
        factory = getattr(factory, part)
    register_runtime(name, factory)  # type: ignore[arg-type]


def _onnxruntime() -> Runtime:
    from autoshuikou.runtimes.onnxruntime import OnnxRuntime

    return OnnxRuntime()


def _torch() -> Runtime:
    from autoshuikou.runtimes.torchscript import TorchRuntime

    return TorchRuntime()


register_runtime("onnxruntime", _onnxruntime)
register_runtime("torch", _torch)
