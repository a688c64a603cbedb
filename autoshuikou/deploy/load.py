"""``autoshuikou.load(path)``: an exported folder or a trial folder back as a callable model.

The deployed artifact runs in the runtime it was measured in (ONNX Runtime by default) and
reproduces the recorded metric exactly; with ``student=True`` the pruned, fine-tuned
PyTorch student is rebuilt (the teacher's architecture pruned by the plan, then its saved
state dict loaded with ``weights_only=True``) so that it can be trained further.

Load only folders you trust, as with ``torch.load`` of a pickle: the folder's config.yaml
names the task whose code runs to rebuild the model (a module, or a file by its absolute
path, never one relative to the current folder), and a TorchScript artifact is program code
that ``torch.jit.load`` runs.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autoshuikou.errors import UserError
from autoshuikou.families import ModelFamily, call, get_family
from autoshuikou.measure.runtime import RuntimeSettings
from autoshuikou.plan import Plan
from autoshuikou.study.config import CONFIG_NAME, SearchConfig, read_config_file
from autoshuikou.study.trial import STUDENT_NAME
from autoshuikou.tasks import Task
from autoshuikou.util import read_json, require

REEXPORT = "export the model again with `autoshuikou export`, or restore the folder"


class CompressedModel:
    """A batch in (torch tensors or numpy arrays: one, several in input order, or a mapping
    by input name), the outputs out as torch tensors (one, or a tuple)."""

    def __init__(
        self,
        folder: Path,
        metrics: dict[str, Any],
        input_names: list[str],
        runner: Any = None,
        module: nn.Module | None = None,
        closer: ExitStack | None = None,
    ) -> None:
        self.folder = folder
        self.metrics = metrics  # as recorded when the model was measured
        self.input_names = input_names
        self.module = module  # the PyTorch student (student=True), else None
        self._runner = runner
        self._closer = closer

    @property
    def metric(self) -> float:
        return float(self.metrics["metric"])

    def _named(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        if kwargs:
            return kwargs
        if len(args) == 1 and isinstance(args[0], dict):
            return dict(args[0])
        if len(args) == 1 and isinstance(args[0], tuple | list):
            args = tuple(args[0])
        if len(args) != len(self.input_names):
            raise UserError(
                f"the model takes {len(self.input_names)} inputs ({', '.join(self.input_names)}), "
                f"got {len(args)}",
                "pass one batch per input, in that order, or a mapping by name",
            )
        return dict(zip(self.input_names, args, strict=True))

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor | tuple[torch.Tensor, ...]:
        named = self._named(args, kwargs)
        if self.module is not None:
            tensors = {k: torch.as_tensor(v) for k, v in named.items()}
            with torch.no_grad():
                out = call(self.module.eval(), tensors)
            outs = list(out) if isinstance(out, tuple | list) else [out]
        else:
            feed = {
                k: (np.asarray(v.detach().cpu()) if isinstance(v, torch.Tensor) else np.asarray(v))
                for k, v in named.items()
            }
            feed = {
                k: v.astype(np.float32) if v.dtype.kind == "f" else v.astype(np.int64)
                for k, v in feed.items()
            }
            outs = [torch.from_numpy(np.asarray(o)) for o in self._runner(feed)]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def close(self) -> None:
        if self._closer is not None:
            self._closer.close()
            self._closer = None

    def __enter__(self) -> CompressedModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _locate(path: Path) -> tuple[Path, Path]:
    """(the model's folder, the folder holding the run's config.yaml)."""
    path = Path(path)
    if path.is_file():
        path = path.parent
    if not (path / "metrics.json").is_file() or not (path / "plan.json").is_file():
        raise UserError(
            f"{path} is neither an exported model nor a trial folder (no metrics.json/plan.json)",
            "give a folder written by `autoshuikou export`, or runs/<study>/trials/<n>",
        )
    if (path / CONFIG_NAME).is_file():  # exported
        return path, path
    return path, path.parents[1]  # runs/<study>/trials/<n>


def load(
    path: str | Path, student: bool = False, threads: int | None = None, task: Task | None = None
) -> CompressedModel:
    """The model in ``path`` (an exported folder, or a trial folder of a run).

    Default: the deployed artifact in the runtime and thread count it was measured with
    (``threads`` overrides). ``student=True``: the PyTorch student (``.module`` is the
    ``nn.Module``, ready to train further), rebuilt from the teacher of the task that the
    run's config.yaml names, or of ``task`` (required where the search was given a Task
    object from Python: config.yaml cannot name it).

    For folders you trust only, like ``torch.load`` of a pickle: loading runs the task code
    that the folder's config.yaml names, and a TorchScript artifact is code itself."""
    folder, run = _locate(Path(path))
    file = folder / "metrics.json"
    metrics = require(read_json(file, REEXPORT), ("metric", "runtime"), file, REEXPORT)
    family = get_family(str(metrics.get("family") or _family(run)))
    if student:
        module = load_student(folder, task)
        return CompressedModel(folder, metrics, family.input_names, module=module)
    runtime = metrics["runtime"]
    settings = RuntimeSettings(
        threads=threads or int(runtime.get("threads", 1)),
        runtime=str(runtime.get("runtime", "onnxruntime")),
    )
    artifact = folder / f"model{settings.backend.suffix}"
    if not artifact.is_file():
        raise UserError(
            f"{artifact} is missing (only feasible Pareto-optimal trials keep their model)",
            "export a trial that `autoshuikou show` lists",
        )
    stack = ExitStack()
    runner = stack.enter_context(settings.backend.open(artifact, settings.threads))
    return CompressedModel(folder, metrics, family.input_names, runner=runner, closer=stack)


