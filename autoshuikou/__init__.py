"""autoshuikou: latency-budgeted compression search (pruning x int8 x distillation).

The public names are imported lazily so that light submodules (the runtime, the memory
probe run in a child process) start without loading PyTorch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = [
    "SearchConfig",
    "SearchResult",
    "Task",
    "UserError",
    "__version__",
    "load",
    "search",
]

if TYPE_CHECKING:
    from autoshuikou.deploy import load
    from autoshuikou.errors import UserError
    from autoshuikou.study.config import SearchConfig
    from autoshuikou.study.search import SearchResult, search
    from autoshuikou.tasks import Task


def __getattr__(name: str) -> Any:
    if name == "Task":
        from autoshuikou.tasks import Task

        return Task
    if name in ("search", "SearchResult"):
        from autoshuikou.study import search as module

        return getattr(module, name)
    if name == "SearchConfig":
        from autoshuikou.study.config import SearchConfig

        return SearchConfig
    if name == "load":
        from autoshuikou.deploy import load

        return load
    if name == "UserError":
        from autoshuikou.errors import UserError

        return UserError
    raise AttributeError(f"module 'autoshuikou' has no attribute {name!r}")
