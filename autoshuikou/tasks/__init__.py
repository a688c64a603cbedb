"""Tasks: built-in ones by name, or a user's ``file.py:function`` / ``package.module:function``."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from autoshuikou.errors import UserError
from autoshuikou.tasks._task import (
    Batch,
    Metric,
    Task,
    iterate_batches,
    top1_accuracy,
    validate_task,
)
from autoshuikou.tasks.bbc_minilm import bbc_minilm_task
from autoshuikou.tasks.digits import digits_task
from autoshuikou.tasks.digits_detect import digits_detect_task

__all__ = [
    "BUILTIN_TASKS",
    "Batch",
    "Metric",
    "Task",
    "iterate_batches",
    "load_task",
    "task_for",
    "top1_accuracy",
    "validate_task",
]

if TYPE_CHECKING:
    from autoshuikou.study.config import SearchConfig

BUILTIN_TASKS: dict[str, Callable[[], Task]] = {
    "digits": digits_task,
    "bbc-minilm": bbc_minilm_task,
    "digits-detect": digits_detect_task,
}
DEFAULT_TASK = "digits"


def _resolve_function(spec: str) -> Callable[[], object]:
    target, _, func_name = spec.rpartition(":")
    if not target or not func_name:
        raise UserError(
            f"task {spec!r} is neither a built-in task ({', '.join(BUILTIN_TASKS)}) "
            "nor of the form path/to/file.py:function or package.module:function",
            "name a built-in task or point at a function that returns autoshuikou.Task",
        )
    if target.endswith(".py") or "/" in target:
        path = Path(target)
        if not path.is_file():
            raise UserError(f"task file {target} does not exist", "check the path before ':'")
        module_name = f"_autoshuikou_task_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        if module_spec is None or module_spec.loader is None:
            raise UserError(f"cannot import {target} as Python", "give a .py file")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        # Let the task file import its neighbours, as running it directly would.
        sys.path.insert(0, str(path.resolve().parent))
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            raise UserError(
                f"importing task file {target} failed: {type(exc).__name__}: {exc}",
                f"run `python {target}` to see the error; add --verbose for the traceback",
            ) from exc
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise UserError(
                f"cannot import task module {target!r}: {exc}",
                "install the package or use path/to/file.py:function",
            ) from exc
    func = getattr(module, func_name, None)
    if not callable(func):
        raise UserError(
            f"{target} has no function {func_name!r}",
            "check the name after ':' (the function returns autoshuikou.Task)",
        )
    return func  # type: ignore[no-any-return]


def load_task(spec: str | None) -> Task:
    """Build the task a user named; every failure becomes one UserError."""
    spec = spec or DEFAULT_TASK
    if spec in BUILTIN_TASKS:
        return validate_task(BUILTIN_TASKS[spec](), f"built-in task {spec!r}")
    func = _resolve_function(spec)
    try:
        task = func()
    except UserError:
        raise
    except Exception as exc:
        raise UserError(
            f"task function {spec} raised {type(exc).__name__}: {exc}",
            "fix the function (call it directly to debug); add --verbose for the traceback",
        ) from exc
    task = validate_task(task, f"task function {spec}")
    if task.name == "custom":
        task.name = spec.rpartition(":")[2]
    return task


def task_for(config: SearchConfig) -> Task:
    """The task a search's settings name: ``--model``/``--data`` or ``--task``."""
    if config.model is None:
        if config.data or config.weights or config.random_weights:
            raise UserError(
                "--data, --weights and --random-weights go with --model",
                "add --model (e.g. --model torchvision:resnet50), or drop them to use --task",
            )
        return load_task(config.task)
    from autoshuikou.tasks.nocode import nocode_task

    task = nocode_task(
        config.model,
        config.data,
        config.weights,
        config.random_weights,
        config.input_size,
        config.normalize,
        config.max_length,
    )
    return validate_task(task, f"--model {config.model} with --data {config.data}")
