"""Build fixed plans and print each model file's SHA-256: the same script before and after a
refactor of the build path shows that it builds the same files.

    python benchmarks/same_models.py [digits digits-detect bbc-minilm]

Only APIs that the refactors keep are used (``bind_context``, the bound space's plans,
``build_artifact``), so the script runs unchanged on an older checkout. The baseline is not
measured: the int8 format is set by name, as the baseline step would have chosen it.
"""

import hashlib
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from autoshuikou.report.progress import Progress
from autoshuikou.study.context import BaselineInfo

try:  # where it lives since search.py was split by job; the script also runs on 77406eb
    from autoshuikou.study.prepare import bind_context
except ImportError:
    from autoshuikou.study.search import bind_context  # type: ignore[attr-defined,no-redef]
from autoshuikou.study.trial import build_artifact
from autoshuikou.tasks import load_task

# task -> (fine-tuning epochs, int8 formats by name)
TASKS = {
    "digits": (1, ("qdq-u8s8-pc", "qoperator-s8s8-pt")),
    "digits-detect": (0, ("qdq-u8s8-pc",)),
    "bbc-minilm": (0, ("dynamic-u8s8-pc", "qdq-u8s8-pc")),
}


def digests(name: str) -> list[tuple[str, str, str]]:
    epochs, formats = TASKS[name]
    task = load_task(name)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ctx, _ = bind_context(task, None, Path(tmp) / "run", 0, 1, 0.1, Progress(live=False))
        # RunContext is frozen since issue 35; replace() works on the older checkout too.
        ctx = replace(ctx, space=ctx.space.with_round_to(4))
        plans = {
            "uniform-0.5-fp32": ctx.space.uniform_plan(0.5, int8=False),
            "uniform-0.25-int8": ctx.space.uniform_plan(0.25, int8=True),
            "random": ctx.space.random_plans(1, seed=0)[0],
        }
        by_name = {f.name: f for f in ctx.settings.backend.int8_formats}
        for fmt_name in formats:
            info = BaselineInfo(Path(tmp) / "none", 0, 1, 0, 0, 0, 0, by_name[fmt_name], 1)
            ctx = replace(ctx, _baseline=info)
            for label, plan in plans.items():
                if not plan.int8_layers and fmt_name != formats[0]:
                    continue  # an fp32 plan does not depend on the format
                out = Path(tmp) / f"m{ctx.settings.backend.suffix}"
                build_artifact(ctx, plan, out, epochs=epochs)
                digest = hashlib.sha256(out.read_bytes()).hexdigest()[:16]
                rows.append((fmt_name, label, digest))
                print(name, fmt_name, label, digest, flush=True)
    return rows


if __name__ == "__main__":
    for task_name in sys.argv[1:] or list(TASKS):
        digests(task_name)