def _family(run: Path) -> str:
    config = _config(run)
    if config.model is not None:
        from autoshuikou.tasks.models import parse_model

        return "encoder" if parse_model(config.model)[0].prefix == "hf" else "classification"
    from autoshuikou.tasks import load_task

    return load_task(config.task).family


def _config(run: Path) -> SearchConfig:
    file = run / CONFIG_NAME
    if not file.is_file():
        raise UserError(
            f"{file} is missing: the run's settings are needed to rebuild the model",
            "runs written before config.yaml existed: rerun the search to write it",
        )
    config = SearchConfig(**read_config_file(file))
    task, _, function = (config.task or "").rpartition(":")
    if (task.endswith(".py") or "/" in task) and not Path(task).is_absolute():
        raise UserError(
            f"{file} names the task file {task} by a relative path: loading would import "
            "whatever file of that name the current folder holds",
            f"write its absolute path in {file} (task: /path/to/{Path(task).name}:{function}), "
            "or a module name (task: package.module:function)",
        )
    return config


def load_student(folder: Path, task: Task | None = None) -> nn.Module:
    """The pruned, fine-tuned PyTorch student of a trial or exported folder (its teacher
    from ``task``, else from the task the run's config.yaml names)."""
    from autoshuikou.compress.prune import prune

    folder, run = _locate(Path(folder))
    weights = folder / STUDENT_NAME
    if not weights.is_file():
        raise UserError(
            f"{weights} is missing (kept beside the models of feasible Pareto-optimal trials)",
            "export or load a trial that `autoshuikou show` lists",
        )
    teacher, inputs, family = _teacher(_config(run), run, task)
    plan_file = folder / "plan.json"
    plan = Plan.from_dict(
        require(read_json(plan_file, REEXPORT), ("prune", "precision"), plan_file, REEXPORT)
    )
    student = prune(teacher, inputs, plan.prune, plan.round_to, family)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    student.load_state_dict(state)
    return student.eval()


def _teacher(
    config: SearchConfig, run: Path, task: Task | None
) -> tuple[nn.Module, dict[str, torch.Tensor], ModelFamily]:
    """The run's teacher and an example input, as the run built them."""
    from autoshuikou.tasks import task_for

    if task is None and config.task is None and config.model is None:
        raise UserError(
            f"{run} was searched with a Task object passed from Python: its config.yaml "
            "cannot say how to build the teacher the student was pruned from",
            "pass the same task: autoshuikou.load(path, student=True, task=make_task()), "
            "or search with --task file.py:function so that the run names it",
        )
    task = task or task_for(config)
    return task.model, task.inputs, task.family_impl
