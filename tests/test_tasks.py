from pathlib import Path

import pytest
import torch

from autoshuikou.errors import UserError
from autoshuikou.tasks import Task, load_task
from autoshuikou.tasks.digits import load_digits_tensors


def test_task_from_file_function(tiny_task_file: str) -> None:
    task = load_task(tiny_task_file)
    assert isinstance(task, Task)
    assert task.name == "tiny"  # the task's own name wins over the function's
    assert task.metric_name == "top1_accuracy"


def test_task_from_module_function(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_task_file: str
) -> None:
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "tasks.py").write_text(Path(tiny_task_file.split(":")[0]).read_text())
    monkeypatch.syspath_prepend(str(tmp_path))
    assert isinstance(load_task("mypkg.tasks:make_task"), Task)


def _write(tmp_path: Path, body: str) -> str:
    path = tmp_path / "task.py"
    path.write_text("import torch\nfrom autoshuikou import Task\n" + body)
    return str(path)


@pytest.mark.parametrize(
    ("spec", "body", "message"),
    [
        ("missing.py:f", None, "does not exist"),
        ("nobuiltin", None, "neither a built-in task"),
        (
            None,
            "def f():\n    raise RuntimeError('no data here')\n",
            "raised RuntimeError: no data here",
        ),
        (None, "def g():\n    return 1\n", "has no function 'f'"),
        (None, "def f():\n    return 42\n", "not an autoshuikou.Task"),
        (None, "import nonexistent_module_xyz\ndef f():\n    pass\n", "importing task file"),
        (
            None,
            "def f():\n    m = torch.nn.Linear(2, 2)\n"
            "    gen = ((torch.zeros(1, 2), torch.zeros(1)) for _ in range(2))\n"
            "    return Task(model=m, train_data=gen, val_data=[], example_input=torch.zeros(1, 2))\n",
            "one-shot iterator",
        ),
        (
            None,
            "def f():\n    m = torch.nn.Linear(2, 2)\n    d = [(torch.zeros(4, 2), torch.zeros(4))]\n"
            "    return Task(model=m, train_data=d, val_data=d, example_input=torch.zeros(4, 2))\n",
            "batch size 4, not 1",
        ),
    ],
)
def test_bad_tasks_give_one_clear_error(
    tmp_path: Path, spec: str | None, body: str | None, message: str
) -> None:
    if spec is None:
        spec = _write(tmp_path, body or "") + ":f"
    with pytest.raises(UserError) as err:
        load_task(spec)
    assert message in err.value.message
    assert err.value.hint


def test_digits_split_is_stratified_and_disjoint() -> None:
    train_x, _, val_x, val_y = load_digits_tensors()
    assert len(train_x) + len(val_x) == 1797
    assert len(val_x) == 360
    assert set(val_y.tolist()) == set(range(10))
    # No validation image appears in the training set.
    train = {tuple(row.tolist()) for row in train_x.flatten(1)[:, ::7]}
    assert not any(tuple(row.tolist()) in train for row in val_x.flatten(1)[:, ::7])
    assert torch.isfinite(train_x).all()
